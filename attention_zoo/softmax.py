"""Softmax attention (Vaswani et al., 2017, "Attention Is All You Need").

The production path is ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels
on GPU). ``eager=True`` (or ``impl=reference``) materialises the N x N weights in float32, which is what the
LRA baselines (Nystromformer/Skyformer PyTorch code) do and what gives them their quadratic memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.registry import register


def softmax_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout: float = 0.0
) -> torch.Tensor:
    """Plain N x N softmax attention; masked keys get weight exactly 0."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return F.dropout(scores.softmax(dim=-1), dropout) @ v


@register("softmax", complexity="O(N^2)", source="Vaswani et al. 2017, Attention Is All You Need")
class SoftmaxAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, impl: str = "auto", eager: bool = False):
        super().__init__(dim, num_heads, dropout, "reference" if eager else impl)

    def attend(self, q, k, v, mask):
        p = self.dropout if self.training else 0.0
        if self.use_reference:
            with torch.autocast(q.device.type, enabled=False):
                return softmax_reference(*at_least_fp32(q, k, v), mask, p).to(v.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=p)
