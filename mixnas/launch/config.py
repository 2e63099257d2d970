"""Experiment YAML -> a validated, frozen :class:`ExperimentConfig`.

An experiment file is read once with ``yaml.safe_load``, ``--set key.path=value`` overrides are applied to the raw
mapping, and then every section is checked here, before anything starts: unknown keys, wrong types and values out
of range raise :class:`~mixnas.errors.ConfigError` with the file, the YAML path, the value seen and what is allowed
(``experiments/q.yaml: execution.max_concurrent: expected an integer >= 1, got 0``).

The validated config is plain frozen dataclasses. :meth:`ExperimentConfig.to_dict` gives the fully resolved
mapping (defaults filled in, relative paths made absolute) that a run saves as ``config.yaml``; loading that file
again gives an equal config, which is how ``mixnas resume`` notices a changed experiment.

The reference of every key is ``docs/experiments.md``.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from mixnas.errors import ConfigError, MixnasError
from mixnas.textio import parse_yaml
from mixnas.textio import read_yaml as textio_read_yaml

CONFIG_FORMAT_VERSION = 1

CONTROLLER_TYPES = ("random", "evolution", "rl", "optuna")
EVALUATOR_TYPES = ("proxy", "tabular")
LATENCY_TYPES = ("none", "lut", "measure")
LATENCY_BACKENDS = ("torch", "onnxruntime")
LUT_OPTIONS = ("calibrated", "measure_missing")  # LatencyPredictor keyword options
REWARD_TYPES = ("mnasnet", "pareto", "metric")
MNASNET_MODES = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
SCHEDULERS = ("none", "asha")
LOG_LEVELS = ("debug", "info", "warning", "error")
DIRECTIONS = ("max", "min")
_MAX_CONFIG_INT = 10**18  # no count, size or seed in a config comes near this
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------------------
class _Node:
    """A mapping being validated, with its file and YAML path, so every error names both."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        self.path = path
        self.source = source
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self.error(path, data, "a mapping")
        self.data = dict(data)
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, where: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where or '<top level>'}: expected {allowed}, got {value!r}")

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.source}: {self.where(key)}: required key is missing")
            return default
        return self.data[key]

    def child(self, key: str) -> _Node:
        return _Node(self.get(key), self.where(key), self.source)

    def string(self, key: str, default: str | None = None, *, required: bool = False,
               choices: tuple[str, ...] | None = None) -> str | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(self.where(key), value, "a non-empty string")
        if choices is not None and value not in choices:
            raise self.error(self.where(key), value, f"one of {list(choices)}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None,
                required: bool = False) -> int | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_CONFIG_INT:
            # Far beyond any count or seed; also keeps repr() (4,300-digit limit) and float() from failing later.
            raise ConfigError(f"{self.source}: {self.where(key)}: expected {allowed} of at most {_MAX_CONFIG_INT}, "
                              f"got an integer of about {int(value.bit_length() * 0.30103) + 1} digits")
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(self.where(key), value, allowed)
        return value

    def number(self, key: str, default: float | None = None, *, minimum: float | None = None,
               positive: bool = False, required: bool = False) -> float | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
            # float() (and math.isfinite) of an int beyond the float range overflows
            raise ConfigError(f"{self.source}: {self.where(key)}: expected a finite number, got an integer of "
                              f"about {int(value.bit_length() * 0.30103) + 1} digits")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and positive:
            ok = value > 0
        if ok and minimum is not None:
            ok = value >= minimum
        if not ok:
            what = "a positive number" if positive else "a number" + (f" >= {minimum}" if minimum is not None else "")
            raise self.error(self.where(key), value, what)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(self.where(key), value, "true or false")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(self.where(key), value, "a mapping")
        return copy.deepcopy(dict(value))

    def path_value(self, key: str, base: Path, *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        return str((base / Path(value).expanduser()).resolve())

    def finish(self) -> None:
        """Reject keys no one asked for (typos must not be silently ignored)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = self.where(unknown[0])
            raise ConfigError(
                f"{self.source}: {where}: unknown key; allowed keys here: {sorted(self.used)}"
            )


# --------------------------------------------------------------------------------------------------------------
# the frozen config
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControllerConfig:
    """Which controller proposes architectures (``controllers.make_controller`` type and keyword options)."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluatorConfig:
    """How a candidate is scored: the proxy trainer (data, subset, budget, training) or a tabular benchmark."""

    type: str
    data: Any = None
    subset: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    table: str | None = None
    table_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencyConfig:
    """Latency of a candidate: predicted from a lookup table, measured on the worker, or not used."""

    type: str = "none"
    lut: str | None = None
    backend: str = "torch"
    threads: int = 1
    batch_size: int = 1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """One metric the search optimises and its direction."""

    metric: str
    direction: str


@dataclass(frozen=True)
class RewardConfig:
    """Scalar MnasNet reward ``acc * (cost / target) ** w``, a single metric, or Pareto objectives."""

    type: str
    accuracy: str = "top1"
    cost: str = "latency_ms"
    target: float | None = None
    alpha: float = -0.07
    beta: float = -0.07
    metric: str = "top1"
    direction: str = "max"
    objectives: tuple[Objective, ...] = ()
    reference_point: tuple[float, ...] | None = None

    @property
    def controller_objectives(self) -> tuple[Objective, ...]:
        """What the controller is told: one ``reward`` to maximise, or the Pareto objectives."""
        if self.type == "pareto":
            return self.objectives
        if self.type == "metric":
            return (Objective(self.metric, self.direction),)
        return (Objective("reward", "max"),)


@dataclass(frozen=True)
class ConstraintsConfig:
    """Hard limits; a candidate that exceeds one is recorded as ``infeasible`` without training."""

    max_latency_ms: float | None = None
    max_params: int | None = None
    max_macs: int | None = None


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping of trials: none, or asynchronous successive halving (ASHA, Li et al. 2020)."""

    type: str = "none"
    metric: str = "top1"
    grace_period: int = 1
    reduction_factor: int = 3


DEFAULT_ORDERING_WINDOW = 4
MAX_CONCURRENT = 4096  # actors of one search; more than any cluster places, and each costs a worker process
MAX_TRIALS = 10**7
MAX_CPU_PER_TRIAL = 1024.0
MAX_GPU_PER_TRIAL = 64.0


@dataclass(frozen=True)
class ExecutionConfig:
    """How trials run on Ray."""

    trials: int
    max_concurrent: int = 1
    cpu: float = 1.0
    gpu: float = 0.0
    address: str = "local"
    max_failures_per_trial: int = 1
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    deterministic: bool = False
    ordering_window: int = DEFAULT_ORDERING_WINDOW
    max_consecutive_failures: int = 5


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = True
    level: str = "info"


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment. Build it with :func:`load_config` or :func:`config_from_dict`."""

    name: str
    output_dir: str
    seed: int
    search_space: Any
    controller: ControllerConfig
    evaluator: EvaluatorConfig
    latency: LatencyConfig
    reward: RewardConfig
    constraints: ConstraintsConfig
    execution: ExecutionConfig
    logging: LoggingConfig
    description: str = ""
    source: str = "<config>"

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain YAML-able data (what ``config.yaml`` in a run directory holds)."""
        ev = self.evaluator
        evaluator: dict[str, Any] = {"type": ev.type}
        if ev.type == "proxy":
            evaluator.update(data=copy.deepcopy(ev.data), subset=dict(ev.subset), budget=dict(ev.budget),
                             training=dict(ev.training))
        else:
            evaluator.update(table=ev.table, options=dict(ev.table_options))
        lat = self.latency
        latency: dict[str, Any] = {"type": lat.type}
        if lat.type == "lut":
            latency["lut"] = lat.lut
        if lat.type == "measure":
            latency.update(backend=lat.backend, threads=lat.threads, batch_size=lat.batch_size)
        if lat.type != "none" and lat.options:
            latency["options"] = dict(lat.options)
        r = self.reward
        reward: dict[str, Any] = {"type": r.type}
        if r.type == "mnasnet":
            reward.update(accuracy=r.accuracy, cost=r.cost, target=r.target, alpha=r.alpha, beta=r.beta)
        elif r.type == "metric":
            reward.update(metric=r.metric, direction=r.direction)
        else:
            reward["objectives"] = [{"metric": o.metric, "direction": o.direction} for o in r.objectives]
            reward["reference_point"] = list(r.reference_point) if r.reference_point is not None else None
        ex = self.execution
        s = ex.scheduler
        scheduler: dict[str, Any] = {"type": s.type}
        if s.type == "asha":
            scheduler.update(metric=s.metric, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
        return {
            "format_version": CONFIG_FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "output_dir": self.output_dir,
            "seed": self.seed,
            "search_space": copy.deepcopy(self.search_space),
            "controller": {"type": self.controller.type, "options": copy.deepcopy(self.controller.options)},
            "evaluator": evaluator,
            "latency": latency,
            "reward": reward,
            "constraints": {
                "max_latency_ms": self.constraints.max_latency_ms,
                "max_params": self.constraints.max_params,
                "max_macs": self.constraints.max_macs,
            },
            "execution": {
                "trials": ex.trials,
                "max_concurrent": ex.max_concurrent,
                "resources_per_trial": {"cpu": ex.cpu, "gpu": ex.gpu},
                "address": ex.address,
                "max_failures_per_trial": ex.max_failures_per_trial,
                "scheduler": scheduler,
                "deterministic": ex.deterministic,
                "ordering_window": ex.ordering_window,
                "max_consecutive_failures": ex.max_consecutive_failures,
            },
            "logging": {"tensorboard": self.logging.tensorboard, "level": self.logging.level},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------------------
def _search_space(node: _Node, base: Path) -> Any:
    value = node.get("search_space", required=True)
    if isinstance(value, str) and value:
        if value.endswith((".yaml", ".yml")) or "/" in value:
            return str((base / Path(value).expanduser()).resolve())
        return value
    if isinstance(value, Mapping):
        spec = copy.deepcopy(dict(value))
        for key in ("extends",):
            ref = spec.get(key)
            if isinstance(ref, str) and (ref.endswith((".yaml", ".yml")) or "/" in ref):
                spec[key] = str((base / Path(ref).expanduser()).resolve())
        return spec
    raise node.error("search_space", value, "a preset name, a YAML file path or an inline space mapping")


def _controller(node: _Node) -> ControllerConfig:
    c = node.child("controller")
    cfg = ControllerConfig(type=c.string("type", required=True, choices=CONTROLLER_TYPES), options=c.mapping("options"))
    c.finish()
    from mixnas.controllers.registry import controller_options

    valid = controller_options(cfg.type)
    for key in cfg.options:
        if key not in valid:
            raise ConfigError(f"{c.source}: controller.options.{key}: unknown option of the {cfg.type} controller; "
                              f"allowed: {valid}")
    return cfg


def _evaluator(node: _Node, base: Path) -> EvaluatorConfig:
    e = node.child("evaluator")
    kind = e.string("type", required=True, choices=EVALUATOR_TYPES)
    if kind == "tabular":
        cfg = EvaluatorConfig(type=kind, table=e.path_value("table", base, required=True),
                              table_options=e.mapping("options"))
        _check_tabular_options(cfg.table_options, e)
    else:
        data = e.get("data", required=True)
        if isinstance(data, str):
            data = {"source": data}
        if not isinstance(data, Mapping):
            raise e.error(e.where("data"), data, "'digits', 'synthetic', a path, or a mapping with 'source'")
        data = copy.deepcopy(dict(data))
        source = data.get("source")
        if isinstance(source, str) and source not in ("digits", "synthetic"):
            data["source"] = str((base / Path(source).expanduser()).resolve())
        cfg = EvaluatorConfig(type=kind, data=data, subset=e.mapping("subset"), budget=e.mapping("budget"),
                              training=e.mapping("training"))
        _check_proxy(cfg, e)
    e.finish()
    return cfg


TABULAR_GIVEN = ("space",)  # TabularEvaluator arguments the trial passes itself, not options


def _check_tabular_options(options: Mapping[str, Any], e: _Node) -> None:
    """``evaluator.options`` against the keyword arguments of :class:`TabularEvaluator` (names and types)."""
    from mixnas.evaluators.tabular import TabularEvaluator

    params = {name: p for name, p in inspect.signature(TabularEvaluator).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in TABULAR_GIVEN}
    hints = typing.get_type_hints(TabularEvaluator.__init__)
    for key, value in options.items():
        where = f"{e.where('options')}.{key}"
        if key not in params:
            raise ConfigError(f"{e.source}: {where}: unknown option of the tabular evaluator; allowed: {list(params)}")
        if not _fits_type(value, hints.get(key, Any)):
            raise e.error(where, value, _describe_type(hints.get(key, Any)))


_UNIONS = (typing.Union, types.UnionType)
_SEQUENCES = (collections.abc.Sequence, list, tuple)


def _fits_type(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint (str, int, float, bool, None, sequences of them, unions)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in _UNIONS:
        return any(_fits_type(value, a) for a in args)
    if origin in _SEQUENCES:
        return isinstance(value, list) and all(_fits_type(v, args[0] if args else Any) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, str) if issubclass(hint, (str, Path)) else isinstance(value, hint)
    return True  # a hint this check does not know: the evaluator's own checks apply


def _describe_type(hint: Any) -> str:
    """``"a list of strings or null"`` for ``Sequence[str] | None``."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        return " or ".join(_describe_type(a) for a in args)
    if origin in _SEQUENCES:
        return f"a list of {_describe_type(args[0]).split(' ', 1)[-1]}s" if args else "a list"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


SUBSET_KEYS = ("classes", "images_per_class", "val_fraction", "seed")
BUDGET_KEYS = ("epochs", "steps", "seconds")


def _check_proxy(cfg: EvaluatorConfig, e: _Node) -> None:
    """Validate the proxy sections with the trainer's own checks, so the messages name this file's paths."""
    from mixnas.evaluators.data import DataSpec
    from mixnas.evaluators.proxy import ProxyConfig

    for key in cfg.subset:
        if key not in SUBSET_KEYS:
            raise ConfigError(f"{e.source}: {e.where('subset')}.{key}: unknown key; allowed keys here: {list(SUBSET_KEYS)}")
    for key in cfg.budget:
        if key not in BUDGET_KEYS:
            raise ConfigError(f"{e.source}: {e.where('budget')}.{key}: unknown key; allowed keys here: {list(BUDGET_KEYS)}")
    for key in cfg.training:
        if key in BUDGET_KEYS:
            raise ConfigError(f"{e.source}: {e.where('training')}.{key}: the budget belongs in evaluator.budget")
    overlap = sorted(set(cfg.data) & set(SUBSET_KEYS))
    if overlap:
        raise ConfigError(f"{e.source}: {e.where('data')}.{overlap[0]}: belongs in evaluator.subset")
    try:
        DataSpec.from_dict({**cfg.data, **cfg.subset}, where=f"{e.source}: {e.where('data')}")
        # each part alone first, so that an error names the section the key is in
        ProxyConfig.from_dict(cfg.budget, where=f"{e.source}: {e.where('budget')}")
        ProxyConfig.from_dict(cfg.training, where=f"{e.source}: {e.where('training')}")
        ProxyConfig.from_dict({**cfg.training, **cfg.budget}, where=f"{e.source}: {e.where('training')}")
    except MixnasError as exc:
        raise ConfigError(str(exc)) from None


def proxy_parts(cfg: EvaluatorConfig) -> tuple[Any, Any]:
    """The proxy trainer's ``(DataSpec, ProxyConfig)`` of a validated evaluator section."""
    from mixnas.evaluators.data import DataSpec
    from mixnas.evaluators.proxy import ProxyConfig

    return DataSpec.from_dict({**cfg.data, **cfg.subset}), ProxyConfig.from_dict({**cfg.training, **cfg.budget})


def _latency(node: _Node, base: Path) -> LatencyConfig:
    raw = node.get("latency")
    if raw is None or raw == "none":
        return LatencyConfig()
    lat = _Node(raw, "latency", node.source)
    kind = lat.string("type", "none", choices=LATENCY_TYPES)
    if kind == "lut":
        opts = _Node(lat.mapping("options"), lat.where("options"), lat.source)
        # calibrated: only when given (the predictor's default applies); measure_missing: on unless switched
        # off, so that a search meeting a signature the table lacks measures it instead of failing the trial
        options = {key: opts.boolean(key, False) for key in LUT_OPTIONS if opts.get(key) is not None}
        options["measure_missing"] = opts.boolean("measure_missing", True)
        opts.finish()
        cfg = LatencyConfig(type=kind, lut=lat.path_value("lut", base, required=True), options=options)
    elif kind == "measure":
        cfg = LatencyConfig(
            type=kind,
            backend=lat.string("backend", "torch", choices=LATENCY_BACKENDS),
            threads=lat.integer("threads", 1, minimum=1),
            batch_size=lat.integer("batch_size", 1, minimum=1),
            options=lat.mapping("options"),
        )
        _check_measure_options(cfg, lat)
    else:
        cfg = LatencyConfig()
    lat.finish()
    return cfg


def _check_measure_options(cfg: LatencyConfig, lat: _Node) -> None:
    """The measurement settings of a ``measure`` latency section, checked now rather than in every trial."""
    from mixnas.evaluators.latency.measure import MeasureConfig

    where = lat.where("options")
    top_level = ("backend", "threads", "batch_size")
    allowed = [f.name for f in dataclasses.fields(MeasureConfig) if f.name not in top_level]
    for key in cfg.options:
        if key not in allowed:
            hint = f" (set latency.{key} instead)" if key in top_level else ""
            raise ConfigError(f"{lat.source}: {where}.{key}: unknown key{hint}; allowed keys here: {allowed}")
    try:
        MeasureConfig(backend=cfg.backend, threads=cfg.threads, batch_size=cfg.batch_size, **cfg.options)
    except (MixnasError, TypeError, ValueError) as exc:
        raise ConfigError(f"{lat.source}: {where}: {exc}") from None


def _objectives(r: _Node) -> tuple[Objective, ...]:
    raw = r.get("objectives", required=True)
    if not isinstance(raw, list) or len(raw) < 2:
        raise r.error(r.where("objectives"), raw, "a list of at least two {metric, direction} mappings")
    out = []
    for i, item in enumerate(raw):
        o = _Node(item, f"{r.where('objectives')}[{i}]", r.source)
        out.append(Objective(o.string("metric", required=True), o.string("direction", "max", choices=DIRECTIONS)))
        o.finish()
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise r.error(r.where("objectives"), names, "distinct metrics")
    return tuple(out)


def _reward(node: _Node, latency: LatencyConfig) -> RewardConfig:
    r = node.child("reward")
    kind = r.string("type", "metric", choices=REWARD_TYPES)
    if kind == "mnasnet":
        mode = r.string("mode", "soft", choices=tuple(MNASNET_MODES))
        alpha, beta = MNASNET_MODES[mode]
        cost = r.string("cost", "latency_ms")
        if cost == "latency_ms" and latency.type == "none":
            raise ConfigError(
                f"{r.source}: reward.cost: 'latency_ms' needs a latency section (type lut or measure); "
                "set latency, or use another cost metric such as 'macs' or 'params'"
            )
        cfg = RewardConfig(
            type=kind,
            accuracy=r.string("accuracy", "top1"),
            cost=cost,
            target=r.number("target", required=True, positive=True),
            alpha=r.number("alpha", alpha),
            beta=r.number("beta", beta),
        )
        r.used.add("mode")
    elif kind == "metric":
        cfg = RewardConfig(type=kind, metric=r.string("metric", "top1"),
                           direction=r.string("direction", "max", choices=DIRECTIONS))
    else:
        objectives = _objectives(r)
        ref = r.get("reference_point")
        if ref is not None:
            if (not isinstance(ref, list) or len(ref) != len(objectives)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ref)):
                raise r.error(r.where("reference_point"), ref, f"a list of {len(objectives)} numbers (one per objective)")
            ref = tuple(float(v) for v in ref)
        cfg = RewardConfig(type=kind, objectives=objectives, reference_point=ref)
    r.finish()
    return cfg


