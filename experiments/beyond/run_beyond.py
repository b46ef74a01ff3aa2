"""Beyond the study, over noise seeds: detection (distilled-set nets vs cleanlab on K-fold CV), repair
rules, the noisy-data baseline, Co-teaching and JoCoR, side by side; mean +- std over seeds.

Run (resumable: (noise, seed) entries already in --out are skipped; the JSON is rewritten atomically
after every entry), then write the tables (.md) and their plot (.png):

    python experiments/beyond/run_beyond.py run --dataset fashion_mnist --subset 3000 \
        --noise symmetric:0.4 asymmetric:0.4 instance:0.4 --seeds 0 1 2 --distiller dance \
        --out experiments/beyond/results_fmnist.json
    python experiments/beyond/run_beyond.py aggregate --out experiments/beyond/results_fmnist.json \
        --table experiments/beyond/results_fmnist.md

Each seed changes the noise draw (make_noisy_data seed) AND every model key (one key per stage, folded
from the seed, the same for every noise so noises are compared on paired keys). One net per entry and
seed (--k 1) by default, so the +- is the spread over seeds: noise draw and initialisation together.
Full-data nets (baseline, repair, Co-teaching, JoCoR, the CV nets behind cleanlab) are one ConvNet
(--width) with the baseline's quick recipe (--epochs); the distilled-set nets (scoring and the
"distilled" accuracy) use the `standard` protocol at the preset. cleanlab's CV epochs default to the
distill+score budget in sample-gradients (see `cv_epochs`); --cv-epochs N overrides it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from typing import Optional

import numpy as np

from jaxdistill.checkpoint import atomic_write_json, atomic_write_text, read_json
from jaxdistill.errors import ConfigError

DISTILLERS = ("prototype", "dance", "datm", "rcig")
RULES = ("relabel", "select", "relabel_select")
# Args that change what an entry means: a resumed run must agree on them (noise/seeds may grow).
RESULT_ARGS = ("dataset", "subset", "distiller", "ipc", "preset", "width", "score_width", "score_steps", "epochs", "k",
               "score_k", "cv_folds", "cv_epochs", "rules", "distill_set")


def entry_key(noise: str, seed: int) -> str:
    return f"{noise}|seed{seed}"


def parse_overrides(items) -> dict:
    """['iterations=30', 'factor=2'] -> {'iterations': 30, 'factor': 2} (ints/floats parsed, else str)."""
    out = {}
    for it in items or ():
        if "=" not in it:
            raise ConfigError(f"--distill-set {it!r} is not KEY=VALUE")
        k, v = it.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def distill_cost(cfg, n: int) -> int:
    """Sample-gradients of the distiller's pool/expert pre-training: models x epochs x N (the dominant
    part; feature-matching / trajectory-matching iterations are not counted)."""
    models = getattr(cfg, "pool_size", None) or getattr(cfg, "num_experts", None) or 0
    # DATM's expert_epochs is its matching horizon; its experts train expert_train_epochs.
    epochs = getattr(cfg, "pretrain_epochs", None) or getattr(cfg, "expert_train_epochs", None) or 0
    return int(models * epochs * n)


def make_distilled(name: str, data, key, ipc: int, preset: str, overrides: dict):
    """(DistilledSet, sample-gradients spent making it, config dict)."""
    from jaxdistill.detect import prototype_set

    if name == "prototype":
        return prototype_set(data, ipc), 0, {"ipc": ipc}
    from jaxdistill.methods import distill, get_config

    cfg = get_config(name, data.name, ipc, preset)
    if overrides:
        bad = sorted(set(overrides) - {f.name for f in dataclasses.fields(cfg)})
        if bad:
            raise ConfigError(f"--distill-set fields {bad} are not {name} config fields; allowed: "
                              f"{sorted(f.name for f in dataclasses.fields(cfg))}")
        cfg = dataclasses.replace(cfg, **overrides)
    with tempfile.TemporaryDirectory() as wd:
        d = distill(name, cfg, data, key, workdir=wd)
    return d, distill_cost(cfg, len(data.y_noisy)), dataclasses.asdict(cfg)


def cv_epochs_matched(distill_sg: int, k: int, steps: int, num_images: int, n: int, folds: int) -> int:
    """CV epochs per fold giving the K-fold nets the distill+score budget in sample-gradients:
    (distill + k scoring nets x steps x min(256, M)) / (N (folds - 1) / folds x folds)."""
    eval_sg = k * steps * min(256, num_images)
    return max(1, round((distill_sg + eval_sg) / (n * (folds - 1))))


class Clock:
    """Per-stage wall seconds and process CPU seconds (all threads), printed as the entry goes. On a
    shared machine the CPU seconds are the better measure of the work: wall time depends on the load."""

    def __init__(self, tag: str):
        self.tag, self.t_entry, self.c_entry = tag, time.perf_counter(), time.process_time()
        self.seconds, self.cpu_seconds, self._c0 = {}, {}, self.c_entry

    def stage(self, name: str, t0: float, msg: str = "") -> None:
        dt, now_c = time.perf_counter() - t0, time.process_time()
        self.seconds[name], self.cpu_seconds[name], self._c0 = dt, now_c - self._c0, now_c
        print(f"[{self.tag}] {name}: {dt:.1f} s wall, {self.cpu_seconds[name]:.1f} s cpu "
              f"(entry {time.perf_counter() - self.t_entry:.0f} s) {msg}", flush=True)


def run_entry(ds, noise: str, seed: int, a) -> dict:
    """Everything for one (noise, seed): a JSON-ready dict."""
    from jaxdistill.baseline import get_baseline_config
    from jaxdistill.baselines import get_coteaching_config, get_jocor_config, train_coteaching, train_jocor
    from jaxdistill.data import make_noisy_data
    from jaxdistill.detect import (cleanlab_scores, cross_val_pred_probs, detection_metrics,
                                   scores_from_probs, score_labels)
    from jaxdistill.evaluate import get_protocol
    from jaxdistill.pipeline import stage_key
    from jaxdistill.repair import RepairConfig, repair

    clock = Clock(entry_key(noise, seed))
    t0 = time.perf_counter()
    data = make_noisy_data(ds, noise, seed=seed, subset=a.subset or None)
    n, issue = len(data.y_noisy), data.noise_mask
    res = {"noise": noise, "seed": seed, "n_train": n, "realized_rate": data.noise_rate}
    clock.stage("noise", t0, f"N={n} realized {data.noise_rate:.3f}")

    bcfg = get_baseline_config(ds.name, a.preset)
    # memorise=None: this study's stored seeds were made with the preset's fixed recipe before the cpu preset's
    # baseline memorised (issue 30); new seeds must mean the same (run_lnl.py has the memorising baseline)
    bcfg = dataclasses.replace(bcfg, k=a.k, width=a.width or bcfg.width, memorise=None,
                               train=bcfg.train.replace(epochs=a.epochs or bcfg.train.epochs))
    ep = bcfg.train.epochs
    pair_kw = {"width": bcfg.width, "k": a.k, "num_gradual": max(1, ep // 5)}

    t0 = time.perf_counter()
    distilled, d_sg, d_cfg = make_distilled(a.distiller, data, stage_key(seed, "distill"), a.ipc, a.preset,
                                            parse_overrides(a.distill_set))
    clock.stage("distill", t0, f"{a.distiller} ipc {a.ipc}: {distilled.num_images} images")

    prot = get_protocol("standard", num_images=distilled.num_images, num_classes=data.num_classes,
                        image_size=distilled.images.shape[1], preset=a.preset, width=a.score_width)
    prot = dataclasses.replace(prot, train=prot.train.replace(steps=a.score_steps))
    t0 = time.perf_counter()
    score_k = a.score_k or a.k
    scores = score_labels(distilled, data, stage_key(seed, "score"), k=score_k, protocol=prot)
    res["detect_distilled"] = scores.meta["metrics"]
    res["distilled"] = {"acc_mean": scores.meta["test_acc_mean"], "acc_std": float(np.std(scores.meta["test_accs"])),
                        "accs": scores.meta["test_accs"], "protocol": "standard"}
    m = res["detect_distilled"]
    clock.stage("score", t0, f"P {m['precision']:.3f} R {m['recall']:.3f} AUROC {m['auroc']:.3f}; "
                             f"distilled acc {100 * res['distilled']['acc_mean']:.1f}")

    steps = prot.train.steps
    cv_ep = a.cv_epochs or cv_epochs_matched(d_sg, score_k, steps, distilled.num_images, n, a.cv_folds)
    t0 = time.perf_counter()
    probs = cross_val_pred_probs(data, stage_key(seed, "cv"), folds=a.cv_folds, epochs=cv_ep, width=bcfg.width,
                                 train_cfg=bcfg.train)
    cl = cleanlab_scores(probs, data.y_noisy)
    res["detect_cleanlab"] = {**detection_metrics(cl.quality, cl.flagged, issue), "cv_epochs": cv_ep}
    ours_cv = scores_from_probs(probs, data.y_noisy)
    res["detect_cv_ours"] = detection_metrics(ours_cv.quality, ours_cv.flagged, issue)
    res["budget"] = {"distill_sample_grads": d_sg,
                     "score_sample_grads": score_k * steps * min(256, distilled.num_images),
                     "cv_sample_grads": cv_ep * n * (a.cv_folds - 1), "cv_epochs": cv_ep,
                     "cv_epochs_matched": a.cv_epochs is None}
    m = res["detect_cleanlab"]
    clock.stage("cv+cleanlab", t0, f"{a.cv_folds} folds x {cv_ep} ep: P {m['precision']:.3f} R {m['recall']:.3f} "
                                   f"AUROC {m['auroc']:.3f}")

    for i, rule in enumerate(a.rules):
        t0 = time.perf_counter()
        # One training key for every rule and the baseline: only the labels / kept rows differ.
        rr = repair(data, distilled, stage_key(seed, "repair"),
                    RepairConfig(rule=rule, score_k=score_k, score_width=a.score_width, preset=a.preset, train=bcfg,
                                 baseline=(i == 0)), scores=scores)
        r = {k: v for k, v in rr.results["repair"].items() if k != "curve"}
        res[f"repair_{rule}"] = {**r, "stats": rr.stats}
        if i == 0:
            res["baseline_noisy"] = {k: v for k, v in rr.results["baseline_noisy"].items() if k != "curve"}
        clock.stage(f"repair_{rule}" + (" + baseline" if i == 0 else ""), t0,
                    f"repair {100 * r['acc_mean']:.1f}" + (f", baseline {100 * res['baseline_noisy']['acc_mean']:.1f}"
                                                           if i == 0 else "")
                    + f"; label acc {rr.stats.get('label_acc_before', float('nan')):.3f} -> "
                      f"{rr.stats.get('label_acc_after_kept', float('nan')):.3f} "
                      f"on {rr.stats['kept_fraction']:.2f} kept")

    kind = noise.split(":")[0]
    t0 = time.perf_counter()
    ct = train_coteaching(data, get_coteaching_config(ds.name, a.preset, train=bcfg.train.replace(
        optimizer="adam", lr=1e-3, momentum=0.0, weight_decay=0.0), **pair_kw), stage_key(seed, "coteaching"))
    res["coteaching"] = ct
    clock.stage("coteaching", t0, f"{100 * ct['acc_mean']:.1f}")
    t0 = time.perf_counter()
    jc = train_jocor(data, get_jocor_config(ds.name, a.preset, noise_kind=kind, train=bcfg.train.replace(
        optimizer="adam", lr=1e-3, momentum=0.0, weight_decay=0.0), **pair_kw), stage_key(seed, "jocor"))
    res["jocor"] = jc
    clock.stage("jocor", t0, f"{100 * jc['acc_mean']:.1f}")
    res["seconds"] = {**clock.seconds, "entry": time.perf_counter() - clock.t_entry}
    res["cpu_seconds"] = {**clock.cpu_seconds, "entry": time.process_time() - clock.c_entry}
    res["distill_config"] = d_cfg
    return res


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

ACC_COLUMNS = (("baseline_noisy", "baseline (full noisy)"), ("distilled", "distilled set"),
               ("repair_relabel", "repair relabel"), ("repair_select", "repair select"),
               ("repair_relabel_select", "repair relabel_select"), ("coteaching", "Co-teaching"),
               ("jocor", "JoCoR"))
DETECTORS = (("detect_distilled", "ours (distilled-set nets)"), ("detect_cleanlab", "cleanlab (K-fold CV)"),
             ("detect_cv_ours", "our flags on the CV probs"))


def by_noise(all_res: dict) -> dict:
    """{noise: [entry, ...] sorted by seed}, noises in first-seen order."""
    out: dict = {}
    for r in all_res.get("runs", {}).values():
        out.setdefault(r["noise"], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def mean_std(values) -> Optional[tuple]:
    """(mean, population std, count) of the finite values, None if none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    return (float(v.mean()), float(v.std()), len(v)) if v.size else None


