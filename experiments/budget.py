"""Accuracy against budget: where does each distiller beat random real images on a 2-core CPU?

For one data set / noise / IPC, each *point* is a distiller config (the `cpu` preset with some fields
overridden, e.g. iterations or width) distilled and evaluated under the common protocol of a preset (5 nets),
next to the controls evaluated once with the same protocol, nets and keys. Results are appended atomically,
point by point, to a JSON file (re-running skips finished points), so a stopped run loses at most one point.

    python experiments/budget.py run --method dance --point iterations=60 --point iterations=500 ...
    python experiments/budget.py aggregate    # table + plot from the JSON
    python experiments/budget.py reeval --width 32 --steps 1000   # the controls and saved sets, longer evaluation

Defaults: clean Fashion-MNIST, IPC 10, the cpu preset's training subset and evaluation budget, seed 0.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "budget_curves.json")


def parse_point(s: str) -> dict:
    """'iterations=500,width=32' -> {'iterations': 500, 'width': 32} (values as Python literals)."""
    out = {}
    for part in filter(None, s.split(",")):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return out


def point_key(method: str, point: dict) -> str:
    return method + ":" + ",".join(f"{k}={point[k]}" for k in sorted(point))


def _load(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"points": {}, "controls": {}}


def _setting_data(setting: dict):
    """The training data a setting names (class-stratified subset, no validation split)."""
    from jaxdistill.pipeline import load_noisy_data

    return load_noisy_data(setting["dataset"], setting["noise"], setting["seed"], setting["subset"], 0.0)


def _evaluator(data, setting: dict, width: int | None = None, steps: int | None = None):
    """ev(set) -> EvalResult dict: the common protocol at the setting's evaluation preset, its k nets and the key
    every set gets under that protocol (as in denoise); width / steps override the preset's net and schedule."""
    from jaxdistill.evaluate import evaluate
    from jaxdistill.pipeline import protocol_for, stage_key

    key = stage_key(setting["seed"], "eval/standard")

    def ev(ds):
        p = protocol_for("standard", ds, data.num_classes, setting["eval_preset"], width=width,
                         train_overrides=None if steps is None else {"steps": steps})
        return evaluate(ds, data, p, key, k=setting["k"]).to_dict()

    return ev


def run(a) -> int:
    from jaxdistill.checkpoint import atomic_write_json
    from jaxdistill.configs.presets import training_subset
    from jaxdistill.controls import random_controls
    from jaxdistill.methods import distill, get_config
    from jaxdistill.pipeline import stage_key

    subset = a.subset if a.subset is not None else training_subset(a.dataset, a.preset)
    doc = _load(a.out)
    setting = {"dataset": a.dataset, "noise": a.noise, "ipc": a.ipc, "subset": subset, "eval_preset": a.preset,
               "seed": a.seed, "k": a.k, "protocol": "standard"}
    if doc.get("setting") not in (None, setting):
        print(f"{a.out} holds another setting {doc['setting']}; use another --out", file=sys.stderr)
        return 2
    doc["setting"] = setting
    data = _setting_data(setting)
    ev = _evaluator(data, setting)

    for name, ds in random_controls(data, a.ipc, a.seed).items():
        if name not in doc["controls"]:
            doc["controls"][name] = ev(ds)
            atomic_write_json(a.out, doc)
        print(f"control {name}: {100 * doc['controls'][name]['acc_mean']:.2f}", flush=True)
    for spec in a.point:
        point = parse_point(spec)
        pk = point_key(a.method, point)
        if pk in doc["points"]:
            print(f"{pk}: done ({100 * doc['points'][pk]['eval']['acc_mean']:.2f})", flush=True)
            continue
        cfg = dataclasses.replace(get_config(a.method, a.dataset, a.ipc, "cpu"), **point)
        workdir = os.path.join(a.work, pk.replace(":", "_").replace(",", "_").replace("=", "-"))
        t0 = time.perf_counter()
        ds = distill(a.method, cfg, data, stage_key(a.seed, f"distill/{a.method}"), workdir=workdir, progress=False)
        t_distill = time.perf_counter() - t0
        row = {"method": a.method, "point": point, "config": dataclasses.asdict(cfg), "distill_s": t_distill,
               "eval": ev(ds)}
        if ds.initial is not None:
            row["selected"] = ev(ds.initial)
        doc["points"][pk] = row
        atomic_write_json(a.out, doc)
        print(f"{pk}: {100 * row['eval']['acc_mean']:.2f} +- {100 * row['eval']['acc_std']:.2f} "
              f"(selected {100 * row.get('selected', {}).get('acc_mean', float('nan')):.2f}; distill {t_distill:.0f} s)",
              flush=True)
    return 0


