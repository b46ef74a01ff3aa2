"""The ConvNet family used by every method (flax linen), with explicit parameter pytrees.

One network definition serves the study's ConvNet-3/ConvNet-4 (width 128, instance norm, ReLU,
avg-pool), RCIG's width-doubling variant (no norm, softplus with temperature) and small CPU
variants. Layout is NHWC; the classifier flattens features in (H, W, C) order.

On XLA:CPU, second-order gradients through ``lax.conv_general_dilated`` take a slow path (about 9x
slower than the same maths as patches + matmul), so ``conv_impl="auto"`` picks the patch path on
CPU and the native convolution elsewhere. Both use the same HWIO kernel, so parameters are
interchangeable between the two paths.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxdistill.errors import ConfigError

Params = Any  # a flax parameter pytree

NORMS = ("instance", "batch", "none")
ACTS = ("relu", "softplus")
POOLS = ("avg", "max", "none")
CONV_IMPLS = ("auto", "lax", "patches")
INITS = ("torch", "flax")


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Architecture of a ConvNet.

    width_growth=2 gives RCIG's widths (w, 2w, 4w, ...). softplus_temp=0 with act="softplus"
    means plain ReLU (as RCIG's configs do for depth 4/5).
    init: "torch" = PyTorch's default Conv/Linear init, U(+-1/sqrt(fan_in)) for weights and biases (the
    study's ConvNet in DATM/DANCE); "flax" = flax's defaults, lecun-normal kernels and zero biases (RCIG's
    flax Conv, for its pool, resets and evaluation net).
    """

    num_classes: int
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    act: str = "relu"
    softplus_temp: float = 60.0
    pool: str = "avg"
    width_growth: int = 1
    conv_impl: str = "auto"
    init: str = "torch"

    def __post_init__(self):
        for name, value, allowed in (("norm", self.norm, NORMS), ("act", self.act, ACTS),
                                     ("pool", self.pool, POOLS), ("conv_impl", self.conv_impl, CONV_IMPLS),
                                     ("init", self.init, INITS)):
            if value not in allowed:
                raise ConfigError(f"network {name}={value!r} is not one of {list(allowed)}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes={self.num_classes} must be >= 2")
        if self.width < 1 or self.depth < 1:
            raise ConfigError(f"width={self.width} and depth={self.depth} must be >= 1")

    def replace(self, **kw) -> "NetConfig":
        return dataclasses.replace(self, **kw)


