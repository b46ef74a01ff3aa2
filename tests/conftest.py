import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_data():
    """Clean digits as NoisyData (the fast real data set)."""
    from jaxdistill.data import load_dataset, make_noisy_data

    return make_noisy_data(load_dataset("digits"), "clean")


@pytest.fixture(scope="session")
def tiny_images():
    rs = np.random.RandomState(0)
    return rs.rand(6, 8, 8, 1).astype(np.float32)
