"""Plausible mistakes in lab 02 and the exact total each must score (out of 11), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
"""

HE_FAN_OUT = """\
def he_init_(layer, generator=None):
    W = layer.weight
    std = math.sqrt(2.0 / W.shape[0])  # the fan-out, not the fan-in
    with torch.no_grad():
        W.normal_(0.0, std, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer"""

HE_LINEAR_ONLY = """\
def he_init_(layer, generator=None):
    W = layer.weight
    std = math.sqrt(2.0 / W.shape[1])  # in_features only: wrong for convolutions (kh * kw is missing)
    with torch.no_grad():
        W.normal_(0.0, std, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer"""

BN_BIASED_RUNNING_VAR = """\
def batch_norm_train(X, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
    mean = X.mean(dim=0)
    var = X.var(dim=0, correction=0)
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var)  # torch keeps the unbiased variance here
    return gamma * (X - mean) / torch.sqrt(var + eps) + beta"""

BN_EVAL_BATCH_STATS = """\
def batch_norm_eval(X, gamma, beta, running_mean, running_var, eps=1e-5):
    mean, var = X.mean(dim=0), X.var(dim=0, correction=0)  # the batch's statistics, as in training mode
    return gamma * (X - mean) / torch.sqrt(var + eps) + beta"""

LAYER_NORM_UNBIASED = """\
def layer_norm(X, gamma, beta, eps=1e-5):
    mean = X.mean(dim=-1, keepdim=True)
    std = X.std(dim=-1, keepdim=True)  # unbiased by default: divides by D - 1
    return gamma * (X - mean) / torch.sqrt(std**2 + eps) + beta"""

RMS_NORM_CENTRED = """\
def rms_norm(X, gamma, eps=1e-6):
    X = X - X.mean(dim=-1, keepdim=True)  # RMSNorm does not subtract the mean
    return gamma * X / torch.sqrt(X.pow(2).mean(dim=-1, keepdim=True) + eps)"""

RMS_NO_RELU = """\
def predicted_rms(depth, fan_in, std):
    return math.sqrt((fan_in * std**2) ** depth)  # forgot that the ReLU halves the mean square"""

RMS_ONE_LAYER = """\
def predicted_rms(depth, fan_in, std):
    return std * math.sqrt(fan_in / 2)  # one layer's factor: it compounds over depth layers"""

MISTAKES = [
    # he-init-tests 1 of 2: of its checks (weights 1+2+2+1+2+2 visible, 2+1+1+2 hidden = 16), the fan-out
    # gives the wrong std (2) and numbers (2) on nn.Linear(400, 100), and wrong conv (2), bias-free (1) and
    # other-shape (1) weights; "returns the layer" (1), "mean 0 and bias 0" (2), "trainable leaf" (1), the
    # square 30-layer stack (2) and "the same seed" (2) pass -> 2 * 8/16 = 1.
    # rms-norm-tests 0 of 2: every check compares values with nn.RMSNorm, and centring changes them all.
    # 11 - 1 - 2 = 8.
    ({"he-init-answer": HE_FAN_OUT, "rms-norm-answer": RMS_NORM_CENTRED}, 8),
    # bn-train-tests 1.75 of 3: of its checks (weights 2+1+1+1+1 visible, 1+1+1+1+1+1 hidden = 12), every
    # check that includes running_var fails ("running_var" 1, N=2 1, momentum 1, one feature 1, in place 1);
    # outputs, running_mean, requires-grad, gradients, constant feature and float64 pass -> 3 * 7/12 = 1.75.
    # layer-norm-tests 0 of 2: the unbiased variance changes every output and gradient.
    # 11 - 1.25 - 2 = 7.75.
    ({"bn-train-answer": BN_BIASED_RUNNING_VAR, "layer-norm-answer": LAYER_NORM_UNBIASED}, 7.75),
    # bn-eval-tests 0.2 of 1: of its 5 checks (weight 1 each) only "left unchanged" passes. 11 - 0.8 = 10.2.
    ({"bn-eval-answer": BN_EVAL_BATCH_STATS}, 10.2),
    # he-init-tests 1.75 of 2: passes every visible check; only the hidden nn.Conv2d check (2 of 16) fails.
    # 11 - 0.25 = 10.75.
    ({"he-init-answer": HE_LINEAR_ONLY}, 10.75),
    # depth-scale-tests 0 of 1: without the ReLU's halving each layer's factor is sqrt(2) too large, and every
    # prediction (depth 10, 5, 8, 3) is off by far more than 10 %. 11 - 1 = 10.
    ({"depth-scale-answer": RMS_NO_RELU}, 10),
    # depth-scale-tests 0.25 of 1: one layer's factor is right only where it is 1 (the He setting, depth 5);
    # the other three predictions fail. 11 - 0.75 = 10.25.
    ({"depth-scale-answer": RMS_ONE_LAYER}, 10.25),
]
