"""The from-scratch LoRA of notebook 11, checked against plain tensor arithmetic and against peft.

Notebooks cannot be imported, so a compact copy of the notebook's LoRA code lives here: ``LoRALinear`` (with
merge and unmerge), ``inject_lora``, ``mark_only_lora_trainable`` and ``merge_and_unload``. Keep it in step
with the notebook. The models are ``dlcourse.models.GPT`` (tested in test_models.py).
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.models import GPT, count_parameters


# --- copies of the notebook's code --------------------------------------------------------------------------

class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"the rank r must be at least 1, not {r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def inject_lora(model: nn.Module, pattern: str, r: int = 8, alpha: float = 16.0, dropout: float = 0.0
                ) -> list[str]:
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and re.fullmatch(pattern, name):
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, LoRALinear(module, r, alpha, dropout))
            replaced.append(name)
    if not replaced:
        raise ValueError(f"no nn.Linear layer matches {pattern!r}")
    return replaced


def mark_only_lora_trainable(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_and_unload(model: nn.Module) -> nn.Module:
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, layer.base)
    return model


ALL_LINEAR = r"blocks\.\d+\.(attn\.(qkv|out)|mlp\.[02])"


def small_gpt(seed: int = 0, num_layers: int = 2) -> GPT:
    torch.manual_seed(seed)
    return GPT(vocab_size=13, max_len=8, d_model=16, num_heads=2, num_layers=num_layers).eval()


def randomise_b(model: nn.Module, seed: int = 1, std: float = 0.1) -> None:
    """Give every adapter a non-zero B, as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(std * torch.randn(layer.lora_B.shape, generator=gen))


# --- LoRALinear -------------------------------------------------------------------------------------------------

def test_lora_linear_starts_equal_to_base_and_computes_the_formula():
    torch.manual_seed(0)
    base = nn.Linear(10, 6)
    layer = LoRALinear(base, r=3, alpha=6.0)
    x = torch.randn(4, 5, 10)
    assert torch.equal(layer(x), base(x))
    assert layer.lora_A.shape == (3, 10) and layer.lora_B.shape == (6, 3)
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(10) and layer.lora_A.std() > 0
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = F.linear(x, base.weight, base.bias) + 2.0 * x @ (layer.lora_B @ layer.lora_A).T
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_lora_linear_gradients_reach_only_a_and_b():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 4), r=2, alpha=4.0)
    x = torch.randn(3, 8)
    layer(x).pow(2).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.lora_A.grad.abs().max() == 0 and layer.lora_B.grad.abs().max() > 0   # B = 0 at the start
    with torch.no_grad():
        layer.lora_B.normal_()
    layer.zero_grad()
    layer(x).pow(2).sum().backward()
    A = layer.lora_A.detach().clone().requires_grad_(True)
    B = layer.lora_B.detach().clone().requires_grad_(True)
    y = F.linear(x, layer.base.weight, layer.base.bias) + 2.0 * x @ A.T @ B.T
    grad_A, grad_B = torch.autograd.grad(y.pow(2).sum(), [A, B])
    assert torch.allclose(layer.lora_A.grad, grad_A, atol=1e-5)
    assert torch.allclose(layer.lora_B.grad, grad_B, atol=1e-5)


def test_lora_dropout_only_touches_the_low_rank_branch():
    torch.manual_seed(0)
    base = nn.Linear(8, 4)
    layer = LoRALinear(base, r=2, alpha=2.0, dropout=1.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 8)
    assert torch.equal(layer.train()(x), base(x))                  # everything dropped: the base remains
    assert not torch.allclose(layer.eval()(x), base(x))             # eval: no dropout
    with pytest.raises(ValueError):
        LoRALinear(nn.Linear(2, 2), r=0)


def test_merge_equals_adapted_and_unmerge_restores_the_base():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    original = base.weight.detach().clone()
    layer = LoRALinear(base, r=4, alpha=8.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 12)
    adapted = layer(x)
    layer.merge()
    layer.merge()                                                   # merging twice changes nothing
    assert layer.merged and torch.allclose(layer(x), adapted, atol=1e-5)
    assert torch.allclose(base.weight, original + 2.0 * layer.lora_B @ layer.lora_A, atol=1e-6)
    layer.unmerge()
    assert not layer.merged and torch.allclose(base.weight, original, atol=1e-6)
    assert torch.allclose(layer(x), adapted, atol=1e-6)


# --- injection and counting -------------------------------------------------------------------------------------

