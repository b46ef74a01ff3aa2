"""The name -> loader registry behind `load_dataset`, and the helpers the loaders share.

The `Dataset` record every loader returns lives in `data/dataset.py`; `npz:PATH` goes to `data/npz.py`.
The loader modules (idx, digits, tfds_sources, tiny_imagenet) import this one and register themselves.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.npz import load_npz
from jaxdistill.errors import DataError

ENV_DATA_DIR = "JAXDISTILL_DATA_DIR"


_LOADERS: dict[str, Callable[..., Dataset]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str = ""):
    """Decorator: register `fn(data_dir=None) -> Dataset` under `name`."""
    def deco(fn):
        _LOADERS[name] = fn
        _DESCRIPTIONS[name] = description
        return fn
    return deco


def list_datasets() -> list[str]:
    """Names `load_dataset` accepts (plus the `npz:PATH` form)."""
    return sorted(_LOADERS) + ["npz:PATH"]


def describe_datasets() -> dict[str, str]:
    """Name -> one-line description."""
    return {**{k: _DESCRIPTIONS[k] for k in sorted(_LOADERS)}, "npz:PATH": "your own data in an .npz file"}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a registered data set, or `npz:PATH` for a user's own file.

    Images come back float32 NHWC in [0, 1], labels int32. `data_dir` overrides where files are looked
    for (then `$JAXDISTILL_DATA_DIR`, then each source's defaults).
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {name!r}; allowed: {', '.join(list_datasets())}")
    if name.startswith("npz:"):
        return load_npz(name[len("npz:"):])
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(list_datasets())}")
    return _LOADERS[name](data_dir=data_dir)


def candidate_dirs(data_dir, *subdirs: str, defaults: tuple[str, ...] = ()) -> list[str]:
    """Directories to search, in order: data_dir (+subdirs), $JAXDISTILL_DATA_DIR (+subdirs), defaults."""
    out = []
    for base in (data_dir, os.environ.get(ENV_DATA_DIR) or None):
        if base is None:
            continue
        base = os.fspath(base)
        out.append(base)
        out.extend(os.path.join(base, s) for s in subdirs)
    out.extend(defaults)
    # De-duplicate, keeping order.
    return list(dict.fromkeys(out))


def to_float_images(x: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, C) 0..255 -> float32 [0, 1]."""
    return (np.asarray(x, np.uint8).astype(np.float32) / np.float32(255.0))
