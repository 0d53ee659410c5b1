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
