"""cosFormer (Qin et al., 2022, "cosFormer: Rethinking Softmax in Attention").

Per head, with phi = relu and the cos re-weighting of the paper::

    w_ij = relu(q_i) . relu(k_j) * cos(pi/2 * (i - j) / M),   o_i = sum_j w_ij v_j / sum_j w_ij

Because cos(a - b) = cos a cos b + sin a sin b, the weight splits into two linear attentions, which the fast
path computes as one linear attention over 2d-wide features
``[relu(x) cos(pi/2 i/M), relu(x) sin(pi/2 i/M)]``. The official code (OpenNLPLab/cosFormer) orders the halves
[sin, cos], uses positions i = 1..N and clamps the normaliser at ``eps = 1e-6`` (``clamp_min``); we do the same.

Deviations, both for padding (LRA batches are padded to a fixed length):

* M is the number of *valid* tokens of each sequence, not the padded length (the paper and official code use
  M = the sequence length). With M = N, appending padding would change every valid output; with the valid count
  the weights of a padded sequence equal those of the unpadded one, and |i - j| < M keeps every weight >= 0.
* the position index i is the rank of the token among the valid tokens (cumulative count of the mask). For
  right-padded sequences, as in LRA, this is exactly the paper's index; for other padding layouts it keeps
  i in 1..M so the weights stay non-negative.

Padded keys are left out of the state and the normaliser.

``index="position"`` uses the official indexing instead: i = 1..N over all tokens, M = N. It matters where
padding is *inside* a sequence: in the image tasks pixel value 0 is padding (LRA's convention), so in Pathfinder
the valid tokens are the bright pixels, and the default rank counts bright pixels, not places in the image. For
right-padded sequences the two differ only in M. An ablation switch: cosformer stayed at chance on Pathfinder with
the default (session 13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.registry import register

INDEXES = ("rank", "position")


def cos_angles(mask: torch.Tensor, dtype: torch.dtype, index: str = "rank") -> torch.Tensor:
    """pi/2 * i / M per token, (B, 1, N, 1). ``rank``: i = 1-based rank among valid tokens, M = valid tokens per
    sequence; ``position``: i = 1..N, M = N (the official code)."""
    if index == "position":
        n = mask.shape[-1]
        positions = torch.arange(1, n + 1, device=mask.device, dtype=dtype)
        return (math.pi / 2 * positions / n).expand(mask.shape)[:, None, :, None]
    ranks = mask.cumsum(dim=-1).to(dtype)  # (B, N)
    count = mask.sum(dim=-1, keepdim=True).to(dtype)  # (B, 1)
    return (math.pi / 2 * ranks / count)[:, None, :, None]


def cosformer_reference(q, k, v, mask, eps: float = 1e-6, index: str = "rank") -> torch.Tensor:
    """The directly re-weighted N x N matrix: (relu(Q) relu(K)^T) * cos(pi/2 (i - j)/M), padded keys zeroed."""
    keep = mask[:, None, :, None]
    q, k, v = F.relu(q), F.relu(k).masked_fill(~keep, 0.0), v.masked_fill(~keep, 0.0)
    angle = cos_angles(mask, q.dtype, index)
    weights = (q @ k.transpose(-1, -2)) * torch.cos(angle - angle.transpose(-1, -2))  # (B, H, N, N)
    return (weights @ v) / weights.sum(dim=-1, keepdim=True).clamp_min(eps)


def cosformer_linear(q, k, v, mask, eps: float = 1e-6, index: str = "rank") -> torch.Tensor:
    """The same in O(N d^2): the cos/sin decomposition as one linear attention over 2d-wide features."""
    keep = mask[:, None, :, None]
    q, k, v = F.relu(q), F.relu(k).masked_fill(~keep, 0.0), v.masked_fill(~keep, 0.0)
    angle = cos_angles(mask, q.dtype, index)
    sin, cos = torch.sin(angle), torch.cos(angle)
    phi_q = torch.cat([q * sin, q * cos], dim=-1)  # (B, H, N, 2d)
    phi_k = torch.cat([k * sin, k * cos], dim=-1)
    state = phi_k.transpose(-1, -2) @ v  # (B, H, 2d, d)
    z = phi_k.sum(dim=2)[..., None]  # (B, H, 2d, 1)
    return (phi_q @ state) / (phi_q @ z).clamp_min(eps)


@register("cosformer", complexity="O(N)", source="Qin et al. 2022, cosFormer: Rethinking Softmax in Attention")
class CosformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, impl: str = "auto", eps: float = 1e-6, index: str = "rank"):
        super().__init__(dim, num_heads, impl=impl)
        if index not in INDEXES:
            raise ValueError(f"attention.index={index!r}: use one of {', '.join(INDEXES)}")
        self.eps, self.index = eps, index

    def attend(self, q, k, v, mask):
        kernel = cosformer_reference if self.use_reference else cosformer_linear
        with torch.autocast(q.device.type, enabled=False):
            out = kernel(*at_least_fp32(q, k, v), mask, self.eps, self.index)
        return out.to(q.dtype)
