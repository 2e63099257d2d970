"""The controller protocol: ``ask`` / ``tell`` / ``state_dict`` / ``load_state_dict``, and what every controller shares.

A controller proposes encodings of a search space and learns from their results. It never trains, sleeps, writes
files or talks to Ray; the launcher owns the loop::

    controller = make_controller("evolution", space, objectives=[Objective("acc", "max")], seed=0)
    s = controller.ask()                                  # Suggestion(id, encoding)
    controller.tell(s.id, Result("ok", {"acc": 0.71}))    # or Result("failed", reason=...), Result("pruned", ...)
    state = controller.state_dict()                       # JSON-able; load_state_dict(state) resumes exactly

Many suggestions may be out at once (asynchronous search). Ids are issued by a counter (``"000000"``,
``"000001"``, ...), so they are deterministic and an id that is neither pending nor newer than the counter has been
told already. With ``avoid_duplicates`` (the default) a controller does not propose an encoding that is pending or
was told before, until every encoding of the space has been seen: it asks its algorithm again a bounded number of
times, then takes a random unseen encoding, and only if none can be found does it allow a repeat.

What is known before training: the launcher may give a controller a function (:meth:`Controller.use_costs`) that
returns, for any encoding, the :class:`Known` metrics that cost no training (params, MACs, the latency table's
prediction) and the known factor of an objective (the MnasNet reward's latency term). A controller calls it through
:meth:`Controller.known`; it stays a pure function of the encoding for the controller (the launcher journals every
answer, so a replay sees the same), and a controller knows no files, Ray or torch. Without one, ``known`` answers
nothing known.

Subclasses implement ``_propose`` (the algorithm's next encoding) and ``_observe`` (learn from a told result), and
optionally ``_discard`` / ``_on_ask`` / ``_state`` / ``_load_state``; they hold every random generator they use and
put its state into ``state_dict``.
"""

from __future__ import annotations

import abc
import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import numpy as np

from mixnas import bounds
from mixnas.bounds import Range
from mixnas.errors import ControllerError
from mixnas.outcome import Status
from mixnas.pareto import Objective

logger = logging.getLogger(__name__)

Encoding = tuple[int, ...]

FORMAT_VERSION = 1
# Spaces at most this large are enumerated to find an unseen encoding once the algorithm keeps repeating itself.
_ENUMERATE_LIMIT = 4096


class SpaceLike(Protocol):
    """What a controller needs from a search space (``mixnas.search_space.spaces``)."""

    @property
    def dimensions(self) -> Sequence[Any]: ...  # each has ``.name`` and ``.choices``

    @property
    def cardinality(self) -> int: ...

    def sample(self, rng: np.random.Generator) -> Encoding: ...

    def mutate(self, encoding: Encoding, rng: np.random.Generator, n: int = 1) -> Encoding: ...

    def is_feasible(self, encoding: Encoding) -> bool: ...


