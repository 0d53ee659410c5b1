"""Name -> attention class registry (the timm/xformers pattern) and the one place attentions are built."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn


@dataclass(frozen=True)
class AttentionSpec:
    """What ``python -m attention_zoo`` prints for a variant."""

    name: str
    cls: type[nn.Module]
    complexity: str  # "O(N^2)" or "O(N)"
    source: str  # paper the variant follows


REGISTRY: dict[str, AttentionSpec] = {}
CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "attention"  # one <name>.yaml per variant
# Config keys that pick a kernel for the same convolution (each path tested equal to PyTorch's layer): a run that set
# one keeps its run id (run.py) and its leaderboard label (lra.leaderboard).
SAME_RESULT_KEYS = ("lepe_impl", "conv_impl")


def register(name: str, *, complexity: str, source: str):
    """Class decorator: make ``cls`` available as ``attention=<name>``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in REGISTRY and REGISTRY[name].cls is not cls:
            raise ValueError(f"attention '{name}' is registered twice: {REGISTRY[name].cls} and {cls}")
        REGISTRY[name] = AttentionSpec(name, cls, complexity, source)
        return cls

    return wrap


def available() -> list[str]:
    return sorted(REGISTRY)


def get(name: str) -> AttentionSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown attention '{name}'; available: {', '.join(available())}")
    return REGISTRY[name]


def config_path(name: str) -> Path:
    return CONF_DIR / f"{name}.yaml"


def default_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The variant's shipped ``conf/attention/<name>.yaml`` (``{"name": name}`` for a class registered without a
    config file), with ``overrides`` applied: what ``run.py attention=<name>`` starts from."""
    path = config_path(name)
    # Read as Hydra reads it: PyYAML alone takes ``eps: 1e-6`` for a string, where run.py gets a float.
    cfg = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {"name": name}
    return {**cfg, **overrides}


def _import_target(path: str) -> type[nn.Module]:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"attention._target_={path!r} cannot be imported: {err}") from None


def build_attention(cfg: dict[str, Any], dim: int, num_heads: int, max_len: int) -> nn.Module:
    """Build the attention named by ``cfg['name']`` (or the class at ``cfg['_target_']``).

    The remaining keys of ``cfg`` are passed as keyword arguments; a key a registered class does not take is an
    error that names it, so a typo in a config override cannot pass silently. A ``_target_`` class from another
    package gets only the keys its ``__init__`` takes: the other keys are the defaults of whichever registered
    attention the command line started from.
    """
    cfg = dict(cfg)
    target = cfg.pop("_target_", None)
    name = cfg.pop("name", None)
    cls = _import_target(target) if target else get(str(name)).cls
    kwargs = {"dim": dim, "num_heads": num_heads, "max_len": max_len, **cfg}
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        # dim/num_heads/max_len are offered to every class; a class may ignore the ones it has no use for.
        unknown_user = [k for k in unknown if k not in {"dim", "num_heads", "max_len"}]
        if unknown_user and not target:
            allowed = sorted(set(params) - {"self", "dim", "num_heads", "max_len"})
            raise ValueError(
                f"attention '{name or target}' has no option {', '.join(unknown_user)}; "
                f"its options are: {', '.join(allowed) or '(none)'}"
            )
        for k in unknown:
            kwargs.pop(k)
    return cls(**kwargs)
