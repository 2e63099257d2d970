"""The validated experiment: frozen records, one per section of the experiment YAML, and
:class:`ExperimentConfig` holding them.

:mod:`mixnas.launch.config` builds them from a file (every check happens there, once); everything after that
reads these records. :meth:`ExperimentConfig.to_dict` gives the fully resolved mapping (defaults filled in, relative
paths made absolute, sections kept parsed written back from their parsed objects) that a run saves as
``config.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import yaml

from mixnas import bounds
from mixnas.bounds import Range
from mixnas.errors import ConfigError, MixnasError
from mixnas.evaluators.latency.measure import MEASURE_RANGES
from mixnas.evaluators.reward import RewardConfig
from mixnas.pareto import Objective

CONFIG_FORMAT_VERSION = 1
DEFAULT_ORDERING_WINDOW = 4
MAX_CONCURRENT = 4096  # actors of one search; more than any cluster places, and each costs a worker process
MAX_TRIALS = 10**7
MAX_CPU_PER_TRIAL = 1024.0
MAX_GPU_PER_TRIAL = 64.0

# The range of every numeric key of an experiment file, by YAML path (mixnas.bounds: one statement of each range,
# read by the parser in mixnas/launch/config.py and listed in docs/experiments.md, which a test keeps in step).
CONFIG_RANGES: dict[str, Range] = {
    "seed": bounds.SEED,
    "evaluator.bn_batches": bounds.integer(0, 100_000),
    "evaluator.batch_size": bounds.BATCH,
    "evaluator.eval_batch_size": bounds.BATCH,
    "evaluator.threads": bounds.integer(1, 1024, optional=True),
    "latency.threads": MEASURE_RANGES["threads"],
    "latency.batch_size": MEASURE_RANGES["batch_size"],
    "reward.target": bounds.number(0, 1e9, low_open=True),
    "reward.alpha": bounds.number(-100, 100),
    "reward.beta": bounds.number(-100, 100),
    "constraints.max_latency_ms": bounds.number(0, 1e9, low_open=True, optional=True),
    "constraints.max_params": bounds.integer(1, 10**15, optional=True),
    "constraints.max_macs": bounds.integer(1, 10**18, optional=True),
    "execution.trials": bounds.integer(1, MAX_TRIALS),
    "execution.max_concurrent": bounds.integer(1, MAX_CONCURRENT),
    "execution.resources_per_trial.cpu": bounds.number(0, MAX_CPU_PER_TRIAL, low_open=True),
    "execution.resources_per_trial.gpu": bounds.number(0, MAX_GPU_PER_TRIAL),
    "execution.max_failures_per_trial": bounds.integer(0, 100),
    "execution.ordering_window": bounds.integer(1, MAX_CONCURRENT),
    "execution.max_consecutive_failures": bounds.integer(0, MAX_TRIALS),
    "execution.scheduler.grace_period": bounds.integer(1, 10_000),
    "execution.scheduler.reduction_factor": bounds.integer(2, 100),
}
SUBSET_KEYS = ("classes", "images_per_class", "val_fraction", "seed")  # DataSpec fields under evaluator.subset
BUDGET_KEYS = ("epochs", "steps", "seconds")  # ProxyConfig fields under evaluator.budget


@dataclass(frozen=True)
class ControllerConfig:
    """Which controller proposes architectures (``controllers.make_controller`` type and keyword options)."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)


INTERNAL = {"yaml": None}  # field metadata: kept in the object, not written to config.yaml


@dataclass(frozen=True)
class ProxyEvaluatorConfig:
    """The proxy trainer, parsed once from the YAML sections ``data``, ``subset``, ``budget`` and ``training``
    into the trainer's own objects; ``config.yaml`` writes the four sections back from them, every value resolved.

    Args:
        data_spec: what to train on and the proxy subset (a :class:`mixnas.data.spec.DataSpec`).
        proxy: the training recipe with its budget (a :class:`mixnas.training.config.ProxyConfig`).
    """

    type: ClassVar[str] = "proxy"
    data_spec: Any = field(metadata=INTERNAL)
    proxy: Any = field(metadata=INTERNAL)

    def yaml_sections(self) -> dict[str, Any]:
        data = self.data_spec.to_dict()
        subset = {key: data.pop(key) for key in SUBSET_KEYS}
        training = self.proxy.to_dict()
        budget = {key: training.pop(key) for key in BUDGET_KEYS}
        return {"data": data, "subset": subset, "budget": budget, "training": training}


@dataclass(frozen=True)
class TabularEvaluatorConfig:
    """A tabular benchmark: the table file and ``TabularEvaluator``'s keyword options."""

    type: ClassVar[str] = "tabular"
    table: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SupernetEvaluatorConfig:
    """A trained weight-sharing supernet (``mixnas supernet train``): its folder and ``SupernetEvaluator``'s
    options (docs/supernet.md)."""

    type: ClassVar[str] = "supernet"
    checkpoint: str
    bn_batches: int = 8
    batch_size: int = 64
    eval_batch_size: int = 500
    device: str = "cpu"
    threads: int | None = None


EvaluatorConfig = ProxyEvaluatorConfig | TabularEvaluatorConfig | SupernetEvaluatorConfig


@dataclass(frozen=True)
class NoLatency:
    type: ClassVar[str] = "none"


@dataclass(frozen=True)
class LutLatency:
    """Latency predicted from a lookup table (``options``: ``calibrated``, ``measure_missing``)."""

    type: ClassVar[str] = "lut"
    lut: str
    options: dict[str, Any] = field(default_factory=dict)


