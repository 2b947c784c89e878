"""Plausible mistakes in lab 12 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution. Points
are split over a test cell's checks by weight, so totals can be fractional (the grader rounds to 6 decimals).
"""

KD_WITHOUT_T_SQUARED = """\
def kd_loss(student_logits, teacher_logits, y, T, alpha):
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return alpha * kl + (1 - alpha) * F.cross_entropy(student_logits, y)   # forgot T**2"""

KD_REVERSED_KL = """\
def kd_loss(student_logits, teacher_logits, y, T, alpha):
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)
    kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=1).mean()   # KL(student || teacher): the wrong direction
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, y)"""

THRESHOLD_MASK = """\
def magnitude_mask(weight, sparsity):
    k = round(sparsity * weight.numel())
    if k == 0:
        return torch.ones_like(weight)
    threshold = weight.abs().flatten().kthvalue(k).values
    return (weight.abs() > threshold).to(weight.dtype)   # prunes every entry tied with the threshold"""

L1_ROW_MASK = """\
def row_mask(weight, amount):
    norms = weight.abs().sum(dim=1)   # the L1 norm instead of the L2 norm
    k = round(amount * len(norms))
    keep = torch.ones_like(norms)
    keep[torch.argsort(norms, stable=True)[:k]] = 0
    return keep[:, None].expand_as(weight).clone()"""

RANGE_WITHOUT_ZERO = """\
def quantize_int8(x, symmetric=True):
    if symmetric:
        amax = x.abs().max()
        scale = amax / 127 if amax > 0 else torch.ones(())
        zero_point = 0
    else:
        lo, hi = x.min(), x.max()   # the range need not contain 0: zero is then not exactly representable
        scale = (hi - lo) / 255 if hi > lo else torch.ones(())
        zero_point = int(-128 - torch.round(lo / scale))
    q = torch.clamp(torch.round(x / scale) + zero_point, -128, 127).to(torch.int8)
    return q, scale.item(), zero_point


def dequantize_int8(q, scale, zero_point):
    return (q.to(torch.float32) - zero_point) * scale"""

STATIC_BATCH_EXPORT = """\
def export_onnx(model, example_X, path):
    model.eval()
    torch.onnx.export(model, (example_X,), path, dynamo=True, input_names=["X"], output_names=["logits"],
                      external_data=False, verbose=False)   # no dynamic_shapes: the batch size is fixed


def onnx_predict(path, X):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"X": X})[0]"""

PACKED_INT4 = """\
def quantized_bytes(widths, bits):
    # assumes IntxWeightOnlyConfig packs two 4-bit codes per byte: it stores one per int8 byte
    return sum(n_out * n_in * bits // 8 + n_out * (4 + 1 + 4) for n_in, n_out in zip(widths[:-1], widths[1:]))"""

NO_ZERO_POINTS = """\
def quantized_bytes(widths, bits):
    # forgets the int8 zero point stored per row (symmetric, all zero, but stored all the same)
    return sum(n_out * n_in + n_out * (4 + 4) for n_in, n_out in zip(widths[:-1], widths[1:]))"""

MISTAKES = [
    # kd-tests 2 * 4/10: of its checks (weights 2+1+1+1+1 visible, 2+1+1 hidden = 10), "alpha=0: plain
    # cross-entropy" (1), "no gradient reaches the teacher" (1), "very confident logits" (1: T=1, so T**2 = 1) and
    # "identical logits" (1: KL = 0) pass; the T=2 loss (2), alpha=1 at T=4 (1), the gradient (1) and the other
    # temperatures (2) fail -> 0.8.
    # magnitude-tests 2 * 8/10: of its checks (weights 1+2+1+1 visible, 2+1+1+1 hidden = 10), only "ties are pruned
    # in flattened order" (2) fails: on tie-free random weights |w| > k-th smallest is the right mask -> 1.6.
    # 12 - 1.2 - 0.4 = 10.4.
    ({"kd-answer": KD_WITHOUT_T_SQUARED, "magnitude-answer": THRESHOLD_MASK}, 10.4),
    # kd-tests 2 * 3/10: as above, except that "very confident logits" fails too (KL(student || teacher) differs
    # at T=1) -> 0.6.
    # rows-tests 1 * 1/5: of its checks (weights 2+1 visible, 1+1 hidden = 5), only "rows with equal norms" (1)
    # passes (rows of equal L2 norm 1 that also have the smallest L1 norms); the random weights (2), "the L2 norm
    # decides" (1) and the float64 weights (1) fail -> 0.2.
    # 12 - 1.4 - 0.8 = 9.8.
    ({"kd-answer": KD_REVERSED_KL, "rows-answer": L1_ROW_MASK}, 9.8),
    # quant-tests 3 * 14/16: of its checks (weights 2+1+1+1+2+1+2 visible, 2+1+1+1+1 hidden = 16), only "asymmetric
    # on skewed, all-negative and 3-d tensors" (2) fails: ReLU outputs contain 0 and an all-zero tensor gives
    # lo = hi = 0, so elsewhere the range already contains 0; the error bound holds on the narrower range -> 2.625.
    # onnx-tests 2 * 3/8: of its checks (weights 1+2+2 visible, 2+1 hidden = 8), the names (1) and the example
    # batch (2) pass; ONNX Runtime rejects the batch of 1 row, which stops the cell, so the dynamic batch (2), the
    # CNN (2) and the external-data check (1) are not reached -> 0.75.
    # 12 - 0.375 - 1.25 = 10.375.
    ({"quant-answer": RANGE_WITHOUT_ZERO, "onnx-answer": STATIC_BATCH_EXPORT}, 10.375),
    # bytes-tests 2 * 4/6: of its checks (weights 2+1 visible, 1+1+1 hidden = 6), the three int8 predictions (2, 1,
    # 1) pass and the two 4-bit ones (1, 1) fail -> 1.333333. 12 - 0.666667 = 11.333333.
    ({"bytes-answer": PACKED_INT4}, 12 - 2 * 2 / 6),
    # bytes-tests 0: every prediction is short by one byte per output row -> 12 - 2 = 10.
    ({"bytes-answer": NO_ZERO_POINTS}, 10.0),
]
