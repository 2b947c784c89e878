"""dlcourse.memory on models whose bytes are computed by hand, and notebook 08's two equalities against torch:
gradient accumulation against the large batch, activation checkpointing against the plain forward/backward.

Hand counts use float32 (4 bytes). A ``Linear(i, o)`` holds ``(i*o + o) * 4`` bytes; for ``y = x @ W.T + b`` autograd
saves ``x`` (to get W's gradient) and ``W`` (to get x's gradient, only when x needs one); ReLU saves its output,
and the next Linear saves that same tensor as its input (one storage, counted once).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlcourse.memory import format_bytes, model_state_bytes, peak_memory, saved_tensor_bytes, saved_tensors, \
    tensor_bytes


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # 40 + 18 = 58 parameters


# --- model_state_bytes ------------------------------------------------------------------------------------------

def test_model_state_bytes_adam_by_hand():
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model_state_bytes(model, optimizer)
    assert before == {"parameters": 58 * 4, "gradients": 0, "optimizer_state": 0, "total": 58 * 4}

    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    after = model_state_bytes(model, optimizer)
    # Adam: exp_avg and exp_avg_sq per parameter (2 * 58 floats) + one float32 `step` per parameter tensor (4 tensors)
    assert after["parameters"] == 58 * 4
    assert after["gradients"] == 58 * 4
    assert after["optimizer_state"] == 2 * 58 * 4 + 4 * 4
    assert after["total"] == 58 * 4 * 4 + 16


def test_autocast_keeps_float32_parameters_gradients_and_adam_state():
    # notebook 08: the autocast layout holds 16 bytes per parameter between steps (the 16-bit copies are temporary);
    # 12 of them, gradients and Adam's moments, already make 78 GiB for 7 B parameters (104 GiB with the weights)
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(5, 4))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    optimizer.step()
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())
    assert model_state_bytes(model, optimizer)["total"] == 16 * 58 + 4 * 4
    assert round(7e9 * 12 / 2**30, 1) == 78.2 and round(7e9 * 16 / 2**30, 1) == 104.3


def test_model_state_bytes_sgd_momentum_and_zero_grad():
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    assert model_state_bytes(model, optimizer)["optimizer_state"] == 58 * 4  # one momentum buffer
    optimizer.zero_grad()  # set_to_none=True: the gradients are freed
    assert model_state_bytes(model, optimizer)["gradients"] == 0
    assert model_state_bytes(model)["optimizer_state"] == 0


def test_model_state_bytes_counts_tied_weights_once_and_dtype():
    emb = nn.Embedding(10, 6)
    head = nn.Linear(6, 10, bias=False)
    head.weight = emb.weight  # tied: one storage
    model = nn.Sequential(emb, head)
    assert model_state_bytes(model)["parameters"] == 60 * 4
    assert model_state_bytes(model.to(torch.bfloat16))["parameters"] == 60 * 2


# --- saved_tensor_bytes ------------------------------------------------------------------------------------------

def test_saved_tensor_bytes_by_hand():
    model = tiny_mlp()
    X = torch.randn(5, 4)
    # X (5*4) + ReLU output (5*8, also the second Linear's input) + second weight (2*8); the first weight is not
    # saved: X needs no gradient
    assert saved_tensor_bytes(lambda: model(X)) == (20 + 40 + 16) * 4
    assert saved_tensor_bytes(lambda: model(X), exclude=model.parameters()) == (20 + 40) * 4
    X.requires_grad_(True)  # now the first weight is needed for X's gradient too
    assert saved_tensor_bytes(lambda: model(X)) == (20 + 40 + 16 + 32) * 4


def test_saved_tensors_peak_is_per_graph_and_freed_by_backward():
    model = tiny_mlp()
    X, y = torch.randn(6, 4), torch.randint(0, 2, (6,))

    def accumulate(k: int) -> None:  # k micro-batches, each freed by its backward before the next forward
        for X_mb, y_mb in zip(X.chunk(k), y.chunk(k)):
            (F.cross_entropy(model(X_mb), y_mb) / k).backward()

    not_activations = [*model.parameters(), X, y]  # the micro-batches are views of X and y: leave them out
    one = saved_tensors(lambda: accumulate(1), exclude=not_activations)
    three = saved_tensors(lambda: accumulate(3), exclude=not_activations)
    single = saved_tensors(lambda: F.cross_entropy(model(X[:2]), y[:2]), exclude=not_activations)
    assert one.peak_bytes == one.total_bytes
    assert three.peak_bytes == single.peak_bytes < one.peak_bytes  # one micro-batch's activations at a time
    assert three.total_bytes == 3 * single.peak_bytes  # storages released and allocated anew are counted anew
    assert three.num_saved == 3 * one.num_saved
    assert three.num_storages == 3 * single.num_storages


def test_saved_views_count_their_storage_once():
    base = torch.randn(10, 10, requires_grad=True)
    x = base * 1.0                   # (10, 10): 400 bytes, does not need to be saved by mul-by-constant
    # two views of the same storage saved by one mul: the storage counts once, and whole
    assert saved_tensor_bytes(lambda: x[:2] * x[5:7]) == 400
    assert tensor_bytes(x[:2]) == 80


def test_checkpoint_saves_less_and_matches():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    X = torch.randn(32, 16, requires_grad=True)
    plain_bytes = saved_tensor_bytes(lambda: block(X), exclude=block.parameters())
    ckpt_bytes = saved_tensor_bytes(lambda: checkpoint(block, X, use_reentrant=False), exclude=block.parameters())
    assert plain_bytes == (32 * 16 + 2 * 32 * 64) * 4  # X and the two ReLU outputs (= the next Linears' inputs)
    assert ckpt_bytes == 32 * 16 * 4  # the checkpointed region saves only its input X, to recompute the rest

    y_hat = block(X)
    y_hat.square().sum().backward()
    grads = [p.grad.clone() for p in block.parameters()] + [X.grad.clone()]
    block.zero_grad()
    X.grad = None
    y_hat_ckpt = checkpoint(block, X, use_reentrant=False)
    y_hat_ckpt.square().sum().backward()
    assert torch.equal(y_hat, y_hat_ckpt)
    for g, g_ckpt in zip(grads, [p.grad for p in block.parameters()] + [X.grad]):
        torch.testing.assert_close(g_ckpt, g, rtol=0, atol=0)


# --- peak_memory --------------------------------------------------------------------------------------------------

def test_peak_memory_cpu_sees_allocations():
    def two_alive() -> None:
        a = torch.ones(250_000)          # 1 MB
        b = torch.ones(250_000)          # 1 MB, both alive
        del a, b

    result = peak_memory(two_alive, "cpu")
    assert result["method"].startswith("torch.profiler")
    assert result["peak_bytes"] == 2_000_000
    assert result["net_bytes"] == 0
    assert result["start_bytes"] is None
    assert result["saved_bytes"] == 0

    kept: list[torch.Tensor] = []
    result = peak_memory(lambda: kept.append(torch.zeros(1000, dtype=torch.float64)), "cpu", count_saved=False)
    assert result["net_bytes"] == 8000 and result["peak_bytes"] == 8000
    assert "saved_bytes" not in result


def test_peak_memory_training_step_cpu():
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters())
    X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def step() -> None:
        F.cross_entropy(model(X), y).backward()
        optimizer.step()

    first = peak_memory(step, "cpu")
    # the first step creates the gradients and Adam's state, and keeps them
    assert first["net_bytes"] == 58 * 4 + 2 * 58 * 4 + 4 * 4
    activations = saved_tensor_bytes(lambda: F.cross_entropy(model(X), y), exclude=model.parameters())
    assert first["peak_bytes"] >= activations + 58 * 4  # activations and gradients are alive together
    optimizer.zero_grad()  # outside the measured function: frees the gradients
    second = peak_memory(step, "cpu")
    assert second["net_bytes"] == 58 * 4  # only the new gradients remain; Adam's state already existed


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_peak_memory_cuda():
    def alloc() -> None:
        a = torch.ones(1 << 20, device="cuda")
        del a

    result = peak_memory(alloc, "cuda")
    assert result["method"] == "torch.cuda.max_memory_allocated"
    assert result["peak_bytes"] >= 4 << 20 and result["net_bytes"] == 0
    assert result["peak_reserved_bytes"] >= result["peak_bytes"]   # what the caching allocator holds


@pytest.mark.gpu
@needs_cuda
def test_cuda_allocator_hands_out_whole_512_byte_blocks():
    """The rounding notebook 08 shows: memory_allocated grows in multiples of 512 bytes, never less than asked."""
    torch.cuda.synchronize()
    for numel in (1, 128, 129, 1000, 250_000):
        before = torch.cuda.memory_allocated()
        t = torch.empty(numel, device="cuda")
        grew = torch.cuda.memory_allocated() - before
        del t
        assert grew >= 4 * numel and grew % 512 == 0, (numel, grew)


@pytest.mark.gpu
@needs_cuda
def test_peak_memory_training_step_cuda():
    """On CUDA the measured step obeys notebook 08's bounds: at least parameters' state plus activations, and the
    net growth of a first Adam step is its gradients and state, each tensor rounded up to 512-byte blocks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).cuda()
    X, y = torch.randn(1024, 256, device="cuda"), torch.randint(0, 10, (1024,), device="cuda")
    warm = copy.deepcopy(model)                      # a throwaway step creates cuBLAS's lasting workspaces first
    F.cross_entropy(warm(X), y).backward()
    torch.optim.Adam(warm.parameters()).step()
    del warm
    optimizer = torch.optim.Adam(model.parameters())

    def step() -> None:
        F.cross_entropy(model(X), y).backward()
        optimizer.step()

    result = peak_memory(step, "cuda")
    sizes = [p.numel() * 4 for p in model.parameters()]
    exact = 3 * sum(sizes)                           # gradients, exp_avg, exp_avg_sq (Adam's steps stay on the CPU)
    rounded = 3 * sum(-(-n // 512) * 512 for n in sizes)
    assert exact <= result["net_bytes"] <= rounded + 3 * 512 * len(sizes)
    activations = saved_tensor_bytes(lambda: F.cross_entropy(model(X), y), exclude=[*model.parameters(), X])
    assert result["peak_bytes"] >= activations


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.00 MiB"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(5 * 2**30) == "5.00 GiB"


# --- gradient accumulation equals the large batch (notebook 08) ------------------------------------------------

def accumulated_grads(model: nn.Module, X: torch.Tensor, y: torch.Tensor, k: int, divide: bool = True):
    model.zero_grad()
    for X_mb, y_mb in zip(X.chunk(k), y.chunk(k)):
        loss = F.cross_entropy(model(X_mb), y_mb)
        (loss / k if divide else loss).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_accumulation_equals_large_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).double()
    X, y = torch.randn(24, 8, dtype=torch.float64), torch.randint(0, 3, (24,))
    big = accumulated_grads(model, X, y, k=1)
    for k in (2, 3, 4):
        for g, g_big in zip(accumulated_grads(model, X, y, k), big):
            torch.testing.assert_close(g, g_big, rtol=1e-12, atol=1e-14)
    # forgetting the division gives k times the gradient
    for g, g_big in zip(accumulated_grads(model, X, y, 4, divide=False), big):
        torch.testing.assert_close(g, 4 * g_big)


def test_accumulation_with_batchnorm_is_not_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).double()
    X, y = torch.randn(24, 8, dtype=torch.float64), torch.randint(0, 3, (24,))
    big = accumulated_grads(copy.deepcopy(model), X, y, k=1)
    acc = accumulated_grads(copy.deepcopy(model), X, y, k=4)
    # batch statistics over 6 samples differ from those over 24: the gradients differ well beyond rounding
    assert max((a - b).abs().max().item() for a, b in zip(acc, big)) > 1e-4
