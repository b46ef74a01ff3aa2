"""Repair the training labels with the distilled set's nets, then train on the full repaired set.

Pipeline: distil (given) -> score every training label with K nets trained on the distilled set
(jaxdistill.detect.score_labels; out-of-sample by construction) -> repair rule -> train the baseline's
ConvNet with the baseline's recipe (jaxdistill.baseline.run_baseline) on the kept samples with their
repaired labels -> optionally distil again from the repaired set and evaluate that.

Rules (p = mean softmax of the K nets, s = argmax p, y = given label, flagged = confident-joint flag):
  relabel         y <- s where flagged; keep everything.
  select          drop the flagged samples; keep the rest with their given labels.
  relabel_select  y <- s where flagged and p[s] >= relabel_conf; drop the other flagged samples and the
                  unflagged ones whose own label is unlikely (p[y] < drop_below); keep the rest. (default)
Training rules (`jaxdistill.anchored`: the anchor p steers the training instead):
  forward, anchor_dividemix, anchor_coteaching, ... keep every label as given; coteaching_relabel trains a
  Co-teaching pair, replaces the labels the pair flags by its predictions and trains on those; coteaching_vote
  replaces a flagged label only where the anchor agrees with the pair and drops the other flagged samples.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import numpy as np

from jaxdistill.anchored import ANCHORED_RULES, check_auto_data
from jaxdistill.data.noisy import keep_train
from jaxdistill.errors import ConfigError

LABEL_RULES = ("relabel", "select", "relabel_select")
RULES = LABEL_RULES + ANCHORED_RULES
# `jaxdistill repair`'s rule unless one is named: the highest noisy-validation accuracy at the cpu preset under
# asymmetric 0.4 and the second under symmetric 0.4 (seed 0; experiments/beyond/lnl_fmnist_cpu.md; BUILD_NOTES
# session 18), and it needs no validation split, so `detect` then `repair` in one folder share the distilled set.
# `auto` (both leaders, the better on a noisy validation split: --rule auto --val-fraction 0.1) won under both.
# With --redistill (which needs edited labels) the default is the best label rule there, DEFAULT_LABEL_RULE.
DEFAULT_RULE = "forward_confident"
DEFAULT_LABEL_RULE = "relabel"


@dataclasses.dataclass(frozen=True)
class RepairConfig:
    """rule (see module docstring); score_* configure the scoring nets (jaxdistill.detect.score_labels);
    train is the BaselineConfig of the final training (None: get_baseline_config(dataset, preset))."""

    rule: str = "relabel_select"
    relabel_conf: float = 0.5
    drop_below: float = 0.1
    flag_rule: str = "confident_joint"
    score_k: int = 5
    score_protocol: object = "standard"
    score_width: Optional[int] = None
    preset: str = "quick"
    train: object = None          # jaxdistill.baseline.BaselineConfig
    baseline: bool = True         # also train on the unrepaired noisy set (same recipe, same key)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"repair rule {self.rule!r} is not one of {list(RULES)}")
        if not 0.0 <= self.relabel_conf <= 1.0 or not 0.0 <= self.drop_below <= 1.0:
            raise ConfigError(f"relabel_conf={self.relabel_conf} and drop_below={self.drop_below} must be in [0, 1]")

    def replace(self, **kw) -> "RepairConfig":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass
class RepairResult:
    """labels_repaired (N,) int32; kept_mask (N,) bool; relabelled_mask (N,) bool; results: dict of accuracy
    entries {'repair', 'baseline_noisy', 'distilled', 'redistilled'} (acc_mean, acc_std, accs);
    stats: label accuracy before/after, fractions; scores: the LabelScores used."""

    labels_repaired: np.ndarray
    kept_mask: np.ndarray
    relabelled_mask: np.ndarray
    results: dict
    stats: dict
    scores: object = None


def repair_labels(pred_probs: np.ndarray, labels: np.ndarray, flagged: np.ndarray, rule: str = "relabel_select",
                  relabel_conf: float = 0.5, drop_below: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a repair rule. (N, C), (N,), (N,) bool -> (labels_repaired (N,), kept (N,) bool, relabelled (N,) bool).
    Dropped samples keep their given label in labels_repaired."""
    if rule not in RULES:
        raise ConfigError(f"repair rule {rule!r} is not one of {list(RULES)}")
    p = np.asarray(pred_probs, np.float64)
    y = np.asarray(labels).astype(np.int32)
    fl = np.asarray(flagged, bool)
    s = p.argmax(1).astype(np.int32)
    rows = np.arange(len(y))
    if rule == "relabel":
        relabel, kept = fl & (s != y), np.ones_like(fl)
    elif rule == "select":
        relabel, kept = np.zeros_like(fl), ~fl
    else:
        relabel = fl & (s != y) & (p[rows, s] >= relabel_conf)
        kept = relabel | (~fl & (p[rows, y] >= drop_below))
    return np.where(relabel, s, y).astype(np.int32), kept, relabel


def label_stats(y_given, y_repaired, kept, y_true=None) -> dict:
    """Fractions kept/relabelled and, with true labels, label accuracy before (all) and after (kept)."""
    kept = np.asarray(kept, bool)
    out = {"kept_fraction": float(kept.mean()), "relabelled_fraction": float(np.mean(y_repaired != y_given)),
           "num_kept": int(kept.sum())}
    if y_true is not None:
        y_true = np.asarray(y_true)
        out.update(label_acc_before=float(np.mean(y_given == y_true)),
                   label_acc_after_kept=float(np.mean(y_repaired[kept] == y_true[kept])) if kept.any() else 0.0,
                   clean_kept_fraction=float(kept[y_given == y_true].mean()) if (y_given == y_true).any() else 0.0,
                   noisy_fixed_fraction=float(np.mean((y_repaired == y_true)[y_given != y_true]))
                   if (y_given != y_true).any() else 0.0)
    return out


