"""The launcher end to end on Ray: CLI search / status / export / resume, failures, and exact resume after SIGKILL.

One local Ray instance serves the whole module (started here, ``num_cpus=2``); the CLI runs in subprocesses that
join it through ``execution.address``, so a killed driver only takes its own actors with it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ledger_watch import kill_when
from mixnas.errors import ConfigError, RunError
from mixnas.launch.config import config_from_dict, load_config
from mixnas.launch.ledger import Ledger
from mixnas.launch.runner import resume_search, run_search

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def _cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mixnas.launch.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"mixnas {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _rows(run_dir: Path) -> list[dict]:
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        return [r.to_dict() for r in ledger.trials()]


def _tells(run_dir: Path) -> list[int]:
    """The trials told to the controller, in the order the ledger's journal has them."""
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        return [t for e, t in ledger.journal() if e == "tell"]


def _essence(rows: list[dict]) -> list[tuple]:
    """What must be equal between an uninterrupted and a killed-and-resumed run: order, architectures, results."""
    return [(r["trial"], r["suggestion_id"], tuple(r["encoding"]), r["status"], json.dumps(r["metrics"], sort_keys=True))
            for r in rows]


# ------------------------------------------------------------------------------------------------------ tabular
def _macro_config(shared_dir: Path, tmp_path: Path, trials: int, **execution) -> Path:
    data = yaml.safe_load((EXPERIMENTS / "nas_bench_macro.yaml").read_text())
    data["evaluator"]["table"] = str(shared_dir / "benchmarks/nas_bench_macro/nas-bench-macro_cifar10.json")
    data["controller"]["options"] = {"population_size": 8, "sample_size": 3}
    data["execution"].update(trials=trials, max_concurrent=2, deterministic=True, **execution)
    data["logging"] = {"tensorboard": False, "level": "warning"}
    path = tmp_path / "macro.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_search_status_export_and_finished_resume(shared_dir, tmp_path, ray_address):
    config = _macro_config(shared_dir, tmp_path, 12)
    run_dir = tmp_path / "run"
    tb_dir = run_dir / "tensorboard"
    proc = _cli("search", str(config), "--output", str(run_dir), "--set", f"execution.address={ray_address}",
                "--set", "logging.tensorboard=true")
    assert "best: trial" in proc.stdout and "[12/12]" in proc.stderr
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["execution"]["trials"] == 12 and saved["execution"]["address"] == ray_address
    assert (run_dir / "pareto.png").stat().st_size > 0
    assert any((tb_dir / "search").iterdir()) and len(list((tb_dir / "trials").iterdir())) == 12

    status = json.loads(_cli("status", str(run_dir), "--json").stdout)
    assert status["state"] == "finished" and status["done"] == 12 and status["counts"]["ok"] == 12
    best = max(r["metrics"]["mean_acc"] for r in _rows(run_dir))
    assert status["best"]["reward"] == pytest.approx(best)

    exported = _cli("export", str(run_dir), "--top", "3", "--format", "json")
    assert "exported 3 architectures" in exported.stdout
    assert len(list((run_dir / "export").glob("*/arch.json"))) == 3

    again = _cli("resume", str(run_dir))
    assert "already finished" in again.stdout


