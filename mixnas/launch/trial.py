"""One trial, end to end, in the process that runs it: decode, check constraints, score, predict latency, reward.

:class:`TrialEvaluator` is plain Python (no Ray): the runner wraps it in a Ray actor that lives for the whole
search, so the evaluator, its data set and the latency table are loaded once per worker process and reused by
every trial that worker runs. It never raises for a bad candidate: whatever happens is an *outcome* (a JSON-able
dict) with a status the ledger stores:

* ``ok``: scored; ``metrics`` holds everything measured and ``reward`` the scalar reward (None for Pareto runs);
* ``failed``: raised; ``reason`` is the exception's type and message;
* ``diverged``: a NaN / infinite loss or objective;
* ``infeasible``: broke a hard constraint (params, MACs, latency) and was not trained;
* ``pruned``: stopped early by the scheduler (metrics are those of its last report).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any, Callable, Mapping, Sequence

from mixnas.errors import ConfigError
from mixnas.launch.config import ExperimentConfig, RewardConfig, config_from_dict, load_search_space, proxy_parts
from mixnas.search_space.arch import Architecture

logger = logging.getLogger(__name__)

# (trial, epoch, metrics) -> True to stop the trial now
StopFn = Callable[[int, int, Mapping[str, Any]], bool]
Scorer = Callable[[Any, Callable[[int, Mapping[str, Any]], bool]], dict[str, Any]]


def finite_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a metrics dict (what controllers and TensorBoard can use)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def compute_reward(reward: RewardConfig, metrics: Mapping[str, Any]) -> float | None:
    """The scalar reward of a trial's metrics (None for Pareto objectives).

    Raises:
        KeyError: a metric the reward needs is missing.
        ValueError: a metric is not a finite number (the trial diverged).
    """
    from mixnas.evaluators.reward import mnasnet_reward

    def value(name: str) -> float:
        if name not in metrics or metrics[name] is None:
            raise KeyError(f"the reward needs metric {name!r}; the trial reported {sorted(metrics)}")
        v = float(metrics[name])
        if not math.isfinite(v):
            raise ValueError(f"metric {name!r} is {v}")
        return v

    if reward.type == "pareto":
        for o in reward.objectives:
            value(o.metric)
        return None
    if reward.type == "metric":
        return value(reward.metric)
    return mnasnet_reward(value(reward.accuracy), value(reward.cost), reward.target, reward.alpha, reward.beta)


def objective_values(reward: RewardConfig, metrics: Mapping[str, Any], reward_value: float | None) -> dict[str, float]:
    """What the controller is told for an ``ok`` trial: its objective values by name."""
    if reward.type == "mnasnet":
        return {"reward": float(reward_value)}
    return {o.metric: float(metrics[o.metric]) for o in reward.controller_objectives}


def _proxy_scorer(cfg: ExperimentConfig) -> Scorer:
    from mixnas.evaluators.proxy import ProxyEvaluator

    data, proxy = proxy_parts(cfg.evaluator)
    evaluator = ProxyEvaluator(data, proxy)

    def score(candidate: Any, report: Callable[[int, Mapping[str, Any]], bool]) -> dict[str, Any]:
        if not isinstance(candidate, Architecture):
            raise TypeError(f"the proxy trainer needs an architecture space, got a {type(candidate).__name__}")
        return evaluator.evaluate(candidate, seed=cfg.seed, report=report)

    return score


def _tabular_scorer(cfg: ExperimentConfig, space: Any) -> Callable[[Sequence[int]], dict[str, Any]]:
    from mixnas.errors import DataError
    from mixnas.evaluators.tabular import TabularEvaluator

    try:
        evaluator = TabularEvaluator(cfg.evaluator.table, space=space, **cfg.evaluator.table_options)
    except TypeError as exc:
        raise ConfigError(f"{cfg.source}: evaluator.options: {exc}") from None

    def look_up(encoding: Sequence[int]) -> dict[str, Any]:
        try:
            return evaluator.evaluate(encoding)
        except DataError as exc:  # a key missing from the table is missing on every attempt
            return {"status": "failed", "error": str(exc), "retryable": False}

    return look_up


def _latency_predictor(cfg: ExperimentConfig) -> Callable[[Architecture], tuple[float, float]] | None:
    lat = cfg.latency
    if lat.type == "lut":
        from mixnas.evaluators.latency.predictor import LatencyPredictor

        return LatencyPredictor.from_file(lat.lut, **lat.options).predict
    if lat.type == "measure":
        from mixnas.evaluators.latency.measure import MeasureConfig, measure_arch

        measure_config = MeasureConfig(backend=lat.backend, threads=lat.threads, batch_size=lat.batch_size,
                                       **lat.options)

        def measure(arch: Architecture) -> tuple[float, float]:
            m = measure_arch(arch, measure_config)
            return m.value(measure_config.statistic), m.std_ms

        return measure
    return None


class TrialEvaluator:
    """Runs trials of one experiment in one process.

    Args:
        config: the resolved experiment config (``ExperimentConfig.to_dict()``); it is validated again here because
            this may be another machine of a Ray cluster.
        should_stop: the early-stopping scheduler's decision for a report, or None.
    """

    def __init__(self, config: Mapping[str, Any], *, should_stop: StopFn | None = None) -> None:
        self.cfg = config_from_dict(config, source="config.yaml", check_space=False)
        self.space = load_search_space(self.cfg)
        self._score = _proxy_scorer(self.cfg) if self.cfg.evaluator.type == "proxy" else None
        self._lookup = _tabular_scorer(self.cfg, self.space) if self.cfg.evaluator.type == "tabular" else None
        self._latency = _latency_predictor(self.cfg)
        self._should_stop = should_stop
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, encoding: Sequence[int], trial: int) -> dict[str, Any]:
        """Evaluate one encoding; returns the outcome dict described in the module docstring."""
        start = time.perf_counter()
        curve: list[dict[str, Any]] = []
        outcome: dict[str, Any] = {"status": "failed", "reason": None, "metrics": {}, "reward": None,
                                   "curve": curve, "worker": self.worker, "started_at": time.time()}
        try:
            self._evaluate(tuple(encoding), trial, outcome, curve)
        except Exception as exc:  # recorded as the trial's outcome; the search goes on
            logger.warning("trial %d raised %s: %s", trial, type(exc).__name__, exc)
            outcome.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        outcome["eval_seconds"] = time.perf_counter() - start
        return outcome

    def _evaluate(self, encoding: tuple[int, ...], trial: int, outcome: dict[str, Any], curve: list) -> None:
        candidate = self.space.decode(encoding)
        metrics: dict[str, Any] = outcome["metrics"]
        if isinstance(candidate, Architecture):
            from mixnas.search_space.counting import count

            counts = count(candidate)
            metrics.update(params=counts.params, macs=counts.macs)
            if self._latency is not None:
                mean_ms, std_ms = self._latency(candidate)
                metrics.update(latency_ms=mean_ms, latency_std_ms=std_ms)
        broken = self._broken_constraint(metrics)
        if broken:
            outcome.update(status="infeasible", reason=broken, retryable=False)
            return

        def report(epoch: int, values: Mapping[str, Any]) -> bool:
            curve.append({"epoch": epoch, **finite_numbers(values)})
            return bool(self._should_stop and self._should_stop(trial, epoch, values))

        scored = self._score(candidate, report) if self._score is not None else self._lookup(encoding)
        status = scored.get("status", "ok")
        for key, value in scored.items():
            if key not in ("status", "error", "retryable") and key not in metrics:
                metrics[key] = value
        if scored.get("retryable", True) is False:  # the evaluator knows another attempt would fail the same way
            outcome["retryable"] = False
        if status == "failed":
            outcome.update(status="failed", reason=scored.get("error") or "the evaluator reported a failure")
            return
        if status == "diverged":
            outcome.update(status="diverged", reason=scored.get("error") or "non-finite training loss")
            return
        broken = self._broken_constraint(metrics)  # a table may report params / MACs only now
        if broken:
            outcome.update(status="infeasible", reason=broken, retryable=False)
            return
        try:
            outcome["reward"] = compute_reward(self.cfg.reward, metrics)
        except ValueError as exc:
            outcome.update(status="diverged", reason=str(exc))
            return
        except KeyError as exc:  # the evaluator does not report a metric the reward needs: same on every attempt
            outcome.update(status="failed", reason=str(exc.args[0]), retryable=False)
            return
        outcome["status"] = "pruned" if scored.get("stopped_early") else "ok"

    def _broken_constraint(self, metrics: Mapping[str, Any]) -> str | None:
        c = self.cfg.constraints
        checks = (("params", c.max_params), ("macs", c.max_macs), ("latency_ms", c.max_latency_ms))
        for name, limit in checks:
            if limit is not None and name in metrics and metrics[name] > limit:
                return f"{name} {metrics[name]:,.6g} > max {limit:,.6g}"
        return None
