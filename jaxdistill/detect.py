"""Label-issue detection with the nets trained on a distilled set.

The K evaluation nets are trained on the distilled set only, so they never saw the training labels
directly: their predicted probabilities on the training images are out-of-sample by construction
(what cleanlab otherwise gets from K-fold cross-validation). From the mean softmax over the K nets:

  quality        self-confidence  p[i, y_i]  (default), or the normalized margin
                 (p[i, y_i] - max_{j != y_i} p[i, j] + 1) / 2  (cleanlab's definition); low = likely issue.
  suggested      argmax_j p[i, j].
  flagged        rule 'confident_joint' (default; confident learning's C-confusion): per-class thresholds
                 t_j = mean p[i, j] over samples whose given label is j; sample i is confidently class
                 j* = argmax_{j : p[i,j] >= t_j} p[i, j]; it is flagged when such a j* exists and j* != y_i.
                 rule 'argmax': flagged when suggested != y_i.
  ranking        sample indices ordered by quality, lowest first (ties: lower index first).

Detection figures (cleanlab's benchmark, scored against noisy != true): precision/recall/F1 of the
flagged set, AUROC of the issue score (-quality), lift at k = precision among the k lowest-quality
samples / base noise rate, for k = number of true issues and fixed k values. All in plain NumPy.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Optional, Sequence

import jax
import numpy as np

from jaxdistill.errors import ConfigError, DataError

QUALITY_METHODS = ("self_confidence", "normalized_margin")
FLAG_RULES = ("confident_joint", "argmax")


@dataclasses.dataclass
class LabelScores:
    """Per-sample label scores. quality (N,), pred_probs (N, C), suggested (N,), flagged (N,) bool,
    ranking (N,) indices lowest quality first, margin (N,) normalized margin, meta dict."""

    quality: np.ndarray
    pred_probs: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray
    ranking: np.ndarray
    margin: np.ndarray
    labels: np.ndarray
    meta: dict = dataclasses.field(default_factory=dict)

    def issues(self) -> np.ndarray:
        """Indices of the flagged samples, lowest quality first."""
        return self.ranking[self.flagged[self.ranking]]


# ---------------------------------------------------------------------------------------------
# Scores from predicted probabilities (pure NumPy)
# ---------------------------------------------------------------------------------------------

def _check_probs(pred_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred_probs, np.float64)
    y = np.asarray(labels).astype(np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise DataError(f"pred_probs {p.shape} and labels {y.shape} must be (N, C) and (N,)")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise DataError(f"labels must be in [0, {p.shape[1]}); got min {y.min()}, max {y.max()}")
    if not np.all(np.isfinite(p)):
        raise DataError("pred_probs contain non-finite values; allowed: finite probabilities")
    return p, y


def normalized_margin(pred_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(p_y - max_{j != y} p_j + 1) / 2, in [0, 1]. (N, C), (N,) -> (N,)."""
    p, y = _check_probs(pred_probs, labels)
    rows = np.arange(len(y))
    self_conf = p[rows, y]
    other = p.copy()
    other[rows, y] = -np.inf
    return (self_conf - other.max(1) + 1.0) / 2.0


