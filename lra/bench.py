"""Attention efficiency benchmark: time and peak memory of every attention against sequence length.

    python -m lra.bench                                   # every registered attention + references, all lengths
    python -m lra.bench --attention softmax,nalaformer --lengths 1K,4K,16K --modes train --budget-seconds 500
    python -m lra.bench --device cpu --out /tmp/bench     # small CPU run (the defaults below), seconds
    python -m lra.bench --missing-only --budget-seconds 300   # fill in what results/bench/<device>.csv lacks

What is measured, per attention, mode and length N:

* registered attentions (``attention_zoo.available()``) are the attention MODULES as a model uses them, q/k/v and
  output projections included, built from ``conf/attention/<name>.yaml`` with ``dim = heads * head_dim`` and
  ``max_len = N`` (``--impl`` replaces the config's ``impl`` where it has one). Input ``x`` is float32
  ``(batch, N, dim)``, as the pre-LN output of ``lra.model.Block`` under autocast, with an all-True key mask;
* mode ``train`` = forward + backward (``out.backward(g)`` with a fixed random ``g``; ``x`` requires grad, the
  module is in training mode, so attention dropout is on where the config has it); mode ``infer`` = forward in
  ``torch.inference_mode`` with the module in eval mode;
* ``--dtype bf16`` (the CUDA default) runs under ``torch.autocast(bfloat16)`` with float32 parameters, as the
  harness trains (``bf16-mixed``); ``fp32`` runs without autocast;
* a constant token budget: ``batch = tokens // N`` (``--tokens``, 2^20 on CUDA), ``heads`` x ``head_dim`` (8 x 64),
  so every length does the same number of token-heads and a linear-time attention should take the same time
  at every N.

Defaults on CUDA: N = 1K ... 64K, 2^20 tokens, 8 heads x 64, bf16, 3 warm-up + 10 timed steps. Without CUDA (or
``--device cpu``): N = 64, 128, 512 tokens, 2 heads x 16, fp32, 1 + 2 steps, one CPU thread (fastest and steadiest
at these sizes): a smoke test that takes seconds, not a CPU benchmark.

Reference entries measured in the same run, on ``(batch, heads, N, head_dim)`` inputs, no projections:

* ``sdpa_flash``: ``F.scaled_dot_product_attention`` without a mask, restricted to the flash backend;
* ``elu_linear_plain``: non-causal linear attention ``phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j))``,
  phi = elu + 1, in plain PyTorch in the input precision;
* ``nala_released_fp32``: the NaLaFormer kernel formula (``nala_feature_maps`` + ``nala_linear``) on float32 casts,
  as the released code runs it (plain autograd);
* ``nala_triton``: our Triton NaLa kernels (``attention_zoo.nala_triton``) on the raw q, k, v with an all-True
  mask; its rows also carry ``gbps``, the bytes it must move (``PASSES``) over its time;
* ``fla_chunk_linear``: flash-linear-attention's Triton ``chunk_linear_attn`` (causal: the package has no
  non-causal chunked op) on elu + 1 features, ``(batch, N, heads, head_dim)`` layout; status ``unavailable``
  when ``import fla`` fails.

Timing: warm-up steps first (``--warmup``; they also absorb compilation), then ``--repeats`` steps, each between
its own pair of CUDA events, queued back to back with one synchronisation at the end (``time.perf_counter``
around each step on CPU); ``ms`` is the median. A measurement is capped at about ``--max-measure-seconds`` by
timing fewer repeats (at least 3), recorded in ``repeats``.

Peak memory (``peak_mem_mb``): for one extra step, ``torch.cuda.max_memory_allocated()`` after the step minus
``torch.cuda.memory_allocated()`` before it (``reset_peak_memory_stats`` in between): the memory the STEP needs
above what was already held (parameters, ``x``, mask and output gradient; gradients of the previous step are
freed first). NaN on CPU (no allocator statistics there).

Outcomes (``status``): ``ok``; ``oom`` (out of memory is a result, not a crash; once an attention runs out of
memory at N in a mode, larger N in that mode are recorded ``oom`` without being run, ``error`` says so);
``error`` (message in ``error``); ``skipped`` (``--budget-seconds`` spent before the measurement started);
``unavailable`` (fla not importable).

On CUDA the run also records the device's copy bandwidth (``attention=copy_bandwidth``, ``mode=copy``, GB/s of
bytes read + written in ``gbps``) and a large bf16 matrix product (``attention=matmul_bf16``, ``mode=matmul``,
``tflops``): the two ceilings to compare achieved numbers with.

Rows go to ``<out>/<device>.csv`` (``--out`` default ``results/bench``; an ``--out`` ending in ``.csv`` is the file
itself), written atomically (temporary file, then rename). Rows of an existing file with the same
(attention, impl, mode, seq_len, dtype, batch, heads, head_dim) are replaced, others kept. ``report.py`` reads the
folder (``lra.leaderboard.efficiency_markdown``); it expects one row per (device, mode, attention, seq_len), so
keep one impl / dtype / token budget per device file.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import inspect
import math
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

import attention_zoo
from attention_zoo import build_attention, default_config
from lra.leaderboard import BENCH_COLUMNS
from lra.results import git_commit, write_csv

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "bench"

# The columns report.py reads (lra.leaderboard.BENCH_COLUMNS), then what a reader of the CSV wants besides.
COLUMNS = [*BENCH_COLUMNS, "error", "tokens_per_sec", "repeats", "gbps", "tflops", "time", "command", "git_commit"]
KEY = ["attention", "impl", "mode", "seq_len", "dtype", "batch", "heads", "head_dim"]
MODES = ("train", "infer")
EXTRAS = ("sdpa_flash", "elu_linear_plain", "nala_released_fp32", "nala_triton", "fla_chunk_linear")
# Bytes a kernel must move per step, in passes over one (batch, heads, N, head_dim) tensor: the achieved bandwidth
# (``gbps``) is compared with the measured copy bandwidth. nala_triton: forward reads k, v, q and writes o (4);
# backward reads q, o, dO, k, v and writes dq, dk, dv (8). See attention_zoo/nala_triton.py.
PASSES = {"nala_triton": {"train": 12, "infer": 4}}
# The two entries every other is compared with in the printed table (speed = their time / this time).
BASELINES = ("softmax", "sdpa_flash")
STATUS_LABEL = {"oom": "OOM", "error": "ERROR", "skipped": "SKIPPED", "unavailable": "N/A"}

CUDA_DEFAULTS = dict(
    lengths="1K,2K,3K,4K,8K,16K,32K,64K", tokens=1 << 20, heads=8, head_dim=64, repeats=10, warmup=3, dtype="bf16"
)
CPU_DEFAULTS = dict(lengths="64,128", tokens=512, heads=2, head_dim=16, repeats=2, warmup=1, dtype="fp32", threads=1)


# --- what is measured -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    attention: str
    mode: str
    seq_len: int
    batch: int
    heads: int
    head_dim: int
    dtype: str  # "bf16" | "fp32"
    impl: str  # as requested (--impl); extras carry their own label


class Unavailable(Exception):
    """The entry cannot run here (a package is missing): recorded as status "unavailable"."""


@dataclass
class Step:
    """One training or inference step of ``fn(*inputs)``; ``zero()`` frees the gradients of the previous step."""

    fn: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    train: bool
    device: torch.device
    amp: bool
    params: list[torch.Tensor] = field(default_factory=list)
    grad: torch.Tensor | None = None

    def zero(self) -> None:
        for t in (*self.inputs, *self.params):
            t.grad = None

    def __call__(self) -> None:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        if self.train:
            self.zero()
            with autocast:
                out = self.fn(*self.inputs)
            if self.grad is None:  # first (warm-up) step: a fixed random output gradient, never zeros
                self.grad = torch.randn_like(out)
            out.backward(self.grad)
        else:
            with torch.inference_mode(), autocast:
                self.fn(*self.inputs)


def variant_config(name: str, impl: str) -> dict[str, Any]:
    """The shipped config, with ``impl`` replaced where the config has one."""
    cfg = default_config(name)
    if "impl" in cfg:
        cfg["impl"] = impl
    return cfg


def module_step(case: Case, device: torch.device) -> Step:
    cfg = variant_config(case.attention, case.impl)
    dim = case.heads * case.head_dim
    module = build_attention(cfg, dim=dim, num_heads=case.heads, max_len=case.seq_len).to(device)
    module.train(case.mode == "train")
    train = case.mode == "train"
    x = torch.randn(case.batch, case.seq_len, dim, device=device, requires_grad=train)
    mask = torch.ones(case.batch, case.seq_len, dtype=torch.bool, device=device)
    params = [p for p in module.parameters() if p.requires_grad] if train else []
    return Step(lambda x_: module(x_, mask), (x,), train, device, case.dtype == "bf16", params)


def _elu_linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    state = fk.transpose(-1, -2) @ v  # (B, H, d, d)
    z = fk.sum(dim=2, keepdim=True)  # (B, H, 1, d)
    return (fq @ state) / (fq @ z.transpose(-1, -2))


def _sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v)


def _nala_released(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from attention_zoo.nalaformer import nala_feature_maps, nala_linear

    mask = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool, device=q.device)
    with torch.autocast(q.device.type, enabled=False):
        qf, kf, vf = q.float(), k.float(), v.float()
        phi_q, phi_k = nala_feature_maps(qf, kf)
        return nala_linear(phi_q, phi_k, vf, mask).to(q.dtype)


def _nala_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from attention_zoo.nala_triton import nala_triton, supports

    if not supports(q, sign_split=True):
        raise Unavailable(
            f"Triton NaLa kernels do not run here ({q.device}, {q.dtype}, triton importable: "
            f"{importlib.util.find_spec('triton') is not None})"
        )
    mask = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool, device=q.device)
    return nala_triton(q, k, v, mask)


def fla_op() -> Callable[..., torch.Tensor]:
    """fla's chunked linear attention as ``f(q, k, v)`` on ``(B, N, H, d)`` tensors; raises Unavailable."""
    try:
        mod = importlib.import_module("fla.ops.linear_attn")
        op = mod.chunk_linear_attn
    except Exception as err:  # noqa: BLE001 - any import failure means "not here"
        raise Unavailable(f"flash-linear-attention not importable: {type(err).__name__}: {err}") from None
    extra = {"head_first": False} if "head_first" in inspect.signature(op).parameters else {}

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = op(F.elu(q) + 1.0, F.elu(k) + 1.0, v, scale=1.0, normalize=True, **extra)
        return out[0] if isinstance(out, tuple) else out

    return run


