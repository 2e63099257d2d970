"""The readers of real on-disk formats: labels up front, pixels on demand (so a subset of ImageNet decodes only the subset).

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

import gzip
import logging
import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mixnas.data.spec import BUILTIN_SOURCES, DEFAULT_RESOLUTION, DataSpec, FORMATS, IMAGE_SUFFIXES, MAX_FILE_BYTES, MAX_SYNTHETIC_BYTES, SYNTHETIC_CLASSES, SYNTHETIC_IMAGES_PER_CLASS
from mixnas.errors import DataError
from mixnas.textio import os_reason, path_kind

logger = logging.getLogger(__name__)

_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_LABEL_BYTES = {"cifar10": 1, "cifar100": 2}
_IDX_UBYTE = 0x08

# ----------------------------------------------------------------------------------------------------------------
# Sources: labels up front, pixels on demand (so a subset of ImageNet decodes only the subset)
# ----------------------------------------------------------------------------------------------------------------
Reader = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True, eq=False)
class Source:
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
        raise DataError(f"{shown_path(path)}: no such file or folder")
    if kind == "other":
        raise DataError(f"{shown_path(path)}: not a regular file or folder")
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


def open_source(spec: DataSpec) -> tuple[Source, str]:
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
        raise DataError(f"{shown_path(path)}: no such file or folder")
    if kind == "other":
        raise DataError(f"{shown_path(path)}: not a regular file or folder")
    opener = {"folder": _folder_source, "npz": _npz_source, "idx": _idx_source}.get(fmt, _cifar_reader(fmt))
    try:
        return opener(path), fmt
    except OSError as exc:  # listing a folder, stat of a member (permissions, a vanished file)
        where = exc.filename if exc.filename is not None else path
        raise DataError(f"{shown_path(Path(str(where)))}: cannot read ({os_reason(exc)})") from None


def shown_path(path: Path) -> str:
    """A path for an error message, shortened when absurdly long."""
    text = str(path)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} characters)"


def _cifar_reader(fmt: str) -> Callable[[Path], Source]:
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


def _digits_source() -> Source:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError("the built-in 'digits' data set needs scikit-learn: pip install 'mixnas[dev]'") from exc
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, (N, 8, 8, 1)
    names = tuple(str(int(n)) for n in bunch.target_names)
    return Source("digits", bunch.target.astype(np.int64), names, _array_reader(images), None)


def _synthetic_source(spec: DataSpec) -> Source:
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
    return Source("synthetic", labels, names, read, None)


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


def _cifar_source(path: Path, fmt: str) -> Source:
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
    return Source(str(path), labels, names, _array_reader(images), 32)


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


def _idx_source(path: Path) -> Source:
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
    return Source(str(images_file), labels, names, _array_reader(images), int(images.shape[1]))


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


def _npz_source(path: Path) -> Source:
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
    return Source(str(path), labels, names, read, side)


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


def _folder_source(path: Path) -> Source:
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
        raise AssertionError("image folders are read through decode_files")  # pragma: no cover

    return Source(str(root), np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs), read, None, tuple(files))


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
