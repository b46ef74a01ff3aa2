"""Data sets: IDX parsing, every source (tfds under mock_data, folder, npz), noisy-data assembly, splits."""
import gzip
import os
import struct

import chex
import numpy as np
import pytest

from jaxdistill import noise
from jaxdistill.data import (Dataset, check_ipc, class_buckets, list_datasets, load_dataset, make_noisy_data,
                             parse_idx, read_idx, stratified_split)
from jaxdistill.data import idx as idx_mod
from jaxdistill.data.tfds_sources import _id_order
from jaxdistill.errors import ConfigError, DataError, NoiseError

DEBIAN = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------------------------------ IDX
def _idx_bytes(arr: np.ndarray) -> bytes:
    """Independent IDX writer (struct, big-endian) used as the oracle for the parser."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}[arr.dtype]
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_fashion_dir(d, n_train=12, n_test=5, seed=0):
    rng = np.random.RandomState(seed)
    os.makedirs(d, exist_ok=True)
    arrs = {"x_train": rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
            "y_train": (np.arange(n_train) % 10).astype(np.uint8),
            "x_test": rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
            "y_test": (np.arange(n_test) % 10).astype(np.uint8)}
    arrs["x_train"][0, 0, 0] = 255
    for key, stem in idx_mod.FASHION_FILES.items():
        with gzip.open(os.path.join(d, stem + ".gz"), "wb") as f:
            f.write(_idx_bytes(arrs[key]))
    return arrs


@pytest.mark.parametrize("arr", [np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
                                 np.array([-5, 7, 1 << 20], np.int32),
                                 np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2)])
def test_parse_idx_generated(arr, tmp_path):
    got = parse_idx(_idx_bytes(arr))
    assert got.dtype == arr.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)
    p = tmp_path / "a-idx.gz"
    with gzip.open(p, "wb") as f:
        f.write(_idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(p, ndim=arr.ndim), arr)


def test_idx_corrupt_files_name_the_file(tmp_path):
    good = _idx_bytes(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(DataError, match="expected 1"):
        parse_idx(good, ndim=1)
    trunc = tmp_path / "trunc-idx3-ubyte"
    trunc.write_bytes(good[:-3])
    with pytest.raises(DataError, match="trunc-idx3-ubyte.*truncated"):
        read_idx(trunc)
    gz = tmp_path / "cut-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(good)[:-6])   # gzip stream cut short
    with pytest.raises(DataError, match="cut-idx3-ubyte.gz"):
        read_idx(gz)


def test_fashion_from_data_dir_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXDISTILL_DATA_DIR", raising=False)
    arrs = _write_fashion_dir(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)          # found in <data_dir>/fashion-mnist
    chex.assert_shape(ds.x_train, (12, 28, 28, 1))
    chex.assert_shape(ds.x_test, (5, 28, 28, 1))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train[..., 0], arrs["x_train"] / 255.0, atol=1e-7)
    assert ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.y_test, arrs["y_test"])
    assert ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10
    monkeypatch.setenv("JAXDISTILL_DATA_DIR", str(tmp_path))
    ds2 = load_dataset("fashion_mnist")
    np.testing.assert_array_equal(ds2.y_train, ds.y_train)


def test_fashion_corrupt_file_is_not_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXDISTILL_DATA_DIR", raising=False)
    _write_fashion_dir(tmp_path)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


@pytest.mark.skipif(not os.path.isdir(DEBIAN), reason=f"{DEBIAN} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_real_debian_files(monkeypatch):
    monkeypatch.delenv("JAXDISTILL_DATA_DIR", raising=False)
    ds = load_dataset("fashion_mnist")
    chex.assert_shape(ds.x_train, (60000, 28, 28, 1))
    chex.assert_shape(ds.x_test, (10000, 28, 28, 1))
    np.testing.assert_array_equal(ds.y_train[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    assert 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    assert abs(float(ds.x_train.mean()) - 0.2860) < 1e-3   # the published Fashion-MNIST mean


@pytest.mark.parametrize("tfds_installed", [True, False])
def test_fashion_missing_says_how_to_get_it(tmp_path, monkeypatch, tfds_installed):
    monkeypatch.delenv("JAXDISTILL_DATA_DIR", raising=False)
    if not tfds_installed:   # the GPU machine has no tensorflow: the IDX path must not need it
        monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)
    monkeypatch.setattr(idx_mod, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "JAXDISTILL_DATA_DIR" in msg
    assert str(tmp_path / "nowhere") in msg and "train-images-idx3-ubyte.gz" in msg


def test_unknown_name_lists_allowed():
    with pytest.raises(DataError, match=r"'cifar11'.*cifar10.*digits.*fashion_mnist.*npz:PATH"):
        load_dataset("cifar11")
    assert {"fashion_mnist", "digits", "cifar10", "cifar100", "cifar10_n", "cifar100_n",
            "tiny_imagenet", "npz:PATH"} == set(list_datasets())


# ---------------------------------------------------------------------------------------- digits
def test_shipped_digits_equal_sklearn_load_digits():
    sk = pytest.importorskip("sklearn.datasets")
    from jaxdistill.data.digits import digits_arrays

    images, target = digits_arrays()
    raw = sk.load_digits()
    np.testing.assert_array_equal(images.astype(np.float64), raw.images)
    np.testing.assert_array_equal(target, raw.target)


def test_digits_load_without_sklearn_or_pickle():
    """The core install has no scikit-learn: with it made unimportable, digits still loads."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None; "
            "import numpy as np; real_load = np.load\n"
            "def guarded(*a, **k):\n"
            "    assert k.get('allow_pickle') is False, k\n"
            "    return real_load(*a, **k)\n"
            "np.load = guarded\n"
            "from jaxdistill.data import load_dataset; d = load_dataset('digits'); "
            "print(d.x_train.shape, d.x_test.shape, int(d.y_train.sum() + d.y_test.sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(1347,", "8,", "8,", "1)", "(450,", "8,", "8,", "1)", "8070"]


