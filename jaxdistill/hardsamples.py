"""Hard-sample study: which clean samples do the distilled-set nets lose that the full-data nets get right?

The study's finding 4 says clean but hard samples (tail classes, rare modes) are compressed away. Here:
  full model      K ConvNets trained on the full training set (default: its true labels, so "difficulty"
                  does not depend on the noise; labels='noisy' uses the given labels, i.e. the baseline);
  difficulty      the full model's normalized margin on the sample's true label,
                  (p_y - max_{j != y} p_j + 1) / 2 of its mean softmax, binned in quantiles (bin 0 = hardest);
  lost            full model right and distilled-set model wrong (argmax of the mean softmax of each).
Reported per class and per difficulty bin: lost rate = lost / full-correct, and both accuracies.
If the finding holds, the lost rate falls from the hardest bin to the easiest.
"""
from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from jaxdistill.errors import ConfigError, DataError
from jaxdistill.plotting import pyplot


def _probs(logits_or_probs: np.ndarray, are_probs: bool) -> np.ndarray:
    a = np.asarray(logits_or_probs, np.float64)
    if not are_probs:
        a = np.exp(a - a.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
    return a.mean(0) if a.ndim == 3 else a


def hard_sample_table(full: np.ndarray, distilled: np.ndarray, y: np.ndarray, num_classes: int, bins: int = 5,
                      are_probs: bool = True) -> dict:
    """full, distilled: (N, C) probabilities or (K, N, C) (averaged over K); logits if are_probs=False.
    y (N,) true labels. Returns dict with per_class and per_bin lists and the bin edges."""
    pf, pd = _probs(full, are_probs), _probs(distilled, are_probs)
    y = np.asarray(y).astype(np.int64)
    if pf.shape != pd.shape or pf.shape != (len(y), num_classes):
        raise DataError(f"full {pf.shape}, distilled {pd.shape} must both be ({len(y)}, {num_classes})")
    if bins < 1:
        raise ConfigError(f"bins={bins} must be >= 1")
    rows = np.arange(len(y))
    other = pf.copy()
    other[rows, y] = -np.inf
    margin = (pf[rows, y] - other.max(1) + 1) / 2
    full_ok = pf.argmax(1) == y
    dist_ok = pd.argmax(1) == y
    lost = full_ok & ~dist_ok
    edges = np.quantile(margin, np.linspace(0, 1, bins + 1))
    b = np.clip(np.searchsorted(edges, margin, side="right") - 1, 0, bins - 1)

    def entry(mask):
        nf = int((full_ok & mask).sum())
        return {"n": int(mask.sum()), "full_correct": nf, "lost": int((lost & mask).sum()),
                "lost_rate": float((lost & mask).sum() / nf) if nf else float("nan"),
                "full_acc": float(full_ok[mask].mean()) if mask.any() else float("nan"),
                "distilled_acc": float(dist_ok[mask].mean()) if mask.any() else float("nan")}

    per_class = [{"class": c, **entry(y == c)} for c in range(num_classes)]
    per_bin = [{"bin": i, "margin_lo": float(edges[i]), "margin_hi": float(edges[i + 1]), **entry(b == i)}
               for i in range(bins)]
    overall = entry(np.ones(len(y), bool))
    rates = [e["lost_rate"] for e in per_bin]
    return {"per_class": per_class, "per_bin": per_bin, "overall": overall, "margin": margin,
            "lost_mask": lost, "bin_of": b,
            "finding_holds": bool(bins > 1 and rates[0] > rates[-1]),
            "spearman_bin_vs_lost_rate": _spearman(np.arange(bins), np.asarray(rates))}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(b)
    if ok.sum() < 2:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a[ok])), np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def run_hard_sample_study(distilled, data, key: jax.Array, k: int = 3, protocol="standard", preset: str = "quick",
                          width: Optional[int] = None, full_cfg=None, labels: str = "true", split: str = "test",
                          bins: int = 5) -> dict:
    """Train the full-data nets (jaxdistill.baseline's recipe, `full_cfg` a BaselineConfig) and the
    distilled-set nets (jaxdistill.detect.distilled_pred_probs), compare them on `split` ('test' or
    'train_clean': training samples whose given label is right)."""
    from jaxdistill.baseline import get_baseline_config
    from jaxdistill.detect import distilled_pred_probs
    from jaxdistill.evaluate import default_depth
    from jaxdistill.nn import NetConfig, make_net
    from jaxdistill.train import predict, train_models

    if labels not in ("true", "noisy"):
        raise ConfigError(f"labels={labels!r}; allowed 'true', 'noisy'")
    if split not in ("test", "train_clean"):
        raise ConfigError(f"split={split!r}; allowed 'test', 'train_clean'")
    y_train = data.y_noisy if labels == "noisy" or data.y_true is None else data.y_true
    if split == "test":
        x, y = data.x_test, data.y_test
    else:
        if data.y_true is None:
            raise DataError("split='train_clean' needs true training labels (data.y_true is None)")
        ok = np.asarray(data.y_true) == np.asarray(data.y_noisy)
        x, y = np.asarray(data.x_train)[ok], np.asarray(data.y_true)[ok]
    bc = full_cfg or get_baseline_config(data.name, preset)
    k_full, k_dist = jax.random.split(key)
    net = make_net(NetConfig(data.num_classes, width=width or bc.width, depth=default_depth(x.shape[1])))
    res = train_models(net, data.x_train, y_train, bc.train, k_full, num_models=k, num_classes=data.num_classes)
    p_full = np.asarray(jax.nn.softmax(predict(net, res.params, x), -1)).mean(0)
    p_dist, meta = distilled_pred_probs(distilled, data, k_dist, k, protocol, preset, width, x=x)
    out = hard_sample_table(p_full, p_dist, y, data.num_classes, bins)
    out.update(split=split, full_labels=labels, distilled_meta=meta, class_names=list(data.class_names))
    return out


def plot_hard_samples(study: dict, path: str, title: str = "") -> str:
    """Two panels: lost rate per difficulty bin (hardest left) and per class. Saves a PNG (Agg)."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    pb = study["per_bin"]
    a1.bar(range(len(pb)), [e["lost_rate"] for e in pb], color="tab:red", label="lost / full-correct")
    a1.plot(range(len(pb)), [e["distilled_acc"] for e in pb], "o-", color="tab:blue", label="distilled acc")
    a1.plot(range(len(pb)), [e["full_acc"] for e in pb], "s--", color="tab:gray", label="full-data acc")
    a1.set_xticks(range(len(pb)), [f"{e['margin_lo']:.2f}-\n{e['margin_hi']:.2f}" for e in pb], fontsize=7)
    a1.set_xlabel("full-data model margin (quantile bins, hardest left)")
    a1.set_ylim(0, 1.02)
    a1.legend(fontsize=7)
    pc = study["per_class"]
    names = study.get("class_names") or [str(e["class"]) for e in pc]
    a2.bar(range(len(pc)), [e["lost_rate"] for e in pc], color="tab:red")
    a2.set_xticks(range(len(pc)), names, rotation=45, fontsize=7)
    a2.set_ylabel("lost rate")
    a2.set_xlabel("class")
    verdict = "holds" if study["finding_holds"] else "does not hold"
    fig.suptitle(f"{title}  clean-but-hard samples compressed away: {verdict} "
                 f"(overall lost rate {study['overall']['lost_rate']:.3f})", fontsize=9)
    fig.tight_layout()
    from jaxdistill.sharding import is_primary

    if is_primary():  # one writer in a multi-process run
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
