"""What gets deployed: a trained model converted for its runtime, each file scored *in* that runtime.

``--format executorch`` / ``executorch-int8`` write ``model.pte`` / ``model.int8.pte``: ExecuTorch programs lowered
to the XNNPACK delegate (int8 through PT2E quantisation calibrated on the same training images), for batch 1, run
by ExecuTorch's own runtime for their score (the optional extra ``mixnas[executorch]``).

``mixnas export TRAIN_DIR --format onnx-int8`` writes ``model.int8.onnx``: the trained network quantised by ONNX
Runtime's static quantisation (the latency backend's :func:`~mixnas.evaluators.latency.backends.quantize_onnx`:
QDQ, per-channel int8 weights, uint8 activations, every batch norm folded into the convolutions first),
calibrated on images of the model's own training split, preprocessed exactly as its input. Every deployed file of
the export (``model.onnx`` too) is then run by its runtime on the evaluation split the training reported (the data
set's test split, or the held-out part of train): its top-1 stands beside the PyTorch model's in the export's
README and ``arch.json``, with the largest absolute logit difference from PyTorch over the first images, so a user
sees what the conversion costs before shipping it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from mixnas.errors import MixnasError, RunError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from torch import nn

logger = logging.getLogger(__name__)

CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32
EVAL_BATCH = 256
LOGIT_DIFF_IMAGES = 512
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class RuntimeScore:
    """One deployed file scored in its runtime."""

    file: str
    runtime: str
    precision: str
    top1: float
    images: int
    max_logit_diff: float  # against the PyTorch model, over the first LOGIT_DIFF_IMAGES images

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "runtime": self.runtime, "precision": self.precision, "top1": self.top1,
                "images": self.images, "max_abs_logit_diff_vs_torch": self.max_logit_diff}


class EvalData:
    """The training run's data, preprocessed as the model's input: calibration images and the evaluation split."""

    def __init__(self, run: dict[str, Any], source: Path, preprocessing: dict[str, Any]) -> None:
        import numpy as np

        from mixnas.data.spec import DataSpec
        from mixnas.training.data import load_training_data

        try:
            spec = DataSpec.from_dict(run.get("data", {}), where=f"{source / 'run.json'}: data")
            data = load_training_data(spec)
        except MixnasError as exc:
            raise RunError(f"an int8 export calibrates and scores on the training run's data, which cannot be "
                           f"read here: {exc}") from None
        self.mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.train = data.train_images.numpy()
        self.images = data.eval_images.numpy()
        self.labels = data.eval_labels.numpy()
        self.split = data.eval_split

    def input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 NHWC pixels (1 or 3 channels) -> the float32 NCHW input the model was trained on."""
        import numpy as np

        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        return ((x - self.mean) / self.std).astype(np.float32)

    def calibration(self) -> list[np.ndarray]:
        """Batches of :data:`CALIBRATION_IMAGES` training images (seeded choice), preprocessed."""
        import numpy as np

        order = np.random.default_rng(CALIBRATION_SEED).permutation(len(self.train))[:CALIBRATION_IMAGES]
        return [self.input(self.train[order[i:i + CALIBRATION_BATCH]])
                for i in range(0, len(order), CALIBRATION_BATCH)]

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(self.images), EVAL_BATCH):
            yield self.input(self.images[i:i + EVAL_BATCH]), self.labels[i:i + EVAL_BATCH]


def _torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).numpy()


def score(run: Callable[[np.ndarray], np.ndarray], model: nn.Module, data: EvalData, *, file: str, runtime: str,
          precision: str) -> RuntimeScore:
    """Top-1 of ``run`` (a batch of inputs -> logits, in the runtime) on the evaluation split, and its largest
    logit difference from the PyTorch ``model`` over the first :data:`LOGIT_DIFF_IMAGES` images."""
    import numpy as np

    correct = seen = 0
    diff = 0.0
    for x, y in data.batches():
        logits = run(x)
        correct += int((logits.argmax(axis=1) == y).sum())
        if seen < LOGIT_DIFF_IMAGES:
            take = min(len(x), LOGIT_DIFF_IMAGES - seen)
            diff = max(diff, float(np.abs(logits[:take] - _torch_logits(model, x[:take])).max()))
        seen += len(x)
    return RuntimeScore(file, runtime, precision, correct / max(seen, 1), seen, diff)


def onnx_runner(model: bytes | str) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime on the CPU (default threads) from a model file or bytes: a batch of inputs -> logits."""
    from mixnas.evaluators.latency.backends import require_onnxruntime

    ort = require_onnxruntime()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["output"], {"input": x})[0]


def write_onnx_int8(folder: Path, float_model: bytes, data: EvalData) -> dict[str, Any]:
    """``model.int8.onnx`` quantised from the float32 ONNX model, calibrated on the training images; returns the
    calibration record."""
    from mixnas.evaluators.latency.backends import onnx_int8_scheme, quantize_onnx
    from mixnas.textio import atomic_file

    batches = data.calibration()
    model = quantize_onnx(float_model, batches)
    with atomic_file(folder / "model.int8.onnx", "wb") as fh:
        fh.write(model)
    return {"scheme": onnx_int8_scheme(), "images": sum(len(b) for b in batches),
            "from": "the training split of the run's data, preprocessed as the input", "seed": CALIBRATION_SEED}


def write_pte(folder: Path, model: nn.Module, resolution: int, data: EvalData, precision: str) -> tuple[str, dict]:
    """``model.pte`` (float32) or ``model.int8.pte``: the ExecuTorch program for one image; its file name and
    calibration record (None for float32)."""
    import numpy as np

    from mixnas.evaluators.latency.backends import EXECUTORCH_INT8_SCHEME, to_pte
    from mixnas.textio import atomic_file

    name = "model.int8.pte" if precision == "int8" else "model.pte"
    calibration = None
    record = None
    if precision == "int8":
        calibration = [x[i:i + 1] for x in data.calibration() for i in range(len(x))]
        record = {"scheme": EXECUTORCH_INT8_SCHEME,
                  "images": len(calibration), "from": "the training split of the run's data, preprocessed as the "
                  "input", "seed": CALIBRATION_SEED}
    program = to_pte(model, (1, 3, resolution, resolution), precision,
                     [np.ascontiguousarray(c) for c in calibration] if calibration else None)
    with atomic_file(folder / name, "wb") as fh:
        fh.write(program)
    return name, record


def executorch_batch_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """ExecuTorch (one thread) on a ``.pte`` of batch 1: a batch of inputs -> logits, one image at a time."""
    import numpy as np
    import torch

    from mixnas.evaluators.latency.backends import executorch_runner

    run = executorch_runner(path, 1)
    return lambda x: np.concatenate([run(torch.from_numpy(x[i:i + 1].copy())).numpy() for i in range(len(x))])
