"""DivideMix (Li, Socher & Hoi, ICLR 2020) in JAX.

Two nets. After a cross-entropy warm-up on all the noisy labels, every epoch:
1. each net scores every training sample by its cross-entropy on the given label (no augmentation), the losses
   are min-max normalised and a 2-component 1-D Gaussian mixture is fitted to them; the clean probability w_i
   is the posterior of the low-mean component (`gmm_clean_prob`);
2. co-divide: each net trains on the split made by the *other* net (labelled: w_i > tau = 0.5, the rest
   unlabelled), so the two nets do not confirm their own mistakes;
3. MixMatch on that split: label co-refinement for the labelled part (w y + (1 - w) mean prediction over two
   augmented views, sharpened with T = 0.5), co-guessing for the unlabelled part (both nets' predictions over
   two views, averaged and sharpened), mixup of everything with lambda ~ Beta(4, 4), lambda = max(lambda,
   1 - lambda); loss = CE on the mixed labelled part + lambda_u (ramped in over 16 epochs) * MSE on the mixed
   unlabelled part + a uniform-prior penalty sum_c pi_c log(pi_c / mean_b p_bc).
The test prediction is the sum of the two nets' logits. lambda_u is chosen from {0, 25} on the noisy validation
split (`train_dividemix_select`). A label is flagged wrong where the two nets' mean w is below 0.5; 1 - w ranks.

Budget: the noisy-data baseline's net, epochs, batch, SGD + momentum + weight decay and its lr steps (applied per
epoch); a warm-up of a tenth of the epochs. Runs: `k` seeds vmapped; one MixMatch epoch of one net is a
`fori_loop` over its len(labelled) // batch steps, a traced count (a labelled-set size that changes every epoch
recompiles nothing; `epoch_fns`); the mixture is fitted on the host between epochs (N numbers per net).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.augment import crop_flip
from jaxdistill.baseline import get_baseline_config
from jaxdistill.data.noisy import has_val_split
from jaxdistill.errors import ConfigError
from jaxdistill.evaluate import default_depth
from jaxdistill.nn import NetConfig, make_net
from jaxdistill.sharding import to_host
from jaxdistill.train import TrainConfig, lr_schedule, make_optimizer, predict


@dataclasses.dataclass(frozen=True)
class DivideMixConfig:
    """warmup epochs (None: a tenth of the epochs, at least 1); p_threshold tau; T sharpening temperature;
    alpha of the Beta mixup; lambda_u weight of the unlabelled loss, ramped in over `rampup` epochs; crop_pad
    the random-crop padding (None: H // 7, i.e. 4 at 28 and 32 pixels, 1 at 8)."""

    width: int = 128
    depth: int | None = None
    k: int = 3
    train: TrainConfig = TrainConfig(epochs=50, batch_size=256, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                     schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    warmup: int | None = None
    p_threshold: float = 0.5
    T: float = 0.5
    alpha: float = 4.0
    lambda_u: float = 25.0
    rampup: int = 16
    crop_pad: int | None = None
    anchor_epochs: int = 0
    gmm_iters: int = 10
    gmm_tol: float = 1e-2
    gmm_reg: float = 5e-4

    def __post_init__(self):
        checks = [("p_threshold", 0.0 < self.p_threshold < 1.0, "in (0, 1)"), ("T", self.T > 0, "> 0"),
                  ("alpha", self.alpha > 0, "> 0"), ("lambda_u", self.lambda_u >= 0, ">= 0"),
                  ("rampup", self.rampup >= 1, ">= 1"), ("k", self.k >= 1, ">= 1"),
                  ("warmup", self.warmup is None or 0 <= self.warmup <= self.train.epochs,
                   f"in [0, epochs={self.train.epochs}] or None"),
                  ("anchor_epochs", 0 <= self.anchor_epochs <= self.train.epochs,
                   f"in [0, epochs={self.train.epochs}]")]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"DivideMix {name}={getattr(self, name)!r}; allowed {allowed}")

    def replace(self, **kw) -> "DivideMixConfig":
        return dataclasses.replace(self, **kw)

    @property
    def warmup_epochs(self) -> int:
        return self.warmup if self.warmup is not None else max(1, round(0.1 * self.train.epochs))


def get_dividemix_config(dataset: str, preset: str = "paper", **overrides) -> DivideMixConfig:
    """The noisy-data baseline's net and training recipe with DivideMix's own constants (tau 0.5, T 0.5,
    Beta(4, 4), lambda_u 25 ramped over 16 epochs)."""
    b = get_baseline_config(dataset, preset)
    return DivideMixConfig(width=b.width, k=b.k, train=b.train).replace(**overrides)


# ----------------------------------------------------------------------------------------------- the pieces

def gmm_clean_prob(losses: np.ndarray, max_iter: int = 10, tol: float = 1e-2, reg: float = 5e-4) -> np.ndarray:
    """Posterior of the low-mean component of a 2-component 1-D Gaussian mixture fitted to `losses` (N,) by EM.

    Initialised as scikit-learn's default (hard k-means labels, then an M step); stops when the mean
    log-likelihood changes by less than `tol`, then one E step gives the posteriors. `reg` is added to each
    variance (scikit-learn's reg_covar)."""
    x = np.asarray(losses, np.float64).reshape(-1)
    if x.size < 2 or np.ptp(x) == 0:
        return np.ones_like(x)
    # 1-D k-means with 2 centres from the extremes: the hard labels scikit-learn's 'kmeans' init starts EM from.
    c = np.array([x.min(), x.max()])
    for _ in range(100):
        lab = np.abs(x[:, None] - c[None]).argmin(1)
        new = np.array([x[lab == j].mean() if np.any(lab == j) else c[j] for j in range(2)])
        if np.allclose(new, c):
            break
        c = new
    resp = np.eye(2)[lab]

    def m_step(r):
        nk = r.sum(0) + 10 * np.finfo(np.float64).eps
        mu = (r * x[:, None]).sum(0) / nk
        var = (r * (x[:, None] - mu) ** 2).sum(0) / nk + reg
        return nk / x.size, mu, var

    def e_step(pi, mu, var):
        logp = np.log(pi) - 0.5 * (np.log(2 * np.pi * var) + (x[:, None] - mu) ** 2 / var)
        mx = logp.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logp - mx).sum(1))
        return lse.mean(), np.exp(logp - lse[:, None])

    pi, mu, var = m_step(resp)
    lower = -np.inf
    for _ in range(max_iter):
        ll, resp = e_step(pi, mu, var)
        pi, mu, var = m_step(resp)
        if abs(ll - lower) < tol:
            break
        lower = ll
    _, resp = e_step(pi, mu, var)
    return resp[:, int(np.argmin(mu))]


