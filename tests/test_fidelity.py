"""Fidelity to the originals and the study (issue 16), each against an independent oracle:

- DATM end to end over several iterations against a naive loop (the target snapshot start + expert_epochs,
  the soft-label initialisation over the experts that classify each image correctly, the unrolled student,
  the threshold rule, torch-style momentum on images / labels / lr);
- the training loop's ceil(N / batch) steps with a smaller last batch (PyTorch's DataLoader);
- flax's init for RCIG's nets, PyTorch's for DATM/DANCE;
- RCIG's own protocol as the study's eval.py runs it; best-over-checkpoints reported beside the headline;
- the study's own DATM / DANCE settings by data set, IPC and noise.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.configs.datm import get_config as datm_config
from jaxdistill.methods import datm
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, epoch_batches, loss_fn, steps_per_epoch, train_models


# ------------------------------------------------------------------------------------------------
# DATM end to end against a naive implementation
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_datm(tmp_path_factory):
    from jaxdistill.data import load_dataset, make_noisy_data

    data = make_noisy_data(load_dataset("digits"), "symmetric:0.2", seed=0, subset=200)
    cfg = datm_config("digits", 1, "quick").replace(
        width=4, depth=1, iterations=5, syn_steps=3, batch_syn=100, sequential=False, min_start_epoch=0,
        max_start_epoch=2, current_max_start_epoch=2, num_experts=3, expert_train_epochs=3, expert_batch=64,
        expert_sam_rho=0.0, expert_augment="none", dsa=False, threshold=1.5, checkpoint_every=100,
        lr_img=10.0, lr_y=2.0, lr_lr=1e-4)
    store = datm.build_experts(cfg, data, jax.random.PRNGKey(0), str(tmp_path_factory.mktemp("exp")),
                               progress=False)
    return data, cfg, store


def _naive_soft_labels(logits_per_expert, labels):
    """Per image: mean logits over the experts whose arg-max is the image's class (all experts if none)."""
    out = np.zeros(logits_per_expert[0].shape)
    for i, c in enumerate(labels):
        good = [lg[i] for lg in logits_per_expert if int(np.argmax(lg[i])) == c]
        out[i] = np.mean(good if good else [lg[i] for lg in logits_per_expert], axis=0)
    return out


def test_datm_end_to_end_matches_a_naive_loop(tiny_datm):
    data, cfg, store = tiny_datm
    key = jax.random.PRNGKey(11)
    out = datm.distill(cfg, data, key, progress=False, store=store)

    _, x_train, net = datm.prepare(cfg, data)
    assert list(store.epochs) == list(range(cfg.expert_train_epochs + 1))  # row r holds epoch r
    experts = [np.asarray(store.flat(e)) for e in range(store.num_experts)]
    unravel = store.unravel
    f = lambda theta, xb: net.apply(unravel(theta), xb)  # noqa: E731

    c = data.num_classes
    labels = np.repeat(np.arange(c), cfg.ipc)
    x = jnp.asarray(x_train[np.asarray(out.meta["init_indices"])])
    assert np.all(np.asarray(data.y_noisy)[out.meta["init_indices"]] == labels)
    final = [np.asarray(f(jnp.asarray(ex[-1]), x), np.float64) for ex in experts]
    y = jnp.asarray(_naive_soft_labels(final, labels), jnp.float32)
    lr = jnp.float32(cfg.lr_teacher)

    def naive_loss(x, y, lr, theta0, theta_star):
        theta = theta0
        for _ in range(cfg.syn_steps):  # batch_syn >= N: every step sees all images
            g = jax.grad(lambda th: jnp.mean(jnp.sum(-jax.nn.softmax(y) * jax.nn.log_softmax(f(th, x)), -1)))(theta)
            theta = theta - lr * g
        return jnp.sum((theta - theta_star) ** 2) / jnp.sum((theta0 - theta_star) ** 2)

    vg = jax.jit(jax.value_and_grad(naive_loss, argnums=(0, 1, 2)))
    k_loop = jax.random.split(key, 3)[2]
    raw = np.asarray(k_loop).ravel()
    seed = (int(raw[0]), int(raw[-1]))
    bufs = [None, None, None]
    params = [x, y, lr]
    rates, moms = (cfg.lr_img, cfg.lr_y, cfg.lr_lr), (cfg.mom_img, cfg.mom_y, cfg.mom_lr)
    losses, applied = [], 0
    for it in range(cfg.iterations):
        e, t = datm.host_draws(seed, it, cfg, store.num_experts)
        assert cfg.min_start_epoch <= t < cfg.max_start_epoch
        theta0, theta_star = jnp.asarray(experts[e][t]), jnp.asarray(experts[e][t + cfg.expert_epochs])
        loss, grads = vg(*params, theta0, theta_star)
        losses.append(float(loss))
        if np.isfinite(float(loss)) and float(loss) <= cfg.threshold:
            applied += 1
            for j in range(3):  # torch SGD: buf = g at first, then mu * buf + g; p -= lr * buf
                bufs[j] = grads[j] if bufs[j] is None else moms[j] * bufs[j] + grads[j]
                params[j] = params[j] - rates[j] * bufs[j]
    assert applied >= 3, losses  # the check is about updates, not skips
    np.testing.assert_allclose(out.meta["loss_history"], losses, rtol=2e-4)
    np.testing.assert_allclose(out.images, np.asarray(params[0]), rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out.targets, np.asarray(params[1]), rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out.lr, float(params[2]), rtol=1e-5)


