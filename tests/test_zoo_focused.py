"""FLatten, PolaFormer and block-local attention: reference vs fast paths in float64, plus one property each
that would fail if the variant computed something else."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_zoo import build_attention
from attention_zoo.flatten import focused_feature_map, normalised_linear_weights
from attention_zoo.local import local_blockwise
from attention_zoo.polaformer import polarity_feature_maps
from attention_zoo.softmax import softmax_reference

HEAD_DIM = 8
SHAPES = [(1, 1, 1), (2, 3, 37), (3, 2, 50), (2, 4, 101), (1, 2, 256)]  # (batch, heads, length)
MASKS = ["none", "suffix", "scattered"]


def make_mask(kind: str, batch: int, n: int, g: torch.Generator) -> torch.Tensor:
    """All valid, valid prefixes of random length, or random holes; every row keeps at least one valid token."""
    if kind == "none":
        return torch.ones(batch, n, dtype=torch.bool)
    if kind == "suffix":
        lengths = torch.randint(1, n + 1, (batch,), generator=g)
        return torch.arange(n)[None, :] < lengths[:, None]
    mask = torch.rand(batch, n, generator=g) < 0.6
    mask[torch.arange(batch), torch.randint(0, n, (batch,), generator=g)] = True
    return mask


def qkv(batch: int, heads: int, n: int, g: torch.Generator, d: int = HEAD_DIM) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(batch, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3))


def build(name: str, heads: int, seed: int = 0, **cfg):
    """A float64 module whose learnable scalars (scale, power, DWC) are random, not their all-zero init."""
    torch.manual_seed(seed)
    attn = build_attention({"name": name, **cfg}, dim=heads * HEAD_DIM, num_heads=heads, max_len=512)
    attn = attn.double().eval()
    with torch.no_grad():
        for pname, p in attn.named_parameters():
            if pname in {"scale", "power"} or pname.startswith("dwc."):
                p.normal_(0.0, 0.5)
    return attn


def rel_err(ref: torch.Tensor, fast: torch.Tensor) -> float:
    return ((ref - fast).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def both_paths(attn, q, k, v, mask) -> tuple[torch.Tensor, torch.Tensor]:
    attn.impl = "reference"
    ref = attn.attend(q, k, v, mask)
    attn.impl = "fast"
    return ref, attn.attend(q, k, v, mask)


# ---------------------------------------------------------------------------------------------- reference vs fast


@pytest.mark.parametrize("name", ["flatten", "polaformer"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask_kind", MASKS)
def test_linear_variants_reference_matches_fast(name, shape, mask_kind):
    batch, heads, n = shape
    g = torch.Generator().manual_seed(n * 7 + heads)
    attn = build(name, heads)
    q, k, v = qkv(batch, heads, n, g)
    mask = make_mask(mask_kind, batch, n, g)
    ref, fast = both_paths(attn, q, k, v, mask)
    assert ref.dtype == torch.float64 and torch.isfinite(ref).all()
    assert rel_err(ref[mask.unsqueeze(1).expand(-1, heads, -1)], fast[mask.unsqueeze(1).expand(-1, heads, -1)]) < 1e-10


@pytest.mark.parametrize("shift", [0.0, 1e-3, 1.0])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask_kind", MASKS)
def test_linear_with_relu_features_is_the_linear_form_of_relu(shape, mask_kind, shift):
    """``attention.feature_map=relu`` (the Pathfinder diagnostic), plus ``attention.shift``: both paths compute
    phi(q) S / (phi(q) z + eps) with phi = relu + shift, and it is not the elu+1 model. A query whose relu features
    all vanish gets 0 without a shift (not NaN), and with one still weighs every key by the shift alone."""
    batch, heads, n = shape
    g = torch.Generator().manual_seed(n * 5 + heads)
    q, k, v = qkv(batch, heads, n, g)
    mask = make_mask(mask_kind, batch, n, g)
    attn = build("linear", heads, feature_map="relu", shift=shift)
    ref, fast = both_paths(attn, q, k, v, mask)
    keep = mask[:, None, :, None]
    weights = (F.relu(q) + shift) @ (F.relu(k) + shift).masked_fill(~keep, 0.0).transpose(-1, -2)
    by_hand = (weights @ v.masked_fill(~keep, 0.0)) / (weights.sum(-1, keepdim=True) + attn.eps)
    valid = mask.unsqueeze(1).expand(-1, heads, -1)
    assert rel_err(by_hand[valid], ref[valid]) < 1e-10 and rel_err(by_hand[valid], fast[valid]) < 1e-10
    if n > 1:  # over one key every normalised attention returns its value
        elu = build("linear", heads)
        elu.impl = "fast"
        assert rel_err(fast[valid], elu.attend(q, k, v, mask)[valid]) > 1e-3
    dead = -torch.ones(1, 1, 3, HEAD_DIM, dtype=torch.float64)  # relu(q) = 0 everywhere
    _, keys, values = qkv(1, 1, 3, g)
    keys = keys.abs()
    out = attn.attend(dead, keys, values, torch.ones(1, 3, dtype=torch.bool))
    w = shift * (keys + shift).sum(-1)  # relu(k) = k here: a dead query weighs key j by shift * sum(phi(k_j))
    mean = (w[..., None] * values).sum(2) / (w.sum(-1, keepdim=True) + attn.eps)
    assert torch.allclose(out[0, 0], mean[0, 0].expand(3, -1), rtol=1e-6, atol=0.0)
    assert torch.equal(out, torch.zeros_like(out)) == (shift == 0)


def test_linear_refuses_a_negative_shift():
    with pytest.raises(ValueError, match=r"attention.shift=-0.5: features must stay non-negative"):
        build("linear", 2, feature_map="relu", shift=-0.5)


def test_linear_rejects_an_unknown_feature_map():
    with pytest.raises(ValueError, match="attention.feature_map='gelu' is not one of elu, relu"):
        build("linear", 2, feature_map="gelu")


@pytest.mark.parametrize("window", [1, 7, 50, 300])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask_kind", MASKS)
def test_local_reference_matches_blockwise(window, shape, mask_kind):
    batch, heads, n = shape
    g = torch.Generator().manual_seed(n * 11 + window)
    attn = build("local", heads, window=window)
    q, k, v = qkv(batch, heads, n, g)
    mask = make_mask(mask_kind, batch, n, g)
    ref, fast = both_paths(attn, q, k, v, mask)
    # All positions, padded ones included: both paths give a padded query in an all-padding block the same average.
    assert torch.isfinite(ref).all() and rel_err(ref, fast) < 1e-10


@pytest.mark.parametrize(
    "name,cfg", [("flatten", {}), ("polaformer", {}), ("polaformer", {"gate": False}), ("local", {"window": 16})]
)
def test_whole_module_reference_matches_fast(name, cfg):
    """Through projections, gate and DWC: the two impls on the same weights, odd length with padding."""
    g = torch.Generator().manual_seed(5)
    fast = build(name, heads=2, impl="fast", **cfg)
    ref = build(name, heads=2, impl="reference", **cfg)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 45, 2 * HEAD_DIM, generator=g, dtype=torch.float64)
    mask = make_mask("suffix", 3, 45, g)
    assert rel_err(ref(x, mask)[mask], fast(x, mask)[mask]) < 1e-10


# ---------------------------------------------------------------------------------------------------- FLatten


def test_focused_feature_map_is_the_papers_formula():
    """phi(x) = |y| y^p / |y^p| with y = (relu(x) + eps) / scale and norms over the whole token (all heads)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, HEAD_DIM, generator=g, dtype=torch.float64)
    scale = F.softplus(torch.randn(3, 1, HEAD_DIM, generator=g, dtype=torch.float64))
    y = (x.clamp_min(0) + 1e-6) / scale
    token = y.permute(0, 2, 1, 3).reshape(2, 10, -1)  # (B, N, H*d): the token's full feature, as released
    by_hand = token.norm(dim=-1, keepdim=True) * token**3 / (token**3).norm(dim=-1, keepdim=True)
    phi = focused_feature_map(x, scale, p=3.0)
    torch.testing.assert_close(phi.permute(0, 2, 1, 3).reshape(2, 10, -1), by_hand, rtol=1e-12, atol=0)
    # p = 1 is the identity on y; a larger p keeps the norm but concentrates mass on the largest coordinates.
    torch.testing.assert_close(focused_feature_map(x, scale, p=1.0), y, rtol=1e-12, atol=0)
    top = token.argmax(dim=-1, keepdim=True)
    share = lambda t: t.gather(-1, top) / t.norm(dim=-1, keepdim=True)  # noqa: E731
    assert (share(by_hand) >= share(token) - 1e-12).all() and (share(by_hand) > share(token) + 1e-3).any()


