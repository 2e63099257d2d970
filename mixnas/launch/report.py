"""What ``mixnas report`` shows of a run, gathered read-only from its run directory, and the file it writes.

Everything comes from the run's ``config.yaml`` and its ledger opened read-only (safe while the search writes to
it), through the functions that ``mixnas status`` and ``mixnas export`` use (:mod:`mixnas.launch.summary`), so
the page and the terminal agree: trained trials are counted, screened and copied ones shown apart, the best trial
and the Pareto front are the summary's, and after ``mixnas rerank`` the mean over seeds is shown beside what the
search measured. A run with a latency lookup table (``latency.type: lut``) also gets, per trial, what each part
of the network costs in the table (stem, every block repeat, head, classifier: the signatures the predictor
sums) and the reference architectures (arch presets) the table covers. No torch: the table, the signatures and
the counts are plain Python.

:func:`read_run` reads a run, :func:`report_data` turns it into a :class:`Report` (the page's tables as text, the
plots' data as JSON-able values); :mod:`mixnas.launch.report_page` makes the page of it and writes the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mixnas.errors import LatencyTableError, MixnasError, RunError
from mixnas.launch.experiment_config import ExperimentConfig, LutLatency
from mixnas.launch.ledger import COPIED, SCREENED, RepeatRecord, TrialRecord
from mixnas.launch.api import read_run as read_ledger
from mixnas.launch.rundir import RunPaths, load_run_config
from mixnas.launch.summary import (
    KEY_METRICS,
    RunSummary,
    SeedMean,
    better,
    format_metric,
    front_objectives,
    hypervolume_of,
    ranked,
    record_arch,
    reference_point,
    seed_means,
    seed_noise,
    summarize,
)
from mixnas.outcome import Status, is_finite_number
from mixnas.textio import path_kind

TOP_ROWS = 10  # trials in the page's ranking table
PROBLEM_STATUSES = (Status.FAILED, Status.DIVERGED, Status.INFEASIBLE, Status.PRUNED)
_SHOWN_METRICS = ("top1", "top5", "loss", "latency_ms", "params", "macs")  # besides the front objectives


@dataclass(frozen=True)
class RunSnapshot:
    """A run as read at one moment: its config, every trial and repeat, and whether a driver holds it."""

    paths: RunPaths
    cfg: ExperimentConfig
    records: list[TrialRecord]
    repeats: list[RepeatRecord]
    active: bool
    finished: bool
    taken_at: float


def read_run(run_dir: str | Path) -> RunSnapshot:
    """Read a run directory (read-only; the search may be writing it).

    Raises:
        RunError: not a run directory (no config, no ledger, not a ledger).
    """
    paths = RunPaths(Path(run_dir))
    if path_kind(paths.root) != "dir":
        raise RunError(f"{paths.root}: not a folder (expected a mixnas run directory)")
    cfg = load_run_config(paths)
    read = read_ledger(paths, cfg)
    return RunSnapshot(paths, cfg, read.records, read.repeats, read.active, read.finished, time.time())


# --------------------------------------------------------------------------------------------------------------
# the latency table: what each part of a network costs in it
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableView:
    """The run's latency lookup table as the report reads it: the table, or why it could not be read."""

    path: str
    calibrated: bool
    table: Any = None  # a mixnas.evaluators.latency.lut.LatencyTable
    error: str | None = None

    def part_costs(self, arch: Any) -> dict[str, Any]:
        """Each part's entry in ms (None where the table lacks it), in the order the predictor sums them (stem,
        block repeats, head, classifier), their plain sum and the table's prediction, calibrated as the run
        predicts: the predictor's own sum, :func:`~mixnas.evaluators.latency.lut.lut_sum`."""
        from mixnas.evaluators.latency.lut import lut_sum
        from mixnas.evaluators.latency.signatures import arch_signatures

        signatures = arch_signatures(arch)
        entries = self.table.entries
        ms = [entries[s].ms if s in entries else None for s in signatures]
        missing = sum(v is None for v in ms)
        if missing:
            return {"ms": ms, "sum": None, "pred": None, "missing": missing}
        return {"ms": ms, "sum": lut_sum(self.table, signatures, calibrated=False)[0],
                "pred": lut_sum(self.table, signatures, calibrated=self.calibrated)[0], "missing": 0}

    def covers(self, arch: Any) -> bool:
        from mixnas.evaluators.latency.signatures import arch_signatures

        return not self.table.missing(arch_signatures(arch))