EXTRA_IMPL = {
    "sdpa_flash": "flash",
    "elu_linear_plain": "torch",
    "nala_released_fp32": "torch_fp32",
    "nala_triton": "triton",
    "fla_chunk_linear": "triton_chunk_causal",
}


def kernel_step(case: Case, device: torch.device) -> Step:
    fn = {
        "sdpa_flash": _sdpa_flash,
        "elu_linear_plain": _elu_linear,
        "nala_released_fp32": _nala_released,
        "nala_triton": _nala_triton,
    }.get(case.attention)
    shape = (case.batch, case.heads, case.seq_len, case.head_dim)
    if case.attention == "fla_chunk_linear":
        fn = fla_op()
        shape = (case.batch, case.seq_len, case.heads, case.head_dim)
    dtype = torch.bfloat16 if case.dtype == "bf16" else torch.float32
    train = case.mode == "train"
    qkv = tuple(torch.randn(shape, device=device, dtype=dtype, requires_grad=train) for _ in range(3))
    return Step(fn, qkv, train, device, case.dtype == "bf16")


def make_step(case: Case, device: torch.device) -> Step:
    return kernel_step(case, device) if case.attention in EXTRAS else module_step(case, device)


# --- timing -----------------------------------------------------------------------------------------------------


def measure(step: Step, device: torch.device, warmup: int, repeats: int, max_seconds: float) -> dict[str, Any]:
    """Median ms of ``repeats`` timed steps after ``warmup`` steps, and the peak memory of one step above the
    memory held before it (MB; NaN on CPU)."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    started, last = time.perf_counter(), math.inf
    for i in range(max(1, warmup)):  # at least one: it also creates the output gradient
        t0 = time.perf_counter()
        step()
        sync()
        last = time.perf_counter() - t0
        if i >= 1 and time.perf_counter() - started > max_seconds:  # the first may be compilation: not an estimate
            break

    peak = math.nan
    step.zero()
    if cuda:
        sync()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync()
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20

    n = min(repeats, max(3, int(max_seconds // max(last, 1e-9))))
    times = []
    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            step()
            end.record()
        sync()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1000)
    return {"ms": statistics.median(times), "peak_mem_mb": peak, "repeats": n}


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory(device: torch.device, collect: bool = True) -> None:
    if collect:
        gc.collect()  # ~0.1 s: only where reference cycles may hold tensors (an exception's traceback)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_case(case: Case, device: torch.device, warmup: int, repeats: int, max_seconds: float) -> dict[str, Any]:
    """One measurement; out of memory, a missing package and any other exception become the row's status."""
    torch.manual_seed(0)
    held = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    result: dict[str, Any] = {"status": "ok", "error": ""}
    try:
        step = make_step(case, device)
        result.update(measure(step, device, warmup, repeats, max_seconds))
        del step
    except Unavailable as err:
        result.update(status="unavailable", error=str(err))
    except Exception as err:  # noqa: BLE001 - every failure is a recorded result, the run goes on
        status = "oom" if is_oom(err) else "error"
        message = " ".join(str(err).split())
        result.update(status=status, error=f"{type(err).__name__}: {message}"[:300])
    # After the except block, so the traceback (and the tensors its frames hold) is gone.
    leaked = device.type == "cuda" and torch.cuda.memory_allocated(device) > held
    free_memory(device, collect=result["status"] != "ok" or leaked)
    return result


