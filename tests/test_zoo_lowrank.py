"""Nystromformer, Linformer, Skyformer: reference (N x N) and fast paths agree in float64, and each variant
computes what its paper says (exact limits, landmark bookkeeping, named errors)."""

from __future__ import annotations

import math

import pytest
import torch

from attention_zoo import build_attention
from attention_zoo.nystromformer import iterative_pinv, landmark_segments
from attention_zoo.skyformer import gaussian_kernel, landmark_rows, skyformer_fast, skyformer_reference
from attention_zoo.softmax import softmax_reference

# (batch, heads, length, valid tokens per item): odd lengths, with and without padding, items shorter and longer
# than the landmark count (8 below for Nystromformer, so both its Nystrom and its exact branch run).
SHAPES = [
    (1, 1, 7, (7,)),
    (2, 3, 33, (33, 17)),
    (3, 2, 67, (67, 40, 5)),
    (2, 4, 130, (129, 96)),
]
SMALL = {"nystromformer": {"num_landmarks": 8}, "linformer": {"proj_len": 16}, "skyformer": {"num_landmarks": 12}}


def make(name: str, heads: int, impl: str, head_dim: int = 8, max_len: int = 256, seed: int = 0, **over):
    torch.manual_seed(seed)
    cfg = {"name": name, "impl": impl, **SMALL[name], **over}
    return build_attention(cfg, dim=heads * head_dim, num_heads=heads, max_len=max_len).double().eval()


