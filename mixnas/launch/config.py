"""Experiment YAML -> a validated, frozen :class:`ExperimentConfig`.

An experiment file is read once with ``yaml.safe_load``, ``--set key.path=value`` overrides are applied to the raw
mapping, and then every section is checked here, before anything starts: unknown keys, wrong types and values out
of range raise :class:`~mixnas.errors.ConfigError` with the file, the YAML path, the value seen and what is allowed
(``experiments/q.yaml: execution.max_concurrent: expected an integer >= 1, got 0``).

The validated config is plain frozen dataclasses (:mod:`mixnas.launch.experiment_config`).
:meth:`ExperimentConfig.to_dict` gives the fully resolved mapping (defaults filled in, relative paths made
absolute) that a run saves as ``config.yaml``; loading that file again gives an equal config, which is how
``mixnas resume`` notices a changed experiment.

The reference of every key is ``docs/experiments.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Any, Mapping, Sequence

from mixnas.confignode import ConfigNode as _Node
from mixnas.pareto import Objective
from mixnas.errors import ConfigError, MixnasError
from mixnas.evaluators.metrics import PROXY_METRICS, SUPERNET_METRICS
from mixnas.evaluators.reward import REWARD_PRESETS, MetricReward, MnasnetReward, ParetoReward, RewardConfig
from mixnas.launch import checks
from mixnas.launch.checks import check_controller, check_metrics, describe_type, fits_type
from mixnas.launch.experiment_config import (
    BUDGET_KEYS,
    CONFIG_RANGES as R,
    CONFIG_FORMAT_VERSION,
    DEFAULT_ORDERING_WINDOW,
    MEASURE_TOP_LEVEL,
    SUBSET_KEYS,
    ConstraintsConfig,
    ControllerConfig,
    EvaluatorConfig,
    ExecutionConfig,
    ExperimentConfig,
    LatencyConfig,
    LoggingConfig,
    LutLatency,
    MeasuredLatency,
    NoLatency,
    ProxyEvaluatorConfig,
    RemoteLatency,
    SchedulerConfig,
    SupernetEvaluatorConfig,
    TabularEvaluatorConfig,
)
from mixnas.controllers.registry import CONTROLLERS
from mixnas.pareto import DIRECTIONS
from mixnas.textio import parse_yaml
from mixnas.textio import read_yaml as textio_read_yaml

CONTROLLER_TYPES = tuple(CONTROLLERS)  # the registry: one list of controller names
EVALUATOR_TYPES = ("proxy", "tabular", "supernet")
LATENCY_TYPES = ("none", "lut", "measure", "remote")
LATENCY_PRECISIONS = ("float32", "int8")  # evaluators.latency.backends.PRECISIONS (not imported: no torch here)
LUT_OPTIONS = ("calibrated", "measure_missing")  # LatencyPredictor keyword options
REWARD_TYPES = ("mnasnet", "pareto", "metric")
SCHEDULERS = ("none", "asha")
LOG_LEVELS = ("debug", "info", "warning", "error")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
        cfg = TabularEvaluatorConfig(table=e.path_value("table", base, required=True), options=e.mapping("options"))
        _check_tabular_options(cfg.options, e)
    elif kind == "supernet":
        cfg = _supernet_evaluator(e, base)
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
        cfg = _proxy_evaluator(data, e.mapping("subset"), e.mapping("budget"), e.mapping("training"), e)
    e.finish()
    return cfg


def _supernet_evaluator(e: _Node, base: Path) -> SupernetEvaluatorConfig:
    from mixnas.training.device import DEVICES

    return SupernetEvaluatorConfig(
        checkpoint=e.path_value("checkpoint", base, required=True),
        bn_batches=e.ranged("bn_batches", 8, R["evaluator.bn_batches"]),
        batch_size=e.ranged("batch_size", 64, R["evaluator.batch_size"]),
        eval_batch_size=e.ranged("eval_batch_size", 500, R["evaluator.eval_batch_size"]),
        device=e.string("device", default="cpu", choices=DEVICES),
        threads=e.ranged("threads", None, R["evaluator.threads"]))


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
        if not fits_type(value, hints.get(key, Any)):
            raise e.error(where, value, describe_type(hints.get(key, Any)))




def _proxy_evaluator(data: dict, subset: dict, budget: dict, training: dict, e: _Node) -> ProxyEvaluatorConfig:
    """The proxy sections, checked and parsed once by the trainer's own classes (messages name this file's paths)."""
    from mixnas.data.spec import DataSpec
    from mixnas.training.config import ProxyConfig

    for key in subset:
        if key not in SUBSET_KEYS:
            raise ConfigError(f"{e.source}: {e.where('subset')}.{key}: unknown key; allowed keys here: {list(SUBSET_KEYS)}")
    for key in budget:
        if key not in BUDGET_KEYS:
            raise ConfigError(f"{e.source}: {e.where('budget')}.{key}: unknown key; allowed keys here: {list(BUDGET_KEYS)}")
    for key in training:
        if key in BUDGET_KEYS:
            raise ConfigError(f"{e.source}: {e.where('training')}.{key}: the budget belongs in evaluator.budget")
    overlap = sorted(set(data) & set(SUBSET_KEYS))
    if overlap:
        raise ConfigError(f"{e.source}: {e.where('data')}.{overlap[0]}: belongs in evaluator.subset")
    try:
        spec = DataSpec.from_dict({**data, **subset}, where=f"{e.source}: {e.where('data')}")
        # each part alone first, so that an error names the section the key is in
        ProxyConfig.from_dict(budget, where=f"{e.source}: {e.where('budget')}")
        ProxyConfig.from_dict(training, where=f"{e.source}: {e.where('training')}")
        proxy = ProxyConfig.from_dict({**training, **budget}, where=f"{e.source}: {e.where('training')}")
    except MixnasError as exc:
        raise ConfigError(str(exc)) from None
    return ProxyEvaluatorConfig(data_spec=spec, proxy=proxy)


def _latency(node: _Node, base: Path, data: str | None = None) -> LatencyConfig:
    raw = node.get("latency")
    if raw is None or raw == "none":
        return NoLatency()
    lat = _Node(raw, "latency", node.source)
    kind = lat.string("type", "none", choices=LATENCY_TYPES)
    if kind == "lut":
        opts = _Node(lat.mapping("options"), lat.where("options"), lat.source)
        # calibrated: only when given (the predictor's default applies); measure_missing: on unless switched
        # off, so that a search meeting a signature the table lacks measures it instead of failing the trial
        options = {key: opts.boolean(key, False) for key in LUT_OPTIONS if opts.get(key) is not None}
        options["measure_missing"] = opts.boolean("measure_missing", True)
        opts.finish()
        cfg = LutLatency(lut=lat.path_value("lut", base, required=True), options=options)
    elif kind == "measure":
        from mixnas.evaluators.latency.backends import BACKEND_NAMES

        precision = lat.string("precision", "float32", choices=LATENCY_PRECISIONS)
        backend = lat.string("backend", "onnxruntime" if precision == "int8" else "torch", choices=BACKEND_NAMES)
        cfg = MeasuredLatency(_measure_config(lat, backend, precision, data))
    elif kind == "remote":
        cfg = _remote_latency(lat, base, data)
    else:
        cfg = NoLatency()
    lat.finish()
    return cfg


def _remote_latency(lat: _Node, base: Path, data: str | None) -> RemoteLatency:
    """A ``remote`` latency section: the agent's URL, an existing non-empty token file, measurement settings."""
    url = lat.string("url", required=True)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise lat.error(lat.where("url"), url, "an agent address like http://HOST:PORT")
    token_file = lat.path_value("token_file", base, required=True)
    try:
        size = os.stat(token_file).st_size
    except OSError:
        size = None
    if not size:
        raise lat.fail(lat.where("token_file"), f"{token_file}: expected an existing, non-empty file holding the "
                       "agent's token")
    precision = lat.string("precision", "float32", choices=LATENCY_PRECISIONS)
    return RemoteLatency(url, token_file, _measure_config(lat, RemoteLatency.backend, precision, data))


