"""Co-teaching (Han et al., NeurIPS 2018) in JAX, and the two-net machinery JoCoR shares.

Two ConvNets train side by side. Each batch, each net ranks the samples by its own cross-entropy on the
given (noisy) labels and keeps its small-loss fraction 1 - forget_rate(e); the *peer* is updated on that
selection. forget_rate(e) = tau * min(e / T_k, 1) ... precisely the original code's schedule:
rate[:T_k] = linspace(0, tau**c, T_k), rate[T_k:] = tau (epoch e counted from 0, c = 1), so the first
epoch keeps the whole batch. The number kept per batch is int((1 - rate) * B) (the original's rounding).

Same ConvNet, epochs, batch and optimiser as the noisy-data baseline (`get_baseline_config`), so each of
the two nets gets the baseline's budget (the method costs two nets' worth of compute, as in the paper).
Runs are vmapped: `k` independent seeds train in one jitted program; each epoch is one `lax.scan` over
batches of a pure `(state, batch) -> (state, metrics)` step, and the epochs are a scan over the schedule.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.data.noisy import has_val_split
from jaxdistill.errors import ConfigError
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.train import TrainConfig, accuracy, make_optimizer, predict, steps_per_epoch


@dataclasses.dataclass(frozen=True)
class CoTeachingConfig:
    """forget_rate tau (None: the data's noise-rate estimate, i.e. the realised rate when known, else 0.2);
    num_gradual T_k epochs of linear ramp; exponent c; lam and lam_asym are JoCoR's co-regularisation weights."""

    width: int = 128
    depth: Optional[int] = None
    k: int = 3
    train: TrainConfig = TrainConfig(epochs=50, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                     schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    forget_rate: Optional[float] = None
    num_gradual: int = 10
    exponent: float = 1.0
    lam: float = 0.9

    def __post_init__(self):
        if self.forget_rate is not None and not 0.0 <= self.forget_rate < 1.0:
            raise ConfigError(f"forget_rate={self.forget_rate} must be in [0, 1) or None")
        if self.num_gradual < 0:
            raise ConfigError(f"num_gradual={self.num_gradual} must be >= 0")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"lam={self.lam} must be in [0, 1]")
        if self.k < 1:
            raise ConfigError(f"k={self.k} runs must be >= 1")

    def replace(self, **kw) -> "CoTeachingConfig":
        return dataclasses.replace(self, **kw)


def get_coteaching_config(dataset: str, preset: str = "paper", **overrides) -> CoTeachingConfig:
    """The baseline's net, epochs and batch (see jaxdistill.baseline.get_baseline_config) with the papers'
    optimiser: Adam lr 1e-3 (both Co-teaching and JoCoR use it; with JoCoR's lam = 0.9 the CE term gets
    only 0.1 of the weight, and SGD at the baseline's lr barely moves it), the baseline's lr steps.
    T_k = 10 epochs as in the paper for 'paper', a fifth of the epochs for 'quick'."""
    from jaxdistill.baseline import get_baseline_config

    b = get_baseline_config(dataset, preset)
    t_k = 10 if preset == "paper" else max(1, b.train.epochs // 5)
    train = b.train.replace(optimizer="adam", lr=1e-3, momentum=0.0, weight_decay=0.0)
    cfg = CoTeachingConfig(width=b.width, k=b.k, train=train, num_gradual=min(t_k, b.train.epochs))
    return cfg.replace(**overrides)


def pair_config(bcfg, **overrides) -> CoTeachingConfig:
    """Co-teaching / JoCoR for a BaselineConfig `bcfg` (a run's net, k and epochs): the papers' optimiser (Adam
    1e-3), the forget rate ramped over the first fifth of the epochs; what `jaxdistill lnl` and the anchored
    Co-teaching train with."""
    adam = bcfg.train.replace(optimizer="adam", lr=1e-3, momentum=0.0, weight_decay=0.0)
    return CoTeachingConfig(width=bcfg.width, k=bcfg.k, train=adam, num_gradual=max(1, bcfg.train.epochs // 5),
                            **overrides)


def forget_rate_schedule(epochs: int, tau: float, num_gradual: int, exponent: float = 1.0) -> np.ndarray:
    """(epochs,) forget rate per epoch: linspace(0, tau**c, T_k) then tau (Han et al.'s code)."""
    rate = np.full(epochs, tau, np.float64)
    g = min(num_gradual, epochs)
    if g > 0:
        rate[:g] = np.linspace(0.0, tau ** exponent, num_gradual)[:g]
    return rate


def num_remember(rate, batch: int):
    """int((1 - rate) * batch), at least 1 (works on NumPy and traced values)."""
    xp = jnp if isinstance(rate, jax.Array) else np
    return xp.maximum(xp.floor((1.0 - rate) * batch + 1e-6).astype(xp.int32), 1)


def small_loss_mask(loss: jax.Array, keep: jax.Array) -> jax.Array:
    """(B,) float mask of the `keep` smallest losses (ties broken by position), static shapes."""
    rank = jnp.argsort(jnp.argsort(loss, stable=True), stable=True)
    return (rank < keep).astype(loss.dtype)


def ce(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy (B, C), (B,) int -> (B,)."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]


class PairState(NamedTuple):
    params: Any      # leaves (2, ...): the two nets
    opt_state: Any   # per net, leading axis 2
    key: jax.Array


# A pair loss: (logits1, logits2, y, keep, bias) -> (loss for the gradient (scalar), metrics dict with 'mask').
# bias (B,): added to each sample's loss for the small-loss *selection* only (0 for the papers' methods).
PairLoss = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], tuple]


def coteaching_loss(logits1, logits2, y, keep, bias=0.0):
    """Each net's small-loss selection trains the peer (masks carry no gradient)."""
    l1, l2 = ce(logits1, y), ce(logits2, y)
    m1 = jax.lax.stop_gradient(small_loss_mask(l1 + bias, keep))  # chosen by net 1 -> updates net 2
    m2 = jax.lax.stop_gradient(small_loss_mask(l2 + bias, keep))
    denom = jnp.maximum(keep, 1).astype(l1.dtype)
    loss = (m2 * l1).sum() / denom + (m1 * l2).sum() / denom
    return loss, {"mask": m1, "mask_peer": m2}


def train_pair(data, cfg: CoTeachingConfig, key: jax.Array, pair_loss: PairLoss, name: str,
               progress: bool = False, selection_bias: Optional[np.ndarray] = None) -> dict:
    """Train cfg.k independent pairs with `pair_loss`; returns the results dict (see train_coteaching).

    selection_bias (N,): a per-sample term added to the nets' losses when the small-loss samples are chosen
    (not to the gradient): e.g. an anchor's cross-entropy on each given label (jaxdistill's anchored
    Co-teaching). None: the papers' selection."""
    x = jnp.asarray(data.x_train, jnp.float32)
    y = jnp.asarray(data.y_noisy, jnp.int32)
    n = x.shape[0]
    if selection_bias is not None and np.shape(selection_bias) != (n,):
        raise ConfigError(f"selection_bias has shape {np.shape(selection_bias)}; expected ({n},), one per "
                          f"training sample")
    bias_all = jnp.zeros(n, jnp.float32) if selection_bias is None else jnp.asarray(selection_bias, jnp.float32)
    y_true = getattr(data, "y_true", None)
    clean = jnp.asarray(np.ones(n, bool) if y_true is None else np.asarray(y_true) == np.asarray(data.y_noisy))
    tau = cfg.forget_rate
    if tau is None:
        tau = float(data.noise_rate) if getattr(data, "noise_rate", None) is not None else 0.2
    tc = cfg.train
    n_steps, batch = steps_per_epoch(n, tc.batch_size, drop_last=True)  # Co-teaching's loader drops the last batch
    epochs = tc.epochs
    rates = forget_rate_schedule(epochs, tau, cfg.num_gradual, cfg.exponent)
    from jaxdistill.evaluate import default_depth

    net = make_net(NetConfig(data.num_classes, width=cfg.width, depth=cfg.depth or default_depth(x.shape[1])))
    tx = make_optimizer(tc, epochs * n_steps)

    def step(state: PairState, batch_in):
        """One pair update on a batch: (state, (idx, rate)) -> (state, metrics)."""
        idx, rate = batch_in
        xb, yb, cb = x[idx], y[idx], clean[idx]
        keep = num_remember(rate, batch)

        def total(params):
            lg = jax.vmap(net.apply, in_axes=(0, None))(params, xb)  # (2, B, C)
            loss, met = pair_loss(lg[0], lg[1], yb, keep, bias_all[idx])
            return loss, met

        (loss, met), grads = jax.value_and_grad(total, has_aux=True)(state.params)
        updates, opt_state = jax.vmap(tx.update)(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        m = met["mask"]
        metrics = {"loss": loss, "selected": m.sum() / batch,
                   "label_precision": (m * cb).sum() / jnp.maximum(m.sum(), 1.0)}
        return PairState(params, opt_state, state.key), metrics

    has_val = has_val_split(data)
    xv = jnp.asarray(data.x_val if has_val else x[:1], jnp.float32)
    yv = jnp.asarray(data.y_val if has_val else y[:1], jnp.int32)
    first = lambda p: jax.tree_util.tree_map(lambda a: a[0], p)  # noqa: E731  net 1 of the pair

    def epoch(carry, inp):
        state, best = carry   # best: (net 1's params, noisy-validation accuracy, epoch) at its best epoch
        rate, e = inp
        key, kp = jax.random.split(state.key)
        perm = jax.random.permutation(kp, n)[: n_steps * batch].reshape(n_steps, batch)
        state, met = jax.lax.scan(step, PairState(state.params, state.opt_state, key),
                                  (perm, jnp.full((n_steps,), rate)))
        # net 1 is the headline, so its noisy-validation accuracy picks the best epoch (no test labels)
        p1 = first(state.params)
        val = (jnp.argmax(net.apply(p1, xv), -1) == yv).mean()
        better = val > best[1]
        best = (jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), p1, best[0]),
                jnp.where(better, val, best[1]), jnp.where(better, e + 1, best[2]))
        return (state, best), {**jax.tree_util.tree_map(jnp.mean, met), "val": val}

    def run_one(key):
        k_init, k_run = jax.random.split(key)
        params = jax.vmap(lambda kk: net.init(kk, tuple(x.shape[1:])))(jax.random.split(k_init, 2))
        state = PairState(params, jax.vmap(tx.init)(params), k_run)
        best = (first(params), jnp.asarray(-1.0), jnp.asarray(0))
        return jax.lax.scan(epoch, (state, best), (jnp.asarray(rates, jnp.float32), jnp.arange(epochs)))

    t0 = time.perf_counter()
    (state, best), hist = jax.jit(jax.vmap(run_one))(jax.random.split(key, cfg.k))
    hist = jax.device_get(hist)  # leaves (k, epochs)
    # Test accuracy of both nets of each run; net 1 is the headline (as the paper's tables).
    p1 = jax.tree_util.tree_map(lambda a: a[:, 0], state.params)
    p2 = jax.tree_util.tree_map(lambda a: a[:, 1], state.params)
    acc1 = accuracy(net, p1, data.x_test, data.y_test)
    acc2 = accuracy(net, p2, data.x_test, data.y_test)
    secs = time.perf_counter() - t0
    sel = np.asarray(hist["selected"]).mean(0)
    out = {"method": name, "acc_mean": float(acc1.mean()), "acc_std": float(acc1.std()),
           "accs": [float(a) for a in acc1], "accs_net2": [float(a) for a in acc2],
           "selected_fraction": [float(s) for s in sel],
           "expected_fraction": [float(num_remember(r, batch)) / batch for r in rates],
           "forget_rate": [float(r) for r in rates],
           "label_precision": [float(v) for v in np.asarray(hist["label_precision"]).mean(0)],
           "loss": [float(v) for v in np.asarray(hist["loss"]).mean(0)],
           "tau": float(tau), "seconds": secs,
           "config": {"width": cfg.width, "k": cfg.k, "epochs": epochs, "batch": batch,
                      "num_gradual": cfg.num_gradual, "lam": cfg.lam, "train": dataclasses.asdict(tc)}}
    # Each label's cross-entropy under the final pair (mean over both nets and the runs): the pair's own notion of
    # a wrong label, ranked as its small-loss selection ranks samples (with the selection bias where one was
    # given); flagged = the tau fraction it would drop at the end.
    logp = jax.nn.log_softmax(jnp.concatenate([predict(net, p1, x), predict(net, p2, x)]))   # (2k, N, C)
    scores = -np.asarray(jnp.take_along_axis(logp, y[None, :, None], -1)[..., 0]).mean(0)
    scores = scores + (0.0 if selection_bias is None else np.asarray(selection_bias, np.float64))
    order = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    # pair_pred: the class the final nets' mean probability picks for each training image (what a label the pair
    # flags would be repaired to; jaxdistill.anchored's coteaching_relabel)
    out.update(label_scores=scores.tolist(), flagged=(order >= n - int(round(tau * n))).tolist(),
               pair_pred=np.asarray(jnp.argmax(jnp.exp(logp).mean(0), -1)).astype(int).tolist())
    if has_val:
        b = accuracy(net, best[0], data.x_test, data.y_test)
        val = np.asarray(hist["val"])                                   # (k, epochs)
        out.update(best_acc_mean=float(b.mean()), best_acc_std=float(b.std()), best_accs=[float(a) for a in b],
                   best_epochs=[int(v) for v in np.asarray(best[2])], val_curve=[float(v) for v in val.mean(0)],
                   final_val=float(val[:, -1].mean()))
    return out


def train_coteaching(data, cfg: CoTeachingConfig, key: jax.Array, progress: bool = False,
                     selection_bias: Optional[np.ndarray] = None) -> dict:
    """Co-teaching on data.x_train / data.y_noisy; k runs (selection_bias: see train_pair).

    Returns dict(acc_mean, acc_std, accs (net 1 per run), accs_net2, selected_fraction (per epoch, mean
    over batches and runs), expected_fraction (1 - forget_rate rounded to the batch), forget_rate,
    label_precision (fraction of net 1's selection whose label is correct, per epoch), loss, tau, ...)."""
    if cfg.train.augment != "none" or cfg.train.cutmix_p > 0 or cfg.train.sam_rho > 0:
        raise ConfigError(f"co-teaching uses plain steps: augment={cfg.train.augment!r}, cutmix_p, sam_rho must "
                          f"be 'none'/0 (allowed: the baseline's plain SGD/Adam config)")
    return train_pair(data, cfg, key, coteaching_loss, "coteaching", progress, selection_bias)
