"""The results store (atomic appends, corrupt lines) and report.py on fixture rows."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from lra.results import REQUIRED_FIELDS, append_row, read_rows


def fixture_row(**over):
    row = dict.fromkeys(REQUIRED_FIELDS)
    row.update(status="ok", protocol="lra_lite", data="real", seed=0, majority_acc=0.1, overrides=[], config={})
    row.update(over)
    return row


def _writer(args):
    folder, worker = args
    for i in range(50):
        append_row(
            folder,
            fixture_row(task="listops", attention=f"w{worker}", seed=i, test_acc=0.5, config={"pad": "x" * 5000}),
        )


def test_concurrent_appends_all_land_whole(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(tmp_path, w) for w in range(4)])
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 200
    rows = [json.loads(line) for line in lines]  # every line parses: no interleaving
    assert sorted((r["attention"], r["seed"]) for r in rows) == sorted(
        (f"w{w}", i) for w in range(4) for i in range(50)
    )


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
