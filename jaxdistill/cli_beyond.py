"""`jaxdistill detect`, `jaxdistill repair` and `jaxdistill lnl`: thin front-ends over jaxdistill.detect,
jaxdistill.repair and jaxdistill.baselines."""
from __future__ import annotations

import dataclasses
import os
import time


def _settings(args, data) -> tuple:
    """The method's config (derived from the data for a user's npz: jaxdistill/configs/derive.py), the
    `derived_from` record ({} for a named data set) and the scoring protocol, all resolved before any work."""
    from jaxdistill.config_files import resolve
    from jaxdistill.configs.derive import method_config
    from jaxdistill.pipeline import check_protocols, derived_record

    cfg = method_config(args.method, args.dataset, args.ipc, args.preset, data)
    cfg = resolve(cfg, getattr(args, "config", None), getattr(args, "set", None), f"{args.method} config")
    derived = derived_record(args.dataset, data, args.ipc, args.preset)
    check_protocols(["standard"], data, cfg.ipc, args.preset)
    return cfg, derived


def _distilled(args, data, cfg):
    """Distil once per (method, out dir) through the run driver: a re-run loads the finished set (or resumes
    the distillation), and another run's state in the same --out is refused."""
    from jaxdistill.methods import DISTILLED_FILE, DistilledSet, distill
    from jaxdistill.pipeline import stage_key

    workdir = os.path.join(args.out, args.method)
    t0 = time.perf_counter()
    distill(args.method, cfg, data, stage_key(args.seed, f"distill/{args.method}"), workdir=workdir)
    return DistilledSet.load(os.path.join(workdir, DISTILLED_FILE)), time.perf_counter() - t0


def cleanlab_available() -> bool:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_cleanlab(flag) -> bool:
    """--cleanlab / --no-cleanlab / unset: run the cleanlab comparison? Checked before any work.

    Unset means "if installed" (a note says it is skipped otherwise); an explicit --cleanlab without cleanlab
    installed is a ConfigError, instead of a failure after the distillation and scoring."""
    from jaxdistill.errors import ConfigError

    if flag is False:
        return False
    if cleanlab_available():
        return True
    if flag is None:
        print("note: cleanlab is not installed, so the cleanlab comparison is skipped (`pip install cleanlab` "
              "to add it)")
        return False
    raise ConfigError("--cleanlab asks for the cleanlab comparison, but cleanlab is not installed; "
                      "`pip install cleanlab`, or pass --no-cleanlab")


def _issues_csv(path: str, scores, data, limit: int) -> None:
    from jaxdistill.checkpoint import atomic_write_text

    names = data.class_names
    rows = ["rank,index,given_label,suggested_label,quality,flagged" + (",true_label" if data.y_true is not None else "")]
    for r, i in enumerate(scores.ranking[:limit]):
        row = (f"{r},{i},{names[scores.labels[i]]},{names[scores.suggested[i]]},{scores.quality[i]:.5f},"
               f"{int(scores.flagged[i])}")
        if data.y_true is not None:
            row += f",{names[data.y_true[i]]}"
        rows.append(row)
    atomic_write_text(path, "\n".join(rows) + "\n")


