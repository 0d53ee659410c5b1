"""The Triton NaLa kernels against the float64 linear form (flash-linear-attention style: fast path vs naive).

On a CPU machine the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so every
line of kernel code is exercised here; bf16 products are the one thing only a GPU run checks
(scripts/nala_kernel_probe.py)."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

pytest.importorskip("triton")

from attention_zoo import nala_triton as nt  # noqa: E402
from attention_zoo.nalaformer import NaLaAttention, nala_feature_maps, nala_linear  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (nt.INTERPRET or torch.cuda.is_available()), reason="Triton kernels need a GPU or TRITON_INTERPRET=1"
)
DEVICE = "cuda" if torch.cuda.is_available() and not nt.INTERPRET else "cpu"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def qkv(bsz, heads, n, d, dtype, strided=False, seed=0):
    """q, k, v as leaf tensors; ``strided`` gives the (B, H, N, d) view of a (B, N, H*d) projection, as the model."""
    gen = torch.Generator().manual_seed(seed)
    if strided:
        x = torch.randn(bsz, n, 3 * heads * d, generator=gen).to(DEVICE, dtype)
        return [rearrange(t, "b n (h d) -> b h n d", h=heads).detach().requires_grad_() for t in x.chunk(3, -1)]
    return [torch.randn(bsz, heads, n, d, generator=gen).to(DEVICE, dtype).requires_grad_() for _ in range(3)]


def reference(q, k, v, mask, rope=True, norm_aware=True, fixed_power=3.0, rope_groups=1):
    """Output and (dq, dk, dv) of the plain linear form in float64, for output gradient g."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    pq, pk = nala_feature_maps(q64, k64, norm_aware=norm_aware, fixed_power=fixed_power)
    return nala_linear(pq, pk, v64, mask, rope=rope, rope_groups=rope_groups), (q64, k64, v64)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize(
    "shape,splits,strided,rows",
    [
        ((2, 2, 37, 16), None, False, None),  # N not a multiple of the block
        ((1, 3, 200, 32), 3, True, None),  # several row splits in the reductions; strided view input
        ((2, 1, 130, 64), 2, False, None),  # the LRA/bench head size
        # several programs along N in the map kernels (as at 16K, where each covers 1024 rows), the last partial
        ((1, 2, 300, 32), 2, False, 128),
    ],
)
@pytest.mark.parametrize("rope_groups", [1, 2])  # RoPE across the sign halves (ours so far), or within each
def test_matches_linear_form(shape, splits, strided, rows, dtype, tol, rope_groups, monkeypatch):
    monkeypatch.setattr(nt, "SPLITS", splits)
    if rows is not None:
        monkeypatch.setattr(nt, "ROWS_PER_PROGRAM", rows)
    bsz, heads, n, d = shape
    q, k, v = qkv(*shape, dtype, strided=strided)
    mask = torch.ones(bsz, n, dtype=torch.bool, device=DEVICE)
    mask[0, n // 2 :] = False  # padded keys
    out = nt.nala_triton(q, k, v, mask, rope_groups=rope_groups)
    g = torch.randn_like(out)
    out.backward(g)
    ref, leaves = reference(q, k, v, mask, rope_groups=rope_groups)
    ref.backward(g.double())
    assert out.dtype == dtype and out.shape == (bsz, heads, n, d)
    assert rel(out, ref) < tol
    for ours, theirs in zip((q, k, v), leaves, strict=True):
        assert rel(ours.grad, theirs.grad) < tol


def test_one_kernel_may_run_with_its_own_block(monkeypatch):
    """``KERNEL_META``: a kernel launched with a smaller row block (and its own warps) computes the same thing;
    a block that would not divide the others' rows is refused with the fix named."""
    shape = (2, 2, 100, 32)
    mask = torch.ones(2, 100, dtype=torch.bool, device=DEVICE)
    mask[1, 70:] = False
    launched: dict = {}  # what _grad_q was compiled with: the override must reach its launch
    real = nt._grad_q

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.update(kwargs)
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(nt, "_grad_q", Spy())
    results = []
    for own in ({}, {name: {"BLOCK": 16, "num_warps": 8} for name in ("_output", "_grad_q", "_grad_kv")}):
        monkeypatch.setattr(nt, "KERNEL_META", own)
        q, k, v = qkv(*shape, torch.float32, seed=3)
        out = nt.nala_triton(q, k, v, mask)
        out.backward(torch.ones_like(out))
        results.append([out.detach(), q.grad, k.grad, v.grad])
        assert (launched["BLOCK"], launched["num_warps"]) == ((16, 8) if own else (nt.BLOCK_ROWS, nt.NUM_WARPS))
    for a, b in zip(*results, strict=True):
        assert rel(b, a) < 1e-5
    monkeypatch.setattr(nt, "KERNEL_META", {"_grad_q": {"BLOCK": 2 * nt.BLOCK_ROWS}})
    q, k, v = qkv(*shape, torch.float32)
    too_big = rf"KERNEL_META\['_grad_q'\]\['BLOCK'\]={2 * nt.BLOCK_ROWS}: a power of 2 up to BLOCK_ROWS"
    with pytest.raises(ValueError, match=too_big):
        nt.nala_triton(q, k, v, mask).sum().backward()


@pytest.mark.parametrize("opts", [dict(rope=False), dict(norm_aware=False, fixed_power=2.0)])
def test_ablation_switches(opts):
    q, k, v = qkv(2, 2, 70, 16, torch.float32, seed=1)
    mask = torch.ones(2, 70, dtype=torch.bool, device=DEVICE)
    out = nt.nala_triton(q, k, v, mask, **opts)
    g = torch.randn_like(out)
    out.backward(g)
    ref, leaves = reference(q, k, v, mask, **opts)
    ref.backward(g.double())
    assert rel(out, ref) < 1e-5
    assert max(rel(a.grad, b.grad) for a, b in zip((q, k, v), leaves, strict=True)) < 1e-5


def test_zero_query_and_padding_invariance():
    """An all-zero query gives a finite output and gradient; appending padded keys changes no valid output."""
    q, k, v = qkv(1, 2, 40, 16, torch.float32, seed=2)
    with torch.no_grad():
        q[:, :, 3] = 0.0
    mask = torch.ones(1, 40, dtype=torch.bool, device=DEVICE)
    out = nt.nala_triton(q, k, v, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    pad = [torch.cat([t.detach(), torch.randn(1, 2, 25, 16, device=DEVICE)], dim=2) for t in (q, k, v)]
    mask_padded = torch.cat([mask, torch.zeros(1, 25, dtype=torch.bool, device=DEVICE)], dim=1)
    out_padded = nt.nala_triton(*pad, mask_padded)
    torch.testing.assert_close(out_padded[:, :, :40], out.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rope_pairing", ["across_signs", "within_signs"])
def test_module_impl_triton_equals_linear(rope_pairing):
    torch.manual_seed(0)
    module = NaLaAttention(dim=32, num_heads=2, impl="triton", rope_pairing=rope_pairing).to(DEVICE)
    x = torch.randn(2, 50, 32, device=DEVICE)
    mask = torch.ones(2, 50, dtype=torch.bool, device=DEVICE)
    mask[1, 30:] = False
    out = module(x, mask)
    module.impl = "linear"
    torch.testing.assert_close(out, module(x, mask), rtol=1e-5, atol=1e-6)


def test_unsupported_inputs_name_the_fix():
    q, k, v = qkv(1, 1, 8, 24, torch.float32)
    mask = torch.ones(1, 8, dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim 24.*impl=fused"):
        nt.nala_triton(q, k, v, mask)
    q, k, v = qkv(1, 1, 8, 16, torch.float32)
    with pytest.raises(ValueError, match="sign_split=False"):
        nt.nala_triton(q, k, v, mask, sign_split=False)


def test_compiled_model_keeps_the_kernels_in_one_graph():
    """Under torch.compile (trainer.compile=true) the kernels are custom operators inside the graph: fullgraph=True
    compiles (a graph break would raise), and outputs and gradients equal the eager ones."""
    torch.manual_seed(0)
    module = NaLaAttention(dim=32, num_heads=2, impl="triton").to(DEVICE)
    x = torch.randn(2, 40, 32, device=DEVICE, requires_grad=True)
    mask = torch.ones(2, 40, dtype=torch.bool, device=DEVICE)
    mask[1, 33:] = False
    expected = module(x, mask)
    (expected * expected).sum().backward()
    expected_grad, x.grad = x.grad, None
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    out = compiled(x, mask)
    torch.testing.assert_close(out, expected)
    (out * out).sum().backward()
    torch.testing.assert_close(x.grad, expected_grad)


def test_custom_operators_pass_torch_opcheck():
    """The fake (shape-only) implementations and the autograd registration agree with the real kernels."""
    q, k, v = qkv(2, 2, 37, 16, torch.float32)
    keep = torch.ones(2, 37, device=DEVICE)
    keep[0, 30:] = 0.0
    args = (q, k, v, keep, True, 1e-6, True, 3.0, 1e-6)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(nt._forward, args, test_utils=checks)
    out, state, k_mean, den = nt._forward(*args)
    grad = torch.randn_like(out)
    bwd_args = (grad, q, k, v, keep, out, state, k_mean, den, True, True, 3.0, 1e-6)
    torch.library.opcheck(nt._backward, bwd_args, test_utils=("test_schema", "test_faketensor"))
