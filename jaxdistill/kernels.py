"""Neural-tangents behind its compatibility patch: linearisation, empirical NTK, infinite-width kernels.

This is the only module that imports ``neural_tangents``. neural-tangents 0.6.5 (the last release,
2023-12) does not import on jax >= 0.5 because it uses internals that moved or went away:
``jax.core.Jaxpr`` / ``JaxprEqn`` / ``Literal`` / ``Var`` / ``DShapedArray``, the ``jax.util`` module,
``jax.random.KeyArray`` and ``jax.interpreters.ad.zeros_like_p``. `_apply_compat_patch` puts back
aliases (from ``jax.extend.core`` / ``jax._src.core``), registers a ``jax.util`` module, gives
``ad.zeros_like_p`` a placeholder primitive (neural-tangents only uses it as a dict key for its
structured-derivative rules, which we do not use) and stubs ``neural_tangents.experimental`` (its
TF-based empirical NTK would import TensorFlow; the GPU machine has no TF). The patch only *adds*
missing names, so it is a no-op on old JAX versions that still have them.

neural-tangents is imported lazily (first call of `nt()`), so ``import jaxdistill.kernels`` is cheap
and works where neural-tangents is not installed; `linearize(..., split=True)` is plain JAX and never
needs it. Tests check every exposed function against a plain-JAX oracle, so a JAX upgrade that breaks
the patch fails CI loudly.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxdistill.errors import ConfigError, JaxDistillError

# Measured to work: jax 0.10.2 (CPU) and jax 0.11.2 (CUDA); older versions with the original names
# need no patch (neural-tangents 0.6.5 itself requires jax >= 0.4.14).
SUPPORTED_JAX = ">=0.4.14,<0.12"
IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products")


class NeuralTangentsUnavailable(JaxDistillError, ImportError):
    """neural-tangents is missing or cannot be imported on the installed JAX, even with the patch."""


_NT: Optional[types.ModuleType] = None


def _jax_version() -> tuple:
    parts = []
    for p in jax.__version__.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _apply_compat_patch() -> None:
    """Add the JAX names neural-tangents 0.6.5 imports but current JAX no longer has (idempotent)."""
    import jax.core as jcore
    from jax._src import core as src_core
    from jax.interpreters import ad

    try:
        import jax.extend.core as ext_core
    except ImportError:  # very old JAX: everything is still in jax.core
        ext_core = None
    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "ShapedArray", "Value", "eval_context",
                 "Primitive", "ClosedJaxpr"):
        if not hasattr(jcore, name):
            src = getattr(ext_core, name, None) if ext_core is not None else None
            src = src if src is not None else getattr(src_core, name, None)
            if src is not None:
                setattr(jcore, name, src)
    if not hasattr(jcore, "DShapedArray"):
        # Dynamic shapes were removed; neural-tangents only tests `type(a) is core.DShapedArray`,
        # which must then be False: a class nothing is an instance of.
        jcore.DShapedArray = type("DShapedArray", (), {"__doc__": "placeholder; dynamic shapes are gone"})

    if "jax.util" not in sys.modules:
        try:
            import importlib

            importlib.import_module("jax.util")  # still present on some versions
        except ImportError:
            from jax._src import util as src_util

            mod = types.ModuleType("jax.util")
            for name in ("safe_map", "safe_zip", "unzip2", "unzip3", "split_list", "partition_list",
                         "curry", "cache", "wraps", "prod", "HashableFunction"):
                if hasattr(src_util, name):
                    setattr(mod, name, getattr(src_util, name))
            sys.modules["jax.util"] = mod
            setattr(jax, "util", mod)

    if not hasattr(jax.random, "KeyArray"):
        jax.random.KeyArray = jax.Array

    if not hasattr(ad, "zeros_like_p"):
        prim_cls = getattr(ext_core, "Primitive", None) if ext_core is not None else None
        prim_cls = prim_cls or src_core.Primitive
        # Only a dict key in neural-tangents' structured-derivative rule tables; never bound.
        ad.zeros_like_p = prim_cls("zeros_like_placeholder")

    if "neural_tangents.experimental" not in sys.modules:
        stub = types.ModuleType("neural_tangents.experimental")
        stub.__doc__ = "jaxdistill stub: the TF-based experimental module is not imported (no TensorFlow)."

        def _tf_only(*_a, **_k):
            raise NeuralTangentsUnavailable(
                "neural_tangents.experimental (TF-based empirical NTK) is stubbed by jaxdistill.kernels so that "
                "TensorFlow is never imported; use jaxdistill.kernels.empirical_ntk_fn instead")

        stub.empirical_ntk_fn_tf = _tf_only
        stub.get_apply_fn_and_params = _tf_only
        sys.modules["neural_tangents.experimental"] = stub


def nt() -> types.ModuleType:
    """The neural_tangents module, imported once behind the compatibility patch."""
    global _NT
    if _NT is not None:
        return _NT
    try:
        _apply_compat_patch()
        import neural_tangents as _nt
        import neural_tangents.stax  # noqa: F401
    except Exception as e:  # ImportError, AttributeError, ... from a changed JAX
        raise NeuralTangentsUnavailable(
            f"cannot import neural-tangents on jax {jax.__version__} ({type(e).__name__}: {e}); "
            f"jaxdistill's compatibility patch supports jax {SUPPORTED_JAX} with neural-tangents 0.6.5 "
            f"(install it with `pip install neural-tangents==0.6.5 --no-deps` plus frozendict)") from e
    _NT = _nt
    return _nt


# --------------------------------------------------------------------------------------------
# Linearisation
# --------------------------------------------------------------------------------------------

def linearize(f: Callable, params: Any, *, split: bool = False) -> Callable:
    """First-order Taylor expansion of `f(params, *args)` around `params`.

    split=False: ``neural_tangents.linearize``: ``f_lin(p, *args) = f(params, *args) + J (p - params)``.
    split=True:  ``f_split(delta, *args) -> (f(params, *args), J delta)``: primal and tangent apart
    (what RCIG needs: the tangent logits o(x) = J(x) delta and the *unperturbed* features). It is the
    same single ``jax.jvp`` nt.linearize runs internally, without the add, and needs no neural-tangents.
    Gradients w.r.t. ``params`` are stopped (the expansion point is a constant); gradients w.r.t.
    delta / p and w.r.t. the inputs in ``args`` flow.
    """
    params = jax.lax.stop_gradient(params)
    if not split:
        return nt().linearize(f, params)

    def f_split(delta, *args, **kwargs):
        return jax.jvp(lambda p: f(p, *args, **kwargs), (params,), (delta,))

    return f_split


# --------------------------------------------------------------------------------------------
# Empirical NTK
# --------------------------------------------------------------------------------------------

def empirical_ntk_fn(apply_fn: Callable, *, implementation: str = "jacobian_contraction",
                     trace_axes: Sequence[int] = (-1,), diagonal_axes: Sequence[int] = (),
                     vmap_axes: Any = 0, batch_size: int = 0) -> Callable:
    """Empirical (finite-width) NTK ``kernel(x1, x2, params) = J(x1) J(x2)^T``.

    apply_fn(params, x) -> (N, K) outputs. With the default trace_axes=(-1,) the result is (N1, N2),
    the *normalised* trace over outputs (neural-tangents' convention: the mean over the K diagonal
    output blocks, i.e. sum_k J_k(x1) . J_k(x2) / K); trace_axes=() gives (N1, N2, K, K). batch_size > 0 wraps the function with
    ``nt.batch`` (x1 and x2 rows must be multiples of it) to bound memory on large sets.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ConfigError(f"NTK implementation={implementation!r} is not one of {list(IMPLEMENTATIONS)} "
                          f"(STRUCTURED_DERIVATIVES does not work on current JAX)")
    if batch_size < 0:
        raise ConfigError(f"batch_size={batch_size} must be >= 0 (0 = no batching)")
    m = nt()
    impl = {"jacobian_contraction": m.NtkImplementation.JACOBIAN_CONTRACTION,
            "ntk_vector_products": m.NtkImplementation.NTK_VECTOR_PRODUCTS}[implementation]
    fn = m.empirical_ntk_fn(apply_fn, trace_axes=tuple(trace_axes), diagonal_axes=tuple(diagonal_axes),
                            vmap_axes=vmap_axes, implementation=impl)
    if batch_size:
        fn = m.batch(fn, batch_size=batch_size, device_count=1, store_on_device=True)
    else:
        fn = jax.jit(fn)
    return fn


