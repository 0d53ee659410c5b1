"""The Triton LePE convolution against nn.Conv1d (flash-linear-attention style: fast path vs the plain layer),
output and all three gradients, on shapes that cut the token and channel blocks and the row splits unevenly.
On a CPU machine the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from attention_zoo import lepe_triton as lt  # noqa: E402
from attention_zoo import nala_triton as nt  # noqa: E402
from attention_zoo.nalaformer import NaLaAttention, depthwise_conv_tokens  # noqa: E402
from attention_zoo.nystromformer import NystromAttention  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (nt.INTERPRET or torch.cuda.is_available()), reason="Triton kernels need a GPU or TRITON_INTERPRET=1"
)
DEVICE = "cuda" if torch.cuda.is_available() and not nt.INTERPRET else "cpu"


@pytest.mark.parametrize(
    "bsz,n,c,width,strided",
    [
        (2, 37, 12, 5, False),  # N and C not multiples of the blocks
        (1, 300, 70, 5, True),  # several row splits and channel blocks; a strided (B, N, C) view
        (3, 9, 8, 3, False),  # sequence barely longer than the kernel
        (1, 64, 16, 7, False),  # another width: taps padded to 8
    ],
)
def test_matches_conv1d(bsz, n, c, width, strided):
    gen = torch.Generator().manual_seed(n)
    conv = torch.nn.Conv1d(c, c, width, padding=width // 2, groups=c).to(DEVICE)
    if strided:  # as the model hands it over: one slice of a wider projection
        x = torch.randn(bsz, n, 3 * c, generator=gen).to(DEVICE)[..., c : 2 * c].detach().requires_grad_()
    else:
        x = torch.randn(bsz, n, c, generator=gen).to(DEVICE).requires_grad_()
    g = torch.randn(bsz, n, c, generator=gen).to(DEVICE)
    results = []
    for impl in ("conv1d", "triton"):
        out = depthwise_conv_tokens(x, conv, impl)
        out.backward(g)
        results.append((out.detach(), x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()))
        x.grad = conv.weight.grad = conv.bias.grad = None
    for name, ref, got in zip(("out", "dx", "dweight", "dbias"), *results, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=name)


def test_block_with_triton_lepe_equals_the_released_layer():
    torch.manual_seed(0)
    block = NaLaAttention(32, 4, impl="linear").to(DEVICE).eval()
    other = NaLaAttention(32, 4, impl="linear", lepe_impl="triton").to(DEVICE).eval()
    other.load_state_dict(block.state_dict())
    x = torch.randn(2, 40, 32, device=DEVICE)
    torch.testing.assert_close(other(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [35, 5])
def test_nystromformer_skip_conv_through_the_lepe_kernel_equals_conv2d(width):
    """``attention.conv_impl=triton``: NYS's per-head (K x 1) conv over v, each head's taps repeated over its
    channels, gives conv2d's output and gradients (v, and the per-head taps summed over the channels)."""
    torch.manual_seed(0)
    ref = NystromAttention(32, 4, num_landmarks=8, conv_kernel=width).to(DEVICE)
    fast = NystromAttention(32, 4, num_landmarks=8, conv_kernel=width, conv_impl="triton").to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 50, 32, device=DEVICE)
    mask = torch.ones(3, 50, dtype=torch.bool, device=DEVICE)
    mask[1, 31:] = False
    grads = []
    for block in (ref, fast):
        xi = x.clone().requires_grad_()
        out = block(xi, mask)
        (out * mask[..., None]).square().sum().backward()
        grads.append((out.detach(), xi.grad, block.conv.weight.grad))
    for name, a, b in zip(("out", "dx", "dweight"), *grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="attention.conv_impl='fft' is not one of conv2d, triton, auto"):
        NystromAttention(32, 4, conv_impl="fft")


def test_custom_operators_pass_torch_opcheck():
    """Fake shapes, autograd registration and schema agree with the real kernels (what torch.compile relies on)."""
    x = torch.randn(2, 20, 8, device=DEVICE, requires_grad=True)
    w = torch.randn(8, 5, device=DEVICE, requires_grad=True)
    b = torch.randn(8, device=DEVICE, requires_grad=True)
    torch.library.opcheck(lt._forward, (x, w, b))
    torch.library.opcheck(lt._backward, (torch.randn(2, 20, 8, device=DEVICE), x.detach(), w.detach()))


def test_without_a_gpu_or_the_interpreter_the_error_names_the_fix(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    conv = torch.nn.Conv1d(4, 4, 5, padding=2, groups=4)
    with pytest.raises(ValueError, match="lepe_impl=conv1d"):
        lt.lepe_conv_triton(torch.randn(1, 6, 4), conv)


def test_compiles_in_one_graph():
    """A compiled model keeps the kernels inside its graph (custom operators, no graph break)."""
    conv = torch.nn.Conv1d(8, 8, 5, padding=2, groups=8).to(DEVICE)
    x = torch.randn(2, 33, 8, device=DEVICE, requires_grad=True)
    compiled = torch.compile(lambda t: depthwise_conv_tokens(t, conv, "triton"), backend="aot_eager", fullgraph=True)
    out = compiled(x)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    ref = depthwise_conv_tokens(x, conv, "conv1d")
    (rx,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
