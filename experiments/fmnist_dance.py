"""DANCE figures: distil, evaluate with the DANCE protocol (k nets), and the full-noisy-data baseline.

CPU runs (2 cores), as reported in the build notes:
  # digits, quick preset, IPC 10: clean / symmetric 0.4 / 0.6, and the batched-classes variant
  python experiments/fmnist_dance.py --dataset digits --ipc 10 --noise clean symmetric:0.4 symmetric:0.6
  python experiments/fmnist_dance.py --dataset digits --ipc 10 --noise clean --batched
  # Fashion-MNIST, quick preset (about 10 minutes on 2 cores; small pool, 100 iterations, 2 eval nets)
  python experiments/fmnist_dance.py --dataset fashion_mnist --ipc 10 --noise clean --k 2 --eval-epochs 100
GPU (one H200, a 10-minute slot), Fashion-MNIST IPC 10 with a reduced pool and iteration budget:
  python experiments/fmnist_dance.py --dataset fashion_mnist --ipc 10 --noise clean --eval-preset paper \
      --eval-epochs 300 --set width=128 pool_size=5 num_premodel=5 pretrain_epochs=8 iterations=1000
Paper setting (GPU): --preset paper (20 x 60-epoch pool, 10000 iterations, 1500-epoch evaluation).
Prints one JSON line per run and appends it to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--noise", nargs="+", default=["clean"])
    p.add_argument("--preset", default="quick", choices=["quick", "paper"])
    p.add_argument("--batched", action="store_true", help="config.batched_classes=True")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--k", type=int, default=5, help="evaluation nets")
    p.add_argument("--eval-epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. width=128 pool_size=5 pretrain_epochs=10")
    p.add_argument("--eval-preset", default=None, choices=["quick", "paper"], help="default: --preset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="experiments/results_dance.jsonl")
    a = p.parse_args(argv)

    from jaxdistill.baseline import get_baseline_config, run_baseline
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.evaluate import get_protocol, evaluate
    from jaxdistill.methods.dance import distill, get_config

    ds = load_dataset(a.dataset, data_dir=a.data_dir)
    overrides = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        overrides[k] = json.loads(v) if v[:1] in "0123456789-[{tfn" else v
    eval_preset = a.eval_preset or a.preset
    for noise in a.noise:
        data = make_noisy_data(ds, noise, seed=0)
        cfg = get_config(a.dataset, a.ipc, a.preset).replace(batched_classes=a.batched, **overrides)
        if a.iterations is not None:
            cfg = cfg.replace(iterations=a.iterations)
        key = jax.random.PRNGKey(a.seed)
        t0 = time.perf_counter()
        wd = os.path.join(a.workdir, f"{a.dataset}_{noise.replace(':', '')}_ipc{a.ipc}") if a.workdir else None
        dset = distill(cfg, data, key, workdir=wd, progress=False)
        t_distill = time.perf_counter() - t0
        proto = get_protocol("dance", num_images=dset.num_images, num_classes=data.num_classes,
                             image_size=dset.images.shape[1], preset=eval_preset)
        if a.eval_epochs:
            import dataclasses

            proto = dataclasses.replace(proto, train=proto.train.replace(epochs=a.eval_epochs),
                                        eval_every=max(a.eval_epochs // 6, 1))
        t1 = time.perf_counter()
        res = evaluate(dset, data, proto, jax.random.PRNGKey(a.seed + 1), k=a.k, preset=eval_preset)
        row = {"dataset": a.dataset, "ipc": a.ipc, "noise": noise, "preset": a.preset, "batched": a.batched,
               "iterations": cfg.iterations, "factor": cfg.factor, "overrides": overrides,
               "eval_width": proto.net.width, "eval_preset": eval_preset, "realized_noise": data.noise_rate,
               "dance_acc_mean": res.mean, "dance_acc_std": res.std, "dance_accs": res.accs,
               "dance_best_mean": res.best_mean, "eval_epochs": proto.train.epochs, "k": a.k,
               "distill_s": round(t_distill, 1), "eval_s": round(time.perf_counter() - t1, 1),
               "skipped": dset.meta["skipped_updates"], "machine": "2-core CPU" if jax.default_backend() == "cpu"
               else jax.devices()[0].device_kind}
        if not a.no_baseline:
            t2 = time.perf_counter()
            b = run_baseline(data, get_baseline_config(a.dataset, a.preset), jax.random.PRNGKey(a.seed + 2),
                             clean=False)
            row["baseline_noisy_acc_mean"] = b["baseline_noisy"]["acc_mean"]
            row["baseline_noisy_accs"] = b["baseline_noisy"]["accs"]
            row["baseline_s"] = round(time.perf_counter() - t2, 1)
        print(json.dumps(row), flush=True)
        if a.out:
            os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
