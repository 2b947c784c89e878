"""Helpers that lab test cells use. Introduced in lab 01.

``forbid`` switches library functions off while a learner's from-scratch code runs, so a test can tell "wrote it
from tensor operations" from "called torch's version".
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

#: Every public spelling of softmax, log-softmax and cross-entropy.
SOFTMAX_FUNCTIONS: tuple[tuple[Any, str], ...] = (
    (torch, "softmax"), (torch, "log_softmax"), (torch.Tensor, "softmax"), (torch.Tensor, "log_softmax"),
    (F, "softmax"), (F, "log_softmax"), (torch.special, "softmax"), (torch.special, "log_softmax"),
    (F, "cross_entropy"), (F, "nll_loss"),
)


@contextmanager
def forbid(targets: Iterable[tuple[Any, str]], why: str) -> Iterator[None]:
    """Inside the block, each ``(owner, name)`` raises AssertionError(``why``) when called."""
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(why)

    with ExitStack() as stack:
        for owner, name in targets:
            stack.enter_context(mock.patch.object(owner, name, forbidden))
        yield
