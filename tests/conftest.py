from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lra import compose_config

ROOT = Path(__file__).resolve().parents[1]

# Without a GPU, Triton kernels (attention_zoo/nala_triton.py) run under Triton's interpreter; the variable is read
# when the kernels are defined, so it is set before any test module imports attention_zoo.
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The config run.py would get for these command-line overrides, writing into tmp_path."""
    return compose_config(
        [
            f"results_dir={tmp_path / 'results'}",
            f"checkpoint_dir={tmp_path / 'ckpt'}",
            f"data_dir={tmp_path / 'data'}",
            *overrides,
        ]
    )


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    env.pop("LRA_DATA_DIR", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda *overrides: make_cfg(tmp_path, *overrides)
