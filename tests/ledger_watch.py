"""Test helper: SIGKILL a mixnas process at a chosen point of its run, read from its ledger."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path


FINISHED_TRIALS = "SELECT COUNT(*) FROM trials WHERE status != 'running'"


def kill_when(proc: subprocess.Popen, ledger: Path, finished_target: int, timeout: float = 90,
              count: str = FINISHED_TRIALS) -> int:
    """SIGKILL the process as soon as the ledger has ``finished_target`` rows that ``count`` counts (default:
    finished trials); returns how many it had."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.exists():
            try:
                con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
                done = con.execute(count).fetchone()[0]
                con.close()
            except sqlite3.OperationalError:  # the schema is being created
                done = 0
            if done >= finished_target:
                break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return done
