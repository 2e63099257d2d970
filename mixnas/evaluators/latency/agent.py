"""The latency agent: time ONNX models on the device you deploy to, with mixnas's measurement rules.

A **standalone program** for the target device: ``mixnas latency agent-script -o agent.py`` writes this module
with the measurement rules of :mod:`.timing` inlined (:func:`.remote.agent_script`), so local and on-device
measurements are taken by the same code. On the device it needs only Python 3.9+, numpy and onnxruntime (no
torch, no mixnas); it times float32 and int8 (QDQ) ONNX models alike::

      python agent.py --token-file token.txt [--host 127.0.0.1] [--port 8765] [--threads 1]
      python agent.py --measure-dir DIR --out results.csv      # offline: no network at all

It therefore imports only the standard library at module level, and numpy / onnxruntime inside the functions
that run models.

HTTP protocol (one request at a time, which is right for timing). Every request needs
``Authorization: Bearer <token>`` (else 401, before any body is read):

* ``GET /info``: device metadata (CPU model, cores, platform, Python, numpy and onnxruntime versions, threads).
* ``POST /models``: body = one ONNX model (raw bytes, at most ``--max-body-mib``); answers ``{"id": sha256}``.
  Models are kept, content-addressed, in the agent's own temporary folder (``tempfile.mkdtemp``, removed on
  exit), the least recently used dropped beyond ``--store-mib``.
* ``POST /measure``: body = JSON ``{"settings": {...}, "models": {key: id}, "pipelines": [{"input_shape": [...],
  "stages": [key, ...]}, ...]}``. Every pipeline is a chain of models run one after the other on a seeded random
  input, each stage timed where it sits (a whole network is a pipeline of one stage). All pipelines are timed
  in interleaved rounds (:func:`.timing.interleave`); the runs of stages with the same key are pooled. Answers
  ``{"results": {key: summary}, "round_seconds": s}`` (:func:`.timing.summarize`, plus the statistic of the even and
  the odd rounds as ``halves``). Drift correction stays with the caller: it sends a reference network as one of
  the pipelines and compares.

Errors are JSON ``{"error": "one line"}``: 400 malformed request or model, 401 token, 404 / 405 path or method,
409 a model id the agent does not hold (``"missing": [ids]``: upload them and retry), 411 / 413 body length.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import hmac
import io
import json
import logging
import math
import os
import platform
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Mapping, Sequence

# mixnas-bundle: begin (``mixnas latency agent-script`` puts the source of timing.py here)
from mixnas.evaluators.latency.timing import (
    FreshProcessError,
    PipelineRun,
    Stage,
    Timing,
    TimingError,
    check_count,
    clock_ns,
    in_fresh_process,
    random_input,
    summarize_halves,
    time_pipeline,
    time_pipelines,
)
# mixnas-bundle: end

AGENT_VERSION = 1
RESULTS_FORMAT = "mixnas-agent-results"
EXPORT_FORMAT = "mixnas-latency-export"
DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_MIB = 64
DEFAULT_STORE_MIB = 1024
MAX_ELEMENTS = 1 << 28  # input tensor elements: a sanity limit against absurd shapes
RESULT_COLUMNS = (
    "request", "key", "count", "min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms", "iqr_ms", "even_ms", "odd_ms",
    "round_seconds",
)

logger = logging.getLogger("mixnas.agent")


class AgentError(TimingError):
    """A bad setting, request or model; ``status`` is the HTTP status the agent answers it with."""

    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


# --- ONNX Runtime ---------------------------------------------------------------------------------------------
def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise AgentError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def onnx_session(model: bytes | str, threads: int) -> Any:
    """An ONNX Runtime session on the CPU: ``threads`` intra-op threads, full graph optimisation, sequential."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from Exception only; a bad model is the caller's input
        raise AgentError(f"not a loadable ONNX model ({first_line(exc)})") from None


