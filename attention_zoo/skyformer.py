"""Skyformer (Chen et al., NeurIPS 2021, "Skyformer: Remodel Self-Attention with Gaussian Kernel and Nystrom
Method").

Kernelized attention replaces softmax by the (unnormalised) Gaussian kernel on q, k scaled by d^-1/4:
``C_ij = kappa(q_i, k_j) = exp(-|q_i - k_j|^2 / 2)``, output ``C V``. C is the upper-right block of the symmetric
PSD matrix ``B = kappa([Q; K], [Q; K])`` (2N x 2N), so the Nystrom method applies to B:
``B ~ B S (S^T B S)^+ S^T B`` with S selecting m landmark rows of [Q; K], and
``C ~ kappa(Q, X_S) (S^T B S)^+ kappa(X_S, K)``, computed in O(N m d + m^3).

Follows the paper and the official code (``pkuzengqi/Skyformer``, ``src/models/attention_skyformer.py``):

* m = 128 landmarks: the first m/2 are query rows, the rest key rows, each drawn uniformly with replacement from
  the valid tokens, redrawn every forward pass (``uniform_sketching``);
* ``S^T B S`` gets a ridge ``0.1 I``, is symmetrically normalised by its row sums, ``D^-1/2 (S^T B S) D^-1/2``,
  and inverted by the Nystromformer iteration (6 steps, started from ``A^T / max column sum``); the result is
  ``D^-1/2 pinv(...) D^-1/2`` (the normalisation only conditions the iteration; with an exact inverse it cancels);
* no row normalisation of C (the paper's point: the Gaussian kernel is bounded, so no softmax denominator);
* q, k zeroed at padded positions; kernel rows of padded keys and padded values are zeroed, so masked keys get
  exactly zero weight.

Deviations, and why:

* In eval mode the landmarks are deterministic: evenly spaced valid tokens (ranks ``floor((i + 1/2) n / (m/2))``
  for queries and for keys) instead of a fresh random draw, so evaluation is reproducible. Training draws as
  the official code does (one draw per batch item, rather than one shared draw scaled to each item's length).
* The official code hard-codes the scale ``32^-1/4`` (head_dim 32 in LRA-lite); we use ``head_dim^-1/4``.
* The pinv init normalises each (batch, head) matrix by its own column sums, not one maximum over the batch,
  so batch items stay independent.
"""

from __future__ import annotations