def cmd_detect(args, noisy_data) -> int:
    import numpy as np

    from jaxdistill.detect import cleanlab_scores, cross_val_pred_probs, score_labels
    from jaxdistill.pipeline import stage_key
    from jaxdistill.report import noise_entry, write_results

    use_cleanlab = resolve_cleanlab(args.cleanlab)
    data = noisy_data(args)
    mcfg, derived = _settings(args, data)
    ds, secs = _distilled(args, data, mcfg)
    t0 = time.perf_counter()
    scores = score_labels(ds, data, stage_key(args.seed, "detect"), k=args.k, preset=args.preset, progress=True)
    ours_secs = secs + time.perf_counter() - t0
    results = {"distilled": {"metrics": scores.meta.get("metrics"), "flagged": int(scores.flagged.sum()),
                             "seconds": ours_secs}}
    _issues_csv(os.path.join(args.out, "label_issues.csv"), scores, data, args.top)
    if use_cleanlab:
        t0 = time.perf_counter()
        probs = cross_val_pred_probs(data, stage_key(args.seed, "cleanlab"), folds=5, epochs=args.cv_epochs,
                                     progress=True)
        cl = cleanlab_scores(probs, data.y_noisy)
        m = None
        if data.y_true is not None:
            from jaxdistill.detect import detection_metrics

            m = detection_metrics(cl.quality, cl.flagged, data.y_noisy != data.y_true)
        results["cleanlab"] = {"metrics": m, "flagged": int(cl.flagged.sum()), "seconds": time.perf_counter() - t0}
    write_results(os.path.join(args.out, "results.json"),
                  {"command": "detect", "method": args.method, "dataset": args.dataset, "ipc": mcfg.ipc,
                   "preset": args.preset, "seed": args.seed, "k": args.k, **derived},
                  noise_entry(data), results, **derived)
    print("| detector | flagged | precision | recall | F1 | AUROC | time |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["metrics"] or {}
        f = lambda k: "-" if k not in m else f"{m[k]:.3f}"  # noqa: E731
        print(f"| {name} | {r['flagged']} | {f('precision')} | {f('recall')} | {f('f1')} | {f('auroc')} | "
              f"{r['seconds']:.0f} s |")
    print(f"ranked issues: {os.path.join(args.out, 'label_issues.csv')}  (flagged {int(scores.flagged.sum())} "
          f"of {len(np.asarray(data.y_noisy))})")
    return 0


def cmd_repair(args, noisy_data) -> int:
    from jaxdistill.pipeline import stage_key
    from jaxdistill.repair import RepairConfig, repair
    from jaxdistill.report import noise_entry, results_table, write_results

    from jaxdistill.baseline import get_baseline_config

    from jaxdistill.repair import DEFAULT_LABEL_RULE, DEFAULT_RULE

    rule = args.rule or (DEFAULT_LABEL_RULE if args.redistill else DEFAULT_RULE)   # --rule auto: checked by check_args
    data = noisy_data(args, val_fraction=args.val_fraction)
    mcfg, derived = _settings(args, data)
    cfg = RepairConfig(rule=rule, preset=args.preset, score_k=args.k,
                       train=get_baseline_config(args.dataset, args.preset, data))
    ds, _ = _distilled(args, data, mcfg)
    redistill = None
    if args.redistill:
        from jaxdistill.methods import distill

        redistill = lambda d, key: distill(args.method, mcfg, d, key,  # noqa: E731
                                           workdir=os.path.join(args.out, f"{args.method}_redistilled"))
    res = repair(data, ds, stage_key(args.seed, "repair"), cfg, redistill=redistill, progress=True)
    results = {name: {**r, "method": name, "protocol": "full data" if name != "distilled" else "standard"}
               for name, r in res.results.items()}
    doc = write_results(os.path.join(args.out, "results.json"),
                        {"command": "repair", "method": args.method, "dataset": args.dataset, "ipc": mcfg.ipc,
                         "preset": args.preset, "seed": args.seed, "repair": dataclasses.asdict(cfg), **derived},
                        noise_entry(data), results, label_stats=res.stats, **derived)
    print(results_table(doc["results"]))
    print("labels:", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.stats.items()})
    return 0


LNL_METHODS = ("gce", "elr", "dividemix", "coteaching", "jocor", "cleanlearning")


def flag_metrics(data, label_scores, flagged) -> dict | None:
    """Detection metrics of a method's own wrong-label scores (high = likely wrong) and flags, where the true
    labels are known (else None)."""
    import numpy as np

    from jaxdistill.detect import detection_metrics

    if getattr(data, "y_true", None) is None:
        return None
    return detection_metrics(-np.asarray(label_scores, np.float64), np.asarray(flagged, bool),
                             np.asarray(data.y_noisy) != np.asarray(data.y_true))


