"""Backs BUILD_NOTES.md "DATM on CPU, a custom VJP for the patches convolution" and "DATM on CPU, a hybrid convolution".

A/B of a rejected idea (#18 item 6): the CPU patches convolution with a hand-written VJP, so that its
transpose (dx) is itself a patches matmul (the conv of g with the flipped kernel) instead of autodiff's
9 slices / pads / adds, and the second-order path stays matmul-only; and C, a hybrid whose forward and dx are
native `lax.conv` in canonical form and only dk is a patches matmul (also rejected: 5.5x slower on XLA:CPU).

One DATM outer step at CIFAR-10 IPC 1 (ConvNet-3 width 128, 10 unrolled steps, batch 10, no DSA, remat,
meta_grad="autodiff") is built in one process, A with `nn.conv2d` as it is, B with the custom VJP, C with the
hybrid, and they are timed interleaved (ABAB.., BABA..) so a loaded machine's drift hits both alike.

  python benchmarks/studies/datm_cpu_conv_formulations.py [--reps 10] [--variants BC]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

import jaxdistill.nn as N  # noqa: E402
from datm_cpu_profile_and_xla_options import setup  # noqa: E402 (the shared step at these shapes; this folder is on sys.path)


def _patches(x, kh, kw, p):
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    return jnp.concatenate([xp[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_vjp(x, k, p):
    kh, kw, cin, cout = k.shape
    return _patches(x, kh, kw, p) @ k.reshape(kh * kw * cin, cout)


def _fwd(x, k, p):
    kh, kw, cin, cout = k.shape
    pt = _patches(x, kh, kw, p)
    return pt @ k.reshape(kh * kw * cin, cout), (pt, k)


def _bwd(p, res, g):
    pt, k = res
    kh, kw, _, _ = k.shape
    dk = jnp.einsum("nhwi,nhwo->io", pt, g).reshape(k.shape)
    dx = conv_vjp(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2), kh - 1 - p)  # transposed conv, as a conv
    return dx, dk


conv_vjp.defvjp(_fwd, _bwd)


def _lax_conv(x, k, p):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_hybrid(x, k, p):
    """Native convolution forward and for dx (canonical form: XLA:CPU's fast path), a patches matmul for dk,
    so that no kernel-gradient convolution (the slow path) appears at any derivative order."""
    return _lax_conv(x, k, p)


def _hfwd(x, k, p):
    return _lax_conv(x, k, p), (x, k)


def _hbwd(p, res, g):
    x, k = res
    kh, kw, _, _ = k.shape
    dk = jnp.einsum("nhwi,nhwo->io", _patches(x, kh, kw, p), g).reshape(k.shape)
    dx = conv_hybrid(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2), kh - 1 - p)
    return dx, dk


conv_hybrid.defvjp(_hfwd, _hbwd)
_orig = N.conv2d


def _patched_with(conv):
    def patched(x, kernel, padding, impl="auto"):
        return conv(x, kernel, padding) if N.resolve_conv_impl(impl) == "patches" else _orig(x, kernel, padding, impl)
    return patched


def _build():
    # reverse-over-reverse, as when this was measured (a custom_vjp has no forward-mode rule for the "jvp" path)
    step, fresh, theta0, ts = setup(meta_grad="autodiff")
    jax.block_until_ready(step(fresh(), theta0, ts, jax.random.PRNGKey(4)))   # compile (traces conv2d now)
    return step, fresh, theta0, ts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--variants", default="BC", help="which of B (custom patches VJP), C (hybrid) to time against A")
    a = ap.parse_args(argv)
    # the custom VJP's second-order gradient equals autodiff's on a small problem
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))

    def so(conv):  # d/dx of |d/dk sum(sin(conv(x, k)))|^2: reverse over reverse, as DATM's meta-gradient
        inner = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k, 1))), 1)
        return jax.grad(lambda x: jnp.sum(inner(x, k) ** 2))(x)

    ref = so(lambda x, k, p: _orig(x, k, p, "patches"))
    for name, conv in (("custom", conv_vjp), ("hybrid", conv_hybrid)):
        print(f"second-order gradient, max |{name} - autodiff| / max |autodiff| = "
              f"{float(jnp.max(jnp.abs(so(conv) - ref)) / jnp.max(jnp.abs(ref))):.1e}")
    progs = {"A autodiff": _build()}
    for name, conv in (("B custom VJP", conv_vjp), ("C hybrid", conv_hybrid)):
        if name[0] in a.variants:
            N.conv2d = _patched_with(conv)
            progs[name] = _build()
            N.conv2d = _orig
    times = {name: [] for name in progs}
    for r in range(a.reps):
        order = list(progs.items())
        for name, (step, fresh, th, ts) in (order if r % 2 == 0 else order[::-1]):
            st = fresh()
            t = time.perf_counter()
            jax.block_until_ready(step(st, th, ts, jax.random.PRNGKey(5 + r)))
            times[name].append(time.perf_counter() - t)
    for name, v in times.items():
        print(f"{name}: median {1e3 * statistics.median(v):.0f} ms  {[round(1e3 * t) for t in v]}")
    for name in list(times)[1:]:
        print(f"{name[0]} / A = {statistics.median(times[name]) / statistics.median(times['A autodiff']):.3f}")


if __name__ == "__main__":
    main()
