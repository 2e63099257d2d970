"""The disk cache of decoded images: one memory-mappable uint8 ``.npy`` per (folder, resolution, subset), written
atomically under a lock (trials of one machine start together), and the train / held-out split written next to it
when a set exceeds :func:`memory_budget`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mixnas.data.spec import CACHE_VERSION
from mixnas.data.readers import decode_image
from mixnas.errors import DataError
from mixnas.textio import exclusive_lock, file_mode

logger = logging.getLogger(__name__)

def decode_files(root: Path, files: Sequence[str], resolution: int, workers: int | None, out_file: Path) -> np.ndarray:
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
    os.fchmod(fd, file_mode(file))  # readable as open() would make it, not the temporary file's 0600
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
def cache_lock(file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<file>.lock`` while checking for and writing ``file``.

    Trials on one machine start together (``max_concurrent`` of them, each in its own process): without the lock
    each would decode the same image folder. With it, the first decodes and the others wait, then find the cache.
    The lock file stays (empty); removing it would let a third process lock a different file of the same name.
    """
    with exclusive_lock(file, "writing it"):
        yield


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIXNAS_CACHE_DIR") or Path.home() / ".cache" / "mixnas" / "datasets")


def cache_key(root: str, resolution: int, files: Sequence[str]) -> str:
    content = {"version": CACHE_VERSION, "root": str(Path(root).resolve()), "resolution": resolution, "files": list(files)}
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()[:24]


def read_cache(file: Path, count: int, resolution: int) -> np.ndarray | None:
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


def split_on_disk(images: np.ndarray, train: np.ndarray, val: np.ndarray, cache_file: Path) -> np.ndarray:
    """The rows ``train`` then ``val`` of a memory-mapped set, as one memory-mapped file next to its cache.

    Training reads random batches of the training rows; with the split contiguous on disk both splits are plain
    slices (views), so a data set larger than memory is paged in by the OS instead of copied into RAM.
    """
    order = np.concatenate([train, val])
    digest = hashlib.sha256(order.astype(np.int64).tobytes()).hexdigest()[:16]
    file = cache_file.with_name(f"{cache_file.stem}.split-{digest}.npy")
    with cache_lock(file):
        cached = read_cache(file, len(order), images.shape[1]) if file.is_file() else None
        if cached is not None:
            return cached
        logger.info("writing the train / held-out split of %d images to %s", len(order), file)
        with _atomic_npy(file, (len(order), *images.shape[1:])) as out:
            for start in range(0, len(order), 4096):
                out[start : start + 4096] = images[order[start : start + 4096]]
        return np.load(file, mmap_mode="r")
