"""Co-teaching and JoCoR: schedule, selection, losses against NumPy oracles, a tiny end-to-end run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.baselines import coteaching as ct
from jaxdistill.baselines import jocor as jc
from jaxdistill.errors import ConfigError


def test_forget_rate_schedule_closed_form():
    r = ct.forget_rate_schedule(8, 0.4, 5)
    np.testing.assert_allclose(r, [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4])
    np.testing.assert_allclose(ct.forget_rate_schedule(3, 0.4, 5), [0.0, 0.1, 0.2])
    np.testing.assert_allclose(ct.forget_rate_schedule(3, 0.25, 0), [0.25] * 3)
    assert [int(ct.num_remember(r_, 128)) for r_ in (0.0, 0.1, 0.4)] == [128, 115, 76]
    assert int(ct.num_remember(jnp.float32(0.4), 128)) == 76


def test_small_loss_mask_matches_numpy():
    rs = np.random.RandomState(0)
    loss = rs.rand(37).astype(np.float32)
    for keep in (1, 10, 37):
        m = np.asarray(ct.small_loss_mask(jnp.asarray(loss), jnp.int32(keep)))
        expect = np.zeros(37)
        expect[np.argsort(loss)[:keep]] = 1
        np.testing.assert_array_equal(m, expect)


def _np_logsoftmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_jocor_loss_against_numpy():
    rs = np.random.RandomState(1)
    l1, l2 = rs.randn(6, 4), rs.randn(6, 4)
    y = rs.randint(0, 4, 6)
    a, b = _np_logsoftmax(l1), _np_logsoftmax(l2)
    ce1, ce2 = -a[np.arange(6), y], -b[np.arange(6), y]
    kl12 = (np.exp(a) * (a - b)).sum(1)
    kl21 = (np.exp(b) * (b - a)).sum(1)
    expect = 0.35 * (ce1 + ce2) + 0.65 * (kl12 + kl21)
    got = jc.jocor_sample_loss(jnp.asarray(l1), jnp.asarray(l2), jnp.asarray(y), 0.65)
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    loss, met = jc.make_jocor_loss(0.65)(jnp.asarray(l1), jnp.asarray(l2), jnp.asarray(y), jnp.int32(4))
    np.testing.assert_allclose(loss, np.sort(expect)[:4].sum() / 4, rtol=1e-5)
    assert float(met["mask"].sum()) == 4


def test_coteaching_loss_crosses_selection():
    """Net 1's gradient lives only on the samples net 2 selected, and vice versa."""
    rs = np.random.RandomState(2)
    l1, l2 = jnp.asarray(rs.randn(10, 3)), jnp.asarray(rs.randn(10, 3))
    y = jnp.asarray(rs.randint(0, 3, 10))
    g1, g2 = jax.grad(lambda a, b: ct.coteaching_loss(a, b, y, jnp.int32(4))[0], argnums=(0, 1))(l1, l2)
    ce1, ce2 = np.asarray(ct.ce(l1, y)), np.asarray(ct.ce(l2, y))
    sel_by_2, sel_by_1 = np.argsort(ce2)[:4], np.argsort(ce1)[:4]
    np.testing.assert_array_equal(np.flatnonzero(np.abs(np.asarray(g1)).sum(1) > 0), np.sort(sel_by_2))
    np.testing.assert_array_equal(np.flatnonzero(np.abs(np.asarray(g2)).sum(1) > 0), np.sort(sel_by_1))
    # Finite-difference check of the value: masks are piecewise constant.
    val = ct.coteaching_loss(l1, l2, y, jnp.int32(4))[0]
    np.testing.assert_allclose(val, ce1[sel_by_2].mean() + ce2[sel_by_1].mean(), rtol=1e-5)


