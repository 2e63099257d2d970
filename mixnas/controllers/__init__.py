"""Controllers: propose encodings of a search space and learn from their results (ask / tell / state_dict).

``make_controller(name, space, objectives=..., seed=..., **options)`` builds ``random``, ``evolution``
(regularized evolution), ``rl`` (MnasNet's PPO controller), ``optuna`` (any Optuna sampler) or ``guided``
(predictor-guided search: a Gaussian process or ridge ensemble fitted to the told results ranks mutants of the best
ones, using the metrics known before training as they are). See ``docs/controllers.md``.
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
