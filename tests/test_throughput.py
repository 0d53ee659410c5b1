"""lra.throughput, the step-rate measurement that the GPU sessions run: every named setting composes into a valid
config (a typo there costs device time), and a short measurement on the CPU writes one row per setting."""

from __future__ import annotations

import pandas as pd
import pytest

from lra import compose_config, throughput


@pytest.mark.parametrize("name", list(throughput.SETTINGS))
def test_every_setting_composes(name):
    cfg = compose_config(["task=listops", "experiment=lra_lite", *throughput.SETTINGS[name]])
    for override in throughput.SETTINGS[name]:
        key, value = override.split("=", 1)
        got = cfg
        for part in key.split("."):
            got = got[part]
        assert str(got).lower() == value.lower(), override


def test_measurement_writes_a_row_per_setting(tmp_path):
    out = tmp_path / "tp.csv"
    args = ["experiment=smoke", f"data_dir={tmp_path / 'data'}", "--steps", "4", "--out", str(out)]
    assert throughput.main([*args, "--settings", "baseline,bf16+fused_adamw+compile+pad256"]) == 0
    rows = pd.read_csv(out)
    assert rows.setting.tolist() == ["baseline", "bf16+fused_adamw+compile+pad256"]
    assert (rows.steps == 4).all() and (rows.steps_per_sec > 0).all()
    assert 0 < rows.attention_fraction.iloc[0] < 1


def test_a_failing_setting_is_a_row_and_the_next_still_runs(tmp_path, monkeypatch):
    """A compile failure on the device must not lose the settings measured before or after it."""
    monkeypatch.setitem(throughput.SETTINGS, "broken", ["model.dim=-1"])
    out = tmp_path / "tp.csv"
    args = ["experiment=smoke", f"data_dir={tmp_path / 'data'}", "--steps", "3", "--out", str(out)]
    assert throughput.main([*args, "--settings", "broken,baseline"]) == 0
    rows = pd.read_csv(out)
    assert rows.setting.tolist() == ["broken", "baseline"]
    assert "model.dim=-1" in rows.error.iloc[0] and pd.isna(rows.error.iloc[1])
    assert pd.isna(rows.steps.iloc[0]) and rows.steps.iloc[1] == 3


def test_rows_join_a_table_with_other_columns_under_the_right_headers(tmp_path):
    """results/throughput.csv gained columns over time (error, source): a new row must not shift under them."""
    from lra.results import append_csv_row

    out = tmp_path / "tp.csv"
    pd.DataFrame([{"setting": "old", "steps": 1, "source": "session 7"}]).to_csv(out, index=False)
    append_csv_row(out, {"setting": "new", "steps": 2, "error": "x"})
    rows = pd.read_csv(out)
    assert rows.setting.tolist() == ["old", "new"] and rows.steps.tolist() == [1, 2]
    assert rows.source.iloc[0] == "session 7" and pd.isna(rows.source.iloc[1]) and rows.error.iloc[1] == "x"


def test_top_operators_are_kept_in_a_file_beside_the_rows(tmp_path, capsys):
    out = tmp_path / "tp.csv"
    args = ["experiment=smoke", "attention=linear", f"data_dir={tmp_path / 'data'}", "--steps", "2", "--out", str(out)]
    assert throughput.main([*args, "--settings", "baseline", "--top", "5"]) == 0
    profile = tmp_path / "tp-profile-linear.txt"
    text = profile.read_text()
    assert text.startswith("experiment=smoke attention=linear") and "per step: cpu time" in text
    assert "per step: cpu time" in capsys.readouterr().out
    # an A/B of one attention (gpu_session.sh: TP_ATTENTIONS="linear linear,attention.feature_map=relu") keeps both
    for option in ("attention.feature_map=relu", "model.optim.lr=0.001"):
        assert throughput.main([option, *args, "--settings", "baseline", "--top", "5"]) == 0
    profiles = sorted(tmp_path.glob("tp-profile-linear*.txt"))
    assert len(profiles) == 3 and profile.read_text() == text
    firsts = {p.read_text().splitlines()[0] for p in profiles}
    assert any("attention.feature_map=relu" in f for f in firsts) and any("model.optim.lr=0.001" in f for f in firsts)


def test_the_compiled_model_can_be_profiled(tmp_path):
    """What a compiled run spends its device time in: the profile goes through Inductor's code."""
    out = tmp_path / "tp.csv"
    args = ["experiment=smoke", "attention=linear", f"data_dir={tmp_path / 'data'}", "--steps", "2", "--out", str(out)]
    assert throughput.main([*args, "--settings", "baseline", "--top", "40", "--profile-compiled"]) == 0
    text = (tmp_path / "tp-profile-linear-compiled.txt").read_text()
    assert text.splitlines()[0].endswith("(compiled)") and "per step: cpu time" in text
    assert "Torch-Compiled Region" in text or "CompiledFunction" in text
    assert pd.isna(pd.read_csv(out).attention_fraction.iloc[0])  # no ranges to attribute under Inductor
