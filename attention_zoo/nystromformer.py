"""Nystromformer (Xiong et al., AAAI 2021, "Nystromformer: A Nystrom-Based Algorithm for Approximating
Self-Attention").

Per head, with q and k each scaled by d^-1/4 (so q k^T carries the usual 1/sqrt(d)) and zeroed at padded positions:

    landmarks  Ql, Kl = means of m contiguous segments of Q and K
    output     softmax(Q Kl^T) pinv(softmax(Ql Kl^T)) softmax(Ql K^T) V  +  depthwise conv over V

Follows the paper and the authors' LRA code (``mlpen/Nystromformer``, ``LRA/code/attention_nystrom.py``):

* pinv is the iterative Moore-Penrose approximation of Razavi et al. (2014),
  ``Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4``, 6 iterations, started from ``Z0 = A^T / (|A|_1 |A|_inf)``
  (the paper's init; the rows of a softmax matrix sum to 1, so this equals the code's ``A^T / max column sum``);
* padded keys are excluded from the last softmax; the skip is a depthwise conv over the sequence, one
  ``(kernel, 1)`` filter per head shared by the head's channels, no bias, on V zeroed at padded positions
  (kernel 35 in the LRA runs).

Where we deviate, and why:

* Landmarks are segment means over the VALID tokens of each sequence (the official code reshapes the whole padded
  length, so padding dilutes the means and the output would change when padding is appended). Token of rank r
  among n valid tokens goes to segment ``floor(r * m / n)``: the official contiguous blocks when m divides n,
  block sizes differing by at most one otherwise.
* A sequence with n <= m valid tokens gets exact softmax attention (plus the conv skip). This is what the
  Nystrom formula tends to with one landmark per token, and what the official code does when
  ``num_landmarks == seq_len``; it avoids empty segments. Internally the empty landmark slots of such items are
  given identity rows in softmax(Ql Kl^T) and zero weight in softmax(Q Kl^T), so the (unused) Nystrom branch stays
  finite and differentiable.
* The pinv init normalises each (batch, head) matrix by its own norms; the official code divides by one maximum
  over the whole batch, which would make batch items depend on each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention_zoo import lepe_triton
from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.registry import register


def iterative_pinv(a: torch.Tensor, iterations: int = 6, init: str = "paper") -> torch.Tensor:
    """Approximate Moore-Penrose inverse of each square matrix in ``a (..., m, m)``.

    ``init="paper"`` starts from ``A^T / (max abs column sum * max abs row sum)`` (Nystromformer, eq. 15);
    ``init="colsum"`` from ``A^T / max abs column sum`` (the Skyformer code). Either makes ``|I - A Z0| < 1`` for
    the matrices they are used on, so the iteration converges; 6 steps is the papers' budget, not convergence.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    scale = a.abs().sum(dim=-2).amax(dim=-1)[..., None, None]
    if init == "paper":
        scale = scale * a.abs().sum(dim=-1).amax(dim=-1)[..., None, None]
    elif init != "colsum":
        raise ValueError(f"iterative_pinv init={init!r} is not one of paper, colsum")
    z = a.transpose(-1, -2) / scale
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def landmark_segments(mask: torch.Tensor, num_landmarks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split each sequence's valid tokens into contiguous segments, one per landmark slot.

    Returns ``segment (B, N)`` (slot of each token; 0 at padded positions, whose q/k/v are zero vectors and so
    add nothing), ``slot_valid (B, m)`` (slot holds at least one token) and ``count (B,)`` (valid tokens).
    """
    count = mask.sum(dim=-1)
    slots = count.clamp(max=num_landmarks)  # one slot per token when there are fewer tokens than landmarks
    rank = (mask.cumsum(dim=-1) - 1).clamp_min(0)
    segment = torch.where(mask, rank * slots[:, None] // count.clamp_min(1)[:, None], torch.zeros_like(rank))
    slot_valid = torch.arange(num_landmarks, device=mask.device)[None, :] < slots[:, None]
    return segment, slot_valid, count


def segment_average(
    mask: torch.Tensor, num_landmarks: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (B, 1, m, N) matrix whose rows average each landmark segment, plus ``slot_valid`` and ``count``.

    An m x N matmul rather than a scatter: deterministic on GPU, and O(N m) like the rest of the method.
    """
    segment, slot_valid, count = landmark_segments(mask, num_landmarks)
    slot = torch.arange(num_landmarks, device=mask.device)[None, :, None]
    member = ((segment[:, None, :] == slot) & mask[:, None, :]).to(dtype)  # (B, m, N)
    return (member / member.sum(dim=-1, keepdim=True).clamp_min(1))[:, None], slot_valid, count


def landmark_softmaxes(
    q: torch.Tensor, k: torch.Tensor, ql: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, slot_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three Nystrom factors softmax(Q Kl^T) (N x m), softmax(Ql Kl^T) (m x m), softmax(Ql K^T) (m x N).

    Empty landmark slots get no weight in the first two and an identity row in the middle one, so its
    pseudo-inverse is block diagonal and the empty block contributes nothing.
    """
    no_slot = ~slot_valid[:, None, None, :]
    kernel_1 = (q @ kl.transpose(-1, -2)).masked_fill(no_slot, float("-inf")).softmax(dim=-1)
    kernel_2 = (ql @ kl.transpose(-1, -2)).masked_fill(no_slot, float("-inf")).softmax(dim=-1)
    eye = torch.eye(kl.shape[-2], dtype=kl.dtype, device=kl.device)
    kernel_2 = torch.where(slot_valid[:, None, :, None], kernel_2, eye)
    kernel_3 = (ql @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None, :], float("-inf")).softmax(dim=-1)
    return kernel_1, kernel_2, kernel_3


CONV_IMPLS = ("conv2d", "triton", "auto")


def head_conv(v: torch.Tensor, weight: torch.Tensor, impl: str) -> torch.Tensor:
    """NYS's skip: a (K x 1) depthwise conv over the sequence of v (B, H, N, d), one filter per head shared by the
    head's d channels (``weight`` (H, 1, K, 1)). ``triton`` computes the same through the LePE kernel on the (B, N, H*d)
    layout with each head's taps repeated over its channels: PyTorch's fp32 depthwise ``conv2d`` was over half of this
    attention's forward and backward on the CPU at LRA's Pathfinder shapes, and a Pathfinder run of it on the H200
    trained ~30-35 steps/s against linear attention's 186-197 (session 20). Measured on the H200 (session 21): eagerly
    the Triton conv is ~6x faster than ``conv2d``, but a compiled step under CUDA graphs is not (39.3 vs 41.5 steps/s),
    so ``conv2d`` stays the default. ``auto``: ``triton`` on CUDA where Triton is installed, ``conv2d`` elsewhere."""
    if impl == "auto":
        impl = "triton" if v.is_cuda and lepe_triton.available() else "conv2d"
    if impl == "conv2d":
        return F.conv2d(v, weight, padding=(weight.shape[2] // 2, 0), groups=v.shape[1])
    b, h, n, d = v.shape
    taps = weight[:, 0, :, 0].repeat_interleave(d, dim=0)  # (H*d, K)
    tokens = v.transpose(1, 2).reshape(b, n, h * d)
    out = lepe_triton.depthwise_tokens(tokens, taps, taps.new_zeros(h * d), "attention.conv_impl", "conv2d")
    return out.reshape(b, n, h, d).transpose(1, 2)


def nystrom_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, num_landmarks: int, iterations: int
) -> torch.Tensor:
    """Materialise the approximate N x N attention matrix, then multiply V.

    q, k are scaled by d^-1/4 and, with v, zeroed at padded positions; short sequences use the exact masked
    softmax matrix.
    """
    average, slot_valid, count = segment_average(mask, num_landmarks, q.dtype)
    ql, kl = average @ q, average @ k
    kernel_1, kernel_2, kernel_3 = landmark_softmaxes(q, k, ql, kl, mask, slot_valid)
    weights = kernel_1 @ iterative_pinv(kernel_2, iterations) @ kernel_3  # (B, H, N, N)
    exact = (q @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None, :], float("-inf")).softmax(dim=-1)
    weights = torch.where((count <= num_landmarks)[:, None, None, None], exact, weights)
    return weights @ v


def nystrom_fast(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, num_landmarks: int, iterations: int
) -> torch.Tensor:
    """The same output multiplied right to left: O(N m d + m^3), never an N x N tensor."""
    average, slot_valid, count = segment_average(mask, num_landmarks, q.dtype)
    kernel_1, kernel_2, kernel_3 = landmark_softmaxes(q, k, average @ q, average @ k, mask, slot_valid)
    out = kernel_1 @ (iterative_pinv(kernel_2, iterations) @ (kernel_3 @ v))
    short = count <= num_landmarks
    # Each slot of a short sequence is one token: softmax(Q Kl^T) is exact attention over it. Eager code skips the
    # product when no sequence is short; a compiled graph always takes it (the test would be a host sync and a
    # graph break).
    if torch.compiler.is_compiling() or short.any():
        out = torch.where(short[:, None, None, None], kernel_1 @ (average @ v), out)
    return out


@register(
    "nystromformer",
    complexity="O(N)",
    source="Xiong et al. 2021 (AAAI), Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention",
)
class NystromAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        conv_kernel: int = 35,
        conv_impl: str = "conv2d",
    ):
        super().__init__(dim, num_heads, 0.0, impl)
        if conv_impl not in CONV_IMPLS:
            raise ValueError(f"attention.conv_impl={conv_impl!r} is not one of {', '.join(CONV_IMPLS)}")
        self.conv_impl = conv_impl
        if num_landmarks < 1:
            raise ValueError(f"attention.num_landmarks={num_landmarks} must be at least 1")
        if conv_kernel and conv_kernel % 2 == 0:
            raise ValueError(f"attention.conv_kernel={conv_kernel} must be odd (or 0 for no conv) to keep the length")
        self.num_landmarks, self.pinv_iterations, self.conv_kernel = num_landmarks, pinv_iterations, conv_kernel
        # One (kernel x 1) filter per head over the sequence axis, shared by the head's channels, as in NYS.
        self.conv = (
            nn.Conv2d(
                num_heads, num_heads, (conv_kernel, 1), padding=(conv_kernel // 2, 0), groups=num_heads, bias=False
            )
            if conv_kernel
            else None
        )

    def attend(self, q, k, v, mask):
        with torch.autocast(q.device.type, enabled=False):  # NYS computes attention in fp32 under AMP
            q32, k32, v32 = at_least_fp32(q, k, v)
            keep = mask[:, None, :, None].to(q32.dtype)
            scale = self.head_dim**-0.25
            q32, k32, v32 = q32 * keep * scale, k32 * keep * scale, v32 * keep
            kernel = nystrom_reference if self.use_reference else nystrom_fast
            out = kernel(q32, k32, v32, mask, self.num_landmarks, self.pinv_iterations)
            if self.conv is not None:
                out = out + head_conv(v32, self.conv.weight.to(v32.dtype), self.conv_impl)
        return out.to(v.dtype)
