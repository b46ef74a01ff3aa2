"""Time and memory of one RCIG outer iteration at CIFAR-10 IPC 10 shapes (random data).

    python benchmarks/bench_rcig.py            # CIFAR-10 IPC10: width 128, 32x32x3, flip (200-row coreset),
                                               # 30-model pool, real batch 1024, 20 inner + 20 inverse-HVP steps
    python benchmarks/bench_rcig.py --small    # CPU-sized: width 16, pool 4, real batch 128, 10 + 10 steps

Prints the compile time, the median per-iteration time after compile, and peak memory
(device memory_stats() on GPU, process max RSS on CPU). Imports nothing TF-related: jaxdistill.data
is not imported; neural-tangents (if installed, e.g. `pip install --no-deps neural-tangents frozendict`)
is imported through jaxdistill.kernels to check that TensorFlow stays out.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--ipc", type=int, default=10)
    args = ap.parse_args(argv)

    from jaxdistill import kernels
    from jaxdistill.configs.rcig import get_config
    from jaxdistill.methods import rcig

    nt_status = "not installed"
    try:
        nt_status = "imported " + kernels.nt().__version__
    except kernels.NeuralTangentsUnavailable as e:
        nt_status = f"unavailable ({str(e)[:120]})"
    c, hw, ch = 10, 32, 3
    cfg = get_config("cifar10", args.ipc, "paper")
    if args.small:
        cfg = cfg.replace(width=16, pool_size=4, real_batch=128, n_inner=10, n_hinv=10)
    prob = rcig.make_problem(cfg, c, (hw, hw, ch))
    rs = np.random.RandomState(0)
    n_train = max(cfg.real_batch * 2, 2048)
    xtr = jnp.asarray(rs.randn(n_train, hw, hw, ch).astype(np.float32))
    ytr = jnp.asarray(np.eye(c, dtype=np.float32)[rs.randint(0, c, n_train)])
    y0 = np.eye(c, dtype=np.float32)[np.repeat(np.arange(c), cfg.ipc)] - 1.0 / c
    state = prob.init_state(np.asarray(xtr[: c * cfg.ipc]), y0, jax.random.PRNGKey(0))
    state = state._replace(inner_lr=jnp.asarray(1e-4, jnp.float32), hvp_lr=jnp.asarray(1e-4, jnp.float32))
    key = jax.random.PRNGKey(1)

    t0 = time.perf_counter()
    state, m = rcig._jit_step(prob, state, xtr, ytr, key)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        state, m = rcig._jit_step(prob, state, xtr, ytr, key)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    peak = (stats or {}).get("peak_bytes_in_use")
    out = {
        "setting": "small" if args.small else f"cifar10_ipc{cfg.ipc}", "device": str(dev), "jax": jax.__version__,
        "width": cfg.width, "coreset_rows": c * cfg.ipc * (2 if cfg.use_flip else 1), "pool": cfg.pool_size,
        "real_batch": cfg.real_batch, "n_inner": cfg.n_inner, "n_hinv": cfg.n_hinv,
        "compile_plus_first_s": round(compile_s, 3), "iter_median_ms": round(1000 * float(np.median(times)), 2),
        "iter_times_ms": [round(1000 * t, 2) for t in times], "loss": float(m["loss"]), "finite": bool(m["finite"]),
        "peak_device_bytes": peak, "peak_device_gib": None if peak is None else round(peak / 2 ** 30, 3),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "neural_tangents": nt_status, "tensorflow_imported": "tensorflow" in sys.modules,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
