"""Preprocessing: ZCA closed forms against independent NumPy oracles, invert and (de)serialisation round trips."""
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import preprocess
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.preprocess import KINDS, Preprocessor, fit_preprocessor


def _correlated_images(n=3000, shape=(3, 3, 2), seed=0):
    """Images in [0,1] with a full-rank, well-conditioned, non-diagonal covariance."""
    rng = np.random.RandomState(seed)
    d = int(np.prod(shape))
    mix = np.eye(d) + 0.3 * rng.randn(d, d) / np.sqrt(d)
    z = rng.rand(n, d) @ mix
    z = (z - z.min()) / (z.max() - z.min())
    return z.reshape((n,) + shape).astype(np.float32)


def _closed_form(cov, eps):
    """U diag(S / (S + eps)) U^T: the covariance of whitened data when eigenvalues are regularised by eps."""
    s, u = np.linalg.eigh(cov)
    return (u * (s / (s + eps))) @ u.T


def test_zca_datm_whitened_covariance_matches_closed_form():
    x = _correlated_images()
    p = fit_preprocessor("zca_datm", x)
    z = p.apply(x.astype(np.float64)).reshape(x.shape[0], -1)
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    cov_x = np.cov(flat, rowvar=False)             # unbiased, as kornia
    chex.assert_trees_all_close(np.cov(z, rowvar=False), _closed_form(cov_x, 0.1), atol=2e-5)
    chex.assert_trees_all_close(z.mean(0), np.zeros(z.shape[1]), atol=1e-5)
    # Against an explicit T = U diag((S+eps)^-1/2) U^T applied to (x - mu).
    s, u = np.linalg.eigh(cov_x)
    t = (u / np.sqrt(s + 0.1)) @ u.T
    chex.assert_trees_all_close(z, (flat - flat.mean(0)) @ t, atol=2e-5)
    assert p.eps == 0.1


def test_zca_datm_tiny_eps_gives_identity_covariance():
    x = _correlated_images()
    p = fit_preprocessor("zca_datm", x, zca_eps=1e-9)
    z = p.apply(x.astype(np.float64)).reshape(x.shape[0], -1)
    chex.assert_trees_all_close(np.cov(z, rowvar=False), np.eye(z.shape[1]), atol=5e-4)


def test_zca_rcig_matches_frepo_closed_form():
    x = _correlated_images(shape=(2, 3, 3))
    p = fit_preprocessor("zca_rcig", x)
    flat = x.reshape(-1, 3).astype(np.float64)
    mean, std = flat.mean(0), flat.std(0)
    chex.assert_trees_all_close(p.mean, mean.astype(np.float32), atol=1e-6)
    chex.assert_trees_all_close(p.std, std.astype(np.float32), atol=1e-6)
    xn = ((x.astype(np.float64) - mean) / std).reshape(x.shape[0], -1)
    xc = xn - xn.mean(0)
    cov = xc.T @ xc / xc.shape[0]                  # biased
    reg = 0.1 * np.trace(cov) / cov.shape[0]
    assert p.eps == pytest.approx(reg, rel=1e-9)
    z = p.apply(x.astype(np.float64)).reshape(x.shape[0], -1)
    chex.assert_trees_all_close(z.T @ z / z.shape[0], _closed_form(cov, reg), atol=2e-5)


def test_meanstd_standardises_and_accepts_constants():
    x = _correlated_images(shape=(4, 4, 3))
    z = fit_preprocessor("meanstd", x).apply(x.astype(np.float64)).reshape(-1, 3)
    chex.assert_trees_all_close(z.mean(0), np.zeros(3), atol=1e-5)
    chex.assert_trees_all_close(z.std(0), np.ones(3), atol=1e-5)
    p = fit_preprocessor("meanstd", x, mean=[0.2861], std=[0.3530])
    chex.assert_trees_all_close(p.apply(x), (x - 0.2861) / 0.3530, atol=1e-6)


def test_chunked_fit_equals_one_chunk(monkeypatch):
    x = _correlated_images(n=100)
    ref = fit_preprocessor("zca_rcig", x)
    monkeypatch.setattr(preprocess, "_CHUNK", 7)   # 100 rows in 15 uneven chunks
    got = fit_preprocessor("zca_rcig", x)
    chex.assert_trees_all_close(got.apply(x), ref.apply(x), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_invert_round_trip_numpy_and_jit(kind):
    x = _correlated_images(n=400)
    p = fit_preprocessor(kind, x)
    z = p.apply(x)
    assert z.shape == x.shape and isinstance(z, np.ndarray)
    chex.assert_trees_all_close(p.invert(z), x, atol=2e-5)
    zj = jax.jit(p.apply)(jnp.asarray(x))
    assert isinstance(zj, jax.Array)
    chex.assert_trees_all_close(np.asarray(zj), z, atol=2e-5)
    chex.assert_trees_all_close(np.asarray(jax.jit(p.invert)(zj)), x, atol=2e-5)
    if kind != "none":
        assert not np.allclose(z, x)


@pytest.mark.parametrize("kind", KINDS)
def test_to_dict_from_dict_round_trip_through_npz(kind):
    x = _correlated_images(n=300)
    p = fit_preprocessor(kind, x)
    buf = io.BytesIO()
    np.savez(buf, **p.to_dict())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        q = Preprocessor.from_dict(f)
    assert q.kind == kind and q.shape == p.shape and q.eps == p.eps
    chex.assert_trees_all_close(q.apply(x[:5]), p.apply(x[:5]), atol=0)
    chex.assert_trees_all_close(q.invert(x[:5]), p.invert(x[:5]), atol=0)


def test_batched_leading_axes():
    x = _correlated_images(n=60)
    p = fit_preprocessor("zca_datm", x)
    chex.assert_trees_all_close(p.apply(x.reshape(6, 10, 3, 3, 2)).reshape(x.shape), p.apply(x), atol=1e-6)


def test_errors_name_bad_value_and_allowed():
    x = _correlated_images(n=50)
    with pytest.raises(ConfigError, match=r"'zca'.*none, meanstd, zca_datm, zca_rcig"):
        fit_preprocessor("zca", x)
    p = fit_preprocessor("meanstd", x)
    with pytest.raises(DataError, match=r"\(3, 3, 2\)"):
        p.apply(np.zeros((2, 4, 4, 2), np.float32))
    with pytest.raises(DataError, match="lacks"):
        Preprocessor.from_dict({"kind": np.asarray("zca_datm"), "shape": np.asarray([3, 3, 2])})
    with pytest.raises(DataError, match="std"):
        fit_preprocessor("meanstd", np.zeros((4, 2, 2, 1), np.float32))
    with pytest.raises(DataError, match="uint8"):
        fit_preprocessor("zca_datm", np.zeros((4, 2, 2, 1), np.uint8))
