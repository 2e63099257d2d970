"""TensorBoard logging of a search, and the Pareto plot saved in the run directory.

Layout under ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR/tensorboard --host 127.0.0.1``):

* ``search/``: ``search/reward`` per trial, ``search/best_reward`` and ``search/hypervolume`` over finished trials,
  the Pareto scatter as a figure;
* ``trials/trial_NNNNN/``: one run per trial with its training curve (``curve/top1``, ``curve/loss``, ... per epoch)
  and its hparams (the architecture's choices) and final metrics, so TensorBoard's HParams tab has one row per
  trial.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ledger import TrialRecord
from mixnas.launch.runner import SearchState
from mixnas.launch.summary import front_objectives, pareto_records
from mixnas.outcome import is_finite_number
from mixnas.textio import atomic_file

logger = logging.getLogger(__name__)

HPARAM_METRICS = ("reward", "top1", "latency_ms", "params", "macs")


def pareto_figure(cfg: ExperimentConfig, records: Sequence[TrialRecord]) -> Any:
    """A matplotlib scatter of every ``ok`` trial in the first two front objectives, the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x_obj, y_obj = front_objectives(cfg)[:2]
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)

    def xy(rs: Sequence[TrialRecord]) -> tuple[list[float], list[float]]:
        pts = [(r.metrics.get(x_obj.name), r.metrics.get(y_obj.name)) for r in rs]
        pts = [(a, b) for a, b in pts if isinstance(a, (int, float)) and isinstance(b, (int, float))
               and math.isfinite(a) and math.isfinite(b)]
        return [p[1] for p in pts], [p[0] for p in pts]

    ok = [r for r in records if r.status == "ok"]
    xs, ys = xy(ok)
    ax.scatter(xs, ys, s=14, alpha=0.5, label=f"trials ({len(xs)})")
    front = sorted(pareto_records(records, (x_obj, y_obj)), key=lambda r: r.metrics[y_obj.name])
    fx, fy = xy(front)
    ax.plot(fx, fy, "o-", color="tab:red", markersize=5, label=f"Pareto front ({len(fx)})")
    ax.set_xlabel(f"{y_obj.name} ({y_obj.direction})")
    ax.set_ylabel(f"{x_obj.name} ({x_obj.direction})")
    ax.set_title(f"{cfg.name}: {x_obj.name} vs {y_obj.name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def save_pareto_png(cfg: ExperimentConfig, records: Sequence[TrialRecord], path: Path) -> bool:
    """Write the Pareto plot; False (with a logged warning) when matplotlib is missing or nothing is plottable."""
    try:
        fig = pareto_figure(cfg, records)
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'mixnas[dev]'); no %s", path)
        return False
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, dpi=110, format="png")
    return True


def _hparam_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class TensorBoardLogger:
    """A :class:`~mixnas.launch.runner.SearchObserver` writing TensorBoard event files and ``pareto.png``."""

    def __init__(self) -> None:
        self._writer: Any = None
        self._best: float | None = None
        self._dims: list[Any] = []

    def on_start(self, state: SearchState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from mixnas.launch.config import load_search_space
        from mixnas.launch.summary import better

        self._writer = SummaryWriter(log_dir=str(state.paths.tensorboard / "search"))
        self._dims = list(load_search_space(state.cfg).dimensions)
        for record in sorted(state.records.values(), key=lambda r: r.trial):
            if record.status == "ok" and record.reward is not None:
                if self._best is None or better(state.cfg, record.reward, self._best):
                    self._best = record.reward

    def on_trial(self, record: TrialRecord, state: SearchState) -> None:
        from mixnas.launch.summary import better

        if not record.trained:  # screened out or a copy: no training to plot (the x axis counts trainings)
            return
        w = self._writer
        done = sum(1 for r in state.records.values() if r.finished and r.trained)
        if record.status == "ok" and record.reward is not None:
            w.add_scalar("search/reward", record.reward, record.trial)
            if self._best is None or better(state.cfg, record.reward, self._best):
                self._best = record.reward
        if self._best is not None:
            w.add_scalar("search/best_reward", self._best, done)
        summary = state.summary()
        if summary.hypervolume is not None:
            w.add_scalar("search/hypervolume", summary.hypervolume, done)
        w.add_scalar("search/failed", summary.failed, done)
        w.flush()
        self._trial_run(record, state)

    def _trial_run(self, record: TrialRecord, state: SearchState) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        writer = SummaryWriter(log_dir=str(state.paths.tensorboard / "trials" / f"trial_{record.trial:05d}"))
        try:
            for point in record.curve:
                epoch = int(point.get("epoch", 0))
                for key, value in point.items():
                    if key != "epoch":
                        writer.add_scalar(f"curve/{key}", value, epoch)
            params = {"trial": record.trial, "status": record.status}
            for dim, index in zip(self._dims, record.encoding):
                params[dim.name] = _hparam_value(dim.choices[index])
            metrics = {f"hparam/{k}": float(record.metrics[k]) for k in HPARAM_METRICS
                       if is_finite_number(record.metrics.get(k))}
            if record.reward is not None:
                metrics["hparam/reward"] = float(record.reward)
            exp, ssi, sei = hparams(params, metrics)
            for summary in (exp, ssi, sei):
                writer.file_writer.add_summary(summary)
            for key, value in metrics.items():
                writer.add_scalar(key, value, 0)
        finally:
            writer.close()

    def on_tick(self, state: SearchState) -> None:
        del state

    def on_end(self, state: SearchState) -> None:
        records = [state.records[k] for k in sorted(state.records)]
        try:
            fig = pareto_figure(state.cfg, records)
            self._writer.add_figure("search/pareto", fig, len(records))
        except ImportError:
            logger.warning("matplotlib is not installed; no Pareto figure in TensorBoard")
        self._writer.close()


def write_pareto_plot(state: SearchState) -> None:
    save_pareto_png(state.cfg, [state.records[k] for k in sorted(state.records)], state.paths.pareto_png)


class ParetoPlotter:
    """Observer that writes ``RUN_DIR/pareto.png`` when the search ends (also without TensorBoard)."""

    def on_start(self, state: SearchState) -> None:
        del state

    def on_trial(self, record: TrialRecord, state: SearchState) -> None:
        del record, state

    def on_tick(self, state: SearchState) -> None:
        del state

    def on_end(self, state: SearchState) -> None:
        write_pareto_plot(state)


class EpochCurves:
    """Per-epoch curves of one training run (``mixnas train``, ``mixnas supernet train``) under
    ``FOLDER/tensorboard``: the numeric ``keys`` of each epoch's metrics, as ``{prefix}/{key}``.

    Raises:
        ImportError: tensorboard is not installed (the caller goes on without curves).
    """

    def __init__(self, folder: Path, prefix: str, keys: Sequence[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        self.prefix, self.keys = prefix, tuple(keys)

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        for key in self.keys:
            if metrics.get(key) is not None:
                self.writer.add_scalar(f"{self.prefix}/{key}", metrics[key], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def epoch_curves(folder: Path, prefix: str, keys: Sequence[str], *, enabled: bool = True) -> EpochCurves | None:
    """:class:`EpochCurves`, or None when turned off or tensorboard is missing (one warning: the run goes on)."""
    if not enabled:
        return None
    try:
        return EpochCurves(folder, prefix, keys)
    except ImportError as exc:
        logger.warning("no TensorBoard curves: %s", exc)
        return None