def anchor_clean_prob(pred_probs: np.ndarray, labels: np.ndarray, **gmm) -> np.ndarray:
    """Clean probabilities from an anchor's predictions (N, C) on the training images: the same mixture DivideMix
    fits, on the anchor's min-max normalised cross-entropy of each given label."""
    p = np.clip(np.asarray(pred_probs, np.float64), 1e-12, 1.0)
    ce = -np.log(p[np.arange(len(labels)), np.asarray(labels)])
    return gmm_clean_prob(minmax(ce), **gmm)


def minmax(v: np.ndarray) -> np.ndarray:
    """(v - min) / (max - min) along the last axis (DivideMix normalises each net's losses so)."""
    lo, hi = v.min(-1, keepdims=True), v.max(-1, keepdims=True)
    return (v - lo) / np.maximum(hi - lo, 1e-12)


def sharpen(p: jax.Array, T: float) -> jax.Array:
    """p^(1/T), renormalised over the last axis."""
    q = p ** (1.0 / T)
    return q / q.sum(-1, keepdims=True)


def co_refine(y_onehot: jax.Array, w: jax.Array, p: jax.Array) -> jax.Array:
    """Label co-refinement w y + (1 - w) p: (B, C), (B,), (B, C) -> (B, C)."""
    return w[:, None] * y_onehot + (1.0 - w[:, None]) * p


def mixup(key: jax.Array, x: jax.Array, t: jax.Array, alpha: float):
    """lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda); mix each row with a random other row.
    Returns (mixed x, mixed targets, lambda, permutation)."""
    k_l, k_p = jax.random.split(key)
    lam = jax.random.beta(k_l, alpha, alpha)
    lam = jnp.maximum(lam, 1.0 - lam)
    perm = jax.random.permutation(k_p, x.shape[0])
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm], lam, perm


def linear_rampup(current, warmup: int, length: int):
    """clip((current - warmup) / length, 0, 1): the weight lambda_u is multiplied by (epochs, fractional)."""
    return jnp.clip((current - warmup) / length, 0.0, 1.0)