def test_digits_split_deterministic_stratified():
    from sklearn.datasets import load_digits as sk
    a, b = load_dataset("digits"), load_dataset("digits")
    chex.assert_shape(a.x_train, (1347, 8, 8, 1))
    chex.assert_shape(a.x_test, (450, 8, 8, 1))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.max() == 1.0 and a.x_train.min() == 0.0
    raw = sk()
    counts = np.bincount(raw.target)
    # Every class is within one sample of its 25% share.
    assert np.all(np.abs(np.bincount(a.y_test) - counts * 450 / 1797) < 1)
    # Train and test together are exactly the 1797 images (as multisets of rows), scaled by 1/16.
    both = np.concatenate([a.x_train, a.x_test]).reshape(1797, -1) * 16
    key = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key(both), key(raw.images.reshape(1797, -1)))
    assert a.class_names == [str(i) for i in range(10)]


# ------------------------------------------------------------------------------------------ tfds
@pytest.fixture(scope="module")
def tfds_mod():
    return pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name,classes,natural", [
    ("cifar10", 10, set()), ("cifar100", 100, set()),
    ("cifar10_n", 10, {"aggre", "worse", "random1", "random2", "random3"}),
    ("cifar100_n", 100, {"noisy"})])
def test_tfds_loaders_under_mock_data(tfds_mod, name, classes, natural, tmp_path):
    with tfds_mod.testing.mock_data(num_examples=6):
        ds = load_dataset(name, data_dir=tmp_path)
    chex.assert_shape(ds.x_train, (6, 32, 32, 3))
    chex.assert_shape(ds.x_test, (6, 32, 32, 3))
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.y_train.dtype == np.int32 and ds.num_classes == classes and len(ds.class_names) == classes
    assert set(ds.natural_labels) == natural
    for v in ds.natural_labels.values():
        chex.assert_shape(v, (6,))
        assert v.dtype == np.int32 and v.min() >= 0 and v.max() < classes
    assert ds.meta["train_order"] == "tfds order"   # mock ids are random text


