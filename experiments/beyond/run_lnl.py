"""One comparison of every noisy-label method on the same noisy labels, net and budget (issue 31).

Per (noise, seed): Fashion-MNIST's 5000-image cpu subset with a noisy validation split (10%, carved from the
noisy training set, never the test labels); one ConvNet (the baseline's width and recipe at --preset) per method
and seed. Methods (cells), each written to --runs atomically as soon as it finishes, so a stop loses at most the
cell under way and a later session goes on where this one stopped:

    baseline_memorise  the ConvNet on all noisy labels, trained at constant lr until it has memorised the wrong
                    labels, then decayed (`baseline.MemoriseConfig`, the preset's): `baseline_last` (its last epoch,
                    the field's comparison) and `baseline_best` (the epoch the noisy validation split picks)
    baseline        the same net with the shared recipe (the preset's 40 epochs, step decay), which has not
                    memorised: `baseline_recipe_last` / `baseline_recipe_best`
    coteaching, jocor, gce, elr, dividemix (lambda_u chosen from {0, 25} on the noisy validation split),
    cleanlearning   cleanlab's confident learning: 5-fold CV probabilities, find_label_issues, prune, refit
    distilled_set   the DANCE set (IPC 10) under the common protocol; its nets score every label (our detector)
    jaxdistill_repair_select / _relabel / _relabel_select: the repair rules on those scores, then the baseline
    jaxdistill_forward   forward loss correction, the transition matrix estimated from the distilled-set nets'
                    predictions against the noisy labels
    jaxdistill_anchor_dividemix: DivideMix whose first fifth of the epochs divide by the distilled-set nets'
                    clean probabilities instead of a warm-up on the noisy labels
    jaxdistill_anchor_coteaching: Co-teaching whose small-loss selection ranks each sample by the net's loss
                    plus the distilled-set nets' cross-entropy on its label (the two pieces of evidence, as a
                    product of likelihoods), with the forget rate estimated from the anchor (1 - the mean of its
                    clean probabilities) instead of the true noise rate the papers' Co-teaching is given
    jaxdistill_forward_confident / jaxdistill_anchor_coteaching_confident: the same two with the transition
                    matrix (and the forget rate it implies) from the anchor's most confident fifth of each
                    predicted class (anchor points) instead of soft counts over every sample
    jaxdistill_coteaching_anchor_rate: the papers' Co-teaching with the anchor-point noise rate as its forget
                    rate (the papers' runs are given the true rate)
    jaxdistill_coteaching_relabel: that very pair (its cell's key), then the labels it flags replaced by its
                    predictions and one net trained with cross-entropy on all images with the repaired labels
    jaxdistill_coteaching_vote: the same, a flagged label replaced only where the distilled-set nets predict the
                    pair's class, the other flagged images dropped
    dividemix_long  DivideMix with 3 x the epochs (is 40 too few for MixMatch? the paper trains 300); counted among
                    the established methods where it has run, not required
    jaxdistill_auto (derived by `aggregate`, not run): per (noise, seed) the one of jaxdistill_forward_confident
                    and jaxdistill_coteaching_anchor_rate with the higher final noisy-validation accuracy, as
                    `jaxdistill repair --rule auto` chooses

The distilled set of each (noise, seed) is saved under --sets (small; committed) so the jaxdistill_ cells of a
later session reuse it. Then `aggregate` writes the issue's JSON ({noise: {method: {acc_mean, acc_std, seeds,
best_acc_mean, auroc}}}), a Markdown table and a plot.

    python experiments/beyond/run_lnl.py run --noise symmetric:0.4 --seeds 0 1 2
    python experiments/beyond/run_lnl.py aggregate
    python experiments/beyond/run_lnl.py todo        # the goal's cells still to run, cheapest first per seed
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from jaxdistill.checkpoint import atomic_write_json, atomic_write_text, read_json, update_json
from jaxdistill.anchored import final_val
from jaxdistill.cli_beyond import LNL_METHODS, flag_metrics, run_lnl_method
from jaxdistill.errors import ConfigError
from jaxdistill.train import without_added_defaults

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("baseline", "baseline_memorise", "gce", "elr", "coteaching", "jocor", "cleanlearning", "distilled_set",
           "jaxdistill_repair_select", "jaxdistill_repair_relabel", "jaxdistill_repair_relabel_select",
           "jaxdistill_forward", "dividemix", "jaxdistill_anchor_dividemix", "jaxdistill_anchor_coteaching",
           "jaxdistill_forward_confident", "jaxdistill_anchor_coteaching_confident",
           "jaxdistill_coteaching_anchor_rate", "dividemix_long", "jaxdistill_coteaching_relabel",
           "jaxdistill_coteaching_vote")
# dividemix_long: DivideMix with LONG_FACTOR x the shared epochs (its warm-up, ramp-up and lr steps scale with
# them), for the question whether the shared 40 epochs starve MixMatch (the paper trains 300).
LONG_FACTOR = 3
# The cells of jaxdistill.anchored's training rules (`auto` is derived by `aggregate`, not run).
TRAINED_WITH_ANCHOR = tuple(m for m in METHODS
                            if m.startswith("jaxdistill_") and not m.startswith("jaxdistill_repair_"))
# Cells whose first stage is another cell's run: they take that cell's key, so the stage repeats it exactly.
KEY_OF = {"jaxdistill_coteaching_relabel": "jaxdistill_coteaching_anchor_rate",
          "jaxdistill_coteaching_vote": "jaxdistill_coteaching_anchor_rate"}
# Args that change what a cell means: a resumed run must agree on them.
RESULT_ARGS = ("dataset", "subset", "val_fraction", "preset", "ipc", "distiller", "cv_folds", "epochs")


def cell_key(noise: str, seed: int, method: str) -> str:
    return f"{noise}|seed{seed}|{method}"


def _strip(d: dict) -> dict:
    """Drop per-sample arrays (kept only as detection metrics) and curves from a result dict."""
    return {k: v for k, v in d.items() if k not in ("label_scores", "flagged", "curve", "params")}


def _entry(r: dict, best: dict | None = None) -> dict:
    """A cell's accuracy entry; `final_val`: the last epoch's noisy-validation accuracy where the method tracks it
    (the figure a choice between rules or variants is made on: never the test set)."""
    out = {"acc_mean": r["acc_mean"], "acc_std": r.get("acc_std", 0.0), "accs": r.get("accs", [r["acc_mean"]])}
    if best is not None:
        out.update(best_acc_mean=best["acc_mean"], best_accs=best.get("accs"))
    elif "best_acc_mean" in r:
        out.update(best_acc_mean=r["best_acc_mean"], best_accs=r.get("best_accs"))
    fv = final_val({"final_val": r.get("final_val"),
                    "val_curve": (best or {}).get("val_curve") or r.get("val_curve")}, required=False)
    if fv is not None:
        out["final_val"] = fv
    return out


def _distilled(data, seed: int, a, sets_dir: str, tag: str):
    """The distilled set of this (noise, seed): loaded from --sets when a previous session made it."""
    from jaxdistill.methods.base import DistilledSet
    from jaxdistill.pipeline import stage_key

    sys.path.insert(0, HERE)
    from run_beyond import make_distilled

    path = os.path.join(sets_dir, f"{tag}.npz")
    if os.path.exists(path):
        return DistilledSet.load(path)
    d, _, _ = make_distilled(a.distiller, data, stage_key(seed, "distill"), a.ipc, a.preset, {})
    os.makedirs(sets_dir, exist_ok=True)
    d.save(path)
    return d


def _anchor(data, seed: int, a, ctx: dict):
    """(the distilled set, LabelScores of one net trained on it under the common protocol): the anchor every
    jaxdistill_ method builds on; computed once per (noise, seed)."""
    from jaxdistill.detect import score_labels
    from jaxdistill.evaluate import get_protocol
    from jaxdistill.pipeline import stage_key

    if "scores" not in ctx:
        d = _distilled(data, seed, a, a.sets, ctx["tag"])
        prot = get_protocol("standard", num_images=d.num_images, num_classes=data.num_classes,
                            image_size=d.images.shape[1], preset=a.preset)
        ctx["distilled"], ctx["scores"] = d, score_labels(d, data, stage_key(seed, "score"), k=1, protocol=prot)
    return ctx["distilled"], ctx["scores"]


def full_data_recipe(dataset: str, a):
    """The BaselineConfig every full-data method of the store trains with: the preset baseline's net and recipe,
    one net per seed, --epochs where given."""
    from jaxdistill.baseline import get_baseline_config

    b = get_baseline_config(dataset, a.preset)
    # memorise only changes the baseline_memorise cell's schedule; every other cell trains with this recipe
    return dataclasses.replace(b, k=1, train=b.train.replace(epochs=a.epochs or b.train.epochs), memorise=None)


class StoreMemo:
    """One cell's finished sub-runs (DivideMix's lambda_u candidates), kept in the --runs store under
    `partial` as each ends, so a stop between them loses only the one under way; `cmd_run` drops them once the
    cell itself is written."""

    def __init__(self, path: str, cell: str):
        self.path, self.cell = path, cell

    def _items(self) -> dict:
        return (read_json(self.path) or {}).get("partial", {}).get(self.cell, {})

    def __contains__(self, name: str) -> bool:
        return name in self._items()

    def __getitem__(self, name: str) -> dict:
        return self._items()[name]

    def __setitem__(self, name: str, value: dict) -> None:
        def add(st):
            partial = dict(st.get("partial", {}))
            partial[self.cell] = {**partial.get(self.cell, {}), name: value}
            return {**st, "partial": partial}

        update_json(self.path, add)


def run_cell(method: str, data, seed: int, a, ctx: dict, bcfg) -> dict:
    """One method on one (noise, seed) with the full-data recipe `bcfg` (`full_data_recipe`): a JSON-ready dict
    with acc_mean / best_acc_mean / detect / seconds."""
    from jaxdistill import baselines as B
    from jaxdistill.baseline import run_baseline
    from jaxdistill.pipeline import stage_key

    key = stage_key(seed, KEY_OF.get(method, method))
    t0 = time.perf_counter()
    res: dict
    if method in ("baseline", "baseline_memorise"):
        if method == "baseline_memorise":
            from jaxdistill.baseline import MemoriseConfig, get_baseline_config

            bcfg = dataclasses.replace(bcfg, memorise=get_baseline_config(data.name, a.preset).memorise
                                       or MemoriseConfig())
        r = run_baseline(data, bcfg, stage_key(seed, "train"), clean=False)
        bn = r["baseline_noisy"]
        res = {"last": _entry(bn), "best": _entry(r["baseline_noisy_valselected"]),
               "convergence": bn.get("convergence"), "epochs": bn.get("epochs"),
               "selected_epoch": r["baseline_noisy_valselected"].get("selected_epoch"),
               **{k: bn[k] for k in ("wrong_fit", "memorisation") if k in bn},
               "curve": {k: v for k, v in bn.get("curve", {}).items() if k in ("wrong_fit", "val_noisy",
                                                                               "test_slice", "train_noisy")}}
    elif method in LNL_METHODS + ("dividemix_long",):
        memo = StoreMemo(a.runs, ctx["cell"]) if "cell" in ctx else None
        if method == "dividemix_long":
            tc = bcfg.train.replace(epochs=LONG_FACTOR * bcfg.train.epochs)
            r = B.train_dividemix_select(data, B.DivideMixConfig(width=bcfg.width, k=bcfg.k, train=tc,
                                                                 rampup=LONG_FACTOR * 16), key, memo=memo)
            r["detect"] = flag_metrics(data, r["label_scores"], r["flagged"])
        else:
            # The CLI's `jaxdistill lnl` runs the same function: the baseline's net and recipe, one key per method.
            r = run_lnl_method(method, data, bcfg, key, noise_kind=ctx["kind"], cv_folds=a.cv_folds, memo=memo)
        res = {**_entry(r), **{k: r[k] for k in ("config", "tau", "lambda_u", "lambda_u_candidates",
                                                  "kept_fraction", "cv_epochs", "detect") if r.get(k) is not None}}
    elif method in TRAINED_WITH_ANCHOR:
        from jaxdistill.anchored import train_anchored

        d, scores = _anchor(data, seed, a, ctx)
        rule = method[len("jaxdistill_"):]
        r = train_anchored(rule, data, scores.pred_probs, bcfg, key,
                           memo=StoreMemo(a.runs, ctx["cell"]) if "cell" in ctx else None)
        keep = ("transition", "transition_error", "lambda_u", "lambda_u_candidates", "config", "tau", "tau_error",
                "label_precision_last", "relabelled", "kept_fraction", "pair_acc_mean", "noise_rate_given",
                "noise_rate_repaired")
        res = {**_entry(r), **{k: r[k] for k in keep if r.get(k) is not None}}
        # each rule's own notion of a wrong label (forward: the anchor's scores)
        res["detect"] = flag_metrics(data, r["label_scores"], r["flagged"])
        if "anchor_scores" in r:
            res["anchor_detect"] = flag_metrics(data, r["anchor_scores"], r["anchor_flagged"])
    elif method == "distilled_set" or method.startswith("jaxdistill_repair_"):
        from jaxdistill.repair import RepairConfig, repair

        d, scores = _anchor(data, seed, a, ctx)
        if method == "distilled_set":
            accs = scores.meta["test_accs"]
            res = {"acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)), "accs": list(accs),
                   "protocol": "standard", "detect": scores.meta.get("metrics"), "num_images": d.num_images}
        else:
            rule = method[len("jaxdistill_repair_"):]
            rr = repair(data, d, stage_key(seed, "repair"),
                        RepairConfig(rule=rule, score_k=1, preset=a.preset, train=bcfg, baseline=False),
                        scores=scores)
            res = {**_entry(rr.results["repair"], rr.results.get("repair_valselected")), "stats": rr.stats,
                   "detect": scores.meta.get("metrics")}
    else:
        raise ConfigError(f"method {method!r}; allowed {', '.join(METHODS)}")
    res["seconds"] = time.perf_counter() - t0
    return res


def cmd_run(a) -> int:
    from jaxdistill.data import load_dataset, make_noisy_data

    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        raise ConfigError(f"--methods {bad}; allowed {', '.join(METHODS)}")
    args = {k: getattr(a, k) for k in RESULT_ARGS}
    ds = load_dataset(a.dataset)
    # The cells share the baseline's recipe at --preset: if a later change of the preset's baseline would give
    # other cells, refuse to mix them into this store.
    bcfg = full_data_recipe(ds.name, a)
    recipe = json.loads(json.dumps(dataclasses.asdict(bcfg)))

    def check(store):
        store = store or {"args": {}, "cells": {}}
        if store["args"] and store["args"] != args:
            diff = {k: (store["args"].get(k), v) for k, v in args.items() if store["args"].get(k) != v}
            raise ConfigError(f"{a.runs} was made with other settings {diff} (stored, given); use another --runs")
        if store.get("recipe") is not None and without_added_defaults(store["recipe"]) != without_added_defaults(recipe):
            raise ConfigError(f"{a.runs} was made with another baseline recipe {store['recipe']} (now {recipe}); "
                              f"use another --runs")
        return {**store, "args": args, "recipe": recipe}

    # Several processes may add cells to one store (different methods or noises side by side): every write is a
    # locked read-modify-write, so none drops another's cells.
    store = update_json(a.runs, check)
    for noise in a.noise:
        for seed in a.seeds:
            store = read_json(a.runs)
            todo = [m for m in a.methods if cell_key(noise, seed, m) not in store["cells"]]
            if not todo:
                continue
            data = make_noisy_data(ds, noise, seed=seed, subset=a.subset or None, val_fraction=a.val_fraction)
            ctx = {"kind": noise.split(":")[0], "tag": f"{noise.replace(':', '_')}_seed{seed}"}
            for m in todo:
                print(f"[{noise} seed {seed}] {m} ...", flush=True)
                ctx["cell"] = cell_key(noise, seed, m)
                r = run_cell(m, data, seed, a, ctx, bcfg)
                r.update(noise=noise, seed=seed, method=m,
                         command=f"python experiments/beyond/run_lnl.py run --noise {noise} --seeds {seed} "
                                 f"--methods {m}", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                def put(st, r=r, c=cell_key(noise, seed, m)):
                    partial = {k: v for k, v in st.get("partial", {}).items() if k != c}
                    return {**st, "cells": {**st["cells"], c: r}, "partial": partial}

                update_json(a.runs, put)
                acc = r["last"]["acc_mean"] if m.startswith("baseline") else r["acc_mean"]
                print(f"[{noise} seed {seed}] {m}: {100 * acc:.2f} ({r['seconds']:.0f} s)", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- aggregate

def with_auto(cells: dict) -> dict:
    """cells plus a `jaxdistill_auto` cell per (noise, seed) where every `anchored.AUTO_CANDIDATES` cell has its
    final noisy-validation accuracy: a copy of the candidate with the highest one (what `--rule auto` keeps; no
    test labels involved), marked `rule_chosen`."""
    from jaxdistill.anchored import AUTO_CANDIDATES, choose_auto

    out = dict(cells)
    keys = {(c["noise"], c["seed"]) for c in cells.values()}
    for noise, seed in keys:
        runs = {r: cells.get(cell_key(noise, seed, f"jaxdistill_{r}")) for r in AUTO_CANDIDATES}
        if all(c is not None and final_val(c, required=False) is not None for c in runs.values()):
            rule = choose_auto(runs)
            out[cell_key(noise, seed, "jaxdistill_auto")] = {**runs[rule], "method": "jaxdistill_auto",
                                                              "rule_chosen": rule}
    return out


def aggregate(cells: dict) -> dict:
    """cells -> {noise: {method: {acc_mean, acc_std, seeds, best_acc_mean?, auroc?}}} (means over seeds); with
    the derived `jaxdistill_auto` rows (`with_auto`)."""
    groups: dict = {}
    for c in with_auto(cells).values():
        if c["method"] == "baseline_memorise":
            rows = [("baseline_last", {**c["last"], "wrong_fit": c.get("wrong_fit"), "epochs": c.get("epochs")}),
                    ("baseline_best", c["best"])]
        elif c["method"] == "baseline":
            rows = [("baseline_recipe_last", c["last"]), ("baseline_recipe_best", c["best"])]
        else:
            rows = [(c["method"], c)]
        for name, r in rows:
            groups.setdefault(c["noise"], {}).setdefault(name, []).append((r, c.get("detect")))
    out: dict = {}
    for noise, methods in groups.items():
        for name, rs in methods.items():
            accs = [r["acc_mean"] for r, _ in rs]
            e = {"acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)), "seeds": len(rs)}
            best = [r["best_acc_mean"] for r, _ in rs if r.get("best_acc_mean") is not None]
            if len(best) == len(rs):
                e["best_acc_mean"] = float(np.mean(best))
            for f in ("wrong_fit", "epochs"):  # the memorising baseline: how far it fitted the wrong labels
                v = [r[f] for r, _ in rs if r.get(f) is not None]
                if len(v) == len(rs):
                    e[f] = float(np.mean(v))
            au = [d["auroc"] for _, d in rs if d]
            if len(au) == len(rs):
                e["auroc"] = float(np.mean(au))
                e["auroc_std"] = float(np.std(au))
                for f in ("precision", "recall", "f1"):  # the method's own flags
                    v = [d[f] for _, d in rs if d.get(f) is not None]
                    if len(v) == len(rs):
                        e[f] = float(np.mean(v))
            out.setdefault(noise, {})[name] = e
    return out


ESTABLISHED = ("coteaching", "jocor", "dividemix", "elr", "gce", "cleanlearning")
OPTIONAL_REFERENCES = ("dividemix_long",)  # counted where they have run, not required
BASELINES = ("baseline_last", "baseline_best", "baseline_recipe_last", "baseline_recipe_best")
DETECTORS = ("cleanlearning", "dividemix")  # the goal's detection references: cleanlab's and DivideMix's
# Our detector in the goal's check, fixed in advance (not picked per noise by AUROC, which needs the true labels):
# the Co-teaching pair's cross-entropy under the anchor-point forget rate, the best ranking under symmetric 0.4
# and within 0.001 of the best under asymmetric 0.4 at seed 0 (session 18); every later cell tests it.
OUR_DETECTOR = "jaxdistill_coteaching_anchor_rate"
GOAL_SEEDS = 3


def goal_check(agg: dict) -> dict:
    """Issue 31's goal per noise: ours (`jaxdistill_auto`, the rule chosen on the noisy validation split; and the
    best `jaxdistill_` row by test mean, as the goal is worded) against the strongest of the established methods
    and the baselines (mean over seeds, last epoch), and our detector's AUROC (OUR_DETECTOR's) against cleanlab's
    and DivideMix's.

    Returns {noise: {ours: {name, acc, std}, ours_best, strongest: {name, acc, std}, margin, spread, margin_best,
    auroc: {ours, <ref>: ...}, auroc_margin, missing: [references not run], seeds: fewest seeds involved,
    verdict}}. margin = ours - strongest; spread = sqrt(std_ours^2 + std_ref^2) over seeds' means. verdict, once
    every reference has run with GOAL_SEEDS seeds: 'met' (margin >= 0 and AUROC margin >= 0) or 'not met'; before
    that 'ahead so far' or 'behind so far'."""
    out = {}
    for noise, rows in agg.items():
        ours = [(n, e) for n, e in rows.items() if n.startswith("jaxdistill_")]
        refs = [(n, rows[n]) for n in ESTABLISHED + OPTIONAL_REFERENCES + BASELINES if n in rows]
        if not ours or not refs:
            continue
        auto = ("jaxdistill_auto", rows["jaxdistill_auto"]) if "jaxdistill_auto" in rows else None
        best = max(ours, key=lambda kv: kv[1]["acc_mean"])
        mine = auto or best
        strong = max(refs, key=lambda kv: kv[1]["acc_mean"])
        row = lambda kv: {"name": kv[0], "acc": kv[1]["acc_mean"], "std": kv[1]["acc_std"]}  # noqa: E731
        g = {"ours": row(mine), "ours_best": row(best), "strongest": row(strong),
             "margin": mine[1]["acc_mean"] - strong[1]["acc_mean"],
             "spread": float(np.hypot(mine[1]["acc_std"], strong[1]["acc_std"])),
             "margin_best": best[1]["acc_mean"] - strong[1]["acc_mean"],
             "missing": [n for n in ESTABLISHED + BASELINES[:2] if n not in rows],
             "seeds": min(e["seeds"] for _, e in [mine, *refs])}
        dets = {n: rows[n]["auroc"] for n in DETECTORS if "auroc" in rows.get(n, {})}
        g["missing"] += [f"{n} AUROC" for n in (OUR_DETECTOR, *DETECTORS) if n in rows and "auroc" not in rows[n]]
        g["missing"] += [OUR_DETECTOR] if OUR_DETECTOR not in rows else []
        if "auroc" in rows.get(OUR_DETECTOR, {}) and dets:
            g["auroc"] = {"ours": rows[OUR_DETECTOR]["auroc"], **dets}
            g["auroc_margin"] = rows[OUR_DETECTOR]["auroc"] - max(dets.values())
        behind = g["margin"] < 0 or g.get("auroc_margin", 0.0) < 0
        done = not g["missing"] and "auroc_margin" in g and g["seeds"] >= GOAL_SEEDS
        g["verdict"] = ("not met" if behind else "met") if done else ("behind so far" if behind else "ahead so far")
        out[noise] = g
    return out


def goal_table(goal: dict) -> list[str]:
    if not goal:
        return []
    lines = ["## The goal (issue 31)", "",
             "Ours = `jaxdistill_auto` (the rule the noisy validation split picks; no test labels), against the "
             "strongest established method or baseline at the last epoch, mean over seeds; `best jaxdistill_` is "
             "the best of our rows by test accuracy (the goal's wording; a choice made on the test set, so not the "
             "headline). Margins in points; spread = sqrt(std_a^2 + std_b^2) over the seeds' means (0 with one "
             f"seed). Our detector: `{OUR_DETECTOR}`'s ranking (the Co-teaching pair's cross-entropy), fixed in "
             "advance. Verdict, once every reference has run with {GOAL_SEEDS} seeds: met (at or above in accuracy and "
             "AUROC) or not met; before that: ahead so far / behind so far.", "",
             "| noise | ours | strongest reference | margin (spread) | best jaxdistill_ (margin) | AUROC ours / "
             "cleanlab / DivideMix | seeds | missing | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for noise, g in goal.items():
        o, r, b = g["ours"], g["strongest"], g["ours_best"]
        au = g.get("auroc", {})
        auc = " / ".join(f"{au[k]:.3f}" if k in au else "-" for k in ("ours", *DETECTORS))
        lines.append(f"| {noise} | {o['name']} {100 * o['acc']:.2f} | {r['name']} {100 * r['acc']:.2f} | "
                     f"{100 * g['margin']:+.2f} ({100 * g['spread']:.2f}) | {b['name']} "
                     f"({100 * g['margin_best']:+.2f}) | {auc} | {g['seeds']} | {', '.join(g['missing']) or '-'} | "
                     f"**{g['verdict']}** |")
    return lines + [""]


def budget_lines(agg: dict, args: dict) -> list[str]:
    """The budget each method trains with, read off the configs the store's cells ran with (`args`: the store's
    settings): epochs, nets, optimiser and sample-gradients (images that received a gradient, summed over nets
    and epochs) at its N training images; the memorising baseline's epochs are the mean over its cells."""
    from types import SimpleNamespace

    from jaxdistill.baselines import DivideMixConfig
    from jaxdistill.baselines.coteaching import forget_rate_schedule, pair_config
    from jaxdistill.data.noisy import val_size
    from jaxdistill.methods import get_config

    sys.path.insert(0, HERE)
    from run_beyond import distill_cost

    a = SimpleNamespace(**args)
    if not a.subset:
        return ["## Budgets", "", "(not tabulated: the store trains on a whole data set, --subset 0)", ""]
    n = a.subset - val_size(a.subset, a.val_fraction)
    bcfg = full_data_recipe(a.dataset, a)
    t = bcfg.train
    e, b = t.epochs, t.batch_size
    steps = " and ".join(f"{100 * m:.0f}%" for m in t.milestones)
    pair = pair_config(bcfg)
    kept = float((1.0 - forget_rate_schedule(e, 0.4, pair.num_gradual)).sum())
    dm = DivideMixConfig(width=bcfg.width, k=bcfg.k, train=t)
    warm = dm.warmup_epochs
    dm_sg = 2 * (warm * n + (e - warm) * (int(0.55 * n) // b) * 4 * b)
    dcfg = get_config(a.distiller, a.dataset, a.ipc, a.preset)
    models = getattr(dcfg, "pool_size", None) or getattr(dcfg, "num_experts", None)
    mem = {nz: rows["baseline_last"]["epochs"] for nz, rows in agg.items()
           if "epochs" in rows.get("baseline_last", {})}
    mem_txt = ", ".join(f"{nz} {v:.0f}" for nz, v in mem.items()) or "not run yet"
    k = lambda v: f"{v / 1e6:.2f} M"  # noqa: E731
    rows = [
        ("baseline_recipe_*, gce, elr, jaxdistill_forward*", f"1 net, {e} epochs, {t.optimizer.upper()} lr {t.lr:g} "
         f"momentum {t.momentum:g} wd {t.weight_decay:g}, batch {b}, x{t.gamma:g} at {steps}", k(e * n)),
        ("baseline_last / _best", f"1 net, the same at constant lr until it has memorised the wrong labels, then "
         f"decayed; epochs: {mem_txt}", f"epochs x {n}"),
        ("coteaching, jocor, jaxdistill_coteaching_anchor_rate, jaxdistill_anchor_coteaching*", f"2 nets, {e} epochs, "
         f"{pair.train.optimizer.capitalize()} {pair.train.lr:g} (the papers'), batch {b}; gradients on the kept "
         f"1 - tau of each batch (tau ramped over {pair.num_gradual} epochs)", f"{k(2 * n * kept)} at tau 0.4"),
        ("jaxdistill_coteaching_relabel, _vote", f"the anchor-rate pair above, then 1 net with the first row's "
         f"recipe on the {n} images with the labels the pair repaired (vote: less the flagged images the anchor "
         f"does not confirm)", f"{k(2 * n * kept)} + at most {k(e * n)}"),
        ("cleanlearning", f"{a.cv_folds} folds x {e} epochs on {a.cv_folds - 1}/{a.cv_folds} of the data (CV "
         f"probabilities), then the recipe on the kept images",
         f"{k(e * n * (a.cv_folds - 1))} + {e} x kept"),
        ("dividemix", f"2 nets: {warm} warm-up epochs, then {e - warm} MixMatch epochs of len(labelled) // {b} steps, "
         f"each on 4 x {b} mixed images (+ 6 forward passes of {b} for the guesses); the recipe's optimiser; run "
         f"twice (lambda_u 0, 25)", f"{k(dm_sg)} per lambda_u at 55% labelled"),
        ("dividemix_long", f"the same with {LONG_FACTOR} x the epochs (warm-up, ramp-up and lr steps scaled)",
         f"{k(LONG_FACTOR * dm_sg)} per lambda_u"),
        ("distilled_set (the anchor every jaxdistill_ row adds)", f"{a.distiller.upper()} at the {a.preset} preset: "
         f"{models} nets pretrained {getattr(dcfg, 'pretrain_epochs', None) or dcfg.expert_train_epochs} epochs, "
         f"{dcfg.iterations} iterations, then 1 net trained on its IPC {a.ipc} set",
         f"{k(distill_cost(dcfg, n))} for the pool + the distillation"),
    ]
    return (["## Budgets", "", f"Every method: the baseline's ConvNet (width {bcfg.width}) on the same {n} noisy "
             "training images; sample-gradients = images that received a gradient, summed over nets and epochs.",
             "", "| methods | training | sample-gradients |", "|---|---|---|"]
            + [f"| {m} | {tx} | {g} |" for m, tx, g in rows] + [""])


def table(agg: dict, args: dict | None = None) -> str:
    """The Markdown tables of `agg`; with the store's settings `args`, the budget section after them."""
    lines = ["# Noisy-label methods side by side (Fashion-MNIST, cpu preset)", "",
             "Test accuracy %, mean +- std over seeds (one net per seed), at the **last** epoch (headline) and at "
             "the epoch the noisy validation split picks (best). AUROC: how well the method's own score ranks the "
             "wrong labels. Made by `python experiments/beyond/run_lnl.py aggregate`; each cell's command and "
             "finish time are in `lnl_fmnist_cpu_runs.json`.", ""]
    lines += goal_table(goal_check(agg))
    for noise, methods in agg.items():
        lines += [f"## {noise}", "", "| method | last | best (noisy val) | seeds | AUROC |", "|---|---|---|---|---|"]
        for name, e in sorted(methods.items(), key=lambda kv: -kv[1]["acc_mean"]):
            best = f"{100 * e['best_acc_mean']:.2f}" if "best_acc_mean" in e else ""
            au = f"{e['auroc']:.3f} +- {e['auroc_std']:.3f}" if "auroc" in e else ""
            lines.append(f"| {name} | {100 * e['acc_mean']:.2f} +- {100 * e['acc_std']:.2f} | {best} | "
                         f"{e['seeds']} | {au} |")
        lines.append("")
        det = [(n, e) for n, e in methods.items() if "auroc" in e]
        if det:
            lines += [f"Wrong-label detection under {noise}: each method's own score and flags (DivideMix 1 - w, "
                      "ELR argmax(t) != y, cleanlab's CV probabilities in cleanlearning, the distilled-set nets' in "
                      "distilled_set and the jaxdistill_ rows), against noisy != true.", "",
                      "| method | AUROC | precision | recall | F1 |", "|---|---|---|---|---|"]
            f = lambda e, k: f"{e[k]:.3f}" if k in e else ""  # noqa: E731
            for name, e in sorted(det, key=lambda kv: -kv[1]["auroc"]):
                lines.append(f"| {name} | {e['auroc']:.3f} +- {e['auroc_std']:.3f} | {f(e, 'precision')} | "
                             f"{f(e, 'recall')} | {f(e, 'f1')} |")
            lines.append("")
    if args is not None:
        lines += budget_lines(agg, args)
    return "\n".join(lines)


def plot(path: str, agg: dict) -> list[dict]:
    """Test accuracy at the last epoch per method and the AUROC of each method that flags labels, grouped by noise
    (mean +- std over seeds, the table's numbers). Returns the drawn bar heights (report.plot_grouped_bars)."""
    from jaxdistill.report import plot_grouped_bars

    noises = list(agg)
    names = [f"{nz}\n({max(e['seeds'] for e in agg[nz].values())} seed(s))" for nz in noises]
    methods = sorted({m for nz in noises for m in agg[nz]}, key=lambda m: (not m.startswith("baseline"), m))

    def series(field, scale, std_field):
        out = {}
        for m in methods:
            vals = [None if (m not in agg[nz] or field not in agg[nz][m])
                    else (scale * agg[nz][m][field], scale * agg[nz][m].get(std_field, 0.0)) for nz in noises]
            if any(v is not None for v in vals):
                out[m] = vals
        return out

    return plot_grouped_bars(path, [
        {"title": "test accuracy, last epoch", "ylabel": "test accuracy (%)", "groups": names,
         "series": series("acc_mean", 100.0, "acc_std")},
        {"title": "wrong-label ranking: AUROC of each method's own score", "ylabel": "AUROC", "groups": names,
         "series": series("auroc", 1.0, "auroc_std")}],
        title="noisy-label methods side by side (Fashion-MNIST, cpu preset; mean +- std over seeds)")


def cmd_aggregate(a) -> int:
    store = read_json(a.runs)
    agg = aggregate(store["cells"])
    atomic_write_json(a.out, agg)
    md = table(agg, store.get("args") or None)  # a store with no settings yet: no budget section
    atomic_write_text(a.table, md + "\n" + f"\n![methods]({os.path.basename(a.plot)})\n")
    plot(a.plot, agg)
    print(md)
    return 0


GOAL_NOISES = ("symmetric:0.4", "asymmetric:0.4", "instance:0.4", "symmetric:0.8")
# What the goal's check needs per (noise, seed): the references, our anchor and the rules `auto` chooses from,
# cheapest first within a seed so a session's end loses little.
GOAL_METHODS = ("baseline_memorise", "distilled_set", "jaxdistill_forward_confident",
                "jaxdistill_coteaching_anchor_rate", "elr", "gce", "coteaching", "cleanlearning", "jocor", "dividemix")


def todo(cells: dict, noises=GOAL_NOISES, seeds=range(GOAL_SEEDS), methods=GOAL_METHODS) -> list[dict]:
    """The goal's cells not yet in the store, seed-major (every noise's seed 0, then seed 1, ...), each with its
    command and an estimate of its seconds (the median of that method's finished cells, where there are any)."""
    took: dict = {}
    for c in cells.values():
        took.setdefault(c["method"], []).append(c.get("seconds", 0.0))
    out = []
    for seed in seeds:
        for noise in noises:
            for m in methods:
                if cell_key(noise, seed, m) in cells:
                    continue
                est = float(np.median(took[m])) if m in took else None
                out.append({"noise": noise, "seed": seed, "method": m, "seconds": est,
                            "command": f"python experiments/beyond/run_lnl.py run --noise {noise} --seeds {seed} "
                                       f"--methods {m}"})
    return out


def cmd_todo(a) -> int:
    left = todo(read_json(a.runs)["cells"], seeds=range(a.seeds))
    total = sum(t["seconds"] or 0.0 for t in left)
    for t in left:
        est = f"{t['seconds'] / 60:5.0f} min" if t["seconds"] is not None else "    ? min"
        print(f"{est}  {t['command']}")
    print(f"{len(left)} cells left, about {total / 3600:.1f} h at the finished cells' medians (unknown ones not "
          f"counted)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", default="fashion_mnist")
    r.add_argument("--subset", type=int, default=5000)
    r.add_argument("--val-fraction", type=float, default=0.1)
    r.add_argument("--preset", default="cpu")
    r.add_argument("--ipc", type=int, default=10)
    r.add_argument("--distiller", default="dance")
    r.add_argument("--cv-folds", type=int, default=5)
    r.add_argument("--epochs", type=int, default=None, help="full-data epochs (default: the preset baseline's)")
    r.add_argument("--noise", nargs="+", default=["symmetric:0.4"])
    r.add_argument("--seeds", nargs="+", type=int, default=[0])
    r.add_argument("--methods", nargs="+", default=list(METHODS))
    r.add_argument("--runs", default=os.path.join(HERE, "lnl_fmnist_cpu_runs.json"))
    r.add_argument("--sets", default=os.path.join(HERE, "lnl_sets"))
    g = sub.add_parser("aggregate")
    g.add_argument("--runs", default=os.path.join(HERE, "lnl_fmnist_cpu_runs.json"))
    g.add_argument("--out", default=os.path.join(HERE, "lnl_fmnist_cpu.json"))
    g.add_argument("--table", default=os.path.join(HERE, "lnl_fmnist_cpu.md"))
    g.add_argument("--plot", default=os.path.join(HERE, "lnl_fmnist_cpu.png"))
    t = sub.add_parser("todo", help="the goal's cells still to run, with their commands and estimated minutes")
    t.add_argument("--runs", default=os.path.join(HERE, "lnl_fmnist_cpu_runs.json"))
    t.add_argument("--seeds", type=int, default=GOAL_SEEDS, help="seeds 0 .. N-1 (default %(default)s)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "aggregate": cmd_aggregate, "todo": cmd_todo}[a.cmd](a)
    except ConfigError as e:
        print(f"run_lnl: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
