"""jaxdistill.kernels against plain-JAX / closed-form oracles (a JAX upgrade that breaks the patch fails here)."""
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import kernels
from jaxdistill.errors import ConfigError
from jaxdistill.nn import NetConfig, make_net


@pytest.fixture(scope="module")
def tiny():
    net = make_net(NetConfig(num_classes=3, width=3, depth=2, norm="none", act="softplus", width_growth=2))
    key = jax.random.PRNGKey(0)
    params = net.init(key, (4, 4, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 4, 4, 1))
    return net, params, x


def test_import_keeps_tensorflow_out():
    code = ("import sys; from jaxdistill import kernels; m = kernels.nt(); "
            "assert m.__version__ == '0.6.5', m.__version__; "
            "assert 'tensorflow' not in sys.modules, 'TF imported'; "
            "assert 'neural_tangents.experimental' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_linearize_matches_jvp_oracle(tiny):
    net, params, x = tiny
    delta = jax.tree_util.tree_map(lambda p: 0.01 * jnp.ones_like(p), params)
    f_lin = kernels.linearize(net.apply, params)
    got = f_lin(jax.tree_util.tree_map(jnp.add, params, delta), x)
    primal, tangent = jax.jvp(lambda p: net.apply(p, x), (params,), (delta,))
    chex.assert_trees_all_close(got, primal + tangent, rtol=1e-5, atol=1e-6)
    # The split form gives the same two parts separately (RCIG uses it).
    p2, t2 = kernels.linearize(net.apply_with_features, params, split=True)(delta, x)
    chex.assert_trees_all_close(p2, net.apply_with_features(params, x), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(t2[0], tangent, rtol=1e-5, atol=1e-6)
    # Linear in delta: doubling delta doubles the tangent; the tangent is not zero.
    _, t3 = kernels.linearize(net.apply, params, split=True)(jax.tree_util.tree_map(lambda d: 2 * d, delta), x)
    chex.assert_trees_all_close(t3, 2 * tangent, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(tangent).max()) > 1e-4


def test_linearize_closed_form():
    f = lambda p, x: jnp.sin(p["w"] * x)
    p0 = {"w": jnp.array(0.3)}
    x = jnp.linspace(-1, 1, 7)
    got = kernels.linearize(f, p0)({"w": jnp.array(0.5)}, x)
    want = np.sin(0.3 * np.asarray(x)) + np.cos(0.3 * np.asarray(x)) * np.asarray(x) * 0.2
    chex.assert_trees_all_close(got, jnp.asarray(want, jnp.float32), rtol=1e-5, atol=1e-6)


def _jacobian_oracle(apply, params, x):
    """(N, K, P) explicit Jacobian of the outputs w.r.t. all parameters, flattened."""
    jac = jax.jacobian(apply)(params, x)
    leaves = jax.tree_util.tree_leaves(jac)
    n, k = x.shape[0], leaves[0].shape[1]
    return jnp.concatenate([l.reshape(n, k, -1) for l in leaves], axis=-1)


@pytest.mark.parametrize("impl", kernels.IMPLEMENTATIONS)
def test_empirical_ntk_matches_jacobian_contraction(tiny, impl):
    net, params, x = tiny
    x2 = x[:3] * 0.5
    j1, j2 = _jacobian_oracle(net.apply, params, x), _jacobian_oracle(net.apply, params, x2)
    # neural-tangents' "trace" over the output axis is normalised: the mean over the K outputs.
    want = jnp.einsum("akp,bkp->ab", j1, j2) / j1.shape[1]
    got = kernels.empirical_ntk(net.apply, params, x, x2, implementation=impl)
    chex.assert_shape(got, (5, 3))
    chex.assert_trees_all_close(got, want, rtol=2e-4, atol=1e-5)
    full = kernels.empirical_ntk_fn(net.apply, implementation=impl, trace_axes=())(x, x2, params)
    chex.assert_shape(full, (5, 3, 3, 3))
    chex.assert_trees_all_close(full, jnp.einsum("akp,blp->abkl", j1, j2), rtol=2e-4, atol=1e-5)


def test_empirical_ntk_batched_equals_unbatched(tiny):
    net, params, x = tiny
    x4 = x[:4]
    whole = kernels.empirical_ntk(net.apply, params, x4)
    batched = kernels.empirical_ntk(net.apply, params, x4, batch_size=2)
    chex.assert_trees_all_close(batched, whole, rtol=1e-5, atol=1e-6)


def test_infinite_width_mlp_closed_form():
    """One hidden ReLU layer: NNGP and NTK from the arc-cosine kernel, computed in NumPy."""
    w2, b2 = 2.0, 0.01
    x = np.random.RandomState(0).randn(4, 6).astype(np.float32)
    _, _, kfn = kernels.mlp_stax(2, depth=1, w_std=w2 ** 0.5, b_std=b2 ** 0.5)
    k = kfn(jnp.asarray(x), None, ("nngp", "ntk"))
    x64 = x.astype(np.float64)
    k1 = w2 * x64 @ x64.T / x.shape[1] + b2
    d = np.sqrt(np.diag(k1))
    cos = np.clip(k1 / np.outer(d, d), -1, 1)
    th = np.arccos(cos)
    relu = np.outer(d, d) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * cos)
    relu_dot = (np.pi - th) / (2 * np.pi)
    nngp = w2 * relu + b2
    ntk = nngp + w2 * relu_dot * k1
    chex.assert_trees_all_close(np.asarray(k.nngp), nngp, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(np.asarray(k.ntk), ntk, rtol=1e-4, atol=1e-5)


def test_infinite_width_convnet_matches_wide_nets():
    """The ConvNet NNGP against the output covariance of many finite wide nets of the same stax model."""
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 4, 4, 2))
    init_fn, apply_fn, kfn = kernels.convnet_stax(1, depth=1, width=256, b_std=0.3)
    want = kernels.infinite_width_kernel(kfn, x, None, "nngp")
    chex.assert_shape(want, (3, 3))

    def out(k):
        _, p = init_fn(k, x.shape)
        return apply_fn(p, x)[:, 0]

    outs = jax.vmap(out)(jax.random.split(jax.random.PRNGKey(4), 400))  # (S, 3)
    mc = outs.T @ outs / outs.shape[0]
    chex.assert_trees_all_close(mc, want, rtol=0.15, atol=0.05 * float(jnp.max(want)))
    batched = kernels.infinite_width_kernel(kfn, x[:2], x[:2], "ntk", batch_size=1)
    chex.assert_trees_all_close(batched, kernels.infinite_width_kernel(kfn, x[:2], x[:2], "ntk"), rtol=1e-5)


