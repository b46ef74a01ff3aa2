"""DATM: meta-gradient vs a naive loop and finite differences, threshold rule, window formula, digits run,
resume after a crash, config errors."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdistill.augment import dsa
from jaxdistill.configs.datm import META_GRADS, DATMConfig, get_config
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.methods import datm
from jaxdistill.nn import NetConfig, make_net


# ---------------------------------------------------------------------------------------------
# A tiny problem: 6 images 6x6x1, 3 classes, ConvNet width 3 depth 1.
# ---------------------------------------------------------------------------------------------

def _tiny(act="relu", dtype=jnp.float32):
    net = make_net(NetConfig(num_classes=3, width=3, depth=1, act=act, softplus_temp=1.0))
    params = net.init(jax.random.PRNGKey(0), (6, 6, 1))
    # unravel casts back to the leaves' dtypes: make them `dtype` so float64 runs stay float64
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    theta0, unravel = ravel_pytree(params)
    apply_flat = lambda th, xb: net.apply(unravel(th), xb)
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    x = jax.random.normal(k[0], (6, 6, 6, 1), dtype)
    y = jax.random.normal(k[1], (6, 3), dtype)
    theta_star = theta0.astype(dtype) + 0.05 * jax.random.normal(k[2], theta0.shape, dtype)
    return apply_flat, theta0.astype(dtype), theta_star, x, y


def _naive_loss(apply_flat, x, y, lr, theta0, theta_star, idx, keys, use_dsa):
    """The same maths, step by step in Python (no scan, no remat)."""
    theta = theta0
    for s in range(idx.shape[0]):
        b = idx[s]
        xb = dsa(keys[s], x[b], mode="one") if use_dsa else x[b]
        yb = y[b]

        def ce(th):
            logits = apply_flat(th, xb)
            return jnp.mean(jnp.sum(-jax.nn.softmax(yb) * jax.nn.log_softmax(logits), axis=-1))

        theta = theta - lr * jax.grad(ce)(theta)
    return jnp.sum((theta - theta_star) ** 2) / jnp.sum((theta0 - theta_star) ** 2)


EXACT = tuple(m for m in META_GRADS if m != "tesla")  # the exact gradients; "tesla" has its own oracle below


@pytest.mark.parametrize("meta_grad", EXACT)
def test_meta_gradient_equals_naive_loop(meta_grad):
    apply_flat, theta0, theta_star, x, y = _tiny()
    idx = datm.batch_indices(jax.random.PRNGKey(2), 6, 3, 3)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    lr = jnp.float32(0.3)
    args = (x, y, lr)
    scanned = jax.jit(jax.value_and_grad(
        lambda x, y, lr: datm.matching_loss(apply_flat, x, y, lr, theta0, theta_star, idx, keys, True, True,
                                            meta_grad),
        argnums=(0, 1, 2)))(*args)
    naive = jax.jit(jax.value_and_grad(
        lambda x, y, lr: _naive_loss(apply_flat, x, y, lr, theta0, theta_star, idx, keys, True),
        argnums=(0, 1, 2)))(*args)
    chex.assert_trees_all_close(scanned, naive, rtol=2e-4, atol=1e-6)
    # the gradient is not trivially zero
    assert float(jnp.abs(scanned[1][0]).max()) > 1e-4 and abs(float(scanned[1][2])) > 1e-4


@pytest.mark.parametrize("meta_grad", EXACT)
def test_meta_gradient_matches_finite_differences(meta_grad):
    with jax.enable_x64(True):
        apply_flat, theta0, theta_star, x, y = _tiny(act="softplus", dtype=jnp.float64)
        idx = datm.batch_indices(jax.random.PRNGKey(2), 6, 3, 4)
        keys = jax.random.split(jax.random.PRNGKey(3), 4)
        lr = jnp.float64(0.3)

        @jax.jit
        def f(x, y, lr):
            return datm.matching_loss(apply_flat, x, y, lr, theta0, theta_star, idx, keys, False, True, meta_grad)

        gx, gy, glr = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, y, lr)
        eps = 1e-5
        for pos in [(0, 2, 3, 0), (4, 0, 5, 0), (5, 3, 1, 0)]:
            e = jnp.zeros_like(x).at[pos].set(eps)
            fd = (f(x + e, y, lr) - f(x - e, y, lr)) / (2 * eps)
            np.testing.assert_allclose(float(gx[pos]), float(fd), rtol=1e-5, atol=1e-9)
        e = jnp.zeros_like(y).at[1, 2].set(eps)
        np.testing.assert_allclose(float(gy[1, 2]), float((f(x, y + e, lr) - f(x, y - e, lr)) / (2 * eps)),
                                   rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(float(glr), float((f(x, y, lr + eps) - f(x, y, lr - eps)) / (2 * eps)),
                                   rtol=1e-5, atol=1e-9)


def test_outer_step_same_with_either_meta_grad():
    """Two trajectories per step (lax.map), DSA on: the jvp reverse pass and autodiff step the set alike."""
    apply_flat, theta0, theta_star, x, y = _tiny()
    t0 = jnp.stack([theta0, theta0 + 0.01])
    t1 = jnp.stack([theta_star, theta_star - 0.01])
    out = {}
    for mg in EXACT:
        cfg = _cfg(dsa=True, trajectories_per_iter=2, meta_grad=mg, threshold=1e9)
        step = datm.make_outer_step(apply_flat, cfg)
        state, loss, finite, applied = step(datm.init_syn_state(cfg, jnp.array(x), jnp.array(y), 0.3), t0, t1,
                                          jax.random.PRNGKey(7))  # the step donates the state: copies
        assert bool(finite) and bool(applied)
        out[mg] = (state.x, state.y, state.lr, loss)
    chex.assert_trees_all_close(out["jvp"], out["autodiff"], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(out["jvp"][0] - x).max()) > 1e-4   # the step moved the images


def _naive_tesla(apply_flat, x, y, lr, theta0, theta_star, idx, keys, use_dsa):
    """DATM_tesla.py (DD_LNL `DATM+ours/distill/DATM_tesla.py` lines 515-590) written out: a forward unroll with
    detached per-step gradients and their sum; then per step the gradient, in that step's images and labels, of
    `2 * (lr * (target - start) + lr**2 * gradient_sum) @ grad_i / param_dist` at the stored theta_i; the lr's
    gradient from `||start - lr * gradient_sum - target||^2 / param_dist` with gradient_sum fixed.
    -> (loss, (g_x, g_y, g_lr))."""
    def ce(th, xb, yb):
        return jnp.mean(jnp.sum(-jax.nn.softmax(yb) * jax.nn.log_softmax(apply_flat(th, xb)), axis=-1))

    def batch(s, x_, y_):
        b = idx[s]
        return (dsa(keys[s], x_[b], mode="one") if use_dsa else x_[b]), y_[b]

    theta, thetas, gsum = theta0, [], jnp.zeros_like(theta0)
    for s in range(idx.shape[0]):
        g = jax.lax.stop_gradient(jax.grad(ce)(theta, *batch(s, x, y)))
        thetas.append(theta)
        gsum = gsum + g
        theta = theta - lr * g
    dist = jnp.sum((theta0 - theta_star) ** 2)
    gx, gy = jnp.zeros_like(x), jnp.zeros_like(y)
    for s in range(idx.shape[0]):
        def total(x_, y_, s=s):
            g_i = jax.grad(ce)(thetas[s], *batch(s, x_, y_))
            return 2 * jnp.dot(lr * (theta_star - theta0) + lr ** 2 * gsum, g_i) / dist
        ddx, ddy = jax.grad(total, argnums=(0, 1))(x, y)
        gx, gy = gx + ddx, gy + ddy
    loss, glr = jax.value_and_grad(lambda l: jnp.sum((theta0 - l * gsum - theta_star) ** 2) / dist)(lr)
    return loss, (gx, gy, glr)


def test_tesla_meta_gradient_equals_the_studys_loop():
    """meta_grad='tesla' (the study's DATM_tesla.py) against that script's loop written out, DSA on; and it is
    not the exact gradient (the test tells the two apart)."""
    apply_flat, theta0, theta_star, x, y = _tiny()
    idx = datm.batch_indices(jax.random.PRNGKey(2), 6, 3, 4)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    lr = jnp.float32(0.3)

    def ours(mg):
        return jax.jit(jax.value_and_grad(
            lambda x, y, lr: datm.matching_loss(apply_flat, x, y, lr, theta0, theta_star, idx, keys, True, True, mg),
            argnums=(0, 1, 2)))(x, y, lr)

    tesla = ours("tesla")
    want = jax.jit(lambda x, y, lr: _naive_tesla(apply_flat, x, y, lr, theta0, theta_star, idx, keys, True))(x, y, lr)
    chex.assert_trees_all_close(tesla, want, rtol=2e-4, atol=1e-6)
    assert float(jnp.abs(tesla[1][0]).max()) > 1e-4 and abs(float(tesla[1][2])) > 1e-4
    exact = ours("jvp")
    np.testing.assert_allclose(float(tesla[0]), float(exact[0]), rtol=1e-6)   # same loss value
    rel = float(jnp.abs(tesla[1][0] - exact[1][0]).max() / jnp.abs(exact[1][0]).max())
    assert rel > 1e-2, rel                                                       # other image gradients


def test_run_record_lets_exact_modes_resume_each_other_but_not_tesla():
    from types import SimpleNamespace

    from jaxdistill.methods.base import run_record

    data = SimpleNamespace(x_train=np.zeros((4, 6, 6, 1), np.float32), y_noisy=np.array([0, 1, 2, 0]), name="toy")
    rec = {mg: run_record("datm", _cfg(meta_grad=mg), data, jax.random.PRNGKey(0)) for mg in META_GRADS}
    assert rec["jvp"] == rec["autodiff"] and rec["tesla"] != rec["jvp"]
    assert rec["tesla"]["config"]["meta_grad"] == "tesla"


def test_meta_grad_choice_is_checked():
    with pytest.raises(ConfigError, match="meta_grad.*'reverse'.*jvp.*autodiff"):
        _cfg(meta_grad="reverse")


def _cfg(**kw):
    base = dict(dataset="toy", ipc=2, syn_steps=3, batch_syn=3, max_start_epoch=2, sequential=False,
                expert_train_epochs=3, dsa=False)
    base.update(kw)
    return DATMConfig(**base)


def test_threshold_rule_and_nonfinite_leave_state_untouched():
    apply_flat, theta0, theta_star, x, y = _tiny()
    key = jax.random.PRNGKey(5)

    steps = {}

    def run(cfg, state, t_star):
        # one compiled step per threshold (the config is static)
        if cfg.threshold not in steps:
            steps[cfg.threshold] = datm.make_outer_step(apply_flat, cfg)
        return steps[cfg.threshold](state, theta0, t_star, key)

    # One applied step first, so the momentum buffers are non-zero.
    state0, loss0, finite0, applied0 = run(_cfg(threshold=1e9), datm.init_syn_state(_cfg(), x, y, 0.01),
                                           theta_star)
    assert bool(finite0) and bool(applied0)
    assert float(jnp.abs(state0.opt[0][0].trace).max()) > 0
    before = jax.tree_util.tree_map(np.array, state0)
    # loss > threshold: nothing moves (params and optimiser states)
    s1, loss1, finite1, applied1 = run(_cfg(threshold=1e-6), jax.tree_util.tree_map(jnp.asarray, before),
                                       theta_star)
    assert bool(finite1) and not bool(applied1) and float(loss1) > 1e-6
    chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, s1), before)
    # non-finite loss (theta* == theta0: 0/0): nothing moves either
    s2, loss2, finite2, applied2 = run(_cfg(threshold=1e9), jax.tree_util.tree_map(jnp.asarray, before), theta0)
    assert not bool(finite2) and not bool(applied2)
    chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, s2), before)
    # loss <= threshold: everything moves, with torch SGD-momentum semantics (buf = mu*buf + g)
    s3, loss3, _, applied3 = run(_cfg(threshold=1e9), jax.tree_util.tree_map(jnp.asarray, before), theta_star)
    assert bool(applied3)
    g_lr = (before.opt[2][0].trace * 0 + (s3.opt[2][0].trace - 0.5 * before.opt[2][0].trace))
    np.testing.assert_allclose(float(s3.lr), float(before.lr - 1e-5 * (0.5 * before.opt[2][0].trace + g_lr)),
                               rtol=1e-6)
    assert not np.allclose(np.asarray(s3.x), before.x)


def test_sequential_window_matches_spec_formula():
    cfg = get_config("cifar10", 10)  # Seq: 10 -> 20 over 1000 iterations, start range [0, U)
    for it in [0, 1, 99, 100, 250, 500, 999, 1000, 1500, 10000]:
        want = min(10 + int((20 - 10) * it / 1000), 20)
        assert datm.start_epoch_upper(cfg, it) == want
    assert datm.start_epoch_upper(cfg, 0) == 10 and datm.start_epoch_upper(cfg, 550) == 15
    flat = get_config("cifar10", 500)  # not sequential: [40, 60)
    assert all(datm.start_epoch_upper(flat, it) == 60 for it in (0, 10, 5000))
    # host draws: t in [min, U), every value reached, deterministic, experts cycled as permutations
    seed = (1, 2)
    ts = [datm.host_draws(seed, it, cfg, 5)[1] for it in range(400)]
    assert min(ts) == 0 and max(ts) == 10 - 1 + int(10 * 399 / 1000)
    assert set(ts[:300]) == set(range(0, 12))  # U <= 12 before it 300
    assert [datm.host_draws(seed, it, cfg, 5) for it in range(20)] == [datm.host_draws(seed, it, cfg, 5)
                                                                       for it in range(20)]
    assert sorted(datm.host_draws(seed, it, cfg, 5)[0] for it in range(5, 10)) == [0, 1, 2, 3, 4]


def test_batch_indices_are_permutation_chunks():
    idx = np.asarray(datm.batch_indices(jax.random.PRNGKey(0), 12, 4, 7))
    assert idx.shape == (7, 4)
    assert sorted(idx[:3].ravel().tolist()) == list(range(12))   # first permutation
    assert sorted(idx[3:6].ravel().tolist()) == list(range(12))  # second permutation
    np.testing.assert_array_equal(np.asarray(datm.batch_indices(jax.random.PRNGKey(0), 5, 8, 2)),
                                  np.tile(np.arange(5), (2, 1)))
    with pytest.raises(ConfigError, match="batch_syn=5 must divide"):
        datm.batch_indices(jax.random.PRNGKey(0), 12, 5, 2)


def test_configs_and_errors():
    c = get_config("cifar100", 50)
    assert (c.syn_steps, c.min_start_epoch, c.max_start_epoch, c.init, c.lr_img) == (80, 20, 70, "real", 1000)
    assert get_config("cifar10", 1).threshold == 1.1 and get_config("tiny_imagenet", 1).depth == 4
    assert get_config("cifar100", 1).expert_epochs == 3
    assert get_config("cifar10_n", 10) == dataclasses.replace(get_config("cifar10", 10), dataset="cifar10_n")
    with pytest.raises(ConfigError, match="known settings: .*cifar10/ipc10"):
        get_config("cifar10", 7)
    with pytest.raises(ConfigError, match="init='bogus' is not one of"):
        get_config("digits", 10, "quick").replace(init="bogus")
    with pytest.raises(ConfigError, match="exceeds expert_train_epochs"):
        get_config("cifar100", 50).replace(expert_train_epochs=50)


# ---------------------------------------------------------------------------------------------
# End to end on digits (a 300-image subset), tiny net and experts shared by the tests below.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    from jaxdistill.data import load_dataset, make_noisy_data

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.2", seed=0, subset=300)
    cfg = get_config("digits", 2, "quick").replace(
        width=8, depth=2, iterations=50, syn_steps=6, batch_syn=10, max_start_epoch=4,
        current_max_start_epoch=2, expansion_end_epoch=20, num_experts=2, expert_train_epochs=5,
        expert_sam_rho=0.01, expert_batch=64, checkpoint_every=10, lr_img=30.0)
    d = str(tmp_path_factory.mktemp("experts"))
    store = datm.build_experts(cfg, data, jax.random.PRNGKey(0), d, progress=False)
    return data, cfg, store


def test_distill_digits_lowers_matching_loss_and_resumes(digits_setup, tmp_path, monkeypatch):
    data, cfg, store = digits_setup
    full = datm.distill(cfg, data, jax.random.PRNGKey(4), workdir=str(tmp_path / "a"), progress=False,
                        store=store)
    hist = np.array(full.meta["loss_history"])
    assert hist.shape == (50,) and np.isfinite(hist).all()
    assert hist[-10:].mean() < 0.9 * hist[:10].mean(), (hist[:10].mean(), hist[-10:].mean())
    assert full.images.shape == (20, 8, 8, 1) and full.targets.shape == (20, 10)
    assert full.target_kind == "soft_logits" and full.lr > 0 and full.meta["iterations"] == 50
    # soft-label init keeps each image's class as the arg-max target for most images
    assert (full.targets.argmax(1) == full.labels).mean() > 0.5
    assert (tmp_path / "a" / "distilled.npz").exists()

    # Crash at iteration 35 (after the checkpoint at 30), then rerun: the same final set.
    real_draws = datm.host_draws

    def crashing(seed, it, cfg_, n):
        if it == 35:
            raise KeyboardInterrupt("simulated crash")
        return real_draws(seed, it, cfg_, n)

    monkeypatch.setattr(datm, "host_draws", crashing)
    with pytest.raises(KeyboardInterrupt):
        datm.distill(cfg, data, jax.random.PRNGKey(4), workdir=str(tmp_path / "b"), progress=False, store=store)
    monkeypatch.setattr(datm, "host_draws", real_draws)
    resumed = datm.distill(cfg, data, jax.random.PRNGKey(4), workdir=str(tmp_path / "b"), progress=False,
                           store=store)
    np.testing.assert_array_equal(resumed.images, full.images)
    np.testing.assert_array_equal(resumed.targets, full.targets)
    assert resumed.lr == full.lr
    np.testing.assert_array_equal(resumed.meta["loss_history"], full.meta["loss_history"])


def test_distill_refuses_wrong_store_and_too_large_ipc(digits_setup):
    from jaxdistill.errors import StoreError

    data, cfg, store = digits_setup
    with pytest.raises(StoreError, match="holds nets"):
        datm.distill(cfg.replace(width=9), data, jax.random.PRNGKey(0), progress=False, store=store)
    with pytest.raises(StoreError, match="lacks"):
        datm.distill(cfg.replace(max_start_epoch=5, expert_train_epochs=9), data, jax.random.PRNGKey(0),
                     progress=False, store=store)
    with pytest.raises(DataError, match="ipc=40"):
        datm.distill(cfg.replace(ipc=40), data, jax.random.PRNGKey(0), progress=False, store=store)


def test_workdir_of_another_config_refused(digits_setup, tmp_path):
    from jaxdistill.errors import StoreError

    data, cfg, store = digits_setup
    short = cfg.replace(iterations=2)
    datm.distill(short, data, jax.random.PRNGKey(0), workdir=str(tmp_path), progress=False, store=store)
    with pytest.raises(StoreError, match=r"another config \(differs in \['iterations'\]\)"):
        datm.distill(short.replace(iterations=3), data, jax.random.PRNGKey(0), workdir=str(tmp_path),
                     progress=False, store=store)


def test_meta_grad_is_not_part_of_the_run_record():
    """meta_grad changes speed, not the set: a run checkpointed under one mode resumes under the other."""
    from types import SimpleNamespace

    from jaxdistill.methods.base import run_record

    data = SimpleNamespace(x_train=np.zeros((4, 6, 6, 1), np.float32), y_noisy=np.array([0, 1, 2, 0]), name="toy")
    key = jax.random.PRNGKey(0)
    rec = {mg: run_record("datm", _cfg(meta_grad=mg), data, key) for mg in META_GRADS}
    assert rec["jvp"] == rec["autodiff"] and "meta_grad" not in rec["jvp"]["config"]
    assert run_record("datm", _cfg(ipc=3), data, key) != rec["jvp"]


# ---------------------------------------------------------------------------------------------
# The learned student lr against an independent numpy computation (issue 29)
# ---------------------------------------------------------------------------------------------

def _np_soft_ce_parts(X, W, Q):
    """Linear softmax student: logits X W; p = softmax(logits), gradient X^T (p - q) / B, and a function for
    Hessian-vector products H v = X^T [p * (X V - <p, X V>)] / B (V = v as W's shape)."""
    z = X @ W
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = X.T @ (p - Q) / X.shape[0]

    def hvp(V):
        dz = X @ V
        return X.T @ (p * (dz - (p * dz).sum(1, keepdims=True))) / X.shape[0]

    return g, hvp


def _np_lr_gradients(X, Q, lr, th0, ths, steps):
    """(L, dL/dlr through the whole unroll (forward-mode tangent), TESLA's dL/dlr with the gradient sum held
    fixed) for L = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2, every step on the full set."""
    W, dW, gsum = th0.copy(), np.zeros_like(th0), np.zeros_like(th0)
    for _ in range(steps):
        g, hvp = _np_soft_ce_parts(X, W, Q)
        W, dW = W - lr * g, dW - g - lr * hvp(dW)  # d/dlr of theta_{i+1} = theta_i - lr g(theta_i)
        gsum += g
    pd = np.sum((th0 - ths) ** 2)
    return (np.sum((W - ths) ** 2) / pd, 2 * np.sum((W - ths) * dW) / pd,
            -2 * np.sum((W - ths) * gsum) / pd)


def test_learned_lr_update_equals_numpy_unroll_with_sgd_momentum():
    """Two outer steps of make_outer_step on a linear student: the lr follows torch SGD(lr=lr_lr, momentum=0.5)
    on dL/dlr taken through the whole unroll (DATM.py, spec 1.4), computed here in float64 numpy by forward-mode
    tangents. DATM_tesla.py's lr gradient (gradient sum held fixed, spec 1.8) differs on this problem, so the
    check tells the two rules apart."""
    D, C, N, S = 4, 3, 6, 3
    rng = np.random.default_rng(0)
    x = (2 * rng.normal(size=(N, 2, 2, 1))).astype(np.float32)  # curved enough for the two lr rules to differ
    y = rng.normal(size=(N, C)).astype(np.float32)
    thetas = [(0.3 * rng.normal(size=D * C), None) for _ in range(2)]
    thetas = [(t0, t0 + 0.4 * rng.normal(size=D * C)) for t0, _ in thetas]
    apply_flat = lambda th, xb: xb.reshape(xb.shape[0], -1) @ th.reshape(D, C)  # noqa: E731
    # images and labels frozen (lr_img, lr_y tiny): only the lr moves, so numpy needs no image gradients
    cfg = _cfg(ipc=2, syn_steps=S, batch_syn=N, threshold=1e9, lr_lr=1e-3, mom_lr=0.5, lr_img=1e-30,
               lr_y=1e-30)
    step = datm.make_outer_step(apply_flat, cfg)
    state = datm.init_syn_state(cfg, x, y, 0.5)

    X = x.reshape(N, -1).astype(np.float64)
    Q = np.exp(y - y.max(1, keepdims=True)).astype(np.float64)
    Q /= Q.sum(1, keepdims=True)
    lr_np, buf = 0.5, None
    for i, (t0, ts) in enumerate(thetas):
        loss_np, g_full, g_tesla = _np_lr_gradients(X, Q, lr_np, t0.reshape(D, C), ts.reshape(D, C), S)
        assert abs(g_full - g_tesla) > 0.2 * abs(g_full)  # the two rules differ here
        buf = g_full if buf is None else 0.5 * buf + g_full  # torch: first buf = g, then mu * buf + g
        lr_prev, lr_np = lr_np, lr_np - 1e-3 * buf
        state, loss, finite, applied = step(state, jnp.asarray(t0, jnp.float32), jnp.asarray(ts, jnp.float32),
                                            jax.random.PRNGKey(i))
        assert bool(finite) and bool(applied)
        np.testing.assert_allclose(float(loss), loss_np, rtol=1e-5)
        # the lr's change, not just its value (the change is ~1e-3 of it)
        np.testing.assert_allclose(float(state.lr) - lr_prev, lr_np - lr_prev, rtol=2e-3)
        np.testing.assert_allclose(np.asarray(state.x), x)  # images stayed put
    assert abs(lr_np - 0.5) > 1e-3