def ceilings(device: torch.device) -> list[dict[str, Any]]:
    """Copy bandwidth (1 GiB device-to-device, bytes read + written) and a bf16 8192^3 matrix product."""
    rows = []
    for name, impl, mode, dtype, fn in (
        ("copy_bandwidth", "torch.copy_", "copy", "fp32", _copy_gbps),
        ("matmul_bf16", "torch.matmul", "matmul", "bf16", _matmul_tflops),
    ):
        row = dict(attention=name, impl=impl, mode=mode, dtype=dtype, repeats=20, status="ok", error="")
        try:
            row.update(fn(device, 20))
        except Exception as err:  # noqa: BLE001 - a failed ceiling is a recorded result
            row.update(status="oom" if is_oom(err) else "error", error=f"{type(err).__name__}: {err}"[:300])
        free_memory(device)
        rows.append(row)
    return rows


def _copy_gbps(device: torch.device, repeats: int) -> dict[str, float]:
    src = torch.randn(1 << 28, device=device)  # 1 GiB of float32, random (never time on zeros)
    dst = torch.empty_like(src)
    ms = _time_cuda(lambda: dst.copy_(src), warmup=3, repeats=repeats)
    return {"ms": ms, "gbps": 2 * src.numel() * src.element_size() / (ms / 1e3) / 1e9}


