"""Quick CLI checks without Ray: ``mixnas status`` text on a run made in-process, ``mixnas export --format``.

The run directory is what a search leaves behind (``config.yaml`` and ``ledger.sqlite``); its trials are scored by
the launcher's own :class:`~mixnas.launch.trial.TrialEvaluator` on a tiny table, in this process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mixnas.launch.cli import main, make_parser
from mixnas.launch.config import config_from_dict
from mixnas.launch.ledger import Ledger
from mixnas.launch.trial import TrialEvaluator

# a x b choices; acc grows with a, params and latency with b
TABLE = {
    f"{a}{b}": {"acc": 0.5 + 0.1 * a + 0.01 * b, "params": 1e6 * (1 + b), "latency_ms": 2.0 + b}
    for a in range(3)
    for b in range(3)
}


def make_run(tmp_path: Path, reward: dict[str, Any]) -> Path:
    """A finished run of all 9 encodings of the table's space, ledger written as the runner writes it."""
    (tmp_path / "table.json").write_text(json.dumps(TABLE))
    data = {
        "name": "small",
        "search_space": {"kind": "choices", "name": "two", "dimensions": {"a": [0, 1, 2], "b": [0, 1, 2]}},
        "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": str(tmp_path / "table.json")},
        "reward": reward,
        "execution": {"trials": 9},
        "logging": {"tensorboard": False},
    }
    cfg = config_from_dict(data, source="small.yaml", base_dir=tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    evaluator = TrialEvaluator(cfg)
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        for trial, encoding in enumerate((a, b) for a in range(3) for b in range(3)):
            ledger.add_trial(trial, suggestion_id=f"{trial:06d}", encoding=encoding, arch_id=None,
                             block_strings=None, candidate={"a": encoding[0], "b": encoding[1]})
            outcome = evaluator.run(encoding, trial)
            ledger.finish_trial(trial, outcome, finished_at=outcome.started_at)
        ledger.set_meta("finished_at", "0")
    return run_dir


def test_status_text_shows_the_reward_and_the_key_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = make_run(tmp_path, {"type": "metric", "metric": "acc", "direction": "max"})
    assert main(["status", str(run_dir), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("small (") and "9/9 trials done" in lines[0]
    assert lines[1].split() == ["rank", "trial", "acc", "latency_ms", "params", "architecture"]
    assert lines[2].split() == ["1", "8", "0.72", "4", "3.000M", "2", "2"]  # (2, 2): the best acc
    assert lines[3].split()[:5] == ["2", "7", "0.71", "3", "2.000M"]


def test_status_text_of_a_pareto_run_shows_every_objective(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reward = {"type": "pareto", "objectives": [{"metric": "acc", "direction": "max"},
                                               {"metric": "latency_ms", "direction": "min"}]}
    run_dir = make_run(tmp_path, reward)
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("Pareto front:")
    assert out[start + 1].split() == ["trial", "acc", "latency_ms", "params", "architecture"]
    # a = 2 dominates the rest; along b, acc and latency both grow, so (2, 0), (2, 1) and (2, 2) are the front
    assert [line.split()[:3] for line in out[start + 2:]] == [["6", "0.7", "2"], ["7", "0.71", "3"], ["8", "0.72", "4"]]


@pytest.mark.parametrize(
    ("argv", "formats"),
    [
        (["--format", "tf", "timm"], ["tf", "timm"]),
        (["--format", "tf", "--format", "json", "onnx"], ["tf", "json", "onnx"]),
        ([], None),
    ],
)
def test_export_format_takes_several_values(argv: list[str], formats: list[str] | None) -> None:
    args = make_parser().parse_args(["export", "RUN", *argv])
    assert args.formats == formats and args.run_dir == "RUN"


def test_export_format_refuses_an_unknown_value(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        make_parser().parse_args(["export", "RUN", "--format", "tf", "pdf"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mixnas: error: argument --format: invalid choice: 'pdf'") and err.count("\n") == 1


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    """``mixnas status`` does not pay torch's import (seconds on a small CPU); ``mixnas --help`` lists everything."""
    import subprocess
    import sys

    run = make_run(tmp_path, {"type": "metric", "metric": "acc"})
    code = ("import sys; from mixnas.launch.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "-v", "status", str(run)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
    listing = subprocess.run([sys.executable, "-m", "mixnas", "--help"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in ("search", "status", "train-proxy", "supernet", "latency"))
    typo = subprocess.run([sys.executable, "-m", "mixnas", "stauts"], capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and "invalid choice" in typo.stderr and "status" in typo.stderr


def _proxy_run(tmp_path: Path) -> Path:
    """A run directory of the quickstart (proxy trainer, measured latency) before its first trial."""
    from mixnas.launch.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
    run_dir = tmp_path / "proxy_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    with Ledger(run_dir / "ledger.sqlite"):
        pass
    return run_dir


@pytest.mark.parametrize("argv", [["--help"], ["status", "RUN"], ["status", "RUN", "--json"], ["status", "PROXY_RUN"],
                                  ["build", "mixnet_s", "--json"],
                                  ["space", "show", "tiny"], ["train", "--help"], ["train-proxy", "--help"],
                                  ["supernet", "--help"], ["latency", "--help"], ["search", "--help"]])
def test_commands_that_neither_train_nor_measure_start_without_torch(tmp_path: Path, argv: list[str]) -> None:
    """torch takes seconds to import on a small CPU; reading a run or a space must not pay for it."""
    import subprocess
    import sys

    places = {"RUN": lambda: make_run(tmp_path, {"type": "metric", "metric": "acc", "direction": "max"}),
              "PROXY_RUN": lambda: _proxy_run(tmp_path)}
    argv = [str(places[a]()) if a in places else a for a in argv]
    code = ("import sys\nfrom mixnas.launch.cli import main\ntry:\n    code = main(%r)\nexcept SystemExit as e:\n"
            "    code = e.code\nassert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)\n" % argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]
