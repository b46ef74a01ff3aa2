"""The study's finding 4 on Fashion-MNIST at the cpu preset (issue 30, item 5): are clean but hard samples
compressed away by distillation?

Per noise: the distilled set of run_lnl.py (DANCE, IPC 10, the cpu subset with its noisy validation split; loaded
from --sets where a run made it, else made and saved there for the other scripts), K nets trained on it under the
common protocol, against K full-data nets (the cpu baseline's recipe, trained on the *true* labels so that a test
image's difficulty does not depend on the noise). Difficulty = the full-data nets' normalised margin on the true
label, in quintiles (bin 0 the hardest); a test image is *lost* when the full-data nets get it and the distilled-set
nets do not (`jaxdistill.hardsamples`). The finding holds when the lost rate falls from the hardest to the easiest
quintile. Each noise is written atomically to --out as it finishes, with its plot.

    python experiments/beyond/run_hardsamples.py --noise clean symmetric:0.4
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from jaxdistill.checkpoint import atomic_write_text, read_json, update_json  # noqa: E402
from jaxdistill.errors import ConfigError  # noqa: E402


def run_noise(noise: str, a) -> dict:
    """One noise: the hard-sample study's tables (JSON-ready) and its plot."""
    from jaxdistill.baseline import get_baseline_config
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.hardsamples import plot_hard_samples, run_hard_sample_study
    from jaxdistill.pipeline import stage_key
    from run_lnl import _distilled

    ds = load_dataset(a.dataset)
    data = make_noisy_data(ds, noise, seed=a.seed, subset=a.subset, val_fraction=a.val_fraction)
    tag = f"{noise.replace(':', '_')}_seed{a.seed}"
    t0 = time.perf_counter()
    distilled = _distilled(data, a.seed, a, a.sets, tag)
    t_set = time.perf_counter() - t0
    full = get_baseline_config(ds.name, a.preset)
    full = dataclasses.replace(full, memorise=None)  # the recipe's schedule; true labels do not memorise noise
    hs = run_hard_sample_study(distilled, data, stage_key(a.seed, "hardsamples"), k=a.k, preset=a.preset,
                               full_cfg=full, bins=a.bins)
    fig = os.path.join(a.fig_dir, f"hardsamples_{a.dataset}_{a.preset}_{tag}.png")
    plot_hard_samples(hs, fig, title=f"{a.dataset} {noise}, {a.distiller} ipc {a.ipc} ({a.preset})")
    return {k: hs[k] for k in ("per_bin", "per_class", "overall", "finding_holds", "spearman_bin_vs_lost_rate",
                               "class_names")} | {
        "noise": noise, "seed": a.seed, "k": a.k, "dataset": a.dataset, "preset": a.preset, "distiller": a.distiller,
        "ipc": a.ipc, "figure": os.path.relpath(fig, ROOT),
        "distilled_acc_mean": hs["distilled_meta"].get("test_acc_mean") if isinstance(hs["distilled_meta"], dict)
        else None, "seconds": time.perf_counter() - t0, "set_seconds": t_set,
        "command": f"python experiments/beyond/run_hardsamples.py --noise {noise} --seed {a.seed}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(store: dict) -> str:
    first = next(iter(store.get("noises", {}).values()), {})
    lines = [f"# Finding 4 on {first.get('dataset', '?')} ({first.get('preset', '?')} preset): are clean but hard test "
             f"images compressed away?", "",
             f"Full-data nets (the preset baseline's recipe on the true labels) against nets trained on the "
             f"{str(first.get('distiller', '?')).upper()} set (IPC {first.get('ipc', '?')}, common protocol), K nets "
             f"each, averaged softmax. Difficulty: the full-data nets' margin on the "
             "true label, quintiles (bin 0 = hardest). Lost = full-data right, distilled-set wrong; lost rate = lost / "
             "full-data right. Made by `python experiments/beyond/run_hardsamples.py`.", ""]
    for noise, r in store.get("noises", {}).items():
        lines += [f"## {noise} (seed {r['seed']}, K={r['k']}): finding {'holds' if r['finding_holds'] else 'does not hold'}"
                  f" (Spearman bin vs lost rate {r['spearman_bin_vs_lost_rate']:+.2f}; overall lost rate "
                  f"{r['overall']['lost_rate']:.3f})", "",
                  "| difficulty bin | margin | full-data acc | distilled-set acc | lost rate |", "|---|---|---|---|---|"]
        for e in r["per_bin"]:
            lines.append(f"| {e['bin']} | {e['margin_lo']:.2f}-{e['margin_hi']:.2f} | {100 * e['full_acc']:.1f} | "
                         f"{100 * e['distilled_acc']:.1f} | {e['lost_rate']:.3f} |")
        lines += ["", "| class | full-data acc | distilled-set acc | lost rate |", "|---|---|---|---|"]
        for e in r["per_class"]:
            lines.append(f"| {r['class_names'][e['class']]} | {100 * e['full_acc']:.1f} | "
                         f"{100 * e['distilled_acc']:.1f} | {e['lost_rate']:.3f} |")
        lines += ["", f"![{noise}]({os.path.basename(r['figure'])})", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--distiller", default="dance")
    p.add_argument("--noise", nargs="+", default=["clean", "symmetric:0.4"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--sets", default=os.path.join(HERE, "lnl_sets"))
    p.add_argument("--out", default=os.path.join(HERE, "hardsamples_fmnist_cpu.json"))
    p.add_argument("--fig-dir", default=HERE)
    a = p.parse_args(argv)
    try:
        for noise in a.noise:
            if noise in (read_json(a.out) or {}).get("noises", {}):
                print(f"{noise}: finished, skipped", flush=True)
                continue
            print(f"{noise}: running", flush=True)
            r = run_noise(noise, a)
            update_json(a.out, lambda st, r=r: {"noises": {**(st or {}).get("noises", {}), noise: r}})
            print(f"{noise}: finding 4 {'holds' if r['finding_holds'] else 'does not hold'} "
                  f"({r['seconds']:.0f} s)", flush=True)
        atomic_write_text(os.path.splitext(a.out)[0] + ".md", table(read_json(a.out) or {}) + "\n")
    except ConfigError as e:
        print(f"run_hardsamples: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
