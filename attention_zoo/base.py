"""The shared shape of a multi-head attention: input checks, q/k/v projection, head split and merge."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class MultiHeadAttention(nn.Module):
    """Base for the zoo. Subclasses implement :meth:`attend` on per-head tensors.

    ``impl`` selects between the readable reference (``"reference"``, materialises what the math allows) and
    the production path (``"fast"``); ``"auto"`` picks the production path. Tests compare the two.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, impl: str = "auto", qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model dim {dim} is not divisible by num_heads {num_heads}; pick heads that divide it")
        if impl not in {"auto", "fast", "reference"}:
            raise ValueError(f"attention.impl={impl!r} is not one of auto, fast, reference")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)

    def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b h n d -> b n (h d)")

    @property
    def use_reference(self) -> bool:
        return self.impl == "reference"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = check_inputs(x, mask, self.dim)
        q, k, v = (self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        out = self.attend(q, k, v, mask)
        return self.proj(self.merge_heads(out))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, H, N, d); mask: (B, N) bool, True = real token. Returns (B, H, N, d)."""
        raise NotImplementedError


def check_inputs(x: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Validate ``x``/``mask`` and return a boolean mask (all True when none is given)."""
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"attention input must be (batch, length, {dim}); got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"key padding mask must be (batch, length) = {tuple(x.shape[:2])}; got {tuple(mask.shape)}")
    return mask.bool()


def feature_shift(shift: float) -> float:
    """``attention.shift``, a constant added to every feature (a Pathfinder diagnostic): it must keep them >= 0,
    or weights could turn negative and the normaliser reach 0."""
    if shift < 0:
        raise ValueError(f"attention.shift={shift}: features must stay non-negative; use a shift >= 0")
    return shift


def at_least_fp32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Upcast half-precision tensors to float32 (attention math runs in fp32 under autocast, as the LRA-lite code
    does); float64 stays float64 so the reference-vs-fast tests can run in double precision."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)
