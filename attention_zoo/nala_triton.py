"""NaLaFormer's GPU kernels in Triton: the same math as :mod:`attention_zoo.nala_fused`, without ever writing the
2d-wide feature maps to memory.

Why: the feature maps (phi_q, phi_k and their RoPE rotations) are 2d wide and fp32; in PyTorch every element-wise
step reads and writes them, so the fused autograd version spends its time moving ~100 GiB per step at 2^20 tokens
(``docs/nala-kernel-notes.md``). Here each kernel reads a block of rows of q, k or v (bf16), forms the features in
registers and feeds them straight into ``tl.dot``. Two facts keep it cheap:

* sign split: of ``relu(x)`` and ``relu(-x)`` exactly one is non-zero, so one power per element gives both halves;
* RoPE over the 2d-wide feature rotates pairs ``(i, i + d)``, which are the (positive, negative) halves of the same
  input element: the rotation mixes two d-wide tiles that live in the same registers. The released code's RoPE
  (``rope_groups=2``: each sign half on its own) keeps that shape by holding the features in another basis: tile 1
  is ``[x_lo+, x_lo-]``, tile 2 ``[x_hi+, x_hi-]`` (lo/hi: the head's first and second d/2 columns, each loaded
  twice), so the pairs are again column c of the two tiles; the state lives in that basis, and the gradients fold
  each tile's two column halves back onto the input (twice the feature powers of the default).

Five kernels, each one pass over its rows (per head; ``c`` = number of valid keys, R = RoPE):

* ``_state``      (keys):    S = (R phi_k)^T V / c (2d x d) and kbar = sum phi_k / c, partial sums per row split;
* ``_output``     (queries): o = (R phi_q) S / (phi_q . kbar + eps), and the normaliser ``den`` for the backward;
* ``_grad_state`` (queries): partial sums dS = (R phi_q)^T (dO / den) and dkbar = phi_q^T dden;
* ``_grad_q``     (queries): dq from S and kbar;
* ``_grad_kv``    (keys):    dk, dv from dS and dkbar.

Bytes per forward + backward: q read three times, k, v, o and dO twice, o, dq, dk, dv written once: 15 passes over a
(tokens x heads x d) bf16 tensor (12 is the minimum: one kernel did both query-side backward halves, reading q, o
and dO once, but it took half the step, 10 of 20 ms at 16K on an H200, against 4 and 2 ms for the other two).
Products run in the input precision (bf16, or fp32 as IEEE fp32 products, never tf32) with fp32 accumulation; the
feature maps, their derivatives and the normaliser are fp32, as the released code.

Supported: head_dim a power of two in [16, 64] (at 128 the output kernel needs more shared memory than an H200
has, 244 KB of 227 KB: not tuned yet), fp16/bf16/fp32, the sign split on (``sign_split=False`` and fp64
go to :mod:`attention_zoo.nala_fused`). Tests run these kernels on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1``) and compare them with ``nala_linear``; the GPU checks are in ``scripts/nala_kernel_probe.py``.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton: nala_fused is used instead
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Rows of q/k/v per step of a kernel. H200, 16K, fwd+bwd: 32 -> 20.4 ms, 64 -> 25.6 ms before v4 (session 8);
# with v4, 32 -> 20.54 ms, 64 -> 18.83 ms (session 17's --tune: `_state` 4.01 -> 3.20, `_grad_kv` 3.97 -> 3.04,
# `_grad_state` 3.42 -> 3.20; `_output` 2.12 -> 2.43 and `_grad_q` want smaller blocks: KERNEL_META below).
BLOCK_ROWS = 64
ROWS_PER_PROGRAM = 1024  # map kernels (output, grad_kv): rows per program, so the (2d x d) state is loaded rarely
NUM_WARPS = 4
# Software pipelining depth of every kernel (None = Triton's default, 3 on Hopper). v6: 2. H200, d=64, 16K, fwd+bwd
# under v5's blocks (session 18's --tune, one run): 1 -> 18.00 ms, 2 -> 16.17, 3 -> 17.37, default 17.22-17.29;
# session 19: 18.34 / 16.24 / 17.35 / 17.31. Head dim 128 (32-row blocks): 2 -> 30.33 ms, 1 -> 40.61. Untimed at
# LRA's head dim 32.
NUM_STAGES: int | None = 2
SPLITS: int | None = None  # row splits of the reduction kernels; None = enough programs to fill the GPU
# Settings for one kernel only, over the ones above: {"_grad_q": {"num_warps": 8}}. BLOCK may only shrink (a power
# of 2 up to BLOCK_ROWS, so that it divides every kernel's rows). Why: `_grad_q` holds the most live tiles and
# takes a third of the step (session 16: 6.8 of 20.6 ms); at 32-row blocks it uses all 255 registers and spills
# (session 17), at 16 it took 5.53 ms (8 warps: 9.61, 2 warps: 6.83). `_output` is fastest at 32 (2.12 ms).
# v5 = these with BLOCK_ROWS 64, each setting timed alone (docs/nala-kernel-notes.md); the probe's --tune times
# v4's settings beside the shipped ones (scripts/nala_kernel_probe.py). v7: `_grad_q` alone at 3 stages, the
# others at 2 (session 19, one run, 16K: the step 16.24 -> 15.80 ms, `_grad_q` 5.99 -> 5.52 ms; 1 stage: 5.74).
KERNEL_META: dict[str, dict[str, int]] = {"_grad_q": {"BLOCK": 16, "num_stages": 3}, "_output": {"BLOCK": 32}}


def available() -> bool:
    return triton is not None


def supports(q: torch.Tensor, sign_split: bool) -> bool:
    """Whether these kernels handle this input (else the caller uses nala_fused)."""
    d = q.shape[-1]
    return (
        triton is not None
        and sign_split
        and (q.is_cuda or INTERPRET)
        and 16 <= d <= 64
        and d & (d - 1) == 0
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
    )


if triton is not None:

    @triton.jit
    def _load_rows(ptr, b, h, sb, sh, sn, rows, cols, valid):
        return tl.load(ptr + b * sb + h * sh + rows[:, None] * sn + cols[None, :], mask=valid[:, None], other=0.0).to(
            tl.float32
        )

    @triton.jit
    def _store_rows(ptr, x, b, h, sb, sh, sn, rows, cols, valid):
        tl.store(
            ptr + b * sb + h * sh + rows[:, None] * sn + cols[None, :], x.to(ptr.dtype.element_ty), mask=valid[:, None]
        )

    @triton.jit
    def _load_rope(COS, SIN, rows, cols, valid, D: tl.constexpr):
        offs = rows[:, None] * D + cols[None, :]
        return (
            tl.load(COS + offs, mask=valid[:, None], other=0.0),
            tl.load(SIN + offs, mask=valid[:, None], other=0.0),
        )

    @triton.jit
    def _load_state(S, KB, bh, D: tl.constexpr, DOT: tl.constexpr):
        """One head's (2d x d) state as its two (d x d) halves in the product precision, and its (2d) vector."""
        cols = tl.arange(0, D)
        sq = tl.arange(0, D)[:, None] * D + cols[None, :]
        return (
            tl.load(S + bh * 2 * D * D + sq).to(DOT),
            tl.load(S + (bh * 2 + 1) * D * D + sq).to(DOT),
            tl.load(KB + bh * 2 * D + cols),
            tl.load(KB + bh * 2 * D + D + cols),
        )

    @triton.jit
    def _store_partial(S_PART, KB_PART, slot, m1, m2, v1, v2, D: tl.constexpr):
        """A program's partial sums, (2d x d) and (2d), at ``slot`` = head x splits + split (summed by the host)."""
        cols = tl.arange(0, D)
        sq = tl.arange(0, D)[:, None] * D + cols[None, :]
        base = slot * 2 * D
        tl.store(S_PART + base * D + sq, m1)
        tl.store(S_PART + (base + D) * D + sq, m2)
        tl.store(KB_PART + base + cols, v1)
        tl.store(KB_PART + base + D + cols, v2)

    @triton.jit
    def _load_pair(ptr, b, h, sb, sh, sn, rows, valid, D: tl.constexpr, WITHIN: tl.constexpr):
        """The two d-wide input tiles whose features RoPE rotates against each other, with each column's sign:
        across signs (ours so far), x and x, the feature halves being (x > 0) and (x < 0); within signs (the
        released code), [x_lo, x_lo] and [x_hi, x_hi] with (+ | -) columns, so that each feature tile holds one
        half of the head's columns, positive parts then negative parts, and its partner the other half."""
        cols = tl.arange(0, D)
        if WITHIN:
            half = cols % (D // 2)
            sel = tl.where(cols < D // 2, 1.0, -1.0)
            x1 = _load_rows(ptr, b, h, sb, sh, sn, rows, half, valid)
            x2 = _load_rows(ptr, b, h, sb, sh, sn, rows, half + D // 2, valid)
            return x1, x2, sel, sel
        x = _load_rows(ptr, b, h, sb, sh, sn, rows, cols, valid)
        return x, x, tl.zeros((D,), tl.float32) + 1.0, tl.zeros((D,), tl.float32) - 1.0

    @triton.jit
    def _fold(x, BLOCK: tl.constexpr, D: tl.constexpr):
        """(rows, d) -> (rows, d/2): column j plus column j + d/2 (the two features of one input element)."""
        return tl.sum(tl.reshape(x, (BLOCK, 2, D // 2)), axis=1)

    @triton.jit
    def _q_features(x1, x2, sel1, sel2, norm_eps, fixed_power, NORM_AWARE: tl.constexpr, WITHIN: tl.constexpr):
        """phi_q as its two tiles, plus what the backward needs: per tile f = u^p and log2 u (u = |x|/n); 1/n, p,
        dp/dn."""
        if WITHIN:  # every element of q is in each tile pair twice
            norm = tl.sqrt(0.5 * (tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)))
        else:
            norm = tl.sqrt(tl.sum(x1 * x1, axis=1))
        n = tl.maximum(norm, norm_eps)
        if NORM_AWARE:
            t = 1.0 - 2.0 / (tl.exp(2.0 * n) + 1.0)  # tanh(n), n >= 0
            p = 3.0 * (0.5 + t)
            dp_dn = 3.0 * (1.0 - t * t)
        else:
            p = tl.zeros_like(n) + fixed_power
            dp_dn = tl.zeros_like(n)
        inv_n = 1.0 / n  # one reciprocal per row, not a division per element
        u1 = tl.abs(x1) * inv_n[:, None]
        log_u1 = tl.log2(tl.where(u1 > 0, u1, 1.0))
        f1 = tl.where(u1 > 0, tl.exp2(p[:, None] * log_u1), 0.0)
        if WITHIN:
            u2 = tl.abs(x2) * inv_n[:, None]
            log_u2 = tl.log2(tl.where(u2 > 0, u2, 1.0))
            f2 = tl.where(u2 > 0, tl.exp2(p[:, None] * log_u2), 0.0)
        else:  # one power per element gives both halves: of relu(x) and relu(-x) exactly one is non-zero
            log_u2, f2 = log_u1, f1
        t1 = tl.where(x1 * sel1[None, :] > 0, f1, 0.0)
        t2 = tl.where(x2 * sel2[None, :] > 0, f2, 0.0)
        return t1, t2, f1, log_u1, f2, log_u2, norm, inv_n, p, dp_dn

    @triton.jit
    def _k_features(x1, x2, sel1, sel2, keep, WITHIN: tl.constexpr):
        if WITHIN:
            t1 = tl.maximum(x1 * x1 * x1 * keep[:, None] * sel1[None, :], 0.0)
            t2 = tl.maximum(x2 * x2 * x2 * keep[:, None] * sel2[None, :], 0.0)
            return t1, t2
        k3 = x1 * x1 * x1 * keep[:, None]  # x1 = x2 = k: one cube for both halves
        return tl.maximum(k3, 0.0), tl.maximum(-k3, 0.0)

    @triton.jit
    def _q_direct(g_f, x, f, log_u, inv_n, p, dp_dn):
        """dq through the power (before the norm's share) and d(loss)/dn, for features' gradient ``g_f`` (zero
        where a feature is zero, and non-zero only where the feature's sign is x's).

        d/dx of (|x|/n)^p is sign(x) p u^(p-1) / n = p f / x: one division where a second power (exp2) was, the
        step's most expensive part being these per-element transcendentals (notes, session 8)."""
        direct = g_f * p[:, None] * f / tl.where(x != 0, x, 1.0)
        ln_u = log_u * 0.6931471805599453
        return direct, tl.sum(g_f * f * (ln_u * dp_dn[:, None] - p[:, None] * inv_n[:, None]), axis=1)

    @triton.jit
    def _store_pair(
        ptr, y1, y2, b, h, sb, sh, sn, rows, valid, BLOCK: tl.constexpr, D: tl.constexpr, WITHIN: tl.constexpr
    ):
        """Gradients of the two input tiles back into the input's columns (across signs both tiles are the input
        itself, and ``y1`` carries the whole gradient)."""
        if WITHIN:
            half = tl.arange(0, D // 2)
            _store_rows(ptr, _fold(y1, BLOCK, D), b, h, sb, sh, sn, rows, half, valid)
            _store_rows(ptr, _fold(y2, BLOCK, D), b, h, sb, sh, sn, rows, half + D // 2, valid)
        else:
            _store_rows(ptr, y1, b, h, sb, sh, sn, rows, tl.arange(0, D), valid)

    @triton.jit
    def _rotate(x1, x2, cos, sin, ROPE: tl.constexpr):
        """RoPE on the 2d-wide feature (x1 | x2): pairs (i, i + d)."""
        if ROPE:
            return x1 * cos - x2 * sin, x2 * cos + x1 * sin
        return x1, x2

    @triton.jit
    def _rotate_back(g1, g2, cos, sin, ROPE: tl.constexpr):
        """The transpose (inverse) of _rotate, for gradients."""
        if ROPE:
            return g1 * cos + g2 * sin, g2 * cos - g1 * sin
        return g1, g2

    @triton.jit
    def _state(
        K,
        V,
        KEEP,
        COS,
        SIN,
        S_PART,
        KB_PART,
        H,
        N,
        skb,
        skh,
        skn,
        svb,
        svh,
        svn,
        ROWS_PER_SPLIT: tl.constexpr,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        ROPE: tl.constexpr,
        DOT: tl.constexpr,
        PREC: tl.constexpr,
    ):
        bh, split = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        cols = tl.arange(0, D)
        s1 = tl.zeros((D, D), tl.float32)
        s2 = tl.zeros((D, D), tl.float32)
        kb1 = tl.zeros((D,), tl.float32)
        kb2 = tl.zeros((D,), tl.float32)
        for i in range(0, ROWS_PER_SPLIT, BLOCK):
            rows = split * ROWS_PER_SPLIT + i + tl.arange(0, BLOCK)
            valid = rows < N
            keep = tl.load(KEEP + b * N + rows, mask=valid, other=0.0)
            x1, x2, sel1, sel2 = _load_pair(K, b, h, skb, skh, skn, rows, valid, D, ROPE == 2)
            pos, neg = _k_features(x1, x2, sel1, sel2, keep, ROPE == 2)
            v = _load_rows(V, b, h, svb, svh, svn, rows, cols, valid) * keep[:, None]
            cos, sin = _load_rope(COS, SIN, rows, cols, valid, D)
            r1, r2 = _rotate(pos, neg, cos, sin, ROPE)
            vd = v.to(DOT)
            s1 += tl.dot(tl.trans(r1.to(DOT)), vd, input_precision=PREC)
            s2 += tl.dot(tl.trans(r2.to(DOT)), vd, input_precision=PREC)
            kb1 += tl.sum(pos, axis=0)
            kb2 += tl.sum(neg, axis=0)
        _store_partial(S_PART, KB_PART, bh * tl.num_programs(1) + split, s1, s2, kb1, kb2, D)

    @triton.jit
    def _output(
        Q,
        S,
        KB,
        COS,
        SIN,
        O,
        DEN,
        H,
        N,
        norm_eps,
        denom_eps,
        fixed_power,
        sqb,
        sqh,
        sqn,
        sob,
        soh,
        son,
        ROWS: tl.constexpr,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        ROPE: tl.constexpr,
        NORM_AWARE: tl.constexpr,
        DOT: tl.constexpr,
        PREC: tl.constexpr,
    ):
        bh, part = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        cols = tl.arange(0, D)
        s1, s2, kb1, kb2 = _load_state(S, KB, bh, D, DOT)
        for i in range(0, ROWS, BLOCK):
            rows = part * ROWS + i + tl.arange(0, BLOCK)
            valid = rows < N
            x1, x2, sel1, sel2 = _load_pair(Q, b, h, sqb, sqh, sqn, rows, valid, D, ROPE == 2)
            pos, neg, f1, lu1, f2, lu2, norm, inv_n, p, dp_dn = _q_features(
                x1, x2, sel1, sel2, norm_eps, fixed_power, NORM_AWARE, ROPE == 2
            )
            den = tl.sum(pos * kb1[None, :] + neg * kb2[None, :], axis=1) + denom_eps
            cos, sin = _load_rope(COS, SIN, rows, cols, valid, D)
            a1, a2 = _rotate(pos, neg, cos, sin, ROPE)
            num = tl.dot(a1.to(DOT), s1, input_precision=PREC) + tl.dot(a2.to(DOT), s2, input_precision=PREC)
            _store_rows(O, num / den[:, None], b, h, sob, soh, son, rows, cols, valid)
            tl.store(DEN + bh * N + rows, den, mask=valid)

    @triton.jit
    def _load_grad_rows(O, DO, DEN_H, b, h, sob, soh, son, sgb, sgh, sgn, rows, cols, valid):
        """The gradients at the two outputs of a query row (num / den): dO / den and -(dO . o) / den.
        DEN_H points at this head's normalisers."""
        o = _load_rows(O, b, h, sob, soh, son, rows, cols, valid)
        g = _load_rows(DO, b, h, sgb, sgh, sgn, rows, cols, valid)
        den = tl.load(DEN_H + rows, mask=valid, other=1.0)
        return g / den[:, None], -tl.sum(g * o, axis=1) / den

    @triton.jit
    def _grad_state(
        Q,
        O,
        DO,
        DEN,
        COS,
        SIN,
        DS_PART,
        DKB_PART,
        H,
        N,
        norm_eps,
        fixed_power,
        sqb,
        sqh,
        sqn,
        sob,
        soh,
        son,
        sgb,
        sgh,
        sgn,
        ROWS_PER_SPLIT: tl.constexpr,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        ROPE: tl.constexpr,
        NORM_AWARE: tl.constexpr,
        DOT: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """The reduction half of the query-side backward: partial sums of dS and dkbar (the map half, dq, is
        ``_grad_q``; one kernel doing both held four (d x d) tiles and took half the step, 10 of 20 ms)."""
        bh, split = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        cols = tl.arange(0, D)
        ds1 = tl.zeros((D, D), tl.float32)
        ds2 = tl.zeros((D, D), tl.float32)
        dkb1 = tl.zeros((D,), tl.float32)
        dkb2 = tl.zeros((D,), tl.float32)
        for i in range(0, ROWS_PER_SPLIT, BLOCK):
            rows = split * ROWS_PER_SPLIT + i + tl.arange(0, BLOCK)
            valid = rows < N
            d_num, d_den = _load_grad_rows(O, DO, DEN + bh * N, b, h, sob, soh, son, sgb, sgh, sgn, rows, cols, valid)
            x1, x2, sel1, sel2 = _load_pair(Q, b, h, sqb, sqh, sqn, rows, valid, D, ROPE == 2)
            pos, neg, f1, lu1, f2, lu2, norm, inv_n, p, dp_dn = _q_features(
                x1, x2, sel1, sel2, norm_eps, fixed_power, NORM_AWARE, ROPE == 2
            )
            cos, sin = _load_rope(COS, SIN, rows, cols, valid, D)
            a1, a2 = _rotate(pos, neg, cos, sin, ROPE)
            d_num_dot = d_num.to(DOT)
            ds1 += tl.dot(tl.trans(a1.to(DOT)), d_num_dot, input_precision=PREC)
            ds2 += tl.dot(tl.trans(a2.to(DOT)), d_num_dot, input_precision=PREC)
            dkb1 += tl.sum(pos * d_den[:, None], axis=0)
            dkb2 += tl.sum(neg * d_den[:, None], axis=0)
        _store_partial(DS_PART, DKB_PART, bh * tl.num_programs(1) + split, ds1, ds2, dkb1, dkb2, D)

    @triton.jit
    def _grad_q(
        Q,
        O,
        DO,
        S,
        KB,
        DEN,
        COS,
        SIN,
        DQ,
        H,
        N,
        norm_eps,
        fixed_power,
        sqb,
        sqh,
        sqn,
        sob,
        soh,
        son,
        sgb,
        sgh,
        sgn,
        sdb,
        sdh,
        sdn,
        ROWS: tl.constexpr,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        ROPE: tl.constexpr,
        NORM_AWARE: tl.constexpr,
        DOT: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """dq through the feature map: d(phi_q) = R^T (d num S^T) + d den kbar, then through the norm-aware power."""
        bh, part = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        cols = tl.arange(0, D)
        s1, s2, kb1, kb2 = _load_state(S, KB, bh, D, DOT)
        s1t, s2t = tl.trans(s1), tl.trans(s2)
        for i in range(0, ROWS, BLOCK):
            rows = part * ROWS + i + tl.arange(0, BLOCK)
            valid = rows < N
            d_num, d_den = _load_grad_rows(O, DO, DEN + bh * N, b, h, sob, soh, son, sgb, sgh, sgn, rows, cols, valid)
            x1, x2, sel1, sel2 = _load_pair(Q, b, h, sqb, sqh, sqn, rows, valid, D, ROPE == 2)
            pos, neg, f1, lu1, f2, lu2, norm, inv_n, p, dp_dn = _q_features(
                x1, x2, sel1, sel2, norm_eps, fixed_power, NORM_AWARE, ROPE == 2
            )
            cos, sin = _load_rope(COS, SIN, rows, cols, valid, D)
            d_num_dot = d_num.to(DOT)
            da1 = tl.dot(d_num_dot, s1t, input_precision=PREC)
            da2 = tl.dot(d_num_dot, s2t, input_precision=PREC)
            g1, g2 = _rotate_back(da1, da2, cos, sin, ROPE)
            g1 += d_den[:, None] * kb1[None, :]
            g2 += d_den[:, None] * kb2[None, :]
            # Only the non-zero feature of each element (its sign's) carries a gradient into q.
            inv = tl.where(norm > norm_eps, 1.0 / tl.maximum(norm, norm_eps), 0.0)
            if ROPE == 2:  # each element sits in both columns of its tile: half the norm's share in each
                m1, m2 = x1 * sel1[None, :] > 0, x2 * sel2[None, :] > 0
                y1, tn1 = _q_direct(tl.where(m1, g1, 0.0), x1, f1, lu1, inv_n, p, dp_dn)
                y2, tn2 = _q_direct(tl.where(m2, g2, 0.0), x2, f2, lu2, inv_n, p, dp_dn)
                share = ((tn1 + tn2) * 0.5 * inv)[:, None]
                y1, y2 = y1 + share * x1, y2 + share * x2
            else:  # x1 = x2 = q: one power per element, as in the forward
                g_f = tl.where(x1 > 0, g1, tl.where(x1 < 0, g2, 0.0))
                y1, through_n = _q_direct(g_f, x1, f1, lu1, inv_n, p, dp_dn)
                y1 = y1 + (through_n * inv)[:, None] * x1
                y2 = y1
            _store_pair(DQ, y1, y2, b, h, sdb, sdh, sdn, rows, valid, BLOCK, D, ROPE == 2)

    @triton.jit
    def _grad_kv(
        K,
        V,
        KEEP,
        DS,
        DKB,
        COS,
        SIN,
        DK,
        DV,
        H,
        N,
        skb,
        skh,
        skn,
        svb,
        svh,
        svn,
        sdb,
        sdh,
        sdn,
        ROWS: tl.constexpr,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        ROPE: tl.constexpr,
        DOT: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """DS and DKB arrive divided by the number of valid keys."""
        bh, part = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        cols = tl.arange(0, D)
        ds1, ds2, dkb1, dkb2 = _load_state(DS, DKB, bh, D, DOT)
        for i in range(0, ROWS, BLOCK):
            rows = part * ROWS + i + tl.arange(0, BLOCK)
            valid = rows < N
            keep = tl.load(KEEP + b * N + rows, mask=valid, other=0.0)
            x1, x2, sel1, sel2 = _load_pair(K, b, h, skb, skh, skn, rows, valid, D, ROPE == 2)
            pos, neg = _k_features(x1, x2, sel1, sel2, keep, ROPE == 2)
            v = _load_rows(V, b, h, svb, svh, svn, rows, cols, valid) * keep[:, None]
            cos, sin = _load_rope(COS, SIN, rows, cols, valid, D)
            r1, r2 = _rotate(pos, neg, cos, sin, ROPE)
            dv = tl.dot(r1.to(DOT), ds1, input_precision=PREC) + tl.dot(r2.to(DOT), ds2, input_precision=PREC)
            _store_rows(DV, dv * keep[:, None], b, h, sdb, sdh, sdn, rows, cols, valid)
            vd = v.to(DOT)
            dr1 = tl.dot(vd, tl.trans(ds1), input_precision=PREC)
            dr2 = tl.dot(vd, tl.trans(ds2), input_precision=PREC)
            g1, g2 = _rotate_back(dr1, dr2, cos, sin, ROPE)
            g1 = (g1 + dkb1[None, :]) * keep[:, None]
            g2 = (g2 + dkb2[None, :]) * keep[:, None]
            # k^3 > 0 exactly where k > 0; the masked k3 is 0 where keep is 0, and so is g.
            if ROPE == 2:
                dk1 = 3.0 * x1 * x1 * sel1[None, :] * tl.where(x1 * sel1[None, :] > 0, g1, 0.0)
                dk2 = 3.0 * x2 * x2 * sel2[None, :] * tl.where(x2 * sel2[None, :] > 0, g2, 0.0)
            else:  # x1 = x2 = k
                dk1 = 3.0 * x1 * x1 * tl.where(x1 > 0, g1, tl.where(x1 < 0, -g2, 0.0))
                dk2 = dk1
            _store_pair(DK, dk1, dk2, b, h, sdb, sdh, sdn, rows, valid, BLOCK, D, ROPE == 2)


def _rope_tables(n: int, d: int, device: torch.device, rope: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (n, d) of the angles that ``attention_zoo.rope.apply_rope`` uses on a 2d-wide feature (``rope`` 1,
    across signs) or on each d-wide sign half (2, within signs), column c pairing tile 1's c with tile 2's c
    (computed in float64 there too, so long positions lose nothing to fp32 angle arithmetic).

    Made afresh at every call, not cached: a cache filled while CUDA graphs are recorded keeps two tensors of the
    graph pool alive, which is what "Detected 2 tensor(s) in the cudagraph pool not tracked as outputs" reports
    (nalaformer under ``compile_mode=reduce-overhead``, sessions 9-10: the suspect, not yet confirmed on a GPU).
    A few small kernels per call; captured in the graph when graphs are on."""
    from attention_zoo.rope import rope_angles

    cos, sin = rope_angles(n, d if rope == 2 else 2 * d, device)
    return cos[:, :d].float().contiguous(), sin[:, :d].float().contiguous()


def _pow2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def _rows_per_program(n: int) -> int:
    """Rows one program of a map kernel covers: a power of two (loop bounds are compile-time constants, so few
    distinct values means few compilations when batches of different lengths arrive)."""
    return max(BLOCK_ROWS, min(ROWS_PER_PROGRAM, _pow2(n)))


def _split_rows(bh: int, n: int, device: torch.device) -> int:
    """Rows per program of the reduction kernels (a power of two): enough programs (bh x splits) for ~4 per SM."""
    if SPLITS is not None:
        return max(BLOCK_ROWS, _pow2(math.ceil(n / SPLITS)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    splits = max(1, min(math.ceil(4 * sms / bh), math.ceil(n / (4 * BLOCK_ROWS))))
    return max(BLOCK_ROWS, _pow2(math.ceil(n / splits)))


def _strides(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B, H, N, d) with unit stride on d (a view from 'b n (h d) -> b h n d' qualifies, no copy)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x, (x.stride(0), x.stride(1), x.stride(2))


def _dot_dtype(dtype: torch.dtype):
    """Matrix products in the input precision; fp32 under the interpreter, whose bf16/fp16 ``tl.dot`` is wrong
    (Triton 3.6: it multiplies the raw 16-bit patterns), so CPU tests cover everything but the rounding to bf16."""
    if INTERPRET:
        return tl.float32
    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}[dtype]


def _meta(q: torch.Tensor, rope: int, kernel: str) -> dict:
    """Compile-time settings of one kernel's launch: the module's, then ``KERNEL_META[kernel]`` over them."""
    d = q.shape[-1]
    meta = dict(
        D=d,
        BLOCK=BLOCK_ROWS,
        ROPE=rope,
        DOT=_dot_dtype(q.dtype),
        PREC="ieee" if q.dtype == torch.float32 or INTERPRET else "tf32",
        num_warps=NUM_WARPS,
    )
    if NUM_STAGES is not None:
        meta["num_stages"] = NUM_STAGES
    own = KERNEL_META.get(kernel, {})
    block = own.get("BLOCK", BLOCK_ROWS)
    if block > BLOCK_ROWS or block != _pow2(block):
        raise ValueError(f"KERNEL_META[{kernel!r}]['BLOCK']={block}: a power of 2 up to BLOCK_ROWS={BLOCK_ROWS}")
    return meta | own


def _partial_sums(bh: int, n: int, d: int, device: torch.device):
    """Rows per program of a reduction kernel and its fp32 buffers: (BH, splits, 2d, d) and (BH, splits, 2d)."""
    rows_per_split = _split_rows(bh, n, device)
    splits = math.ceil(n / rows_per_split)
    return (
        rows_per_split,
        torch.empty(bh, splits, 2 * d, d, device=device, dtype=torch.float32),
        torch.empty(bh, splits, 2 * d, device=device, dtype=torch.float32),
    )


def _per_valid_key(m_part: torch.Tensor, v_part: torch.Tensor, count: torch.Tensor, heads: int):
    """Sum the row splits' partial sums and divide by each sequence's number of valid keys."""
    per_head = count.repeat_interleave(heads)[:, None, None]
    return (m_part.sum(1) / per_head).contiguous(), (v_part.sum(1) / per_head[..., 0]).contiguous()


# The kernels enter autograd and torch.compile as two custom operators: compiled models (trainer.compile) keep
# them inside one graph instead of breaking it in two around each attention call, and CUDA graphs can capture them.
# The fake implementations give compile the output shapes without running anything.


@torch.library.custom_op("lra::nala_triton_fwd", mutates_args=())
def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: torch.Tensor,
    rope: int,
    denom_eps: float,
    norm_aware: bool,
    fixed_power: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """out (B, H, N, d), and for the backward: the state (BH, 2d, d), key mean (BH, 2d), normaliser (BH, N)."""
    bsz, heads, n, d = q.shape
    q, sq = _strides(q)
    k, sk = _strides(k)
    v, sv = _strides(v)
    keep = keep.contiguous()
    count = keep.sum(dim=1).clamp_min(1.0)  # (B,) valid keys; an all-padding row gives 0, not 0/0
    cos, sin = _rope_tables(n, d, q.device, rope)
    bh = bsz * heads
    rows_per_split, s_part, kb_part = _partial_sums(bh, n, d, q.device)
    _state[(bh, s_part.shape[1])](
        k,
        v,
        keep,
        cos,
        sin,
        s_part,
        kb_part,
        heads,
        n,
        *sk,
        *sv,
        ROWS_PER_SPLIT=rows_per_split,
        **_meta(q, rope, "_state"),
    )
    state, k_mean = _per_valid_key(s_part, kb_part, count, heads)  # (BH, 2d, d), (BH, 2d)
    out = torch.empty(bsz, heads, n, d, device=q.device, dtype=v.dtype)
    den = torch.empty(bh, n, device=q.device, dtype=torch.float32)
    rows = _rows_per_program(n)
    _output[(bh, math.ceil(n / rows))](
        q,
        state,
        k_mean,
        cos,
        sin,
        out,
        den,
        heads,
        n,
        eps,
        denom_eps,
        fixed_power,
        *sq,
        *out.stride()[:3],
        ROWS=rows,
        NORM_AWARE=norm_aware,
        **_meta(q, rope, "_output"),
    )
    return out, state, k_mean, den


@_forward.register_fake
def _(q, k, v, keep, rope, denom_eps, norm_aware, fixed_power, eps):
    bsz, heads, n, d = q.shape
    f32 = dict(device=q.device, dtype=torch.float32)
    return (
        torch.empty(bsz, heads, n, d, device=q.device, dtype=v.dtype),
        torch.empty(bsz * heads, 2 * d, d, **f32),
        torch.empty(bsz * heads, 2 * d, **f32),
        torch.empty(bsz * heads, n, **f32),
    )


@torch.library.custom_op("lra::nala_triton_bwd", mutates_args=())
def _backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: torch.Tensor,
    out: torch.Tensor,
    state: torch.Tensor,
    k_mean: torch.Tensor,
    den: torch.Tensor,
    rope: int,
    norm_aware: bool,
    fixed_power: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (contiguous, in the inputs' dtypes)."""
    q, _ = _strides(q)
    k, _ = _strides(k)
    v, _ = _strides(v)
    keep = keep.contiguous()
    count = keep.sum(dim=1).clamp_min(1.0)
    bsz, heads, n, d = q.shape
    grad_out, sg = _strides(grad_out)
    cos, sin = _rope_tables(n, d, q.device, rope)
    bh = bsz * heads
    rows_per_split, ds_part, dkb_part = _partial_sums(bh, n, d, q.device)
    _grad_state[(bh, ds_part.shape[1])](
        q,
        out,
        grad_out,
        den,
        cos,
        sin,
        ds_part,
        dkb_part,
        heads,
        n,
        eps,
        fixed_power,
        *q.stride()[:3],
        *out.stride()[:3],
        *sg,
        ROWS_PER_SPLIT=rows_per_split,
        NORM_AWARE=norm_aware,
        **_meta(q, rope, "_grad_state"),
    )
    rows = _rows_per_program(n)
    dq = torch.empty(bsz, heads, n, d, device=q.device, dtype=q.dtype)
    _grad_q[(bh, math.ceil(n / rows))](
        q,
        out,
        grad_out,
        state,
        k_mean,
        den,
        cos,
        sin,
        dq,
        heads,
        n,
        eps,
        fixed_power,
        *q.stride()[:3],
        *out.stride()[:3],
        *sg,
        *dq.stride()[:3],
        ROWS=rows,
        NORM_AWARE=norm_aware,
        **_meta(q, rope, "_grad_q"),
    )
    d_state, d_k_mean = _per_valid_key(ds_part, dkb_part, count, heads)
    dk = torch.empty(bsz, heads, n, d, device=q.device, dtype=k.dtype)
    dv = torch.empty(bsz, heads, n, d, device=q.device, dtype=v.dtype)
    _grad_kv[(bh, math.ceil(n / rows))](
        k,
        v,
        keep,
        d_state,
        d_k_mean,
        cos,
        sin,
        dk,
        dv,
        heads,
        n,
        *k.stride()[:3],
        *v.stride()[:3],
        *dk.stride()[:3],
        ROWS=rows,
        **_meta(q, rope, "_grad_kv"),
    )
    return dq, dk, dv


@_backward.register_fake
def _(grad_out, q, k, v, keep, out, state, k_mean, den, rope, norm_aware, fixed_power, eps):
    return tuple(torch.empty(x.shape, device=x.device, dtype=x.dtype) for x in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, keep, rope, denom_eps, norm_aware, fixed_power, eps = inputs
    out, state, k_mean, den = output
    ctx.save_for_backward(q, k, v, keep, out, state, k_mean, den)
    ctx.opts = (rope, norm_aware, fixed_power, eps)
    ctx.set_materialize_grads(False)  # only `out` is used downstream; the other outputs get no gradient


def _autograd_backward(ctx, grad_out, *_):
    dq, dk, dv = _backward(grad_out, *ctx.saved_tensors, *ctx.opts)
    return dq, dk, dv, None, None, None, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def nala_triton(
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
    """NaLa attention on (B, H, N, d) q, k, v with a (B, N) key mask; same result as ``nala_fused``.
    ``rope_groups`` 2 rotates each sign half on its own (the released code's RoPE), 1 the 2d-wide feature."""
    if not supports(q, sign_split):
        raise ValueError(
            f"the Triton NaLa kernels need Triton, CUDA (or TRITON_INTERPRET=1), sign_split=True, "
            f"head_dim a power of two in [16, 64] and fp16/bf16/fp32; got head_dim {q.shape[-1]}, "
            f"{q.dtype}, device {q.device}, sign_split={sign_split}; use attention.impl=fused"
        )
    mode = (2 if rope_groups == 2 else 1) if rope else 0  # the kernels' ROPE: off, across signs, within signs
    return _forward(q, k, v, mask.to(torch.float32), mode, denom_eps, norm_aware, fixed_power, eps)[0]