def _constraints(node: _Node) -> ConstraintsConfig:
    c = node.child("constraints")
    cfg = ConstraintsConfig(
        max_latency_ms=c.number("max_latency_ms", positive=True),
        max_params=c.integer("max_params", minimum=1),
        max_macs=c.integer("max_macs", minimum=1),
    )
    c.finish()
    return cfg


def _address(x: _Node) -> str:
    value = x.string("address", "local")
    if value in ("local", "auto") or value.startswith("ray://") or re.match(r"^[\w.-]+:\d+$", value):
        return value
    raise x.error(x.where("address"), value, "'local', 'auto', 'ray://HOST:PORT' or 'HOST:PORT'")


def _scheduler(x: _Node) -> SchedulerConfig:
    raw = x.get("scheduler", "none")
    if isinstance(raw, str):
        if raw not in SCHEDULERS:
            raise x.error(x.where("scheduler"), raw, f"one of {list(SCHEDULERS)} or a mapping with 'type'")
        return SchedulerConfig(type=raw)
    s = _Node(raw, x.where("scheduler"), x.source)
    cfg = SchedulerConfig(
        type=s.string("type", "none", choices=SCHEDULERS),
        metric=s.string("metric", "top1"),
        grace_period=s.integer("grace_period", 1, minimum=1),
        reduction_factor=s.integer("reduction_factor", 3, minimum=2),
    )
    s.finish()
    return cfg


