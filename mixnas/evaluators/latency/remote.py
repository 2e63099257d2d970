"""Measuring on a latency agent over HTTP: the search machine's side of :mod:`~mixnas.evaluators.latency.agent`,
and the one-file agent script itself (:func:`agent_script`).

:class:`RemoteTimer` is a :class:`~mixnas.evaluators.latency.measure.Timer`: profiling, calibration, validation
and end-to-end measurement take it in place of the local one. Every stage it is given is converted once by the
backend (:func:`~mixnas.evaluators.latency.backends.convert_pipeline`: ONNX, float32 or int8), uploaded (``POST /models``, content-addressed, so a model the agent holds is never
sent twice), and the pipelines are timed by one ``POST /measure`` on the device, with the agent's copy of the
measurement rules. Drift correction stays here, as for local measurements: the reference network is one of the
pipelines. Only the ``onnxruntime`` backend (float32 or int8) on the CPU can run on an agent.

:class:`AgentClient` is the HTTP client (``urllib`` only), with timeouts, and one-line
:class:`~mixnas.errors.LatencyTableError` messages for a refused connection, a wrong token (401) or a body over
the agent's limit (413).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.agent import AGENT_VERSION
from mixnas.evaluators.latency.backends import convert_pipeline, get_backend
from mixnas.evaluators.latency.measure import (
    MeasureConfig,
    Measurement,
    Pipeline,
    Timed,
    timing_settings,
)
from mixnas.textio import read_text

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
MEASURE_TIMEOUT_S = 3600.0  # a chunk of large networks is timed for minutes before the agent answers
# What of the agent's /info describes the device (and goes into a latency table's ``device``).
DEVICE_INFO_KEYS = ("cpu", "logical_cpus", "platform", "machine", "python", "numpy", "onnxruntime", "accelerator",
                    "agent_version")


class _MissingModels(Exception):
    """The agent does not hold these model ids (restarted, or dropped them from its store)."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"{len(ids)} missing models")
        self.ids = list(ids)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (whitespace stripped): the file must exist and not be empty; warn if others read it."""
    token = read_text(path, LatencyTableError).strip()
    if not token:
        raise LatencyTableError(f"{path}: the token file is empty; it must hold the agent's token")
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s: the token file is readable by others; chmod 600 it", path)
    return token


class AgentClient:
    """HTTP client of one latency agent (``url`` like ``http://192.168.1.7:8765``)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = MEASURE_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise LatencyTableError(f"--remote {url!r}: expected an agent address like http://HOST:PORT")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._info: dict[str, Any] | None = None

    @classmethod
    def from_token_file(cls, url: str, token_file: str | os.PathLike[str], **kwargs: Any) -> AgentClient:
        return cls(url, read_token_file(token_file), **kwargs)

    def info(self) -> dict[str, Any]:
        """The agent's ``/info`` (device metadata, threads, body limit), fetched once."""
        if self._info is None:
            info = self._call("GET", "/info", timeout_s=CONNECT_TIMEOUT_S)
            if info.get("agent_version") != AGENT_VERSION:
                raise LatencyTableError(
                    f"latency agent at {self.url} speaks version {info.get('agent_version')!r}, this mixnas "
                    f"{AGENT_VERSION}: write a new one with mixnas latency agent-script"
                )
            self._info = info
        return self._info

    def upload(self, model: bytes, what: str = "model") -> str:
        """Send one ONNX model; its id on the agent."""
        limit = self.info().get("max_body")
        if isinstance(limit, int) and len(model) > limit:
            raise LatencyTableError(
                f"{what}: its ONNX model has {len(model):,} bytes, over the agent's limit of {limit:,} "
                "(HTTP 413); start the agent with a larger --max-body-mib"
            )
        answer = self._call("POST", "/models", model, "application/octet-stream")
        if not isinstance(answer.get("id"), str):
            raise LatencyTableError(f"latency agent at {self.url}: upload answer without an id")
        return answer["id"]

    def measure(self, request: dict[str, Any]) -> dict[str, Any]:
        """One ``POST /measure``; raises :class:`_MissingModels` when the agent lacks some of the models."""
        return self._call("POST", "/measure", json.dumps(request).encode(), "application/json")

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        timeout = timeout_s or self.timeout_s
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, body) from None
        except (socket.timeout, TimeoutError):
            raise LatencyTableError(f"latency agent at {self.url}: no answer to {path} within {timeout:g} s") from None
        except urllib.error.URLError as exc:
            raise LatencyTableError(f"latency agent at {self.url}: {_reason(exc.reason)}") from None
        except (ConnectionError, OSError) as exc:  # reset or broken pipe while sending
            raise LatencyTableError(f"latency agent at {self.url}: {_reason(exc)}") from None
        try:
            answer = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LatencyTableError(f"latency agent at {self.url}: {path} answered something other than JSON") from None
        if not isinstance(answer, dict):
            raise LatencyTableError(f"latency agent at {self.url}: {path} answered {type(answer).__name__}")
        return answer

    def _http_error(self, exc: urllib.error.HTTPError, body: bytes | None) -> Exception:
        try:
            detail = json.loads(exc.read() or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError, OSError):
            detail = {}
        detail = detail if isinstance(detail, dict) else {}
        if exc.code == 401:
            return LatencyTableError(
                f"latency agent at {self.url} refused the token (HTTP 401): the token file must hold the token the "
                "agent was started with"
            )
        if exc.code == 413:
            return LatencyTableError(
                f"latency agent at {self.url}: a request of {len(body or b''):,} bytes is over its limit (HTTP 413); "
                "start the agent with a larger --max-body-mib"
            )
        if exc.code == 409 and isinstance(detail.get("missing"), list):
            return _MissingModels(detail["missing"])
        reason = detail.get("error") or exc.reason
        return LatencyTableError(f"latency agent at {self.url}: HTTP {exc.code}: {reason}")


