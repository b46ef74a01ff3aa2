"""The one labels file every side of a peers comparison reads.

jaxdistill draws the noisy labels once (`jaxdistill.data.make_noisy_data`: class-stratified subset of the
training split in IDX order, then `jaxdistill.noise.apply_noise` with the seed: the study's sampler, equal to
`jaxdistill noise` element for element) and writes them here; the originals' loaders are wrapped by the glue
(`glue/launch.py`) to read the same file instead of drawing their own (none of them applies noise to
Fashion-MNIST).

File format (`.npz`, no pickle; readable with numpy alone, so the originals' venvs need nothing else):
  indices  (N,) int64   positions of the subset in the training split's IDX order
  noisy    (N,) int64   the noisy labels every side trains on
  true     (N,) int64   the clean labels (reporting only)
  hash64   (N,) uint64  content key of each subset image (`image_keys`), for data read in another order (tfds)
  header   uint8 JSON   dataset, noise spec, seed, subset, realized rate, num_classes, image shape

`join_by_content` maps images that arrive in another order (tfds shuffles Fashion-MNIST) back to these rows.
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional

import numpy as np

FORMAT = "jaxdistill-peers-labels/1"


def to_uint8(images) -> np.ndarray:
    """Images as uint8 pixels: float [0,1] are scaled by 255 and rounded (IDX bytes come back exactly),
    uint8 pass through. Any layout; the key only depends on the pixel values in C order."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def image_keys(images) -> np.ndarray:
    """(N,) uint64 content key per image (blake2b-64 of its uint8 pixels, squeezed to (H, W) for one
    channel so NHWC and NCHW one-channel data give the same keys)."""
    a = to_uint8(images)
    n = a.shape[0]
    flat = a.reshape(n, -1)
    out = np.empty(n, np.uint64)
    for i in range(n):
        out[i] = np.frombuffer(hashlib.blake2b(flat[i].tobytes(), digest_size=8).digest(), np.uint64)[0]
    return out


def join_by_content(ref_images, other_images) -> np.ndarray:
    """order (N,) int64 with other_images[order[i]] == ref_images[i] for every i.

    Exact duplicates (same pixels) are matched in order of appearance on both sides; their labels can only be
    told apart by position, which is reported by `duplicate_count`. Raises ValueError when an image of
    `ref_images` has no unused match in `other_images`.
    """
    rk, ok = image_keys(ref_images), image_keys(other_images)
    return join_keys(rk, ok)


def join_keys(ref_keys, other_keys) -> np.ndarray:
    """As `join_by_content` on precomputed keys."""
    ref_keys, other_keys = np.asarray(ref_keys, np.uint64), np.asarray(other_keys, np.uint64)
    pos: dict[int, list[int]] = {}
    for j, k in enumerate(other_keys.tolist()):
        pos.setdefault(k, []).append(j)
    order = np.empty(ref_keys.shape[0], np.int64)
    used: dict[int, int] = {}
    for i, k in enumerate(ref_keys.tolist()):
        c = used.get(k, 0)
        js = pos.get(k, ())
        if c >= len(js):
            raise ValueError(f"image {i} of the reference (key {k:#x}) has no unused match among "
                             f"{other_keys.shape[0]} other images")
        order[i] = js[c]
        used[k] = c + 1
    return order


def duplicate_count(images) -> int:
    """Images whose exact pixels occur more than once (each copy counted)."""
    k = image_keys(images)
    _, counts = np.unique(k, return_counts=True)
    return int(counts[counts > 1].sum())


def export_labels(path: str, *, indices, noisy, true, header: dict, keys=None) -> None:
    """Write the labels file atomically (jaxdistill.checkpoint.atomic_save_npz)."""
    from jaxdistill.checkpoint import atomic_save_npz

    indices = np.asarray(indices, np.int64)
    noisy = np.asarray(noisy, np.int64)
    true = np.asarray(true, np.int64)
    if not (indices.shape == noisy.shape == true.shape) or indices.ndim != 1:
        raise ValueError(f"indices {indices.shape}, noisy {noisy.shape}, true {true.shape} must be equal (N,)")
    arrays = {"indices": indices, "noisy": noisy, "true": true}
    if keys is not None:
        arrays["hash64"] = np.asarray(keys, np.uint64)
    h = {"format": FORMAT, **header}
    arrays["header"] = np.frombuffer(json.dumps(h, sort_keys=True).encode(), np.uint8)
    atomic_save_npz(path, **arrays)


def read_labels(path: str) -> dict:
    """The labels file as a dict: arrays plus `header` (dict). numpy only (the glue imports it too)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["header"] = json.loads(out["header"].tobytes().decode())
    if out["header"].get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a peers labels file (format {out['header'].get('format')!r}, "
                         f"expected {FORMAT!r})")
    return out


def noisy_labels(labels, noise: str, num_classes: int, *, seed: int = 0, dataset: Optional[str] = None):
    """The noisy labels `jaxdistill noise --labels L --noise SPEC --seed S` writes (same function)."""
    from jaxdistill.noise import apply_noise

    return apply_noise(np.asarray(labels), noise, num_classes, dataset=dataset, seed=seed)


def labels_from_array(path: str, labels, noise: str, num_classes: int, *, seed: int = 0,
                      dataset: Optional[str] = None, images=None) -> dict:
    """Export noisy labels drawn on a plain label array (every index, in order)."""
    res = noisy_labels(labels, noise, num_classes, seed=seed, dataset=dataset)
    y = np.asarray(labels)
    header = {"dataset": dataset, "noise": str(res.spec), "seed": int(seed), "subset": None,
              "num_classes": int(num_classes), "realized_rate": float(res.realized_rate), "n": int(y.shape[0])}
    export_labels(path, indices=np.arange(y.shape[0]), noisy=res.noisy, true=y, header=header,
                  keys=None if images is None else image_keys(images))
    return read_labels(path)


def write_labels(path: str, dataset: str = "fashion_mnist", noise: str = "symmetric:0.4", *, seed: int = 0,
                 subset: Optional[int] = None, data_dir: Optional[str] = None, data=None) -> dict:
    """Draw the noisy labels of (dataset, subset, noise, seed) exactly as jaxdistill's own run draws them
    (`make_noisy_data(..., val_fraction=0)`) and write them once; returns the file's contents.

    `data`: an already built NoisyData (tests); otherwise the dataset is loaded."""
    if data is None:
        from jaxdistill.data import load_dataset, make_noisy_data

        ds = load_dataset(dataset, data_dir=data_dir)
        data = make_noisy_data(ds, noise, seed=seed, val_fraction=0.0, subset=subset)
    idx = getattr(data, "train_index", None)
    idx = np.arange(len(data.y_noisy)) if idx is None else np.asarray(idx)
    header = {"dataset": dataset, "noise": str(data.noise.spec) if data.noise is not None else noise,
              "seed": int(seed), "subset": subset, "num_classes": int(data.num_classes),
              "realized_rate": float(np.mean(np.asarray(data.y_noisy) != np.asarray(data.y_true))),
              "n": int(len(idx)), "image_shape": list(np.asarray(data.x_train).shape[1:])}
    export_labels(path, indices=idx, noisy=data.y_noisy, true=data.y_true, header=header,
                  keys=image_keys(data.x_train))
    return read_labels(path)
