"""In-process checks of the remote / offline latency pieces: the agent's request validation and token file, the
multi-device LUT metadata, and the ``latency: {type: remote}`` experiment section (no agent process here; see
``test_latency_agent.py`` for those)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from mixnas.errors import ConfigError, LatencyTableError
from mixnas.evaluators.latency import agent
from mixnas.evaluators.latency.lut import Entry, LatencyTable
from mixnas.evaluators.latency.measure import MeasureConfig, Measurement, timing_settings
from mixnas.evaluators.latency.offline import read_results
from mixnas.evaluators.latency.remote import AgentClient, RemoteTimer, read_token_file
from mixnas.evaluators.latency.timing import Timing, TimingError


def test_timing_settings_are_checked() -> None:
    timing = Timing.from_dict({"repeats": 8, "clock": "auto", "threads": 1})
    assert timing.clock == "thread" and timing.repeats == 8
    assert Timing.from_dict({"threads": 2}).clock == "wall"
    for bad, text in (({"repeats": 0}, "repeats"), ({"warmup": True}, "warmup"), ({"min_seconds": -1}, "min_seconds"),
                      ({"clock": "thread", "threads": 2}, "one CPU thread"), ({"statistic": "max"}, "statistic"),
                      ({"colour": 1}, "unknown keys"), ([], "expected an object")):
        with pytest.raises(TimingError, match=text):  # the agent answers any TimingError with a 400
            Timing.from_dict(bad)
    # mixnas sends what its MeasureConfig says, and the agent accepts it unchanged
    config = MeasureConfig(backend="onnxruntime", repeats=30, min_seconds=1.5)
    sent = timing_settings(config, 5)
    assert Timing.from_dict(sent.__dict__) == sent


def test_summaries_round_trip_into_measurements() -> None:
    summary = agent.summarize_halves([1.0, 3.0], [2.0, 4.0], "min")
    m = Measurement.from_summary(summary)
    assert m == replace(Measurement.from_samples([1.0, 3.0, 2.0, 4.0]), halves=(1.0, 2.0))
    assert m.min_ms == 1.0 and m.count == 4 and m.halves == (1.0, 2.0)
    with pytest.raises(LatencyTableError, match="expected"):
        Measurement.from_summary({"min_ms": 1.0})


def test_agent_token_file_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(agent.AgentError, match="cannot read the token file"):
        agent.read_token(str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(agent.AgentError, match="empty"):
        agent.read_token(str(empty))
    shared = tmp_path / "shared"
    shared.write_text("tok\n")
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="mixnas.agent"):
        assert agent.read_token(str(shared)) == "tok"
    assert "readable by others" in caplog.text
    assert read_token_file(shared) == "tok"
    with pytest.raises(LatencyTableError, match="empty"):
        read_token_file(empty)


def test_remote_timer_refuses_torch(tmp_path: Path) -> None:
    timer = RemoteTimer(AgentClient("http://127.0.0.1:9", "t"))
    with pytest.raises(LatencyTableError, match="use --backend onnxruntime"):
        timer.device(MeasureConfig(backend="torch"))
    with pytest.raises(LatencyTableError, match="expected an agent address"):
        AgentClient("127.0.0.1:8765", "t")


def test_a_table_names_the_devices_it_was_measured_on(tmp_path: Path) -> None:
    here = LatencyTable("onnxruntime", 1, 1, device={"cpu": "A", "accelerator": "cpu"},
                        entries={"fc_i8_o2": Entry(ms=1.0, mean_ms=1.0)})
    phone = LatencyTable("onnxruntime", 1, 1, device={"cpu": "B", "accelerator": "cpu", "measured_by": "agent x"},
                         entries={"fc_i8_o3": Entry(ms=2.0, mean_ms=2.0)})
    path = tmp_path / "one.json"
    here.save(path)
    assert json.loads(path.read_text())["format_version"] == 2 and "devices" not in json.loads(path.read_text())
    with pytest.raises(LatencyTableError, match="different conditions"):
        here.merge(phone)
    merged = here.merge(phone, force=True)
    assert merged.devices == [here.device, phone.device]
    merged.save(path)
    data = json.loads(path.read_text())
    assert data["format_version"] == 3 and [d["cpu"] for d in data["devices"]] == ["A", "B"]
    assert LatencyTable.load(path) == merged
    assert phone.describe_device() == "B (agent x)" and here.describe_device() == "A (this machine)"
    data["format_version"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="devices: only in format_version 3"):
        LatencyTable.load(path)


def test_results_csv_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("signature,mean_ms\n")
    with pytest.raises(LatencyTableError, match="not the results of python agent.py"):
        read_results(path)
    path.write_text(f"# {agent.RESULTS_FORMAT} 1\n# device: {{}}\n{','.join(agent.RESULT_COLUMNS)}\n0,k,2\n")
    with pytest.raises(LatencyTableError, match="data row 1: expected 12 fields"):
        read_results(path)


def _experiment(latency: dict) -> dict:
    return {
        "name": "remote", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 10}, "budget": {"steps": 1},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": latency, "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }


def test_remote_latency_section_is_validated_at_load(tmp_path: Path) -> None:
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.experiment_config import RemoteLatency

    token = tmp_path / "token.txt"
    token.write_text("tok")
    good = {"type": "remote", "url": "http://pi.local:8765", "token_file": "token.txt", "threads": 1,
            "options": {"repeats": 50}}
    cfg = config_from_dict(_experiment(good), source="x.yaml", base_dir=tmp_path)
    assert isinstance(cfg.latency, RemoteLatency) and cfg.latency.url == "http://pi.local:8765"
    assert cfg.latency.token_file == str(token.resolve())
    measure = cfg.latency.measure_config  # the section kept parsed
    assert (measure.backend, measure.repeats, measure.threads) == ("onnxruntime", 50, 1)
    again = config_from_dict(cfg.to_dict(), source="x.yaml", base_dir=tmp_path)
    assert again.latency == cfg.latency
    (tmp_path / "empty.txt").write_text("")
    cases = [
        ({"url": "pi.local:8765"}, "x.yaml: latency.url"),
        ({"token_file": "absent.txt"}, "x.yaml: latency.token_file"),
        ({"token_file": "empty.txt"}, "latency.token_file"),
        ({"options": {"repeats": 0}}, "latency.options"),
        ({"options": {"backend": "torch"}}, "latency.options.backend"),
        ({"backend": "torch"}, "latency.backend: unknown key"),
    ]
    for change, text in cases:
        with pytest.raises(ConfigError, match=text.replace(".", r"\.")):
            config_from_dict(_experiment({**good, **change}), source="x.yaml", base_dir=tmp_path)


def test_offline_measurement_refuses_an_output_that_is_not_a_file(tmp_path: Path) -> None:
    # Run as root, os.replace would turn /dev/null (or a FIFO) into the results CSV.
    with pytest.raises(agent.AgentError, match="not a regular file"):
        agent.measure_dir(str(tmp_path), str(tmp_path), 1)
    if Path("/dev/null").exists():
        with pytest.raises(agent.AgentError, match="not a regular file"):
            agent.measure_dir(str(tmp_path), "/dev/null", 1)
