"""The Dataset record and the name -> loader registry behind `load_dataset`."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from jaxdistill.errors import DataError

ENV_DATA_DIR = "JAXDISTILL_DATA_DIR"


@dataclasses.dataclass
class Dataset:
    """A labelled image data set as loaded, before any label noise.

    x_train: (N, H, W, C) float32 in [0, 1];  y_train: (N,) int32 (the given labels: clean for the
    benchmark sets, possibly noisy for a user's npz);  x_test, y_test likewise (M, H, W, C), (M,).
    natural_labels: variant -> (N,) int32 human labels aligned with x_train (CIFAR-N).
    y_train_true: (N,) int32 true labels when the given ones may be noisy (npz `y_true`), else None.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    natural_labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    y_train_true: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])

    def __post_init__(self):
        # One place that enforces the invariants every loader promises.
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise DataError(f"{self.name}: x_{split} must be (N,H,W,C), got shape {x.shape}")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{self.name}: x_{split} has {x.shape[0]} images but y_{split} has {y.shape[0]} labels")
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise DataError(f"{self.name}: test images {self.x_test.shape[1:]} differ from train images "
                            f"{self.x_train.shape[1:]}")
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")


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
        from jaxdistill.data.npz import load_npz
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