def test_cifar10_n_restores_file_order_and_keeps_labels_aligned(tfds_mod, tmp_path):
    import tensorflow as tf
    perm = [3, 0, 5, 1, 4, 2]

    def as_dataset(self, split, *args, **kwargs):
        feats = self.info.features
        prefix = "train" if "train" in str(split) else "test"

        def gen():
            for i in perm:
                ex = {k: np.zeros(feats[k].shape, feats[k].np_dtype) for k in feats.keys()}
                ex.update(id=f"{prefix}_{i:05d}", image=np.full((32, 32, 3), 10 * i, np.uint8), label=i,
                          aggre_label=(i + 1) % 10, worse_label=(i + 2) % 10)
                yield ex
        return tf.data.Dataset.from_generator(gen, output_types=feats.dtype, output_shapes=feats.shape)

    with tfds_mod.testing.mock_data(as_dataset_fn=as_dataset):
        ds = load_dataset("cifar10_n", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.y_train, np.arange(6))
    np.testing.assert_allclose(ds.x_train[:, 0, 0, 0], np.arange(6) * 10 / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.natural_labels["aggre"], (np.arange(6) + 1) % 10)
    np.testing.assert_array_equal(ds.natural_labels["worse"], (np.arange(6) + 2) % 10)
    assert ds.meta["train_order"].startswith("original")


def test_id_order():
    np.testing.assert_array_equal(_id_order(np.array([b"train_00002", b"train_00000", b"train_00001"])), [1, 2, 0])
    assert _id_order(np.array([b"xq  ab", b"train_1"])) is None
    assert _id_order(np.array([b"train_1", b"train_1"])) is None


@pytest.mark.parametrize("name,hint", [("cifar10", "download_and_prepare"), ("cifar10_n", "manual download"),
                                       ("cifar100_n", "manual download")])
def test_tfds_offline_error_says_how(tfds_mod, tmp_path, name, hint, monkeypatch):
    monkeypatch.delenv("JAXDISTILL_TFDS_DOWNLOAD", raising=False)
    with pytest.raises(DataError, match=f"{name}.*{str(tmp_path)}.*To get it.*{hint}"):
        load_dataset(name, data_dir=tmp_path)


# ---------------------------------------------------------------------------------- tiny_imagenet
def _write_tiny(root, size=8):
    from PIL import Image
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn99\tunused\n")
    pix = {}
    for c, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for j in range(3):
            arr = np.full((size, size, 3), 40 * c + 10 * j, np.uint8)
            arr[0, 0] = [255, 0, 7]
            ext = "PNG" if j < 2 else "JPEG"
            Image.fromarray(arr).save(d / f"{w}_{j}.{ext}", format=ext)
            pix[(w, j)] = arr
    Image.fromarray(np.full((size, size), 200, np.uint8)).save(root / "val/images/val_0.JPEG", format="JPEG")  # grey
    Image.fromarray(np.full((size, size, 3), 17, np.uint8)).save(root / "val/images/val_1.PNG", format="PNG")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t8\t8\nval_1.PNG\tn01\t0\t0\t8\t8\n")
    return pix


def test_tiny_imagenet_folder(tmp_path, monkeypatch):
    from jaxdistill.data import tiny_imagenet
    monkeypatch.delenv("JAXDISTILL_DATA_DIR", raising=False)
    pix = _write_tiny(tmp_path / "tiny-imagenet-200")
    ds = tiny_imagenet.load_tiny_imagenet_dir(str(tmp_path / "tiny-imagenet-200"), size=(8, 8))
    chex.assert_shape(ds.x_train, (6, 8, 8, 3))
    chex.assert_shape(ds.x_test, (2, 8, 8, 3))
    np.testing.assert_array_equal(ds.y_train, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.y_test, [1, 0])
    assert ds.class_names == ["goldfish", "salamander"] and ds.num_classes == 2
    np.testing.assert_allclose(ds.x_train[4], pix[("n02", 1)] / 255.0, atol=1e-7)   # PNG is lossless
    np.testing.assert_allclose(ds.x_test[1], 17 / 255.0, atol=1e-7)
    assert abs(float(ds.x_test[0].mean()) - 200 / 255) < 0.02                       # grey JPEG -> RGB
    # Registry path with the standard 64x64 size rejects 8x8 images and names the file.
    with pytest.raises(DataError, match=r"n01_0\.PNG.*64x64"):
        load_dataset("tiny_imagenet", data_dir=tmp_path)


