import dataclasses
import types

import jax
import numpy as np

from jaxdistill.baseline import BaselineConfig, run_baseline
from jaxdistill.train import TrainConfig


def test_baseline_entries_and_val_selection(digits_data):
    d = digits_data
    rs = np.random.RandomState(0)
    n = 600
    idx = rs.permutation(len(d.y_noisy))
    tr, va = idx[:n], idx[n:n + 200]
    y_noisy = d.y_noisy[tr].copy()
    flip = rs.rand(n) < 0.4
    y_noisy[flip] = rs.randint(0, 10, flip.sum())
    data = types.SimpleNamespace(x_train=d.x_train[tr], y_noisy=y_noisy, y_true=d.y_noisy[tr], x_test=d.x_test,
                                 y_test=d.y_test, x_val=d.x_train[va], y_val=d.y_noisy[va], num_classes=10)
    cfg = BaselineConfig(width=8, k=2, train=TrainConfig(epochs=3, batch_size=100, lr=0.05, momentum=0.9))
    res = run_baseline(data, cfg, jax.random.PRNGKey(0))
    assert set(res) == {"baseline_noisy", "baseline_noisy_valselected", "baseline_clean"}
    for r in res.values():
        assert len(r["accs"]) == 2 and 0.0 <= r["acc_mean"] <= 1.0
        np.testing.assert_allclose(r["acc_mean"], np.mean(r["accs"]))
    sel = res["baseline_noisy_valselected"]
    assert all(1 <= e <= 3 for e in sel["selected_epoch"]) and len(sel["val_curve"]) == 3
    # a net whose selected epoch is the last has the same figure as the final one
    for j, e in enumerate(sel["selected_epoch"]):
        if e == 3:
            assert sel["accs"][j] == res["baseline_noisy"]["accs"][j]
    # clean labels beat 40%-noisy labels after the same training
    assert res["baseline_clean"]["acc_mean"] > res["baseline_noisy"]["acc_mean"] - 0.02


def test_quick_digits_baseline_meets_the_convergence_criterion():
    """No preset may use a baseline that has not converged: the digits quick baseline (30 epochs) has, a 3-epoch
    one has not (its noisy-label train accuracy still climbs by more than a point)."""
    from jaxdistill.baseline import get_baseline_config
    from jaxdistill.data import load_dataset, make_noisy_data

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, val_fraction=0.1)
    cfg = dataclasses.replace(get_baseline_config("digits", "quick"), k=1)  # the schedule is the point, not k
    res = run_baseline(data, cfg, jax.random.PRNGKey(0), clean=False)
    b = res["baseline_noisy"]
    assert b["epochs"] == 30 and len(b["curve"]["train_noisy"]) == 30 and len(b["curve"]["val_noisy"]) == 30
    assert b["convergence"]["converged"], b["convergence"]
    # the curve is the mean over the nets of accuracy on the noisy labels, and it did rise from epoch 1
    assert b["curve"]["train_noisy"][-1] > b["curve"]["train_noisy"][0] + 0.1
    short = dataclasses.replace(cfg, train=cfg.train.replace(epochs=3))
    r3 = run_baseline(data, short, jax.random.PRNGKey(0), clean=False)["baseline_noisy"]
    assert not r3["convergence"]["converged"], r3["convergence"]


def test_wrong_label_fit_against_a_naive_loop(digits_data):
    from jaxdistill.baseline import wrong_label_fit
    from jaxdistill.nn import NetConfig, make_net
    from jaxdistill.train import train_models

    d = digits_data
    rs = np.random.RandomState(1)
    x, y_true = d.x_train[:300], d.y_noisy[:300]
    y = y_true.copy()
    flip = rs.rand(300) < 0.5
    y[flip] = (y_true[flip] + 1 + rs.randint(0, 9, flip.sum())) % 10   # surely wrong
    net = make_net(NetConfig(10, width=8, depth=2))
    res = train_models(net, x, y, TrainConfig(epochs=4, batch_size=50, lr=0.05, momentum=0.9), jax.random.PRNGKey(0),
                       num_models=2)
    got = wrong_label_fit(net, res.params, x, y, y != y_true)
    for m in range(2):
        p_m = jax.tree_util.tree_map(lambda a: a[m], res.params)
        hits = [int(np.argmax(net.apply(p_m, x[i:i + 1])[0]) == y[i]) for i in range(300) if y[i] != y_true[i]]
        np.testing.assert_allclose(got[m], np.mean(hits), atol=1e-6)
    # limit: only the first `limit` wrong samples are scored
    first = np.flatnonzero(y != y_true)[:7]
    lim = wrong_label_fit(net, res.params, x, y, y != y_true, limit=7)
    p0 = jax.tree_util.tree_map(lambda a: a[0], res.params)
    np.testing.assert_allclose(lim[0], np.mean([np.argmax(net.apply(p0, x[i:i + 1])[0]) == y[i] for i in first]))


