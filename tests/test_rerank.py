"""Re-ranking: more seeds for a run's best trials, kept in its ledger, resumable, and read by status / export;
``train-proxy RUN_DIR:TRIAL`` reproducing a recorded score exactly.

One local Ray instance serves the module (token auth, 127.0.0.1); in-process calls and CLI subprocesses join it
through ``execution.address``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ledger_watch import kill_when
from mixnas.launch import cli
from mixnas.launch.config import config_from_dict
from mixnas.launch.ledger import LEDGER_FORMAT_VERSION, Ledger, RepeatRecord, TrialRecord
from mixnas.launch.rerank import rerank_run
from mixnas.launch.runner import run_search
from mixnas.launch.summary import seed_mean, seed_means, seed_noise
from mixnas.outcome import Status, TrialOutcome

REPO = Path(__file__).resolve().parents[1]


def _digits_config(address: str, trials: int = 4) -> dict:
    data = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    data["name"] = "rerank_digits"
    data["evaluator"]["budget"] = {"steps": 6}
    data["evaluator"]["training"] = {"batch_size": 32, "threads": 1, "warmup_epochs": 0}
    data["latency"] = {"type": "none"}
    data["reward"] = {"type": "metric", "metric": "top1"}
    data["execution"].update(trials=trials, address=address, max_concurrent=2)
    data["logging"] = {"tensorboard": False, "level": "warning"}
    return data


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, ray_address) -> Path:
    run_dir = tmp_path_factory.mktemp("rerank") / "run"
    run_search(config_from_dict(_digits_config(ray_address), source="test.yaml"), run_dir)
    return run_dir


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mixnas", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def _repeats(run_dir: Path) -> list[RepeatRecord]:
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        return ledger.repeats()


TIMINGS = ("eval_seconds", "train_seconds", "images_per_second")


def _essence(repeats: list[RepeatRecord]) -> list[tuple]:
    """What must be equal between two reranks: which evaluations, and their results (not their timings)."""
    return [(r.trial, r.repeat, r.seed, r.status,
             json.dumps({k: v for k, v in r.metrics.items() if k not in TIMINGS}, sort_keys=True)) for r in repeats]


# ------------------------------------------------------------------------------------------------ end to end
def test_rerank_keeps_repeats_in_the_ledger_and_status_ranks_by_the_mean(digits_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(digits_run, run_dir)
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        before = [r.to_dict() for r in ledger.trials()]
    result = rerank_run(run_dir, top=2, seeds=2)
    repeats = _repeats(run_dir)
    assert result.ran == 4 and len(repeats) == 4 and all(r.status is Status.OK for r in repeats)
    assert {r.seed for r in repeats} == {1, 2}  # the run's seed (0) + 1, + 2
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        assert [r.to_dict() for r in ledger.trials()] == before  # the trials' own rows are untouched
    assert [m.n_seeds for _, m in result.ranking] == [3, 3]
    means = [m.reward for _, m in result.ranking]
    assert means == sorted(means, reverse=True)
    assert result.noise is not None and result.noise["trials"] == 2 and result.noise["evaluations"] == 6

    again = rerank_run(run_dir, top=2, seeds=2)  # nothing missing: nothing runs
    assert again.ran == 0 and _essence(_repeats(run_dir)) == _essence(repeats)

    status = _cli("status", str(run_dir), "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["seed_noise"]["evaluations"] == 6
    top = {r["trial"]: r for r in doc["top"]}
    for r, m in result.ranking:
        seeds = top[r.trial]["over_seeds"]  # the mean over seeds, beside the trial's own metrics and reward
        assert seeds["n_seeds"] == 3 and seeds["reward"] == pytest.approx(m.reward)
        assert top[r.trial]["reward"] == r.reward and seeds["first_reward"] == r.reward
    text = _cli("status", str(run_dir)).stdout
    assert "±" in text and "proxy seed noise" in text

    from mixnas.launch.export import export_run

    from mixnas.launch.rundir import RunPaths, load_run_config
    from mixnas.launch.summary import ranked

    out, items = export_run(run_dir, top=2, formats=["json"])
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        records = ledger.trials()
        by_mean = ranked(load_run_config(RunPaths(run_dir)), records, seed_means(records, ledger.repeats()))
    assert [i.record.trial for i in items] == [r.trial for r in by_mean[:2]]
    readme = (out / "README.md").read_text()
    assert "± " in readme and "mixnas rerank" in readme

    shown = _cli("rerank", str(run_dir), "--top", "2", "--seeds", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [r["trial"] for r in json.loads(shown.stdout)["ranking"]] == [r.trial for r, _ in result.ranking]

    # the best by the mean over seeds, reproduced against its own recorded score (not against the mean)
    again = _cli("train-proxy", "--arch", f"{run_dir}:best", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["reproduced"] is True


def test_rerank_resumes_after_sigkill_with_the_same_results(digits_run, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(digits_run, reference)
    shutil.copytree(digits_run, killed)
    rerank_run(reference, top=2, seeds=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mixnas", "rerank", str(killed), "--top", "2", "--seeds", "2",
                             "-q"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, killed / "ledger.sqlite", 1, timeout=120, count="SELECT COUNT(*) FROM repeats")
    assert proc.returncode == -signal.SIGKILL, f"rerank ended before the kill: {proc.stderr.read()}"
    kept = _repeats(killed)
    assert 1 <= len(kept) < 4
    resumed = _cli("rerank", str(killed), "--top", "2", "--seeds", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["ran"] == 4 - len(kept)
    after = _repeats(killed)
    assert [r for r in after if (r.trial, r.repeat) in {(k.trial, k.repeat) for k in kept}] == kept  # never re-run
    assert _essence(after) == _essence(_repeats(reference))  # deterministic: as if never killed


def test_train_proxy_of_a_trial_reproduces_its_recorded_score(digits_run, capsys):
    with Ledger(digits_run / "ledger.sqlite", readonly=True) as ledger:
        record = ledger.trials("ok")[1]
    code = cli.main(["train-proxy", "--arch", f"{digits_run}:{record.trial}", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["reproduced"] is True
    assert (doc["top1"], doc["top5"], doc["loss"]) == (record.metrics["top1"], record.metrics["top5"],
                                                        record.metrics["loss"])


@pytest.mark.parametrize("args, expected", [
    (["--top", "0"], "--top: expected an integer in 1..1000"),
    (["--seeds", "0"], "--seeds: expected an integer in 1..100"),
])
def test_rerank_bad_arguments_give_one_line(digits_run, capsys, args, expected):
    assert cli.main(["rerank", str(digits_run), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_rerank_of_a_folder_that_is_no_run_gives_one_line(tmp_path, capsys):
    assert cli.main(["rerank", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config.yaml" in err[0]


def test_train_proxy_with_a_run_refuses_recipe_options(digits_run, capsys):
    assert cli.main(["train-proxy", "--arch", f"{digits_run}:0", "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epochs" in err[0] and "run's own recipe" in err[0]


# ------------------------------------------------------------------------------------------------ pure parts
def _record(trial: int, reward: float, top1: float) -> TrialRecord:
    outcome = TrialOutcome(Status.OK, {"top1": top1, "params": 10, "seed": 0}, reward)
    return TrialRecord(trial=trial, suggestion_id=str(trial), encoding=(trial,), arch_id=None, block_strings=None,
                       candidate={}, outcome=outcome)


def _repeat(trial: int, k: int, reward: float, top1: float, status: Status = Status.OK) -> RepeatRecord:
    outcome = TrialOutcome(status, {"top1": top1, "params": 10, "seed": k}, reward if status is Status.OK else None)
    return RepeatRecord(trial=trial, repeat=k, seed=k, outcome=outcome)


def test_seed_means_give_means_and_standard_errors_without_touching_the_records():
    records = [_record(0, 0.9, 0.9), _record(1, 0.8, 0.8)]
    repeats = [_repeat(0, 1, 0.7, 0.7), _repeat(0, 2, 0.8, 0.8), _repeat(0, 3, 0.1, 0.1, Status.FAILED)]
    means = seed_means(records, repeats)
    assert list(means) == [0]  # never repeated: no mean
    mean = means[0]
    assert mean.reward == pytest.approx(0.8) and mean.metric(records[0], "top1") == pytest.approx(0.8)
    assert mean.n_seeds == 3 and mean.first_reward == 0.9  # the failed repeat does not count
    assert mean.sem["reward"] == pytest.approx(0.1 / 3 ** 0.5) and mean.sem["top1"] == pytest.approx(0.1 / 3 ** 0.5)
    assert mean.metric(records[0], "params") == 10 and "seed" not in mean.metrics  # constants, the seed: not averaged
    assert records[0].reward == 0.9 and records[0].metrics["top1"] == 0.9  # the record keeps its own values
    assert seed_mean(records[1], []).n_seeds == 1


def test_ranking_uses_the_mean_over_seeds_where_there_is_one():
    from mixnas.launch.summary import best_record, ranked

    cfg = config_from_dict(_digits_config("local"), source="test.yaml")
    records = [_record(0, 0.9, 0.9), _record(1, 0.85, 0.85)]
    means = seed_means(records, [_repeat(0, 1, 0.7, 0.7)])  # trial 0: mean 0.8 < 0.85
    assert [r.trial for r in ranked(cfg, records)] == [0, 1]
    assert [r.trial for r in ranked(cfg, records, means)] == [1, 0]
    assert best_record(cfg, records, means).trial == 1


def test_seed_noise_pools_the_variance_of_every_repeated_trial():
    records = [_record(0, 0.9, 0.9), _record(1, 0.5, 0.5)]
    repeats = [_repeat(0, 1, 0.7, 0.7), _repeat(1, 1, 0.5, 0.5)]
    noise = seed_noise(records, repeats)
    # variances 0.02 (trial 0) and 0 (trial 1), one degree of freedom each: pooled sd sqrt(0.01)
    assert noise == {"trials": 2, "evaluations": 4, "reward_sd": pytest.approx(0.1), "top1_sd": pytest.approx(0.1)}
    assert seed_noise(records, []) is None


def test_a_format_2_ledger_is_upgraded_and_an_old_one_reads_without_repeats(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add_trial(0, suggestion_id="a", encoding=(0,), arch_id=None, block_strings=None, candidate={})
        ledger.finish_trial(0, TrialOutcome(status=Status.OK, metrics={"top1": 0.5}, reward=0.5))
    con = sqlite3.connect(path)
    con.execute("DROP TABLE repeats")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with Ledger(path, readonly=True) as ledger:
        assert ledger.repeats() == [] and len(ledger) == 1
    with Ledger(path) as ledger:
        assert ledger.get_meta("format_version") == str(LEDGER_FORMAT_VERSION)
        ledger.add_repeat(0, 1, 1, TrialOutcome(status=Status.OK, metrics={"top1": 0.6}, reward=0.6))
        assert [r.reward for r in ledger.repeats()] == [0.6]


def test_a_repeat_keeps_the_trials_latency_and_is_not_measured_again():
    from mixnas.launch.trial import TrialEvaluator

    data = _digits_config("local", trials=1)
    data["latency"] = {"type": "measure", "backend": "onnxruntime", "threads": 1, "options": {"min_seconds": 0.2}}
    cfg = config_from_dict(data, source="test.yaml")
    evaluator = TrialEvaluator(cfg)
    encoding = tuple(int(i) for i in evaluator.space.sample(np.random.default_rng(0)))
    repeat = evaluator.run(encoding, 0, seed=1, known={"latency_ms": 123.0, "latency_std_ms": 0.5})
    assert repeat.status is Status.OK, repeat.reason
    assert (repeat.metrics["latency_ms"], repeat.metrics["latency_std_ms"]) == (123.0, 0.5)
    assert repeat.metrics["seed"] == 1
    first = evaluator.run(encoding, 0)
    assert first.metrics["latency_ms"] < 100  # measured: a tiny network runs in well under a millisecond


def test_one_retry_rule_for_searches_and_reranks():
    failed = TrialOutcome.failure("worker lost")
    assert failed.retried(0, 2) and failed.retried(1, 2) and not failed.retried(2, 2)
    assert TrialOutcome.failure("nan loss", status=Status.DIVERGED).retried(0, 1)
    assert not TrialOutcome.failure("no such key", retryable=False).retried(0, 2)
    assert not TrialOutcome(Status.OK, {"top1": 0.9}).retried(0, 2)
    assert not TrialOutcome.failure("over max_params", status=Status.INFEASIBLE).retried(0, 2)
