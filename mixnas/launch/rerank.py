"""Re-ranking: evaluate a run's best trials again with more seeds, on Ray like the search, kept in its ledger.

Near the top of a search the ranking is inside the proxy's seed noise (two trials that differ by one swish, or
the same trial trained with another seed, differ by more than their rewards do), so MixNet's authors re-checked "a
few top-performing models" before choosing one. ``mixnas rerank RUN_DIR --top K --seeds S`` takes the K best trials
by the search's own reward and evaluates each S more times with exactly the run's recipe (its config: data, proxy
budget, reward) and experiment seeds ``seed + 1`` .. ``seed + S`` (the trial seed mixes the experiment seed with the
architecture, as in the search). A repeat keeps the trial's own latency (:data:`KEPT_METRICS`): the seed changes the
training only, and measuring again would mix latency noise into the mean reward (next to a hard latency target, a
noisy measurement flips a repeat's reward). Each evaluation is a row of the ledger's ``repeats`` table, committed when
it ends, so a killed rerank loses only what was running and a second call does only what is missing; a later call
with a larger ``--top`` or ``--seeds`` adds to the same rows. A failed repeat is retried like a trial, then recorded
with its reason and the reasons of its earlier attempts (and run again by the next ``mixnas rerank``). ``status`` and
``export`` then rank by the mean over seeds (:func:`mixnas.launch.summary.seed_means`, computed where shown) and show
its standard error and the proxy's seed noise.

The run's lock is held, so a rerank never runs beside the run's own search (nor two reranks at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mixnas.errors import RunError
from mixnas.launch.config import check_files
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ledger import Ledger, RepeatRecord, TrialRecord
from mixnas.launch.pool import ActorPool, Finished
from mixnas.launch.rundir import RunPaths, load_run_config, run_lock
from mixnas.launch.summary import SeedMean, ranked, seed_mean, seed_noise
from mixnas.outcome import Status

logger = logging.getLogger(__name__)

KEPT_METRICS = ("latency_ms", "latency_std_ms")  # a repeat keeps the trial's own values of these
MAX_TOP = 1000
MAX_SEEDS = 100


def repeat_seed(cfg: ExperimentConfig, repeat: int) -> int:
    """The experiment seed of repeat ``repeat`` (the search's own evaluation is repeat 0, with ``cfg.seed``)."""
    return cfg.seed + repeat


@dataclass
class RerankResult:
    """What a rerank leaves: the re-evaluated trials ranked by their mean, and the proxy's seed noise."""

    ranking: list[tuple[TrialRecord, SeedMean]]  # the chosen trials and their means over seeds, best mean first
    noise: dict[str, Any] | None
    ran: int = 0  # evaluations run by this call
    failed: list[RepeatRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r, mean in self.ranking:
            rows.append({"trial": r.trial, "reward": mean.reward, "reward_sem": mean.sem.get("reward"),
                         "first_reward": mean.first_reward, "n_seeds": mean.n_seeds,
                         "top1": mean.metric(r, "top1"), "top1_sem": mean.sem.get("top1"),
                         "latency_ms": mean.metric(r, "latency_ms"), "params": r.metrics.get("params"),
                         "macs": r.metrics.get("macs"), "block_strings": r.block_strings})
        return {"ranking": rows, "noise": self.noise, "ran": self.ran,
                "failed": [f.to_dict() for f in self.failed]}


Progress = Callable[[RepeatRecord, int, int], None]  # (the repeat just recorded, done, total)


def choose(cfg: ExperimentConfig, records: list[TrialRecord], top: int) -> list[TrialRecord]:
    """The ``top`` best trials by the search's own reward (so a resumed or extended rerank picks the same ones)."""
    chosen = ranked(cfg, records)[:top]
    if not chosen:
        raise RunError("no successful trial with a reward to re-rank yet" if cfg.reward.type != "pareto" else
                       "this run optimises Pareto objectives (no scalar reward): rerank needs a reward to rank by")
    return chosen


def rerank_run(run_dir: str | Path, *, top: int, seeds: int, progress: Progress | None = None) -> RerankResult:
    """Evaluate the ``top`` best trials of a run ``seeds`` more times each (only the evaluations not yet in the
    ledger); returns the ranking by mean reward."""
    if not 1 <= top <= MAX_TOP:
        raise RunError(f"--top: expected an integer in 1..{MAX_TOP}, got {top}")
    if not 1 <= seeds <= MAX_SEEDS:
        raise RunError(f"--seeds: expected an integer in 1..{MAX_SEEDS}, got {seeds}")
    paths = RunPaths(Path(run_dir))
    cfg = load_run_config(paths)
    if not paths.ledger.is_file():
        raise RunError(f"{paths.root}: no ledger.sqlite here; nothing to re-rank")
    with run_lock(paths), Ledger(paths.ledger) as ledger:
        chosen = choose(cfg, ledger.trials(), top)
        have = {(r.trial, r.repeat) for r in ledger.repeats() if r.status is not Status.FAILED}
        todo = [(r, k) for r in chosen for k in range(1, seeds + 1) if (r.trial, k) not in have]
        failed: list[RepeatRecord] = []
        if todo:
            check_files(cfg)
            failed = _evaluate(cfg, ledger, todo, progress)
        records, repeats = ledger.trials(), ledger.repeats()
    means = {r.trial: seed_mean(r, [p for p in repeats if p.trial == r.trial]) for r in chosen}
    ranking = [(r, means[r.trial]) for r in ranked(cfg, chosen, means)]
    return RerankResult(ranking=ranking, noise=seed_noise(records, repeats),  # type: ignore[arg-type]
                        ran=len(todo), failed=failed)


def _evaluate(cfg: ExperimentConfig, ledger: Ledger, todo: list[tuple[TrialRecord, int]],
              progress: Progress | None) -> list[RepeatRecord]:
    """Run the missing repeats on an actor pool; each is committed to the ledger as it ends."""
    queue = [(record, k, 0) for record, k in todo]
    by_seed = {(record.trial, repeat_seed(cfg, k)): (record, k) for record, k in todo}
    failed: list[RepeatRecord] = []
    failures: dict[tuple[int, int], list[str]] = {}  # reasons of attempts that were tried again, by (trial, repeat)
    done = 0
    with ActorPool(cfg, max(1, min(cfg.execution.max_concurrent, len(todo)))) as pool:
        while queue or pool.running:
            while queue and pool.idle:
                record, k, attempt = queue.pop(0)
                pool.submit(record.trial, attempt, record.encoding, seed=repeat_seed(cfg, k), known=_known(record))
            for finished in pool.wait(timeout=1.0):
                record, k = by_seed[(finished.trial, finished.seed)]
                reasons = failures.setdefault((record.trial, k), [])
                saved = _finish(cfg, ledger, finished, k, reasons)
                if saved is None:
                    queue.insert(0, (record, k, finished.attempt + 1))
                    continue
                done += 1
                if saved.status is not Status.OK:
                    failed.append(saved)
                if progress is not None:
                    progress(saved, done, len(todo))
    return failed


def _known(record: TrialRecord) -> dict[str, Any]:
    """What a repeat takes from the trial instead of measuring it again: its latency (the seed changes training
    only)."""
    return {k: record.metrics[k] for k in KEPT_METRICS if k in record.metrics}


def _finish(cfg: ExperimentConfig, ledger: Ledger, finished: Finished, repeat: int,
            reasons: list[str]) -> RepeatRecord | None:
    """Record a finished repeat with the reasons of its earlier failed attempts and return it; or None when it
    should be retried (its reason is added to ``reasons``)."""
    o = finished.outcome
    if o.retried(finished.attempt, cfg.execution.max_failures_per_trial):
        logger.info("trial %d repeat %d attempt %d %s (%s); retrying", finished.trial, repeat, finished.attempt,
                    o.status, o.reason)
        reasons.append(o.reason or str(o.status))
        return None
    return ledger.add_repeat(finished.trial, repeat, int(finished.seed), o, failures=tuple(reasons))
