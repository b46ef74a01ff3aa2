"""RCIG step time and XLA FLOPs with neural-tangents vs the hand-written jax.jvp path, in one process.

    PYTHONPATH=$PWD python benchmarks/bench_rcig_nt.py [--shapes small|study] [--reps N]

Both backends are compiled first, then timed interleaved (A B A B ...) so that load from other processes
hits both alike; prints the median ms per step of each variant, its ratio to all-jax, and the ratio of XLA's FLOP
counts (load-independent). 'study' is the GPU run
(CIFAR-10 shapes, ConvNet-3 width 128, IPC 10, real batch 1024).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import jax
import numpy as np

from jaxdistill.configs.rcig import get_config
from jaxdistill.methods import rcig

# name: (linearize_backend, kernel_backend); "default" is what RCIGConfig ships.
VARIANTS = {"all_jax": ("jax", "jax"), "default": ("jax", "nt"), "all_nt": ("nt", "nt")}
SHAPES = {
    # name: (hw, channels, classes, cfg overrides)
    "small": [("digits8x8_w16_d2_ipc10", 8, 1, 10, dict(width=16, depth=2, ipc=10, real_batch=256)),
              ("fmnist28_w16_d3_ipc1", 28, 1, 10, dict(width=16, depth=3, ipc=1, real_batch=128))],
    "study": [("cifar32_w128_d3_ipc10", 32, 3, 10, dict(width=128, depth=3, ipc=10, real_batch=1024))],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="small", choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    rows = []
    for name, hw, ch, c, kw in SHAPES[args.shapes]:
        base = dataclasses.replace(get_config("cifar10", kw["ipc"], "quick"), tune_lr=False, pool_size=4,
                                   preprocess="none", **kw)
        rs = np.random.RandomState(0)
        n = max(base.real_batch, c * base.ipc)
        xtr = jax.numpy.asarray(rs.rand(n, hw, hw, ch), np.float32)
        ytr = jax.numpy.asarray(np.eye(c, dtype=np.float32)[rs.randint(0, c, n)])
        y0 = np.eye(c, dtype=np.float32)[np.repeat(np.arange(c), base.ipc)] - 1.0 / c
        steps, states, flops = {}, {}, {}
        for b, (lin, ker) in VARIANTS.items():
            cfg = dataclasses.replace(base, linearize_backend=lin, kernel_backend=ker)
            prob = rcig.make_problem(cfg, c, (hw, hw, ch), n_real=n)
            states[b] = prob.init_state(xtr[: c * base.ipc], y0, jax.random.PRNGKey(0))
            steps[b] = jax.jit(prob.step).lower(states[b], xtr, ytr, jax.random.PRNGKey(1)).compile()
            cost = steps[b].cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            flops[b] = float(cost.get("flops", float("nan")))  # XLA's count: independent of machine load
            jax.block_until_ready(steps[b](states[b], xtr, ytr, jax.random.PRNGKey(1)))
        times = {b: [] for b in VARIANTS}
        for _ in range(args.reps):
            for b in VARIANTS:
                t = time.perf_counter()
                jax.block_until_ready(steps[b](states[b], xtr, ytr, jax.random.PRNGKey(1)))
                times[b].append(time.perf_counter() - t)
        med = {b: 1000 * statistics.median(v) for b, v in times.items()}
        row = {"shape": name, "reps": args.reps, "n_inner": base.n_inner, "n_hinv": base.n_hinv,
               "device": jax.devices()[0].platform}
        for b in VARIANTS:
            row[b] = {"ms": round(med[b], 1), "time_ratio": round(med[b] / med["all_jax"], 3),
                      "flops_ratio": round(flops[b] / flops["all_jax"], 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