def _reason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is agent.py running there, on that port?)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


class RemoteTimer:
    """Times pipelines on a latency agent (a :class:`~mixnas.evaluators.latency.measure.Timer`)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.ids: dict[str, str] = {}  # stage key -> model id on the agent

    def _check(self, config: MeasureConfig) -> None:
        if not get_backend(config.backend).agent or config.device != "cpu":
            raise LatencyTableError(
                f"a latency agent runs ONNX models with onnxruntime on its CPU; got backend {config.backend!r} "
                f"on {config.device!r} (use --backend onnxruntime)"
            )

    def device(self, config: MeasureConfig) -> dict[str, Any]:
        self._check(config)
        info = self.client.info()
        return {**{k: info[k] for k in DEVICE_INFO_KEYS if k in info}, "measured_by": f"agent {self.client.url}"}

    def _upload(self, pipeline: Pipeline, config: MeasureConfig) -> None:
        for spec, model in convert_pipeline(pipeline, config, skip=set(self.ids)):
            self.ids[spec.key] = self.client.upload(model, what=spec.key)

    def time(self, pipelines: Sequence[Pipeline], config: MeasureConfig, *, rounds: int) -> Timed:
        self._check(config)
        specs = {s.key: s for p in pipelines for s in p}
        request = {
            "settings": dataclasses.asdict(timing_settings(config, rounds)),
            "pipelines": [{"input_shape": list(p[0].input_shape), "stages": [s.key for s in p]} for p in pipelines],
        }
        for attempt in range(2):  # a second try after re-uploading what the agent had dropped
            for pipeline in pipelines:
                self._upload(pipeline, config)
            request["models"] = {k: self.ids[k] for k in specs}
            try:
                answer = self.client.measure(request)
                break
            except _MissingModels as exc:
                if attempt:
                    raise LatencyTableError(f"latency agent at {self.client.url} keeps dropping uploaded models; "
                                            "start it with a larger --store-mib") from None
                gone = set(exc.ids)
                self.ids = {k: v for k, v in self.ids.items() if v not in gone}
        results = answer.get("results")
        if not isinstance(results, dict) or set(results) != set(specs):
            raise LatencyTableError(f"latency agent at {self.client.url}: the answer lacks results for some stages")
        where = f"latency agent at {self.client.url}"
        measured = {k: Measurement.from_summary(v, f"{where}: results[{k!r}]") for k, v in results.items()}
        seconds = answer.get("round_seconds")
        return measured, float(seconds) if isinstance(seconds, (int, float)) else 0.0


def remote_timer(url: str, token_file: str | os.PathLike[str]) -> RemoteTimer:
    """A :class:`RemoteTimer` for the agent at ``url``, authenticated by the token in ``token_file``."""
    return RemoteTimer(AgentClient.from_token_file(url, token_file))


# --- the one-file agent ------------------------------------------------------------------------------------
BUNDLE_BEGIN = "# mixnas-bundle: begin"
BUNDLE_END = "# mixnas-bundle: end"


def agent_script() -> str:
    """The source of :mod:`.agent` with :mod:`.timing` inlined between its bundle markers: one file that imports
    nothing of mixnas, what ``mixnas latency agent-script`` writes for a device."""
    from mixnas.evaluators.latency import agent, timing

    own = Path(agent.__file__).read_text(encoding="utf-8")
    rules = Path(timing.__file__).read_text(encoding="utf-8")
    rules = rules.replace("from __future__ import annotations\n", "", 1)
    before, rest = own.split(BUNDLE_BEGIN, 1)
    _, after = rest.split(BUNDLE_END, 1)
    after = after.split("\n", 1)[1]
    return f"{before}# --- the measurement rules (mixnas/evaluators/latency/timing.py) ---\n{rules}\n# --- the agent ---\n{after}"
