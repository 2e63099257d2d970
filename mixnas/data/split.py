"""The proxy subset (classes and images per class) and the stratified held-out split, both seeded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixnas.errors import DataError


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
