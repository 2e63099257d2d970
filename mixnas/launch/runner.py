"""Run a search on Ray: the controller proposes, Ray actors evaluate, the ledger records, the controller learns.

Design (see ``docs/distributed.md``):

* **Ray is the execution engine.** The driver keeps a pool of long-lived Ray actors, one per concurrent trial, each
  with the resources of one trial (``execution.resources_per_trial``). An actor builds its
  :class:`~mixnas.launch.trial.TrialEvaluator` once, so the data set, the lookup table and the imported libraries are
  loaded once per worker process and shared by every trial it runs (Ray Tune's ``reuse_actors``, without Tune's
  per-trial bookkeeping: a Tune trial costs ~0.3 s here, an actor call ~1 ms). Pointing ``execution.address`` at a
  cluster spreads the same actors over its nodes.
* **The driver loop owns the order of events.** The controller is asked and told only here, never from a callback,
  so the ledger can be committed *before* the controller is told and the controller state saved *after*.
* **Exact resume.** Each step is ``ledger commit -> controller call -> controller.json (atomic)``. After a SIGKILL at
  any point, the ledger has every finished trial; ``controller.json`` says which suggestions the controller has
  issued (``asked``) and which results it has heard (``told``). Resuming restores the controller, re-issues a
  suggestion whose ledger row was written but whose ask was not saved (same id, same encoding), tells finished
  results it has not heard, and re-runs trials still ``running`` with the same encoding.
* **Deterministic mode.** With ``execution.deterministic`` and ordering window ``w``
  (``execution.ordering_window``), the controller sees a fixed interleaving whatever the timing, the concurrency
  and the number of nodes: asks ``0..w-1``, then ``tell 0, ask w, tell 1, ask w+1, ...`` and the remaining tells in
  order at the end. Ask ``k`` waits for the result of trial ``k - w``; results that arrive early wait in a buffer.
  So a run, or a killed-and-resumed run, with the same seed and window gives the same ledger as any other. At most
  ``w`` trials can run at once, so a ``max_concurrent`` above ``w`` leaves actors idle.
* **Failures.** A trial that raises, diverges (NaN / inf) or whose worker is lost (it crashed, Ray killed it for
  memory, its node died) is retried on a fresh attempt up to ``execution.max_failures_per_trial`` times; each
  failure is noted in the ledger row; then it is recorded as ``failed`` or ``diverged`` with its reason and the
  search goes on. A failure the evaluator marks as deterministic (``retryable: False``, e.g. a key missing from a
  table) is recorded at once. (On CPU the proxy trainer is seeded by (seed, architecture), so a diverged retry
  usually diverges again; on a GPU, non-deterministic kernels may not. Set ``max_failures_per_trial: 0`` to record
  every failure at once.) As a safety net, ``execution.max_consecutive_failures`` trials in a row failing with the
  same kind of reason stop the search with one line naming it (the cause is almost always the set-up, not the
  candidates); ``mixnas resume`` continues after the fix.
* **Resources.** Before any actor is made, the Ray cluster's CPUs / GPUs are checked against ``max_concurrent x
  resources_per_trial``: an actor Ray cannot place would hold its trial forever, so such settings are refused with
  the arithmetic.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from mixnas.errors import ConfigError, MixnasError, RunError
from mixnas.launch.config import (
    ExperimentConfig,
    check_files,
    config_diff,
    config_from_dict,
    load_search_space,
    read_yaml,
)
from mixnas.launch import ray_local
from mixnas.launch.ledger import Ledger, TrialRecord
from mixnas.launch.ray_local import RaySession
from mixnas.launch.summary import RunSummary, summarize
from mixnas.launch.trial import objective_values
from mixnas.search_space.arch import Architecture
from mixnas.textio import os_reason, path_kind

logger = logging.getLogger(__name__)

CONTROLLER_STATE_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# the run directory
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPaths:
    """Files of a run directory (``docs/architecture.md``, "Files on disk")."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def controller(self) -> Path:
        return self.root / "controller.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def pareto_png(self) -> Path:
        return self.root / "pareto.png"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that readers (and a crash) see the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False))


