"""Checks made once before the first trial: what would otherwise fail every trial is one error, naming the YAML path.

* at load (:func:`~mixnas.launch.config.config_from_dict`): controller option values (the controller is built
  once, its study in memory), the metric names a reward / scheduler / constraint uses against what the proxy
  trainer reports, the types of a tabular evaluator's options;
* before a search starts or resumes (:func:`check_machine`, on the machine of the driver): the data path, the
  tabular benchmark (its keys against the space, its columns against the metrics named), the supernet folder
  (trained weights of the search space), the LUT, and a CUDA device asked for on a local run;
* on each worker node of a cluster, when its actor starts (:func:`check_node`): the same files and the device.

The functions take the experiment config by duck typing (this module sits below ``config.py``).
"""

from __future__ import annotations

import collections.abc
import types
import typing
from pathlib import Path
from typing import Any

from mixnas.errors import ConfigError, MixnasError


_UNIONS = (typing.Union, types.UnionType)
_SEQUENCES = (collections.abc.Sequence, list, tuple)


def fits_type(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint (str, int, float, bool, None, sequences of them, unions)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in _UNIONS:
        return any(fits_type(value, a) for a in args)
    if origin in _SEQUENCES:
        return isinstance(value, list) and all(fits_type(v, args[0] if args else Any) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, str) if issubclass(hint, (str, Path)) else isinstance(value, hint)
    return True  # a hint this check does not know: the evaluator's own checks apply


def describe_type(hint: Any) -> str:
    """``"a list of strings or null"`` for ``Sequence[str] | None``."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        return " or ".join(describe_type(a) for a in args)
    if origin in _SEQUENCES:
        return f"a list of {describe_type(args[0]).split(' ', 1)[-1]}s" if args else "a list"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_controller(cfg: Any, space: Any) -> None:
    """Build the controller once (a study in memory, nothing written) so that a bad option value is an error now,
    naming ``controller.options``, rather than when the search starts."""
    from mixnas.launch.controller_setup import build_controller

    options = dict(cfg.controller.options)
    if cfg.controller.type == "optuna":
        options["storage"] = None
    build_controller(cfg, space, options)


def check_machine(cfg: Any, space: Any) -> None:
    """Check, on this machine, what every trial needs: files (data set, tabular benchmark, supernet, LUT), metrics,
    device.

    Called before a search starts or resumes: a missing or malformed file, a reward / scheduler / constraint
    metric the table does not have, or a CUDA device this machine lacks is one error then, not a failure
    recorded in every trial. Not part of :func:`config_from_dict`, so that a config can be validated (and the
    example experiments tested) on a machine without the data. The device is checked only for
    ``execution.address: local``: the workers of a cluster are other machines.
    """
    check_files(cfg, space)
    if cfg.execution.address == "local":
        _check_devices(cfg)


def check_node(cfg: Any, space: Any) -> None:
    """Check, on a worker node of a cluster, what its trials need: the same files as the driver (at the same paths)
    and the device asked for. A Ray actor calls it once when it starts (:mod:`mixnas.launch.pool`), so a node that
    lacks them is one error naming the node, not a failed trial per attempt."""
    check_files(cfg, space)
    _check_devices(cfg)


def check_files(cfg: Any, space: Any) -> None:
    """The files every trial reads (data set, tabular benchmark, supernet, LUT), read by the code the trials use."""
    from mixnas.search_space.spaces import StageSpace

    src = cfg.source
    architectures = isinstance(space, StageSpace)
    if cfg.evaluator.type == "proxy":
        from mixnas.data.spec import BUILTIN_SOURCES

        spec = cfg.evaluator.data_spec
        if spec.source not in BUILTIN_SOURCES:
            if not Path(spec.source).expanduser().exists():
                raise ConfigError(f"{src}: evaluator.data.source: no such file or folder {spec.source!r} (or use "
                                  f"one of the built-in data sets {list(BUILTIN_SOURCES)})")
            from mixnas.data.readers import open_source

            try:
                open_source(spec)  # what the trials open first: the format, the files it needs, their headers
            except MixnasError as exc:
                raise ConfigError(f"{src}: evaluator.data.source: {exc}") from None
        if not architectures:
            raise ConfigError(f"{src}: search_space: the proxy evaluator trains architectures, but this space "
                              "decodes to plain choices (a 'choices' space needs evaluator.type 'tabular')")
    if cfg.evaluator.type == "tabular":
        if not Path(str(cfg.evaluator.table)).is_file():
            raise ConfigError(f"{src}: evaluator.table: no such file {cfg.evaluator.table!r}")
        check_metrics(cfg, (*_table_metrics(cfg, space), *(ARCH_METRICS if architectures else ())), architectures,
                       f"the table {Path(str(cfg.evaluator.table)).name}")
    if cfg.evaluator.type == "supernet":
        _check_supernet(cfg, space)
    if cfg.latency.type == "lut":
        _check_lut(cfg, space)


def _check_lut(cfg: Any, space: Any) -> None:
    """The latency table, read whole by the code the trials use (every entry a signature with a sane time, the
    calibration model known); where the search would have to measure signatures the table lacks, this
    installation must be able to (its backend, precision and device), else one line saying how to fill it."""
    from mixnas.evaluators.latency.predictor import load_predictor, why_not_measurable
    from mixnas.evaluators.latency.signatures import space_signatures
    from mixnas.search_space.spaces import StageSpace

    where = f"{cfg.source}: latency.lut"
    try:
        predictor = load_predictor(str(cfg.latency.lut), **cfg.latency.options)
    except (MixnasError, OSError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not cfg.latency.options.get("measure_missing") or not isinstance(space, StageSpace):
        return
    why = why_not_measurable(predictor.table)
    if why is None:
        return
    missing = predictor.table.missing(space_signatures(space).signatures)
    if missing:
        raise ConfigError(
            f"{where}: lacks {len(missing)} of the signatures this space can produce, and this installation cannot "
            f"measure them ({why}); fill the table on its device (mixnas latency profile --space SPACE "
            "--exhaustive there, then merge), or set latency.options.measure_missing: false to fail such trials")


def _check_supernet(cfg: Any, space: Any) -> None:
    """The supernet folder holds trained weights of this very space (else every trial would fail the same way)."""
    from mixnas.evaluators.supernet.evaluator import load_supernet, check_same_space

    where = f"{cfg.source}: evaluator.checkpoint"
    try:
        net, _, _ = load_supernet(cfg.evaluator.checkpoint)
    except MixnasError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check_same_space(space, net.space, where)


ARCH_METRICS = ("params", "macs")  # counted for every architecture before it is scored
LATENCY_METRICS = ("latency_ms", "latency_std_ms")  # with a latency section, for architectures


def _table_metrics(cfg: Any, space: Any) -> tuple[str, ...]:
    """The metric columns of the tabular benchmark, read from the table (which is checked on the way)."""
    from mixnas.evaluators.tabular import TabularEvaluator

    try:
        return tuple(TabularEvaluator(str(cfg.evaluator.table), space=space, **cfg.evaluator.options).metrics)
    except TypeError as exc:
        raise ConfigError(f"{cfg.source}: evaluator.options: {exc}") from None
    except (MixnasError, OSError) as exc:
        raise ConfigError(f"{cfg.source}: evaluator.table: {exc}") from None


def _metric_uses(cfg: Any) -> list[tuple[str, str]]:
    """(YAML path, metric) of every metric a trial must report for the reward, scheduler and constraints."""
    r, c = cfg.reward, cfg.constraints
    if r.type == "mnasnet":
        uses = [("reward.accuracy", r.accuracy), ("reward.cost", r.cost)]
    elif r.type == "metric":
        uses = [("reward.metric", r.metric)]
    else:
        uses = [(f"reward.objectives[{i}].metric", o.name) for i, o in enumerate(r.objectives)]
    if cfg.execution.scheduler.type != "none":
        uses.append(("execution.scheduler.metric", cfg.execution.scheduler.metric))
    limits = (("max_latency_ms", "latency_ms", c.max_latency_ms), ("max_params", "params", c.max_params),
              ("max_macs", "macs", c.max_macs))
    uses += [(f"constraints.{key}", metric) for key, metric, limit in limits if limit is not None]
    return uses


def check_metrics(cfg: Any, reported: tuple[str, ...], architectures: bool, what: str) -> None:
    """Every metric the config names must be one the evaluator (or the latency section) reports."""
    available = set(reported) | (set(LATENCY_METRICS) if architectures and cfg.latency.type != "none" else set())
    for where, metric in _metric_uses(cfg):
        if metric not in available:
            raise ConfigError(f"{cfg.source}: {where}: no trial reports metric {metric!r}; {what} reports "
                              f"{sorted(available)}")


def _check_devices(cfg: Any) -> None:
    """A CUDA device asked for must exist here (the trials of a local run run here)."""
    asked = []
    if cfg.evaluator.type == "proxy" and cfg.evaluator.proxy.device == "cuda":
        asked.append("evaluator.training.device")
    if cfg.evaluator.type == "supernet" and cfg.evaluator.device == "cuda":
        asked.append("evaluator.device")
    if cfg.latency.type == "measure" and cfg.latency.measure_config.device == "cuda":
        asked.append("latency.options.device")
    if not asked:
        return
    from mixnas.training.device import check_device

    check_device("cuda", where=f"{cfg.source}: {asked[0]}")
