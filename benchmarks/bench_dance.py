"""Time one DANCE iteration at CIFAR-10 shapes (random data): exact per-class scan and batched variant,
plus the PyTorch-eager reference when torch is installed (ratio printed from the same run).

  python benchmarks/bench_dance.py                 # CIFAR-10 IPC 10 and 50, ConvNet-3 width 128, factor 2
  python benchmarks/bench_dance.py --small         # CPU-sized: width 32, 16 real/class, IPC 10
  python benchmarks/bench_dance.py --no-torch

Peak memory: `jax.devices()[0].memory_stats()['peak_bytes_in_use']` on GPU (process-wide peak since start,
including compile-time autotuning scratch, so the IPC 50 figure includes what IPC 10 left), process max RSS
on CPU; `xla_temp_bytes` is the compiled iteration's own scratch from `memory_analysis()`.
Imports nothing TF-related.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jaxdistill.methods import dance as D  # noqa: E402
from jaxdistill.nn import NetConfig, make_net  # noqa: E402


def peak_memory() -> dict:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats:
        return {"peak_gpu_bytes": int(stats.get("peak_bytes_in_use", 0))}
    return {"max_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


def bench_jax(ipc: int, factor: int, width: int, batch_real: int, batched: bool, iters: int, size: int = 32,
              channels: int = 3, num_classes: int = 10, pool: int = 5, n_real_per_class: int = 500,
              class_chunk: int = 0) -> dict:
    ncfg = NetConfig(num_classes, width=width, depth=3)
    net = make_net(ncfg)
    rng = np.random.default_rng(0)
    n = num_classes * n_real_per_class
    x = jnp.asarray(rng.uniform(size=(n, size, size, channels)).astype(np.float32))
    y = np.repeat(np.arange(num_classes), n_real_per_class)
    table, counts = D.class_buckets_table(y, num_classes)
    inits = lambda s: jax.vmap(lambda k: net.init(k, (size, size, channels)))(  # noqa: E731
        jax.random.split(jax.random.PRNGKey(s), pool))
    pool0, poolT = inits(1), inits(2)
    st = D.Statics(num_classes=num_classes, ipc=ipc, factor=factor, n_real=batch_real,
                   n_syn=min(200, ipc * factor * factor), num_premodel=pool, iter_calib=1, batched=batched,
                   class_chunk=class_chunk)
    tx = optax.sgd(0.01 * ipc, momentum=0.5)
    step = D.make_iteration(net, st, tx)
    syn = jnp.asarray(rng.uniform(size=(num_classes * ipc, size, size, channels)).astype(np.float32))
    opt = tx.init(syn)
    args = (pool0, poolT, x, jnp.asarray(table), jnp.asarray(counts), jnp.full((channels,), 0.45),
            jnp.full((channels,), 0.25))
    t = time.perf_counter()
    syn, opt, m = step(syn, opt, jax.random.PRNGKey(0), *args)
    jax.block_until_ready(syn)
    compile_s = time.perf_counter() - t
    # The compiled program's own scratch (activations, residuals), without the allocator's history.
    try:
        ma = step.lower(syn, opt, jax.random.PRNGKey(0), *args).compile().memory_analysis()
        xla_temp = int(ma.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        xla_temp = None
    times = []
    for i in range(iters):
        t = time.perf_counter()
        syn, opt, m = step(syn, opt, jax.random.PRNGKey(i + 1), *args)
        jax.block_until_ready(syn)
        times.append(time.perf_counter() - t)
    return {"variant": "batched" if batched else "scan", "ipc": ipc, "factor": factor, "width": width,
            "batch_real": batch_real, "class_chunk": class_chunk, "median_s": float(np.median(times)),
            "compile_s": compile_s,
            "iters": iters, "xla_temp_bytes": xla_temp, **peak_memory()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--ipcs", type=int, nargs="+", default=None)
    p.add_argument("--class-chunk", type=int, default=0,
                   help="DANCE Statics.class_chunk (0: all classes at once; 1: one class at a time, less memory)")
    a = p.parse_args(argv)
    if a.small:
        width, batch_real, ipcs, iters, nreal = 32, 16, a.ipcs or [10], a.iters or 3, 32
    else:
        width, batch_real, ipcs, iters, nreal = 128, 128, a.ipcs or [10, 50], a.iters or 10, 500
    factor = 2
    print(f"# device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    torch_ref = None
    if not a.no_torch:
        try:
            import torch_ref_dance as torch_ref  # noqa: F401
        except ImportError as e:
            print(f"# torch reference skipped: {e}")
    for ipc in ipcs:
        rows = [bench_jax(ipc, factor, width, batch_real, b, iters, n_real_per_class=nreal,
                          class_chunk=a.class_chunk) for b in (False, True)]
        for r in rows:
            print(json.dumps(r), flush=True)
        if torch_ref is not None:
            t_med, peak = torch_ref.bench(ipc=ipc, factor=factor, width=width, batch_real=batch_real,
                                          iters=max(3, iters // 2))
            out = {"variant": "torch_eager_per_class_loop", "ipc": ipc, "median_s": t_med, "peak_cuda_bytes": peak,
                   "ratio_torch_over_jax_scan": t_med / rows[0]["median_s"],
                   "ratio_torch_over_jax_batched": t_med / rows[1]["median_s"]}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
