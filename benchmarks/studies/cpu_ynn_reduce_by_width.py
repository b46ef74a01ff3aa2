"""Backs BUILD_NOTES.md "XLA:CPU's YNNPACK reductions by network width" (issue 29 item 4, the quick-shape gap).

XLA:CPU hands matmuls (DOT) and reductions (REDUCE) to YNNPACK fusions by default. At the study's width 128 that
is the faster choice (session 8: dots only was x1.83 slower for DATM), but at narrow widths a profile of DANCE's
quick iteration showed one YNNPACK reduction fusion (the first block's instance norm + ReLU + pool over the real
branch, 640 x 32 x 32 x 16) taking a third of the iteration. This script compiles each program once per option
set in one process (`Lowered.compile(options)`), checks the outputs agree, and times them interleaved:

  python benchmarks/studies/cpu_ynn_reduce_by_width.py [--widths 16 32 64 128] [--reps 5] [--programs dance datm train]

Programs (Fashion-MNIST shapes, 28 x 28 x 1, 10 classes, random data and parameters):
  dance  one DANCE outer iteration (IPC 10, 64 real images per class, exact per-class steps)
  datm   one DATM outer step (IPC 10, batch 100, 10 unrolled steps, DSA, jvp meta-gradient)
  train  one evaluator epoch of 5 nets on 100 images (batch 256, the DSA protocol's augmentation)
Prints, per program and width, the median ms of each option set and its ratio to the default.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

from jaxdistill.nn import NetConfig, make_net  # noqa: E402

OPTIONS = {
    "default": {},
    "ynn dot only": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
}
C, H = 10, 28


def dance_program(width: int):
    from jaxdistill.methods import dance as D

    net = make_net(NetConfig(C, width=width, depth=3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(6000, H, H, 1)).astype(np.float32))
    table, counts = D.class_buckets_table(np.repeat(np.arange(C), 600), C)
    pools = [jax.vmap(lambda k: net.init(k, (H, H, 1)))(jax.random.split(jax.random.PRNGKey(s), 2)) for s in (1, 2)]
    st = D.Statics(num_classes=C, ipc=10, factor=1, n_real=64, n_syn=100, num_premodel=2, iter_calib=1,
                   batched=False)
    tx = optax.sgd(0.1, momentum=0.5)
    step = jax.jit(D.make_iteration(net, st, tx, jit=False))   # lowered without the library's own options
    syn = jnp.asarray(rng.uniform(size=(C * 10, H, H, 1)).astype(np.float32))
    args = (syn, tx.init(syn), jax.random.PRNGKey(0), *pools, x, jnp.asarray(table), jnp.asarray(counts),
            jnp.array([0.2861]), jnp.array([0.353]))
    return step.lower(*args), lambda: args, lambda out: out[0]


def datm_program(width: int):
    from jax.flatten_util import ravel_pytree

    from jaxdistill.configs.datm import DATMConfig
    from jaxdistill.methods import datm

    net = make_net(NetConfig(C, width=width, depth=3))
    theta0, unravel = ravel_pytree(net.init(jax.random.PRNGKey(0), (H, H, 1)))
    ts = theta0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta0.shape)
    cfg = DATMConfig(dataset="bench", ipc=10, syn_steps=10, batch_syn=100, dsa=True, remat=True, threshold=1e9,
                     width=width, max_start_epoch=20, current_max_start_epoch=10)
    step = datm.make_outer_step(lambda th, xb: net.apply(unravel(th), xb), cfg, jit=False)
    x = jax.random.normal(jax.random.PRNGKey(2), (100, H, H, 1))
    y = jax.nn.one_hot(jnp.repeat(jnp.arange(C), 10), C)
    fresh = lambda: (datm.init_syn_state(cfg, x, y, 0.01), theta0, ts, jax.random.PRNGKey(4))  # noqa: E731
    return jax.jit(step).lower(*fresh()), fresh, lambda out: out[1]


def train_program(width: int):
    from jaxdistill.train import TrainConfig, init_state, make_epoch_fn, make_optimizer

    net = make_net(NetConfig(C, width=width, depth=3))
    cfg = TrainConfig(epochs=10, batch_size=256, optimizer="sgd", lr=0.01, momentum=0.9, augment="dsa")
    x = jax.random.normal(jax.random.PRNGKey(2), (100, H, H, 1))
    t = jax.nn.one_hot(jnp.repeat(jnp.arange(C), 10), C)
    tx = make_optimizer(cfg, 10)
    run = make_epoch_fn(net, cfg, 100, tx)
    fresh = lambda: (init_state(net, cfg, jax.random.PRNGKey(3), 5, (H, H, 1), tx), x, t)  # noqa: E731
    return run.lower(*fresh(), 1), fresh, lambda out: out[1]   # one epoch (the epoch count is static)


PROGRAMS = {"dance": dance_program, "datm": datm_program, "train": train_program}


def measure(name: str, width: int, reps: int) -> dict:
    lowered, fresh, pick = PROGRAMS[name](width)
    progs = {o: lowered.compile(opts) for o, opts in OPTIONS.items()}
    outs = {o: np.asarray(pick(p(*fresh()))) for o, p in progs.items()}
    ref = outs["default"]
    for o, v in outs.items():
        np.testing.assert_allclose(v, ref, rtol=2e-2, atol=2e-3, err_msg=f"{name} w{width} {o}")
    times = {o: [] for o in progs}
    for r in range(reps):
        order = list(progs.items())
        for o, p in (order if r % 2 == 0 else order[::-1]):
            args = jax.block_until_ready(fresh())
            t = time.perf_counter()
            jax.block_until_ready(p(*args))
            times[o].append(time.perf_counter() - t)
    return {o: statistics.median(v) for o, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--programs", nargs="+", default=list(PROGRAMS), choices=list(PROGRAMS))
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    import platform
    import subprocess

    cpu = subprocess.run(["sh", "-c", "lscpu | grep -m1 'Model name' | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip() or platform.processor()
    print(f"# {cpu}, {os.cpu_count()} cores, jax {jax.__version__}")
    for name in a.programs:
        for w in a.widths:
            t = measure(name, w, a.reps)
            base = t["default"]
            cells = "  ".join(f"{o} {1e3 * v:8.1f} ms x{v / base:.2f}" for o, v in t.items())
            print(f"{name:6s} width {w:4d}  {cells}", flush=True)


if __name__ == "__main__":
    main()