def confident_thresholds(pred_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """t_j = mean of p[:, j] over samples labelled j (C,); classes with no samples get threshold 1."""
    p, y = _check_probs(pred_probs, labels)
    c = p.shape[1]
    counts = np.bincount(y, minlength=c)
    sums = np.zeros(c)
    np.add.at(sums, y, p[np.arange(len(y)), y])
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def flag_issues(pred_probs: np.ndarray, labels: np.ndarray, rule: str = "confident_joint") -> np.ndarray:
    """(N,) bool flags under `rule` (see module docstring)."""
    if rule not in FLAG_RULES:
        raise ConfigError(f"flag rule {rule!r} is not one of {list(FLAG_RULES)}")
    p, y = _check_probs(pred_probs, labels)
    if rule == "argmax":
        return p.argmax(1) != y
    t = confident_thresholds(p, y)
    above = p >= t[None, :] - 1e-12
    masked = np.where(above, p, -np.inf)
    confident = masked.argmax(1)
    has = above.any(1)
    return has & (confident != y)


def scores_from_probs(pred_probs: np.ndarray, labels: np.ndarray, quality: str = "self_confidence",
                      rule: str = "confident_joint", meta: Optional[dict] = None) -> LabelScores:
    """LabelScores from out-of-sample predicted probabilities (N, C) and the given labels (N,)."""
    if quality not in QUALITY_METHODS:
        raise ConfigError(f"quality method {quality!r} is not one of {list(QUALITY_METHODS)}")
    p, y = _check_probs(pred_probs, labels)
    margin = normalized_margin(p, y)
    q = p[np.arange(len(y)), y] if quality == "self_confidence" else margin
    return LabelScores(quality=q, pred_probs=p, suggested=p.argmax(1).astype(np.int32),
                       flagged=flag_issues(p, y, rule), ranking=np.argsort(q, kind="stable"),
                       margin=margin, labels=y.astype(np.int32),
                       meta={"quality": quality, "rule": rule, **(meta or {})})


# ---------------------------------------------------------------------------------------------
# Detection metrics (NumPy; tested against scikit-learn)
# ---------------------------------------------------------------------------------------------

def _rankdata_average(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank (scipy's 'average')."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    ranks = np.empty(len(a))
    # Boundaries of runs of equal values.
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    ends = np.r_[starts[1:], len(a)]
    for st, en in zip(starts, ends):
        ranks[order[st:en]] = 0.5 * (st + 1 + en)
    return ranks


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score` (higher = more positive) via Mann-Whitney U with tie ranks."""
    s = np.asarray(score, np.float64)
    pos = np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _rankdata_average(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_f1(flagged: np.ndarray, is_issue: np.ndarray) -> tuple[float, float, float]:
    """Of the flagged set against the true issues; 0 where undefined (sklearn's zero_division=0)."""
    f = np.asarray(flagged, bool)
    t = np.asarray(is_issue, bool)
    tp = float((f & t).sum())
    prec = tp / f.sum() if f.sum() else 0.0
    rec = tp / t.sum() if t.sum() else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return float(prec), float(rec), float(f1)


def lift_at_k(quality: np.ndarray, is_issue: np.ndarray, k: int) -> float:
    """Precision among the k lowest-quality samples (stable order on ties) / base issue rate."""
    t = np.asarray(is_issue, bool)
    k = int(min(max(k, 1), len(t)))
    base = t.mean()
    if base == 0:
        return float("nan")
    idx = np.argsort(np.asarray(quality), kind="stable")[:k]
    return float(t[idx].mean() / base)


def detection_metrics(quality: np.ndarray, flagged: np.ndarray, is_issue: np.ndarray,
                      ks: Sequence[int] = (10, 50, 100)) -> dict:
    """cleanlab-benchmark figures: precision, recall, f1 (flagged set), auroc (of -quality),
    lift_at_num_issues and lift_at_{k} for each k, plus counts."""
    q = np.asarray(quality, np.float64)
    f = np.asarray(flagged, bool)
    t = np.asarray(is_issue, bool)
    if not (q.shape == f.shape == t.shape) or q.ndim != 1:
        raise DataError(f"quality {q.shape}, flagged {f.shape}, is_issue {t.shape} must all be (N,)")
    prec, rec, f1 = precision_recall_f1(f, t)
    out = {"precision": prec, "recall": rec, "f1": f1, "auroc": auroc(-q, t),
           "num_flagged": int(f.sum()), "num_issues": int(t.sum()), "base_rate": float(t.mean()) if t.size else 0.0,
           "lift_at_num_issues": lift_at_k(q, t, int(t.sum())) if t.any() else float("nan")}
    for k in ks:
        out[f"lift_at_{int(k)}"] = lift_at_k(q, t, int(k))
    return out


# ---------------------------------------------------------------------------------------------
# Scoring with the nets trained on a distilled set
# ---------------------------------------------------------------------------------------------

def distilled_pred_probs(distilled, data, key: jax.Array, k: int = 5, protocol="standard",
                         preset: str = "quick", width: Optional[int] = None, x: Optional[np.ndarray] = None,
                         progress: bool = False) -> tuple[np.ndarray, dict]:
    """Train k nets on `distilled` under an evaluation protocol and return their mean softmax on `x`
    (default the training images), (N, C), and a meta dict with the nets' test accuracies.
    protocol: a name from jaxdistill.evaluate.PROTOCOLS or an EvalProtocol."""
    from jaxdistill.evaluate import get_protocol, prepare_for_protocol
    from jaxdistill.nn import make_net
    from jaxdistill.train import accuracy, predict, train_models

    if k < 1:
        raise ConfigError(f"k={k} scoring nets must be >= 1")
    x = data.x_train if x is None else x
    prot = protocol if not isinstance(protocol, str) else get_protocol(
        protocol, num_images=distilled.num_images, num_classes=data.num_classes,
        image_size=distilled.images.shape[1], preset=preset, lr=distilled.lr, width=width,
        channels=distilled.images.shape[-1])
    # prepare_for_protocol maps "test" images into the distilled set's working space; we pass the
    # training images in that slot so both go through the very same preprocessing as the evaluator's.
    view = types.SimpleNamespace(x_test=x, num_classes=data.num_classes)
    xd, td, x_work = prepare_for_protocol(distilled, view, prot)
    _, _, x_test = prepare_for_protocol(distilled, data, prot)
    net = make_net(prot.net)
    res = train_models(net, xd, td, prot.train, key, num_models=k, progress=progress,
                       num_classes=data.num_classes)
    logits = predict(net, res.params, x_work)                     # (K, N, C)
    # Regression heads (rcig protocol) are not logits; their softmax still ranks the classes, which is
    # what the argmax and the quality ranking use (absolute probabilities are then only indicative).
    probs = np.asarray(jax.nn.softmax(logits, -1)).mean(0)
    test_accs = accuracy(net, res.params, x_test, data.y_test)
    meta = {"protocol": prot.name, "preset": preset, "k": k, "method": distilled.method,
            "num_images": distilled.num_images, "test_accs": [float(a) for a in test_accs],
            "test_acc_mean": float(np.mean(test_accs))}
    return probs, meta


def score_labels(distilled, data, key: jax.Array, k: int = 5, protocol="standard",
                 preset: str = "quick", width: Optional[int] = None, quality: str = "self_confidence",
                 rule: str = "confident_joint", progress: bool = False) -> LabelScores:
    """Score every training label of `data` (NoisyData) with k nets trained on `distilled`.

    Returns LabelScores over data.x_train / data.y_noisy; meta holds the nets' test accuracy and, where
    data.y_true is known, the detection metrics (`meta['metrics']`)."""
    probs, meta = distilled_pred_probs(distilled, data, key, k, protocol, preset, width, progress=progress)
    scores = scores_from_probs(probs, data.y_noisy, quality, rule, meta)
    y_true = getattr(data, "y_true", None)
    if y_true is not None:
        scores.meta["metrics"] = detection_metrics(scores.quality, scores.flagged,
                                                   np.asarray(data.y_noisy) != np.asarray(y_true))
    return scores


def prototype_set(data, ipc: int = 1, seed: int = 0):
    """A cheap stand-in DistilledSet: per class, the means of `ipc` random disjoint chunks of the
    images carrying that (noisy) label. Pixels, hard labels, no preprocessing. Useful as a sanity
    baseline and for tests when no real distiller is at hand."""
    from jaxdistill.methods.base import DistilledSet

    if ipc < 1:
        raise ConfigError(f"ipc={ipc} must be >= 1")
    rs = np.random.RandomState(seed)
    images, labels = [], []
    for c in range(data.num_classes):
        idx = np.flatnonzero(np.asarray(data.y_noisy) == c)
        if len(idx) < ipc:
            raise DataError(f"class {c} has {len(idx)} samples with its label; ipc={ipc} needs at least that many")
        for chunk in np.array_split(rs.permutation(idx), ipc):
            images.append(np.asarray(data.x_train[chunk]).mean(0))
            labels.append(c)
    return DistilledSet(images=np.stack(images), labels=np.array(labels), method="prototype",
                        meta={"ipc": ipc, "seed": seed})


# ---------------------------------------------------------------------------------------------
# cleanlab side by side: K-fold cross-validated ConvNets
# ---------------------------------------------------------------------------------------------

def cross_val_pred_probs(data, key: jax.Array, folds: int = 5, epochs: int = 10, width: int = 32,
                         train_cfg=None, progress: bool = False) -> np.ndarray:
    """Out-of-fold softmax (N, C) of ConvNets trained on the noisy labels of the other folds.

    Compute: folds nets x epochs x N (folds-1)/folds sample-gradients. To match a distill+eval budget of
    B sample-gradients, pass epochs = B / (N (folds - 1))."""
    from jaxdistill.evaluate import default_depth
    from jaxdistill.nn import NetConfig, make_net
    from jaxdistill.train import TrainConfig, predict, train_models

    if folds < 2:
        raise ConfigError(f"folds={folds} must be >= 2")
    n = len(data.y_noisy)
    rs = np.random.RandomState(0)
    fold_of = rs.permutation(np.arange(n) % folds)
    net = make_net(NetConfig(data.num_classes, width=width, depth=default_depth(data.x_train.shape[1])))
    tc = train_cfg or TrainConfig(epochs=epochs, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                  schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    tc = tc.replace(epochs=epochs)
    probs = np.zeros((n, data.num_classes))
    for f, kf in enumerate(jax.random.split(key, folds)):
        tr, te = fold_of != f, fold_of == f
        res = train_models(net, data.x_train[tr], data.y_noisy[tr], tc, kf, num_models=1, progress=progress,
                           num_classes=data.num_classes)
        probs[te] = np.asarray(jax.nn.softmax(predict(net, res.params, data.x_train[te])[0], -1))
    return probs


def cleanlab_scores(pred_probs: np.ndarray, labels: np.ndarray, filter_by: str = "prune_by_noise_rate",
                    meta: Optional[dict] = None) -> LabelScores:
    """LabelScores whose flags come from `cleanlab.filter.find_label_issues` and whose quality is
    `cleanlab.rank.get_label_quality_scores` (self_confidence). Raises ConfigError if cleanlab is missing."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError as e:
        raise ConfigError(f"cleanlab is an optional dependency and is not installed ({e}); "
                          f"`pip install cleanlab` to compare against it") from None
    p, y = _check_probs(pred_probs, labels)
    p = p / p.sum(1, keepdims=True)
    # n_jobs=1: cleanlab's process pool forks, which can deadlock a process that has started JAX threads.
    flagged = np.asarray(find_label_issues(y, p, filter_by=filter_by, n_jobs=1), bool)
    q = np.asarray(get_label_quality_scores(y, p, method="self_confidence"))
    return LabelScores(quality=q, pred_probs=p, suggested=p.argmax(1).astype(np.int32), flagged=flagged,
                       ranking=np.argsort(q, kind="stable"), margin=normalized_margin(p, y),
                       labels=y.astype(np.int32),
                       meta={"quality": "cleanlab self_confidence", "rule": f"cleanlab {filter_by}", **(meta or {})})