def test_memorised_criterion_on_curves():
    from jaxdistill.baseline import memorised

    rising = np.linspace(0.1, 0.95, 40)
    m = memorised(rising)
    assert m["stop"] and m["reason"] == "target" and m["memorised"]
    assert not memorised(rising[:35])["stop"]                       # 0.86, still rising
    flat = np.r_[np.linspace(0.1, 0.3, 10), np.full(30, 0.3)]     # 40 epochs, window 8: rose 0 points
    m = memorised(flat)
    assert m["stop"] and m["reason"] == "plateau" and not m["memorised"] and m["rise"] == 0.0 and m["window"] == 8
    assert not memorised(flat[:25])["stop"]                         # before min_epochs (30) no plateau is called
    assert memorised(flat[:25], min_epochs=20)["reason"] == "plateau"
    # a rise of 0.1 point per epoch: the window means differ by 0.1 * w points
    slow = np.r_[np.full(20, 0.2), 0.2 + 0.001 * np.arange(1, 21)]  # 40 epochs, w = 8: +0.8 points
    m = memorised(slow)
    np.testing.assert_allclose(m["rise"], 0.008)
    assert m["reason"] == "plateau" and memorised(slow, tol=0.005)["stop"] is False
    # a noisy pause on the way up is not a plateau once the windows average it out
    bumpy = np.r_[np.linspace(0.1, 0.3, 10), [0.29, 0.33, 0.27, 0.29, 0.29], np.linspace(0.35, 0.8, 17)]
    assert not memorised(bumpy)["stop"]


def test_memorising_baseline_on_a_few_noisy_images_and_one_that_cannot(digits_data):
    """A small net on 80 images with 50% wrong labels memorises them at constant lr; with a negligible lr the fit
    cannot rise and the constant phase stops on the plateau."""
    from jaxdistill.baseline import MemoriseConfig

    d = digits_data
    rs = np.random.RandomState(2)
    x, y_true = d.x_train[:80], d.y_noisy[:80]
    y = y_true.copy()
    flip = rs.rand(80) < 0.5
    y[flip] = (y_true[flip] + 1 + rs.randint(0, 9, flip.sum())) % 10
    data = types.SimpleNamespace(x_train=x, y_noisy=y, y_true=y_true, x_test=d.x_test[:200], y_test=d.y_test[:200],
                                 num_classes=10)
    memo = MemoriseConfig(max_epochs=150, min_epochs=30, target=0.9, decay_epochs=4)
    cfg = BaselineConfig(width=32, k=1, train=TrainConfig(epochs=1, batch_size=20, lr=0.05, momentum=0.9,
                                                          schedule="multistep", milestones=(0.5,)), memorise=memo)
    r = run_baseline(data, cfg, jax.random.PRNGKey(0), clean=False)["baseline_noisy"]
    m = r["memorisation"]
    assert m["reason"] == "target" and m["memorised"] and m["on"] == "wrong_fit"
    assert r["epochs"] == m["constant_epochs"] + 4 < 150 and len(r["curve"]["wrong_fit"]) == r["epochs"]
    assert r["curve"]["wrong_fit"][m["constant_epochs"] - 1] >= 0.9 and r["wrong_fit"] >= 0.8
    slow = dataclasses.replace(cfg, train=cfg.train.replace(lr=1e-7))
    r2 = run_baseline(data, slow, jax.random.PRNGKey(0), clean=False)["baseline_noisy"]
    m2 = r2["memorisation"]
    assert m2["reason"] == "plateau" and not m2["memorised"] and m2["constant_epochs"] == 30
    assert r2["wrong_fit"] < 0.5
