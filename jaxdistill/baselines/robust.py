"""Noise-robust losses for one net: GCE (Zhang & Sabuncu, NeurIPS 2018), ELR (Liu et al., NeurIPS 2020) and
forward loss correction (Patrini et al., CVPR 2017) with a transition matrix estimated by an anchor.

- GCE: L_q(p, y) = (1 - p_y^q) / q with q = 0.7: cross-entropy as q -> 0, MAE at q = 1; it down-weights the
  samples the net finds unlikely, which are mostly the wrong labels.
- ELR: CE(p_i, y_i) + lambda * log(1 - <t_i, p_i>), with a per-sample running target
  t_i <- beta * t_i + (1 - beta) * p_i (p detached, clipped to [1e-4, 1 - 1e-4] and renormalised; t starts at 0).
  The regulariser pushes p_i towards the net's own early-learning prediction t_i, so the net keeps predicting
  what it learned before memorising. A label is flagged wrong where argmax t_i != y_i; the score 1 - t_i[y_i]
  ranks the labels for the detection table.
- forward: -log (softmax(z) T)_y, T[i, j] = P(noisy j | true i). jaxdistill estimates T from an anchor that never
  saw the noisy labels (nets trained on the distilled set): `estimate_transition` (its predicted class
  distribution of each sample against the sample's noisy label). The test prediction is softmax(z) itself.

The training recipe is the noisy-data baseline's (`get_baseline_config`: net, epochs, batch, SGD + momentum,
step decay), so each method gets the baseline's budget. `k` independent seeds train in one jitted program
(vmap); an epoch is a `lax.scan` over batches of a pure `(state, batch) -> (state, metrics)` step and the epochs
are a scan. Where the data has a noisy validation split, every epoch scores it and the parameters of the best
epoch are kept beside the last (the LNL papers' "best" figure, selected without test labels).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.baseline import get_baseline_config
from jaxdistill.data.noisy import has_val_split
from jaxdistill.errors import ConfigError
from jaxdistill.evaluate import default_depth
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, accuracy, make_optimizer, steps_per_epoch

LOSSES = ("ce", "gce", "elr", "forward")
ELR_CLIP = 1e-4


@dataclasses.dataclass(frozen=True)
class RobustConfig:
    """loss 'ce' | 'gce' | 'elr' | 'forward'; q for GCE; lam (lambda) and beta for ELR; transition (C rows of C
    floats, row-stochastic) for forward correction."""

    loss: str = "gce"
    width: int = 128
    depth: int | None = None
    k: int = 3
    train: TrainConfig = TrainConfig(epochs=50, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                     schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    q: float = 0.7
    lam: float = 3.0
    beta: float = 0.7
    transition: tuple | None = None

    def __post_init__(self):
        if self.loss == "forward":
            t = np.asarray(self.transition if self.transition is not None else np.zeros((0, 0)), np.float64)
            if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] == 0 or np.any(t < 0) \
                    or not np.allclose(t.sum(1), 1.0, atol=1e-4):
                raise ConfigError(f"loss='forward' needs transition = a row-stochastic C x C matrix; got "
                                  f"{None if self.transition is None else t.shape}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r}; allowed {', '.join(LOSSES)}")
        if not 0.0 < self.q <= 1.0:
            raise ConfigError(f"q={self.q} must be in (0, 1]")
        if not 0.0 <= self.beta < 1.0:
            raise ConfigError(f"beta={self.beta} must be in [0, 1)")
        if self.lam < 0:
            raise ConfigError(f"lam={self.lam} must be >= 0")
        if self.k < 1:
            raise ConfigError(f"k={self.k} runs must be >= 1")

    def replace(self, **kw) -> "RobustConfig":
        return dataclasses.replace(self, **kw)


def get_robust_config(loss: str, dataset: str, preset: str = "paper", **overrides) -> RobustConfig:
    """The noisy-data baseline's net and training recipe with `loss` (GCE q = 0.7; ELR lambda = 3, beta = 0.7,
    the papers' CIFAR-10 settings)."""
    b = get_baseline_config(dataset, preset)
    return RobustConfig(**{"loss": loss, "width": b.width, "k": b.k, "train": b.train, **overrides})


def gce_loss(logits: jax.Array, y: jax.Array, q: float) -> jax.Array:
    """Per-example GCE (1 - p_y^q) / q: logits (B, C), y (B,) int -> (B,)."""
    log_py = jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
    return (1.0 - jnp.exp(q * log_py)) / q


