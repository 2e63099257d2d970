"""What a data set is: :class:`DataSpec` (source, format, subset, split, resolution) and the limits and
choices it is checked against. No torch here: the CLI reads these choices without importing it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixnas import bounds
from mixnas.confignode import dataclass_fields
from mixnas.errors import DataError
from mixnas.search_space.arch import MAX_CLASSES


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

# Bounds on a proxy task (sanity, not policy): a typo must fail at once, not allocate without end.
MAX_DATA_RESOLUTION = 1024
MAX_IMAGES_PER_CLASS = 10_000_000
MAX_WORKERS = 1024
# The range of every numeric field (mixnas.bounds): checked at construction, read by the command line's options.
DATA_RANGES = {
    "resolution": bounds.integer(1, MAX_DATA_RESOLUTION, optional=True),
    "images_per_class": bounds.integer(2, MAX_IMAGES_PER_CLASS, optional=True),
    "val_fraction": bounds.number(0, 1, low_open=True, high_open=True),
    "seed": bounds.integer(0, 2**64 - 1),
    "crop_padding": bounds.integer(0, MAX_DATA_RESOLUTION),
    "workers": bounds.integer(1, MAX_WORKERS, optional=True),
}
CLASS_COUNT = bounds.integer(2, MAX_CLASSES)  # a count of classes (one class cannot rank architectures)
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
        if isinstance(self.classes, (list, tuple)):
            names = tuple(str(c) for c in self.classes)
            if len(names) < 2 or len(set(names)) != len(names):
                raise DataError(f"{where}: classes: expected at least 2 distinct class names (one class cannot rank "
                                f"architectures), got {list(self.classes)!r}")
            object.__setattr__(self, "classes", names)
        elif self.classes is not None and not CLASS_COUNT.contains(_plain(self.classes)):
            raise DataError(f"{where}: classes: expected {CLASS_COUNT.describe()} (one class cannot rank "
                            f"architectures), a list of names or null, got {self.classes!r}")
        for name, rng in DATA_RANGES.items():
            if not rng.contains(_plain(getattr(self, name))):
                raise DataError(f"{where}: {name}: expected {rng.describe()}, got {getattr(self, name)!r}")
        if self.normalize not in NORMALIZATIONS:
            raise DataError(f"{where}: normalize: expected one of {list(NORMALIZATIONS)}, got {self.normalize!r}")
        if not isinstance(self.flip, bool):
            raise DataError(f"{where}: flip: expected true or false, got {self.flip!r}")


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


def _plain(value: Any) -> Any:
    """A numpy integer as a plain int (a count read from an array is one)."""
    return int(value) if isinstance(value, np.integer) else value