def _execution(node: _Node) -> ExecutionConfig:
    x = node.child("execution")
    res = x.child("resources_per_trial")
    cpu = res.number("cpu", 1.0, positive=True)
    gpu = res.number("gpu", 0.0, minimum=0.0)
    for key, value, limit in (("cpu", cpu, MAX_CPU_PER_TRIAL), ("gpu", gpu, MAX_GPU_PER_TRIAL)):
        if value > limit:
            raise res.error(res.where(key), value, f"at most {limit:g} per trial")
    res.finish()
    cfg = ExecutionConfig(
        trials=_bounded(x, "trials", None, 1, MAX_TRIALS, required=True),
        max_concurrent=_bounded(x, "max_concurrent", 1, 1, MAX_CONCURRENT),
        cpu=cpu,
        gpu=gpu,
        address=_address(x),
        max_failures_per_trial=_bounded(x, "max_failures_per_trial", 1, 0, 100),
        scheduler=_scheduler(x),
        deterministic=x.boolean("deterministic", False),
        ordering_window=_bounded(x, "ordering_window", DEFAULT_ORDERING_WINDOW, 1, MAX_CONCURRENT),
        max_consecutive_failures=_bounded(x, "max_consecutive_failures", 5, 0, MAX_TRIALS),
    )
    x.finish()
    return cfg


