"""RCIG: reparameterised convexified implicit gradients (Loo et al., ICML 2023), in jaxdistill.

One outer iteration (distillers.md section 3, with the corrections of section 6):
  1. pick a pool model theta0 and a real batch (X_t, Y_t) (labels one-hot - 1/C);
  2. convexified model on the coreset (X_s, Y_s) (flipped copies appended with ``use_flip``):
       o(x) = J(x) delta  (tangent logits of the linearisation at theta0, `kernels.tangent_and_features`),
       phi0(x) = features of the base net, K_ss = phi0(X_s) phi0(X_s)^T (the head's empirical NTK, by NT), lam = l2_rate * N (N = ipc*C),
       alpha = (K_ss + lam I)^-1 (Y_s - o(X_s))  (Cholesky),  y_hat(x) = o(x) + phi0(x) phi0(X_s)^T alpha;
  3. inner problem: ``n_inner`` Adam steps on delta from zero, minimising
       L_in = [0.5 ||Y_s - y_hat(X_s)||^2 + 0.5 lam (tr(alpha^T K_ss alpha) + ||delta||^2)] / (rows * C);
  4. outer loss on the real batch: CE(softmax(y_hat(X_t) exp(log_temp)), onehot) - mean min(top1-top2, 1/(2C))
     of the learned labels; g = dL_out/d delta, direct = dL_out/d psi;
  5. v ~ H^-1 g by ``n_hinv`` Adam steps on 0.5 v^T H v - g^T v (H v by forward-over-reverse:
     ``jax.linearize`` of ``jax.grad`` of L_in); implicit = d/d psi [-v^T dL_in/d delta];
     per-leaf clip of implicit to the norm of direct; psi <- AdaBelief(direct + implicit); EMA (0.99,
     bias-corrected) of psi;
  6. train the chosen pool model 1..15 Adam(5e-5) steps on the coreset with MSE (softplus net); re-initialise
     it after ``max_online_steps`` steps. The pool (30 models) lives stacked on the device.

Choices that differ from the original code, on purpose:
  - The tangent Dense (head) **kernel is frozen** (its delta stays 0). The original masks it out of the
    inner optimiser with ``optax.masked``, which passes the raw gradient through as the update (optax adds
    updates), so it moved by +gradient; that looks unintended. Only conv kernels/biases and the head
    bias are trained in delta (the last layer is solved in closed form by the kernel ridge regression).
  - **A fresh Adam per inner solve** (and per inverse-Hessian solve). The original reuses the selected pool
    model's Adam state for the inner steps (step count carried over, base params drifting by leftover
    momentum).
  - Real batches are drawn without replacement inside the jitted step (the original iterates a shuffled
    loader). The large-coreset subsampling trick of ``cifar100_50``/``depth_4_big`` is not implemented.
  - Non-finite loss or direct gradient: the whole update (coreset, optimiser, EMA, pool, lr statistics) is
    skipped; a NaN implicit gradient is zeroed as in the original (``nan_to_num``).
The learning rates are auto-tuned before training (section 6 rule) and inner_lr is adapted every
``adapt_every`` iterations from the fraction of failed / monotone inner runs.
"""
from __future__ import annotations

import dataclasses
import logging
import functools
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill import kernels
from jaxdistill.configs.rcig import RCIGConfig, get_config
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.methods.base import DistilledSet, register
from jaxdistill.methods.loop import auto_chunk, compile_chunk, run_loop
from jaxdistill.xla_options import compiler_options
from jaxdistill.runlog import MetricsLog
from jaxdistill.sharding import to_host
from jaxdistill.nn import Net, make_net

tmap = jax.tree_util.tree_map


log = logging.getLogger("jaxdistill")

class RCIGState(NamedTuple):
    psi: dict            # {"x": (N,H,W,Cin), "y": (N,C), "log_temp": ()}
    opt: Any             # AdaBelief state of psi
    ema: dict            # biased EMA of psi (divide by 1 - decay**ema_count)
    ema_count: jax.Array
    pool: Any            # stacked base params, leading axis P
    pool_opt: Any        # stacked Adam states
    pool_steps: jax.Array  # (P,) online steps since (re-)initialisation
    inner_lr: jax.Array
    hvp_lr: jax.Array
    n_runs: jax.Array    # inner runs since the last lr adaptation
    n_fail: jax.Array
    n_mono: jax.Array
    it: jax.Array
    nonfinite: jax.Array  # consecutive skipped updates
    skipped: jax.Array    # all skipped updates


