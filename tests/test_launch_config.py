"""Experiment YAML validation, the ledger, summaries and ASHA: everything of the launcher that needs no Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mixnas.errors import ConfigError, RunError
from mixnas.launch import cli
from mixnas.launch.config import Objective, apply_overrides, config_diff, config_from_dict, load_config
from mixnas.launch.ledger import Ledger
from mixnas.launch.asha import RungKeeper
from mixnas.outcome import TrialOutcome
from mixnas.textio import write_json_atomic
from mixnas.launch.summary import best_record, pareto_records, summarize

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
BAD = sorted((REPO / "tests" / "data" / "bad_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_validates_and_round_trips(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()), source="saved", base_dir="/")
    assert again.to_dict() == cfg.to_dict()


def test_the_experiments_folder_has_the_documented_files():
    names = {p.name for p in EXPERIMENTS}
    assert {"quickstart.yaml", "nas_bench_macro.yaml", "mixnet_imagenet.yaml", "mnasnet_imagenet.yaml",
            "mixnet_cifar10.yaml"} <= names


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_config_gives_one_line_and_exit_2(path, capsys):
    expected = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    code = cli.main(["search", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mixnas: error: ") and str(path) in lines[0]
    assert expected in lines[0], f"{lines[0]!r} does not contain {expected!r}"


def test_set_overrides_parse_yaml_values_and_create_mappings():
    data = apply_overrides({"execution": {"trials": 3}}, ["execution.trials=10", "a.b.c=[1, 2]", "x=true"])
    assert data == {"execution": {"trials": 10}, "a": {"b": {"c": [1, 2]}}, "x": True}
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["execution.trials"])
    with pytest.raises(ConfigError, match="is not a mapping"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_set_override_errors_name_the_file_and_path(tmp_path):
    with pytest.raises(ConfigError, match=r"quickstart.yaml: execution.trials: expected an integer in 1..10000000, got 'many'"):
        load_config(REPO / "experiments" / "quickstart.yaml", ["execution.trials=many"])


def test_relative_paths_are_resolved_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "x.yaml"
    path.write_text(yaml.safe_dump({
        "name": "x", "search_space": "nas_bench_macro", "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": "../t.json"}, "reward": {"type": "metric", "metric": "acc"},
        "execution": {"trials": 2},
    }))
    cfg = load_config(path)
    assert cfg.evaluator.table == str((tmp_path / "t.json").resolve())


def test_config_diff_lists_changed_paths():
    a = load_config(REPO / "experiments" / "quickstart.yaml").to_dict()
    b = load_config(REPO / "experiments" / "quickstart.yaml", ["seed=3", "execution.max_concurrent=1"]).to_dict()
    assert config_diff(a, b) == ["execution.max_concurrent: 2 -> 1", "seed: 0 -> 3"]


# ------------------------------------------------------------------------------------------------------ ledger
def _ledger_with_trials(path: Path) -> Ledger:
    ledger = Ledger(path)
    for i, (status, acc) in enumerate([("ok", 0.5), ("ok", 0.9), ("diverged", math.nan), ("ok", 0.7)]):
        ledger.add_trial(i, suggestion_id=f"{i:06d}", encoding=(i, 0), arch_id=None, block_strings=None,
                         candidate={"a": i})
        ledger.finish_trial(i, TrialOutcome(status, {"acc": acc, "macs": 10 * (4 - i)}, reward=acc,
                                            curve=({"epoch": 1, "acc": acc},),
                                            reason=None if status == "ok" else "loss nan", worker="w",
                                            started_at=1.0, eval_seconds=1.0), finished_at=2.0)
    ledger.add_trial(4, suggestion_id="000004", encoding=(4, 0), arch_id=None, block_strings=None, candidate=None)
    return ledger


def test_ledger_rows_round_trip_and_nan_becomes_null(tmp_path):
    with _ledger_with_trials(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.counts()["ok"] == 3 and ledger.counts()["running"] == 1
    with Ledger(tmp_path / "ledger.sqlite", readonly=True) as ro:
        rows = ro.trials()
        assert [r.trial for r in rows] == [0, 1, 2, 3, 4]
        assert rows[2].metrics["acc"] is None and rows[2].reward is None and rows[2].status == "diverged"
        assert rows[1].curve == ({"epoch": 1, "acc": 0.9},) and rows[4].status == "running"
        with pytest.raises(Exception):
            ro.set_meta("x", "y")


def test_ledger_refuses_other_versions_and_missing_files(tmp_path):
    with pytest.raises(RunError, match="no ledger here"):
        Ledger(tmp_path / "nope.sqlite", readonly=True)
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.set_meta("format_version", "99")
    ledger.close()
    with pytest.raises(RunError, match="format_version '?99'?"):
        Ledger(tmp_path / "l.sqlite")


def test_summary_best_and_pareto(tmp_path):
    data = yaml.safe_load((REPO / "experiments" / "nas_bench_macro.yaml").read_text())
    data["reward"] = {"type": "metric", "metric": "acc"}
    cfg = config_from_dict(data, source="x.yaml", base_dir=REPO / "experiments")
    with _ledger_with_trials(tmp_path / "ledger.sqlite") as ledger:
        records = ledger.trials()
    assert best_record(cfg, records).trial == 1
    # (acc max, macs min): trial 1 (0.9, 30) and trial 3 (0.7, 10) are on the front; trial 0 (0.5, 40) is not
    objectives = [Objective("acc", "max"), Objective("macs", "min")]
    assert [r.trial for r in pareto_records(records, objectives)] == [1, 3]
    s = summarize(cfg, records)
    assert s.done == 4 and s.failed == 1 and s.counts["running"] == 1


def test_atomic_json_write_leaves_no_temp_file(tmp_path):
    write_json_atomic(tmp_path / "c.json", {"a": 1})
    write_json_atomic(tmp_path / "c.json", {"a": 2})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_asha_stops_trials_below_the_rung_cutoff():
    keeper = RungKeeper(grace_period=1, reduction_factor=2, metric="top1")
    assert keeper.report(0, 1, {"top1": 0.5}) is False  # too few values at the rung to judge
    assert keeper.report(1, 1, {"top1": 0.2}) is True  # bottom half of (0.5, 0.2)
    assert keeper.report(2, 1, {"top1": 0.9}) is False
    assert keeper.report(3, 3, {"top1": 0.1}) is False  # epoch 3 is not a rung (1, 2, 4, ...)
    resumed = RungKeeper(1, 2, "top1", history=[[{"epoch": 1, "top1": 0.5}], [{"epoch": 1, "top1": 0.9}]])
    assert resumed.report(4, 1, {"top1": 0.6}) is True


# ------------------------------------------------------------------------------------------------------ one trial
def test_trial_outcomes_reward_constraints_failures(tmp_path):
    from mixnas.evaluators.reward import mnasnet_reward
    from mixnas.launch.trial import TrialEvaluator

    table = {"00": {"acc": 0.8, "params": 50}, "01": {"acc": 0.9, "params": 500}, "10": {"acc": math.nan, "params": 50}}
    (tmp_path / "t.json").write_text(json.dumps(table))
    data = {
        "name": "t", "search_space": {"dimensions": {"a": [0, 1], "b": [0, 1]}}, "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": "t.json"},
        "reward": {"type": "mnasnet", "mode": "soft", "accuracy": "acc", "cost": "params", "target": 100},
        "constraints": {"max_params": 400}, "execution": {"trials": 4},
    }
    cfg = config_from_dict(data, source="t.yaml", base_dir=tmp_path)
    evaluator = TrialEvaluator(cfg)
    ok = evaluator.run((0, 0), 0)
    assert ok.status == "ok" and ok.reward == pytest.approx(mnasnet_reward(0.8, 50, 100, -0.07, -0.07))
    over = evaluator.run((0, 1), 1)
    assert over.status == "infeasible" and "params 500 > max 400" in over.reason and not over.retryable
    nan = evaluator.run((1, 0), 2)
    assert nan.status == "diverged" and "acc" in nan.reason
    missing = evaluator.run((1, 1), 3)
    assert missing.status == "failed" and "not in the table" in missing.reason


# ------------------------------------------------------------------------------- checked before the first trial
def _tabular_config(tmp_path, **changes):
    (tmp_path / "t.json").write_text(json.dumps({"00": {"acc": 0.8, "flops": 5}, "01": {"acc": 0.9, "flops": 7}}))
    data = {
        "name": "t", "search_space": {"dimensions": {"a": [0, 1], "b": [0, 1]}}, "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": "t.json"}, "reward": {"type": "metric", "metric": "acc"},
        "execution": {"trials": 2},
    }
    data.update(changes)
    return config_from_dict(data, source="t.yaml", base_dir=tmp_path)


def test_check_files_knows_the_metrics_of_the_table(tmp_path):
    from mixnas.launch.config import check_files

    check_files(_tabular_config(tmp_path))  # acc is a column
    with pytest.raises(ConfigError, match=r"t.yaml: reward.metric: no trial reports metric 'top1'; "
                                          r"the table t.json reports \['acc', 'flops'\]"):
        check_files(_tabular_config(tmp_path, reward={"type": "metric", "metric": "top1"}))
    # a choices space has no architecture, so nothing counts its MACs: the constraint would never apply
    with pytest.raises(ConfigError, match=r"t.yaml: constraints.max_macs: no trial reports metric 'macs'"):
        check_files(_tabular_config(tmp_path, constraints={"max_macs": 10}))
    with pytest.raises(ConfigError, match=r"t.yaml: reward.objectives\[1\].metric: no trial reports metric 'lat'"):
        check_files(_tabular_config(tmp_path, reward={"type": "pareto", "objectives": [
            {"metric": "acc"}, {"metric": "lat", "direction": "min"}]}))
    with pytest.raises(ConfigError, match=r"t.yaml: evaluator.table: .*no metric 'loss'"):
        check_files(_tabular_config(tmp_path, evaluator={"type": "tabular", "table": "t.json",
                                                         "options": {"metrics": ["acc", "loss"]}}))


def test_proxy_metrics_are_checked_at_load():
    base = {"name": "p", "search_space": "tiny", "controller": {"type": "random"},
            "evaluator": {"type": "proxy", "data": "digits"}, "execution": {"trials": 2}}
    config_from_dict({**base, "reward": {"type": "mnasnet", "cost": "macs", "target": 1e6}}, check_space=False)
    with pytest.raises(ConfigError, match=r"x.yaml: constraints.max_latency_ms: needs a latency section"):
        config_from_dict({**base, "constraints": {"max_latency_ms": 5}}, source="x.yaml", check_space=False)
    cfg = config_from_dict({**base, "latency": {"type": "lut", "lut": "l.json"},
                            "reward": {"type": "pareto", "objectives": [
                                {"metric": "top1"}, {"metric": "latency_ms", "direction": "min"}]}},
                           check_space=False)
    assert cfg.latency.options == {"measure_missing": True}  # the default for searches
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()), check_space=False)
    assert again.latency == cfg.latency


def test_cuda_without_cuda_fails_before_the_first_trial(tmp_path):
    import torch

    from mixnas.launch.config import check_files

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = {"name": "p", "search_space": "tiny", "controller": {"type": "random"},
            "evaluator": {"type": "proxy", "data": "digits", "training": {"device": "cuda"}},
            "execution": {"trials": 2}}
    cfg = config_from_dict(data, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: evaluator.training.device: 'cuda' was asked for but torch sees "
                                          r"no CUDA device on this machine"):
        check_files(cfg)
    cluster = config_from_dict({**data, "execution": {"trials": 2, "address": "head:6379"}}, source="c.yaml")
    check_files(cluster)  # the workers of a cluster are other machines: not checked here