class _FakeStore:
    """Expert e's 'parameters' are the number e; the test's logits_of looks its logits up."""

    def __init__(self, n):
        self.num_experts = n

    def flat_at(self, e, epoch):
        assert epoch == -1  # the soft labels come from each expert's final snapshot
        return e


def test_soft_label_init_averages_only_the_experts_that_are_right():
    rs = np.random.RandomState(0)
    m, c, n_exp = 40, 4, 5
    labels = np.repeat(np.arange(c), m // c)
    logits = [rs.randn(m, c) * 2.0 for _ in range(n_exp)]
    logits[0][:, :] = -5.0
    logits[0][np.arange(m), labels] = 5.0  # one expert right everywhere, the others right by chance
    out, none_right = datm.soft_label_init(lambda e, x: logits[e], _FakeStore(n_exp), np.zeros((m, 1)), labels)
    np.testing.assert_allclose(out, _naive_soft_labels(logits, labels), rtol=1e-6)
    assert none_right == 0
    # images no expert gets right fall back to the mean over all experts
    wrong = [lg.copy() for lg in logits[1:]]
    for lg in wrong:
        lg[np.arange(m), labels] = -100.0
    out2, none2 = datm.soft_label_init(lambda e, x: wrong[e], _FakeStore(n_exp - 1), np.zeros((m, 1)), labels)
    assert none2 == m
    np.testing.assert_allclose(out2, np.mean(wrong, axis=0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Training loop: ceil(N / batch) steps, the last one smaller
# ------------------------------------------------------------------------------------------------

def test_steps_per_epoch_keeps_the_last_partial_batch():
    assert steps_per_epoch(400, 64) == (7, 64) and steps_per_epoch(400, 64, drop_last=True) == (6, 64)
    assert epoch_batches(400, 64) == (6, 64, 16) and epoch_batches(384, 64) == (6, 64, 0)
    assert epoch_batches(100, 64) == (1, 64, 36) and steps_per_epoch(40, 64) == (1, 40)
    assert epoch_batches(400, 64, drop_last=True) == (6, 64, 0)
    # DANCE IPC 10 x factor 2: 400 decoded images at batch 64 -> 7 steps (the example)
    for n, b in ((400, 64), (1347, 256), (65, 64), (64, 64), (1, 64)):
        assert steps_per_epoch(n, b)[0] == math.ceil(n / b)


@pytest.mark.parametrize("drop_last", [False, True])
def test_epoch_batches_are_the_permutation_cut_in_order_with_a_smaller_last(drop_last):
    # lr ~ 0 keeps the net at its init, so the epoch's mean loss is the mean over steps of each batch's mean
    # loss at init: it pins which images form each batch, the smaller last one included (or dropped).
    net = make_net(NetConfig(3, width=2, depth=1))
    n, b = 70, 32
    rs = np.random.RandomState(0)
    x = rs.rand(n, 8, 8, 1).astype(np.float32)
    t = rs.rand(n, 3).astype(np.float32)
    cfg = TrainConfig(epochs=1, batch_size=b, lr=1e-30, loss="mse", drop_last=drop_last)
    key = jax.random.PRNGKey(3)
    res = train_models(net, x, t, cfg, key, num_models=1)
    assert int(res.state.step[0]) == (2 if drop_last else 3)
    # the loop's key layout: init_state splits (k_init, k_run); model 0's key; the epoch splits off perm_key
    k_init, k_run = jax.random.split(key)
    p0 = jax.tree_util.tree_map(lambda a: a[0], jax.vmap(lambda k: net.init(k, (8, 8, 1)))(jax.random.split(k_init, 1)))
    _, perm_key = jax.random.split(jax.random.split(k_run, 1)[0])
    perm = np.asarray(jax.random.permutation(perm_key, n))
    per = np.asarray(loss_fn(net.apply(p0, jnp.asarray(x)), jnp.asarray(t), "mse"))
    batches = [perm[:32], perm[32:64]] + ([] if drop_last else [perm[64:]])
    assert len(batches[-1]) == (32 if drop_last else 6)
    np.testing.assert_allclose(res.history["loss"][0][0], np.mean([per[bb].mean() for bb in batches]), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Initialisation: flax's defaults for RCIG, PyTorch's for DATM / DANCE
# ------------------------------------------------------------------------------------------------

def test_flax_init_is_lecun_normal_with_zero_biases_and_torch_init_is_uniform():
    cfg = NetConfig(10, width=64, depth=2, norm="none", width_growth=2)
    flax_p = make_net(cfg.replace(init="flax")).init(jax.random.PRNGKey(0), (16, 16, 3))
    torch_p = make_net(cfg).init(jax.random.PRNGKey(0), (16, 16, 3))
    for name, fan_in in (("conv0", 9 * 3), ("conv1", 9 * 64), ("head", 128 * 4 * 4)):
        k = np.asarray(flax_p[name]["kernel"], np.float64)
        assert np.all(np.asarray(flax_p[name]["bias"]) == 0)
        # lecun normal: a normal truncated at 2 sigma, rescaled to variance exactly 1 / fan_in
        np.testing.assert_allclose(k.std(), 1 / math.sqrt(fan_in), rtol=0.12 if name == "conv0" else 0.05)
        assert np.abs(k).max() <= 2 / math.sqrt(fan_in) / 0.87962566 + 1e-6
        tk = np.asarray(torch_p[name]["kernel"], np.float64)
        tb = np.asarray(torch_p[name]["bias"], np.float64)
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(tk).max() <= bound and np.abs(tk).max() > 0.9 * bound and np.abs(tb).max() > 0
        np.testing.assert_allclose(tk.std(), bound / math.sqrt(3), rtol=0.12 if name == "conv0" else 0.05)
    with pytest.raises(Exception, match="init='kaiming'.*torch"):
        NetConfig(10, init="kaiming")


def test_rcig_nets_use_flax_init_and_datm_dance_torch():
    from jaxdistill.configs.dance import get_config as dance_config
    from jaxdistill.configs.rcig import get_config as rcig_config
    from jaxdistill.evaluate import get_protocol

    r = rcig_config("cifar10", 10)
    assert r.net_config(10, distill=True).init == "flax" and r.net_config(10, distill=False).init == "flax"
    assert get_protocol("rcig", num_images=100, num_classes=10, image_size=32).net.init == "flax"
    assert datm_config("cifar10", 10).net_config(10).init == "torch"
    for p in ("standard", "datm", "dance"):
        assert get_protocol(p, num_images=100, num_classes=10, image_size=32).net.init == "torch"
    assert dance_config("cifar10", 10).norm == "instance"


# ------------------------------------------------------------------------------------------------
# RCIG's protocol (the study's eval.py, augmented branch) and best-over-checkpoints reporting
# ------------------------------------------------------------------------------------------------

def test_rcig_protocol_is_the_study_eval_py():
    from jaxdistill.evaluate import eval_every_epochs, get_protocol

    kw = dict(num_classes=10, image_size=32)
    p10 = get_protocol("rcig", num_images=10, channels=3, **kw)
    p100 = get_protocol("rcig", num_images=100, channels=3, **kw)
    gray = get_protocol("rcig", num_images=100, channels=1, num_classes=10, image_size=28)
    assert p10.train.steps == 1000 and p100.train.steps == 2000 and gray.train.steps == 2000
    assert p100.train.augment == "rcig_eval" and gray.train.augment == "rcig_eval_gray"
    assert (p100.train.optimizer, p100.train.lr, p100.train.loss, p100.train.warmup_steps) == ("adam", 1e-4, "mse", 500)
    assert p100.train.schedule == "warmup_cosine" and p100.train.cosine_alpha == 0.01 and p100.train.batch_size == 256
    assert p100.labels == "learned" and p100.eval_every_steps == 500
    # test points every 500 steps, whatever the set's size: 200 images (100 + flips) = 1 step per epoch,
    # 1000 images = 4 steps per epoch (the last one smaller: 1000 = 3 x 256 + 232)
    assert eval_every_epochs(p100, 200) == 500 and eval_every_epochs(p100, 1000) == 125
    q = get_protocol("rcig", num_images=100, channels=1, num_classes=10, image_size=28, preset="quick")
    assert q.train.augment == "rcig_eval_gray" and q.eval_every_steps == q.train.steps // 2


def test_evaluate_reports_best_over_checkpoints_beside_the_headline(digits_data, monkeypatch):
    import jaxdistill.evaluate as E
    from jaxdistill.evaluate import evaluate, get_protocol
    from jaxdistill.methods.base import DistilledSet
    from jaxdistill import report
    from jaxdistill.train import TrainResult

    idx = np.concatenate([np.flatnonzero(digits_data.y_noisy == c)[:2] for c in range(10)])
    ds = DistilledSet(images=np.asarray(digits_data.x_train)[idx], labels=np.repeat(np.arange(10), 2),
                      method="rcig", target_kind="regression",
                      targets=np.eye(10, dtype=np.float32)[np.repeat(np.arange(10), 2)] - 0.1, lr=None,
                      preprocessor=None, meta={"use_flip": False})
    p = get_protocol("rcig", num_images=20, num_classes=10, image_size=8, channels=1, preset="quick", width=4)
    p = dataclasses.replace(p, train=p.train.replace(steps=12, warmup_steps=4), eval_every_steps=4)
    r = evaluate(ds, digits_data, p, jax.random.PRNGKey(0), k=2)
    d = r.to_dict()
    assert d["best_epochs"] == [4, 8, 12] and d["config"]["train"]["augment"] == "rcig_eval_gray"
    assert all(b >= a for a, b in zip(d["accs"], d["best_accs"]))
    np.testing.assert_allclose(d["best_acc_mean"], np.mean(d["best_accs"]))
    np.testing.assert_allclose(d["best_acc_std"], np.std(d["best_accs"]))
    assert "headline" in d["best_note"]
    # the reduction itself, on a known history: headline = last point, best = per-net max over the points
    hist = {"loss": [], "test_acc": [(4, [0.2, 0.5]), (8, [0.6, 0.3]), (12, [0.4, 0.35])]}
    monkeypatch.setattr(E, "train_models_auto", lambda *a, **kw: TrainResult(None, None, None, hist))
    fake = evaluate(ds, digits_data, p, jax.random.PRNGKey(0), k=2)
    np.testing.assert_allclose(fake.accs, [0.4, 0.35])
    np.testing.assert_allclose(fake.best_accs, [0.6, 0.5])
    np.testing.assert_allclose(fake.best_mean, 0.55)
    # report.md's table shows it in its own, labelled column; rows without it show '-'
    table = report.results_table({"baseline_last": {"acc_mean": 0.5, "acc_std": 0.01, "method": "baseline"},
                                  "rcig/rcig": {**d, "method": "rcig", "ipc": 2}})
    assert "best over checkpoints % (not the headline)" in table.splitlines()[0]
    row = [ln for ln in table.splitlines() if ln.startswith("| rcig")][0]
    assert f"| {100 * d['best_acc_mean']:.2f} +- {100 * d['best_acc_std']:.2f} |" in row
    base_row = [ln for ln in table.splitlines() if ln.startswith("| baseline")][0]
    assert base_row.split("|")[6].strip() == "-"


def test_grid_table_shows_best_beside_own(tmp_path):
    import importlib.util
    import json
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("grid_fid", os.path.join(root, "experiments", "grid.py"))
    grid = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = grid
    spec.loader.exec_module(grid)
    g = {"name": "g", "description": "t", "datasets": ["digits"], "noises": ["clean"], "ipcs": [10], "seeds": [0],
         "methods": ["dance"], "preset": "quick", "k": 2}
    gpath = tmp_path / "g.json"
    gpath.write_text(json.dumps(g))
    cell = grid.expand(grid.load_grid(str(gpath)))[0]
    d = tmp_path / "runs" / cell.rel_dir()
    d.mkdir(parents=True)
    e = lambda a, **kw: {"acc_mean": float(np.mean(a)), "acc_std": float(np.std(a)), "accs": a, **kw}  # noqa: E731
    (d / "results.json").write_text(json.dumps({
        "config": dataclasses.asdict(cell.config()), "noise": {"realized": 0.0}, "versions": {"device": "cpu"},
        "results": {"baseline_noisy": e([0.9, 0.9]), "dance/standard": e([0.5, 0.6]),
                    "dance/dance": e([0.6, 0.7], best_acc_mean=0.75, best_accs=[0.7, 0.8])}}))
    agg = grid.aggregate(str(gpath), str(tmp_path / "runs"), str(tmp_path / "r"), echo=lambda s: None)
    assert "55.00 +- 5.00 / 65.00 +- 5.00 [best 75.00 +- 5.00]" in agg["markdown"]
    assert "best test accuracy" in agg["markdown"] and "not the headline" in agg["markdown"]


# ------------------------------------------------------------------------------------------------
# The study's own settings
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,ipc,noise,expected", [
    ("cifar10", 1, "symmetric:0.2", {"lr_teacher": 0.001}),
    ("cifar10", 10, "symmetric:0.4", {"lr_teacher": 0.001}),
    ("cifar10", 50, "asymmetric:0.6", {"lr_teacher": 0.001}),
    ("cifar10", 10, "symmetric:0.8", {"lr_teacher": 0.001, "lr_lr": 1e-6}),
    ("cifar10", 10, "asymmetric:0.8", {"lr_teacher": 0.001, "lr_lr": 1e-6}),
    ("cifar10", 50, "asymmetric:0.8", {"lr_teacher": 0.001, "lr_lr": 1e-6}),
    ("cifar10", 50, "symmetric:0.8", {"lr_teacher": 0.001}),
    ("cifar10", 1, "asymmetric:0.8", {"lr_teacher": 0.001}),
    ("cifar10", 500, "symmetric:0.8", {}),
    ("cifar10", 1000, "symmetric:0.2", {"iterations": 6000}),
    ("cifar10", 1000, "symmetric:0.4", {"iterations": 6000, "lr_teacher": 0.008}),
    ("cifar10", 1000, "symmetric:0.8", {"iterations": 6000, "lr_teacher": 0.005, "init": "real"}),
    ("cifar10", 1000, "asymmetric:0.4", {"iterations": 6000}),
    ("cifar10", 1000, "asymmetric:0.6", {}),
    ("cifar10", 1000, "asymmetric:0.8", {"init": "real"}),
    ("cifar10", 10, "clean", {}),
    ("cifar100", 10, "symmetric:0.8", {}),
    ("cifar100", 100, "symmetric:0.2", {}),
    ("cifar100", 100, "symmetric:0.4", {"init": "real"}),
    ("cifar100", 100, "asymmetric:0.4", {}),
    ("cifar100", 100, "asymmetric:0.6", {"init": "real"}),
    ("tiny_imagenet", 50, "symmetric:0.2", {}),
    ("tiny_imagenet", 50, "symmetric:0.6", {"init": "real"}),
    ("tiny_imagenet", 10, "symmetric:0.8", {}),
    ("cifar10_n", 10, "natural:worse_label", {"lr_teacher": 0.001}),
    ("cifar10_n", 10, "natural:aggre_label", {}),
])
def test_study_datm_settings_pinned(dataset, ipc, noise, expected):
    from jaxdistill.configs.study import study_config, study_overrides

    assert study_overrides("datm", dataset, ipc, noise) == expected
    got = study_config("datm", dataset, ipc, noise)
    want = datm_config(dataset, ipc).replace(**expected)
    assert got == want


def test_study_dance_tiny_depth_and_pipeline_uses_study_settings_at_paper_preset():
    from jaxdistill.configs.dance import get_config as dance_config
    from jaxdistill.configs.study import study_config, study_overrides
    from jaxdistill.errors import ConfigError
    from jaxdistill.pipeline import DenoiseConfig, method_config

    assert dance_config("tiny_imagenet", 10).depth == 3  # DANCE's own reproduce setting
    assert study_config("dance", "tiny_imagenet", 10, "symmetric:0.4").depth == 4
    assert study_config("dance", "tiny_imagenet", 1, "clean").depth == 4
    assert study_overrides("dance", "cifar10", 10, "symmetric:0.4") == {}
    assert study_overrides("rcig", "cifar10", 10, "symmetric:0.4") == {}
    with pytest.raises(ConfigError, match="'kip'.*datm"):
        study_overrides("kip", "cifar10", 10, "clean")
    run = DenoiseConfig(dataset="cifar10", noise="symmetric:0.8", ipc=10, preset="paper", methods=("datm", "dance"))
    m = method_config(run, "datm")
    assert (m.lr_teacher, m.lr_lr) == (0.001, 1e-6)
    assert method_config(dataclasses.replace(run, overrides={"datm": {"lr_lr": 1e-5}}), "datm").lr_lr == 1e-5
    quick = method_config(dataclasses.replace(run, preset="quick"), "datm")
    assert quick == datm_config("cifar10", 10, "quick")


# ------------------------------------------------------------------------------------------------
# Learning-rate schedules of the protocols, against the originals' formulas written out
# ------------------------------------------------------------------------------------------------

def _lrs(cfg: TrainConfig, total: int) -> np.ndarray:
    """The lr of each of `total` steps, read off plain SGD on a scalar with gradient 1."""
    from jaxdistill.train import make_optimizer

    tx = make_optimizer(cfg.replace(optimizer="sgd", momentum=0.0, weight_decay=0.0), total)

    def body(carry, _):
        p, st = carry
        u, st = tx.update(jnp.ones(()), st, p)
        return (p + u, st), -u

    _, lrs = jax.lax.scan(body, (jnp.zeros(()), tx.init(jnp.zeros(()))), None, length=total)
    return np.asarray(lrs, np.float64)


def test_schedules_match_the_originals_formulas():
    from jaxdistill.evaluate import get_protocol

    # RCIG eval.py: linear warm-up 0 -> lr over 500 steps, then cosine to alpha * lr over the remaining steps
    p = get_protocol("rcig", num_images=100, num_classes=10, image_size=32)
    lr, alpha, total = 1e-4, 0.01, p.train.steps
    t = np.arange(total)
    want = np.where(t < 500, lr * t / 500,
                    lr * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * np.minimum(t - 500, total - 500)
                                                                  / (total - 500)))))
    np.testing.assert_allclose(_lrs(p.train, total), want, rtol=1e-4, atol=1e-12)
    # DANCE: x0.2 from epochs 2E//3 and 5E//6 (torch MultiStepLR per epoch): quick, 100 epochs of 6 steps ->
    # epochs 66 and 83 = steps 396 and 498
    d = get_protocol("dance", num_images=100, num_classes=10, image_size=32, preset="quick")
    total = 600
    want = 0.01 * np.where(t[:total] < 396, 1.0, np.where(t[:total] < 498, 0.2, 0.04))
    np.testing.assert_allclose(_lrs(d.train, total), want, rtol=1e-5)
    # DATM: Epoch + 1 = 1001 epochs (1 step each), x0.1 after epoch Epoch // 2 + 1 = 501
    m = get_protocol("datm", num_images=100, num_classes=10, image_size=32, lr=0.02)
    want = 0.02 * np.where(t[:1001] < 502, 1.0, 0.1)
    np.testing.assert_allclose(_lrs(m.train, 1001), want, rtol=1e-5)