def load_table(cfg: ExperimentConfig) -> TableView | None:
    """The run's latency table when it predicts latency from one (None otherwise); an unreadable table (moved,
    corrupt) is reported on the page instead of failing the report."""
    if not isinstance(cfg.latency, LutLatency):
        return None
    from mixnas.evaluators.latency.lut import LatencyTable

    calibrated = bool(cfg.latency.options.get("calibrated", True))
    try:
        return TableView(cfg.latency.lut, calibrated, LatencyTable.load(cfg.latency.lut))
    except LatencyTableError as exc:
        return TableView(cfg.latency.lut, calibrated, error=str(exc))


def describe_table(view: TableView) -> str:
    """``tiny_ort.json: onnxruntime, float32, 1 thread, batch 1, measured on AMD EPYC (this machine); 2,093
    entries; measured = 1.02 x LUT sum ...``."""
    if view.table is None:
        return f"{view.path} (cannot be read now: {view.error})"
    t = view.table
    text = (f"{view.path}: {t.backend}, {t.precision}, {t.threads} thread{'s' if t.threads != 1 else ''}, batch "
            f"{t.batch_size}, measured on {t.describe_device()}; {len(t):,} entries")
    if len(t.devices) > 1:
        text += f" from {len(t.devices)} devices"
    if t.calibration is not None:
        text += "; " + t.calibration.describe() + ("" if view.calibrated else " (not applied: calibrated: false)")
    return text


def reference_points(cfg: ExperimentConfig, view: TableView | None, records: Sequence[TrialRecord]
                     ) -> list[dict[str, Any]]:
    """The arch presets the run's table covers, at the latency it predicts for them: where the hand designs sit
    against the search. A preset that is a member of the space and was trained by a trial is that trial."""
    if view is None or view.table is None:
        return []
    from mixnas.search_space.counting import count
    from mixnas.search_space.presets import arch_preset_names, load_arch_preset

    space = _space_or_none(cfg)
    by_encoding = {r.encoding: r for r in records if r.trained}
    out = []
    for name in arch_preset_names():
        arch = load_arch_preset(name)
        if not view.covers(arch):
            continue
        member = _encoding_in(space, arch)
        trial = by_encoding.get(member) if member is not None else None
        counted = count(arch)
        out.append({"name": name, "x": _num(view.part_costs(arch)["pred"]), "member": member is not None,
                    "trial": trial.trial if trial is not None else None, "params": counted.params,
                    "macs": counted.macs})
    return out


def _space_or_none(cfg: ExperimentConfig) -> Any:
    try:
        return cfg.space
    except MixnasError:
        return None


def _encoding_in(space: Any, arch: Any) -> tuple[int, ...] | None:
    """``arch``'s encoding in ``space``, or None when it is not a member (or the space has no architectures)."""
    if space is None or not hasattr(space, "contains") or not space.contains(arch):
        return None
    return tuple(space.encode(arch))


# --------------------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    """What the page shows.

    Args:
        title: the run's name.
        subtitle: the run directory, its state and when the report was made.
        glance: (label, text) rows of the run at a glance.
        top: the best trials, as (header, rows) of text cells.
        problems: failed / diverged / infeasible / pruned / screened trials: (header, rows).
        running: trials running when the report was made: (header, rows).
        copies: copied trials: (trial, the trial it repeats).
        data: what the page's script draws (JSON-able).
    """

    title: str
    subtitle: str
    glance: list[tuple[str, str]]
    top: tuple[list[str], list[list[str]]]
    problems: tuple[list[str], list[list[str]]]
    running: tuple[list[str], list[list[str]]]
    copies: list[tuple[int, int | None]]
    data: dict[str, Any] = field(default_factory=dict)


def report_data(snap: RunSnapshot) -> Report:
    """The report of a run snapshot."""
    cfg, records = snap.cfg, snap.records
    means = seed_means(records, snap.repeats)
    summary = summarize(cfg, records, finished=snap.finished, active=snap.active, means=means)
    view = load_table(cfg)
    objectives = front_objectives(cfg)
    start = min((r.created_at for r in records), default=snap.taken_at)
    nets, net_of = _networks(records, view)
    front = {r.trial for r in summary.front}
    trials = [_trial_json(cfg, r, start, net_of, means.get(r.trial), r.trial in front) for r in records]
    data = {
        "name": cfg.name,
        "objectives": [{"name": o.name, "direction": o.direction} for o in objectives],
        "reward": _reward_name(cfg),
        "best": summary.best.trial if summary.best else None,
        "front": sorted(front),
        "trials": trials,
        "nets": nets,
        "progress": _progress(cfg, records, start),
        "refs": reference_points(cfg, view, records),
        "table": None if view is None else {"path": view.path, "ok": view.table is not None,
                                            "calibrated": view.calibrated},
        "latency_source": _latency_source(cfg),
    }
    state = "finished" if snap.finished else ("running" if snap.active else "stopped")
    made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.taken_at))
    return Report(
        title=cfg.name,
        subtitle=f"{snap.paths.root} · {state} · report made {made}",
        glance=_glance(snap, summary, view, means, state, start),
        top=_top_table(cfg, records, means),
        problems=_problems(records, start),
        running=_running(records, start, snap.taken_at),
        copies=[(r.trial, r.copy_of) for r in records if r.origin == COPIED],
        data=data,
    )


def _num(value: Any, digits: int = 6) -> float | None:
    """A finite number rounded to ``digits`` significant digits (the page shows at most 5), else None."""
    if not is_finite_number(value):
        return None
    return float(f"{value:.{digits}g}")


def _reward_name(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the progress plot follows: the scalar reward (or the metric it is), or the hypervolume of a Pareto
    run with a reference point."""
    r = cfg.reward
    if r.type == "metric":
        return {"name": r.metric, "direction": r.direction, "kind": "reward"}
    if r.type == "mnasnet":
        return {"name": "reward", "direction": "max", "kind": "reward"}
    kind = "hypervolume" if reference_point(cfg) is not None else "none"
    return {"name": "hypervolume", "direction": "max", "kind": kind}


