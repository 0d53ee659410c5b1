"""lra.ablate: the ablations do what they say (uniform attention ignores queries and keys; the local path off equals
a model built without it) and the command evaluates a run's checkpoint on its data, split by split."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lra import LRAError, compose_config
from lra.ablate import main, query_dependence, recording_query_dependence, uniform_attention, without_local_path
from lra.module import LRAClassifier


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
    model = LRAClassifier.from_config(OmegaConf.to_container(compose_config(overrides), resolve=True), total_steps=10)
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


def test_query_dependence_is_the_mean_distance_of_valid_queries_from_their_mean_row():
    rows = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 100]])  # the last query is padding
    mask = torch.tensor([[True, True, True, False]])
    # valid rows one-hot on different keys: mean row (1/3, 1/3, 1/3, 0), each row 2/3 away from it
    torch.testing.assert_close(query_dependence(rows[None, None], mask), torch.tensor([[2 / 3]]))
    alike = torch.tensor([0.5, 0.25, 0.25, 0.0]).expand(4, 4)
    torch.testing.assert_close(query_dependence(alike[None, None], mask), torch.tensor([[0.0]]))


@pytest.mark.parametrize("extra", [[], ["attention.unit_queries=false", "attention.shift=1"]])
@torch.no_grad()
def test_recording_query_dependence_keeps_the_output_and_restores_the_model(tmp_path, extra):
    model, _ = classifier(tmp_path, "nalaformer", *extra)
    ids = tokens()
    before = model.evaluate(ids)
    record: list[torch.Tensor] = []
    with recording_query_dependence(model, record):
        torch.testing.assert_close(model.evaluate(ids), before, rtol=1e-4, atol=1e-5)
    blocks = model.model.encoder.blocks
    assert len(record) == len(blocks) and all(r.shape == (3, blocks[0].attn.num_heads) for r in record)
    assert all(((r > 0) & (r < 1)).all() for r in record)
    assert {b.attn.impl for b in blocks} == {"auto"}  # restored
    softmax, _ = classifier(tmp_path, "softmax")
    with pytest.raises(LRAError, match="written for nalaformer"), recording_query_dependence(softmax, record):
        pass


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
        rows = main([str(ckpt), *overrides, "--batches", "0", "--images", "2"])
        evaluated = [r for r in rows if r["ablation"] != "query dependence"]
        assert [r["ablation"] for r in evaluated[::2]] == done
        assert [r["split"] for r in evaluated[:2]] == ["train", "test"]
        assert all(r["examples"] > 0 and 0 <= r["acc"] <= 1 for r in evaluated)
        dependence = [r["layer"] for r in rows if r["ablation"] == "query dependence"]
        assert dependence == (list(range(len(model.model.encoder.blocks))) if attention == "nalaformer" else [])
    out = capsys.readouterr().out
    assert "query dependence     test   layer 0: 0." in out and "(2 images)" in out
    assert "query dependence     n/a: query dependence is written for nalaformer" in out
    assert "uniform attention    n/a: uniform attention is written for polaformer and nalaformer; this model's " in out
    assert "no local path        n/a: no local path (dwc, lepe)" in out
    with pytest.raises(LRAError, match=r"softmax.ckpt was trained with max_len 1024 \(data: 64\)"):
        main([str(ckpt), *[o for o in overrides if o != "task.max_len=1024"]])  # smoke's 64, not the run's 1024
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(LRAError, match="bad.ckpt: not a checkpoint of run.py's model"):
        main([str(tmp_path / "bad.ckpt"), *overrides])
