"""The ledger's records hold the trial's ``TrialOutcome``: what the driver keeps when it writes is exactly what a
later read (a resume, ``mixnas status``) gives back, and a repeat keeps the reasons of its failed attempts."""

from __future__ import annotations

import math
import sqlite3

from mixnas.launch.ledger import LEDGER_FORMAT_VERSION, Ledger, as_stored
from mixnas.outcome import Status, TrialOutcome


def _outcome() -> TrialOutcome:
    return TrialOutcome(Status.OK, {"top1": 0.5, "loss": math.nan, "shape": (1, 2), "z": 1, "a": 2}, 0.5,
                        curve=({"epoch": 1, "top1": 0.25},), attempt=1, worker="w:1", started_at=10.0,
                        eval_seconds=2.5)


def test_the_record_the_ledger_returns_is_the_record_it_reads_back(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        asked = ledger.add_trial(0, suggestion_id="s0", encoding=(2, 1), arch_id="a", block_strings=["x", "y"],
                                 candidate={"k": (1, 2)})
        assert asked == ledger.get(0) and asked.status is Status.RUNNING and asked.metrics == {}
        ledger.record_failure(0, attempt=1, reason="RuntimeError: boom")
        stored, finished_at = ledger.finish_trial(0, _outcome())
        read = ledger.get(0)
    assert read.outcome == stored == as_stored(_outcome())
    assert read.finished_at == finished_at and read.failures == ("RuntimeError: boom",) and read.attempt == 1
    assert stored.metrics == {"a": 2, "loss": None, "shape": [1, 2], "top1": 0.5, "z": 1}  # strict JSON
    assert list(stored.metrics) == ["a", "loss", "shape", "top1", "z"]
    assert read.reward == 0.5 and read.curve == ({"epoch": 1, "top1": 0.25},) and read.worker == "w:1"


def test_a_repeat_keeps_the_reasons_of_its_failed_attempts(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.add_trial(0, suggestion_id="s0", encoding=(0,), arch_id=None, block_strings=None, candidate={})
        ledger.finish_trial(0, TrialOutcome(Status.OK, {"top1": 0.5}, 0.5))
        failed = TrialOutcome.failure("MemoryError: out of memory", attempt=1)
        written = ledger.add_repeat(0, 1, 1, failed, failures=("RuntimeError: first try",))
        assert ledger.repeats() == [written]
    assert written.status is Status.FAILED and written.reason == "MemoryError: out of memory"
    assert written.failures == ("RuntimeError: first try",) and written.attempt == 1


def test_a_format_3_ledger_gains_the_failures_of_repeats(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add_trial(0, suggestion_id="s0", encoding=(0,), arch_id=None, block_strings=None, candidate={})
        ledger.finish_trial(0, TrialOutcome(Status.OK, {"top1": 0.5}, 0.5))
        ledger.add_repeat(0, 1, 1, TrialOutcome(Status.OK, {"top1": 0.6}, 0.6))
    con = sqlite3.connect(path)  # back to format 3: its repeats table had no failures column
    con.execute("ALTER TABLE repeats DROP COLUMN failures")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with Ledger(path, readonly=True) as ledger:
        assert [(r.reward, r.failures) for r in ledger.repeats()] == [(0.6, ())]
    with Ledger(path) as ledger:
        assert ledger.get_meta("format_version") == str(LEDGER_FORMAT_VERSION) == "5"
        ledger.add_repeat(0, 2, 2, TrialOutcome(Status.OK, {"top1": 0.7}, 0.7), failures=("x",))
        assert [(r.repeat, r.failures) for r in ledger.repeats()] == [(1, ()), (2, ("x",))]


def test_rerank_records_a_repeat_with_the_reasons_of_its_retried_attempts(tmp_path):
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.pool import Finished
    from mixnas.launch.rerank import _finish

    cfg = config_from_dict({"name": "t", "search_space": "tiny", "controller": {"type": "random"},
                            "evaluator": {"type": "proxy", "data": "digits"}, "reward": {"type": "metric", "metric": "top1"},
                            "execution": {"trials": 1, "max_failures_per_trial": 1}})
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.add_trial(0, suggestion_id="s0", encoding=(0,), arch_id=None, block_strings=None, candidate={})
        ledger.finish_trial(0, TrialOutcome(Status.OK, {"top1": 0.5}, 0.5))
        reasons: list[str] = []
        first = Finished(0, 0, TrialOutcome.failure("RuntimeError: worker lost"), seed=1)
        assert _finish(cfg, ledger, first, 1, reasons) is None and ledger.repeats() == []  # retried, not recorded
        second = Finished(0, 1, TrialOutcome(Status.OK, {"top1": 0.6}, 0.6, attempt=1), seed=1)
        saved = _finish(cfg, ledger, second, 1, reasons)
        assert ledger.repeats() == [saved]
    assert saved.status is Status.OK and saved.failures == ("RuntimeError: worker lost",)
