"""Data sets, label-noise application and splits.

`load_dataset(name)` -> Dataset (float32 NHWC [0,1] images, int32 labels); `make_noisy_data(ds, spec)`
-> NoisyData (noise on the training split only). Importing this package does not import TensorFlow.
"""
from jaxdistill.data.dataset import Dataset
from jaxdistill.data.registry import describe_datasets, list_datasets, load_dataset
from jaxdistill.data.split import check_ipc, class_buckets, stratified_split, stratified_subset
from jaxdistill.data.noisy import NoisyData, has_val_split, make_noisy_data
from jaxdistill.data.idx import parse_idx, read_idx
# Importing the sources registers them.
from jaxdistill.data import idx as _idx, digits as _digits, tfds_sources as _tfds, tiny_imagenet as _tiny  # noqa: F401

__all__ = ["Dataset", "NoisyData", "has_val_split", "load_dataset", "list_datasets", "describe_datasets",
           "make_noisy_data",
           "class_buckets", "check_ipc", "stratified_split", "stratified_subset", "parse_idx", "read_idx"]
