"""The controller of a search, built from the experiment config.

One factory and one error mapping (:func:`build_controller`) for the check before a search starts
(:func:`~mixnas.launch.checks.check_controller`) and for the driver (:class:`~mixnas.launch.runner.Search`), and
what a run directory adds to a controller (:func:`run_setup`: the Optuna study's file, the driver's torch threads),
which are launch concerns: the controllers themselves know no files, threads or Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mixnas.errors import ConfigError, MixnasError


def build_controller(cfg: Any, space: Any, options: Mapping[str, Any]) -> Any:
    """The controller ``cfg.controller`` names, over ``space``, with ``options``; a bad option is one
    :class:`ConfigError` naming ``controller.options``."""
    from mixnas.controllers import make_controller

    objectives = list(cfg.reward.controller_objectives)
    try:
        return make_controller(cfg.controller.type, space, objectives=objectives, seed=cfg.seed, **dict(options))
    except (MixnasError, TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.source}: controller.options: {exc}") from None


@dataclass(frozen=True)
class RunSetup:
    """What a search driver needs to build a controller of a run directory (see :func:`run_setup`).

    Attributes:
        options: the controller options to build it with (the run's defaults filled in).
        derived_files: files the controller writes as it goes that its replayed journal rebuilds exactly (an
            Optuna study in the run directory): removed before a replay.
        external_state: the controller keeps state outside itself that a replay cannot rebuild (a study in a
            storage the user named): such a run resumes only from an up-to-date snapshot.
    """

    options: dict[str, Any]
    derived_files: tuple[str, ...] = ()
    external_state: bool = False


def run_setup(name: str, options: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> RunSetup:
    """Controller-specific set-up of a search in ``run_dir`` (nothing is written here).

    * ``optuna`` without a ``storage`` option keeps its study in ``run_dir/optuna.db``, so optuna-dashboard can
      watch the search while it runs; that study is derived from the run's journal. ``storage: null`` keeps it in
      memory (and in the snapshot).
    * ``rl``: the driver's torch uses one thread (the policy is tiny; more threads only contend with the trials'
      workers, 10x slower under load).
    """
    options = dict(options)
    if name == "rl":
        import torch

        torch.set_num_threads(1)
    if name == "optuna":
        if "storage" not in options:  # (an explicit null keeps the study in memory, inside the snapshot)
            path = Path(run_dir).resolve() / "optuna.db"
            options["storage"] = f"sqlite:///{path}"
            return RunSetup(options, derived_files=(str(path),))
        return RunSetup(options, external_state=options["storage"] is not None)
    return RunSetup(options)
