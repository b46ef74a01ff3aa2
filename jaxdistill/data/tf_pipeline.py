"""The study's noisy training set as a ``tf.data`` pipeline, for people's own training code.

`noisy_tf_dataset(name, noise_spec, seed)` yields dicts ``{"image": (H, W, C) float32 [0, 1],
"noisy_label": int32, "true_label": int32, "index": int64}``. ``index`` is the example's position in
the source data set's training split (original file order when tfds ids parse; `NoisyData.train_index`),
and the noisy label is joined to each example by that index, so the labels are exactly the ones the
in-memory study path (`make_noisy_data`) trains on. For the tfds-backed sets (CIFAR-10/100, CIFAR-N)
the images stream from tfds (nothing but the labels is held in memory by the pipeline); other sources
(digits, Fashion-MNIST IDX, npz) are served from memory with ``from_tensor_slices``.
The in-memory path stays the default for the distillers; this module imports TensorFlow on first call.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from jaxdistill.data.noisy import NoisyData, make_noisy_data
from jaxdistill.data.registry import ENV_DATA_DIR, load_dataset
from jaxdistill.data.tfds_sources import _id_order, _import_tfds
from jaxdistill.errors import ConfigError

TFDS_STREAMED = ("cifar10", "cifar100", "cifar10_n", "cifar100_n")
PARTS = ("train", "val")


def _index_of_position(tfds, name: str, data_dir) -> np.ndarray:
    """(N,) source index of each example in tfds' (unshuffled) order: the rank of its id when ids parse."""
    ds = tfds.load(name, split="train", data_dir=data_dir, shuffle_files=False,
                   decoders={"image": tfds.decode.SkipDecoding()})
    ids = np.concatenate([b["id"] for b in tfds.as_numpy(ds.map(lambda e: {"id": e["id"]}).batch(8192))])
    order = _id_order(ids)
    if order is None:  # same rule as the in-memory loader: keep tfds order
        return np.arange(ids.shape[0], dtype=np.int64)
    rank = np.empty(ids.shape[0], np.int64)
    rank[order] = np.arange(ids.shape[0])
    return rank


def noisy_tf_dataset(name: str, noise_spec: Any = "clean", seed: int = 0, *, subset: Optional[int] = None,
                     val_fraction: float = 0.0, part: str = "train", data_dir=None,
                     noisy: Optional[NoisyData] = None):
    """tf.data.Dataset of the noisy `part` ('train' or 'val') of `name` with the study's noise (see module doc).

    noise_spec / seed / subset / val_fraction: as `make_noisy_data`. Pass `noisy` (the NoisyData of the same
    settings) to reuse labels already computed. Examples come in index order for in-memory sources and in
    tfds order for streamed ones; batch / shuffle / prefetch are left to the caller.
    """
    if part not in PARTS:
        raise ConfigError(f"part={part!r} is not one of {list(PARTS)}")
    tf, tfds = _import_tfds()
    data_dir = os.fspath(data_dir) if data_dir is not None else (os.environ.get(ENV_DATA_DIR) or None)
    if noisy is None:
        noisy = make_noisy_data(load_dataset(name, data_dir), noise_spec, seed=seed, val_fraction=val_fraction,
                                subset=subset)
    if part == "val" and noisy.x_val is None:
        raise ConfigError(f"part='val' needs val_fraction > 0; got val_fraction={val_fraction}")
    x, y_noisy, y_true, index = ((noisy.x_train, noisy.y_noisy, noisy.y_true, noisy.train_index) if part == "train"
                                 else (noisy.x_val, noisy.y_val, noisy.y_val_true, noisy.val_index))
    index = np.arange(len(y_noisy)) if index is None else np.asarray(index)
    y_true = np.full_like(y_noisy, -1) if y_true is None else y_true  # -1: true label unknown

    if name not in TFDS_STREAMED:
        return tf.data.Dataset.from_tensor_slices({
            "image": np.asarray(x, np.float32), "noisy_label": np.asarray(y_noisy, np.int32),
            "true_label": np.asarray(y_true, np.int32), "index": index.astype(np.int64)})

    pos_index = _index_of_position(tfds, name, data_dir)
    n_src = pos_index.shape[0]
    full_noisy = np.full(n_src, -1, np.int32)
    full_true = np.full(n_src, -1, np.int32)
    full_noisy[index] = y_noisy
    full_true[index] = y_true
    t_index, t_noisy, t_true = (tf.constant(a) for a in (pos_index, full_noisy, full_true))
    stream = tfds.load(name, split="train", data_dir=data_dir, shuffle_files=False)

    def join(pos, ex):
        i = tf.gather(t_index, pos)
        return {"image": tf.cast(ex["image"], tf.float32) / 255.0, "noisy_label": tf.gather(t_noisy, i),
                "true_label": tf.gather(t_true, i), "index": i}

    # Examples outside the subset / this part have no label in the join table (-1): drop them.
    return stream.enumerate().map(join).filter(lambda e: e["noisy_label"] >= 0)
