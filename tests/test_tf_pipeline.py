"""The tf.data pipeline gives the study's exact noisy labels, joined to each example by index."""
import numpy as np
import pytest

from jaxdistill.data import load_dataset, make_noisy_data
from jaxdistill.data.tf_pipeline import noisy_tf_dataset
from jaxdistill.errors import ConfigError

tfds = pytest.importorskip("tensorflow_datasets")


def _collect(ds):
    rows = list(tfds.as_numpy(ds))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _check_against_memory(got, noisy, part="train"):
    x, yn, yt, idx = ((noisy.x_train, noisy.y_noisy, noisy.y_true, noisy.train_index) if part == "train"
                      else (noisy.x_val, noisy.y_val, noisy.y_val_true, noisy.val_index))
    assert sorted(got["index"].tolist()) == sorted(idx.tolist())
    row = {int(i): r for r, i in enumerate(idx)}
    pick = np.array([row[int(i)] for i in got["index"]])
    np.testing.assert_array_equal(got["noisy_label"], yn[pick])
    np.testing.assert_array_equal(got["true_label"], yt[pick])
    np.testing.assert_allclose(got["image"], x[pick], atol=1e-7)


def test_streamed_tfds_under_mock_data(tmp_path):
    spec = "symmetric:0.5"
    with tfds.testing.mock_data(num_examples=40):
        noisy = make_noisy_data(load_dataset("cifar10", tmp_path), spec, seed=3)
        got = _collect(noisy_tf_dataset("cifar10", spec, seed=3, data_dir=tmp_path))
    assert (got["noisy_label"] != got["true_label"]).any()  # the noise is there
    _check_against_memory(got, noisy)


def test_join_by_index_survives_shuffled_tfds_order_subset_and_val(tmp_path):
    """tfds serves the examples out of file order: each label must still land on its own image."""
    import tensorflow as tf

    n = 30
    perm = np.random.RandomState(0).permutation(n)

    def as_dataset(self, split, *args, **kwargs):
        feats = self.info.features

        def gen():
            for i in perm:
                yield {"id": f"train_{i:05d}", "image": np.full((32, 32, 3), 8 * i, np.uint8), "label": i % 10}
        return tf.data.Dataset.from_generator(gen, output_types=feats.dtype, output_shapes=feats.shape)

    spec = "asymmetric:0.4"
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        noisy = make_noisy_data(load_dataset("cifar10", tmp_path), spec, seed=1, subset=20, val_fraction=0.25)
        train = _collect(noisy_tf_dataset("cifar10", spec, seed=1, subset=20, val_fraction=0.25, data_dir=tmp_path))
        val = _collect(noisy_tf_dataset("cifar10", noisy=noisy, part="val", data_dir=tmp_path))
    # image i was filled with 8 i: the index joined to it must be i
    np.testing.assert_array_equal(np.round(train["image"][:, 0, 0, 0] * 255 / 8).astype(int), train["index"])
    np.testing.assert_array_equal(train["true_label"], train["index"] % 10)
    assert len(train["index"]) == 15 and len(val["index"]) == 5
    _check_against_memory(train, noisy)
    _check_against_memory(val, noisy, "val")


def test_in_memory_source_and_errors():
    noisy = make_noisy_data(load_dataset("digits"), "symmetric:0.3", seed=0, subset=100)
    got = _collect(noisy_tf_dataset("digits", "symmetric:0.3", seed=0, subset=100))
    np.testing.assert_array_equal(got["index"], noisy.train_index)
    _check_against_memory(got, noisy)
    with pytest.raises(ConfigError, match="part='test'.*'train', 'val'"):
        noisy_tf_dataset("digits", part="test")
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        noisy_tf_dataset("digits", noisy=noisy, part="val")