# ------------------------------------------------------------------------------------------------
# Pieces (pure, reusable, tested on their own)
# ------------------------------------------------------------------------------------------------

def tree_vdot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def krr_predict(phi_s: jax.Array, resid_s: jax.Array, phi_t: jax.Array, lam: float | jax.Array, *,
                backend: str = "nt"):
    """Kernel ridge regression on frozen features with the head's empirical NTK ``K(a, b) = phi(a) phi(b)^T``.

    phi_s (R, F), resid_s (R, C) = Y_s - o(X_s), phi_t (B, F) -> (prediction (B, C) = K_ts alpha,
    alpha (R, C) = (K_ss + lam I)^-1 resid_s, K_ss (R, R)). backend 'nt': kernels and the Cholesky solve
    by neural-tangents (`kernels.head_ntk`; `kernels.krr` = ``nt.predict.gp_inference``, whose Cholesky solve
    gives alpha itself when asked to predict with the identity as test-train kernel, and the prediction on a
    real batch directly). alpha is never recovered as (resid - K alpha) / lam: that cancels badly for small
    lam and broke the Hessian-vector products. 'jax': matmuls and cho_solve by hand.
    """
    k_ss = kernels.head_ntk(phi_s, phi_s, backend=backend)
    k_ts = k_ss if phi_t is phi_s else kernels.head_ntk(phi_t, phi_s, backend=backend)
    if backend == "nt":
        alpha = kernels.krr(k_ss, resid_s, jnp.eye(k_ss.shape[0], dtype=k_ss.dtype), lam)
        pred = k_ss @ alpha if phi_t is phi_s else kernels.krr(k_ss, resid_s, k_ts, lam)
        return pred, alpha, k_ss
    chol = jax.scipy.linalg.cho_factor(k_ss + lam * jnp.eye(k_ss.shape[0], dtype=k_ss.dtype), lower=True)
    alpha = jax.scipy.linalg.cho_solve(chol, resid_s)
    return k_ts @ alpha, alpha, k_ss


