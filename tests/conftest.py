import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests use tiny shapes, so they spend their time compiling, not running: with most XLA optimisation passes
# off the tiny end-to-end `denoise` took 95 s instead of 213 s (2-core CPU, 2026-12-02) and printed the same
# accuracies. Set here, before jax is imported, so the subprocess tests inherit it. The default job and the
# benchmarks run fully optimised; JAX_DISABLE_MOST_OPTIMIZATIONS=0 python -m pytest tests them that way.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

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
