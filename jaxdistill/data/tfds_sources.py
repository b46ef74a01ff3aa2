"""tfds-backed sources: CIFAR-10/100 and the CIFAR-N natural-noise label sets.

TensorFlow and tfds are imported only inside these loaders (they are heavy), with GPUs hidden from
TF so it never grabs accelerator memory that JAX needs.
"""
from __future__ import annotations

import os
import re

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.registry import ENV_DATA_DIR, register, to_float_images
from jaxdistill.errors import DataError

ENV_DOWNLOAD = "JAXDISTILL_TFDS_DOWNLOAD"

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# tfds feature key -> jaxdistill natural-noise variant name.
CIFAR10N_KEYS = {"aggre_label": "aggre", "worse_label": "worse", "random_label1": "random1",
                 "random_label2": "random2", "random_label3": "random3"}
CIFAR100N_KEYS = {"noise_label": "noisy"}

_HOWTO = {
    "cifar10_n": ("CIFAR-10N needs a manual download: get side_info_cifar10N.csv, CIFAR-10_human_ordered.npy and "
                  "image_order_c10.npy from https://github.com/UCSC-REAL/cifar-10-100n, convert the .npy to "
                  "CIFAR-10_human_annotations.csv as tfds' Cifar10N.MANUAL_DOWNLOAD_INSTRUCTIONS says, put them in "
                  "<data_dir>/downloads/manual/ and run `tfds build cifar10_n --data_dir <data_dir>` on a machine "
                  "with internet"),
    "cifar100_n": ("CIFAR-100N needs a manual download: get the CIFAR-100N files from "
                   "https://github.com/UCSC-REAL/cifar-10-100n as tfds' Cifar100N.MANUAL_DOWNLOAD_INSTRUCTIONS says, "
                   "put them in <data_dir>/downloads/manual/ and run `tfds build cifar100_n --data_dir <data_dir>` "
                   "on a machine with internet"),
}


def _import_tfds():
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise DataError(f"tfds data sets need tensorflow and tensorflow-datasets (`pip install tensorflow-datasets`): {e}")
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
        pass  # TF already initialised its devices; nothing more to do
    return tf, tfds


def _howto(name: str, data_dir) -> str:
    where = data_dir or "~/tensorflow_datasets"
    if name in _HOWTO:
        return _HOWTO[name].replace("<data_dir>", str(where))
    return (f"prepare it on a machine with internet: `python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}', data_dir='{where}').download_and_prepare()\"` and copy {where} here "
            f"(pass data_dir or set {ENV_DATA_DIR}), or set {ENV_DOWNLOAD}=1 to let tfds download it")


def _id_order(ids: np.ndarray) -> np.ndarray | None:
    """Permutation that sorts tfds CIFAR ids 'train_00042' by their original file index, or None if they
    do not all parse (mock data): the original order is the 'dataset order' the exact noise sampler uses."""
    nums = []
    for s in ids:
        m = re.fullmatch(r"[a-z]+_(\d+)", s.decode() if isinstance(s, bytes) else str(s))
        if m is None:
            return None
        nums.append(int(m.group(1)))
    nums = np.asarray(nums)
    if np.unique(nums).shape[0] != nums.shape[0]:
        return None
    return np.argsort(nums, kind="stable")


def _read_split(tfds, name, split, data_dir, download, keys):
    ds = tfds.load(name, split=split, data_dir=data_dir, download=download, shuffle_files=False)
    cols = {k: [] for k in keys}
    for batch in tfds.as_numpy(ds.batch(4096)):
        for k in keys:
            if k in batch:
                cols[k].append(batch[k])
    return {k: np.concatenate(v) for k, v in cols.items() if v}


def load_tfds(name: str, data_dir=None, download: bool | None = None, natural_keys: dict[str, str] | None = None,
              label_key: str = "label", class_names: list[str] | None = None) -> Dataset:
    """Load tfds `name` (train and test splits) into a Dataset; `natural_keys` maps tfds label keys to
    Dataset.natural_labels variants (train split only: CIFAR-N test splits carry -1 there)."""
    tf, tfds = _import_tfds()
    del tf
    natural_keys = natural_keys or {}
    data_dir = os.fspath(data_dir) if data_dir is not None else (os.environ.get(ENV_DATA_DIR) or None)
    if download is None:
        download = os.environ.get(ENV_DOWNLOAD, "0") not in ("", "0", "false", "False")
    keys = ["image", label_key, "id", *natural_keys]
    # What tfds raises when the data are absent offline, or a manual download is missing.
    missing = (AssertionError, FileNotFoundError, getattr(tfds.core, "DatasetNotFoundError", AssertionError))
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        train = _read_split(tfds, name, "train", data_dir, download, keys)
        test = _read_split(tfds, name, "test", data_dir, download, ["image", label_key, "id"])
    except missing as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{name}: tfds could not load it from {data_dir or '~/tensorflow_datasets'} "
                        f"({type(e).__name__}: {first}). To get it: {_howto(name, data_dir)}") from None
    meta = {"source": "tfds", "tfds_name": name, "data_dir": data_dir, "version": str(builder.info.version)}
    for split, cols in (("train", train), ("test", test)):
        order = _id_order(cols["id"]) if "id" in cols else None
        if order is not None:
            for k in cols:
                cols[k] = cols[k][order]
        meta[f"{split}_order"] = "original file order (sorted by tfds id)" if order is not None else "tfds order"
    if class_names is None:
        class_names = list(builder.info.features[label_key].names)
    num_classes = int(builder.info.features[label_key].num_classes)
    natural = {}
    for key, variant in natural_keys.items():
        if key not in train:
            raise DataError(f"{name}: tfds split 'train' has no label key {key!r}; found {sorted(train)}")
        natural[variant] = train[key].astype(np.int32)
    return Dataset(
        name=name,
        x_train=to_float_images(train["image"]),
        y_train=train[label_key].astype(np.int32),
        x_test=to_float_images(test["image"]),
        y_test=test[label_key].astype(np.int32),
        num_classes=num_classes,
        class_names=[str(c) for c in class_names],
        natural_labels=natural,
        meta=meta,
    )


@register("cifar10", "CIFAR-10 32x32x3, 50000/10000, 10 classes (tfds)")
def load_cifar10(data_dir=None) -> Dataset:
    """CIFAR-10 from tfds."""
    return load_tfds("cifar10", data_dir, class_names=CIFAR10_CLASSES)


@register("cifar100", "CIFAR-100 32x32x3, 50000/10000, 100 fine classes (tfds)")
def load_cifar100(data_dir=None) -> Dataset:
    """CIFAR-100 (fine labels) from tfds."""
    return load_tfds("cifar100", data_dir)


@register("cifar10_n", "CIFAR-10 with CIFAR-10N human labels: natural variants aggre, worse, random1..3 (tfds, manual)")
def load_cifar10_n(data_dir=None) -> Dataset:
    """CIFAR-10N: clean `label` plus the five human label sets as natural_labels."""
    return load_tfds("cifar10_n", data_dir, natural_keys=CIFAR10N_KEYS, class_names=CIFAR10_CLASSES)


@register("cifar100_n", "CIFAR-100 with CIFAR-100N human labels: natural variant noisy (tfds, manual)")
def load_cifar100_n(data_dir=None) -> Dataset:
    """CIFAR-100N: clean `label` plus the human `noise_label` as natural_labels['noisy']."""
    return load_tfds("cifar100_n", data_dir, natural_keys=CIFAR100N_KEYS)
