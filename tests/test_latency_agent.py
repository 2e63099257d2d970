"""The latency agent (``agent.py``) run as a separate process from a Python that has no torch and no mixnas.

The agent's interpreter is a virtual environment whose site-packages hold only numpy and onnxruntime (links to
this environment's copies), as on a device. Through it: the profile / validate / measure commands with
``--remote``, the token refusal (before any body is read), malformed and oversized requests (the agent answers
and keeps running), the offline path (export-layers, ``--measure-dir``, import-results) and a search trial with
``latency: {type: remote}``. Measurements use a handful of runs and no time span: they check behaviour, never
speed.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.launch.cli import main

FAST = ["--warmup", "1", "--repeats", "4", "--rounds", "2", "--min-seconds", "0"]
MAX_BODY_MIB = 1


@pytest.fixture(scope="module")
def agent_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python with only numpy and onnxruntime installed (links to this environment's packages)."""
    import numpy
    import onnxruntime

    env = tmp_path_factory.mktemp("agent-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(numpy.__file__).parents[1]
    assert Path(onnxruntime.__file__).parents[1] == ours
    for name in ("numpy", "numpy.libs", "onnxruntime"):
        if (ours / name).exists():
            (site / name).symlink_to(ours / name)
    return str(python)


@pytest.fixture(scope="module")
def agent_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "agent.py"
    assert main(["latency", "agent-script", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token.txt"
    path.write_text("s3cret-token-for-tests\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def agent(
    agent_python: str, agent_script: Path, token: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """A running agent on 127.0.0.1 (any free port); yields its url, token file and private temp folder."""
    tmp = tmp_path_factory.mktemp("agent-tmp")
    proc = subprocess.Popen(
        [agent_python, str(agent_script), "--token-file", str(token), "--port", "0", "--max-body-mib",
         str(MAX_BODY_MIB)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
        cwd=tmp.parent,
    )
    line = proc.stdout.readline()  # printed once the socket is listening
    assert "listening on http://127.0.0.1:" in line, proc.stderr.read()
    url = line.split()[-1]
    yield {"url": url, "token": token, "proc": proc, "tmp": tmp, "port": int(url.rsplit(":", 1)[1])}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert list(tmp.iterdir()) == []  # its model folder is gone


def request(agent: dict, method: str, path: str, body: bytes | None = None, *, token: str | None = None,
            headers: dict[str, str] | None = None, send_body: bool = True) -> tuple[int, Any]:
    """One raw HTTP request; with ``send_body=False`` only the headers (with the body's length) are sent."""
    conn = http.client.HTTPConnection("127.0.0.1", agent["port"], timeout=60)
    token = agent["token"].read_text().strip() if token is None else token
    hdrs = {"Authorization": f"Bearer {token}", **(headers or {})}
    if body is not None:
        hdrs["Content-Length"] = str(len(body))
    conn.putrequest(method, path)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    if body is not None and send_body:
        conn.send(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else None


def test_the_agent_python_has_no_torch_and_no_mixnas(agent_python: str) -> None:
    for module in ("torch", "mixnas"):
        # run from a folder that is not the repository: the checkout itself would be importable from there
        result = subprocess.run([agent_python, "-c", f"import {module}"], capture_output=True, text=True,
                                cwd=Path(agent_python).parent)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr
    assert subprocess.run([agent_python, "-c", "import numpy, onnxruntime"]).returncode == 0


def test_agent_script_is_the_agent_module_with_the_timing_rules_inlined(agent_script: Path) -> None:
    from mixnas.evaluators.latency import agent as module
    from mixnas.evaluators.latency import remote, timing

    text = agent_script.read_text()
    assert text.startswith("#!/usr/bin/env python3\n# mixnas latency agent 1")
    assert "from mixnas" not in text and remote.BUNDLE_BEGIN not in text  # one file: imports nothing of ours
    rules = Path(timing.__file__).read_text().replace("from __future__ import annotations\n", "")
    assert rules in text  # the very rules local measurements use, not a copy kept by hand
    _, tail = Path(module.__file__).read_text().split(remote.BUNDLE_BEGIN)
    assert text.endswith(tail.split(remote.BUNDLE_END, 1)[1].split("\n", 1)[1])


def test_info_needs_the_token(agent: dict) -> None:
    status, info = request(agent, "GET", "/info")
    assert status == 200 and info["agent_version"] == 1 and info["onnxruntime"] and info["threads"] == 1
    for wrong in ("", "nope", agent["token"].read_text().strip() + "x"):
        status, answer = request(agent, "GET", "/info", token=wrong)
        assert status == 401 and "token" in answer["error"]
    # refused before the body is read: the answer comes although the announced body is never sent
    for path in ("/measure", "/models", "/nowhere"):
        status, _ = request(agent, "POST", path, b"x" * 1000, token="nope", send_body=False)
        assert status == 401
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):  # every method, every path
        assert request(agent, method, "/info", token="nope")[0] == 401


def test_oversized_body_is_refused_unread(agent: dict) -> None:
    status, answer = request(agent, "POST", "/models", b"\0" * ((MAX_BODY_MIB << 20) + 1), send_body=False)
    assert status == 413 and "limit" in answer["error"]
    assert request(agent, "GET", "/info")[0] == 200


def test_malformed_requests_get_an_error_and_the_agent_keeps_serving(agent: dict) -> None:
    cases = [
        ("POST", "/measure", b"{not json", 400, "not JSON"),
        ("POST", "/measure", b"[1, 2]", 400, "expected a JSON object"),
        ("POST", "/measure", json.dumps({"models": {"a": "b"}, "pipelines": []}).encode(), 400, "pipelines"),
        ("POST", "/measure", json.dumps({"settings": {"repeats": 0}, "models": {"a": "b"},
                                         "pipelines": [{"input_shape": [1], "stages": ["a"]}]}).encode(), 400,
         "repeats"),
        ("POST", "/measure", json.dumps({"models": {"a": "b"},
                                         "pipelines": [{"input_shape": [1, -3], "stages": ["a"]}]}).encode(), 400,
         "input_shape"),
        ("POST", "/measure", json.dumps({"models": {"a": "0" * 64},
                                         "pipelines": [{"input_shape": [1], "stages": ["a"]}]}).encode(), 409,
         "upload"),
        ("POST", "/models", b"this is not an onnx model", 400, "not a loadable ONNX model"),
        ("GET", "/measure", None, 405, "takes POST"),
        ("GET", "/../../etc/passwd", None, 404, "no such path"),
    ]
    for method, path, body, status, text in cases:
        got, answer = request(agent, method, path, body)
        assert got == status and text in answer["error"], (path, body, answer)
    assert request(agent, "POST", "/measure", b"{}", headers={"Content-Length": "abc"})[0] in (400, 411)
    assert request(agent, "GET", "/info")[0] == 200


def test_a_model_that_does_not_fit_its_input_is_a_400(agent: dict) -> None:
    import torch

    from mixnas.evaluators.latency.backends import export_onnx

    model = export_onnx(torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8))
    status, answer = request(agent, "POST", "/models", model)
    assert status == 200
    body = {"models": {"conv": answer["id"]}, "pipelines": [{"input_shape": [1, 5, 8, 8], "stages": ["conv"]}]}
    status, answer = request(agent, "POST", "/measure", json.dumps(body).encode())
    assert status == 400 and "do not run on input" in answer["error"]
    body["pipelines"][0]["input_shape"] = [1, 3, 8, 8]
    body["settings"] = {"warmup": 1, "repeats": 4, "rounds": 2, "min_seconds": 0}
    status, answer = request(agent, "POST", "/measure", json.dumps(body).encode())
    assert status == 200
    summary = answer["results"]["conv"]
    assert summary["count"] == 4 and summary["min_ms"] > 0 and len(summary["halves"]) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a fresh process per measurement needs os.fork")
def test_the_agent_loads_and_times_every_request_in_a_fresh_process(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a device's agent runs for hours, and sessions loaded late in a long process run slower (docs/latency.md, AF)
    import torch

    from mixnas.evaluators.latency import agent as agent_module
    from mixnas.evaluators.latency.backends import export_onnx

    model = tmp_path / "conv.onnx"
    model.write_bytes(export_onnx(torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8)))
    pids = tmp_path / "pids"
    real = agent_module.onnx_stage

    def onnx_stage(path, threads):  # noqa: ANN001
        with open(pids, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(path, threads)

    monkeypatch.setattr(agent_module, "onnx_stage", onnx_stage)
    body = {"models": {"conv": "m"}, "pipelines": [{"input_shape": [1, 3, 8, 8], "stages": ["conv"]}],
            "settings": {"warmup": 1, "repeats": 4, "rounds": 2, "min_seconds": 0}}
    answers = [agent_module.measure_request(body, lambda ref: str(model)) for _ in range(2)]
    assert all(a["results"]["conv"]["count"] == 4 for a in answers)
    loaders = pids.read_text().split()
    assert len(set(loaders)) == 2 and str(os.getpid()) not in loaders
    body["pipelines"][0]["input_shape"] = [1, 5, 8, 8]  # the child's refusal is still the caller's 400
    with pytest.raises(agent_module.AgentError, match="do not run on input") as err:
        agent_module.measure_request(body, lambda ref: str(model))
    assert err.value.status == 400


def test_profile_validate_and_measure_through_the_agent(agent: dict, tmp_path: Path, capsys) -> None:
    remote = ["--remote", agent["url"], "--token-file", str(agent["token"])]
    lut = tmp_path / "lut.json"
    assert main(["latency", "profile", "--space", "tiny", "-n", "3", "--calibrate", "3", "--out", str(lut),
                 *remote, *FAST]) == 0
    table = LatencyTable.load(lut)
    assert table.backend == "onnxruntime" and len(table) > 0 and table.calibration is not None
    assert table.device["measured_by"] == f"agent {agent['url']}" and table.device["onnxruntime"]
    assert table.settings["reference_ms"] > 0
    capsys.readouterr()
    assert main(["latency", "validate", "--space", "tiny", "--lut", str(lut), "-n", "2", "--json", *remote,
                 "--repeats", "4", "--min-seconds", "0", "--rounds", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 2 and 0 <= report["within_10pct"] <= 1
    assert main(["latency", "measure", "mixnet_tiny", "--json", *remote, *FAST]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["device"]["measured_by"].startswith("agent ") and measured["results"][0]["min_ms"] > 0


def test_client_errors_are_one_line(agent: dict, tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the token")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    cases = [
        ([agent["url"], wrong], "refused the token (HTTP 401)"),
        ([agent["url"], empty], "the token file is empty"),
        ([agent["url"], tmp_path / "absent.txt"], "no such file"),
        ([f"http://127.0.0.1:{free}", agent["token"]], "connection refused"),
        (["ftp://x", agent["token"]], "expected an agent address"),
    ]
    for (url, token_file), text in cases:
        capsys.readouterr()
        assert main(["latency", "measure", "mixnet_tiny", "--remote", url, "--token-file", str(token_file),
                     *FAST]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, err
    assert main(["latency", "measure", "mixnet_tiny", "--backend", "torch", "--remote", agent["url"],
                 "--token-file", str(agent["token"]), *FAST]) == 2
    assert "use --backend onnxruntime" in capsys.readouterr().err
    assert main(["latency", "measure", "mixnet_tiny", "--remote", agent["url"]]) == 2
    assert "--remote needs --token-file" in capsys.readouterr().err


def test_offline_path_round_trip(agent: dict, agent_python: str, agent_script: Path, tmp_path: Path,
                                 capsys) -> None:
    folder, results, lut = tmp_path / "export", tmp_path / "results.csv", tmp_path / "lut.json"
    assert main(["latency", "export-layers", "--space", "tiny", "-n", "3", "--calibrate", "3", "-o", str(folder),
                 "--chunk", "0", *FAST]) == 2  # was a traceback (range() step 0); now refused while parsing
    err = capsys.readouterr().err.splitlines()  # one error line; nothing written
    assert len(err) == 1
    assert err[0].startswith("mixnas: error: argument --chunk: expected an integer in 1..10000")
    assert not folder.exists()
    assert main(["latency", "export-layers", "--space", "tiny", "-n", "3", "--calibrate", "3", "-o", str(folder),
                 *FAST]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["mixnas"]["kinds"][0] == "reference" and manifest["mixnas"]["kinds"][-1] == "calibrate"
    run = subprocess.run([agent_python, str(agent_script), "--measure-dir", str(folder), "--out", str(results)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert main(["latency", "import-results", str(folder), str(results), "--out", str(lut)]) == 0
    table = LatencyTable.load(lut)
    assert table.backend == "onnxruntime" and table.calibration is not None and table.settings["reference_ms"] > 0
    assert table.device["measured_by"].startswith("agent offline")
    from mixnas.evaluators.latency.signatures import arch_signatures
    from mixnas.evaluators.latency.sampling import sample_archs

    _, _, archs = sample_archs("tiny", 3, 0)
    assert table.missing(s for a in archs for s in arch_signatures(a)) == []
    # the table validates like a profiled one, through the agent on the same device
    capsys.readouterr()
    assert main(["latency", "validate", "--space", "tiny", "--lut", str(lut), "-n", "2", "--json", "--remote",
                 agent["url"], "--token-file", str(agent["token"]), "--repeats", "4", "--min-seconds", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    # results of another export are refused
    manifest["mixnas"]["networks"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert main(["latency", "import-results", str(folder), str(results), "--out", str(lut)]) == 2
    assert "measured from another manifest" in capsys.readouterr().err


def test_a_search_trial_measures_on_the_agent(agent: dict, tmp_path: Path) -> None:
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator
    from mixnas.search_space.spaces import load_space

    data = {
        "name": "remote", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 10}, "budget": {"steps": 1},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": {"type": "remote", "url": agent["url"], "token_file": str(agent["token"]),
                    "options": {"warmup": 1, "repeats": 4, "min_seconds": 0}},
        "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }
    cfg = config_from_dict(data, source="remote.yaml", base_dir=tmp_path)
    assert cfg.latency.type == "remote" and cfg.to_dict()["latency"]["url"] == agent["url"]
    encoding = (0,) * len(load_space("tiny").dimensions)
    outcome = TrialEvaluator(cfg).run(encoding, 0)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["latency_ms"] > 0
