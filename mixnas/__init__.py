"""mixnas: hardware-aware neural architecture search with MixConv.

The Python API (:mod:`mixnas.launch.api`): ``mixnas.search(config, overrides=...)``,
``mixnas.resume(run_dir)``, ``mixnas.open_run(run_dir)`` (a :class:`~mixnas.launch.api.Run`: trials, best, Pareto
front, rerank, export, model) and ``mixnas.load_model(path)`` (a ``mixnas train`` folder or its ``mixnas export``, no pickle). They are imported on
first use, so ``import mixnas`` stays free of torch and Ray.
"""

from __future__ import annotations

from typing import Any


_API = ("search", "resume", "open_run", "experiment", "Run", "Progress")


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from mixnas.training.checkpoint import load_model

        return load_model
    if name in _API:  # the Python API (mixnas/api.py): search, resume, open_run, ...
        from mixnas.launch import api

        return getattr(api, name)
    raise AttributeError(f"module 'mixnas' has no attribute {name!r}")