def test_changed_config_is_refused_with_a_diff(shared_dir, tmp_path, ray_address):
    config = _macro_config(shared_dir, tmp_path, 4)
    run_dir = tmp_path / "run"
    _cli("search", str(config), "--output", str(run_dir), "--set", f"execution.address={ray_address}", "-q")
    proc = _cli("resume", str(run_dir), "--set", "execution.trials=6", check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "execution.trials: 4 -> 6" in proc.stderr and "--force" in proc.stderr
    _cli("resume", str(run_dir), "--set", "execution.trials=6", "--force", "-q")
    assert len(_rows(run_dir)) == 6


def test_optuna_run_resumes_after_its_directory_moved(shared_dir, tmp_path, ray_address):
    config = _macro_config(shared_dir, tmp_path, 4)
    data = yaml.safe_load(config.read_text())
    data["controller"] = {"type": "optuna", "options": {"sampler": "tpe"}}
    config.write_text(yaml.safe_dump(data))
    _cli("search", str(config), "--output", str(tmp_path / "run"), "--set", f"execution.address={ray_address}", "-q")
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(tmp_path / "run", moved)
    _cli("resume", str(moved), "--set", "execution.trials=6", "--force", "-q")
    rows = _rows(moved)
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    state = json.loads((moved / "controller.json").read_text())
    assert state["controller"]["options"]["storage"] == f"sqlite:///{moved.resolve() / 'optuna.db'}"


def test_sigkill_and_resume_equals_uninterrupted_run(shared_dir, tmp_path, ray_address):
    trials = 40
    config = _macro_config(shared_dir, tmp_path, trials)
    cfg = load_config(config, [f"execution.address={ray_address}"])
    reference = tmp_path / "reference"
    run_search(cfg, reference)
    ref_rows = _rows(reference)
    assert len(ref_rows) == trials and all(r["status"] == "ok" for r in ref_rows)

    run_dir = tmp_path / "killed"
    seed = int(os.environ.get("KILL_SEED", random.randrange(10**6)))  # KILL_SEED=<seed of a failure> repeats its kills
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "mixnas.launch.cli"]
    commands = [[*base, "search", str(config), "--output", str(run_dir), "--set", f"execution.address={ray_address}",
                 "-q"]]
    commands += [[*base, "resume", str(run_dir), "-q"]] * 2
    for command in commands:  # kill twice at random points, then let the last resume finish
        before = {r["trial"]: r for r in _rows(run_dir)} if (run_dir / "ledger.sqlite").exists() else {}
        finished = sum(r["status"] != "running" for r in before.values())
        if finished + 1 >= trials:
            break
        target = rng.randrange(finished + 1, trials)
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        kill_when(proc, run_dir / "ledger.sqlite", target)
        assert proc.returncode == -signal.SIGKILL, f"the driver ended before the kill: {proc.stderr.read()}"
        after = {r["trial"]: r for r in _rows(run_dir)}
        for trial, row in before.items():  # a finished trial is never lost nor re-run
            if row["status"] != "running":
                assert after[trial] == row, f"trial {trial} changed after a kill (random seed {seed})"
    _cli("resume", str(run_dir), "-q")
    rows = _rows(run_dir)
    assert _essence(rows) == _essence(ref_rows), f"killed-and-resumed ledger differs (random seed {seed})"
    saved = json.loads((run_dir / "controller.json").read_text())
    expected = json.loads((reference / "controller.json").read_text())
    # a kill after the last tell but before the final snapshot left controller.json behind the journal (seeds
    # 150652, 577390): resume now completes that bookkeeping instead of calling the run finished
    assert saved["controller"] == expected["controller"] and saved["journal_length"] == 2 * trials, \
        f"controller.json behind the journal after the last resume (random seed {seed})"
    assert _tells(run_dir) == list(range(trials))


def test_a_raising_and_a_nan_trial_are_recorded_and_the_search_completes(tmp_path, ray_address):
    table = {f"{a}{b}": {"acc": 0.5 + 0.1 * a + 0.01 * b, "params": 100 * (a + b + 1)}
             for a in range(3) for b in range(3)}
    del table["11"]  # looking it up raises
    table["22"]["acc"] = math.nan  # a diverged trial
    (tmp_path / "table.json").write_text(json.dumps(table))
    data = {
        "name": "failures",
        "search_space": {"kind": "choices", "name": "two", "dimensions": {"a": [0, 1, 2], "b": [0, 1, 2]}},
        "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": "table.json"},
        "reward": {"type": "metric", "metric": "acc"},
        "execution": {"trials": 9, "max_concurrent": 2, "max_failures_per_trial": 2, "address": ray_address},
        "logging": {"tensorboard": False},
    }
    cfg = config_from_dict(data, source="failures.yaml", base_dir=tmp_path)
    summary = run_search(cfg, tmp_path / "run")
    rows = {tuple(r["encoding"]): r for r in _rows(tmp_path / "run")}
    assert len(rows) == 9 and summary.done == 9
    raised = rows[(1, 1)]
    assert raised["status"] == "failed" and "not in the table" in raised["reason"]
    assert raised["attempt"] == 0 and raised["failures"] == []  # a look-up fails the same way every time: no retry
    nan = rows[(2, 2)]
    assert nan["status"] == "diverged" and "acc" in nan["reason"]
    assert nan["attempt"] == 2 and len(nan["failures"]) == 2  # retried like a failure
    assert sum(r["status"] == "ok" for r in rows.values()) == 7
    assert summary.best.encoding == (2, 1)
    state = json.loads((tmp_path / "run" / "controller.json").read_text())
    assert sorted(_tells(tmp_path / "run")) == list(range(9)) and state["controller"]["pending"] == []


