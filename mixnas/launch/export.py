"""Export the best (top-k) or Pareto-optimal architectures of a run.

For each selected trial, a folder ``NN_trialTTTTT/`` under the export directory holds, as asked by ``formats``:

* ``tf.txt``: a ``# mixnas:`` line of global settings (resolution, classes, stem, head, multipliers, dropout),
  then the block strings in the official TF MixNet grammar, one per line: ``mixnas build "$(cat tf.txt)"`` (or
  ``mixnas build tf.txt``) rebuilds exactly the trial's network; the TF code reads the strings (the header is a
  comment);
* ``timm.txt``: the same settings for timm (the width multiplier folded into the widths and the stem), then one
  timm *stage* per line, or a line saying why timm cannot express it (e.g. a feature timm's builder lacks); the
  export goes on;
* ``arch.json``: the architecture record with its global settings (``mixnas build arch.json`` reads it), the
  trial's metrics, and the timm stages when there are any;
* ``model.onnx``: the built network at its own resolution (batch 1).

``README.md`` in the export directory is a markdown table of params, MACs, predicted latency, proxy accuracy and
reward of every exported trial. Candidates of a generic (non-architecture) space are exported as JSON only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mixnas.errors import MixnasError, RunError
from mixnas.launch.config import ExperimentConfig
from mixnas.launch.ledger import Ledger, TrialRecord
from mixnas.launch.rundir import RunPaths, load_run_config
from mixnas.textio import write_text_atomic
from mixnas.launch.summary import front_objectives, pareto_records, ranked
from mixnas.search_space.arch import Architecture
from mixnas.search_space.block_string import encode_header

logger = logging.getLogger(__name__)

FORMATS = ("tf", "timm", "json", "onnx")


@dataclass
class Exported:
    """One exported trial: where it went and what could not be written."""

    rank: int
    record: TrialRecord
    folder: Path
    files: list[str]
    notes: list[str]
    timm: list[str] | None = None  # the lines of timm.txt: the settings header, then one stage per line


def select(cfg: ExperimentConfig, records: Sequence[TrialRecord], *, top: int | None = None,
           pareto: bool = False) -> list[TrialRecord]:
    """The trials to export: the Pareto front (by the run's objectives) or the ``top`` best by reward."""
    if pareto:
        front = pareto_records(records, front_objectives(cfg))
        first = front_objectives(cfg)[0]
        sign = -1.0 if first.direction == "max" else 1.0
        return sorted(front, key=lambda r: (sign * float(r.metrics[first.name]), r.trial))
    chosen = ranked(cfg, records)
    if not chosen and cfg.reward.type == "pareto":
        raise RunError("this run optimises Pareto objectives (no scalar reward): export it with --pareto")
    return chosen[: top if top is not None else 5]


def _architecture(record: TrialRecord) -> Architecture | None:
    if isinstance(record.candidate, dict) and "blocks" in record.candidate:
        return Architecture.from_dict(record.candidate)
    return None


def _number(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return format(value, fmt)


def markdown_table(cfg: ExperimentConfig, items: Sequence[Exported]) -> str:
    accuracy = cfg.reward.accuracy if cfg.reward.type == "mnasnet" else (
        cfg.reward.metric if cfg.reward.type == "metric" else "top1")
    lines = [
        f"# {cfg.name}: exported architectures",
        "",
        "Each folder's `tf.txt` starts with a `# mixnas:` line of global settings; `mixnas build \"$(cat "
        "NN_trialTTTTT/tf.txt)\"` (or `mixnas build NN_trialTTTTT/arch.json`) rebuilds exactly the trial's network.",
        "",
        f"| rank | trial | params | MACs | latency (ms) | {accuracy} | reward | global settings | block strings (tf) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for item in items:
        m = item.record.metrics
        arch = _architecture(item.record)
        settings = "-" if arch is None else f"`{encode_header(arch.global_params).removeprefix('# mixnas: ')}`"
        strings = " ".join(f"`{s}`" for s in item.record.block_strings) if item.record.block_strings else \
            f"`{json.dumps(item.record.candidate, sort_keys=True)}`"
        lines.append(
            f"| {item.rank} | {item.record.trial} | {_number(m.get('params'), ',.0f')} | "
            f"{_number(m.get('macs'), ',.0f')} | {_number(m.get('latency_ms'), '.3f')} | "
            f"{_number(m.get(accuracy), '.4f')} | {_number(item.record.reward, '.5f')} | {settings} | {strings} |"
        )
    notes = [f"- trial {i.record.trial}: {n}" for i in items for n in i.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def _export_one(rank: int, record: TrialRecord, out: Path, formats: Sequence[str]) -> Exported:
    folder = out / f"{rank:02d}_trial{record.trial:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    item = Exported(rank, record, folder, [], [])
    arch = _architecture(record)
    if arch is None and any(f in ("tf", "timm", "onnx") for f in formats):
        item.notes.append("a generic-space candidate: no block strings or ONNX, see arch.json")
    from mixnas.search_space.block_string import encode_arch_text

    timm_text, timm_note = None, None
    if arch is not None:
        try:
            timm_text = encode_arch_text(arch, "timm")
        except MixnasError as exc:
            timm_note = f"not expressible in timm's grammar: {exc}"
    if "json" in formats or arch is None:
        doc = {"trial": record.trial, "encoding": list(record.encoding), "metrics": record.metrics,
               "reward": record.reward, "architecture": record.candidate}
        if timm_text is not None:
            doc["timm_stages"] = [line.split() for line in timm_text.splitlines()[1:]]
        write_text_atomic(folder / "arch.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
        item.files.append("arch.json")
    if arch is None:
        return item
    if "tf" in formats:
        write_text_atomic(folder / "tf.txt", encode_arch_text(arch, "tf"))
        item.files.append("tf.txt")
    if "timm" in formats:
        if timm_text is not None:
            item.timm = timm_text.splitlines()
            write_text_atomic(folder / "timm.txt", timm_text)
        else:
            write_text_atomic(folder / "timm.txt", f"# {timm_note}\n")
            item.notes.append(timm_note)
        item.files.append("timm.txt")
    if "onnx" in formats:
        try:
            from mixnas.evaluators.latency.measure import arch_input_shape, build_network, export_onnx

            (folder / "model.onnx").write_bytes(export_onnx(build_network(arch), arch_input_shape(arch, 1)))
            item.files.append("model.onnx")
        except (ImportError, MixnasError, RuntimeError) as exc:
            item.notes.append(f"no ONNX file: {type(exc).__name__}: {exc}")
    return item


def export_run(run_dir: str | Path, *, top: int | None = None, pareto: bool = False,
               formats: Sequence[str] = FORMATS, out_dir: str | Path | None = None) -> tuple[Path, list[Exported]]:
    """Export a run's best or Pareto-optimal trials; returns the export folder and what was written."""
    paths = RunPaths(Path(run_dir))
    cfg = load_run_config(paths)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise RunError(f"unknown export format(s) {unknown}: expected some of {list(FORMATS)}")
    with Ledger(paths.ledger, readonly=True) as ledger:
        records = ledger.trials()
    chosen = select(cfg, records, top=top, pareto=pareto)
    if not chosen:
        raise RunError(f"{paths.root}: no successful trial to export yet")
    out = Path(out_dir) if out_dir else paths.export
    out.mkdir(parents=True, exist_ok=True)
    items = [_export_one(rank, record, out, formats) for rank, record in enumerate(chosen, 1)]
    write_text_atomic(out / "README.md", markdown_table(cfg, items))
    return out, items
