"""Plausible mistakes in lab 10 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.

Check weights per cell (visible + hidden):
- timing-tests (3 points): calls 1, CPU times 2, no sync on CPU 1, GPU times 2 | cuda:0 1, no warm-up 1,
  real-clock count 1, real-clock sleep 1 = 10.
- bottleneck-tests (3 points): length 1, images 2, labels 1, speed-up 3 | one-channel items 2, X unchanged 1,
  speed-up on another dataset 2 = 12.
- top-op-tests (2 points): MLP 2 | X @ W 1, Gram matrices 1 = 4.
- sync-tests (2 points): mean loss 2, weights 1, one read 2 | 7 batches values 2, 7 batches one read 2 = 9.
- flops-tests (2 points): 2 visible MLPs 1 each | 3 hidden MLPs 1 each = 5.
"""

NO_SYNC = """\
def time_calls(fn, *, warmup=3, repeats=10, device=torch.device("cpu"), clock=time.perf_counter):
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()                                  # never synchronises: on a GPU this times the queuing only
        seconds.append(clock() - start)
    return seconds"""

WARMUP_TIMED = """\
def time_calls(fn, *, warmup=3, repeats=10, device=torch.device("cpu"), clock=time.perf_counter):
    seconds = []
    for _ in range(warmup + repeats):         # times the warm-up calls too
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(clock() - start)
    return seconds"""

PER_IMAGE_STATS = """\
class FastNormalized(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        image = self.X[i]                     # fast, but each image's own statistics, not the dataset's
        mean, std = image.mean(dim=(1, 2)), image.std(dim=(1, 2))
        return (image - mean[:, None, None]) / std[:, None, None], self.y[i]"""

IN_PLACE = """\
class FastNormalized(Dataset):
    def __init__(self, X, y):
        mean, std = X.mean(dim=(0, 2, 3)), X.std(dim=(0, 2, 3))
        X -= mean[:, None, None]              # saves memory, but changes the caller's tensor
        X /= std[:, None, None]
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], self.y[i]"""

TOTAL_TIME = """\
def top_operator(model, X, repeats=5):
    with torch.no_grad():
        model(X)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(X)
    return max(prof.key_averages(), key=lambda e: e.cpu_time_total).key   # total time, not self time"""

ITEM_EVERY_STEP = """\
def train_epoch(model, optimizer, batches):
    total, count = 0.0, 0
    for X, y in batches:
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)         # right value, but a device-to-host read every step
        count += len(y)
    return total / count"""

UNWEIGHTED_MEAN = """\
def train_epoch(model, optimizer, batches):
    total, n_batches = 0.0, 0
    for X, y in batches:
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total = total + loss.detach()         # one read at the end, but a mean of batch means
        n_batches += 1
    return (total / n_batches).item()"""

NO_INPUT_GRADIENTS = """\
def mlp_training_flops(batch_size, widths):
    products = [2 * batch_size * w_in * w_out for w_in, w_out in zip(widths, widths[1:])]
    return 2 * sum(products)  # forward + the weights' gradients; the inputs' gradients forgotten"""

SIX_PER_WEIGHT = """\
def mlp_training_flops(batch_size, widths):
    return 6 * batch_size * sum(w_in * w_out for w_in, w_out in zip(widths, widths[1:]))  # first layer too"""

MISTAKES = [
    # timing-tests 1.8 of 3: without synchronisation the simulated GPU's times are all zero: "GPU times" (2),
    # "cuda:0" (1) and "no warm-up, one timed call on a GPU" (1) fail; the CPU and real-clock checks pass (6 of
    # 10) -> 3 * 6/10 = 1.8.
    # sync-tests 10/9 of 2: the values are right ("mean loss" 2, "weights" 1, "7 batches values" 2 pass) but
    # both read counts (2 + 2) fail -> 2 * 5/9. 12 - 1.2 - 8/9 = 9.9111...
    ({"timing-answer": NO_SYNC, "sync-answer": ITEM_EVERY_STEP}, 12 - 1.2 - 8 / 9),
    # bottleneck-tests 2 of 3: per-image statistics are fast (both speed-ups pass, 3 + 2) and keep length (1),
    # labels (1) and X (1), but the images differ ("images" 2, "one-channel items" 2 fail) -> 3 * 8/12 = 2.
    # top-op-tests 0.5 of 2: sorting by total time names the wrappers aten::linear and aten::matmul (2 + 1
    # fail); torch.bmm has no wrapper, so aten::bmm is also the top by total time (1 passes) -> 2 * 1/4 = 0.5.
    # 12 - 1 - 1.5 = 9.5.
    ({"bottleneck-answer": PER_IMAGE_STATS, "top-op-answer": TOTAL_TIME}, 9.5),
    # bottleneck-tests 2.75 of 3: normalising X in place gives the right items (the reference statistics of an
    # already normalised X are 0 and 1, so the expected items match) and the speed-up, but "X is not changed
    # in place" (1) fails -> 3 * 11/12 = 2.75.
    # sync-tests 10/9 of 2: a mean of batch means differs when the batches differ in size ("mean loss" 2,
    # "7 batches values" 2 fail); the weights (1) and both read counts (2 + 2) pass -> 2 * 5/9.
    # 12 - 0.25 - 8/9 = 10.8611...
    ({"bottleneck-answer": IN_PLACE, "sync-answer": UNWEIGHTED_MEAN}, 12 - 0.25 - 8 / 9),
    # timing-tests 1.2 of 3: timing the warm-up calls too returns warmup + repeats times: "CPU times" (2), "GPU
    # times" (2), "cuda:0" (1) and the real-clock count (1) fail; the call count (1), no sync on the CPU (1),
    # "no warm-up" (1, nothing extra to time) and the real-clock sleep (1) pass -> 3 * 4/10 = 1.2. 12 - 1.8.
    ({"timing-answer": WARMUP_TIMED}, 10.2),
    # flops-tests 0.4 of 2: forgetting the input gradients (forward + weight gradients, 4 FLOPs per weight and
    # example) is right only for a single Linear layer, whose input needs no gradient anyway: the hidden
    # [784, 10] passes (1 of 5) -> 2 * 1/5 = 0.4. 12 - 1.6.
    ({"flops-answer": NO_INPUT_GRADIENTS}, 10.4),
    # flops-tests 0 of 2: the "6 FLOPs per weight and example" rule counts the first layer's input gradient,
    # which autograd skips for a batch that needs no gradient: every MLP is off by 2·B·w0·w1. 12 - 2.
    ({"flops-answer": SIX_PER_WEIGHT}, 10.0),
]