@pytest.mark.parametrize("name", ["flatten", "polaformer"])
def test_dwc_restores_full_rank(name):
    """Without the DWC the map v -> out (one channel) has rank <= the feature width; with it, full rank N."""
    n = 24
    g = torch.Generator().manual_seed(3)
    q, k, v = qkv(1, 1, n, g)
    mask = torch.ones(1, n, dtype=torch.bool)

    def channel_map(attn) -> torch.Tensor:
        attn.impl = "fast"

        def out_channel(v0: torch.Tensor) -> torch.Tensor:  # v0: (N,) values of channel 0
            vv = torch.cat([v0[None, None, :, None], v[..., 1:]], dim=-1)
            return attn.attend(q, k, vv, mask)[0, 0, :, 0]

        return torch.autograd.functional.jacobian(out_channel, v[0, 0, :, 0])  # (N, N)

    feature_width = HEAD_DIM if name == "flatten" else 2 * HEAD_DIM  # polaformer features are [x+, x-]
    low = torch.linalg.matrix_rank(channel_map(build(name, 1, dwc_kernel=0)))
    full = torch.linalg.matrix_rank(channel_map(build(name, 1, dwc_kernel=5)))
    assert low <= feature_width < n and full == n


def test_flatten_weights_are_a_convex_combination():
    """With the normaliser's eps at 0, rows of the weights sum to 1; padded keys get exactly 0."""
    g = torch.Generator().manual_seed(4)
    attn = build("flatten", 2)
    q, k, _ = qkv(2, 2, 30, g)
    mask = make_mask("scattered", 2, 30, g)
    scale = F.softplus(attn.scale)
    phi_q, phi_k = focused_feature_map(q, scale, 3.0), focused_feature_map(k, scale, 3.0)
    w = normalised_linear_weights(phi_q, phi_k, mask, eps=0.0)
    assert (w >= 0).all() and (w[~mask[:, None, None, :].expand_as(w)] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), rtol=1e-12, atol=0)


