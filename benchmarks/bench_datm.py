"""Speed and memory of one DATM iteration (CIFAR-10 IPC 10 shapes by default), JAX vs PyTorch eager.

Default shapes: ConvNet-3 width 128, 32x32x3, 100 synthetic images, 80 unrolled steps, batch_syn 100.
Prints the median time per iteration after compilation and the peak memory (GPU: jax memory_stats
peak_bytes_in_use; CPU: process max RSS), for: JAX with DSA (the real step), JAX without DSA (same maths as
the torch reference), both with the default meta_grad="jvp"; JAX's autodiff through the unroll with and without
remat (meta_grad="autodiff"); then the torch reference and the JAX/torch ratios.

  python benchmarks/bench_datm.py            # GPU machine, CIFAR shapes
  python benchmarks/bench_datm.py --small    # CPU-sized shapes
Imports nothing TF-related (no jaxdistill.data / tfds on this path).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdistill.configs.datm import DATMConfig  # noqa: E402
from jaxdistill.methods import datm  # noqa: E402
from jaxdistill.nn import NetConfig, make_net  # noqa: E402


def peak_bytes() -> tuple[int, str]:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), f"{dev.platform} peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS"


def bench_jax(ipc=10, syn_steps=80, batch_syn=100, width=128, size=32, iters=5, use_dsa=True, remat=True,
              verbose=True, conv_impl="auto", meta_grad="jvp") -> dict:
    c = 10
    net = make_net(NetConfig(num_classes=c, width=width, depth=3, conv_impl=conv_impl))
    params = net.init(jax.random.PRNGKey(0), (size, size, 3))
    theta0, unravel = ravel_pytree(params)
    theta_star = theta0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta0.shape)
    apply_flat = lambda th, xb: net.apply(unravel(th), xb)
    cfg = DATMConfig(dataset="bench", ipc=ipc, syn_steps=syn_steps, batch_syn=batch_syn, dsa=use_dsa, remat=remat,
                     meta_grad=meta_grad, threshold=1e9, width=width, max_start_epoch=20, current_max_start_epoch=10)
    n = c * ipc
    x = jax.random.normal(jax.random.PRNGKey(2), (n, size, size, 3))
    y = jax.random.normal(jax.random.PRNGKey(3), (n, c))
    state = datm.init_syn_state(cfg, x, y, 0.01)
    step = datm.make_outer_step(apply_flat, cfg)
    t0 = time.perf_counter()
    state, loss, _, _ = step(state, theta0, theta_star, jax.random.PRNGKey(4))
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        state, loss, _, _ = step(state, theta0, theta_star, jax.random.PRNGKey(5 + i))
        jax.block_until_ready((state, loss))
        times.append(time.perf_counter() - t0)
    peak, kind = peak_bytes()
    impl = f"jax dsa={use_dsa} {meta_grad}" + (f" remat={remat}" if meta_grad == "autodiff" else "")
    res = {"impl": impl + ("" if conv_impl == "auto" else f" conv={conv_impl}"), "device": jax.devices()[0].device_kind,
           "median_s": statistics.median(times), "times_s": times, "compile_plus_first_s": compile_s,
           "peak_bytes": peak, "peak_kind": kind, "loss": float(loss),
           "shapes": dict(ipc=ipc, syn_steps=syn_steps, batch_syn=batch_syn, width=width, size=size,
                          params=int(theta0.size))}
    if verbose:
        print(f"{res['impl']:<34} {res['device']:>14}  median {res['median_s'] * 1e3:9.1f} ms/iter  "
              f"(compile+first {compile_s:.1f} s)  peak {peak / 2**30:6.2f} GiB ({kind}; cumulative)", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CPU-sized shapes (ipc 2, 10 steps, width 16, 16x16)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--variants", default="dsa,nodsa,autodiff,noremat",
                    help="comma list of dsa, nodsa (meta_grad jvp), autodiff, noremat (no DSA, meta_grad autodiff "
                         "with / without remat)")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--conv-impl", default="auto", help="auto | lax | patches (auto: patches on CPU)")
    for k in ("ipc", "syn_steps", "batch_syn", "width", "size"):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None, help=f"override the {k} shape")
    args = ap.parse_args(argv)
    shapes = dict(ipc=10, syn_steps=80, batch_syn=100, width=128, size=32)
    if args.small:
        shapes = dict(ipc=2, syn_steps=10, batch_syn=20, width=16, size=16)
    shapes.update({k: getattr(args, k) for k in shapes if getattr(args, k) is not None})
    if shapes["batch_syn"] > 10 * shapes["ipc"]:
        shapes["batch_syn"] = 10 * shapes["ipc"]  # the whole synthetic set, as DATM does at small IPC
    print(f"jax {jax.__version__} on {jax.devices()[0]}; shapes {shapes}", flush=True)
    results = []
    # The no-DSA run first: it is the one compared with torch, and peak memory is cumulative.
    order = {"nodsa": dict(use_dsa=False), "dsa": dict(use_dsa=True),
             "autodiff": dict(use_dsa=False, meta_grad="autodiff", remat=True),
             "noremat": dict(use_dsa=False, meta_grad="autodiff", remat=False)}
    for name in order:
        if name in args.variants.split(","):
            try:
                results.append(bench_jax(**shapes, iters=args.iters, conv_impl=args.conv_impl, **order[name]))
            except Exception as e:  # noqa: BLE001 - e.g. out of memory without remat: report and go on
                print(f"jax {name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
    if not args.no_torch:
        try:
            import torch_ref_datm

            ref = torch_ref_datm.run(small=False, iters=args.iters, **shapes)
            results.append(ref)
            for r in results[:-1]:
                if r["impl"].startswith("jax dsa=False"):
                    print(f"ratio {r['impl']} / torch eager = {r['median_s'] / ref['median_s']:.3f} "
                          f"(speed-up x{ref['median_s'] / r['median_s']:.2f})", flush=True)
        except ImportError:
            print("torch not installed: skipping the PyTorch reference", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