def _bounded(node: _Node, key: str, default: int | None, low: int, high: int, *, required: bool = False) -> int:
    """An integer option in ``[low, high]``; the error names both ends."""
    value = node.get(key, default, required=required)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = value
        if isinstance(value, int) and abs(value) >= 10**12:  # (str() of a huge int raises)
            shown = f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
        raise node.error(node.where(key), shown, f"an integer from {low} to {high:,}")
    return value


def _logging(node: _Node) -> LoggingConfig:
    g = node.child("logging")
    cfg = LoggingConfig(tensorboard=g.boolean("tensorboard", True), level=g.string("level", "info", choices=LOG_LEVELS))
    g.finish()
    return cfg


# --------------------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------------------
def config_from_dict(data: Any, *, source: str = "<config>", base_dir: str | Path = ".",
                     check_space: bool = True) -> ExperimentConfig:
    """Validate a raw experiment mapping.

    Args:
        data: what ``yaml.safe_load`` returned (after ``--set`` overrides).
        source: the file name errors start with.
        base_dir: relative paths in the file (space, table, LUT, data) are resolved against this folder.
        check_space: also load the search space, so a bad space fails here rather than in the runner.
    """
    top = _Node(data, "", source)
    base = Path(base_dir)
    version = top.integer("format_version", CONFIG_FORMAT_VERSION, minimum=1)
    if version != CONFIG_FORMAT_VERSION:
        raise top.error("format_version", version, f"{CONFIG_FORMAT_VERSION} (this mixnas reads that version)")
    name = top.string("name", required=True)
    if not _NAME_RE.match(name):
        raise top.error("name", name, "letters, digits, '_', '.', '-' (it names the run directory)")
    latency = _latency(top, base)
    cfg = ExperimentConfig(
        name=name,
        description=top.get("description", "") or "",
        output_dir=str(Path(top.string("output_dir", "runs")).expanduser()),
        seed=top.integer("seed", 0, minimum=0),
        search_space=_search_space(top, base),
        controller=_controller(top),
        evaluator=_evaluator(top, base),
        latency=latency,
        reward=_reward(top, latency),
        constraints=_constraints(top),
        execution=_execution(top),
        logging=_logging(top),
        source=source,
    )
    if not isinstance(cfg.description, str):
        raise top.error("description", cfg.description, "a string")
    top.finish()
    _cross_checks(cfg)
    if check_space:
        load_search_space(cfg)
    return cfg


