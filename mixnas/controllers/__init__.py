"""Controllers: propose encodings of a search space and learn from their results (ask / tell / state_dict).

``make_controller(name, space, objectives=..., seed=..., **options)`` builds ``random``, ``evolution``
(regularized evolution), ``rl`` (MnasNet's PPO controller) or ``optuna`` (any Optuna sampler). See
``docs/controllers.md``.
"""

from __future__ import annotations

from mixnas.controllers.base import Controller, Encoding, Objective, Result, Suggestion
from mixnas.controllers.registry import CONTROLLERS, controller_class, make_controller, restore_controller

__all__ = [
    "CONTROLLERS",
    "Controller",
    "Encoding",
    "Objective",
    "Result",
    "Suggestion",
    "controller_class",
    "make_controller",
    "restore_controller",
]
