"""Training on noisy labels with the distilled set as a clean anchor.

Nets trained on the distilled set never saw the noisy outliers (the study's point). Their predictions on the
training images, `pred_probs` (N, C) from `detect.score_labels` (out-of-sample by construction), are the anchor.
Three ways to train the baseline's net with it, beside the label-editing rules of `repair` (relabel / select /
relabel_select):

  forward            forward loss correction, the transition matrix T[i, j] = P(noisy j | class i) estimated
                     from the anchor's predictions against the noisy labels (`robust.estimate_transition`)
  forward_confident  the same with T from the anchor's most confident fifth of each predicted class (anchor
                     points, `robust.estimate_transition_confident`): the anchor's own errors bias it less
  anchor_dividemix   DivideMix whose first fifth of the epochs divide the data by the anchor's clean
                     probabilities (the mixture DivideMix fits, on the anchor's cross-entropy) instead of a
                     cross-entropy warm-up on the noisy labels; lambda_u chosen on the noisy validation split
  anchor_coteaching  Co-teaching whose small-loss selection ranks each sample by the net's loss plus the
                     anchor's cross-entropy on its label (the two pieces of evidence as a product of
                     likelihoods), the forget rate estimated from the anchor (1 - the mean clean probability)
                     instead of the true noise rate the papers' Co-teaching is given
  anchor_coteaching_confident  the same, the forget rate the noise rate that the anchor-point transition
                     matrix implies (`robust.noise_rate`)
  auto               each of AUTO_CANDIDATES, keeping the one with the highest last-epoch accuracy on the noisy
                     validation split (needs one; no test labels involved)
  coteaching_anchor_rate  the papers' Co-teaching (selection by the nets' losses alone), its forget rate the
                     anchor-point noise rate: the papers give it the true rate, which a user does not have
  coteaching_relabel  coteaching_anchor_rate (the same key, so the same pair), then each label the pair flags
                     (its forget-rate fraction with the highest pair cross-entropy) replaced by the pair's
                     prediction, and a fresh net trained with cross-entropy on every image and the repaired labels
                     (the recipe's budget once more): at the end Co-teaching trains on only the kept fraction,
                     the repaired set gives the net all of them
  coteaching_vote    the same pair, but a flagged label is replaced only where the distilled-set nets (the anchor,
                     which never trained on the noisy labels) predict the same class as the pair; the other
                     flagged samples are dropped, and the net trains on the rest: two independent votes make the
                     repair more precise than the pair alone. Measured at the cpu preset (seed 0), neither of
                     these two beats the pair it starts from: 8-11% of the labels stay wrong after the repair
                     (BUILD_NOTES session 20)

`train_anchored(rule, data, pred_probs, bcfg, key)` returns the result dict of the method it runs (acc_mean,
acc_std, accs, best_acc_mean where data has a noisy validation split) plus `label_scores` (high = likely wrong)
and `flagged`, the rule's own notion of a wrong label.
"""
from __future__ import annotations

import numpy as np
import jax

from jaxdistill.data.noisy import has_val_split, keep_train
from jaxdistill.errors import ConfigError

ANCHORED_RULES = ("auto", "forward", "forward_confident", "anchor_dividemix", "anchor_coteaching",
                  "anchor_coteaching_confident", "coteaching_anchor_rate", "coteaching_relabel",
                  "coteaching_vote")
# `auto` trains each of these and keeps the one whose last epoch is most accurate on the noisy validation split:
# the best by that split under asymmetric / symmetric 0.4 at the cpu preset (BUILD_NOTES session 18).
AUTO_CANDIDATES = ("forward_confident", "coteaching_anchor_rate")
# The fraction of each predicted class the anchor-point estimator keeps (`robust.estimate_transition_confident`).
# Fixed in advance, not tuned per run: set from symmetric / asymmetric 0.4, seed 0 (BUILD_NOTES, session 18).
CONFIDENT_TOP = 0.2