def onnx_stage(model: bytes | str, threads: int) -> Stage:
    """A function from a float32 numpy input to the model's first output."""
    session = onnx_session(model, threads)
    name = session.get_inputs()[0].name
    run_session = session.run

    def run(x: Any) -> Any:
        return run_session(None, {name: x})[0]

    return run


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# --- device metadata ------------------------------------------------------------------------------------------
def cpuinfo_field(*keys: str) -> str | None:
    """The first non-empty value of one of ``keys`` in ``/proc/cpuinfo`` (Linux), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in keys and value.strip():
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`, else ``unknown``."""
    return (cpuinfo_field("model name", "Hardware", "Processor", "cpu model") or platform.processor()
            or platform.machine() or "unknown")


def host_info() -> dict[str, Any]:
    """The machine a measurement runs on: CPU model, logical CPUs, platform, Python (``accelerator``: ``cpu``)."""
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "machine": platform.machine(), "python": platform.python_version(), "accelerator": "cpu"}


def device_info(threads: int) -> dict[str, Any]:
    """What the agent runs on: :func:`host_info`, the agent's version and threads, numpy and onnxruntime versions."""
    meta: dict[str, Any] = {**host_info(), "agent_version": AGENT_VERSION, "threads": threads}
    with contextlib.suppress(ImportError):
        import numpy

        meta["numpy"] = numpy.__version__
    with contextlib.suppress(ImportError):
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    return meta


# --- measure requests -----------------------------------------------------------------------------------------
def _shape(value: Any, where: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and 1 <= len(value) <= 8
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)
    if not ok or math.prod(value) > MAX_ELEMENTS:
        raise AgentError(f"{where}: expected a list of 1-8 positive integers (at most {MAX_ELEMENTS} elements)")
    return tuple(value)


def parse_request(
    body: Any, default_threads: int = 1
) -> tuple[Timing, dict[str, str], list[tuple[list[str], tuple[int, ...]]]]:
    """The settings, ``{key: model reference}`` and ``[(stage keys, input shape)]`` of a measure request."""
    if not isinstance(body, Mapping):
        raise AgentError("request: expected a JSON object")
    unknown = sorted(set(body) - {"settings", "models", "pipelines", "name"})
    if unknown:
        raise AgentError(f"request: unknown keys {unknown}; allowed: models, name, pipelines, settings")
    timing = Timing.from_dict(body.get("settings", {}), default_threads=default_threads)
    models = body.get("models")
    if not isinstance(models, Mapping) or not models or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in models.items()
    ):
        raise AgentError("models: expected a non-empty object mapping stage keys to model ids")
    raw = body.get("pipelines")
    if not isinstance(raw, list) or not raw:
        raise AgentError("pipelines: expected a non-empty list")
    pipelines = []
    for i, p in enumerate(raw):
        where = f"pipelines[{i}]"
        if not isinstance(p, Mapping) or set(p) != {"input_shape", "stages"}:
            raise AgentError(f"{where}: expected an object with input_shape and stages")
        stages = p["stages"]
        if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
            raise AgentError(f"{where}.stages: expected a non-empty list of stage keys")
        absent = [s for s in stages if s not in models]
        if absent:
            raise AgentError(f"{where}.stages: {absent[0]!r} is not a key of models")
        pipelines.append((list(stages), _shape(p["input_shape"], f"{where}.input_shape")))
    return timing, dict(models), pipelines


