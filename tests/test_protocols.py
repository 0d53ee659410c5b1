"""The protocol presets resolve to the values their sources give (shared/specs/lra.md section 4)."""

from __future__ import annotations

import math

import pytest

from lra.module import warmup_decay


def test_lra_lite_listops_is_the_nystromformer_setting(cfg_factory):
    cfg = cfg_factory("experiment=lra_lite", "task=listops")
    assert (cfg.model.depth, cfg.model.dim, cfg.model.num_heads, cfg.model.mlp_dim) == (2, 64, 2, 128)
    assert (cfg.task.batch_size, cfg.model.optim.lr, cfg.model.optim.warmup_steps) == (32, 1e-4, 1000)
    assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval, cfg.trainer.limit_val_batches) == (5000, 50, 62)
    assert cfg.model.mean_over_padding and cfg.task.max_len == 2048 and cfg.protocol == "lra_lite"


@pytest.mark.parametrize(
    "task, schedule",
    [
        ("listops", (32, 1e-4, 1000, 50000, 500, 62)),
        ("text", (32, 1e-4, 80, 50000, 500, 200)),
        ("retrieval", (16, 2e-4, 800, 50000, 1000, 300)),
        ("image", (256, 1e-4, 175, 50000, 50, 20)),
        ("pathfinder", (128, 2e-4, 312, 50000, 500, 156)),
    ],
)
def test_lra_sky_is_the_skyformer_setting_on_the_lite_model(cfg_factory, task, schedule):
    cfg = cfg_factory("experiment=lra_sky", f"task={task}")
    lite = cfg_factory("experiment=lra_lite", f"task={task}")
    t, o = cfg.trainer, cfg.model.optim
    assert (cfg.task.batch_size, o.lr, o.warmup_steps, t.max_steps, t.val_check_interval, t.limit_val_batches) == (
        schedule
    )
    assert (t.gradient_clip_val, t.gradient_clip_algorithm, t.select_best_after) == (1.0, "value", 0.2)
    assert cfg.protocol == "lra_sky" and lite.trainer.select_best_after == 0.0
    # the model, optimiser settings and data handling are the lite protocol's
    for key in ("depth", "dim", "num_heads", "mlp_dim", "pooling", "mean_over_padding"):
        assert cfg.model[key] == lite.model[key], key
    assert (tuple(o.betas), o.eps, o.weight_decay, o.decay) == ((0.9, 0.999), 1e-6, 0.0, "linear")
    assert cfg.task.max_len == lite.task.max_len


@pytest.mark.parametrize(
    "task, expected",
    [
        (
            "listops",
            dict(
                depth=4,
                dim=512,
                num_heads=8,
                mlp_dim=1024,
                pooling="cls",
                batch=32,
                steps=5000,
                lr=0.05,
                decay="rsqrt",
                warmup=1000,
                wd=0.1,
                max_len=2000,
            ),
        ),
        (
            "image",
            dict(
                depth=1,
                dim=128,
                num_heads=8,
                mlp_dim=128,
                pooling="cls",
                batch=256,
                steps=35000,
                lr=5e-4,
                decay="cosine",
                warmup=175,
                wd=0.0,
                max_len=1024,
            ),
        ),
        (
            "pathfinder",
            dict(
                depth=4,
                dim=32,
                num_heads=4,
                mlp_dim=32,
                pooling="mean",
                batch=512,
                steps=62400,
                lr=1e-3,
                decay="cosine",
                warmup=312,
                wd=0.0,
                max_len=1024,
            ),
        ),
    ],
)
def test_lra_original_matches_the_lra_configs(cfg_factory, task, expected):
    cfg = cfg_factory("experiment=lra_original", f"task={task}")
    m = cfg.model
    got = dict(
        depth=m.depth,
        dim=m.dim,
        num_heads=m.num_heads,
        mlp_dim=m.mlp_dim,
        pooling=m.pooling,
        batch=cfg.task.batch_size,
        steps=cfg.trainer.max_steps,
        lr=m.optim.lr,
        decay=m.optim.decay,
        warmup=m.optim.warmup_steps,
        wd=m.optim.weight_decay,
        max_len=cfg.task.max_len,
    )
    assert got == expected
    assert tuple(m.optim.betas) == (0.9, 0.98) and m.optim.eps == 1e-9 and cfg.protocol == "lra_original"


def test_rsqrt_schedule_peaks_at_base_over_sqrt_warmup():
    mult = [warmup_decay(s, 1000, 5000, "rsqrt") for s in range(5000)]
    peak = max(range(5000), key=mult.__getitem__)
    assert peak == 999 and math.isclose(0.05 * mult[peak], 0.05 / math.sqrt(1000))
    assert math.isclose(mult[3999], 1 / math.sqrt(4000))


def test_every_task_trains_one_step_under_both_protocols(cfg_factory):
    """Every preset composes for every task (a missing key would fail here, not on a GPU)."""
    for protocol in ("lra_lite", "lra_sky", "lra_original"):
        for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
            cfg = cfg_factory(f"experiment={protocol}", f"task={task}")
            assert cfg.trainer.max_steps > 0 and cfg.task.batch_size > 0 and cfg.model.optim.lr > 0
