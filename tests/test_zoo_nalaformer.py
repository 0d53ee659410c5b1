"""NaLaFormer against shared/specs/nalaformer.md: the kernel's linear form equals its N x N reference, and the
properties the paper claims for the feature maps hold."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_zoo.linear import LinearAttention, linear_form
from attention_zoo.nalaformer import (
    NaLaAttention,
    depthwise_conv_tokens,
    nala_feature_maps,
    nala_linear,
    nala_reference,
)
from attention_zoo.rope import apply_rope


def qkv(b, h, n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3)]


def padding_mask(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    lengths[0] = n
    return torch.arange(n)[None] < lengths[:, None]


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 2, 17, 8), (3, 4, 64, 16), (2, 1, 129, 32)])
@pytest.mark.parametrize("rope", [True, False])
@pytest.mark.parametrize("sign_split", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_linear_form_equals_reference_float64(shape, rope, sign_split, groups):
    q, k, v = qkv(*shape)
    mask = padding_mask(shape[0], shape[2])
    pq, pk = nala_feature_maps(q, k, sign_split=sign_split)
    ref = nala_reference(pq, pk, v, mask, rope=rope, rope_groups=groups)
    fast = nala_linear(pq, pk, v, mask, rope=rope, rope_groups=groups)
    valid = mask[:, None, :, None].expand_as(ref)
    rel = ((ref - fast)[valid].abs().max() / ref[valid].abs().max()).item()
    assert rel < 1e-12


def test_linear_form_equals_reference_float32():
    q, k, v = qkv(2, 2, 256, 32, dtype=torch.float32)
    mask = padding_mask(2, 256)
    pq, pk = nala_feature_maps(q, k)
    ref, fast = nala_reference(pq, pk, v, mask), nala_linear(pq, pk, v, mask)
    valid = mask[:, None, :, None].expand_as(ref)
    assert ((ref - fast)[valid].abs().max() / ref[valid].abs().max()).item() < 1e-5


def test_reference_is_the_spec_formula_written_out():
    """w_ij = <R phi_q_i, R phi_k_j> / (N (phi_q_i . mean_j phi_k_j + 1e-6)), computed with explicit loops."""
    q, k, v = qkv(1, 1, 6, 4)
    mask = torch.ones(1, 6, dtype=torch.bool)
    out = nala_reference(*nala_feature_maps(q, k), v, mask)[0, 0]
    q, k, v = q[0, 0], k[0, 0], v[0, 0]
    k3 = k**3
    phi_k = torch.cat([k3.clamp(min=0), (-k3).clamp(min=0)], -1)
    rk = apply_rope(phi_k)
    for i in range(6):
        n = q[i].norm()
        p = 3 * (0.5 + math.tanh(n))
        phi_q = torch.cat([(q[i].clamp(min=0) / n) ** p, ((-q[i]).clamp(min=0) / n) ** p])
        rq = apply_rope(torch.stack([phi_q] * 6))[i]  # rotation by position i
        denom = phi_q @ phi_k.mean(0) + 1e-6
        expected = sum((rq @ rk[j]) / 6 / denom * v[j] for j in range(6))
        torch.testing.assert_close(out[i], expected, rtol=1e-12, atol=1e-12)


def test_weights_sum_to_one_without_rope():
    q, k, _ = qkv(2, 2, 33, 8)
    mask = padding_mask(2, 33)
    ones = torch.ones(2, 2, 33, 8, dtype=torch.float64)
    out = nala_linear(*nala_feature_maps(q, k), ones, mask, rope=False, denom_eps=0.0)
    torch.testing.assert_close(out, ones)


def weights(q, k, **opts):
    pq, pk = nala_feature_maps(q, k, **opts)
    w = pq @ pk.transpose(-1, -2)
    return w / w.sum(-1, keepdim=True)


def entropy(w):
    return -(w * w.clamp_min(1e-30).log()).sum(-1)


def test_larger_query_norm_gives_spikier_weights():
    """The paper's point: norm-aware power restores softmax-like sharpening as |q| grows; a fixed power does not
    (the direction q/|q| and hence the weights are then independent of |q|)."""
    q, k, _ = qkv(1, 1, 64, 16)
    q = q / q.norm(dim=-1, keepdim=True)
    e_small, e_large = entropy(weights(0.1 * q, k)), entropy(weights(3.0 * q, k))
    assert (e_large < e_small).all()
    fixed = dict(norm_aware=False)
    torch.testing.assert_close(weights(0.1 * q, k, **fixed), weights(3.0 * q, k, **fixed))


def test_power_range_and_zero_query():
    q = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    q[0, 0, 1, 0] = 100.0
    q[0, 0, 2, :2] = 50.0  # direction (1/sqrt 2, 1/sqrt 2), |q| large: p -> 4.5
    k = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    pq, pk = nala_feature_maps(q, k)
    assert torch.isfinite(pq).all() and pq[0, 0, 0].abs().sum() == 0  # all-zero query: features 0, not 0/0
    # |q| -> inf: p -> 4.5 and the positive direction is (1, 0, 0, 0)
    assert pq[0, 0, 1, 0] == 1.0 and pq[0, 0, 1, 1:].abs().sum() == 0
    torch.testing.assert_close(pq[0, 0, 2, :2], torch.full((2,), 0.5**2.25, dtype=torch.float64))


def test_opposite_signs_give_zero_weight_not_negative():
    q = torch.tensor([[[[1.0, 2.0, 0.5, 1.0]]]], dtype=torch.float64)
    k = -q.clone()
    pq, pk = nala_feature_maps(q, k)
    assert (pq @ pk.transpose(-1, -2)).item() == 0.0
    assert (pq @ nala_feature_maps(q, q)[1].transpose(-1, -2)).item() > 0


def test_rope_scores_depend_on_relative_position_only():
    a, b = torch.randn(2, 16, dtype=torch.float64)
    rot_a, rot_b = apply_rope(a.expand(12, 16)), apply_rope(b.expand(12, 16))
    torch.testing.assert_close(rot_a[3] @ rot_b[5], rot_a[7] @ rot_b[9])
    torch.testing.assert_close(rot_a[4].norm(), a.norm())


def test_within_signs_rope_never_pairs_a_positive_part_with_a_negative_one():
    """The released NALA.py rotates q+, q-, k+, k- each on its own: a query with only positive parts and a key
    with only negative parts score 0 at every distance. Our across_signs rotation pairs dimension i's positive
    part with its negative part (i, i + d), so the same pair scores sin-weighted cross terms."""
    d, n = 8, 7
    pos = torch.rand(n, d, dtype=torch.float64) + 0.1
    phi_q = torch.cat([pos, torch.zeros_like(pos)], -1)  # only q+
    phi_k = torch.cat([torch.zeros_like(pos), pos.flip(0)], -1)  # only k-
    within = apply_rope(phi_q, groups=2) @ apply_rope(phi_k, groups=2).T
    across = apply_rope(phi_q) @ apply_rope(phi_k).T
    assert within.abs().max() == 0 and across.abs().max() > 0.1
    # within one sign half it is ordinary RoPE of that half: relative positions only
    half = apply_rope(torch.cat([pos, pos], -1), groups=2)
    torch.testing.assert_close(half[:, :d], apply_rope(pos))
    block = NaLaAttention(32, 4, rope_pairing="within_signs").double().eval()
    across_block = NaLaAttention(32, 4).double().eval()
    across_block.load_state_dict(block.state_dict())
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    assert block.rope_groups == 2 and not torch.allclose(block(x), across_block(x))
    assert NaLaAttention(32, 4, rope_pairing="within_signs", sign_split=False).rope_groups == 1
    with pytest.raises(ValueError, match="rope_pairing='both'"):
        NaLaAttention(32, 4, rope_pairing="both")


@pytest.mark.parametrize("switch", ["rope", "lepe", "gate", "norm_aware", "sign_split"])
def test_ablation_switches_change_the_output(switch):
    torch.manual_seed(0)
    on = NaLaAttention(32, 4).double().eval()
    off = NaLaAttention(32, 4, **{switch: False}).double().eval()
    off.load_state_dict(on.state_dict(), strict=False)
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    assert not torch.allclose(on(x), off(x))
    if switch == "lepe":
        assert off.lepe is None and sum(p.numel() for p in off.parameters()) < sum(p.numel() for p in on.parameters())


def test_shift_puts_a_floor_under_every_feature():
    q, k, _ = qkv(2, 2, 9, 8)
    q[0, 0, 0] = 0.0  # a zero query: its features are all 0 without the shift
    for sign_split in (True, False):
        plain, shifted = (
            nala_feature_maps(q, k, sign_split=sign_split),
            nala_feature_maps(q, k, sign_split=sign_split, shift=0.25),
        )
        for a, b in zip(plain, shifted, strict=True):
            torch.testing.assert_close(b, a + 0.25, rtol=0, atol=0)
        assert plain[0][0, 0, 0].abs().sum() == 0 and shifted[0][0, 0, 0].min() == 0.25


def test_shift_runs_on_the_torch_paths_and_keeps_padding_out():
    """``attention.shift`` (the Pathfinder diagnostic) changes the model; ``auto`` computes it on the linear path
    (the fused and Triton kernels form only the released features, so naming them with a shift is refused), the
    N x N reference agrees, and padded keys stay out (their shifted features would otherwise count)."""
    torch.manual_seed(0)
    blocks = {s: NaLaAttention(32, 4, shift=s).double().eval() for s in (0.0, 1.0)}
    blocks[1.0].load_state_dict(blocks[0.0].state_dict())
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 13:] = False
    out = blocks[1.0](x, mask)
    assert not torch.allclose(out, blocks[0.0](x, mask))
    for impl in ("linear", "reference"):
        blocks[1.0].impl = impl
        torch.testing.assert_close(blocks[1.0](x, mask), out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(blocks[1.0](x[1:, :13])[0], out[1, :13], rtol=1e-10, atol=1e-12)
    for impl in ("fused", "triton"):
        with pytest.raises(ValueError, match=f"attention.shift=1.0 needs attention.impl=linear or reference.*{impl}"):
            NaLaAttention(32, 4, impl=impl, shift=1.0)
    with pytest.raises(ValueError, match=r"attention.shift=-1.0: features must stay non-negative"):
        NaLaAttention(32, 4, shift=-1.0)


def test_key_power_reduces_the_kernel_to_relu_plus_one_linear_attention():
    """The session-20 diagnostic's end point: with every power off and a floor of 1, NaLa's kernel is linear attention
    with relu + 1 features of unit-norm queries (the map that learns Pathfinder); the released cube is the default."""
    q, k, v = qkv(2, 3, 17, 8)
    mask = padding_mask(2, 17)
    opts = dict(norm_aware=False, fixed_power=1.0, sign_split=False)
    phi_q, phi_k = nala_feature_maps(q, k, **opts, shift=1.0, key_power=1)
    unit_q = q / q.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(phi_q, F.relu(unit_q) + 1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(phi_k, F.relu(k) + 1, rtol=1e-12, atol=1e-12)
    nala = nala_linear(phi_q, phi_k, v, mask, rope=False, denom_eps=0.0)
    linear = linear_form(F.relu(unit_q) + 1, F.relu(k) + 1, v, mask)
    keep = mask[:, None, :, None]
    torch.testing.assert_close(nala * keep, linear * keep, rtol=1e-10, atol=1e-12)
    cubed = nala_feature_maps(q, k, **opts)[1]
    torch.testing.assert_close(cubed, F.relu(k**3), rtol=0, atol=0)


RELU_PLUS_ONE_END = dict(
    rope=False, lepe=False, norm_aware=False, sign_split=False, fixed_power=1.0, key_power=1, shift=1.0
)


def test_raw_queries_without_norm_or_gate_make_the_block_linear_attention_with_relu_plus_one():
    """The session-21 bisection's far end: every NaLa part off, the module is the linear attention that learned
    Pathfinder (relu + 1), so each switch turned back on names what breaks it."""
    torch.manual_seed(0)
    nala = NaLaAttention(
        32, 4, impl="linear", gate=False, unit_queries=False, out_norm=False, eps=1e-12, **RELU_PLUS_ONE_END
    ).double()
    linear = LinearAttention(32, 4, feature_map="relu", shift=1.0, eps=0.0).double()
    with torch.no_grad():
        linear.qkv.weight.copy_(nala.qkvg.weight[:96])
        linear.qkv.bias.copy_(nala.qkvg.bias[:96])
        linear.proj.load_state_dict(nala.proj.state_dict())
    x = torch.randn(3, 19, 32, dtype=torch.float64)
    mask = padding_mask(3, 19)
    keep = mask[..., None]
    expected = linear(x, mask) * keep
    torch.testing.assert_close(nala(x, mask) * keep, expected, rtol=1e-9, atol=1e-11)
    nala.impl = "reference"
    torch.testing.assert_close(nala(x, mask) * keep, expected, rtol=1e-9, atol=1e-11)
    # each released part put back changes the output: unit-norm queries, the LayerNorm, the gate
    for part in ("unit_queries", "out_norm", "gate"):
        back = NaLaAttention(
            32,
            4,
            impl="linear",
            **{"gate": False, "unit_queries": False, "out_norm": False, part: True},
            eps=1e-12,
            **RELU_PLUS_ONE_END,
        ).double()
        back.load_state_dict(nala.state_dict(), strict=False)
        assert not torch.allclose(back(x, mask) * keep, expected), part


@pytest.mark.parametrize("shift", [1.0, 0.1])
def test_unit_queries_over_a_floor_cap_how_much_two_queries_can_differ(shift):
    """Why the relu + floor end learns Pathfinder from raw queries and not from q / |q| (session 22): over a floor s
    a unit-norm query scores key j between s * sum(phi_k_j) and (s + 1) * sum(phi_k_j) (|relu(q / |q|)| <= 1 and an
    L2 norm is at most the L1 norm), so no query weights a key more than (s + 1) / s times what another query gives
    it; the raw query has no such cap."""
    q, k, _ = qkv(1, 1, 64, 16)
    opts = dict(norm_aware=False, sign_split=False, fixed_power=1.0, key_power=1, shift=shift)

    def spread(unit_queries: bool) -> float:
        phi_q, phi_k = nala_feature_maps(5 * q, k, unit_queries=unit_queries, **opts)
        scores = phi_q @ phi_k.transpose(-1, -2)  # (1, 1, queries, keys)
        return (scores.amax(dim=-2) / scores.amin(dim=-2)).max().item()

    cap = (shift + 1) / shift
    assert 1 < spread(True) <= cap
    assert spread(False) > cap


@pytest.mark.parametrize("option, value", [("key_power", 1), ("unit_queries", False)])
def test_feature_diagnostics_take_the_torch_path(option, value):
    """Options that change NaLa's features are formed in PyTorch only: ``auto`` takes that path (equal to the
    reference), the fused and Triton kernels refuse them by name."""
    torch.manual_seed(0)
    released = NaLaAttention(32, 4).double().eval()
    diagnostic = NaLaAttention(32, 4, **{option: value}).double().eval()
    diagnostic.load_state_dict(released.state_dict())
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    out = diagnostic(x)
    assert not torch.allclose(out, released(x))
    diagnostic.impl = "reference"
    torch.testing.assert_close(diagnostic(x), out, rtol=1e-10, atol=1e-12)
    for impl in ("fused", "triton"):
        with pytest.raises(
            ValueError, match=f"attention.{option}={value} needs attention.impl=linear or reference.*{impl}"
        ):
            NaLaAttention(32, 4, impl=impl, **{option: value})


def test_even_key_powers_are_refused():
    for bad in (2, 0, 1.5, True):
        with pytest.raises(ValueError, match=r"attention.key_power=.*: expected an odd positive integer"):
            NaLaAttention(32, 4, key_power=bad)


def test_raw_query_features_and_the_block_without_its_layernorm():
    # the features themselves, with the sign split and the norm-aware power: raw q in place of q / |q|
    q, k, _ = qkv(2, 3, 11, 8)
    n = q.norm(dim=-1, keepdim=True)
    p = 3.0 * (0.5 + torch.tanh(n))
    raw_q, raw_k = nala_feature_maps(q, k, unit_queries=False)
    torch.testing.assert_close(raw_q, torch.cat([F.relu(q) ** p, F.relu(-q) ** p], dim=-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(raw_k, nala_feature_maps(q, k)[1], rtol=0, atol=0)
    # out_norm is the block's, not the kernel's: the fused path takes it and agrees with the PyTorch one
    torch.manual_seed(0)
    fused = NaLaAttention(32, 4, impl="fused", out_norm=False).double().eval()
    linear = NaLaAttention(32, 4, impl="linear", out_norm=False).double().eval()
    linear.load_state_dict(fused.state_dict())
    assert isinstance(fused.norm, torch.nn.Identity)
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    torch.testing.assert_close(fused(x), linear(x), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("impl", ["channels_last", "shift", "auto"])
def test_lepe_layouts_match_the_conv1d_layer(impl):
    """The two (B, N, C)-layout LePE paths give the released Conv1d's output and gradients (v, weight, bias),
    including at the sequence ends, where 'same' padding adds zeros; the block's output is the same too."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(12, 12, 5, padding=2, groups=12).double()
    v = torch.randn(3, 17, 12, dtype=torch.float64, requires_grad=True)
    grads = []
    for path in ("conv1d", impl):
        out = depthwise_conv_tokens(v, conv, path)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), v.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()))
        v.grad = conv.weight.grad = conv.bias.grad = None
    for ref, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, ref)
    block = NaLaAttention(32, 4, impl="linear").double().eval()
    other = NaLaAttention(32, 4, impl="linear", lepe_impl=impl).double().eval()
    other.load_state_dict(block.state_dict())
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    torch.testing.assert_close(other(x), block(x))
    with pytest.raises(ValueError, match="lepe_impl='nope'"):
        NaLaAttention(32, 4, lepe_impl="nope")