def measure_request(body: Any, locate: Callable[[str], str], default_threads: int = 1,
                    close_in_child: Sequence[int] = ()) -> dict[str, Any]:
    """Run one measure request; ``locate(model reference) -> file path`` (an :class:`AgentError` if unknown).
    ``close_in_child``: descriptors the measuring process closes first (the server's sockets)."""
    timing, models, pipelines = parse_request(body, default_threads)
    missing = []
    paths = {}
    for key, ref in models.items():
        try:
            paths[key] = locate(ref)
        except AgentError as exc:
            if exc.status != 409:
                raise
            missing.append(ref)
    if missing:
        raise AgentError(f"{len(missing)} model(s) not held by the agent; upload them", 409, missing=missing)
    try:  # loaded and timed in a process of their own, as the first models of a process are (timing.py)
        return in_fresh_process(lambda: _time_request(timing, paths, pipelines), close_in_child)
    except FreshProcessError as exc:
        if exc.kind == "crash" or (exc.status is None and exc.kind != "TimingError"):
            raise RuntimeError(exc.message) from None  # the handler answers 500 with the reason
        raise AgentError(exc.message, exc.status or 400) from None


def _time_request(timing: Timing, paths: Mapping[str, str], pipelines: Sequence[tuple[list[str], tuple[int, ...]]]
                  ) -> dict[str, Any]:
    """Load the models of a checked request and time its pipelines (in :func:`measure_request`'s fresh process)."""
    prepared: dict[str, Stage] = {}
    runs: list[PipelineRun] = []
    for keys, shape in pipelines:
        for key in keys:
            if key not in prepared:
                prepared[key] = onnx_stage(paths[key], timing.threads)
        stages = [prepared[k] for k in keys]
        x = random_input(shape)
        try:
            time_pipeline(stages, x, 1, clock_ns("wall"))  # one trial run: a shape mismatch is a 400, not a crash
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise AgentError(f"pipeline {keys[0]!r}...: the models do not run on input {list(shape)} "
                             f"({first_line(exc)})") from None
        runs.append((keys, stages, x))
    pooled, seconds = time_pipelines(runs, timing)
    results = {k: summarize_halves(even, odd, timing.statistic) for k, (even, odd) in pooled.items()}
    return {"results": results, "round_seconds": seconds}


class ModelStore:
    """Uploaded models, content-addressed (sha256), in the agent's own temporary folder, bounded in bytes."""

    def __init__(self, limit_bytes: int) -> None:
        self.root = tempfile.mkdtemp(prefix="mixnas-agent-")
        self.limit = limit_bytes
        self.sizes: OrderedDict[str, int] = OrderedDict()

    def put(self, data: bytes, threads: int) -> str:
        """Check that ``data`` is a loadable ONNX model, keep it, return its id."""
        digest = hashlib.sha256(data).hexdigest()
        if digest in self.sizes:
            self.sizes.move_to_end(digest)
            return digest
        onnx_session(data, threads)  # an AgentError (400) for anything onnxruntime cannot load
        path = os.path.join(self.root, digest + ".onnx")
        with open(path, "wb") as fh:
            fh.write(data)
        self.sizes[digest] = len(data)
        while sum(self.sizes.values()) > self.limit and len(self.sizes) > 1:
            old, _ = self.sizes.popitem(last=False)
            os.remove(os.path.join(self.root, old + ".onnx"))
        return digest

    def locate(self, digest: str) -> str:
        if digest not in self.sizes:
            raise AgentError(f"unknown model {digest[:16]!r}", 409)
        self.sizes.move_to_end(digest)
        return os.path.join(self.root, digest + ".onnx")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --- HTTP server ----------------------------------------------------------------------------------------------
class AgentServer(HTTPServer):
    """One request at a time (timing must not share the device with another request)."""

    def __init__(self, address: tuple[str, int], *, token: str, threads: int, max_body: int, store: ModelStore):
        super().__init__(address, AgentHandler)
        self.expected = f"Bearer {token}".encode()
        self.threads = threads
        self.max_body = max_body
        self.store = store


