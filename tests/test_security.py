"""A local search's Ray: token authentication on, every server on loopback, a private 0600 token, nothing left behind.

One local Ray (``mixnas.launch.ray_local.start_local_ray``) serves the in-process checks; the SIGTERM check runs
``mixnas search`` / ``mixnas resume`` in subprocesses that each start their own private Ray.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray")
grpc = pytest.importorskip("grpc")

from mixnas.errors import RunError  # noqa: E402
from mixnas.launch.ledger import Ledger  # noqa: E402
from mixnas.launch.ray_local import (  # noqa: E402
    DRIVER_FILE,
    PREFIX,
    _process_namespace,
    remove_stale_dirs,
    start_local_ray,
)


@pytest.fixture(scope="module")
def session():
    if ray.is_initialized():
        pytest.skip("another Ray is initialised in this process")
    local = start_local_ray(num_cpus=1)
    ray.get(ray.remote(lambda: os.getpid()).remote())  # start a worker, so its server is listening too
    yield local
    local.close()
    assert not local.private_dir.exists()
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ or os.environ["RAY_AUTH_TOKEN_PATH"] != str(local.token_path)


# ---------------------------------------------------------------------------------------------- sockets (/proc)
def _listening() -> dict[str, tuple[str, int]]:
    """Socket inode -> (ip, port) of every listening TCP socket and bound UDP socket on this machine."""
    out = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6), ("udp", socket.AF_INET),
                          ("udp6", socket.AF_INET6)):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != ("0A" if table.startswith("tcp") else "07"):  # LISTEN / UDP "CLOSE" = bound
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)  # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[inode] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:  # the process ended meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        out.append(stack.pop())
        stack.extend(children.get(out[-1], []))
    return out


def _sockets_of(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:  # the process (or the descriptor) went away meanwhile
        pass
    return inodes


def _servers() -> list[tuple[int, str, str, int]]:
    """(pid, command, ip, port) of every listening socket of this process and the processes it started."""
    listening = _listening()
    found = []
    for pid in _descendants(os.getpid()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        for inode in _sockets_of(pid):
            if inode in listening:
                found.append((pid, command, *listening[inode]))
    return found


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


# ---------------------------------------------------------------------------------------------- in-process Ray
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc (Linux)")
def test_every_server_of_a_local_ray_listens_on_loopback_only(session):
    assert session.address.startswith("127.0.0.1:")
    servers = _servers()
    commands = " | ".join(command for _, command, _, _ in servers)
    assert "gcs_server" in commands and "raylet" in commands, servers  # the listing sees Ray's servers
    exposed = [s for s in servers if not _is_loopback(s[2])]
    assert exposed == [], f"listening on a non-loopback address: {exposed}"


def _gcs_call(address: str, metadata: tuple = ()) -> None:
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.InternalKVGcsServiceStub(channel)
        stub.InternalKVKeys(gcs_service_pb2.InternalKVKeysRequest(prefix=b""), timeout=20, metadata=metadata)


def _raylet_call(address: str, metadata: tuple = ()) -> None:
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        stub.GetSystemConfig(node_manager_pb2.GetSystemConfigRequest(), timeout=20, metadata=metadata)


@pytest.mark.parametrize("server", ["gcs", "raylet"])
def test_ray_grpc_servers_refuse_a_client_without_the_token(session, server):
    node = ray.nodes()[0]
    address = session.address if server == "gcs" else f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
    call = _gcs_call if server == "gcs" else _raylet_call
    token = session.token_path.read_text().strip()
    for metadata in ((), (("authorization", "Bearer " + "0" * 64),)):
        with pytest.raises(grpc.RpcError) as refused:
            call(address, metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
    call(address, (("authorization", f"Bearer {token}"),))  # the same call with the token is served


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc (Linux)")
def test_the_runtime_env_agent_refuses_http_without_the_token(session):
    ports = [port for _, command, _, port in _servers() if "RuntimeEnvAgent" in command]
    assert ports, _servers()
    for headers, status in (({}, 401), ({"Authorization": "Bearer " + "0" * 64}, 403)):
        request = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/get_runtime_envs_info", data=b"",
                                         headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=20)
        assert refused.value.code == status


def test_the_token_is_private(session):
    token = session.token_path
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(session.private_dir.stat().st_mode) == 0o700
    assert len(token.read_text().strip()) == 64  # 256 bits, hex
    assert session.temp_dir.is_dir() and session.temp_dir.parent == session.private_dir
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
    sockets = [p for p in session.temp_dir.rglob("*") if p.is_socket()]
    assert sockets and all(len(str(p)) <= 107 for p in sockets)
    assert (session.private_dir / DRIVER_FILE).read_text().split() == [str(os.getpid()), _process_namespace()]


def test_workers_run_at_the_priority_of_the_search(session):
    # Ray's default is nice 15: on a shared machine a search's trials would get a small share of the CPU.
    worker = ray.get(ray.remote(lambda: os.getpriority(os.PRIO_PROCESS, 0)).remote())
    assert worker == os.getpriority(os.PRIO_PROCESS, 0)
    assert "RAY_worker_niceness" not in os.environ


def test_a_new_local_ray_removes_the_private_folders_of_killed_searches(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def folder(name: str, driver: int | None, namespace: str | None = None) -> Path:
        path = tmp_path / name
        path.mkdir(mode=0o700)
        (path / "auth_token").write_text("0" * 64)
        if driver is not None:
            (path / DRIVER_FILE).write_text(f"{driver} {namespace or here}\n")
        return path

    here = _process_namespace()
    killed = folder(f"{PREFIX}killed", gone.pid)  # its driver was SIGKILLed: nothing removed it
    mine = folder(f"{PREFIX}mine", os.getpid())
    running = folder(f"{PREFIX}running", 1)  # a driver that is still there
    older = folder(f"{PREFIX}older", None)  # no driver file: left alone
    elsewhere = folder(f"{PREFIX}container", gone.pid, "another-host/pid:[1]")  # its ids mean nothing here
    other = folder("someone-else", gone.pid)
    assert remove_stale_dirs(tmp_path) == [killed]
    assert not killed.exists() and all(p.exists() for p in (mine, running, older, elsewhere, other))
    assert remove_stale_dirs(tmp_path) == []


def test_a_local_ray_with_authentication_disabled_is_refused(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RunError, match="RAY_AUTH_MODE=disabled"):
        start_local_ray()


# ---------------------------------------------------------------------------------------------- SIGTERM, resume
def _digits_config(tmp_path: Path, trials: int) -> Path:
    data = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    data["evaluator"]["budget"] = {"steps": 3}
    data["evaluator"]["subset"] = {"images_per_class": 10, "val_fraction": 0.2}
    data["latency"] = {"type": "none"}
    data["reward"] = {"type": "metric", "metric": "top1"}
    data["execution"].update(trials=trials, max_concurrent=1, address="local")
    data["logging"] = {"tensorboard": False, "level": "warning"}
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _finished(ledger: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
        try:
            return con.execute("SELECT COUNT(*) FROM trials WHERE status != 'running'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigterm_stops_a_search_cleanly_and_resume_finishes_it(tmp_path):
    trials = 3
    config = _digits_config(tmp_path, trials)
    run_dir = tmp_path / "run"
    temp = Path(tempfile.mkdtemp(prefix="mxs", dir="/tmp"))  # short: Ray's socket paths live below it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(name, None)  # the CLI must bring its own token
    cli = [sys.executable, "-m", "mixnas.launch.cli"]
    try:
        proc = subprocess.Popen([*cli, "search", str(config), "--output", str(run_dir), "-q"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline and _finished(run_dir / "ledger.sqlite") < 1:
            time.sleep(0.01)
        assert proc.poll() is None, f"the search ended before SIGTERM: {proc.communicate()}"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (proc.returncode, err)
        assert "Traceback" not in err and "mixnas: interrupted" in err, err
        assert list(temp.glob("mixnas-ray-*")) == [], "the local Ray's private folder was left behind"
        done = _finished(run_dir / "ledger.sqlite")
        assert 1 <= done < trials

        resumed = subprocess.run([*cli, "resume", str(run_dir), "-q"], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert "Traceback" not in resumed.stderr
        assert list(temp.glob("mixnas-ray-*")) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        rows = ledger.trials()
    assert len(rows) == trials and all(r.status == "ok" for r in rows)