def run_lnl_method(method: str, data, bcfg, key, noise_kind: str = "symmetric", cv_folds: int = 5,
                   memo=None) -> dict:
    """One established noisy-label method with the baseline's net and recipe `bcfg`: its result dict
    (acc_mean / accs at the last epoch, best_acc_mean where data has a validation split, and `detect` where the
    method flags labels and the true labels are known). memo: DivideMix's finished lambda_u candidates
    (`baselines.dividemix.train_dividemix_select`)."""
    r = _train_lnl_method(method, data, bcfg, key, noise_kind, cv_folds, memo)
    if "label_scores" in r and "detect" not in r:
        r["detect"] = flag_metrics(data, r["label_scores"], r["flagged"])
    return r


def _train_lnl_method(method: str, data, bcfg, key, noise_kind: str, cv_folds: int, memo=None) -> dict:
    from jaxdistill import baselines as B
    from jaxdistill.errors import ConfigError

    if method in ("gce", "elr"):
        return B.train_robust(data, B.RobustConfig(loss=method, width=bcfg.width, k=bcfg.k, train=bcfg.train), key)
    if method == "dividemix":
        return B.train_dividemix_select(data, B.DivideMixConfig(width=bcfg.width, k=bcfg.k, train=bcfg.train), key,
                                        memo=memo)
    if method in ("coteaching", "jocor"):
        from jaxdistill.baselines.coteaching import pair_config
        from jaxdistill.baselines.jocor import jocor_lam

        cfg = pair_config(bcfg)
        if method == "coteaching":
            return B.train_coteaching(data, cfg, key)
        return B.train_jocor(data, cfg.replace(lam=jocor_lam(noise_kind)), key)
    if method == "cleanlearning":
        from jaxdistill.baselines.cleanlearning import train_cleanlearning

        return train_cleanlearning(data, bcfg, key, folds=cv_folds)
    raise ConfigError(f"--method {method!r}; allowed {', '.join(LNL_METHODS)}")


def cmd_lnl(args, noisy_data) -> int:
    from jaxdistill.baseline import get_baseline_config
    from jaxdistill.pipeline import derived_record, stage_key
    from jaxdistill.report import noise_entry, results_table, write_results

    from jaxdistill.errors import ConfigError

    if args.cv_folds < 2:
        raise ConfigError(f"--cv-folds={args.cv_folds} must be >= 2")
    data = noisy_data(args, val_fraction=args.val_fraction)
    bcfg = get_baseline_config(args.dataset, args.preset, data)
    bcfg = dataclasses.replace(bcfg, k=args.k or bcfg.k, width=args.width or bcfg.width,
                               train=bcfg.train.replace(epochs=args.epochs or bcfg.train.epochs))
    derived = derived_record(args.dataset, data, None, args.preset)
    t0 = time.perf_counter()
    r = run_lnl_method(args.method, data, bcfg, stage_key(args.seed, f"lnl/{args.method}"),
                       noise_kind=args.noise.split(":")[0], cv_folds=args.cv_folds)
    keep = {k: v for k, v in r.items() if k not in ("label_scores", "flagged")}
    results = {args.method: {**keep, "method": args.method, "protocol": "full data",
                             "seconds": time.perf_counter() - t0}}
    if "best_acc_mean" in r:
        results[f"{args.method} valselected"] = {"acc_mean": r["best_acc_mean"], "acc_std": r.get("best_acc_std", 0.0),
                                                 "accs": r.get("best_accs"), "method": f"{args.method} valselected",
                                                 "protocol": "full data"}
    if "label_scores" in r:
        import numpy as np

        np.save(os.path.join(args.out, "label_scores.npy"), np.asarray(r["label_scores"], np.float32))
    doc = write_results(os.path.join(args.out, "results.json"),
                        {"command": "lnl", "method": args.method, "dataset": args.dataset, "preset": args.preset,
                         "seed": args.seed, "val_fraction": args.val_fraction,
                         "baseline": dataclasses.asdict(bcfg), **derived},
                        noise_entry(data), results, **derived)
    print(results_table(doc["results"]))
    if r.get("detect"):
        d = r["detect"]
        print(f"its wrong-label flags: precision {d['precision']:.3f} recall {d['recall']:.3f} AUROC {d['auroc']:.3f}")
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0


