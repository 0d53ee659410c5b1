"""PolaFormer: polarity-aware linear attention (Meng et al., ICLR 2025, "PolaFormer: Polarity-aware Linear
Attention for Vision Transformers"; official code ZacharyMeng/PolaFormer, ``PolaLinearAttention``).

Relu feature maps drop every similarity that involves a negative coordinate. PolaFormer splits q and k into
positive and negative parts (q = q+ - q-) and keeps both kinds of interaction as two linear attentions:

    same-sign      phi_s(q) . phi(k) = g(q+) . g(k+) + g(q-) . g(k-)
    opposite-sign  phi_o(q) . phi(k) = g(q-) . g(k+) + g(q+) . g(k-)

each over one half of the value channels (v = [v_s, v_o] per head), outputs concatenated, so the network learns
how to combine them instead of fixing same - opposite. g(x) = x**p is a learnable element-wise power that
makes the weights spikier (lower entropy); in the released code p = 1 + alpha * sigmoid(w), with one w per head
and channel, initialised to 0 (so p starts at 1 + alpha/2). A depthwise conv on v is added to the output.

What follows the released code: q and k are divided by a learnable per-channel ``softplus(s)`` (s = 0 at
init) before the split; the normaliser is ``1 / (phi_q . mean_j phi(k_j) + eps)`` with state
``sum_j phi(k_j) v_j^T / N`` (the same form as FLatten, whose code PolaFormer's builds on); the DWC has
``head_dim`` channels shared by all heads (kernel 5); the output is ``proj((attn + dwc(v)) * g)`` with a gate
g = Linear(x) and no activation on it (``gate=False`` drops it).

LRA: the README table reports alpha = 3, 5, 7; we default to 3 (the best average there, 60.72). The paper's LRA
hyperparameters beyond alpha were not retrievable (see shared/specs/lra.md, 5.5).

Where we deviate, and why: the DWC is a 1-D conv over the sequence (the released one is 2-D over the image);
the learnable absolute position table the vision code adds to k is left out (the LRA encoder already adds
learned position embeddings); padded keys are left out of the state, the key mean and the 1/N (N = valid
keys), and v is zeroed at padded positions before the DWC, so appending padding never changes valid outputs.
No attention dropout (no weight matrix in the linear form; the released module applies none).

``shift`` (a diagnostic, not the paper's model; 0 = as released) adds a constant to every feature after the power:
relu features without a floor memorise Pathfinder-32 here, relu + 1 learns (session 18,
results/diagnostics/pathfinder/README.md); it asks whether a floor closes PolaFormer's gap there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention_zoo.base import MultiHeadAttention, at_least_fp32, check_inputs, feature_shift
from attention_zoo.flatten import (
    depthwise_conv_heads,
    make_dwc,
    normalised_linear_fast,
    normalised_linear_reference,
)
from attention_zoo.registry import register


def polarity_feature_maps(
    q: torch.Tensor, k: torch.Tensor, power: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(phi_same(q), phi_opp(q), phi(k)), each 2d wide, for q, k (B, H, N, d) and ``power`` (H, 1, d) >= 1."""
    q_pos, q_neg = F.relu(q) ** power, F.relu(-q) ** power
    k_pos, k_neg = F.relu(k) ** power, F.relu(-k) ** power
    phi_same = torch.cat([q_pos, q_neg], dim=-1)
    phi_opp = torch.cat([q_neg, q_pos], dim=-1)
    phi_k = torch.cat([k_pos, k_neg], dim=-1)
    return phi_same, phi_opp, phi_k


@register(
    "polaformer",
    complexity="O(N)",
    source="Meng et al. 2025 (ICLR), PolaFormer: Polarity-aware Linear Attention for Vision Transformers",
)
class PolaLinearAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        alpha: float = 3.0,
        dwc_kernel: int = 5,
        gate: bool = True,
        eps: float = 1e-6,
        shift: float = 0.0,
    ):
        super().__init__(dim, num_heads, impl=impl)
        if self.head_dim % 2:
            raise ValueError(f"polaformer splits v into two halves per head; head_dim {self.head_dim} must be even")
        self.alpha, self.eps, self.shift = alpha, eps, feature_shift(shift)
        self.power = nn.Parameter(torch.zeros(num_heads, 1, self.head_dim))  # p = 1 + alpha * sigmoid(power)
        self.scale = nn.Parameter(torch.zeros(num_heads, 1, self.head_dim))  # q, k / softplus(scale)
        self.dwc = make_dwc(self.head_dim, dwc_kernel)
        self.gate = nn.Linear(dim, dim) if gate else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = check_inputs(x, mask, self.dim)
        q, k, v = (self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        out = self.merge_heads(self.attend(q, k, v, mask))
        if self.gate is not None:
            out = out * self.gate(x)
        return self.proj(out)

    def exponent(self) -> torch.Tensor:
        """The learnable element-wise power p = 1 + alpha * sigmoid(w), shape (H, 1, d)."""
        return 1 + self.alpha * torch.sigmoid(self.power)

    def attend(self, q, k, v, mask):
        dtype = v.dtype
        with torch.autocast(q.device.type, enabled=False):  # powers up to 1 + alpha need fp32 at least
            q, k, v = at_least_fp32(q, k, v)
            v = v * mask[:, None, :, None].to(v.dtype)
            scale = F.softplus(self.scale.to(q.dtype))
            phi_same, phi_opp, phi_k = polarity_feature_maps(q / scale, k / scale, self.exponent().to(q.dtype))
            if self.shift:
                phi_same, phi_opp, phi_k = phi_same + self.shift, phi_opp + self.shift, phi_k + self.shift
            v_same, v_opp = v.chunk(2, dim=-1)
            kernel = normalised_linear_reference if self.use_reference else normalised_linear_fast
            out = torch.cat(
                [kernel(phi_same, phi_k, v_same, mask, self.eps), kernel(phi_opp, phi_k, v_opp, mask, self.eps)],
                dim=-1,
            )
            if self.dwc is not None:
                out = out + depthwise_conv_heads(v, self.dwc.weight, self.dwc.bias)
        return out.to(dtype)
