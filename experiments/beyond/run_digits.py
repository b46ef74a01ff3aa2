"""Beyond the study on digits: detection (distilled-set nets vs cleanlab on K-fold CV), repair rules,
the noisy-data baseline, Co-teaching and JoCoR, and the hard-sample study, side by side.

    python experiments/beyond/run_digits.py --distiller dance --width 16 --k 3 \
        --out experiments/beyond/results_digits.json

k = 3 runs (independent init/shuffle keys, vmapped) per method on the noise draw of seed 0. Every trained
net is the same ConvNet-3 (width --width) with the baseline's quick recipe (30 epochs, batch 128).
cleanlab's K-fold budget is matched to the distill+eval path in sample-gradients (see `cv_epochs`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
import numpy as np

from jaxdistill.baseline import get_baseline_config
from jaxdistill.baselines import get_coteaching_config, get_jocor_config, train_coteaching, train_jocor
from jaxdistill.data import load_dataset, make_noisy_data
from jaxdistill.detect import (cleanlab_scores, cross_val_pred_probs, detection_metrics, prototype_set,
                               score_labels)
from jaxdistill.repair import RepairConfig, repair


def make_distilled(name, data, key, ipc):
    """(DistilledSet, sample-gradients spent making it)."""
    n = len(data.y_noisy)
    if name == "prototype":
        return prototype_set(data, ipc), 0
    from jaxdistill.methods import distill, get_config

    cfg = get_config(name, "digits", ipc, "quick")
    with tempfile.TemporaryDirectory() as wd:
        d = distill(name, cfg, data, key, workdir=wd)
    # Pool/expert pre-training dominates the distiller's cost: models x epochs x N sample-gradients.
    models = getattr(cfg, "pool_size", None) or getattr(cfg, "num_experts", 0) or 0
    epochs = getattr(cfg, "pretrain_epochs", None) or getattr(cfg, "expert_train_epochs", 0) or 0
    return d, int(models * epochs * n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise", nargs="+", default=["symmetric:0.4", "asymmetric:0.4"])
    ap.add_argument("--distiller", default="dance", help="prototype | dance | datm | rcig")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--rules", nargs="+", default=["relabel", "select", "relabel_select"])
    ap.add_argument("--out", default="experiments/beyond/results_digits.json")
    ap.add_argument("--epochs", type=int, default=None, help="override the quick recipe's 30 epochs (all nets)")
    ap.add_argument("--fig", default="experiments/beyond/hardsamples_digits.png")
    a = ap.parse_args()
    ds = load_dataset("digits")
    bcfg = dataclasses.replace(get_baseline_config("digits", "quick"), width=a.width, k=a.k)
    pair_kw = {"width": a.width, "k": a.k}
    if a.epochs:
        bcfg = dataclasses.replace(bcfg, train=bcfg.train.replace(epochs=a.epochs))
        ctc = get_coteaching_config("digits", "quick")
        pair_kw.update(train=ctc.train.replace(epochs=a.epochs), num_gradual=max(1, min(10, a.epochs // 5)))
    all_res = {"args": vars(a), "runs": {}}
    if os.path.exists(a.out):
        all_res = json.load(open(a.out))
    for noise in a.noise:
        key = jax.random.PRNGKey(0)
        kd, ks, kr, kc, kj, kcv, kh = jax.random.split(key, 7)
        data = make_noisy_data(ds, noise, seed=0)
        n = len(data.y_noisy)
        issue = data.noise_mask
        res = {"noise": noise, "realized_rate": data.noise_rate}
        t0 = time.time()
        distilled, distill_cost = make_distilled(a.distiller, data, kd, a.ipc)
        res["distill_seconds"] = time.time() - t0
        t0 = time.time()
        scores = score_labels(distilled, data, ks, k=a.k, protocol="standard", preset="quick", width=a.width)
        res["detect_distilled"] = {**scores.meta["metrics"], "seconds": time.time() - t0}
        # Matched budget: the distill+eval path spent distill_cost + k eval nets x 300 steps x min(256, M).
        eval_cost = a.k * 300 * min(256, distilled.num_images)
        folds = 5
        cv_epochs = max(1, round((distill_cost + eval_cost) / (n * (folds - 1))))
        t0 = time.time()
        probs = cross_val_pred_probs(data, kcv, folds=folds, epochs=cv_epochs, width=a.width)
        try:
            cl = cleanlab_scores(probs, data.y_noisy)
            res["detect_cleanlab"] = {**detection_metrics(cl.quality, cl.flagged, issue),
                                      "cv_epochs": cv_epochs, "seconds": time.time() - t0}
        except Exception as e:  # cleanlab optional
            res["detect_cleanlab"] = {"skipped": str(e)}
        res["detect_cv_ours"] = detection_metrics(*(lambda s: (s.quality, s.flagged))(
            __import__("jaxdistill.detect", fromlist=["x"]).scores_from_probs(probs, data.y_noisy)), issue)
        res["budget"] = {"distill_sample_grads": distill_cost, "eval_sample_grads": eval_cost,
                         "cv_sample_grads": cv_epochs * n * (folds - 1)}
        print(noise, "detect", json.dumps({k: res[k] for k in ("detect_distilled", "detect_cleanlab")}, default=float),
              flush=True)
        for i, rule in enumerate(a.rules):
            t0 = time.time()
            rr = repair(data, distilled, kr, RepairConfig(rule=rule, score_k=a.k, score_width=a.width, train=bcfg,
                                                          baseline=(i == 0)), scores=scores)
            res[f"repair_{rule}"] = {**rr.results["repair"], "stats": rr.stats, "seconds": time.time() - t0}
            res[f"repair_{rule}"].pop("curve", None)
            if i == 0:
                res["baseline_noisy"] = rr.results["baseline_noisy"]
                res["baseline_noisy"].pop("curve", None)
                res["distilled"] = rr.results["distilled"]
            print(noise, rule, res[f"repair_{rule}"]["acc_mean"], rr.stats, flush=True)
        kind = noise.split(":")[0]
        ct = train_coteaching(data, get_coteaching_config("digits", "quick", **pair_kw), kc)
        jc = train_jocor(data, get_jocor_config("digits", "quick", noise_kind=kind, **pair_kw), kj)
        res["coteaching"], res["jocor"] = ct, jc
        print(noise, "coteaching", ct["acc_mean"], "jocor", jc["acc_mean"], flush=True)
        if noise == a.noise[0]:
            from jaxdistill.hardsamples import plot_hard_samples, run_hard_sample_study

            hs = run_hard_sample_study(distilled, data, kh, k=a.k, width=a.width, full_cfg=bcfg)
            plot_hard_samples(hs, a.fig, title=f"digits {noise}, {a.distiller} ipc {a.ipc}")
            res["hardsamples"] = {k: hs[k] for k in ("per_bin", "per_class", "overall", "finding_holds",
                                                     "spearman_bin_vs_lost_rate")}
        all_res["runs"][noise] = res
        json.dump(all_res, open(a.out, "w"), indent=1, default=float)
    print(table(all_res))


def table(all_res) -> str:
    rows = ["| noise | baseline | distilled | repair relabel | repair select | repair relabel_select | coteaching | jocor |",
            "|---|---|---|---|---|---|---|---|"]
    for noise, r in all_res["runs"].items():
        f = lambda k: f"{100 * r[k]['acc_mean']:.1f} +- {100 * r[k]['acc_std']:.1f}" if k in r else "-"
        rows.append(f"| {noise} | " + " | ".join(f(k) for k in ("baseline_noisy", "distilled", "repair_relabel",
                                                              "repair_select", "repair_relabel_select",
                                                              "coteaching", "jocor")) + " |")
    rows += ["", "| noise | detector | precision | recall | F1 | AUROC | lift@#issues |", "|---|---|---|---|---|---|---|"]
    for noise, r in all_res["runs"].items():
        for det in ("detect_distilled", "detect_cleanlab", "detect_cv_ours"):
            m = r.get(det, {})
            if "auroc" in m:
                rows.append(f"| {noise} | {det} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                            f"{m['auroc']:.3f} | {m['lift_at_num_issues']:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
