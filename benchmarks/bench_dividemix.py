"""DivideMix's MixMatch epoch at the cpu preset's shapes (Fashion-MNIST 4500 x 28 x 28, ConvNet width 32, batch
128, 35 steps): seconds per epoch of one net when it runs all the steps (masking the inactive ones, as before
2026-12-06) against only the labelled split's len // batch active steps, interleaved in one process.

    python benchmarks/bench_dividemix.py --labelled 0.6 --reps 3
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdistill.augment import crop_flip  # noqa: E402
from jaxdistill.baselines import dividemix as dm  # noqa: E402
from jaxdistill.nn import NetConfig, make_net  # noqa: E402
from jaxdistill.train import make_optimizer  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4500)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--labelled", type=float, default=0.6, help="labelled fraction of the split (0-1)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.rand(a.n, 28, 28, 1), jnp.float32)
    y1h = jax.nn.one_hot(jnp.asarray(rs.randint(0, 10, a.n)), 10)
    cfg = dm.DivideMixConfig(width=a.width)
    net = make_net(NetConfig(10, width=a.width, depth=3))
    opt = lambda lr: make_optimizer(cfg.train.replace(schedule="constant"), 1, lr=lr)
    _, _, mix_epoch = dm.epoch_fns(net, x, y1h, cfg, opt, lambda k, xb: crop_flip(k, xb, 4), a.batch)
    steps = a.n // a.batch
    k_act = max(1, int(a.labelled * a.n) // a.batch)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params, other = net.init(keys[0], (28, 28, 1)), net.init(keys[1], (28, 28, 1))
    state = opt(0.01).init(params)
    il = jnp.asarray(rs.randint(0, a.n, (steps, a.batch)), jnp.int32)
    iu = jnp.asarray(rs.randint(0, a.n, (steps, a.batch)), jnp.int32)
    wl = jnp.asarray(rs.rand(steps, a.batch), jnp.float32)
    active = jnp.asarray([1.0] * k_act + [0.0] * (steps - k_act))
    f = jax.jit(mix_epoch)
    args = (params, state, other, keys[2], jnp.float32(0.01), jnp.float32(10.0), jnp.float32(25.0), il, wl, iu, active)
    times = {"all steps (masked)": [], "active steps only": []}
    for rep in range(a.reps + 1):
        for name, count in (("all steps (masked)", steps), ("active steps only", k_act)):
            t = time.perf_counter()
            jax.block_until_ready(f(*args, jnp.int32(count)))
            if rep:  # rep 0 compiles
                times[name].append(time.perf_counter() - t)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep -m1 'Model name' | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip() or platform.processor()
    print(f"# {cpu}, {os.cpu_count()} cores, jax {jax.__version__}, {jax.devices()[0].device_kind}")
    print(f"{steps} steps, {k_act} active (labelled fraction {a.labelled})")
    for name, ts in times.items():
        print(f"  {name:20s} {np.median(ts):7.2f} s per net-epoch (median of {len(ts)})")
    full, act = (np.median(v) for v in times.values())
    print(f"  ratio {full / act:.2f}x")


if __name__ == "__main__":
    main()