def check_files(cfg: ExperimentConfig) -> None:
    """Check, on this machine, what every trial needs: files (data set, tabular benchmark, LUT), metrics, device.

    Called before a search starts or resumes: a missing or malformed file, a reward / scheduler / constraint
    metric the table does not have, or a CUDA device this machine lacks is one error then, not a failure
    recorded in every trial. Not part of :func:`config_from_dict`, so that a config can be validated (and the
    example experiments tested) on a machine without the data. The device is checked only for
    ``execution.address: local``: the workers of a cluster are other machines.
    """
    from mixnas.search_space.space import StageSpace

    src = cfg.source
    space = load_search_space(cfg)
    architectures = isinstance(space, StageSpace)
    if cfg.evaluator.type == "proxy":
        from mixnas.evaluators.data import BUILTIN_SOURCES

        source = cfg.evaluator.data.get("source")
        if isinstance(source, str) and source not in BUILTIN_SOURCES and not Path(source).exists():
            raise ConfigError(f"{src}: evaluator.data.source: no such file or folder {source!r} (or use one "
                              f"of the built-in data sets {list(BUILTIN_SOURCES)})")
        if not architectures:
            raise ConfigError(f"{src}: search_space: the proxy evaluator trains architectures, but this space "
                              "decodes to plain choices (a 'choices' space needs evaluator.type 'tabular')")
    if cfg.evaluator.type == "tabular":
        if not Path(str(cfg.evaluator.table)).is_file():
            raise ConfigError(f"{src}: evaluator.table: no such file {cfg.evaluator.table!r}")
        _check_metrics(cfg, (*_table_metrics(cfg, space), *(ARCH_METRICS if architectures else ())), architectures,
                       f"the table {Path(str(cfg.evaluator.table)).name}")
    if cfg.latency.type == "lut":
        from mixnas.evaluators.latency.lut import LatencyTable

        try:
            LatencyTable.load(str(cfg.latency.lut))
        except (MixnasError, OSError) as exc:
            raise ConfigError(f"{src}: latency.lut: {exc}") from None
    if cfg.execution.address == "local":
        _check_devices(cfg)


