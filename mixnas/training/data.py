"""The data of a full training run: all of the training part, and the data set's own test split where it has one.

The test split is found next to the training files: IDX ``t10k-images-idx3-ubyte[.gz]``, CIFAR-10
``test_batch.bin``, CIFAR-100 ``test.bin``, or an image folder's ``val/`` (ImageNet layout: ``train/`` and
``val/`` side by side, one subfolder per class). Other formats (digits, synthetic, downsampled-ImageNet npz) are
evaluated on the held-out part of train that :func:`~mixnas.data.load.load_proxy_data` makes.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixnas.errors import DataError
from mixnas.data.spec import BUILTIN_SOURCES, DataSpec
from mixnas.data.readers import detect_format
from mixnas.data.sets import LabelledImages
from mixnas.data.load import load_images, load_proxy_data


@dataclass(frozen=True, eq=False)
class TrainingData(LabelledImages):
    """uint8 NHWC tensors to train and evaluate on; ``eval_split`` says what the evaluation images are."""

    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    format: str
    eval_split: str  # "test (PATH)" or "held-out 20% of train"

    def preprocessing(self) -> dict[str, Any]:
        """What a trained network's input is, as JSON (``run.json``'s ``preprocessing``, an export's metadata)."""
        return {
            "input": "float32 NCHW: RGB pixels / 255, then (x - mean) / std per channel (grayscale: the value "
                     "repeated in all 3 channels)",
            "resolution": self.resolution, "mean": list(self.mean), "std": list(self.std),
            "class_names": list(self.class_names),
        }


def test_source(spec: DataSpec) -> tuple[str, str] | None:
    """(path, format) of the data set's real test split, or None when its format has none or it is missing."""
    fmt = spec.format
    if spec.source in BUILTIN_SOURCES:
        return None
    path = Path(spec.source).expanduser()
    if fmt == "auto":
        fmt = detect_format(path)
    folder = path if path.is_dir() else path.parent
    if fmt == "idx":
        found = sorted(p for p in folder.iterdir() if re.search(r"t10k-images-idx3-ubyte(\.gz)?$", p.name))
        return (str(found[0]), "idx") if len(found) == 1 else None
    if fmt in ("cifar10", "cifar100"):
        test = folder / ("test_batch.bin" if fmt == "cifar10" else "test.bin")
        return (str(test), fmt) if test.is_file() and test != path else None
    if fmt == "folder":
        root = path.parent if path.name == "train" else path
        val = root / "val"
        return (str(val), "folder") if val.is_dir() and val != path else None
    return None


def load_training_data(spec: DataSpec) -> TrainingData:
    """Training images (all of train when a test split exists) and the evaluation images, normalised alike."""
    proxy = load_proxy_data(spec)
    fmt = spec.format if spec.format != "auto" else (
        spec.source if spec.source in BUILTIN_SOURCES else detect_format(Path(spec.source).expanduser()))
    test = test_source(spec)
    if test is None:
        share = round(100 * spec.val_fraction)
        return TrainingData(train_images=proxy.train_images, train_labels=proxy.train_labels,
                            eval_images=proxy.val_images, eval_labels=proxy.val_labels, class_names=proxy.class_names,
                            mean=proxy.mean, std=proxy.std, spec=spec, format=fmt,
                            eval_split=f"held-out {share}% of train")
    test_spec = DataSpec(source=test[0], format=test[1], resolution=proxy.resolution, classes=proxy.class_names,
                         cache_dir=spec.cache_dir, workers=spec.workers)
    try:
        images = load_images(test_spec)
    except DataError as exc:
        raise DataError(f"test split: {exc}") from None
    pixels = images.images if images.images.shape[3] == 3 else np.repeat(images.images, 3, axis=3)
    with warnings.catch_warnings():  # a memory-mapped cache of a large val/ stays read-only, never copied
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        eval_images = torch.from_numpy(np.ascontiguousarray(pixels))
    return TrainingData(
        train_images=torch.cat([proxy.train_images, proxy.val_images]),
        train_labels=torch.cat([proxy.train_labels, proxy.val_labels]),
        eval_images=eval_images,
        eval_labels=torch.from_numpy(images.labels.copy()),
        class_names=proxy.class_names, mean=proxy.mean, std=proxy.std, spec=spec, format=fmt,
        eval_split=f"test ({test[0]})",
    )
