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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Without it, the whole suite in one process crashed
    twice (segfault, then abort) inside XLA:CPU's compile at the same test (tests/test_recompile.py, an
    `evaluate` compile), which passes alone and after its neighbouring modules; with it the suite passes. Cause
    not pinned: the process held ~6,000-14,000 memory mappings (limit 65,530) and ~4 GB, so neither limit was
    near. Tests that check reuse warm up inside themselves."""
    yield
    import jax

    jax.clear_caches()
