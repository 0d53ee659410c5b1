"""Linear attention (Katharopoulos et al., 2020, "Transformers are RNNs: Fast Autoregressive Transformers with
Linear Attention").

Per head, with the feature map phi(x) = elu(x) + 1 (positive, so every weight is positive and the normaliser
never vanishes)::

    o_i = phi(q_i)^T S / (phi(q_i)^T z + eps),   S = sum_j phi(k_j) v_j^T,   z = sum_j phi(k_j)

Follows the paper and its official code (``fast_transformers.attention.LinearAttention``): no ``1/sqrt(d)``
scaling, ``eps = 1e-6`` added to the normaliser. Padded keys are left out of S and z (the official code
multiplies the key features by the key-length mask the same way).

Not what the Nystromformer LRA code calls "linear": its ``attention_linear.py`` drops the normaliser and
divides phi(Q) phi(K)^T V by sqrt(N) instead. We keep the paper's normalised form; the difference is noted here
so LRA numbers are compared knowingly.

The two functions below, :func:`linear_form_reference` (materialises the N x N weights) and :func:`linear_form`
(S and z first, O(N d^2)), take any feature maps; Performer reuses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention_zoo.base import MultiHeadAttention, at_least_fp32, feature_shift
from attention_zoo.registry import register


def linear_form_reference(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Readable N x N version: W = phi(Q) phi(K)^T with padded key columns zeroed, out = W V / (W 1 + eps).

    Padded rows of phi_k and v are zeroed *before* the product (not the product masked afterwards) so that
    whatever sits there, even inf, cannot leak into valid outputs or their gradients.
    """
    keep = mask[:, None, :, None]
    phi_k, v = phi_k.masked_fill(~keep, 0.0), v.masked_fill(~keep, 0.0)
    weights = phi_q @ phi_k.transpose(-1, -2)  # (B, H, N, N)
    return (weights @ v) / (weights.sum(dim=-1, keepdim=True) + eps)


def linear_form(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """The same quantity in linear time: S = phi(K)^T V (F x d) and z = phi(K)^T 1 first, never N x N."""
    keep = mask[:, None, :, None]
    phi_k, v = phi_k.masked_fill(~keep, 0.0), v.masked_fill(~keep, 0.0)
    state = phi_k.transpose(-1, -2) @ v  # (B, H, F, d)
    z = phi_k.sum(dim=2)[..., None]  # (B, H, F, 1)
    return (phi_q @ state) / (phi_q @ z + eps)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


# ``feature_map=relu`` is a diagnostic, not the paper's model: it isolates the feature map that NaLaFormer,
# PolaFormer and cosFormer build on (those three stay at chance on Pathfinder-32 where elu+1 learns, and so does
# linear with relu, session 17: results/diagnostics/pathfinder/README.md). A relu feature can vanish, so a query
# may see no key: eps keeps that output 0 rather than 0/0. ``shift`` (added to every feature; 0 = the map as is)
# separates the ways relu differs from elu+1: relu + 1e-3 (NYS's relu-kernel Performer's shift) is never 0 but keeps
# relu's dead gradients and sparse weights; relu + 1 also has elu+1's floor, a uniform share of every key.
FEATURE_MAPS = {"elu": elu_feature_map, "relu": F.relu}


@register(
    "linear",
    complexity="O(N)",
    source="Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
)
class LinearAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        eps: float = 1e-6,
        feature_map: str = "elu",
        shift: float = 0.0,
    ):
        super().__init__(dim, num_heads, impl=impl)
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"attention.feature_map={feature_map!r} is not one of {', '.join(FEATURE_MAPS)}")
        self.eps, self.map, self.shift = eps, FEATURE_MAPS[feature_map], feature_shift(shift)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return self.map(x) + self.shift if self.shift else self.map(x)

    def attend(self, q, k, v, mask):
        kernel = linear_form_reference if self.use_reference else linear_form
        with torch.autocast(q.device.type, enabled=False):
            qf, kf, vf = at_least_fp32(q, k, v)
            out = kernel(self.phi(qf), self.phi(kf), vf, mask, self.eps)
        return out.to(q.dtype)
