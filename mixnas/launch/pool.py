"""The actor pool of a search: the only Ray code of the driver (besides :mod:`mixnas.launch.ray_local`).

One long-lived Ray actor per concurrent trial, each with the resources of one trial
(``execution.resources_per_trial``). An actor builds its :class:`~mixnas.launch.trial.TrialEvaluator` once, so the
data set, the lookup table and the imported libraries are loaded once per worker process and shared by every trial
it runs (Ray Tune's ``reuse_actors``, without Tune's per-trial bookkeeping: a Tune trial costs ~0.3 s here, an
actor call ~1 ms). Pointing ``execution.address`` at a cluster spreads the same actors over its nodes. Before any
actor is made, the cluster's CPUs / GPUs are checked against ``max_concurrent x resources_per_trial``: an actor
Ray cannot place would hold its trial forever. A worker that is lost (it crashed, Ray killed it for memory, its
node died) comes back as a failed outcome and its actor is replaced. An actor on another machine first checks that
its node has what the trials read (:func:`~mixnas.launch.checks.check_node`); a node that lacks it stops the search
with one line naming the node and the file.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mixnas.errors import ConfigError, MixnasError, RunError
from mixnas.launch.asha import RungKeeper
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ray_local import RaySession, connect_ray
from mixnas.outcome import TrialOutcome

logger = logging.getLogger(__name__)


def check_resources(ex: Any, resources: Mapping[str, float], node_resources: Sequence[Mapping[str, float]]) -> None:
    """Refuse settings Ray can never place (an unplaceable actor would hold its trial forever).

    Args:
        ex: the run's :class:`~mixnas.launch.config.ExecutionConfig`.
        resources: the cluster's total resources (``ray.cluster_resources()``).
        node_resources: each alive node's resources.
    """
    where = "execution.resources_per_trial"
    for key, need in (("CPU", ex.cpu), ("GPU", ex.gpu)):
        if need <= 0:
            continue
        total = float(resources.get(key, 0.0))
        largest = max((float(n.get(key, 0.0)) for n in node_resources), default=total)
        name = key.lower()
        if need > largest:
            raise ConfigError(f"{where}.{name}: each trial asks for {need:g} {key}s, but the largest node of this Ray "
                              f"has {largest:g}; lower {where}.{name} to at most {largest:g}")
        if ex.max_concurrent * need > total + 1e-9:
            fits = int(total // need + 1e-9)
            raise ConfigError(
                f"execution.max_concurrent: {ex.max_concurrent} trials x {need:g} {key}s each = "
                f"{ex.max_concurrent * need:g} {key}s, but this Ray has {total:g}; set max_concurrent to at most "
                f"{fits} (or lower {where}.{name}; on a cluster, start the nodes first)")


def _cluster_resources() -> tuple[dict[str, float], list[dict[str, float]]]:
    import ray

    nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    return dict(ray.cluster_resources()), nodes


class _Worker:
    """The body of a Ray actor: a :class:`TrialEvaluator` built once in the worker process."""

    def __init__(self, config: ExperimentConfig, rungs: Any = None) -> None:
        import ray

        from mixnas.launch.checks import check_node
        from mixnas.launch.trial import TrialEvaluator

        def report(trial: int, epoch: int, metrics: Mapping[str, Any]) -> bool:
            return bool(ray.get(rungs.report.remote(trial, epoch, dict(metrics))))

        self.node = ray.get_runtime_context().get_node_id()[:12]
        self.problem: str | None = None
        try:
            if config.execution.address != "local":  # another machine: its files and device are checked here
                check_node(config, config.space)
            self.evaluator = TrialEvaluator(config, should_stop=None if rungs is None else report)
        except MixnasError as exc:
            self.problem = f"the worker node {ray.util.get_node_ip_address()} cannot run trials: {exc}"

    def ready(self) -> str | None:
        """Answered once the actor is placed and built (it is not given trials before): None, or why this node
        cannot run trials (a file the trials read missing there, a device it lacks)."""
        return self.problem

    def run(self, encoding: Sequence[int], trial: int, seed: int | None = None,
            known: Mapping[str, Any] | None = None) -> TrialOutcome:
        outcome = self.evaluator.run(encoding, trial, seed=seed, known=known)
        return outcome.replace(worker=f"{self.node}/{outcome.worker}")  # Ray node / host:pid


def _refuse(problem: str | None) -> None:
    """Stop the search with one line when a node cannot run trials (every attempt there would fail the same way);
    what finished is in the ledger, and a resume goes on once the node has what it lacked."""
    if problem:
        raise ConfigError(f"{problem} (every node needs the files the trials read, at the same paths: copy them "
                          "there or use a shared file system, then resume)")


@dataclass(frozen=True)
class Finished:
    """An attempt that came back from the pool."""

    trial: int
    attempt: int
    outcome: TrialOutcome
    seed: int | None = None  # the seed of a repeat (mixnas rerank); None: the experiment's


@dataclass
class _Flight:
    trial: int
    attempt: int
    actor: int
    started: float
    seed: int | None = None


class ActorPool:
    """Ray actors that run trials; a context manager that connects to (or starts) Ray and cleans up.

    Args:
        cfg: the run's config (sent to every actor).
        n_actors: how many actors (trials at once).
        rung_history: curves of finished trials, to seed the ASHA rungs after a resume.
    """

    def __init__(self, cfg: ExperimentConfig, n_actors: int, rung_history: Sequence[Sequence[Mapping]] = ()) -> None:
        self.cfg, self.n_actors, self._history = cfg, n_actors, list(rung_history)
        self._session: RaySession | None = None
        self._actors: list[Any] = []
        self._rungs: Any = None
        self._idle: list[int] = []
        self._flights: dict[Any, _Flight] = {}
        self._starting: dict[Any, int] = {}  # a replacement actor's ready() call -> its index, until it answers

    def __enter__(self) -> ActorPool:
        import ray

        self._session = connect_ray(self.cfg.execution.address)
        try:
            ex = self.cfg.execution
            check_resources(ex, *_cluster_resources())
            self._actor_cls = ray.remote(num_cpus=ex.cpu, num_gpus=ex.gpu, max_restarts=0)(_Worker)
            if ex.scheduler.type == "asha":
                self._rungs = ray.remote(num_cpus=0)(RungKeeper).remote(
                    ex.scheduler.grace_period, ex.scheduler.reduction_factor, ex.scheduler.metric, self._history)
            self._config = ray.put(self.cfg)  # validated once here; every actor (and a replacement) gets it parsed
            self._actors = [self._actor_cls.remote(self._config, self._rungs) for _ in range(self.n_actors)]
            try:
                problems = ray.get([actor.ready.remote() for actor in self._actors])
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                raise RunError(f"a worker could not start: {type(exc).__name__}: {first}"[:500]) from None
            for problem in problems:
                _refuse(problem)
            self._idle = list(range(self.n_actors))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        for actor in [*self._actors, *([self._rungs] if self._rungs is not None else [])]:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._actors, self._rungs = [], None
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def running(self) -> int:
        return len(self._flights)

    @property
    def starting(self) -> int:
        """Replacement actors not placed yet (a lost node's resources may never come back: the search goes on
        with the actors it has)."""
        return len(self._starting)

    def submit(self, trial: int, attempt: int, encoding: Sequence[int], seed: int | None = None,
               known: Mapping[str, Any] | None = None) -> None:
        """Start an attempt on an idle actor (the caller checks :attr:`idle`). A repeat of ``mixnas rerank`` passes
        ``seed`` (instead of the experiment's) and ``known`` (the trial's latency, not measured again)."""
        index = self._idle.pop()
        ref = self._actors[index].run.remote(list(encoding), trial, seed, dict(known) if known else None)
        self._flights[ref] = _Flight(trial, attempt, index, time.time(), seed)

    def wait(self, timeout: float = 1.0) -> list[Finished]:
        """The attempts that finished within ``timeout`` seconds (at most one per call)."""
        import ray

        ready, _ = ray.wait([*self._flights, *self._starting], num_returns=1, timeout=timeout)
        for ref in [r for r in ready if r in self._starting]:
            self._started(ref)
        return [self._collect(ref) for ref in ready if ref in self._flights]

    def _started(self, ref: Any) -> None:
        import ray
        from ray.exceptions import RayError

        index = self._starting.pop(ref)
        try:
            problem = ray.get(ref)
        except RayError as exc:  # it could not be built: the pool goes on without it
            logger.warning("a replacement worker could not start (%s); %d worker(s) go on", type(exc).__name__,
                           len(self._actors) - len(self._starting) - 1)
            return
        _refuse(problem)
        self._idle.append(index)

    def _collect(self, ref: Any) -> Finished:
        import ray
        from ray.exceptions import RayError

        flight = self._flights.pop(ref)
        try:
            outcome = ray.get(ref)
            self._idle.append(flight.actor)
        except RayError as exc:  # the worker crashed, was killed for memory, or its node is gone
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"worker lost: {type(exc).__name__}: {first}"[:500]
            logger.warning("trial %d: %s", flight.trial, reason)
            outcome = TrialOutcome.failure(reason, started_at=flight.started)
            self._replace(flight.actor)
        return Finished(flight.trial, flight.attempt, outcome.replace(attempt=flight.attempt), flight.seed)

    def _replace(self, index: int) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self._actors[index])
        self._actors[index] = self._actor_cls.remote(self._config, self._rungs)
        # given trials only once placed: on a cluster that lost a node it may wait for resources that never come,
        # and a trial queued on it would wait with it while the other workers sit idle
        self._starting[self._actors[index].ready.remote()] = index
