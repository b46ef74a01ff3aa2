"""Controls (random real images of the same size) and the baseline's convergence criterion."""
import types

import chex
import numpy as np
import pytest

from jaxdistill.baseline import converged, get_baseline_config
from jaxdistill.configs.presets import PRESETS, baseline_budget, eval_budget, training_subset
from jaxdistill.controls import margins, random_control, random_controls
from jaxdistill.errors import ConfigError, DataError


def _data(n=300, c=5, seed=0, flip=0.4):
    rs = np.random.RandomState(seed)
    y_true = np.repeat(np.arange(c), n // c)
    rs.shuffle(y_true)
    y_noisy = y_true.copy()
    f = rs.rand(n) < flip
    y_noisy[f] = (y_true[f] + 1 + rs.randint(0, c - 1, f.sum())) % c
    x = rs.rand(n, 4, 4, 1).astype(np.float32)
    return types.SimpleNamespace(x_train=x, y_noisy=y_noisy, y_true=y_true, num_classes=c)


@pytest.mark.parametrize("name,labels", [("random_noisy", "y_noisy"), ("random_clean", "y_true")])
def test_random_control_is_class_balanced_uses_stated_labels_and_is_reproducible(name, labels):
    d = _data()
    s = random_control(d, 7, name, seed=3)
    y = getattr(d, labels)
    idx = np.asarray(s.meta["indices"])
    # class-balanced by the stated labels, grouped by class, no image twice
    np.testing.assert_array_equal(s.labels, np.repeat(np.arange(5), 7))
    assert len(set(idx.tolist())) == 35
    # each image carries the stated label of the training image it is, and is that image's pixels
    np.testing.assert_array_equal(s.labels, y[idx])
    chex.assert_trees_all_equal(s.images, d.x_train[idx])
    assert s.target_kind == "hard" and s.preprocessor is None
    # same seed -> same draw; another seed -> another draw
    np.testing.assert_array_equal(random_control(d, 7, name, seed=3).meta["indices"], idx)
    assert not np.array_equal(random_control(d, 7, name, seed=4).meta["indices"], idx)
    # draw 0 is the control's first draw; a further draw is another class-balanced set, reproducible
    np.testing.assert_array_equal(random_control(d, 7, name, seed=3, draw=0).meta["indices"], idx)
    d1 = random_control(d, 7, name, seed=3, draw=1)
    assert not np.array_equal(d1.meta["indices"], idx) and d1.meta["draw"] == 1
    np.testing.assert_array_equal(d1.labels, np.repeat(np.arange(5), 7))
    np.testing.assert_array_equal(random_control(d, 7, name, seed=3, draw=1).meta["indices"], d1.meta["indices"])


def test_random_noisy_and_clean_differ_and_noisy_control_carries_wrong_labels():
    d = _data()
    noisy, clean = random_control(d, 20, "random_noisy"), random_control(d, 20, "random_clean")
    idx_n = np.asarray(noisy.meta["indices"])
    # about 40% of the noisy control's labels are wrong; none of the clean control's
    wrong = np.mean(d.y_noisy[idx_n] != d.y_true[idx_n])
    assert 0.2 < wrong < 0.6
    idx_c = np.asarray(clean.meta["indices"])
    np.testing.assert_array_equal(clean.labels, d.y_true[idx_c])


def test_random_controls_without_true_labels_and_bad_input():
    d = _data()
    assert set(random_controls(d, 2)) == {"random_noisy", "random_clean"}
    d.y_true = None
    assert set(random_controls(d, 2)) == {"random_noisy"}
    with pytest.raises(ConfigError, match="random_clean needs the true"):
        random_control(d, 2, "random_clean")
    with pytest.raises(ConfigError, match="allowed: \\['random_noisy', 'random_clean'\\]"):
        random_control(d, 2, "random")
    with pytest.raises(DataError, match="ipc=61"):
        random_control(_data(), 61, "random_noisy")
    with pytest.raises(ConfigError, match="draw=-1 must be an integer >= 0"):
        random_control(_data(), 2, "random_noisy", draw=-1)


def test_margins_are_points_over_each_control_under_the_same_protocol():
    res = {"dance/standard": {"acc_mean": 0.80}, "control/random_noisy/standard": {"acc_mean": 0.70},
           "control/random_clean/standard": {"acc_mean": 0.75}, "control/selected_dance/standard": {"acc_mean": 0.72},
           "control/random_clean/dance": {"acc_mean": 0.10}}
    m = margins(res, "dance/standard", "standard")
    np.testing.assert_allclose([m["random_noisy"], m["random_clean"], m["selected"]], [10.0, 5.0, 8.0], atol=1e-9)


def test_convergence_criterion():
    # a curve still rising by 3 points over its last fifth has not converged
    rising = np.linspace(0.3, 0.9, 20)
    r = converged(rising)
    assert r["converged"] is False and r["window"] == 4
    np.testing.assert_allclose(r["rise"], rising[-1] - rising[-5], atol=1e-12)
    # a plateau (noise below 1 point) has converged; the rise is the max of the window minus the value before it
    flat = np.concatenate([np.linspace(0.3, 0.9, 15), 0.9 + np.array([0.002, -0.003, 0.004, 0.001, 0.0])])
    r = converged(flat)
    assert r["converged"] is True
    np.testing.assert_allclose(r["rise"], 0.004 - 0.002, atol=1e-12)  # window of 4: max 0.904 - 0.902
    # too short to tell
    assert converged([0.5, 0.6, 0.6])["converged"] is False
    # the window and tolerance are honoured
    assert converged(rising, tol=0.2)["converged"] is True
    assert converged(flat, window=10)["converged"] is False


def test_presets_live_in_one_place():
    assert PRESETS == ("paper", "cpu", "quick")
    for p in PRESETS:
        b = get_baseline_config("fashion_mnist", p)
        bb = baseline_budget("fashion_mnist", p)
        assert (b.width, b.k, b.train.epochs, b.train.batch_size) == (bb.width, bb.k, bb.epochs, bb.batch_size)
        assert eval_budget(p, 28).width == (128 if p == "paper" else 32 if p == "cpu" else 16)
    assert training_subset("fashion_mnist", "paper") is None
    with pytest.raises(ConfigError, match="allowed: \\['paper', 'cpu', 'quick'\\]"):
        eval_budget("fast", 28)
    from jaxdistill.methods import get_config

    for m in ("datm", "dance", "rcig"):
        assert get_config(m, "fashion_mnist", 10, "cpu").preset == "cpu"