def test_tiny_imagenet_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXDISTILL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="tiny-imagenet-200.zip"):
        load_dataset("tiny_imagenet", data_dir=tmp_path)


# -------------------------------------------------------------------------------------------- npz
def _npz(tmp_path, name="d.npz", **arrs):
    p = tmp_path / name
    np.savez(p, **arrs)
    return f"npz:{p}"


def test_npz_uint8_with_carved_test_split(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, (40, 5, 6)).astype(np.uint8)
    y_true = np.repeat(np.arange(4), 10)
    y = y_true.copy()
    y[:3] = 3
    spec = _npz(tmp_path, x=x, y=y, y_true=y_true)
    ds = load_dataset(spec)
    chex.assert_shape(ds.x_train, (36, 5, 6, 1))
    chex.assert_shape(ds.x_test, (4, 5, 6, 1))
    assert ds.num_classes == 4 and ds.meta["test_split"].startswith("carved")
    te = ds.meta["test_index"]
    np.testing.assert_allclose(ds.x_test[..., 0], x[te] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.y_test, y_true[te])        # scored on the true labels
    tr = np.setdiff1d(np.arange(40), te)
    np.testing.assert_array_equal(ds.y_train, y[tr])
    np.testing.assert_array_equal(ds.y_train_true, y_true[tr])
    np.testing.assert_array_equal(load_dataset(spec).meta["test_index"], te)   # deterministic