def _measure_config(lat: _Node, backend: str, precision: str, data: str | None) -> Any:
    """The section's measurement settings, parsed once into a ``MeasureConfig`` (checked now, not in every trial).
    An int8 section calibrates on ``data`` (the proxy evaluator's data source) unless ``options.calibration_data``
    says otherwise."""
    from mixnas.evaluators.latency.measure import MeasureConfig

    threads = lat.ranged("threads", 1, R["latency.threads"])
    batch_size = lat.ranged("batch_size", 1, R["latency.batch_size"])
    options = dict(lat.mapping("options"))
    where = lat.where("options")
    allowed = [f.name for f in dataclasses.fields(MeasureConfig) if f.name not in MEASURE_TOP_LEVEL]
    for key in options:
        if key not in allowed:
            hint = f" (set latency.{key} instead)" if key in MEASURE_TOP_LEVEL else ""
            raise ConfigError(f"{lat.source}: {where}.{key}: unknown key{hint}; allowed keys here: {allowed}")
    if precision == "int8" and options.get("calibration_data") is None and data is not None:
        options["calibration_data"] = data
    try:
        return MeasureConfig(backend=backend, precision=precision, threads=threads, batch_size=batch_size, **options)
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
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise r.error(r.where("objectives"), names, "distinct metrics")
    return tuple(out)


