"""The offline path to a device's latency table: export the models, time them there, import the results.

For a device that cannot serve HTTP (no network, a locked-down board), ``mixnas latency export-layers`` writes a
folder that holds everything a profile would send to an agent: the ONNX model of every part (keyed by
signature), of the reference network and of the calibration networks, and ``manifest.json``, the list of
measure requests in the agent's own format (``agent.parse_request``, with file names in place of model ids).
``python agent.py --measure-dir DIR --out results.csv`` runs those requests on the device, one after the other,
with the same measurement rules; ``mixnas latency import-results DIR results.csv --out lut.json`` turns the
results into a table the way ``profile`` does: the reference network's first measurement is the drift baseline,
every profiling chunk is rescaled by its anchors (else the reference timed beside it), signatures met in several
networks of a chunk pool their runs, an entry is the median over every chunk that timed its signature, and the
calibration is fitted on the calibration networks' end-to-end latencies.

Requests, in order: ``reference`` (the baseline, ``3 * repeats`` runs; only with drift correction), then
``profile`` chunks (context networks part by part), then ``calibrate`` chunks (whole networks).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.agent import EXPORT_FORMAT, RESULT_COLUMNS, RESULTS_FORMAT
from mixnas.evaluators.latency.backends import BACKENDS, convert_pipeline, get_backend
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import (
    DEFAULT_ROUNDS,
    REFERENCE_ARCH,
    MeasureConfig,
    Measurement,
    Pipeline,
    check_positive,
    network_spec,
    reference_spec,
    timing_settings,
    with_reference_for,
)
from mixnas.evaluators.latency.profile import (
    DEFAULT_CHUNK,
    chunk_drift,
    context_pipeline,
    select_contexts,
    store_calibration,
    store_measured,
)
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.search_space.arch import Architecture
from mixnas.textio import os_reason, output_folder, read_bytes, read_text, write_json_atomic

EXPORT_VERSION = 1
CALIBRATION_CHUNK = 25


def models_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` (made if needed) with a ``models/`` subfolder for an export; one error where it cannot be."""
    root = output_folder(folder, LatencyTableError)
    output_folder(root / "models", LatencyTableError)
    return root


