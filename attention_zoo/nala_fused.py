"""NaLaFormer's production path: the linear-time kernel as one autograd function with a hand-written backward.

Why: through plain autograd, the released formula keeps every intermediate of the feature maps (2d wide, fp32)
for the backward pass: tens of GB at LRA lengths. Here the forward keeps only q, k, v, the output, the (2d x d)
state, the key mean and the normaliser, and the backward recomputes the feature maps, in chunks of
batch x heads so that no more than a bounded slice of N x 2d intermediates is alive at once. The two matrix
products run in the input precision (bf16 under autocast) with fp32 accumulation; the feature maps, their
derivatives and the normaliser run in fp32 (fp64 for fp64 inputs). On CUDA the element-wise pieces are compiled
with ``torch.compile`` so they fuse into a few kernels.

Math (per head; A = R phi_q, B = phi_q, Kr = R phi_k, Ku = phi_k, keys masked, c = number of valid keys):
    S = Kr^T V / c,   kbar = Ku^T 1 / c,   o = (A S) / (B kbar + eps)
Backward, with dO given:
    dnum = dO / den,  dden = -(dO . o) / den,  dA = dnum S^T,  dS = A^T dnum,  dB = dden kbar^T,
    dkbar = B^T dden,  dKr = V dS^T / c,  dV = Kr dS / c,  dKu = 1 dkbar^T / c,
then through RoPE (its transpose is the inverse rotation) and the element-wise feature maps (derivatives below).
``tests/test_zoo_nalaformer.py`` checks all of it against autograd through :func:`nala_linear` in float64.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from attention_zoo.rope import apply_rope

CHUNK_ELEMENTS = 1 << 26  # batch*heads slices processed together: N * 2d * slices <= this (fp32: 256 MB/tensor)
COMPILE = os.environ.get("LRA_NALA_COMPILE", "1") != "0"  # torch.compile the element-wise pieces on CUDA


def q_features(q: torch.Tensor, norm_aware: bool, sign_split: bool, fixed_power: float, eps: float) -> torch.Tensor:
    """phi_q = ((relu(q)/|q|)^p, (relu(-q)/|q|)^p), p = 3 (0.5 + tanh |q|) (same as nalaformer.nala_feature_maps)."""
    n = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    p = 3.0 * (0.5 + torch.tanh(n)) if norm_aware else torch.full_like(n, fixed_power)
    pos = (F.relu(q) / n) ** p
    return torch.cat([pos, (F.relu(-q) / n) ** p], dim=-1) if sign_split else pos


def q_features_vjp(
    q: torch.Tensor, g: torch.Tensor, norm_aware: bool, sign_split: bool, fixed_power: float, eps: float
) -> torch.Tensor:
    """dq for a gradient ``g`` on phi_q. With u = relu(+-q)/n and f = u^p:
    df/dq_j = p u^(p-1) [+-q_j > 0] (+-1) / n  (direct)  +  (sum_i g_i (-p f_i / n + f_i ln(u_i) dp/dn)) dn/dq_j,
    dn/dq = q / |q| (0 where the norm is clamped), dp/dn = 3 (1 - tanh^2 n) (0 for a fixed power)."""
    n_raw = q.norm(dim=-1, keepdim=True)
    n = n_raw.clamp_min(eps)
    if norm_aware:
        t = torch.tanh(n)
        p, dp_dn = 3.0 * (0.5 + t), 3.0 * (1.0 - t * t)
    else:
        p, dp_dn = torch.full_like(n, fixed_power), torch.zeros_like(n)
    halves = [(F.relu(q), 1.0)] + ([(F.relu(-q), -1.0)] if sign_split else [])
    grads = g.chunk(len(halves), dim=-1)
    dq = torch.zeros_like(q)
    through_n = torch.zeros_like(n)
    for (r, sign), gi in zip(halves, grads, strict=True):
        u = r / n
        f = u**p
        dq = dq + gi * p * u ** (p - 1) * (r > 0) * (sign / n)
        f_log_u = torch.where(u > 0, f * torch.log(torch.where(u > 0, u, 1.0)), 0.0)
        through_n = through_n + (gi * (-p * f / n + f_log_u * dp_dn)).sum(-1, keepdim=True)
    dn_dq = torch.where(n_raw > eps, q / n_raw.clamp_min(eps), 0.0)
    return dq + through_n * dn_dq


def k_features(k: torch.Tensor, sign_split: bool) -> torch.Tensor:
    k3 = k**3
    return torch.cat([F.relu(k3), F.relu(-k3)], dim=-1) if sign_split else F.relu(k3)


def k_features_vjp(k: torch.Tensor, g: torch.Tensor, sign_split: bool) -> torch.Tensor:
    k3 = k**3
    if sign_split:
        g_pos, g_neg = g.chunk(2, dim=-1)
        return 3 * k * k * (g_pos * (k3 > 0) - g_neg * (k3 < 0))
    return 3 * k * k * g * (k3 > 0)


def _features(q, k, keep, rope, opts, groups=1):
    b = q_features(q, **opts)
    ku = k_features(k, opts["sign_split"]) * keep
    return b, (apply_rope(b, groups=groups) if rope else b), ku, (apply_rope(ku, groups=groups) if rope else ku)


def _feature_grads(q, k, keep, rope, opts, d_a, d_b, d_kr, d_ku, groups=1):
    g_q = (apply_rope(d_a, inverse=True, groups=groups) if rope else d_a) + d_b
    g_k = ((apply_rope(d_kr, inverse=True, groups=groups) if rope else d_kr) + d_ku) * keep
    return q_features_vjp(q, g_q, **opts), k_features_vjp(k, g_k, opts["sign_split"])


@functools.cache
def _compiled(name: str):
    """torch.compile'd element-wise pieces, built once per process, on CUDA only."""
    fn = {"features": _features, "feature_grads": _feature_grads}[name]
    return torch.compile(fn, dynamic=True)


