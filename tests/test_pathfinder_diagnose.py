"""scripts/pathfinder_diagnose.py: the position-structure measure tells a learned 2-D layout from none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pathfinder_diagnose.py"
spec = importlib.util.spec_from_file_location("pathfinder_diagnose", SCRIPT)
diagnose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diagnose)


def test_smooth_positions_score_high_and_random_ones_near_zero():
    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    freqs = torch.linspace(0.05, 0.3, 16)
    smooth = torch.cat([torch.sin(rows[..., None] * freqs), torch.cos(cols[..., None] * freqs)], -1).view(1024, 32)
    s = diagnose.position_structure(smooth)
    assert s["horizontal"] > 0.5 and s["vertical"] > 0.5 and abs(s["random"]) < 0.15
    r = diagnose.position_structure(torch.randn(1024, 64) * 0.02)
    assert all(abs(v) < 0.05 for v in r.values())


def test_curves_folder_becomes_one_figure(tmp_path):
    import pandas as pd

    for name in ("a", "b"):
        pd.DataFrame({"step": [1, 2], "val/acc": [0.5, 0.6], "train/acc": [0.5, 0.7]}).to_csv(tmp_path / f"{name}.csv")
    assert diagnose.main(["--curves", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_cnn_probe_fits_a_small_generated_set(tmp_path, capsys):
    """scripts/pathfinder_cnn_probe.py reads a generated folder with run.py's reader and split and trains: on 40
    images it fits its 32 training images (a model that can fit them can answer the real question on 30,000)."""
    from lra.data import pathfinder as pf

    pf.write_dataset(tmp_path, pf.PathfinderConfig.lra(32, "easy"), 40, 40, seed=3, workers=1)
    probe_spec = importlib.util.spec_from_file_location(
        "pathfinder_cnn_probe", SCRIPT.with_name("pathfinder_cnn_probe.py")
    )
    probe = importlib.util.module_from_spec(probe_spec)
    probe_spec.loader.exec_module(probe)
    result = probe.main([str(tmp_path / "pathfinder32" / "curv_baseline"), "--epochs", "30", "--batch-size", "8"])
    assert result["train"] >= 0.9 and 0 <= result["val"] <= 1
    assert "epoch 29 train" in capsys.readouterr().out
