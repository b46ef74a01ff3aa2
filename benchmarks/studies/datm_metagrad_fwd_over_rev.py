"""Backs BUILD_NOTES.md "DATM at width 128 against torch, re-measured" (its forward-over-reverse A/B).

A/B of a rejected idea (#18 item 6): DATM's hand-written reverse pass with each step's vector-Jacobian
products taken forward-over-reverse (jvp of grad_{theta,x,y} L_i in the direction (a, 0, 0), which gives
H_theta,theta a, H_x,theta a, H_y,theta a and, as its primal, g_i for the lr adjoint <g_i, a>) instead of the
library's reverse-over-forward (grad of jvp(L_i; a), `methods.datm._unroll_jvp`).

The gradient of DATM's matching loss through `--steps` unrolled student steps (CIFAR-10 shapes, ConvNet-3,
no DSA) is built both ways in one process, checked equal, and timed interleaved.

  python benchmarks/studies/datm_metagrad_fwd_over_rev.py [--width 128] [--ipc 1] [--steps 10] [--reps 6]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

from jaxdistill.methods import datm  # noqa: E402
from jaxdistill.nn import NetConfig, make_net  # noqa: E402


def unroll_fwd_over_rev(step_loss):
    """Same contract as `datm._unroll_jvp(step_loss)`; only the per-step products differ."""

    @jax.custom_vjp
    def run(theta0, x, y, lr, idx, keys):
        return fwd(theta0, x, y, lr, idx, keys)[0]

    def fwd(theta0, x, y, lr, idx, keys):
        def body(theta, inp):
            return theta - lr * jax.grad(step_loss)(theta, x, y, *inp), theta

        theta_n, thetas = jax.lax.scan(body, theta0, (idx, keys))
        return theta_n, (thetas, x, y, lr, idx, keys)

    def bwd(res, a_n):
        thetas, x, y, lr, idx, keys = res
        full_grad = jax.grad(step_loss, argnums=(0, 1, 2))

        def body(carry, inp):
            a, gx, gy, glr = carry
            theta, b, k = inp
            (g, _, _), (h_th, h_x, h_y) = jax.jvp(lambda th: full_grad(th, x, y, b, k), (theta,), (a,))
            return (a - lr * h_th, gx - lr * h_x, gy - lr * h_y, glr - jnp.vdot(g, a)), None

        init = (a_n, jnp.zeros_like(x), jnp.zeros_like(y), jnp.zeros_like(lr))
        (a0, gx, gy, glr), _ = jax.lax.scan(body, init, (thetas, idx, keys), reverse=True)
        return a0, gx, gy, glr, None, None

    run.defvjp(fwd, bwd)
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=6)
    args = ap.parse_args(argv)
    c, size = 10, 32
    net = make_net(NetConfig(num_classes=c, width=args.width, depth=3))
    theta0, unravel = ravel_pytree(net.init(jax.random.PRNGKey(0), (size, size, 3)))
    theta_star = theta0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta0.shape)
    n = c * args.ipc
    x = jax.random.normal(jax.random.PRNGKey(2), (n, size, size, 3))
    y = jax.random.normal(jax.random.PRNGKey(3), (n, c))
    idx = jnp.tile(jnp.arange(n), (args.steps, 1))
    keys = jax.random.split(jax.random.PRNGKey(5), args.steps)
    step_loss = datm._step_loss(lambda th, xb: net.apply(unravel(th), xb), False)

    def grad_fn(unroll):
        def loss(x, y, lr):
            tn = unroll(theta0, x, y, lr, idx, keys)
            return jnp.sum((tn - theta_star) ** 2) / jnp.sum((theta0 - theta_star) ** 2)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

    fns = {"rev-over-fwd (library)": grad_fn(datm._unroll_jvp(step_loss)),
           "fwd-over-rev": grad_fn(unroll_fwd_over_rev(step_loss))}
    args_ = (x, y, jnp.float32(0.01))
    (la, ga), (lb, gb) = (jax.block_until_ready(f(*args_)) for f in fns.values())
    rel = [float(jnp.linalg.norm(p - q) / jnp.maximum(jnp.linalg.norm(p), 1e-30)) for p, q in zip(ga, gb)]
    print(f"loss {float(la):.7f} vs {float(lb):.7f}; relative gradient differences (x, y, lr): "
          + ", ".join(f"{r:.1e}" for r in rel))
    times = {k: [] for k in fns}
    for r in range(args.reps):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            jax.block_until_ready(fns[k](*args_))
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:24s} median {v:8.1f} ms  ({', '.join(f'{t * 1e3:.0f}' for t in times[k])})")
    a, b = med.values()
    print(f"fwd-over-rev / rev-over-fwd = {b / a:.3f}")


if __name__ == "__main__":
    main()