def test_a_search_where_every_trial_failed_exits_1_with_one_line(tmp_path, ray_address):
    table = {str(a): {"acc": math.nan} for a in range(3)}  # every trial diverges
    (tmp_path / "table.json").write_text(json.dumps(table))
    data = {
        "name": "all_failed",
        "search_space": {"kind": "choices", "name": "one", "dimensions": {"a": [0, 1, 2]}},
        "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": "table.json"},
        "reward": {"type": "metric", "metric": "acc"},
        "execution": {"trials": 3, "address": ray_address},
        "logging": {"tensorboard": False},
    }
    (tmp_path / "all_failed.yaml").write_text(yaml.safe_dump(data))
    proc = _cli("search", str(tmp_path / "all_failed.yaml"), "--output", str(tmp_path / "run"), "-q", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "trials: 3 done (0 ok, 0 failed, 3 diverged" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("no trial succeeded")


# ------------------------------------------------------------------------------------------------------ proxy
def test_tiny_proxy_search_and_timm_onnx_export(tmp_path, ray_address):
    overrides = [
        f"execution.address={ray_address}", "execution.trials=3", "execution.max_concurrent=2",
        "evaluator.budget={steps: 4}", "evaluator.subset.images_per_class=20", "logging.tensorboard=false",
    ]
    run_dir = tmp_path / "quick"
    proc = _cli("search", str(EXPERIMENTS / "quickstart.yaml"), "--output", str(run_dir), "-q",
                *[x for o in overrides for x in ("--set", o)], timeout=240)
    assert "block strings (tf):" in proc.stdout
    strings = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  r")]
    assert strings, proc.stdout
    built = _cli("build", " ".join(strings), "--json")
    assert json.loads(built.stdout)["block_strings"] == strings
    rows = _rows(run_dir)
    assert all(r["status"] == "ok" and 0 <= r["metrics"]["top1"] <= 1 for r in rows)
    exported = _cli("export", str(run_dir), "--top", "3", "--format", "timm", "--format", "onnx")
    assert "exported 3 architectures" in exported.stdout
    folders = sorted((run_dir / "export").glob("*_trial*"))
    assert len(folders) == 3
    for folder in folders:
        assert (folder / "timm.txt").read_text().strip()
        assert (folder / "model.onnx").stat().st_size > 1000
    assert "| rank | trial | params | MACs |" in (run_dir / "export" / "README.md").read_text()


def test_a_search_on_int8_latency_runs_end_to_end(tmp_path, ray_address):
    # the deployed latency: an int8 table profiled on two networks, missing signatures measured on the workers
    pytest.importorskip("onnxruntime")
    lut = tmp_path / "int8.json"
    _cli("latency", "profile", "--space", "tiny", "-n", "2", "--calibrate", "2", "--precision", "int8",
         "--calibration-data", "digits", "--out", str(lut), "--warmup", "1", "--repeats", "4", "--rounds", "2",
         "--min-seconds", "0", timeout=240)
    before = len(json.loads(lut.read_text())["entries"])
    overrides = [
        f"execution.address={ray_address}", "execution.trials=3", "execution.max_concurrent=2",
        "evaluator.budget={steps: 4}", "evaluator.subset.images_per_class=20", "logging.tensorboard=false",
        f"latency={{type: lut, lut: {lut}}}",
    ]
    run_dir = tmp_path / "int8run"
    _cli("search", str(EXPERIMENTS / "quickstart.yaml"), "--output", str(run_dir), "-q",
         *[x for o in overrides for x in ("--set", o)], timeout=300)
    rows = _rows(run_dir)
    assert len(rows) == 3 and all(r["status"] == "ok" and r["metrics"]["latency_ms"] > 0 for r in rows)
    table = json.loads(lut.read_text())
    assert table["precision"] == "int8" and len(table["entries"]) >= before


# ------------------------------------------------------------------------------------------------------ robustness
def test_deterministic_ledger_does_not_depend_on_concurrency(shared_dir, tmp_path, ray_address):
    essences = []
    for concurrency in (1, 2, 4):
        config = _macro_config(shared_dir, tmp_path, 40, ordering_window=4)
        cfg = load_config(config, [f"execution.address={ray_address}", f"execution.max_concurrent={concurrency}",
                                   "execution.resources_per_trial.cpu=0.5"])
        run_search(cfg, tmp_path / f"c{concurrency}")
        rows = _rows(tmp_path / f"c{concurrency}")
        assert len(rows) == 40 and all(r["status"] == "ok" for r in rows)
        essences.append(_essence(rows))
    assert essences[0] == essences[1] == essences[2]


def _choice_run(tmp_path: Path, ray_address: str, table: dict, **execution) -> dict:
    (tmp_path / "table.json").write_text(json.dumps(table))
    return {
        "name": "streak",
        "search_space": {"kind": "choices", "name": "two", "dimensions": {"a": [0, 1, 2], "b": [0, 1, 2]}},
        "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": "table.json"},
        "reward": {"type": "metric", "metric": "acc"},
        "execution": {"trials": 9, "max_concurrent": 1, "address": ray_address, **execution},
        "logging": {"tensorboard": False},
    }


