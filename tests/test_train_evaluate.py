import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdistill.errors import ConfigError, DataError
from jaxdistill.evaluate import PROTOCOLS, evaluate, get_protocol
from jaxdistill.methods.base import DistilledSet
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, loss_fn, make_optimizer, milestone_steps, train_models


def _toy(n=12, c=3, seed=0):
    rs = np.random.RandomState(seed)
    return rs.rand(n, 8, 8, 1).astype(np.float32), rs.randint(0, c, n)


def test_one_full_batch_sgd_step_matches_manual_update():
    x, y = _toy()
    net = make_net(NetConfig(3, width=4, depth=2))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1)
    p0 = net.init(jax.random.PRNGKey(5), (8, 8, 1))
    init = jax.tree_util.tree_map(lambda a: a[None], p0)
    res = train_models(net, x, y, cfg, jax.random.PRNGKey(0), 1, init_params=init)
    t = jax.nn.one_hot(y, 3)
    g = jax.grad(lambda p: (-(t * jax.nn.log_softmax(net.apply(p, x))).sum(-1)).mean())(p0)
    want = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p0, g)
    # the step shuffles the batch; the full-batch mean gradient is order-independent
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a[0], res.params), want, atol=1e-5)


def test_vmapped_models_equal_models_trained_alone():
    x, y = _toy(16)
    net = make_net(NetConfig(3, width=4, depth=2))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9)
    both = train_models(net, x, y, cfg, jax.random.PRNGKey(1), 2)
    # rebuild model 1 alone from the same per-model init and keys
    from jaxdistill.train import init_state, make_epoch_fn

    tx = make_optimizer(cfg, 4)
    st = init_state(net, cfg, jax.random.PRNGKey(1), 2, (8, 8, 1), tx)
    one = jax.tree_util.tree_map(lambda a: a[1:2], st)
    run = make_epoch_fn(net, cfg, 16, tx)
    one, _ = run(one, jnp.asarray(x), jax.nn.one_hot(y, 3), 2)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a[1], both.params),
                                jax.tree_util.tree_map(lambda a: a[0], one.params), atol=1e-6)


# Adam runs on the norm-free net: a conv bias before instance norm has an exactly-zero gradient, so its float
# noise differs between the two loops and Adam rescales that noise to lr-sized steps.
@pytest.mark.parametrize("cfg,norm", [(TrainConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9, augment="dsa"), "instance"),
                                      (TrainConfig(epochs=2, batch_size=8, optimizer="adam", lr=1e-3, loss="mse"), "none")])
def test_model_loops_map_and_vmap_agree(cfg, norm):
    # lax.map over models (the CPU default) and vmap are the same maths; only the float schedule differs.
    from jaxdistill.train import init_state, make_epoch_fn

    x, y = _toy(16)
    net = make_net(NetConfig(3, width=4, depth=2, norm=norm))
    tx = make_optimizer(cfg, 4)
    st = init_state(net, cfg, jax.random.PRNGKey(3), 3, (8, 8, 1), tx)
    out = {}
    for loop in ("map", "vmap"):
        run = make_epoch_fn(net, cfg, 16, tx, model_loop=loop)
        out[loop], losses = run(jax.tree_util.tree_map(jnp.copy, st), jnp.asarray(x), jax.nn.one_hot(y, 3), 2)
        chex.assert_shape(losses, (2, 3))
    chex.assert_trees_all_close(out["map"].params, out["vmap"].params, atol=1e-5)
    with pytest.raises(ConfigError, match="model_loop 'pmap'.*allowed"):
        make_epoch_fn(net, cfg, 16, tx, model_loop="pmap")


def test_predict_equals_a_loop_over_models_and_chunks():
    from jaxdistill.train import predict

    x, _ = _toy(23)
    net = make_net(NetConfig(3, width=4, depth=2))
    ps = jax.vmap(lambda k: net.init(k, (8, 8, 1)))(jax.random.split(jax.random.PRNGKey(4), 3))
    got = predict(net, ps, x, batch=10)  # 3 chunks, the last one padded
    want = np.stack([np.asarray(net.apply(jax.tree_util.tree_map(lambda a: a[i], ps), jnp.asarray(x)))
                     for i in range(3)])
    chex.assert_shape(got, (3, 23, 3))
    chex.assert_trees_all_close(np.asarray(got), want, atol=1e-5)


def test_snapshots_and_resume_are_exact():
    x, y = _toy(16)
    net = make_net(NetConfig(3, width=4, depth=2))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, momentum=0.9, augment="dsa")
    full = train_models(net, x, y, cfg, jax.random.PRNGKey(2), 2, snapshots=True)
    assert len(full.snapshots) == 4
    saved = {}
    train_models(net, x, y, cfg.replace(epochs=3), jax.random.PRNGKey(2), 2,
                 on_epoch=lambda e, s: saved.__setitem__(e, jax.device_get(s)))
    resumed = train_models(net, x, y, cfg, jax.random.PRNGKey(99), 2, state=saved[1], start_epoch=1)
    chex.assert_trees_all_close(resumed.params, full.params, atol=1e-6)
    chex.assert_trees_all_close(full.snapshots[1], saved[1].params, atol=1e-6)


