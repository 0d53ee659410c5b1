"""Every registered attention compiles (as run.py compiles, dynamic shapes) into graphs that hold no CPU tensor.

A 0-d CPU tensor in the graph of a GPU model (a Python float such as linear's ``eps`` passed in as a tensor, or
``math.sqrt`` of a symbolic size) makes Inductor emit a C++ kernel; under CUDA graphs that kernel was handed a GPU
pointer and linear and performer segfaulted on the H200 (session 11). No GPU here, so the model lives on the meta
device: any tensor in the traced forward or backward graph that is *not* on meta was made on the CPU by tracing.
A new attention plugin is checked by being registered.
"""

from __future__ import annotations

import pytest
import torch
from functorch.compile import make_boxed_func
from omegaconf import OmegaConf
from torch._dynamo.backends.common import aot_autograd

from attention_zoo.registry import available
from lra.model import compile_model
from lra.module import LRAClassifier
from tests.conftest import make_cfg

# The GPU paths where an attention has one (on meta the automatic choice would take the CPU path).
EXTRA = {"nalaformer": ["attention.impl=triton", "attention.lepe_impl=triton"]}


class _MetaAutocast(torch.autocast):
    """``torch.autocast("meta")`` is refused; the attentions open ``autocast(q.device.type, enabled=False)``."""

    def __init__(self, device_type: str, *args, **kwargs):
        super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)


def compiled_steps(
    name: str, tmp_path, steps: int = 3, attention: list[str] | None = None
) -> tuple[list[str], list[int]]:
    """Train ``steps`` steps of the compiled model on meta as the training loop does (hook, forward, backward).
    Returns the graph tensors not on meta and the number of graphs compiled after each step. ``attention``:
    overrides that select it, where it has no config file of its own (the docs' worked plugin)."""
    attention = attention or [f"attention={name}", *EXTRA.get(name, [])]
    cfg = make_cfg(tmp_path, "task=pathfinder", "experiment=lra_lite", *attention)
    classifier = LRAClassifier.from_config(OmegaConf.to_container(cfg, resolve=True), total_steps=10).to("meta")
    found: list[str] = []
    graphs = [0]

    def inspect(kind: str):
        def compiler(gm: torch.fx.GraphModule, example_inputs):
            graphs[0] += kind == "forward"
            for node in gm.graph.nodes:
                val = node.meta.get("val")
                if isinstance(val, torch.Tensor) and val.device.type != "meta":
                    found.append(f"{kind}: {node.name} ({node.target}) on {val.device}")
            return make_boxed_func(gm)

        return compiler

    backend = aot_autograd(fw_compiler=inspect("forward"), bw_compiler=inspect("backward"))
    compile_model(classifier.model, dynamic=True, backend=backend)
    classifier.train()
    after = []
    for i in range(steps):
        classifier.on_train_batch_start(None, i)
        classifier.model(torch.randint(1, 255, (2, cfg.task.max_len), device="meta")).float().sum().backward()
        after.append(graphs[0])
    return found, after


def check_compiles_cleanly(name: str, tmp_path, monkeypatch, attention: list[str] | None = None) -> None:
    monkeypatch.setattr(torch, "autocast", _MetaAutocast)
    torch._dynamo.reset()
    found, after = compiled_steps(name, tmp_path, attention=attention)
    assert found == []
    # Graphs are compiled in the first step only: a recompile per step (performer's step counter, read in its
    # forward, did this) ends, after 8, with Dynamo running the model eagerly.
    assert after[1:] == after[:1] * (len(after) - 1), after


@pytest.mark.parametrize("name", available())
def test_compiled_graphs_hold_no_cpu_tensor_and_steps_do_not_recompile(name, tmp_path, monkeypatch):
    check_compiles_cleanly(name, tmp_path, monkeypatch)


def test_the_training_loop_hook_drives_performer_redraws(tmp_path):
    cfg = make_cfg(tmp_path, "experiment=smoke", "attention=performer", "attention.redraw_interval=2")
    classifier = LRAClassifier.from_config(OmegaConf.to_container(cfg, resolve=True), total_steps=10).train()
    layers = [m for m in classifier.model.modules() if hasattr(m, "redraws")]
    assert len(layers) == cfg.model.depth
    for i in range(5):  # steps 1-2 on the first features, 3-4 on the second, 5 on the third
        classifier.on_train_batch_start(None, i)
    assert [m.redraws for m in layers] == [2] * len(layers)


@pytest.mark.parametrize(
    "ablation",
    [
        ["attention.lepe=false"],
        ["attention.rope=false"],
        ["attention.sign_split=false", "attention.impl=fused"],  # what impl=auto takes on a GPU: no Triton kernel
    ],
    ids=["lepe", "rope", "sign_split"],
)
def test_nalaformer_ablations_compile_cleanly_too(ablation, tmp_path, monkeypatch):
    """The ablation switches take other code paths (no convolution, no rotation, plain relu features), and
    ablation runs go to the GPU under CUDA graphs like the default."""
    check_compiles_cleanly(
        "nalaformer", tmp_path, monkeypatch, ["attention=nalaformer", *EXTRA["nalaformer"], *ablation]
    )


@pytest.mark.parametrize("impl", ["triton", "fused"])
def test_nalaformer_within_signs_compiles_on_its_gpu_paths(impl, tmp_path, monkeypatch):
    """rope_pairing=within_signs (the released RoPE) on the Triton kernels and on the fused fallback."""
    over = ["attention=nalaformer", f"attention.impl={impl}", "attention.rope_pairing=within_signs"]
    check_compiles_cleanly("nalaformer", tmp_path, monkeypatch, attention=[*over, "attention.lepe_impl=triton"])
