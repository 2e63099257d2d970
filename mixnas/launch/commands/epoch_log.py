"""What ``mixnas train`` and ``mixnas supernet train`` share around a training run: the check of the output folder
against ``--resume``, and what they print and record while they train (one progress line per epoch on stderr, the
TensorBoard curves of the output folder)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from mixnas.errors import RunError


def check_output(output: Path, state: dict[str, Any] | None, resume: bool, what: str) -> bool:
    """Refuse an output folder that holds a run unless ``--resume``, and ``--resume`` without one; ``state`` is the
    folder's checkpoint state (None: no epoch has finished there). True when a run is to be resumed."""
    if not resume:
        if state is not None:
            raise RunError(f"{output}: already holds a {what} run (epoch {state['epoch']}); pass --resume to "
                           "continue it or choose another --output")
        return False
    if state is None:
        from mixnas.tensorfiles import STATE_FILE  # torch: only once a run is checked

        raise RunError(f"{output}: no checkpoint to resume from (no {STATE_FILE}); run without --resume")
    return True


class EpochLog:
    """The per-epoch callback of a trainer (``on_epoch``), then :meth:`fit` to run it.

    Args:
        line: ``(epoch, metrics) -> the progress line`` printed after each epoch.
    """

    def __init__(self, line: Callable[[int, dict[str, Any]], str]) -> None:
        self.line = line
        self.curves: Any = None  # mixnas.launch.tb.EpochCurves while fit runs, unless turned off

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        print(self.line(epoch, metrics), file=sys.stderr, flush=True)
        if self.curves is not None:
            self.curves(epoch, metrics)

    def fit(self, trainer: Any, output: Path, prefix: str, keys: Sequence[str], *, tensorboard: bool, resume: bool,
            banner: str) -> dict[str, Any]:
        """Open the curves (``prefix/KEY`` for each of ``keys``), print ``banner``, train, close the curves."""
        from mixnas.launch.tb import epoch_curves

        self.curves = epoch_curves(output, prefix, keys, enabled=tensorboard)
        print(banner, file=sys.stderr, flush=True)
        try:
            return trainer.fit(resume=resume)
        finally:
            if self.curves is not None:
                self.curves.close()
            self.curves = None
