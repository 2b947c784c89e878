"""Plausible mistakes in lab 03 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
Partial totals come from the weights of the checks in each test cell (points x passed weight / total weight).
"""

NO_DILATION = """\
def conv_output_size(n, kernel_size, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - kernel_size) // stride + 1  # forgot that dilation widens the kernel"""

CHANNELS_LAST_WEIGHT_ORDER = """\
def conv2d_unfold(X, weight, bias=None, stride=1, padding=0):
    B, C, H, W = X.shape
    C_out, _, kh, kw = weight.shape
    H_out = (H + 2 * padding - kh) // stride + 1
    W_out = (W + 2 * padding - kw) // stride + 1
    cols = F.unfold(X, (kh, kw), padding=padding, stride=stride)
    # flattened as (kh, kw, C): not the (C, kh, kw) order of unfold's rows
    Y = weight.permute(0, 2, 3, 1).reshape(C_out, -1) @ cols
    if bias is not None:
        Y = Y + bias[:, None]
    return Y.reshape(B, C_out, H_out, W_out)"""

RELU_BEFORE_ADD = """\
class ResidualBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, X):
        out = F.relu(self.bn1(self.conv1(X)))
        out = F.relu(self.bn2(self.conv2(out)))  # ReLU before the addition instead of after it
        return out + self.shortcut(X)"""

DEPTHWISE_COUNTED_AS_FULL = """\
def conv_weight_counts(c_in, c_out, kernel_size):
    standard = kernel_size * kernel_size * c_in * c_out
    # the depthwise part counted as a full c_in -> c_in convolution
    separable = kernel_size * kernel_size * c_in * c_in + c_in * c_out
    return standard, separable"""

STRIDE_ON_POINTWISE = """\
class DepthwiseSeparableBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        # the stride belongs to the depthwise convolution, not here
        self.pointwise = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, X):
        return F.relu(self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(X))))))"""

MLP_FOR_SHAPES = """\
def make_shapes_cnn():
    # a fully connected network on raw pixels: under 100k parameters, but it cannot learn the shapes in time
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 30), nn.ReLU(), nn.Linear(30, 6))"""

FLOPS_AS_MACS = """\
def predicted_conv_flops(c_in, c_out, kernel_size, n, stride=1, padding=0, groups=1):
    n_out = (n + 2 * padding - kernel_size) // stride + 1
    return c_out * n_out * n_out * (c_in // groups) * kernel_size**2  # multiply-adds, not FLOPs (2 each)"""

FLOPS_WITHOUT_STRIDE = """\
def predicted_conv_flops(c_in, c_out, kernel_size, n, stride=1, padding=0, groups=1):
    n_out = n + 2 * padding - kernel_size + 1  # the stride is forgotten
    return 2 * c_out * n_out * n_out * (c_in // groups) * kernel_size**2"""

FLOPS_WITHOUT_GROUPS = """\
def predicted_conv_flops(c_in, c_out, kernel_size, n, stride=1, padding=0, groups=1):
    n_out = (n + 2 * padding - kernel_size) // stride + 1
    return 2 * c_out * n_out * n_out * c_in * kernel_size**2  # every filter sees all c_in channels"""

MISTAKES = [
    # output size: 4 of 7 check weights (dilation and the hidden grid fail); unfold: only the shape (1 of 9)
    ({"output-size-answer": NO_DILATION, "unfold-answer": CHANNELS_LAST_WEIGHT_ORDER}, 12 - 3 / 7 - 8 / 3),
    # residual: the three name checks and the gradient check pass (4 of 9 weights);
    # counts: only the standard count is right (1 of 4)
    ({"residual-answer": RELU_BEFORE_ADD, "count-answer": DEPTHWISE_COUNTED_AS_FULL}, 12 - 2 * 5 / 9 - 3 / 4),
    # separable: evaluation mode gives the same output (subsampling commutes with BN, ReLU and 1x1 convs),
    # training mode does not (3 of 6 weights pass); the MLP has the right size and shape but misses the
    # accuracy (2 of 4 weights)
    ({"separable-answer": STRIDE_ON_POINTWISE, "cnn-answer": MLP_FOR_SHAPES}, 10),
    # conv FLOPs: half of every count, so all five predictions (weight 1 each) fail
    ({"conv-flops-answer": FLOPS_AS_MACS}, 11),
    # conv FLOPs: right wherever the stride is 1 (the visible layer, 5x5 and the depthwise one), wrong for
    # stride 2 and stride 3 (3 of 5 weights pass)
    ({"conv-flops-answer": FLOPS_WITHOUT_STRIDE}, 12 - 2 / 5),
    # conv FLOPs: only the depthwise layer (groups=64) fails (4 of 5)
    ({"conv-flops-answer": FLOPS_WITHOUT_GROUPS}, 12 - 1 / 5),
]
