"""DATM on Fashion-MNIST, sized for a 2-core CPU (~10 min when the machine is otherwise idle).

  python experiments/fmnist_datm.py --noise symmetric:0.4 [--out runs/fmnist_datm] [--ipc 10]

Budget: a 10k stratified subset of the 60k training images (for the experts and the init pool),
4 experts x 8 epochs (quick recipe: SGD 0.01, DSA, GSAM), 150 DATM iterations of 10 unrolled steps,
ConvNet-3 width 32; evaluation: DATM protocol, quick preset (100 epochs; 300 when experiments/results/
fmnist_datm_cpu.json was made, commit d1f00a3), 5 nets, on the full 10k test set.
Next to it the full-noisy-data baseline (same net, same ZCA, 5 nets, 10 epochs on the same subset).
Prints one JSON line with the figures and wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    import jax
    import numpy as np

    from jaxdistill.configs.datm import get_config
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.evaluate import evaluate
    from jaxdistill.methods.datm import distill, prepare
    from jaxdistill.train import TrainConfig, accuracy, train_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", default="symmetric:0.4")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--out", default="runs/fmnist_datm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = make_noisy_data(load_dataset("fashion_mnist"), args.noise, seed=args.seed, subset=args.subset)
    cfg = get_config("fashion_mnist", args.ipc, "quick").replace(
        iterations=args.iterations, syn_steps=10, num_experts=4, expert_train_epochs=8,
        expert_dir=os.path.join(args.out, f"experts_{args.noise.replace(':', '_')}"))
    work = os.path.join(args.out, f"datm_{args.noise.replace(':', '_')}_ipc{args.ipc}")
    ds = distill(cfg, data, jax.random.PRNGKey(args.seed), workdir=work, progress=True)
    t1 = time.perf_counter()
    ev = evaluate(ds, data, "datm", jax.random.PRNGKey(args.seed + 1), k=5, preset="quick")
    t2 = time.perf_counter()
    pre, x, net = prepare(cfg, data)
    tc = TrainConfig(epochs=10, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                     milestones=(0.5,), gamma=0.1, augment="dsa")
    res = train_models(net, x, data.y_noisy, tc, jax.random.PRNGKey(args.seed + 2), num_models=5)
    base = accuracy(net, res.params, np.asarray(pre.apply(data.x_test)), data.y_test)
    t3 = time.perf_counter()
    print(json.dumps({
        "dataset": "fashion_mnist", "noise": args.noise, "ipc": args.ipc, "subset": args.subset,
        "datm_acc_mean": ev.mean, "datm_acc_std": ev.std, "datm_accs": ev.accs,
        "baseline_acc_mean": float(base.mean()), "baseline_acc_std": float(base.std()),
        "distill_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1), "baseline_s": round(t3 - t2, 1),
        "final_matching_loss": ds.meta["final_loss"], "learned_lr": ds.lr,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