def test_inject_by_pattern_replaces_only_matching_linear_layers():
    model = small_gpt()
    x = torch.randint(0, 13, (2, 8))
    before = model(x)
    originals = dict(model.named_modules())
    names = inject_lora(model, r"blocks\.\d+\.attn\.(qkv|out)", r=2)
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.1.attn.qkv", "blocks.1.attn.out"]
    assert all(model.get_submodule(n).base is originals[n] for n in names)
    assert isinstance(model.get_submodule("blocks.0.mlp.0"), nn.Linear)
    assert torch.equal(model(x), before)                            # B = 0: nothing changes yet
    # the whole name must match; containers, norms and embeddings are never replaced
    assert inject_lora(small_gpt(), r"head|qkv") == ["head"]
    assert len(inject_lora(small_gpt(), r".*")) == 2 * 4 + 1
    assert inject_lora(small_gpt(num_layers=12), r"blocks\.1\..*") == [
        "blocks.1.attn.qkv", "blocks.1.attn.out", "blocks.1.mlp.0", "blocks.1.mlp.2"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject_lora(small_gpt(), r"blocks\.1|ln|tok")


def test_trainable_parameter_count_matches_the_formula():
    model = small_gpt()
    r = 3
    names = inject_lora(model, ALL_LINEAR, r=r)
    mark_only_lora_trainable(model)
    shapes = {n: m for n, m in small_gpt().named_modules() if n in names}
    assert count_parameters(model) == sum(r * (m.in_features + m.out_features) for m in shapes.values())
    assert count_parameters(model, trainable_only=False) == (
        count_parameters(small_gpt(), trainable_only=False) + count_parameters(model))
    assert {n.rsplit(".", 1)[1] for n, p in model.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}


def test_merge_and_unload_gives_a_plain_model_and_adapters_reload():
    model = small_gpt()
    inject_lora(model, ALL_LINEAR, r=2)
    randomise_b(model)
    x = torch.randint(0, 13, (3, 8))
    adapted = model(x)
    adapter = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    rebuilt = small_gpt()
    inject_lora(rebuilt, ALL_LINEAR, r=2)
    missing, unexpected = rebuilt.load_state_dict(adapter, strict=False)
    assert unexpected == [] and all("lora_" not in k for k in missing)
    assert torch.equal(rebuilt(x), adapted)
    plain = small_gpt(seed=5)                                       # different weights, same architecture
    plain.load_state_dict(merge_and_unload(model).state_dict())    # strict: the same keys as GPT
    assert torch.allclose(plain(x), adapted, atol=1e-5)


# --- against peft -----------------------------------------------------------------------------------------------

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                        reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_matches_peft_given_the_same_a_and_b(device):
    # on CUDA both models run the same float32 kernels in the same order, except attention's backward, which
    # may add in a different order from run to run: differences stay near 1e-7, inside the tolerances below
    peft = pytest.importorskip("peft", reason='peft is an optional extra: pip install "dlcourse[lora]"')
    pretrained = small_gpt().to(device)
    ours = copy.deepcopy(pretrained)
    inject_lora(ours, ALL_LINEAR, r=4, alpha=8.0)
    mark_only_lora_trainable(ours)
    randomise_b(ours)
    theirs = peft.get_peft_model(copy.deepcopy(pretrained),
                                 peft.LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=ALL_LINEAR))
    our_params = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    their_params = {n: p for n, p in theirs.named_parameters() if p.requires_grad}

    def peft_name(name: str) -> str:
        layer, _, which = name.rpartition(".")
        return f"base_model.model.{layer}.{which}.default.weight"

    assert sorted(map(peft_name, our_params)) == sorted(their_params)
    with torch.no_grad():
        for name, param in our_params.items():
            their_params[peft_name(name)].copy_(param)
    x = torch.randint(0, 13, (4, 8), device=device)
    assert all(p.device.type == device for p in [*our_params.values(), *their_params.values()])
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)

    # a few SGD steps on the same batches keep them equal
    gen = torch.Generator().manual_seed(0)
    opt_ours = torch.optim.SGD(our_params.values(), lr=0.5)
    opt_theirs = torch.optim.SGD(their_params.values(), lr=0.5)
    for _ in range(3):
        X, y = torch.randint(0, 13, (8, 8), generator=gen), torch.randint(0, 13, (8, 8), generator=gen)
        X, y = X.to(device), y.to(device)
        for model, opt in [(ours, opt_ours), (theirs, opt_theirs)]:
            loss = F.cross_entropy(model(X).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    for name, param in our_params.items():
        assert torch.allclose(param, their_params[peft_name(name)], atol=1e-6), name
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)

    merged_theirs = theirs.merge_and_unload()
    merged_ours = merge_and_unload(ours)
    for name, tensor in merged_ours.state_dict().items():
        assert torch.allclose(tensor, merged_theirs.state_dict()[name], atol=1e-6), name
