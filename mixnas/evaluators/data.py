"""Image data sets for proxy training: real on-disk formats, a proxy subset, a held-out split, in-memory tensors.

Formats (``DataSpec.format``; ``auto`` tells them apart by their file names):

* ``folder``: one subfolder per class of JPEG / PNG files (the ImageNet train layout). Images are decoded with
  Pillow in a thread pool, resized (short side, then centre crop) to the proxy resolution and cached on disk as
  uint8 arrays keyed by (path, resolution, subset), so later trials and later runs do not decode again.
* ``npz``: downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter 2017, "A Downsampled Variant of ImageNet as an
  Alternative to the CIFAR datasets"): ``train_data_batch_N.npz`` files whose ``data`` rows are ``3*s*s`` bytes in
  channel-planar order and whose ``labels`` are 1-based.
* ``cifar10`` / ``cifar100``: the *binary* CIFAR release (fixed-length records: a label byte, or coarse and fine
  label bytes, then 3072 channel-planar pixel bytes). The pickled release is not read (no pickle, ever).
* ``idx``: the MNIST family (MNIST, Fashion-MNIST, KMNIST, EMNIST), raw or gzip; grey images become 3 channels.
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 real images), upsampled; ``synthetic``: seeded class
  prototypes plus noise, for smoke runs.

Only the training part of a data set is read; the proxy validation split is held out from it with a fixed seed,
as MnasNet does (Tan et al. 2019, "MnasNet: Platform-Aware Neural Architecture Search for Mobile", sec. 6).
Images stay uint8 (NHWC) in memory; :func:`load_proxy_data` keeps the last few loaded sets in-process so repeated
trials reuse them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixnas.confignode import dataclass_fields
from mixnas.errors import DataError
from mixnas.search_space.arch import MAX_CLASSES
from mixnas.textio import exclusive_lock, os_reason, path_kind

logger = logging.getLogger(__name__)

FORMATS = ("folder", "npz", "cifar10", "cifar100", "idx", "digits", "synthetic")
BUILTIN_SOURCES = ("digits", "synthetic")
NORMALIZATIONS = ("dataset", "imagenet", "none")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_VERSION = 2  # 2: one memory-mappable .npy per subset (1 was .npz)
DEFAULT_RESOLUTION = 32  # for sources without a native size of their own (digits, synthetic)
SYNTHETIC_CLASSES = 10
SYNTHETIC_IMAGES_PER_CLASS = 100

_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_LABEL_BYTES = {"cifar10": 1, "cifar100": 2}
_IDX_UBYTE = 0x08
# Bounds on a proxy task (sanity, not policy): a typo must fail at once, not allocate without end.
MAX_DATA_RESOLUTION = 1024
MAX_IMAGES_PER_CLASS = 10_000_000
MAX_WORKERS = 1024
MAX_SYNTHETIC_BYTES = 2 << 30  # float32 working memory of the synthetic data set
MAX_FILE_BYTES = 4 << 30  # one data file after gzip decompression (EMNIST by-class images: 0.55 GB)


# ----------------------------------------------------------------------------------------------------------------
# Specification
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """What to load and which proxy subset to make of it. Frozen and hashable: it keys the in-process cache.

    Attributes:
        source: ``digits``, ``synthetic`` or a path (file or folder).
        format: one of :data:`FORMATS`, or ``auto`` to tell it from the file names.
        resolution: square side in pixels; None = the source's own (32 for digits / synthetic; required for
            folders, which :class:`~mixnas.evaluators.proxy.ProxyEvaluator` fills from the architecture).
        classes: None (all), a count chosen with ``seed``, or a tuple of class names.
        images_per_class: at most this many images per class, chosen with ``seed`` (None = all); the held-out
            split is taken from them.
        val_fraction: share of each class held out for validation (stratified, at least one image per class).
        seed: seeds class choice, image choice and the split (fixed, independent of the trial seed); also the
            generator of ``synthetic``.
        normalize: ``dataset`` (per-channel mean / std of the training split), ``imagenet`` or ``none`` (x / 255).
        flip: random horizontal flips during training.
        crop_padding: random crops after zero padding by this many pixels during training (0 = off).
        cache_dir: where decoded image folders are cached (None = ``$MIXNAS_CACHE_DIR`` or
            ``~/.cache/mixnas/datasets``).
        workers: decoding threads for image folders (None = one per CPU core).
    """

    source: str
    format: str = "auto"
    resolution: int | None = None
    classes: int | tuple[str, ...] | None = None
    images_per_class: int | None = None
    val_fraction: float = 0.2
    seed: int = 0
    normalize: str = "dataset"
    flip: bool = False
    crop_padding: int = 0
    cache_dir: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        where = f"data {self.source!r}"
        if not isinstance(self.source, str) or not self.source:
            raise DataError(f"data: source: expected 'digits', 'synthetic' or a path, got {self.source!r}")
        if self.format not in ("auto", *FORMATS):
            raise DataError(f"{where}: format: expected one of {['auto', *FORMATS]}, got {self.format!r}")
        if self.resolution is not None and not _is_int(self.resolution, 1, MAX_DATA_RESOLUTION):
            raise DataError(
                f"{where}: resolution: expected a positive integer, at most {MAX_DATA_RESOLUTION}, got {self.resolution!r}"
            )
        if isinstance(self.classes, (list, tuple)):
            names = tuple(str(c) for c in self.classes)
            if not names or len(set(names)) != len(names):
                raise DataError(f"{where}: classes: expected distinct class names, got {list(self.classes)!r}")
            object.__setattr__(self, "classes", names)
        elif self.classes is not None and not _is_int(self.classes, 1, MAX_CLASSES):
            raise DataError(
                f"{where}: classes: expected a count in 1..{MAX_CLASSES}, a list of names or null, got {self.classes!r}"
            )
        if self.images_per_class is not None and not _is_int(self.images_per_class, 2, MAX_IMAGES_PER_CLASS):
            raise DataError(
                f"{where}: images_per_class: expected an integer in 2..{MAX_IMAGES_PER_CLASS} or null, "
                f"got {self.images_per_class!r}"
            )
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) or not 0 < self.val_fraction < 1:
            raise DataError(f"{where}: val_fraction: expected a number in (0, 1), got {self.val_fraction!r}")
        if not _is_int(self.seed, 0, 2**64 - 1):
            raise DataError(f"{where}: seed: expected an integer >= 0, got {self.seed!r}")
        if self.normalize not in NORMALIZATIONS:
            raise DataError(f"{where}: normalize: expected one of {list(NORMALIZATIONS)}, got {self.normalize!r}")
        if not isinstance(self.flip, bool):
            raise DataError(f"{where}: flip: expected true or false, got {self.flip!r}")
        if not _is_int(self.crop_padding, 0, MAX_DATA_RESOLUTION):
            raise DataError(
                f"{where}: crop_padding: expected an integer in 0..{MAX_DATA_RESOLUTION}, got {self.crop_padding!r}"
            )
        if self.workers is not None and not _is_int(self.workers, 1, MAX_WORKERS):
            raise DataError(f"{where}: workers: expected an integer in 1..{MAX_WORKERS} or null, got {self.workers!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "data") -> DataSpec:
        """Build from a YAML mapping; unknown keys are errors that name ``where`` (file and YAML path)."""
        data = dataclass_fields(cls, data, where, DataError)
        if "source" not in data:
            raise DataError(f"{where}: source: required ('digits', 'synthetic' or a path)")
        try:
            return cls(**dict(data))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> DataSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if isinstance(self.classes, tuple):
            out["classes"] = list(self.classes)
        return out


def _is_int(value: Any, minimum: int, maximum: int | None = None) -> bool:
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and value >= minimum
        and (maximum is None or value <= maximum)
    )


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images of one subset, before the split.

    Attributes:
        images: uint8 array (N, H, W, C), C = 1 or 3.
        labels: int64 array (N,), 0 .. len(class_names) - 1.
        class_names: names of the subset's classes, in label order.
        decoded: image files decoded to make this set (0 for a cache hit or an array format).
        cache_file: the on-disk cache file used or written, if any.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    decoded: int = 0
    cache_file: str | None = None


def normalizer(mean: Sequence[float], std: Sequence[float],
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, 3, 1, 1) such that ``x_uint8 * scale + shift`` is the normalised input."""
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32)
    std_t = torch.tensor(tuple(std), dtype=torch.float32)
    return (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(device), (-mean_t / std_t).view(1, 3, 1, 1).to(device)


class LabelledImages:
    """What a set of uint8 NHWC images with class names and per-channel ``mean`` / ``std`` offers (the proxy
    task here, the full-training data in ``mixnas/training/data.py``)."""

    train_images: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[1])

    def normalizer(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of shape (1, 3, 1, 1) such that ``x_uint8 * scale + shift`` is the normalised input."""
        return normalizer(self.mean, self.std, device)


@dataclass(frozen=True, eq=False)
class ProxyData(LabelledImages):
    """A proxy task: uint8 NHWC tensors of a training and a held-out split, plus normalisation.

    ``in_memory`` is False when the images exceed :func:`memory_budget`: the tensors are then read-only views of a
    memory-mapped file in the cache folder, paged in by the OS, and the trainer moves each batch to its device.

    ``mean`` / ``std`` are per channel in [0, 1] units; a batch is normalised as ``(x / 255 - mean) / std``
    (see :meth:`normalizer`).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    spec: DataSpec
    decoded: int = 0
    in_memory: bool = True


    def summary(self) -> dict[str, Any]:
        return {
            "source": self.spec.source,
            "classes": self.num_classes,
            "resolution": self.resolution,
            "train_images": int(self.train_labels.numel()),
            "val_images": int(self.val_labels.numel()),
        }


# ----------------------------------------------------------------------------------------------------------------
# Sources: labels up front, pixels on demand (so a subset of ImageNet decodes only the subset)
# ----------------------------------------------------------------------------------------------------------------
Reader = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True, eq=False)
class _Source:
    """A data set's training part: all labels, and ``read(sorted_indices, resolution) -> uint8 NHWC``."""

    where: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    read: Reader
    native_resolution: int | None
    files: tuple[str, ...] = ()  # image files, for the disk cache (folders only)