def empirical_ntk(apply_fn: Callable, params: Any, x1: jax.Array, x2: Optional[jax.Array] = None, *,
                  implementation: str = "jacobian_contraction", batch_size: int = 0) -> jax.Array:
    """(N1, N2) output-traced (mean over outputs) empirical NTK of `apply_fn` at `params` (x2=None: x1 with itself)."""
    fn = empirical_ntk_fn(apply_fn, implementation=implementation, batch_size=batch_size)
    return fn(x1, x1 if x2 is None else x2, params)


# --------------------------------------------------------------------------------------------
# Infinite-width kernels of the ConvNet family
# --------------------------------------------------------------------------------------------

def convnet_stax(num_classes: int, depth: int = 3, width: int = 128, act: str = "relu",
                 pool: str = "avg", w_std: float = 2.0 ** 0.5, b_std: float = 0.1):
    """The ConvNet family (no normalisation) in ``neural_tangents.stax``: (init_fn, apply_fn, kernel_fn).

    depth x [Conv 3x3 SAME -> act -> 2x2 pool], Flatten, Dense(num_classes); NHWC inputs. kernel_fn
    gives the infinite-width NNGP/NTK (``kernel_fn(x1, x2, 'ntk')``). Instance norm has no closed-form
    kernel here, and max-pool none at all, so only norm='none' with avg/no pooling is offered.
    """
    if act not in ("relu", "erf"):
        raise ConfigError(f"infinite-width act={act!r} is not one of ['relu', 'erf']")
    if pool not in ("avg", "none"):
        raise ConfigError(f"infinite-width pool={pool!r} is not one of ['avg', 'none']")
    if depth < 1 or num_classes < 1:
        raise ConfigError(f"depth={depth} and num_classes={num_classes} must be >= 1")
    stax = nt().stax
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=w_std, b_std=b_std),
                   stax.Relu() if act == "relu" else stax.Erf()]
        if pool == "avg":
            layers.append(stax.AvgPool((2, 2), strides=(2, 2)))
    layers += [stax.Flatten(), stax.Dense(num_classes, W_std=w_std, b_std=b_std)]
    return stax.serial(*layers)


