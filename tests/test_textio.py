"""Atomic writes replace a regular file or nothing: never a device node, a FIFO or a folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.textio import read_json, write_json_atomic, write_text_atomic


def test_an_atomic_write_replaces_a_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert read_json(path, LatencyTableError) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_an_atomic_write_gives_a_new_file_the_umask_permissions_and_keeps_an_old_files(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        new = tmp_path / "table.json"
        write_json_atomic(new, {"a": 1})
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o640  # what open() gives, not mkstemp's 0600
        kept = tmp_path / "private.json"
        kept.write_text("{}")
        kept.chmod(0o600)
        write_json_atomic(kept, {"a": 2})
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_an_atomic_write_refuses_to_replace_a_fifo_or_a_folder(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        write_text_atomic(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the FIFO (os.replace would have swapped it for a file)
    with pytest.raises(IsADirectoryError):
        write_text_atomic(tmp_path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_a_table_saved_to_a_device_is_one_clear_error(tmp_path: Path) -> None:
    table = LatencyTable(backend="torch", threads=1, batch_size=1)
    with pytest.raises(LatencyTableError, match="/dev/null: cannot write the latency table .*not a regular file"):
        table.save("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("text, key, lines", [
    ("a: 1\nb: 2\na: 3\n", "a", (1, 3)),
    ("x:\n  y: 1\n  z: 2\n  y: 3\n", "y", (2, 4)),
    ("m: {k: 1, k: 2}\n", "k", (1, 1)),
])
def test_a_yaml_key_given_twice_is_refused_with_both_lines(text: str, key: str, lines: tuple[int, int]) -> None:
    from mixnas.errors import ConfigError
    from mixnas.textio import parse_yaml

    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "x.yaml", ConfigError)
    assert f"key '{key}' is given twice (lines {lines[0]} and {lines[1]})" in str(info.value)
    assert str(info.value).startswith("x.yaml: ") and "\n" not in str(info.value)


def test_a_yaml_merge_key_may_be_overridden() -> None:
    from mixnas.errors import ConfigError
    from mixnas.textio import parse_yaml

    data = parse_yaml("base: &b {k: 1, j: 0}\nd:\n  <<: *b\n  k: 2\n", "x.yaml", ConfigError)
    assert data["d"] == {"k": 2, "j": 0}


def test_an_experiment_with_a_key_given_twice_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    from mixnas.launch.cli import main

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "experiments" / "quickstart.yaml").read_text() + "seed: 3\n"  # seed is already given
    (tmp_path / "dup.yaml").write_text(text)
    assert main(["search", str(tmp_path / "dup.yaml"), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key 'seed' is given twice" in err[0], err


def _outputs(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    """(what it writes, the command line with OUT where the output goes, "file" or "folder")."""
    repo = Path(__file__).resolve().parents[1]
    old = repo / "tests" / "data" / "old_formats"
    lut = str(old / "lut" / "lut_v2.json")
    run = tmp_path / "run"
    import shutil

    shutil.copytree(old / "run_dirs" / "ledger3_reranked", run)
    return [
        ("merge", ["latency", "merge", lut, "--out", "OUT"], "file"),
        ("import-csv", ["latency", "import-csv", str(old / "lut" / "imported.csv"), "--out", "OUT", "--backend",
                        "tflite"], "file"),
        ("agent-script", ["latency", "agent-script", "-o", "OUT"], "file"),
        ("export of a run", ["export", str(run), "--format", "json", "-o", "OUT"], "folder"),
        ("export-layers", ["latency", "export-layers", "--space", "tiny", "-n", "1", "--calibrate", "0", "-o", "OUT"],
         "folder"),
    ]


def test_every_output_refuses_a_fifo_and_the_wrong_kind_of_path_in_one_line(tmp_path: Path, capsys) -> None:
    from mixnas.launch.cli import main

    fifo, folder, plain = tmp_path / "fifo", tmp_path / "folder", tmp_path / "plain.txt"
    os.mkfifo(fifo)
    folder.mkdir()
    plain.write_text("keep me")
    for what, argv, kind in _outputs(tmp_path):
        for bad in (fifo, folder if kind == "file" else plain):
            code = main([str(bad) if a == "OUT" else a for a in argv])
            err = capsys.readouterr().err.strip().splitlines()  # progress lines, then one error line
            errors = [line for line in err if line.startswith("mixnas: error: ")]
            assert code == 2 and errors == err[-1:] and str(bad) in errors[0], (what, bad, err)
            assert not any("Traceback" in line for line in err)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and plain.read_text() == "keep me"