def _reward(node: _Node, latency: LatencyConfig) -> RewardConfig:
    r = node.child("reward")
    kind = r.string("type", "metric", choices=REWARD_TYPES)
    if kind == "mnasnet":
        mode = r.string("mode", "soft", choices=tuple(REWARD_PRESETS))
        alpha, beta = REWARD_PRESETS[mode]
        cost = r.string("cost", "latency_ms")
        if cost == "latency_ms" and latency.type == "none":
            raise ConfigError(
                f"{r.source}: reward.cost: 'latency_ms' needs a latency section (type lut, measure or remote); "
                "set latency, or use another cost metric such as 'macs' or 'params'"
            )
        cfg = MnasnetReward(
            accuracy=r.string("accuracy", "top1"),
            cost=cost,
            target=r.ranged("target", None, R["reward.target"], required=True),
            alpha=r.ranged("alpha", alpha, R["reward.alpha"]),
            beta=r.ranged("beta", beta, R["reward.beta"]),
        )
        r.used.add("mode")
    elif kind == "metric":
        cfg = MetricReward(metric=r.string("metric", "top1"), direction=r.string("direction", "max", choices=DIRECTIONS))
    else:
        objectives = _objectives(r)
        ref = r.get("reference_point")
        if ref is not None:
            if (not isinstance(ref, list) or len(ref) != len(objectives)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ref)):
                raise r.error(r.where("reference_point"), ref, f"a list of {len(objectives)} numbers (one per objective)")
            ref = tuple(float(v) for v in ref)
        cfg = ParetoReward(objectives=objectives, reference_point=ref)
    r.finish()
    return cfg


def _constraints(node: _Node) -> ConstraintsConfig:
    c = node.child("constraints")
    cfg = ConstraintsConfig(
        max_latency_ms=c.ranged("max_latency_ms", None, R["constraints.max_latency_ms"]),
        max_params=c.ranged("max_params", None, R["constraints.max_params"]),
        max_macs=c.ranged("max_macs", None, R["constraints.max_macs"]),
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
        grace_period=s.ranged("grace_period", 1, R["execution.scheduler.grace_period"]),
        reduction_factor=s.ranged("reduction_factor", 3, R["execution.scheduler.reduction_factor"]),
    )
    s.finish()
    return cfg