def _torch_uniform(fan_in: int) -> Callable:
    """PyTorch's default Conv/Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _initializers(kind: str, fan_in: int) -> tuple[Callable, Callable]:
    """(kernel_init, bias_init) of a Conv/Dense layer with `fan_in` inputs per output unit."""
    if kind == "flax":
        # flax.linen.Conv/Dense defaults: variance-1/fan_in truncated normal (fan_in from the kernel's shape:
        # kh * kw * cin for HWIO, din for a Dense kernel), zero bias.
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    return _torch_uniform(fan_in), _torch_uniform(fan_in)


def resolve_conv_impl(impl: str) -> str:
    if impl == "auto":
        return "patches" if jax.default_backend() == "cpu" else "lax"
    return impl


def conv2d(x: jax.Array, kernel: jax.Array, padding: int, impl: str = "auto") -> jax.Array:
    """Stride-1 'same-style' convolution with symmetric zero padding.

    x: (N, H, W, Cin); kernel: (kh, kw, Cin, Cout) -> (N, H + 2p - kh + 1, W + 2p - kw + 1, Cout).
    """
    impl = resolve_conv_impl(impl)
    if impl == "lax":
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=(1, 1), padding=((padding, padding), (padding, padding)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    kh, kw, cin, cout = kernel.shape
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    # (kh, kw, cin) patch order matches kernel.reshape(kh*kw*cin, cout).
    patches = jnp.concatenate(
        [xp[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ kernel.reshape(kh * kw * cin, cout)


class Conv3x3(nn.Module):
    features: int
    padding: int = 1
    impl: str = "auto"
    init: str = "torch"

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        k_init, b_init = _initializers(self.init, 9 * cin)
        kernel = self.param("kernel", k_init, (3, 3, cin, self.features))
        bias = self.param("bias", b_init, (self.features,))
        return conv2d(x, kernel, self.padding, self.impl) + bias


class Dense(nn.Module):
    features: int
    init: str = "torch"

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        k_init, b_init = _initializers(self.init, fan_in)
        kernel = self.param("kernel", k_init, (fan_in, self.features))
        bias = self.param("bias", b_init, (self.features,))
        return x @ kernel + bias


class Norm(nn.Module):
    """Instance norm (= GroupNorm with one group per channel) or batch-statistics norm, affine.

    Batch norm always uses the statistics of the current batch (no running averages), so the
    parameters stay a plain pytree for unrolled / vmapped training.
    """

    kind: str
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        # Reducing one merged axis, not (H, W) separately: the same maths; alone, XLA:CPU's gradient of
        # the two-axis reduction was 2.7x slower (first order) and 1.5x (second order) at (10, 32, 32, 128),
        # though whole-network steps measured no difference beyond noise (BUILD_NOTES.md).
        flat = x.reshape(n, h * w, c) if self.kind == "instance" else x.reshape(1, n * h * w, c)
        mean = flat.mean(1, keepdims=True)
        var = ((flat - mean) ** 2).mean(1, keepdims=True)
        x = ((flat - mean) * jax.lax.rsqrt(var + self.eps)).reshape(n, h, w, c)
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return x * scale + bias


def _pool(x, kind):
    if kind == "none":
        return x
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    return x.mean((2, 4)) if kind == "avg" else x.max((2, 4))


class ConvNet(nn.Module):
    """ConvNet-D: D x [conv3x3 -> norm -> act -> pool], flatten, dense.

    Input (N, H, W, C) -> logits (N, num_classes); with return_features also the flattened
    penultimate features (N, F). A one-channel input gets padding 3 in the first conv (the study's
    MNIST-size handling: 28x28 behaves like 32x32).
    """

    cfg: NetConfig

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        cfg = self.cfg
        for d in range(cfg.depth):
            pad = 3 if (d == 0 and x.shape[-1] == 1) else 1
            x = Conv3x3(cfg.width * cfg.width_growth ** d, padding=pad, impl=cfg.conv_impl, init=cfg.init,
                        name=f"conv{d}")(x)
            if cfg.norm != "none":
                x = Norm(cfg.norm, name=f"norm{d}")(x)
            if cfg.act == "relu" or cfg.softplus_temp == 0:
                x = jax.nn.relu(x)
            else:
                x = jax.nn.softplus(cfg.softplus_temp * x) / cfg.softplus_temp
            x = _pool(x, cfg.pool)
        feats = x.reshape(x.shape[0], -1)
        logits = Dense(cfg.num_classes, init=cfg.init, name="head")(feats)
        return (logits, feats) if return_features else logits


class Net(NamedTuple):
    """Pure functions of one architecture.

    init(key, input_shape) -> params       input_shape = (H, W, C)
    apply(params, x) -> logits             x: (N, H, W, C)
    apply_with_features(params, x) -> (logits (N, K), features (N, F))
    """

    cfg: NetConfig
    init: Callable[[jax.Array, tuple], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    apply_with_features: Callable[[Params, jax.Array], tuple]


@functools.lru_cache(maxsize=64)
def make_net(cfg: NetConfig) -> Net:
    """The network's pure functions; cached per config so its jitted init compiles once per process."""
    module = ConvNet(cfg)

    # Jitted: run eagerly, flax's init dispatches (and compiles) each of its ~100 small ops one by one, and
    # under vmap that took 9-15 s per call on the 2-core CPU (BUILD_NOTES.md); compiled it is one program.
    @functools.partial(jax.jit, static_argnums=1)
    def _init(key, input_shape):
        return module.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]

    def init(key, input_shape):
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
            raise ConfigError(f"input_shape must be (H, W, C) with positive ints; got a {type(input_shape).__name__}"
                              + (f" {shape}" if shape is not None and len(shape) <= 4 else ""))
        return _init(key, tuple(int(s) for s in shape))

    def apply(params, x):
        return module.apply({"params": params}, x)

    def apply_with_features(params, x):
        return module.apply({"params": params}, x, return_features=True)

    return Net(cfg, init, apply, apply_with_features)


def forward_net(net: Net) -> Net:
    """The same network (same parameters) for forward passes that are never differentiated: "auto" resolves
    to the native convolution there even on CPU, because the patch path pays off only under gradients. On the
    2-core CPU the native forward was 1.6-2.1x faster for inference (`train.predict`) and it takes DANCE's
    real branch (640 images) off the patch path (BUILD_NOTES.md, issue 29)."""
    return make_net(net.cfg.replace(conv_impl="lax")) if net.cfg.conv_impl == "auto" else net


def num_params(params: Params) -> int:
    return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
