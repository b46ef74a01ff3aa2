"""IDX files (the MNIST / Fashion-MNIST format) parsed with numpy, and the Fashion-MNIST source."""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.registry import ENV_DATA_DIR, candidate_dirs, register, to_float_images
from jaxdistill.errors import DataError

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_bytes(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read IDX file ({type(e).__name__}: {e}); the file is truncated or "
                        f"corrupt, replace it (e.g. `apt-get install --reinstall dataset-fashion-mnist`)") from e


def parse_idx(data: bytes, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes: magic `00 00 TT NN`, NN big-endian uint32 dims, then the big-endian payload.

    Checks the magic, the type byte, `ndim` (if given) and that the payload length matches the dims.
    Returns the array in native byte order.
    """
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header (needs >= 4)")
    z0, z1, tcode, nd = data[0], data[1], data[2], data[3]
    if z0 != 0 or z1 != 0 or tcode not in _IDX_DTYPES:
        raise DataError(f"{name}: bad IDX magic number {data[:4].hex()}; expected 0000TTNN with type byte TT in "
                        f"{{{', '.join(f'{k:02x}' for k in _IDX_DTYPES)}}}")
    if ndim is not None and nd != ndim:
        raise DataError(f"{name}: IDX file has {nd} dimensions; expected {ndim}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, needs {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=nd, offset=4))
    dtype = np.dtype(_IDX_DTYPES[tcode])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{name}: IDX payload has {len(data) - header} bytes but dims {dims} of {dtype} need "
                        f"{expected}; the file is truncated or corrupt")
    arr = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in .gz)."""
    path = os.fspath(path)
    return parse_idx(_read_bytes(path), name=path, ndim=ndim)


def _find_file(d: str, stem: str) -> str | None:
    for cand in (stem + ".gz", stem):
        p = os.path.join(d, cand)
        if os.path.isfile(p):
            return p
    return None


def load_idx_dir(d: str, name: str = "fashion_mnist", class_names=FASHION_CLASSES) -> Dataset:
    """Load the four (Fashion-)MNIST IDX files from directory `d` (gzipped or not)."""
    paths = {}
    for key, stem in FASHION_FILES.items():
        p = _find_file(d, stem)
        if p is None:
            raise DataError(f"{d}: missing {stem}.gz (or {stem}); expected the four IDX files "
                            f"{', '.join(s + '.gz' for s in FASHION_FILES.values())}")
        paths[key] = p
    arrs = {k: read_idx(p, ndim=3 if k.startswith("x") else 1) for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrs[f"x_{split}"], arrs[f"y_{split}"]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise DataError(f"{paths['x_' + split]}: expected uint8 images and labels, got {x.dtype} / {y.dtype}")
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{paths['y_' + split]}: {y.shape[0]} labels for {x.shape[0]} images in "
                            f"{paths['x_' + split]}")
        if y.size and int(y.max()) >= len(class_names):
            raise DataError(f"{paths['y_' + split]}: label {int(y.max())} out of range; allowed "
                            f"0..{len(class_names) - 1}")
    return Dataset(
        name=name,
        x_train=to_float_images(arrs["x_train"][..., None]),
        y_train=arrs["y_train"].astype(np.int32),
        x_test=to_float_images(arrs["x_test"][..., None]),
        y_test=arrs["y_test"].astype(np.int32),
        num_classes=len(class_names),
        class_names=list(class_names),
        meta={"source": "idx", "path": os.path.abspath(d)},
    )


def _has_idx(d: str) -> bool:
    return os.path.isdir(d) and all(_find_file(d, s) is not None for s in FASHION_FILES.values())


@register("fashion_mnist", "Fashion-MNIST 28x28x1, 60000/10000, 10 classes (Debian IDX files or tfds)")
def load_fashion_mnist(data_dir=None) -> Dataset:
    """Fashion-MNIST from IDX files in data_dir, $JAXDISTILL_DATA_DIR[/fashion-mnist], the Debian
    package's /usr/share/datasets/fashion-mnist, else tfds `fashion_mnist` (download=False)."""
    looked = candidate_dirs(data_dir, "fashion-mnist", "fashion_mnist", defaults=(DEBIAN_DIR,))
    for d in looked:
        if _has_idx(d):
            return load_idx_dir(d)
    # Last resort: a prepared tfds copy (no download: these machines are offline).
    from jaxdistill.data.tfds_sources import load_tfds
    tfds_dir = data_dir or os.environ.get(ENV_DATA_DIR) or None
    try:
        ds = load_tfds("fashion_mnist", data_dir=tfds_dir, download=False)
    except DataError as e:
        raise DataError(
            "fashion_mnist: no data found. Looked for the four IDX files "
            f"({', '.join(s + '.gz' for s in FASHION_FILES.values())}) in: {', '.join(looked)}; "
            f"then tfds 'fashion_mnist' in {tfds_dir or '~/tensorflow_datasets'} ({e}). "
            "To get it: `apt-get install dataset-fashion-mnist` (installs them in "
            f"{DEBIAN_DIR}), or put the four files in a folder and set {ENV_DATA_DIR}=that folder "
            "(or pass data_dir)") from None
    ds.class_names = list(FASHION_CLASSES)
    return ds
