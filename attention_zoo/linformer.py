"""Linformer (Wang et al., 2020, "Linformer: Self-Attention with Linear Complexity", arXiv 2006.04768).

Per head: ``softmax(Q (E K)^T / sqrt(d)) (F V)`` with learned length projections E, F of shape (k x max_len),
so the scores are N x k and time and memory are linear in N.

Follows the paper (eq. 7: a separate E_i, F_i per head) and the LRA-lite code of Nystromformer/Skyformer
(``LRA/code/attention_linformer.py``): projections initialised N(0, 0.02), rows of K and V at padded positions
zeroed before projecting, no masking of the k projected keys. A sequence of length N uses the first N columns of
E and F, which is the same as padding it to ``max_len`` with zero rows.

Differences from those codebases, and choices:

* ``share_kv=false`` (default) keeps E and F separate, as in the paper; both LRA-lite codebases use one matrix
  for K and V (``share_kv=true``), and the Nystromformer code also shares it across layers (not offered here).
* The length is fixed at build time (``max_len`` from the builder); a longer sequence is an error, not a silent
  truncation.
* No attention dropout: neither LRA-lite implementation applies one to Linformer's weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.registry import register


def linformer_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, e: torch.Tensor, f: torch.Tensor
) -> torch.Tensor:
    """Materialise the N x N matrix that maps value rows to outputs, ``W = softmax(Q (E K)^T / sqrt(d)) F``.

    ``e``, ``f``: (H, k, N). The projected keys are written as the literal sum over positions
    ``(E K)_j = sum_n E_jn mask_n k_n``; padded columns of W are zeroed, which is "padded rows of V zeroed".
    """
    keep = mask.to(q.dtype)
    ek = torch.einsum("hjn,bn,bhnd->bhjd", e, keep, k)  # (B, H, k, d)
    probs = (q @ ek.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B, H, N, k)
    weights = (probs @ f) * keep[:, None, None, :]  # (B, H, N, N)
    return weights @ v


def linformer_fast(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, e: torch.Tensor, f: torch.Tensor
) -> torch.Tensor:
    """Project first: (k x N) @ (N x d) matmuls, N x k scores, never an N x N tensor."""
    keep = mask[:, None, :, None].to(q.dtype)
    ek, fv = e @ (k * keep), f @ (v * keep)  # (B, H, k, d)
    return (q @ ek.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(dim=-1) @ fv


@register("linformer", complexity="O(N)", source="Wang et al. 2020, Linformer: Self-Attention with Linear Complexity")
class LinformerAttention(MultiHeadAttention):
    def __init__(
        self, dim: int, num_heads: int, max_len: int, impl: str = "auto", proj_len: int = 128, share_kv: bool = False
    ):
        super().__init__(dim, num_heads, 0.0, impl)
        if proj_len < 1 or max_len < 1:
            raise ValueError(f"linformer needs proj_len >= 1 and max_len >= 1; got {proj_len} and {max_len}")
        self.max_len, self.proj_len = max_len, proj_len
        self.proj_e = nn.Parameter(torch.randn(num_heads, proj_len, max_len) * 0.02)  # projects keys
        self.proj_f = None if share_kv else nn.Parameter(torch.randn(num_heads, proj_len, max_len) * 0.02)

    def attend(self, q, k, v, mask):
        n = q.shape[2]
        if n > self.max_len:
            raise ValueError(
                f"linformer was built for sequences of at most max_len={self.max_len} tokens (its projections are "
                f"{self.proj_len} x {self.max_len}); got length {n}"
            )
        with torch.autocast(q.device.type, enabled=False):  # LRA-lite code computes attention in fp32
            q32, k32, v32 = at_least_fp32(q, k, v)
            f = self.proj_e if self.proj_f is None else self.proj_f
            e, f = (p[:, :, :n].to(q32.dtype) for p in (self.proj_e, f))
            kernel = linformer_reference if self.use_reference else linformer_fast
            out = kernel(q32, k32, v32, mask, e, f)
        return out.to(v.dtype)
