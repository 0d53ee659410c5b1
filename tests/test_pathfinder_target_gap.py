"""scripts/pathfinder_target_gap.py: the gap between target snakes, and the clearance it is used to check."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lra.data.pathfinder import PathfinderConfig, generate_batch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pathfinder_target_gap.py"
spec = importlib.util.spec_from_file_location("pathfinder_target_gap", SCRIPT)
target_gap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(target_gap)


def test_gap_of_parallel_and_crossing_segments():
    a = np.array([[0.0, 0.0, 0.0, 4.0]])
    assert target_gap.gap(a, np.array([[3.0, 0.0, 3.0, 4.0]])) == pytest.approx(3.0)
    assert target_gap.gap(a, np.array([[-2.0, 2.0, 2.0, 2.0]])) == pytest.approx(0.0)


def test_variant_names_fields_and_rejects_unknown_ones():
    assert target_gap.parse_variant("nosep=target_separation=0,max_backtracks=0") == (
        "nosep",
        {"target_separation": 0, "max_backtracks": 0},
    )
    assert target_gap.parse_variant("standard=") == ("standard", {})
    with pytest.raises(SystemExit, match="target_sep"):
        target_gap.parse_variant("x=target_sep=0")


def test_default_images_keep_their_targets_apart_and_the_nosep_variant_does_not():
    base = PathfinderConfig.lra(32)
    gaps = {}
    for name, over in {"standard": {}, "nosep": {"target_separation": 0}}.items():
        samples = generate_batch(dataclasses.replace(base, **over), 100, seed=3, truth=True)
        gaps[name] = np.array([target_gap.gap(*s.segments[:2]) for s in samples])
    assert gaps["standard"].min() > 4.0  # 2*margin + 1 px on top of the paddles' own clearance
    assert np.median(gaps["nosep"]) < 3.5