def seed_stats(rs: list, key: str, field: str) -> Optional[tuple]:
    """mean_std of entry[key][field] over the entries (seeds) that have `key`; the tables and the plot read
    every figure through here."""
    return mean_std([r[key][field] for r in rs if key in r])


def _fmt(ms, scale=1.0, digits=1) -> str:
    return "-" if ms is None else f"{scale * ms[0]:.{digits}f} +- {scale * ms[1]:.{digits}f}"


def tables(all_res: dict) -> str:
    """Markdown: the detection table and the accuracy table, mean +- std over seeds."""
    groups = by_noise(all_res)
    a = all_res.get("args", {})
    lines = [f"# Beyond the study: {a.get('dataset')} (subset {a.get('subset') or 'all'}), "
             f"{a.get('distiller')} ipc {a.get('ipc')}", "",
             "mean +- std (population) over noise seeds; each seed redraws the noise and every model key; "
             f"{a.get('k')} net(s) per entry and seed (a seed's figure is the mean over its nets).", "",
             "## Detection (flags vs noisy != true; AUROC of the quality score)", "",
             "| noise | detector | seeds | precision | recall | F1 | AUROC |", "|---|---|---|---|---|---|---|"]
    for noise, rs in groups.items():
        for key, label in DETECTORS:
            ms = {m: seed_stats(rs, key, m) for m in ("precision", "recall", "f1", "auroc")}
            cnt = ms["auroc"][2] if ms["auroc"] else 0
            lines.append(f"| {noise} | {label} | {cnt} | " + " | ".join(_fmt(ms[m], 1, 3) for m in
                                                                         ("precision", "recall", "f1", "auroc")) + " |")
    lines += ["", "## Test accuracy (%)", "",
              "| noise | seeds | realized rate | " + " | ".join(lab for _, lab in ACC_COLUMNS) + " |",
              "|---|---|---|" + "---|" * len(ACC_COLUMNS)]
    for noise, rs in groups.items():
        rate = mean_std([r["realized_rate"] for r in rs])
        cells = [_fmt(seed_stats(rs, k, "acc_mean"), 100) for k, _ in ACC_COLUMNS]
        lines.append(f"| {noise} | {len(rs)} | {_fmt(rate, 1, 3)} | " + " | ".join(cells) + " |")
    lines += ["", "## Label repair (fraction of correct labels on the kept samples) and wall time", "",
              "| noise | rule | kept | label acc before | after (kept) |", "|---|---|---|---|---|"]
    for noise, rs in groups.items():
        for rule in RULES:
            k = f"repair_{rule}"
            st = [r[k]["stats"] for r in rs if k in r]
            if st:
                lines.append(f"| {noise} | {rule} | {_fmt(mean_std([s['kept_fraction'] for s in st]), 1, 3)} | "
                             f"{_fmt(mean_std([s.get('label_acc_before') for s in st]), 1, 3)} | "
                             f"{_fmt(mean_std([s.get('label_acc_after_kept') for s in st]), 1, 3)} |")
    secs = [r["seconds"]["entry"] for rs in groups.values() for r in rs if "seconds" in r]
    if secs:
        lines += ["", f"Wall per (noise, seed) entry: {np.mean(secs):.0f} s mean ({min(secs):.0f}-{max(secs):.0f} s), "
                      f"{len(secs)} entries, {sum(secs) / 60:.1f} min in all."]
    cpu = [r["cpu_seconds"]["entry"] for rs in groups.values() for r in rs if "cpu_seconds" in r]
    if cpu:
        lines[-1] += f" Process CPU time per entry: {np.mean(cpu):.0f} s mean (all threads)."
    return "\n".join(lines) + "\n"


