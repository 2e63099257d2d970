"""The latency lookup table (LUT): per-signature latencies of one device, backend, thread count and batch size.

On disk it is one JSON document (``format_version`` 2; 3 for a table whose entries come from several devices:
it adds ``devices``; 4 for a table with entries timed in several contexts: it adds their ``timings`` and allows
``devices``; 5 for a table of a precision other than float32: it adds ``precision``, e.g. ``"int8"``; version 1
files, whose calibration has no per-part term, are still read), written
atomically (temporary file, then ``os.replace``) so an interrupted profiling run leaves either the old or the
new table, never a torn one::

    {
      "format": "mixnas-latency-lut",
      "format_version": 2,
      "signature_version": 1,
      "backend": "torch", "threads": 1, "batch_size": 1,
      "device": {"cpu": "AMD EPYC", "platform": "...", "torch": "2.13.0+cpu", ...},
      "settings": {"warmup": 10, "repeats": 50, "channels_last": true, ...},
      "entries": {"mb_r16_i16_...": {"ms": 0.21, "mean_ms": 0.22, "std_ms": 0.01, "count": 50, "source": "measured"}},
      "calibration": {"model": "scale+offset+parts", "scale": 1.0, "offset_ms": 0.01, "per_part_ms": -0.004,
                      "loo_rmspe_pct": 2.1, "n": 30, "points": [...]} or null
    }

``device`` is the device that measured the table (this machine, or the agent's ``/info`` with ``measured_by``
naming it); ``devices`` (version 3) lists every device whose measurements a merged table holds, ``device``
first.

``ms`` is the value the predictor adds up: the table's statistic (``settings.statistic``, by default the least
of the runs) for measured entries, the mean for imported ones.
Entries are keyed by :mod:`~mixnas.evaluators.latency.signatures` strings. :meth:`LatencyTable.from_csv` imports a
table measured with another tool (see ``docs/latency.md`` for the CSV format).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.signatures import SIGNATURE_PATTERN, SIGNATURE_VERSION
from mixnas.textio import exclusive_lock, os_reason, path_kind, read_json, read_text, write_json_atomic

logger = logging.getLogger(__name__)

LUT_FORMAT = "mixnas-latency-lut"
LUT_FORMAT_VERSION = 2
MULTI_DEVICE_FORMAT_VERSION = 3  # written only when ``devices`` names more than the measuring device
TIMINGS_FORMAT_VERSION = 4  # written only when an entry keeps ``timings`` (it also allows ``devices``)
PRECISION_FORMAT_VERSION = 5  # written only for a precision other than float32 (it adds ``precision``)
READABLE_FORMAT_VERSIONS = (1, 2, 3, 4, 5)
DEFAULT_PRECISION = "float32"  # what a table without ``precision`` (format_version <= 4) was measured in
# What a table is *of*: never mixed, not even by merge(force=True).
# ``folded_batch_norms``: the converted networks had their batch norms folded into the convolutions first
# (:func:`mixnas.models.folding.fold_batch_norms`; absent in tables made before, whose converted parts kept a float
# batch norm after every MixConv with several groups and grouped 1x1 convolution).
KIND_KEYS = ("backend", "precision", "folded_batch_norms")
FOLDED_HINT = ("; a table without folded_batch_norms was measured by a mixnas before batch norms were folded "
               "before conversion: profile it again")
# ``input_variants``: how many inputs a measurement rotated (``backends.InputRotation``; 1: one repeated input, all
# tables before LiteRT's rotation). A condition: a table takes no measurements of another, merge(force=True) may mix.
ROTATION_HINT = ("; a litert table without input_variants was timed on one repeated input, which LiteRT runs faster "
                 "than new frames: profile it again")
_HINTS = {"folded_batch_norms": FOLDED_HINT, "input_variants": ROTATION_HINT}


def condition_hint(differing: Sequence[str]) -> str:
    """What to do about the conditions in ``differing`` that only an older mixnas produced ("" for the others)."""
    return "".join(hint for key, hint in _HINTS.items() if key in differing)
# Device fields that must agree for two tables (or a table and a measurement) to describe the same hardware.
DEVICE_KEYS = ("cpu", "accelerator")
CSV_COLUMNS = ("signature", "mean_ms", "std_ms", "count")
_TOP_KEYS = {
    "format",
    "format_version",
    "signature_version",
    "backend",
    "threads",
    "batch_size",
    "precision",
    "device",
    "devices",
    "settings",
    "entries",
    "calibration",
}
_ENTRY_KEYS = {"ms", "mean_ms", "std_ms", "count", "source", "timings"}


@dataclass(frozen=True)
class Entry:
    """Latency of one signature.

    Attributes:
        ms: the value the predictor sums (the table's statistic if measured here, the mean if imported).
        mean_ms: mean over the timed runs.
        std_ms: standard deviation over the timed runs.
        count: number of timed runs.
        source: ``measured`` or ``csv`` (or ``merged``).
        timings: for a signature timed in several contexts (networks) by ``latency profile``, one value per
            context (rescaled to the table's speed), of which ``ms`` is the median; empty when there is one.
            Kept in the file so that a later or resumed profile pools its new contexts with all of these.
    """

    ms: float
    mean_ms: float
    std_ms: float = 0.0
    count: int = 1
    source: str = "measured"
    timings: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ms": self.ms,
            "mean_ms": self.mean_ms,
            "std_ms": self.std_ms,
            "count": self.count,
            "source": self.source,
        }
        if self.timings:
            data["timings"] = list(self.timings)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Entry:
        if not isinstance(data, Mapping):
            raise LatencyTableError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - _ENTRY_KEYS)
        if unknown:
            raise LatencyTableError(f"{where}: unknown keys {unknown}; allowed: {sorted(_ENTRY_KEYS)}")
        mean = _number(data.get("mean_ms", data.get("ms")), f"{where}.mean_ms")
        entry = cls(
            ms=_number(data.get("ms", mean), f"{where}.ms"),
            mean_ms=mean,
            std_ms=_number(data.get("std_ms", 0.0), f"{where}.std_ms", allow_zero=True),
            count=_count(data.get("count", 1), f"{where}.count"),
            source=str(data.get("source", "measured")),
            timings=_timings(data.get("timings", []), f"{where}.timings"),
        )
        return entry


# Calibration models: the terms of ``measured ~= scale * summed + offset + per_part * parts`` each one fits ("" in a
# table of a mixnas from before the models were named).
CALIBRATION_MODELS = {
    "scale": ("scale",),
    "scale+offset": ("scale", "offset"),
    "scale+parts": ("scale", "parts"),
    "scale+offset+parts": ("scale", "offset", "parts"),
}
MAX_ENTRY_MS = 1e6  # one part for more than a quarter of an hour: a corrupt or hand-edited table


@dataclass(frozen=True)
class Calibration:
    """``measured ~= scale * sum(entries) + offset_ms + per_part_ms * parts``, fitted on end-to-end measurements.

    ``parts`` is the number of signatures of the architecture (stem, block repeats, head, classifier): parts are
    timed one call each, the network in one call, so every part carries a call overhead the network pays once
    (large for ONNX Runtime, one session per part). ``model`` names the terms the fit kept (``scale``,
    ``scale+offset``, ``scale+parts``, ``scale+offset+parts``; chosen by leave-one-out error) and
    ``loo_rmspe_pct`` is that leave-one-out relative error (percent), the calibration's own measured error.

    ``points`` keeps the data of the fit, ``(arch_id, summed_ms, measured_ms)``, so the fit can be redone and the
    architectures excluded from validation. ``archs`` holds the calibration architectures themselves (their
    JSON, aligned with ``points``; empty for tables that did not store them), so that validation can time them
    again as drift references and the per-part term can be refitted.
    """

    scale: float
    offset_ms: float
    points: tuple[tuple[str, float, float], ...] = ()
    archs: tuple[dict[str, Any], ...] = ()
    per_part_ms: float = 0.0
    model: str = ""
    loo_rmspe_pct: float | None = None

    def apply(self, summed_ms: float, parts: int) -> float:
        """The calibrated latency of a network whose ``parts`` entries sum to ``summed_ms``."""
        return self.scale * summed_ms + self.offset_ms + self.per_part_ms * parts

    def describe(self) -> str:
        """One line: the fitted formula, the model and its leave-one-out error."""
        text = f"measured = {self.scale:.4f} x LUT sum {self.offset_ms:+.4f} ms"
        if self.per_part_ms:
            text += f" {self.per_part_ms:+.4f} ms x parts"
        loo = f", leave-one-out RMSPE {self.loo_rmspe_pct:.1f}%" if self.loo_rmspe_pct is not None else ""
        return f"{text} ({self.model or 'scale+offset'}{loo}, n={len(self.points)})"

    def to_dict(self) -> dict[str, Any]:
        points = []
        for i, (a, s, m) in enumerate(self.points):
            point: dict[str, Any] = {"arch_id": a, "summed_ms": s, "measured_ms": m}
            if i < len(self.archs):
                point["arch"] = self.archs[i]
            points.append(point)
        return {
            "model": self.model,
            "scale": self.scale,
            "offset_ms": self.offset_ms,
            "per_part_ms": self.per_part_ms,
            "loo_rmspe_pct": self.loo_rmspe_pct,
            "n": len(self.points),
            "points": points,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Calibration:
        if not isinstance(data, Mapping):
            raise LatencyTableError(f"{where}: expected an object or null, got {type(data).__name__}")
        points_raw = data.get("points", [])
        if not isinstance(points_raw, list):
            raise LatencyTableError(f"{where}.points: expected a list")
        points = []
        archs = []
        for i, p in enumerate(points_raw):
            if not isinstance(p, Mapping) or not {"arch_id", "summed_ms", "measured_ms"} <= set(p):
                raise LatencyTableError(f"{where}.points[{i}]: expected an object with arch_id, summed_ms, measured_ms")
            points.append(
                (
                    str(p["arch_id"]),
                    _number(p["summed_ms"], f"{where}.points[{i}].summed_ms"),
                    _number(p["measured_ms"], f"{where}.points[{i}].measured_ms"),
                )
            )
            if isinstance(p.get("arch"), Mapping):
                archs.append(dict(p["arch"]))
        if archs and len(archs) != len(points):
            raise LatencyTableError(f"{where}.points: either every point or none has an 'arch'")
        scale = _number(data.get("scale"), f"{where}.scale")
        offset = _finite(data.get("offset_ms"), f"{where}.offset_ms")
        per_part = _finite(data.get("per_part_ms", 0.0), f"{where}.per_part_ms")
        loo = data.get("loo_rmspe_pct")
        model = data.get("model", "")
        if model != "" and model not in CALIBRATION_MODELS:
            raise LatencyTableError(f"{where}.model: expected one of {list(CALIBRATION_MODELS)}, got {model!r}")
        return cls(
            scale=scale,
            offset_ms=offset,
            points=tuple(points),
            archs=tuple(archs),
            per_part_ms=per_part,
            model=model,
            loo_rmspe_pct=None if loo is None else _number(loo, f"{where}.loo_rmspe_pct", allow_zero=True),
        )


def _check_header(data: Any, source: str) -> int:
    """The format version of a table's JSON, after its format, version and signature version are checked."""
    if not isinstance(data, Mapping):
        raise LatencyTableError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != LUT_FORMAT:
        raise LatencyTableError(
            f"{source}: not a mixnas latency table (format {data.get('format')!r}, expected {LUT_FORMAT!r})"
        )
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
        raise LatencyTableError(
            f"{source}: unknown format_version {version!r}; this mixnas reads {list(READABLE_FORMAT_VERSIONS)}"
        )
    sig_version = data.get("signature_version")
    if sig_version != SIGNATURE_VERSION:
        raise LatencyTableError(
            f"{source}: signature_version {sig_version!r} does not match this mixnas ({SIGNATURE_VERSION}); "
            "re-profile the table"
        )
    return int(version)


def _timings(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) == 1:
        raise LatencyTableError(f"{where}: expected a list of two or more latencies in ms, got {value!r}")
    return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LatencyTableError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _number(value: Any, where: str, *, allow_zero: bool = False, high: float = MAX_ENTRY_MS) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero) or value > high:
        expected = f"a finite number {'>=' if allow_zero else '>'} 0 and at most {high:g}"
        raise LatencyTableError(f"{where}: expected {expected}, got {value!r}")
    return float(value)


_MAX_COUNT = 10**12  # threads, batch size, repeat counts: anything larger is a corrupt file


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNT:
        raise LatencyTableError(f"{where}: expected a positive integer up to {_MAX_COUNT}, got {value!r}")
    return value


@dataclass
class LatencyTable:
    """Per-signature latencies with the conditions they were measured under.

    Mutable on purpose: profiling fills ``entries`` incrementally and saves after every batch of signatures.
    """

    backend: str
    threads: int
    batch_size: int
    device: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    calibration: Calibration | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        if not self.devices or self.devices[0] != self.device:
            self.devices = [self.device, *(d for d in self.devices if d != self.device)]

    def describe_device(self) -> str:
        """``"AMD EPYC (this machine)"`` / ``"Cortex-A76 (agent http://pi:8765)"``: who measured the table."""
        by = self.device.get("measured_by", "this machine")
        return f"{self.device.get('cpu', 'unknown cpu')} ({by})"

    # --- lookup ---------------------------------------------------------------------------------------------
    def __contains__(self, signature: object) -> bool:
        return signature in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def missing(self, signatures: Iterable[str]) -> list[str]:
        """The distinct signatures not in the table, in first-seen order."""
        seen: dict[str, None] = {}
        for s in signatures:
            if s not in self.entries:
                seen.setdefault(s, None)
        return list(seen)

    def condition(self) -> dict[str, Any]:
        """What must match for two tables to be comparable: backend, precision, threads, batch, clock, statistic,
        whether batch norms were folded before conversion, how many inputs a measurement rotated, device."""
        return {
            "backend": self.backend,
            "precision": self.precision,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "clock": self.settings.get("clock"),
            "statistic": self.settings.get("statistic"),
            "folded_batch_norms": bool(self.settings.get("folded_batch_norms", False)),
            "input_variants": int(self.settings.get("input_variants", 1)),
            **{k: self.device.get(k) for k in DEVICE_KEYS},
        }

    # --- merge ----------------------------------------------------------------------------------------------
    def merge(self, other: LatencyTable, *, force: bool = False) -> LatencyTable:
        """A new table with the entries of both.

        Tables of different backends, thread counts, batch sizes or devices describe different hardware
        conditions and are refused unless ``force``, as are drift-corrected tables whose reference networks
        ran at different resolutions (each table's entries are rescaled to its own reference). A signature in
        both gets pooled statistics (count-weighted mean and central value, pooled variance). The calibration is
        kept from ``self`` (else ``other``); calibrate again (``latency profile --calibrate``) after merging
        tables measured at different times.
        """
        mine, theirs = self.condition(), other.condition()
        differing = [k for k in mine if mine[k] != theirs[k]]
        kind = [k for k in KIND_KEYS if k in differing]
        if kind:  # a float32 entry in an int8 table (or an ONNX Runtime one in a torch table) is simply wrong
            details = ", ".join(f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in kind)
            raise LatencyTableError(f"refusing to merge latency tables of different {' and '.join(kind)} ({details}); "
                                    "a table holds one backend, one precision and one conversion"
                                    + condition_hint(kind))
        if "reference_ms" in self.settings and "reference_ms" in other.settings:  # each rescaled to its reference
            key = "reference_resolution"
            mine[key], theirs[key] = self.settings.get(key), other.settings.get(key)
            differing += [key] if mine[key] != theirs[key] else []
        if differing and not force:
            details = ", ".join(f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in differing)
            raise LatencyTableError(
                f"refusing to merge latency tables measured under different conditions ({details}); "
                "use force to merge anyway" + condition_hint(differing)
            )
        entries = dict(self.entries)
        for sig, entry in other.entries.items():
            entries[sig] = pool_entries(entries[sig], entry) if sig in entries else entry
        return LatencyTable(
            backend=self.backend,
            threads=self.threads,
            batch_size=self.batch_size,
            device=dict(self.device),
            settings=dict(self.settings),
            entries=entries,
            calibration=self.calibration or other.calibration,
            devices=[*self.devices, *(d for d in other.devices if d not in self.devices)],
            precision=self.precision,
        )

    # --- JSON -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self.__post_init__()  # ``device`` may have been replaced since
        several = len(self.devices) > 1
        version = MULTI_DEVICE_FORMAT_VERSION if several else LUT_FORMAT_VERSION
        if any(e.timings for e in self.entries.values()):  # older readers would refuse the key: say so by version
            version = TIMINGS_FORMAT_VERSION
        if self.precision != DEFAULT_PRECISION:
            version = PRECISION_FORMAT_VERSION
        data: dict[str, Any] = {
            "format": LUT_FORMAT,
            "format_version": version,
            "signature_version": SIGNATURE_VERSION,
            "backend": self.backend,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "device": self.device,
        }
        if self.precision != DEFAULT_PRECISION:  # older readers would take the table for float32: say so by version
            data["precision"] = self.precision
        if several:  # version 2 readers would refuse the key; one device is what version 2 already says
            data["devices"] = self.devices
        return {
            **data,
            "settings": self.settings,
            "entries": {sig: self.entries[sig].to_dict() for sig in sorted(self.entries)},
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> LatencyTable:
        version = _check_header(data, source)
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise LatencyTableError(f"{source}: unknown keys {unknown}; allowed: {sorted(_TOP_KEYS)}")
        backend = data.get("backend")
        if not isinstance(backend, str) or not backend:
            raise LatencyTableError(f"{source}: backend: expected a non-empty string, got {backend!r}")
        precision = data.get("precision", DEFAULT_PRECISION)
        if "precision" in data and version < PRECISION_FORMAT_VERSION:
            raise LatencyTableError(f"{source}: precision: only in format_version {PRECISION_FORMAT_VERSION}")
        if precision not in ("float32", "int8"):
            raise LatencyTableError(f"{source}: precision: expected 'float32' or 'int8', got {precision!r}")
        for key in ("device", "settings"):
            if not isinstance(data.get(key, {}), Mapping):
                raise LatencyTableError(f"{source}: {key}: expected an object")
        devices = data.get("devices", [])
        if "devices" in data and version < MULTI_DEVICE_FORMAT_VERSION:
            raise LatencyTableError(f"{source}: devices: only in format_version {MULTI_DEVICE_FORMAT_VERSION}")
        if not isinstance(devices, list) or not all(isinstance(d, Mapping) for d in devices):
            raise LatencyTableError(f"{source}: devices: expected a list of objects")
        entries_raw = data.get("entries")
        if not isinstance(entries_raw, Mapping):
            raise LatencyTableError(f"{source}: entries: expected an object mapping signatures to latencies")
        bad = next((sig for sig in entries_raw if not SIGNATURE_PATTERN.match(str(sig))), None)
        if bad is not None:
            raise LatencyTableError(f"{source}: entries[{str(bad)[:80]!r}]: not a layer signature of this mixnas "
                                    "(stem_r..., mb_r..., head_r... or fc_i...)")
        entries = {str(sig): Entry.from_dict(e, f"{source}: entries[{sig!r}]") for sig, e in entries_raw.items()}
        with_timings = next((sig for sig, e in entries.items() if e.timings), None)
        if with_timings is not None and version < TIMINGS_FORMAT_VERSION:
            raise LatencyTableError(
                f"{source}: entries[{with_timings!r}].timings: only in format_version {TIMINGS_FORMAT_VERSION}"
            )
        calibration_raw = data.get("calibration")
        calibration = (
            None if calibration_raw is None else Calibration.from_dict(calibration_raw, f"{source}: calibration")
        )
        return cls(
            backend=backend,
            threads=_count(data.get("threads"), f"{source}: threads"),
            batch_size=_count(data.get("batch_size"), f"{source}: batch_size"),
            device=dict(data.get("device", {})),
            settings=dict(data.get("settings", {})),
            entries=entries,
            calibration=calibration,
            devices=[dict(d) for d in devices],
            precision=precision,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table atomically (temporary file in the same folder, then ``os.replace``)."""
        try:
            write_json_atomic(Path(path), self.to_dict(), indent=1, sort_keys=False)
        except OSError as exc:
            raise LatencyTableError(f"{path}: cannot write the latency table ({os_reason(exc)})") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        path = Path(path)
        if path_kind(path) is None:
            raise LatencyTableError(f"{path}: no such latency table")
        return cls.from_dict(read_json(path, LatencyTableError), str(path))

    # --- CSV ------------------------------------------------------------------------------------------------
    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        backend: str,
        threads: int = 1,
        batch_size: int = 1,
        device: Mapping[str, Any] | None = None,
        precision: str = DEFAULT_PRECISION,
    ) -> LatencyTable:
        """Import a table measured with another tool (in ``precision``: ``float32`` or ``int8``).

        The CSV has a header row with ``signature,mean_ms,std_ms`` and optionally ``count`` (any order; other
        columns are an error). ``mean_ms`` must be > 0, ``std_ms`` >= 0 (may be empty: 0), ``count`` a positive
        integer (default 1). A signature may appear once only.
        """
        path = Path(path)
        if path_kind(path) is None:
            raise LatencyTableError(f"{path}: no such CSV file")
        text = read_text(path, LatencyTableError)
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            raise LatencyTableError(f"{path}: not a readable CSV file ({exc})") from None
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        if not rows:
            raise LatencyTableError(f"{path}: empty CSV; expected a header {','.join(CSV_COLUMNS)}")
        header = [h.strip() for h in rows[0]]
        required = {"signature", "mean_ms", "std_ms"}
        if not required <= set(header) or not set(header) <= set(CSV_COLUMNS) or len(set(header)) != len(header):
            raise LatencyTableError(
                f"{path}: header {header}: expected columns signature, mean_ms, std_ms and optionally count"
            )
        entries: dict[str, Entry] = {}
        for line, row in enumerate(rows[1:], start=2):
            sig, entry = _csv_entry(row, header, f"{path}:{line}")
            if sig in entries:
                raise LatencyTableError(f"{path}:{line}: duplicate signature {sig!r}")
            entries[sig] = entry
        return cls(
            backend=backend,
            threads=threads,
            batch_size=batch_size,
            device=dict(device or {}),
            settings={"imported_from": path.name},
            entries=entries,
            precision=precision,
        )


def _csv_entry(row: list[str], header: list[str], where: str) -> tuple[str, Entry]:
    """The signature and entry of one CSV data row; ``where`` is ``file:line`` for errors."""
    if len(row) != len(header):
        raise LatencyTableError(f"{where}: expected {len(header)} fields, got {len(row)}")
    cells = {h: c.strip() for h, c in zip(header, row)}
    sig = cells["signature"]
    if not sig:
        raise LatencyTableError(f"{where}: empty signature")
    mean = _number(_parse_float(cells["mean_ms"], f"{where}: mean_ms"), f"{where}: mean_ms")
    std = _number(_parse_float(cells["std_ms"] or "0", f"{where}: std_ms"), f"{where}: std_ms", allow_zero=True)
    count = 1
    if cells.get("count"):
        try:
            count = int(cells["count"])
        except ValueError:
            raise LatencyTableError(f"{where}: count: expected an integer, got {cells['count']!r}") from None
        _count(count, f"{where}: count")
    return sig, Entry(ms=mean, mean_ms=mean, std_ms=std, count=count, source="csv")


def _parse_float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LatencyTableError(f"{where}: expected a number, got {text!r}") from None


def pool_entries(a: Entry, b: Entry) -> Entry:
    """Combine two entries of one signature as if their runs had been one sample (count-weighted, ``merged``)."""
    n = a.count + b.count
    mean = (a.count * a.mean_ms + b.count * b.mean_ms) / n
    ms = (a.count * a.ms + b.count * b.ms) / n
    ss = sum(
        (e.count - 1) * e.std_ms**2 + e.count * (e.mean_ms - mean) ** 2 for e in (a, b)
    )
    std = math.sqrt(ss / (n - 1)) if n > 1 else 0.0
    return Entry(ms=ms, mean_ms=mean, std_ms=std, count=n, source="merged")


@contextlib.contextmanager
def locked_table(path: str | os.PathLike[str]) -> Iterator[LatencyTable]:
    """The table at ``path`` as it is now, read while holding an exclusive lock on ``<path>.lock``.

    For read-modify-write by several processes at once (search workers adding the signatures they measured):
    read, change and :meth:`LatencyTable.save` inside the ``with`` block, and no other process's additions are
    lost. The lock file stays (empty); removing it would let a third process lock a different file of the same
    name. Without ``fcntl`` (not a POSIX system) there is no lock: concurrent writers may drop each other's
    entries (never tear the file, which is written atomically).
    """
    with exclusive_lock(path, "adding to it"):
        yield LatencyTable.load(path)


def lut_sum(table: LatencyTable, signatures: Sequence[str], *, calibrated: bool = True) -> tuple[float, float]:
    """Predicted latency in ms and its standard deviation for a network made of parts with ``signatures``.

    The model of the module docstring; ``calibrated=False`` gives the plain sum. Raises ``KeyError`` with the
    first signature the table lacks (:meth:`~mixnas.evaluators.latency.predictor.LatencyPredictor.predict` turns it into an error for people).
    """
    entries = table.entries
    total = 0.0
    var = 0.0
    for sig in signatures:
        entry = entries[sig]
        total += entry.ms
        var += entry.std_ms * entry.std_ms
    cal = table.calibration
    if cal is None or not calibrated:
        return total, math.sqrt(var)
    return cal.apply(total, len(signatures)), cal.scale * math.sqrt(var)
