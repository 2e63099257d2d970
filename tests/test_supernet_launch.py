"""The supernet end to end: `mixnas supernet train` (checkpoints, exact resume), a search with
`evaluator.type: supernet` through the CLI on Ray, and `mixnas supernet extract` -> load_model / export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mixnas
from ledger_watch import kill_when
from mixnas.errors import ConfigError
from mixnas.data.spec import DataSpec
from mixnas.data.load import load_proxy_data
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.supernet import store
from mixnas.evaluators.supernet.evaluator import SupernetEvaluator
from mixnas.evaluators.supernet.train import SupernetTrainer
from mixnas.training.config import SupernetTraining
from mixnas.launch.cli import main
from mixnas.launch.config import config_from_dict
from mixnas.search_space.spaces import load_space

REPO = Path(__file__).resolve().parents[1]
DATA = ["--data", "digits", "--images-per-class", "12", "--batch-size", "24", "--random-subnets", "1"]


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mixnas.launch.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"mixnas {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("supernet") / "tiny"
    assert main(["supernet", "train", "--space", "tiny", *DATA, "--epochs", "1", "--output", str(out),
                 "--no-tensorboard"]) == 0
    return out


def test_train_writes_a_resumable_folder(supernet_dir, capsys):
    for name in (store.RECORD_FILE, store.STATE_FILE, store.WEIGHTS_FILE, "checkpoint-1.pt"):
        assert (supernet_dir / name).is_file()
    state = json.loads((supernet_dir / store.STATE_FILE).read_text())
    assert state["epoch"] == 1 and 0 <= state["history"][0]["largest_top1"] <= 1
    assert main(["supernet", "train", "--space", "tiny", *DATA, "--epochs", "1", "--output", str(supernet_dir)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["supernet", "train", "--space", "tiny", *DATA, "--epochs", "3", "--output", str(supernet_dir),
                 "--resume"]) == 2
    assert "different training" in capsys.readouterr().err


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    space = load_space("tiny")
    data = load_proxy_data(DataSpec("digits", images_per_class=12))
    training = SupernetTraining(epochs=2, batch_size=24, random_subnets=1, seed=3)
    SupernetTrainer(space, data, tmp_path / "whole", training).fit()

    def stop(epoch, metrics):
        raise KeyboardInterrupt  # killed after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        SupernetTrainer(space, data, tmp_path / "cut", training, on_epoch=stop).fit()
    SupernetTrainer(space, data, tmp_path / "cut", training).fit(resume=True)
    whole, cut = store.read_weights(tmp_path / "whole"), store.read_weights(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    timing = ("train_seconds", "images_per_second")

    def history(folder):
        return [{k: v for k, v in m.items() if k not in timing} for m in store.read_state(folder)["history"]]

    assert history(tmp_path / "whole") == history(tmp_path / "cut")


def test_evaluator_scores_members(supernet_dir):
    space = load_space("tiny")
    evaluator = SupernetEvaluator(supernet_dir, space=space, bn_batches=2, batch_size=16)
    enc = space.sample(np.random.default_rng(0))
    by_encoding = evaluator.score(space.decode(enc), TrialContext(enc))
    by_arch = evaluator.score(space.decode(enc), TrialContext())  # a direct call: no encoding
    assert by_encoding.status == by_arch.status == "ok"
    first, again = by_encoding.metrics, by_arch.metrics
    assert 0 <= first["top1"] <= 1 and first["bn_images"] == 32 and first["supernet_epoch"] == 1
    assert {k: v for k, v in first.items() if k != "eval_seconds"} == {
        k: v for k, v in again.items() if k != "eval_seconds"}
    assert set(first) <= set(evaluator.metrics)
    assert "params" not in first  # the trial counts params / MACs, once
    # a candidate the supernet cannot hold is infeasible, with the reason, and never retried
    wide = space.decode(enc).replace(feature_size=4 * space.decode(enc).global_params.feature_size)
    held = evaluator.score(wide, TrialContext())
    assert held.status == "infeasible" and held.retryable is False
    assert "is not in the space: globals.head_width: 1024" in held.reason
    assert held.metrics == {}
    with pytest.raises(ConfigError, match="not the supernet's"):
        SupernetEvaluator(supernet_dir, space=load_space("mixnet"))


def _experiment(tmp_path: Path, supernet_dir: Path, address: str) -> Path:
    data = {
        "name": "supernet_search", "search_space": "tiny", "seed": 0,
        "controller": {"type": "evolution", "options": {"population_size": 4, "sample_size": 2}},
        "evaluator": {"type": "supernet", "checkpoint": str(supernet_dir), "bn_batches": 2, "batch_size": 16},
        "reward": {"type": "metric", "metric": "top1"},
        "execution": {"trials": 6, "max_concurrent": 2, "address": address, "deterministic": True,
                      "resources_per_trial": {"cpu": 1}},
        "logging": {"tensorboard": False},
    }
    path = tmp_path / "supernet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_search_with_the_supernet_evaluator(tmp_path, supernet_dir, ray_address):
    config = _experiment(tmp_path, supernet_dir, ray_address)
    run_dir = tmp_path / "run"
    proc = _cli("search", str(config), "--output", str(run_dir), "-q")
    assert "block strings (tf):" in proc.stdout
    from mixnas.launch.ledger import Ledger

    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        rows = [r.to_dict() for r in ledger.trials()]
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert all(r["metrics"]["supernet_epoch"] == 1 and r["reward"] == r["metrics"]["top1"] for r in rows)


def test_config_checks_the_supernet_section(tmp_path, supernet_dir):
    base = yaml.safe_load(_experiment(tmp_path, supernet_dir, "local").read_text())
    cfg = config_from_dict(base, source="x.yaml")
    assert cfg.evaluator.type == "supernet" and cfg.to_dict()["evaluator"]["bn_batches"] == 2
    with pytest.raises(ConfigError, match="evaluator.bn_batches"):
        config_from_dict({**base, "evaluator": {**base["evaluator"], "bn_batches": -1}}, source="x.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({**base, "evaluator": {**base["evaluator"], "epochs": 3}}, source="x.yaml")
    with pytest.raises(ConfigError, match="no trial reports metric 'accuracy'"):
        config_from_dict({**base, "reward": {"type": "metric", "metric": "accuracy"}}, source="x.yaml")
    from mixnas.launch.checks import check_machine

    missing = config_from_dict({**base, "evaluator": {**base["evaluator"], "checkpoint": str(tmp_path)}},
                               source="x.yaml")
    with pytest.raises(ConfigError, match="evaluator.checkpoint.*supernet.json"):
        check_machine(missing, load_space("tiny"))


def test_extract_writes_a_loadable_exportable_model(tmp_path, supernet_dir, capsys):
    space = load_space("tiny")
    arch = space.decode(space.sample(np.random.default_rng(5)))
    (tmp_path / "arch.json").write_text(arch.to_json())
    out = tmp_path / "member"
    assert main(["supernet", "extract", str(supernet_dir), str(tmp_path / "arch.json"), "-o", str(out),
                 "--bn-batches", "2", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    model = mixnas.load_model(out)
    assert model.arch.blocks == arch.blocks and model.arch.num_classes == 10
    evaluator = SupernetEvaluator(supernet_dir, bn_batches=2, batch_size=64)
    _, calibrated, _ = evaluator.calibrated(arch)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), calibrated(x))
    assert metrics["top1"] == evaluator.score(arch, TrialContext()).metrics["top1"]
    assert main(["export", str(out), "--format", "tf"]) == 0
    assert (out / "export" / "arch.json").is_file()


def _outcomes(run_dir: Path) -> list[tuple]:
    from mixnas.launch.ledger import Ledger

    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        rows = [r.to_dict() for r in ledger.trials()]
    return [(r["trial"], tuple(r["encoding"]), r["status"], r["reward"],
             json.dumps({k: v for k, v in r["metrics"].items() if k != "eval_seconds"}, sort_keys=True))
            for r in rows]


def test_sigkill_and_resume_equals_uninterrupted_search(tmp_path, supernet_dir, ray_address):
    config = _experiment(tmp_path, supernet_dir, ray_address)
    overrides = ["--set", "execution.trials=12", "--set", "evaluator.threads=1"]
    _cli("search", str(config), "--output", str(tmp_path / "reference"), "-q", *overrides)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mixnas.launch.cli", "search", str(config), "--output",
                             str(killed), "-q", *overrides], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    kill_when(proc, killed / "ledger.sqlite", 5, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"the driver ended before the kill: {proc.stderr.read()}"
    _cli("resume", str(killed), "-q")
    assert _outcomes(killed) == _outcomes(tmp_path / "reference")



@pytest.mark.parametrize("field, value", [("epochs", 0), ("random_subnets", 65), ("lr", float("inf")),
                                          ("seed", -1), ("warmup_epochs", 1e308), ("batch_size", True)])
def test_supernet_training_refuses_out_of_range(field: str, value: object) -> None:
    from mixnas.training.config import SupernetTraining

    with pytest.raises(ConfigError, match=f"supernet training: {field}: expected"):
        SupernetTraining(**{field: value})
