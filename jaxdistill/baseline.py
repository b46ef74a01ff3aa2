"""The study's baseline: the same ConvNet trained on the full noisy training set (and on the clean
labels, the upper bound, where true labels are known).

Two figures per run: the accuracy after the last epoch (the model that has fitted the noise, which the
study compares against), and the accuracy at the epoch a noisy validation split (carved from the noisy
training set, never the test labels) selects (early stopping).

Convergence: every run records the per-epoch curve of accuracy on the noisy training labels, the noisy
validation labels and a test slice. `converged(curve)` is the criterion a preset's baseline must meet: the
noisy-label training accuracy rose by less than `tol` (1 point) over the last `window` epochs (a fifth of
the run, at least 3). A preset whose baseline fails it is not a fair reference for the study's comparison.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional
import jax
import numpy as np

from jaxdistill.configs.derive import baseline_budget_for
from jaxdistill.evaluate import default_depth
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, accuracy, train_models_auto
from jaxdistill.sharding import to_host


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    width: int = 128
    k: int = 3
    train: TrainConfig = TrainConfig(epochs=50, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                     schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)


def get_baseline_config(dataset: str, preset: str = "paper", data=None) -> BaselineConfig:
    """The baseline of `preset` (budgets in `jaxdistill.configs.presets.baseline_budget`): paper ConvNet-3
    width 128, 50 epochs; cpu / quick width 32, epochs measured to meet `converged` (BUILD_NOTES.md).
    A data set without a named setting (a user's npz) with its `data` given: the nearest named set's budget,
    batch at most the training set (`configs/derive.py`)."""
    b = baseline_budget_for(dataset, preset, data)
    return BaselineConfig(width=b.width, k=b.k,
                          train=BaselineConfig().train.replace(epochs=b.epochs, batch_size=b.batch_size))


CURVE_TRAIN = 2000  # training images scored per epoch for the curve (the first ones; the set is shuffled)
CURVE_TEST = 2000   # test images scored per epoch for the curve (the final figures use the whole test set)


def converged(train_curve, tol: float = 0.01, window: int | None = None) -> dict:
    """The convergence criterion on a per-epoch noisy-label training-accuracy curve (fractions).

    Converged when the best accuracy of the last `window` epochs (default max(3, ceil(E / 5))) exceeds the
    accuracy just before that window by less than `tol`. Returns {converged, rise, window, tol}."""
    c = np.asarray(train_curve, np.float64)
    e = c.shape[0]
    w = window or max(3, -(-e // 5))
    if e <= w:
        return {"converged": False, "rise": None, "window": int(w), "tol": tol,
                "criterion": f"needs more than {w} epochs"}
    rise = float(c[-w:].max() - c[-w - 1])
    return {"converged": bool(rise < tol), "rise": rise, "window": int(w), "tol": tol,
            "criterion": f"noisy-label train accuracy rose {100 * rise:.2f} points over the last {w} epochs "
                         f"(converged below {100 * tol:.1f})"}


def _fit(net, x, y, tc, key, k, x_test, y_test, x_val, y_val, progress, log=None, curve: bool = True):
    """Train k nets; per epoch record the curve (noisy-label train / val / test-slice accuracy, mean over
    nets) and keep the params, then test the final epoch and each net's selected epoch on the whole test
    set (test evaluation is the costly part on CPU)."""
    per_epoch = []
    xc, yc = x[:CURVE_TRAIN], np.asarray(y)[:CURVE_TRAIN]
    xtc, ytc = x_test[:CURVE_TEST], y_test[:CURVE_TEST]

    def on_epoch(epoch, state):
        row = {"epoch": epoch}
        if x_val is not None:
            row["params"] = to_host(state.params)
            row["val"] = accuracy(net, state.params, x_val, y_val)
            if log is not None:
                log.log(epoch, val_acc=float(np.mean(row["val"])))
        if curve:
            row["train"] = accuracy(net, state.params, xc, yc)
            row["test"] = accuracy(net, state.params, xtc, ytc)
            if log is not None:
                log.log(epoch, train_acc_noisy=float(np.mean(row["train"])), test_acc_slice=float(np.mean(row["test"])))
        per_epoch.append(row)

    res = train_models_auto(net, x, y, tc, key, num_models=k,
                            on_epoch=on_epoch if (x_val is not None or curve) else None,
                            progress=progress, num_classes=net.cfg.num_classes, metrics_log=log)
    final = accuracy(net, res.params, x_test, y_test)
    out = {"final": final}
    if log is not None:  # the whole test set is scored only here (final and selected epochs)
        log.log(tc.epochs, test_acc=float(np.mean(final)))
    if curve:
        out["curve"] = {"epoch": [r["epoch"] for r in per_epoch],
                        "train_noisy": [float(np.mean(r["train"])) for r in per_epoch],
                        "test_slice": [float(np.mean(r["test"])) for r in per_epoch],
                        "test_slice_size": int(len(ytc)), "train_size": int(len(yc))}
        if x_val is not None:
            out["curve"]["val_noisy"] = [float(np.mean(r["val"])) for r in per_epoch]
        out["convergence"] = converged(out["curve"]["train_noisy"])
    if x_val is not None:
        # Per net: the epoch with the best noisy-validation accuracy (first on ties).
        vals = np.stack([r["val"] for r in per_epoch])      # (E, k)
        best = vals.argmax(0)
        selected = np.empty(k)
        for e in sorted(set(best.tolist())):
            accs = final if e == len(per_epoch) - 1 else accuracy(net, per_epoch[e]["params"], x_test, y_test)
            selected[best == e] = np.asarray(accs)[best == e]
        out["selected"] = selected
        if log is not None:
            # logged at the median selected epoch (each net may select its own)
            log.log(int(np.median([per_epoch[i]["epoch"] for i in best])), test_acc_selected=float(selected.mean()))
        out["selected_epoch"] = [per_epoch[i]["epoch"] for i in best]
        out["val_curve"] = vals.mean(1).tolist()
    return out


def _entry(accs, **extra) -> dict:
    accs = np.asarray(accs, np.float64)
    return {"acc_mean": float(accs.mean()), "acc_std": float(accs.std()), "accs": [float(a) for a in accs], **extra}


def run_baseline(data, cfg: BaselineConfig, key: jax.Array, *, clean: bool = True,
                 progress: bool = False, run_dir: Optional[str] = None) -> dict:
    """Results dict: baseline_noisy (final epoch, with its per-epoch `curve` and `convergence`),
    baseline_noisy_valselected (if data has a val split), baseline_clean (if true labels are known and
    clean=True). Accuracies in [0, 1].

    run_dir: per-epoch curves (train loss, lr, noisy-label train / val accuracy, test slice) go to
    run_dir/metrics.jsonl, stages 'baseline_noisy' / 'baseline_clean'."""
    from jaxdistill.runlog import MetricsLog
    size = data.x_train.shape[1]
    net = make_net(NetConfig(data.num_classes, width=cfg.width, depth=default_depth(size)))
    k_noisy, k_clean = jax.random.split(key)
    results = {}
    t0 = time.perf_counter()
    r = _fit(net, data.x_train, data.y_noisy, cfg.train, k_noisy, cfg.k, data.x_test, data.y_test,
             getattr(data, "x_val", None), getattr(data, "y_val", None), progress and "baseline (noisy)",
             MetricsLog(run_dir, "baseline_noisy") if run_dir else None)
    secs = time.perf_counter() - t0
    results["baseline_noisy"] = _entry(r["final"], seconds=secs, curve=r["curve"], convergence=r["convergence"],
                                       epochs=int(cfg.train.epochs))
    if "selected" in r:
        results["baseline_noisy_valselected"] = _entry(r["selected"], selected_epoch=r["selected_epoch"],
                                                       val_curve=r["val_curve"])
    y_true = getattr(data, "y_true", None)
    if clean and y_true is not None and not np.array_equal(y_true, data.y_noisy):
        t0 = time.perf_counter()
        rc = _fit(net, data.x_train, y_true, cfg.train, k_clean, cfg.k, data.x_test, data.y_test, None, None,
                  progress and "baseline (clean)", MetricsLog(run_dir, "baseline_clean") if run_dir else None)
        results["baseline_clean"] = _entry(rc["final"], seconds=time.perf_counter() - t0, curve=rc["curve"],
                                           convergence=rc["convergence"], epochs=int(cfg.train.epochs))
    return results
