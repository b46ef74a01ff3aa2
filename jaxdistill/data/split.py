"""Deterministic, class-stratified index splits (test carving, validation splits, CPU subsets)."""
from __future__ import annotations

import numpy as np

from jaxdistill.errors import ConfigError, DataError


def _as_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"labels must be a 1-D array (N,), got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def stratified_split(y, n_take: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of `y` (N,) into (rest, taken) with `len(taken) == n_take`, stratified by label.

    Each class contributes `n_take * n_c / N` samples, rounded by largest remainder so the total is
    exact (ties go to the lower class id, so the result is deterministic). Within a class the samples
    are picked by `RandomState(seed).permutation`. Both index arrays are returned sorted, so dataset
    order is kept on both sides.
    """
    y = _as_labels(y)
    n = y.shape[0]
    if not 0 <= n_take <= n:
        raise ConfigError(f"cannot take {n_take} of {n} samples; allowed 0..{n}")
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (n_take / max(n, 1))
    alloc = np.floor(quota).astype(np.int64)
    short = n_take - int(alloc.sum())
    if short > 0:
        # Largest remainder; stable sort keeps lower class ids first among equal remainders.
        order = np.argsort(-(quota - alloc), kind="stable")
        alloc[order[:short]] += 1
    rng = np.random.RandomState(seed)
    taken = []
    for c, k in zip(classes, alloc):
        idx = np.flatnonzero(y == c)
        perm = rng.permutation(idx.shape[0])
        taken.append(idx[perm[:k]])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.zeros((0,), np.int64)
    mask = np.ones(n, bool)
    mask[taken_idx] = False
    return np.flatnonzero(mask), taken_idx


def stratified_subset(y, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic class-stratified subset of size `n` of labels `y` (N,)."""
    return stratified_split(y, n, seed)[1]


def class_buckets(y, num_classes: int) -> list[np.ndarray]:
    """Indices of each class: `[np.flatnonzero(y == c) for c in range(num_classes)]`."""
    y = _as_labels(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise DataError(f"label {int(bad)} out of range; allowed 0..{num_classes - 1}")
    order = np.argsort(y, kind="stable")
    bounds = np.searchsorted(y[order], np.arange(num_classes + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(num_classes)]


def check_ipc(y, num_classes: int, ipc: int) -> None:
    """Raise DataError if any class of `y` has fewer than `ipc` samples (distillation needs ipc real images per class)."""
    if int(ipc) < 1:
        raise ConfigError(f"ipc={ipc!r} must be a positive integer; allowed >= 1")
    counts = np.array([b.shape[0] for b in class_buckets(y, num_classes)])
    bad = np.flatnonzero(counts < ipc)
    if bad.size:
        detail = ", ".join(f"class {c}: {counts[c]}" for c in bad[:10])
        more = f" (and {bad.size - 10} more)" if bad.size > 10 else ""
        raise DataError(
            f"ipc={ipc} needs at least {ipc} samples in every class, but {bad.size} class(es) have fewer: "
            f"{detail}{more}; allowed ipc <= {int(counts.min())} for these labels")
