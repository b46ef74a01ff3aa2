"""DANCE: building blocks against NumPy / hand computations, the exact per-class scan against a naive
loop, checkpoint resume, configs and error paths. Tiny shapes (8x8 images, width 8) to stay fast."""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdistill.augment import dance_condense
from jaxdistill.configs.dance import DanceConfig, get_config
from jaxdistill.errors import ConfigError, DataError, NumericalError, StoreError
from jaxdistill.methods import dance as D
from jaxdistill.nn import NetConfig, make_net

C, H = 3, 8


@dataclasses.dataclass
class FakeData:
    """Stand-in for NoisyData: random 8x8x1 images whose classes differ in mean brightness."""

    name: str
    x_train: np.ndarray
    y_noisy: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = C
    noise: object = None


def fake_data(n_per=20, seed=0) -> FakeData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per).astype(np.int32)
    rng.shuffle(y)
    x = np.clip(rng.uniform(0, 0.5, (y.size, H, H, 1)) + 0.2 * y[:, None, None, None], 0, 1).astype(np.float32)
    return FakeData("fake", x, y, x[:9], y[:9])


def tiny_cfg(**kw) -> DanceConfig:
    base = dict(dataset="digits", ipc=1, iterations=4, factor=2, width=8, depth=2, batch_real=6,
                batch_syn_max=200, pool_size=2, num_premodel=2, pretrain_epochs=0, checkpoint_every=2,
                lr_img=0.5, mean=(0.4,), std=(0.3,), preset="quick")
    base.update(kw)
    return DanceConfig(**base)


# ---------------------------------------------------------------------------------------------
# Inner-class view: loss and gradient against NumPy
# ---------------------------------------------------------------------------------------------

def test_feature_mean_loss_and_grad_match_numpy():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(12, 5))
    real = rng.normal(size=(7, 12))
    syn = rng.normal(size=(4, 12))
    feat = lambda x: jnp.tanh(x @ jnp.asarray(w, jnp.float32))  # noqa: E731
    loss, (g_real, g_syn) = jax.value_and_grad(
        lambda r, s: D.feature_mean_loss(feat, r, s), argnums=(0, 1))(
        jnp.asarray(real, jnp.float32), jnp.asarray(syn, jnp.float32))
    # NumPy, float64: L = ||mu_r - mu_s||^2, dL/ds_j = -2/n_s * ((mu_r - mu_s) * (1 - tanh^2(s_j w))) w^T
    fr, fs = np.tanh(real @ w), np.tanh(syn @ w)
    d = fr.mean(0) - fs.mean(0)
    np.testing.assert_allclose(float(loss), np.sum(d ** 2), rtol=1e-5)
    g_np = -2.0 / syn.shape[0] * (d[None, :] * (1 - fs ** 2)) @ w.T
    chex.assert_trees_all_close(np.asarray(g_syn), g_np, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(g_real) == 0.0)  # no gradient into the real branch