# -------------------------------------------------------------------------------------------------- PolaFormer


def test_polarity_split_recovers_the_signed_dot_product():
    """With power 1: same-sign minus opposite-sign similarity is q.k exactly (what relu kernels lose), and their
    sum is |q|.|k|."""
    g = torch.Generator().manual_seed(1)
    q, k, _ = qkv(2, 3, 17, g)
    same, opp, phi_k = polarity_feature_maps(q, k, torch.ones(3, 1, HEAD_DIM, dtype=torch.float64))
    s_same, s_opp = same @ phi_k.transpose(-1, -2), opp @ phi_k.transpose(-1, -2)
    torch.testing.assert_close(s_same - s_opp, q @ k.transpose(-1, -2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_same + s_opp, q.abs() @ k.abs().transpose(-1, -2), rtol=1e-12, atol=1e-12)
    assert (s_same >= 0).all() and (s_opp >= 0).all()


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_polaformer_halves_match_a_by_hand_computation(shift):
    """First half of each head's output = same-sign weights @ first half of v; second = opposite-sign @ second,
    with w_ij = s_ij / N / (mean_j s_ij + eps) and s written out coordinate by coordinate. ``shift`` c (the
    Pathfinder diagnostic) adds c to each of the 2d features: s + c sum phi_q + c sum phi_k + 2d c^2."""
    g = torch.Generator().manual_seed(2)
    attn = build("polaformer", 2, dwc_kernel=0, shift=shift)
    q, k, v = qkv(1, 2, 13, g)
    mask = torch.ones(1, 13, dtype=torch.bool)
    out, fast = both_paths(attn, q, k, v, mask)
    torch.testing.assert_close(out, fast, rtol=1e-10, atol=1e-12)

    scale = F.softplus(attn.scale)
    p = 1 + 3.0 * torch.sigmoid(attn.power)  # alpha = 3 from the shipped config
    qs, ks = q / scale, k / scale
    pos = lambda t: t.clamp_min(0) ** p  # noqa: E731
    neg = lambda t: (-t).clamp_min(0) ** p  # noqa: E731
    s_same = torch.einsum("bhic,bhjc->bhij", pos(qs), pos(ks)) + torch.einsum("bhic,bhjc->bhij", neg(qs), neg(ks))
    s_opp = torch.einsum("bhic,bhjc->bhij", neg(qs), pos(ks)) + torch.einsum("bhic,bhjc->bhij", pos(qs), neg(ks))
    mass_q, mass_k = (pos(t).sum(-1) + neg(t).sum(-1) for t in (qs, ks))  # the same for both halves' features
    floor = shift * mass_q[..., :, None] + shift * mass_k[..., None, :] + 2 * HEAD_DIM * shift**2
    s_same, s_opp = s_same + floor, s_opp + floor
    weights = lambda s: s / 13 / (s.mean(dim=-1, keepdim=True) + 1e-6)  # noqa: E731
    half = HEAD_DIM // 2
    torch.testing.assert_close(out[..., :half], weights(s_same) @ v[..., :half], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[..., half:], weights(s_opp) @ v[..., half:], rtol=1e-10, atol=1e-12)


def test_polaformer_refuses_a_negative_shift():
    with pytest.raises(ValueError, match=r"attention.shift=-1.0: features must stay non-negative"):
        build("polaformer", 2, shift=-1.0)


def test_polaformer_power_is_learnable_and_bounded():
    attn = build_attention({"name": "polaformer", "alpha": 5.0}, dim=16, num_heads=2, max_len=64)
    torch.testing.assert_close(attn.exponent(), torch.full((2, 1, HEAD_DIM), 3.5))  # 1 + alpha/2 at init
    with torch.no_grad():
        attn.power.copy_(torch.linspace(-30, 30, HEAD_DIM).expand(2, 1, -1))
    assert (attn.exponent() >= 1).all() and (attn.exponent() <= 6).all()
    x = torch.randn(2, 9, 16)
    attn(x).square().sum().backward()
    assert attn.power.grad is not None and attn.power.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------- local


def test_local_is_softmax_within_each_block_by_hand():
    g = torch.Generator().manual_seed(6)
    q, k, v = qkv(2, 2, 23, g)
    mask = make_mask("scattered", 2, 23, g)
    out = local_blockwise(q, k, v, mask, window=5)
    for start in range(0, 23, 5):
        sl = slice(start, start + 5)
        for b in range(2):
            if not mask[b, sl].any():
                continue
            scores = q[b, :, sl] @ k[b, :, sl].transpose(-1, -2) / math.sqrt(HEAD_DIM)
            scores = scores.masked_fill(~mask[b, sl], float("-inf"))
            expected = scores.softmax(-1) @ v[b, :, sl]
            valid = mask[b, sl]
            torch.testing.assert_close(out[b, :, sl][:, valid], expected[:, valid], rtol=1e-12, atol=1e-14)


def test_local_with_a_window_past_the_end_is_full_softmax():
    g = torch.Generator().manual_seed(7)
    q, k, v = qkv(2, 3, 37, g)
    mask = make_mask("suffix", 2, 37, g)
    full = softmax_reference(q, k, v, mask)
    for window in (37, 50, 4096):
        out = local_blockwise(q, k, v, mask, window)
        torch.testing.assert_close(
            out[mask.unsqueeze(1).expand(-1, 3, -1)], full[mask.unsqueeze(1).expand(-1, 3, -1)], rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_local_tokens_never_see_other_blocks(impl):
    """Changing the tokens of block 1 changes block 1's outputs and nothing else (whole module)."""
    attn = build("local", 2, impl=impl, window=8)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 30, 2 * HEAD_DIM, generator=g, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 8:16] = torch.randn(2, 8, 2 * HEAD_DIM, generator=g, dtype=torch.float64)
    out, out2 = attn(x), attn(x2)
    torch.testing.assert_close(out2[:, :8], out[:, :8], rtol=0, atol=1e-14)
    torch.testing.assert_close(out2[:, 16:], out[:, 16:], rtol=0, atol=1e-14)
    assert (out2[:, 8:16] - out[:, 8:16]).abs().min() > 0


def test_local_window_one_returns_v():
    g = torch.Generator().manual_seed(9)
    q, k, v = qkv(2, 2, 11, g)
    torch.testing.assert_close(local_blockwise(q, k, v, torch.ones(2, 11, dtype=torch.bool), 1), v)