def mlp_stax(num_classes: int, depth: int = 1, width: int = 512, w_std: float = 2.0 ** 0.5, b_std: float = 0.1):
    """depth x [Dense -> ReLU], Dense(num_classes) in stax: (init_fn, apply_fn, kernel_fn)."""
    stax = nt().stax
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=w_std, b_std=b_std), stax.Relu()]
    layers.append(stax.Dense(num_classes, W_std=w_std, b_std=b_std))
    return stax.serial(*layers)


def infinite_width_kernel(kernel_fn: Callable, x1: jax.Array, x2: Optional[jax.Array] = None,
                          get: str = "ntk", batch_size: int = 0) -> jax.Array:
    """(N1, N2) infinite-width kernel ('ntk' or 'nngp') of a stax `kernel_fn`, optionally via nt.batch."""
    if get not in ("ntk", "nngp"):
        raise ConfigError(f"get={get!r} is not one of ['ntk', 'nngp']")
    fn = nt().batch(kernel_fn, batch_size=batch_size, device_count=1) if batch_size else kernel_fn
    return fn(x1, x2, get)


def kernel_regression(k_train_train: jax.Array, y_train: jax.Array, k_test_train: jax.Array,
                      reg: float) -> jax.Array:
    """Kernel ridge regression prediction ``K_ts (K_ss + reg I)^{-1} Y`` by a Cholesky solve.

    k_train_train (N, N) symmetric PSD, y_train (N, K), k_test_train (M, N) -> (M, K).
    """
    n = k_train_train.shape[0]
    chol = jax.scipy.linalg.cho_factor(k_train_train + reg * jnp.eye(n, dtype=k_train_train.dtype), lower=True)
    return k_test_train @ jax.scipy.linalg.cho_solve(chol, y_train)


# --------------------------------------------------------------------------------------------
# RCIG's pieces: tangent logits, the head's empirical NTK, kernel ridge regression
# --------------------------------------------------------------------------------------------

BACKENDS = ("nt", "jax")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"kernel backend={backend!r} is not one of {list(BACKENDS)}")