def test_feature_mean_loss_on_convnet_against_numpy_features_and_finite_differences():
    # A smooth ConvNet (softplus, no norm) so float32 finite differences are meaningful.
    net = make_net(NetConfig(C, width=8, depth=2, norm="none", act="softplus", softplus_temp=1.0))
    params = net.init(jax.random.PRNGKey(0), (H, H, 1))
    rng = np.random.default_rng(2)
    real = jnp.asarray(rng.uniform(size=(5, H, H, 1)), jnp.float32)
    syn = jnp.asarray(rng.uniform(size=(3, H, H, 1)), jnp.float32)
    feat = lambda x: net.apply_with_features(params, x)[1]  # noqa: E731
    loss = D.feature_mean_loss(feat, real, syn)
    fr, fs = np.asarray(feat(real), np.float64), np.asarray(feat(syn), np.float64)
    np.testing.assert_allclose(float(loss), np.sum((fr.mean(0) - fs.mean(0)) ** 2), rtol=1e-5)
    lf = jax.jit(lambda s: D.feature_mean_loss(feat, real, s))
    g = np.asarray(jax.grad(lf)(syn), np.float64)
    # directional finite differences (central) along random directions
    for seed in range(3):
        v = np.random.default_rng(10 + seed).normal(size=syn.shape).astype(np.float32)
        eps = 1e-2
        fd = (float(lf(syn + eps * v)) - float(lf(syn - eps * v))) / (2 * eps)
        np.testing.assert_allclose(np.sum(g * v), fd, rtol=2e-2, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Middle encoder
# ---------------------------------------------------------------------------------------------

def test_middle_encoder_endpoints_and_midpoint():
    net = make_net(NetConfig(C, width=8, depth=2))
    th0 = net.init(jax.random.PRNGKey(0), (H, H, 1))
    tht = net.init(jax.random.PRNGKey(1), (H, H, 1))
    chex.assert_trees_all_close(D.middle_encoder(th0, tht, 0.0), tht)
    chex.assert_trees_all_close(D.middle_encoder(th0, tht, 1.0), th0)
    mid = D.middle_encoder(th0, tht, 0.25)
    chex.assert_trees_all_close(mid, jax.tree_util.tree_map(lambda a, b: 0.25 * a + 0.75 * b, th0, tht), rtol=1e-6)
    x = jnp.ones((2, H, H, 1))
    chex.assert_trees_all_close(net.apply(D.middle_encoder(th0, tht, 1.0), x), net.apply(th0, x))


# ---------------------------------------------------------------------------------------------
# Multi-formation decode and mix init
# ---------------------------------------------------------------------------------------------

def torch_bilinear_np(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Independent NumPy port of PyTorch's bilinear upsampling formula, align_corners=False:
    src = (dst + 0.5) * in/out - 0.5, clamped below at 0; neighbours i0 = floor(src), i1 = min(i0+1, in-1)."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        l1 = src - i0
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), i0] += 1 - l1
        m[np.arange(n_out), i1] += l1
        return m
    mh, mw = axis(x.shape[1], oh), axis(x.shape[2], ow)
    return np.einsum("oh,nhwc,pw->nopc", mh, x, mw)


def test_decode_zoom_known_image_by_hand():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    out = np.asarray(D.decode_zoom(jnp.asarray(img), 2))
    assert out.shape == (4, 4, 4, 1)
    # Upsampling 2 -> 4 with align_corners=False: rows = U @ crop @ U^T with U below (hand computed).
    u = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    crops = [img[0, :2, :2, 0], img[0, :2, 2:, 0], img[0, 2:, :2, 0], img[0, 2:, 2:, 0]]  # crop-major order
    for k, cr in enumerate(crops):
        np.testing.assert_allclose(out[k, :, :, 0], u @ cr @ u.T, atol=1e-5)
    np.testing.assert_allclose(out[0, 1, 1, 0], 0.75 * 0.75 * 0 + 0.75 * 0.25 * 1 + 0.25 * 0.75 * 4 + 0.25 * 0.25 * 5)


def test_decode_zoom_pads_with_half_and_matches_torch_formula():
    rng = np.random.default_rng(3)
    img = rng.uniform(size=(2, 5, 5, 3)).astype(np.float32)
    out = np.asarray(D.decode_zoom(jnp.asarray(img), 2))
    padded = np.full((2, 6, 6, 3), 0.5, np.float32)
    padded[:, :5, :5] = img
    crops = np.concatenate([padded[:, i * 3:(i + 1) * 3, j * 3:(j + 1) * 3] for i in range(2) for j in range(2)])
    chex.assert_shape(out, (8, 5, 5, 3))
    chex.assert_trees_all_close(out, torch_bilinear_np(crops, 5, 5).astype(np.float32), atol=1e-5)
    assert np.asarray(D.decode_zoom(jnp.asarray(img), 1)) is not None
    chex.assert_trees_all_close(np.asarray(D.decode_zoom(jnp.asarray(img), 1)), img)


def test_mix_init_grid_by_hand():
    imgs = np.stack([np.full((4, 4, 1), k, np.float32) for k in range(8)])   # ipc 2, f 2 -> 8 images
    imgs[0, 1, 1, 0] = 100.0   # nearest 4 -> 2 keeps source rows/cols 0 and 2, so this pixel drops out
    imgs[0, 2, 2, 0] = 50.0    # ... and this one is kept at (1, 1)
    out = D.mix_init(imgs, 2, 2)
    chex.assert_shape(out, (2, 4, 4, 1))
    # cell (i, j) of image n holds real image (i*2 + j)*2 + n
    expect0 = np.array([[0, 0, 2, 2], [0, 50, 2, 2], [4, 4, 6, 6], [4, 4, 6, 6]], np.float32)
    expect1 = expect0 + 1
    expect1[1, 1] = 1
    np.testing.assert_array_equal(out[0, :, :, 0], expect0)
    np.testing.assert_array_equal(out[1, :, :, 0], expect1)


