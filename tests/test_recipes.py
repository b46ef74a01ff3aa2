"""The training recipes of the evaluation protocols and of DANCE's pool, pinned against the originals' update
rules written out in numpy (issue 29): optimiser, momentum, weight decay, lr schedule, epochs, batch,
augmentation. A recipe that drifts from the original fails here, not only in a side-by-side run.

Each oracle follows the original's loop as written (file and lines in its docstring) with torch.optim.SGD's
update (`d = g + wd * p; buf = d` on the first step of an optimiser, else `buf = m * buf + d`; `p -= lr * buf`)
or Adam; jaxdistill's side is `make_optimizer` on the protocol's TrainConfig, run the way the evaluator runs it
(lr 1 in the config, the real lr passed as a traced scalar). Both train a quadratic `0.5 p'Ap - b'p`, so weight
decay, momentum and every lr change show in the final parameters.
"""
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.configs.dance import get_config as dance_config
from jaxdistill.errors import ConfigError
from jaxdistill.evaluate import get_protocol
from jaxdistill.methods.dance import pool_train_config
from jaxdistill.train import TrainConfig, make_optimizer, milestone_steps, steps_per_epoch

_RS = np.random.RandomState(0)
_M = _RS.randn(6, 6)
A = _M @ _M.T / 6 + 0.5 * np.eye(6)  # SPD, eigenvalues about 0.5-3
B = _RS.randn(6)
W = _RS.uniform(0.01, 0.2, 6)
P0 = _RS.randn(6)


def _grad(p, t):
    """A gradient whose target moves with the step (cos), so the updates never die out and every step's lr and
    momentum show in the trajectory."""
    return A @ p - B * np.cos(W * t)


def _jax_run(cfg: TrainConfig, total: int) -> np.ndarray:
    """jaxdistill: the evaluator's optimiser (lr folded out of the config, passed traced) for `total` steps;
    returns the updates (total, 6)."""
    a, b, w = (jnp.asarray(v, jnp.float32) for v in (A, B, W))

    @jax.jit
    def run(lr):
        tx = make_optimizer(cfg.replace(lr=1.0), total, lr=lr)

        def body(carry, t):
            p, st = carry
            u, st = tx.update(a @ p - b * jnp.cos(w * t), st, p)
            return (p + u, st), u

        p0 = jnp.asarray(P0, jnp.float32)
        return jax.lax.scan(body, (p0, tx.init(p0)), jnp.arange(total, dtype=jnp.float32))[1]

    return np.asarray(run(jnp.float32(cfg.lr)), np.float64)


def _close(got, want):
    """Every step's update within 0.2 % of the oracle's (float32 against float64 over thousands of steps)."""
    scale = np.abs(want).max(1, keepdims=True) + 1e-12
    np.testing.assert_array_less(np.abs(got - want) / scale, 2e-3)


def _torch_sgd(lrs, momentum, wd, restarts=()):
    """torch.optim.SGD (dampening 0, no Nesterov) with lr lrs[t] at step t; a new optimiser (empty momentum
    buffer) at each step index in `restarts`. Returns the updates (len(lrs), 6)."""
    p, buf, out = P0.copy(), None, []
    for t, lr in enumerate(lrs):
        if t in restarts:
            buf = None
        d = _grad(p, t) + wd * p
        buf = d if buf is None else momentum * buf + d
        out.append(-lr * buf)
        p = p + out[-1]
    return np.array(out)


