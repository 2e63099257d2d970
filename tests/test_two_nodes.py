"""A real two-node Ray cluster: two network namespaces joined by a veth pair, a Ray head in one and a worker node
in the other, token authentication on; a search driven from the head's namespace with ``execution.address``.

Addresses exist only on that pair (198.18.0.1/30 and 198.18.0.2/30, a benchmarking range): there is no route to
anything else, and both namespaces are deleted at the end. Needs root and ``ip netns`` (skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HEAD, WORKER = "198.18.0.1", "198.18.0.2"
NS_HEAD, NS_WORKER = "mixnas_test_head", "mixnas_test_worker"
RAY = str(Path(sys.executable).with_name("ray"))


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 (ip netns)"
    probe = _ip("netns", "add", "mixnas_test_probe")
    _ip("netns", "del", "mixnas_test_probe")
    return None if probe.returncode == 0 else f"ip netns is not permitted here: {probe.stderr.strip()}"


def _in(ns: str, *command: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *command], env=env, capture_output=True, text=True, **kwargs)


def _processes_of(folder: Path) -> list[int]:
    from mixnas.launch.ray_local import processes_of

    return processes_of(folder)


def _end(folder: Path) -> None:
    for pid in _processes_of(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _can_make_namespaces()
    if why:
        pytest.skip(why)
    from mixnas.launch.ray_local import write_token

    base = tmp_path_factory.mktemp("twonodes")
    token = write_token(base / "auth_token")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    temps = {NS_HEAD: Path(f"/tmp/mxh{os.getpid()}"), NS_WORKER: Path(f"/tmp/mxw{os.getpid()}")}
    for ns in (NS_HEAD, NS_WORKER):
        _ip("netns", "del", ns)
    try:
        for step in (["netns", "add", NS_HEAD], ["netns", "add", NS_WORKER],
                     ["link", "add", "mxt_h", "type", "veth", "peer", "name", "mxt_w"],
                     ["link", "set", "mxt_h", "netns", NS_HEAD], ["link", "set", "mxt_w", "netns", NS_WORKER],
                     ["-n", NS_HEAD, "addr", "add", f"{HEAD}/30", "dev", "mxt_h"],
                     ["-n", NS_WORKER, "addr", "add", f"{WORKER}/30", "dev", "mxt_w"],
                     ["-n", NS_HEAD, "link", "set", "mxt_h", "up"], ["-n", NS_WORKER, "link", "set", "mxt_w", "up"],
                     ["-n", NS_HEAD, "link", "set", "lo", "up"], ["-n", NS_WORKER, "link", "set", "lo", "up"]):
            done = _ip(*step)
            assert done.returncode == 0, (step, done.stderr)
        head = _in(NS_HEAD, RAY, "start", "--head", f"--node-ip-address={HEAD}", "--port=6379", "--num-cpus=1",
                   "--include-dashboard=false", f"--temp-dir={temps[NS_HEAD]}", "--disable-usage-stats",
                   env=env, timeout=120)
        assert head.returncode == 0, head.stderr[-2000:]
        # the worker node sees its own (empty) head_only folder: a file only the head has, as on two machines
        head_only = base / "head_only"
        head_only.mkdir()
        start = [RAY, "start", f"--address={HEAD}:6379", f"--node-ip-address={WORKER}", "--num-cpus=1",
                 f"--temp-dir={temps[NS_WORKER]}", "--disable-usage-stats"]
        worker = _in(NS_WORKER, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                     f'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", str(head_only), *start,
                     env=env, timeout=120)
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield {"env": env, "token": token, "temps": temps, "base": base, "head_only": head_only}
    finally:
        for folder in temps.values():
            _end(folder)
            shutil.rmtree(folder, ignore_errors=True)
        for ns in (NS_HEAD, NS_WORKER):
            _ip("netns", "del", ns)


def _config(path: Path, **evaluator: object) -> Path:
    data = {
        "name": "twonodes", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 30}, "budget": {"steps": 40},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": {"type": "none"}, "reward": {"type": "metric", "metric": "top1"},
        "execution": {"trials": 10, "max_concurrent": 2, "address": f"{HEAD}:6379", "max_failures_per_trial": 2},
        "logging": {"tensorboard": False},
    }
    data["evaluator"].update(evaluator)
    path.write_text(yaml.safe_dump(data))
    return path


def _rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(f"file:{run_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT trial, status, worker, attempt FROM trials ORDER BY trial").fetchall()
    finally:
        con.close()


def test_a_node_without_the_data_stops_the_search_with_one_line(cluster):
    # The data exist where the driver runs (its checks pass) but not on the worker node (its folder is empty there):
    # one line naming that node and the folder, exit code 2, no trial started (not a failed trial per attempt).
    from sklearn.datasets import load_digits
    from test_data import write_idx

    digits = load_digits()
    write_idx(cluster["head_only"] / "train-images-idx3-ubyte", (digits.images * 16).clip(0, 255).astype("uint8"))
    write_idx(cluster["head_only"] / "train-labels-idx1-ubyte", digits.target.astype("uint8"))
    run_dir = cluster["base"] / "run_head_only"
    config = _config(cluster["base"] / "head_only.yaml", data=str(cluster["head_only"]))
    proc = _in(NS_HEAD, sys.executable, "-m", "mixnas.launch.cli", "search", str(config), "--output", str(run_dir),
               "-q", env=cluster["env"], cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the worker node {WORKER} cannot run trials" in lines[0], proc.stderr[-3000:]
    assert "cannot tell the data set's format" in lines[0] and str(cluster["head_only"]) in lines[0], lines
    assert _rows(run_dir) == []


def test_a_search_places_trials_on_both_nodes_and_survives_the_loss_of_one(cluster):
    run_dir = cluster["base"] / "run"
    proc = subprocess.Popen(["ip", "netns", "exec", NS_HEAD, sys.executable, "-m", "mixnas.launch.cli", "search",
                             str(_config(cluster["base"] / "c.yaml")), "--output", str(run_dir), "-q"],
                            cwd=REPO, env=cluster["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # once trials have finished on both nodes, the worker node dies (SIGKILL of all its processes)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        rows = _rows(run_dir) if (run_dir / "ledger.sqlite").exists() else []
        nodes = {r[2].split("/")[0] for r in rows if r[1] == "ok" and r[2]}
        if len(nodes) == 2:
            break
        time.sleep(0.5)
    assert len(nodes) == 2, f"trials did not run on both nodes: {rows}"
    _end(cluster["temps"][NS_WORKER])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    rows = _rows(run_dir)
    assert [r[0] for r in rows] == list(range(10)) and all(r[1] == "ok" for r in rows), rows  # each trial once
    assert len({r[2].split("/")[0] for r in rows}) == 2


def test_a_client_without_the_token_is_refused_from_the_other_namespace(cluster):
    script = (
        "import grpc, sys\n"
        "from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc\n"
        f"channel = grpc.insecure_channel('{HEAD}:6379')\n"
        "stub = gcs_service_pb2_grpc.InternalKVGcsServiceStub(channel)\n"
        "token = sys.argv[1] if len(sys.argv) > 1 else None\n"
        "metadata = (('authorization', 'Bearer ' + token),) if token else ()\n"
        "try:\n"
        "    stub.InternalKVKeys(gcs_service_pb2.InternalKVKeysRequest(prefix=b''), timeout=20, metadata=metadata)\n"
        "    print('served')\n"
        "except grpc.RpcError as exc:\n"
        "    print(exc.code().name)\n"
    )
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    without = _in(NS_WORKER, sys.executable, "-c", script, env=env, timeout=60)
    assert without.stdout.strip() == "UNAUTHENTICATED", without.stdout + without.stderr
    token = cluster["token"].read_text().strip()
    with_token = _in(NS_WORKER, sys.executable, "-c", script, token, env=env, timeout=60)
    assert with_token.stdout.strip() == "served", with_token.stdout + with_token.stderr