def plot(path: str, all_res: dict) -> list[dict]:
    """PNG beside the tables: test accuracy per method and the detectors' AUROC, grouped by noise, mean +- std
    over seeds (the same numbers as `tables`). Returns the drawn bar heights (report.plot_grouped_bars)."""
    from jaxdistill.report import plot_grouped_bars

    groups = by_noise(all_res)
    names = [f"{nz}\n({len(rs)} seed{'s' if len(rs) != 1 else ''})" for nz, rs in groups.items()]

    def series(cols, field, scale):
        out = {}
        for key, label in cols:
            vals = []
            for rs in groups.values():
                ms = seed_stats(rs, key, field)
                vals.append(None if ms is None else (scale * ms[0], scale * ms[1]))
            if any(v is not None for v in vals):
                out[label] = vals
        return out

    a = all_res.get("args", {})
    return plot_grouped_bars(path, [
        {"title": "test accuracy", "ylabel": "test accuracy (%)", "groups": names,
         "series": series(ACC_COLUMNS, "acc_mean", 100.0)},
        {"title": "detection: AUROC of the quality score", "ylabel": "AUROC", "groups": names,
         "series": series(DETECTORS[:2], "auroc", 1.0)}],
        title=f"beyond the study: {a.get('dataset')}, {a.get('distiller')} ipc {a.get('ipc')}, "
              f"preset {a.get('preset')} (mean +- std over seeds)")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def check_resume(old_args: dict, args: dict) -> None:
    diff = {k: (old_args.get(k), args.get(k)) for k in RESULT_ARGS if old_args.get(k) != args.get(k)}
    if diff:
        raise ConfigError(f"the results file holds entries made with different settings {diff} (old, new); "
                          f"use another --out or the same settings (only --noise and --seeds may change)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="run the (noise, seed) entries not yet in --out")
    r.add_argument("--dataset", default="fashion_mnist")
    r.add_argument("--subset", type=int, default=None,
                   help="class-stratified training subset as the pipeline takes it (default: the preset's "
                        "subset for the dataset, jaxdistill/configs/presets.py; 0 = all)")
    r.add_argument("--noise", nargs="+", default=["symmetric:0.4", "asymmetric:0.4", "instance:0.4"])
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--distiller", default="dance", choices=DISTILLERS)
    r.add_argument("--distill-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override distiller config fields, e.g. iterations=30")
    r.add_argument("--ipc", type=int, default=10)
    r.add_argument("--preset", default="quick", choices=("quick", "cpu", "paper"))
    r.add_argument("--width", type=int, default=None, help="full-data nets (default: the baseline preset's)")
    r.add_argument("--score-width", type=int, default=None,
                   help="distilled-set nets (default: the standard protocol's at the preset)")
    r.add_argument("--epochs", type=int, default=None, help="full-data nets (default: the baseline preset's)")
    r.add_argument("--score-steps", type=int, default=None,
                   help="training steps of the distilled-set nets (default: the standard protocol's at the preset)")
    r.add_argument("--k", type=int, default=1, help="nets per method per entry")
    r.add_argument("--score-k", type=int, default=None,
                   help="nets trained on the distilled set to score the labels (default: --k); more nets give "
                        "smoother probabilities and, budget-matched, more CV epochs for cleanlab")
    r.add_argument("--cv-folds", type=int, default=5)
    r.add_argument("--cv-epochs", type=int, default=None, help="default: matched to the distill+score budget")
    r.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    r.add_argument("--out", default="experiments/beyond/results_fmnist.json")
    r.add_argument("--table", default=None, help="also write the markdown tables here after every entry")
    r.add_argument("--budget-min", type=float, default=None,
                   help="start no entry that would (at the mean entry time so far) end past this many minutes")
    g = sub.add_parser("aggregate", help="write the markdown tables and their plot from --out")
    g.add_argument("--out", default="experiments/beyond/results_fmnist.json")
    g.add_argument("--table", default=None, help="default: --out with .md; the plot goes beside it as .png")
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.mode == "aggregate":
        all_res = read_json(a.out)
        if all_res is None:
            raise ConfigError(f"--out {a.out!r} is missing or unreadable; run the `run` mode first")
        md = tables(all_res)
        atomic_write_text(a.table or os.path.splitext(a.out)[0] + ".md", md)
        png = os.path.splitext(a.table or a.out)[0] + ".png"
        plot(png, all_res)
        print(md)
        print(f"plot: {png}")
        return 0

    from jaxdistill.data import load_dataset
    from jaxdistill.evaluate import get_protocol
    from jaxdistill.configs.presets import training_subset

    if a.subset is None:
        a.subset = training_subset(a.dataset, a.preset) or 0
    ds = load_dataset(a.dataset)
    if a.score_steps is None:  # resolved here so that the results file records the schedule it was made with
        a.score_steps = get_protocol("standard", num_images=1, num_classes=ds.num_classes,
                                     image_size=ds.x_train.shape[1], preset=a.preset).train.steps
    if a.k < 1 or a.cv_folds < 2 or a.score_steps < 1:
        raise ConfigError(f"--k {a.k} and --score-steps {a.score_steps} must be >= 1 and --cv-folds {a.cv_folds} >= 2")
    args = {k: v for k, v in vars(a).items() if k not in ("mode", "budget_min", "table")}
    all_res = read_json(a.out)
    if all_res is not None:
        check_resume(all_res.get("args", {}), args)
    else:
        all_res = {"args": args, "runs": {}}
    all_res["args"] = {**args, "noise": sorted(set(all_res["args"].get("noise", [])) | set(a.noise)),
                       "seeds": sorted(set(all_res["args"].get("seeds", [])) | set(a.seeds))}
    # Seed-major: after the first len(noise) entries every noise has one seed (a usable partial table).
    todo = [(nz, s) for s in a.seeds for nz in a.noise if entry_key(nz, s) not in all_res["runs"]]
    print(f"{len(todo)} entries to run, {len(a.noise) * len(a.seeds) - len(todo)} already in {a.out}", flush=True)
    t_all = time.perf_counter()
    for i, (noise, seed) in enumerate(todo):
        spent = time.perf_counter() - t_all
        if a.budget_min and i and spent + spent / i > 60 * a.budget_min:
            print(f"stopping before {entry_key(noise, seed)}: {spent / 60:.1f} min spent, another entry "
                  f"(~{spent / i / 60:.1f} min) would pass --budget-min {a.budget_min}; re-run to resume", flush=True)
            break
        res = run_entry(ds, noise, seed, a)
        all_res["runs"][entry_key(noise, seed)] = res
        atomic_write_json(a.out, all_res)
        if a.table:
            atomic_write_text(a.table, tables(all_res))
        print(f"== entry {i + 1}/{len(todo)} {entry_key(noise, seed)} done in {res['seconds']['entry']:.0f} s; "
              f"{(time.perf_counter() - t_all) / 60:.1f} min so far", flush=True)
    print(tables(all_res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