def _datm_evaluate_synset(lr, epoch, n_steps):
    """DATM+ours/utils/utils_baseline.py evaluate_synset (lines 521-566): lr_schedule = [Epoch // 2 + 1],
    SGD(lr, momentum=0.9, weight_decay=0.0005); `for ep in range(Epoch + 1)`: train one epoch, then
    `if ep in lr_schedule: lr *= 0.1` and a new SGD optimiser."""
    lrs, restarts = [], []
    for ep in range(epoch + 1):
        lrs += [lr] * n_steps
        if ep in [epoch // 2 + 1]:
            lr *= 0.1
            restarts.append(len(lrs))
    return _torch_sgd(lrs, 0.9, 0.0005, restarts)


def _dance_multistep(epochs, n_steps, lr=0.01, momentum=0.9, wd=5e-4, gamma=0.2):
    """DANCE+ours/train.py `train` (lines 54-104) and pretrain.py (lines 38-45): SGD(lr, momentum, wd),
    MultiStepLR(milestones=[2 * E // 3, 5 * E // 6], gamma=0.2), `scheduler.step()` after each epoch
    (a repeated milestone applies gamma once per copy)."""
    counts, lrs = Counter([2 * epochs // 3, 5 * epochs // 6]), []
    for e in range(epochs):
        lrs += [lr] * n_steps
        lr *= gamma ** counts[e + 1]
    return _torch_sgd(lrs, momentum, wd)


def _rcig_eval(steps, lr=1e-4, warmup=500, alpha=0.01):
    """RCIG+ours/eval.py (lines 201-233): optax.adam over join_schedules([linear 0 -> lr over 500 steps,
    cosine_decay(lr, alpha=0.01, decay_steps=max(steps - 500, 1))], [500]); eval_l2 = 0; Adam as
    Kingma & Ba (b1 0.9, b2 0.999, eps 1e-8 outside the square root)."""
    p, m, v, out = P0.copy(), np.zeros(6), np.zeros(6), []
    for t in range(steps):
        if t < warmup:
            lr_t = lr * t / warmup
        else:
            k = min(t - warmup, max(steps - warmup, 1))
            lr_t = lr * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * k / max(steps - warmup, 1))) + alpha)
        g = _grad(p, t)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mh, vh = m / (1 - 0.9 ** (t + 1)), v / (1 - 0.999 ** (t + 1))
        out.append(-lr_t * mh / (np.sqrt(vh) + 1e-8))
        p = p + out[-1]
    return np.array(out)


@pytest.mark.parametrize("preset,n_images,learned_lr", [("paper", 100, 0.01), ("paper", 300, 0.037),
                                                        ("quick", 100, 0.02)])