# ---------------------------------------------------------------------------------------------
# Exact per-class scan against a naive Python loop
# ---------------------------------------------------------------------------------------------

def naive_iteration(net, syn, buf, key, pool0, poolT, x_real, table, counts, mean, std, st, lr, mom):
    """The original's structure: a Python loop over classes, augmenting concat([R, S]) ONCE per class,
    a torch-style SGD-momentum step (buf = mom*buf + g; p -= lr*buf) in float64 NumPy on the whole
    tensor after each class. Only the per-class gradient is a (jitted) JAX call."""
    syn, buf = np.asarray(syn, np.float64), np.asarray(buf, np.float64)
    k_model, k_lam, k_real, k_aug, k_sub, k_cal = jax.random.split(key, 6)
    m = int(jax.random.randint(k_model, (), 0, st.num_premodel))
    th0 = jax.tree_util.tree_map(lambda a: a[m], pool0)
    tht = jax.tree_util.tree_map(lambda a: a[m], poolT)
    lam = float(jax.random.uniform(k_lam))
    th_mid = jax.tree_util.tree_map(lambda a, b: lam * a + (1 - lam) * b, th0, tht)
    syn = np.clip(syn, 0, 1)
    idx = np.asarray(D.sample_real(k_real, table, counts, st.n_real))
    ka, ks = jax.random.split(k_aug, st.num_classes), jax.random.split(k_sub, st.num_classes)

    def step(syn, buf, c, grad_fn, *extra):
        sl = slice(c * st.ipc, (c + 1) * st.ipc)
        g = np.zeros_like(syn)
        g[sl] = np.asarray(grad_fn(jnp.asarray(syn[sl], jnp.float32), *extra), np.float64)
        buf = mom * buf + g
        return syn - lr * buf, buf

    for c in range(st.num_classes):
        syn, buf = step(syn, buf, c, _naive_grad_in, jnp.asarray(x_real)[idx[c]], ka[c], th_mid, mean, std,
                        net.apply_with_features, st.factor)
    kc_a, kc_s = jax.random.split(jax.random.fold_in(k_cal, 0))
    kca = jax.random.split(kc_a, st.num_classes)
    for c in range(st.num_classes):
        syn, buf = step(syn, buf, c, _naive_grad_cal, c, kca[c], tht, mean, std, net.apply, st.factor)
    return syn, buf


@functools.partial(jax.jit, static_argnums=(6, 7))
@jax.grad
def _naive_grad_in(s_c, real, key, th, mean, std, apply_wf, factor):
    s = (D.decode_zoom(s_c, factor) - mean) / std     # n_syn >= ipc*f^2 here: no subsampling
    both = dance_condense(key, jnp.concatenate([real, s]))   # ONE augmentation draw over real and syn
    f = apply_wf(th, both)[1]
    fr, fs = f[: real.shape[0]], f[real.shape[0]:]
    return jnp.sum((jax.lax.stop_gradient(fr.mean(0)) - fs.mean(0)) ** 2)


@functools.partial(jax.jit, static_argnums=(6, 7))
@jax.grad
def _naive_grad_cal(s_c, c, key, th, mean, std, apply, factor):
    s = dance_condense(key, (D.decode_zoom(s_c, factor) - mean) / std)
    return -jax.nn.log_softmax(apply(th, s))[:, c].mean()


def _setup_iteration(batched: bool):
    """The same network, statics and optimiser as tiny_cfg(), so distill() in the resume test reuses
    the compiled iteration."""
    cfg = tiny_cfg(batched_classes=batched)
    data = fake_data()
    ncfg = D.net_config(cfg, C)
    net = make_net(ncfg)
    pool0 = jax.vmap(lambda k: net.init(k, (H, H, 1)))(jax.random.split(jax.random.PRNGKey(0), 2))
    poolT = jax.vmap(lambda k: net.init(k, (H, H, 1)))(jax.random.split(jax.random.PRNGKey(1), 2))
    mean, std = np.float32(0.4), np.float32(0.3)
    table, counts = D.class_buckets_table(data.y_noisy, C)
    st = D.Statics(num_classes=C, ipc=1, factor=2, n_real=6, n_syn=4, num_premodel=2, iter_calib=1,
                   batched=batched)
    syn = jnp.asarray(D.initial_synset(data.x_train, data.y_noisy, C, 1, 2))
    xr = jnp.asarray((data.x_train - mean) / std)
    args = (pool0, poolT, xr, jnp.asarray(table), jnp.asarray(counts), jnp.asarray(mean), jnp.asarray(std))
    it = D._cached_iteration(ncfg, st, cfg.image_lr, cfg.mom_img)
    return net, st, syn, args, it, optax.sgd(cfg.image_lr, momentum=cfg.mom_img), cfg