def run_is_active(paths: RunPaths) -> bool:
    """Is a driver holding this run's lock right now?"""
    if not paths.lock.exists():
        return False
    with open(paths.lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def run_lock(paths: RunPaths) -> Iterator[None]:
    """Hold the run directory for one driver (a second ``search`` / ``resume`` of the same run is refused)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunError(f"{paths.root}: another mixnas process is running this search") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def create_run(cfg: ExperimentConfig, run_dir: str | Path) -> RunPaths:
    """Make a new run directory and save the resolved config in it."""
    paths = RunPaths(Path(run_dir))
    if path_kind(paths.ledger) is not None and _ledger_size(paths) > 0:
        raise RunError(f"{paths.root}: a search already ran here; continue it with `mixnas resume {paths.root}` "
                       "or choose another --output")
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(paths.config, cfg.to_yaml())
    except OSError as exc:
        raise RunError(f"{paths.root}: cannot create the run directory ({os_reason(exc)})") from None
    return paths


def _ledger_size(paths: RunPaths) -> int:
    """Trials in a run's ledger (a run refused before its first ask holds none and may be started again)."""
    with Ledger(paths.ledger, readonly=True) as ledger:
        return len(ledger)


def load_run_config(paths: RunPaths) -> ExperimentConfig:
    """The config a run directory was started with."""
    if path_kind(paths.config) != "file":  # not is_file(): it raises for a name the OS refuses (too long)
        raise RunError(f"{paths.root}: no config.yaml here (is this a mixnas run directory?)")
    return config_from_dict(read_yaml(paths.config), source=str(paths.config), base_dir=paths.root)


def reconcile_config(paths: RunPaths, new: ExperimentConfig | None, *, force: bool) -> ExperimentConfig:
    """The config to resume with: the saved one, or ``new`` if it is equal (or ``force`` says to take it anyway)."""
    saved = load_run_config(paths)
    if new is None:
        return saved
    diff = config_diff(saved.to_dict(), new.to_dict())
    if not diff:
        return saved
    if not force:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise RunError(f"{paths.root}: the config differs from the one this run started with ({shown}); "
                       "resume with --force to use the new one")
    logger.warning("resuming %s with a changed config: %s", paths.root, "; ".join(diff))
    write_text_atomic(paths.config, new.to_yaml())
    return new


# --------------------------------------------------------------------------------------------------------------
# Ray plumbing
# --------------------------------------------------------------------------------------------------------------
def connect_ray(address: str) -> RaySession | None:
    """Connect to (or start, with a token and on 127.0.0.1) Ray; the session to close, or None when Ray was
    already initialised by the caller (see :mod:`mixnas.launch.ray_local`)."""
    return ray_local.connect_ray(address)


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


class _RungKeeper:
    """Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel Hyperparameter Tuning",
    MLSys 2020): at epochs ``grace * eta**k`` a trial continues only if its metric is in the top ``1/eta`` of the
    values recorded at that rung so far."""

    def __init__(self, grace_period: int, reduction_factor: int, metric: str,
                 history: Sequence[Sequence[Mapping[str, Any]]] = ()) -> None:
        self.grace, self.eta, self.metric = grace_period, reduction_factor, metric
        self.rungs: dict[int, list[float]] = collections.defaultdict(list)
        for curve in history:
            for point in curve:
                self._record(int(point.get("epoch", 0)), point.get(metric))

    def _is_rung(self, epoch: int) -> bool:
        rung = self.grace
        while rung < epoch:
            rung *= self.eta
        return rung == epoch

    def _record(self, epoch: int, value: Any) -> float | None:
        if not self._is_rung(epoch) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        self.rungs[epoch].append(float(value))
        return float(value)

    def report(self, trial: int, epoch: int, metrics: Mapping[str, Any]) -> bool:
        del trial
        value = self._record(int(epoch), metrics.get(self.metric))
        if value is None:
            return False
        values = sorted(self.rungs[int(epoch)], reverse=True)
        keep = max(1, len(values) // self.eta)
        return len(values) >= self.eta and value < values[keep - 1]


class _Worker:
    """The body of a Ray actor: a :class:`TrialEvaluator` built once in the worker process."""

    def __init__(self, config: Mapping[str, Any], rungs: Any = None) -> None:
        from mixnas.launch.trial import TrialEvaluator

        should_stop = None
        if rungs is not None:
            import ray

            def should_stop(trial: int, epoch: int, metrics: Mapping[str, Any]) -> bool:
                return bool(ray.get(rungs.report.remote(trial, epoch, dict(metrics))))

        import ray

        self.evaluator = TrialEvaluator(config, should_stop=should_stop)
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def run(self, encoding: Sequence[int], trial: int) -> dict[str, Any]:
        outcome = self.evaluator.run(encoding, trial)
        outcome["worker"] = f"{self.node}/{outcome['worker']}"  # Ray node / host:pid
        return outcome


# --------------------------------------------------------------------------------------------------------------
# observers
# --------------------------------------------------------------------------------------------------------------
@dataclass
class SearchState:
    """What observers see: the run's records so far and the live counts."""

    cfg: ExperimentConfig
    paths: RunPaths
    records: dict[int, TrialRecord]
    running: int = 0
    started: float = field(default_factory=time.time)
    done_at_start: int = 0
    finished: bool = False

    def summary(self) -> RunSummary:
        ordered = [self.records[k] for k in sorted(self.records)]
        return summarize(self.cfg, ordered, finished=self.finished, active=not self.finished)

    def seconds_left(self) -> float | None:
        """Estimated time to finish, from this session's throughput (None before a trial ended)."""
        done = sum(1 for r in self.records.values() if r.finished)
        new = done - self.done_at_start
        if new <= 0:
            return None
        rate = (time.time() - self.started) / new
        return rate * max(0, self.cfg.execution.trials - done)


class SearchObserver(Protocol):
    def on_start(self, state: SearchState) -> None: ...

    def on_trial(self, record: TrialRecord, state: SearchState) -> None: ...

    def on_tick(self, state: SearchState) -> None: ...

    def on_end(self, state: SearchState) -> None: ...


# --------------------------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Flight:
    trial: int
    attempt: int
    actor: int
    started: float


class Search:
    """One driver session of a run (a new search, or a resumed one).

    Args:
        cfg: the run's config.
        paths: its directory (made by :func:`create_run`).
        observers: progress printer, TensorBoard writer, ...: told about every finished trial.
    """

    def __init__(self, cfg: ExperimentConfig, paths: RunPaths, *, observers: Sequence[SearchObserver] = ()) -> None:
        self.cfg = cfg
        self.paths = paths
        self.observers = list(observers)
        self.concurrency = cfg.execution.max_concurrent
        self.window = cfg.execution.ordering_window
        self.n_trials = cfg.execution.trials
        self.failure_streak: list[str] = []  # reasons of the trials that failed in a row, latest last
        self.timings: list[dict[str, float]] = []  # per trial: driver seconds from ask to tell (benchmarks)

    # ------------------------------------------------------------------ public
    def run(self) -> RunSummary:
        """Run until every trial is told; returns the final summary."""
        with run_lock(self.paths):
            self.ledger = Ledger(self.paths.ledger)
            try:
                return self._run()
            finally:
                self.ledger.close()

    # ------------------------------------------------------------------ setup
    def _make_controller(self) -> Any:
        from mixnas.controllers import make_controller
        from mixnas.controllers.base import Objective as ControllerObjective

        space = load_search_space(self.cfg)
        if self.cfg.controller.type == "rl":
            # The policy is tiny: extra threads only contend with the trials' workers (10x slower under load).
            import torch

            torch.set_num_threads(1)
        objectives = [ControllerObjective(o.metric, o.direction) for o in self.cfg.reward.controller_objectives]
        options = dict(self.cfg.controller.options)
        self.run_dir_storage: str | None = None
        if self.cfg.controller.type == "optuna" and "storage" not in options:
            # A study in the run directory, so optuna-dashboard can watch the search while it runs.
            self.run_dir_storage = options["storage"] = f"sqlite:///{(self.paths.root / 'optuna.db').resolve()}"
        try:
            controller = make_controller(self.cfg.controller.type, space, objectives=objectives, seed=self.cfg.seed,
                                         **options)
        except TypeError as exc:
            raise ConfigError(f"{self.cfg.source}: controller.options: {exc}") from None
        except MixnasError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{self.cfg.source}: controller: {exc}") from None
        return space, controller

    def _load_state(self) -> None:
        """Restore the controller and bring the ledger and controller into agreement (see the module docstring)."""
        self.asked = 0
        self.told: list[int] = []
        if self.paths.controller.exists():
            try:
                saved = json.loads(self.paths.controller.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise RunError(f"{self.paths.controller}: cannot read the controller state ({exc})") from None
            if saved.get("format_version") != CONTROLLER_STATE_VERSION:
                raise RunError(f"{self.paths.controller}: unknown format_version {saved.get('format_version')!r}")
            if self.run_dir_storage is not None:
                # The study lives in the run directory: after the directory was moved, its URL is the new one.
                saved_options = saved["controller"].get("options", {})
                if str(saved_options.get("storage", "")).endswith("/optuna.db"):
                    saved_options["storage"] = self.run_dir_storage
            self.controller.load_state_dict(saved["controller"])
            self.asked = int(saved["asked"])
            self.told = [int(t) for t in saved["told"]]
        self.told_set = set(self.told)
        rows = self.ledger.trials()
        if [r.trial for r in rows] != list(range(len(rows))):
            raise RunError(f"{self.paths.ledger}: trial numbers are not contiguous; the ledger was edited")
        if self.asked > len(rows):
            raise RunError(f"{self.paths.controller}: says {self.asked} trials were asked, the ledger has {len(rows)}")
        self.suggestion_ids = {r.trial: r.suggestion_id for r in rows}
        self.encodings = {r.trial: r.encoding for r in rows}
        for row in rows[self.asked:]:  # written to the ledger, but the ask was not saved: ask again
            self._ask(expected=row)
        self.records = {r.trial: r for r in rows}
        self.results: dict[int, TrialRecord] = {}
        self.queue: collections.deque[tuple[int, int]] = collections.deque()
        for r in rows:
            if r.trial in self.told_set:
                continue
            if r.finished:
                self.results[r.trial] = r
            else:
                self.queue.append((r.trial, r.attempt))
        self.finished_count = sum(1 for r in rows if r.finished)

    def _save_state(self) -> None:
        write_json_atomic(self.paths.controller, {
            "format_version": CONTROLLER_STATE_VERSION,
            "controller_type": self.cfg.controller.type,
            "asked": self.asked,
            "told": self.told,
            "controller": self.controller.state_dict(),
        })

    # ------------------------------------------------------------------ ask / tell
    def _ask(self, expected: TrialRecord | None = None) -> None:
        trial = self.asked
        t0 = time.perf_counter()
        suggestion = self.controller.ask()
        encoding = tuple(int(i) for i in suggestion.encoding)
        if expected is None or expected.encoding != encoding or expected.suggestion_id != suggestion.id:
            if expected is not None:
                logger.warning("trial %d: the controller re-proposed %s instead of %s; the ledger row is replaced",
                               trial, encoding, expected.encoding)
            candidate = self.space.decode(encoding)
            if isinstance(candidate, Architecture):
                from mixnas.search_space.block_string import encode_arch

                arch_id, strings, data = candidate.id, encode_arch(candidate, "tf"), candidate.to_dict()
            else:
                arch_id, strings, data = None, None, candidate
            self.ledger.add_trial(trial, suggestion_id=suggestion.id, encoding=encoding, arch_id=arch_id,
                                  block_strings=strings, candidate=data)
        self.asked += 1
        self._save_state()
        self.suggestion_ids[trial] = suggestion.id
        self.encodings[trial] = encoding
        self._ask_time[trial] = t0

    def _can_ask(self) -> bool:
        k = self.asked
        if k >= self.n_trials:
            return False
        unfinished = k - self.finished_count
        if unfinished >= self.concurrency:
            return False
        if self.cfg.execution.deterministic and k >= self.window:
            return len(self.told) >= k - self.window + 1
        return True

    def _tellable(self) -> int | None:
        if not self.results:
            return None
        if not self.cfg.execution.deterministic:
            return next(iter(self.results))
        j = len(self.told)  # told is a prefix in deterministic mode
        if j in self.results and self.asked >= min(j + self.window, self.n_trials):
            return j
        return None

    def _tell(self, record: TrialRecord) -> None:
        from mixnas.controllers.base import Result

        if record.status == "ok":
            result = Result("ok", objective_values(self.cfg.reward, record.metrics, record.reward))
        elif record.status == "pruned":
            values = {k: v for k, v in record.metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            result = Result("pruned", values or None, reason="stopped early by the scheduler")
        else:
            result = Result("failed", reason=record.reason)
        self.controller.tell(record.suggestion_id, result)
        self.told.append(record.trial)
        self.told_set.add(record.trial)
        del self.results[record.trial]
        self._save_state()
        t0 = self._ask_time.pop(record.trial, None)
        if t0 is not None:
            self.timings.append({"trial": record.trial, "cycle": time.perf_counter() - t0,
                                 "eval": record.eval_seconds or 0.0})

    # ------------------------------------------------------------------ the loop
    def _run(self) -> RunSummary:
        self.space, self.controller = self._make_controller()
        self._ask_time: dict[int, float] = {}
        self._load_state()
        state = SearchState(self.cfg, self.paths, self.records, done_at_start=self.finished_count)
        if len(self.told) >= self.n_trials and not self.results and not self.queue:
            state.finished = True
            self.ledger.set_meta("finished_at", str(time.time()))
            return state.summary()
        for obs in self.observers:
            obs.on_start(state)
        started_ray = connect_ray(self.cfg.execution.address)
        self.actors: list[Any] = []
        self.flights: dict[Any, _Flight] = {}
        try:
            check_resources(self.cfg.execution, *_cluster_resources())
            self._make_actors()
            self._loop(state)
        finally:
            self._stop_actors()
            if started_ray is not None:
                started_ray.close()
        state.finished = True
        state.running = 0
        self.ledger.set_meta("finished_at", str(time.time()))
        for obs in self.observers:
            obs.on_end(state)
        return state.summary()

    def _make_actors(self) -> None:
        import ray

        ex = self.cfg.execution
        self._actor_cls = ray.remote(num_cpus=ex.cpu, num_gpus=ex.gpu, max_restarts=0)(_Worker)
        self._rungs = None
        if ex.scheduler.type == "asha":
            history = [r.curve for r in self.records.values() if r.finished]
            self._rungs = ray.remote(num_cpus=0)(_RungKeeper).remote(
                ex.scheduler.grace_period, ex.scheduler.reduction_factor, ex.scheduler.metric, history)
        config = self.cfg.to_dict()
        n_actors = min(self.concurrency, self.window) if ex.deterministic else self.concurrency
        if n_actors < self.concurrency:
            logger.warning("execution.max_concurrent %d > execution.ordering_window %d: in deterministic mode at most "
                           "%d trials run at once", self.concurrency, self.window, self.window)
        self.actors = [self._actor_cls.remote(config, self._rungs) for _ in range(n_actors)]
        self.idle = list(range(n_actors))

    def _stop_actors(self) -> None:
        import ray

        for actor in getattr(self, "actors", []):
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if getattr(self, "_rungs", None) is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._rungs)

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            trial, attempt = self.queue.popleft()
            index = self.idle.pop()
            ref = self.actors[index].run.remote(list(self.encodings[trial]), trial)
            self.flights[ref] = _Flight(trial, attempt, index, time.time())

    def _all_told(self) -> bool:
        return len(self.told) >= self.asked and self.asked >= self.n_trials

    def _loop(self, state: SearchState) -> None:
        import ray

        while True:
            progressed = True
            while progressed:
                progressed = False
                j = self._tellable()
                if j is not None:
                    self._tell(self.results[j])
                    progressed = True
                if self._can_ask():
                    self._ask()
                    trial = self.asked - 1
                    self.queue.append((trial, 0))
                    self.records[trial] = self.ledger.get(trial)
                    progressed = True
            self._dispatch()
            state.running = len(self.flights)
            if self._all_told():
                return
            if not self.flights:
                raise RunError(f"{self.paths.root}: the search is stuck: nothing runs and nothing can be asked "
                               f"(asked {self.asked}, told {len(self.told)}, results {sorted(self.results)})")
            ready, _ = ray.wait(list(self.flights), num_returns=1, timeout=1.0)
            for ref in ready:
                self._collect(ref, state)
            for obs in self.observers:
                obs.on_tick(state)

    def _collect(self, ref: Any, state: SearchState) -> None:
        import ray
        from ray.exceptions import RayError

        flight = self.flights.pop(ref)
        try:
            outcome = ray.get(ref)
            self.idle.append(flight.actor)
        except RayError as exc:  # the worker crashed, was killed for memory, or its node is gone
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"worker lost: {type(exc).__name__}: {first}"[:500]
            logger.warning("trial %d: %s", flight.trial, reason)
            outcome = {"status": "failed", "reason": reason, "metrics": {}, "reward": None, "curve": [],
                       "worker": None, "started_at": flight.started, "eval_seconds": None}
            self._replace_actor(flight.actor)
        trial, attempt = flight.trial, flight.attempt
        retryable = outcome.get("retryable", True)
        if (outcome["status"] in ("failed", "diverged") and retryable
                and attempt < self.cfg.execution.max_failures_per_trial):
            logger.info("trial %d attempt %d %s (%s); retrying", trial, attempt, outcome["status"], outcome["reason"])
            self.ledger.record_failure(trial, attempt=attempt + 1, reason=outcome["reason"] or "failed")
            self.queue.appendleft((trial, attempt + 1))
            return
        self.ledger.finish_trial(
            trial, status=outcome["status"], reason=outcome.get("reason"), metrics=outcome.get("metrics") or {},
            reward=outcome.get("reward"), curve=outcome.get("curve"), attempt=attempt, worker=outcome.get("worker"),
            started_at=outcome.get("started_at"), finished_at=time.time(), eval_seconds=outcome.get("eval_seconds"),
        )
        record = self.ledger.get(trial)
        self.records[trial] = record
        self.results[trial] = record
        self.finished_count += 1
        state.running = len(self.flights)
        for obs in self.observers:
            obs.on_trial(record, state)
        self._check_failure_streak(record)

    def _check_failure_streak(self, record: TrialRecord) -> None:
        """Stop after ``max_consecutive_failures`` trials in a row failed for the same kind of reason."""
        limit = self.cfg.execution.max_consecutive_failures
        if record.status != "failed":
            self.failure_streak.clear()
            return
        kind = failure_kind(record.reason or "")
        if self.failure_streak and failure_kind(self.failure_streak[-1]) != kind:
            self.failure_streak.clear()
        self.failure_streak.append(record.reason or "failed")
        if limit and len(self.failure_streak) >= limit:
            raise RunError(
                f"{self.paths.root}: stopped after {len(self.failure_streak)} trials in a row failed with the same "
                f"reason: {self.failure_streak[-1]} (fix the cause, then `mixnas resume {self.paths.root}`; "
                f"execution.max_consecutive_failures sets the limit, 0 turns it off)")

    def _replace_actor(self, index: int) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self.actors[index])
        self.actors[index] = self._actor_cls.remote(self.cfg.to_dict(), self._rungs)
        self.idle.append(index)


def failure_kind(reason: str) -> str:
    """What makes two failure reasons "the same": the reason with numbers, quoted values and paths blanked.

    ``"KeyError: 'x12' not in the table"`` and ``"KeyError: 'x7' not in the table"`` are one kind.
    """
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    text = re.sub(r"[/\\][^\s:,;]*", "/…", text)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)[:200]


def run_search(cfg: ExperimentConfig, run_dir: str | Path, *, observers: Sequence[SearchObserver] = ()) -> RunSummary:
    """Start a new search in ``run_dir`` (which must not hold one already)."""
    check_files(cfg)
    paths = create_run(cfg, run_dir)
    return Search(cfg, paths, observers=observers).run()


def resume_search(run_dir: str | Path, *, new_config: ExperimentConfig | None = None, force: bool = False,
                  observers: Sequence[SearchObserver] = ()) -> tuple[RunSummary, bool]:
    """Continue a run; returns (summary, was_already_finished)."""
    paths = RunPaths(Path(run_dir))
    if not paths.ledger.exists():
        raise RunError(f"{paths.root}: no ledger.sqlite here; nothing to resume (start it with `mixnas search`)")
    cfg = reconcile_config(paths, new_config, force=force)
    with Ledger(paths.ledger, readonly=True) as ledger:
        records = ledger.trials()
    already = (len(records) >= cfg.execution.trials and all(r.finished for r in records)
               and _all_told_on_disk(paths, cfg.execution.trials))
    if already:
        return summarize(cfg, records, finished=True), True
    check_files(cfg)
    return Search(cfg, paths, observers=observers).run(), False


def _all_told_on_disk(paths: RunPaths, n_trials: int) -> bool:
    try:
        saved = json.loads(paths.controller.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return len(saved.get("told", [])) >= n_trials
