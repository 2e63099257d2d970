"""The Python API: what the command line does, from a script or a notebook, with the same code under it.

::

    import mixnas

    run = mixnas.search("experiments/quickstart.yaml", overrides={"execution.trials": 10}, output="runs/q")
    run = mixnas.resume("runs/q")                     # after Ctrl-C, a crash or a SIGKILL: nothing is lost
    run = mixnas.open_run("runs/q")                   # read a run (also while it runs)
    run.trials()                                      # every trial as a TrialRecord
    run.dataframe()                                   # the same as a pandas DataFrame (when pandas is installed)
    run.best(), run.pareto_front(), run.summary()
    run.rerank(top=3, seeds=2)                        # the best again with other seeds; ranks by the mean
    run.export(top=3, output="runs/q/export")         # block strings, arch.json, ONNX
    model = run.model()                               # the best architecture as a torch module (untrained)

``mixnas search`` / ``resume`` / ``rerank`` / ``export`` are thin shells over these functions: the same config
validation, the same errors (:class:`~mixnas.errors.MixnasError` subclasses, one line each), the same run
directory. A ``progress`` callback gets a :class:`Progress` after every finished trial. Ctrl-C (KeyboardInterrupt,
also a notebook's "interrupt") stops the search cleanly: the actors and a local Ray are stopped, every finished
trial is in the ledger, and :func:`resume` continues; the interrupt is raised again to the caller.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixnas.errors import ConfigError, MixnasError
from mixnas.launch.config import apply_overrides, config_from_dict, load_config, read_yaml
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ledger import Ledger, RepeatRecord, TrialRecord
from mixnas.launch.rundir import RunPaths, load_run_config
from mixnas.launch.summary import RunSummary, seed_means, summarize

Overrides = Mapping[str, Any] | Sequence[str]


@dataclass(frozen=True)
class Progress:
    """What a progress callback is given after each finished trial.

    Attributes:
        record: the trial that has just finished (also a screened-out candidate or a copy: see ``record.origin``).
        summary: the run so far (counts, best trial, Pareto front, ``screened`` / ``copied``).
        running: trials running now.
    """

    record: TrialRecord
    summary: RunSummary
    running: int


ProgressFn = Callable[[Progress], Any]


class _Callback:
    """A search observer that calls a progress function."""

    def __init__(self, fn: ProgressFn) -> None:
        self.fn = fn

    def on_start(self, state: Any) -> None:
        del state

    def on_trial(self, record: TrialRecord, state: Any) -> None:
        self.fn(Progress(record, state.summary(), state.running))

    def on_tick(self, state: Any) -> None:
        del state

    def on_end(self, state: Any) -> None:
        del state


def observers(cfg: ExperimentConfig, *, quiet: bool = True, progress: ProgressFn | None = None) -> list[Any]:
    """What watches a search: the progress line on stderr (unless ``quiet``), TensorBoard and the Pareto plot (as
    the config's ``logging`` asks), and ``progress``."""
    from mixnas.launch.progress import ProgressPrinter
    from mixnas.launch.tb import ParetoPlotter, TensorBoardLogger

    out: list[Any] = [] if quiet else [ProgressPrinter(sys.stderr)]
    out.append(TensorBoardLogger() if cfg.logging.tensorboard else ParetoPlotter())
    if cfg.logging.tensorboard:
        out.append(ParetoPlotter())
    if progress is not None:
        out.append(_Callback(progress))
    return out


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM stops the search the way Ctrl-C does (in the main thread only; elsewhere, as a
    notebook kernel's worker thread, nothing changes).

    The signal raises KeyboardInterrupt in the driver loop, which stops the actors, shuts down a local Ray and
    removes its temp folder on the way out; ``resume`` continues. Without this, Python's default SIGTERM ends the
    driver with no clean-up at all, and ``ray.init`` would install a ``sys.exit`` handler instead
    (:mod:`mixnas.launch.ray_local` puts this one back). Further SIGTERMs are ignored while the clean-up runs.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def experiment(config: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Overrides = ()
               ) -> ExperimentConfig:
    """A validated experiment: a YAML path, a mapping as the YAML would hold it (relative paths are taken from the
    current folder), or an :class:`ExperimentConfig`; ``overrides`` as ``--set`` texts or a mapping of key paths
    (``{"execution.trials": 10}``)."""
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise ConfigError("overrides apply to a YAML path or a mapping, not to a validated ExperimentConfig")
        return config
    if isinstance(config, Mapping):
        return config_from_dict(apply_overrides(dict(config), overrides), source="<experiment mapping>",
                                base_dir=Path.cwd())
    return load_config(config, overrides)


def search(config: str | Path | Mapping[str, Any] | ExperimentConfig, *, overrides: Overrides = (),
           output: str | Path | None = None, progress: ProgressFn | None = None, quiet: bool = True) -> Run:
    """Run a search to its end (blocking) and return its :class:`Run`.

    Args:
        config: an experiment YAML path, a mapping, or an ExperimentConfig.
        overrides: ``--set`` overrides, as texts or a mapping of key paths to values.
        output: the run directory (default ``output_dir/name`` of the config).
        progress: called with a :class:`Progress` after each finished trial.
        quiet: no progress line on stderr.
    """
    from mixnas.launch.runner import run_search

    cfg = experiment(config, overrides)
    run_dir = Path(output) if output is not None else Path(cfg.output_dir) / cfg.name
    with sigterm_as_interrupt():
        run_search(cfg, run_dir, observers=observers(cfg, quiet=quiet, progress=progress))
    return Run(run_dir)


def changed_config(run_dir: str | Path, config: str | Path | ExperimentConfig | None = None,
                   overrides: Overrides = ()) -> ExperimentConfig | None:
    """The experiment a resume is asked to compare with the run's: ``config`` (a YAML path, with ``overrides``), or
    the run's own ``config.yaml`` with ``overrides``; None when neither is given."""
    paths = RunPaths(Path(run_dir))
    if isinstance(config, ExperimentConfig):
        return experiment(config, overrides)
    if config is not None:
        return load_config(config, overrides)
    if overrides:
        data = apply_overrides(read_yaml(paths.config), overrides)
        return config_from_dict(data, source=f"{paths.config} (with overrides)", base_dir=paths.root)
    return None


def resume(run_dir: str | Path, *, config: str | Path | ExperimentConfig | None = None, overrides: Overrides = (),
           force: bool = False, progress: ProgressFn | None = None, quiet: bool = True) -> Run:
    """Continue a run from its ledger (a finished run is returned as it is).

    ``config`` / ``overrides``: a changed experiment (:func:`changed_config`), compared with the run's; a difference
    is refused (with the list of changes) unless ``force``.
    """
    from mixnas.launch.runner import resume_search

    paths = RunPaths(Path(run_dir))
    new = changed_config(paths.root, config, overrides)
    cfg = new or load_run_config(paths)
    with sigterm_as_interrupt():
        _, finished = resume_search(paths.root, new_config=new, force=force,
                                    observers=observers(cfg, quiet=quiet, progress=progress))
    run = Run(paths.root)
    run.was_finished = finished
    return run


@dataclass(frozen=True)
class RunRead:
    """A run as read at one moment: its trials and repeats, and whether its search is running (a driver holds its
    lock) or finished (it ended after every training it was asked for, or after it stopped asking)."""

    records: list[TrialRecord]
    repeats: list[RepeatRecord]
    active: bool
    finished: bool


def read_run(paths: RunPaths, cfg: ExperimentConfig) -> RunRead:
    """Read a run directory's ledger (read-only: the search may be writing it)."""
    from mixnas.launch.rundir import run_is_active

    with Ledger(paths.ledger, readonly=True) as ledger:
        records, repeats = ledger.trials(), ledger.repeats()
        finished_at, exhausted = ledger.get_meta("finished_at"), ledger.get_meta("exhausted") == "1"
    active = run_is_active(paths)
    done = sum(1 for r in records if r.finished and r.trained)
    finished = not active and finished_at is not None and (done >= cfg.execution.trials or exhausted)
    return RunRead(records, repeats, active, finished)


def open_run(run_dir: str | Path) -> Run:
    """A run directory, to read (safe while its search runs)."""
    return Run(run_dir)


class Run:
    """A search's run directory. Every read opens the ledger read-only, so a run can be read while it runs."""

    def __init__(self, run_dir: str | Path) -> None:
        self.paths = RunPaths(Path(run_dir))
        self.config = load_run_config(self.paths)  # a RunError for a folder that is not a run directory
        self.was_finished = False  # set by resume: the run had finished already, nothing ran

    @property
    def path(self) -> Path:
        return self.paths.root

    def __repr__(self) -> str:
        s = self.summary()
        return f"Run({str(self.path)!r}: {s.to_dict()['state']}, {s.done}/{s.trials} trials)"

    # ------------------------------------------------------------------ reading
    def read(self) -> RunRead:
        """Every trial and repeat, and whether the search is running or finished, read at once."""
        return read_run(self.paths, self.config)

    def trials(self) -> list[TrialRecord]:
        """Every trial, in order (running, screened-out and copied ones included: see ``origin``)."""
        return self.read().records

    def repeats(self) -> list[RepeatRecord]:
        """The extra evaluations of ``rerank``."""
        return self.read().repeats

    def summary(self, read: RunRead | None = None) -> RunSummary:
        """Counts, the best trial (by its mean over seeds after ``rerank``), the Pareto front, hypervolume (of
        ``read``, a :meth:`read` already made, or of the run now)."""
        r = read or self.read()
        return summarize(self.config, r.records, finished=r.finished, active=r.active,
                         means=seed_means(r.records, r.repeats))

    def best(self) -> TrialRecord | None:
        """The best ``ok`` trial by reward (by its mean over seeds where ``rerank`` evaluated it again)."""
        return self.summary().best

    def pareto_front(self) -> list[TrialRecord]:
        """The ``ok`` trials on the Pareto front of the run's objectives (accuracy and cost for a scalar reward)."""
        return self.summary().front

    def trial(self, which: int | str = "best") -> TrialRecord:
        """One trial: its number, or ``"best"``."""
        records = self.trials()
        if which == "best":
            best = self.best()
            if best is None:
                raise MixnasError(f"{self.path}: no trial succeeded yet, so there is no best trial")
            return best
        if isinstance(which, bool) or not isinstance(which, int) or not 0 <= which < len(records):
            raise MixnasError(f"{self.path}: trial must be 'best' or an integer in 0..{len(records) - 1}, got "
                              f"{which!r}")
        return records[which]

    def dataframe(self) -> Any:
        """The trials as a pandas DataFrame: one row per trial, its metrics as columns (pandas is not a dependency
        of mixnas: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise MixnasError("Run.dataframe needs pandas, which mixnas does not install: pip install pandas") from None
        rows = []
        for r in self.trials():
            row = {"trial": r.trial, "status": r.status.value, "origin": r.origin, "copy_of": r.copy_of,
                   "reward": r.reward, "arch_id": r.arch_id, "encoding": r.encoding,
                   "block_strings": list(r.block_strings) if r.block_strings else None, "reason": r.reason,
                   "worker": r.worker, "eval_seconds": r.eval_seconds, "attempt": r.attempt}
            row.update({k: v for k, v in r.metrics.items() if k not in row})
            rows.append(row)
        return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()

    # ------------------------------------------------------------------ what to do with it
    def architecture(self, which: int | str = "best") -> Any:
        """A trial's :class:`~mixnas.search_space.arch.Architecture` (a space of plain choices has none)."""
        from mixnas.launch.summary import record_arch

        arch = record_arch(self.trial(which))
        if arch is None:
            raise MixnasError(f"{self.path}: trial {which} is a choice of a table, not a network")
        return arch

    def model(self, which: int | str = "best") -> Any:
        """A trial's network as a torch module, with fresh weights (train it with ``mixnas train``; a trained
        one loads with :func:`mixnas.load_model`)."""
        from mixnas.models import build

        return build(self.architecture(which))

    def rerank(self, top: int = 3, seeds: int = 2, progress: Callable[[Any], Any] | None = None) -> Any:
        """Evaluate the ``top`` best trials ``seeds`` more times each (``mixnas rerank``); returns the ranking by
        mean reward (:class:`~mixnas.launch.rerank.RerankResult`)."""
        from mixnas.launch.rerank import rerank_run

        with sigterm_as_interrupt():
            return rerank_run(self.path, top=top, seeds=seeds, progress=progress)

    def export(self, *, top: int | None = None, pareto: bool = False, formats: Sequence[str] | None = None,
               output: str | Path | None = None) -> tuple[Path, list[Any]]:
        """Write the best ``top`` trials (or the Pareto front) out (``mixnas export``); returns the folder and what
        was written per trial."""
        from mixnas.launch.export import DEFAULT_FORMATS, export_run

        return export_run(self.path, top=top, pareto=pareto, formats=list(formats or DEFAULT_FORMATS),
                          out_dir=output)


__all__ = ["Progress", "Run", "RunRead", "changed_config", "experiment", "open_run", "read_run", "resume", "search"]
