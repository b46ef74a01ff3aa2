"""xla_options: the per-program XLA:CPU choice, its override, and that it changes speed, not results."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import xla_options as X
from jaxdistill.errors import ConfigError
from jaxdistill.nn import NetConfig, make_net

DOT_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")


@cpu_only
def test_table_and_override(monkeypatch):
    monkeypatch.delenv(X.ENV, raising=False)
    assert X.compiler_options("dance") == DOT_ONLY
    assert X.compiler_options("datm") is None and X.compiler_options("train") is None
    monkeypatch.setenv(X.ENV, "on")
    assert X.compiler_options("dance") is None
    monkeypatch.setenv(X.ENV, "OFF")
    assert X.compiler_options("datm") == DOT_ONLY
    monkeypatch.setenv(X.ENV, "sometimes")
    with pytest.raises(ConfigError, match=r"'sometimes'.*\['auto', 'on', 'off'\]"):
        X.compiler_options("dance")


@cpu_only
def test_dot_only_compile_gives_the_same_gradients():
    # the instance-norm network whose YNNPACK reduction fusion prompted the option: the input gradient of a
    # feature-matching loss, compiled both ways, agrees to float32 rounding (and is not trivially zero)
    net = make_net(NetConfig(10, width=8, depth=2))
    params = net.init(jax.random.PRNGKey(0), (16, 16, 1))
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 16, 16, 1))
    target = jax.random.normal(jax.random.PRNGKey(2), (net.apply_with_features(params, x)[1].shape[1],))

    def loss(x):
        return jnp.sum((net.apply_with_features(params, x)[1].mean(0) - target) ** 2)

    g = jax.grad(loss)
    lowered = jax.jit(g).lower(x)
    a = np.asarray(lowered.compile()(x))
    b = np.asarray(lowered.compile(DOT_ONLY)(x))
    assert np.abs(a).max() > 1e-4
    chex.assert_trees_all_close(a, b, rtol=1e-4, atol=1e-6)


@cpu_only
def test_an_option_this_jaxlib_does_not_know_is_left_out(monkeypatch):
    # the option is experimental: a jaxlib that dropped it would refuse every compile that sets it
    monkeypatch.delenv(X.ENV, raising=False)
    monkeypatch.setattr(X, "_DOT_ONLY", {"xla_cpu_no_such_option_in_any_jaxlib": "1"})
    X._option_supported.cache_clear()
    try:
        assert X.compiler_options("dance") is None
    finally:
        X._option_supported.cache_clear()