@dataclass(frozen=True)
class Known:
    """What is known about an encoding before it is trained.

    Attributes:
        metrics: metric name -> value known without training (``params``, ``macs``, ``latency_ms`` predicted by
            the latency table); a metric that is not known (a signature the table lacks) is absent.
        factors: objective name -> a known factor of that objective: the objective's value is the factor times a
            value learnt by training (the MnasNet reward is ``accuracy * (latency / T) ** w``: its factor is the
            latency term, known where the latency is).
        screened: why the search would not train it (over a hard limit, by these metrics), or None. Controllers
            do not propose such an encoding (:meth:`Controller.allowed`), as they do not propose one the space
            itself rules out.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    factors: Mapping[str, float] = field(default_factory=dict)
    screened: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": dict(self.metrics), "factors": dict(self.factors)}
        if self.screened is not None:
            out["screened"] = self.screened
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Known:
        screened = data.get("screened")
        return cls({str(k): float(v) for k, v in data.get("metrics", {}).items()},
                   {str(k): float(v) for k, v in data.get("factors", {}).items()},
                   None if screened is None else str(screened))


NOTHING_KNOWN = Known()
CostFn = Callable[[tuple[int, ...]], Known]


@dataclass(frozen=True)
class Told:
    """A result as a controller's algorithm hears it (:meth:`Controller._observe`).

    ``values`` are the objective values in objective order, raw (not sign-adjusted); None for a failure, a
    diverged trial, or a pruned trial without usable values.
    """

    suggestion_id: str
    encoding: Encoding
    status: Status
    values: tuple[float, ...] | None
    reason: str | None


@dataclass(frozen=True)
class Suggestion:
    """An encoding proposed by a controller, with the id to tell its result under."""

    id: str
    encoding: Encoding


@dataclass(frozen=True)
class Result:
    """What became of a suggestion.

    Args:
        status: a finished :class:`~mixnas.outcome.Status` (or its name): ``ok`` (``values`` holds every
            objective), ``pruned`` (stopped early; ``values``, if given, are the last partial measurements), or a
            failure, ``failed``, ``diverged`` or ``infeasible`` (no values; give a ``reason``).
        values: Objective values by name; extra names are allowed and ignored by controllers.
        reason: Why a trial failed or was pruned, for the record.
    """

    status: Status
    values: Mapping[str, float] | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        allowed = [s.value for s in Status if s.finished]
        try:
            status = Status(self.status)
        except ValueError:
            status = None
        if status is None or not status.finished:
            raise ControllerError(f"result status must be one of {allowed}, got {self.status!r}")
        object.__setattr__(self, "status", status)
        if self.values is not None:
            try:
                values = {str(k): float(v) for k, v in self.values.items()}
            except (AttributeError, TypeError, ValueError) as exc:
                raise ControllerError(f"result values must map names to numbers, got {self.values!r}") from exc
            object.__setattr__(self, "values", values)
        if self.status == "ok" and self.values is None:
            raise ControllerError("a result with status 'ok' needs values")


def coerce_objectives(objectives: Iterable[Objective | Sequence[str] | str] | None) -> tuple[Objective, ...]:
    """Normalise the objectives argument: ``None`` means one maximised scalar ``reward``.

    Accepts :class:`Objective` instances, ``(name, direction)`` pairs or bare names (maximised).
    """
    if objectives is None:
        return (Objective("reward", "max"),)
    if isinstance(objectives, (str, Objective)):
        objectives = [objectives]
    out: list[Objective] = []
    for item in objectives:
        if isinstance(item, Objective):
            out.append(item)
        elif isinstance(item, str):
            out.append(Objective(item))
        elif isinstance(item, Sequence) and len(item) == 2:
            out.append(Objective(str(item[0]), str(item[1])))
        else:
            raise ControllerError(f"objective must be an Objective, a name or a (name, direction) pair, got {item!r}")
    if not out:
        raise ControllerError("at least one objective is needed")
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ControllerError(f"objective names must be unique, got {names}")
    return tuple(out)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The JSON-able state of a numpy Generator (its bit generator's state holds only ints and strings)."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Restore a state saved by :func:`rng_state`."""
    try:
        rng.bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise ControllerError(f"bad random generator state: {exc}") from exc


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds derived from ``seed`` (numpy SeedSequence), one per random component."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n)]


def check_option(controller: str, option: str, value: Any, rng: Range) -> Any:
    """``value`` (a numpy number made a plain one) when it is in ``rng``; else a :class:`ControllerError` naming
    the controller, the option, the value and the range."""
    if isinstance(value, np.integer):
        value = int(value)
    elif isinstance(value, np.floating):
        value = float(value)
    if not rng.contains(value):
        raise ControllerError(f"{controller}: option {option} must be {rng.describe()}, got {value!r}")
    return float(value) if not rng.integer else value


@dataclass
class _Seen:
    """Encodings told or pending, for duplicate avoidance; insertion-ordered so the state is deterministic."""

    order: list[Encoding] = field(default_factory=list)
    members: set[Encoding] = field(default_factory=set)

    def add(self, encoding: Encoding) -> None:
        if encoding not in self.members:
            self.members.add(encoding)
            self.order.append(encoding)