def test_per_class_scan_equals_naive_python_loop():
    net, st, syn, args, it, tx, cfg = _setup_iteration(batched=False)
    lr, mom = cfg.image_lr, cfg.mom_img
    opt = tx.init(syn)
    buf = np.zeros(syn.shape)
    s_jax, s_np = syn, np.asarray(syn)
    for i in range(2):   # two iterations: the momentum buffer carries across iterations too
        key = jax.random.PRNGKey(10 + i)
        s_jax, opt, m = it(s_jax, opt, key, *args)
        s_np, buf = naive_iteration(net, s_np, buf, key, *args, st, lr, mom)
        assert int(m["skipped"]) == 0
    moved = np.abs(s_np - np.asarray(syn)).max()
    assert moved > 1e-3   # the images actually changed
    chex.assert_trees_all_close(np.asarray(s_jax), s_np.astype(np.float32), atol=2e-5 * max(1.0, moved))
    chex.assert_trees_all_close(np.asarray(opt[0].trace), buf.astype(np.float32), atol=2e-5)


def test_batched_variant_is_one_step_on_summed_class_losses():
    """batched_classes: one iteration = 2 optimiser steps (not 2C), on the sum of the class losses; the
    result differs from the exact scan (different momentum dynamics) but is finite and moves every class."""
    net, st, syn, args, it_b, tx, _ = _setup_iteration(batched=True)
    _, _, _, _, it_s, _, _ = _setup_iteration(batched=False)
    s_b, opt_b, m_b = it_b(syn, tx.init(syn), jax.random.PRNGKey(3), *args)
    s_s, _, m_s = it_s(syn, tx.init(syn), jax.random.PRNGKey(3), *args)
    chex.assert_tree_all_finite(s_b)
    assert float(m_b["loss_inner"]) > 0 and int(m_b["skipped"]) == 0
    assert np.abs(np.asarray(s_b) - np.asarray(s_s)).max() > 1e-4
    # two momentum steps from zero: trace = g1 * mom + g2, and every class's images moved
    assert all(np.abs(np.asarray(s_b)[c] - np.clip(np.asarray(syn)[c], 0, 1)).max() > 0 for c in range(C))