def export_layers(
    folder: str | os.PathLike[str],
    archs: Sequence[Architecture],
    calibration: Sequence[Architecture],
    config: MeasureConfig,
    *,
    rounds: int = DEFAULT_ROUNDS,
    chunk: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Write the models and ``manifest.json`` that profile ``archs`` and calibrate on ``calibration``; the manifest.

    ``config`` must name a backend whose files the agent runs (:attr:`~.backends.Backend.agent`: ``onnxruntime``,
    float32 or int8) on the CPU.
    """
    backend = get_backend(config.backend)
    if not backend.agent or config.device != "cpu":
        usable = [b.name for b in BACKENDS.values() if b.agent]
        raise LatencyTableError(f"export-layers writes model files for a device: use --backend {' or '.join(usable)} "
                                f"(CPU), not {config.backend!r} on {config.device!r}")
    check_positive("chunk", chunk)
    check_positive("rounds", rounds)
    root = models_folder(folder)
    config = with_reference_for(config, [*archs, *calibration])
    reference = reference_spec(config)
    contexts = select_contexts(LatencyTable(config.backend, config.threads, config.batch_size,
                                            precision=config.precision), [*archs, *calibration])
    requests: list[dict[str, Any]] = []
    kinds: list[str] = []
    files: dict[str, str] = {}
    if config.drift_correction:
        requests.append(_request([[reference]], replace(config, repeats=3 * config.repeats), rounds, files, root))
        kinds.append("reference")
    extra = [[reference]] if config.drift_correction else []
    for start in range(0, len(contexts), chunk):
        pipelines = [context_pipeline(a, config.batch_size) for a in contexts[start:start + chunk]]
        requests.append(_request([*pipelines, *extra], config, rounds, files, root))
        kinds.append("profile")
    for start in range(0, len(calibration), CALIBRATION_CHUNK):
        part = calibration[start:start + CALIBRATION_CHUNK]
        nets = [[network_spec(a, config.batch_size, key=f"net{i}:{a.id}")] for i, a in enumerate(part, start)]
        requests.append(_request([*nets, *extra], config, rounds, files, root))
        kinds.append("calibrate")
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "requests": requests,
        "mixnas": {
            "config": asdict(config),
            "kinds": kinds,
            "reference_key": reference.key,
            "calibration": [a.to_dict() for a in calibration],
            "signatures": len({s for a in [*archs, *calibration] for s in arch_signatures(a)}),
            "networks": len(contexts),
        },
    }
    try:
        write_json_atomic(root / "manifest.json", manifest, indent=1, sort_keys=False)
    except OSError as exc:
        raise LatencyTableError(f"{root}: cannot write the manifest ({os_reason(exc)})") from None
    return manifest


def _request(
    pipelines: Sequence[Pipeline], config: MeasureConfig, rounds: int, files: dict[str, str], root: Path
) -> dict[str, Any]:
    """One measure request; writes the model of every stage key not written yet (``files``: key -> name)."""
    suffix = get_backend(config.backend).file_suffix
    for pipeline in pipelines:
        for spec, model in convert_pipeline(pipeline, config, skip=set(files)):
            name = f"models/{len(files):05d}{suffix}"
            try:
                (root / name).write_bytes(model)
            except OSError as exc:
                raise LatencyTableError(f"{root / name}: cannot write the model ({os_reason(exc)})") from None
            files[spec.key] = name
    keys = {s.key for p in pipelines for s in p}
    return {
        "settings": asdict(timing_settings(config, rounds)),
        "models": {k: files[k] for k in sorted(keys)},
        "pipelines": [{"input_shape": list(p[0].input_shape), "stages": [s.key for s in p]} for p in pipelines],
    }


def read_results(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[int, dict[str, Measurement]]]:
    """The ``# key: value`` header lines and the measurements (request index -> key -> measurement) of a CSV."""
    text = read_text(path, LatencyTableError)
    header: dict[str, str] = {}
    lines = text.splitlines()
    first = f"# {RESULTS_FORMAT} "
    if not lines or not lines[0].startswith(first):
        raise LatencyTableError(f"{path}: not the results of python agent.py --measure-dir (first line {first}N)")
    header["version"] = lines[0][len(first):].strip()
    body = []
    for line in lines[1:]:
        if line.startswith("# "):
            key, _, value = line[2:].partition(": ")
            header[key] = value
        elif line.strip():
            body.append(line)
    rows = list(csv.reader(io.StringIO("\n".join(body))))
    if not rows or tuple(rows[0]) != RESULT_COLUMNS:
        raise LatencyTableError(f"{path}: expected the columns {','.join(RESULT_COLUMNS)}")
    results: dict[int, dict[str, Measurement]] = {}
    for n, row in enumerate(rows[1:], start=2):
        where = f"{path}: data row {n - 1}"
        if len(row) != len(RESULT_COLUMNS):
            raise LatencyTableError(f"{where}: expected {len(RESULT_COLUMNS)} fields, got {len(row)}")
        cells = dict(zip(RESULT_COLUMNS, row))
        summary: dict[str, Any] = {f"{c}_ms": cells[f"{c}_ms"] for c in ("min", "p10", "median", "mean", "std", "iqr")}
        summary["count"] = cells["count"]
        summary["halves"] = [cells["even_ms"], cells["odd_ms"]] if cells["odd_ms"] else None
        if not cells["request"].isdigit():
            raise LatencyTableError(f"{where}: request: expected a request number, got {cells['request']!r}")
        results.setdefault(int(cells["request"]), {})[cells["key"]] = Measurement.from_summary(summary, where)
    return header, results


def import_results(folder: str | os.PathLike[str], results: str | os.PathLike[str]) -> LatencyTable:
    """The latency table an export folder's results describe (see the module docstring)."""
    manifest_path = Path(folder) / "manifest.json"
    raw = read_bytes(manifest_path, LatencyTableError)
    try:
        manifest = json.loads(raw)
        meta = manifest["mixnas"]
        config = MeasureConfig(**meta["config"])
        kinds = list(meta["kinds"])
        archs = [Architecture.from_dict(a) for a in meta["calibration"]]
        requests = manifest["requests"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LatencyTableError(f"{manifest_path}: not a manifest of mixnas latency export-layers ({exc})") from None
    header, measured = read_results(results)
    if header.get("manifest_sha256") != hashlib.sha256(raw).hexdigest():
        raise LatencyTableError(f"{results}: measured from another manifest than {manifest_path}; run the agent on "
                                "this folder again")
    missing = [i for i in range(len(requests)) if i not in measured]
    if missing:
        raise LatencyTableError(f"{results}: holds {len(requests) - len(missing)} of the {len(requests)} requests "
                                f"(the agent stopped before request {missing[0]}); run it to the end")
    for i, request in enumerate(requests):
        absent = sorted(set(request.get("models", {})) - set(measured[i]))
        if absent:
            raise LatencyTableError(f"{results}: request {i} lacks the results of {absent[0]!r}")
    return _table(config, header, kinds, requests, measured, meta["reference_key"], archs)


def _table(
    config: MeasureConfig,
    header: dict[str, str],
    kinds: list[str],
    requests: list[dict[str, Any]],
    measured: dict[int, dict[str, Measurement]],
    reference_key: str,
    calibration: list[Architecture],
) -> LatencyTable:
    try:
        device = json.loads(header.get("device", "{}"))
    except ValueError:
        device = {}
    device = {**(device if isinstance(device, dict) else {}), "measured_by": "agent offline (--measure-dir)"}
    device.pop("threads", None)
    settings: dict[str, Any] = config.to_dict()
    baseline = None
    if kinds and kinds[0] == "reference":
        baseline = measured[0][reference_key].value(config.statistic)
        settings.update(reference_arch=REFERENCE_ARCH, reference_ms=baseline)
    table = LatencyTable(config.backend, config.threads, config.batch_size, device=device, settings=settings,
                         precision=config.precision)
    cal_ms: list[float] = []
    for i, kind in enumerate(kinds):
        got = dict(measured[i])
        drift = 1.0 if baseline is None else baseline / got.pop(reference_key).value(config.statistic)
        if kind == "profile":
            if baseline is not None:
                drift = chunk_drift(table, got, drift, config.statistic)
            store_measured(table, got, drift, None, config.statistic, pool=True)  # as `latency profile` does
        elif kind == "calibrate":
            keys = [p["stages"][0] for p in requests[i]["pipelines"] if p["stages"][0] != reference_key]
            cal_ms.extend(got[k].value(config.statistic, corrected=False) * drift for k in keys)
    if calibration:
        store_calibration(table, calibration, cal_ms)
    return table
