"""Kernel (linear-form) attentions: linear (elu + 1), performer (FAVOR+) and cosformer.

Reference (N x N) and fast (linear-time) paths agree in float64, and each variant computes what its paper says.
"""

from __future__ import annotations

import math

import pytest
import torch

from attention_zoo import build_attention
from attention_zoo.cosformer import CosformerAttention, cosformer_linear, cosformer_reference
from attention_zoo.linear import linear_form
from attention_zoo.performer import PerformerAttention, favor_features, gaussian_orthogonal_matrix
from attention_zoo.softmax import softmax_reference
from tests.zoo_contract import variant_config

KERNELS = ["linear", "performer", "cosformer"]
# (batch, heads, length, head_dim, valid lengths or None for no padding)
SHAPES = [
    (1, 1, 1, 4, None),
    (2, 3, 17, 8, None),
    (2, 3, 17, 8, (17, 5)),
    (3, 2, 64, 16, (64, 1, 33)),
    (2, 4, 33, 5, (20, 31)),
]


def make(name: str, heads: int, head_dim: int, impl: str, **over) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = variant_config(name, impl=impl, **over)
    return build_attention(cfg, dim=heads * head_dim, num_heads=heads, max_len=128).double().eval()


def padding_mask(batch: int, n: int, valid: tuple[int, ...] | None) -> torch.Tensor:
    if valid is None:
        return torch.ones(batch, n, dtype=torch.bool)
    return torch.arange(n)[None, :] < torch.tensor(valid)[:, None]


def max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()  # 0 when both are exactly 0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + ("-pad" if s[4] else ""))
@pytest.mark.parametrize("name", KERNELS)
def test_reference_and_fast_paths_agree_in_float64(name, shape):
    b, h, n, d, valid = shape
    fast, ref = make(name, h, d, "fast"), make(name, h, d, "reference")
    ref.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(n * 7 + d)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    mask = padding_mask(b, n, valid)
    out_fast, out_ref = fast.attend(q, k, v, mask), ref.attend(q, k, v, mask)
    rows = mask[:, None, :].expand(b, h, n)
    assert out_fast.dtype == torch.float64
    assert max_rel_error(out_fast[rows], out_ref[rows]) < 1e-10
    # the whole module too (projections, head split), on the same weights
    x = torch.randn(b, n, h * d, generator=g, dtype=torch.float64)
    assert max_rel_error(fast(x, mask)[mask], ref(x, mask)[mask]) < 1e-10


# ---- linear -------------------------------------------------------------------------------------------------


def test_linear_matches_the_elu_plus_one_formula_by_hand():
    """o_i = sum_j phi(q_i).phi(k_j) v_j / (sum_j phi(q_i).phi(k_j) + eps) over valid j, phi = elu + 1."""
    attn = make("linear", heads=1, head_dim=3, impl="fast")
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 1, 6, 3, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = attn.attend(q, k, v, mask)

    def phi(x: list[float]) -> list[float]:
        return [xi + 1.0 if xi > 0 else math.exp(xi) for xi in x]

    for i in range(4):
        num, den = [0.0, 0.0, 0.0], 0.0
        for j in range(4):  # valid keys only
            w = sum(a * c for a, c in zip(phi(q[0, 0, i].tolist()), phi(k[0, 0, j].tolist()), strict=True))
            num = [nv + w * vj for nv, vj in zip(num, v[0, 0, j].tolist(), strict=True)]
            den += w
        expected = torch.tensor([x / (den + 1e-6) for x in num], dtype=torch.float64)
        torch.testing.assert_close(out[0, 0, i], expected, rtol=1e-12, atol=1e-12)


# ---- performer ----------------------------------------------------------------------------------------------