def test_npz_float_with_given_test_and_names(tmp_path):
    x = np.linspace(0, 1, 10 * 4 * 4 * 3).reshape(10, 4, 4, 3)
    spec = _npz(tmp_path, x=x, y=np.arange(10) % 3, x_test=x[:4].astype(np.float32), y_test=np.array([0, 1, 2, 0]),
                class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(spec)
    chex.assert_shape(ds.x_train, (10, 4, 4, 3))
    assert ds.x_train.dtype == np.float32 and ds.y_train_true is None
    assert ds.class_names == ["a", "b", "c"] and ds.meta["test_split"].startswith("given")


_X = np.zeros((6, 4, 4), np.uint8)
_Y = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("arrs,pattern", [
    (dict(y=_Y), r"missing key 'x'"),
    (dict(x=_X), r"missing key 'y'"),
    (dict(x=np.zeros((6, 16), np.uint8), y=_Y), r"'x' has shape \(6, 16\).*allowed \(N,H,W\)"),
    (dict(x=np.zeros((6, 2, 2, 2, 2), np.uint8), y=_Y), r"'x'.*ndim 5"),
    (dict(x=_X, y=_Y[:5]), r"'y' has shape \(5,\); expected \(6,\)"),
    (dict(x=np.full((6, 4, 4), np.nan), y=_Y), r"'x' holds 96 NaN/inf"),
    (dict(x=np.full((6, 4, 4), np.inf), y=_Y), r"'x'.*NaN/inf"),
    (dict(x=np.full((6, 4, 4), 2.0), y=_Y), r"'x' has values in \[2, 2\]; allowed float in \[0,1\]"),
    (dict(x=np.zeros((6, 4, 4), np.int16), y=_Y), r"'x' has dtype int16"),
    (dict(x=_X, y=_Y + 0.5), r"'y' holds non-integer label 0.5"),
    (dict(x=_X, y=_Y - 1), r"'y' holds negative label -1"),
    (dict(x=_X, y=_Y, y_true=_Y[:4]), r"'y_true' has shape \(4,\)"),
    (dict(x=_X, y=_Y, x_test=_X), r"'x_test' given without 'y_test'"),
    (dict(x=_X, y=_Y, x_test=np.zeros((2, 5, 5), np.uint8), y_test=_Y[:2]), r"'x_test' images are \(5, 5, 1\)"),
    (dict(x=_X, y=_Y, class_names=np.array(["a"])), r"'class_names'.*>= 3 names"),
    (dict(x=_X, y=np.array(["a"] * 6)), r"'y' has dtype <U1"),
])
def test_npz_bad_inputs(tmp_path, arrs, pattern):
    with pytest.raises(DataError, match=pattern):
        load_dataset(_npz(tmp_path, **arrs))


def test_npz_pickle_and_missing_file(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([object()], dtype=object), y=_Y)
    with pytest.raises(DataError, match="without pickle"):
        load_dataset(f"npz:{p}")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


# -------------------------------------------------------------------------------- splits, buckets
def test_stratified_split_exact_and_proportional():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rest, take = stratified_split(y, 17, seed=3)
    assert take.shape == (17,) and rest.shape == (83,)
    assert np.intersect1d(rest, take).size == 0 and np.all(np.diff(take) > 0)
    np.testing.assert_array_equal(np.bincount(y[take]), [9, 5, 3])    # 8.5, 5.1, 3.4 by largest remainder
    np.testing.assert_array_equal(stratified_split(y, 17, seed=3)[1], take)
    assert not np.array_equal(stratified_split(y, 17, seed=4)[1], take)
    with pytest.raises(ConfigError, match="101"):
        stratified_split(y, 101)


def test_class_buckets_and_check_ipc():
    y = np.array([2, 0, 2, 1, 0, 2])
    buckets = class_buckets(y, 4)
    naive = [[i for i in range(len(y)) if y[i] == c] for c in range(4)]
    assert [b.tolist() for b in buckets] == naive
    check_ipc(y, 3, 2 - 1)
    with pytest.raises(DataError, match=r"class 3: 0"):
        check_ipc(y, 4, 1)
    with pytest.raises(DataError, match=r"ipc=2.*class 1: 1"):
        check_ipc(y, 3, 2)
    with pytest.raises(DataError, match="out of range"):
        class_buckets(y, 2)


# ------------------------------------------------------------------------------------ noisy data
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_make_noisy_data_noise_only_on_train(digits):
    nd = make_noisy_data(digits, "symmetric:0.4", seed=1)
    oracle = noise.apply_noise(digits.y_train, "symmetric:0.4", 10, dataset="digits", seed=1)
    np.testing.assert_array_equal(nd.y_noisy, oracle.noisy)
    np.testing.assert_array_equal(nd.y_true, digits.y_train)
    assert nd.x_test is digits.x_test and nd.y_test is digits.y_test
    assert nd.noise_rate == pytest.approx(oracle.realized_rate) and 0.25 < nd.noise_rate < 0.45
    assert nd.y_noisy.dtype == np.int32 and nd.x_val is None
    assert nd.x_train is digits.x_train                       # no copy without subset/val split
    np.testing.assert_array_equal(digits.y_train, load_dataset("digits").y_train)   # source untouched


def test_make_noisy_data_val_split(digits):
    nd = make_noisy_data(digits, "pairflip:0.2", seed=0, val_fraction=0.2)
    n = digits.y_train.shape[0]
    assert nd.x_val.shape[0] == round(0.2 * n) and nd.x_train.shape[0] == n - round(0.2 * n)
    assert np.intersect1d(nd.train_index, nd.val_index).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([nd.train_index, nd.val_index])), np.arange(n))
    full = noise.apply_noise(digits.y_train, "pairflip:0.2", 10, dataset="digits", seed=0).noisy
    np.testing.assert_array_equal(nd.y_val, full[nd.val_index])
    np.testing.assert_array_equal(nd.y_val_true, digits.y_train[nd.val_index])
    np.testing.assert_array_equal(nd.x_val, digits.x_train[nd.val_index])
    # Stratified by the noisy label: each class within one sample of 20%.
    assert np.all(np.abs(np.bincount(nd.y_val, minlength=10) - 0.2 * np.bincount(full, minlength=10)) < 1)


