"""The 8x8 digits (scikit-learn's `load_digits`: 1797 real images), shipped inside jaxdistill (the CPU test bed).

`digits_8x8.npz` holds the images as uint8 0..16 (1797, 8, 8) and the targets (1797,), in
scikit-learn's order, 45 KB compressed; it is read with ``allow_pickle=False``, so the core install
needs no scikit-learn. The data are the UCI "Optical Recognition of Handwritten Digits" set
(Alpaydin & Kaynak, CC BY 4.0) as scikit-learn preprocesses it; tests check it equals `load_digits`.
"""
from __future__ import annotations

from importlib import resources

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.registry import register
from jaxdistill.data.split import stratified_split
from jaxdistill.errors import DataError

DIGITS_TEST = 450   # 1347 train / 450 test, the usual 25% split
DIGITS_SEED = 0


@register("digits", "8x8x1 digits (scikit-learn's load_digits, shipped in the package), 1347/450 stratified split (seed 0), 10 classes")
def load_digits(data_dir=None) -> Dataset:
    """The 8x8 digits scaled 0..16 -> [0, 1], deterministic stratified 1347/450 split."""
    del data_dir  # shipped inside the package
    images, target = digits_arrays()
    x = (images.astype(np.float32) / np.float32(16.0))[..., None]
    y = target.astype(np.int32)
    tr, te = stratified_split(y, DIGITS_TEST, seed=DIGITS_SEED)
    return Dataset(
        name="digits", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], num_classes=10,
        class_names=[str(i) for i in range(10)],
        meta={"source": "jaxdistill/data/digits_8x8.npz (= sklearn.datasets.load_digits)",
              "split": f"stratified {len(tr)}/{len(te)}, seed {DIGITS_SEED}"},
    )


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) uint8 in 0..16, target (1797,) uint8) from the file shipped in the package."""
    try:
        with resources.files("jaxdistill.data").joinpath("digits_8x8.npz").open("rb") as f, \
                np.load(f, allow_pickle=False) as z:
            images, target = z["images"], z["target"]
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise DataError(f"digits: the shipped file jaxdistill/data/digits_8x8.npz is missing or damaged "
                        f"({type(e).__name__}: {e}); reinstall jaxdistill") from None
    if images.shape != (1797, 8, 8) or target.shape != (1797,):
        raise DataError(f"digits: shipped arrays have shapes {images.shape}, {target.shape}; "
                        f"expected (1797, 8, 8), (1797,)")
    return images, target
