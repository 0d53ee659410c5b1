"""Block-local softmax attention: the "Local Attention" baseline of the LRA paper (Tay et al. 2021, "Long Range
Arena: A Benchmark for Efficient Transformers"; JAX code google-research/long-range-arena, models/local).

The sequence is cut into consecutive blocks of ``window`` tokens; each query attends, with ordinary scaled
softmax, only to the keys of its own block (a block-diagonal N x N pattern). Cost O(N * window).

``window = 50`` follows the LRA code: ``LocalTransformerEncoder``/``LocalTransformerBlock`` default to
``block_size=50`` and no task config overrides it. Note that the JAX code reshapes the (padded) length L into
``(block_size, L / block_size)`` and attends over the first axis, so its groups are tokens that are
L / block_size apart (strided), and it pads one full extra block when L is already a multiple; we implement the
contiguous blocks the method's name and description mean, so our numbers need not match that code's.

Padding: blocks are fixed by absolute position (token i is in block i // window), so appending padding never
moves a valid token to another block, and padded keys get weight exactly 0. A padded query whose whole block
is padding gets a uniform (finite) average over its block instead of 0/0; its output is never used.
Attention dropout on the weights in training (``dropout``, 0.1 in the lite protocol like softmax).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.registry import register


def local_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, window: int, dropout: float = 0.0
) -> torch.Tensor:
    """N x N softmax with everything outside the query's block at -inf and padded keys at the lowest float."""
    n = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    block = torch.arange(n, device=q.device) // window
    # Lowest finite value, not -inf, for padded keys: a block with no valid key stays finite (uniform weights).
    scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    scores = scores.masked_fill(block[:, None] != block[None, :], float("-inf"))
    return F.dropout(scores.softmax(dim=-1), dropout) @ v


def local_blockwise(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, window: int, dropout: float = 0.0
) -> torch.Tensor:
    """The same in O(N * window): pad N up to a multiple of the window, attend within (window x window) blocks."""
    b, h, n, d = q.shape
    window = min(window, n)  # a window past the end is one block of n tokens: same blocks, no wasted padding
    pad = -n % window
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        mask = F.pad(mask, (0, pad), value=False)
    q, k, v = (t.reshape(b, h, -1, window, d) for t in (q, k, v))  # (B, H, blocks, window, d)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, blocks, window, window)
    key_mask = mask.reshape(b, 1, -1, 1, window)
    beyond_end = (torch.arange(n + pad, device=q.device) >= n).reshape(1, 1, -1, 1, window)
    # As in the reference: padded keys at the lowest float, the positions added here to fill the last block at -inf.
    scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min).masked_fill(beyond_end, float("-inf"))
    out = F.dropout(scores.softmax(dim=-1), dropout) @ v
    return out.reshape(b, h, -1, d)[:, :, :n]


@register(
    "local",
    complexity="O(N)",
    source="Tay et al. 2021 (ICLR), Long Range Arena: A Benchmark for Efficient Transformers (Local Attention)",
)
class LocalAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, impl: str = "auto", window: int = 50):
        super().__init__(dim, num_heads, dropout, impl)
        if window < 1:
            raise ValueError(f"attention.window={window} must be a positive number of tokens")
        self.window = window

    def attend(self, q, k, v, mask):
        dtype = v.dtype
        p = self.dropout if self.training else 0.0
        kernel = local_reference if self.use_reference else local_blockwise
        with torch.autocast(q.device.type, enabled=False):
            out = kernel(*at_least_fp32(q, k, v), mask, self.window, p)
        return out.to(dtype)
