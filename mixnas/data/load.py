"""Loading a :class:`~mixnas.data.spec.DataSpec`: the subset read (from the disk cache where it is there), split,
and kept in-process for the next trials (:func:`load_proxy_data`)."""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from mixnas.data.spec import DEFAULT_RESOLUTION, DataSpec, IMAGENET_MEAN, IMAGENET_STD
from mixnas.data.readers import Source, open_source, shown_path
from mixnas.data.cache import cache_key, cache_lock, decode_files, default_cache_dir, memory_budget, read_cache, split_on_disk
from mixnas.data.split import select_subset, stratified_split
from mixnas.data.sets import ImageSet, ProxyData
from mixnas.errors import DataError
from mixnas.textio import os_reason

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
def load_images(spec: DataSpec) -> ImageSet:
    """Read the subset ``spec`` describes, at its resolution (no split, no normalisation, no in-process cache)."""
    source, fmt = open_source(spec)
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
    cache_file = cache / f"{cache_key(source.where, resolution, files)}.npy"
    try:
        return _cached_images(source, files, resolution, spec.workers, cache_file, labels, names)
    except OSError as exc:
        raise DataError(f"cache folder {shown_path(cache)}: cannot write the decoded images ({os_reason(exc)})") from None


def _cached_images(
    source: Source, files: list[str], resolution: int, workers: int | None, cache_file: Path,
    labels: np.ndarray, names: tuple[str, ...],
) -> ImageSet:
    with cache_lock(cache_file):
        if cache_file.is_file():
            hit = read_cache(cache_file, len(files), resolution)
            if hit is not None:
                logger.info("%s: %d images from cache %s", source.where, len(files), cache_file)
                return ImageSet(hit, labels, names, decoded=0, cache_file=str(cache_file))
        images = decode_files(Path(source.where), files, resolution, workers, cache_file)
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


def check_can_rank(images: ImageSet, spec: DataSpec) -> None:
    """A proxy task ranks architectures only with at least 2 classes (one class scores top-1 1.0 for every network)
    and a held-out image of every class, so each class needs 2 images (one to train on, one held out)."""
    if len(images.class_names) < 2:
        raise DataError(f"{spec.source}: {len(images.class_names)} class ({', '.join(images.class_names)}): a proxy "
                        "task needs at least 2 classes to rank architectures (one class scores top-1 1.0 for all)")
    counts = np.bincount(images.labels, minlength=len(images.class_names))
    few = [name for name, n in zip(images.class_names, counts) if n < 2]
    if few:
        raise DataError(f"{spec.source}: class {few[0]!r} has {int(counts[images.class_names.index(few[0])])} "
                        f"image(s){f' (and {len(few) - 1} more classes)' if len(few) > 1 else ''}: every class needs "
                        "at least 2, one to train on and one held out")


@functools.lru_cache(maxsize=4)
def load_proxy_data(spec: DataSpec) -> ProxyData:
    """Load, subset, split and describe a proxy task; the last few specs stay in memory for later trials.

    Call ``load_proxy_data.cache_clear()`` to drop them.
    """
    images = load_images(spec)
    pixels = images.images
    if pixels.shape[3] == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    check_can_rank(images, spec)
    train, val = stratified_split(images.labels, spec.val_fraction, spec.seed)
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
        ordered = split_on_disk(pixels, train, val, Path(images.cache_file))
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
