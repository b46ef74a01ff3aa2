"""GCE and ELR (jaxdistill.baselines.robust): losses against closed forms, NumPy loops and finite differences,
and a tiny end-to-end run with a noisy validation split."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.baselines import robust as rb
from jaxdistill.errors import ConfigError


def _np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _fd_grad(f, z, eps=1e-5):
    """Central finite differences of a scalar f at z (float64)."""
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        g[idx] = (f(zp) - f(zm)) / (2 * eps)
    return g


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_gce_closed_form_and_gradient():
    rs = np.random.RandomState(0)
    z = rs.randn(7, 5)
    y = rs.randint(0, 5, 7)
    for q in (0.7, 1.0, 0.3):
        p = _np_softmax(z)[np.arange(7), y]
        chex.assert_trees_all_close(np.asarray(rb.gce_loss(jnp.asarray(z), jnp.asarray(y), q)),
                                    (1 - p ** q) / q, rtol=1e-10)
        f = lambda zz: float(((1 - _np_softmax(zz)[np.arange(7), y] ** q) / q).sum())
        g = jax.grad(lambda zz: rb.gce_loss(zz, jnp.asarray(y), q).sum())(jnp.asarray(z))
        chex.assert_trees_all_close(np.asarray(g), _fd_grad(f, z), atol=1e-7)
    # q -> 0 is cross-entropy
    ce = -np.log(_np_softmax(z)[np.arange(7), y])
    chex.assert_trees_all_close(np.asarray(rb.gce_loss(jnp.asarray(z), jnp.asarray(y), 1e-6)), ce, rtol=1e-4)


def test_elr_target_update_against_numpy_loop():
    rs = np.random.RandomState(1)
    n, c, beta = 6, 4, 0.7
    t = np.zeros((n, c))
    t_j = jnp.zeros((n, c))
    for _ in range(3):  # three epochs of updates on the same samples
        z = rs.randn(n, c) * 3
        expect = np.zeros_like(t)
        for i in range(n):
            p = np.clip(_np_softmax(z[i]), 1e-4, 1 - 1e-4)
            expect[i] = beta * t[i] + (1 - beta) * p / p.sum()
        t = expect
        t_j = rb.elr_target_update(t_j, jnp.asarray(z), beta)
        chex.assert_trees_all_close(np.asarray(t_j), t, rtol=1e-12)
    chex.assert_trees_all_close(np.asarray(t_j).sum(-1), np.full(n, 1 - beta ** 3), rtol=1e-12)


def test_elr_loss_value_and_gradient():
    rs = np.random.RandomState(2)
    n, c, lam = 5, 3, 3.0
    z = rs.randn(n, c)
    y = rs.randint(0, c, n)
    t = _np_softmax(rs.randn(n, c)) * 0.6

    def f(zz):
        p = _np_softmax(zz)
        ce = -np.log(p[np.arange(n), y])
        pc = np.clip(p, 1e-4, 1 - 1e-4)
        return ce + lam * np.log(1 - (t * pc).sum(1))

    got = rb.elr_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(t), lam)
    chex.assert_trees_all_close(np.asarray(got), f(z), rtol=1e-10)
    g = jax.grad(lambda zz: rb.elr_loss(zz, jnp.asarray(y), jnp.asarray(t), lam).sum())(jnp.asarray(z))
    chex.assert_trees_all_close(np.asarray(g), _fd_grad(lambda zz: float(f(zz).sum()), z), atol=1e-7)
    # The targets carry no gradient.
    gt = jax.grad(lambda tt: rb.elr_loss(jnp.asarray(z), jnp.asarray(y), tt, lam).sum())(jnp.asarray(t))
    chex.assert_trees_all_close(np.asarray(gt), np.zeros_like(t))


def test_config_errors_name_the_value():
    with pytest.raises(ConfigError, match=r"loss='mae'.*ce, gce, elr"):
        rb.RobustConfig(loss="mae")
    with pytest.raises(ConfigError, match=r"q=0"):
        rb.RobustConfig(q=0.0)
    with pytest.raises(ConfigError, match=r"beta=1"):
        rb.RobustConfig(beta=1.0)
    c = rb.get_robust_config("elr", "digits", "quick")
    assert (c.lam, c.beta, c.loss) == (3.0, 0.7, "elr")


@pytest.fixture(scope="module")
def small_data():
    from jaxdistill.data import load_dataset, make_noisy_data

    return make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=500, val_fraction=0.2)


def test_tiny_elr_run_last_best_and_flags(small_data):
    """ELR end to end (GCE shares the same training function; its loss is checked above)."""
    loss = "elr"
    cfg = rb.get_robust_config(loss, "digits", "quick", width=8, k=2)
    cfg = cfg.replace(train=cfg.train.replace(epochs=15, batch_size=64, lr=0.05))
    with jax.enable_x64(False):
        r = rb.train_robust(small_data, cfg, jax.random.PRNGKey(0))
    assert len(r["accs"]) == 2 and all(0.0 <= a <= 1.0 for a in r["accs"] + r["best_accs"])
    assert all(1 <= e <= 15 for e in r["best_epochs"]) and len(r["val_curve"]) == 15
    assert r["acc_mean"] > 0.3  # 10 classes: well above chance after 15 epochs on 400 noisy digits
    if loss == "elr":
        scores = np.asarray(r["label_scores"])
        wrong = small_data.y_noisy != small_data.y_true
        from sklearn.metrics import roc_auc_score

        assert roc_auc_score(wrong, scores) > 0.7  # the targets disagree with the wrong labels
        assert len(r["flagged"]) == len(wrong)


def test_estimate_transition_against_a_naive_loop():
    rs = np.random.RandomState(6)
    n, c = 200, 4
    true = rs.randint(0, c, n)
    flip = {0: 1, 1: 0, 2: 2, 3: 2}
    noisy = np.where(rs.rand(n) < 0.3, [flip[t] for t in true], true)
    anchor = np.eye(c)[true] * 0.9 + 0.1 / c       # a confident anchor that knows the true classes
    t = rb.estimate_transition(anchor, noisy, c)
    expect = np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            expect[i, j] = sum(anchor[m, i] for m in range(n) if noisy[m] == j) / anchor[:, i].sum()
    chex.assert_trees_all_close(t, expect, rtol=1e-12)
    chex.assert_trees_all_close(t.sum(1), np.ones(c))
    # An anchor that never predicts class 3 leaves the identity row there
    a2 = np.eye(c)[np.minimum(true, 2)]
    chex.assert_trees_all_close(rb.estimate_transition(a2, noisy, c)[3], np.eye(c)[3])


def test_estimate_transition_confident_against_a_naive_loop_and_the_truth():
    """Anchor points: per predicted class, the noisy labels of its most confident `top` fraction (naive loop:
    sort by hand); an anchor that is right on its confident samples but wrong on many others recovers the
    empirical transition there, where soft counts over every sample are biased by its errors."""
    rs = np.random.RandomState(8)
    n, c = 3000, 4
    true = rs.randint(0, c, n)
    flip = {0: 1, 1: 0, 2: 2, 3: 2}
    noisy = np.where(rs.rand(n) < 0.3, [flip[t] for t in true], true)
    # confidence is high and right on half the samples, low and random on the rest (30% of them wrong)
    sure = rs.rand(n) < 0.5
    guess = np.where(rs.rand(n) < 0.3, rs.randint(0, c, n), true)
    anchor = np.where(sure[:, None], np.eye(c)[true] * 0.9 + 0.1 / c, np.eye(c)[guess] * 0.4 + 0.6 / c)
    top = 0.3
    t = rb.estimate_transition_confident(anchor, noisy, c, top=top)
    expect = np.eye(c)
    pred = anchor.argmax(1)
    for i in range(c):
        members = sorted((m for m in range(n) if pred[m] == i), key=lambda m: (-anchor[m, i], m))
        keep = members[: max(1, int(round(top * len(members))))]
        for j in range(c):
            expect[i, j] = sum(noisy[m] == j for m in keep) / len(keep)
    chex.assert_trees_all_close(t, expect, rtol=1e-12)
    emp = np.array([[np.mean(noisy[true == i] == j) for j in range(c)] for i in range(c)])
    assert np.abs(t - emp).sum(1).mean() < 0.08
    assert np.abs(rb.estimate_transition(anchor, noisy, c) - emp).sum(1).mean() > 0.15
    rate = rb.noise_rate(t, np.full(c, 0.25))
    assert abs(rate - np.mean(noisy != true)) < 0.04
    chex.assert_trees_all_close(rb.noise_rate(np.eye(c), np.ones(c)), 0.0)
    chex.assert_trees_all_close(rb.noise_rate(np.full((c, c), 1 / c), np.ones(c)), 0.75)
    # a class never predicted keeps the identity row; a bad fraction is refused naming it
    chex.assert_trees_all_close(rb.estimate_transition_confident(np.eye(c)[np.minimum(true, 2)], noisy, c)[3],
                                np.eye(c)[3])
    with pytest.raises(ConfigError, match=r"top=0.*\(0, 1\]"):
        rb.estimate_transition_confident(anchor, noisy, c, top=0.0)


def test_forward_loss_value_gradient_and_config():
    rs = np.random.RandomState(7)
    z, y = rs.randn(5, 3), rs.randint(0, 3, 5)
    t = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]])
    f = lambda zz: -np.log((_np_softmax(zz) @ t)[np.arange(5), y])
    got = rb.forward_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(t))
    chex.assert_trees_all_close(np.asarray(got), f(z), rtol=1e-10)
    g = jax.grad(lambda zz: rb.forward_loss(zz, jnp.asarray(y), jnp.asarray(t)).sum())(jnp.asarray(z))
    chex.assert_trees_all_close(np.asarray(g), _fd_grad(lambda zz: float(f(zz).sum()), z), atol=1e-7)
    # the identity matrix gives plain cross-entropy
    ce = -np.log(_np_softmax(z)[np.arange(5), y])
    chex.assert_trees_all_close(np.asarray(rb.forward_loss(jnp.asarray(z), jnp.asarray(y), jnp.eye(3))), ce,
                                rtol=1e-10)
    with pytest.raises(ConfigError, match="row-stochastic"):
        rb.RobustConfig(loss="forward")
    with pytest.raises(ConfigError, match="row-stochastic"):
        rb.RobustConfig(loss="forward", transition=((0.5, 0.4), (0.0, 1.0)))
    assert rb.RobustConfig(loss="forward", transition=tuple(map(tuple, t))).transition[2][2] == 0.7
    c = rb.get_robust_config("forward", "digits", "quick", transition=((1.0, 0.0), (0.2, 0.8)), k=2)
    assert c.transition == ((1.0, 0.0), (0.2, 0.8)) and c.k == 2
