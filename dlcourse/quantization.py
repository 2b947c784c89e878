"""Counting the bytes a quantised model really stores. Introduced in notebook 12 (compression), used by lab 12.

torchao's ``quantize_`` replaces a layer's weight with a *tensor subclass* (e.g. ``Int8Tensor``) that presents itself
as the float tensor it stands for: its ``dtype`` is still float32, and ``numel() * element_size()``, ``nbytes`` and
even ``untyped_storage().nbytes()`` report float32 bytes. What it stores are its inner tensors (int8 codes, scales,
zero points), named by ``__tensor_flatten__``. :func:`stored_bytes` counts those, recursively; a plain tensor counts
``numel() * element_size()``.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

__all__ = ["inner_tensors", "state_dict_bytes", "stored_bytes"]


def inner_tensors(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors a wrapper subclass stores, by attribute name (absent optional ones left out); ``{}`` for a plain
    tensor."""
    if not hasattr(t, "__tensor_flatten__"):                 # plain tensors and parameters don't have it
        return {}
    names, _ = t.__tensor_flatten__()
    return {name: getattr(t, name) for name in names if getattr(t, name) is not None}


def stored_bytes(t: torch.Tensor) -> int:
    """Bytes of the data ``t`` holds: ``numel * element_size`` for a plain tensor, the sum over the inner tensors for
    a wrapper subclass (each counted the same way, so nested subclasses work too)."""
    inner = inner_tensors(t)
    if not inner:
        return t.numel() * t.element_size()
    return sum(stored_bytes(x) for x in inner.values())


def state_dict_bytes(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> int:
    """:func:`stored_bytes` summed over a model's ``state_dict()`` (or a state dict): the tensor data a checkpoint
    holds, without the file format's own overhead. Entries that are not tensors count 0."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return sum(stored_bytes(v) for v in state.values() if isinstance(v, torch.Tensor))
