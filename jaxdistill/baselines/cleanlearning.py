"""cleanlab's CleanLearning as a trained method: out-of-fold probabilities from K ConvNets (K-fold cross-validation
on the noisy labels), `cleanlab.filter.find_label_issues` on them, then the noisy-data baseline's recipe refitted
on the samples it keeps. cleanlab is an optional dependency (`pip install cleanlab`, in the `[dev]` extra); without
it this raises a ConfigError that names it.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from jaxdistill.baseline import BaselineConfig, run_baseline
from jaxdistill.data.noisy import keep_train
from jaxdistill.detect import cleanlab_scores, cross_val_pred_probs, detection_metrics


def train_cleanlearning(data, bcfg: BaselineConfig, key: jax.Array, folds: int = 5, cv_epochs: int | None = None,
                        progress: bool = False) -> dict:
    """CV (folds nets x cv_epochs, default the baseline's epochs) -> flags -> refit on the kept samples.

    Returns the refit's baseline entries (acc_mean / accs at the last epoch; best_acc_mean where the data has a
    noisy validation split), kept_fraction, cv_epochs and, where true labels are known, `detect` (cleanlab's
    quality as the ranking, its flags as the flagged set)."""
    t0 = time.perf_counter()
    k_cv, k_fit = jax.random.split(key)
    cv_epochs = cv_epochs or bcfg.train.epochs
    probs = cross_val_pred_probs(data, k_cv, folds=folds, epochs=cv_epochs, width=bcfg.width,
                                 train_cfg=bcfg.train, progress=progress)
    cl = cleanlab_scores(probs, data.y_noisy)
    kept = ~np.asarray(cl.flagged, bool)
    pruned = keep_train(data, kept)
    # the refit is a method's training: the shared recipe, not the baseline's memorising schedule
    r = run_baseline(pruned, dataclasses.replace(bcfg, memorise=None), k_fit, clean=False, progress=progress)
    last = r["baseline_noisy"]
    out = {"method": "cleanlearning", "acc_mean": last["acc_mean"], "acc_std": last["acc_std"], "accs": last["accs"],
           "kept_fraction": float(kept.mean()), "cv_epochs": int(cv_epochs), "folds": int(folds),
           "label_scores": (-np.asarray(cl.quality)).tolist(), "flagged": np.asarray(cl.flagged, bool).tolist()}
    if "baseline_noisy_valselected" in r:
        b = r["baseline_noisy_valselected"]
        out.update(best_acc_mean=b["acc_mean"], best_accs=b["accs"])
    y_true = getattr(data, "y_true", None)
    if y_true is not None:
        out["detect"] = detection_metrics(cl.quality, cl.flagged, np.asarray(data.y_noisy) != np.asarray(y_true))
    out["seconds"] = time.perf_counter() - t0
    return out
