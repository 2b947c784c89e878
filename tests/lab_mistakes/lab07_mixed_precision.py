"""Plausible mistakes in lab 07 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution. Points
are split over a test cell's checks by weight, so totals can be fractional (the grader rounds to 6 decimals).
"""

BIAS_OFF_BY_ONE = """\
def float_format(exp_bits, mantissa_bits):
    bias = 2 ** (exp_bits - 1)   # should be 2 ** (exp_bits - 1) - 1
    return {"max": (2.0 - 2.0 ** -mantissa_bits) * 2.0 ** bias, "smallest_normal": 2.0 ** (1 - bias),
            "smallest_subnormal": 2.0 ** (1 - bias - mantissa_bits), "eps": 2.0 ** -mantissa_bits}"""

ZEROS_COUNT_AS_FLUSHED = """\
def cast_report(g, dtype, loss_scale=1.0):
    cast = (g * loss_scale).to(dtype)
    return {"flushed": int((cast == 0).sum()), "overflowed": int(cast.isinf().sum())}   # counts g's own zeros


def largest_safe_scale(g, dtype):
    for k in range(64, -65, -1):
        if not (g * 2.0 ** k).to(dtype).isinf().any():
            return 2.0 ** k"""

NO_RESET_ON_OVERFLOW = """\
class DynamicLossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale_factor = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.found_inf = None

    def get_scale(self):
        return self.scale_factor

    def scale(self, loss):
        return loss * self.scale_factor

    def unscale_(self, optimizer):
        found_inf = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        found_inf = found_inf or not bool(torch.isfinite(p.grad).all())
                        p.grad.mul_(1.0 / self.scale_factor)
        self.found_inf = found_inf

    def step(self, optimizer):
        if self.found_inf is None:
            self.unscale_(optimizer)
        if not self.found_inf:
            optimizer.step()

    def update(self):
        if self.found_inf:
            self.scale_factor *= self.backoff_factor   # forgot: self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale_factor *= self.growth_factor
                self.good_steps = 0
        self.found_inf = None"""

SCALER_IGNORED = """\
def amp_train_step(model, optimizer, X, y, dtype=torch.bfloat16, scaler=None):
    with torch.autocast(device_type=X.device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = F.cross_entropy(model(X), y)
    optimizer.zero_grad()
    loss.backward()      # the scaler is never used: float16 gradients are not scaled, overflows not skipped
    optimizer.step()
    return loss.item()"""

NEVER_SKIPS = """\
class DynamicLossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale_factor = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.found_inf = None

    def get_scale(self):
        return self.scale_factor

    def scale(self, loss):
        return loss * self.scale_factor

    def unscale_(self, optimizer):
        found_inf = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        found_inf = found_inf or not bool(torch.isfinite(p.grad).all())
                        p.grad.mul_(1.0 / self.scale_factor)
        self.found_inf = found_inf

    def step(self, optimizer):
        if self.found_inf is None:
            self.unscale_(optimizer)
        optimizer.step()   # steps even when a gradient is inf or NaN: the weights become NaN

    def update(self):
        if self.found_inf:
            self.scale_factor *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale_factor *= self.growth_factor
                self.good_steps = 0
        self.found_inf = None"""

PURE_BFLOAT16 = """\
def amp_train_step(model, optimizer, X, y, dtype=torch.bfloat16, scaler=None):
    model.to(dtype)                       # converts the weights instead of using autocast
    loss = F.cross_entropy(model(X.to(dtype)), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()"""

HALF_OF_FLOAT32 = """\
def autocast_saved_bytes(batch_size, in_features, hidden, num_classes, dtype):
    size = 4 if dtype == torch.float32 else 2
    return size * batch_size * (in_features + sum(hidden))   # "autocast halves it": forgets the weight copies"""

EVERY_WEIGHT_COPY = """\
def autocast_saved_bytes(batch_size, in_features, hidden, num_classes, dtype):
    size = 4 if dtype == torch.float32 else 2
    activations = size * batch_size * (in_features + sum(hidden))
    if dtype == torch.float32:
        return activations
    widths = [in_features] + list(hidden) + [num_classes]   # counts the first layer's weight copy too
    return activations + size * sum(a * b for a, b in zip(widths[:-1], widths[1:]))"""

MISTAKES = [
    # formats-tests 0 of 2: every check involves max, the smallest normal or the smallest subnormal, which all
    # depend on the bias.
    # underflow-tests 1 of 2: of its checks (weights 2+1+1+2 visible, 1+1+1+1 hidden = 10), counting g's own zeros
    # as flushed fails "float16 and bfloat16, loss scale 1" (2), "loss scales 2**16 and 2**30" (1), "a real MLP's
    # weight gradient" (1: pixels that are always 0 give zero gradients) and "zeros never flush" (1); the
    # unchanged input and the three largest_safe_scale checks pass (5 of 10) -> 1.
    # memory-tests 0.8 of 2: of its five checks (weight 1 each), "halving" passes float32 and the large batch
    # (512 examples: the weight copies are 1.3 % of the bytes, inside the 2 % tolerance) -> 2 of 5.
    # 12 - 2 - 1 - 1.2 = 7.8.
    ({"formats-answer": BIAS_OFF_BY_ONE, "underflow-answer": ZEROS_COUNT_AS_FLUSHED,
      "memory-answer": HALF_OF_FLOAT32}, 7.8),
    # scaler-tests 1.5 of 3: of its checks (weights 1+1+2+1+2 visible, 2+1+1+1 hidden = 12), without the reset the
    # scale grows too early after an overflow: "the scale before each of 40 steps" (2), "other settings" (2),
    # "a frozen layer" (1) and "unscale_ called before step" (1) fail. The skipped steps and the weights still
    # match (the planted steps are the only skips, and power-of-two scales unscale exactly), as do "get_scale()"
    # (1), "unscale_" (1) and "default settings" (1: no growth within 10 steps): 6 of 12 -> 1.5.
    # amp-step-tests 2.1 of 3: of its checks (weights 1+1+2+1 visible, 2+1+1+1 hidden = 10), ignoring the scaler
    # fails "float16 with a GradScaler" (2: unscaled float16 gradients lose their smallest values, so the weights
    # differ from fit's) and "a scale so large that float16 overflows" (1: the step is not skipped) -> 7 of 10.
    # 12 - 1.5 - 0.9 = 9.6.
    ({"scaler-answer": NO_RESET_ON_OVERFLOW, "amp-step-answer": SCALER_IGNORED}, 9.6),
    # scaler-tests 0.5 of 3: only "get_scale() starts at init_scale" (1) and "unscale_ divides" (1) pass; every run
    # has a planted inf or NaN, steps on it and ends with NaN weights: 2 of 12 -> 0.5.
    # memory-tests 0.4 of 2: counting the first layer's weight copy (its input X needs no gradient, so autograd
    # keeps no copy) passes float32 only, 8 % or more off in every 16-bit case -> 1 of 5. 12 - 2.5 - 1.6 = 7.9.
    ({"scaler-answer": NEVER_SKIPS, "memory-answer": EVERY_WEIGHT_COPY}, 7.9),
    # amp-step-tests 0.6 of 3: converting the model passes only "float32: no autocast" (1: model.to(float32) changes
    # nothing) and "returns a Python float" (1): the bfloat16 loss and weights differ from autocast's, the
    # parameters are no longer float32, and float16 without the scaler neither matches fit nor skips: 2 of 10.
    # 12 - 2.4 = 9.6.
    ({"amp-step-answer": PURE_BFLOAT16}, 9.6),
]
