"""Shared test setup: keep torch to one thread so tests behave the same on 2-core CI machines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the repository (CI has it); tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (shared benchmark files live beside the repository)")
    return SHARED


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray per test module (token auth on, 127.0.0.1 only), joined through ``execution.address``; CLI
    subprocesses inherit ``RAY_AUTH_TOKEN_PATH`` and so the token."""
    pytest.importorskip("ray")
    from mixnas.launch.ray_local import start_local_ray

    session = start_local_ray(num_cpus=2)
    yield session.address
    session.close()
