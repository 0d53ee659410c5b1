"""Performer / FAVOR+ (Choromanski et al., 2021, "Rethinking Attention with Performers").

Softmax attention exp(q.k / sqrt(d)) is estimated with positive orthogonal random features::

    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m),   x' = x * d^-1/4   (so x'_q . x'_k = q.k / sqrt(d))

with E[phi(q') . phi(k')] = exp(q'.k') for w ~ N(0, I). Attention is then the linear form of
:mod:`attention_zoo.linear`: o_i = phi(q_i)^T S / (phi(q_i)^T z), padded keys left out of S and z.

Follows the official code (google-research ``performer/fast_attention``, also transcribed in performer-pytorch,
which the Skyformer LRA code uses):

* W (m x d) is drawn in blocks of d orthogonal rows (QR of a Gaussian matrix; the last block truncated), each
  row rescaled by the norm of an independent d-dimensional Gaussian (chi-distributed with d degrees of freedom),
  so every row has the marginal law of a Gaussian vector while rows of a block stay orthogonal;
* numerical stabiliser: before exp, queries subtract their own maximum over the m features; keys subtract one
  maximum over all valid keys and features of the (batch, head). Both shifts cancel in the ratio up to the
  additive ``eps`` (official: ``ratio * (exp(...) + eps)``), so they only prevent overflow;
* ``eps`` is added to every feature, which keeps the normaliser positive. We use the official default 1e-6;
  performer-pytorch (and so the Skyformer LRA code) uses 1e-4, which biases the estimate once the shifted
  features of many keys fall below it (for m in the thousands the error then stops shrinking with m).

Our choices and deviations:

* padded keys are excluded from the key maximum (the official and LRA codes take it over padding too, so padding
  changes valid outputs through ``eps``) and are zeroed before the features are taken, so padded content can
  never overflow;
* the stabilising maxima are detached: they are a numerical shift, not part of the model;
* the QR factor is sign-corrected (Q * sign(diag R)), which makes each block exactly Haar-distributed
  (performer-pytorch's ``qr_uniform_q``); the official code omits it;
* the features are a persistent buffer drawn from a generator seeded at construction (``feature_seed``, or a
  seed taken from the global torch generator when None, so a run's seed fixes them). They are redrawn every
  ``redraw_interval`` training forward passes (0 = never; performer-pytorch's default is 1000, the official JAX
  code redraws every call, the Skyformer LRA code never redraws), from a seed derived from ``feature_seed`` and
  the redraw count, so the schedule is reproducible and survives a checkpoint (the counters are saved as the
  module's extra state). Eval never redraws.
* the Nystromformer LRA code ran Performer with the generalised ReLU kernel; this module is the softmax-kernel
  FAVOR+ of the paper (the Skyformer LRA code's ``kernel_type: exp`` setting) unless ``kernel="relu"``:
  phi(x) = relu(W x') + eps, the generalised kernel (no estimate of softmax; with NYS's settings,
  ``attention.kernel=relu attention.eps=1e-3 attention.nb_features=256 attention.redraw_interval=0``
  (performer-pytorch's generalised kernel and epsilon, features never redrawn), the model behind NYS's Performer
  numbers, 18.80 ListOps / 69.87 Pathfinder; NYS's code also zeroes padded keys before the features, so each
  still adds eps to the normaliser, where ours leaves padded keys out). Its features are never zero (eps): a
  relu-feature attention that published a Pathfinder number, beside the relu-built ones that stay at chance here.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attention_zoo.base import MultiHeadAttention, at_least_fp32
from attention_zoo.linear import linear_form, linear_form_reference
from attention_zoo.registry import register


def gaussian_orthogonal_matrix(m: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """(m, d) float64 rows: blocks of d orthogonal directions, each row scaled by a chi(d)-distributed norm."""
    blocks = []
    for start in range(0, m, d):
        gauss = torch.randn(d, d, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gauss)
        q = q * torch.sign(torch.diagonal(r))[None, :]  # Haar-uniform orthogonal matrix
        blocks.append(q.T[: min(d, m - start)])  # rows of q.T are orthonormal
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)
    return torch.cat(blocks) * norms[:, None]


def favor_features(
    x: torch.Tensor,
    proj: torch.Tensor,
    mask: torch.Tensor,
    is_query: bool,
    eps: float,
    dims: tuple[int, int] | None = None,
):
    """Positive random features of queries or keys, (B, H, N, d) -> (B, H, N, m).

    Keys at padded positions are zeroed first and left out of the key maximum, so their content cannot change
    (or overflow) anything; the caller still drops them from S and z. ``dims`` = (d, m) as plain ints where the
    caller knows them: under ``torch.compile(dynamic=True)`` sizes read off tensors are symbolic, and the scale
    factors made from them entered the graph as CPU tensors (a segfault under CUDA graphs, session 11).
    """
    d, m = dims or (x.shape[-1], proj.shape[0])
    keep = mask[:, None, :, None]
    if not is_query:
        x = x.masked_fill(~keep, 0.0)
    x = x * d**-0.25
    dash = x @ proj.T  # (B, H, N, m): w_r . x'
    half_sq_norm = x.square().sum(dim=-1, keepdim=True) / 2
    if is_query:
        shift = dash.amax(dim=-1, keepdim=True)  # per query row
    else:
        shift = dash.masked_fill(~keep, float("-inf")).amax(dim=(-2, -1), keepdim=True)  # per (batch, head)
    return (torch.exp(dash - half_sq_norm - shift.detach()) + eps) / math.sqrt(m)


def relu_features(x: torch.Tensor, proj: torch.Tensor, eps: float, d: int) -> torch.Tensor:
    """The generalised ReLU kernel's features, (B, H, N, d) -> (B, H, N, m): relu(w_r . x') + eps, x' = x d^-1/4.
    No stabiliser is needed (nothing is exponentiated); padded keys are dropped by the linear form."""
    return torch.relu((x * d**-0.25) @ proj.T) + eps


KERNELS = ("exp", "relu")


@register("performer", complexity="O(N)", source="Choromanski et al. 2021, Rethinking Attention with Performers")
class PerformerAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        impl: str = "auto",
        nb_features: int = 128,
        redraw_interval: int = 1000,
        feature_seed: int | None = None,
        eps: float = 1e-6,
        kernel: str = "exp",
    ):
        super().__init__(dim, num_heads, impl=impl)
        if kernel not in KERNELS:
            raise ValueError(f"attention.kernel={kernel!r} is not one of {', '.join(KERNELS)}")
        self.kernel = kernel
        if nb_features < 1:
            raise ValueError(f"attention.nb_features={nb_features} must be a positive number of random features")
        if redraw_interval < 0:
            raise ValueError(f"attention.redraw_interval={redraw_interval} must be >= 0 (0 = never redraw)")
        if eps <= 0:
            raise ValueError(f"attention.eps={eps} must be > 0: it keeps the FAVOR+ normaliser positive")
        self.nb_features, self.redraw_interval, self.eps = nb_features, redraw_interval, eps
        if feature_seed is None:  # follow the run's seed, and give every layer its own features
            feature_seed = int(torch.randint(0, 2**62, (1,)).item())
        self.feature_seed, self.redraws, self.calls = int(feature_seed), 0, 0
        self.register_buffer("projection", self._draw().float())

    def _draw(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.feature_seed * 1_000_003 + self.redraws) % 2**63)
        return gaussian_orthogonal_matrix(self.nb_features, self.head_dim, generator)

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw the next feature matrix of this module's reproducible sequence."""
        self.redraws += 1
        self.projection.copy_(self._draw())

    def get_extra_state(self) -> dict[str, Any]:
        return {"feature_seed": self.feature_seed, "redraws": self.redraws, "calls": self.calls}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.feature_seed, self.redraws, self.calls = state["feature_seed"], state["redraws"], state["calls"]

    def before_training_step(self) -> None:
        """Count training steps and redraw every ``redraw_interval``-th. Called by the training loop
        (``LRAClassifier.on_train_batch_start``) outside the forward: counted inside it, the changing Python
        counter made ``torch.compile`` recompile at every step until it gave up and ran the model eagerly."""
        if self.training and self.redraw_interval:
            if self.calls >= self.redraw_interval:
                self.redraw_features()
                self.calls = 0
            self.calls += 1

    def attend(self, q, k, v, mask):
        kernel = linear_form_reference if self.use_reference else linear_form
        with torch.autocast(q.device.type, enabled=False):
            qf, kf, vf = at_least_fp32(q, k, v)
            proj = self.projection.to(qf.dtype)
            dims = (self.head_dim, self.nb_features)
            if self.kernel == "relu":
                phi_q = relu_features(qf, proj, self.eps, self.head_dim)
                phi_k = relu_features(kf, proj, self.eps, self.head_dim)
            else:
                phi_q = favor_features(qf, proj, mask, is_query=True, eps=self.eps, dims=dims)
                phi_k = favor_features(kf, proj, mask, is_query=False, eps=self.eps, dims=dims)
            out = kernel(phi_q, phi_k, vf, mask)
        return out.to(q.dtype)
