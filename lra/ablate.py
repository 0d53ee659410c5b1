"""What a trained model's predictions rest on: a checkpoint evaluated as trained, with its attention made uniform
(every query gets the mean of the valid values, so no token looks at any particular other), and with the local
path beside the attention switched off (polaformer's depthwise conv over v, nalaformer's LePE).

Why: on Pathfinder polaformer and nalaformer memorise (training accuracy rises, validation stays at chance) where
softmax, elu + 1 and performer learn. Deciding whether two dots are connected needs tokens that look at other,
distant tokens; a model that keeps its training accuracy with uniform attention and loses it without the local
path has learned a bag of local features instead, which fits the training images and nothing else (session 19).
For nalaformer it also measures how much each layer's weights depend on the query (query_dependence): unit-norm
queries over a floor cap it, so it is the first suspect when they memorise; measured, it is small in the run that
learns too, and as large in one that memorises (session 22), so it is a measurement, not a verdict.

    python -m lra.ablate CHECKPOINT task=pathfinder experiment=lra_lite data_dir=DATA [--batches 8] [--images 16]

The data must be the run's (the generators are deterministic: regenerate it with the same seed and count), so that
the train split holds the images the model was trained on and the test split the ones it never saw.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import attention_zoo.nalaformer as nalaformer
import attention_zoo.polaformer as polaformer
from lra import LRAError, compose_config, load_checkpoint
from lra.module import LRAClassifier

LOCAL_PATHS = ("dwc", "lepe")  # attributes of an attention module that add a local path to its output


# Where each attention's weights meet v: the functions uniform_attention replaces, in the module that calls them.
KERNELS = {
    polaformer.PolaLinearAttention: (polaformer, ("normalised_linear_fast", "normalised_linear_reference")),
    nalaformer.NaLaAttention: (nalaformer, ("nala_triton", "nala_fused", "nala_linear", "nala_reference")),
}


def _mean_of_values(queries, keys, v, mask, *args, **kwargs) -> torch.Tensor:
    """Stands in for any of KERNELS (queries, keys or their feature maps, v, mask, options): every query gets the
    mean of v over the valid keys."""
    keep = mask[:, None, :, None].to(v.dtype)
    mean = (v * keep).sum(dim=2, keepdim=True) / keep.sum(dim=2, keepdim=True).clamp_min(1)
    return mean.expand(*v.shape[:2], queries.shape[2], v.shape[-1])


@contextlib.contextmanager
def uniform_attention(model: torch.nn.Module) -> Iterator[None]:
    """Attention weights all equal over the valid keys; the rest of each block (local path, gate) as trained.
    Written for the attentions whose checkpoints asked for it (KERNELS)."""
    if not any(isinstance(m, tuple(KERNELS)) for m in model.modules()):
        names = sorted({type(m).__name__ for name, m in model.named_modules() if name.endswith(".attn")})
        raise LRAError(f"uniform attention is written for polaformer and nalaformer; this model's attention: {names}")
    with contextlib.ExitStack() as stack:
        for module, names in KERNELS.values():
            for name in names:
                stack.enter_context(mock.patch.object(module, name, _mean_of_values))
        yield


@contextlib.contextmanager
def without_local_path(model: torch.nn.Module) -> Iterator[None]:
    """Every attention's local path (``dwc``, ``lepe``) off, as if built with it off; restored afterwards."""
    saved = [
        (m, name, getattr(m, name))
        for m in model.modules()
        for name in LOCAL_PATHS
        if isinstance(getattr(m, name, None), torch.nn.Module)
    ]
    if not saved:
        raise LRAError(f"no local path ({', '.join(LOCAL_PATHS)}) in this model's attention to switch off")
    try:
        for m, name, _ in saved:
            setattr(m, name, None)
        yield
    finally:
        for m, name, module in saved:
            setattr(m, name, module)