def detect_format(path: Path) -> str:
    """Tell a data set's format from its file names (see the module docstring)."""
    kind = path_kind(path)
    if kind is None:
        raise DataError(f"{_shown(path)}: no such file or folder")
    if kind == "other":
        raise DataError(f"{_shown(path)}: not a regular file or folder")
    if kind == "file":
        name = path.name.lower()
        if name.endswith(".npz"):
            return "npz"
        if "idx3-ubyte" in name:
            return "idx"
        if name.endswith(".bin"):
            if name.startswith(("data_batch", "test_batch")):
                return "cifar10"
            if name in ("train.bin", "test.bin"):
                return "cifar100"
            size = path.stat().st_size
            for fmt in ("cifar10", "cifar100"):
                if size and size % (_CIFAR_LABEL_BYTES[fmt] + _CIFAR_PIXELS) == 0:
                    return fmt
        raise DataError(
            f"{path}: cannot tell the format from the file name: expected *.npz (downsampled ImageNet), "
            f"*.bin (CIFAR binary) or *-images-idx3-ubyte[.gz] (MNIST family); pass a format "
            f"(one of {list(FORMATS)})"
        )
    names = [p.name for p in path.iterdir()]
    if any(re.fullmatch(r"data_batch_\d+\.bin", n) for n in names):
        return "cifar10"
    if "train.bin" in names:
        return "cifar100"
    if any(re.fullmatch(r"train_data_batch_\d+\.npz", n) for n in names):
        return "npz"
    if any(re.search(r"train-images-idx3-ubyte(\.gz)?$", n) for n in names):
        return "idx"
    if _class_folder_root(path) is not None:
        return "folder"
    raise DataError(
        f"{path}: cannot tell the data set's format: expected class subfolders of .jpg/.jpeg/.png files, "
        f"data_batch_N.bin (CIFAR-10), train.bin (CIFAR-100), train_data_batch_N.npz (downsampled ImageNet) or "
        f"*train-images-idx3-ubyte[.gz] (MNIST family); pass a format (one of {list(FORMATS)})"
    )


