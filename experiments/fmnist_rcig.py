"""RCIG on Fashion-MNIST (or digits) under label noise, next to the full-noisy-data baseline.

Fashion-MNIST, paper-sized run (GPU; about 10000 iterations):
    python experiments/fmnist_rcig.py --dataset fashion_mnist --ipc 10 --preset paper \
        --noise clean,symmetric:0.4,symmetric:0.6 --out results/fmnist_rcig.json
2-core CPU budget (~10 min per noise setting: a 5000-image subset, quick preset):
    python experiments/fmnist_rcig.py --dataset fashion_mnist --ipc 10 --preset quick --subset 5000 \
        --noise symmetric:0.4 --out results/fmnist_rcig_quick.json
The digits figures of the report:
    python experiments/fmnist_rcig.py --dataset digits --ipc 10 --preset quick \
        --noise clean,symmetric:0.4,symmetric:0.6 --baseline --out results/digits_rcig.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--preset", default="quick", choices=["paper", "quick"])
    ap.add_argument("--noise", default="clean,symmetric:0.4,symmetric:0.6")
    ap.add_argument("--subset", type=int, default=None, help="class-stratified training subset size")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--k", type=int, default=5, help="evaluation nets")
    ap.add_argument("--baseline", action="store_true", help="also train on the full noisy data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from jaxdistill.baseline import get_baseline_config, run_baseline
    from jaxdistill.configs.rcig import get_config
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.evaluate import evaluate
    from jaxdistill.methods.rcig import distill

    ds = load_dataset(args.dataset)
    results = []
    for spec in args.noise.split(","):
        data = make_noisy_data(ds, spec, seed=0, subset=args.subset)
        cfg = get_config(args.dataset, args.ipc, args.preset)
        if args.iterations:
            cfg = cfg.replace(iterations=args.iterations)
        t0 = time.perf_counter()
        out = distill(cfg, data, jax.random.PRNGKey(args.seed), progress=sys.stderr.isatty())
        t_distill = time.perf_counter() - t0
        ev = evaluate(out, data, "rcig", jax.random.PRNGKey(args.seed + 1), k=args.k, preset=args.preset)
        row = {"dataset": args.dataset, "noise": spec, "ipc": args.ipc, "preset": args.preset,
               "noise_rate": data.noise_rate, "rcig_acc_mean": ev.mean, "rcig_acc_std": ev.std, "rcig_accs": ev.accs,
               "distill_s": t_distill, "eval_s": ev.seconds, "iterations": out.meta["iterations"],
               "inner_lr": out.meta["inner_lr"], "hvp_lr": out.meta["hvp_lr"],
               "skipped": out.meta["skipped_updates"], "final_loss": out.meta["final_loss"]}
        if args.baseline:
            b = run_baseline(data, get_baseline_config(args.dataset, args.preset), jax.random.PRNGKey(args.seed + 2),
                             clean=False)
            row["baseline_noisy_mean"] = b["baseline_noisy"]["acc_mean"]
            row["baseline"] = b["baseline_noisy"]
        print(json.dumps(row, default=str), flush=True)
        results.append(row)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
