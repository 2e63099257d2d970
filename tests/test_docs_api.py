"""docs/python_api.md runs: its Python blocks, in order, in one process, from a folder with the quickstart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_python_api_page_runs_as_written(tmp_path, ray_address):
    page = (REPO / "docs" / "python_api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 5
    (tmp_path / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "quickstart.yaml", tmp_path / "experiments" / "quickstart.yaml")
    # the page's search joins this module's Ray (as a user's would start its own) and runs one block after another
    script = "\n".join(blocks).replace(
        '"logging.tensorboard": False}', f'"logging.tensorboard": False, "execution.address": {ray_address!r}}}')
    assert ray_address in script  # the override above found its place in the page
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trial 3: ok, 4/4 done" in proc.stdout or "4/4 done" in proc.stdout, proc.stdout
    assert "torch.Size([1, 10])" in proc.stdout