def test_kernel_regression_matches_numpy():
    rs = np.random.RandomState(1)
    phi_s, phi_t, y = rs.randn(6, 4), rs.randn(3, 4), rs.randn(6, 2)
    kss, kts = phi_s @ phi_s.T, phi_t @ phi_s.T
    want = kts @ np.linalg.solve(kss + 0.3 * np.eye(6), y)
    got = kernels.kernel_regression(jnp.asarray(kss, jnp.float32), jnp.asarray(y, jnp.float32),
                                    jnp.asarray(kts, jnp.float32), 0.3)
    chex.assert_trees_all_close(got, jnp.asarray(want, jnp.float32), rtol=1e-4, atol=1e-4)


def test_errors_name_values(monkeypatch):
    with pytest.raises(ConfigError, match="structured.*|not one of"):
        kernels.empirical_ntk_fn(lambda p, x: x, implementation="structured_derivatives")
    monkeypatch.setattr(kernels, "_NT", None)

    def broken():
        raise AttributeError("module 'jax.core' has no attribute 'Jaxpr'")

    monkeypatch.setattr(kernels, "_apply_compat_patch", broken)
    with pytest.raises(kernels.NeuralTangentsUnavailable, match=r"supports jax >=0\.4\.14,<0\.12"):
        kernels.nt()


# ------------------------------------------------------------------------------- RCIG's pieces
def test_compat_patch_on_installed_jax():
    """The patch puts back every name neural-tangents 0.6.5 imports, on the JAX installed here, and is idempotent."""
    import jax.core as jcore
    from jax.interpreters import ad

    m = kernels.nt()
    kernels._apply_compat_patch()  # a second application changes nothing and does not fail
    assert m.__version__ == "0.6.5"
    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "ShapedArray", "DShapedArray"):
        assert hasattr(jcore, name), name
    assert "jax.util" in sys.modules and hasattr(sys.modules["jax.util"], "safe_map")
    assert jax.random.KeyArray is not None and hasattr(ad, "zeros_like_p")
    # nothing is an instance of the DShapedArray placeholder: neural-tangents' dynamic-shape branch stays off
    assert not isinstance(jax.core.ShapedArray((2,), jnp.float32), jcore.DShapedArray)