@pytest.mark.parametrize("batched", [False, True])
def test_class_chunks_change_memory_not_results(batched):
    """class_chunk=2 of C=3 classes (a padded last chunk): the real branch's features and, batched, the class
    losses are computed two classes at a time; the iteration's result equals the all-classes-at-once one."""
    net, st, syn, args, it, tx, cfg = _setup_iteration(batched=batched)
    chunked = D.make_iteration(net, st._replace(class_chunk=2), tx)
    key = jax.random.PRNGKey(5)
    s0, o0, m0 = it(syn, tx.init(syn), key, *args)
    s1, o1, m1 = chunked(syn, tx.init(syn), key, *args)
    assert np.abs(np.asarray(s0) - np.clip(np.asarray(syn), 0, 1)).max() > 1e-4   # the step moved the images
    chex.assert_trees_all_close((s1, o1), (s0, o0), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose([float(m1["loss_inner"]), float(m1["loss_calib"])],
                               [float(m0["loss_inner"]), float(m0["loss_calib"])], rtol=1e-5)


def test_map_classes_pads_and_matches_vmap():
    xs = (jnp.arange(5.0)[:, None] * jnp.ones((5, 3)), jnp.arange(5))
    fn = lambda a: (a[0].sum() * a[1], a[0] * 2)  # noqa: E731
    want = jax.vmap(fn)(xs)
    for chunk in (0, 1, 2, 3, 5, 9):
        chex.assert_trees_all_close(D.map_classes(fn, xs, chunk), want)


# ---------------------------------------------------------------------------------------------
# distill(): resume, outputs, errors
# ---------------------------------------------------------------------------------------------

def test_distill_resume_gives_identical_set_and_outputs(tmp_path):
    data = fake_data()
    cfg = tiny_cfg(pretrain_epochs=1)
    key = jax.random.PRNGKey(7)
    wd = str(tmp_path / "run")
    full = D.distill(cfg, data, key, workdir=wd, progress=False)
    assert os.path.exists(os.path.join(wd, "distilled.npz"))
    # Simulate a crash after iteration 2: drop the final checkpoint and the outputs, run again.
    ck = os.path.join(wd, "ckpt")
    assert sorted(int(s) for s in os.listdir(ck) if s.isdigit()) == [2, 4]
    shutil.rmtree(os.path.join(ck, "4"))
    os.remove(os.path.join(wd, "distilled.npz"))
    resumed = D.distill(cfg, data, key, workdir=wd, progress=False)
    assert resumed.meta["resumed_from"] == 2
    np.testing.assert_array_equal(resumed.images, full.images)
    # outputs: C * ipc * f^2 decoded images, grouped by class, normalised with the meanstd preprocessor
    chex.assert_shape(full.images, (C * 4, H, H, 1))
    np.testing.assert_array_equal(full.labels, np.repeat(np.arange(C), 4))
    from jaxdistill.methods.base import DistilledSet
    from jaxdistill.preprocess import Preprocessor

    loaded = DistilledSet.load(os.path.join(wd, "distilled.npz"))
    np.testing.assert_array_equal(loaded.images, full.images)
    pre = Preprocessor.from_dict(loaded.preprocessor)
    enc = np.load(os.path.join(wd, "synset_encoded.npz"))["syn"]
    dec = np.asarray(D.decode_zoom(jnp.asarray(enc), 2))
    # class 0's four decoded crops (crop-major order within the set) = the first 4 stored images
    np.testing.assert_allclose(pre.invert(full.images[:4]), dec[[0, 3, 6, 9]], atol=1e-5)
    assert full.meta["iterations"] == 4 and full.meta["skipped_updates"] == 0
    assert np.isfinite(full.meta["final_loss"]["loss_inner"])
    # the stored pool is checked against the labels it was trained on
    other = dataclasses.replace(data, y_noisy=np.roll(data.y_noisy, 1))
    with pytest.raises(StoreError):
        D.distill(cfg, other, key, workdir=wd, progress=False)


def test_distill_raises_on_repeated_nonfinite_and_ipc_errors(tmp_path):
    data = fake_data()
    bad = dataclasses.replace(data, x_train=data.x_train.copy())
    bad.x_train[bad.y_noisy == 1] = np.nan    # class 1's real features are NaN: its steps are skipped
    with pytest.raises(NumericalError, match="max_nonfinite=2"):
        D.distill(tiny_cfg(max_nonfinite=2, iterations=5), bad, jax.random.PRNGKey(0), progress=False)
    with pytest.raises(DataError, match="ipc"):
        D.distill(tiny_cfg(ipc=6), data, jax.random.PRNGKey(0), progress=False)   # 6*4 > 20 per class


def test_configs_named_settings_and_validation():
    c = get_config("fashion_mnist", 10, "paper")
    assert (c.ipc, c.iterations, c.image_lr, c.mom_img, c.batch_real, c.num_premodel, c.pool_size) == \
        (10, 10000, pytest.approx(0.1), 0.5, 128, 5, 20)
    assert c.mean == (0.2861,) and c.std == (0.3530,)
    assert get_config("cifar10", 50).mean == (0.4914, 0.4822, 0.4465)
    q = get_config("digits", 10, "quick")
    assert q.width == 32 and q.iterations < 1000
    with pytest.raises(ConfigError, match="known"):
        get_config("cifar10", 7, "paper")
    with pytest.raises(ConfigError, match="known"):
        get_config("mnist_typo", 10)
    with pytest.raises(ConfigError, match="num_premodel"):
        c.replace(num_premodel=30)
    with pytest.raises(ConfigError, match="factor"):
        c.replace(factor=0)
    assert c.replace(batched_classes=True).batched_classes
    with pytest.raises(ConfigError, match="DanceConfig"):
        D.distill({"ipc": 1}, fake_data(), jax.random.PRNGKey(0))


def test_registered_in_method_registry():
    from jaxdistill.methods import get_config as reg_config, get_method

    assert get_method("dance") is D.distill
    assert reg_config("dance", "digits", 10, "quick") == get_config("digits", 10, "quick")
