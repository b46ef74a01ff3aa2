"""Tiny-ImageNet-200 from its usual folder layout (64x64x3, 200 classes; the val split is the test set)."""
from __future__ import annotations

import os

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.registry import ENV_DATA_DIR, candidate_dirs, register, to_float_images
from jaxdistill.errors import DataError

_EXTS = (".jpeg", ".jpg", ".png")
_HOWTO = ("download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it into a folder and pass "
          f"data_dir=that folder (or set {ENV_DATA_DIR})")


def _read_image(path: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), np.uint8)  # some Tiny-ImageNet images are greyscale
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    if size is not None and arr.shape[:2] != size:
        raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}; every image must be {size[1]}x{size[0]}")
    return arr


def _images_in(d: str) -> list[str]:
    if not os.path.isdir(d):
        raise DataError(f"{d}: missing image folder")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith(_EXTS))


def _find_root(data_dir) -> str:
    looked = candidate_dirs(data_dir, "tiny-imagenet-200")
    for d in looked:
        if os.path.isfile(os.path.join(d, "wnids.txt")):
            return d
    raise DataError(f"tiny_imagenet: no tiny-imagenet-200 folder (with wnids.txt) found in: "
                    f"{', '.join(looked) or '(no data_dir given and ' + ENV_DATA_DIR + ' unset)'}. To get it: {_HOWTO}")


def load_tiny_imagenet_dir(root: str, size: tuple[int, int] = (64, 64)) -> Dataset:
    """Load `root/{wnids.txt, words.txt, train/<wnid>/images/*, val/images/*, val/val_annotations.txt}`."""
    with open(os.path.join(root, "wnids.txt")) as f:
        wnids = [line.strip() for line in f if line.strip()]
    if not wnids:
        raise DataError(f"{root}/wnids.txt lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    wpath = os.path.join(root, "words.txt")
    if os.path.isfile(wpath):
        with open(wpath) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 2:
                    words[parts[0]] = parts[1].split(",")[0].strip()
    xs, ys = [], []
    for w in wnids:
        files = _images_in(os.path.join(root, "train", w, "images"))
        if not files:
            raise DataError(f"{root}/train/{w}/images holds no images ({'/'.join(_EXTS)})")
        xs.extend(_read_image(p, size) for p in files)
        ys.extend([index[w]] * len(files))
    ann = os.path.join(root, "val", "val_annotations.txt")
    if not os.path.isfile(ann):
        raise DataError(f"{ann}: missing (the val split's labels)")
    xt, yt = [], []
    with open(ann) as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0]:
                continue
            if parts[1] not in index:
                raise DataError(f"{ann}:{n}: wnid {parts[1]!r} is not in wnids.txt")
            xt.append(_read_image(os.path.join(root, "val", "images", parts[0]), size))
            yt.append(index[parts[1]])
    if not xt:
        raise DataError(f"{ann}: lists no validation images")
    return Dataset(
        name="tiny_imagenet",
        x_train=to_float_images(np.stack(xs)), y_train=np.asarray(ys, np.int32),
        x_test=to_float_images(np.stack(xt)), y_test=np.asarray(yt, np.int32),
        num_classes=len(wnids), class_names=[words.get(w, w) for w in wnids],
        meta={"source": "folder", "path": os.path.abspath(root), "wnids": wnids, "test_split": "val"},
    )


@register("tiny_imagenet", "Tiny-ImageNet-200 64x64x3, 100000/10000 (val), 200 classes (folder)")
def load_tiny_imagenet(data_dir=None) -> Dataset:
    """Tiny-ImageNet from data_dir[/tiny-imagenet-200] or $JAXDISTILL_DATA_DIR[/tiny-imagenet-200]."""
    return load_tiny_imagenet_dir(_find_root(data_dir))
