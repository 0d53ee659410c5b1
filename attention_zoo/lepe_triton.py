"""LePE's depthwise convolution along the tokens of a (B, N, C) tensor, in Triton, without transposes.

Why: NaLaFormer adds a depthwise convolution over v (width 5, 'same' padding) to the attention output. As the
released layer, ``nn.Conv1d`` over the (B, C, N) transpose, it took ~36 ms of the NaLa block's 104 ms forward and
backward at 2^20 tokens x 512 channels on an H200, 1.7x the attention kernel itself; cuDNN's channels-last
depthwise path and k shifted multiply-adds were no faster (docs/nala-kernel-notes.md, session 8). The work is
memory-bound: a forward reads x and writes y once, a backward reads dy and x and writes dx, plus a small reduction.

With p = (K - 1) / 2 and zeros outside [0, N):

* forward   ``y[b, n, c] = bias[c] + sum_j w[c, j] x[b, n + j - p, c]``;
* backward  ``dx`` is the same convolution of dy with the taps reversed (no bias);
  ``dw[c, j] = sum_{b, n} dy[b, n, c] x[b, n + j - p, c]`` and ``dbias[c] = sum_{b, n} dy[b, n, c]``, as partial sums
  per (batch, row split) reduced by PyTorch.

Products and sums in fp32, outputs in the input dtype. The reference is ``nn.Conv1d`` (tests compare both, through
Triton's CPU interpreter there). NaLaFormer's LePE takes it on CUDA (``attention.lepe_impl=auto``, sessions 9-10:
the block 104 -> 78 ms); Nystromformer's skip conv can
(``attention.conv_impl=triton``; in a compiled step on the H200 no faster than ``conv2d``, session 21).
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton: the other LePE layouts are used
    triton = None

BLOCK_N = 32  # tokens per program step
BLOCK_C = 64  # channels per program (the channel axis is contiguous: coalesced loads)


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _conv_tokens(
        X, W, BIAS, Y, n, c, sxb, sxn, syb, syn,
        K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        b, pn, pc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rows = pn * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = pc * BLOCK_C + tl.arange(0, BLOCK_C)
        in_c = cols < c
        acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
        for j in tl.static_range(K):
            src = rows + (j - K // 2)
            ok = (src >= 0) & (src < n)
            x = tl.load(X + b * sxb + src[:, None] * sxn + cols[None, :], mask=ok[:, None] & in_c[None, :], other=0.0)
            w = tl.load(W + cols * K + j, mask=in_c, other=0.0)
            acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(BIAS + cols, mask=in_c, other=0.0).to(tl.float32)[None, :]
        out = (rows < n)[:, None] & in_c[None, :]
        tl.store(Y + b * syb + rows[:, None] * syn + cols[None, :], acc.to(Y.dtype.element_ty), mask=out)

    @triton.jit
    def _conv_grad_taps(
        X, DY, DW, DB, n, c, splits, rows_per_split, sxb, sxn, sdb, sdn,
        K: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """Partial dw (KP x BLOCK_C, taps padded to a power of two) and dbias over one row split of one batch."""
        pid, pc = tl.program_id(0), tl.program_id(1)
        b, split = pid // splits, pid % splits
        cols = pc * BLOCK_C + tl.arange(0, BLOCK_C)
        in_c = cols < c
        taps = tl.arange(0, KP)
        dw = tl.zeros((KP, BLOCK_C), dtype=tl.float32)
        db = tl.zeros((BLOCK_C,), dtype=tl.float32)
        start = split * rows_per_split
        for r in range(start, tl.minimum(start + rows_per_split, n), BLOCK_N):
            rows = r + tl.arange(0, BLOCK_N)
            valid = (rows < n) & (rows < start + rows_per_split)
            g = tl.load(
                DY + b * sdb + rows[:, None] * sdn + cols[None, :], mask=valid[:, None] & in_c[None, :], other=0.0
            )
            g = g.to(tl.float32)
            db += tl.sum(g, axis=0)
            for j in tl.static_range(K):
                src = rows + (j - K // 2)
                ok = valid & (src >= 0) & (src < n)
                x = tl.load(
                    X + b * sxb + src[:, None] * sxn + cols[None, :], mask=ok[:, None] & in_c[None, :], other=0.0
                )
                part = tl.sum(g * x.to(tl.float32), axis=0)  # (BLOCK_C,)
                dw += tl.where(taps[:, None] == j, part[None, :], 0.0)
        tl.store(DW + pid * KP * c + taps[:, None] * c + cols[None, :], dw, mask=(taps < K)[:, None] & in_c[None, :])
        tl.store(DB + pid * c + cols, db, mask=in_c)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _launch_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    bsz, n, c = x.shape
    y = torch.empty(bsz, n, c, device=x.device, dtype=x.dtype)
    grid = (bsz, math.ceil(n / BLOCK_N), math.ceil(c / BLOCK_C))
    _conv_tokens[grid](
        x, w, bias if bias is not None else w, y, n, c, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        K=w.shape[-1], HAS_BIAS=bias is not None, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C,
    )  # fmt: skip
    return y


@torch.library.custom_op("lra::lepe_conv_fwd", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """y (B, N, C) from x (B, N, C), weight (C, K) and bias (C,)."""
    return _launch_conv(_rows(x), weight.contiguous(), bias.contiguous())


@_forward.register_fake
def _(x, weight, bias):
    return torch.empty(x.shape, device=x.device, dtype=x.dtype)


@torch.library.custom_op("lra::lepe_conv_bwd", mutates_args=())
def _backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx (B, N, C), dweight (C, K) and dbias (C,) in fp32 (cast by the caller to the parameters' dtype)."""
    grad, x, weight = _rows(grad), _rows(x), weight.contiguous()
    bsz, n, c = x.shape
    k = weight.shape[-1]
    dx = _launch_conv(grad, weight.flip(-1).contiguous(), None)
    splits = max(1, min(math.ceil(n / (4 * BLOCK_N)), 64))  # enough programs for the GPU, few partial sums
    rows_per_split = math.ceil(n / splits)
    kp = 1 << max(0, math.ceil(math.log2(k)))
    dw_part = torch.empty(bsz * splits, kp, c, device=x.device, dtype=torch.float32)
    db_part = torch.empty(bsz * splits, c, device=x.device, dtype=torch.float32)
    _conv_grad_taps[(bsz * splits, math.ceil(c / BLOCK_C))](
        x, grad, dw_part, db_part, n, c, splits, rows_per_split, x.stride(0), x.stride(1), grad.stride(0),
        grad.stride(1), K=k, KP=kp, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C,
    )  # fmt: skip
    return dx, dw_part[:, :k].sum(0).t().contiguous(), db_part.sum(0)


