"""Terminal progress of a search (stderr): done / running / failed trials, the best reward and its architecture,
time left. On a terminal one line is redrawn in place; otherwise (a log file, CI) a line is printed per finished
trial. Used by the CLI only: the library itself logs and never prints."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mixnas.launch.ledger import TrialRecord
from mixnas.launch.runner import SearchState
from mixnas.launch.summary import short_arch


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(state: SearchState, width: int = 100) -> str:
    s = state.summary()
    best = s.best
    if best is not None:
        best_text = f"best {best.reward:.4g} (trial {best.trial}: {short_arch(best, 48)})"
    elif s.front:
        best_text = f"Pareto front {len(s.front)}"
    else:
        best_text = "best -"
    line = (f"[{s.done}/{s.trials}] running {state.running} failed {s.failed} | {best_text} | "
            f"{format_seconds(time.time() - state.started)} elapsed, ~{format_seconds(state.seconds_left())} left")
    return line if len(line) <= width or width <= 0 else line[: width - 3] + "..."


class ProgressPrinter:
    """A :class:`~mixnas.launch.runner.SearchObserver` that writes progress to a stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, *, min_interval: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = min_interval
        self._last = 0.0

    def _write(self, state: SearchState, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + progress_line(state, width=160))
        else:
            self.stream.write(progress_line(state, width=0) + "\n")
        self.stream.flush()

    def on_start(self, state: SearchState) -> None:
        done = state.done_at_start
        what = f"resuming at {done}/{state.cfg.execution.trials} trials" if done else \
            f"{state.cfg.execution.trials} trials"
        self.stream.write(f"mixnas: search {state.cfg.name!r} in {state.paths.root}: {what}, "
                          f"{state.cfg.execution.max_concurrent} at a time\n")
        self.stream.flush()

    def on_trial(self, record: TrialRecord, state: SearchState) -> None:
        if not record.trained:  # screened out or a copy: nothing was trained (status counts them apart)
            if self.tty:
                self._write(state)
            return
        if record.status not in ("ok", "pruned") and not self.tty:
            self.stream.write(f"trial {record.trial}: {record.status}: {record.reason}\n")
        self._write(state, force=not self.tty)

    def on_tick(self, state: SearchState) -> None:
        if self.tty:
            self._write(state)

    def on_end(self, state: SearchState) -> None:
        if self.tty:
            self._write(state, force=True)
            self.stream.write("\n")
            self.stream.flush()
