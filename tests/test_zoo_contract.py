"""The contract every registered attention keeps. Parametrised over the registry: a new plugin is tested with
no new test code."""

from __future__ import annotations

import pytest
import torch

from attention_zoo import REGISTRY, available, build_attention
from tests.zoo_contract import DIM, HEADS, build, largest_tensor, variant_config

VARIANTS = available()
LINEAR = [n for n in VARIANTS if REGISTRY[n].complexity == "O(N)"]


def inputs(batch=2, n=37, dim=DIM, valid=(37, 20), dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, dim, generator=g, dtype=dtype)
    mask = torch.arange(n)[None, :] < torch.tensor(valid)[:, None]
    return x, mask


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype(name, dtype):
    attn = build(name).to(dtype)
    x, mask = inputs(dtype=dtype)
    out = attn(x, mask)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_appending_padding_leaves_valid_outputs_unchanged(name):
    attn = build(name).double()
    x, mask = inputs()
    extra = torch.randn(2, 19, DIM, dtype=torch.float64)
    x2 = torch.cat([x, extra], dim=1)
    mask2 = torch.cat([mask, torch.zeros(2, 19, dtype=torch.bool)], dim=1)
    out, out2 = attn(x, mask), attn(x2, mask2)
    torch.testing.assert_close(out2[:, :37][mask], out[mask], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", VARIANTS)
def test_masked_keys_get_no_weight(name):
    """Whatever sits at padded positions cannot reach a valid output."""
    attn = build(name).double()
    x, mask = inputs()
    x_changed = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    torch.testing.assert_close(attn(x_changed, mask)[mask], attn(x, mask)[mask], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", VARIANTS)
def test_batch_items_are_independent(name):
    attn = build(name).double()
    x, mask = inputs()
    both = attn(x, mask)
    for i in range(2):
        alone = attn(x[i : i + 1], mask[i : i + 1])
        torch.testing.assert_close(alone[0][mask[i]], both[i][mask[i]], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("zero", [False, True], ids=["random", "all-zero"])
def test_gradients_are_finite(name, zero):
    attn = build(name).train()
    x, mask = inputs(dtype=torch.float32)
    x = (torch.zeros_like(x) if zero else x).requires_grad_()
    out = attn(x, mask)
    (out * mask[..., None]).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in attn.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", VARIANTS)
def test_bf16_autocast(name):
    attn = build(name)
    x, mask = inputs(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, mask)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_eval_is_deterministic(name):
    attn = build(name)
    x, mask = inputs(dtype=torch.float32)
    torch.testing.assert_close(attn(x, mask), attn(x, mask), rtol=0, atol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_reference_and_fast_paths_agree(name):
    """The readable reference and the production path on the same weights, in float64."""
    fast = build(name, impl="fast").double()
    ref = build(name, impl="reference").double()
    ref.load_state_dict(fast.state_dict())
    for valid in [(37, 20), (37, 37)]:
        x, mask = inputs(valid=valid)
        torch.testing.assert_close(ref(x, mask)[mask], fast(x, mask)[mask], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_variants_never_allocate_n_by_n(name):
    """Record every op's output size (forward and backward) at two lengths: for an O(N) variant the largest
    tensor grows at most linearly and stays far below N x N."""
    attn = build(name, impl="fast", heads=2)
    small, large = largest_tensor(attn, 256), largest_tensor(attn, 512)
    assert large < 512 * 512, f"{name} made a tensor of {large} elements at N=512"
    assert large <= 2.2 * small, f"{name}: largest tensor grew {large / small:.1f}x when N doubled"


def test_the_n_by_n_check_would_catch_a_quadratic_path():
    attn = build("softmax", impl="reference", heads=2)
    small, large = largest_tensor(attn, 256), largest_tensor(attn, 512)
    assert large >= 2 * 512 * 512 and large >= 3.5 * small


@pytest.mark.parametrize("name", VARIANTS)
def test_bad_inputs_are_named_errors(name):
    attn = build(name)
    x, mask = inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"key padding mask must be \(batch, length\)"):
        attn(x, mask[:, :-1])
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        build_attention(variant_config(name), dim=30, num_heads=4, max_len=64)
    with pytest.raises(ValueError, match="has no option not_an_option"):
        build_attention(variant_config(name, not_an_option=1), dim=DIM, num_heads=HEADS, max_len=64)


def test_every_variant_has_a_config_and_a_paper():
    for name in VARIANTS:
        assert variant_config(name)["name"] == name
        assert REGISTRY[name].source and REGISTRY[name].complexity in {"O(N)", "O(N^2)", "O(N log N)"}
        assert REGISTRY[name].cls.__module__.startswith("attention_zoo.") or REGISTRY[name].cls.__doc__


def test_the_zoo_listing_shows_the_named_attentions_or_refuses_an_unknown_one(capsys):
    from attention_zoo.__main__ import main

    main(["softmax", "nalaformer"])
    out = capsys.readouterr().out
    assert "2 of" in out and "nalaformer" in out and "polaformer" not in out
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "not registered: nope; registered: " in capsys.readouterr().err
