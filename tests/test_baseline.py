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