def tangent_and_features(apply_with_features: Callable, theta0: Any, delta: Any, x: jax.Array, *,
                         backend: str = "nt") -> tuple:
    """RCIG's convexified model parts at `theta0`: (o(x) = J_logits(x) delta (B, K), phi0(x) (B, F)).

    apply_with_features(params, x) -> (logits (B, K), features (B, F)). Gradients flow to delta and x,
    not to theta0 (the expansion point is a constant).

    backend='nt': ``neural_tangents.linearize`` of the *centred* logits
    ``g(d, x) = f(theta0 + d, x) - f(theta0, x)`` around d = 0. nt.linearize returns primal +
    tangent; the centred primal is exactly 0 (two identical computations), so the result is the tangent
    J delta alone with no cancellation error, and the linearisation point is d = 0 so delta is never
    reconstructed as a difference of parameters. phi0 comes from the same forward pass (XLA merges it).
    backend='jax': the same single ``jax.jvp`` written by hand (primal and tangent apart).
    """
    _check_backend(backend)
    theta0 = jax.lax.stop_gradient(theta0)
    if backend == "jax":
        (_, feats), (dlogits, _) = linearize(apply_with_features, theta0, split=True)(delta, x)
        return dlogits, feats

    def centred(d, xx):
        moved = jax.tree_util.tree_map(jnp.add, theta0, d)
        # theta0 + 0 is theta0 bit for bit, so at d = 0 this is exactly 0; the subtracted forward pass does not
        # depend on d (no tangent) and is the one phi0 comes from below (XLA computes it once).
        return apply_with_features(moved, xx)[0] - apply_with_features(theta0, xx)[0]

    zeros = jax.tree_util.tree_map(jnp.zeros_like, delta)
    o = nt().linearize(centred, zeros)(delta, x)
    _, feats = apply_with_features(theta0, x)
    return o, feats


def _head(w: jax.Array, phi: jax.Array) -> jax.Array:
    return phi @ w


def head_ntk(phi1: jax.Array, phi2: jax.Array, *, backend: str = "nt",
             implementation: str = "jacobian_contraction") -> jax.Array:
    """(N1, N2) empirical NTK of a linear head ``phi @ W`` w.r.t. W: ``phi1 phi2^T``.

    This is RCIG's kernel: the last layer of the linearised net solved in closed form on frozen
    features phi0. backend='nt' computes it with ``neural_tangents.empirical_ntk_fn`` (one output
    column, so neural-tangents' normalised output trace is the plain product); 'jax' is the matmul.
    """
    _check_backend(backend)
    if backend == "jax":
        return phi1 @ phi2.T
    if implementation not in IMPLEMENTATIONS:
        raise ConfigError(f"NTK implementation={implementation!r} is not one of {list(IMPLEMENTATIONS)}")
    from jaxdistill.sharding import _varying, varying_axes

    varying = varying_axes(phi1) | varying_axes(phi2)
    if varying and implementation == "ntk_vector_products":
        # neural-tangents builds that path's basis from eval_shape, which drops shard_map's varying-axis type
        raise ConfigError(f"NTK implementation='ntk_vector_products' cannot run on values split across devices "
                          f"(shard_map axes {sorted(varying)}); allowed there: 'jacobian_contraction'")
    m = nt()
    impl = {"jacobian_contraction": m.NtkImplementation.JACOBIAN_CONTRACTION,
            "ntk_vector_products": m.NtkImplementation.NTK_VECTOR_PRODUCTS}[implementation]
    fn = m.empirical_ntk_fn(_head, trace_axes=(-1,), vmap_axes=0, implementation=impl)
    w = jnp.zeros((phi1.shape[-1], 1), phi1.dtype)  # the head is linear: its NTK does not depend on W
    if varying:
        # W must vary over the features' shard_map axes: a device-invariant W's Jacobian is summed over devices
        # in the transpose (shard_map's rule for invariant inputs), giving each device all devices' kernels.
        w = _varying(w, tuple(sorted(varying)))
    return fn(phi1, phi2, w)


def krr(k_ss: jax.Array, y_s: jax.Array, k_ts: jax.Array, reg: float | jax.Array, *,
        backend: str = "nt") -> jax.Array:
    """Kernel ridge regression ``K_ts (K_ss + reg I)^-1 Y_s`` (reg absolute): (M, N), (N, N), (N, K) -> (M, K).

    backend='nt': ``neural_tangents.predict.gp_inference`` (Cholesky, diag_reg_absolute_scale=True);
    'jax': `kernel_regression`.
    """
    _check_backend(backend)
    if backend == "jax":
        return kernel_regression(k_ss, y_s, k_ts, reg)
    predict_fn = nt().predict.gp_inference(k_ss, y_s, diag_reg=reg, diag_reg_absolute_scale=True)
    return predict_fn("ntk", k_ts)
