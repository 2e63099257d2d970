"""Export a search run's best (top-k) or Pareto-optimal architectures, or the trained model of a ``mixnas train``
folder.

**A search run** (``RUN_DIR`` with ``config.yaml``): for each selected trial, a folder ``NN_trialTTTTT/`` under the
export directory holds, as asked by ``formats``:

* ``tf.txt``: a ``# mixnas:`` line of global settings (resolution, classes, stem, head, multipliers, dropout),
  then the block strings in the official TF MixNet grammar, one per line: ``mixnas build "$(cat tf.txt)"`` (or
  ``mixnas build tf.txt``) rebuilds exactly the trial's network; the TF code reads the strings (the header is a
  comment);
* ``timm.txt``: the same settings for timm (the width multiplier folded into the widths and the stem), then one
  timm *stage* per line, or a line saying why timm cannot express it (e.g. a feature timm's builder lacks); the
  export goes on;
* ``arch.json``: the architecture record with its global settings (``mixnas build arch.json`` reads it), the
  trial's metrics, and the timm stages when there are any;
* ``model.onnx``: the built network at its own resolution, any batch size, with **random initial weights**: a
  search trains proxies and keeps no weights. The README (and the CLI, in one line) says so and how to get trained
  ones (:data:`UNTRAINED`).

``README.md`` in the export directory is a markdown table of params, MACs, predicted latency, proxy accuracy and
reward of every exported trial. Candidates of a generic (non-architecture) space are exported as JSON only.

**A train folder** (``mixnas train --output T``: ``run.json``, ``arch.json``, ``weights.pt``): one folder (default
``T/export``) with ``weights.pt`` (the evaluated weights, EMA for the default recipe, as a state dict that loads
with ``torch.load(weights_only=True)``) and ``arch.json`` (the architecture under ``"architecture"``, plus the test
metrics, the input preprocessing and the timm stages) always, since :func:`mixnas.load_model` reads those two;
``tf.txt``, ``timm.txt`` and ``model.onnx`` (the trained weights, a dynamic batch axis and the
:data:`ONNX_METADATA` entries in ``metadata_props``) as ``formats`` asks; with ``onnx-int8``, ``model.int8.onnx``
(static int8 quantisation calibrated on the training images) and every ONNX file scored in ONNX Runtime on the
evaluation split (:mod:`mixnas.launch.deployed`); and a ``README.md`` with the test metrics and the few lines that
run the model in ONNX Runtime and PyTorch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mixnas.errors import MixnasError, RunError
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.ledger import Ledger, TrialRecord
from mixnas.launch.rundir import RunPaths, load_run_config
from mixnas.launch.summary import SeedMean, front_objectives, pareto_records, ranked, seed_means
from mixnas.search_space.arch import Architecture
from mixnas.search_space.header import encode_arch_text, encode_header
from mixnas.textio import atomic_file, output_folder, path_kind, read_json, write_text_atomic

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_FORMATS = ("tf", "timm", "json", "onnx")
# trained models only: converted for a runtime, calibrated and scored on the data (mixnas.launch.deployed)
DEPLOY_FORMATS = ("onnx-int8", "executorch", "executorch-int8")
FORMATS = (*DEFAULT_FORMATS, *DEPLOY_FORMATS)
UNTRAINED = ("these are architectures, not trained models: model.onnx holds random initial weights; for trained "
             "ones run `mixnas train RUN_DIR:TRIAL --data DATA --output TRAIN_DIR`, then `mixnas export TRAIN_DIR`")
ONNX_METADATA = {  # key -> what its value (a string; JSON but for mixnas_version) holds
    "mixnas_version": "the mixnas version that wrote the file",
    "architecture": "the architecture JSON (`mixnas build` reads it)",
    "input_shape": 'the input\'s shape, ["batch", 3, R, R] (NCHW, float32)',
    "normalization": "how pixels become the input: {mean, std, input} (trained exports only)",
    "class_names": "the class of each output logit, in order (trained exports only)",
    "trained": "false (random weights), or metrics.json's {epochs, top1, top5, loss, eval_split, recipe, "
               "evaluated_weights, params, macs}",
}
TRAINED_KEYS = ("epochs", "top1", "top5", "loss", "eval_split", "recipe", "evaluated_weights", "params", "macs")


@dataclass
class Written:
    """What went into one export folder, and what could not be written."""

    folder: Path
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timm: list[str] | None = None  # the lines of timm.txt: the settings header, then one stage per line


@dataclass(kw_only=True)
class Exported(Written):
    """One exported trial of a search run."""

    rank: int
    record: TrialRecord
    mean: SeedMean | None = None  # its mean over seeds, after mixnas rerank


@dataclass(kw_only=True)
class TrainedExport(Written):
    """The export of a ``mixnas train`` folder: its trained metrics and the preprocessing its input needs."""

    source: Path
    trained: dict[str, Any]
    preprocessing: dict[str, Any]
    scores: list[dict[str, Any]] = field(default_factory=list)  # deployed files scored in their runtime
    calibration: dict[str, Any] | None = None  # of model.int8.onnx
    eval_split: str | None = None
    timm_text: str | None = None


def select(cfg: ExperimentConfig, records: Sequence[TrialRecord], *, top: int | None = None,
           pareto: bool = False, means: Mapping[int, SeedMean] | None = None) -> list[TrialRecord]:
    """The trials to export: the Pareto front (by the run's objectives) or the ``top`` best by reward (the mean
    over seeds where ``means`` has one)."""
    if pareto:
        front = pareto_records(records, front_objectives(cfg))
        first = front_objectives(cfg)[0]
        sign = -1.0 if first.direction == "max" else 1.0
        return sorted(front, key=lambda r: (sign * float(r.metrics[first.name]), r.trial))
    chosen = ranked(cfg, records, means)
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
        f"**Untrained:** {UNTRAINED}.",
        "",
        f"| rank | trial | params | MACs | latency (ms) | {accuracy} | reward | seeds | global settings | "
        "block strings (tf) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for item in items:
        mean = item.mean
        m = {**item.record.metrics, **(mean.metrics if mean else {})}  # means over seeds after mixnas rerank
        reward = mean.reward if mean else item.record.reward

        def pm(name: str, value: Any, fmt: str) -> str:  # mean ± standard error after mixnas rerank
            err = mean.sem.get(name) if mean else None
            return _number(value, fmt) + (f" ± {_number(err, fmt)}" if _number(err, fmt) != "-" else "")
        arch = _architecture(item.record)
        settings = "-" if arch is None else f"`{encode_header(arch.global_params).removeprefix('# mixnas: ')}`"
        strings = " ".join(f"`{s}`" for s in item.record.block_strings) if item.record.block_strings else \
            f"`{json.dumps(item.record.candidate, sort_keys=True)}`"
        lines.append(
            f"| {item.rank} | {item.record.trial} | {_number(m.get('params'), ',.0f')} | "
            f"{_number(m.get('macs'), ',.0f')} | {_number(m.get('latency_ms'), '.3f')} | "
            f"{pm(accuracy, m.get(accuracy), '.4f')} | {pm('reward', reward, '.5f')} | "
            f"{mean.n_seeds if mean else 1} | {settings} | {strings} |"
        )
    if any(i.mean is not None for i in items):
        lines += ["", "Trials with more than one seed were re-evaluated by `mixnas rerank`: their accuracy and reward are "
                  "means over seeds ± standard error, and they are ranked by the mean."]
    notes = [f"- trial {i.record.trial}: {n}" for i in items for n in i.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


# --- per-architecture writers (a search trial and a trained model alike) -----------------------------------------
def _timm_text(arch: Architecture) -> tuple[str | None, str | None]:
    """(timm.txt's text, None), or (None, why timm's grammar cannot express ``arch``)."""
    try:
        return encode_arch_text(arch, "timm"), None
    except MixnasError as exc:
        return None, f"not expressible in timm's grammar: {exc}"


def _write_json(item: Written, doc: dict[str, Any], timm_text: str | None) -> None:
    if timm_text is not None:
        doc["timm_stages"] = [line.split() for line in timm_text.splitlines()[1:]]
    write_text_atomic(item.folder / "arch.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if "arch.json" not in item.files:
        item.files.append("arch.json")


def _write_strings(item: Written, arch: Architecture, formats: Sequence[str], timm: tuple[str | None, str | None]
                   ) -> None:
    """``tf.txt`` and ``timm.txt`` as ``formats`` asks (``timm``: what :func:`_timm_text` gave)."""
    if "tf" in formats:
        write_text_atomic(item.folder / "tf.txt", encode_arch_text(arch, "tf"))
        item.files.append("tf.txt")
    if "timm" in formats:
        timm_text, timm_note = timm
        if timm_text is not None:
            item.timm = timm_text.splitlines()
            write_text_atomic(item.folder / "timm.txt", timm_text)
        else:
            write_text_atomic(item.folder / "timm.txt", f"# {timm_note}\n")
            item.notes.append(str(timm_note))
        item.files.append("timm.txt")


def _version() -> str:
    try:
        return metadata.version("mixnas")
    except metadata.PackageNotFoundError:
        return "unknown"


def onnx_metadata(arch: Architecture, trained: dict[str, Any] | None = None,
                  preprocessing: dict[str, Any] | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported ONNX file (:data:`ONNX_METADATA`)."""
    meta = {"mixnas_version": _version(), "architecture": arch.to_json(),
            "input_shape": json.dumps(["batch", 3, arch.resolution, arch.resolution]),
            "trained": json.dumps(trained if trained is not None else False, sort_keys=True)}
    if preprocessing is not None:
        meta["normalization"] = json.dumps({k: preprocessing[k] for k in ("mean", "std", "input")})
        meta["class_names"] = json.dumps(preprocessing["class_names"])
    return meta


