"""The attention zoo: one module per variant, each registered by name.

Every variant maps ``x (B, N, C)`` and a key padding mask ``(B, N)`` (True = real token) to ``(B, N, C)``.
Importing this package imports every module in it, so a new file that calls :func:`register` is found by
``run.py attention=<name>`` with no other edit. A class from another package is used through
``attention._target_=pkg.module.Class`` (see :func:`build_attention`).
"""

from __future__ import annotations

import importlib
import pkgutil

from attention_zoo.registry import (
    REGISTRY,
    SAME_RESULT_KEYS,
    AttentionSpec,
    available,
    build_attention,
    config_path,
    default_config,
    get,
    register,
)

__all__ = [
    "REGISTRY",
    "SAME_RESULT_KEYS",
    "AttentionSpec",
    "available",
    "build_attention",
    "config_path",
    "default_config",
    "get",
    "register",
]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name not in {"registry", "base"}:
        importlib.import_module(f"{__name__}.{_module.name}")