def test_block_structure_matches_released_module():
    attn = NaLaAttention(64, 2)
    assert attn.qkvg.out_features == 4 * 64
    assert attn.lepe.kernel_size == (5,) and attn.lepe.groups == 64
    assert isinstance(attn.norm, torch.nn.LayerNorm)


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 3, 19, 8), (2, 2, 64, 16)])
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"rope": False},
        {"norm_aware": False},
        {"sign_split": False},
        {"norm_aware": False, "fixed_power": 1.0},
        {"rope_groups": 2},
    ],
)
def test_fused_forward_and_backward_equal_autograd_float64(shape, opts, monkeypatch):
    """The hand-written backward against autograd through the readable linear form, chunked and unchunked."""
    import attention_zoo.nala_fused as fused

    rope, groups = opts.get("rope", True), opts.get("rope_groups", 1)
    feat = {k: v for k, v in opts.items() if k not in ("rope", "rope_groups")}
    q, k, v = (t.requires_grad_() for t in qkv(*shape, seed=5))
    mask = padding_mask(shape[0], shape[2], seed=5)
    ref = nala_linear(*nala_feature_maps(q, k, **feat), v, mask, rope=rope, rope_groups=groups)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    for chunk in (fused.CHUNK_ELEMENTS, shape[2] * 2 * shape[3]):  # one chunk, or one head per chunk
        monkeypatch.setattr(fused, "CHUNK_ELEMENTS", chunk)
        out = fused.nala_fused(q, k, v, mask, rope=rope, rope_groups=groups, **feat)
        grads = torch.autograd.grad(out, (q, k, v), grad)
        valid = mask[:, None, :, None].expand_as(out)
        torch.testing.assert_close(out[valid], ref[valid], rtol=1e-10, atol=1e-12)
        for mine, theirs in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-8, atol=1e-10)


def test_fused_handles_zero_queries_and_keys():
    import attention_zoo.nala_fused as fused

    q, k, v = (torch.zeros(1, 1, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = fused.nala_fused(q, k, v, torch.ones(1, 5, dtype=torch.bool))
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_fused_bf16_error_is_small():
    import attention_zoo.nala_fused as fused

    q, k, v = qkv(2, 2, 128, 16, dtype=torch.float32, seed=9)
    mask = padding_mask(2, 128, seed=9)
    ref = nala_linear(*nala_feature_maps(q.double(), k.double()), v.double(), mask)
    out = fused.nala_fused(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask).double()
    valid = mask[:, None, :, None].expand_as(out)
    rel = ((out - ref)[valid].norm() / ref[valid].norm()).item()
    assert rel < 1e-2