import torch

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.nystromformer import iterative_pinv
from attention_zoo.registry import register


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``exp(-|x_i - y_j|^2 / 2)`` for x (..., n, d), y (..., m, d), without an (n, m, d) difference tensor."""
    sq_x = x.square().sum(dim=-1)[..., :, None]
    sq_y = y.square().sum(dim=-1)[..., None, :]
    return torch.exp(x @ y.transpose(-1, -2) - 0.5 * sq_x - 0.5 * sq_y)


def landmark_rows(mask: torch.Tensor, num_landmarks: int, random: bool) -> torch.Tensor:
    """Indices into the 2N rows of [Q; K] of the landmarks, (B, m): m // 2 query rows, then key rows.

    Ranks among the valid tokens are drawn uniformly (``random``) or evenly spaced, then mapped to positions, so
    only valid tokens are ever landmarks and appending padding cannot move them.
    """
    b, n = mask.shape
    count = mask.sum(dim=-1, keepdim=True)  # (B, 1)
    halves = (num_landmarks // 2, num_landmarks - num_landmarks // 2)
    if random:
        u = torch.rand(b, num_landmarks, device=mask.device, dtype=torch.float64)
    else:
        u = torch.cat([(torch.arange(h, device=mask.device, dtype=torch.float64) + 0.5) / h for h in halves])
        u = u[None].expand(b, -1)
    rank = (u * count).long().clamp(max=n - 1)
    positions = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices  # valid positions first, in order
    rows = positions.gather(1, rank)
    return torch.cat([rows[:, : halves[0]], rows[:, halves[0] :] + n], dim=1)


def nystrom_core(gram: torch.Tensor, iterations: int, ridge: float) -> torch.Tensor:
    """``(S^T B S + ridge I)^+`` as in the official code: D^-1/2-normalised, iterative pinv, de-normalised."""
    gram = gram + ridge * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    d = gram.sum(dim=-1).rsqrt()  # row sums are >= ridge > 0 (or >= the diagonal exp(0) = 1 when ridge is 0)
    inv = iterative_pinv(d[..., :, None] * gram * d[..., None, :], iterations, init="colsum")
    return d[..., :, None] * inv * d[..., None, :]


def skyformer_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor,
    iterations: int,
    ridge: float,
) -> torch.Tensor:
    """Literally: build B = kappa([Q; K], [Q; K]) (2N x 2N), its Nystrom approximation B S core S^T B, take the
    query-by-key block (the approximate N x N kernel matrix), zero padded key columns, multiply V."""
    n = q.shape[2]
    x = torch.cat([q, k], dim=2)
    big = gaussian_kernel(x, x)  # (B, H, 2N, 2N)
    cols = rows[:, None, None, :].expand(*big.shape[:3], -1)
    bs = big.gather(3, cols)  # B S: (B, H, 2N, m)
    sbs = bs.gather(2, rows[:, None, :, None].expand(*bs.shape[:2], -1, bs.shape[-1]))  # S^T B S: (B, H, m, m)
    approx = bs @ nystrom_core(sbs, iterations, ridge) @ bs.transpose(-1, -2)  # (B, H, 2N, 2N)
    weights = approx[:, :, :n, n:] * mask[:, None, None, :].to(q.dtype)
    return weights @ v


def skyformer_fast(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor,
    iterations: int,
    ridge: float,
) -> torch.Tensor:
    """The same output as ``kappa(Q, X_S) (core (kappa(K, X_S)^T V))``: N x m kernels, never N x N."""
    b, h, _, d = q.shape
    x = torch.cat([q, k], dim=2)
    landmarks = x.gather(2, rows[:, None, :, None].expand(b, h, -1, d))  # (B, H, m, d)
    kq = gaussian_kernel(q, landmarks)  # (B, H, N, m)
    kk = gaussian_kernel(k, landmarks) * mask[:, None, :, None].to(q.dtype)  # masked keys: zero weight
    core = nystrom_core(gaussian_kernel(landmarks, landmarks), iterations, ridge)
    return kq @ (core @ (kk.transpose(-1, -2) @ v))


@register(
    "skyformer",
    complexity="O(N)",
    source="Chen et al. 2021 (NeurIPS), Skyformer: Remodel Self-Attention with Gaussian Kernel and Nystrom Method",
)
class SkyformerAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        num_landmarks: int = 128,
        pinv_iterations: int = 6,
        ridge: float = 0.1,
    ):
        super().__init__(dim, num_heads, 0.0, impl)
        if num_landmarks < 2:
            raise ValueError(f"attention.num_landmarks={num_landmarks} must be at least 2 (half queries, half keys)")
        if ridge < 0:
            raise ValueError(f"attention.ridge={ridge} must be >= 0")
        self.num_landmarks, self.pinv_iterations, self.ridge = num_landmarks, pinv_iterations, ridge

    def attend(self, q, k, v, mask):
        with torch.no_grad():
            rows = landmark_rows(mask, self.num_landmarks, random=self.training)
        with torch.autocast(q.device.type, enabled=False):  # the official code runs attention in fp32
            q32, k32, v32 = at_least_fp32(q, k, v)
            keep = mask[:, None, :, None].to(q32.dtype)
            scale = self.head_dim**-0.25
            q32, k32, v32 = q32 * keep * scale, k32 * keep * scale, v32 * keep
            kernel = skyformer_reference if self.use_reference else skyformer_fast
            out = kernel(q32, k32, v32, mask, rows, self.pinv_iterations, self.ridge)
        return out.to(v.dtype)