def head_kernel_mask(params) -> Any:
    """1.0 for every delta leaf the inner problem trains, 0.0 for the frozen tangent head kernel."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    treedef = jax.tree_util.tree_structure(params)

    def frozen(path):
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        return "head" in keys and keys[-1] == "kernel"

    return jax.tree_util.tree_unflatten(treedef, [0.0 if frozen(p) else 1.0 for p, _ in flat])


def adam_solve(grad_fn: Callable, x0, lr, n_steps: int, mask=None):
    """`n_steps` steps of a fresh Adam on x from x0. grad_fn(x) -> (value, grad). Returns (x, values (n_steps,)).

    values[i] is the objective before step i. mask (pytree of 0/1 like x) freezes leaves.
    """
    adam = optax.scale_by_adam()

    def body(carry, _):
        x, st = carry
        val, g = grad_fn(x)
        if mask is not None:
            g = tmap(lambda gg, m: gg * m, g, mask)
        u, st = adam.update(g, st)
        x = tmap(lambda xx, uu: xx - lr * uu, x, u)
        return (x, st), val

    (x, _), vals = jax.lax.scan(body, (x0, adam.init(x0)), None, length=n_steps)
    return x, vals


def hvp_fn(loss: Callable, delta) -> Callable:
    """v -> H v, H = d^2 loss / d delta^2 at delta, forward-over-reverse (jvp of grad via jax.linearize)."""
    _, lin = jax.linearize(jax.grad(loss), delta)
    return lin


def inverse_hvp(loss: Callable, delta, g, lr, n_steps: int, mask=None):
    """v ~ H^-1 g by Adam on q(v) = 0.5 v^T H v - g^T v from v = 0 (gradient H v - g). Returns (v, q values)."""
    hvp = hvp_fn(loss, delta)

    def grad_q(v):
        hv = hvp(v)
        if mask is not None:
            hv = tmap(lambda a, m: a * m, hv, mask)
        q = 0.5 * tree_vdot(v, hv) - tree_vdot(g, v)
        return q, tmap(jnp.subtract, hv, g)

    return adam_solve(grad_q, tmap(jnp.zeros_like, delta), lr, n_steps, mask)


def implicit_gradient(inner_loss: Callable, delta, psi, v):
    """d/d psi [ -v^T dL_in/d delta (delta, psi) ]: the implicit part of the hypergradient."""
    def f(p):
        return -tree_vdot(v, jax.grad(inner_loss)(delta, p))

    return jax.grad(f)(psi)


def clip_to_direct(implicit, direct):
    """Per leaf: implicit <- implicit / |implicit| * min(|direct|, |implicit|), then NaN -> 0."""
    def clip(i, d):
        ni, nd = jnp.linalg.norm(i.ravel()), jnp.linalg.norm(d.ravel())
        scale = jnp.where(ni > 0, jnp.minimum(nd, ni) / jnp.where(ni > 0, ni, 1.0), 0.0)
        return jnp.nan_to_num(i * scale, nan=0.0, posinf=0.0, neginf=0.0)

    return tmap(clip, implicit, direct)


def is_monotone(values) -> bool:
    v = np.asarray(values)
    return bool(np.all(np.diff(v) < 0)) and bool(np.all(np.isfinite(v)))


def tune_lr(probe: Callable[[float], Any], lr: float, max_tries: int) -> tuple[float, int]:
    """Section-6 rule: while probe(lr) is monotone: lr *= 1.2 (also once after the first non-monotone run);
    then lr *= 0.7. Returns (lr, tries)."""
    tries = 0
    for tries in range(1, max_tries + 1):
        mono = is_monotone(probe(lr))
        lr *= 1.2
        if not mono:
            break
    return lr * 0.7, tries


# ------------------------------------------------------------------------------------------------
# The RCIG problem for one architecture / coreset shape
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """The functions of one RCIG run (closures over the net and config).

    Hashed/compared by (cfg, num_classes, image_shape), so jitted steps are reused across distill calls.
    """

    cfg: RCIGConfig
    net: Net
    num_classes: int
    n_proto: int          # N = ipc * C (before flip)
    image_shape: tuple
    n_devices: int = 1    # > 1: the outer loss/gradient's real batch split across this many devices

    def _key(self):
        # Run-control fields do not change the step program.
        cfg = dataclasses.replace(self.cfg, iterations=1, checkpoint_every=1, max_nonfinite=1, tune_max_tries=1,
                                  chunk_iters=0, tune_lr=True, inner_lr=1.0, hvp_lr=1.0)
        return (cfg, self.num_classes, self.image_shape, self.n_devices)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Problem) and self._key() == other._key()

    @property
    def lam(self) -> float:
        return self.cfg.l2_rate * self.n_proto

    def holder(self, psi):
        """(X_s (R,H,W,C), Y_s (R,C)): the coreset with flipped copies appended when use_flip."""
        x, y = psi["x"], psi["y"]
        if self.cfg.use_flip:
            x = jnp.concatenate([x, x[:, :, ::-1, :]])
            y = jnp.concatenate([y, y])
        return x, y

    def linear(self, theta0, delta, x):
        """(o(x) = J(x) delta (B, C), phi0(x) (B, F)) from the linearisation at theta0."""
        return kernels.tangent_and_features(self.net.apply_with_features, theta0, delta, x,
                                            backend=self.cfg.linearize_backend)

    def inner_loss(self, delta, psi, theta0):
        xs, ys = self.holder(psi)
        o, phi = self.linear(theta0, delta, xs)
        pred_k, alpha, k_ss = krr_predict(phi, ys - o, phi, self.lam, backend=self.cfg.kernel_backend)
        pred = o + pred_k
        rows, c = ys.shape
        reg = jnp.sum(alpha * (k_ss @ alpha)) + tree_vdot(delta, delta)
        return (0.5 * jnp.sum((ys - pred) ** 2) + 0.5 * self.lam * reg) / (rows * c)

    def outer_loss(self, delta, psi, theta0, xt, yt_onehot):
        """(loss, ce): temperature-scaled CE of the KRR prediction on the real batch minus the label margin."""
        xs, ys = self.holder(psi)
        o_s, phi_s = self.linear(theta0, delta, xs)
        o_t, phi_t = self.linear(theta0, delta, xt)
        pred_k, _, _ = krr_predict(phi_s, ys - o_s, phi_t, self.lam, backend=self.cfg.kernel_backend)
        logits = (o_t + pred_k) * jnp.exp(psi["log_temp"])
        ce = -jnp.mean(jnp.sum(yt_onehot * jax.nn.log_softmax(logits), -1))
        top2 = jax.lax.top_k(psi["y"], 2)[0]
        margin = jnp.mean(jnp.minimum(top2[:, 0] - top2[:, 1], 1.0 / (2 * self.num_classes)))
        return ce - margin, ce

    def outer_value_and_grad(self, delta, psi, theta0, xt, yt_onehot):
        """((loss, ce), (dL/d delta, dL/d psi)) of `outer_loss` on the real batch (B rows).

        With n_devices > 1 the batch is split across a 1-D data mesh (B a multiple of n_devices): each device
        differentiates the CE of its B/n rows (the coreset side, K_ss and its Cholesky, is recomputed on every
        device), `lax.pmean` averages. The mean of equal-size shard means is the batch mean, and the label
        margin does not depend on the batch, so this equals the one-device value up to float reassociation.
        """
        if self.n_devices == 1:
            return jax.value_and_grad(self.outer_loss, argnums=(0, 1), has_aux=True)(delta, psi, theta0, xt,
                                                                                      yt_onehot)
        from jaxdistill.sharding import data_mesh, sharded_mean_grad

        # theta0 travels with the differentiated params (gradient stopped, so nothing is computed for it)
        # rather than as a closure: a closed-over replicated value meeting per-device values inside the
        # linearisation trips shard_map's varying-axis type check in the backward pass.
        def loss(p, b):
            return self.outer_loss(p[0], p[1], jax.lax.stop_gradient(p[2]), *b)

        (l, aux), (g_delta, g_psi, _) = sharded_mean_grad(loss, (delta, psi, theta0), (xt, yt_onehot),
                                                          data_mesh(self.n_devices), has_aux=True)
        return (l, aux), (g_delta, g_psi)

    def pool_loss(self, params, xs, ys):
        out = self.net.apply(params, xs)
        return 0.5 * jnp.sum((out - ys) ** 2) / (ys.shape[0] * ys.shape[1])

    def coreset_tx(self) -> optax.GradientTransformation:
        labels = {"x": "proto", "y": "proto", "log_temp": "temp"}
        return optax.multi_transform({"proto": optax.adabelief(self.cfg.proto_lr),
                                      "temp": optax.adabelief(self.cfg.temp_lr)}, labels)

    def pool_tx(self) -> optax.GradientTransformation:
        return optax.adam(self.cfg.pool_lr)

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, x_proto, y_proto, key) -> RCIGState:
        cfg = self.cfg
        psi = {"x": jnp.asarray(x_proto, jnp.float32), "y": jnp.asarray(y_proto, jnp.float32),
               "log_temp": jnp.zeros((), jnp.float32)}
        pool = jax.vmap(lambda k: self.net.init(k, self.image_shape))(jax.random.split(key, cfg.pool_size))
        f32, i32 = (lambda v: jnp.asarray(v, jnp.float32)), (lambda v: jnp.asarray(v, jnp.int32))
        return RCIGState(psi=psi, opt=self.coreset_tx().init(psi), ema=tmap(jnp.zeros_like, psi),
                         ema_count=i32(0), pool=pool, pool_opt=jax.vmap(self.pool_tx().init)(pool),
                         pool_steps=jnp.zeros((cfg.pool_size,), jnp.int32), inner_lr=f32(cfg.inner_lr),
                         hvp_lr=f32(cfg.hvp_lr), n_runs=i32(0), n_fail=i32(0), n_mono=i32(0), it=i32(0),
                         nonfinite=i32(0), skipped=i32(0))

    def ema_psi(self, state: RCIGState):
        """Bias-corrected EMA of the coreset (the raw coreset before the first update)."""
        count = state.ema_count
        corr = 1.0 - self.cfg.ema_decay ** count.astype(jnp.float32)
        return tmap(lambda e, p: jnp.where(count > 0, e / jnp.where(count > 0, corr, 1.0), p), state.ema, state.psi)

    def _draw(self, state, xtr, ytr, base_key):
        key = jax.random.fold_in(base_key, state.it)
        k_model, k_batch, k_steps, k_init = jax.random.split(key, 4)
        m = jax.random.randint(k_model, (), 0, self.cfg.pool_size)
        theta0 = tmap(lambda a: a[m], state.pool)
        n = xtr.shape[0]
        b = min(self.cfg.real_batch, n)
        idx = jax.random.choice(k_batch, n, (b,), replace=False)
        return m, theta0, xtr[idx], ytr[idx], k_steps, k_init

    # -- one outer iteration ---------------------------------------------------------------------
    def step(self, state: RCIGState, xtr, ytr, base_key):
        """One RCIG iteration. xtr (n, H, W, C) working-space images, ytr (n, C) one-hot. -> (state, metrics)."""
        cfg = self.cfg
        m, theta0, xt, yt, k_steps, k_init = self._draw(state, xtr, ytr, base_key)
        mask = head_kernel_mask(theta0)
        psi = state.psi
        psi_c = jax.lax.stop_gradient(psi)
        zeros = tmap(jnp.zeros_like, theta0)

        inner = lambda d, p: self.inner_loss(d, p, theta0)
        delta, in_losses = adam_solve(jax.value_and_grad(lambda d: inner(d, psi_c)), zeros, state.inner_lr,
                                      cfg.n_inner, mask)
        (loss, ce), (g_delta, direct) = self.outer_value_and_grad(delta, psi, theta0, xt, yt)
        g_delta = tmap(lambda g, mm: g * mm, g_delta, mask)
        v, qs = inverse_hvp(lambda d: inner(d, psi_c), delta, g_delta, state.hvp_lr, cfg.n_hinv, mask)
        implicit = clip_to_direct(implicit_gradient(inner, delta, psi, v), direct)
        grads = tmap(jnp.add, direct, implicit)
        if not cfg.learn_labels:
            grads = dict(grads, y=jnp.zeros_like(grads["y"]))
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(direct)]))

        updates, opt = self.coreset_tx().update(grads, state.opt, psi)
        new_psi = optax.apply_updates(psi, updates)
        d = cfg.ema_decay
        ema = tmap(lambda e, p: d * e + (1 - d) * p, state.ema, new_psi)

        # Online pool training of the chosen model on the updated coreset (nonlinear softplus net, MSE).
        xs, ys = self.holder(jax.lax.stop_gradient(new_psi))
        n_pool = jax.random.randint(k_steps, (), 1, cfg.pool_max_steps)
        ptx = self.pool_tx()

        def pool_body(_, carry):
            p, o = carry
            g = jax.grad(self.pool_loss)(p, xs, ys)
            u, o = ptx.update(g, o, p)
            return optax.apply_updates(p, u), o

        p_m, o_m = jax.lax.fori_loop(0, n_pool, pool_body, (theta0, tmap(lambda a: a[m], state.pool_opt)))
        steps_m = state.pool_steps[m] + n_pool
        reset = steps_m >= cfg.max_online_steps
        fresh = self.net.init(k_init, self.image_shape)
        p_m = tmap(lambda a, b: jnp.where(reset, a, b), fresh, p_m)
        o_m = tmap(lambda a, b: jnp.where(reset, a, b), ptx.init(fresh), o_m)
        pool = tmap(lambda a, b: a.at[m].set(b), state.pool, p_m)
        pool_opt = tmap(lambda a, b: a.at[m].set(b), state.pool_opt, o_m)
        pool_steps = state.pool_steps.at[m].set(jnp.where(reset, 0, steps_m))

        # inner_lr adaptation from the inner runs' shapes (section 6).
        diffs = jnp.diff(in_losses)
        mono = jnp.all(diffs < 0) & jnp.all(jnp.isfinite(in_losses))
        fail = ~mono & (in_losses[-1] > in_losses[0])
        n_runs, n_fail, n_mono = state.n_runs + 1, state.n_fail + fail, state.n_mono + mono
        adapt = (state.it + 1) % cfg.adapt_every == 0
        fail_frac, mono_frac = n_fail / n_runs, n_mono / n_runs
        factor = jnp.where(fail_frac >= cfg.adapt_fail_frac, 0.9, jnp.where(mono_frac >= cfg.adapt_monotone_frac,
                                                                             1.05, 1.0))
        inner_lr = jnp.where(adapt, state.inner_lr * factor, state.inner_lr)
        zero = jnp.zeros((), jnp.int32)
        n_runs, n_fail, n_mono = (jnp.where(adapt, zero, n_runs), jnp.where(adapt, zero, n_fail),
                                  jnp.where(adapt, zero, n_mono))

        new = state._replace(psi=new_psi, opt=opt, ema=ema, ema_count=state.ema_count + 1, pool=pool,
                             pool_opt=pool_opt, pool_steps=pool_steps, inner_lr=inner_lr, n_runs=n_runs,
                             n_fail=n_fail.astype(jnp.int32), n_mono=n_mono.astype(jnp.int32))
        out = tmap(lambda a, b: jnp.where(finite, a, b), new, state)
        out = out._replace(it=state.it + 1, nonfinite=jnp.where(finite, 0, state.nonfinite + 1),
                           skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "ce": ce, "finite": finite, "inner_first": in_losses[0],
                   "inner_last": in_losses[-1], "inner_monotone": mono, "inner_fail": fail, "hinv_last": qs[-1],
                   "pool_steps": n_pool, "model": m, "inner_lr": out.inner_lr}
        return out, metrics

    # -- learning-rate probes (one test iteration, nothing committed) ------------------------------
    def probe_inner(self, state, xtr, ytr, base_key, lr):
        _, theta0, _, _, _, _ = self._draw(state, xtr, ytr, base_key)
        mask = head_kernel_mask(theta0)
        f = jax.value_and_grad(lambda d: self.inner_loss(d, state.psi, theta0))
        return adam_solve(f, tmap(jnp.zeros_like, theta0), lr, self.cfg.n_inner, mask)[1]

    def probe_hvp(self, state, xtr, ytr, base_key, inner_lr, lr):
        _, theta0, xt, yt, _, _ = self._draw(state, xtr, ytr, base_key)
        mask = head_kernel_mask(theta0)
        inner = lambda d: self.inner_loss(d, state.psi, theta0)
        delta, _ = adam_solve(jax.value_and_grad(inner), tmap(jnp.zeros_like, theta0), inner_lr,
                              self.cfg.n_inner, mask)
        g = jax.grad(lambda d: self.outer_loss(d, state.psi, theta0, xt, yt)[0])(delta)
        g = tmap(lambda a, mm: a * mm, g, mask)
        return inverse_hvp(inner, delta, g, lr, self.cfg.n_hinv, mask)[1]


# Module-level jits with the problem static: a second distill call with the same setting reuses the compile.
_jit_step = jax.jit(lambda prob, *a: prob.step(*a), static_argnums=0, donate_argnums=1)


def iteration_body(prob: "Problem") -> Callable:
    """The loop body for `methods.loop`: carry RCIGState (its `it` is the loop's iteration), consts
    (xtr, ytr, k_loop)."""

    def body(state, it, _, consts):
        xtr, ytr, k_loop = consts
        return prob.step(state, xtr, ytr, k_loop)

    return body


@functools.lru_cache(maxsize=8)
def _cached_chunk(prob: "Problem") -> Callable:
    # Problem is hashable by its setting: a second run with the same setting reuses the compiled chunk.
    return compile_chunk(iteration_body(prob), compiler_options("rcig"))


_jit_probe_inner = jax.jit(lambda prob, *a: prob.probe_inner(*a), static_argnums=0)
_jit_probe_hvp = jax.jit(lambda prob, *a: prob.probe_hvp(*a), static_argnums=0)


def make_problem(cfg: RCIGConfig, num_classes: int, image_shape: tuple, n_real: Optional[int] = None) -> Problem:
    """The Problem of one run. cfg.devices resolves to the device count (sharding.resolve_devices); with
    more than one, the real batch min(real_batch, n_real) must be a multiple of it (ConfigError)."""
    from jaxdistill.sharding import resolve_devices

    if len(image_shape) != 3:
        raise DataError(f"image_shape={tuple(image_shape)} must be (H, W, C)")
    n_dev = resolve_devices(cfg.devices, "RCIG")
    b = cfg.real_batch if n_real is None else min(cfg.real_batch, int(n_real))
    if n_dev > 1 and b % n_dev:
        raise ConfigError(f"RCIG real batch of {b} images (min(real_batch={cfg.real_batch}, training set)) is not "
                          f"divisible by the {n_dev} devices it is split over; allowed: a multiple of {n_dev}, "
                          f"or devices=1")
    net = make_net(cfg.net_config(num_classes, distill=True))
    return Problem(cfg, net, num_classes, cfg.ipc * num_classes, tuple(int(s) for s in image_shape), n_dev)


def place_pool(state: RCIGState, n_devices: int) -> RCIGState:
    """The pool (params, Adam states, step counters; leading axis P) split over the run's devices: the 1-D
    `data` mesh its real batch is split over, so one step uses one mesh. P not a multiple of the devices: padded
    with copies of the last model (as the evaluator pads its nets); the step draws models from the first P only,
    so the copies are never used, and `unplace_pool` cuts them off before a checkpoint or the end. Each step
    trains one drawn model, so the split spreads the pool's memory; the drawn model is gathered for the step."""
    if n_devices == 1:
        return state
    from jaxdistill.sharding import data_mesh, shard_models

    pool, opt, steps = shard_models((state.pool, state.pool_opt, state.pool_steps), data_mesh(n_devices), pad=True)
    return state._replace(pool=pool, pool_opt=opt, pool_steps=steps)


def unplace_pool(state: RCIGState, pool_size: int) -> RCIGState:
    """The first pool_size models (the checkpointed layout, independent of the device count)."""
    cut = lambda t: tmap(lambda a: a[:pool_size], t)  # noqa: E731
    return state._replace(pool=cut(state.pool), pool_opt=cut(state.pool_opt), pool_steps=state.pool_steps[:pool_size])


def init_coreset(y_noisy: np.ndarray, num_classes: int, ipc: int, key) -> np.ndarray:
    """Indices of `ipc` random training images per (noisy) class, class-major order: (C * ipc,)."""
    y_noisy = np.asarray(y_noisy)
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(y_noisy == c)
        if idx.size < ipc:
            raise DataError(f"class {c} has {idx.size} noisy-labelled images; ipc={ipc} needs >= {ipc} per class")
        pick = np.asarray(jax.random.choice(jax.random.fold_in(key, c), idx.size, (ipc,), replace=False))
        out.append(idx[pick])
    return np.concatenate(out)


def _preprocessor(cfg: RCIGConfig, x_train: np.ndarray):
    from jaxdistill.preprocess import fit_preprocessor

    if cfg.preprocess == "none":
        return fit_preprocessor("none", x_train)
    kw = {}
    if cfg.mean is not None and len(cfg.mean) == x_train.shape[-1]:
        kw = {"mean": np.asarray(cfg.mean), "std": np.asarray(cfg.std)}
    if cfg.preprocess == "zca_rcig":
        kw["zca_reg"] = cfg.zca_reg
    return fit_preprocessor(cfg.preprocess, x_train, **kw)


# ------------------------------------------------------------------------------------------------
# distill
# ------------------------------------------------------------------------------------------------

@register("rcig", get_config)
def distill(config: RCIGConfig, data, key: jax.Array, *, workdir: Optional[str] = None,
            progress: bool = True) -> DistilledSet:
    """Distil `data` (NoisyData: x_train [0,1] NHWC, y_noisy) into ipc * C images with learned labels.

    Returns a DistilledSet: images = EMA coreset in the preprocessor's space (no flip copies; meta
    ``use_flip`` tells the evaluator to append them), targets = EMA labels (target_kind 'regression').
    """
    from jaxdistill.checkpoint import Checkpointer

    if not isinstance(config, RCIGConfig):
        raise ConfigError(f"config must be an RCIGConfig; got {type(config).__name__}")
    cfg = config
    t_start = time.perf_counter()
    c = int(data.num_classes)
    y_noisy = np.asarray(data.y_noisy)
    try:
        from jaxdistill.data import check_ipc
    except ImportError:  # pragma: no cover - a stripped install without the data package
        check_ipc = None
    if check_ipc is not None:
        check_ipc(y_noisy, c, cfg.ipc)
    x_raw = np.asarray(data.x_train, np.float32)
    if x_raw.ndim != 4 or x_raw.shape[0] != y_noisy.shape[0]:
        raise DataError(f"x_train {x_raw.shape} and y_noisy {y_noisy.shape} must be (N,H,W,C) and (N,)")

    k_init, k_pool, k_loop, k_tune = jax.random.split(key, 4)
    pre = _preprocessor(cfg, x_raw)
    x_train = np.asarray(pre.apply(x_raw), np.float32)
    prob = make_problem(cfg, c, x_train.shape[1:], n_real=x_train.shape[0])
    idx = init_coreset(y_noisy, c, cfg.ipc, k_init)
    y0 = np.eye(c, dtype=np.float32)[np.repeat(np.arange(c), cfg.ipc)] - 1.0 / c
    state = prob.init_state(x_train[idx], y0, k_pool)
    xtr = jnp.asarray(x_train)
    ytr = jnp.asarray(np.eye(c, dtype=np.float32)[y_noisy])

    leaves, treedef = jax.tree_util.tree_flatten(state)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt")) if workdir else None
    tuned = {"inner_tries": 0, "hvp_tries": 0}
    start = 0
    if ckpt is not None:
        template = {"leaves": {f"{i:03d}": np.asarray(l) for i, l in enumerate(leaves)}}
        step_no, tree = ckpt.restore_latest(template)
        if step_no is not None:
            state = jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(tree["leaves"][f"{i:03d}"]) for i in range(len(leaves))])
            start = int(state.it)
    state = place_pool(state, prob.n_devices)
    if start == 0 and cfg.tune_lr:
        probe_i = functools.partial(_jit_probe_inner, prob)
        probe_h = functools.partial(_jit_probe_hvp, prob)
        inner_lr, tuned["inner_tries"] = tune_lr(lambda lr: probe_i(state, xtr, ytr, k_tune, lr), cfg.inner_lr,
                                                 cfg.tune_max_tries)
        hvp_lr, tuned["hvp_tries"] = tune_lr(lambda lr: probe_h(state, xtr, ytr, k_tune, inner_lr, lr), cfg.hvp_lr,
                                             cfg.tune_max_tries)
        state = state._replace(inner_lr=jnp.asarray(inner_lr, jnp.float32), hvp_lr=jnp.asarray(hvp_lr, jnp.float32))

    def save(s, done=None):
        if ckpt is not None:
            lv = jax.tree_util.tree_leaves(unplace_pool(s, cfg.pool_size))
            ckpt.save(int(s.it), {"leaves": {f"{i:03d}": to_host(l) for i, l in enumerate(lv)}})

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc="rcig", unit="it", dynamic_ncols=True, leave=False)
    last = {"loss": float("nan"), "ce": float("nan")}

    def on_chunk(its, m, st):
        ok = np.flatnonzero(np.asarray(m["finite"], bool))
        if ok.size:
            last.update(loss=float(m["loss"][ok[-1]]), ce=float(m["ce"][ok[-1]]))

    log = MetricsLog(workdir, "distill_rcig")
    try:
        res = run_loop("RCIG", _cached_chunk(prob), state, start=start, iterations=cfg.iterations,
                       checkpoint_every=cfg.checkpoint_every, max_nonfinite=cfg.max_nonfinite,
                       chunk=auto_chunk(cfg.checkpoint_every, cfg.iterations, cfg.chunk_iters),
                       consts=(xtr, ytr, k_loop), on_chunk=on_chunk, save=save if ckpt is not None else None,
                       log_row=lambda it, r: {"loss": float(r["loss"]), "ce": float(r["ce"]), "lr": cfg.proto_lr,
                                              "inner_lr": float(r["inner_lr"])},
                       metrics_log=log, bar=bar,
                       postfix=lambda r: {"loss": f"{last['loss']:.4f}", "inner_lr": f"{float(r['inner_lr']):.2e}"},
                       consecutive0=int(state.nonfinite),
                       nonfinite_hint="Lower proto_lr / inner_lr or check the data for NaNs")
        state = res.carry
        save(state)
    finally:
        log.close()
        if bar is not None:
            bar.close()
        if ckpt is not None:
            ckpt.close()

    ema = prob.ema_psi(state)
    meta = {"config": dataclasses.asdict(cfg), "iterations": int(state.it), "final_loss": last["loss"],
            "final_ce": last["ce"], "wall_time_s": time.perf_counter() - t_start, "skipped_updates": int(state.skipped),
            "inner_lr": float(state.inner_lr), "hvp_lr": float(state.hvp_lr), "lr_tune_tries": tuned,
            "log_temp": float(ema["log_temp"]), "use_flip": bool(cfg.use_flip), "resumed_from": start,
            "init_indices": idx.tolist(), "devices_used": prob.n_devices}
    out = DistilledSet(images=to_host(ema["x"]), labels=np.repeat(np.arange(c), cfg.ipc),
                       method="rcig", target_kind="regression", targets=to_host(ema["y"]), lr=None,
                       preprocessor=pre.to_dict(), meta=meta)
    out.initial = DistilledSet(images=x_train[idx], labels=out.labels, method="rcig", target_kind="regression",
                               targets=y0, preprocessor=out.preprocessor,
                               meta={"initial_of": "rcig", "indices": idx.tolist(), "use_flip": bool(cfg.use_flip)})
    if workdir:
        out.save(os.path.join(workdir, "distilled.npz"))
    return out
