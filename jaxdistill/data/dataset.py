"""The `Dataset` record: a labelled image data set as loaded, before any label noise.

Every loader returns one (the sources that idx, digits, tfds_sources and tiny_imagenet register in
`data/registry.py`, and `npz:PATH` in `data/npz.py`); `make_noisy_data` (`data/noisy.py`) adds label noise.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxdistill.errors import DataError


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
