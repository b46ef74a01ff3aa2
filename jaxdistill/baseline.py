"""The study's baseline: the same ConvNet trained on the full noisy training set (and on the clean
labels, the upper bound, where true labels are known).

Two figures per run: the accuracy after the last epoch, and the accuracy at the epoch a noisy
validation split (carved from the noisy training set, never the test labels) selects.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import jax
import numpy as np

from jaxdistill.errors import ConfigError
from jaxdistill.evaluate import default_depth
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, accuracy, train_models_auto


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    width: int = 128
    k: int = 3
    train: TrainConfig = TrainConfig(epochs=50, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                     schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)


def get_baseline_config(dataset: str, preset: str = "paper") -> BaselineConfig:
    """paper: ConvNet-3 width 128, 50 epochs; quick: width 32, few epochs (2-core CPU)."""
    if preset == "paper":
        return BaselineConfig()
    if preset == "quick":
        epochs = 30 if dataset == "digits" else 6
        return BaselineConfig(width=32, k=3, train=BaselineConfig().train.replace(epochs=epochs, batch_size=128))
    raise ConfigError(f"unknown preset {preset!r}; allowed: ['paper', 'quick']")


def _fit(net, x, y, tc, key, k, x_test, y_test, x_val, y_val, progress, log=None):
    """Train k nets; per epoch record the (noisy) validation accuracy and keep the params, then test
    only the final epoch and each net's selected epoch (test evaluation is the costly part on CPU)."""
    per_epoch = []

    def on_epoch(epoch, state):
        row = {"epoch": epoch, "params": jax.device_get(state.params)}
        if x_val is not None:
            row["val"] = accuracy(net, state.params, x_val, y_val)
            if log is not None:
                log.log(epoch, val_acc=float(np.mean(row["val"])))
        per_epoch.append(row)

    res = train_models_auto(net, x, y, tc, key, num_models=k, on_epoch=on_epoch if x_val is not None else None,
                       progress=progress, num_classes=net.cfg.num_classes, metrics_log=log)
    final = accuracy(net, res.params, x_test, y_test)
    out = {"final": final}
    if log is not None:  # the test set is scored only here (final and selected epochs): it is the costly part
        log.log(tc.epochs, test_acc=float(np.mean(final)))
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
            sel_epoch = int(np.median([per_epoch[i]["epoch"] for i in best]))
            log.log(sel_epoch, test_acc_selected=float(selected.mean()))
        out["selected_epoch"] = [per_epoch[i]["epoch"] for i in best]
        out["val_curve"] = vals.mean(1).tolist()
    return out


def _entry(accs, **extra) -> dict:
    accs = np.asarray(accs, np.float64)
    return {"acc_mean": float(accs.mean()), "acc_std": float(accs.std()), "accs": [float(a) for a in accs], **extra}


def run_baseline(data, cfg: BaselineConfig, key: jax.Array, *, clean: bool = True,
                 progress: bool = False, run_dir: Optional[str] = None) -> dict:
    """Results dict: baseline_noisy (final epoch), baseline_noisy_valselected (if data has a val split),
    baseline_clean (if true labels are known and clean=True). Accuracies in [0, 1].

    run_dir: per-epoch curves (train loss, lr, noisy-val accuracy; test accuracy where scored) go to
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
    results["baseline_noisy"] = _entry(r["final"], seconds=secs)
    if "selected" in r:
        results["baseline_noisy_valselected"] = _entry(r["selected"], selected_epoch=r["selected_epoch"],
                                                       val_curve=r["val_curve"])
    y_true = getattr(data, "y_true", None)
    if clean and y_true is not None and not np.array_equal(y_true, data.y_noisy):
        t0 = time.perf_counter()
        rc = _fit(net, data.x_train, y_true, cfg.train, k_clean, cfg.k, data.x_test, data.y_test, None, None,
                  progress and "baseline (clean)", MetricsLog(run_dir, "baseline_clean") if run_dir else None)
        results["baseline_clean"] = _entry(rc["final"], seconds=time.perf_counter() - t0)
    return results
