"""A small search on a two-node Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``).

The driver runs in a subprocess that joins the cluster through ``execution.address``, as on a real cluster; each
trial needs one CPU and each node has one, so the two actors land on different nodes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from mixnas.launch.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]


def test_search_runs_on_two_nodes(shared_dir, tmp_path):
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    from mixnas.launch.ray_local import token_auth, write_token

    # A cluster with token authentication, as docs/distributed.md asks: every node and the driver get the token
    # through RAY_AUTH_TOKEN_PATH (a 0600 file).
    token = write_token(tmp_path / "auth_token")
    with token_auth(token):
        _search_on_two_nodes(cluster_utils, shared_dir, tmp_path)
    with Ledger(tmp_path / "run" / "ledger.sqlite", readonly=True) as ledger:
        rows = ledger.trials()
    assert len(rows) == 8 and all(r.status == "ok" for r in rows)
    nodes = {r.worker.split("/")[0] for r in rows}
    assert len(nodes) == 2, nodes


def _search_on_two_nodes(cluster_utils, shared_dir: Path, tmp_path: Path) -> None:
    # Cluster writes its address to <system temp>/ray/ray_current_cluster whatever temp_dir says; on a fresh
    # machine that folder does not exist yet.
    from ray._common.utils import get_default_ray_temp_dir

    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    temp = tempfile.mkdtemp(prefix="mxc", dir="/tmp")
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        data = yaml.safe_load((REPO / "experiments" / "nas_bench_macro.yaml").read_text())
        data["evaluator"]["table"] = str(shared_dir / "benchmarks/nas_bench_macro/nas-bench-macro_cifar10.json")
        data["execution"].update(trials=8, max_concurrent=2, address=cluster.address)
        data["logging"] = {"tensorboard": False}
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump(data))
        proc = subprocess.run([sys.executable, "-m", "mixnas.launch.cli", "search", str(config), "--output",
                               str(tmp_path / "run"), "-q"], capture_output=True, text=True, cwd=REPO,
                              env=dict(os.environ), timeout=180)
        assert proc.returncode == 0, proc.stderr
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