def test_only_kernels_imports_neural_tangents():
    import pathlib
    import re

    import jaxdistill

    root = pathlib.Path(jaxdistill.__file__).parent
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if re.search(r"^\s*(import|from)\s+neural_tangents", p.read_text(), re.M)]
    assert found == ["kernels.py"], found


@pytest.mark.parametrize("hw,width,depth,n", [(4, 3, 2, 5), (8, 6, 1, 3), (12, 4, 3, 2)])
def test_tangent_and_features_nt_equals_jvp(hw, width, depth, n):
    """nt.linearize of the centred logits == the hand-written jax.jvp (float32 reassociation only), with gradients."""
    net = make_net(NetConfig(num_classes=3, width=width, depth=depth, norm="none", act="softplus", width_growth=2))
    params = net.init(jax.random.PRNGKey(hw), (hw, hw, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (n, hw, hw, 1))
    delta = jax.tree_util.tree_map(lambda p: 1e-3 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

    def run(backend):
        o, phi = kernels.tangent_and_features(net.apply_with_features, params, delta, x, backend=backend)
        loss = lambda d, xx: jnp.sum(jnp.sin(kernels.tangent_and_features(  # noqa: E731
            net.apply_with_features, params, d, xx, backend=backend)[0]))
        return o, phi, jax.grad(loss, argnums=(0, 1))(delta, x)

    o_nt, phi_nt, g_nt = run("nt")
    o_j, phi_j, g_j = run("jax")
    scale = float(jnp.abs(o_j).max())
    assert scale > 1e-5
    chex.assert_trees_all_close(o_nt, o_j, rtol=1e-5, atol=1e-5 * scale)
    chex.assert_trees_all_close(phi_nt, phi_j, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(g_nt, g_j, rtol=1e-5, atol=1e-7)
    # and the jvp itself against a central finite difference in float64-free form: f(p + e d) - f(p - e d)
    eps = 1.0
    fd = (net.apply(jax.tree_util.tree_map(lambda p, d: p + eps * d, params, delta), x)
          - net.apply(jax.tree_util.tree_map(lambda p, d: p - eps * d, params, delta), x)) / (2 * eps)
    chex.assert_trees_all_close(o_nt, fd, rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("impl", kernels.IMPLEMENTATIONS)
def test_head_ntk_and_krr_equal_by_hand(impl):
    rs = np.random.RandomState(0)
    phi1, phi2, y = (jnp.asarray(rs.randn(*s), jnp.float32) for s in ((6, 5), (4, 5), (6, 3)))
    chex.assert_trees_all_close(kernels.head_ntk(phi1, phi2, implementation=impl), phi1 @ phi2.T, rtol=1e-5,
                                atol=1e-5)
    kss, kts = phi1 @ phi1.T, phi2 @ phi1.T
    chex.assert_trees_all_close(kernels.krr(kss, y, kts, 0.3), kernels.krr(kss, y, kts, 0.3, backend="jax"),
                                rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="backend='torch' is not one of"):
        kernels.head_ntk(phi1, phi2, backend="torch")


def test_rcig_step_calls_neural_tangents(monkeypatch):
    """A (traced) RCIG step goes through neural-tangents' linearize, empirical NTK and gp_inference."""
    from jaxdistill.configs.rcig import RCIGConfig
    from jaxdistill.methods import rcig

    m = kernels.nt()
    calls = {"linearize": 0, "empirical_ntk_fn": 0, "gp_inference": 0}

    def spy(obj, name):
        real = getattr(obj, name)

        def wrapped(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        monkeypatch.setattr(obj, name, wrapped)

    spy(m, "linearize"), spy(m, "empirical_ntk_fn"), spy(m.predict, "gp_inference")
    cfg = RCIGConfig(dataset="digits", ipc=1, width=3, depth=1, iterations=1, pool_size=1, real_batch=4, n_inner=2,
                     n_hinv=2, tune_lr=False, preprocess="none", preset="quick", linearize_backend="nt")
    prob = rcig.make_problem(cfg, 2, (4, 4, 1))
    st = prob.init_state(jnp.ones((2, 4, 4, 1)), jnp.eye(2) - 0.5, jax.random.PRNGKey(0))
    jax.eval_shape(prob.step, st, jnp.ones((4, 4, 4, 1)), jnp.eye(2)[jnp.array([0, 1, 0, 1])], jax.random.PRNGKey(1))
    assert all(v > 0 for v in calls.values()), calls