TARGET_POINTS = 5.0


def clean_summary(doc: dict) -> dict | None:
    """experiments/results/cpu_preset_clean.json: per control and per method (its best measured point on the curve,
    with every point beside it) the common-protocol accuracy `acc_mean`, and the margin over random_clean."""
    ctl = doc.get("controls", {})
    if "random_clean" not in ctl or doc.get("setting", {}).get("noise") != "clean":
        return None
    rc = 100 * ctl["random_clean"]["acc_mean"]
    entries = {f"control/{k}": {"acc_mean": v["acc_mean"], "acc_std": v["acc_std"]} for k, v in ctl.items()}
    for pk, row in doc["points"].items():
        m = row["method"]
        acc = row["eval"]["acc_mean"]
        e = entries.setdefault(m, {"acc_mean": -1.0, "points": {}})
        e["points"][pk] = acc
        if acc > e["acc_mean"]:
            e.update(acc_mean=acc, acc_std=row["eval"]["acc_std"], point=pk, distill_s=row["distill_s"],
                     vs_random_clean=100 * acc - rc, meets_target=bool(100 * acc - rc >= TARGET_POINTS))
            if "selected" in row:
                entries[f"{m}/selected"] = {"acc_mean": row["selected"]["acc_mean"], "point": pk}
    return {"setting": doc.get("setting"), "protocol": "standard (common), 5 nets",
            "target": f"each distiller >= random_clean + {TARGET_POINTS:g} points",
            "command": "python experiments/budget.py run --method M --point FIELD=V ...; python experiments/budget.py "
                       "aggregate", "entries": entries}