def mixmatch_loss(logits: jax.Array, targets: jax.Array, n_labelled: int, lambda_u) -> tuple:
    """CE on the first n_labelled mixed rows + lambda_u * MSE on the rest + the uniform-prior penalty."""
    logp = jax.nn.log_softmax(logits)
    lx = -(targets[:n_labelled] * logp[:n_labelled]).sum(-1).mean()
    p = jnp.exp(logp)
    lu = ((p[n_labelled:] - targets[n_labelled:]) ** 2).mean()
    prior = jnp.full((logits.shape[-1],), 1.0 / logits.shape[-1])
    penalty = (prior * jnp.log(prior / p.mean(0))).sum()
    return lx + lambda_u * lu + penalty, {"lx": lx, "lu": lu, "penalty": penalty}


# ----------------------------------------------------------------------------------------------- training

def epoch_fns(net, x: jax.Array, y1h: jax.Array, cfg: DivideMixConfig, opt, aug, b: int):
    """The compiled pieces of one net's epoch over x (N, H, W, C) with noisy one-hot labels y1h (N, C), batch b:
    warm_epoch(params, opt_state, key, lr) -> (params, opt_state, mean CE); mix_step, one MixMatch step as a scan
    body; mix_epoch(params, opt_state, other, key, lr, epoch_f, lambda_u, il, wl, iu, active, n_active) ->
    (params, opt_state, mean loss over the active steps). `opt(lr)` is the optax transform at that lr.

    mix_epoch runs only the first n_active steps (a traced count: no recompiling as the split changes), because
    DivideMix takes len(labelled) // b steps and the active steps come first; a run whose own count is lower
    (under vmap) keeps its state through its inactive ones."""
    n = x.shape[0]
    steps = max(1, n // b)
    warm = cfg.warmup_epochs

    def warm_step(carry, idx):
        params, opt_state, key, lr = carry
        key, ka = jax.random.split(key)
        xb = aug(ka, x[idx])

        def loss(p):
            lg = net.apply(p, xb)
            return -(y1h[idx] * jax.nn.log_softmax(lg)).sum(-1).mean()

        l, g = jax.value_and_grad(loss)(params)
        upd, opt_state = opt(lr).update(g, opt_state, params)
        return (optax.apply_updates(params, upd), opt_state, key, lr), l

    def warm_epoch(params, opt_state, key, lr):
        k_perm, k_run = jax.random.split(key)
        perm = jax.random.permutation(k_perm, n)[: steps * b].reshape(steps, b)
        (params, opt_state, _, _), losses = jax.lax.scan(warm_step, (params, opt_state, k_run, lr), perm)
        return params, opt_state, losses.mean()

    def mix_step(carry, inp):
        params, opt_state, other, key, lr, epoch_f, lambda_u = carry
        il, wl, iu, active, s = inp
        key, k1, k2, k3, k4, km = jax.random.split(key, 6)
        xl, xu = x[il], x[iu]
        x1, x2, u1, u2 = aug(k1, xl), aug(k2, xl), aug(k3, xu), aug(k4, xu)
        sm = lambda p, xb: jax.nn.softmax(net.apply(p, xb))
        pu = (sm(params, u1) + sm(params, u2) + sm(other, u1) + sm(other, u2)) / 4
        tu = sharpen(pu, cfg.T)
        px = (sm(params, x1) + sm(params, x2)) / 2
        tx_ = sharpen(co_refine(y1h[il], wl, px), cfg.T)
        tu, tx_ = jax.lax.stop_gradient(tu), jax.lax.stop_gradient(tx_)
        mixed_x, mixed_t, _, _ = mixup(km, jnp.concatenate([x1, x2, u1, u2]),
                                       jnp.concatenate([tx_, tx_, tu, tu]), cfg.alpha)
        lam_u = lambda_u * linear_rampup(epoch_f + s / steps, warm, cfg.rampup)

        def loss(p):
            return mixmatch_loss(net.apply(p, mixed_x), mixed_t, 2 * b, lam_u)

        (l, met), g = jax.value_and_grad(loss, has_aux=True)(params)
        upd, new_opt = opt(lr).update(g, opt_state, params)
        new_params = optax.apply_updates(params, upd)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, o: jnp.where(active, a, o), new, old)
        return (keep(new_params, params), keep(new_opt, opt_state), other, key, lr, epoch_f, lambda_u), l

    def mix_epoch(params, opt_state, other, key, lr, epoch_f, lambda_u, il, wl, iu, active, n_active):
        def body(s, state):
            carry, total = state
            carry, l = mix_step(carry, (il[s], wl[s], iu[s], active[s], s))
            return carry, total + l * active[s]

        carry = (params, opt_state, other, key, lr, epoch_f, lambda_u)
        (params, opt_state, *_), total = jax.lax.fori_loop(0, n_active, body, (carry, jnp.float32(0.0)))
        return params, opt_state, total / jnp.maximum(active.sum(), 1)

    return warm_epoch, mix_step, mix_epoch


