"""The study's baseline: the same ConvNet trained on the full noisy training set (and on the clean
labels, the upper bound, where true labels are known).

Two figures per run: the accuracy after the last epoch (the model that has fitted the noise, which the
study compares against), and the accuracy at the epoch a noisy validation split (carved from the noisy
training set, never the test labels) selects (early stopping).

Convergence: every run records the per-epoch curve of accuracy on the noisy training labels, the noisy
validation labels and a test slice. `converged(curve)` is the criterion a preset's baseline must meet: the
noisy-label training accuracy rose by less than `tol` (1 point) over the last `window` epochs (a fifth of
the run, at least 3). A preset whose baseline fails it is not a fair reference for the study's comparison.

Memorisation (the noisy-label field's "last epoch"): where true labels are known, every epoch also records the
wrong-label fit, the fraction of the wrongly labelled training samples whose prediction equals their *noisy*
label. `BaselineConfig.memorise` (a `MemoriseConfig`) trains at the constant learning rate until the net has
memorised (`memorised`: the fit reached `target`, or its mean over the last fifth of the epochs (at least 5) rose
less than `tol` over the mean of the fifth before, after `min_epochs`), then `decay_epochs` at lr * gamma and lr * gamma^2; its last epoch is the field's
baseline, which has fitted the wrong labels.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional
import jax
import numpy as np

from jaxdistill.configs.derive import baseline_budget_for
from jaxdistill.errors import ConfigError
from jaxdistill.evaluate import default_depth
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, accuracy, train_models_auto
from jaxdistill.sharding import to_host


@dataclasses.dataclass(frozen=True)
class MemoriseConfig:
    """Train at constant lr for at most max_epochs until `memorised` holds, then decay_epochs (half at lr * gamma,
    half at lr * gamma^2, gamma from the train config)."""

    max_epochs: int = 200
    min_epochs: int = 30
    target: float = 0.9
    tol: float = 0.01
    decay_epochs: int = 10

    def __post_init__(self):
        if not (1 <= self.min_epochs <= self.max_epochs) or self.decay_epochs < 0:
            raise ConfigError(f"memorise: min_epochs={self.min_epochs}, max_epochs={self.max_epochs}, "
                              f"decay_epochs={self.decay_epochs}; allowed 1 <= min_epochs <= max_epochs, "
                              f"decay_epochs >= 0")
        if not (0.0 < self.target <= 1.0 and self.tol > 0):
            raise ConfigError(f"memorise: target={self.target} must be in (0, 1] and tol={self.tol} > 0")


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    width: int = 128
    k: int = 3
    train: TrainConfig = TrainConfig(epochs=50, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                     schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    memorise: Optional[MemoriseConfig] = None


def get_baseline_config(dataset: str, preset: str = "paper", data=None) -> BaselineConfig:
    """The baseline of `preset` (budgets in `jaxdistill.configs.presets.baseline_budget`): paper ConvNet-3
    width 128, 50 epochs; cpu / quick width 32, epochs measured to meet `converged` (BUILD_NOTES.md).
    A data set without a named setting (a user's npz) with its `data` given: the nearest named set's budget,
    batch at most the training set (`configs/derive.py`)."""
    b = baseline_budget_for(dataset, preset, data)
    return BaselineConfig(width=b.width, k=b.k,
                          train=BaselineConfig().train.replace(epochs=b.epochs, batch_size=b.batch_size),
                          memorise=MemoriseConfig() if b.memorise else None)


def schedule_name(cfg: BaselineConfig) -> str:
    """How the baseline trained, for reports: 'memorise' (to memorisation, then decayed) or 'fixed N epochs'."""
    return "memorise" if cfg.memorise is not None else f"fixed {cfg.train.epochs} epochs"


CURVE_TRAIN = 2000  # training images scored per epoch for the curve (the first ones; the set is shuffled)
CURVE_TEST = 2000   # test images scored per epoch for the curve (the final figures use the whole test set)
WRONG_FIT_MAX = 2000  # wrongly labelled training images scored per epoch for the wrong-label fit (the first ones)


def wrong_fit_mask(y_noisy, y_true) -> Optional[np.ndarray]:
    """(N,) bool: the samples whose noisy label differs from the true one (None when true labels are unknown)."""
    if y_true is None:
        return None
    return np.asarray(y_noisy) != np.asarray(y_true)


def wrong_label_fit(net, params_stacked, x, y_noisy, wrong: np.ndarray, limit: int = WRONG_FIT_MAX) -> np.ndarray:
    """(K,) the fraction of the wrongly labelled samples (the first `limit` where `wrong`) whose prediction equals
    their noisy label, per net: how much of the noise each net has memorised."""
    idx = np.flatnonzero(np.asarray(wrong, bool))[:limit]
    return accuracy(net, params_stacked, np.asarray(x)[idx], np.asarray(y_noisy)[idx])


def memorised(fit_curve, target: float = 0.9, tol: float = 0.01, min_epochs: int = 30) -> dict:
    """The memorisation criterion on a per-epoch wrong-label fit curve (fractions, epoch 1 first).

    Memorised when the last value reached `target`. Otherwise the fit has stopped rising when, after at least
    `min_epochs`, the mean of the last w = max(5, ceil(E / 5)) epochs exceeds the mean of the w before them by
    less than `tol` (window means, since the fit of a few hundred samples jumps by points from epoch to epoch,
    and a net can pause for several epochs before it starts memorising). Returns {stop: bool, reason: 'target' |
    'plateau' | None, memorised: fit >= target, fit, rise, window, ...}."""
    c = np.asarray(fit_curve, np.float64)
    e = c.shape[0]
    w = max(5, -(-e // 5))
    fit = float(c[-1]) if e else 0.0
    out = {"memorised": bool(e and fit >= target), "fit": fit, "epochs": int(e), "window": int(w), "tol": tol,
           "target": target, "stop": False, "reason": None}
    if e and fit >= target:
        out.update(stop=True, reason="target")
    elif e >= max(min_epochs, 2 * w):
        rise = float(c[-w:].mean() - c[-2 * w:-w].mean())
        out["rise"] = rise
        if rise < tol:
            out.update(stop=True, reason="plateau")
    return out


class _Memorised(Exception):
    """Raised from the per-epoch hook to end the constant-lr phase (carries the training state)."""

    def __init__(self, epoch: int, state):
        super().__init__(epoch)
        self.epoch, self.state = epoch, state


class _OffsetLog:
    """A metrics log whose steps continue after `offset` epochs (the decay phase after the constant phase)."""

    def __init__(self, log, offset: int):
        self.log_, self.offset = log, offset

    def log(self, step, **kw):
        self.log_.log(step + self.offset, **kw)


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


def _fit(net, x, y, tc, key, k, x_test, y_test, x_val, y_val, progress, log=None, curve: bool = True,
         wrong: Optional[np.ndarray] = None, memorise: Optional[MemoriseConfig] = None):
    """Train k nets; per epoch record the curve (noisy-label train / val / test-slice accuracy, mean over
    nets) and keep the params, then test the final epoch and each net's selected epoch on the whole test
    set (test evaluation is the costly part on CPU). wrong (N,) bool: the wrongly labelled samples, whose fit to
    their noisy labels is recorded per epoch; memorise: train to memorisation first (module docstring)."""
    per_epoch = []
    has_wrong = wrong is not None and bool(np.any(wrong))
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
        if has_wrong:
            row["wrong"] = float(np.mean(wrong_label_fit(net, state.params, x, y, wrong)[:k]))
            if log is not None:
                log.log(epoch, wrong_fit=row["wrong"])
        per_epoch.append(row)

    hook = on_epoch if (x_val is not None or curve or has_wrong) else None
    memo = None
    if memorise is None:
        res = train_models_auto(net, x, y, tc, key, num_models=k, on_epoch=hook,
                                progress=progress, num_classes=net.cfg.num_classes, metrics_log=log)
        params, total = res.params, tc.epochs
    else:
        params, total, memo = _fit_to_memorisation(net, x, y, tc, key, k, memorise, on_epoch, per_epoch,
                                                   progress, log)
    final = accuracy(net, params, x_test, y_test)
    out = {"final": final, "epochs": int(total)}
    if memo is None and has_wrong:  # a fixed schedule: whether it happened to memorise, by the same criterion
        memo = {**memorised([r["wrong"] for r in per_epoch]), "stopped_by": "fixed schedule"}
    if memo is not None:
        out["memorisation"] = memo
    if log is not None:  # the whole test set is scored only here (final and selected epochs)
        log.log(total, test_acc=float(np.mean(final)))
    if curve:
        out["curve"] = {"epoch": [r["epoch"] for r in per_epoch],
                        "train_noisy": [float(np.mean(r["train"])) for r in per_epoch],
                        "test_slice": [float(np.mean(r["test"])) for r in per_epoch],
                        "test_slice_size": int(len(ytc)), "train_size": int(len(yc))}
        if x_val is not None:
            out["curve"]["val_noisy"] = [float(np.mean(r["val"])) for r in per_epoch]
        out["convergence"] = converged(out["curve"]["train_noisy"])
    if has_wrong:
        if curve:
            out["curve"]["wrong_fit"] = [r["wrong"] for r in per_epoch]
            out["curve"]["wrong_fit_size"] = int(min(np.sum(wrong), WRONG_FIT_MAX))
        out["wrong_fit"] = per_epoch[-1]["wrong"]
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


def _fit_to_memorisation(net, x, y, tc, key, k, m: MemoriseConfig, on_epoch, per_epoch, progress, log):
    """Constant lr until `memorised` says stop (on the wrong-label fit, else on the noisy-label train accuracy),
    then m.decay_epochs at lr * gamma, lr * gamma^2. Returns (params, total epochs, memorisation dict)."""
    key1, key2 = jax.random.split(key)

    def fit_curve():
        return [r["wrong"] if "wrong" in r else float(np.mean(r["train"])) for r in per_epoch]

    def hook1(epoch, state):
        on_epoch(epoch, state)
        if memorised(fit_curve(), m.target, m.tol, m.min_epochs)["stop"]:
            raise _Memorised(epoch, state)

    tc1 = tc.replace(schedule="constant", epochs=m.max_epochs)
    try:
        res = train_models_auto(net, x, y, tc1, key1, num_models=k, on_epoch=hook1, progress=progress,
                                num_classes=net.cfg.num_classes, metrics_log=log)
        params, e1 = res.params, m.max_epochs
    except _Memorised as stop:
        params, e1 = stop.state.params, stop.epoch
    params = jax.tree_util.tree_map(lambda a: np.asarray(a)[:k], to_host(params))  # drop sharding padding
    memo = memorised(fit_curve(), m.target, m.tol, m.min_epochs)
    memo.update(constant_epochs=int(e1), on="wrong_fit" if per_epoch and "wrong" in per_epoch[0] else "train_noisy",
                stopped_by=memo["reason"] or "max_epochs")
    if m.decay_epochs == 0:
        return params, e1, memo
    tc2 = tc.replace(epochs=m.decay_epochs, lr=tc.lr * tc.gamma, schedule="multistep", milestones=(0.5,))
    res = train_models_auto(net, x, y, tc2, key2, num_models=k, init_params=params,
                            on_epoch=lambda e, s: on_epoch(e1 + e, s), progress=progress,
                            num_classes=net.cfg.num_classes, metrics_log=None if log is None else _OffsetLog(log, e1))
    return res.params, e1 + m.decay_epochs, memo


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
             MetricsLog(run_dir, "baseline_noisy") if run_dir else None,
             wrong=wrong_fit_mask(data.y_noisy, getattr(data, "y_true", None)), memorise=cfg.memorise)
    secs = time.perf_counter() - t0
    extra = {k_: r[k_] for k_ in ("wrong_fit", "memorisation") if k_ in r}
    results["baseline_noisy"] = _entry(r["final"], seconds=secs, curve=r["curve"], convergence=r["convergence"],
                                       epochs=r["epochs"], schedule=schedule_name(cfg), **extra)
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