def _matmul_tflops(device: torch.device, repeats: int, n: int = 8192) -> dict[str, float]:
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    ms = _time_cuda(lambda: a @ b, warmup=3, repeats=repeats)
    return {"ms": ms, "tflops": 2 * n**3 / (ms / 1e3) / 1e12}


def _time_cuda(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


# --- the CSV ----------------------------------------------------------------------------------------------------


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def csv_path(out: Path, device: str) -> Path:
    if out.suffix == ".csv":
        return out
    return out / (re.sub(r"[^A-Za-z0-9._-]+", "_", device).strip("_") + ".csv")


def _key(row: dict[str, Any] | pd.Series) -> tuple[str, ...]:
    def norm(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    return tuple(norm(row.get(k)) for k in KEY)


NOT_RUN = ("skipped", "unavailable")  # statuses of a case that did not run here


def was_run(row: dict[str, Any] | pd.Series) -> bool:
    """Measured here: not skipped, not unavailable, and not an OOM inferred from a shorter length ("not run: out of
    memory at N=..."), which a machine with more memory may have measured."""
    return row["status"] not in NOT_RUN and not str(row.get("error", "")).startswith("not run")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Merge ``rows`` into ``path``: same-key rows replaced, others kept; atomic (temporary file + rename).
    A row that was not measured (``skipped``: the budget ran out; ``unavailable``: this machine lacks the package;
    an OOM inferred from a shorter length) never replaces a measured one (fla's rows of an earlier machine outlive a
    machine without it)."""
    if path.exists():
        old = pd.read_csv(path)
        measured = {_key(r) for _, r in old.iterrows() if was_run(r)}
        rows = [r for r in rows if was_run(r) or _key(r) not in measured]
    new = pd.DataFrame(rows, columns=COLUMNS)
    if path.exists():
        replaced = {_key(r) for r in rows}
        old = old[[_key(r) not in replaced for _, r in old.iterrows()]]
        columns = COLUMNS + [c for c in old.columns if c not in COLUMNS]
        new = pd.concat([old.reindex(columns=columns), new.reindex(columns=columns)], ignore_index=True)
    return write_csv(path, new)


# --- the printed table ------------------------------------------------------------------------------------------


def _label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def format_tables(rows: list[dict[str, Any]], lengths: list[int]) -> str:
    """Per mode: ms, speed relative to softmax and to sdpa_flash (their ms / this ms: > 1 = faster), peak MB."""
    out = []
    for mode in MODES:
        mode_rows = [r for r in rows if r["mode"] == mode]
        if not mode_rows:
            continue
        names = list(dict.fromkeys(r["attention"] for r in mode_rows))
        by = {(r["attention"], r["seq_len"]): r for r in mode_rows}

        def cell(name: str, n: int, what: str, by: dict = by) -> str:
            r = by.get((name, n))
            if r is None:
                return "-"
            if r["status"] != "ok":
                return STATUS_LABEL.get(r["status"], r["status"].upper())
            if what == "ms":
                return f"{r['ms']:.2f}"
            if what == "mem":
                return "-" if math.isnan(r["peak_mem_mb"]) else f"{r['peak_mem_mb']:.0f}"
            base = by.get((what, n))
            if base is None or base["status"] != "ok":
                return "-"
            return f"{base['ms'] / r['ms']:.2f}x"

        what_text = "forward + backward" if mode == "train" else "forward only (inference_mode)"
        for what, title in (
            ("ms", "ms per step (median)"),
            ("softmax", "speed vs softmax (softmax ms / ms)"),
            ("sdpa_flash", "speed vs sdpa_flash (sdpa_flash ms / ms)"),
            ("mem", "peak MB above the step's baseline"),
        ):
            if what in BASELINES and what not in names:
                continue
            if what == "mem" and all(math.isnan(r.get("peak_mem_mb", math.nan)) for r in mode_rows):
                continue  # CPU: no allocator statistics
            width = max(len(n) for n in names)
            header = f"{'attention':<{width}} " + " ".join(f"{_label(n):>9}" for n in lengths)
            lines = [f"{mode}: {what_text}, {title}", header, "-" * len(header)]
            lines += [f"{name:<{width}} " + " ".join(f"{cell(name, n, what):>9}" for n in lengths) for name in names]
            out.append("\n".join(lines))
    return "\n\n".join(out)


# --- command line -----------------------------------------------------------------------------------------------


def parse_lengths(text: str) -> list[int]:
    """``"1K,2k,4096"`` -> ``[1024, 2048, 4096]``."""
    lengths = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"(\d+)([kK]?)", item)
        if not match or int(match.group(1)) == 0:
            raise argparse.ArgumentTypeError(f"length {item!r} is not a positive number like 4096 or 4K")
        lengths.append(int(match.group(1)) * (1024 if match.group(2) else 1))
    if not lengths:
        raise argparse.ArgumentTypeError("no lengths given")
    return sorted(set(lengths))


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip() and t.strip().lower() != "none"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lra.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="auto: cuda when available (defaults differ: see --lengths etc.)",
    )
    p.add_argument(
        "--lengths", help=f"comma list, K = 1024 (cuda: {CUDA_DEFAULTS['lengths']}; cpu: {CPU_DEFAULTS['lengths']})"
    )
    p.add_argument("--tokens", type=int, help="batch x length per step; batch = tokens // N (cuda: 2^20; cpu: 512)")
    p.add_argument("--heads", type=int, help="cuda: 8; cpu: 2")
    p.add_argument("--head-dim", type=int, help="per head; model dim = heads x head_dim (cuda: 64; cpu: 16)")
    p.add_argument("--attention", help="comma list of registered attentions and/or extras (default: all registered)")
    p.add_argument(
        "--extra",
        default=",".join(EXTRAS),
        help=f"comma list of reference entries, or none (default: {','.join(EXTRAS)})",
    )
    p.add_argument("--modes", default=",".join(MODES), help="train (forward + backward), infer (forward)")
    p.add_argument("--repeats", type=int, help="timed steps per measurement, median reported (cuda: 10; cpu: 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first, at least 1 (cuda: 3; cpu: 1)")
    p.add_argument(
        "--max-measure-seconds",
        type=float,
        default=10.0,
        help="time fewer repeats (at least 3) when one measurement would take longer than this",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=0.0,
        help="start no measurement after this many seconds; the rest are recorded 'skipped' (0 = none)",
    )
    p.add_argument("--dtype", choices=("bf16", "fp32"), help="bf16 = autocast, fp32 params (cuda: bf16; cpu: fp32)")
    p.add_argument(
        "--impl",
        default="auto",
        help="attention.impl for configs that have one (auto|fast|reference; nalaformer also linear)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU intra-op threads (cpu: 1, fastest and steadiest at the small sizes; cuda: left as torch sets it)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (file <device>.csv) or a .csv path")
    p.add_argument("--no-ceilings", action="store_true", help="skip the copy-bandwidth and matmul rows (cuda)")
    p.add_argument(
        "--missing-only",
        action="store_true",
        help="measure only what the output file lacks (no row, or skipped/error): fills a table across "
        "several budget-limited runs",
    )
    p.add_argument("--quiet", action="store_true", help="no line per measurement")
    return p


def plan(names: Iterable[str], modes: list[str], lengths: list[int]) -> list[tuple[int, str, str]]:
    """Measurement order: length by length (so a spent budget leaves complete short-length tables), baselines
    first in each."""
    names = sorted(names, key=lambda a: (a not in BASELINES, BASELINES.index(a) if a in BASELINES else 0))
    return [(n, mode, name) for n in lengths for mode in modes for name in names]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda") if cuda else torch.device("cpu")
    defaults = CUDA_DEFAULTS if cuda else CPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, parser, argv, device)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str], device: torch.device) -> int:
    cuda = device.type == "cuda"
    try:
        lengths = parse_lengths(args.lengths)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    modes = _csv(args.modes)
    if bad := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode {', '.join(bad)}; modes are {', '.join(MODES)}")
    registered = attention_zoo.available()
    names = _csv(args.attention) or list(registered)
    names += [e for e in _csv(args.extra) if e not in names]
    if bad := [a for a in names if a not in registered and a not in EXTRAS]:
        parser.error(
            f"unknown attention {', '.join(bad)}; registered: {', '.join(registered)}; extras: {', '.join(EXTRAS)}"
        )
    if min(args.tokens, args.heads, args.head_dim, args.repeats) < 1:
        parser.error("--tokens, --heads, --head-dim and --repeats must be positive")
    # An attention these options cannot build (an --impl it refuses, a head dim it cannot split) is one line now,
    # not an error row per length and mode after the baselines ran.
    for name in (a for a in names if a in registered):
        try:
            cfg = variant_config(name, args.impl)
            build_attention(cfg, dim=args.heads * args.head_dim, num_heads=args.heads, max_len=min(lengths))
        except ValueError as err:
            parser.error(
                f"{name} cannot be built with --impl {args.impl} --heads {args.heads} --head-dim {args.head_dim}: "
                f"{err}; leave it out of --attention or change those"
            )

    label = device_label(device)
    common = dict(
        device=label,
        torch=torch.__version__,
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command="python -m lra.bench " + shlex.join(argv),
        git_commit=git_commit(),  # the kernels change between sessions: which code a row timed
    )
    say = (lambda *_: None) if args.quiet else (lambda text: print(text, flush=True))
    say(
        f"lra.bench on {label} (torch {torch.__version__}): {args.dtype}, tokens {args.tokens}, heads {args.heads} "
        f"x head_dim {args.head_dim}, lengths {','.join(map(_label, lengths))}, modes {','.join(modes)}"
    )

    path = csv_path(args.out, label)
    started = time.perf_counter()  # the budget counts from here
    rows: list[dict[str, Any]] = []
    if cuda and not args.no_ceilings:
        for r in ceilings(device):
            rows.append({**common, "seq_len": 0, "batch": 0, "heads": 0, "head_dim": 0, **r})
            say(
                f"  {r['attention']}: "
                + (
                    f"{r['gbps']:.0f} GB/s"
                    if "gbps" in r
                    else f"{r['tflops']:.0f} TFLOP/s"
                    if "tflops" in r
                    else r["error"]
                )
            )

    done: set[tuple[str, ...]] = set()
    if args.missing_only and path.exists():
        # an unavailable row is a gap: the next machine may have the package (fla left the GPU image, session 20)
        done = {_key(r) for _, r in pd.read_csv(path).iterrows() if r["status"] in ("ok", "oom")}
    oom_at: dict[tuple[str, str], int] = {}
    for n, mode, name in plan(names, modes, lengths):
        impl = EXTRA_IMPL.get(name) or str(variant_config(name, args.impl).get("impl", "default"))
        case = Case(name, mode, n, max(1, args.tokens // n), args.heads, args.head_dim, args.dtype, impl)
        if _key(case.__dict__) in done:
            continue
        if (name, mode) in oom_at:
            result = {"status": "oom", "error": f"not run: out of memory at N={oom_at[name, mode]}"}
        elif args.budget_seconds and time.perf_counter() - started > args.budget_seconds:
            result = {"status": "skipped", "error": f"not run: --budget-seconds {args.budget_seconds:g} spent"}
        else:
            result = run_case(case, device, args.warmup, args.repeats, args.max_measure_seconds)
            if result["status"] == "oom":
                oom_at[name, mode] = n
        ms = result.get("ms", math.nan)
        row = {
            **common,
            **case.__dict__,
            "ms": ms,
            "peak_mem_mb": result.get("peak_mem_mb", math.nan),
            "status": result["status"],
            "error": result["error"],
            "repeats": result.get("repeats", 0),
            "tokens_per_sec": case.batch * n / (ms / 1000) if ms == ms else math.nan,
        }
        if name in PASSES and ms == ms:
            elem = 2 if args.dtype == "bf16" else 4
            row["gbps"] = PASSES[name][mode] * case.batch * n * args.heads * args.head_dim * elem / (ms / 1e3) / 1e9
        rows.append(row)
        write_rows(path, rows)  # after every measurement: a run killed part-way keeps what it measured
        mem = "" if math.isnan(row["peak_mem_mb"]) else f" {row['peak_mem_mb']:9.0f} MB"
        detail = f"{ms:9.2f} ms{mem}" if row["status"] == "ok" else row["error"][:90]
        say(f"  {mode:5} N={_label(n):>5} {name:<20} {row['status']:<7} {detail}")

    write_rows(path, rows)
    print()
    print(format_tables([r for r in rows if r["mode"] in MODES], lengths))
    for r in rows:
        if r["mode"] in ("copy", "matmul"):
            value = f"{r['gbps']:.0f} GB/s" if "gbps" in r else f"{r.get('tflops', math.nan):.0f} TFLOP/s"
            print(
                f"{r['attention']}: "
                + (f"{value} ({r['ms']:.3f} ms median)" if r["status"] == "ok" else f"{r['status']} {r['error']}")
            )
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"\n{ok} of {len(rows)} rows ok in {time.perf_counter() - started:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