class AgentHandler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = f"mixnas-agent/{AGENT_VERSION}"
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may idle: a stalled caller must not hold the one-request server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def _handle(self, method: str) -> None:
        given = self.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self.server.expected):
            self.close_connection = True  # the body, if any, is never read
            self._reply(401, {"error": "missing or wrong token (Authorization: Bearer <token>)"})
            return
        routes = {"/info": ("GET", self._info), "/models": ("POST", self._upload), "/measure": ("POST", self._measure)}
        path = self.path.split("?", 1)[0]
        if path not in routes:
            self.close_connection = True
            self._reply(404, {"error": f"no such path {path!r}; paths: {sorted(routes)}"})
            return
        allowed, action = routes[path]
        if method != allowed:
            self.close_connection = True
            self._reply(405, {"error": f"{path} takes {allowed}, got {method}"})
            return
        try:
            self._reply(200, action())
        except TimingError as exc:  # an AgentError, or a timing rule refusing a setting: the caller's input
            self._reply(getattr(exc, "status", 400), {"error": str(exc), **getattr(exc, "extra", {})})
        except Exception as exc:  # the agent must survive anything a request triggers; the caller gets the reason
            logger.exception("request %s %s failed", method, path)
            self._reply(500, {"error": f"internal error: {first_line(exc)}"})

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise AgentError("a Content-Length header is required", 411)
        if int(length) > self.server.max_body:
            self.close_connection = True
            raise AgentError(f"body of {int(length)} bytes is over the agent's limit of {self.server.max_body}", 413)
        return self.rfile.read(int(length))

    def _info(self) -> dict[str, Any]:
        self._body_if_any()
        return {**device_info(self.server.threads), "max_body": self.server.max_body}

    def _body_if_any(self) -> None:
        if self.headers.get("Content-Length", "0") != "0":
            self._body()

    def _upload(self) -> dict[str, Any]:
        return {"id": self.server.store.put(self._body(), self.server.threads)}

    def _measure(self) -> dict[str, Any]:
        data = self._body()
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AgentError(f"request body is not JSON ({first_line(exc)})") from None
        return measure_request(body, self.server.store.locate, self.server.threads,
                               close_in_child=(self.server.fileno(), self.connection.fileno()))

    def _reply(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        logger.info("%s %s", self.address_string(), format % args)


def read_token(path: str) -> str:
    """The token in ``path`` (surrounding whitespace dropped); the file must exist and not be empty."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentError(f"{path}: cannot read the token file ({getattr(exc, 'strerror', None) or exc})") from None
    if not token:
        raise AgentError(f"{path}: the token file is empty; put a long random secret in it")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s: the token file is readable by others; chmod 600 it", path)
    return token


def confine_temp(root: str) -> None:
    """Point every temporary-file location of the process (and of libraries it loads later) into ``root``.

    ONNX Runtime's telemetry writes a session file into ``$TMPDIR`` when it is imported; with this, that file
    too lands in the agent's own folder and goes when the folder is removed.
    """
    for name in ("TMPDIR", "TEMP", "TMP"):
        os.environ[name] = root
    tempfile.tempdir = root


def load_runtime() -> None:
    """Import onnxruntime now (after :func:`confine_temp`), with its telemetry events off where it has the switch."""
    ort = import_onnxruntime()
    if hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()


def serve(args: argparse.Namespace) -> int:
    token = read_token(args.token_file)
    store = ModelStore(args.store_mib << 20)
    confine_temp(store.root)
    try:
        load_runtime()
    except AgentError:
        store.close()
        raise
    try:
        server = AgentServer(
            (args.host, args.port), token=token, threads=args.threads, max_body=args.max_body_mib << 20, store=store
        )
    except OSError as exc:
        store.close()
        raise AgentError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    host, port = server.server_address[:2]
    print(f"mixnas agent {AGENT_VERSION} listening on http://{host}:{port}", flush=True)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        store.close()
    return 0


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)


# --- offline measurement --------------------------------------------------------------------------------------
def measure_dir(folder: str, out: str, threads: int) -> int:
    """Run every request of ``folder/manifest.json`` (written by ``mixnas latency export-layers``) into ``out``.

    The CSV is rewritten (atomically) after every request, so a killed run leaves the requests done so far.
    """
    manifest_path = os.path.join(folder, "manifest.json")
    if os.path.exists(out) and not os.path.isfile(out):  # os.replace would swap a device or FIFO for the CSV
        raise AgentError(f"{out}: not a regular file (a folder, device or FIFO); --out names the CSV to write")
    try:
        with open(manifest_path, "rb") as fh:
            raw = fh.read()
        manifest = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentError(f"{manifest_path}: cannot read the manifest ({first_line(exc)})") from None
    if not isinstance(manifest, Mapping) or manifest.get("format") != EXPORT_FORMAT:
        raise AgentError(f"{manifest_path}: not a mixnas latency export (format {EXPORT_FORMAT!r})")
    requests = manifest.get("requests")
    if not isinstance(requests, list) or not requests:
        raise AgentError(f"{manifest_path}: requests: expected a non-empty list")
    root = os.path.realpath(folder)

    def locate(name: str) -> str:
        path = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
            raise AgentError(f"{manifest_path}: model file {name!r} is not a file inside {folder}")
        return path

    header = [
        f"# {RESULTS_FORMAT} {AGENT_VERSION}",
        f"# manifest_sha256: {hashlib.sha256(raw).hexdigest()}",
        f"# device: {json.dumps(device_info(threads), sort_keys=True)}",
    ]
    rows: list[list[Any]] = []
    began = time.perf_counter()
    for i, request in enumerate(requests):
        try:
            answer = measure_request(request, locate, threads)
        except TimingError as exc:
            raise AgentError(f"{manifest_path}: requests[{i}]: {exc}") from None
        for key, s in answer["results"].items():
            halves = s["halves"] or ["", ""]
            rows.append([i, key, s["count"], *(s[f"{c}_ms"] for c in ("min", "p10", "median", "mean", "std", "iqr")),
                         *halves, answer["round_seconds"]])
        _write_results(out, header, rows)
        print(f"agent: {i + 1}/{len(requests)} requests ({time.perf_counter() - began:.0f} s)", file=sys.stderr,
              flush=True)
    return 0


def _write_results(out: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    buffer.write("\n".join(header) + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    writer.writerows(rows)
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(buffer.getvalue())
    os.replace(tmp, out)


# --- command line ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agent.py",
        description="mixnas latency agent: times ONNX models on this device for a mixnas latency table "
        "(needs numpy and onnxruntime only).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--token-file", help="file holding the secret token callers must send (required to serve)")
    p.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime threads for requests that do not say (mixnas asks for this many when its "
                   "--threads is not given; default 1)")
    p.add_argument("--max-body-mib", type=int, default=DEFAULT_MAX_BODY_MIB,
                   help=f"largest request body (default {DEFAULT_MAX_BODY_MIB} MiB)")
    p.add_argument("--store-mib", type=int, default=DEFAULT_STORE_MIB,
                   help=f"uploaded models kept in the temporary folder (default {DEFAULT_STORE_MIB} MiB)")
    p.add_argument("--measure-dir", help="offline: time the models of an export folder (mixnas latency export-layers)")
    p.add_argument("--out", help="offline: results CSV to write")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="agent: %(message)s")
    try:
        check_count("--threads", args.threads, 1, 1024)
        check_count("--max-body-mib", args.max_body_mib, 1, 1 << 20)
        check_count("--store-mib", args.store_mib, 1, 1 << 30)
        if args.measure_dir:
            if not args.out:
                raise AgentError("--measure-dir needs --out results.csv")
            root = tempfile.mkdtemp(prefix="mixnas-agent-")
            try:
                confine_temp(root)
                load_runtime()
                return measure_dir(args.measure_dir, args.out, args.threads)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        if not args.token_file:
            raise AgentError("serving needs --token-file FILE (a file holding a secret token)")
        return serve(args)
    except TimingError as exc:
        print(f"agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
