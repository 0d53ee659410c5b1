"""lra.ablate: the ablations do what they say (uniform attention ignores queries and keys; the local path off equals
a model built without it) and the command evaluates a run's checkpoint on its data, split by split."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lra import LRAError
from lra.ablate import main, uniform_attention, without_local_path
from lra.module import LRAClassifier
from lra.throughput import config


def classifier(tmp_path, attention: str, *extra: str) -> tuple[LRAClassifier, list[str]]:
    overrides = [
        "task=pathfinder",
        "experiment=smoke",
        "task.max_len=1024",
        f"attention={attention}",
        f"data_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
        *extra,
    ]
    torch.manual_seed(0)
    model = LRAClassifier.from_config(OmegaConf.to_container(config(overrides), resolve=True), total_steps=10)
    return model.eval(), overrides


def tokens(n: int = 3, length: int = 128) -> torch.Tensor:
    ids = torch.randint(1, 200, (n, length))
    ids[0, 40:] = 0  # padding in one sequence: pixel 0 is masked on Pathfinder
    return ids


@pytest.mark.parametrize(
    "attention, impl, projection",
    [("polaformer", "fast", "qkv"), ("polaformer", "reference", "qkv")]
    + [("nalaformer", impl, "qkvg") for impl in ("auto", "fused", "linear", "reference")],  # auto: fused on the CPU
)
@torch.no_grad()
def test_uniform_attention_ignores_queries_and_keys(tmp_path, attention, impl, projection):
    model, _ = classifier(tmp_path, attention, f"attention.impl={impl}")
    ids = tokens()
    before = model.evaluate(ids)
    attn = model.model.encoder.blocks[0].attn
    with uniform_attention(model):
        uniform = model.evaluate(ids)
        getattr(attn, projection).weight[: 2 * attn.dim].normal_()  # new queries and keys: nothing changes
        assert torch.allclose(model.evaluate(ids), uniform, atol=1e-5)
    assert not torch.allclose(uniform, before, atol=1e-3)  # the ablation did change the model
    assert not torch.allclose(model.evaluate(ids), uniform, atol=1e-3)  # and is undone on leaving


@torch.no_grad()
def test_no_local_path_equals_a_model_built_without_it(tmp_path):
    model, _ = classifier(tmp_path, "polaformer")
    bare, _ = classifier(tmp_path, "polaformer", "attention.dwc_kernel=0")
    missing, _ = bare.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    ids = tokens()
    with without_local_path(model):
        assert torch.allclose(model.evaluate(ids), bare.evaluate(ids), atol=1e-6)
    assert model.model.encoder.blocks[0].attn.dwc is not None  # restored
    softmax, _ = classifier(tmp_path, "softmax")
    with pytest.raises(LRAError, match="no local path"), without_local_path(softmax):
        pass


def test_the_command_evaluates_a_checkpoint_on_each_split(tmp_path, capsys):
    from lra.data import pathfinder as pf

    pf.write_dataset(tmp_path, pf.PathfinderConfig.lra(32), 40, 40, seed=3, workers=1)
    everything = ["as trained", "uniform attention", "no local path"]
    # uniform attention is written for polaformer and nalaformer, a local path they have and softmax has not
    for attention, done in (("nalaformer", everything), ("softmax", ["as trained"])):
        model, overrides = classifier(tmp_path, attention, "attention.impl=reference")
        ckpt = tmp_path / f"{attention}.ckpt"
        torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, ckpt)
        rows = main([str(ckpt), *overrides, "--batches", "0"])
        assert [r["ablation"] for r in rows[::2]] == done and [r["split"] for r in rows[:2]] == ["train", "test"]
        assert all(r["examples"] > 0 and 0 <= r["acc"] <= 1 for r in rows)
    out = capsys.readouterr().out
    assert "uniform attention    n/a: uniform attention is written for polaformer and nalaformer; this model's " in out
    assert "no local path        n/a: no local path (dwc, lepe)" in out
    with pytest.raises(LRAError, match=r"softmax.ckpt was trained with max_len 1024 \(data: 64\)"):
        main([str(ckpt), *[o for o in overrides if o != "task.max_len=1024"]])  # smoke's 64, not the run's 1024
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(LRAError, match="bad.ckpt: not a checkpoint of run.py's model"):
        main([str(tmp_path / "bad.ckpt"), *overrides])