def _latency_source(cfg: ExperimentConfig) -> str:
    """How the run's ``latency_ms`` came about, in a few words."""
    kind = cfg.latency.type
    return {"lut": "predicted by the latency table during the search",
            "measure": "measured end to end on the worker",
            "remote": "measured end to end on the latency agent"}.get(kind, "not measured")


def _networks(records: Sequence[TrialRecord], view: TableView | None
              ) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """One entry per distinct architecture (a copy shares its trial's): block strings with their ``# mixnas:``
    line, the layers to draw and, with a table, each part's cost. Returns them and trial -> index."""
    nets: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    net_of: dict[int, int] = {}
    for r in records:
        key = r.arch_id or f"trial{r.trial}"
        if key not in index:
            net = _network(r, view)
            if net is None:
                continue
            index[key] = len(nets)
            nets.append(net)
        net_of[r.trial] = index[key]
    return nets, net_of


def _network(record: TrialRecord, view: TableView | None) -> dict[str, Any] | None:
    """A trial's architecture for the page, or None when the trial has no candidate to show."""
    from mixnas.search_space.header import encode_arch_text

    arch = record_arch(record)
    if arch is None:  # a generic (choice) space: its decoded choices are the whole candidate
        if not isinstance(record.candidate, Mapping):
            return None
        text = "\n".join(f"{k}: {v}" for k, v in record.candidate.items())
        return {"text": text}
    net: dict[str, Any] = {
        "text": encode_arch_text(arch, "tf"),  # arch_text(record), from the record already decoded
        "g": [arch.resolution, arch.stem_channels, arch.final_channels, arch.head_channels, arch.num_classes,
              arch.final_size],
        # a layer in the order report_page.py's script reads it (its comment "a layer: ...")
        "L": [[l.block_index, l.repeat_index, l.in_channels, l.mid_channels, l.out_channels, l.stride,
               l.input_size, list(l.kernel_sizes), list(l.dilations), list(l.dw_splits), l.expand_groups,
               l.project_groups, l.se_channels, int(l.swish), int(l.has_skip), int(l.has_expand)]
              for l in arch.layers()],
        "R": [b.num_repeat for b in arch.blocks],
    }
    if view is not None and view.table is not None:
        costs = view.part_costs(arch)
        net.update(ms=[_num(v, 4) for v in costs["ms"]], sum=_num(costs["sum"]), pred=_num(costs["pred"]),
                   missing=costs["missing"])
    return net


def _trial_json(cfg: ExperimentConfig, r: TrialRecord, start: float, net_of: Mapping[int, int],
                mean: SeedMean | None, on_front: bool) -> dict[str, Any]:
    """One trial as the page's script reads it (short keys: a 300-trial run stays small)."""
    objectives = front_objectives(cfg)
    doc: dict[str, Any] = {"t": r.trial, "s": r.status.value, "v": [_num(r.metrics.get(o.name)) for o in objectives],
                           "r": _num(r.reward)}
    names = [o.name for o in objectives] + [n for n in _SHOWN_METRICS if n not in {o.name for o in objectives}]
    metrics = {n: _num(r.metrics.get(n)) for n in names if is_finite_number(r.metrics.get(n))}
    if metrics:
        doc["k"] = metrics
    if r.origin != "trained":
        doc["o"] = r.origin
    if r.copy_of is not None:
        doc["c"] = r.copy_of
    if r.trial in net_of:
        doc["a"] = net_of[r.trial]
    if r.finished_at is not None:
        doc["f"] = round(r.finished_at - start, 2)
    if r.reason:
        doc["why"] = r.reason
    if on_front:
        doc["front"] = 1
    if mean is not None:
        doc["sm"] = {"n": mean.n_seeds, "r": _num(mean.reward), "rse": _num(mean.sem.get("reward")),
                     "m": {k: [_num(mean.metrics[k]), _num(mean.sem.get(k))] for k in mean.metrics if k in mean.sem}}
    return doc


