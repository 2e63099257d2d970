"""What a run has found so far, computed from ledger records: counts, the best trial, the Pareto front, hypervolume.

Everything that reports on a run (the terminal progress line, ``mixnas status``, TensorBoard, ``mixnas export``)
reads it from here, so they always agree. After ``mixnas rerank``, :func:`seed_means` computes, where a ranking is
shown, each re-evaluated trial's mean over seeds (with standard errors), so ``status`` and ``export`` rank by
those; a record's own metrics and reward stay what its search measured.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mixnas.controllers.base import Objective
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ledger import COPIED, SCREENED, RepeatRecord, TrialRecord
from mixnas.outcome import Status, is_finite_number

if TYPE_CHECKING:
    from mixnas.search_space.arch import Architecture


def front_objectives(cfg: ExperimentConfig) -> tuple[Objective, ...]:
    """The two or three objectives a Pareto front / scatter of this run is drawn in."""
    r = cfg.reward
    if r.type == "pareto":
        return r.objectives
    if r.type == "mnasnet":
        return (Objective(r.accuracy, "max"), Objective(r.cost, "min"))
    return (Objective(r.metric, r.direction), Objective("macs", "min"))


def reference_point(cfg: ExperimentConfig) -> tuple[float, ...] | None:
    """The hypervolume reference point: configured, or (0, 2 x target) for the MnasNet reward; else None."""
    r = cfg.reward
    if r.type == "pareto":
        return r.reference_point
    if r.type == "mnasnet" and r.target is not None:
        return (0.0, 2.0 * r.target)
    return None


def _values(record: TrialRecord, objectives: Sequence[Objective]) -> tuple[float, ...] | None:
    out = []
    for o in objectives:
        v = record.metrics.get(o.name)
        if not is_finite_number(v):
            return None
        out.append(float(v))
    return tuple(out)


def pareto_records(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[TrialRecord]:
    """The ``ok`` trained records on the Pareto front, in trial order (duplicates of a front point all kept; copies of
    a trial left out)."""
    from mixnas.pareto import pareto_front

    scored = [(r, _values(r, objectives)) for r in records if r.status == "ok" and r.trained]
    scored = [(r, v) for r, v in scored if v is not None]
    if not scored:
        return []
    front = pareto_front([v for _, v in scored], [o.direction for o in objectives])
    return sorted((scored[i][0] for i in front), key=lambda r: r.trial)


def hypervolume_of(records: Sequence[TrialRecord], objectives: Sequence[Objective],
                   reference: Sequence[float] | None) -> float | None:
    """Hypervolume of the ``ok`` records against ``reference`` (None without a reference or 2-3 objectives)."""
    from mixnas.pareto import hypervolume

    if reference is None or len(objectives) not in (2, 3):
        return None
    points = [v for v in (_values(r, objectives) for r in records if r.status == "ok") if v is not None]
    if not points:
        return 0.0
    return hypervolume(points, reference, [o.direction for o in objectives])


def better(cfg: ExperimentConfig, a: float, b: float) -> bool:
    """Is reward ``a`` better than ``b``? (only a ``metric`` reward can be minimised)"""
    if cfg.reward.type == "metric" and cfg.reward.direction == "min":
        return a < b
    return a > b


def ranking_reward(record: TrialRecord, means: Mapping[int, SeedMean] | None = None) -> float | None:
    """What a trial is ranked by: its mean reward over seeds when ``means`` has one, else its own reward."""
    mean = means.get(record.trial) if means else None
    return mean.reward if mean is not None else record.reward


def best_record(cfg: ExperimentConfig, records: Sequence[TrialRecord],
                means: Mapping[int, SeedMean] | None = None) -> TrialRecord | None:
    """The ``ok`` trained trial with the best reward (the mean over seeds where ``means`` has one; earliest on ties;
    a copy of a trial is that trial)."""
    best, best_reward = None, None
    for r in records:
        reward = ranking_reward(r, means)
        if r.status == "ok" and r.trained and reward is not None and (best_reward is None or better(cfg, reward, best_reward)):
            best, best_reward = r, reward
    return best


def ranked(cfg: ExperimentConfig, records: Sequence[TrialRecord],
           means: Mapping[int, SeedMean] | None = None) -> list[TrialRecord]:
    """``ok`` trained trials with a reward, best first (by the mean over seeds where ``means`` has one; trial order
    breaks ties; copies are left out: each architecture once)."""
    ok = [r for r in records if r.status == "ok" and r.trained and ranking_reward(r, means) is not None]
    sign = 1.0 if cfg.reward.type == "metric" and cfg.reward.direction == "min" else -1.0
    return sorted(ok, key=lambda r: (sign * ranking_reward(r, means), r.trial))  # type: ignore[operator]


@dataclass
class RunSummary:
    """A snapshot of a run."""

    name: str
    trials: int
    counts: dict[str, int]
    best: TrialRecord | None
    front: list[TrialRecord] = field(default_factory=list)
    hypervolume: float | None = None
    finished: bool = False
    active: bool = False
    eval_seconds: float = 0.0
    means: Mapping[int, SeedMean] = field(default_factory=dict)  # trials re-evaluated by mixnas rerank
    screened: int = 0  # candidates over a hard limit, never trained (not in ``counts``)
    copied: int = 0  # candidates whose architecture an earlier trial trained (not in ``counts``)

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if s != "running")

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("diverged", 0)

    def to_dict(self) -> dict[str, Any]:
        state = "finished" if self.finished else ("running" if self.active else "stopped")
        return {
            "name": self.name,
            "state": state,
            "trials": self.trials,
            "done": self.done,
            "counts": dict(self.counts),
            "screened": self.screened,
            "copied": self.copied,
            "best": shown_record(self.best, self.means) if self.best else None,
            "pareto_front": [r.trial for r in self.front],
            "hypervolume": self.hypervolume,
            "eval_seconds": self.eval_seconds,
        }


def summarize(cfg: ExperimentConfig, records: Sequence[TrialRecord], *, finished: bool = False,
              active: bool = False, means: Mapping[int, SeedMean] | None = None) -> RunSummary:
    """The summary of ``records``; the best trial is chosen by the mean over seeds where ``means`` has one."""
    counts = {s.value: 0 for s in Status}
    trained = [r for r in records if r.trained]  # a copy repeats its trial; a screened candidate was not trained
    for r in trained:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    objectives = front_objectives(cfg)
    return RunSummary(
        name=cfg.name,
        trials=cfg.execution.trials,
        counts=counts,
        best=best_record(cfg, trained, means),
        front=pareto_records(trained, objectives),
        hypervolume=hypervolume_of(trained, objectives, reference_point(cfg)),
        finished=finished,
        active=active,
        eval_seconds=sum(r.eval_seconds or 0.0 for r in trained),
        means=dict(means or {}),
        screened=sum(1 for r in records if r.origin == SCREENED),
        copied=sum(1 for r in records if r.origin == COPIED),
    )


def record_arch(record: TrialRecord) -> Architecture | None:
    """The architecture of a trial (its ``candidate`` is ``Architecture.to_dict()``), or None for a generic space."""
    from mixnas.search_space.arch import Architecture

    if isinstance(record.candidate, dict) and "blocks" in record.candidate:
        return Architecture.from_dict(record.candidate)
    return None


def arch_text(record: TrialRecord, grammar: str = "tf") -> str | None:
    """A trial's self-contained block strings: the ``# mixnas:`` settings line, then one string per line (timm:
    one stage per line), as ``mixnas build`` / ``resolve_arch`` read them back; None for a generic space.

    Raises:
        BlockStringError: the grammar cannot express the architecture.
    """
    from mixnas.search_space.header import encode_arch_text

    arch = record_arch(record)
    return None if arch is None else encode_arch_text(arch, grammar)


def short_globals(arch: Architecture) -> str:
    """The global settings in a few characters: ``32px 10cls stem16 head256`` (+ ``w1.3`` / ``d1.2`` if set)."""
    g = arch.global_params
    text = f"{g.resolution}px {g.num_classes}cls stem{g.stem_size} head{g.feature_size}"
    if g.width_multiplier is not None:
        text += f" w{g.width_multiplier:g}"
    if g.depth_multiplier is not None:
        text += f" d{g.depth_multiplier:g}"
    return text


def short_arch(record: TrialRecord | None, width: int = 80) -> str:
    """One line naming a trial's candidate: its global settings and block strings, or its decoded choices.

    The line is cut to ``width``; ``mixnas build RUN_DIR:TRIAL`` rebuilds the trial in full.
    """
    if record is None:
        return "-"
    arch = record_arch(record) if record.block_strings else None
    if arch is not None:
        text = f"[{short_globals(arch)}] " + " ".join(record.block_strings)
    elif record.block_strings:
        text = " ".join(record.block_strings)
    else:
        text = " ".join(str(v) for v in record.encoding)
    return text if len(text) <= width else text[: width - 3] + "..."


KEY_METRICS = ("top1", "latency_ms", "params", "macs", "flops")  # what a reader of a run looks at first, where measured
_COUNT_METRICS = ("params", "macs", "flops")  # shown in millions


def metric_columns(cfg: ExperimentConfig, records: Sequence[TrialRecord]) -> list[str]:
    """The metrics a text listing of ``records`` shows: every front objective, then the key metrics, where present.

    The metric of a ``metric`` reward is left out: the reward column already is that number.
    """
    names = [o.name for o in front_objectives(cfg)] + list(KEY_METRICS)
    if cfg.reward.type == "metric":
        names = [n for n in names if n != cfg.reward.metric]
    present = [n for n in dict.fromkeys(names) if any(is_finite_number(r.metrics.get(n)) for r in records)]
    return present


def format_metric(name: str, value: Any) -> str:
    """A metric value for a text table: counts in millions (``4.10M``), other numbers with 5 significant digits."""
    if not is_finite_number(value):
        return "-"
    if name in _COUNT_METRICS:
        return f"{value / 1e6:.3f}M"
    return f"{value:.5g}"


# --------------------------------------------------------------------------------------------------------------
# repeats (mixnas rerank): means over seeds
# --------------------------------------------------------------------------------------------------------------
SEM_METRICS = ("top1", "top5", "loss", "latency_ms")  # besides the reward, the metrics given a standard error
_NOT_AVERAGED = ("seed",)


def _evaluations(record: TrialRecord, repeats: Sequence[RepeatRecord]) -> list[tuple[dict[str, Any], float]]:
    """(metrics, reward) of a trial's own evaluation and of its ``ok`` repeats."""
    if record.status is not Status.OK or record.reward is None:
        return []
    return [(record.metrics, record.reward)] + [(r.metrics, r.reward) for r in repeats
                                                 if r.status is Status.OK and r.reward is not None]


