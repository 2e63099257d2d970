"""TabularEvaluator: JSON (object and list) and CSV tables, errors that name the file, and NAS-Bench-Macro itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixnas.errors import ConfigError, DataError
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.tabular import NAS_BENCH_MACRO_OPTIMUM, TabularEvaluator, nas_bench_macro
from mixnas.search_space.spaces import ChoiceSpace, Dimension, load_space

MACRO = Path("benchmarks") / "nas_bench_macro" / "nas-bench-macro_cifar10.json"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_json_object_table_in_the_nas_bench_macro_format(tmp_path: Path) -> None:
    table = {
        "012": {"test_acc": [90.0, 91.0, 92.0], "mean_acc": 91.0, "std": 0.8, "params": 100, "flops": 2000},
        "210": {"test_acc": [80.0, 81.0, 82.0], "mean_acc": 81.0, "std": 0.8, "params": 50, "flops": 1000},
    }
    evaluator = TabularEvaluator(write(tmp_path / "t.json", json.dumps(table)))
    assert evaluator.metrics == ("mean_acc", "std", "params", "flops")  # the list test_acc is not a metric
    assert evaluator.row((0, 1, 2)) == {"mean_acc": 91.0, "std": 0.8, "params": 100.0, "flops": 2000.0}
    assert evaluator.row("210")["mean_acc"] == 81.0
    assert evaluator.best("flops", "min") == ("210", 1000.0)
    assert len(evaluator) == 2 and evaluator.keys() == ["012", "210"]


def test_json_list_and_csv_tables_with_a_key_column(tmp_path: Path) -> None:
    rows = [{"arch": "1-0", "acc": 0.5, "lat": 3}, {"arch": "0-1", "acc": 0.7, "lat": 4}]
    as_json = TabularEvaluator(write(tmp_path / "t.json", json.dumps(rows)), key_column="arch", key_separator="-")
    as_csv = TabularEvaluator(
        write(tmp_path / "t.csv", "arch,acc,lat,note\n1-0,0.5,3,a\n0-1,0.7,4,b\n"), key_column="arch", key_separator="-"
    )
    for evaluator in (as_json, as_csv):
        assert evaluator.row((0, 1)) == {"acc": 0.7, "lat": 4.0}
    assert as_csv.metrics == ("acc", "lat")  # the text column is not a metric
    only_acc = TabularEvaluator(tmp_path / "t.csv", key_column="arch", metrics=["acc"], key_separator="-")
    assert only_acc.row("1-0") == {"acc": 0.5}


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "message"),
    [
        ("missing.json", None, {}, "no such table file"),
        ("bad.json", "{not json", {}, "not valid JSON"),
        ("list.json", "[1, 2]", {}, "record 0 has no key column 'key'"),
        ("scalar.json", "3", {}, "expected a JSON object keyed by architecture"),
        ("entry.json", '{"01": 5}', {}, "entry '01' is not an object of metrics"),
        ("empty.json", "{}", {}, "the table is empty"),
        ("twice.csv", "key,acc\n01,1\n01,2\n", {}, "key '01' appears twice"),
        ("nokey.csv", "arch,acc\n01,1\n", {}, "has no key column 'key'"),
        ("metric.json", '{"01": {"acc": 1}}', {"metrics": ["lat"]}, "entry '01' has no metric 'lat'"),
        ("list_metric.json", '{"01": {"acc": [1, 2]}}', {"metrics": ["acc"]}, "metric 'acc' is not a number"),
    ],
)
def test_bad_tables_raise_data_errors_naming_the_file(
    tmp_path: Path, name: str, text: str | None, kwargs: dict, message: str
) -> None:
    path = tmp_path / name if text is None else write(tmp_path / name, text)
    with pytest.raises(DataError, match=message) as info:
        TabularEvaluator(path, **kwargs)
    assert str(path) in str(info.value)


def test_unknown_key_is_a_data_error(tmp_path: Path) -> None:
    evaluator = TabularEvaluator(write(tmp_path / "t.json", '{"01": {"acc": 1}}'))
    with pytest.raises(DataError, match=r"key '10' is not in the table \(1 entries\)"):
        evaluator.row((1, 0))
    with pytest.raises(DataError, match="unknown metric 'lat'"):
        evaluator.best("lat")


def test_nas_bench_macro_table_matches_its_readme(shared_dir: Path) -> None:
    path = shared_dir / MACRO
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    evaluator = nas_bench_macro(path)
    space = load_space("nas_bench_macro")
    assert len(evaluator) == space.cardinality == 6561
    key, best = evaluator.best("mean_acc")
    assert key == "22212220" and round(best, 2) == NAS_BENCH_MACRO_OPTIMUM
    assert space.table_key((2, 2, 2, 1, 2, 2, 2, 0)) == evaluator.key((2, 2, 2, 1, 2, 2, 2, 0)) == key
    assert round(evaluator.row("00000000")["mean_acc"], 2) == 45.36
    flops = [evaluator.row(k)["flops"] for k in evaluator.keys()]
    assert 7.6e6 < min(flops) < 7.8e6 and 105e6 < max(flops) < 106e6


def big_space() -> ChoiceSpace:
    """Two dimensions of 12 choices: indices 1 and 11 would both print as part of ``'111'`` without a separator."""
    return ChoiceSpace([Dimension("a", tuple(range(12))), Dimension("b", tuple(range(12)))], name="big")


def test_an_empty_separator_is_refused_when_keys_could_collide(tmp_path: Path) -> None:
    path = write(tmp_path / "t.json", json.dumps({"1-11": {"acc": 1}, "11-1": {"acc": 2}}))
    with pytest.raises(ConfigError, match=r"dimension 'a' has 12 choices \(indices 0\.\.11\) of different widths"):
        TabularEvaluator(path, space=big_space())
    with pytest.raises(ConfigError, match="index of 10 or more"):  # without the space: refused at the look-up
        TabularEvaluator(path).key((1, 11))
    outcome = TabularEvaluator(path).score(None, TrialContext((1, 11)))  # and a trial: an outcome, never a raise
    assert outcome.status == "failed" and outcome.retryable is False and "index of 10 or more" in outcome.reason
    for key_by in ("indices", "values"):
        evaluator = TabularEvaluator(path, space=big_space(), key_by=key_by, key_separator="-")
        assert evaluator.row((1, 11)) == {"acc": 1.0} and evaluator.row((11, 1)) == {"acc": 2.0}


def test_keys_by_values_use_the_spaces_table_key(tmp_path: Path) -> None:
    space = ChoiceSpace(
        [Dimension("lr", (0.1, 0.01)), Dimension("opt", ("sgd", "adam")), Dimension("smooth", (0.1,))], name="hp"
    )
    path = write(tmp_path / "t.csv", "key,acc\n0.1/sgd/0.1,1\n0.01/adam/0.1,2\n")
    evaluator = TabularEvaluator(path, space=space, key_by="values", key_separator="/")
    assert evaluator.key((1, 1)) == space.table_key((1, 1), sep="/") == "0.01/adam/0.1"
    assert evaluator.row((1, 1)) == {"acc": 2.0}
    with pytest.raises(ConfigError, match=r"dimension 'lr' has choices \['0.1', '0.01'\] of different widths"):
        TabularEvaluator(path, space=space, key_by="values")
    with pytest.raises(ConfigError, match="a choice containing the separator"):
        TabularEvaluator(path, space=space, key_by="values", key_separator=".")
    with pytest.raises(ConfigError, match="key_by 'values' needs the search space"):
        TabularEvaluator(path, key_by="values")
    with pytest.raises(ConfigError, match=r"key_by must be one of \['indices', 'values'\], got 'names'"):
        TabularEvaluator(path, space=space, key_by="names")


def test_a_table_keyed_another_way_is_refused_at_load(tmp_path: Path) -> None:
    space = ChoiceSpace([Dimension(f"d{i}", (0, 1, 2)) for i in range(3)], name="three")
    path = write(tmp_path / "t.json", json.dumps({"0-1-2": {"acc": 1}, "2-1-0": {"acc": 2}}))
    with pytest.raises(ConfigError) as info:
        TabularEvaluator(path, space=space)
    message = str(info.value)
    assert "none of the table's keys (first: ['0-1-2', '2-1-0']) is a key the space 'three' produces" in message
    assert "e.g. '000'" in message and "\n" not in message
    assert TabularEvaluator(path, space=space, key_separator="-").row((2, 1, 0)) == {"acc": 2.0}


def test_a_missing_key_fails_the_trial_without_a_retry(tmp_path: Path) -> None:
    # Through the launcher's trial code: the look-up fails the same way every time, so the outcome says so.
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator

    table = write(tmp_path / "t.json", json.dumps({"00000000": {"mean_acc": 50.0}}))
    cfg = {
        "name": "t", "search_space": "nas_bench_macro", "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": str(table)},
        "reward": {"type": "metric", "metric": "mean_acc", "direction": "max"},
        "execution": {"trials": 2},
    }
    resolved = config_from_dict(cfg, source="t.yaml", base_dir=tmp_path).to_dict()
    evaluator = TrialEvaluator(config_from_dict(resolved, source="config.yaml"))
    assert evaluator.run((0,) * 8, trial=0).status == "ok"
    missing = evaluator.run((1,) * 8, trial=1)
    assert missing.status == "failed" and missing.retryable is False
    assert "key '11111111' is not in the table" in missing.reason
    no_metric = TrialEvaluator(config_from_dict({**resolved, "reward": {**resolved["reward"], "metric": "flops"}},
                                                source="config.yaml", check_space=False)).run((0,) * 8, 0)
    assert no_metric.status == "failed" and no_metric.retryable is False


def test_the_launcher_checks_the_keys_before_a_search(tmp_path: Path) -> None:
    from mixnas.launch.config import check_files, config_from_dict

    table = write(tmp_path / "t.json", json.dumps({"0-0-0-0-0-0-0-0": {"mean_acc": 50.0}}))
    cfg = {
        "name": "t", "search_space": "nas_bench_macro", "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": str(table)},
        "reward": {"type": "metric", "metric": "mean_acc", "direction": "max"}, "execution": {"trials": 2},
    }
    with pytest.raises(ConfigError, match=r"^t.yaml: evaluator.table: .*none of the table's keys"):
        check_files(config_from_dict(cfg, source="t.yaml", base_dir=tmp_path))
    cfg["evaluator"]["options"] = {"key_separator": "-"}
    check_files(config_from_dict(cfg, source="t.yaml", base_dir=tmp_path))
