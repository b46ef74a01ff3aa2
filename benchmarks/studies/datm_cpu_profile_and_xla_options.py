"""Backs BUILD_NOTES.md "DATM on CPU: where the step's time goes" and the jvp profile in "DATM's meta-gradient".

Where one DATM outer step spends its time on XLA:CPU, and what XLA's CPU options change (issue 18 item 6).

Shapes: CIFAR-10 IPC 1, ConvNet-3 width 128, 10 unrolled steps, batch 10, no DSA, the default meta_grad="jvp"
(the torch comparison's).

  python benchmarks/studies/datm_cpu_profile_and_xla_options.py profile
      # trace of 3 steps, summed per HLO op and op kind
  python benchmarks/studies/datm_cpu_profile_and_xla_options.py options [--reps 6]
      # the same program compiled with several XLA:CPU options in one process, timed interleaved

Op kinds in the profile: ynn_fusion = YNNPACK matmul / reduction fusions, dot = XLA's own matmuls, the rest
elementwise work, copies and transposes. The options mode compiles one lowering with per-compile debug options
(`Lowered.compile(options)`), so the variants share the process, the inputs and the machine's load.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

from jaxdistill.configs.datm import DATMConfig  # noqa: E402
from jaxdistill.methods import datm  # noqa: E402
from jaxdistill.nn import NetConfig, make_net  # noqa: E402

YNN_DOT_REDUCE = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"
OPTIONS = {
    "default": {},
    "ynn dot only": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "ynn dot+reduce": {"xla_cpu_experimental_ynn_fusion_type": YNN_DOT_REDUCE},
    "concurrency scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": True},
    "dot+reduce + scheduler": {"xla_cpu_experimental_ynn_fusion_type": YNN_DOT_REDUCE,
                               "xla_cpu_enable_concurrency_optimized_scheduler": True},
}


def setup(meta_grad: str = "jvp"):
    """(jitted outer step, fresh-state factory, theta0, theta_star) at the shapes above."""
    net = make_net(NetConfig(num_classes=10, width=128, depth=3))
    theta0, unravel = ravel_pytree(net.init(jax.random.PRNGKey(0), (32, 32, 3)))
    ts = theta0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta0.shape)
    cfg = DATMConfig(dataset="bench", ipc=1, syn_steps=10, batch_syn=10, dsa=False, remat=True, threshold=1e9,
                     width=128, max_start_epoch=20, current_max_start_epoch=10, meta_grad=meta_grad)
    x = jax.random.normal(jax.random.PRNGKey(2), (10, 32, 32, 3))
    y = jax.random.normal(jax.random.PRNGKey(3), (10, 10))
    step = datm.make_outer_step(lambda th, xb: net.apply(unravel(th), xb), cfg)
    fresh = lambda: datm.init_syn_state(cfg, jnp.array(x), jnp.array(y), 0.01)  # noqa: E731 (the step donates it)
    return step, fresh, theta0, ts


def profile() -> None:
    step, fresh, theta0, ts = setup()
    st, loss, _, _ = step(fresh(), theta0, ts, jax.random.PRNGKey(4))
    jax.block_until_ready(loss)
    d = os.path.join(tempfile.gettempdir(), "jaxdistill_datm_trace")
    shutil.rmtree(d, ignore_errors=True)
    with jax.profiler.trace(d, create_perfetto_trace=True):
        for i in range(3):
            st, loss, _, _ = step(st, theta0, ts, jax.random.PRNGKey(5 + i))
            jax.block_until_ready(loss)
    events = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
    per_op, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("Thunk", "$", "while")):
            per_op[e["name"]] += e.get("dur", 0)
            calls[e["name"]] += 1
    kinds = collections.Counter()
    for name, us in per_op.items():
        kinds[name.split(".")[0]] += us
    print(f"HLO ops, ms per step (sum {sum(per_op.values()) / 3e3:.0f}):")
    for name, us in per_op.most_common(20):
        print(f"  {us / 3e3:8.1f}  {calls[name] // 3:4d}x  {name}")
    print("by kind:", ", ".join(f"{k} {v / 3e3:.0f}" for k, v in kinds.most_common(12)))


def options(reps: int) -> None:
    step, fresh, theta0, ts = setup()
    lowered = step.lower(fresh(), theta0, ts, jax.random.PRNGKey(4))
    progs = {name: lowered.compile(opts) for name, opts in OPTIONS.items()}
    for name, prog in progs.items():
        print(f"{name:24s} loss {float(prog(fresh(), theta0, ts, jax.random.PRNGKey(4))[1]):.6f}")
    times = {name: [] for name in progs}
    for r in range(reps):
        order = list(progs.items())
        for name, prog in (order if r % 2 == 0 else order[::-1]):
            st = jax.block_until_ready(fresh())
            t = time.perf_counter()
            jax.block_until_ready(prog(st, theta0, ts, jax.random.PRNGKey(5 + r)))
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["default"])
    for name, v in times.items():
        print(f"{name:24s} median {1e3 * statistics.median(v):7.0f} ms  x{statistics.median(v) / base:.3f}  "
              f"{[round(1e3 * t) for t in v]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("profile", "options"))
    ap.add_argument("--reps", type=int, default=6)
    a = ap.parse_args(argv)
    profile() if a.mode == "profile" else options(a.reps)


if __name__ == "__main__":
    main()