def _pieces(device: torch.device):
    if device.type == "cuda" and COMPILE:
        return _compiled("features"), _compiled("feature_grads")
    return _features, _feature_grads


class NaLaFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, rope: bool, denom_eps: float, opts: dict, rope_groups: int = 1):
        bsz, heads, n, d = q.shape
        cdt = torch.promote_types(q.dtype, torch.float32)  # element-wise math
        gdt = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else cdt  # matrix products
        features, _ = _pieces(q.device)
        keep = mask[:, None, :, None].to(cdt)
        count = keep.sum(dim=2, keepdim=True)  # (B, 1, 1, 1)
        width = 2 * d if opts["sign_split"] else d
        out = torch.empty_like(v)
        state = torch.empty(bsz, heads, width, d, dtype=cdt, device=q.device)
        k_mean = torch.empty(bsz, heads, 1, width, dtype=cdt, device=q.device)
        den = torch.empty(bsz, heads, n, 1, dtype=cdt, device=q.device)
        for sl in _chunks(bsz, heads, n, width):
            qf, kf, vf = q[sl].to(cdt), k[sl].to(cdt), v[sl].to(cdt)
            kp = keep[sl[0]]
            b, a, ku, kr = features(qf, kf, kp, rope, opts, rope_groups)
            s = (kr.to(gdt).transpose(-1, -2) @ (vf * kp).to(gdt)).to(cdt) / count[sl[0]]
            km = ku.sum(dim=2, keepdim=True) / count[sl[0]]
            dn = (b * km).sum(dim=-1, keepdim=True) + denom_eps
            out[sl] = ((a.to(gdt) @ s.to(gdt)).to(cdt) / dn).to(v.dtype)
            state[sl], k_mean[sl], den[sl] = s, km, dn
        ctx.save_for_backward(q, k, v, mask, out, state, k_mean, den)
        ctx.rope, ctx.opts, ctx.cdt, ctx.gdt, ctx.rope_groups = rope, opts, cdt, gdt, rope_groups
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask, out, state, k_mean, den = ctx.saved_tensors
        cdt, gdt, rope, opts, groups = ctx.cdt, ctx.gdt, ctx.rope, ctx.opts, ctx.rope_groups
        bsz, heads, n, d = q.shape
        features, feature_grads = _pieces(q.device)
        keep = mask[:, None, :, None].to(cdt)
        count = keep.sum(dim=2, keepdim=True)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        width = state.shape[-2]
        for sl in _chunks(bsz, heads, n, width):
            qf, kf, vf = q[sl].to(cdt), k[sl].to(cdt), v[sl].to(cdt)
            kp, c = keep[sl[0]], count[sl[0]]
            s, km, dn = state[sl], k_mean[sl], den[sl]
            b, a, ku, kr = features(qf, kf, kp, rope, opts, groups)
            g = grad_out[sl].to(cdt)
            d_num = g / dn
            d_den = -(g * out[sl].to(cdt)).sum(dim=-1, keepdim=True) / dn
            d_a = (d_num.to(gdt) @ s.to(gdt).transpose(-1, -2)).to(cdt)
            d_s = (a.to(gdt).transpose(-1, -2) @ d_num.to(gdt)).to(cdt)
            d_b = d_den * km
            d_km = (b * d_den).sum(dim=2, keepdim=True)
            vm = vf * kp
            d_kr = (vm.to(gdt) @ d_s.to(gdt).transpose(-1, -2)).to(cdt) / c
            dv[sl] = ((kr.to(gdt) @ d_s.to(gdt)).to(cdt) / c * kp).to(v.dtype)
            d_ku = (kp * d_km) / c
            gq, gk = feature_grads(qf, kf, kp, rope, opts, d_a, d_b, d_kr, d_ku, groups)
            dq[sl], dk[sl] = gq.to(q.dtype), gk.to(k.dtype)
        return dq, dk, dv, None, None, None, None, None


def _chunks(bsz: int, heads: int, n: int, width: int):
    """Index slices over (batch, heads) so a chunk's N x width intermediates stay under CHUNK_ELEMENTS."""
    per_head = max(1, CHUNK_ELEMENTS // max(1, n * width))
    if per_head >= bsz * heads:
        yield (slice(None), slice(None))
        return
    if per_head >= heads:  # whole heads, several batch items
        step = per_head // heads
        for start in range(0, bsz, step):
            yield (slice(start, start + step), slice(None))
        return
    for bi in range(bsz):
        for start in range(0, heads, per_head):
            yield (slice(bi, bi + 1), slice(start, start + per_head))


def nala_fused(
    q,
    k,
    v,
    mask,
    rope: bool = True,
    denom_eps: float = 1e-6,
    norm_aware: bool = True,
    sign_split: bool = True,
    fixed_power: float = 3.0,
    eps: float = 1e-6,
    rope_groups: int = 1,
) -> torch.Tensor:
    """NaLa attention on (B, H, N, d) q, k, v with a (B, N) key mask; same result as ``nala_linear`` on
    ``nala_feature_maps``, in O(N d^2) time and O(N d) saved memory."""
    opts = dict(norm_aware=norm_aware, sign_split=sign_split, fixed_power=fixed_power, eps=eps)
    return NaLaFused.apply(q, k, v, mask, rope, denom_eps, opts, rope_groups)
