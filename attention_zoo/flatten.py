"""FLatten: focused linear attention (Han et al., ICCV 2023, "FLatten Transformer: Vision Transformer using
Focused Linear Attention"; official code LeapLabTHU/FLatten-Transformer, ``FocusedLinearAttention``).

Linear form o_i = phi(q_i)^T S / (phi(q_i)^T z) with the *focused* feature map

    phi(x) = f_p(relu(x) + 1e-6) / softplus(s),   f_p(x) = ||x|| * x**p / ||x**p||   (element-wise power p)

which keeps the norm of the feature but pushes its direction towards its largest coordinates, so similar
queries and keys get sharper (softmax-like) weights. A depthwise conv (DWC) over V is added to the output to
restore the rank that the d-dimensional features cap the attention matrix at.

What follows the released code:

* ``relu(x) + 1e-6``, then division by a learnable per-channel scale ``softplus(s)`` (``s`` initialised to 0,
  so the scale starts at ln 2), then f_p with ``p = focusing_factor = 3``;
* the norms in f_p are taken over the token's *whole* model dimension (all heads together), as the released code
  does before it splits heads, not over each head separately;
* normaliser ``1 / (phi(q) . mean_j phi(k_j) + 1e-6)`` and the state ``sum_j phi(k_j) v_j^T / N``;
* the DWC has ``head_dim`` channels and is shared by all heads (kernel 5).

Where we deviate, and why:

* 1-D sequences: the DWC is a ``Conv1d`` over the sequence instead of a ``Conv2d`` over the image grid.
* The vision code adds a learnable absolute position table to k, sized to a fixed window; we leave it out
  because the LRA encoder already adds learned absolute position embeddings to the input.
* x**p / ||x**p|| is computed as (x/m)**p / ||(x/m)**p|| with m the token's largest coordinate: the same value
  (the ratio is scale-free), but it cannot underflow to 0/0 in float32 (the released code does this only for p > 6).
* LRA padding: padded keys are left out of S, z, the key mean and the 1/N (N = number of valid keys), and v is
  zeroed at padded positions before the DWC, so appending padding never changes valid outputs.
* No attention dropout: there is no weight matrix to drop in the linear form (the released module has none either).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.registry import register


def focused_feature_map(x: torch.Tensor, scale: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """phi(x) for x (B, H, N, d); ``scale`` (H, 1, d) is positive. Norms run over (H, d): the token's full feature."""
    x = (F.relu(x) + eps) / scale
    dims = (1, 3)
    norm = x.square().sum(dim=dims, keepdim=True).sqrt()
    powered = (x / x.amax(dim=dims, keepdim=True)) ** p  # largest coordinate is 1: no underflow
    return powered / powered.square().sum(dim=dims, keepdim=True).sqrt() * norm


def normalised_linear_weights(
    phi_q: torch.Tensor, phi_k: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """The N x N weights w_ij = (phi_q_i . phi_k_j) / N / (phi_q_i . mean_j phi_k_j + eps); padded keys get 0.

    N counts the valid keys only. Shared with PolaFormer, whose released code uses the same normalisation.
    """
    keep = mask[:, None, :, None].to(phi_k.dtype)
    phi_k = phi_k * keep
    count = keep.sum(dim=2, keepdim=True)  # (B, 1, 1, 1)
    scores = phi_q @ phi_k.transpose(-1, -2)  # (B, H, N, N)
    denom = phi_q @ (phi_k.sum(dim=2, keepdim=True) / count).transpose(-1, -2) + eps  # (B, H, N, 1)
    return scores / count / denom


def normalised_linear_reference(phi_q, phi_k, v, mask, eps: float = 1e-6) -> torch.Tensor:
    """Reference: materialise the weights, then W @ v."""
    return normalised_linear_weights(phi_q, phi_k, mask, eps) @ (v * mask[:, None, :, None].to(v.dtype))


def normalised_linear_fast(phi_q, phi_k, v, mask, eps: float = 1e-6) -> torch.Tensor:
    """The same quantity in O(N D d) through the (D x d) state sum_j phi_k_j v_j^T; never an N x N tensor."""
    keep = mask[:, None, :, None].to(phi_k.dtype)
    phi_k = phi_k * keep
    count = keep.sum(dim=2, keepdim=True)
    root = count.rsqrt()  # split 1/N over both factors as the released code does (keeps the state small)
    state = (phi_k * root).transpose(-1, -2) @ (v * keep * root)  # (B, H, D, d)
    k_mean = phi_k.sum(dim=2, keepdim=True) / count  # (B, H, 1, D)
    denom = (phi_q * k_mean).sum(dim=-1, keepdim=True) + eps
    return (phi_q @ state) / denom


def depthwise_conv_heads(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise 1-D conv over the sequence, one set of ``head_dim`` kernels shared by all heads (v: B, H, N, d)."""
    b, h, n, d = v.shape
    x = v.reshape(b * h, n, d).transpose(1, 2)  # (B*H, d, N)
    bias = None if bias is None else bias.to(v.dtype)
    out = F.conv1d(x, weight.to(v.dtype), bias, padding=weight.shape[-1] // 2, groups=d)
    return out.transpose(1, 2).reshape(b, h, n, d)


def make_dwc(head_dim: int, kernel: int) -> nn.Conv1d | None:
    """The rank-restoring depthwise conv (``None`` when kernel is 0)."""
    if kernel == 0:
        return None
    if kernel < 0 or kernel % 2 == 0:
        raise ValueError(f"attention.dwc_kernel={kernel} must be odd (so the length is kept) or 0 (no DWC)")
    return nn.Conv1d(head_dim, head_dim, kernel, padding=kernel // 2, groups=head_dim)


@register(
    "flatten",
    complexity="O(N)",
    source="Han et al. 2023 (ICCV), FLatten Transformer: Vision Transformer using Focused Linear Attention",
)
class FocusedLinearAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        focusing_factor: float = 3.0,
        dwc_kernel: int = 5,
        eps: float = 1e-6,
    ):
        super().__init__(dim, num_heads, impl=impl)
        self.focusing_factor, self.eps = focusing_factor, eps
        self.scale = nn.Parameter(torch.zeros(num_heads, 1, self.head_dim))  # softplus(0) = ln 2, as released
        self.dwc = make_dwc(self.head_dim, dwc_kernel)

    def attend(self, q, k, v, mask):
        dtype = v.dtype
        with torch.autocast(q.device.type, enabled=False):  # the feature powers need fp32 at least
            q, k, v = at_least_fp32(q, k, v)
            v = v * mask[:, None, :, None].to(v.dtype)
            scale = F.softplus(self.scale.to(q.dtype))
            phi_q, phi_k = (focused_feature_map(t, scale, self.focusing_factor, self.eps) for t in (q, k))
            kernel = normalised_linear_reference if self.use_reference else normalised_linear_fast
            out = kernel(phi_q, phi_k, v, mask, self.eps)
            if self.dwc is not None:
                out = out + depthwise_conv_heads(v, self.dwc.weight, self.dwc.bias)
        return out.to(dtype)
