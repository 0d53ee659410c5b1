"""Where does the NaLa kernel's time go on the GPU? fwd+bwd of the raw kernels at 2^20 tokens x 8 heads, d=64, bf16.

    python scripts/nala_kernel_probe.py
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

import attention_zoo.nala_fused as fused
from attention_zoo.nalaformer import nala_feature_maps, nala_linear


def elu_plain(q, k, v, mask):
    q, k = F.elu(q) + 1, F.elu(k) + 1
    return (q @ (k.transpose(-1, -2) @ v)) / (q @ k.sum(-2, keepdim=True).transpose(-1, -2))


def released(q, k, v, mask):
    return nala_linear(*nala_feature_maps(q.float(), k.float()), v.float(), mask)


def timed(fn, q, k, v, mask, repeats=5):
    g = torch.randn_like(q)
    for _ in range(2):
        out = fn(q, k, v, mask)
        torch.autograd.backward(out, g.to(out.dtype))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(q, k, v, mask)
        torch.autograd.backward(out, g.to(out.dtype))
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2], (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> int:
    tokens, heads, d = 1 << 20, 8, 64
    for n in [int(a) for a in (sys.argv[1:] or ["1024", "16384"])]:
        b = tokens // n
        q, k, v = (torch.randn(b, heads, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        mask = torch.ones(b, n, dtype=torch.bool, device="cuda")
        cases = [("elu_plain", elu_plain, {}), ("released_fp32", released, {})]
        for compile_on in (True, False):
            for chunk in (1 << 24, 1 << 26, 1 << 28):
                cases.append((f"fused compile={compile_on} chunk=2^{chunk.bit_length() - 1}", fused.nala_fused,
                              {"COMPILE": compile_on, "CHUNK_ELEMENTS": chunk}))
        for name, fn, attrs in cases:
            for a, val in attrs.items():
                setattr(fused, a, val)
            t0 = time.perf_counter()
            try:
                ms, mb = timed(fn, q, k, v, mask)
                print(f"N={n:6d} {name:34s} {ms:9.2f} ms {mb:9.0f} MB  (incl. warm-up {time.perf_counter() - t0:.1f}s)",
                      flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"N={n:6d} {name:34s} OOM", flush=True)
            q.grad = k.grad = v.grad = None
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
