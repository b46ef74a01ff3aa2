import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.errors import ConfigError
from jaxdistill.nn import NetConfig, conv2d, make_net, num_params


def test_convnet3_cifar10_has_320010_params():
    net = make_net(NetConfig(10))
    assert num_params(net.init(jax.random.PRNGKey(0), (32, 32, 3))) == 320_010


def test_param_counts_match_arithmetic():
    # CIFAR-100 ConvNet-3 and Tiny ConvNet-4 (200 classes) from distillers.md 0.1.
    assert num_params(make_net(NetConfig(100)).init(jax.random.PRNGKey(0), (32, 32, 3))) == 504_420
    assert num_params(make_net(NetConfig(200, depth=4)).init(jax.random.PRNGKey(0), (64, 64, 3))) == 857_160


@pytest.mark.parametrize("shape,feat", [((28, 28, 1), 4 * 4 * 8), ((8, 8, 1), 1 * 1 * 8), ((32, 32, 3), 4 * 4 * 8),
                                        ((64, 64, 3), 8 * 8 * 8)])
def test_feature_sizes(shape, feat):
    net = make_net(NetConfig(10, width=8))
    p = net.init(jax.random.PRNGKey(0), shape)
    logits, f = net.apply_with_features(p, jnp.zeros((2, *shape)))
    chex.assert_shape(logits, (2, 10))
    chex.assert_shape(f, (2, feat))


def test_conv_paths_agree_with_naive_loop():
    rs = np.random.RandomState(0)
    x = rs.randn(2, 5, 6, 3).astype(np.float32)
    k = rs.randn(3, 3, 3, 4).astype(np.float32)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 5, 6, 4), np.float32)
    for i in range(5):
        for j in range(6):
            ref[:, i, j] = np.einsum("nabc,abcd->nd", xp[:, i:i + 3, j:j + 3], k)
    for impl in ("lax", "patches"):
        chex.assert_trees_all_close(np.asarray(conv2d(jnp.asarray(x), jnp.asarray(k), 1, impl)), ref, atol=1e-4)


def test_second_order_grads_agree_between_conv_paths():
    """The CPU patch path must give the same meta-gradient as lax.conv (it is only a faster formulation)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    y = jax.nn.one_hot(jnp.arange(4) % 3, 3)
    outs = []
    for impl in ("lax", "patches"):
        net = make_net(NetConfig(3, width=4, depth=2, conv_impl=impl))
        p = net.init(jax.random.PRNGKey(0), (8, 8, 1))

        def inner(xs):
            loss = lambda q: -(y * jax.nn.log_softmax(net.apply(q, xs))).sum()
            g = jax.grad(loss)(p)
            q = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)
            return loss(q)

        outs.append(jax.grad(inner)(x))
    chex.assert_trees_all_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)


def test_rcig_variant_and_softplus():
    cfg = NetConfig(10, width=4, depth=3, norm="none", act="softplus", softplus_temp=60.0, width_growth=2)
    net = make_net(cfg)
    p = net.init(jax.random.PRNGKey(0), (32, 32, 3))
    assert p["conv2"]["kernel"].shape == (3, 3, 8, 16)
    assert "norm0" not in p
    _, f = net.apply_with_features(p, jnp.ones((1, 32, 32, 3)))
    chex.assert_shape(f, (1, 16 * 4 * 4))


def test_instance_norm_normalises_each_sample_and_channel():
    net = make_net(NetConfig(2, width=3, depth=1, pool="none"))
    p = net.init(jax.random.PRNGKey(0), (6, 6, 1))
    # after norm (scale 1, bias 0) and before relu, each (sample, channel) has zero mean, unit var
    from jaxdistill.nn import Norm

    x = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 6, 3)) * 5 + 3
    y = Norm("instance").apply({"params": {"scale": jnp.ones(3), "bias": jnp.zeros(3)}}, x)
    chex.assert_trees_all_close(y.mean((1, 2)), jnp.zeros((2, 3)), atol=1e-5)
    chex.assert_trees_all_close(y.var((1, 2)), jnp.ones((2, 3)), atol=1e-3)


@pytest.mark.parametrize("bad", [dict(norm="layer"), dict(act="gelu"), dict(pool="sum"), dict(conv_impl="fft"),
                                 dict(num_classes=1), dict(width=0)])
def test_bad_net_config(bad):
    kw = dict(num_classes=10)
    kw.update(bad)
    with pytest.raises(ConfigError) as e:
        NetConfig(**kw)
    assert str(list(bad.values())[0]) in str(e.value)


def test_jitted_init_equals_flax_init_and_checks_the_shape():
    from jaxdistill.nn import ConvNet

    cfg = NetConfig(10, width=8)
    want = ConvNet(cfg).init(jax.random.PRNGKey(3), jnp.zeros((1, 28, 28, 1)))["params"]
    got = make_net(cfg).init(jax.random.PRNGKey(3), (28, 28, 1))
    chex.assert_trees_all_close(got, want, atol=1e-7)
    assert make_net(cfg) is make_net(NetConfig(10, width=8))  # cached per config: one compile per process
    for bad in [(28, 28), (28, 28, 0), np.zeros((4, 28, 28, 1)), "28x28x1"]:
        with pytest.raises(ConfigError, match="input_shape must be"):
            make_net(cfg).init(jax.random.PRNGKey(0), bad)


def test_forward_net_uses_the_native_conv_only_where_auto_and_gives_the_same_features():
    from jaxdistill.nn import forward_net

    net = make_net(NetConfig(10, width=8, depth=2))
    fwd = forward_net(net)
    assert fwd.cfg.conv_impl == "lax" and fwd.cfg.replace(conv_impl="auto") == net.cfg
    pinned = make_net(NetConfig(10, width=8, depth=2, conv_impl="patches"))
    assert forward_net(pinned) is pinned   # an explicit choice is kept
    params = net.init(jax.random.PRNGKey(0), (12, 12, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 12, 12, 1))
    a, b = net.apply_with_features(params, x)[1], fwd.apply_with_features(params, x)[1]
    assert float(jnp.abs(a).max()) > 0.1
    chex.assert_trees_all_close(a, b, atol=1e-5, rtol=1e-5)
