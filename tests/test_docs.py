"""The worked plugin in docs/adding-an-attention.md runs as written: registered, contract-tested, trained."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import yaml

import run
from attention_zoo import REGISTRY
from tests import test_compile_graphs as compile_graphs
from tests import test_zoo_contract as contract

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-an-attention.md"


@pytest.fixture(scope="module")
def plugin():
    text = DOC.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    assert len(code.strip().splitlines()) <= 40  # "about 30 lines"
    module = types.ModuleType("attention_zoo.sigmoid")
    sys.modules[module.__name__] = module
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    yield config
    REGISTRY.pop(config["name"], None)
    sys.modules.pop(module.__name__, None)


def test_plugin_registers_and_keeps_the_contract(plugin):
    name = plugin["name"]
    assert name in REGISTRY
    contract.test_shape_and_dtype(name, contract.torch.float64)
    contract.test_appending_padding_leaves_valid_outputs_unchanged(name)
    contract.test_masked_keys_get_no_weight(name)
    contract.test_batch_items_are_independent(name)
    contract.test_gradients_are_finite(name, zero=True)
    contract.test_bf16_autocast(name)
    contract.test_eval_is_deterministic(name)


def plugin_overrides(plugin: dict) -> list[str]:
    """Its config file's keys on top of softmax's (the plugin's yaml is not written into conf/ by the test)."""
    extra = [f"+attention.{k}={v}" for k, v in plugin.items() if k not in {"name", "impl"}]
    return ["attention=softmax", f"attention.name={plugin['name']}", "~attention.eager", "~attention.dropout", *extra]


def test_plugin_trains_through_run_py(plugin, cfg_factory):
    cfg = cfg_factory("experiment=smoke", *plugin_overrides(plugin))
    row = run.train(cfg)
    assert row["attention"] == plugin["name"] and row["status"] == "ok"


def test_target_plugs_in_a_class_from_another_package(cfg_factory):
    cfg = cfg_factory("experiment=smoke", "attention._target_=attention_zoo.softmax.SoftmaxAttention")
    row = run.train(cfg)
    assert row["attention"] == "attention_zoo.softmax.SoftmaxAttention" and row["status"] == "ok"


def test_plugin_compiles_cleanly(plugin, tmp_path, monkeypatch):
    """The check every registered attention gets under trainer.compile (docs: "Under trainer.compile")."""
    compile_graphs.check_compiles_cleanly(plugin["name"], tmp_path, monkeypatch, attention=plugin_overrides(plugin))
