"""The Python API (mixnas/launch/api.py): the CLI's semantics from Python, on the same implementation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mixnas
from mixnas.errors import ConfigError, MixnasError

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "tests" / "data" / "old_formats"


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mixnas", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _macro3(tmp_path: Path, ray_address: str) -> dict:
    data = yaml.safe_load((OLD / "macro3.yaml").read_text())
    shutil.copy(OLD / "macro3.json", tmp_path / "macro3.json")
    data["evaluator"]["table"] = str(tmp_path / "macro3.json")
    data["execution"]["address"] = ray_address
    return data


TIMINGS = ("eval_seconds", "train_seconds", "images_per_second")  # the only metrics that differ between two runs


def _essence(run):
    return [(r.trial, r.suggestion_id, r.encoding, r.status, {k: v for k, v in r.metrics.items() if k not in TIMINGS},
             r.origin) for r in run.trials()]


def test_search_status_rerank_export_and_model_through_the_api_match_the_cli(tmp_path, ray_address):
    overrides = {"execution.address": ray_address, "execution.trials": 4, "execution.max_concurrent": 2,
                 "execution.deterministic": True, "evaluator.budget": {"steps": 3},
                 "evaluator.subset.images_per_class": 10, "logging.tensorboard": False,
                 "latency": {"type": "none"}, "reward": {"type": "metric", "metric": "top1"}}
    seen = []
    run = mixnas.search(REPO / "experiments" / "quickstart.yaml", overrides=overrides, output=tmp_path / "api",
                        progress=lambda p: seen.append((p.record.trial, p.summary.done)))
    assert sorted(t for t, _ in seen) == [0, 1, 2, 3] and max(d for _, d in seen) == 4
    cli_dir = tmp_path / "cli"
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # JSON is YAML: the same values as --set texts
    _cli("search", str(REPO / "experiments" / "quickstart.yaml"), "--output", str(cli_dir), "-q",
         *[x for s in sets for x in ("--set", s)])
    assert _essence(run) == _essence(mixnas.open_run(cli_dir))  # the same search, the same ledger

    summary = run.summary()
    assert summary.to_dict()["state"] == "finished" and summary.done == 4
    assert run.best().trial == summary.best.trial == run.trial("best").trial
    status = json.loads(_cli("status", str(run.path), "--json").stdout)
    assert status["best"]["trial"] == run.best().trial and status["counts"] == summary.counts

    result = run.rerank(top=1, seeds=1)
    assert result.ran == 1 and [r.trial for r in run.repeats()] == [run.best().trial]
    folder, items = run.export(top=2, formats=["tf", "json"], output=tmp_path / "export")
    assert len(items) == 2 and (folder / "README.md").is_file()
    model = run.model()
    import torch

    arch = run.architecture()
    out = model.eval()(torch.zeros(1, 3, arch.resolution, arch.resolution))
    assert out.shape == (1, arch.num_classes)
    frame = pytest.importorskip("pandas") and run.dataframe()
    assert list(frame.index) == [0, 1, 2, 3] and "top1" in frame.columns and set(frame["origin"]) == {"trained"}


def test_ctrl_c_stops_a_search_cleanly_and_resume_finishes_it_as_if_uninterrupted(tmp_path, ray_address):
    data = _macro3(tmp_path, ray_address)
    reference = mixnas.search(data, output=tmp_path / "reference")

    def interrupt(progress):
        if progress.summary.done >= 5:
            raise KeyboardInterrupt  # what Ctrl-C in a notebook raises, here from inside the loop

    with pytest.raises(KeyboardInterrupt):
        mixnas.search(data, output=tmp_path / "run", progress=interrupt)
    stopped = mixnas.open_run(tmp_path / "run")
    assert 5 <= stopped.summary().done < 12 and stopped.summary().to_dict()["state"] == "stopped"
    resumed = mixnas.resume(tmp_path / "run")
    assert not resumed.was_finished and _essence(resumed) == _essence(reference)
    assert mixnas.resume(tmp_path / "run").was_finished


def test_overrides_as_a_mapping_or_as_set_texts_and_errors_are_one_line(tmp_path):
    base = yaml.safe_load((OLD / "macro3.yaml").read_text())
    by_mapping = mixnas.experiment(base, {"execution.trials": 7, "controller.options.sample_size": 3})
    by_text = mixnas.experiment(base, ["execution.trials=7", "controller.options.sample_size=3"])
    assert by_mapping.execution.trials == by_text.execution.trials == 7
    assert by_mapping.controller.options == by_text.controller.options
    with pytest.raises(ConfigError, match=r"execution\.trials: expected an integer in 1\.\.10000000, got 0"):
        mixnas.experiment(base, {"execution.trials": 0})
    with pytest.raises(ConfigError, match="key path"):
        mixnas.experiment(base, {"execution..trials": 1})
    with pytest.raises(MixnasError, match="no config.yaml here"):
        mixnas.open_run(tmp_path)
