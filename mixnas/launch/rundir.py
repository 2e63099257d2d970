"""A run directory: its files, the lock one driver holds, creating a run (its config written atomically) and reading
its config.

The layout is in ``docs/architecture.md`` ("Files on disk").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mixnas.errors import RunError
from mixnas.launch.config import config_diff, config_from_dict, read_yaml
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ledger import Ledger
from mixnas.textio import os_reason, path_kind, write_text_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Files of a run directory (``docs/architecture.md``, "Files on disk")."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def controller(self) -> Path:
        return self.root / "controller.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def pareto_png(self) -> Path:
        return self.root / "pareto.png"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def run_is_active(paths: RunPaths) -> bool:
    """Is a driver holding this run's lock right now?"""
    if not paths.lock.exists():
        return False
    with open(paths.lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def run_lock(paths: RunPaths) -> Iterator[None]:
    """Hold the run directory for one driver (a second ``search`` / ``resume`` of the same run is refused)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunError(f"{paths.root}: another mixnas process is running this search") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def create_run(cfg: ExperimentConfig, run_dir: str | Path) -> RunPaths:
    """Make a new run directory and save the resolved config in it."""
    paths = RunPaths(Path(run_dir))
    if path_kind(paths.ledger) is not None and _ledger_size(paths) > 0:
        raise RunError(f"{paths.root}: a search already ran here; continue it with `mixnas resume {paths.root}` "
                       "or choose another --output")
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(paths.config, cfg.to_yaml())
    except OSError as exc:
        raise RunError(f"{paths.root}: cannot create the run directory ({os_reason(exc)})") from None
    return paths


def _ledger_size(paths: RunPaths) -> int:
    """Trials in a run's ledger (a run refused before its first ask holds none and may be started again)."""
    with Ledger(paths.ledger, readonly=True) as ledger:
        return len(ledger)


def load_run_config(paths: RunPaths) -> ExperimentConfig:
    """The config a run directory was started with."""
    if path_kind(paths.config) != "file":  # not is_file(): it raises for a name the OS refuses (too long)
        raise RunError(f"{paths.root}: no config.yaml here (is this a mixnas run directory?)")
    return config_from_dict(read_yaml(paths.config), source=str(paths.config), base_dir=paths.root)


def reconcile_config(paths: RunPaths, new: ExperimentConfig | None, *, force: bool) -> ExperimentConfig:
    """The config to resume with: the saved one, or ``new`` if it is equal (or ``force`` says to take it anyway)."""
    saved = load_run_config(paths)
    if new is None:
        return saved
    diff = config_diff(saved.to_dict(), new.to_dict())
    if not diff:
        return saved
    if not force:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise RunError(f"{paths.root}: the config differs from the one this run started with ({shown}); "
                       "resume with --force to use the new one")
    logger.warning("resuming %s with a changed config: %s", paths.root, "; ".join(diff))
    write_text_atomic(paths.config, new.to_yaml())
    return new
