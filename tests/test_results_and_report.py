"""The results store (atomic appends, corrupt lines) and report.py on fixture rows."""

from __future__ import annotations

import json
import multiprocessing as mp

import pandas as pd
import pytest

import report
from lra.results import REQUIRED_FIELDS, append_row, read_rows


def fixture_row(**over):
    row = dict.fromkeys(REQUIRED_FIELDS)
    row.update(status="ok", protocol="lra_lite", data="real", seed=0, majority_acc=0.1, overrides=[], config={})
    row.update(over)
    return row


def _writer(args):
    folder, worker = args
    for i in range(50):
        append_row(folder, fixture_row(task="listops", attention=f"w{worker}", seed=i, test_acc=0.5,
                                       config={"pad": "x" * 5000}))


def test_concurrent_appends_all_land_whole(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(tmp_path, w) for w in range(4)])
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 200
    rows = [json.loads(line) for line in lines]  # every line parses: no interleaving
    assert sorted((r["attention"], r["seed"]) for r in rows) == sorted((f"w{w}", i) for w in range(4)
                                                                         for i in range(50))


def test_row_missing_fields_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        append_row(tmp_path, {"task": "listops"})


def test_nan_is_stored_as_null(tmp_path):
    append_row(tmp_path, fixture_row(test_acc=float("nan")))
    assert read_rows(tmp_path)[0]["test_acc"] is None


def test_corrupt_line_is_skipped_with_its_line_number(tmp_path):
    append_row(tmp_path, fixture_row(task="listops", attention="a", test_acc=0.3))
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"task": "listops", "attent\n')
    append_row(tmp_path, fixture_row(task="listops", attention="b", test_acc=0.4))
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: skipped a corrupt line"):
        rows = read_rows(tmp_path)
    assert [r["attention"] for r in rows] == ["a", "b"]


def write_fixture(folder):
    accs = {("softmax", "listops"): [0.36, 0.38, 0.37], ("softmax", "image"): [0.40, 0.42],
            ("nalaformer", "listops"): [0.39, 0.41]}
    for (attention, task), values in accs.items():
        for seed, acc in enumerate(values):
            append_row(folder, fixture_row(task=task, attention=attention, seed=seed, test_acc=acc))
    append_row(folder, fixture_row(task="image", attention="nalaformer", status="failed"))
    append_row(folder, fixture_row(task="listops", attention="softmax", data="synthetic", test_acc=0.9))


def test_leaderboard_on_fixture_rows(tmp_path, capsys):
    write_fixture(tmp_path)
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t" / "leaderboard.md").read_text()
    csv = pd.read_csv(tmp_path / "t" / "leaderboard.csv")
    real = csv[csv["data"] == "real"].set_index("attention")
    assert real.loc["softmax", "listops"] == "37.00 ± 1.00 (3)"
    assert real.loc["softmax", "image"] == "41.00 ± 1.41 (2)"
    assert real.loc["softmax", "Avg"] == "39.00"
    assert real.loc["nalaformer", "listops"] == "40.00 ± 1.41 (2)"
    assert real.loc["nalaformer", "image"] == "—" and real.loc["nalaformer", "Avg"] == "—"
    # synthetic rows form their own table, never mixed into the real one
    syn = csv[csv["data"] == "synthetic"].set_index("attention")
    assert syn.loc["softmax", "listops"] == "90.00 ± 0.00 (1)"
    assert "image / nalaformer / seed 0: failed" in md
    assert "37.00 ± 1.00 (3)" in capsys.readouterr().out


def test_check_majority_fails_when_a_run_does_not_beat_it(tmp_path):
    append_row(tmp_path, fixture_row(task="listops", attention="a", test_acc=0.05))
    assert report.main(["--results", str(tmp_path), "--check-majority"]) == 1
