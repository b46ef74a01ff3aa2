"""No recompiles: a second distill / evaluate / training call with the same shapes and config compiles nothing.

One mechanism throughout: a `jax.monitoring` listener on JAX's backend-compile event, which fires for every
XLA compilation a cache miss in this process causes (jitted programs and eagerly run primitives alike, and
also when the persistent compilation cache then supplies the executable). Each test warms up first, since
earlier tests in the same process may or may not have compiled the same programs.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import distill_run  # the reliability tests' tiny digits configs for all three distillers
from jaxdistill.evaluate import PROTOCOLS, evaluate, get_protocol
from jaxdistill.methods import DistilledSet, distill
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, make_epoch_fn, make_optimizer, steps_per_epoch, train_models

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch.BACKEND_COMPILE_EVENT


@contextlib.contextmanager
def count_compiles():
    """Yields a list that collects the name of every program compiled inside the block."""
    names: list[str] = []

    def listener(event, duration, **kw):
        if event == COMPILE_EVENT:
            names.append(str(kw.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _summary(names) -> str:
    return str(collections.Counter(names).most_common())


def test_counter_sees_compiles_and_cache_hits():
    f = jax.jit(lambda v: jnp.sin(v) * 3.0)
    a, b = np.ones(7, np.float32), np.ones(8, np.float32)  # NumPy inputs: building them compiles nothing
    with count_compiles() as first:
        f(a).block_until_ready()
    with count_compiles() as again:
        f(a).block_until_ready()
    with count_compiles() as other_shape:
        f(b).block_until_ready()
    assert (first, again, other_shape) == (["jit(<lambda>)"], [], ["jit(<lambda>)"])


# ------------------------------------------------------------------------------------------------
# distill, through the public run driver
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_tiny():
    return distill_run.tiny_data()


@pytest.mark.parametrize("method", ["datm", "dance", "rcig"])
def test_second_distill_compiles_nothing(method, digits_tiny, tmp_path):
    cfg = dataclasses.replace(distill_run.tiny_config(method), iterations=4)
    if method == "datm":  # the experts are trained once and reused: their training is tested below
        cfg = dataclasses.replace(cfg, expert_dir=str(tmp_path / "experts"))
    first = distill(method, cfg, digits_tiny, jax.random.PRNGKey(0), progress=False)
    # another key: keys are traced arguments, so a new seed must not mean new programs either
    with count_compiles() as names:
        second = distill(method, cfg, digits_tiny, jax.random.PRNGKey(1), progress=False)
    assert names == [], f"{method}: the second distill compiled {len(names)} programs: {_summary(names)}"
    assert second.images.shape == first.images.shape and not np.array_equal(second.images, first.images)


# ------------------------------------------------------------------------------------------------
# evaluate and the training loop
# ------------------------------------------------------------------------------------------------

C = 3


def _tiny_set(lr: float, seed: int) -> DistilledSet:
    rs = np.random.RandomState(seed)
    return DistilledSet(images=rs.rand(6, 8, 8, 1).astype(np.float32), labels=np.repeat(np.arange(C), 2),
                        targets=rs.randn(6, C).astype(np.float32), target_kind="soft_logits", lr=lr,
                        method="datm")


def _test_data():
    rs = np.random.RandomState(9)
    return types.SimpleNamespace(x_test=rs.rand(20, 8, 8, 1).astype(np.float32), y_test=rs.randint(0, C, 20),
                                 num_classes=C)


def _short(protocol):
    """The protocol on a 2-layer width-4 net for 2 epochs / 4 steps, test points kept (they are programs too)."""
    train = protocol.train.replace(**({"steps": 4} if protocol.train.steps else {"epochs": 2}))
    return dataclasses.replace(protocol, net=protocol.net.replace(width=4, depth=2), train=train,
                               eval_every=1 if protocol.eval_every else 0,
                               eval_every_steps=2 if protocol.eval_every_steps else 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_second_evaluate_compiles_nothing(protocol):
    data = _test_data()

    def run(ds, key):
        p = get_protocol(protocol, num_images=6, num_classes=C, image_size=8, preset="quick", lr=ds.lr,
                         channels=1)
        return evaluate(ds, data, _short(p), key, k=2)

    run(_tiny_set(0.01, 0), jax.random.PRNGKey(0))
    with count_compiles() as names:
        res = run(_tiny_set(0.01, 1), jax.random.PRNGKey(1))
    assert names == [], f"{protocol}: the second evaluate compiled {len(names)} programs: {_summary(names)}"
    assert len(res.accs) == 2


def test_datm_protocol_learned_lr_is_a_traced_argument():
    """Two sets with different learned lr under DATM's protocol: one compile of the training program, and
    each set is trained at its own lr."""
    data = _test_data()
    results = []
    for i, lr in enumerate([0.01, 0.037]):
        ds = _tiny_set(lr, 0)
        p = _short(get_protocol("datm", num_images=6, num_classes=C, image_size=8, preset="quick", lr=ds.lr,
                                channels=1))
        with count_compiles() as names:
            results.append(evaluate(ds, data, p, jax.random.PRNGKey(0), k=2))
        if i == 1:
            assert names == [], f"a new lr compiled {len(names)} programs: {_summary(names)}"
    assert [r.config["train"]["lr"] for r in results] == [0.01, 0.037]


def _toy(n=12, seed=0):
    rs = np.random.RandomState(seed)
    return rs.rand(n, 8, 8, 1).astype(np.float32), rs.randint(0, C, n)


@pytest.mark.parametrize("cfg", [
    TrainConfig(epochs=3, batch_size=5, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                milestones=(0.5,), gamma=0.1),
    TrainConfig(steps=6, batch_size=5, optimizer="adam", lr=1e-3, loss="mse", schedule="warmup_cosine",
                warmup_steps=2)], ids=["sgd-multistep", "adam-warmup-cosine"])
def test_training_lr_is_traced_and_equals_a_fixed_lr_optimiser(cfg):
    """train_models at lr a, then at lr b: the second compiles nothing, and each equals the program with the
    lr baked into its optimiser (make_epoch_fn with a fixed tx, the pre-traced-lr path)."""
    x, y = _toy()
    net = make_net(NetConfig(C, width=4, depth=2, norm="none"))
    key = jax.random.PRNGKey(3)
    t = jax.nn.one_hot(y, C)
    n_steps, _ = steps_per_epoch(12, cfg.batch_size)
    epochs = cfg.epochs if cfg.steps is None else -(-cfg.steps // n_steps)
    outs = []
    for lr in (cfg.lr, 2.5 * cfg.lr):
        c = cfg.replace(lr=lr)
        with count_compiles() as names:
            outs.append(train_models(net, x, y, c, key, 2).params)
    assert names == [], f"a new lr compiled {len(names)} programs: {_summary(names)}"
    # oracle for the second lr (run by the first lr's program): the same init and keys, the optimiser built
    # with the lr as a Python constant
    from jaxdistill.train import init_state

    tx = make_optimizer(c, epochs * n_steps)
    want, _ = make_epoch_fn(net, c, 12, tx)(init_state(net, c, key, 2, (8, 8, 1), tx), jnp.asarray(x), t, epochs)
    chex.assert_trees_all_close(outs[1], want.params, atol=1e-6, rtol=1e-5)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(outs[0]),
                                                                jax.tree_util.tree_leaves(outs[1])))
    assert diff > 1e-4, diff  # the lr is used, not frozen at the first call's value


def test_second_training_call_compiles_nothing_and_a_new_shape_does():
    x, y = _toy()
    net = make_net(NetConfig(C, width=4, depth=2))
    cfg = TrainConfig(epochs=2, batch_size=5, lr=0.05, momentum=0.9)
    train_models(net, x, y, cfg, jax.random.PRNGKey(0), 2)
    with count_compiles() as names:
        train_models(net, *_toy(seed=1), cfg, jax.random.PRNGKey(1), 2)
    assert names == [], f"the second training call compiled {len(names)} programs: {_summary(names)}"
    with count_compiles() as names:  # the counter is not blind: 13 images are another program
        train_models(net, *_toy(13), cfg, jax.random.PRNGKey(1), 2)
    assert len(names) >= 1
