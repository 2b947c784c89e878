"""Plausible mistakes in lab 04 and the exact total each must score (out of 11), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
"""

# Adam's L2 regularisation instead of AdamW's decoupled decay: the decay term goes through the gradient.
L2_INSTEAD_OF_DECOUPLED = '''\
class MyAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                p.sub_(lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps))'''

# The bias correction left out: the first steps are far too small (m and v start at zero).
NO_BIAS_CORRECTION = '''\
class MyAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                p.sub_(lr * m / (v.sqrt() + eps))'''

# Off by one in the warmup: step 0 already uses peak_lr / warmup_steps.
WARMUP_OFF_BY_ONE = '''\
def warmup_cosine(step, warmup_steps, total_steps, peak_lr, min_lr=0.0):
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))'''

# Each tensor clipped to max_norm on its own, instead of all together by the global norm.
PER_TENSOR_CLIPPING = '''\
def clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = [torch.linalg.vector_norm(g) for g in grads]
    for g, n in zip(grads, norms):
        g.mul_(torch.clamp(max_norm / (n + 1e-6), max=1.0))
    return torch.linalg.vector_norm(torch.stack(norms))'''

# Sorting by name: BatchNorm's scale is called "weight" but is 1-D, so it wrongly gets weight decay.
BIAS_BY_NAME = '''\
def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]'''

# The scheduler stepped once per epoch (fit's default): one-cycle barely leaves its warm-up.
ONE_CYCLE_PER_EPOCH = '''\
def train_one_cycle(model, train_loader, val_loader, num_epochs, max_lr):
    optimizer = torch.optim.AdamW(model.parameters(), lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr,
                                                    total_steps=num_epochs * len(train_loader))
    return dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs, scheduler=scheduler,
                        progress=False)'''

# AdamW counted with one buffer per parameter, like momentum: it keeps two (m and v).
ADAMW_ONE_BUFFER = '''\
def optimizer_state_bytes(num_parameters, optimizer, bytes_per_value=4):
    return (0 if optimizer == "sgd" else 1) * num_parameters * bytes_per_value'''

# Every state tensor taken as float32, whatever the parameters' dtype.
STATE_ALWAYS_FLOAT32 = '''\
def optimizer_state_bytes(num_parameters, optimizer, bytes_per_value=4):
    return {"sgd": 0, "momentum": 1, "adamw": 2}[optimizer] * num_parameters * 4'''

# Totals are exact: a test cell's points are shared among its checks by weight (see dlcourse.grading.checks).
MISTAKES = [
    # AdamW 1/3 of 3 (only "weight_decay=0 equals Adam" passes); everything else full.
    ({"adamw-answer": L2_INSTEAD_OF_DECOUPLED}, 8 + 1 / 3),
    # AdamW 1/3 of 3 (m is still right after one step); clipping 10/11 of 2 (the unclipped case and both
    # 0-dim checks pass).
    ({"adamw-answer": NO_BIAS_CORRECTION, "clip-answer": PER_TENSOR_CLIPPING}, 6 + 1 / 3 + 10 / 11),
    # warmup + cosine 3/5 of 2 (the float, min_lr and no-warmup checks pass); param groups 1/3 of 2 (only the
    # model without 1-D parameters).
    ({"warmup-cosine-answer": WARMUP_OFF_BY_ONE, "param-groups-answer": BIAS_BY_NAME}, 7 + 3 / 5 + 1 / 3),
    # one-cycle 1/5 of 1 (it does return a History).
    ({"one-cycle-answer": ONE_CYCLE_PER_EPOCH}, 10 + 1 / 5),
    # state bytes 3/6 of 1: sgd and momentum right (visible and bfloat16), the three AdamW predictions half.
    ({"state-bytes-answer": ADAMW_ONE_BUFFER}, 10.5),
    # state bytes 3/6 of 1: the three float32 predictions pass, bfloat16 and float64 ones do not.
    ({"state-bytes-answer": STATE_ALWAYS_FLOAT32}, 10.5),
]