def test_performer_estimate_approaches_softmax_attention_as_features_grow():
    """FAVOR+ is an unbiased estimator of exp(q.k/sqrt(d)): the attention weights approach softmax's."""
    b, h, n, d = 2, 2, 40, 16
    g = torch.Generator().manual_seed(0)
    q, k = (0.5 * torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.eye(n, dtype=torch.float64).expand(b, h, n, n)  # one-hot values: the output rows are the weights
    mask = padding_mask(b, n, (40, 25))
    exact = softmax_reference(q, k, v, mask)
    rows = mask[:, None, :].expand(b, h, n)

    def error(m: int) -> float:  # mean L1 distance between estimated and exact weight rows, over 3 draws
        errs = []
        for seed in range(3):
            proj = gaussian_orthogonal_matrix(m, d, torch.Generator().manual_seed(100 + seed))
            phi_q = favor_features(q, proj, mask, is_query=True, eps=1e-6)
            phi_k = favor_features(k, proj, mask, is_query=False, eps=1e-6)
            errs.append((linear_form(phi_q, phi_k, v, mask) - exact).abs().sum(-1)[rows].mean().item())
        return sum(errs) / len(errs)

    e16, e256, e4096 = error(16), error(256), error(4096)
    assert e16 > e256 > e4096
    assert e4096 < 0.05 and e4096 < e16 / 5  # about 1/sqrt(m)


@pytest.mark.parametrize("valid", [None, (17, 5)])
def test_performer_relu_kernel_is_the_linear_form_of_relu_random_features(valid):
    """``attention.kernel=relu`` (NYS's Performer): phi(x) = relu(W x d^-1/4) + eps on both paths, padded keys
    left out; not the FAVOR+ estimate."""
    b, h, n, d = 2, 3, 17, 8
    fast, ref = (make("performer", h, d, impl, kernel="relu", eps=1e-3) for impl in ("fast", "reference"))
    ref.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    mask = padding_mask(b, n, valid)
    w = fast.projection.double()
    phi_q, phi_k = (torch.relu((x * d**-0.25) @ w.T) + 1e-3 for x in (q, k))
    keep = mask[:, None, :, None]
    weights = phi_q @ phi_k.masked_fill(~keep, 0.0).transpose(-1, -2)
    by_hand = weights @ v.masked_fill(~keep, 0.0) / weights.sum(-1, keepdim=True)
    rows = mask[:, None, :].expand(b, h, n)
    for out in (fast.attend(q, k, v, mask), ref.attend(q, k, v, mask)):
        assert max_rel_error(out[rows], by_hand[rows]) < 1e-10
    favor = make("performer", h, d, "fast", eps=1e-3)
    favor.load_state_dict(fast.state_dict())
    assert max_rel_error(favor.attend(q, k, v, mask)[rows], by_hand[rows]) > 1e-3
    with pytest.raises(ValueError, match="attention.kernel='gauss' is not one of exp, relu"):
        make("performer", h, d, "fast", kernel="gauss")


def test_performer_features_are_orthogonal_blocks_with_chi_norms():
    d, m = 8, 20  # two full blocks of 8 and a truncated block of 4
    w = gaussian_orthogonal_matrix(m, d, torch.Generator().manual_seed(0))
    assert w.shape == (m, d)
    for start in range(0, m, d):
        block = w[start : start + d]
        directions = block / block.norm(dim=1, keepdim=True)
        torch.testing.assert_close(directions @ directions.T, torch.eye(len(block), dtype=torch.float64))
    norms = w.norm(dim=1)
    assert norms.std() > 0.1  # rescaled by random norms, not all sqrt(d)
    big = gaussian_orthogonal_matrix(4096, d, torch.Generator().manual_seed(1))
    assert abs(big.square().sum(dim=1).mean().item() - d) < 0.5  # E chi_d^2 = d, like a Gaussian row


def test_performer_stabiliser_keeps_large_inputs_finite_in_float32():
    """Without the max shift exp(w.x) overflows float32 here; with it the result matches float64."""
    attn = make("performer", heads=2, head_dim=16, impl="fast").float()
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 30, 16, generator=g) for _ in range(3))
    q, k = 60 * q, 60 * k
    assert not torch.isfinite(torch.exp((k * 16**-0.25) @ attn.projection.T)).all()
    mask = padding_mask(1, 30, (22,))
    out32 = attn.attend(q, k, v, mask)
    out64 = attn.double().attend(q.double(), k.double(), v.double(), mask)
    assert torch.isfinite(out32).all()
    rows = mask[:, None, :].expand(1, 2, 30)
    assert max_rel_error(out32.double()[rows], out64[rows]) < 1e-3


def test_performer_padded_keys_cannot_move_the_key_maximum():
    proj = gaussian_orthogonal_matrix(32, 8, torch.Generator().manual_seed(0))
    k = torch.randn(1, 1, 10, 8, dtype=torch.float64)
    mask = padding_mask(1, 10, (6,))
    k_huge = k.clone()
    k_huge[..., 6:, :] = 1e4
    a = favor_features(k, proj, mask, is_query=False, eps=1e-6)
    b = favor_features(k_huge, proj, mask, is_query=False, eps=1e-6)
    torch.testing.assert_close(a[..., :6, :], b[..., :6, :], rtol=0, atol=0)