def query_dependence(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much what a query weights depends on the query: the total variation 0.5 * sum_j |w_ij - mean_i w_ij| of
    each valid query's row from the mean row, averaged over valid queries, (B, H). 0 = every query weights the keys
    alike (attention a function of the keys alone), 1 = queries weight disjoint keys."""
    keep = mask[:, None, :, None].to(weights.dtype)  # (B, 1, N, 1): valid queries
    count = keep.sum(dim=2)
    mean_row = (weights * keep).sum(dim=2, keepdim=True) / count[..., None]
    distance = 0.5 * (weights - mean_row).abs().sum(dim=-1, keepdim=True)  # (B, H, N, 1)
    return ((distance * keep).sum(dim=2) / count).squeeze(-1)


@contextlib.contextmanager
def recording_query_dependence(model: torch.nn.Module, record: list[torch.Tensor]) -> Iterator[None]:
    """NaLa's attention computed through its explicit weights (nala_weights: the same output), each layer's
    query_dependence appended to ``record`` in call order. Why: over a floor, unit-norm queries cap how far two
    queries' weights can differ (tests/test_zoo_nalaformer.py); this measures how far they do in a trained model."""
    layers = [m for m in model.modules() if isinstance(m, nalaformer.NaLaAttention)]
    if not layers:
        raise LRAError("query dependence is written for nalaformer (its weights are materialised from its features)")

    def explicit(phi_q, phi_k, v, mask, rope=True, denom_eps=1e-6, rope_groups=1):
        weights = nalaformer.nala_weights(phi_q, phi_k, mask, rope, denom_eps, rope_groups)
        record.append(query_dependence(weights, mask))
        return weights @ (v * mask[:, None, :, None].to(v.dtype))

    saved = [(m, m.impl) for m in layers]
    with contextlib.ExitStack() as stack:
        for name in ("nala_linear", "nala_reference"):
            stack.enter_context(mock.patch.object(nalaformer, name, explicit))
        try:
            for m in layers:
                m.impl = "reference"  # the PyTorch path, whose kernel is handed the feature maps
            yield
        finally:
            for m, impl in saved:
                m.impl = impl


def load_classifier(path: str | Path) -> tuple[LRAClassifier, int | None]:
    """A run's model from its checkpoint, on the CPU, in eval mode, and the step it was saved at; a file that is
    not one says so in one line."""
    ckpt = load_checkpoint(path)
    try:
        model = LRAClassifier(**ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise LRAError(f"{path}: not a checkpoint of run.py's model ({type(err).__name__}: {err})") from None
    return model.eval(), ckpt.get("global_step")


@torch.no_grad()
def evaluate(model: LRAClassifier, batches, limit: int | None = None) -> tuple[float, float, int]:
    """Accuracy, mean cross-entropy and examples over the first ``limit`` batches (all when None)."""
    correct, loss, seen = 0, 0.0, 0
    for i, (ids, labels) in enumerate(batches):
        if limit is not None and i >= limit:
            break
        logits = model.evaluate(ids).float()
        correct += int((logits.argmax(-1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        seen += len(labels)
    if not seen:
        raise LRAError("no examples to evaluate: the split is empty")
    return correct / seen, loss / seen, seen


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m lra.ablate", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a run's best.ckpt or last.ckpt")
    ap.add_argument(
        "overrides", nargs="*", help="run.py overrides naming the task and data (task=, experiment=, data_dir=)"
    )
    ap.add_argument("--batches", type=int, default=8, help="evaluation batches per split (0 = all)")
    ap.add_argument("--images", type=int, default=16, help="test images whose query dependence is measured")
    args = ap.parse_args(argv)
    from lra.data.datamodule import LRADataModule

    model, step = load_classifier(args.checkpoint)
    task = OmegaConf.to_container(compose_config(args.overrides), resolve=True)
    net = model.hparams["net"]  # the data must be what the model was built for, or it fails deep inside
    if wrong := [
        f"{k} {net[k]} (data: {task['task'][k]})" for k in ("max_len", "vocab_size") if net[k] != task["task"][k]
    ]:
        raise LRAError(f"{args.checkpoint} was trained with {', '.join(wrong)}: name its task and experiment")
    data = LRADataModule(
        task["task"], task["data_dir"], task["task"]["batch_size"], seed=task["seed"], cache_dir=task["cache_dir"]
    )
    data.setup()
    limit = args.batches or None
    ablations = {
        "as trained": contextlib.nullcontext,
        "uniform attention": uniform_attention,
        "no local path": without_local_path,
    }
    rows = []
    print(f"{args.checkpoint} (step {step})")
    print(f"{'':20s} {'split':6s} {'acc':>7s} {'loss':>7s} {'examples':>8s}")
    for name, ablation in ablations.items():
        with contextlib.ExitStack() as stack:
            try:  # an ablation this model has nothing for is a line of the table, not the end of it
                stack.enter_context(ablation(model))
            except LRAError as err:
                print(f"{name:20s} n/a: {err}")
                continue
            for split, loader in (("train", data.train_dataloader), ("test", data.test_dataloader)):
                acc, loss, seen = evaluate(model, loader(), limit)
                rows.append(dict(ablation=name, split=split, acc=acc, loss=loss, examples=seen))
                print(f"{name:20s} {split:6s} {100 * acc:6.2f}% {loss:7.3f} {seen:8d}", flush=True)
    rows += measure_query_dependence(model, data.test_dataloader(), args.images)
    return rows


@torch.no_grad()
def measure_query_dependence(model: LRAClassifier, batches, images: int) -> list[dict]:
    """query_dependence per layer, averaged over heads and the first ``images`` test images (N x N weights per
    head: a few images are enough and cheap); a line of the table, n/a for an attention it is not written for."""
    record: list[torch.Tensor] = []
    try:
        with recording_query_dependence(model, record):
            ids, _ = next(iter(batches))
            model.evaluate(ids[:images])
    except LRAError as err:
        print(f"{'query dependence':20s} n/a: {err}")
        return []
    values = [float(r.mean()) for r in record]
    layers = "  ".join(f"layer {i}: {v:.3f}" for i, v in enumerate(values))
    print(f"{'query dependence':20s} {'test':6s} {layers}  ({len(ids[:images])} images)")
    return [dict(ablation="query dependence", split="test", layer=i, value=v) for i, v in enumerate(values)]


if __name__ == "__main__":
    try:
        main()
    except LRAError as err:
        sys.exit(f"error: {err}")