def test_a_run_of_identical_failures_stops_the_search_and_resume_continues_after_the_fix(tmp_path, ray_address):
    full = {f"{a}{b}": {"acc": 0.5 + 0.1 * a + 0.01 * b} for a in range(3) for b in range(3)}
    broken = {"00": full["00"], "zz": {"acc": 0.1}}  # almost every look-up fails
    data = _choice_run(tmp_path, ray_address, broken, max_consecutive_failures=3)
    cfg = config_from_dict(data, source="streak.yaml", base_dir=tmp_path)
    with pytest.raises(RunError, match=r"stopped after 3 trials in a row failed with the same reason: .*not in"):
        run_search(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) >= 3 and all(r["failures"] == [] for r in failed)  # a missing key is not retried
    (tmp_path / "table.json").write_text(json.dumps(full))
    summary, already = resume_search(tmp_path / "run")
    assert not already and summary.done == 9
    after = {r["trial"]: r for r in _rows(tmp_path / "run")}
    for row in rows:  # nothing recorded before the stop is lost or re-run
        if row["status"] != "running":
            assert after[row["trial"]] == row


def test_resources_that_ray_cannot_place_are_refused_with_the_arithmetic(tmp_path, ray_address):
    full = {f"{a}{b}": {"acc": 0.5} for a in range(3) for b in range(3)}
    data = _choice_run(tmp_path, ray_address, full, max_concurrent=4, deterministic=True)
    cfg = config_from_dict(data, source="r.yaml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"4 trials x 1 CPUs each = 4 CPUs, but this Ray has 2; .* at most 2"):
        run_search(cfg, tmp_path / "run")
    # the refused run can be started again with settings that fit
    data["execution"]["max_concurrent"] = 2
    cfg = config_from_dict(data, source="r.yaml", base_dir=tmp_path)
    assert run_search(cfg, tmp_path / "run").done == 9


def test_check_resources_names_the_node_limit():
    from mixnas.launch.experiment_config import ExecutionConfig
    from mixnas.launch.pool import check_resources

    check_resources(ExecutionConfig(trials=1, max_concurrent=4, cpu=0.5), {"CPU": 2.0}, [{"CPU": 2.0}])
    with pytest.raises(ConfigError, match=r"resources_per_trial.cpu: each trial asks for 3 CPUs, but the largest"):
        check_resources(ExecutionConfig(trials=1, cpu=3.0), {"CPU": 4.0}, [{"CPU": 2.0}, {"CPU": 2.0}])
    with pytest.raises(ConfigError, match=r"resources_per_trial.gpu: each trial asks for 1 GPUs, but the largest"):
        check_resources(ExecutionConfig(trials=1, gpu=1.0), {"CPU": 2.0}, [{"CPU": 2.0}])


def test_absurd_execution_settings_are_refused_at_load(tmp_path):
    base = _choice_run(tmp_path, "local", {"00": {"acc": 1.0}})
    for key, value in (("max_concurrent", 10**6), ("trials", 10**400), ("ordering_window", 0),
                       ("max_consecutive_failures", -1)):
        data = {**base, "execution": {**base["execution"], key: value}}
        with pytest.raises(ConfigError, match=rf"execution.{key}: expected an integer in "):
            config_from_dict(data, source="x.yaml", base_dir=tmp_path)


def _workers_of(psutil, address: str) -> list:
    """The processes running a trial (``ray::_Worker.run``) under this test's Ray only: children of a raylet
    started with ``--gcs-address=ADDRESS`` (never another search's workers on the same machine)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if not (cmd and cmd[0].startswith("ray::_Worker.run")):
            continue
        try:
            parent = p.parent()
            raylet = parent.cmdline() if parent is not None else []
        except psutil.Error:
            continue
        if f"--gcs-address={address}" in raylet:
            found.append(p)
    return found


def test_a_lost_worker_is_a_failed_attempt_and_the_search_goes_on(tmp_path, ray_address):
    psutil = pytest.importorskip("psutil")
    overrides = [
        f"execution.address={ray_address}", "execution.trials=2", "execution.max_concurrent=1",
        "evaluator.budget={steps: 4}", "evaluator.subset.images_per_class=20", "logging.tensorboard=false",
        "latency.options.min_seconds=2",
    ]
    run_dir = tmp_path / "lost"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mixnas.launch.cli", "search", str(EXPERIMENTS / "quickstart.yaml"),
                             "--output", str(run_dir), "-q", *[x for o in overrides for x in ("--set", o)]],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for p in _workers_of(psutil, ray_address):
            p.kill()  # as the kernel's OOM killer or Ray's memory monitor would
            killed = p.pid
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=240)
    assert killed is not None, "no worker was seen running a trial"
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    rows = _rows(run_dir)
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    lost = [r for r in rows if r["failures"]]
    assert len(lost) == 1 and "worker lost" in lost[0]["failures"][0]


@pytest.mark.parametrize("controller", [
    {"type": "random"},
    {"type": "evolution", "options": {"population_size": 8, "sample_size": 3}},
    {"type": "rl"},
    {"type": "optuna", "options": {"sampler": "tpe"}},
    {"type": "guided", "options": {"n_initial": 6}},
])
def test_resume_from_the_ledger_alone_equals_uninterrupted_run(shared_dir, tmp_path, ray_address, controller):
    trials = 24
    config = _macro_config(shared_dir, tmp_path, trials)
    data = yaml.safe_load(config.read_text())
    data["controller"] = controller
    config.write_text(yaml.safe_dump(data))
    reference = tmp_path / "reference"
    run_search(load_config(config, [f"execution.address={ray_address}"]), reference)
    ref_rows = _rows(reference)

    run_dir = tmp_path / "killed"
    seed = random.randrange(10**6)
    target = random.Random(seed).randrange(2, trials - 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mixnas.launch.cli", "search", str(config), "--output",
                             str(run_dir), "--set", f"execution.address={ray_address}", "-q"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, run_dir / "ledger.sqlite", target)
    assert proc.returncode == -signal.SIGKILL, f"the driver ended before the kill: {proc.stderr.read()}"
    before = {r["trial"]: r for r in _rows(run_dir)}
    (run_dir / "controller.json").unlink(missing_ok=True)  # the snapshot is gone: only the ledger is left
    _cli("resume", str(run_dir), "-q")
    rows = _rows(run_dir)
    assert _essence(rows) == _essence(ref_rows), f"ledger-only resume differs (random seed {seed})"
    for trial, row in before.items():
        if row["status"] != "running":
            assert rows[trial] == row, f"trial {trial} changed after the kill (random seed {seed})"


@pytest.mark.parametrize("snapshot", [
    '{"format_version": 2}',  # no journal_length
    '{"format_version": 2, "journal_length": "many", "controller": {}}',
    '{"format_version": 2, "journal_length": 3, "controller": [1]}',
    '{"format_version": 1, "controller": {}}',  # a pre-journal snapshot without asked / told
    '[1, 2]',
])
def test_a_malformed_snapshot_is_set_aside_and_the_journal_replayed(tmp_path, ray_address, snapshot):
    table = {f"{a}{b}": {"acc": 0.5 + 0.1 * a + 0.01 * b} for a in range(3) for b in range(3)}
    (tmp_path / "table.json").write_text(json.dumps(table))

    def config(trials: int):
        return config_from_dict({
            "name": "snapshot",
            "search_space": {"kind": "choices", "name": "two", "dimensions": {"a": [0, 1, 2], "b": [0, 1, 2]}},
            "controller": {"type": "evolution", "options": {"population_size": 3, "sample_size": 2}},
            "evaluator": {"type": "tabular", "table": "table.json"},
            "reward": {"type": "metric", "metric": "acc"},
            "execution": {"trials": trials, "max_concurrent": 1, "address": ray_address},
            "logging": {"tensorboard": False},
        }, source="snapshot.yaml", base_dir=tmp_path)

    run_search(config(8), tmp_path / "reference")
    run_search(config(4), tmp_path / "run")
    (tmp_path / "run" / "controller.json").write_text(snapshot)
    resume_search(tmp_path / "run", new_config=config(8), force=True)
    assert _essence(_rows(tmp_path / "run")) == _essence(_rows(tmp_path / "reference"))


def _local_session_of(pid: int, timeout: float = 90) -> Path:
    """The private Ray folder of the local search whose driver is ``pid``, once Ray runs in it."""
    from mixnas.launch.ray_local import DRIVER_FILE, PREFIX, _temp_base, processes_of

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in Path(_temp_base()).glob(PREFIX + "*"):
            with contextlib.suppress(OSError, ValueError):
                if int((folder / DRIVER_FILE).read_text().split()[0]) == pid and processes_of(folder):
                    return folder
        time.sleep(0.2)
    raise AssertionError(f"no local Ray of driver {pid} started within {timeout} s")


def test_killed_local_searches_leave_no_process_or_folder_once_the_next_one_starts(tmp_path):
    from mixnas.launch.ray_local import processes_of

    table = {f"{a}{b}": {"acc": 0.5 + 0.1 * a + 0.01 * b} for a in range(3) for b in range(3)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_choice_run(tmp_path, "local", table)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = []
    for i in range(3):  # SIGKILL the driver three times, each time once its private Ray runs
        args = ["search", str(tmp_path / "c.yaml"), "--output", str(run_dir)] if i == 0 else ["resume", str(run_dir)]
        proc = subprocess.Popen([sys.executable, "-m", "mixnas.launch.cli", *args, "-q"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed.append(_local_session_of(proc.pid))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    _cli("resume", str(run_dir), "-q")  # starts a local Ray: it first ends and removes what the killed ones left
    for folder in killed:
        assert not folder.exists(), f"{folder} of a killed search is still there"
        assert processes_of(folder) == [], f"processes of the killed search in {folder} still run"
    assert len(_rows(run_dir)) == 9


def test_what_a_killed_session_left_running_is_ended_with_its_folder(tmp_path):
    from mixnas.launch.ray_local import DRIVER_FILE, PREFIX, processes_of, remove_stale_dirs

    folder = tmp_path / f"{PREFIX}dead"
    (folder / "ray").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a driver process id that is gone
    from mixnas.launch.ray_local import _process_namespace

    (folder / DRIVER_FILE).write_text(f"{dead.pid} {_process_namespace()}\n")
    # a stand-in for an agent Ray left behind: its command line names the session's folder, like Ray's programs
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", f"--temp-dir={folder}/ray/x"])
    try:
        deadline = time.monotonic() + 10
        while not processes_of(folder) and time.monotonic() < deadline:  # until it has started
            time.sleep(0.05)
        assert processes_of(folder) == [leftover.pid]
        assert remove_stale_dirs(tmp_path) == [folder]
        assert leftover.wait(timeout=10) is not None and not folder.exists() and processes_of(folder) == []
    finally:
        leftover.kill()