def test_make_noisy_data_subset_before_noise(digits):
    nd = make_noisy_data(digits, "symmetric:0.5", seed=2, subset=100)
    idx = nd.train_index
    assert idx.shape == (100,)
    np.testing.assert_array_equal(np.bincount(digits.y_train[idx]), [10] * 10)
    oracle = noise.apply_noise(digits.y_train[idx], "symmetric:0.5", 10, dataset="digits", seed=2)
    np.testing.assert_array_equal(nd.y_noisy, oracle.noisy)
    np.testing.assert_array_equal(make_noisy_data(digits, "clean", subset=100).train_index, idx)
    with pytest.raises(ConfigError, match=r"subset=5000.*1\.\.1347"):
        make_noisy_data(digits, "clean", subset=5000)
    with pytest.raises(ConfigError, match=r"val_fraction=1.5.*\[0, 1\)"):
        make_noisy_data(digits, "clean", val_fraction=1.5)


def test_make_noisy_data_npz_clean_keeps_given_labels(tmp_path):
    x = np.random.RandomState(0).randint(0, 256, (30, 4, 4)).astype(np.uint8)
    y_true = np.arange(30) % 3
    y = y_true.copy()
    y[::4] = (y[::4] + 1) % 3
    ds = load_dataset(_npz(tmp_path, x=x, y=y, y_true=y_true, x_test=x[:3], y_test=y_true[:3]))
    nd = make_noisy_data(ds, "clean")
    np.testing.assert_array_equal(nd.y_noisy, y)
    np.testing.assert_array_equal(nd.y_true, y_true)
    assert nd.noise_rate == pytest.approx(np.mean(y != y_true))


def test_make_noisy_data_natural_variant():
    rng = np.random.RandomState(0)
    y = np.arange(20) % 4
    nat = (y + (rng.rand(20) < 0.3)) % 4
    ds = Dataset("toy", np.zeros((20, 2, 2, 1), np.float32), y.astype(np.int32), np.zeros((2, 2, 2, 1), np.float32),
                 np.zeros(2, np.int32), 4, list("abcd"), natural_labels={"aggre": nat.astype(np.int32)})
    nd = make_noisy_data(ds, "natural:aggre")
    np.testing.assert_array_equal(nd.y_noisy, nat)
    np.testing.assert_array_equal(make_noisy_data(ds, "natural:aggre_label").y_noisy, nat)   # tfds key alias
    with pytest.raises(NoiseError, match="worse"):
        make_noisy_data(ds, "natural:worse")
    nd = make_noisy_data(ds, "natural:aggre", subset=8)
    np.testing.assert_array_equal(nd.y_noisy, nat[nd.train_index])


def test_make_noisy_data_refuses_nan_pixels():
    from jaxdistill.data import Dataset, make_noisy_data
    from jaxdistill.errors import DataError

    x = np.random.RandomState(0).rand(20, 4, 4, 1).astype(np.float32)
    x[3, 1, 1, 0] = np.nan
    y = (np.arange(20) % 2).astype(np.int32)
    ds = Dataset("toy", x, y, x[:4].copy(), y[:4], 2, ["a", "b"])
    with pytest.raises(DataError, match="index 3"):
        make_noisy_data(ds, "clean")


def test_keep_train_subsets_every_training_field_and_nothing_else(digits):
    from jaxdistill.data.noisy import keep_train

    d = make_noisy_data(digits, "symmetric:0.4", seed=0, subset=60, val_fraction=0.2)
    kept = np.arange(len(d.y_noisy)) % 3 != 0
    labels = (np.asarray(d.y_noisy) + 1) % 10
    out = keep_train(d, kept, labels)
    rows = [i for i in range(len(kept)) if kept[i]]                 # the loop the helper must agree with
    np.testing.assert_array_equal(out.x_train, np.stack([d.x_train[i] for i in rows]))
    np.testing.assert_array_equal(out.y_noisy, [labels[i] for i in rows])
    np.testing.assert_array_equal(out.y_true, [d.y_true[i] for i in rows])
    np.testing.assert_array_equal(out.train_index, [d.train_index[i] for i in rows])
    assert out.x_val is d.x_val and out.y_val is d.y_val and out.x_test is d.x_test
    np.testing.assert_array_equal(keep_train(d, kept).y_noisy, [d.y_noisy[i] for i in rows])