def _progress(cfg: ExperimentConfig, records: Sequence[TrialRecord], start: float) -> list[list[Any]]:
    """One row per finished training, in the order they finished: [trainings so far, seconds since the first
    ask, trial, its reward (or None), the best so far (the hypervolume so far in a Pareto run)]."""
    done = sorted((r for r in records if r.trained and r.finished and r.finished_at is not None),
                  key=lambda r: (r.finished_at, r.trial))
    kind = _reward_name(cfg)["kind"]
    objectives, ref = front_objectives(cfg), reference_point(cfg)
    rows: list[list[Any]] = []
    best: float | None = None
    for i, r in enumerate(done, 1):
        value = r.reward if r.status is Status.OK and is_finite_number(r.reward) else None
        if kind == "hypervolume":
            best = hypervolume_of(done[:i], objectives, ref)
            value = None
        elif value is not None and (best is None or better(cfg, value, best)):
            best = value
        rows.append([i, round(r.finished_at - start, 2), r.trial, _num(value), _num(best)])
    return rows


# --------------------------------------------------------------------------------------------------------------
# the tables (text)
# --------------------------------------------------------------------------------------------------------------
def _glance(snap: RunSnapshot, summary: RunSummary, view: TableView | None, means: Mapping[int, SeedMean],
            state: str, start: float) -> list[tuple[str, str]]:
    cfg, records = snap.cfg, snap.records
    c = summary.counts
    trained = sum(c.values())
    statuses = ", ".join(f"{c.get(s.value, 0)} {s.value}" for s in Status if s is not Status.RUNNING)
    trials = f"{trained} trained: {statuses}, {c.get('running', 0)} running"
    if summary.screened:
        trials += f"; {summary.screened} screened out before training (over a hard limit, never trained)"
    if summary.copied:
        trials += f"; {summary.copied} copied (an architecture already trained: given that trial's result)"
    finished = [r.finished_at for r in records if r.finished_at is not None]
    last = max(finished + [r.created_at for r in records], default=start)
    wall = (snap.taken_at if snap.active else last) - start
    rows = [
        ("state", state + ("" if state != "stopped" or summary.done >= summary.trials
                           else f" (continue with: mixnas resume {snap.paths.root})")),
        ("trials", trials),
        ("budget used", f"{summary.done:,} / {summary.trials:,} trainings finished "
                        f"({100.0 * summary.done / max(1, summary.trials):.0f}%)"),
        ("wall time", f"{_duration(wall)} from the first ask to "
                      f"{'now' if snap.active else 'the last result'}; {_duration(summary.eval_seconds)} of "
                      "evaluation summed over trials"),
        ("controller", _with_options(cfg.controller.type, cfg.controller.options)),
        ("search space", _describe_space(cfg)),
        ("evaluator", _describe_evaluator(cfg)),
        ("reward", _describe_reward(cfg)),
        ("latency", _describe_latency(cfg, view)),
    ]
    limits = [f"{n} <= {v:,.6g}" for n, v in (("params", cfg.constraints.max_params), ("macs", cfg.constraints.max_macs),
                                              ("latency_ms", cfg.constraints.max_latency_ms)) if v is not None]
    if limits:
        rows.append(("hard limits", ", ".join(limits)))
    if summary.hypervolume is not None:
        rows.append(("hypervolume", f"{summary.hypervolume:.6g} (Pareto front: {len(summary.front)} trials)"))
    else:
        rows.append(("Pareto front", f"{len(summary.front)} trials"))
    if summary.best is not None:
        best = summary.best
        reward = means[best.trial].reward if best.trial in means else best.reward
        rows.append(("best trial", f"trial {best.trial}, reward {reward:.6g}"
                                   + (f" (mean over {means[best.trial].n_seeds} seeds)" if best.trial in means else "")))
    noise = seed_noise(records, snap.repeats)
    if means:
        text = f"{len(means)} trials evaluated again with more seeds (mixnas rerank): ranked by their means"
        if noise and noise.get("reward_sd") is not None:
            text += f"; one evaluation's reward s.d. {noise['reward_sd']:.3g} (pooled)"
        rows.append(("re-ranked", text))
    if cfg.description:
        rows.insert(0, ("description", cfg.description))
    return rows


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min"


