"""Plausible mistakes in lab 09 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

from pathlib import Path

_SOLUTION = (Path(__file__).resolve().parents[2] / "solutions" / "lab09_distributed.py").read_text()


def _script_with(old: str, new: str) -> str:
    """The solution's training-script cell (as the notebook holds it) with ``old`` replaced by ``new``."""
    start = _SOLUTION.index("# %%writefile {run_dir}/train_ddp.py")
    end = _SOLUTION.index("# %% nbgrader", start)
    cell = _SOLUTION[start:end].replace("# %%writefile", "%%writefile", 1).rstrip() + "\n"
    assert cell.count(old) == 1, old
    return cell.replace(old, new)


FORGOT_SET_EPOCH = _script_with("        sampler.set_epoch(epoch)\n", "")
SAVED_THE_WRAPPER = _script_with('torch.save(net.state_dict(), f"{out_dir}/model.pt")',
                                 'torch.save(model.state_dict(), f"{out_dir}/model.pt")  # DDP\'s keys: module.*')


SUM_WITHOUT_MEAN = """\
def average_gradients(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # the sum over ranks, never divided: twice the gradient"""

HALVED_NOT_REDUCED = """\
def average_gradients(model):
    for p in model.parameters():
        if p.grad is not None:
            p.grad /= 2  # "average over 2 ranks" without communicating: each rank keeps half its own gradient"""

CONTIGUOUS_SAMPLER = """\
class ShardedSampler(Sampler):
    def __init__(self, dataset, num_replicas, rank, shuffle=True, seed=0):
        self.n = len(dataset)
        self.num_replicas, self.rank, self.shuffle, self.seed = num_replicas, rank, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(self.n / self.num_replicas)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.n, generator=g).tolist()
        else:
            indices = list(range(self.n))
        per_rank = math.ceil(self.n / self.num_replicas)
        indices += indices[:per_rank * self.num_replicas - len(indices)]
        return iter(indices[self.rank * per_rank:(self.rank + 1) * per_rank])  # a block, not every W-th index"""

NO_PADDING_SHARD = """\
def shard(tensor, rank, world_size):
    return tensor.flatten().chunk(world_size)[rank].clone()  # no padding: uneven pieces when numel % world_size


def unshard(piece, shape):
    pieces = [torch.empty_like(piece) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, piece)
    return torch.cat(pieces)[:shape.numel()].reshape(shape)"""

EVERYONE_TO_EVERYONE = """\
def ring_allreduce_bytes(num_params, world_size, dtype):
    return (world_size - 1) * num_params * dtype.itemsize  # the whole gradient to each other rank, no ring"""

REDUCE_SCATTER_ONLY = """\
def ring_allreduce_bytes(num_params, world_size, dtype):
    return (world_size - 1) * (num_params // world_size) * dtype.itemsize  # forgot the all-gather rounds"""

MISTAKES = [
    # allreduce-tests 0 of 2: every check (weights 1+1 visible, 2+1 hidden) compares gradients, and the sum is
    # world_size times the mean.
    # sampler-tests 0.3 of 3: of its checks (weights 1+1+2+2+1 visible, 2+1 hidden = 10) only the lengths (1)
    # pass; every index list differs from DistributedSampler's strided one -> 3 * 1/10 = 0.3.
    # 12 - 2 - 2.7 = 7.3.
    ({"allreduce-answer": SUM_WITHOUT_MEAN, "sampler-answer": CONTIGUOUS_SAMPLER}, 7.3),
    # script-tests 3/7 of 3: of its checks (weights 2+1+1+1+1 visible, 1 hidden = 7) only the checkpoint's keys
    # (1) pass: epochs 1 and 2 repeat epoch 0's order, so the parameters, the indices, the checkpoint's values
    # and the losses differ -> round(3 * 1/7, 6) = 0.428571.
    # shard-tests 4/7 of 2: the (3, 4) tensor on 2 ranks splits evenly, so its pieces and unshard pass (1+1); on
    # 3 ranks the pieces of 10 elements are 4, 4 and 2, all_gather's sizes disagree, gloo aborts the rank and the
    # cell stops, so the rest (1+1 visible, 1+1+1 hidden) count as failed -> round(2 * 2/7, 6) = 0.571429.
    # 12 - 3 + 0.428571 - 2 + 0.571429 = 8.
    ({"script-answer": FORGOT_SET_EPOCH, "shard-answer": NO_PADDING_SHARD}, 8.0),
    # allreduce-tests 0 of 2: without communication each rank keeps half of its own gradient.
    # script-tests 6/7 of 3: training is right, but the checkpoint holds DDP's keys ('module.0.weight', ...):
    # "holds the plain model's keys" (1 of 7) fails, its values (compared in key order) pass -> 2.571429.
    # 12 - 2 - 3 + 2.571429 = 9.571429.
    ({"allreduce-answer": HALVED_NOT_REDUCED, "script-answer": SAVED_THE_WRAPPER}, 9.571429),
    # traffic-tests 1 of 2: checks weigh 1 + 1 visible, 1 + 1 hidden = 4. Sending the whole gradient to every other
    # rank costs (N - 1) x its bytes, which equals the ring's 2 (N - 1) / N x only on 2 ranks: the float32 model on
    # 2 ranks and the float64 one on 2 ranks pass (2 of 4), 3 and 4 ranks fail -> 12 - 1 = 11.
    ({"traffic-answer": EVERYONE_TO_EVERYONE}, 11.0),
    # traffic-tests 0 of 2: counting the reduce-scatter only, (N - 1) / N x the gradient, is half of every answer.
    ({"traffic-answer": REDUCE_SCATTER_ONLY}, 10.0),
]