def aggregate(a) -> int:
    """Markdown table and a plot (accuracy against the varied field, one line per method)."""
    doc = _load(a.out)
    ctl = {k: 100 * v["acc_mean"] for k, v in doc["controls"].items()}
    lines = [f"Setting: {json.dumps(doc.get('setting'))}", "",
             "Controls: " + ", ".join(f"{k} {v:.2f}" for k, v in ctl.items()), "",
             "| point | accuracy % | vs random_clean | vs selected | distill time |", "|---|---|---|---|---|"]
    series: dict = {}
    for pk, row in doc["points"].items():
        acc = 100 * row["eval"]["acc_mean"]
        sel = 100 * row["selected"]["acc_mean"] if "selected" in row else None
        rc = ctl.get("random_clean")
        lines.append(f"| {pk} | {acc:.2f} +- {100 * row['eval']['acc_std']:.2f} | "
                     f"{'-' if rc is None else f'{acc - rc:+.2f}'} | {'-' if sel is None else f'{acc - sel:+.2f}'} | "
                     f"{row['distill_s']:.0f} s |")
        if len(row["point"]) == 1:
            (field, val), = row["point"].items()
            series.setdefault(f"{row['method']} ({field})", []).append((val, acc))
    for tag, rows in doc.get("reeval", {}).items():
        rc = rows.get("random_clean", {}).get("acc_mean")
        lines += ["", f"Re-evaluated under the common protocol with {tag} (net width / training steps; "
                      "`budget.py reeval`), same nets and keys:", "",
                  "| set | accuracy % | vs random_clean at the same evaluation |", "|---|---|---|"]
        for name, r in rows.items():
            margin = "-" if rc is None or name.startswith("random_") else f"{100 * (r['acc_mean'] - rc):+.2f}"
            lines.append(f"| {name} | {100 * r['acc_mean']:.2f} +- {100 * r['acc_std']:.2f} | {margin} |")
    text = "\n".join(lines) + "\n"
    summary = clean_summary(doc)
    if summary is not None:
        from jaxdistill.checkpoint import atomic_write_json

        atomic_write_json(os.path.join(os.path.dirname(os.path.abspath(a.out)), "cpu_preset_clean.json"), summary)
        text += "\nPer method, best point (target: random_clean + 5 points):\n\n" + "\n".join(
            f"- {m}: {100 * e['acc_mean']:.2f} at {e['point']} ({e['vs_random_clean']:+.2f} vs random_clean; "
            f"{'meets' if e['meets_target'] else 'does not meet'} the target)"
            for m, e in summary["entries"].items() if "/" not in m) + "\n"
    md = os.path.splitext(a.out)[0] + ".md"
    with open(md, "w") as f:
        f.write(text)
    print(text)
    if series:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, pts in sorted(series.items()):
            x, y = zip(*sorted(pts))
            ax.plot(x, y, "-o", label=name)
        for name, v in ctl.items():
            ax.axhline(v, ls="--", color="gray" if name == "random_noisy" else "k", lw=1, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("budget (the varied field)")
        ax.set_ylabel("test accuracy % (common protocol)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.savefig(os.path.splitext(a.out)[0] + ".png", dpi=110, bbox_inches="tight")
    return 0


def reeval(a) -> int:
    """Does a longer / wider evaluation widen the gap? The controls and every finished point's saved set
    (`<work>/<point>/distilled.npz`) under the common protocol with the net width and step count changed, same
    nets and keys; rows go to the JSON under `reeval/w<W>s<S>` (finished rows are skipped)."""
    import glob

    from jaxdistill.checkpoint import atomic_write_json
    from jaxdistill.controls import random_controls
    from jaxdistill.methods.base import DistilledSet

    doc = _load(a.out)
    st = doc.get("setting")
    if st is None:
        print(f"{a.out} has no setting yet; run `budget.py run` first", file=sys.stderr)
        return 2
    data = _setting_data(st)
    ev = _evaluator(data, st, width=a.width, steps=a.steps)
    sets = dict(random_controls(data, st["ipc"], st["seed"]))
    for path in sorted(glob.glob(os.path.join(a.work, "*", "distilled.npz"))):
        sets[os.path.basename(os.path.dirname(path))] = DistilledSet.load(path)
    tag = f"w{a.width}s{a.steps}"
    rows = doc.setdefault("reeval", {}).setdefault(tag, {})
    for name, ds in sets.items():
        if name not in rows:
            rows[name] = ev(ds)
            atomic_write_json(a.out, doc)
        print(f"{tag} {name}: {100 * rows[name]['acc_mean']:.2f} +- {100 * rows[name]['acc_std']:.2f}", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--method", required=True, choices=["datm", "dance", "rcig"])
    r.add_argument("--point", action="append", default=[], help="field=value[,field=value] over the cpu preset")
    r.add_argument("--dataset", default="fashion_mnist")
    r.add_argument("--noise", default="clean")
    r.add_argument("--ipc", type=int, default=10)
    r.add_argument("--subset", type=int, default=None)
    r.add_argument("--preset", default="cpu", help="evaluation budget preset")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--k", type=int, default=5)
    r.add_argument("--work", default="runs/budget")
    r.add_argument("--out", default=DEFAULT_OUT)
    g = sub.add_parser("aggregate")
    g.add_argument("--out", default=DEFAULT_OUT)
    e = sub.add_parser("reeval", help="the controls and the saved sets under a longer / wider common protocol")
    e.add_argument("--width", type=int, default=32)
    e.add_argument("--steps", type=int, default=1000)
    e.add_argument("--work", default="runs/budget")
    e.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    return {"run": run, "aggregate": aggregate, "reeval": reeval}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