ARCH_METRICS = ("params", "macs")  # counted for every architecture before it is scored
LATENCY_METRICS = ("latency_ms", "latency_std_ms")  # with a latency section, for architectures


def _table_metrics(cfg: ExperimentConfig, space: Any) -> tuple[str, ...]:
    """The metric columns of the tabular benchmark, read from the table (which is checked on the way)."""
    from mixnas.evaluators.tabular import TabularEvaluator

    try:
        return tuple(TabularEvaluator(str(cfg.evaluator.table), space=space, **cfg.evaluator.table_options).metrics)
    except TypeError as exc:
        raise ConfigError(f"{cfg.source}: evaluator.options: {exc}") from None
    except (MixnasError, OSError) as exc:
        raise ConfigError(f"{cfg.source}: evaluator.table: {exc}") from None


def _metric_uses(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(YAML path, metric) of every metric a trial must report for the reward, scheduler and constraints."""
    r, c = cfg.reward, cfg.constraints
    if r.type == "mnasnet":
        uses = [("reward.accuracy", r.accuracy), ("reward.cost", r.cost)]
    elif r.type == "metric":
        uses = [("reward.metric", r.metric)]
    else:
        uses = [(f"reward.objectives[{i}].metric", o.metric) for i, o in enumerate(r.objectives)]
    if cfg.execution.scheduler.type != "none":
        uses.append(("execution.scheduler.metric", cfg.execution.scheduler.metric))
    limits = (("max_latency_ms", "latency_ms", c.max_latency_ms), ("max_params", "params", c.max_params),
              ("max_macs", "macs", c.max_macs))
    uses += [(f"constraints.{key}", metric) for key, metric, limit in limits if limit is not None]
    return uses


def _check_metrics(cfg: ExperimentConfig, reported: tuple[str, ...], architectures: bool, what: str) -> None:
    """Every metric the config names must be one the evaluator (or the latency section) reports."""
    available = set(reported) | (set(LATENCY_METRICS) if architectures and cfg.latency.type != "none" else set())
    for where, metric in _metric_uses(cfg):
        if metric not in available:
            raise ConfigError(f"{cfg.source}: {where}: no trial reports metric {metric!r}; {what} reports "
                              f"{sorted(available)}")


def _check_devices(cfg: ExperimentConfig) -> None:
    """A CUDA device asked for must exist here (the trials of a local run run here)."""
    asked = []
    if cfg.evaluator.type == "proxy" and cfg.evaluator.training.get("device") == "cuda":
        asked.append("evaluator.training.device")
    if cfg.latency.type == "measure" and cfg.latency.options.get("device") == "cuda":
        asked.append("latency.options.device")
    if not asked:
        return
    from mixnas.evaluators.proxy import check_device

    try:
        check_device("cuda")
    except ConfigError as exc:
        raise ConfigError(f"{cfg.source}: {asked[0]}: {str(exc).removeprefix('proxy: device: ')}") from None


def _cross_checks(cfg: ExperimentConfig) -> None:
    src = cfg.source
    if cfg.constraints.max_latency_ms is not None and cfg.latency.type == "none":
        raise ConfigError(f"{src}: constraints.max_latency_ms: needs a latency section (type lut or measure), "
                          f"got latency.type 'none'")
    if cfg.execution.scheduler.type == "asha" and cfg.evaluator.type != "proxy":
        raise ConfigError(f"{src}: execution.scheduler: 'asha' stops training early and needs evaluator.type "
                          f"'proxy', got {cfg.evaluator.type!r}")
    if cfg.execution.scheduler.type == "asha" and cfg.execution.deterministic:
        raise ConfigError(f"{src}: execution.scheduler: 'asha' decisions depend on timing, so it cannot be "
                          "combined with execution.deterministic: true")
    if cfg.evaluator.type == "proxy":  # a table's metrics are known only once it is read (check_files)
        from mixnas.evaluators.proxy import METRICS

        _check_metrics(cfg, METRICS, True, "the proxy evaluator")


def load_search_space(cfg: ExperimentConfig) -> Any:
    """Load the config's search space, turning any error into a :class:`ConfigError` that names the file."""
    from mixnas.search_space.space import load_space

    try:
        return load_space(copy.deepcopy(cfg.search_space))
    except ConfigError as exc:
        if cfg.source in str(exc):
            raise
        raise ConfigError(f"{cfg.source}: search_space: {exc}") from None
    except (MixnasError, ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"{cfg.source}: search_space: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value (``3`` is an int, ``[1, 2]`` a list)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    shown = text if len(text) <= 120 else f"{text[:120]}... ({len(text)} characters)"
    if not sep or not all(parts):
        raise ConfigError(f"--set {shown!r}: expected KEY.PATH=VALUE, e.g. execution.trials=10")
    if len(parts) > 16:
        raise ConfigError(f"--set {shown!r}: the key path has {len(parts)} parts; a config is at most 16 deep")
    if not raw.strip():
        return parts, ""
    try:
        value = parse_yaml(raw, "the value", ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"--set {shown!r}: {exc}") from None
    return parts, value


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Apply ``--set`` overrides to a raw config mapping (a copy); missing intermediate mappings are created."""
    if not isinstance(data, Mapping):
        return data  # validation reports what the file holds instead of a mapping
    data = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(parts[: i + 1])} is not a mapping, got {nxt!r}")
            node = nxt
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` a file, with errors that name it."""
    return textio_read_yaml(path, ConfigError)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                check_space: bool = True) -> ExperimentConfig:
    """Read, override and validate an experiment file."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides)
    return config_from_dict(data, source=str(path), base_dir=path.resolve().parent, check_space=check_space)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two resolved configs, one ``path: old -> new`` line each."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        where = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines.extend(config_diff(a, b, where))
        elif a != b:
            lines.append(f"{where}: {a!r} -> {b!r}")
    return lines


def describe_objectives(objectives: tuple[Objective, ...]) -> str:
    return ", ".join(f"{o.direction} {o.metric}" for o in objectives)

