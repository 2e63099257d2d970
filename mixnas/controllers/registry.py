"""The explicit registry of controllers and ``make_controller``, the one way to build one by name.

Controllers are imported lazily, so ``import mixnas.controllers`` loads neither torch (``rl``) nor optuna
(``optuna``) until such a controller is asked for.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixnas.controllers.base import Controller, Objective, SpaceLike
from mixnas.errors import ControllerError


def _random() -> type[Controller]:
    from mixnas.controllers.random import RandomController

    return RandomController


def _evolution() -> type[Controller]:
    from mixnas.controllers.evolution import EvolutionController

    return EvolutionController


def _rl() -> type[Controller]:
    from mixnas.controllers.rl import RLController

    return RLController


def _optuna() -> type[Controller]:
    from mixnas.controllers.optuna import OptunaController

    return OptunaController


CONTROLLERS: Mapping[str, Callable[[], type[Controller]]] = {
    "random": _random,
    "evolution": _evolution,
    "rl": _rl,
    "optuna": _optuna,
}


def controller_class(name: str) -> type[Controller]:
    """The class registered under ``name``; the error for an unknown name lists the valid ones."""
    if name not in CONTROLLERS:
        raise ControllerError(f"unknown controller {name!r}; valid: {sorted(CONTROLLERS)}")
    return CONTROLLERS[name]()


def controller_options(name: str) -> list[str]:
    """The option names ``make_controller(name, ...)`` accepts besides ``objectives`` and ``seed``."""
    names: list[str] = []
    for cls in (controller_class(name), Controller):  # a subclass passes the base options on as **base
        params = inspect.signature(cls.__init__).parameters
        names += [p for p, spec in params.items() if spec.kind is spec.KEYWORD_ONLY and p not in ("objectives", "seed")]
        if not any(spec.kind is spec.VAR_KEYWORD for spec in params.values()):
            break
    return names


def make_controller(
    name: str,
    space: SpaceLike,
    *,
    objectives: Iterable[Objective | Sequence[str] | str] | None = None,
    seed: int = 0,
    **options: Any,
) -> Controller:
    """Build the controller registered under ``name``.

    Args:
        name: ``random``, ``evolution``, ``rl`` or ``optuna``.
        space: The search space.
        objectives: Objective names and directions; ``None`` means one maximised scalar ``reward``.
        seed: Seed of every random generator the controller holds.
        **options: The controller's own options (see ``docs/controllers.md``).

    Raises:
        ControllerError: unknown controller or option, or an invalid option value (the message names it).
    """
    valid = controller_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ControllerError(f"{name}: unknown option(s) {unknown}; valid options: {valid}")
    return controller_class(name)(space, objectives=objectives, seed=seed, **options)


def restore_controller(state: Mapping[str, Any], space: SpaceLike) -> Controller:
    """Build a controller from a saved ``state_dict`` (its type, seed, objectives and options) and load the state."""
    try:
        name, seed, objectives, options = state["type"], state["seed"], state["objectives"], state["options"]
    except (KeyError, TypeError) as exc:
        raise ControllerError(f"controller state lacks {exc}; is it a controller state_dict?") from exc
    controller = make_controller(name, space, objectives=[tuple(o) for o in objectives], seed=seed, **options)
    controller.load_state_dict(state)
    return controller


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
