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
