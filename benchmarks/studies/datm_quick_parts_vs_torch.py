"""Backs BUILD_NOTES.md "DATM at the quick shapes, piece by piece against torch" (issue 29 item 4).

Where DATM's quick-shape step (Fashion-MNIST 28 x 28 x 1, ConvNet-3 width 16, 100 images, 10 unrolled steps)
loses to the original on the CPU, measured piece by piece: the same ConvNet's loss forward, its parameter
gradient, and the gradient with a double backward (the meta-gradient's per-step work), jaxdistill's (jit) and
PyTorch eager's (the original's framework, a ConvNet written here with GroupNorm(C, C) = instance norm), plus
jaxdistill's whole forward unroll and whole outer step:

  python benchmarks/studies/datm_quick_parts_vs_torch.py jax [--norm none]
  <a python with torch>/bin/python benchmarks/studies/datm_quick_parts_vs_torch.py torch [--norm none]   # no jax

`--norm none` drops the instance norm on both sides (not the study's network: it isolates the norm's share).

Both modes use 2 threads; run them one after the other on a quiet machine. Median of 7 calls each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

H, C, N, WIDTH, STEPS = 28, 10, 100, 16, 10


def timed(fn, reps: int = 7) -> float:
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return 1e3 * statistics.median(out)


def run_jax(norm: str) -> None:
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from jaxdistill.methods import datm
    from jaxdistill.nn import NetConfig, make_net

    net = make_net(NetConfig(C, width=WIDTH, depth=3, norm=norm))
    theta0, unravel = ravel_pytree(net.init(jax.random.PRNGKey(0), (H, H, 1)))
    ts = theta0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta0.shape)
    af = lambda th, xb: net.apply(unravel(th), xb)  # noqa: E731
    x = jax.random.normal(jax.random.PRNGKey(2), (N, H, H, 1))
    y = 5.0 * jax.nn.one_hot(jnp.repeat(jnp.arange(C), N // C), C)
    idx = datm.batch_indices(jax.random.PRNGKey(3), N, N, STEPS)
    keys = jax.random.split(jax.random.PRNGKey(4), STEPS)
    loss = datm._step_loss(af, False)   # no DSA: the torch side has none

    def hvp_like(th, a):   # the meta-gradient's per-step work: grad of <g, a> w.r.t. theta and x
        d = lambda th, x: jnp.vdot(jax.grad(loss)(th, x, y, idx[0], keys[0]), a)  # noqa: E731
        return jax.grad(d, argnums=(0, 1))(th, x)

    parts = {
        "loss forward": (jax.jit(lambda th: loss(th, x, y, idx[0], keys[0])), (theta0,)),
        "parameter gradient": (jax.jit(lambda th: jax.grad(loss)(th, x, y, idx[0], keys[0])), (theta0,)),
        "gradient + double backward": (jax.jit(hvp_like), (theta0, ts - theta0)),
        "forward unroll (10 steps)": (jax.jit(lambda x, y: datm.unroll(af, theta0, x, y, jnp.float32(0.01), idx, keys,
                                                                      False, True, "jvp")), (x, y)),
        "whole step (jvp meta-gradient)": (jax.jit(lambda x, y: jax.grad(
            lambda x_, y_: datm.matching_loss(af, x_, y_, jnp.float32(0.01), theta0, ts, idx, keys, False, True, "jvp"),
            argnums=(0, 1))(x, y)), (x, y)),
    }
    for name, (f, a) in parts.items():
        print(f"jax   norm={norm:8s} {name:32s} {timed(lambda: jax.block_until_ready(f(*a))):8.1f} ms", flush=True)


def run_torch(norm: str) -> None:
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers, cin = [], 1
    for d in range(3):
        layers += [nn.Conv2d(cin, WIDTH, 3, padding=3 if d == 0 else 1)]
        layers += [nn.GroupNorm(WIDTH, WIDTH)] if norm == "instance" else []
        layers += [nn.ReLU(), nn.AvgPool2d(2)]
        cin = WIDTH
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(WIDTH * 16, C))
    params = list(net.parameters())
    x = torch.randn(N, 1, H, H, requires_grad=True)
    y = torch.softmax(5.0 * torch.eye(C).repeat_interleave(N // C, 0), 1)

    def loss():
        return -(y * torch.log_softmax(net(x), 1)).sum(1).mean()

    def hvp_like():
        g = torch.autograd.grad(loss(), params, create_graph=True)
        return torch.autograd.grad(sum((gi * 0.01).sum() for gi in g), [x] + params)

    def fwd():
        with torch.no_grad():
            loss()

    for name, f in (("loss forward", fwd), ("parameter gradient", lambda: torch.autograd.grad(loss(), params)),
                    ("gradient + double backward", hvp_like)):
        print(f"torch norm={norm:8s} {name:32s} {timed(f):8.1f} ms", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("side", choices=("jax", "torch"))
    ap.add_argument("--norm", default="instance", choices=("instance", "none"))
    a = ap.parse_args(argv)
    run_jax(a.norm) if a.side == "jax" else run_torch(a.norm)


if __name__ == "__main__":
    main()