def _open_source(spec: DataSpec) -> tuple[_Source, str]:
    fmt = spec.format
    if fmt == "auto":
        fmt = spec.source if spec.source in BUILTIN_SOURCES else detect_format(Path(spec.source))
    if fmt in BUILTIN_SOURCES:
        if spec.source != fmt:
            raise DataError(f"format {fmt!r} is built in: pass it as the data source, not {spec.source!r}")
        return (_digits_source() if fmt == "digits" else _synthetic_source(spec)), fmt
    path = Path(spec.source).expanduser()
    kind = path_kind(path)
    if kind is None:
        raise DataError(f"{_shown(path)}: no such file or folder")
    if kind == "other":
        raise DataError(f"{_shown(path)}: not a regular file or folder")
    opener = {"folder": _folder_source, "npz": _npz_source, "idx": _idx_source}.get(fmt, _cifar_reader(fmt))
    try:
        return opener(path), fmt
    except OSError as exc:  # listing a folder, stat of a member (permissions, a vanished file)
        where = exc.filename if exc.filename is not None else path
        raise DataError(f"{_shown(Path(str(where)))}: cannot read ({os_reason(exc)})") from None


def _shown(path: Path) -> str:
    """A path for an error message, shortened when absurdly long."""
    text = str(path)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} characters)"