def repair(data, distilled, key: jax.Array, cfg: RepairConfig = RepairConfig(), *, scores=None,
           redistill: Optional[Callable] = None, redistill_protocol: str = "standard",
           progress: bool = False) -> RepairResult:
    """Score, repair, retrain (see module docstring).

    data: NoisyData; distilled: DistilledSet made from it; scores: precomputed LabelScores (skip scoring);
    redistill(data_repaired, key) -> DistilledSet: optional second distillation from the repaired set, which
    is then evaluated with `redistill_protocol` (k = cfg.score_k).
    """
    from jaxdistill.baseline import get_baseline_config, run_baseline
    from jaxdistill.detect import score_labels

    if cfg.rule not in LABEL_RULES and redistill is not None:
        raise ConfigError(f"redistill needs a label rule's repaired labels; rule {cfg.rule!r} is a training rule "
                          f"(label rules: {', '.join(LABEL_RULES)})")
    if cfg.rule == "auto":
        check_auto_data(data)
    k_score, k_train, k_re, k_eval = jax.random.split(key, 4)
    if scores is None:
        scores = score_labels(distilled, data, k_score, k=cfg.score_k, protocol=cfg.score_protocol,
                              preset=cfg.preset, width=cfg.score_width, rule=cfg.flag_rule, progress=progress)
    bcfg = cfg.train or get_baseline_config(data.name, cfg.preset, data)
    if cfg.rule not in LABEL_RULES:
        return _repair_by_training(data, scores, cfg, bcfg, k_train)
    y_rep, kept, relabelled = repair_labels(scores.pred_probs, data.y_noisy, scores.flagged, cfg.rule,
                                            cfg.relabel_conf, cfg.drop_below)
    repaired = keep_train(data, kept, y_rep)
    results = {}
    # The repaired labels train with the recipe the other methods share (no memorising phase: that schedule is
    # the baseline's, to show what fitting the wrong labels costs); the comparison baseline keeps it.
    r = run_baseline(repaired, dataclasses.replace(bcfg, memorise=None), k_train, clean=False, progress=progress)
    results["repair"] = r["baseline_noisy"]
    if "baseline_noisy_valselected" in r:
        results["repair_valselected"] = r["baseline_noisy_valselected"]
    if cfg.baseline:
        # Same key: the only difference from the repaired run is the labels and the kept rows.
        b = run_baseline(data, bcfg, k_train, clean=False, progress=progress)
        results["baseline_noisy"] = b["baseline_noisy"]
    if "test_accs" in scores.meta:
        accs = np.asarray(scores.meta["test_accs"])
        results["distilled"] = {"acc_mean": float(accs.mean()), "acc_std": float(accs.std()),
                                "accs": [float(a) for a in accs], "protocol": scores.meta.get("protocol")}
    if redistill is not None:
        from jaxdistill.evaluate import evaluate

        d2 = redistill(repaired, k_re)
        results["redistilled"] = evaluate(d2, data, redistill_protocol, k_eval, k=cfg.score_k,
                                          preset=cfg.preset, width=cfg.score_width).to_dict()
    stats = label_stats(np.asarray(data.y_noisy), y_rep, kept, getattr(data, "y_true", None))
    stats["rule"] = cfg.rule
    return RepairResult(y_rep, kept, relabelled, results, stats, scores)


def _repair_by_training(data, scores, cfg: RepairConfig, bcfg, key) -> RepairResult:
    """A training rule (jaxdistill.anchored): every label kept as given, the anchor steers the training.
    results['repair'] (its last epoch), 'repair_valselected' where the method selects on the noisy validation
    split, 'distilled' (the anchor nets); the comparison baseline when cfg.baseline."""
    from jaxdistill.anchored import train_anchored
    from jaxdistill.baseline import run_baseline
    from jaxdistill.report import acc_entry

    r = train_anchored(cfg.rule, data, scores.pred_probs, dataclasses.replace(bcfg, memorise=None), key)
    results = {"repair": acc_entry(r["accs"])}
    if r.get("best_accs"):
        results["repair_valselected"] = acc_entry(r["best_accs"])
    if cfg.baseline:
        results["baseline_noisy"] = run_baseline(data, bcfg, key, clean=False)["baseline_noisy"]
    if "test_accs" in scores.meta:
        results["distilled"] = acc_entry(scores.meta["test_accs"], protocol=scores.meta.get("protocol"))
    y = np.asarray(data.y_noisy)
    n = len(y)
    # coteaching_relabel / _vote train on labels they repaired (vote: on the kept samples); the other training
    # rules keep every label as given
    y_rep = np.asarray(r.get("labels_repaired", y), np.int32)
    kept = np.asarray(r.get("kept_mask", np.ones(n, bool)), bool)
    stats = label_stats(y, y_rep, kept, getattr(data, "y_true", None))
    stats.update(rule=cfg.rule, flagged_by_rule=int(np.sum(r["flagged"])),
                 **{k: r[k] for k in ("tau", "tau_error", "transition_error", "lambda_u", "rule_chosen",
                                      "auto_candidates", "pair_acc_mean") if r.get(k) is not None})
    return RepairResult(y_rep, kept, y_rep != y, results, stats, scores)