def _execution(node: _Node) -> ExecutionConfig:
    x = node.child("execution")
    res = x.child("resources_per_trial")
    cpu = res.ranged("cpu", 1.0, R["execution.resources_per_trial.cpu"])
    gpu = res.ranged("gpu", 0.0, R["execution.resources_per_trial.gpu"])
    res.finish()
    cfg = ExecutionConfig(
        trials=x.ranged("trials", None, R["execution.trials"], required=True),
        max_concurrent=x.ranged("max_concurrent", 1, R["execution.max_concurrent"]),
        cpu=cpu,
        gpu=gpu,
        address=_address(x),
        max_failures_per_trial=x.ranged("max_failures_per_trial", 1, R["execution.max_failures_per_trial"]),
        scheduler=_scheduler(x),
        deterministic=x.boolean("deterministic", False),
        ordering_window=x.ranged("ordering_window", DEFAULT_ORDERING_WINDOW, R["execution.ordering_window"]),
        max_consecutive_failures=x.ranged("max_consecutive_failures", 5, R["execution.max_consecutive_failures"]),
    )
    x.finish()
    return cfg


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
    evaluator = _evaluator(top, base)
    data_spec = getattr(evaluator, "data_spec", None)
    latency = _latency(top, base, data_spec.source if data_spec is not None else None)
    cfg = ExperimentConfig(
        name=name,
        description=top.get("description", "") or "",
        output_dir=str(Path(top.string("output_dir", "runs")).expanduser()),
        seed=top.ranged("seed", 0, R["seed"]),
        search_space=_search_space(top, base),
        controller=_controller(top),
        evaluator=evaluator,
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
        check_controller(cfg, load_search_space(cfg))
    return cfg


def check_files(cfg: ExperimentConfig) -> None:
    """Check, on this machine, what every trial needs (:func:`mixnas.launch.checks.check_machine`).

    Called before a search starts or resumes; not part of :func:`config_from_dict`, so that a config can be
    validated (and the example experiments tested) on a machine without the data.
    """
    checks.check_machine(cfg, load_search_space(cfg))


def _cross_checks(cfg: ExperimentConfig) -> None:
    src = cfg.source
    if cfg.constraints.max_latency_ms is not None and cfg.latency.type == "none":
        raise ConfigError(f"{src}: constraints.max_latency_ms: needs a latency section (type lut, measure or remote), "
                          f"got latency.type 'none'")
    if cfg.execution.scheduler.type == "asha" and cfg.evaluator.type != "proxy":
        raise ConfigError(f"{src}: execution.scheduler: 'asha' stops training early and needs evaluator.type "
                          f"'proxy', got {cfg.evaluator.type!r}")
    if cfg.execution.scheduler.type == "asha" and cfg.execution.deterministic:
        raise ConfigError(f"{src}: execution.scheduler: 'asha' decisions depend on timing, so it cannot be "
                          "combined with execution.deterministic: true")
    if cfg.evaluator.type == "proxy":  # a table's metrics are known only once it is read (check_files)
        check_metrics(cfg, PROXY_METRICS, True, "the proxy evaluator")
    if cfg.evaluator.type == "supernet":
        check_metrics(cfg, SUPERNET_METRICS, True, "the supernet evaluator")


def load_search_space(cfg: ExperimentConfig) -> Any:
    """The config's search space (:attr:`ExperimentConfig.space`: loaded once per config object)."""
    return cfg.space


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


def apply_overrides(data: Any, overrides: Sequence[str] | Mapping[str, Any]) -> Any:
    """Apply overrides to a raw config mapping (a copy); missing intermediate mappings are created.

    ``overrides``: ``--set`` texts (``execution.trials=10``, the value in YAML syntax), or a mapping of key paths to
    values as they are (``{"execution.trials": 10}``: the Python API's form of ``--set``).
    """
    if not isinstance(data, Mapping):
        return data  # validation reports what the file holds instead of a mapping
    data = copy.deepcopy(dict(data))
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            parts = str(key).split(".")
            if not all(parts) or len(parts) > 16:
                raise ConfigError(f"override {key!r}: expected a key path such as 'execution.trials', at most 16 "
                                  "parts")
            items.append((f"{key}={value!r}", parts, copy.deepcopy(value)))
    else:
        if isinstance(overrides, str):
            overrides = [overrides]
        items = [(text, *parse_override(text)) for text in overrides]
    for text, parts, value in items:
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


def load_config(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = (), *,
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