def test_performer_redraw_schedule_and_reproducibility():
    torch.manual_seed(0)
    attn = PerformerAttention(16, 2, nb_features=12, redraw_interval=3)
    torch.manual_seed(0)
    twin = PerformerAttention(16, 2, nb_features=12, redraw_interval=3)
    torch.testing.assert_close(attn.projection, twin.projection, rtol=0, atol=0)  # same seed -> same model
    other = PerformerAttention(16, 2, nb_features=12, redraw_interval=3)
    assert not torch.equal(other.projection, twin.projection)  # the next layer gets its own features

    x, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    first = attn.projection.clone()
    attn.eval()
    for _ in range(5):
        attn(x, mask)
    assert torch.equal(attn.projection, first)  # eval never redraws
    attn.before_training_step()
    assert torch.equal(attn.projection, first)  # nor does the training loop's hook on a module in eval mode
    attn.train()

    def step(module):  # what the training loop does: the hook, then the forward
        module.before_training_step()
        module(x, mask)

    for _ in range(3):
        step(attn)
        assert torch.equal(attn.projection, first)
    step(attn)  # the 4th training step starts with a redraw
    second = attn.projection.clone()
    assert not torch.equal(second, first)
    for _ in range(2):
        step(attn)
    assert torch.equal(attn.projection, second)
    for _ in range(5):
        attn(x, mask)  # forward passes alone (no step) change nothing
    assert torch.equal(attn.projection, second)

    # the schedule is in the state dict: a restored module continues it exactly
    restored = PerformerAttention(16, 2, nb_features=12, redraw_interval=3, feature_seed=123)
    restored.load_state_dict(attn.state_dict())
    restored.train()
    for _ in range(4):
        step(attn)
        step(restored)
        assert torch.equal(attn.projection, restored.projection)
    assert not torch.equal(attn.projection, second)

    never = PerformerAttention(16, 2, nb_features=12, redraw_interval=0).train()
    before = never.projection.clone()
    for _ in range(10):
        step(never)
    assert torch.equal(never.projection, before)


# ---- cosformer ----------------------------------------------------------------------------------------------


def test_cosformer_weights_are_cos_reweighted_by_hand():
    """With relu(q_i).relu(k_j) = const, the weights are cos(pi/2 (i - j)/M) / sum_j, M = valid tokens."""
    n, valid = 7, 5
    q = torch.ones(1, 1, n, 3, dtype=torch.float64)
    k = torch.ones(1, 1, n, 3, dtype=torch.float64)
    v = torch.eye(n, dtype=torch.float64)[None, None]  # one-hot values: output row i is the weight row i
    mask = padding_mask(1, n, (valid,))
    for kernel in (cosformer_linear, cosformer_reference):
        out = kernel(q, k, v, mask)
        for i in range(valid):
            w = [math.cos(math.pi / 2 * (i - j) / valid) for j in range(valid)] + [0.0] * (n - valid)
            expected = torch.tensor([x / sum(w) for x in w], dtype=torch.float64)
            torch.testing.assert_close(out[0, 0, i], expected, rtol=1e-12, atol=1e-12)


def test_cosformer_padded_sequence_equals_the_unpadded_one():
    """M is the number of valid tokens, so a padded sequence gives the outputs of the same sequence unpadded."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 12, 4, generator=g, dtype=torch.float64) for _ in range(3))
    padded = cosformer_linear(q, k, v, padding_mask(1, 12, (8,)))
    alone = cosformer_linear(q[:, :, :8], k[:, :, :8], v[:, :, :8], padding_mask(1, 8, None))
    torch.testing.assert_close(padded[:, :, :8], alone, rtol=1e-12, atol=1e-12)


def test_cosformer_position_index_counts_places_not_valid_tokens():
    """index="position" (official): i = 1..N over all tokens and M = N, so with padding inside the sequence
    (pixel 0 in the image tasks) the weights follow places in the sequence; both paths agree."""
    n = 9
    mask = torch.tensor([[1, 0, 0, 1, 1, 0, 1, 0, 1]], dtype=torch.bool)
    q = torch.ones(1, 1, n, 3, dtype=torch.float64)
    v = torch.eye(n, dtype=torch.float64)[None, None]
    valid = [j for j in range(n) if mask[0, j]]
    for kernel in (cosformer_linear, cosformer_reference):
        out = kernel(q, q.clone(), v, mask, index="position")
        for i in valid:
            w = [math.cos(math.pi / 2 * (i - j) / n) if j in valid else 0.0 for j in range(n)]
            expected = torch.tensor([x / sum(w) for x in w], dtype=torch.float64)
            torch.testing.assert_close(out[0, 0, i], expected, rtol=1e-12, atol=1e-12)
    # the default counts valid tokens: token 3 is the 2nd of 5, not the 4th of 9
    rank = cosformer_reference(q, q.clone(), v, mask)
    assert not torch.allclose(rank[0, 0, 3], out[0, 0, 3])
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, n, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, n, generator=g) > 0.4
    mask[:, 0] = True
    torch.testing.assert_close(
        cosformer_linear(q, k, v, mask, index="position")[mask[:, None].expand(-1, 2, -1)],
        cosformer_reference(q, k, v, mask, index="position")[mask[:, None].expand(-1, 2, -1)],
        rtol=1e-10,
        atol=1e-10,
    )


def test_cosformer_unknown_index_is_named():
    with pytest.raises(ValueError, match="attention.index='raster'"):
        CosformerAttention(8, 2, index="raster")