TEST_CURVE = 2000  # test images scored after every epoch for the curve (never used for a choice)


def train_dividemix(data, cfg: DivideMixConfig, key: jax.Array, progress: bool = False,
                    anchor_w: np.ndarray | None = None) -> dict:
    """DivideMix on data.x_train / data.y_noisy; cfg.k independent runs.

    anchor_w (N,): clean probabilities from elsewhere (jaxdistill's anchor: nets trained on the distilled set,
    which never saw the noisy labels); the first cfg.anchor_epochs divided epochs use it as both nets' split
    instead of their own mixtures (then the nets' own mixtures take over), so the warm-up on the noisy labels
    can be shortened or dropped (warmup=0).

    Returns dict(method, acc_mean / acc_std / accs (last epoch, the two nets' summed logits), best_* (the epoch
    the noisy validation split picks, where there is one), val_curve, labelled_fraction and label_precision
    per epoch (mean over runs and nets; precision where true labels are known), label_scores (N,) = 1 - mean w,
    flagged (N,) = mean w < 0.5, lambda_u, seconds, config)."""
    tc = cfg.train
    x = jnp.asarray(data.x_train, jnp.float32)
    y = np.asarray(data.y_noisy, np.int32)
    n, h = x.shape[0], x.shape[1]
    c = data.num_classes
    kr = cfg.k
    b = min(tc.batch_size, n)
    steps = max(1, n // b)
    epochs, warm = tc.epochs, cfg.warmup_epochs
    pad = cfg.crop_pad if cfg.crop_pad is not None else max(1, h // 7)
    aug = lambda k, xb: crop_flip(k, xb, pad)
    net = make_net(NetConfig(c, width=cfg.width, depth=cfg.depth or default_depth(h)))
    y1h = jax.nn.one_hot(jnp.asarray(y), c)
    has_val = has_val_split(data)
    y_true = getattr(data, "y_true", None)
    sched = lr_schedule(tc, epochs)
    lr_at = (lambda e: float(sched(e))) if callable(sched) else (lambda e: float(sched))

    opt = lambda lr: make_optimizer(tc.replace(schedule="constant"), 1, lr=lr)
    warm_epoch, _, mix_epoch = epoch_fns(net, x, y1h, cfg, opt, aug, b)

    # Shapes: runs k (vmapped) x nets 2 (leading axes of params); the two nets of a run train one after the other.
    warm_all = jax.jit(jax.vmap(jax.vmap(warm_epoch, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, None)))
    mix_all = jax.jit(jax.vmap(mix_epoch, in_axes=(0, 0, 0, 0, None, None, None, 0, 0, 0, 0, None)))

    def logits_sum(params, xs):
        flat = jax.tree_util.tree_map(lambda a: a.reshape(kr * 2, *a.shape[2:]), params)
        lg = predict(net, flat, xs)                                  # (2k, M, C)
        return np.asarray(to_host(lg)).reshape(kr, 2, *lg.shape[1:])

    key, k_init = jax.random.split(key)
    params = jax.vmap(jax.vmap(lambda kk: net.init(kk, tuple(x.shape[1:]))))(
        jax.random.split(k_init, kr * 2).reshape(kr, 2, -1))
    tx0 = opt(tc.lr)
    opt_state = jax.vmap(jax.vmap(tx0.init))(params)
    rs = np.random.RandomState(int(jax.random.randint(key, (), 0, 2 ** 31 - 1)))
    hist: dict[str, list] = {"loss": [], "val": [], "labelled_fraction": [], "label_precision": [], "test_slice": []}
    best_val = np.full(kr, -1.0)
    best_params = to_host(params)
    best_epoch = np.zeros(kr, int)
    w = np.ones((kr, 2, n))
    t0 = time.perf_counter()
    for e in range(epochs):
        lr = jnp.float32(lr_at(e))
        key, ke = jax.random.split(key)
        if e < warm:
            params, opt_state, loss = warm_all(params, opt_state, jax.random.split(ke, kr * 2).reshape(kr, 2, -1), lr)
            hist["loss"].append(float(np.mean(to_host(loss))))
        else:
            if anchor_w is not None and e < warm + cfg.anchor_epochs:
                w = np.broadcast_to(np.asarray(anchor_w, np.float64), (kr, 2, n)).copy()
            else:
                lg = logits_sum(params, x)                             # (k, 2, N, C)
                mx = lg.max(-1)
                lse = mx + np.log(np.exp(lg - mx[..., None]).sum(-1))
                norm = minmax(lse - lg[..., np.arange(n), y])          # (k, 2, N) per-sample cross-entropy
                w = np.stack([[gmm_clean_prob(norm[r, j], cfg.gmm_iters, cfg.gmm_tol, cfg.gmm_reg)
                               for j in range(2)] for r in range(kr)])
            losses = []
            for j in (0, 1):                                           # net j learns from the other net's split
                il, wl, iu, active, frac = _split_batches(w[:, 1 - j], cfg.p_threshold, steps, b, rs)
                hist["labelled_fraction"].append(frac.mean())
                if y_true is not None:
                    lab = w[:, 1 - j] > cfg.p_threshold
                    ok = (np.asarray(y_true) == y)[None]
                    hist["label_precision"].append(float((lab & ok).sum() / max(lab.sum(), 1)))
                pj = jax.tree_util.tree_map(lambda a: a[:, j], params)
                oj = jax.tree_util.tree_map(lambda a: a[:, j], opt_state)
                other = jax.tree_util.tree_map(lambda a: a[:, 1 - j], params)
                key, km = jax.random.split(key)
                pj, oj, lj = mix_all(pj, oj, other, jax.random.split(km, kr), lr, jnp.float32(e),
                                     jnp.float32(cfg.lambda_u), il, wl, iu, active,
                                     jnp.int32(np.asarray(active).sum(1).max()))
                params = jax.tree_util.tree_map(lambda a, v: a.at[:, j].set(v), params, pj)
                opt_state = jax.tree_util.tree_map(lambda a, v: a.at[:, j].set(v), opt_state, oj)
                losses.append(float(np.mean(to_host(lj))))
            hist["loss"].append(float(np.mean(losses)))
        if has_val:
            v = (logits_sum(params, data.x_val).sum(1).argmax(-1) == np.asarray(data.y_val)[None]).mean(-1)
            hist["val"].append(float(v.mean()))
            better = v > best_val
            if better.any():
                host = to_host(params)
                best_params = jax.tree_util.tree_map(lambda bp, p: np.where(
                    better.reshape(-1, *([1] * (p.ndim - 1))), p, bp), best_params, host)
                best_val = np.where(better, v, best_val)
                best_epoch = np.where(better, e + 1, best_epoch)
        xt, yt = data.x_test[:TEST_CURVE], np.asarray(data.y_test[:TEST_CURVE])
        hist["test_slice"].append(float((logits_sum(params, xt).sum(1).argmax(-1) == yt[None]).mean()))
        if progress:
            print(f"dividemix epoch {e + 1}/{epochs} loss {hist['loss'][-1]:.3f} "
                  f"test slice {hist['test_slice'][-1]:.3f}", flush=True)
    test = lambda p: (logits_sum(p, data.x_test).sum(1).argmax(-1) == np.asarray(data.y_test)[None]).mean(-1)
    accs = test(params)
    wm = w.mean((0, 1))
    out = {"method": "dividemix", "acc_mean": float(accs.mean()), "acc_std": float(accs.std()),
           "accs": [float(a) for a in accs], "loss": hist["loss"], "test_slice_curve": hist["test_slice"],
           "labelled_fraction": [float(f) for f in hist["labelled_fraction"]],
           "label_precision": hist["label_precision"], "lambda_u": cfg.lambda_u,
           "label_scores": (1.0 - wm).tolist(), "flagged": (wm < cfg.p_threshold).tolist(),
           "config": {"width": cfg.width, "k": kr, "epochs": epochs, "warmup": warm, "batch": b,
                      "steps_per_epoch": steps, "p_threshold": cfg.p_threshold, "T": cfg.T, "alpha": cfg.alpha,
                      "lambda_u": cfg.lambda_u, "rampup": cfg.rampup, "crop_pad": pad,
                      "anchor": anchor_w is not None,
                      "anchor_epochs": cfg.anchor_epochs if anchor_w is not None else 0,
                      "train": dataclasses.asdict(tc)}}
    if has_val:
        best = test(jax.tree_util.tree_map(jnp.asarray, best_params))
        out.update(best_acc_mean=float(best.mean()), best_acc_std=float(best.std()),
                   best_accs=[float(a) for a in best], best_epochs=[int(v) for v in best_epoch],
                   val_curve=hist["val"], final_val=hist["val"][-1])
    out["seconds"] = time.perf_counter() - t0
    return out


def _split_batches(w: np.ndarray, tau: float, steps: int, b: int, rs: np.random.RandomState):
    """Per run (w: (k, N) clean probabilities of the dividing net): labelled / unlabelled index batches.

    Returns il, wl, iu (k, steps, b), active (k, steps) with DivideMix's len(labelled) // b steps switched on
    (at least 1), and the labelled fraction (k,). Each index list cycles through a fresh permutation; an empty
    side borrows the other side's indices (its loss term then sees labelled samples, as a degenerate split)."""
    k, n = w.shape
    il = np.empty((k, steps, b), np.int32)
    iu = np.empty((k, steps, b), np.int32)
    wl = np.empty((k, steps, b), np.float32)
    active = np.zeros((k, steps), np.float32)
    frac = np.empty(k)
    for r in range(k):
        lab = np.flatnonzero(w[r] > tau)
        unl = np.flatnonzero(w[r] <= tau)
        frac[r] = lab.size / n
        lab = lab if lab.size else np.arange(n)
        unl = unl if unl.size else lab
        take = lambda idx: np.resize(rs.permutation(idx), steps * b).reshape(steps, b)
        il[r], iu[r] = take(lab), take(unl)
        wl[r] = w[r][il[r]]
        active[r, : max(1, min(steps, lab.size // b))] = 1.0
    return jnp.asarray(il), jnp.asarray(wl), jnp.asarray(iu), jnp.asarray(active), frac


def candidate_key(cfg: DivideMixConfig, anchor_w: np.ndarray | None) -> str:
    """A finished candidate's name in a `memo`: its lambda_u plus a digest of everything else that makes the
    run (the config and the anchor), so a memo written under other settings is never reused."""
    import hashlib

    h = hashlib.sha1(repr(cfg).encode())
    if anchor_w is not None:
        h.update(np.ascontiguousarray(anchor_w, np.float32).tobytes())
    return f"lambda_u={cfg.lambda_u:g}|{h.hexdigest()[:12]}"


def train_dividemix_select(data, cfg: DivideMixConfig, key: jax.Array, lambda_us=(0.0, 25.0),
                           progress: bool = False, anchor_w: np.ndarray | None = None, memo=None) -> dict:
    """Train DivideMix once per lambda_u (same key) and keep the run whose last-epoch noisy-validation accuracy
    is highest (no test labels involved). Needs a validation split. Returns the chosen run's dict with
    `lambda_u_candidates` {lambda_u: {final_val, acc_mean}} beside it.

    memo: an optional mapping (e.g. backed by a results file) of finished candidates by `candidate_key`: a
    candidate found there is not trained again, and each one trained is stored there as soon as it ends, so a
    run stopped between the two candidates loses only the one under way. The same key is the caller's to keep."""
    if not has_val_split(data):
        raise ConfigError("DivideMix chooses lambda_u on the noisy validation split, and this data has none: "
                          "make the data with val_fraction > 0 (e.g. make_noisy_data(..., val_fraction=0.1))")
    runs = {}
    for lu in lambda_us:
        c = cfg.replace(lambda_u=float(lu))
        name = candidate_key(c, anchor_w)
        if memo is not None and name in memo:
            runs[float(lu)] = memo[name]
            continue
        runs[float(lu)] = train_dividemix(data, c, key, progress, anchor_w)
        if memo is not None:
            memo[name] = runs[float(lu)]
    chosen = max(runs, key=lambda lu: runs[lu]["final_val"])
    out = dict(runs[chosen])
    out["lambda_u_candidates"] = {str(lu): {"final_val": r["final_val"], "acc_mean": r["acc_mean"]}
                                  for lu, r in runs.items()}
    return out