def _cifar_reader(fmt: str) -> Callable[[Path], _Source]:
    return lambda path: _cifar_source(path, fmt)


# --- arrays held in memory --------------------------------------------------------------------------------------
def _array_reader(images: np.ndarray) -> Reader:
    return lambda indices, resolution: resize_images(images[indices], resolution)


def resize_images(images: np.ndarray, resolution: int, chunk: int = 1024) -> np.ndarray:
    """Resize uint8 NHWC square images to ``resolution`` (bilinear, antialiased when shrinking)."""
    if images.shape[1] == resolution and images.shape[2] == resolution:
        return np.ascontiguousarray(images)
    out = np.empty((len(images), resolution, resolution, images.shape[3]), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])).permute(0, 3, 1, 2).float()
        shrink = resolution < images.shape[1]
        y = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)
        out[start : start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _digits_source() -> _Source:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError("the built-in 'digits' data set needs scikit-learn: pip install 'mixnas[dev]'") from exc
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, (N, 8, 8, 1)
    names = tuple(str(int(n)) for n in bunch.target_names)
    return _Source("digits", bunch.target.astype(np.int64), names, _array_reader(images), None)


def _synthetic_source(spec: DataSpec) -> _Source:
    num_classes = spec.classes if isinstance(spec.classes, int) else SYNTHETIC_CLASSES
    if isinstance(spec.classes, tuple):
        raise DataError("data 'synthetic': classes: expected a count (its classes are unnamed), got a list")
    per_class = spec.images_per_class or SYNTHETIC_IMAGES_PER_CLASS
    side = spec.resolution or DEFAULT_RESOLUTION
    needed = int(num_classes) * int(per_class) * side * side * 3 * 4
    if needed > MAX_SYNTHETIC_BYTES:
        raise DataError(
            f"data 'synthetic': {num_classes} classes x {per_class} images at {side}x{side} need "
            f"{needed / 2**30:.1f} GiB; at most {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB (use fewer classes or "
            "images_per_class, or a lower resolution)"
        )
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)

    def read(indices: np.ndarray, resolution: int) -> np.ndarray:
        rng = np.random.default_rng([spec.seed, 7])
        coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, 3))  # one low-frequency prototype per class
        prototypes = resize_images(coarse.astype(np.uint8), resolution).astype(np.float32)
        noise = rng.normal(0.0, 40.0, size=(len(labels), resolution, resolution, 3)).astype(np.float32)
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        return images[indices]

    names = tuple(str(i) for i in range(num_classes))
    return _Source("synthetic", labels, names, read, None)


