"""NaLaFormer: norm-aware linear attention (Meng et al., arXiv 2506.21137, ICML 2026).

Follows the authors' released ``NormAwareLinearAttn`` (see ``shared/specs/nalaformer.md``), adapted from 2-D
vision tokens to 1-D sequences:

* each query is split into norm x direction and the direction is raised to ``p = 3 (0.5 + tanh |q|)``, so
  larger queries give spikier (lower-entropy) weights, as in softmax;
* ``k <- k**3``; q and k are split into positive and negative parts, so equal-sign dimensions add and
  opposite-sign dimensions contribute nothing (never a negative weight before RoPE);
* 1-D RoPE on the feature maps in the numerator only (the released code uses 2-D RoPE over rows and
  columns); the normaliser uses the un-rotated features. **A known deviation** (found in session 14): the
  released ``NALA.py`` rotates each sign half (``q+``, ``q-``, ``k+``, ``k-``) on its own; we rotate the 2d-wide
  feature in pairs ``(i, i + d)``, i.e. a dimension's positive part with its negative part, which adds the
  cross-sign terms ``(q+_i k-_i - q-_i k+_i) sin`` to the numerator. ``rope_pairing=within_signs`` computes the
  released rotation (each half with ordinary 1-D RoPE), on every path; the default stays ``across_signs``, which
  every committed row used, until the rows are re-run with it (and its speed on a GPU is measured: its Triton
  kernels compute twice the feature powers);
* the block: one ``Linear(C, 4C)`` for q, k, v and a gate; LePE = depthwise conv (kernel 5, 1-D here instead of
  5x5) over v added to the attention output; ``out = Linear(LayerNorm(attn + lepe) * SiLU(gate))``.

LRA additions: padded keys are excluded from the state, the key mean and the ``N^-1/2`` scalings (which use the
count of valid keys), and v is zeroed at padded positions before LePE, so appending padding never changes
valid outputs. The query norm is clamped at ``eps`` so an all-zero query gives 0, not 0/0.

Implementations of the kernel (``impl``): ``reference`` materialises the N x N weights; ``linear`` is the
linear-time form through plain autograd (readable, memory-hungry in backward); ``fused`` is
:mod:`attention_zoo.nala_fused`, the same math with a hand-written backward that recomputes the feature maps;
``triton`` is :mod:`attention_zoo.nala_triton`, kernels that never write the feature maps to memory. ``auto`` (the
default; ``fast`` is an alias) takes ``triton`` on CUDA where it applies, else ``fused``.

``rope``, ``lepe`` and ``gate`` switch parts of the block off; ``norm_aware=False`` uses the fixed power
``fixed_power`` and ``sign_split=False`` uses plain ``relu`` features: the paper's ablations.

``shift`` (a diagnostic, not the paper's model; 0 = as released) adds a constant to every feature of q and k.
Linear attention with relu features memorises Pathfinder-32 where elu + 1 learns, and relu + 1 learns too while
relu + 1e-3 does not (session 18, results/diagnostics/pathfinder/README.md): the floor under the features is what
mattered there. NaLaFormer's features have none; ``shift`` asks whether one rescues it. It does not (session 20:
52.05 with LePE off too, its attention fitting the training images only). ``key_power`` (a diagnostic too; 3 = the
released cube) takes apart what else NaLa's features add to relu's, their powers: with ``key_power=1``,
``norm_aware=False``, ``fixed_power=1``, ``sign_split=False``, ``rope=False`` and ``shift=1`` the kernel is linear
attention with relu + 1 features of unit-norm queries (relu + 1 of raw queries learned, 77.35), tested. That end
memorised too (session 21: 51.06 with a floor of 1, 50.37 with 0.1), so what separates it from the linear attention that
learns is the query's division by its norm or the block around the kernel. ``unit_queries=False`` (features of the raw
query, ``relu(q)**p``) and ``out_norm=False`` (no LayerNorm on ``attn + lepe``; with ``gate=False`` and ``lepe=False``
the block is ``proj(attn)``, as every other attention's) take those apart: with both, ``gate=False``, ``lepe=False`` and
the settings above, this module equals :class:`attention_zoo.linear.LinearAttention` with relu + 1 features, tested (up
to where each adds its ``eps``: to the mean of the key features here, to their sum there). Only the ``linear`` and
``reference`` paths form features in PyTorch, so ``auto`` takes ``linear`` when ``shift``, ``key_power`` or
``unit_queries`` differs from the released value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from attention_zoo import lepe_triton
from attention_zoo.base import at_least_fp32, check_inputs, feature_shift
from attention_zoo.nala_fused import nala_fused
from attention_zoo.nala_triton import nala_triton, supports
from attention_zoo.registry import register
from attention_zoo.rope import apply_rope


def nala_feature_maps(
    q: torch.Tensor,
    k: torch.Tensor,
    norm_aware: bool = True,
    sign_split: bool = True,
    fixed_power: float = 3.0,
    eps: float = 1e-6,
    shift: float = 0.0,
    key_power: int = 3,
    unit_queries: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """phi_q and phi_k (2d wide with the sign split, d wide without)."""
    k = k**key_power
    n = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    p = 3.0 * (0.5 + torch.tanh(n)) if norm_aware else torch.full_like(n, fixed_power)
    scale = n if unit_queries else 1.0  # the direction q/|q| as released; raw q is a diagnostic
    if sign_split:
        phi_q = torch.cat([(F.relu(q) / scale) ** p, (F.relu(-q) / scale) ** p], dim=-1)
        phi_k = torch.cat([F.relu(k), F.relu(-k)], dim=-1)
    else:
        phi_q, phi_k = (F.relu(q) / scale) ** p, F.relu(k)
    if shift:
        phi_q, phi_k = phi_q + shift, phi_k + shift
    return phi_q, phi_k


def nala_weights(phi_q, phi_k, mask, rope: bool = True, denom_eps: float = 1e-6, rope_groups: int = 1) -> torch.Tensor:
    """w_ij = <R phi_q_i, R phi_k_j> / (N_valid (phi_q_i . mean_j phi_k_j + eps)), padded keys' columns 0:
    (B, H, N, N). Also read by ``python -m lra.ablate`` to measure how much queries differ in what they weight."""
    keep = mask[:, None, :, None].to(phi_k.dtype)
    phi_k = phi_k * keep
    count = keep.sum(dim=2, keepdim=True)  # (B, 1, 1, 1): valid keys per sequence
    rq, rk = (apply_rope(phi_q, groups=rope_groups), apply_rope(phi_k, groups=rope_groups)) if rope else (phi_q, phi_k)
    scores = rq @ rk.transpose(-1, -2)  # (B, H, N, N)
    denom = phi_q @ (phi_k.sum(dim=2, keepdim=True) / count).transpose(-1, -2) + denom_eps  # (B, H, N, 1)
    return scores / count / denom


def nala_reference(
    phi_q, phi_k, v, mask, rope: bool = True, denom_eps: float = 1e-6, rope_groups: int = 1
) -> torch.Tensor:
    """Materialise the weights (nala_weights), then W @ v."""
    keep = mask[:, None, :, None].to(v.dtype)
    return nala_weights(phi_q, phi_k, mask, rope, denom_eps, rope_groups) @ (v * keep)


def nala_linear(
    phi_q, phi_k, v, mask, rope: bool = True, denom_eps: float = 1e-6, rope_groups: int = 1
) -> torch.Tensor:
    """The same quantity in O(N d^2): a (2d x d) state per head, never an N x N tensor."""
    keep = mask[:, None, :, None].to(phi_k.dtype)
    phi_k = phi_k * keep
    count = keep.sum(dim=2, keepdim=True)
    scale = count.rsqrt()
    rq, rk = (apply_rope(phi_q, groups=rope_groups), apply_rope(phi_k, groups=rope_groups)) if rope else (phi_q, phi_k)
    state = (rk * scale).transpose(-1, -2) @ (v * keep * scale)  # (B, H, 2d, d)
    k_mean = phi_k.sum(dim=2, keepdim=True) / count  # (B, H, 1, 2d)
    denom = (phi_q * k_mean).sum(dim=-1, keepdim=True) + denom_eps
    return (rq @ state) / denom


IMPLS = ("auto", "fast", "triton", "fused", "linear", "reference")
RELEASED_FEATURES = dict(shift=0.0, key_power=3, unit_queries=True)  # the diagnostics' values that are the paper's
ROPE_PAIRINGS = ("across_signs", "within_signs")
LEPE_IMPLS = ("conv1d", "channels_last", "shift", "triton", "auto")


def depthwise_conv_tokens(v: torch.Tensor, conv: nn.Conv1d, impl: str) -> torch.Tensor:
    """``conv`` (depthwise, odd kernel, 'same' padding) along the tokens of ``v`` (B, N, C), three ways with the same
    parameters. Why three: on an H200 at 2^20 tokens x 512 channels the ``Conv1d`` over the (B, C, N) transpose took
    36 ms fwd+bwd, 1.7x the attention kernel (docs/nala-kernel-notes.md); the other two keep the (B, N, C) layout.

    * ``conv1d``: ``nn.Conv1d`` on the transpose (the released module's layer, as is);
    * ``channels_last``: (B, N, C) is the channels-last layout of a (B, C, 1, N) image, so ``conv2d`` reads it in
      place (cuDNN's NHWC depthwise kernels);
    * ``shift``: k shifted multiply-adds, memory-bound, no convolution library at all;
    * ``triton``: one Triton kernel each way on the (B, N, C) layout (:mod:`attention_zoo.lepe_triton`);
    * ``auto``: ``triton`` on CUDA where Triton is installed, ``conv1d`` elsewhere.
    """
    if impl == "auto":  # Triton on a GPU (NaLa block 104 -> 78 ms at 16K on the H200), the released layer elsewhere
        impl = "triton" if v.is_cuda and lepe_triton.triton is not None else "conv1d"
    if impl == "conv1d":
        return conv(v.transpose(1, 2)).transpose(1, 2)
    if impl == "triton":
        return lepe_triton.lepe_conv_triton(v, conv)
    width = conv.weight.shape[-1]
    if impl == "channels_last":
        image = v.transpose(1, 2).unsqueeze(2)  # (B, C, 1, N), channels-last strides, no copy
        out = F.conv2d(image, conv.weight.unsqueeze(2), conv.bias, padding=(0, width // 2), groups=v.shape[-1])
        return out.squeeze(2).transpose(1, 2)
    padded = F.pad(v, (0, 0, width // 2, width // 2))
    taps = conv.weight[:, 0, :].to(v.dtype)  # (C, k)
    out = conv.bias.to(v.dtype).expand_as(v)
    for j in range(width):
        out = out + padded[:, j : j + v.shape[1]] * taps[:, j]
    return out


@register("nalaformer", complexity="O(N)", source="Meng et al. 2026 (ICML), NaLaFormer, arXiv 2506.21137")
class NaLaAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        rope: bool = True,
        rope_pairing: str = "across_signs",
        lepe: bool = True,
        gate: bool = True,
        norm_aware: bool = True,
        sign_split: bool = True,
        fixed_power: float = 3.0,
        lepe_kernel: int = 5,
        lepe_impl: str = "auto",
        eps: float = 1e-6,
        shift: float = 0.0,
        key_power: int = 3,
        unit_queries: bool = True,
        out_norm: bool = True,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model dim {dim} is not divisible by num_heads {num_heads}; pick heads that divide it")
        if impl not in IMPLS:
            raise ValueError(f"attention.impl={impl!r} is not one of {', '.join(IMPLS)}")
        if lepe_impl not in LEPE_IMPLS:
            raise ValueError(f"attention.lepe_impl={lepe_impl!r} is not one of {', '.join(LEPE_IMPLS)}")
        if rope_pairing not in ROPE_PAIRINGS:
            raise ValueError(f"attention.rope_pairing={rope_pairing!r} is not one of {', '.join(ROPE_PAIRINGS)}")
        # within_signs: the released code's rotation, each sign half on its own (d-wide features have one half)
        self.rope_groups = 2 if rope_pairing == "within_signs" and sign_split else 1
        if isinstance(key_power, bool) or not isinstance(key_power, int) or key_power < 1 or key_power % 2 == 0:
            raise ValueError(
                f"attention.key_power={key_power!r}: expected an odd positive integer (1, 3, ...), "
                "which keeps each key's sign for the sign split"
            )
        # The diagnostics that change the features themselves: the fused and Triton kernels form only the released ones.
        self.torch_features = dict(shift=feature_shift(shift), key_power=key_power, unit_queries=unit_queries)
        self.released_features = self.torch_features == RELEASED_FEATURES
        for name, value in self.torch_features.items():
            if value != RELEASED_FEATURES[name] and impl in {"triton", "fused"}:
                raise ValueError(
                    f"attention.{name}={value} needs attention.impl=linear or reference (or auto): the {impl} "
                    "kernels form the released features only"
                )
        if lepe_kernel % 2 == 0:
            raise ValueError(f"attention.lepe_kernel={lepe_kernel} must be odd so the length is kept")
        self.dim, self.num_heads, self.impl = dim, num_heads, impl
        self.rope, self.gate, self.eps, self.lepe_impl = rope, gate, eps, lepe_impl
        self.feature_opts = dict(norm_aware=norm_aware, sign_split=sign_split, fixed_power=fixed_power, eps=eps)
        self.qkvg = nn.Linear(dim, 4 * dim)
        self.lepe = nn.Conv1d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim) if lepe else None
        self.norm = nn.LayerNorm(dim) if out_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = check_inputs(x, mask, self.dim)
        q, k, v, g = self.qkvg(x).chunk(4, dim=-1)
        v = v * mask[..., None].to(v.dtype)
        heads = [rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v)]
        with torch.autocast(x.device.type, enabled=False):  # feature maps in fp32, as the released kernel
            impl = self.impl
            if impl in {"auto", "fast"} and not self.released_features:
                impl = "linear"
            elif impl in {"auto", "fast"}:
                impl = "triton" if x.is_cuda and supports(heads[0], self.feature_opts["sign_split"]) else "fused"
            if impl in {"triton", "fused"}:
                kernel = nala_triton if impl == "triton" else nala_fused
                out = kernel(
                    *heads, mask, rope=self.rope, denom_eps=self.eps, rope_groups=self.rope_groups, **self.feature_opts
                )
            else:
                qh, kh, vh = at_least_fp32(*heads)
                phi_q, phi_k = nala_feature_maps(qh, kh, **self.feature_opts, **self.torch_features)
                kernel = nala_reference if impl == "reference" else nala_linear
                out = kernel(phi_q, phi_k, vh, mask, rope=self.rope, denom_eps=self.eps, rope_groups=self.rope_groups)
        out = rearrange(out, "b h n d -> b n (h d)").to(x.dtype)
        if self.lepe is not None:
            out = out + depthwise_conv_tokens(v, self.lepe, self.lepe_impl)
        out = self.norm(out)
        if self.gate:
            out = out * F.silu(g)
        return self.proj(out)
