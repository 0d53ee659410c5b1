"""Training throughput of one LRA step: steps/s of the real training loop under several settings, and the share of
step time spent in attention (torch.profiler, ranges named "attention" in lra/model.py).

    python -m lra.throughput task=listops experiment=lra_lite attention=nalaformer --steps 300

Each setting is a list of Hydra overrides applied on top of the given ones: ``baseline`` is the plain loop
(fp32, unfused AdamW, data loaded in the main process, no compile), then each optimisation is added in turn.
Rows are appended to ``--out`` (CSV) with the device and torch version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from lra import compose_config
from lra.results import append_csv_row

# Batches come from host arrays (page-locked and copied per step) unless a setting says "resident": then the
# splits live on the GPU (data_on_device, the default on a GPU since session 8) and no loader workers run.
HOST = ["data_on_device=false"]
RESIDENT = ["data_on_device=true", "num_workers=0"]
CUDAGRAPHS = ["trainer.compile=true", "trainer.compile_mode=reduce-overhead"]  # compile_mode alone does nothing
SETTINGS = {
    "baseline": ["trainer.precision=32-true", "model.optim.fused=false", "num_workers=0", *HOST],
    "bf16": ["trainer.precision=bf16-mixed", "model.optim.fused=false", "num_workers=0", *HOST],
    "bf16+fused_adamw": ["trainer.precision=bf16-mixed", "num_workers=0", *HOST],  # a GPU run before session 8
    "bf16+fused_adamw+workers": ["trainer.precision=bf16-mixed", "num_workers=4", *HOST],
    "bf16+fused_adamw+workers+compile": [
        "trainer.precision=bf16-mixed",
        "num_workers=4",
        "trainer.compile=true",
        *HOST,
    ],
    "fp32+fused_adamw": ["trainer.precision=32-true", "num_workers=0", *HOST],
    # Session 7 (H200): 26 steps/s against 53 without, as 200 steps met ~32 batch shapes, each recorded anew.
    "fp32+fused_adamw+cudagraphs": [
        "trainer.precision=32-true",
        "num_workers=0",
        *CUDAGRAPHS,
        *HOST,
    ],
    # Session 8 (H200, Pathfinder): 31 / 36 steps/s (softmax / nalaformer) against 25 / 22 eager; batches are all
    # 1,024 tokens (or close), so the graphs are recorded once.
    "bf16+fused_adamw+cudagraphs": [
        "trainer.precision=bf16-mixed",
        "num_workers=0",
        *CUDAGRAPHS,
        *HOST,
    ],
    "bf16+fused_adamw+compile+pad256": [
        "trainer.precision=bf16-mixed",
        "num_workers=0",
        "trainer.compile=true",
        "task.pad_multiple=256",
        *HOST,
    ],
    "bf16+fused_adamw+cudagraphs+pad256": [
        "trainer.precision=bf16-mixed",
        "num_workers=0",
        *CUDAGRAPHS,
        "task.pad_multiple=256",
        *HOST,
    ],
    # Not measured yet: the splits on the GPU (no page-locking, no copy per step), then with CUDA graphs.
    "bf16+fused_adamw+resident": ["trainer.precision=bf16-mixed", *RESIDENT],
    "bf16+fused_adamw+resident+cudagraphs": [
        "trainer.precision=bf16-mixed",
        *CUDAGRAPHS,
        *RESIDENT,
    ],
    "bf16+fused_adamw+resident+cudagraphs+pad256": [
        "trainer.precision=bf16-mixed",
        *CUDAGRAPHS,
        "task.pad_multiple=256",
        *RESIDENT,
    ],
}


PROFILE_NAME_ASIDE = ("task", "attention", "experiment", "data_dir", "cache_dir")


def attention_fraction(
    overrides: list[str], steps: int = 10, top: int = 0, save: Path | None = None, compiled: bool = False
) -> float:
    """Fraction of device (or CPU) time inside the attention modules over ``steps`` training steps (forward,
    backward, fused AdamW). ``top`` > 0 also prints the operators with the most device time and the device time
    per step beside the wall time per step: equal means GPU-bound, device much less means host-bound. ``save``
    keeps those tables in a file too (a session script that shows only the tail of the output lost them once).

    ``compiled`` profiles the model as Inductor compiles it for a run (without CUDA graphs, whose replays hide
    their kernels from the profiler): the kernels a compiled run spends its device time in, which is what is left
    to speed up once graphs have removed the launches (session 13: the GPU was busy 100% of the time). Inductor
    drops the "attention" ranges, so the share is NaN then; read the kernel table."""
    from lra.data.datamodule import LRADataModule
    from lra.module import LRAClassifier

    cfg = compose_config(overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    task = resolved["task"]
    model = LRAClassifier.from_config(resolved, total_steps=10)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    if compiled:
        from lra.model import compile_model

        # as run.py compiles it (shapes as trainer.compile_dynamic says), in the warm-up steps below, not profiled
        compile_model(model.model, dynamic=resolved["trainer"]["compile_dynamic"])
    data = LRADataModule(task, cfg.data_dir, task["batch_size"], cache_dir=cfg.cache_dir)
    batches = iter(data.train_dataloader())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    def step():
        ids, labels = next(batches)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            ids, labels = ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(ids).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3 if not compiled else 5):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    events = prof.key_averages()
    key = "device_time_total" if device == "cuda" else "cpu_time_total"
    # On the GPU, kernels only: an operator's "self" device time repeats its kernels' (summing both counted the
    # step twice, and halved the attention share that sessions 7 and 8 first reported).
    kernels = [e for e in events if device == "cpu" or e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, "self_" + key) for e in kernels)
    attention = sum(getattr(e, key) for e in events if e.key == "attention") if not compiled else float("nan")
    if top:
        tables = [events.table(sort_by="self_" + key, row_limit=top, max_name_column_width=60)]
        if device == "cuda":  # and where the host's time goes (launch overhead, syncs show as long CPU calls)
            tables.append(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60))
        tables.append(
            f"per step: {key.split('_')[0]} time {total / steps / 1e3:.2f} ms, wall {wall / steps * 1e3:.2f} ms "
            f"(profiled, {steps} steps)"
        )
        text = "\n".join(tables)
        print(text, flush=True)
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(f"{' '.join(overrides)}{' (compiled)' if compiled else ''}\n{text}\n")
    return attention / total if total else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. task=listops experiment=lra_lite")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of: {', '.join(SETTINGS)}")
    p.add_argument("--out", type=Path, default=Path("results/throughput.csv"))
    p.add_argument("--top", type=int, default=0, help="print the N operators with the most device time")
    p.add_argument(
        "--profile-compiled", action="store_true", help="profile the model compiled by Inductor (kernel table)"
    )
    args = p.parse_args(argv)
    import run

    # The attention share first, then one row per setting appended as soon as it is measured: a call cut by its
    # time limit keeps the settings it finished, and a setting that fails (say, compile) is a row, not a crash.
    # task and attention by name, any other option by a hash of them all (an A/B of one attention keeps two files,
    # not one overwritten; a value may hold characters no file name can); where the data is, and the preset, aside
    named = {o.split("=", 1)[0].lstrip("+"): o.split("=", 1)[-1] for o in args.overrides}
    name = "-".join(v.replace("/", "_") for k, v in named.items() if k in ("task", "attention"))
    options = sorted(o for o in args.overrides if o.split("=", 1)[0].lstrip("+") not in PROFILE_NAME_ASIDE)
    if options:
        name += "-" + hashlib.md5(" ".join(options).encode()).hexdigest()[:6]
    suffix = "-compiled" if args.profile_compiled else ""
    profile = args.out.with_name(f"{args.out.stem}-profile-{name or 'default'}{suffix}.txt")
    frac = attention_fraction(
        [*args.overrides], top=args.top, save=profile if args.top else None, compiled=args.profile_compiled
    )
    print(f"attention share of step time: {frac:.1%}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            overrides = [
                *args.overrides,
                *SETTINGS[name],
                f"trainer.max_steps={args.steps}",
                f"trainer.val_check_interval={args.steps}",
                "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1",
                "trainer.enable_progress_bar=false",
                f"results_dir={tmp}/r",
                f"checkpoint_dir={tmp}/c",
            ]
            start = time.perf_counter()
            try:
                row, error = run.train(compose_config(overrides)), None
            except Exception as err:  # noqa: BLE001 - recorded, and the next setting still runs
                row, error = {}, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            rows.append(
                {
                    "setting": name,
                    "steps": row.get("steps"),
                    "steady_steps_per_sec": row.get("steady_steps_per_sec"),
                    "steps_per_sec": row.get("steps_per_sec"),
                    "tokens_per_sec": row.get("tokens_per_sec"),
                    "peak_mem_mb": row.get("peak_mem_mb"),
                    "wall_seconds": time.perf_counter() - start,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "torch": torch.__version__,
                    "overrides": json.dumps(overrides[:-4]),
                    "attention_fraction": frac,
                    "error": error,
                }
            )
            print(rows[-1], flush=True)
            append_csv_row(args.out, rows[-1])
    print(pd.DataFrame(rows).drop(columns=["overrides"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
