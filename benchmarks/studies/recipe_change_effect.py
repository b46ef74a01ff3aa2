"""Backs BUILD_NOTES.md "Training recipes pinned against the originals" (the before / after evaluation figures).

The `datm` and `dance` protocols changed to the originals' exact schedules (DATM: Epoch + 1 epochs, x0.1 from
epoch Epoch // 2 + 2 with the momentum buffer restarted; DANCE: x0.2 from epochs 2E//3 and 5E//6). Grid cells
evaluated before that change used the previous recipe (Epoch epochs, x0.1 at half the steps; DANCE's milestones
at 2/3 and 5/6 of the steps). This evaluates stored distilled sets under both recipes with the same key and nets,
so the size of the change is measured, not guessed.

  python benchmarks/studies/recipe_change_effect.py [--stages experiments/results/stages/fmnist_cpu/fashion_mnist]
      [--cells symmetric_0.2,clean] [--preset cpu] [--k 5] [--out /tmp/recipe_change_effect.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

import jax  # noqa: E402

from jaxdistill.data.registry import load_dataset  # noqa: E402
from jaxdistill.evaluate import evaluate, get_protocol  # noqa: E402
from jaxdistill.methods.base import DistilledSet  # noqa: E402


def previous_recipe(p):
    """The protocol as it was before the change (tests/test_recipes.py shows the difference step by step)."""
    t = p.train
    if p.name == "datm":
        t = t.replace(epochs=t.epochs - 1, milestones_in_epochs=False, milestones=(0.5,), reset_momentum=False)
    elif p.name == "dance":
        t = t.replace(milestones_in_epochs=False)
    return dataclasses.replace(p, train=t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default="experiments/results/stages/fmnist_cpu/fashion_mnist")
    ap.add_argument("--cells", default="symmetric_0.2,clean")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--key", type=int, default=7)
    ap.add_argument("--out", default="/tmp/recipe_change_effect.json")
    a = ap.parse_args()
    data = load_dataset("fashion_mnist")
    rows = []
    for cell in a.cells.split(","):
        for method in ("datm", "dance"):
            path = os.path.join(a.stages, cell, "ipc10", "seed0", method, "distilled.npz")
            s = DistilledSet.load(path)
            n = int(s.images.shape[0])
            lr = s.lr if method == "datm" else None
            new = get_protocol(method, num_images=n, num_classes=10, image_size=28, preset=a.preset, lr=lr,
                               channels=1)
            row = {"cell": cell, "method": method, "set": path, "preset": a.preset, "k": a.k, "key": a.key}
            for tag, p in (("previous", previous_recipe(new)), ("original", new)):
                r = evaluate(s, data, p, jax.random.PRNGKey(a.key), k=a.k, preset=a.preset)
                row[tag] = {"mean": float(r.mean), "std": float(r.std), "accs": [float(v) for v in r.accs]}
                print(f"{cell} {method} {tag}: {100 * r.mean:.2f} +- {100 * r.std:.2f}", flush=True)
            rows.append(row)
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rows, f, indent=1)
            os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
