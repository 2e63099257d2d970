"""The explicit registry of controllers and ``make_controller``, the one way to build one by name.

Controllers are imported lazily, so ``import mixnas.controllers`` loads neither torch (``rl``) nor optuna
(``optuna``) until such a controller is asked for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def _guided() -> type[Controller]:
    from mixnas.controllers.guided import GuidedController

    return GuidedController


CONTROLLERS: Mapping[str, Callable[[], type[Controller]]] = {
    "random": _random,
    "evolution": _evolution,
    "rl": _rl,
    "optuna": _optuna,
    "guided": _guided,
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
        name: ``random``, ``evolution``, ``rl``, ``optuna`` or ``guided``.
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
