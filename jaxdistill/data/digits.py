"""scikit-learn's 8x8 digits: 1797 real images shipped inside the package (the CPU test bed)."""
from __future__ import annotations

import numpy as np

from jaxdistill.data.registry import Dataset, register
from jaxdistill.data.split import stratified_split
from jaxdistill.errors import DataError

DIGITS_TEST = 450   # 1347 train / 450 test, the usual 25% split
DIGITS_SEED = 0


@register("digits", "scikit-learn digits 8x8x1, 1347/450 stratified split (seed 0), 10 classes")
def load_digits(data_dir=None) -> Dataset:
    """sklearn `load_digits` scaled 0..16 -> [0, 1], deterministic stratified 1347/450 split."""
    del data_dir  # shipped inside scikit-learn
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise DataError(f"digits needs scikit-learn (`pip install scikit-learn`): {e}") from None
    d = _sk_load_digits()
    x = (d.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = d.target.astype(np.int32)
    tr, te = stratified_split(y, DIGITS_TEST, seed=DIGITS_SEED)
    return Dataset(
        name="digits", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], num_classes=10,
        class_names=[str(i) for i in range(10)],
        meta={"source": "sklearn.datasets.load_digits", "split": f"stratified {len(tr)}/{len(te)}, seed {DIGITS_SEED}"},
    )