def add_commands(sub, common_data, noisy_data, config_flags=None) -> None:
    s = sub.add_parser("detect", help="find the wrong labels with nets trained on the distilled set (+ cleanlab)")
    common_data(s)
    s.add_argument("--method", default="dance", help="datm | dance | rcig")
    s.add_argument("--ipc", type=int, default=10)
    s.add_argument("--k", type=int, default=5, help="scoring nets")
    s.add_argument("--top", type=int, default=1000, help="rows in label_issues.csv")
    s.add_argument("--cleanlab", action=argparse_bool(), default=None,
                   help="also run cleanlab's confident learning on cross-validated ConvNets (default: on when "
                        "cleanlab is installed)")
    s.add_argument("--cv-epochs", type=int, default=10, help="epochs of each cross-validation net for cleanlab")
    if config_flags is not None:
        config_flags(s)  # --config / --set on the method's config
    s.add_argument("--out", required=True)
    s.set_defaults(fn=lambda a: cmd_detect(a, noisy_data))

    s = sub.add_parser("repair", help="distil, relabel / select, retrain on the repaired full set")
    common_data(s)
    s.add_argument("--method", default="dance", help="datm | dance | rcig")
    s.add_argument("--ipc", type=int, default=10)
    s.add_argument("--k", type=int, default=5)
    from jaxdistill.repair import DEFAULT_LABEL_RULE, DEFAULT_RULE, LABEL_RULES, RULES

    s.add_argument("--rule", default=None, choices=list(RULES),
                   help=f"label rules {' / '.join(LABEL_RULES)} edit the labels; "
                        f"{' / '.join(r for r in RULES if r not in LABEL_RULES)} train with the distilled-set nets "
                        f"as an anchor (jaxdistill.anchored); default {DEFAULT_RULE}, or {DEFAULT_LABEL_RULE} with "
                        f"--redistill (chosen on the noisy validation split, BUILD_NOTES)")
    s.add_argument("--redistill", action="store_true", help="also distil again from the repaired set")
    s.add_argument("--val-fraction", type=float, default=0.0,
                   help="noisy validation split held out of training (rule auto chooses on it, e.g. 0.1; every "
                        "rule then reports its best epoch by it). Default 0: none, so a set distilled by `detect` "
                        "into the same --out is reused")
    if config_flags is not None:
        config_flags(s)  # --config / --set on the method's config
    s.add_argument("--out", required=True)
    s.set_defaults(fn=lambda a: cmd_repair(a, noisy_data))

    s = sub.add_parser("lnl", help="train with an established noisy-label method (GCE, ELR, DivideMix, Co-teaching, "
                                   "JoCoR, CleanLearning) on the baseline's net and recipe")
    common_data(s)
    s.add_argument("--method", required=True, choices=list(LNL_METHODS))
    s.add_argument("--k", type=int, default=None, help="independent runs (default: the baseline's nets)")
    s.add_argument("--width", type=int, default=None, help="ConvNet width (default: the baseline's)")
    s.add_argument("--epochs", type=int, default=None, help="training epochs (default: the baseline's)")
    s.add_argument("--val-fraction", type=float, default=0.1,
                   help="noisy validation split for the best-epoch figure and DivideMix's lambda_u (default 0.1)")
    s.add_argument("--cv-folds", type=int, default=5, help="CleanLearning's cross-validation folds")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=lambda a: cmd_lnl(a, noisy_data))


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction
