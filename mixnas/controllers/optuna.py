"""Any Optuna sampler as a controller: TPE, NSGA-II, GP, random, QMC, ... through Optuna's own ask / tell.

Akiba, Sano, Yanase, Ohta & Koyama, "Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019.
Each dimension of the space becomes a categorical parameter over its choice *indices*, named after the dimension;
each of our suggestion ids maps to one Optuna trial (the trial also carries the id as system attribute
``mixnas:id``). Samplers worth knowing for architecture search:

* ``TPESampler`` (Bergstra et al., NeurIPS 2011; Watanabe 2023), the default; single or multi-objective.
* ``NSGAIISampler`` (Deb et al., IEEE TEC 2002) / ``NSGAIIISampler``: genetic, multi-objective.
* ``GPSampler``: Gaussian-process Bayesian optimisation (needs scipy and torch).
* ``RandomSampler``, ``QMCSampler``, ``BruteForceSampler``; ``CmaEsSampler`` needs the ``cmaes`` package.

State: with a storage URL (the launcher passes ``sqlite:///<run>/optuna.db`` so optuna-dashboard can watch it),
the study in the storage *is* the history; ``state_dict`` adds our id map and the sampler's random states. With
the default in-memory storage, ``state_dict`` also serialises every trial and the study's attributes, and
``load_state_dict`` replays them into a fresh in-memory study (trials are re-created with their numbers, states,
values and attributes), so the sampler sees exactly the history it saw before.

Exactness caveat: ``GPSampler`` keeps its last fitted kernel parameters in memory as the starting point of the
next fit (an Optuna TODO); after a resume the first fit starts from scratch, so its suggestions can differ
slightly. All other built-in samplers resume exactly.

Duplicate avoidance without extra trials: every ``ask`` opens exactly one Optuna trial (``study.ask()`` without
parameters) and draws the sampler's proposal for it through the sampler protocol (``infer_relative_search_space``
/ ``sample_relative`` / ``sample_independent``, in the order ``Trial.suggest_*`` uses). A proposal that repeats a
pending or told encoding (or is infeasible) is drawn again *for the same trial*; only the accepted encoding is
written to the trial's parameters. The study does not change between these draws, so a model-based sampler (TPE
once its model is sharp, GP) tends to draw the same favourites again: when a draw repeats an earlier draw of the
same ask, a random unseen neighbour of it (Hamming distance 1) is proposed instead, and if it has none the base
class's random fallback comes without further draws. Such encodings are marked with the system attribute
``mixnas:fallback``. So the study holds one trial per suggestion, however often the sampler repeats itself (the
earlier design told every repeat its known values as a trial of its own: 200 asks on an 81-encoding space
made 397 (TPE) to 1,533 (two-objective TPE) trials).

``QMCSampler``: an unscrambled Sobol or Halton sequence does not depend on the seed, so every seed would propose the
same points; ``scramble`` therefore defaults to true here (scipy's randomised sequences, seeded from the
controller's seed). ``sampler_kwargs: {scramble: false}`` restores Optuna's default, and with it one sequence for
every seed.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, distribution_to_json, json_to_distribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from mixnas.controllers.base import Controller, Encoding, SpaceLike, Told, derive_seeds
from mixnas.errors import ControllerError

SAMPLER_ALIASES = {
    "tpe": "TPESampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "gp": "GPSampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "cmaes": "CmaEsSampler",
    "bruteforce": "BruteForceSampler",
}
_ID_ATTR = "mixnas:id"
_REASON_ATTR = "mixnas:reason"
_FALLBACK_ATTR = "mixnas:fallback"

logger = logging.getLogger(__name__)


def sampler_class(name: str) -> type[BaseSampler]:
    """The Optuna sampler class for an alias (``tpe``) or class name (``TPESampler``)."""
    class_name = SAMPLER_ALIASES.get(name, name)
    valid = sorted(set(SAMPLER_ALIASES) | set(SAMPLER_ALIASES.values()))
    cls = getattr(optuna.samplers, class_name, None) if class_name in SAMPLER_ALIASES.values() else None
    if cls is None:
        raise ControllerError(f"optuna: option sampler: unknown sampler {name!r}; valid: {valid}")
    return cls


class OptunaController(Controller):
    """An Optuna study driven through ask / tell.

    Args:
        space: The search space; each dimension is a categorical over choice indices.
        objectives: Objective names and directions (Optuna ``maximize`` / ``minimize``).
        seed: The sampler's seed is derived from it.
        sampler: Sampler alias or class name (``tpe``/``TPESampler``, ``nsga2``/``NSGAIISampler``, ``gp``, ...).
        sampler_kwargs: Keyword arguments of the sampler (JSON-able; not ``seed``).
        storage: Optuna storage URL, e.g. ``sqlite:///runs/x/optuna.db``; ``None`` keeps the study in memory.
        study_name: Name of the study in the storage (an existing study of that name is continued).
        avoid_duplicates: Do not repeat an encoding until the space is exhausted.
        max_retries: Re-asks of the sampler when it repeats itself, before the base class's fallback.
    """

    type_name = "optuna"

    def __init__(
        self,
        space: SpaceLike,
        *,
        sampler: str = "TPESampler",
        sampler_kwargs: Mapping[str, Any] | None = None,
        storage: str | None = None,
        study_name: str = "mixnas",
        **base: Any,
    ) -> None:
        super().__init__(space, **base)
        if not isinstance(sampler, str):
            raise ControllerError(f"optuna: option sampler must be a sampler name, got {sampler!r}")
        self._sampler_cls = sampler_class(sampler)
        self.sampler_name = self._sampler_cls.__name__
        self.sampler_kwargs = self._check_kwargs(sampler_kwargs)
        if storage is not None and not isinstance(storage, str):
            raise ControllerError(f"optuna: option storage must be a URL string or null, got {storage!r}")
        if not isinstance(study_name, str) or not study_name:
            raise ControllerError(f"optuna: option study_name must be a non-empty string, got {study_name!r}")
        self.storage = storage
        self.study_name = study_name
        self._names = [d.name for d in space.dimensions]
        self._distributions = {
            name: CategoricalDistribution(list(range(k))) for name, k in zip(self._names, self._sizes)
        }
        self.study = self._create_study(optuna.storages.InMemoryStorage() if storage is None else storage)
        self._finished_in_storage: set[int] = set()  # pending in a restored state, already told in the storage
        self._trials: dict[str, int] = {}  # pending suggestion id -> trial number
        # The ask in progress: its trial (still without parameters) and the sampler's draws for it.
        self._open: _OpenTrial | None = None

    def _check_kwargs(self, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        kwargs = dict(kwargs or {})
        if "seed" in kwargs:
            raise ControllerError("optuna: option sampler_kwargs.seed is not allowed; set the controller's seed")
        try:
            json.dumps(kwargs)
        except TypeError as exc:
            raise ControllerError(f"optuna: option sampler_kwargs must be JSON-able, got {kwargs!r}") from exc
        return kwargs

    def _make_sampler(self) -> BaseSampler:
        kwargs = dict(self.sampler_kwargs)
        if self._sampler_cls is optuna.samplers.QMCSampler:
            # Unscrambled Sobol / Halton points ignore the seed: every seed would search the same sequence.
            kwargs.setdefault("scramble", True)
            if not kwargs["scramble"]:
                logger.warning("optuna: QMCSampler with scramble false proposes the same points for every seed")
        try:
            return self._sampler_cls(seed=derive_seeds(self.seed, 2)[1], **kwargs)
        except TypeError as exc:
            raise ControllerError(f"optuna: option sampler_kwargs: {self._sampler_cls.__name__}: {exc}") from exc
        except ImportError as exc:
            raise ControllerError(
                f"optuna: option sampler: {self._sampler_cls.__name__} needs a package that is not installed: {exc}"
            ) from exc

    def _create_study(self, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
        directions = ["maximize" if o.direction == "max" else "minimize" for o in self.objectives]
        study = optuna.create_study(
            storage=storage,
            sampler=self._make_sampler(),
            study_name=self.study_name,
            directions=directions,
            load_if_exists=True,
        )
        if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
            raise ControllerError(
                f"optuna: study {self.study_name!r} in {self.storage} has directions "
                f"{[d.name.lower() for d in study.directions]}, the objectives need {directions}"
            )
        return study

    # ------------------------------------------------------------------ algorithm

    def _propose(self) -> Encoding:
        if self._open is None:
            # One trial per ask: its parameters are written only once a proposal is accepted (see ``_on_ask``),
            # so a rejected duplicate is drawn again for the same trial instead of costing a trial of its own.
            self._open = _OpenTrial(self.study.ask().number)
        current = self._open
        if current.stuck:  # further draws would repeat themselves: let the base class's fallback come quickly
            return current.draw
        draw = self._sample(current.number)
        repeated = draw in current.drawn  # every earlier draw of this ask was rejected
        current.draw = draw
        current.drawn.add(draw)
        if not repeated:
            return draw
        # The study does not change between the draws of one ask, so a model-based sampler (GP, TPE once its model
        # is sharp) keeps proposing its favourites although they were rejected: step to an unseen neighbour.
        neighbour = self._unseen_neighbour(draw)
        if neighbour is None:
            current.stuck = True
            return draw
        return neighbour

    def _unseen_neighbour(self, encoding: Encoding) -> Encoding | None:
        """A random feasible encoding at Hamming distance 1 from ``encoding`` not pending or told, or ``None``."""
        neighbours = [
            encoding[:i] + (c,) + encoding[i + 1 :]
            for i, k in enumerate(self._sizes)
            for c in range(k)
            if c != encoding[i]
        ]
        order = self._base_rng.permutation(len(neighbours))
        for j in order:
            candidate = neighbours[int(j)]
            if candidate not in self._seen.members and self.allowed(candidate):
                return candidate
        return None

    def _sample(self, number: int) -> Encoding:
        """The sampler's proposal for an open trial, drawn as ``Trial.suggest_*`` would draw it, not written."""
        sampler = self.study.sampler
        trial = copy.copy(self.study._storage.get_trial(self._trial_id(number)))  # its dicts are replaced, not changed
        fixed = trial.system_attrs.get("fixed_params", {})  # a trial enqueued by someone else keeps its values
        search_space = sampler.infer_relative_search_space(self.study, trial)
        relative = sampler.sample_relative(self.study, trial, search_space)
        for name, distribution in self._distributions.items():
            if name in fixed:
                value = fixed[name]
            elif name in relative and name in search_space:
                value = relative[name]
            else:
                value = sampler.sample_independent(self.study, trial, name, distribution)
            # Samplers that walk a tree of parameters (BruteForceSampler) read the ones drawn so far.
            trial.params = {**trial.params, name: value}
            trial.distributions = {**trial.distributions, name: distribution}
        return tuple(int(trial.params[name]) for name in self._names)

    def _on_ask(self, suggestion_id: str, encoding: Encoding) -> None:
        if self._open is None:  # not reached: the base class proposes at least once per ask
            self._open = _OpenTrial(self.study.ask().number)
        number, draw = self._open.number, self._open.draw
        self._open = None
        trial_id = self._trial_id(number)
        for name, index in zip(self._names, encoding):
            distribution = self._distributions[name]
            self.study._storage.set_trial_param(trial_id, name, distribution.to_internal_repr(index), distribution)
        if encoding != draw:  # a neighbour of a repeated draw, or the base class's random fallback
            self._set_attr(number, _FALLBACK_ATTR, True)
        self._set_attr(number, _ID_ATTR, suggestion_id)
        self._trials[suggestion_id] = number

    def _observe(self, told: Told) -> None:
        number = self._trials.pop(told.suggestion_id)
        values = told.values
        if number in self._finished_in_storage:
            self._finished_in_storage.discard(number)
            return
        if told.reason:
            self._set_attr(number, _REASON_ATTR, told.reason)
        if told.status == "ok" and values is not None:
            self._tell(number, list(values))
        elif told.status == "pruned":
            if values is not None and len(values) == 1:  # Optuna ranks a pruned trial by its last report
                self.study._storage.set_trial_intermediate_value(self._trial_id(number), 0, values[0])
            self._tell(number, state=TrialState.PRUNED)
        else:
            self._tell(number, state=TrialState.FAIL)

    def _tell(self, number: int, values: list[float] | None = None, *, state: TrialState | None = None) -> None:
        """``study.tell``, where a sampler's ``study.stop()`` is not an error.

        BruteForceSampler calls ``study.stop()`` once every point has been tried; outside ``study.optimize``
        Optuna raises ``RuntimeError`` for that, after ``tell`` has stored the trial (it does so in a
        ``finally``). The controller has no loop to stop: later asks repeat points and the base class's
        repeated-draw handling proposes neighbours or random points, as for any sampler that repeats itself.
        """
        try:
            self.study.tell(number, values, state=state)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise

    def _trial_id(self, number: int) -> int:
        return self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        self.study._storage.set_trial_system_attr(self._trial_id(number), key, value)

    # ------------------------------------------------------------------ state

    def _options(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler_name,
            "sampler_kwargs": self.sampler_kwargs,
            "storage": self.storage,
            "study_name": self.study_name,
        }

    def _state(self) -> dict[str, Any]:
        trials = self.study.get_trials(deepcopy=False)
        return {
            "sampler_rngs": [[path, _random_state_to_json(rs)] for path, rs in _random_states(self.study.sampler)],
            "trials": dict(self._trials),
            "n_trials": len(trials),
            "study": _dump_study(self.study, trials) if self.storage is None else None,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if self.storage is None:
            self.study = self._create_study(optuna.storages.InMemoryStorage())
            _replay_study(self.study, state["study"])
        else:
            self._reconcile_storage(int(state["n_trials"]), state["trials"])
        rngs = dict(_random_states(self.study.sampler))
        for path, saved in state["sampler_rngs"]:
            if path not in rngs:
                raise ControllerError(f"optuna: the sampler has no random state at {path!r} to restore")
            _set_random_state(rngs[path], saved)
        self._trials = {str(k): int(v) for k, v in state["trials"].items()}
        self._open = None

    def _reconcile_storage(self, n_saved: int, pending: Mapping[str, int]) -> None:
        """Check a persistent study against the state; fail trials opened after the state was saved."""
        trials = self.study.get_trials(deepcopy=False)
        if len(trials) < n_saved:
            raise ControllerError(
                f"optuna: study {self.study_name!r} in {self.storage} has {len(trials)} trials, "
                f"fewer than the {n_saved} of the controller state"
            )
        # A trial told after the state was last saved (the process died in between) is finished in the storage
        # but pending in the state: the caller tells it again, and that tell must not reach the study twice.
        self._finished_in_storage = {
            t.number for t in trials if t.number in set(pending.values()) and t.state != TrialState.RUNNING
        }
        for trial in trials[n_saved:]:
            if trial.state == TrialState.RUNNING:
                self._set_attr(trial.number, _REASON_ATTR, "opened after the controller state was saved")
                self._tell(trial.number, state=TrialState.FAIL)


@dataclass
class _OpenTrial:
    """The trial of the ask in progress, before its parameters are written."""

    number: int
    draw: Encoding | None = None  # the sampler's latest draw
    drawn: set[Encoding] = field(default_factory=set)  # its draws so far
    stuck: bool = False  # it repeated a draw and that draw has no unseen neighbour


def _dump_study(study: optuna.Study, trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    storage = study._storage
    return {
        "system_attrs": storage.get_study_system_attrs(study._study_id),
        "user_attrs": storage.get_study_user_attrs(study._study_id),
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "datetime_start": None if t.datetime_start is None else t.datetime_start.isoformat(),
                "datetime_complete": None if t.datetime_complete is None else t.datetime_complete.isoformat(),
                "params": {k: t.distributions[k].to_internal_repr(v) for k, v in t.params.items()},
                "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
                "user_attrs": t.user_attrs,
                "system_attrs": t.system_attrs,
                "intermediate_values": [[step, v] for step, v in t.intermediate_values.items()],
            }
            for t in trials
        ],
    }


def _replay_study(study: optuna.Study, dump: Mapping[str, Any]) -> None:
    """Re-create a dumped study's attributes and trials, in number order, in an empty study."""
    storage = study._storage
    for key, value in dump["system_attrs"].items():
        storage.set_study_system_attr(study._study_id, key, value)
    for key, value in dump["user_attrs"].items():
        storage.set_study_user_attr(study._study_id, key, value)
    for expected, t in enumerate(dump["trials"]):
        if t["number"] != expected:
            raise ControllerError(f"optuna: controller state lists trial {t['number']} where {expected} belongs")
        distributions = {k: json_to_distribution(d) for k, d in t["distributions"].items()}
        frozen = FrozenTrial(
            number=t["number"],
            state=TrialState[t["state"]],
            value=None,
            values=t["values"],
            datetime_start=_parse_time(t["datetime_start"]),
            datetime_complete=_parse_time(t["datetime_complete"]),
            params={k: distributions[k].to_external_repr(v) for k, v in t["params"].items()},
            distributions=distributions,
            user_attrs=t["user_attrs"],
            system_attrs=t["system_attrs"],
            intermediate_values={int(step): v for step, v in t["intermediate_values"]},
            trial_id=0,  # the storage assigns the id
        )
        storage.create_new_trial(study._study_id, template_trial=frozen)


def _parse_time(text: str | None) -> datetime.datetime | None:
    return None if text is None else datetime.datetime.fromisoformat(text)


def _random_states(root: object) -> list[tuple[str, Any]]:
    """Every random generator inside an Optuna sampler, by attribute path (e.g. ``_random_sampler._rng``).

    Samplers nest (TPE holds a RandomSampler, NSGA-II its crossover's generator); a generator reached by two paths
    is listed once, under the first path in sorted order.
    """
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(obj: object, path: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (np.random.RandomState, np.random.Generator)) or type(obj).__name__ == "LazyRandomState":
            found.append((path, obj))
            return
        if isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                visit(item, f"{path}[{i}]")
            return
        if type(obj).__module__.startswith("optuna") and hasattr(obj, "__dict__"):
            for name in sorted(vars(obj)):
                visit(vars(obj)[name], f"{path}.{name}" if path else name)

    visit(root, "")
    return found


def _random_state_to_json(obj: Any) -> dict[str, Any]:
    if isinstance(obj, np.random.Generator):
        return {"generator": obj.bit_generator.state}
    rs = obj if isinstance(obj, np.random.RandomState) else obj.rng
    state = rs.get_state(legacy=False)
    state["state"] = {"key": state["state"]["key"].tolist(), "pos": int(state["state"]["pos"])}
    return {"random_state": state}


def _set_random_state(obj: Any, saved: Mapping[str, Any]) -> None:
    if "generator" in saved:
        obj.bit_generator.state = saved["generator"]
        return
    state = dict(saved["random_state"])
    state["state"] = {"key": np.asarray(state["state"]["key"], dtype=np.uint32), "pos": state["state"]["pos"]}
    rs = obj if isinstance(obj, np.random.RandomState) else obj.rng
    rs.set_state(state)
