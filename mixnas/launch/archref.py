"""ARCH arguments that name a trial of a run: ``RUN_DIR:TRIAL`` / ``RUN_DIR:best``, on top of :func:`resolve_arch`.

Every command that takes an ARCH (``mixnas build``, ``mixnas train-proxy --arch``) resolves it here, so a trial of a
search can be rebuilt, measured or retrained without copying its block strings. The run is read only: its
ledger is opened read-only (a search may still be writing it) and ``best`` is the run summary's best trial, the one
``mixnas search`` / ``status`` print. The search space package cannot read runs (imports flow one way), hence
this module in :mod:`mixnas.launch`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mixnas.errors import ArchitectureError, MixnasError
from mixnas.search_space.arch import Architecture
from mixnas.search_space.presets import resolve_arch
from mixnas.textio import path_kind

_TRIAL_REF = re.compile(r"^(?P<run>.+):(?P<trial>[0-9]{1,12}|best)$", re.ASCII | re.DOTALL)


def split_trial_ref(spec: str) -> tuple[Path, int | str] | None:
    """``("runs/x", 12)`` or ``("runs/x", "best")`` for ``runs/x:12`` / ``runs/x:best``; None for anything else."""
    match = _TRIAL_REF.match(spec.strip())
    if not match:
        return None
    trial = match["trial"]
    return Path(match["run"]), (trial if trial == "best" else int(trial))


def trial_record(run_dir: Path, trial: int | str) -> tuple[Any, Any]:
    """``(config, record)`` of one trial of a run (``trial="best"``: the run's best, by the mean over seeds for
    trials that ``mixnas rerank`` re-evaluated, as ``mixnas status`` ranks them). The record is the trial's own,
    as the search recorded it: means over seeds are only used to choose the best.

    Raises:
        ArchitectureError: not a run directory, no such trial, or no best trial yet.
    """
    from mixnas.launch.ledger import Ledger
    from mixnas.launch.rundir import RunPaths, load_run_config
    from mixnas.launch.summary import best_record, seed_means

    paths = RunPaths(run_dir)
    try:
        cfg = load_run_config(paths)
        with Ledger(paths.ledger, readonly=True) as ledger:
            if trial == "best":
                records = ledger.trials()
                best = best_record(cfg, records, seed_means(records, ledger.repeats()))
                if best is None:
                    raise ArchitectureError(f"{run_dir}:best: the run has no successful trial with a reward yet")
                record = best
            else:
                record = ledger.get(int(trial))
                if record is None:
                    raise ArchitectureError(
                        f"{run_dir}:{trial}: no trial {trial} in this run (it has {len(ledger)} trials, numbered from 0)"
                    )
    except ArchitectureError:
        raise
    except MixnasError as exc:
        raise ArchitectureError(f"{run_dir}:{trial}: {exc}") from None
    return cfg, record


def arch_of_trial(run_dir: Path, trial: int | str) -> Architecture:
    """The architecture of one trial of a run (``trial="best"``: the run's best; see :func:`trial_record`).

    Raises:
        ArchitectureError: not a run directory, no such trial, no best trial yet, or a trial of a generic space.
    """
    _, record = trial_record(run_dir, trial)
    candidate = record.candidate
    if not (isinstance(candidate, dict) and "blocks" in candidate):
        raise ArchitectureError(
            f"{run_dir}:{trial}: trial {record.trial} is a generic-space candidate, not an architecture"
        )
    return Architecture.from_dict(candidate).replace(name=f"{run_dir.name}:{record.trial}")


def resolve_cli_arch(spec: str, grammar: str | None = None) -> Architecture:
    """What an ARCH argument names: ``RUN_DIR:TRIAL``, ``RUN_DIR:best``, or anything :func:`resolve_arch` reads
    (a preset name, block strings with or without a ``# mixnas:`` header, a ``.txt`` / ``.json`` (``arch.json`` of
    an export) / ``.yaml`` file).

    Raises:
        ArchitectureError / BlockStringError: the reference or text is bad, naming it and what is allowed.
    """
    ref = split_trial_ref(spec)
    if ref is not None and path_kind(ref[0]) == "dir":
        return arch_of_trial(*ref)
    if ref is not None and path_kind(Path(spec.strip())) != "file":
        raise ArchitectureError(
            f"no run directory {str(ref[0])!r} for the trial reference {spec.strip()!r} "
            "(RUN_DIR:TRIAL needs an existing run directory and a trial number or 'best')"
        )
    head, sep, tail = spec.strip().rpartition(":")
    if sep and head and path_kind(head) == "dir":
        raise ArchitectureError(f"{spec.strip()!r}: RUN_DIR:TRIAL needs a trial number or 'best' after the colon, "
                                f"got {tail!r}")
    return resolve_arch(spec, grammar=grammar)