def _with_metadata(model: bytes, meta: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_model_from_string(model)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _onnx_bytes(arch: Architecture, module: nn.Module | None = None) -> bytes:
    """The float32 ONNX model of ``module`` (default: ``arch`` built with random weights), any batch size."""
    from mixnas.evaluators.latency.backends import export_onnx
    from mixnas.evaluators.latency.measure import arch_input_shape, build_network

    return export_onnx(module if module is not None else build_network(arch), arch_input_shape(arch, 1),
                       dynamic_batch=True)


def _write_onnx(item: Written, arch: Architecture, meta: dict[str, str], module: nn.Module | None = None,
                model: bytes | None = None) -> None:
    """``model.onnx`` of ``module`` (default: ``arch`` built with random weights), any batch size, with ``meta``;
    ``model``: that ONNX model already exported."""
    try:
        model = _with_metadata(model if model is not None else _onnx_bytes(arch, module), meta)
        with atomic_file(item.folder / "model.onnx", "wb") as fh:
            fh.write(model)
        item.files.append("model.onnx")
    except (ImportError, MixnasError, RuntimeError) as exc:
        item.notes.append(f"no ONNX file: {type(exc).__name__}: {exc}")


# --- a search run ------------------------------------------------------------------------------------------------
def _export_one(rank: int, record: TrialRecord, out: Path, formats: Sequence[str],
                mean: SeedMean | None = None) -> Exported:
    folder = output_folder(out / f"{rank:02d}_trial{record.trial:05d}", RunError)
    item = Exported(folder, rank=rank, record=record, mean=mean)
    arch = _architecture(record)
    if arch is None and any(f in ("tf", "timm", "onnx") for f in formats):
        item.notes.append("a generic-space candidate: no block strings or ONNX, see arch.json")
    timm = _timm_text(arch) if arch is not None else (None, None)
    if "json" in formats or arch is None:
        doc = {"trial": record.trial, "encoding": list(record.encoding), "metrics": dict(record.metrics),
               "reward": record.reward, "architecture": record.candidate}
        if mean is not None:
            doc["over_seeds"] = mean.to_dict()
        _write_json(item, doc, timm[0])
    if arch is None:
        return item
    _write_strings(item, arch, formats, timm)
    if "onnx" in formats:
        _write_onnx(item, arch, onnx_metadata(arch))
    return item


def _check_formats(formats: Sequence[str]) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise RunError(f"unknown export format(s) {unknown}: expected some of {list(FORMATS)}")


def export_run(run_dir: str | Path, *, top: int | None = None, pareto: bool = False,
               formats: Sequence[str] = DEFAULT_FORMATS, out_dir: str | Path | None = None
               ) -> tuple[Path, list[Exported]]:
    """Export a run's best or Pareto-optimal trials; returns the export folder and what was written."""
    paths = RunPaths(Path(run_dir))
    cfg = load_run_config(paths)
    _check_formats(formats)
    deploy = [f for f in formats if f in DEPLOY_FORMATS]
    if deploy:
        raise RunError(f"--format {deploy[0]}: a search run holds architectures, not trained weights; train one "
                       "first (mixnas train RUN_DIR:TRIAL --data DATA --output T), then mixnas export T --format "
                       f"{deploy[0]}")
    with Ledger(paths.ledger, readonly=True) as ledger:
        records, repeats = ledger.trials(), ledger.repeats()
    means = seed_means(records, repeats)  # re-ranked trials are ranked by their means over seeds
    chosen = select(cfg, records, top=top, pareto=pareto, means=means)
    if not chosen:
        raise RunError(f"{paths.root}: no successful trial to export yet")
    out = output_folder(Path(out_dir) if out_dir else paths.export, RunError)
    items = [_export_one(rank, record, out, formats, means.get(record.trial)) for rank, record in enumerate(chosen, 1)]
    write_text_atomic(out / "README.md", markdown_table(cfg, items))
    return out, items


# --- a train folder ----------------------------------------------------------------------------------------------
FILE_NOTES = {
    "weights.pt": "the trained weights as a state dict: `torch.load(path, weights_only=True)`",
    "arch.json": "the architecture with its global settings (`mixnas build arch.json`), the test metrics, the "
                 "input preprocessing and the timm stages",
    "tf.txt": "settings line, then block strings in the TF MixNet grammar (`mixnas build \"$(cat tf.txt)\"`)",
    "timm.txt": "the same for timm: settings line, then one timm stage per line",
    "model.onnx": "the network with the trained weights (opset 17): input `input` float32 (batch, 3, RES, RES), "
                  "output `output` logits (batch, CLASSES), any batch size; `metadata_props` hold the "
                  "architecture, input shape, normalisation, class names, mixnas version and test metrics",
    "model.int8.onnx": "the same network quantised to int8 (ONNX Runtime static quantisation: QDQ, per-channel "
                       "int8 weights, uint8 activations, calibrated on training images); same input, output and "
                       "metadata as model.onnx",
    "model.pte": "the network as an ExecuTorch program lowered to the XNNPACK delegate (float32), input "
                 "(1, 3, RES, RES) normalised as below: `executorch.runtime.Runtime.get().load_program(path)"
                 ".load_method('forward').execute([x])`, or ExecuTorch's runners on a phone",
    "model.int8.pte": "the same ExecuTorch program quantised to int8 (PT2E, XNNPACK quantizer, per-channel weights, "
                      "calibrated on training images)",
}
ONNX_SNIPPET = '''```python
import json

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
norm, classes = json.loads(meta["normalization"]), json.loads(meta["class_names"])
mean = np.array(norm["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
std = np.array(norm["std"], dtype=np.float32).reshape(1, 3, 1, 1)
pixels = np.random.default_rng(0).integers(0, 256, (3, RES, RES, 3), dtype=np.uint8)  # RGB images, NHWC
x = ((pixels.transpose(0, 3, 1, 2) / np.float32(255) - mean) / std).astype(np.float32)
logits = session.run(["output"], {"input": x})[0]
print([classes[i] for i in logits.argmax(axis=1)])
```'''
TORCH_SNIPPET = '''```python
import json
from pathlib import Path

import torch

import mixnas

model = mixnas.load_model(".")  # this folder, or the mixnas train folder it came from
prep = json.loads(Path("arch.json").read_text())["preprocessing"]
mean = torch.tensor(prep["mean"]).view(1, 3, 1, 1)
std = torch.tensor(prep["std"]).view(1, 3, 1, 1)
pixels = torch.randint(0, 256, (3, RES, RES, 3), dtype=torch.uint8)  # RGB images, NHWC
x = (pixels.permute(0, 3, 1, 2) / 255 - mean) / std
with torch.no_grad():
    logits = model(x)
print([prep["class_names"][i] for i in logits.argmax(dim=1)])
```'''


def export_kind(path: str | Path) -> str:
    """``"train"`` for a ``mixnas train`` output folder, ``"run"`` for a search run directory; else a RunError."""
    folder = Path(path)
    if path_kind(folder) != "dir":
        raise RunError(f"{folder}: no such folder (mixnas export takes a search run directory or a mixnas train "
                       "output folder)")
    if path_kind(folder / "run.json") == "file" and path_kind(folder / "arch.json") == "file":
        return "train"
    if path_kind(RunPaths(folder).config) == "file":
        return "run"
    raise RunError(f"{folder}: neither a search run directory (config.yaml, ledger.sqlite) nor a mixnas train "
                   "output folder (run.json, arch.json, weights.pt)")


def _record(path: Path) -> dict[str, Any]:
    data = read_json(path, RunError) if path_kind(path) == "file" else {}
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def _preprocessing(run: dict[str, Any], source: Path) -> dict[str, Any]:
    """``run.json``'s preprocessing record; for a folder trained before it was kept, made again from the data."""
    if isinstance(run.get("preprocessing"), dict):
        return run["preprocessing"]
    from mixnas.data.spec import DataSpec
    from mixnas.training.data import load_training_data

    logger.info("%s: run.json has no preprocessing record; computing it from the training data", source)
    spec = DataSpec.from_dict(run.get("data", {}), where=f"{source / 'run.json'}: data")
    return load_training_data(spec).preprocessing()


def export_trained(train_dir: str | Path, *, formats: Sequence[str] = DEFAULT_FORMATS,
                   out_dir: str | Path | None = None) -> TrainedExport:
    """Export the trained model of a ``mixnas train`` folder (default into ``TRAIN_DIR/export``)."""
    from mixnas.tensorfiles import save_tensors
    from mixnas.training import checkpoint as ckpt

    source = Path(train_dir)
    _check_formats(formats)
    model = ckpt.load_model(source)
    arch = ckpt.read_arch(source)
    out = Path(out_dir) if out_dir else source / "export"
    if out.resolve() == source.resolve():
        raise RunError(f"-o {out}: the export folder must not be the train folder itself")
    weights, metrics = ckpt.committed(source)  # of one epoch, even after a kill between the trainer's writes
    run, metrics = _record(source / ckpt.RUN_FILE), metrics if isinstance(metrics, dict) else {}
    trained = {key: metrics.get(key) for key in TRAINED_KEYS}
    item = TrainedExport(out, source=source, trained=trained, preprocessing=_preprocessing(run, source))
    if metrics.get("epochs") != run.get("epochs"):
        item.notes.append(f"trained {metrics.get('epochs')} of the {run.get('epochs')} epochs asked (an unfinished "
                          "run: `mixnas train ... --resume` continues it)")
    output_folder(out, RunError)
    save_tensors(out / ckpt.WEIGHTS_FILE, weights)
    item.files.append(ckpt.WEIGHTS_FILE)
    timm = _timm_text(arch)
    item.timm_text = timm[0]
    _write_json(item, _trained_doc(arch, item), timm[0])
    _write_strings(item, arch, formats, timm)
    meta = onnx_metadata(arch, trained, item.preprocessing)
    deploy = [f for f in formats if f in DEPLOY_FORMATS]
    float_model = _onnx_bytes(arch, model) if deploy else None  # exported once: written, and scored beside int8
    if "onnx" in formats:
        _write_onnx(item, arch, meta, module=model, model=float_model)
    if deploy:
        _write_deployed(item, arch, model, float_model, meta, run, deploy)
    write_text_atomic(out / "README.md", trained_readme(arch, item))
    return item


def _write_deployed(item: TrainedExport, arch: Architecture, model: nn.Module, float_model: bytes,
                    meta: dict[str, str], run: dict[str, Any], deploy: Sequence[str]) -> None:
    """The deployed files ``deploy`` asks for, and every deployed file (the float32 ONNX model too) scored in its
    runtime on the evaluation split."""
    from mixnas.evaluators.latency.backends import require_executorch
    from mixnas.launch import deployed

    if any(f.startswith("executorch") for f in deploy):
        require_executorch()  # before the data is read: one line naming the extra
    data = deployed.EvalData(run, item.source, item.preprocessing)
    float_file = "model.onnx" if "model.onnx" in item.files else "(float32 ONNX, not written)"
    runs: list[tuple[str, str, str, Any]] = [(float_file, "onnxruntime", "float32",
                                              lambda: deployed.onnx_runner(float_model))]
    if "onnx-int8" in deploy:
        item.calibration = {"model.int8.onnx": deployed.write_onnx_int8(item.folder, float_model, data)}
        int8_path = item.folder / "model.int8.onnx"
        with atomic_file(int8_path, "wb") as fh:
            fh.write(_with_metadata(int8_path.read_bytes(), meta))
        item.files.append("model.int8.onnx")
        runs.append(("model.int8.onnx", "onnxruntime", "int8", lambda: deployed.onnx_runner(str(int8_path))))
    for fmt, precision in (("executorch", "float32"), ("executorch-int8", "int8")):
        if fmt in deploy:
            name, record = deployed.write_pte(item.folder, model, arch.resolution, data, precision)
            item.files.append(name)
            if record:
                item.calibration = {**(item.calibration or {}), name: record}
            path = str(item.folder / name)
            runs.append((name, "executorch (XNNPACK)", precision, lambda p=path: deployed.executorch_batch_runner(p)))
    for file, runtime, precision, runner in runs:
        try:
            score = deployed.score(runner(), model, data, file=file, runtime=runtime, precision=precision)
        except MixnasError as exc:  # the file is written; its runtime cannot run it here: say so, score the rest
            item.notes.append(f"{file} was written but {runtime} could not run it here: {exc}")
            logger.warning("%s: not scored: %s", file, exc)
            continue
        item.scores.append(score.to_dict())
        logger.info("%s (%s %s): top-1 %.4f on %d images", file, runtime, precision, score.top1, score.images)
    item.eval_split = data.split
    _write_json(item, _trained_doc(arch, item), item.timm_text)


def _trained_doc(arch: Architecture, item: TrainedExport) -> dict[str, Any]:
    doc = {"architecture": arch.to_dict(), "source": str(item.source), "trained": item.trained,
           "preprocessing": item.preprocessing, "mixnas_version": _version()}
    if item.scores:
        doc["deployed"] = {"eval_split": item.eval_split, "files": item.scores, "int8_calibration": item.calibration}
    return doc


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def trained_readme(arch: Architecture, item: TrainedExport) -> str:
    """The README of a trained export: what is there, the test metrics, and how to run it."""
    t, prep = item.trained, item.preprocessing
    fill = {"RES": str(arch.resolution), "CLASSES": str(len(prep["class_names"]))}

    def filled(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    lines = [
        f"# {arch.name or arch.id}: a trained model",
        "",
        f"Exported by mixnas {_version()} from the `mixnas train` folder `{item.source}`: {t['epochs']} epochs of "
        f"the `{t['recipe']}` recipe, {t['evaluated_weights']} weights.",
        "",
        f"Test metrics on {t['eval_split']}: top-1 {_number(t['top1'], '.4f')}, top-5 {_number(t['top5'], '.4f')}, "
        f"loss {_number(t['loss'], '.4f')}; {_number(t['params'], ',.0f')} params, {_number(t['macs'], ',.0f')} "
        "MACs.",
        "",
        "| file | what |",
        "|---|---|",
        *(f"| `{name}` | {filled(FILE_NOTES[name])} |" for name in item.files),
        "",
        f"Input: {prep['input']}; mean {_rounded(prep['mean'])}, std {_rounded(prep['std'])} (exact values: "
        f"`arch.json`, the ONNX metadata), {arch.resolution}x{arch.resolution}. "
        f"Classes, in the order of the logits: {', '.join(map(str, prep['class_names']))}.",
    ]
    if item.scores:
        torch_top1 = _number(t["top1"], ".4f")
        lines += ["", f"## Deployed files, scored in their runtime ({item.eval_split}, "
                  f"{item.scores[0]['images']} images)", "",
                  "| file | runtime | precision | top-1 | PyTorch top-1 | max abs logit diff vs PyTorch |",
                  "|---|---|---|---|---|---|",
                  *(f"| `{s['file']}` | {s['runtime']} | {s['precision']} | {s['top1']:.4f} | {torch_top1} | "
                    f"{s['max_abs_logit_diff_vs_torch']:.3g} |" for s in item.scores)]
        for name, c in (item.calibration or {}).items():
            lines += ["", f"`{name}` calibration: {c['scheme']}; {c['images']} images from {c['from']} (seed "
                      f"{c['seed']})."]
    if item.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in item.notes)]
    lines += ["", "## Run it", ""]
    if "model.onnx" in item.files:
        lines += ["ONNX Runtime, from this folder (no mixnas or torch needed):", "", filled(ONNX_SNIPPET), ""]
    lines += ["PyTorch with mixnas installed, from this folder (no pickle: `weights_only=True`):", "",
              filled(TORCH_SNIPPET)]
    return "\n".join(lines) + "\n"