def _read_bytes(path: Path) -> bytes:
    """A data file's bytes (gunzipped for ``.gz``), at most MAX_FILE_BYTES so that a gzip bomb stops early."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt gzip file: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({os_reason(exc)})") from None
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 30} GiB (decompressed); not a proxy data file")
    return data


def _cifar_source(path: Path, fmt: str) -> _Source:
    label_bytes = _CIFAR_LABEL_BYTES[fmt]
    record = label_bytes + _CIFAR_PIXELS
    if path.is_dir():
        pattern = r"data_batch_\d+\.bin" if fmt == "cifar10" else r"train\.bin"
        files = sorted((p for p in path.iterdir() if re.fullmatch(pattern, p.name)), key=_natural_key)
        if not files:
            expected = "data_batch_1.bin .. data_batch_5.bin" if fmt == "cifar10" else "train.bin"
            raise DataError(f"{path}: no {fmt} training file ({expected}) in this folder")
    else:
        files = [path]
    chunks = []
    for file in files:
        raw = np.frombuffer(_read_bytes(file), dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(
                f"{file}: corrupt {fmt} file: {raw.size} bytes is not a whole number of {record}-byte records "
                f"({label_bytes} label byte(s) + {_CIFAR_PIXELS} pixel bytes)"
            )
        chunks.append(raw.reshape(-1, record))
    records = np.concatenate(chunks)
    labels = records[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: the fine label (second byte)
    num_classes = 10 if fmt == "cifar10" else 100
    if labels.max() >= num_classes:
        raise DataError(f"{files[0]}: corrupt {fmt} file: label {int(labels.max())} is not in 0..{num_classes - 1}")
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    meta = files[0].parent / ("batches.meta.txt" if fmt == "cifar10" else "fine_label_names.txt")
    names = _names_file(meta, num_classes)
    return _Source(str(path), labels, names, _array_reader(images), 32)


def _names_file(path: Path, count: int) -> tuple[str, ...]:
    if path.is_file():
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if len(lines) == count:
            return tuple(lines)
        logger.warning("%s: expected %d class names, found %d; using numbers", path, count, len(lines))
    return tuple(str(i) for i in range(count))


def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path}: corrupt IDX file: expected the magic number 0x0000080{ndim} (unsigned bytes, {ndim} dims), "
            f"got {raw[:4].hex() or 'an empty file'}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: corrupt IDX file: truncated header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in dims:
        raise DataError(f"{path}: corrupt IDX file: dimensions {dims} hold no data")
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DataError(f"{path}: corrupt IDX file: dimensions {dims} need {expected} bytes, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_source(path: Path) -> _Source:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if re.search(r"train-images-idx3-ubyte(\.gz)?$", p.name))
        if not found:
            raise DataError(f"{path}: no *train-images-idx3-ubyte[.gz] file in this folder")
        stems = {p.name.removesuffix(".gz") for p in found}
        if len(stems) > 1:
            raise DataError(f"{path}: several IDX training sets {sorted(stems)}: pass one images file as the path")
        images_file = found[0]
    else:
        images_file = path
    if "images-idx3-ubyte" not in images_file.name:
        raise DataError(f"{images_file}: expected an IDX images file named *-images-idx3-ubyte[.gz]")
    label_name = images_file.name.replace("images-idx3-ubyte", "labels-idx1-ubyte")
    candidates = [images_file.parent / label_name, images_file.parent / label_name.removesuffix(".gz"),
                  images_file.parent / (label_name.removesuffix(".gz") + ".gz")]
    labels_file = next((c for c in candidates if c.is_file()), None)
    if labels_file is None:
        raise DataError(f"{images_file}: the labels file {candidates[0]} (or .gz) is missing")
    images = _parse_idx(images_file, 3)[..., None]
    labels = _parse_idx(labels_file, 1).astype(np.int64)
    if len(labels) != len(images):
        raise DataError(f"{labels_file}: {len(labels)} labels for {len(images)} images in {images_file}")
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{images_file}: expected square images, got {images.shape[1]}x{images.shape[2]}")
    names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return _Source(str(images_file), labels, names, _array_reader(images), int(images.shape[1]))


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _load_npz_member(file: Path, key: str) -> np.ndarray:
    try:
        with np.load(file, allow_pickle=False) as npz:
            if key not in npz.files:
                raise DataError(f"{file}: corrupt downsampled-ImageNet batch: no {key!r} array (has {npz.files})")
            return npz[key]
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc) and not zipfile.is_zipfile(file):
            raise DataError(f"{file}: not a readable .npz file (not a zip archive; the pickled release is not "
                            "supported)") from None
        if "pickle" in str(exc):
            raise DataError(
                f"{file}: holds object (pickled) arrays, which mixnas never loads; expected uint8 'data' and integer "
                "'labels' arrays (the pickled release of downsampled ImageNet is not supported)"
            ) from None
        raise DataError(f"{file}: not a readable .npz file: {' '.join(str(exc).split())}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{file}: not a readable .npz file (the pickled release is not supported): {exc}") from None


def _npz_source(path: Path) -> _Source:
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if re.fullmatch(r"train_data_batch_\d+\.npz", p.name)), key=_natural_key)
        if not files:
            raise DataError(f"{path}: no train_data_batch_N.npz file in this folder")
    else:
        files = [path]
    labels_per_file = []
    for file in files:
        raw = _load_npz_member(file, "labels").astype(np.int64).ravel()
        if raw.size == 0:
            raise DataError(f"{file}: downsampled-ImageNet batch has no labels")
        if raw.min() < 1:
            raise DataError(f"{file}: labels are 1-based in downsampled ImageNet, found {int(raw.min())}")
        labels_per_file.append(raw - 1)
    labels = np.concatenate(labels_per_file)
    offsets = np.cumsum([0] + [len(lab) for lab in labels_per_file])
    side = _npz_side(files[0])

    def read(indices: np.ndarray, resolution: int) -> np.ndarray:
        parts = []
        for i, file in enumerate(files):
            lo, hi = np.searchsorted(indices, [offsets[i], offsets[i + 1]])
            if lo == hi:
                continue
            data = _load_npz_member(file, "data")
            if data.ndim != 2 or data.shape[1] != 3 * side * side or len(data) != offsets[i + 1] - offsets[i] or data.dtype != np.uint8:
                raise DataError(
                    f"{file}: corrupt downsampled-ImageNet batch: expected 'data' of uint8 rows of 3*{side}*{side} "
                    f"bytes, one per label ({offsets[i + 1] - offsets[i]}), got {data.dtype} {data.shape}"
                )
            rows = data[indices[lo:hi] - offsets[i]]
            parts.append(resize_images(rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1), resolution))
        return np.concatenate(parts)

    names = tuple(str(i + 1) for i in range(int(labels.max()) + 1))  # the release's own 1-based class numbers
    return _Source(str(path), labels, names, read, side)


def _npz_side(file: Path) -> int:
    shape = _load_npz_member(file, "data").shape
    side = int(round((shape[-1] / 3) ** 0.5)) if len(shape) == 2 else 0
    if side < 1 or 3 * side * side != shape[-1]:
        raise DataError(f"{file}: corrupt downsampled-ImageNet batch: 'data' rows of {shape[-1:]} bytes are not 3*s*s")
    return side


# --- image folders ----------------------------------------------------------------------------------------------
def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _class_folder_root(path: Path) -> Path | None:
    """``path`` if its subfolders hold images, else ``path/train`` if that does (the ImageNet layout), else None."""
    for root in (path, path / "train"):
        if not root.is_dir():
            continue
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            with os.scandir(sub) as it:
                if any(e.is_file() and _is_image(e.name) for e in it):
                    return root
    return None


def _folder_source(path: Path) -> _Source:
    if not path.is_dir():
        raise DataError(f"{path}: an image folder data set must be a folder of class subfolders")
    root = _class_folder_root(path)
    if root is None:
        raise DataError(f"{path}: no class subfolder holds .jpg/.jpeg/.png images")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        with os.scandir(class_dir) as it:
            names = sorted(e.name for e in it if e.is_file() and _is_image(e.name))
        if not names:
            raise DataError(f"{class_dir}: empty class: no .jpg/.jpeg/.png images in this class folder")
        files.extend(f"{class_dir.name}/{n}" for n in names)
        labels.extend([label] * len(names))

    def read(indices: np.ndarray, resolution: int) -> np.ndarray:
        raise AssertionError("image folders are read through _decode_files")  # pragma: no cover

    return _Source(str(root), np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs), read, None, tuple(files))


def decode_image(path: Path, resolution: int) -> np.ndarray:
    """Decode one JPEG / PNG file: RGB, short side resized to ``resolution``, centre crop; uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced DCT scale, still >= resolution
            im = im.convert("RGB")
            w, h = im.size
            scale = resolution / min(w, h)
            size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)  # Pillow widens the filter when shrinking (antialiased)
            left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image: {exc}") from None


