"""Plausible mistakes in lab 08 and the exact total each must score (out of 10), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
Check weights per cell (visible + hidden):
- adam-tests (2 points): parameters/gradients 1, Adam's state 2, total 1, bfloat16 2 + float16 CNN 1, float64 1,
  7 B 1 = 9.
- accumulation-tests (3 points): micro-batch sizes 1, gradients 2, parameters 2, loss 1 + Adam 2, stale .grad 2,
  24 micro-batches 1, 1 micro-batch 1 = 12.
- checkpoint-tests (3 points): output 1, parameter gradients 2, saved bytes 2, saves less 1 + input requiring a
  gradient 2, 5 blocks' bytes 1, under no_grad 1 = 10.
- activations-tests (2 points): ReLU float32 1, GELU float32 1, GELU bfloat16 1 + ReLU float64 1, GELU float16 1 = 5.
"""

NO_STEP_COUNTERS = """\
def adam_memory_estimate(num_params, num_tensors, dtype):
    b = dtype.itemsize
    state = 2 * num_params * b  # forgot Adam's float32 step counter per parameter tensor
    return {"parameters": num_params * b, "gradients": num_params * b, "optimizer_state": state,
            "total": 4 * num_params * b}"""

FLOAT32_STATE = """\
def adam_memory_estimate(num_params, num_tensors, dtype):
    b = dtype.itemsize
    state = 2 * num_params * 4 + 4 * num_tensors  # assumes Adam's buffers are always float32
    return {"parameters": num_params * b, "gradients": num_params * b, "optimizer_state": state,
            "total": 2 * num_params * b + state}"""

NO_DIVISION = """\
def accumulation_step(model, optimizer, X, y, num_micro_batches):
    optimizer.zero_grad()
    total = 0.0
    for X_mb, y_mb in zip(X.chunk(num_micro_batches), y.chunk(num_micro_batches)):
        loss = F.cross_entropy(model(X_mb), y_mb)
        loss.backward()  # forgot to divide by num_micro_batches: gradients k times too large
        total += loss.item() / num_micro_batches
    optimizer.step()
    return total"""

STEP_PER_MICRO_BATCH = """\
def accumulation_step(model, optimizer, X, y, num_micro_batches):
    total = 0.0
    for X_mb, y_mb in zip(X.chunk(num_micro_batches), y.chunk(num_micro_batches)):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X_mb), y_mb) / num_micro_batches
        loss.backward()
        optimizer.step()  # a step per micro-batch: small-batch training, not accumulation
        total += loss.item()
    return total"""

NO_ZERO_GRAD_FIRST = """\
def accumulation_step(model, optimizer, X, y, num_micro_batches):
    total = 0.0  # forgot optimizer.zero_grad(): old gradients are added to the new ones
    for X_mb, y_mb in zip(X.chunk(num_micro_batches), y.chunk(num_micro_batches)):
        loss = F.cross_entropy(model(X_mb), y_mb) / num_micro_batches
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total"""

REENTRANT = """\
def checkpointed_forward(blocks, x):
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=True)  # the old implementation
    return x"""

ONE_REGION = """\
def checkpointed_forward(blocks, x):
    def run_all(x):
        for block in blocks:
            x = block(x)
        return x
    return checkpoint(run_all, x, use_reentrant=False)  # the whole stack as one region: saves only x"""

GELU_LIKE_RELU = """\
def activation_bytes(batch_size, in_features, hidden, activation, dtype):
    return batch_size * dtype.itemsize * (in_features + sum(hidden))  # one saved tensor per layer, also for GELU"""

ALWAYS_FLOAT32 = """\
def activation_bytes(batch_size, in_features, hidden, activation, dtype):
    per_hidden = {"relu": 1, "gelu": 2}[activation]
    return batch_size * 4 * (in_features + per_hidden * sum(hidden))  # 4 bytes whatever the dtype"""

MISTAKES = [
    # adam-tests 2 * 1/9: without the step counters only "parameters and gradients" (1 of 9) passes; every other
    # check includes the optimizer state or the total.
    # checkpoint-tests 3 * 7/10: one region gives the right output and gradients (1 + 2, hidden 2), saves less
    # (1) and works under no_grad (1), but saves 1 input instead of 3 (2) and 1 instead of 5 (1).
    ({"adam-answer": NO_STEP_COUNTERS, "checkpoint-answer": ONE_REGION}, 2 * 1 / 9 + 3 + 3 * 7 / 10 + 2),
    # accumulation-tests 3 * 3/12: without the division the micro-batch sizes (1), the returned loss (1, it is
    # divided there) and the single micro-batch (1, nothing to divide) pass; every gradient check fails.
    # activations-tests 2 * 2/5: the two ReLU checks pass, the three GELU checks fail.
    ({"accumulation-answer": NO_DIVISION, "activations-answer": GELU_LIKE_RELU}, 2 + 3 * 3 / 12 + 3 + 2 * 2 / 5),
    # accumulation-tests 3 * 2/12: a step per micro-batch still shows 4 micro-batches of 6 (1), and with one
    # micro-batch it is an ordinary step (1); gradients, parameters, loss, Adam, stale and 24 pieces all fail.
    # checkpoint-tests 3 * 5/10: use_reentrant=True with an input that needs no gradient gives the right output (1)
    # but no gradients (2 fail); nothing is saved at all, so "saves only each block's input" (2) fails and "saves
    # less" (1) passes; with an input that requires a gradient it is right (2); 5 blocks' bytes fail (1);
    # no_grad passes (1).
    ({"accumulation-answer": STEP_PER_MICRO_BATCH, "checkpoint-answer": REENTRANT},
     2 + 3 * 2 / 12 + 3 * 5 / 10 + 2),
    # adam-tests 2 * 4/9: float32 Adam state is right for the float32 MLP (1 + 2 + 1) and wrong for bfloat16 (2),
    # float16 (1), float64 (1) and the bfloat16 7 B model (1).
    # accumulation-tests 3 * 10/12: without zero_grad first only "old gradients in .grad are cleared" (2) fails.
    ({"adam-answer": FLOAT32_STATE, "accumulation-answer": NO_ZERO_GRAD_FIRST}, 2 * 4 / 9 + 3 * 10 / 12 + 3 + 2),
    # activations-tests 2 * 2/5: 4 bytes per number is right for both float32 checks, wrong for bfloat16, float64
    # and float16.
    ({"activations-answer": ALWAYS_FLOAT32}, 2 + 3 + 3 + 2 * 2 / 5),
]
