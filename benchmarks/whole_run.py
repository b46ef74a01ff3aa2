"""Whole-run throughput of each distiller: `distill()` end to end against its compiled step, same shapes, same run.

    python benchmarks/run.py --small --whole-run            # CPU shapes (16x16x3, width 16)
    python benchmarks/run.py --whole-run                     # the study's shapes (GPU)
    python benchmarks/whole_run.py --small --chunk 1         # one iteration per compiled call (per-iteration loop)

For each method, on synthetic data (random images, balanced labels), all in one process:
  1. a warm-up `distill` of N1 iterations: trains the pool / experts once (kept for the later runs), compiles;
  2. `distill` of N1 and of N2 iterations in fresh workdirs (checkpoints every `checkpoint_every`, metrics.jsonl,
     final save: the real run driver). whole-run ms/iter = (T(N2) - T(N1)) / (N2 - N1): the marginal cost of an
     iteration with the driver, host transfers and checkpoint I/O amortised, setup (pool/expert loading,
     RCIG's lr probes, preprocessing) cancelled;
  3. a third run of N2 iterations where every compiled chunk is timed to completion (block_until_ready):
     step ms/iter = the chunks' device time / N2, i.e. the compiled iterations alone.
overhead = whole-run / step - 1. Prints one line per method:
    whole-run <method>: <X> ms/iter (step <Y> ms/iter, overhead <Z>%)
With a checkout whose distillers have no chunked loop (jaxdistill.methods.loop absent), step 3 is skipped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = ("datm", "dance", "rcig")


def synthetic_data(num_classes: int, per_class: int, size: int, channels: int, seed: int = 0):
    from jaxdistill.data import NoisyData

    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    x = rng.uniform(0, 1, (n, size, size, channels)).astype(np.float32)
    y = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    return NoisyData(name="synthetic", x_train=x, y_noisy=y, y_true=y, x_test=x[:num_classes], y_test=y[:num_classes],
                     num_classes=num_classes, class_names=[str(c) for c in range(num_classes)])


def method_config(method: str, small: bool, ipc: int, width: int, checkpoint_every: int, chunk: int):
    """The paper config of CIFAR-10 at `ipc`, shrunk like benchmarks/run.py's builders for --small."""
    from jaxdistill.methods import get_config

    cfg = get_config(method, "cifar10", ipc, "paper")
    over = dict(ipc=ipc, width=width, checkpoint_every=checkpoint_every)
    if "chunk_iters" in {f.name for f in dataclasses.fields(cfg)}:
        over["chunk_iters"] = chunk
    n = 10 * ipc
    if method == "datm":
        over.update(threshold=1e9, batch_syn=min(cfg.batch_syn, n), num_experts=2)
        if small:
            over.update(syn_steps=4, batch_syn=n, expert_train_epochs=3, max_start_epoch=2,
                        current_max_start_epoch=1, min_start_epoch=0, expert_epochs=1)
        if over["batch_syn"] < n and n % over["batch_syn"]:
            over["batch_syn"] = n
    elif method == "dance":
        over.update(pretrain_epochs=1)
        if small:
            over.update(batch_real=8, batch_syn_max=16, num_premodel=2, pool_size=2)
    else:
        if small:
            over.update(pool_size=2, real_batch=32, n_inner=3, n_hinv=3, pool_max_steps=3, tune_max_tries=2)
    return dataclasses.replace(cfg, **over)


def _timed_chunks(module, sink: list):
    """Wrap `module.run_loop` so that every compiled chunk is timed to completion; returns the restore fn."""
    import jax

    real = module.run_loop

    def run_loop(name, run, *a, **kw):
        def timed(*args):
            t0 = time.perf_counter()
            out = jax.block_until_ready(run(*args))
            sink.append(time.perf_counter() - t0)
            return out

        return real(name, timed, *a, **kw)

    module.run_loop = run_loop
    return lambda: setattr(module, "run_loop", real)


def whole_run(method: str, small: bool = True, ipc: int = 1, n1: int = 50, n2: int = 550, checkpoint_every: int = 50,
              chunk: int = 0, workroot: str | None = None) -> dict:
    import importlib

    import jax

    from jaxdistill.methods import distill

    size, width, per_class = (16, 16, 40) if small else (32, 128, 500)
    data = synthetic_data(10, per_class, size, 3)
    key = jax.random.PRNGKey(0)
    root = workroot or tempfile.mkdtemp(prefix=f"whole_run_{method}_")
    cfg = method_config(method, small, ipc, width, checkpoint_every, chunk)
    if method == "datm":
        cfg = dataclasses.replace(cfg, expert_dir=os.path.join(root, "experts"))

    def run(n: int, name: str, timed: list | None = None) -> float:
        wd = os.path.join(root, name)
        if method == "dance" and os.path.isdir(os.path.join(root, "warm", "pool")) and name != "warm":
            shutil.copytree(os.path.join(root, "warm", "pool"), os.path.join(wd, "pool"))  # trained once
        restore = None
        if timed is not None:
            restore = _timed_chunks(importlib.import_module(f"jaxdistill.methods.{method}"), timed)
        try:
            t0 = time.perf_counter()
            distill(method, dataclasses.replace(cfg, iterations=n), data, key, workdir=wd, progress=False)
            return time.perf_counter() - t0
        finally:
            if restore is not None:
                restore()

    run(n1, "warm")
    t1, t2 = run(n1, "n1"), run(n2, "n2")
    whole = 1e3 * (t2 - t1) / (n2 - n1)
    row = {"method": method, "small": small, "ipc": ipc, "n1": n1, "n2": n2, "checkpoint_every": checkpoint_every,
           "chunk_iters": chunk, "t_n1_s": t1, "t_n2_s": t2, "whole_ms_per_iter": whole}
    try:
        importlib.import_module("jaxdistill.methods.loop")
        chunks: list = []
        run(n2, "n2_timed", chunks)
        row["step_ms_per_iter"] = 1e3 * sum(chunks) / n2
        row["overhead_pct"] = 100 * (whole / row["step_ms_per_iter"] - 1)
        row["chunks"] = len(chunks)
    except ModuleNotFoundError:
        pass
    if workroot is None:
        shutil.rmtree(root, ignore_errors=True)
    return row


def line(row: dict) -> str:
    s = f"whole-run {row['method']}: {row['whole_ms_per_iter']:.1f} ms/iter"
    if "step_ms_per_iter" in row:
        s += f" (step {row['step_ms_per_iter']:.1f} ms/iter, overhead {row['overhead_pct']:.1f}%)"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="CPU shapes (16x16x3, width 16)")
    ap.add_argument("--only", default=",".join(METHODS))
    ap.add_argument("--ipc", type=int, default=None, help="default 1 (--small) / 10")
    ap.add_argument("--n1", type=int, default=50)
    ap.add_argument("--n2", type=int, default=550, help="500 marginal iterations: 100 were within run-to-run noise")
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=0, help="chunk_iters (0 = automatic; 1 = per-iteration loop)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    rows = []
    for m in a.only.split(","):
        row = whole_run(m, a.small, a.ipc or (1 if a.small else 10), a.n1, a.n2, a.checkpoint_every, a.chunk)
        rows.append(row)
        print(line(row), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