@_backward.register_fake
def _(grad, x, weight):
    f32 = dict(device=x.device, dtype=torch.float32)
    return (
        torch.empty(x.shape, device=x.device, dtype=x.dtype),
        torch.empty(weight.shape, **f32),
        torch.empty(weight.shape[0], **f32),
    )


def _setup_context(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.dtypes = (weight.dtype,)


def _autograd_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    dx, dw, db = _backward(grad, x, weight)
    return dx, dw.to(ctx.dtypes[0]), db.to(ctx.dtypes[0])


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def lepe_conv_triton(x: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """``conv`` (depthwise, odd width, 'same' padding, with bias) along the tokens of x (B, N, C)."""
    return depthwise_tokens(x, conv.weight[:, 0, :], conv.bias, option="attention.lepe_impl", fallback="conv1d")


def depthwise_tokens(
    x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, option: str = "impl", fallback: str = "another"
) -> torch.Tensor:
    """x (B, N, C) convolved along N with (C, K) taps (odd K, 'same' padding) plus a (C,) bias, differentiable in
    all three; ``option`` / ``fallback`` name the setting that chose this path in the error off the GPU."""
    if triton is None or not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        raise ValueError(
            f"{option}=triton runs on a CUDA GPU with the triton package (or under TRITON_INTERPRET=1); "
            f"got a {x.device.type} tensor{'' if triton else ' and no triton'}: use {option}={fallback}"
        )
    return _forward(x, taps, bias)  # taps and bias are read as fp32 in the kernel