def test_multistep_schedule_and_losses():
    tx = make_optimizer(TrainConfig(lr=1.0, schedule="multistep", milestones=(0.5,), gamma=0.1), 10)
    p = {"w": jnp.zeros(())}
    st = tx.init(p)
    steps = []
    for _ in range(10):
        u, st = tx.update({"w": jnp.ones(())}, st, p)
        steps.append(float(-u["w"]))
    np.testing.assert_allclose(steps, [1.0] * 5 + [0.1] * 5, rtol=1e-6)
    logits = jnp.array([[2.0, 0.0]])
    chex.assert_trees_all_close(loss_fn(logits, jnp.array([[1.0, 0.0]]), "ce"),
                                jnp.array([np.log(1 + np.exp(-2.0))]), atol=1e-6)
    chex.assert_trees_all_close(loss_fn(logits, jnp.array([[1.0, 1.0]]), "mse"), jnp.array([0.5 * (1 + 1)]))


def test_bad_train_inputs():
    with pytest.raises(ConfigError, match="optimizer='lamb'"):
        TrainConfig(optimizer="lamb")
    net = make_net(NetConfig(3, width=4, depth=1))
    x, y = _toy()
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        train_models(net, x, y + 5, TrainConfig(), jax.random.PRNGKey(0))
    with pytest.raises(DataError, match="rows"):
        train_models(net, x, y[:5], TrainConfig(), jax.random.PRNGKey(0))


def test_distilled_set_roundtrip_and_targets(tmp_path):
    logits = np.array([[0.0, np.log(3.0)], [1.0, 1.0]], np.float32)
    ds = DistilledSet(images=np.ones((2, 4, 4, 1)), labels=[1, 0], method="x", target_kind="soft_logits",
                      targets=logits, lr=0.02, preprocessor={"kind": "none"}, meta={"a": 1})
    np.testing.assert_allclose(ds.training_targets(2), [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
    ds.save(str(tmp_path / "d.npz"))
    back = DistilledSet.load(str(tmp_path / "d.npz"))
    assert back.lr == 0.02 and back.meta == {"a": 1} and back.target_kind == "soft_logits"
    np.testing.assert_array_equal(back.targets, logits)
    with pytest.raises(DataError):
        DistilledSet.load(str(tmp_path / "missing.npz"))


def test_protocols_follow_the_spec():
    p = get_protocol("datm", num_images=100, num_classes=10, image_size=32, lr=0.03)
    # DATM's evaluate_synset trains Epoch + 1 epochs and lowers the lr after epoch Epoch // 2 + 1 (tests/test_recipes.py)
    assert p.train.lr == 0.03 and p.train.epochs == 1001 and p.train.batch_size == 128 and p.labels == "learned"
    assert milestone_steps(p.train, 1001) == pytest.approx({502: 0.1}) and p.train.reset_momentum
    p = get_protocol("dance", num_images=100, num_classes=10, image_size=32)
    assert p.train.epochs == 1500 and p.train.batch_size == 64 and p.train.cutmix_p == 0.5
    assert milestone_steps(p.train, 3000) == pytest.approx({2000: 0.2, 2500: 0.2}) and p.train.gamma == 0.2
    p = get_protocol("rcig", num_images=10, num_classes=10, image_size=32)
    assert p.train.steps == 1000 and p.net.width_growth == 2 and p.net.norm == "none" and p.train.loss == "mse"
    e = p.train
    assert (e.optimizer, e.lr, e.schedule, e.warmup_steps, e.cosine_alpha, e.batch_size) == (
        "adam", 1e-4, "warmup_cosine", 500, 0.01, 256)
    assert get_protocol("rcig", num_images=100, num_classes=10, image_size=32).train.steps == 2000
    # quick: 8x8 digits keep the longer schedules; larger images get the ones the 10-minute default job fits
    q = {(n, s): get_protocol(n, num_images=100, num_classes=10, image_size=s, preset="quick")
         for n in PROTOCOLS for s in (8, 32)}
    assert [q[n, 8].train.steps or q[n, 8].train.epochs for n in PROTOCOLS] == [300, 301, 300, 600]
    assert [q[n, 32].train.steps or q[n, 32].train.epochs for n in PROTOCOLS] == [100, 101, 100, 200]
    assert q["rcig", 32].train.warmup_steps == 100 and q["standard", 32].net.width == 16
    assert get_protocol("standard", num_images=100, num_classes=200, image_size=64).net.depth == 4
    with pytest.raises(ConfigError, match="allowed"):
        get_protocol("kip", num_images=1, num_classes=2, image_size=8)


def test_evaluator_reaches_95_percent_on_clean_digits(digits_data):
    """The whole clean digits training set as the 'distilled set': the evaluator must learn it."""
    d = digits_data
    ds = DistilledSet(images=d.x_train, labels=d.y_noisy, method="full")
    proto = get_protocol("standard", num_images=len(d.y_noisy), num_classes=10, image_size=8, preset="quick",
                         width=16)
    proto = type(proto)(proto.name, proto.net, proto.train.replace(steps=300, batch_size=128, lr=0.02, augment="none"),
                        proto.labels)
    res = evaluate(ds, d, proto, jax.random.PRNGKey(0), k=2)
    assert len(res.accs) == 2
    assert res.mean >= 0.95, res.accs