def qkv_mask(batch: int, heads: int, n: int, valid: tuple[int, ...], d: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(n)[None, :] < torch.tensor(valid)[:, None]
    return q, k, v, mask


def rel_err(ref: torch.Tensor, out: torch.Tensor, mask: torch.Tensor) -> float:
    """max |ref - out| / max |ref| over valid query positions (B, H, N, d) tensors."""
    keep = mask[:, None, :, None]
    return ((ref - out).abs() * keep).max().item() / (ref.abs() * keep).max().item()


# ---------------------------------------------------------------- reference vs fast, all three variants


@pytest.mark.parametrize("name", ["nystromformer", "linformer", "skyformer"])
@pytest.mark.parametrize("batch,heads,n,valid", SHAPES)
def test_reference_matches_fast(name, batch, heads, n, valid):
    ref, fast = make(name, heads, "reference"), make(name, heads, "fast")
    fast.load_state_dict(ref.state_dict())
    q, k, v, mask = qkv_mask(batch, heads, n, valid)
    out_ref, out_fast = ref.attend(q, k, v, mask), fast.attend(q, k, v, mask)
    assert out_ref.dtype == out_fast.dtype == torch.float64
    assert rel_err(out_ref, out_fast, mask) < 1e-10
    # and through the whole module (projections, heads), at the variants' shipped hyperparameters
    ref_full, fast_full = (
        make(name, heads, "reference", **_defaults(name)),
        make(name, heads, "fast", **_defaults(name)),
    )
    fast_full.load_state_dict(ref_full.state_dict())
    x = torch.randn(batch, n, heads * 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a, b = ref_full(x, mask), fast_full(x, mask)
    assert ((a - b).abs()[mask]).max() / a.abs()[mask].max() < 1e-10


def _defaults(name: str) -> dict:
    return {
        "nystromformer": {"num_landmarks": 64},
        "linformer": {"proj_len": 128},
        "skyformer": {"num_landmarks": 128},
    }[name]


@pytest.mark.parametrize("batch,heads,n,valid", SHAPES)
def test_skyformer_paths_agree_with_random_training_landmarks(batch, heads, n, valid):
    q, k, v, mask = qkv_mask(batch, heads, n, valid)
    torch.manual_seed(3)
    rows = landmark_rows(mask, 12, random=True)
    ref = skyformer_reference(q, k, v, mask, rows, 6, 0.1)
    assert rel_err(ref, skyformer_fast(q, k, v, mask, rows, 6, 0.1), mask) < 1e-10


# ---------------------------------------------------------------- Nystromformer


def test_iterative_pinv_converges_to_the_inverse():
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(3, 2, 10, 10, generator=g, dtype=torch.float64) + 4 * torch.eye(10)).softmax(dim=-1)
    exact = torch.linalg.inv(a)
    six = (iterative_pinv(a, 6) - exact).abs().max()
    assert (iterative_pinv(a, 20) - exact).abs().max() < 1e-9 * exact.abs().max()
    assert six > 1e-9  # six steps are an approximation, not the converged inverse: the test above is not trivial
    # the paper's init: Z0 = A^T / (|A|_1 |A|_inf) per matrix
    z0 = iterative_pinv(a, 0)
    norms = a.sum(-2).amax(-1) * a.sum(-1).amax(-1)
    torch.testing.assert_close(z0, a.transpose(-1, -2) / norms[..., None, None])


def test_landmark_segments_split_the_valid_tokens_contiguously():
    mask = torch.tensor([[True] * 10 + [False] * 5, [True] * 3 + [False] * 12])
    segment, slot_valid, count = landmark_segments(mask, 4)
    assert count.tolist() == [10, 3]
    assert segment[0, :10].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # sizes 3, 2, 3, 2: contiguous, within one
    assert segment[1, :3].tolist() == [0, 1, 2] and slot_valid[1].tolist() == [True, True, True, False]
    assert slot_valid[0].all()
    # divisible case: the official reshape into equal blocks
    seg_div, _, _ = landmark_segments(torch.ones(1, 12, dtype=torch.bool), 4)
    assert seg_div[0].tolist() == [i // 3 for i in range(12)]


def test_nystromformer_is_exact_softmax_when_tokens_do_not_exceed_landmarks():
    q, k, v, mask = qkv_mask(3, 2, 20, (8, 5, 1))  # all items have <= 8 valid tokens
    exact = softmax_reference(q, k, v, mask)
    for impl in ("fast", "reference"):
        attn = make("nystromformer", 2, impl, conv_kernel=0)
        out = attn.attend(q, k, v, mask)
        assert rel_err(exact, out, mask) < 1e-12, impl


def test_nystromformer_matches_the_papers_formula_on_full_blocks():
    """No padding, N a multiple of m: landmarks are the official reshape-means, output the paper's product."""
    q, k, v, mask = qkv_mask(2, 2, 48, (48, 48))
    attn = make("nystromformer", 2, "fast", conv_kernel=0)  # 8 landmarks of 6 tokens
    s = 8**-0.25
    qs, ks = q * s, k * s
    ql, kl = (t.reshape(2, 2, 8, 6, 8).mean(dim=-2) for t in (qs, ks))
    expect = (
        (qs @ kl.transpose(-1, -2)).softmax(-1)
        @ iterative_pinv((ql @ kl.transpose(-1, -2)).softmax(-1), 6)
        @ (ql @ ks.transpose(-1, -2)).softmax(-1)
        @ v
    )
    assert rel_err(expect, attn.attend(q, k, v, mask), mask) < 1e-12
    # and it is an approximation: not equal to exact softmax attention
    assert rel_err(softmax_reference(q, k, v, mask), expect, mask) > 1e-3


def test_nystromformer_conv_skip_is_a_per_head_filter_over_masked_values():
    q, k, v, mask = qkv_mask(2, 2, 19, (19, 11))
    with_conv = make("nystromformer", 2, "fast", conv_kernel=5)
    without = make("nystromformer", 2, "fast", conv_kernel=0)
    skip = with_conv.attend(q, k, v, mask) - without.attend(q, k, v, mask)
    w = with_conv.conv.weight[:, 0, :, 0]  # (H, 5)
    vm = v * mask[:, None, :, None]
    by_hand = torch.zeros_like(v)
    for i in range(19):
        for t in range(5):
            j = i + t - 2
            if 0 <= j < 19:
                by_hand[:, :, i] += w[None, :, t, None] * vm[:, :, j]
    torch.testing.assert_close(skip, by_hand, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- Linformer


def test_linformer_with_identity_projections_is_softmax_attention():
    n = 9
    q, k, v, mask = qkv_mask(2, 3, n, (n, n))
    for impl in ("fast", "reference"):
        attn = make("linformer", 3, impl, proj_len=n, max_len=n)
        with torch.no_grad():
            attn.proj_e.copy_(torch.eye(n).expand(3, n, n))
            attn.proj_f.copy_(torch.eye(n).expand(3, n, n))
        assert rel_err(softmax_reference(q, k, v, mask), attn.attend(q, k, v, mask), mask) < 1e-12, impl


def test_linformer_shared_kv_uses_one_matrix_for_keys_and_values():
    q, k, v, mask = qkv_mask(2, 2, 15, (15, 6))
    shared = make("linformer", 2, "fast", share_kv=True)
    separate = make("linformer", 2, "fast")
    assert shared.proj_f is None
    with torch.no_grad():
        separate.proj_e.copy_(shared.proj_e)
        separate.proj_f.copy_(shared.proj_e)
    torch.testing.assert_close(shared.attend(q, k, v, mask), separate.attend(q, k, v, mask), rtol=0, atol=0)


def test_linformer_rejects_sequences_longer_than_max_len():
    attn = make("linformer", 2, "fast", max_len=16)
    x = torch.randn(1, 17, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"max_len=16.*length 17"):
        attn(x)
    attn(x[:, :16])  # the limit itself is fine


# ---------------------------------------------------------------- Skyformer


def exact_kernel_attention(q, k, v, mask):
    """Kernelized attention C V with C_ij = exp(-|q_i - k_j|^2 / 2) on q, k scaled by d^-1/4, padded keys dropped."""
    s = q.shape[-1] ** -0.25
    c = torch.exp(-0.5 * torch.cdist(q * s, k * s).square()) * mask[:, None, None, :]
    return c @ (v * mask[:, None, :, None])


def test_skyformer_with_every_row_as_landmark_is_exact_gaussian_attention():
    """Nystrom with S = all 2N rows of [Q; K] reproduces B, hence C, exactly (ridge 0, converged pinv)."""
    n, d = 6, 16
    q, k, v, mask = qkv_mask(2, 2, n, (n, n), d=d)
    exact = exact_kernel_attention(q, k, v, mask)
    for impl in ("fast", "reference"):
        attn = make("skyformer", 2, impl, head_dim=d, num_landmarks=2 * n, ridge=0.0, pinv_iterations=40)
        assert rel_err(exact, attn.attend(q, k, v, mask), mask) < 1e-9, impl
    # with the shipped ridge and 6 steps it is only an approximation
    approx = make("skyformer", 2, "fast", head_dim=d, num_landmarks=2 * n).attend(q, k, v, mask)
    assert rel_err(exact, approx, mask) > 1e-3


def test_skyformer_exact_with_padding_when_landmarks_cover_the_valid_rows():
    """A padded sequence whose landmarks are its 4 valid query rows and 4 valid key rows: exact, padding ignored.

    (Each row once: with repeated rows S^T B S is singular and the hyperpower iteration, run to convergence,
    amplifies rounding in the null space; the shipped ridge 0.1 and 6 steps are what keep that in check.)
    """
    n, d = 9, 16
    q, k, v, mask = qkv_mask(1, 2, n, (4,), d=d)
    keep, s = mask[:, None, :, None], d**-0.25
    rows = torch.tensor([[0, 1, 2, 3, n, n + 1, n + 2, n + 3]])
    out = skyformer_fast(q * s * keep, k * s * keep, v * keep, mask, rows, 40, 0.0)
    assert rel_err(exact_kernel_attention(q, k, v, mask), out, mask) < 1e-9


def test_skyformer_landmarks_are_valid_tokens_random_in_training_fixed_in_eval():
    mask = torch.arange(50)[None, :] < torch.tensor([50, 13, 1])[:, None]
    torch.manual_seed(0)
    rows = landmark_rows(mask, 128, random=True)
    is_query = torch.arange(128) < 64
    assert (rows[:, is_query] < 50).all() and (rows[:, ~is_query] >= 50).all()
    assert mask.gather(1, rows % 50).all()  # never a padded token
    assert len(set(rows[0, :64].tolist())) > 30  # spread over the sequence, not one position
    strided = landmark_rows(mask, 128, random=False)
    assert torch.equal(strided, landmark_rows(mask, 128, random=False))
    assert strided[1, :64].tolist() == sorted(strided[1, :64].tolist()) and set(strided[1, :64].tolist()) == set(
        range(13)
    )
    attn = make("skyformer", 2, "fast")
    x, m = torch.randn(2, 30, 16, dtype=torch.float64), torch.ones(2, 30, dtype=torch.bool)
    torch.testing.assert_close(attn(x, m), attn(x, m), rtol=0, atol=0)
    attn.train()
    assert not torch.allclose(attn(x, m), attn(x, m))


def test_gaussian_kernel_matches_pairwise_distances():
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(3, 5, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 7, 4, generator=g, dtype=torch.float64),
    )
    torch.testing.assert_close(gaussian_kernel(x, y), torch.exp(-0.5 * torch.cdist(x, y).square()))
    assert math.isclose(gaussian_kernel(x, x).diagonal(dim1=-2, dim2=-1).min().item(), 1.0, rel_tol=1e-12)


def test_variants_ignore_the_content_of_padded_keys_in_the_reference_path_too():
    for name in ("nystromformer", "linformer", "skyformer"):
        attn = make(name, 2, "reference")
        q, k, v, mask = qkv_mask(2, 2, 21, (21, 9))
        pad = ~mask[:, None, :, None]
        k2, v2 = torch.where(pad, 50 * torch.randn_like(k), k), torch.where(pad, 50 * torch.randn_like(v), v)
        torch.testing.assert_close(attn.attend(q, k2, v2, mask)[:, :, :9], attn.attend(q, k, v, mask)[:, :, :9])