def anchor_cross_entropy(pred_probs: np.ndarray, labels: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """(N,) -log p_anchor(label), p clipped at `floor` (one confidently wrong anchor must not dominate)."""
    p = np.clip(np.asarray(pred_probs, np.float64), floor, 1.0)
    return -np.log(p[np.arange(len(labels)), np.asarray(labels)])


def train_anchored(rule: str, data, pred_probs: np.ndarray, bcfg, key: jax.Array, memo=None) -> dict:
    """Train with the anchor `pred_probs` (N, C) by `rule` (ANCHORED_RULES), the net and recipe of the
    BaselineConfig `bcfg` (k runs). memo: anchor_dividemix's finished lambda_u candidates
    (`baselines.dividemix.train_dividemix_select`)."""
    from jaxdistill import baselines as B
    from jaxdistill.baselines.dividemix import anchor_clean_prob

    if rule not in ANCHORED_RULES:
        raise ConfigError(f"anchored rule {rule!r}; allowed {', '.join(ANCHORED_RULES)}")
    y = np.asarray(data.y_noisy)
    if np.shape(pred_probs) != (len(y), data.num_classes):
        raise ConfigError(f"pred_probs has shape {np.shape(pred_probs)}; expected ({len(y)}, {data.num_classes})")
    if rule == "auto":
        return _train_auto(data, pred_probs, bcfg, key)
    if rule in ("coteaching_relabel", "coteaching_vote"):
        return _train_coteaching_relabel(data, pred_probs, bcfg, key, vote=rule == "coteaching_vote")
    w = anchor_clean_prob(pred_probs, y)
    prior = np.asarray(pred_probs, np.float64).mean(0)
    if rule in ("forward", "forward_confident"):
        t = (B.robust.estimate_transition(pred_probs, y, data.num_classes) if rule == "forward" else
             B.robust.estimate_transition_confident(pred_probs, y, data.num_classes, CONFIDENT_TOP))
        cfg = B.RobustConfig(loss="forward", width=bcfg.width, k=bcfg.k, train=bcfg.train,
                             transition=tuple(map(tuple, t)))
        r = B.train_robust(data, cfg, key)
        r.update(transition=t.tolist(), label_scores=anchor_cross_entropy(pred_probs, y).tolist(),
                 flagged=(w < 0.5).tolist())
        if getattr(data, "noise", None) is not None:
            r["transition_error"] = float(np.abs(t - np.asarray(data.noise.transition)).sum(1).mean())
        return r
    if rule == "anchor_dividemix":
        ep = bcfg.train.epochs
        cfg = B.DivideMixConfig(width=bcfg.width, k=bcfg.k, train=bcfg.train, warmup=0,
                                anchor_epochs=max(1, round(0.2 * ep)))
        r = B.train_dividemix_select(data, cfg, key, anchor_w=w, memo=memo)
        r["anchor_scores"], r["anchor_flagged"] = (1.0 - w).tolist(), (w < 0.5).tolist()
        return r
    from jaxdistill.baselines.coteaching import pair_config

    bias = anchor_cross_entropy(pred_probs, y)
    if rule in ("coteaching_anchor_rate", "anchor_coteaching_confident"):
        # anchor points: the transition matrix of the anchor's most confident predictions, and the rate it implies
        t = B.robust.estimate_transition_confident(pred_probs, y, data.num_classes, CONFIDENT_TOP)
        tau = float(np.clip(B.robust.noise_rate(t, prior), 0.0, 0.9))
    else:
        tau = float(np.clip(1.0 - w.mean(), 0.0, 0.9))
    # coteaching_anchor_rate keeps the papers' selection (the nets' losses alone); the others add the anchor's
    # cross-entropy. label_scores / flagged: what the pair's selection ranks by at the end; the anchor's beside them
    sel = None if rule == "coteaching_anchor_rate" else bias
    r = B.train_coteaching(data, pair_config(bcfg, forget_rate=tau), key, selection_bias=sel)
    r.update(tau=tau, anchor_scores=bias.tolist(), anchor_flagged=(w < 0.5).tolist(),
             label_precision_last=r["label_precision"][-1])
    if rule != "anchor_coteaching":
        r["transition"] = t.tolist()
    if getattr(data, "noise_rate", None) is not None:
        r["tau_error"] = tau - float(data.noise_rate)
    return r


def relabel_flagged(labels: np.ndarray, flagged: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N,) int32: `labels` with each flagged one replaced by `pred` (the others as given)."""
    labels, flagged, pred = np.asarray(labels), np.asarray(flagged, bool), np.asarray(pred)
    if not labels.shape == flagged.shape == pred.shape:
        raise ConfigError(f"labels {labels.shape}, flagged {flagged.shape} and pred {pred.shape} must have one "
                          f"shape (N,)")
    return np.where(flagged, pred, labels).astype(np.int32)


def vote_repair(labels: np.ndarray, flagged: np.ndarray, pair_pred: np.ndarray,
                anchor_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) int32, kept (N,) bool): a flagged label becomes the pair's prediction where the anchor
    predicts the same class, and is dropped where they differ; unflagged samples keep their label."""
    agree = np.asarray(pair_pred) == np.asarray(anchor_pred)
    kept = ~np.asarray(flagged, bool) | agree
    return relabel_flagged(labels, np.asarray(flagged, bool) & agree, pair_pred), kept


def _train_coteaching_relabel(data, pred_probs, bcfg, key, vote: bool = False) -> dict:
    """Rules coteaching_relabel / coteaching_vote: the anchor-rate pair on `key`, then one net per run on the
    repaired labels of the kept samples (cross-entropy, the recipe of `bcfg`) on fold_in(key, 1). The result is
    the second stage's, with the pair's label scores and flags (its notion of a wrong label), `labels_repaired`,
    `kept_mask` and the pair's own accuracy."""
    from jaxdistill import baselines as B

    pair = train_anchored("coteaching_anchor_rate", data, pred_probs, bcfg, key)
    y = np.asarray(data.y_noisy)
    if vote:
        y_rep, kept = vote_repair(y, pair["flagged"], pair["pair_pred"], np.argmax(pred_probs, -1))
    else:
        y_rep, kept = relabel_flagged(y, pair["flagged"], pair["pair_pred"]), np.ones(len(y), bool)
    cfg = B.RobustConfig(loss="ce", width=bcfg.width, k=bcfg.k, train=bcfg.train)
    r = B.train_robust(keep_train(data, kept, y_rep), cfg, jax.random.fold_in(key, 1))
    r.update({k: pair[k] for k in ("tau", "tau_error", "transition", "label_scores", "flagged", "anchor_scores",
                                   "anchor_flagged") if k in pair},
             labels_repaired=y_rep.tolist(), kept_mask=kept.tolist(), relabelled=int(np.sum(y_rep != y)),
             kept_fraction=float(kept.mean()), pair_acc_mean=pair["acc_mean"], pair_accs=pair["accs"])
    y_true = getattr(data, "y_true", None)
    if y_true is not None:
        # the noise left among the kept samples after the repair, against the noise given (scored with the true
        # labels; not used)
        r.update(noise_rate_given=float(np.mean(y != np.asarray(y_true))),
                 noise_rate_repaired=float(np.mean(y_rep[kept] != np.asarray(y_true)[kept])))
    return r


def final_val(r: dict, required: bool = True) -> float | None:
    """A result's last-epoch noisy-validation accuracy (`final_val`, else the last point of `val_curve`; runs
    averaged). Without either: ConfigError, or None where not `required`."""
    if r.get("final_val") is not None:
        return float(np.mean(r["final_val"]))
    if r.get("val_curve"):
        return float(r["val_curve"][-1])
    if not required:
        return None
    raise ConfigError("this result has no noisy-validation accuracy (the data has no validation split)")


def check_auto_data(data) -> None:
    """ConfigError unless `data` has the noisy validation split rule auto chooses on (repair checks it before
    scoring, so the refusal comes before any work)."""
    if not has_val_split(data):
        raise ConfigError("rule 'auto' chooses on the noisy validation split and this data has none: make it with "
                          "val_fraction > 0 (jaxdistill repair --val-fraction 0.1), or name a rule")


def choose_auto(runs: dict) -> str:
    """The AUTO_CANDIDATES rule whose result in `runs` ({rule: result}) has the highest last-epoch
    noisy-validation accuracy (`final_val`; the first in AUTO_CANDIDATES on a tie). No test labels involved."""
    return max(AUTO_CANDIDATES, key=lambda rule: final_val(runs[rule]))


def _train_auto(data, pred_probs, bcfg, key) -> dict:
    check_auto_data(data)
    runs = {rule: train_anchored(rule, data, pred_probs, bcfg, key) for rule in AUTO_CANDIDATES}
    chosen = choose_auto(runs)
    out = dict(runs[chosen])
    out.update(rule_chosen=chosen, auto_candidates={rule: {"final_val": final_val(r), "acc_mean": r["acc_mean"]}
                                                    for rule, r in runs.items()})
    return out