class Controller(abc.ABC):
    """Base of every controller: ids, pending suggestions, result validation, duplicate avoidance and state.

    Args:
        space: The search space; encodings are tuples of choice indices, one per dimension.
        objectives: Objective names and directions; ``None`` means a single maximised scalar ``reward``.
        seed: Seed of every random generator the controller holds.
        avoid_duplicates: Do not propose an encoding that is pending or was told, until the space is exhausted.
        max_retries: How many times the algorithm is asked again when it proposes a duplicate (or an infeasible
            encoding) before a random unseen encoding is taken instead.
    """

    type_name: ClassVar[str] = ""
    supports_multi_objective: ClassVar[bool] = True
    # The range of every numeric option (mixnas.bounds): checked when the controller is built, listed in the docs.
    option_ranges: ClassVar[dict[str, Range]] = {"seed": bounds.SEED, "max_retries": bounds.integer(0, 10_000)}

    def _option(self, name: str, value: Any) -> Any:
        """The value of numeric option ``name``, checked against :attr:`option_ranges`."""
        return check_option(self.type_name, name, value, self.option_ranges[name])

    def __init__(
        self,
        space: SpaceLike,
        *,
        objectives: Iterable[Objective | Sequence[str] | str] | None = None,
        seed: int = 0,
        avoid_duplicates: bool = True,
        max_retries: int = 32,
    ) -> None:
        self.space = space
        self.objectives = coerce_objectives(objectives)
        if not self.supports_multi_objective and len(self.objectives) > 1:
            raise ControllerError(f"{self.type_name}: supports a single objective, got {self._objective_names()}")
        self.seed = check_option(self.type_name, "seed", seed, Controller.option_ranges["seed"])
        if not isinstance(avoid_duplicates, bool):
            raise ControllerError(f"{self.type_name}: option avoid_duplicates must be true or false")
        self.avoid_duplicates = avoid_duplicates
        self.max_retries = check_option(self.type_name, "max_retries", max_retries,
                                        Controller.option_ranges["max_retries"])
        self._sizes = tuple(len(d.choices) for d in space.dimensions)
        if not self._sizes or min(self._sizes) < 1:
            raise ControllerError(f"{self.type_name}: the search space has no dimensions or an empty dimension")
        self._base_rng = np.random.default_rng(derive_seeds(self.seed, 1)[0])
        self._next_id = 0
        self._pending: dict[str, Encoding] = {}
        self._seen = _Seen()
        self._n_told = 0
        self._costs: CostFn | None = None

    # ------------------------------------------------------------------ protocol

    def use_costs(self, costs: CostFn | None) -> None:
        """Give the controller what is known before training (:class:`Known` for an encoding), or take it away.

        Not part of ``state_dict``: the launcher gives it again after a resume, answering as before."""
        self._costs = costs

    def allowed(self, encoding: Encoding) -> bool:
        """Whether ``encoding`` may be proposed: the space allows it and nothing known rules it out (a hard limit)."""
        return self.space.is_feasible(encoding) and self.known(encoding).screened is None

    def known(self, encoding: Encoding) -> Known:
        """What is known about ``encoding`` before training (nothing without :meth:`use_costs`)."""
        if self._costs is None:
            return NOTHING_KNOWN
        return self._costs(tuple(int(i) for i in encoding))

    def ask(self) -> Suggestion:
        """Propose the next encoding; it stays pending until its result is told."""
        encoding = self._choose_encoding()
        suggestion_id = f"{self._next_id:06d}"
        self._next_id += 1
        self._pending[suggestion_id] = encoding
        self._seen.add(encoding)
        self._on_ask(suggestion_id, encoding)
        return Suggestion(suggestion_id, encoding)

    def tell(self, suggestion_id: str, result: Result) -> None:
        """Record the result of a pending suggestion.

        Non-finite objective values in an ``ok`` result (a diverged trial) are treated as ``failed``; non-finite
        partial values of a ``pruned`` result are dropped.

        Raises:
            ControllerError: the id is unknown or was told already, or an ``ok`` result lacks an objective.
        """
        if suggestion_id not in self._pending:
            raise ControllerError(self._bad_id_message(suggestion_id))
        if not isinstance(result, Result):
            raise ControllerError(f"tell({suggestion_id!r}, ...) expects a Result, got {type(result).__name__}")
        values = self._objective_values(suggestion_id, result)
        status = result.status
        if status.is_failure:
            values = None
        if values is not None and not all(math.isfinite(v) for v in values):
            if status is Status.OK:
                logger.warning("suggestion %s: non-finite objective values %s; treated as diverged", suggestion_id,
                               values)
                status = Status.DIVERGED
            values = None
        encoding = self._pending.pop(suggestion_id)
        self._n_told += 1
        self._observe(Told(suggestion_id, encoding, status, values, result.reason))

    @property
    def pending(self) -> dict[str, Encoding]:
        """Suggestions asked and not yet told, by id (a copy)."""
        return dict(self._pending)

    @property
    def n_told(self) -> int:
        """How many results have been told."""
        return self._n_told

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this controller is, as plain JSON-able data."""
        return {
            "format_version": FORMAT_VERSION,
            "type": self.type_name,
            "seed": self.seed,
            "objectives": [[o.name, o.direction] for o in self.objectives],
            "options": self.options(),
            "space": {"sizes": list(self._sizes), "cardinality": int(self.space.cardinality)},
            "next_id": self._next_id,
            "n_told": self._n_told,
            "pending": [[sid, list(enc)] for sid, enc in self._pending.items()],
            "seen": [list(enc) for enc in self._seen.order],
            "base_rng": rng_state(self._base_rng),
            "controller": self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the future suggestions are those the saved controller would have made.

        The controller must have been built for the same space, objectives and options.

        Raises:
            ControllerError: the state is of another version, controller type, space, objectives or options.
        """
        if not isinstance(state, Mapping):
            raise ControllerError(f"{self.type_name}: controller state must be a mapping, got {type(state).__name__}")
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise ControllerError(f"controller state format_version {version!r} is not supported (expected 1)")
        if state.get("type") != self.type_name:
            raise ControllerError(f"controller state is of type {state.get('type')!r}, not {self.type_name!r}")
        self._check_same("space sizes", state["space"]["sizes"], list(self._sizes))
        self._check_same("objectives", state["objectives"], [[o.name, o.direction] for o in self.objectives])
        saved_options = state["options"]
        for name, value in self.options().items():
            self._check_same(f"option {name}", saved_options.get(name), value)
        self._next_id = int(state["next_id"])
        self._n_told = int(state["n_told"])
        self._pending = {str(sid): tuple(int(i) for i in enc) for sid, enc in state["pending"]}
        self._seen = _Seen()
        for enc in state["seen"]:
            self._seen.add(tuple(int(i) for i in enc))
        set_rng_state(self._base_rng, state["base_rng"])
        self._load_state(state["controller"])

    def options(self) -> dict[str, Any]:
        """The options this controller was built with (JSON-able), as ``make_controller`` accepts them."""
        return {"avoid_duplicates": self.avoid_duplicates, "max_retries": self.max_retries, **self._options()}

    # ------------------------------------------------------------------ hooks for subclasses

    @abc.abstractmethod
    def _propose(self) -> Encoding:
        """The algorithm's next encoding (may be a duplicate; the base class filters)."""

    @abc.abstractmethod
    def _observe(self, told: Told) -> None:
        """Learn from a told result."""

    def _discard(self, encoding: Encoding) -> None:
        """Called for a proposal that was rejected as a duplicate or infeasible."""

    def _on_ask(self, suggestion_id: str, encoding: Encoding) -> None:
        """Called once an encoding is issued under ``suggestion_id``."""

    def _options(self) -> dict[str, Any]:
        return {}

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        del state

    # ------------------------------------------------------------------ helpers for subclasses

    def fitness(self, values: Sequence[float]) -> tuple[float, ...]:
        """Objective values turned so that larger is better for every objective."""
        return tuple(o.sign * v for o, v in zip(self.objectives, values))

    # ------------------------------------------------------------------ internals

    def _choose_encoding(self) -> Encoding:
        if not self.avoid_duplicates or len(self._seen.members) >= self.space.cardinality:
            return self._first_feasible()
        for _ in range(self.max_retries + 1):
            encoding = self._propose()
            if encoding not in self._seen.members and self.allowed(encoding):
                return encoding
            self._discard(encoding)
        unseen = self._random_unseen()
        if unseen is not None:
            return unseen
        logger.info("%s: no unseen encoding found; allowing a repeat", self.type_name)
        return self.space.sample(self._base_rng)

    def _first_feasible(self) -> Encoding:
        for _ in range(self.max_retries + 1):
            encoding = self._propose()
            if self.allowed(encoding):
                return encoding
            self._discard(encoding)
        return self.space.sample(self._base_rng)

    def _random_unseen(self) -> Encoding | None:
        """A uniformly chosen feasible encoding not seen yet (exactly, for small spaces), or ``None``."""
        if math.prod(self._sizes) <= _ENUMERATE_LIMIT:
            candidates = [
                enc
                for enc in itertools.product(*(range(k) for k in self._sizes))
                if enc not in self._seen.members and self.allowed(enc)
            ]
            if not candidates:
                return None
            return tuple(int(i) for i in candidates[int(self._base_rng.integers(len(candidates)))])
        for _ in range(4 * (self.max_retries + 1)):
            encoding = self.space.sample(self._base_rng)
            if encoding not in self._seen.members and self.allowed(encoding):
                return encoding
        return None

    def _objective_values(self, suggestion_id: str, result: Result) -> tuple[float, ...] | None:
        if result.values is None:
            return None
        missing = [o.name for o in self.objectives if o.name not in result.values]
        if missing:
            if result.status == "ok":
                raise ControllerError(
                    f"result of suggestion {suggestion_id} lacks objective(s) {missing}; "
                    f"it has {sorted(result.values)}"
                )
            return None  # partial values of a pruned or failed trial are not usable as objectives
        return tuple(result.values[o.name] for o in self.objectives)

    def _bad_id_message(self, suggestion_id: Any) -> str:
        if isinstance(suggestion_id, str) and suggestion_id.isdigit() and int(suggestion_id) < self._next_id:
            return f"suggestion {suggestion_id!r} was told already"
        shown = list(self._pending)[:5]
        more = "" if len(self._pending) <= 5 else f" and {len(self._pending) - 5} more"
        return f"unknown suggestion id {suggestion_id!r}; pending: {shown}{more}"

    def _objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def _check_same(self, what: str, saved: Any, current: Any) -> None:
        if _jsonish(saved) != _jsonish(current):
            raise ControllerError(
                f"{self.type_name}: controller state was saved with {what} = {saved!r}, this controller has {current!r}"
            )


def _jsonish(value: Any) -> Any:
    """Tuples as lists, so a value compares equal to its JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonish(v) for k, v in value.items()}
    return value