def _decode_files(root: Path, files: Sequence[str], resolution: int, workers: int | None, out_file: Path) -> np.ndarray:
    """Decode ``files`` into a uint8 ``.npy`` at ``out_file`` (written atomically) and return it memory-mapped.

    Images go straight into the memory-mapped file, so a subset larger than the machine's memory (ImageNet at
    224 px is ~190 GB) decodes in bounded memory.
    """
    workers = workers or os.cpu_count() or 1
    logger.info("decoding %d images from %s at %dx%d with %d threads", len(files), root, resolution, resolution, workers)
    shape = (len(files), resolution, resolution, 3)
    with _atomic_npy(out_file, shape) as out:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding and resizing
            for i, image in enumerate(pool.map(lambda f: decode_image(root / f, resolution), files, chunksize=64)):
                out[i] = image
    return np.load(out_file, mmap_mode="r")


@contextlib.contextmanager
def _atomic_npy(file: Path, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A writable memory-mapped uint8 ``.npy`` that appears at ``file`` only once it is complete."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=".npy")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        yield out
        out.flush()
        del out
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _cache_lock(file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<file>.lock`` while checking for and writing ``file``.

    Trials on one machine start together (``max_concurrent`` of them, each in its own process): without the lock
    each would decode the same image folder. With it, the first decodes and the others wait, then find the cache.
    The lock file stays (empty); removing it would let a third process lock a different file of the same name.
    """
    with exclusive_lock(file, "writing it"):
        yield


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIXNAS_CACHE_DIR") or Path.home() / ".cache" / "mixnas" / "datasets")


def _cache_key(root: str, resolution: int, files: Sequence[str]) -> str:
    content = {"version": CACHE_VERSION, "root": str(Path(root).resolve()), "resolution": resolution, "files": list(files)}
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()[:24]


def _read_cache(file: Path, count: int, resolution: int) -> np.ndarray | None:
    """The cached images, memory-mapped, or None (with a warning) if the file is unreadable or does not fit."""
    try:
        images = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("%s: unreadable cache file (%s); decoding again", file, exc)
        return None
    if images.shape != (count, resolution, resolution, 3) or images.dtype != np.uint8:
        logger.warning("%s: cache file does not match its key; decoding again", file)
        return None
    return images


def memory_budget() -> int:
    """Bytes of images a proxy data set may hold in memory (``MIXNAS_DATA_MEMORY_BYTES``, else half the RAM)."""
    value = os.environ.get("MIXNAS_DATA_MEMORY_BYTES")
    if value:
        try:
            return int(float(value))
        except ValueError:
            raise DataError(f"MIXNAS_DATA_MEMORY_BYTES: expected a number of bytes, got {value!r}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        return 8 << 30


def _split_on_disk(images: np.ndarray, train: np.ndarray, val: np.ndarray, cache_file: Path) -> np.ndarray:
    """The rows ``train`` then ``val`` of a memory-mapped set, as one memory-mapped file next to its cache.

    Training reads random batches of the training rows; with the split contiguous on disk both splits are plain
    slices (views), so a data set larger than memory is paged in by the OS instead of copied into RAM.
    """
    order = np.concatenate([train, val])
    digest = hashlib.sha256(order.astype(np.int64).tobytes()).hexdigest()[:16]
    file = cache_file.with_name(f"{cache_file.stem}.split-{digest}.npy")
    with _cache_lock(file):
        cached = _read_cache(file, len(order), images.shape[1]) if file.is_file() else None
        if cached is not None:
            return cached
        logger.info("writing the train / held-out split of %d images to %s", len(order), file)
        with _atomic_npy(file, (len(order), *images.shape[1:])) as out:
            for start in range(0, len(order), 4096):
                out[start : start + 4096] = images[order[start : start + 4096]]
        return np.load(file, mmap_mode="r")


# ----------------------------------------------------------------------------------------------------------------
# Subset and split
# ----------------------------------------------------------------------------------------------------------------
def select_subset(
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    classes: int | Sequence[str] | None,
    images_per_class: int | None,
    seed: int,
    where: str,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Choose classes and images per class.

    Returns:
        (sorted indices into ``labels``, labels of those indices renumbered 0..k-1, names of the k classes).
    """
    n = len(class_names)
    if classes is None:
        chosen = np.arange(n)
    elif isinstance(classes, (int, np.integer)):
        if not 1 <= classes <= n:
            raise DataError(f"{where}: classes: expected a count in 1..{n}, got {classes}")
        chosen = np.sort(np.random.default_rng([seed, 1]).choice(n, size=int(classes), replace=False))
    else:
        index = {name: i for i, name in enumerate(class_names)}
        missing = [c for c in classes if c not in index]
        if missing:
            shown = ", ".join(list(class_names)[:12]) + (", ..." if n > 12 else "")
            raise DataError(f"{where}: unknown classes {missing}; the data set has {n}: {shown}")
        chosen = np.asarray(sorted(index[c] for c in classes))
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng([seed, 2])
    picked = []
    for c in chosen:
        members = order[starts[c] : starts[c + 1]]
        if members.size == 0:
            raise DataError(f"{where}: empty class {class_names[c]!r}: it has no images")
        if images_per_class is not None and members.size > images_per_class:
            members = rng.choice(members, size=images_per_class, replace=False)
        picked.append(members)
    indices = np.sort(np.concatenate(picked))
    remap = np.full(n, -1, dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    return indices, remap[labels[indices]], tuple(class_names[c] for c in chosen)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, val) index arrays; each class holds out ``round(val_fraction * n)`` images, at least 1.

    A class with a single image stays in training. The split depends only on the labels and ``seed``.
    """
    rng = np.random.default_rng([seed, 3])
    train, val = [], []
    for c in range(int(labels.max()) + 1 if labels.size else 0):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = 0 if members.size < 2 else min(members.size - 1, max(1, round(val_fraction * members.size)))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
def load_images(spec: DataSpec) -> ImageSet:
    """Read the subset ``spec`` describes, at its resolution (no split, no normalisation, no in-process cache)."""
    source, fmt = _open_source(spec)
    resolution = spec.resolution or source.native_resolution
    if resolution is None:
        if fmt != "folder":
            resolution = DEFAULT_RESOLUTION
        else:
            raise DataError(f"{source.where}: an image folder needs a resolution to resize its images to")
    indices, labels, names = select_subset(
        source.labels, source.class_names, classes=None if fmt == "synthetic" else spec.classes,
        images_per_class=spec.images_per_class, seed=spec.seed, where=source.where,
    )
    if fmt != "folder":
        return ImageSet(source.read(indices, resolution), labels, names)
    files = [source.files[i] for i in indices]
    cache = Path(spec.cache_dir).expanduser() if spec.cache_dir else default_cache_dir()
    cache_file = cache / f"{_cache_key(source.where, resolution, files)}.npy"
    try:
        return _cached_images(source, files, resolution, spec.workers, cache_file, labels, names)
    except OSError as exc:
        raise DataError(f"cache folder {_shown(cache)}: cannot write the decoded images ({os_reason(exc)})") from None


def _cached_images(
    source: _Source, files: list[str], resolution: int, workers: int | None, cache_file: Path,
    labels: np.ndarray, names: tuple[str, ...],
) -> ImageSet:
    with _cache_lock(cache_file):
        if cache_file.is_file():
            hit = _read_cache(cache_file, len(files), resolution)
            if hit is not None:
                logger.info("%s: %d images from cache %s", source.where, len(files), cache_file)
                return ImageSet(hit, labels, names, decoded=0, cache_file=str(cache_file))
        images = _decode_files(Path(source.where), files, resolution, workers, cache_file)
    return ImageSet(images, labels, names, decoded=len(files), cache_file=str(cache_file))


def _channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        squares += (x * x).sum(0)
    count = len(images) * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


@functools.lru_cache(maxsize=4)
def load_proxy_data(spec: DataSpec) -> ProxyData:
    """Load, subset, split and describe a proxy task; the last few specs stay in memory for later trials.

    Call ``load_proxy_data.cache_clear()`` to drop them.
    """
    images = load_images(spec)
    pixels = images.images
    if pixels.shape[3] == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    train, val = stratified_split(images.labels, spec.val_fraction, spec.seed)
    if val.size == 0:
        raise DataError(f"{spec.source}: too few images to hold out a validation split ({len(images.labels)} in all)")
    if spec.normalize == "dataset":
        mean, std = _channel_stats(pixels[train])
    elif spec.normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    in_memory = images.cache_file is None or pixels.nbytes <= memory_budget()
    if in_memory:
        train_images = torch.from_numpy(np.ascontiguousarray(pixels[train]))
        val_images = torch.from_numpy(np.ascontiguousarray(pixels[val]))
    else:  # larger than the memory budget: memory-mapped views of a split-ordered file (read-only, never copied)
        ordered = _split_on_disk(pixels, train, val, Path(images.cache_file))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            train_images = torch.from_numpy(ordered[: len(train)])
            val_images = torch.from_numpy(ordered[len(train) :])
    data = ProxyData(
        train_images=train_images,
        train_labels=torch.from_numpy(images.labels[train].copy()),
        val_images=val_images,
        val_labels=torch.from_numpy(images.labels[val].copy()),
        in_memory=in_memory,
        class_names=images.class_names,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        spec=spec,
        decoded=images.decoded,
    )
    logger.info("proxy data %s", data.summary())
    return data