def test_datm_protocol_is_evaluate_synset(preset, n_images, learned_lr):
    p = get_protocol("datm", num_images=n_images, num_classes=10, image_size=32, preset=preset, lr=learned_lr)
    e = {"paper": 1000, "quick": 100}[preset]
    # batch_train 128 (the study's configs, e.g. configs/CIFAR-10/ConvIN/symmetric/IPC10_0.4.yaml), DSA, soft labels
    assert (p.train.batch_size, p.train.augment, p.labels, p.train.loss) == (128, "dsa", "learned", "ce")
    n_steps, _ = steps_per_epoch(n_images, p.train.batch_size)
    want = _datm_evaluate_synset(learned_lr, e, n_steps)
    total = p.train.epochs * n_steps
    assert total == len(want)  # Epoch + 1 epochs
    _close(_jax_run(p.train, total), want)
    # the oracle tells apart a plain "x0.1 at half the steps, momentum kept" (the recipe before issue 29)
    half = [learned_lr if t < total // 2 else 0.1 * learned_lr for t in range(total)]
    with pytest.raises(AssertionError):
        _close(_torch_sgd(half, 0.9, 0.0005), want)


@pytest.mark.parametrize("preset,n_images", [("paper", 100), ("quick", 100), ("quick", 500)])
def test_dance_protocol_is_train_py(preset, n_images):
    p = get_protocol("dance", num_images=n_images, num_classes=10, image_size=32, preset=preset)
    e = {"paper": 1500, "quick": 100}[preset]
    # arg_condense.py: batch_size 64, lr 0.01, momentum 0.9, wd 5e-4; mixup 'cut' with mix_p 0.5, beta 1.0
    assert (p.train.batch_size, p.train.cutmix_p, p.train.augment, p.labels) == (64, 0.5, "dance_eval", "hard")
    n_steps, _ = steps_per_epoch(n_images, p.train.batch_size)
    want = _dance_multistep(e, n_steps)
    assert p.train.epochs * n_steps == len(want)
    _close(_jax_run(p.train, len(want)), want)


@pytest.mark.parametrize("pretrain_epochs", [2, 5, 60])
def test_dance_pool_is_pretrain_py(pretrain_epochs):
    import dataclasses

    cfg = dataclasses.replace(dance_config("fashion_mnist", 10, "quick"), pretrain_epochs=pretrain_epochs)
    tc = pool_train_config(cfg)
    assert (tc.lr, tc.momentum, tc.weight_decay, tc.gamma, tc.cutmix_p) == (0.01, 0.9, 5e-4, 0.2, 0.5)
    n_steps = 3
    want = _dance_multistep(pretrain_epochs, n_steps)
    _close(_jax_run(tc, len(want)), want)
    if pretrain_epochs == 2:  # both milestones are epoch 1: the lr drops x0.04 there at once, as in torch
        assert milestone_steps(tc, len(want)) == pytest.approx({n_steps: 0.2 * 0.2})


def test_rcig_protocol_is_eval_py():
    p = get_protocol("rcig", num_images=100, num_classes=10, image_size=32)
    assert (p.train.optimizer, p.train.loss, p.train.batch_size, p.train.weight_decay) == ("adam", "mse", 256, 0.0)
    total = p.train.steps
    assert total == 2000  # num_online_eval_updates for more than 10 images
    _close(_jax_run(p.train, total), _rcig_eval(total))


def test_standard_protocol_is_its_spec():
    """jaxdistill's common protocol (no original): SGD 0.01, momentum 0.9, wd 5e-4, x0.1 at half the steps."""
    p = get_protocol("standard", num_images=100, num_classes=10, image_size=32)
    total = p.train.steps
    lrs = [0.01 if t < total // 2 else 0.001 for t in range(total)]
    _close(_jax_run(p.train, total), _torch_sgd(lrs, 0.9, 5e-4))


def test_epoch_milestones_follow_a_changed_length_and_restarts_need_milestones():
    """An override of the run's length (`--set eval.epochs=...`, or `steps` in tiny runs) keeps the milestones as
    fractions of the run; with `steps` they fall on steps."""
    tc = get_protocol("dance", num_images=100, num_classes=10, image_size=32).train
    assert milestone_steps(tc.replace(epochs=9), 18) == pytest.approx({12: 0.2, 14: 0.2})   # epochs 6 and 7
    assert milestone_steps(tc.replace(steps=20), 20) == pytest.approx({13: 0.2, 17: 0.2})
    with pytest.raises(ConfigError, match="reset_momentum"):
        TrainConfig(epochs=4, reset_momentum=True)


def test_configs_stored_before_the_added_fields_still_match():
    """Stores, stages and lnl stores saved before milestones_in_epochs / reset_momentum existed hold configs without
    them: an unchanged recipe must still match them, a changed one (the DANCE pool's) must not."""
    import dataclasses
    import json

    from jaxdistill.errors import StoreError
    from jaxdistill.experts import check_meta
    from jaxdistill.train import ADDED_TRAIN_FIELDS, without_added_defaults

    tc = TrainConfig(epochs=4, schedule="multistep", milestones=(0.5,))
    now = json.loads(json.dumps(dataclasses.asdict(tc)))
    old = {k: v for k, v in now.items() if k not in ADDED_TRAIN_FIELDS}
    assert set(now) - set(old) == {"milestones_in_epochs", "reset_momentum"}
    check_meta({"train": {**old, "milestone_epochs": []}, "width": 8}, {"train": now, "width": 8}, "d")
    assert without_added_defaults({"train": now, "k": [now]}) == {"train": old, "k": [old]}
    check_meta({"train": old, "width": 8}, {"train": now, "width": 8}, "d")
    changed = json.loads(json.dumps(dataclasses.asdict(tc.replace(milestones_in_epochs=True))))
    with pytest.raises(StoreError, match="train"):
        check_meta({"train": old, "width": 8}, {"train": changed, "width": 8}, "d")
