"""Where a distilled set's learned soft labels put their mass, per noise cell of a grid: for each class, the mean
softmax(target) on the class itself and on the class the asymmetric map flips it to (so one can see whether
the set absorbed the flip). Reads `<out>/<dataset>/<noise>/ipc<K>/seed<S>/<method>/distilled.npz`; no training.

  python experiments/label_mass.py [--out experiments/runs/fmnist_cpu] [--method datm] [--json FILE]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxdistill.noise import asymmetric_map  # noqa: E402


def label_mass(targets: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) matrix: row c = mean softmax(target) over the set's images labelled c. targets (N, C), labels (N,)."""
    e = np.exp(targets - targets.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return np.stack([p[labels == c].mean(axis=0) for c in range(num_classes)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/runs/fmnist_cpu")
    ap.add_argument("--method", default="datm")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    rows = []
    for path in sorted(glob.glob(os.path.join(args.out, "*", "*", "ipc*", "seed*", args.method, "distilled.npz"))):
        parts = path.split(os.sep)
        dataset = parts[-6]
        d = np.load(path)
        if "targets" not in d.files:
            continue
        m = label_mass(d["targets"], d["labels"], d["targets"].shape[1])
        flip = asymmetric_map(dataset)
        rows.append({"cell": "/".join(parts[-6:-2]), "own": np.diag(m).round(3).tolist(),
                     "to_flip_target": {int(a): round(float(m[a, b]), 3) for a, b in flip.items()}})
        print(f"{rows[-1]['cell']}: mass on the own class, mean {np.diag(m).mean():.2f}; on the flip target "
              + ", ".join(f"{a}->{b} {m[a, b]:.2f}" for a, b in flip.items()))
    if not rows:
        print(f"no {args.method} sets with soft labels under {args.out}")
        return 1
    if args.json:
        from jaxdistill.checkpoint import atomic_write_json

        atomic_write_json(args.json, {"out": args.out, "method": args.method, "cells": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
