"""Write a run directory with the mixnas on PYTHONPATH (a worktree of an old commit): ``mixnas search CONFIG``; with
KILL_AT, SIGKILL the driver once its ledger has that many finished trials, then the rest of its process session
(the local Ray it started).

    PYTHONPATH=/tmp/oldfmt_COMMIT python make_run.py macro3.yaml OUT [KILL_AT]
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/, for ledger_watch
from ledger_watch import kill_when  # noqa: E402

config, out, target = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0
cmd = [sys.executable, "-m", "mixnas.launch.cli", "search", config, "--output", str(out), "-q"]
proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
if target:
    print("killed with", kill_when(proc, out / "ledger.sqlite", target, timeout=120), "finished trials")
    time.sleep(1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
else:
    print("exit", proc.wait())