def sem(values: Sequence[float]) -> float | None:
    """The standard error of the mean (None for fewer than two values)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) >= 2 else None


@dataclass(frozen=True)
class SeedMean:
    """A trial's mean over its own evaluation and its ``ok`` repeats (``mixnas rerank``), computed where it is
    shown; the trial's record keeps what its search measured.

    Args:
        n_seeds: evaluations averaged (the trial's own and its ``ok`` repeats).
        reward: the mean reward; ``first_reward`` is the search's own evaluation.
        metrics: the means of the numeric metrics that differ between seeds (the others are the record's).
        sem: standard errors of the mean: ``reward`` and each of :data:`SEM_METRICS` that is numeric throughout.
    """

    trial: int
    n_seeds: int
    reward: float
    first_reward: float
    metrics: Mapping[str, float]
    sem: Mapping[str, float | None]

    def metric(self, record: TrialRecord, name: str) -> Any:
        """The value of ``name`` to show for ``record``: its mean where it varies over seeds, else the record's."""
        return self.metrics.get(name, record.metrics.get(name))

    def to_dict(self) -> dict[str, Any]:
        return {"n_seeds": self.n_seeds, "reward": self.reward, "reward_sem": self.sem.get("reward"),
                "first_reward": self.first_reward, "metrics": dict(self.metrics), "sem": dict(self.sem)}


def seed_mean(record: TrialRecord, repeats: Sequence[RepeatRecord]) -> SeedMean | None:
    """``record``'s mean over itself and its ``ok`` repeats (all of ``repeats`` must be its own), or None when it has
    no reward to average."""
    evals = _evaluations(record, repeats)
    if not evals:
        return None
    means = {}
    for key in record.metrics:
        values = [m.get(key) for m, _ in evals]
        if key not in _NOT_AVERAGED and all(is_finite_number(v) for v in values) and len(set(values)) > 1:
            means[key] = statistics.fmean(values)
    rewards = [w for _, w in evals]
    errors: dict[str, float | None] = {"reward": sem(rewards)}
    for key in SEM_METRICS:
        values = [m.get(key) for m, _ in evals]
        if all(is_finite_number(v) for v in values):
            errors[key] = sem(values)
    return SeedMean(record.trial, len(evals), statistics.fmean(rewards), rewards[0], means, errors)


def seed_means(records: Sequence[TrialRecord], repeats: Sequence[RepeatRecord]) -> dict[int, SeedMean]:
    """By trial, the mean over seeds of every trial that ``mixnas rerank`` evaluated again successfully."""
    by_trial: dict[int, list[RepeatRecord]] = defaultdict(list)
    for r in repeats:
        by_trial[r.trial].append(r)
    out = {}
    for record in records:
        mean = seed_mean(record, by_trial[record.trial]) if record.trial in by_trial else None
        if mean is not None and mean.n_seeds > 1:
            out[record.trial] = mean
    return out


def shown_record(record: TrialRecord, means: Mapping[int, SeedMean]) -> dict[str, Any]:
    """A record as JSON for a reader (``status --json``): its own fields, and ``over_seeds`` (its mean over seeds)
    after ``mixnas rerank``."""
    doc = record.to_dict()
    if record.trial in means:
        doc["over_seeds"] = means[record.trial].to_dict()
    return doc


def seed_noise(records: Sequence[TrialRecord], repeats: Sequence[RepeatRecord]) -> dict[str, Any] | None:
    """The proxy's seed noise: the pooled standard deviation, over the trials evaluated with several seeds, of one
    evaluation's reward and accuracy (``top1``), with how many trials and evaluations it pools; None before any
    rerank."""
    by_trial: dict[int, list[RepeatRecord]] = defaultdict(list)
    for r in repeats:
        by_trial[r.trial].append(r)
    groups = [e for e in (_evaluations(rec, by_trial[rec.trial]) for rec in records if rec.trial in by_trial)
              if len(e) > 1]
    if not groups:
        return None

    def pooled(values_of: Any) -> float | None:
        sets = [[values_of(m, w) for m, w in g] for g in groups]
        sets = [v for v in sets if all(is_finite_number(x) for x in v)]
        dof = sum(len(v) - 1 for v in sets)
        if not dof:
            return None
        return math.sqrt(sum(statistics.variance(v) * (len(v) - 1) for v in sets) / dof)

    return {"trials": len(groups), "evaluations": sum(len(g) for g in groups),
            "reward_sd": pooled(lambda m, w: w), "top1_sd": pooled(lambda m, w: m.get("top1"))}
