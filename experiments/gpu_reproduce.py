"""One-slot GPU reproduction: DANCE on Fashion-MNIST IPC 10 at the paper preset.

Stage 1: clean labels, against DANCE's published 86.3 (DANCE Table 1), with the controls.
Stage 2: symmetric 0.4, with the paper-preset baseline (final and noisy-validation-selected) and the controls.

Each stage is one `jaxdistill denoise` run directory under STATE; a run killed by `timeout` (SIGTERM
checkpoints the distillation) continues where it stopped when this script is started again on the same
STATE. `scripts/gpu_reproduce.sh` packs STATE into a few parts under $OUT after every slot and unpacks them
at the start of the next one, so a second device slot continues the first.

    python experiments/gpu_reproduce.py --state DIR [--stage clean|symmetric_0.4|all] [--tiny]

--tiny: digits, IPC 1, every part shrunk to seconds (the CPU test of this script).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

PUBLISHED = {"dance": 0.863}  # DANCE Table 1, Fashion-MNIST IPC 10 (paper.md)
STAGES = {"clean": "clean", "symmetric_0.4": "symmetric:0.4"}


def stage_config(noise: str, tiny: bool):
    from jaxdistill.pipeline import TINY_OVERRIDES, DenoiseConfig

    if tiny:
        return DenoiseConfig(dataset="digits", noise=noise, methods=("dance",), ipc=1, preset="quick", k=2,
                             subset=600, overrides={k: TINY_OVERRIDES[k] for k in ("baseline", "eval", "dance")},
                             protocols=("standard", "own"))
    return DenoiseConfig(dataset="fashion_mnist", noise=noise, methods=("dance",), ipc=10, preset="paper", k=5,
                         protocols=("standard", "own"))


def summary(doc: dict) -> dict:
    """The figures a person wants from one stage, in points."""
    res = doc["results"]
    out = {"noise": doc["noise"].get("spec"), "realized": doc["noise"].get("realized")}
    for key, row in res.items():
        if "acc_mean" in row:
            out[key] = {"acc": round(100 * row["acc_mean"], 2), "std": round(100 * row["acc_std"], 2)}
            if row.get("best_acc_mean") is not None:
                out[key]["best"] = round(100 * row["best_acc_mean"], 2)
    if "dance/dance" in res:
        out["published_dance"] = 100 * PUBLISHED["dance"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", required=True, help="directory holding one run directory per stage")
    ap.add_argument("--stage", default="all", choices=["all", *STAGES])
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args(argv)
    from jaxdistill.checkpoint import atomic_write_json
    from jaxdistill.pipeline import run_denoise

    os.makedirs(a.state, exist_ok=True)
    done = {}
    for name, noise in STAGES.items():
        if a.stage not in ("all", name):
            continue
        print(f"== stage {name}", flush=True)
        doc = run_denoise(stage_config(noise, a.tiny), os.path.join(a.state, name), progress=not a.tiny)
        done[name] = summary(doc)
        print(json.dumps(done[name]), flush=True)
        atomic_write_json(os.path.join(a.state, "summary.json"), done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