def test_configs_and_errors():
    c = ct.get_coteaching_config("digits", "quick")
    assert c.train.optimizer == "adam" and c.num_gradual == max(1, c.train.epochs // 5)
    assert jc.get_jocor_config("digits", "quick", noise_kind="asymmetric").lam == 0.65
    assert jc.get_jocor_config("digits", "quick").lam == 0.9
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        ct.CoTeachingConfig(forget_rate=1.5)
    with pytest.raises(ConfigError, match="augment"):
        ct.train_coteaching(None, c.replace(train=c.train.replace(augment="dsa")), jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def small_data():
    from jaxdistill.data import load_dataset, make_noisy_data

    return make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=400)


@pytest.mark.parametrize("method", ["coteaching", "jocor"])
def test_selected_fraction_follows_schedule(small_data, method):
    fn, get = ((ct.train_coteaching, ct.get_coteaching_config) if method == "coteaching"
               else (jc.train_jocor, jc.get_jocor_config))
    cfg = get("digits", "quick", width=8, k=2, num_gradual=3)
    cfg = cfg.replace(train=cfg.train.replace(epochs=5, batch_size=128))
    r = fn(small_data, cfg, jax.random.PRNGKey(0))
    tau = small_data.noise_rate
    rates = [0.0, tau / 2, tau, tau, tau]
    np.testing.assert_allclose(r["forget_rate"], rates, rtol=1e-6)
    expect = [np.floor((1 - q) * 128 + 1e-6) / 128 for q in rates]
    np.testing.assert_allclose(r["selected_fraction"], expect, rtol=0, atol=1e-7)
    assert len(r["accs"]) == 2 and all(0.0 <= a <= 1.0 for a in r["accs"])
    assert all(0.0 <= v <= 1.0 for v in r["label_precision"])
    # Epoch 0 keeps everything, so its label precision is the clean fraction of the batches seen.
    assert abs(r["label_precision"][0] - (1 - tau)) < 0.1


def test_selection_bias_moves_only_the_selection():
    """coteaching_loss with a per-sample bias: each net's mask is the keep smallest of loss + bias (NumPy), and
    the value is still the plain cross-entropy of the selected samples."""
    rs = np.random.RandomState(3)
    l1, l2 = jnp.asarray(rs.randn(10, 3)), jnp.asarray(rs.randn(10, 3))
    y = jnp.asarray(rs.randint(0, 3, 10))
    bias = jnp.asarray(np.where(np.arange(10) < 3, 50.0, 0.0))  # samples 0-2 are never chosen
    val, met = ct.coteaching_loss(l1, l2, y, jnp.int32(4), bias)
    ce1, ce2 = np.asarray(ct.ce(l1, y)), np.asarray(ct.ce(l2, y))
    by1, by2 = np.argsort(ce1 + np.asarray(bias))[:4], np.argsort(ce2 + np.asarray(bias))[:4]
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(met["mask"])), np.sort(by1))
    assert not set(by1.tolist()) & {0, 1, 2}
    np.testing.assert_allclose(val, ce1[by2].mean() + ce2[by1].mean(), rtol=1e-5)
    _, mj = jc.make_jocor_loss(0.5)(l1, l2, y, jnp.int32(4), bias)
    assert not set(np.flatnonzero(np.asarray(mj["mask"])).tolist()) & {0, 1, 2}


def test_an_oracle_selection_bias_keeps_the_wrong_labels_out(small_data):
    """With a bias that marks every wrong label (an oracle anchor) and tau = the noise rate, the selection's label
    precision after the ramp is near 1, far above the papers' Co-teaching on the same run; a bias of the wrong
    shape is refused."""
    cfg = ct.get_coteaching_config("digits", "quick", width=8, k=1, num_gradual=2)
    cfg = cfg.replace(train=cfg.train.replace(epochs=4, batch_size=128))
    wrong = np.asarray(small_data.y_noisy) != np.asarray(small_data.y_true)
    plain = ct.train_coteaching(small_data, cfg, jax.random.PRNGKey(0))
    anchored = ct.train_coteaching(small_data, cfg, jax.random.PRNGKey(0), selection_bias=100.0 * wrong)
    assert anchored["label_precision"][-1] > 0.95 > plain["label_precision"][-1] + 0.1
    # its label scores include the bias, so an oracle bias ranks the wrong labels first
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(wrong, anchored["label_scores"]) > 0.999
    with pytest.raises(ConfigError, match=r"selection_bias has shape \(3,\); expected \(400,\)"):
        ct.train_coteaching(small_data, cfg, jax.random.PRNGKey(0), selection_bias=np.zeros(3))


@pytest.mark.parametrize("method", ["coteaching", "jocor"])
def test_pair_methods_pick_their_best_epoch_on_the_noisy_validation_split(method):
    """With a noisy validation split, Co-teaching / JoCoR report net 1's accuracy per epoch on it (`val_curve`),
    the last one (`final_val`) and the test accuracy at the first epoch of its maximum (best_*), LNL-style;
    without one they report the last epoch only."""
    from jaxdistill.data import load_dataset, make_noisy_data

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=1, subset=400, val_fraction=0.25)
    fn, get = ((ct.train_coteaching, ct.get_coteaching_config) if method == "coteaching"
               else (jc.train_jocor, jc.get_jocor_config))
    cfg = get("digits", "quick", width=8, k=1, num_gradual=2)
    cfg = cfg.replace(train=cfg.train.replace(epochs=5, batch_size=64))
    r = fn(data, cfg, jax.random.PRNGKey(0))
    curve = np.asarray(r["val_curve"])
    assert curve.shape == (5,) and np.all((curve >= 0) & (curve <= 1))
    assert r["best_epochs"] == [int(np.argmax(curve)) + 1]
    assert r["final_val"] == pytest.approx(curve[-1])
    assert 0.0 <= r["best_acc_mean"] <= 1.0
    if r["best_epochs"][0] == 5:
        assert r["best_acc_mean"] == pytest.approx(r["acc_mean"])
    # the pair's own notion of a wrong label: its final cross-entropy per training label, the tau largest flagged
    from sklearn.metrics import roc_auc_score

    scores, flagged = np.asarray(r["label_scores"]), np.asarray(r["flagged"])
    assert scores.shape == flagged.shape == (300,)
    assert flagged.sum() == round(r["tau"] * 300) and scores[flagged].min() >= scores[~flagged].max()
    assert roc_auc_score(data.y_noisy != data.y_true, scores) > 0.5  # 5 epochs of a width-8 net: weak, not blind
    # the validation images are not trained on: 25% of 400 held out
    assert len(data.y_noisy) == 300 and len(data.y_val) == 100
