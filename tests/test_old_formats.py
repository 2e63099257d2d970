"""Files of every older on-disk format, written by the commits that wrote those formats, read by today's code.

The files live in ``tests/data/old_formats`` (its README says which commit wrote each and with which command):
run directories of ledger formats 1, 2 and 3 with their ``config.yaml`` and ``controller.json`` (snapshot formats 1
and 2), one controller ``state_dict`` per controller type, latency lookup tables of format_version 1-5 and
``mixnas train`` folders from before and after ``run.json`` kept the preprocessing. Every test works on a copy in
``tmp_path``: even a read-only SQLite opening leaves ``-shm`` / ``-wal`` files beside a WAL database.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mixnas
from mixnas.controllers.base import FORMAT_VERSION as CONTROLLER_FORMAT_VERSION
from mixnas.controllers.base import Result
from mixnas.controllers.registry import restore_controller
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.predictor import LatencyPredictor
from mixnas.launch.cli import main as cli_main
from mixnas.launch.journal import SNAPSHOT_VERSION
from mixnas.launch.ledger import LEDGER_FORMAT_VERSION, Ledger
from mixnas.outcome import Status
from mixnas.search_space.arch import Architecture
from mixnas.search_space.spaces import load_space

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "old_formats"
TABLE = json.loads((DATA / "macro3.json").read_text())
SPACE = {"name": "macro3", "kind": "choices",
         "dimensions": {"layer0": [0, 1, 2], "layer1": [0, 1, 2], "layer2": [0, 1, 2]}}
TRIALS = 12  # every run's execution.trials
BEST = (5, (1, 2, 2))  # the best trial of the finished runs: "122" + "12220" of NAS-Bench-Macro

# run directory -> (ledger format_version, its tables, trial counts by status, snapshot format_version)
RUNS = {
    "ledger1_finished": ("1", {"meta", "trials"}, {"ok": 12}, 1),
    "ledger1_interrupted": ("1", {"meta", "trials"}, {"ok": 5, "running": 2}, 1),
    "ledger2_finished": ("2", {"meta", "trials", "journal"}, {"ok": 12}, 2),
    "ledger2_interrupted": ("2", {"meta", "trials", "journal"}, {"ok": 5, "running": 2}, 2),
    "ledger3_reranked": ("3", {"meta", "trials", "journal", "repeats"}, {"ok": 12}, 2),
    "ledger4_interrupted": ("4", {"meta", "trials", "journal", "repeats"}, {"ok": 5, "running": 2}, 2),
    "ledger4_reranked": ("4", {"meta", "trials", "journal", "repeats"}, {"ok": 12}, 2),
}
FINISHED = ("ledger1_finished", "ledger2_finished", "ledger3_reranked", "ledger4_reranked")
FINISHED_TWIN = {"ledger1_interrupted": "ledger1_finished", "ledger2_interrupted": "ledger2_finished",
                 "ledger4_interrupted": "ledger4_reranked"}
LUTS = {"lut_v1.json": 1, "lut_v2.json": 2, "lut_v3.json": 3, "lut_v4.json": 4, "lut_v5.json": 5}
TRAIN_ARGS = ["--data", "digits", "--resolution", "16", "--images-per-class", "20", "--batch-size", "32",
              "--device", "cpu", "--threads", "1", "--deterministic", "--no-tensorboard"]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``mixnas ARGS`` in a subprocess (commands that start Ray drivers or set torch's global determinism)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mixnas", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, f"mixnas {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy_run(name: str, tmp_path: Path, address: str | None = None) -> Path:
    """A copy of a saved run directory whose config names the table beside it (the saved one names the absolute
    path it was written with) and, for a resume, the test's Ray."""
    run = tmp_path / name
    shutil.copytree(DATA / "run_dirs" / name, run)
    shutil.copy(DATA / "macro3.json", tmp_path / "macro3.json")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["evaluator"]["table"] = str(tmp_path / "macro3.json")
    if address is not None:
        config["execution"]["address"] = address
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def _file_meta(run: Path) -> tuple[str, set[str]]:
    """The ledger's format_version and table names, read with plain SQLite."""
    con = sqlite3.connect(f"file:{run / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        version = con.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
        tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()
    return version, tables - {"sqlite_sequence"}


def _rows(run: Path) -> list[tuple]:
    """What a run's trials are: number, architecture, status, metrics, reward."""
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        return [(r.trial, tuple(r.encoding), Status(r.status), dict(r.metrics), r.reward) for r in ledger.trials()]


def _journal(run: Path) -> list[tuple[str, int]]:
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        return ledger.journal()


def _key(encoding: tuple[int, ...]) -> str:
    return "".join(str(i) for i in encoding)


# ------------------------------------------------------------------------------------------------------ the README
def test_the_readme_names_every_saved_file():
    readme = (DATA / "README.md").read_text()
    files = [p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.name != "README.md"]
    assert files and [f for f in files if f"`{f}`" not in readme] == []


# ------------------------------------------------------------------------------------------------------ ledgers
@pytest.mark.parametrize("name", sorted(RUNS))
def test_an_old_ledger_reads_with_its_trials(name, tmp_path):
    version, tables, counts, _ = RUNS[name]
    run = _copy_run(name, tmp_path)
    assert _file_meta(run) == (version, tables)  # the sample is of the format it claims
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        records, repeats = ledger.trials(), ledger.repeats()
    assert [r.trial for r in records] == list(range(len(records)))
    by_status = {s: sum(1 for r in records if Status(r.status) is Status(s)) for s in counts}
    assert by_status == counts and len(records) == sum(counts.values())
    for r in records:
        assert r.block_strings is None and r.reason is None  # a choice space: no block strings; nothing failed
        if Status(r.status) is Status.OK:
            expected = TABLE[_key(r.encoding)]
            assert dict(r.metrics) == pytest.approx({"mean_acc": expected["mean_acc"], "params": expected["params"]})
            assert r.reward == pytest.approx(expected["mean_acc"])
        else:
            assert r.reward is None and not r.metrics
    if name.endswith("_reranked"):  # mixnas rerank --top 1 --seeds 1: the best trial again with experiment seed 1
        assert [(p.trial, p.repeat, p.seed, Status(p.status)) for p in repeats] == [(BEST[0], 1, 1, Status.OK)]
        assert repeats[0].reward == pytest.approx(records[BEST[0]].reward)
        assert dict(repeats[0].metrics) == pytest.approx(dict(records[BEST[0]].metrics))
    else:
        assert repeats == []
    assert _file_meta(run) == (version, tables)  # a read-only opening upgrades nothing


def test_the_finished_runs_of_every_format_hold_the_same_search(tmp_path):
    """The same seeded 12-trial search, written by four versions of mixnas, reads back as the same trials."""
    rows = [_rows(_copy_run(name, tmp_path)) for name in FINISHED]
    assert all(r == rows[0] for r in rows)
    assert max(rows[0], key=lambda r: r[4])[:2] == BEST


@pytest.mark.parametrize("name", sorted(RUNS))
def test_status_json_of_an_old_run(name, tmp_path, capsys):
    version, tables, counts, _ = RUNS[name]
    run = _copy_run(name, tmp_path)
    assert cli_main(["status", str(run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    finished = counts.get("ok", 0) == TRIALS
    assert doc["state"] == ("finished" if finished else "stopped")
    assert (doc["trials"], doc["done"]) == (TRIALS, counts["ok"])
    assert {k: v for k, v in doc["counts"].items() if v} == counts
    best = max((r for r in _rows(run) if r[2] is Status.OK), key=lambda r: r[4])
    assert (doc["best"]["trial"], tuple(doc["best"]["encoding"])) == best[:2]
    assert doc["best"]["reward"] == pytest.approx(best[4])
    if name.endswith("_reranked"):
        assert doc["seed_noise"]["trials"] == 1 and doc["seed_noise"]["evaluations"] == 2
    assert _file_meta(run) == (version, tables)  # status does not upgrade the ledger


@pytest.mark.parametrize("name", sorted(FINISHED_TWIN))
def test_resume_of_an_interrupted_old_run_finishes_it_as_the_uninterrupted_run(name, tmp_path, ray_address):
    """Format 1 (no journal; a snapshot of asked / told that is behind the ledger, one trial asked after it) and
    format 2 (journal): the finished trials are kept, the running ones re-run with the same architecture, each
    trial is asked and told once, and the result is the run that was never interrupted."""
    run = _copy_run(name, tmp_path, address=ray_address)
    before = _rows(run)
    _cli("resume", str(run), "-q")
    after = _rows(run)
    assert len(after) == TRIALS and all(r[2] is Status.OK for r in after)
    for old, new in zip(before, after):
        assert new[:2] == old[:2]  # same trial, same architecture
        if old[2] is Status.OK:
            assert new == old  # a finished trial is not evaluated again
    journal = _journal(run)
    assert sorted(t for e, t in journal if e == "ask") == list(range(TRIALS))
    assert sorted(t for e, t in journal if e == "tell") == list(range(TRIALS))
    assert after == _rows(_copy_run(FINISHED_TWIN[name], tmp_path))
    assert _file_meta(run)[0] == str(LEDGER_FORMAT_VERSION)  # upgraded when the resume opened it
    snapshot = json.loads((run / "controller.json").read_text())
    assert snapshot["format_version"] == SNAPSHOT_VERSION and snapshot["journal_length"] == 2 * TRIALS


@pytest.mark.parametrize("name", FINISHED)
def test_resume_of_a_finished_old_run_evaluates_nothing(name, tmp_path, ray_address):
    run = _copy_run(name, tmp_path, address=ray_address)
    before = _rows(run)
    _cli("resume", str(run), "-q")
    assert _rows(run) == before
    journal = _journal(run)  # format 1: filled from the snapshot's asked / told
    assert [t for e, t in journal if e == "tell"] == list(range(TRIALS))
    assert sorted(t for e, t in journal if e == "ask") == list(range(TRIALS))


def test_rerank_of_a_format1_run_adds_repeats_and_keeps_its_trials(tmp_path, ray_address):
    run = _copy_run("ledger1_finished", tmp_path, address=ray_address)
    before = _rows(run)
    _cli("rerank", str(run), "--top", "1", "--seeds", "1", "-q")
    assert _rows(run) == before
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        repeats = ledger.repeats()
    assert [(p.trial, p.repeat, p.seed, Status(p.status)) for p in repeats] == [(BEST[0], 1, 1, Status.OK)]
    assert repeats[0].reward == pytest.approx(TABLE[_key(BEST[1])]["mean_acc"])
    assert _file_meta(run)[0] == str(LEDGER_FORMAT_VERSION)


# ------------------------------------------------------------------------------------------------------ controllers
@pytest.mark.parametrize("kind", ["random", "evolution", "rl", "optuna"])
def test_a_saved_controller_state_continues_with_the_same_suggestions(kind):
    """Saved with one suggestion pending; its writer then told that one and made three more (expected.json)."""
    state = json.loads((DATA / "controllers" / f"{kind}.json").read_text())
    expected = json.loads((DATA / "controllers" / "expected.json").read_text())[kind]
    assert state["format_version"] == CONTROLLER_FORMAT_VERSION and state["type"] == kind
    controller = restore_controller(state, load_space(SPACE))
    assert controller.state_dict() == state
    pending_id, pending = expected["pending"]
    assert controller.pending == {pending_id: tuple(pending)} and controller.n_told == 6

    def told(suggestion_id: str, encoding) -> None:
        controller.tell(suggestion_id, Result("ok", {"mean_acc": TABLE[_key(encoding)]["mean_acc"]}))

    told(pending_id, pending)
    made = []
    for _ in expected["next"]:
        suggestion = controller.ask()
        made.append([suggestion.id, list(suggestion.encoding)])
        told(suggestion.id, suggestion.encoding)
    assert made == expected["next"]


# ------------------------------------------------------------------------------------------------------ LUTs
def _predictions(table: LatencyTable, archs: list[Architecture]) -> list[float]:
    """Per architecture: the uncalibrated LUT sum, the calibrated prediction and its standard deviation."""
    out = []
    for arch in archs:
        total, _ = LatencyPredictor(table, calibrated=False).predict(arch)
        out += [total, *LatencyPredictor(table, calibrated=True).predict(arch)]
    return out


def _calibration_archs(path: Path) -> list[Architecture]:
    return [Architecture.from_dict(p["arch"]) for p in json.loads(path.read_text())["calibration"]["points"]]


@pytest.mark.parametrize("name", sorted(LUTS))
def test_an_old_lut_predicts_the_totals_its_writer_predicted(name, tmp_path):
    path = tmp_path / name
    shutil.copy(DATA / "lut" / name, path)
    assert json.loads(path.read_text())["format_version"] == LUTS[name]
    table = LatencyTable.load(path)
    archs = _calibration_archs(path)
    expected = json.loads((DATA / "lut" / "expected.json").read_text())[name]["predictions"]
    assert [a.id for a in archs] == [e["arch_id"] for e in expected]
    got = _predictions(table, archs)
    assert got == pytest.approx([v for e in expected for v in (e["lut_sum_ms"], e["predicted_ms"], e["std_ms"])],
                                rel=1e-12)
    resaved = tmp_path / f"resaved_{name}"
    table.save(resaved)  # today's writer: format 1 becomes 2, the others keep theirs
    assert json.loads(resaved.read_text())["format_version"] == max(2, LUTS[name])
    assert _predictions(LatencyTable.load(resaved), archs) == pytest.approx(got, rel=1e-12)


def test_each_old_lut_keeps_what_its_format_added(tmp_path):
    for name in LUTS:
        shutil.copy(DATA / "lut" / name, tmp_path / name)
    v1, v3, v4, v5 = (LatencyTable.load(tmp_path / f"lut_v{n}.json") for n in (1, 3, 4, 5))
    assert v1.calibration.per_part_ms == 0.0 and v1.precision == "float32"  # before the per-part term
    assert [d["cpu"] for d in v3.devices][1:] == ["Imported CPU (CSV)"]  # merged with a CSV of another device
    assert v3.entries["fc_i256_o10"].count > 40  # pooled with the imported entry
    pooled = [e for e in v4.entries.values() if e.timings]
    assert pooled and all(e.ms == pytest.approx(statistics.median(e.timings)) for e in pooled)
    assert (v5.backend, v5.precision) == ("onnxruntime", "int8")


# ------------------------------------------------------------------------------------------------------ train folders
def _logits(folder: Path) -> list[list[float]]:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        return mixnas.load_model(folder)(x).tolist()


def _train_expected() -> dict:
    return json.loads((DATA / "train" / "expected.json").read_text())


@pytest.mark.parametrize("name", ["train1_interrupted", "train_current"])
def test_a_train_folder_loads_builds_and_exports(name, tmp_path, capsys):
    folder = tmp_path / name
    shutil.copytree(DATA / "train" / name, folder)
    expected = _train_expected()[name]
    assert np.allclose(_logits(folder), expected["logits"], rtol=0, atol=1e-6)
    assert cli_main(["build", str(folder / "arch.json")]) == 0
    assert "total: 2,540 params" in capsys.readouterr().out
    out = tmp_path / "export"
    assert cli_main(["export", str(folder), "--format", "tf", "json", "-o", str(out)]) == 0
    doc = json.loads((out / "arch.json").read_text())
    assert Architecture.from_dict(doc["architecture"]).id == expected["arch_id"]
    # The old run.json has no preprocessing record: the export makes it again from the data, as recorded today.
    current = json.loads((DATA / "train" / "train_current" / "run.json").read_text())["preprocessing"]
    assert doc["preprocessing"] == current
    assert np.allclose(_logits(out), expected["logits"], rtol=0, atol=1e-6)
    assert ("epochs asked (an unfinished run" in (out / "README.md").read_text()) == (name == "train1_interrupted")


def test_the_export_of_a_train_folder_killed_after_its_state_describes_the_weights_it_holds(tmp_path):
    folder = tmp_path / "train1_interrupted"
    shutil.copytree(DATA / "train" / "train1_interrupted", folder)
    assert json.loads((folder / "state.json").read_text())["epoch"] == 2
    assert cli_main(["export", str(folder), "--format", "json", "-o", str(tmp_path / "export")]) == 0
    assert "trained 2 of the 3 epochs asked" in (tmp_path / "export" / "README.md").read_text()
    # the exported metrics and weights are epoch 2's: the checkpoint that state.json names
    state = json.loads((folder / "state.json").read_text())
    exported = json.loads((tmp_path / "export" / "arch.json").read_text())
    assert json.dumps(exported).count(repr(state["history"][-1]["top1"])) >= 1
    import torch

    saved = torch.load(folder / state["checkpoint"], weights_only=True)
    weights = torch.load(tmp_path / "export" / "weights.pt", weights_only=True)
    reference = saved["ema"] or saved["model"]
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)


def test_resume_of_an_interrupted_old_train_folder_equals_the_uninterrupted_training(tmp_path):
    """Killed by SIGKILL after epoch 2 of 3 (its run.json from before ``init`` and ``preprocessing``)."""
    folder = tmp_path / "train1_interrupted"
    shutil.copytree(DATA / "train" / "train1_interrupted", folder)
    _cli("train", str(DATA / "train" / "tiny.txt"), *TRAIN_ARGS, "--epochs", "3", "--output", str(folder),
         "--resume")
    assert json.loads((folder / "state.json").read_text())["epoch"] == 3
    expected = _train_expected()["train1_interrupted resumed to 3 epochs"]
    assert np.allclose(_logits(folder), expected["logits"], rtol=0, atol=1e-6)
