"""ARCH as a trial of a run (``RUN_DIR:TRIAL``, ``RUN_DIR:best``), an export's ``arch.json`` and ``tf.txt``.

The run directory is written by hand: a ``config.yaml`` and a ledger whose rows hold real architectures (MixNet-tiny
at 32x32 with 10 classes and two head widths), as the runner stores them (``candidate`` = ``Architecture.to_dict()``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixnas.errors import ArchitectureError
from mixnas.launch.archref import resolve_cli_arch, split_trial_ref
from mixnas.launch.cli import main
from mixnas.launch.config import config_from_dict
from mixnas.launch.export import export_run
from mixnas.launch.ledger import Ledger
from mixnas.outcome import Status, TrialOutcome
from mixnas.search_space.arch_strings import encode_arch
from mixnas.search_space.counting import breakdown
from mixnas.search_space.presets import load_arch_preset, resolve_arch

HEADS = (256, 128, 512)
REWARDS = (0.5, 0.9, 0.7)  # trial 1 is the best


def make_run(tmp_path: Path) -> tuple[Path, list]:
    (tmp_path / "table.json").write_text(json.dumps({"0": {"acc": 0.5}, "1": {"acc": 0.6}}))
    data = {
        "name": "archs",
        "search_space": {"kind": "choices", "name": "one", "dimensions": {"a": [0, 1]}},
        "controller": {"type": "random"},
        "evaluator": {"type": "tabular", "table": str(tmp_path / "table.json")},
        "reward": {"type": "metric", "metric": "acc", "direction": "max"},
        "execution": {"trials": 3},
        "logging": {"tensorboard": False},
    }
    cfg = config_from_dict(data, source="archs.yaml", base_dir=tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    base = load_arch_preset("mixnet_tiny").replace(resolution=32, num_classes=10, dropout_rate=0.2)
    archs = [base.replace(feature_size=head, name="") for head in HEADS]
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        for trial, (arch, reward) in enumerate(zip(archs, REWARDS)):
            ledger.add_trial(trial, suggestion_id=f"{trial:06d}", encoding=(trial,), arch_id=arch.id,
                             block_strings=encode_arch(arch), candidate=arch.to_dict())
            total = breakdown(arch).total
            outcome = TrialOutcome(Status.OK, metrics={"acc": reward, "params": total.params, "macs": total.macs},
                                   reward=reward)
            ledger.finish_trial(trial, outcome)
    return run_dir, archs


def build_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["build", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_trial_references_resolve_to_the_ledger_architecture(tmp_path: Path) -> None:
    run_dir, archs = make_run(tmp_path)
    assert resolve_cli_arch(f"{run_dir}:0").id == archs[0].id
    assert resolve_cli_arch(f"{run_dir}:2").id == archs[2].id
    assert resolve_cli_arch(f"{run_dir}:best").id == archs[1].id
    assert split_trial_ref("runs/x:12") == (Path("runs/x"), 12)
    assert split_trial_ref("r1_k3_a1_p1_s11_e1_i16_o16") is None


def test_build_of_run_best_gives_the_ledger_params_and_macs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = make_run(tmp_path)
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        best = ledger.get(1)
    info = build_json(capsys, f"{run_dir}:best")
    assert (info["params"], info["macs"]) == (best.metrics["params"], best.metrics["macs"])
    assert (info["resolution"], info["num_classes"], info["head"]["out"]) == (32, 10, HEADS[1])


def test_exported_files_rebuild_the_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, archs = make_run(tmp_path)
    out, items = export_run(run_dir, top=3, formats=["tf", "timm", "json"], out_dir=tmp_path / "export")
    assert [item.record.trial for item in items] == [1, 2, 0]
    for item in items:
        arch = archs[item.record.trial]
        tf_text = (item.folder / "tf.txt").read_text()
        assert tf_text.startswith("# mixnas: resolution=32 num_classes=10 stem=16 ")
        info = build_json(capsys, tf_text)  # what `mixnas build "$(cat tf.txt)"` passes
        assert (info["params"], info["macs"]) == (item.record.metrics["params"], item.record.metrics["macs"])
        assert info["id"] == arch.id
        assert resolve_arch(str(item.folder / "tf.txt")).id == arch.id
        assert resolve_cli_arch(str(item.folder / "arch.json")).id == arch.id
        timm = resolve_arch((item.folder / "timm.txt").read_text())
        assert breakdown(timm).total == breakdown(arch).total and timm.layers() == arch.layers()
        assert json.loads((item.folder / "arch.json").read_text())["timm_stages"][0] == ["ds_r1_k3_s1_e1_c16"]
    assert "stem=16 head=512" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(":7", "no trial 7"), (":best", None), (":nope", "needs a trial number or 'best'")],
)
def test_bad_references_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, suffix: str,
                                            message: str | None) -> None:
    run_dir, _ = make_run(tmp_path)
    if message is None:  # a run directory that is not there
        run_dir = tmp_path / "missing"
        message = "no run directory"
    assert main(["build", f"{run_dir}{suffix}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mixnas: error:") and message in err and "\n" not in err


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="config.yaml"):
        resolve_cli_arch(f"{tmp_path}:best")


def test_the_printed_search_result_rebuilds_the_best_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mixnas.launch.commands.search import print_result
    from mixnas.launch.rundir import RunPaths, load_run_config
    from mixnas.launch.summary import short_arch, summarize

    run_dir, _ = make_run(tmp_path)
    cfg = load_run_config(RunPaths(run_dir))
    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        records = ledger.trials()
    print_result(summarize(cfg, records, finished=True), run_dir)
    out = capsys.readouterr().out.splitlines()
    start = out.index("block strings (tf):") + 1
    pasted = "\n".join(line for line in out[start:] if line.startswith("  "))  # the indented lines, as copied
    info = build_json(capsys, pasted)
    assert (info["params"], info["macs"]) == (records[1].metrics["params"], records[1].metrics["macs"])
    assert f"rebuild: mixnas build {run_dir}:best" in out
    assert short_arch(records[1], 200).startswith("[32px 10cls stem16 head128] r1_k3_a1_p1_s11_e1_i16_o16 ")


def test_train_proxy_takes_a_trial_at_its_own_resolution(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = make_run(tmp_path)
    argv = ["train-proxy", "--arch", f"{run_dir}:best", "--data", "digits", "--steps", "1", "--images-per-class", "4",
            "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["resolution"], result["data"]["resolution"]) == (32, 32)
    assert result["arch"] == "run:1"
