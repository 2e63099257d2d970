"""One trial, end to end, in the process that runs it: decode, count, predict latency, check constraints, score,
reward.

:class:`TrialEvaluator` is plain Python (no Ray): the runner wraps it in a Ray actor that lives for the whole
search, so the evaluator, its data set and the latency table are loaded once per worker process and reused by
every trial that worker runs. It only wires config objects together: the scoring is the evaluator's
(:class:`~mixnas.evaluators.base.Evaluator`: the proxy trainer or a table), and whatever happens is a
:class:`~mixnas.outcome.TrialOutcome` (statuses in :mod:`mixnas.outcome`); it never raises for a bad candidate.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any, Callable, Mapping, Sequence

from mixnas.errors import ConfigError
from mixnas.evaluators.base import Evaluator, TrialContext
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.outcome import Status, TrialOutcome, finite_numbers
from mixnas.search_space.arch import Architecture

logger = logging.getLogger(__name__)

# (trial, epoch, metrics) -> True to stop the trial now
StopFn = Callable[[int, int, Mapping[str, Any]], bool]


def make_evaluator(cfg: ExperimentConfig, space: Any) -> Evaluator:
    """The config's evaluator (proxy trainer, table or supernet), built once per worker process."""
    if cfg.evaluator.type == "proxy":
        from mixnas.evaluators.proxy import ProxyEvaluator

        return ProxyEvaluator(cfg.evaluator.data_spec, cfg.evaluator.proxy)
    if cfg.evaluator.type == "supernet":
        from mixnas.evaluators.supernet.evaluator import SupernetEvaluator

        e = cfg.evaluator
        return SupernetEvaluator(e.checkpoint, space=space, bn_batches=e.bn_batches, batch_size=e.batch_size,
                                 eval_batch_size=e.eval_batch_size, device=e.device, threads=e.threads)
    from mixnas.evaluators.tabular import TabularEvaluator

    try:
        return TabularEvaluator(cfg.evaluator.table, space=space, **cfg.evaluator.options)
    except TypeError as exc:
        raise ConfigError(f"{cfg.source}: evaluator.options: {exc}") from None


def make_latency(cfg: ExperimentConfig) -> Callable[[Architecture], tuple[float, float]] | None:
    """``arch -> (mean_ms, std_ms)`` of the config's latency section, or None without one.

    ``measure`` and ``remote`` sections take the same end-to-end path (:func:`~mixnas.evaluators.latency.measure.
    measure_arch`: interleaved rounds over a minimum time span), here or on the agent.
    """
    lat = cfg.latency
    if lat.type == "lut":
        from mixnas.evaluators.latency.predictor import load_predictor

        return load_predictor(lat.lut, **lat.options).predict
    if lat.type not in ("measure", "remote"):
        return None
    from mixnas.evaluators.latency.measure import measure_arch

    config = lat.measure_config
    timer = None
    if lat.type == "remote":
        from mixnas.evaluators.latency.remote import remote_timer

        timer = remote_timer(lat.url, lat.token_file)

    def measure(arch: Architecture) -> tuple[float, float]:
        m = measure_arch(arch, config, timer=timer)
        return m.value(config.statistic), m.std_ms

    return measure


class TrialEvaluator:
    """Runs trials of one experiment in one process.

    Args:
        config: the experiment config, validated once where it was loaded; a Ray actor receives it as it is (its
            search space is loaded here, once per worker process).
        should_stop: the early-stopping scheduler's decision for a report, or None.
    """

    def __init__(self, config: ExperimentConfig, *, should_stop: StopFn | None = None) -> None:
        self.cfg = config
        self.space = config.space
        self.evaluator = make_evaluator(self.cfg, self.space)
        self._latency = make_latency(self.cfg)
        self._should_stop = should_stop
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, encoding: Sequence[int], trial: int, *, seed: int | None = None,
            known: Mapping[str, Any] | None = None) -> TrialOutcome:
        """Evaluate one encoding.

        A repeat of ``mixnas rerank`` passes ``seed`` (it replaces the experiment seed; a repeat is never stopped
        early) and ``known``: the trial's own ``latency_ms`` / ``latency_std_ms``, used instead of measuring again.
        The seed changes the training only; a new measurement would add latency noise to the reward (and, next
        to a hard latency target, flip it).
        """
        start, started_at = time.perf_counter(), time.time()
        curve: list[dict[str, Any]] = []
        metrics: dict[str, Any] = {}
        try:
            outcome = self._evaluate(tuple(int(i) for i in encoding), trial, metrics, curve, seed, known or {})
        except Exception as exc:  # recorded as the trial's outcome; the search goes on
            logger.warning("trial %d raised %s: %s", trial, type(exc).__name__, exc)
            outcome = TrialOutcome.failure(f"{type(exc).__name__}: {exc}", metrics=metrics)
        return outcome.replace(curve=tuple(curve), worker=self.worker, started_at=started_at,
                               eval_seconds=time.perf_counter() - start)

    def _evaluate(self, encoding: tuple[int, ...], trial: int, metrics: dict[str, Any],
                  curve: list[dict[str, Any]], seed: int | None = None,
                  known: Mapping[str, Any] | None = None) -> TrialOutcome:
        candidate = self.space.decode(encoding)
        if isinstance(candidate, Architecture):
            # The one count of a trial (the evaluators do not count): needed before training, for the constraints.
            from mixnas.search_space.counting import count

            counts = count(candidate)
            metrics.update(params=counts.params, macs=counts.macs)
            if self._latency is not None and known and "latency_ms" in known:
                metrics.update(latency_ms=known["latency_ms"], latency_std_ms=known.get("latency_std_ms"))
            elif self._latency is not None:
                mean_ms, std_ms = self._latency(candidate)
                metrics.update(latency_ms=mean_ms, latency_std_ms=std_ms)
        broken = self.cfg.constraints.broken(metrics)
        if broken:
            return TrialOutcome.failure(broken, status=Status.INFEASIBLE, retryable=False, metrics=metrics)

        def report(epoch: int, values: Mapping[str, Any]) -> bool:
            curve.append({"epoch": epoch, **finite_numbers(values)})
            return bool(self._should_stop and self._should_stop(trial, epoch, values))

        # Per-epoch reports cost an evaluation each; only an early-stopping scheduler consumes them. Without one
        # the evaluator evaluates once, at the end, and the curve gets that final point (same values).
        consumer = report if self._should_stop is not None and seed is None else None
        context = TrialContext(encoding, seed=self.cfg.seed if seed is None else seed, report=consumer)
        scored = self.evaluator.score(candidate, context)
        if consumer is None and scored.status is Status.OK and "epochs" in scored.metrics:
            curve.append({"epoch": math.ceil(scored.metrics["epochs"]), **finite_numbers(scored.metrics)})
        for key, value in scored.metrics.items():
            metrics.setdefault(key, value)  # what the trial measured itself (params, MACs, latency) comes first
        scored = scored.replace(metrics=metrics)
        if scored.status.is_failure:
            return scored
        broken = self.cfg.constraints.broken(metrics)  # a table may report params / MACs only now
        if broken:
            return TrialOutcome.failure(broken, status=Status.INFEASIBLE, retryable=False, metrics=metrics)
        try:
            return scored.replace(reward=self.cfg.reward.value(metrics))
        except ValueError as exc:
            return TrialOutcome.failure(str(exc), status=Status.DIVERGED, metrics=metrics)
        except KeyError as exc:  # the evaluator does not report a metric the reward needs: same on every attempt
            return TrialOutcome.failure(str(exc.args[0]), retryable=False, metrics=metrics)

