"""Long Range Arena harness: data, model, Lightning module, results store."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


class LRAError(Exception):
    """An error the user can fix (bad input, missing data, bad option): printed as one line, no traceback."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run's checkpoint, read on the CPU. One left unreadable (a full disk or a killed copy cut it short) is an
    LRAError that names it and the fix, not a pickle traceback."""
    import torch  # here: the package itself imports without torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError) as err:
        raise LRAError(
            f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); delete it, or pass resume=false, "
            "and the run starts afresh"
        ) from None


CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str]):
    """The config ``run.py`` composes for these command-line overrides, for tools that build a run's model or data
    without running it (the throughput profiler, the ablations, the tests)."""
    from hydra import compose, initialize_config_dir  # here: the package itself imports without hydra

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