def estimate_transition(anchor_probs: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """T[i, j] = sum_n a[n, i] [y_n = j] / sum_n a[n, i]: the noisy-label distribution of the samples the anchor
    puts in class i (soft counts). (N, C), (N,) -> (C, C), row-stochastic (a class the anchor never predicts
    gets the identity row)."""
    a = np.asarray(anchor_probs, np.float64)
    y = np.eye(num_classes)[np.asarray(noisy)]
    counts = a.T @ y
    mass = counts.sum(1, keepdims=True)
    return np.where(mass > 0, counts / np.maximum(mass, 1e-12), np.eye(num_classes))


def estimate_transition_confident(anchor_probs: np.ndarray, noisy: np.ndarray, num_classes: int,
                                  top: float = 0.2) -> np.ndarray:
    """Anchor points: T[i] = the noisy-label histogram of the `top` fraction (at least one sample) of the samples
    the anchor predicts as class i, those it gives class i the highest probability. A confident anchor's class
    is nearly always the true class, and the anchor was not trained on these labels (only on the distilled set),
    so these rows estimate P(noisy | true) without the bias of the anchor's own errors that soft counts over
    every sample carry (`estimate_transition`).
    A class the anchor never predicts gets the identity row. (N, C), (N,) -> (C, C), row-stochastic."""
    if not 0.0 < top <= 1.0:
        raise ConfigError(f"top={top}; allowed: a fraction in (0, 1]")
    a = np.asarray(anchor_probs, np.float64)
    y = np.asarray(noisy)
    pred = a.argmax(1)
    t = np.eye(num_classes)
    for i in range(num_classes):
        idx = np.flatnonzero(pred == i)
        if idx.size == 0:
            continue
        idx = idx[np.argsort(-a[idx, i], kind="stable")][: max(1, int(round(top * idx.size)))]
        t[i] = np.bincount(y[idx], minlength=num_classes) / idx.size
    return t


def noise_rate(transition: np.ndarray, prior: np.ndarray) -> float:
    """The fraction of wrong labels a transition matrix implies: sum_i prior_i (1 - T[i, i])."""
    t, pr = np.asarray(transition, np.float64), np.asarray(prior, np.float64)
    return float((pr / pr.sum() * (1.0 - np.diag(t))).sum())


def forward_loss(logits: jax.Array, y: jax.Array, transition: jax.Array) -> jax.Array:
    """Per-example forward-corrected cross-entropy -log (softmax(z) T)_y: (B, C), (B,), (C, C) -> (B,)."""
    q = jax.nn.softmax(logits) @ transition
    return -jnp.log(jnp.clip(jnp.take_along_axis(q, y[:, None], 1)[:, 0], 1e-12, 1.0))


def elr_target_update(t: jax.Array, logits: jax.Array, beta: float) -> jax.Array:
    """t_i <- beta t_i + (1 - beta) p_i with p clipped to [1e-4, 1 - 1e-4], renormalised, no gradient. (B, C)."""
    p = jnp.clip(jax.nn.softmax(jax.lax.stop_gradient(logits)), ELR_CLIP, 1.0 - ELR_CLIP)
    return beta * t + (1.0 - beta) * p / p.sum(-1, keepdims=True)


def elr_loss(logits: jax.Array, y: jax.Array, t: jax.Array, lam: float) -> jax.Array:
    """Per-example ELR loss CE + lam * log(1 - <t, p>) for already-updated targets t (B, C) -> (B,)."""
    logp = jax.nn.log_softmax(logits)
    ce = -jnp.take_along_axis(logp, y[:, None], 1)[:, 0]
    p = jnp.clip(jnp.exp(logp), ELR_CLIP, 1.0 - ELR_CLIP)
    return ce + lam * jnp.log(1.0 - (jax.lax.stop_gradient(t) * p).sum(-1))


class RobustState(NamedTuple):
    params: Any
    opt_state: Any
    targets: jax.Array     # (N, C) ELR's running targets (zeros and unused for ce / gce)
    key: jax.Array
    best_params: Any       # the params of the best noisy-validation epoch so far
    best_val: jax.Array    # () its accuracy (-1 before the first epoch)
    best_epoch: jax.Array  # () int, counted from 1


def train_robust(data, cfg: RobustConfig, key: jax.Array, progress: bool = False) -> dict:
    """Train cfg.k nets on data.x_train / data.y_noisy with cfg.loss.

    Returns dict(method, acc_mean, acc_std, accs (last epoch per run), best_acc_mean / best_accs / best_epochs
    (the epoch the noisy validation split picks; absent without one), loss (per epoch, mean over runs),
    label_scores (N,) mean over runs of ELR's 1 - t_i[y_i] (ELR only: high = likely wrong), flagged (N,) bool
    (ELR: argmax t_i != y_i in the majority of runs), seconds, config)."""
    tc: TrainConfig = cfg.train
    if tc.augment != "none" or tc.cutmix_p > 0 or tc.sam_rho > 0:
        raise ConfigError(f"{cfg.loss} uses plain steps: augment={tc.augment!r}, cutmix_p, sam_rho must be "
                          f"'none'/0 (allowed: the baseline's plain SGD/Adam config)")
    x = jnp.asarray(data.x_train, jnp.float32)
    y = jnp.asarray(data.y_noisy, jnp.int32)
    n, c = x.shape[0], data.num_classes
    has_val = has_val_split(data)
    xv = jnp.asarray(data.x_val if has_val else x[:1], jnp.float32)
    yv = jnp.asarray(data.y_val if has_val else y[:1], jnp.int32)
    n_steps, batch = steps_per_epoch(n, tc.batch_size, drop_last=True)
    epochs = tc.epochs
    net = make_net(NetConfig(c, width=cfg.width, depth=cfg.depth or default_depth(x.shape[1])))
    tx = make_optimizer(tc, epochs * n_steps)
    trans = jnp.asarray(np.asarray(cfg.transition, np.float32)) if cfg.loss == "forward" else None

    def batch_loss(params, xb, yb, tb):
        logits = net.apply(params, xb)
        if cfg.loss == "gce":
            per = gce_loss(logits, yb, cfg.q)
            t_new = tb
        elif cfg.loss == "elr":
            t_new = elr_target_update(tb, logits, cfg.beta)
            per = elr_loss(logits, yb, t_new, cfg.lam)
        elif cfg.loss == "forward":
            per, t_new = forward_loss(logits, yb, trans), tb
        else:
            per = -jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1)[:, 0]
            t_new = tb
        return per.mean(), t_new

    def step(state: RobustState, idx):
        """One update on the batch `idx`: (state, idx) -> (state, metrics)."""
        xb, yb = x[idx], y[idx]
        (loss, t_new), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params, xb, yb,
                                                                             state.targets[idx])
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        targets = state.targets.at[idx].set(t_new) if cfg.loss == "elr" else state.targets
        return state._replace(params=params, opt_state=opt_state, targets=targets), {"loss": loss}

    def epoch(state: RobustState, e):
        key, kp = jax.random.split(state.key)
        perm = jax.random.permutation(kp, n)[: n_steps * batch].reshape(n_steps, batch)
        state, met = jax.lax.scan(step, state._replace(key=key), perm)
        val = (jnp.argmax(net.apply(state.params, xv), -1) == yv).mean()
        better = val > state.best_val
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), new, old)
        state = state._replace(best_params=pick(state.params, state.best_params),
                               best_val=jnp.where(better, val, state.best_val),
                               best_epoch=jnp.where(better, e + 1, state.best_epoch))
        return state, {"loss": met["loss"].mean(), "val": val}

    def run_one(k):
        k_init, k_run = jax.random.split(k)
        params = net.init(k_init, tuple(x.shape[1:]))
        state = RobustState(params, tx.init(params), jnp.zeros((n, c), jnp.float32), k_run, params,
                            jnp.asarray(-1.0), jnp.asarray(0))
        return jax.lax.scan(epoch, state, jnp.arange(epochs))

    t0 = time.perf_counter()
    state, hist = jax.jit(jax.vmap(run_one))(jax.random.split(key, cfg.k))
    hist = jax.device_get(hist)
    accs = np.asarray(accuracy(net, state.params, data.x_test, data.y_test))
    out = {"method": cfg.loss, "acc_mean": float(accs.mean()), "acc_std": float(accs.std()),
           "accs": [float(a) for a in accs], "loss": [float(v) for v in np.asarray(hist["loss"]).mean(0)],
           "config": {"loss": cfg.loss, "width": cfg.width, "k": cfg.k, "epochs": epochs, "batch": batch,
                      "q": cfg.q, "lam": cfg.lam, "beta": cfg.beta, "train": dataclasses.asdict(tc)}}
    if has_val:
        best = np.asarray(accuracy(net, state.best_params, data.x_test, data.y_test))
        out.update(best_acc_mean=float(best.mean()), best_acc_std=float(best.std()),
                   best_accs=[float(a) for a in best], best_epochs=[int(e) for e in np.asarray(state.best_epoch)],
                   val_curve=[float(v) for v in np.asarray(hist["val"]).mean(0)])
    if cfg.loss == "elr":
        t = np.asarray(state.targets)                                   # (k, N, C)
        yn = np.asarray(data.y_noisy)
        out["label_scores"] = (1.0 - t[:, np.arange(n), yn]).mean(0).tolist()
        out["flagged"] = ((t.argmax(-1) != yn[None]).mean(0) > 0.5).tolist()
    out["seconds"] = time.perf_counter() - t0
    return out
