"""mixnas: hardware-aware neural architecture search with MixConv.

``mixnas.load_model(path)`` (a ``mixnas train`` folder or its ``mixnas export``, no pickle) is imported on first
use, so ``import mixnas`` stays free of torch.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from mixnas.training.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'mixnas' has no attribute {name!r}")