def _with_options(name: str, options: Mapping[str, Any]) -> str:
    return name + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")


def _describe_space(cfg: ExperimentConfig) -> str:
    space = _space_or_none(cfg)
    if space is None:
        return f"{cfg.search_space!r} (cannot be loaded now)"
    log10 = space.log10_cardinality
    size = f"{space.cardinality:,}" if log10 < 7 else f"about 10^{log10:.1f}"
    return f"{space.name}: {size} candidates, {len(space.dimensions)} dimensions"


def _describe_evaluator(cfg: ExperimentConfig) -> str:
    e = cfg.evaluator
    if e.type == "proxy":
        budget = {k: v for k, v in e.yaml_sections()["budget"].items() if v is not None}
        return f"proxy trainer on {e.data_spec.source}, " + ", ".join(f"{k} {v}" for k, v in budget.items())
    if e.type == "tabular":
        return f"tabular benchmark {e.table}"
    return f"supernet {e.checkpoint}"


def _describe_reward(cfg: ExperimentConfig) -> str:
    r = cfg.reward
    if r.type == "mnasnet":
        return (f"MnasNet: {r.accuracy} × ({r.cost} / {r.target:g})^w, w = {r.alpha:g} at or below the target, "
                f"{r.beta:g} above")
    if r.type == "metric":
        return f"{r.metric} ({r.direction})"
    ref = f"; hypervolume reference point {list(r.reference_point)}" if r.reference_point else ""
    return "Pareto: " + ", ".join(f"{o.name} ({o.direction})" for o in r.objectives) + ref


def _describe_latency(cfg: ExperimentConfig, view: TableView | None) -> str:
    lat = cfg.latency
    if view is not None:
        return "lookup table " + describe_table(view)
    if lat.type in ("measure", "remote"):
        m = lat.measure_config
        where = f"on the agent {lat.url}" if lat.type == "remote" else "on each worker"
        return (f"measured end to end {where}: {getattr(lat, 'backend', m.backend)}, {m.precision}, {m.threads} "
                f"thread{'s' if m.threads != 1 else ''}, batch {m.batch_size} (no table: no per-part breakdown)")
    return "none"


def _top_table(cfg: ExperimentConfig, records: Sequence[TrialRecord], means: Mapping[int, SeedMean]
               ) -> tuple[list[str], list[list[str]]]:
    top = ranked(cfg, records, means)[:TOP_ROWS]
    names = [o.name for o in front_objectives(cfg)]
    names += [n for n in KEY_METRICS if n not in names and any(is_finite_number(r.metrics.get(n)) for r in top)]
    reward = _reward_name(cfg)["name"] if cfg.reward.type != "pareto" else "reward"
    header = ["rank", "trial", reward, "seeds", *names]
    rows = []
    for i, r in enumerate(top, 1):
        mean = means.get(r.trial)
        value = f"{(mean.reward if mean else r.reward):.5g}"
        if mean is not None and mean.sem.get("reward") is not None:
            value += f" ± {mean.sem['reward']:.2g}"
        shown = (lambda n, m=mean, rec=r: m.metric(rec, n)) if mean is not None else r.metrics.get
        rows.append([str(i), str(r.trial), value, str(mean.n_seeds if mean else 1),
                     *(format_metric(n, shown(n)) for n in names)])
    return header, rows


def _problems(records: Sequence[TrialRecord], start: float) -> tuple[list[str], list[list[str]]]:
    """Trials that did not give a usable result, with their reasons (and those of retried attempts)."""
    header = ["trial", "status", "origin", "finished", "reason", "earlier attempts"]
    rows = []
    for r in records:
        if r.origin == COPIED or not (r.status in PROBLEM_STATUSES or r.origin == SCREENED):
            continue
        when = _duration(r.finished_at - start) if r.finished_at is not None else "-"
        rows.append([str(r.trial), r.status.value, r.origin, when, r.reason or "-", "; ".join(r.failures) or "-"])
    return header, rows


def _running(records: Sequence[TrialRecord], start: float, now: float) -> tuple[list[str], list[list[str]]]:
    header = ["trial", "asked", "running for", "attempt", "earlier attempts"]
    rows = [[str(r.trial), f"{_duration(r.created_at - start)} after the first ask", _duration(now - r.created_at),
             str(r.attempt + 1), "; ".join(r.failures) or "-"]
            for r in records if r.status is Status.RUNNING]
    return header, rows