MEASURE_TOP_LEVEL = ("backend", "precision", "threads", "batch_size")  # MeasureConfig fields set beside ``options``


def _measure_sections(config: Any, top_level: Sequence[str] = MEASURE_TOP_LEVEL) -> dict[str, Any]:
    """A parsed ``MeasureConfig`` as a latency section's keys: ``top_level`` beside ``options`` (the rest)."""
    options = dataclasses.asdict(config)
    out = {key: options.pop(key) for key in top_level}
    options.pop("backend", None)
    if options.get("reference_resolution") is None:  # a table's setting; unset, as config.yaml always wrote it
        options.pop("reference_resolution", None)
    return {**out, "options": options}


@dataclass(frozen=True)
class MeasuredLatency:
    """Latency measured on the worker: ``measure_config`` is the parsed
    :class:`~mixnas.evaluators.latency.measure.MeasureConfig` of the section's ``backend``, ``precision``,
    ``threads``, ``batch_size`` and ``options`` (int8 calibrated on the experiment's data unless
    ``options.calibration_data`` names other images); ``config.yaml`` writes those keys back from it."""

    type: ClassVar[str] = "measure"
    measure_config: Any = field(metadata=INTERNAL)

    def yaml_sections(self) -> dict[str, Any]:
        return _measure_sections(self.measure_config)


@dataclass(frozen=True)
class RemoteLatency:
    """Latency measured end to end on a latency agent (``agent.py`` on the target device; ONNX Runtime there).

    ``measure_config``: the parsed ``MeasureConfig`` of ``precision``, ``threads``, ``batch_size`` and
    ``options`` (``warmup``, ``repeats``, ``min_seconds``, ...).
    """

    type: ClassVar[str] = "remote"
    url: str
    token_file: str
    measure_config: Any = field(metadata=INTERNAL)

    backend: ClassVar[str] = "onnxruntime"  # what the agent runs

    def yaml_sections(self) -> dict[str, Any]:
        return _measure_sections(self.measure_config, MEASURE_TOP_LEVEL[1:])


LatencyConfig = NoLatency | LutLatency | MeasuredLatency | RemoteLatency




@dataclass(frozen=True)
class ConstraintsConfig:
    """Hard limits; a candidate that exceeds one is recorded as ``infeasible`` without training."""

    max_latency_ms: float | None = None
    max_params: int | None = None
    max_macs: int | None = None

    def broken(self, metrics: Mapping[str, Any]) -> str | None:
        """Why ``metrics`` break a limit (``params 5.2e+06 > max 5e+06``), or None; a metric not given (not known
        yet) breaks nothing."""
        for name, limit in (("params", self.max_params), ("macs", self.max_macs), ("latency_ms", self.max_latency_ms)):
            value = metrics.get(name)
            if limit is not None and isinstance(value, (int, float)) and value > limit:
                return f"{name} {value:,.6g} > max {limit:,.6g}"
        return None


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping of trials: none, or asynchronous successive halving (ASHA, Li et al. 2020)."""

    type: str = "none"
    metric: str = "top1"
    grace_period: int = 1
    reduction_factor: int = 3




@dataclass(frozen=True)
class ExecutionConfig:
    """How trials run on Ray."""

    trials: int
    max_concurrent: int = 1
    cpu: float = field(default=1.0, metadata={"yaml": "resources_per_trial.cpu"})
    gpu: float = field(default=0.0, metadata={"yaml": "resources_per_trial.gpu"})
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
    source: str = field(default="<config>", metadata=INTERNAL)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain YAML-able data (what ``config.yaml`` in a run directory holds),
        derived from the dataclasses: each field under its name (or its ``yaml`` metadata path), a variant's
        ``type`` first."""
        return {"format_version": CONFIG_FORMAT_VERSION, **_plain(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @functools.cached_property
    def space(self) -> Any:
        """The search space ``search_space`` names, loaded on first use and kept with this config (spaces are
        immutable); a config sent to a worker leaves it behind, and the worker loads it once itself.

        Raises:
            ConfigError: the space cannot be loaded (the message names the file).
        """
        return _load_space(self)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("space", None)
        return state


def _plain(value: Any) -> Any:
    """YAML-able data of a config object (see :meth:`ExperimentConfig.to_dict`)."""
    if isinstance(value, Objective):
        return {"metric": value.name, "direction": value.direction}
    if dataclasses.is_dataclass(value):
        kind = getattr(type(value), "type", None)
        out: dict[str, Any] = {"type": kind} if isinstance(kind, str) else {}
        for f in dataclasses.fields(value):
            path = f.metadata.get("yaml", f.name)
            if path is None:
                continue
            *parents, leaf = path.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = _plain(getattr(value, f.name))
        sections = getattr(value, "yaml_sections", None)  # a section kept parsed writes its YAML keys itself
        if callable(sections):
            out.update(_plain(sections()))
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _load_space(cfg: ExperimentConfig) -> Any:
    """Load the config's search space; any error becomes a :class:`ConfigError` that names the file."""
    from mixnas.search_space.spaces import load_space

    try:
        return load_space(copy.deepcopy(cfg.search_space))
    except ConfigError as exc:
        if cfg.source in str(exc):
            raise
        raise ConfigError(f"{cfg.source}: search_space: {exc}") from None
    except (MixnasError, ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"{cfg.source}: search_space: {exc}") from None
