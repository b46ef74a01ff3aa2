"""`npz:PATH`: a user's own labelled images in one .npz file.

Keys: `x` (N,H,W) or (N,H,W,C), uint8 0..255 or float in [0,1]; `y` (N,) integer labels (possibly
noisy); optional `y_true` (N,); optional `x_test` + `y_test` (else a deterministic stratified 10%
test split is carved from the training data); optional `class_names` (K,) strings.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.split import stratified_split
from jaxdistill.errors import DataError

TEST_FRACTION = 0.1
SPLIT_SEED = 0
_KNOWN = ("x", "y", "y_true", "x_test", "y_test", "class_names")


def _images(path: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{path}: key {key!r} has shape {x.shape} (ndim {x.ndim}); allowed (N,H,W) or (N,H,W,C)")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DataError(f"{path}: key {key!r} has shape {x.shape}; it must hold at least one non-empty image")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: key {key!r} has dtype {x.dtype}; allowed uint8 (0..255) or float in [0,1]")
    if not np.all(np.isfinite(x)):
        n_bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{path}: key {key!r} holds {n_bad} NaN/inf value(s); allowed finite floats in [0,1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{path}: key {key!r} has values in [{lo:g}, {hi:g}]; allowed float in [0,1] "
                        f"(or uint8 0..255)")
    return x.astype(np.float32)


def _labels(path: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{path}: key {key!r} has shape {y.shape}; expected ({n},) to match its images")
    if np.issubdtype(y.dtype, np.floating):
        # Whole-number floats (a common numpy accident) are accepted; anything else is not a class id.
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            bad = y[~np.isfinite(y) | (y != np.round(y))][0]
            raise DataError(f"{path}: key {key!r} holds non-integer label {bad.item()!r}; allowed integers >= 0")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{path}: key {key!r} has dtype {y.dtype}; allowed integer class ids >= 0")
    if y.size and y.min() < 0:
        raise DataError(f"{path}: key {key!r} holds negative label {y.min().item()!r}; allowed integers >= 0")
    if y.size and y.max() > np.iinfo(np.int32).max:
        raise DataError(f"{path}: key {key!r} holds label {y.max().item()!r}; allowed 0..{np.iinfo(np.int32).max}")
    return y.astype(np.int32)


MAX_CLASSES = 100_000  # a stray huge label must not become a million-class data set


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load and validate a user's .npz (see the module docstring for the keys)."""
    path = os.fspath(path)
    if not path:
        raise DataError("npz: empty path; use 'npz:/path/to/file.npz'")
    if not os.path.isfile(path):
        raise DataError(f"npz:{path}: no such file")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds one .npy array {getattr(f, 'shape', '')}, not an .npz archive; "
                            f"save with np.savez(path, x=..., y=...)")
        with f:
            raw = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read as .npz without pickle ({type(e).__name__}: {e}); "
                        f"save plain arrays with np.savez(path, x=..., y=...)") from None
    for key in ("x", "y"):
        if key not in raw:
            raise DataError(f"{path}: missing key {key!r}; found {sorted(raw)}; required 'x', 'y', "
                            f"optional 'y_true', 'x_test', 'y_test', 'class_names'")
    if ("x_test" in raw) != ("y_test" in raw):
        have, lack = ("x_test", "y_test") if "x_test" in raw else ("y_test", "x_test")
        raise DataError(f"{path}: key {have!r} given without {lack!r}; give both or neither")
    x = _images(path, "x", raw["x"])
    y = _labels(path, "y", raw["y"], x.shape[0])
    y_true = _labels(path, "y_true", raw["y_true"], x.shape[0]) if "y_true" in raw else None
    meta = {"source": "npz", "path": os.path.abspath(path),
            "ignored_keys": sorted(set(raw) - set(_KNOWN))}
    if "x_test" in raw:
        x_test = _images(path, "x_test", raw["x_test"])
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: key 'x_test' images are {x_test.shape[1:]} but 'x' images are {x.shape[1:]}; "
                            f"they must match")
        y_test = _labels(path, "y_test", raw["y_test"], x_test.shape[0])
        x_train, y_train, y_train_true = x, y, y_true
        meta["test_split"] = "given (x_test, y_test)"
    else:
        n = x.shape[0]
        if n < 2:
            raise DataError(f"{path}: key 'x' has {n} image(s); need >= 2 to carve a test split (or give x_test/y_test)")
        n_test = max(1, int(round(TEST_FRACTION * n)))
        tr, te = stratified_split(y, n_test, seed=SPLIT_SEED)
        x_train, y_train, x_test = x[tr], y[tr], x[te]
        # Score on the true labels when the file has them; otherwise the given ones are all there is.
        y_test = (y_true if y_true is not None else y)[te]
        y_train_true = y_true[tr] if y_true is not None else None
        meta["test_split"] = (f"carved: stratified {len(te)}/{n} ({TEST_FRACTION:.0%}) of 'x' by 'y', seed {SPLIT_SEED}; "
                              f"test labels from {'y_true' if y_true is not None else 'y'}")
        meta["test_index"] = te
    labels = [y, y_test] + ([y_true] if y_true is not None else [])
    num_classes = int(max(int(a.max()) for a in labels if a.size)) + 1
    if num_classes > MAX_CLASSES:
        raise DataError(f"{path}: label {num_classes - 1} implies {num_classes} classes; allowed labels "
                        f"0..{MAX_CLASSES - 1} (labels must be class indices)")
    if "class_names" in raw:
        names = raw["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US" or names.shape[0] < num_classes:
            raise DataError(f"{path}: key 'class_names' has shape {names.shape} dtype {names.dtype}; allowed a 1-D "
                            f"string array with >= {num_classes} names (one per class id)")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        num_classes = len(class_names)
    else:
        class_names = [str(i) for i in range(num_classes)]
    name = "npz:" + os.path.basename(path)
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   num_classes=num_classes, class_names=class_names, y_train_true=y_train_true, meta=meta)
