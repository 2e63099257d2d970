"""What a run has found so far, computed from ledger records: counts, the best trial, the Pareto front, hypervolume.

Everything that reports on a run (the terminal progress line, ``mixnas status``, TensorBoard, ``mixnas export``)
reads it from here, so they always agree. After ``mixnas rerank``, :func:`with_repeats` turns the records of
re-evaluated trials into their means over seeds (with standard errors), so ``status`` and ``export`` rank by those.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from mixnas.controllers.base import Objective
from mixnas.launch.config import ExperimentConfig
from mixnas.launch.ledger import RepeatRecord, TrialRecord
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
    """The ``ok`` records on the Pareto front, in trial order (duplicates of a front point all kept)."""
    from mixnas.pareto import pareto_front

    scored = [(r, _values(r, objectives)) for r in records if r.status == "ok"]
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


def best_record(cfg: ExperimentConfig, records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The ``ok`` trial with the best reward (earliest on ties), or None."""
    best = None
    for r in records:
        if r.status == "ok" and r.reward is not None and (best is None or better(cfg, r.reward, best.reward)):
            best = r
    return best


def ranked(cfg: ExperimentConfig, records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """``ok`` trials with a reward, best first (trial order breaks ties)."""
    ok = [r for r in records if r.status == "ok" and r.reward is not None]
    sign = 1.0 if cfg.reward.type == "metric" and cfg.reward.direction == "min" else -1.0
    return sorted(ok, key=lambda r: (sign * r.reward, r.trial))


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
            "best": self.best.to_dict() if self.best else None,
            "pareto_front": [r.trial for r in self.front],
            "hypervolume": self.hypervolume,
            "eval_seconds": self.eval_seconds,
        }


def summarize(cfg: ExperimentConfig, records: Sequence[TrialRecord], *, finished: bool = False,
              active: bool = False) -> RunSummary:
    counts = {s.value: 0 for s in Status}
    for r in records:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    objectives = front_objectives(cfg)
    return RunSummary(
        name=cfg.name,
        trials=cfg.execution.trials,
        counts=counts,
        best=best_record(cfg, records),
        front=pareto_records(records, objectives),
        hypervolume=hypervolume_of(records, objectives, reference_point(cfg)),
        finished=finished,
        active=active,
        eval_seconds=sum(r.eval_seconds or 0.0 for r in records),
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


def _mean_record(record: TrialRecord, evals: list[tuple[dict[str, Any], float]]) -> TrialRecord:
    metrics = dict(record.metrics)
    for key, first in record.metrics.items():
        values = [m.get(key) for m, _ in evals]
        if key not in _NOT_AVERAGED and all(is_finite_number(v) for v in values) and len(set(values)) > 1:
            metrics[key] = statistics.fmean(values)
    rewards = [w for _, w in evals]
    metrics.update(n_seeds=len(evals), first_reward=record.reward, reward_sem=sem(rewards))
    for key in SEM_METRICS:
        values = [m.get(key) for m, _ in evals]
        if all(is_finite_number(v) for v in values):
            metrics[f"{key}_sem"] = sem(values)
    return dataclasses.replace(record, metrics=metrics, reward=statistics.fmean(rewards))


def with_repeats(records: Sequence[TrialRecord], repeats: Sequence[RepeatRecord]) -> list[TrialRecord]:
    """The records, where a trial that ``mixnas rerank`` evaluated again carries its mean over every ``ok``
    evaluation: numeric metrics and the reward are means; ``n_seeds``, ``first_reward`` (the search's own
    evaluation) and ``<name>_sem`` (standard error of the mean: ``reward_sem``, ``top1_sem``, ...) are added. Trials
    without repeats are returned as they are."""
    by_trial: dict[int, list[RepeatRecord]] = defaultdict(list)
    for r in repeats:
        by_trial[r.trial].append(r)
    out = []
    for record in records:
        evals = _evaluations(record, by_trial.get(record.trial, ()))
        out.append(_mean_record(record, evals) if len(evals) > 1 else record)
    return out


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
