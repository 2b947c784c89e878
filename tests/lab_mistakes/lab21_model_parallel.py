"""Plausible mistakes in lab 21 and the exact total each must score (out of 10), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

BIAS_ON_EVERY_RANK = """\
def row_parallel_linear(x_shard, w_shard, bias):
    partial = x_shard @ w_shard.T + bias   # the bias added on every rank, before the sum: W times the bias
    dist.all_reduce(partial)
    return partial"""

NO_WARMUP = """\
def pipeline_schedule(kind, p, m, rank):
    if kind == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    order = []
    for i in range(m):
        order += [("F", i), ("B", i)]      # 1F1B without warm-up: every stage waits for each backward
    return order"""

NO_ALL_GATHER = """\
def zero1_step(model, state, lr):
    rank, world_size = dist.get_rank(), dist.get_world_size()
    params = list(model.parameters())
    pad = len(state["m"]) * world_size - sum(p.numel() for p in params)
    flat_grad = F.pad(torch.cat([p.grad.flatten() for p in params]), (0, pad))
    dist.all_reduce(flat_grad)
    flat_grad /= world_size
    flat_param = F.pad(torch.cat([p.detach().flatten() for p in params]), (0, pad))
    adam_update(flat_param.chunk(world_size)[rank], flat_grad.chunk(world_size)[rank], state, lr)
    with torch.no_grad():                  # only this rank's slice is new: the other ranks' updates never arrive
        for p, new in zip(params, flat_param.split([p.numel() for p in params] + [pad])):
            p.copy_(new.view_as(p))"""

BUBBLE_OVER_M = """\
def bubble_fraction(p, m):
    return (p - 1) / m                     # idle slots over busy slots, not over the total"""

MISTAKES = [
    # row-tests 0 of 2: every check compares Y, which holds the bias twice on 2 ranks.
    # schedule-tests 1.5 of 3: checks weigh 1 + 1 + 1 + 1 visible, 2 hidden = 6. GPipe (1), the last stage's 1F1B
    # (1, it has no warm-up) and the 4-stage simulation (1: complete, no deadlock, one activation held) pass; stage
    # 0's 1F1B (1) and the hidden lists (2) fail -> 3 * 3/6 = 1.5.  10 - 2 - 1.5 = 6.5.
    ({"row-answer": BIAS_ON_EVERY_RANK, "schedule-answer": NO_WARMUP}, 6.5),
    # zero-tests 0 of 3: each rank keeps the other slice's old values, so both ranks' parameters differ from Adam's
    # and, from the second step on, the gradients and the moments too.
    # bubble-tests 0 of 2: (p - 1) / m is never within 1 % of (p - 1) / (m + p - 1) at the four (p, m).
    # 10 - 3 - 2 = 5.
    ({"zero-answer": NO_ALL_GATHER, "bubble-answer": BUBBLE_OVER_M}, 5.0),
]
