"""Helpers for the attention contract: build a variant from its real config, record op output shapes."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attention_zoo import build_attention, default_config

DIM, HEADS, MAX_LEN = 32, 4, 512


def variant_config(name: str, **over: Any) -> dict[str, Any]:
    """The variant's shipped config with overrides (tests use the real defaults)."""
    return default_config(name, **over)


def build(name: str, dim: int = DIM, heads: int = HEADS, max_len: int = MAX_LEN, seed: int = 0, **over: Any):
    torch.manual_seed(seed)
    return build_attention(variant_config(name, **over), dim=dim, num_heads=heads, max_len=max_len).eval()


class LargestOutput(TorchDispatchMode):
    """Records the largest number of elements any single op produced while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_tensor(module: torch.nn.Module, n: int, batch: int = 1, grad: bool = True) -> int:
    x = torch.randn(batch, n, module.dim if hasattr(module, "dim") else DIM, requires_grad=grad)
    mask = torch.ones(batch, n, dtype=torch.bool)
    with LargestOutput() as rec:
        out = module(x, mask)
        if grad:
            out.sum().backward()
    return rec.largest
