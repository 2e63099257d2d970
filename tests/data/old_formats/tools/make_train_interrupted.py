"""Run `mixnas train` of the mixnas on PYTHONPATH for 3 epochs and SIGKILL it as soon as state.json says epoch 2.

    PYTHONPATH=/tmp/oldfmt_COMMIT python make_train_interrupted.py OUT
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

out = Path(sys.argv[1])
tiny = Path(__file__).resolve().parents[1] / "train" / "tiny.txt"
cmd = [sys.executable, "-m", "mixnas.launch.cli", "train", str(tiny), "--data", "digits",
       "--resolution", "16", "--images-per-class", "20", "--epochs", "3", "--batch-size", "32", "--device", "cpu",
       "--threads", "1", "--deterministic", "--no-tensorboard", "--output", str(out)]
proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
state = out / "state.json"
while proc.poll() is None:
    try:
        if json.loads(state.read_text())["epoch"] >= 2:
            break
    except (OSError, ValueError, KeyError):
        pass
    time.sleep(0.001)
proc.send_signal(signal.SIGKILL)
proc.wait()
print("killed at epoch", json.loads(state.read_text())["epoch"])
