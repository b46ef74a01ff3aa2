"""DATM (difficulty-aligned trajectory matching, ICLR 2024) in JAX.

Learnable: synthetic images (ZCA space), soft-label logits, the student lr, each with its own torch-style
SGD-momentum optimiser. Each iteration picks an expert trajectory and a start epoch t from a window that
grows with the iteration ("difficulty alignment"), unrolls `syn_steps` student SGD steps from theta_t on
DSA-augmented minibatches of the synthetic set, and minimises
    L = ||theta_N - theta_{t+M}||^2 / ||theta_t - theta_{t+M}||^2
by differentiating through the whole unroll (second order) into images, labels and lr. Updates are
skipped when L exceeds the threshold. Everything works on the FLAT parameter vector, like the store.

The unroll is a `lax.scan` whose body is `jax.checkpoint`ed: the backward pass keeps only the
syn_steps parameter vectors and recomputes one step's activations at a time.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.configs.datm import DATMConfig, get_config
from jaxdistill.data.fingerprint import labels_fingerprint
from jaxdistill.runlog import MetricsLog
from jaxdistill.errors import ConfigError, StoreError
from jaxdistill.experts import ExpertStore, _template_from_layout, train_experts
from jaxdistill.methods.base import DistilledSet, register
from jaxdistill.methods.loop import auto_chunk, compile_chunk, run_loop
from jaxdistill.xla_options import compiler_options
from jaxdistill.sharding import resolve_devices, to_host

log = logging.getLogger("jaxdistill")

ApplyFlat = Callable[[jax.Array, jax.Array], jax.Array]  # (theta (P,), x (B,H,W,C)) -> logits (B, C)


# ------------------------------------------------------------------------------------------------
# Pieces of one iteration (pure, testable)
# ------------------------------------------------------------------------------------------------

def start_epoch_upper(cfg: DATMConfig, it: int) -> int:
    """Exclusive upper bound U of the start epoch at iteration `it` (sequential generation window)."""
    if not cfg.sequential:
        return cfg.max_start_epoch
    u = cfg.current_max_start_epoch + int(
        (cfg.max_start_epoch - cfg.current_max_start_epoch) * it / cfg.expansion_end_epoch)
    return min(u, cfg.max_start_epoch)


def host_draws(seed: tuple[int, int], it: int, cfg: DATMConfig, num_experts: int) -> tuple[int, int]:
    """(expert, start epoch) of iteration `it`: a function of (seed, it) only, so resumed runs repeat it.

    Experts are visited in a fresh random order each pass over the store; t ~ randint[min, U).
    """
    pass_idx, pos = divmod(it, num_experts)
    order = np.random.default_rng([seed[0], seed[1], 0, pass_idx]).permutation(num_experts)
    t = np.random.default_rng([seed[0], seed[1], 1, it]).integers(cfg.min_start_epoch,
                                                                    start_epoch_upper(cfg, it))
    return int(order[pos]), int(t)


def host_draws_multi(seed: tuple[int, int], it: int, cfg: DATMConfig, num_experts: int,
                     trajectories: int) -> list[tuple[int, int]]:
    """The `trajectories` (expert, start epoch) pairs of iteration `it`, a function of (seed, it) only.

    T = 1 is exactly `host_draws` (so single-trajectory runs are unchanged). T > 1: trajectory j of
    iteration it takes the expert at virtual position it*T + j of the per-pass random orders (each pass over
    the store still visits every expert once) and its own start epoch ~ randint[min, U(it)).
    """
    if trajectories == 1:
        return [host_draws(seed, it, cfg, num_experts)]
    hi = start_epoch_upper(cfg, it)
    out = []
    for j in range(trajectories):
        pass_idx, pos = divmod(it * trajectories + j, num_experts)
        order = np.random.default_rng([seed[0], seed[1], 0, pass_idx]).permutation(num_experts)
        t = np.random.default_rng([seed[0], seed[1], 2, it, j]).integers(cfg.min_start_epoch, hi)
        out.append((int(order[pos]), int(t)))
    return out


def batch_indices(key: jax.Array, n: int, batch_syn: int, syn_steps: int) -> jax.Array:
    """(syn_steps, b) minibatch indices: random permutations of the N synthetic images cut into chunks
    of batch_syn, a new permutation when one is used up; every step uses all N if batch_syn >= N."""
    if batch_syn >= n:
        return jnp.tile(jnp.arange(n), (syn_steps, 1))
    if n % batch_syn:
        raise ConfigError(f"batch_syn={batch_syn} must divide the {n} synthetic images or be >= {n}")
    chunks = n // batch_syn
    n_perm = math.ceil(syn_steps / chunks)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, n_perm))
    return perms.reshape(n_perm * chunks, batch_syn)[:syn_steps]


def soft_ce(logits: jax.Array, label_logits: jax.Array) -> jax.Array:
    """mean_i sum_k -log_softmax(logits)_ik softmax(label_logits)_ik (DATM's SoftCrossEntropy)."""
    return -(jax.nn.softmax(label_logits) * jax.nn.log_softmax(logits)).sum(-1).mean()


def _augment_fn(use_dsa: bool):
    if not use_dsa:
        return lambda key, x: x
    from jaxdistill.augment import dsa

    return lambda key, x: dsa(key, x, mode="one")


def _step_loss(apply_flat: ApplyFlat, use_dsa: bool) -> Callable:
    """`(theta, x, y, b, k) -> soft_ce(f(theta, DSA_k(x[b])), y[b])`: one student step's training loss."""
    aug = _augment_fn(use_dsa)
    return lambda theta, x, y, b, k: soft_ce(apply_flat(theta, aug(k, x[b])), y[b])


def unroll(apply_flat: ApplyFlat, theta0: jax.Array, x: jax.Array, y: jax.Array, lr: jax.Array,
           idx: jax.Array, keys: jax.Array, use_dsa: bool = True, remat: bool = True,
           meta_grad: str = "jvp") -> jax.Array:
    """theta_N after syn_steps student SGD steps: theta <- theta - lr * grad soft_ce(f(theta, DSA(x[b])), y[b]).

    theta0 (P,), x (N,H,W,C), y (N,C) logits, lr scalar, idx (S, b), keys (S, 2). Differentiable in x, y, lr.
    meta_grad picks how the gradient through the unroll is computed. "jvp" and "autodiff" give the exact
    gradient (same values to float tolerance): "jvp" = `_unroll_jvp`'s hand-written reverse pass; "autodiff" =
    JAX's reverse mode through the scan, with `remat` saving only theta per step (the jvp pass always does).
    "tesla" is the study's `DATM_tesla.py` (distillers.md 1.8): each step's theta_i is held fixed, so step i's
    images and labels get only their direct effect on g_i, and the lr's gradient takes sum_i g_i as fixed.
    """
    step_loss = _step_loss(apply_flat, use_dsa)
    if meta_grad in ("jvp", "tesla"):
        return _unroll_jvp(step_loss, hold_theta=meta_grad == "tesla")(theta0, x, y, lr, idx, keys)

    def step(theta, b, k, x, y, lr):
        return theta - lr * jax.grad(step_loss)(theta, x, y, b, k)

    if remat:
        # Save only the carry (theta_i) per step; recompute the step's activations in the backward pass.
        step = jax.checkpoint(step)

    def body(theta, inp):
        b, k = inp
        return step(theta, b, k, x, y, lr), None

    theta_n, _ = jax.lax.scan(body, theta0, (idx, keys))
    return theta_n


def _unroll_jvp(step_loss: Callable, hold_theta: bool = False) -> Callable:
    """`(theta0, x, y, lr, idx, keys) -> theta_N` with a hand-written reverse pass.

    Step i is theta_{i+1} = theta_i - lr g_i, g_i = grad_theta L_i(theta_i, x, y). Given the adjoint a of
    theta_{i+1}, the step's vector-Jacobian products all come from one scalar, the directional derivative
    D_i = <g_i, a> = jvp(L_i, theta_i; a): adjoint of theta_i = a - lr grad_theta D_i, of x -= lr grad_x D_i,
    of y -= lr grad_y D_i, of lr -= D_i. Taking grad of a forward-mode derivative (reverse-over-forward)
    skips differentiating the backward pass of the network: on XLA:CPU that pass's transposes and
    col2im sums cost more than the tangent forward (one DATM step at width 128: x0.77, BUILD_NOTES).
    The forward pass saves theta_i only (like remat) and recomputes each step's activations.

    hold_theta (TESLA): theta_i is a constant of step i, so the adjoint stays a_N = dL/dtheta_N at every step
    (no lr grad_theta D_i term) and theta_0's adjoint is a_N: x's and y's gradients are then exactly TESLA's
    `2 (lr (theta* - theta_0) + lr^2 sum g) . dg_i / ||theta_0 - theta*||^2`, and lr's is -<sum g, a_N>.
    """

    @jax.custom_vjp
    def run(theta0, x, y, lr, idx, keys):
        return fwd(theta0, x, y, lr, idx, keys)[0]

    def fwd(theta0, x, y, lr, idx, keys):
        def body(theta, inp):
            b, k = inp
            return theta - lr * jax.grad(step_loss)(theta, x, y, b, k), theta

        theta_n, thetas = jax.lax.scan(body, theta0, (idx, keys))
        return theta_n, (thetas, x, y, lr, idx, keys)

    def bwd(res, a_n):
        thetas, x, y, lr, idx, keys = res

        def directional(theta, x, y, a, b, k):
            return jax.jvp(lambda th: step_loss(th, x, y, b, k), (theta,), (a,))[1]

        def body(carry, inp):
            a, gx, gy, glr = carry
            theta, b, k = inp
            if hold_theta:
                d, (g_x, g_y) = jax.value_and_grad(directional, argnums=(1, 2))(theta, x, y, a, b, k)
                return (a, gx - lr * g_x, gy - lr * g_y, glr - d), None
            d, (g_th, g_x, g_y) = jax.value_and_grad(directional, argnums=(0, 1, 2))(theta, x, y, a, b, k)
            return (a - lr * g_th, gx - lr * g_x, gy - lr * g_y, glr - d), None

        init = (a_n, jnp.zeros_like(x), jnp.zeros_like(y), jnp.zeros_like(lr))
        (a0, gx, gy, glr), _ = jax.lax.scan(body, init, (thetas, idx, keys), reverse=True)
        return a0, gx, gy, glr, None, None

    run.defvjp(fwd, bwd)
    return run


def matching_loss(apply_flat: ApplyFlat, x, y, lr, theta0, theta_star, idx, keys, use_dsa=True, remat=True,
                  meta_grad="jvp"):
    """||theta_N - theta*||^2 / ||theta_0 - theta*||^2."""
    theta_n = unroll(apply_flat, theta0, x, y, lr, idx, keys, use_dsa, remat, meta_grad)
    return jnp.sum((theta_n - theta_star) ** 2) / jnp.sum((theta0 - theta_star) ** 2)


class SynState(NamedTuple):
    x: jax.Array        # (N, H, W, C) synthetic images (ZCA space)
    y: jax.Array        # (N, C) soft-label logits
    lr: jax.Array       # () student learning rate
    opt: tuple          # (opt_x, opt_y, opt_lr) optax states


def make_optimizers(cfg: DATMConfig) -> tuple:
    """Torch-semantics SGD-momentum (buf = g first, then mu*buf + g; p -= lr*buf) for x, y, lr."""
    return (optax.sgd(cfg.lr_img, momentum=cfg.mom_img or None),
            optax.sgd(cfg.lr_y, momentum=cfg.mom_y or None),
            optax.sgd(cfg.lr_lr, momentum=cfg.mom_lr or None))


def init_syn_state(cfg: DATMConfig, x, y, lr) -> SynState:
    tx = make_optimizers(cfg)
    x, y, lr = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(lr, jnp.float32)
    return SynState(x, y, lr, (tx[0].init(x), tx[1].init(y), tx[2].init(lr)))


def make_trajectory_grad(apply_flat: ApplyFlat, cfg: DATMConfig) -> Callable:
    """`fn((theta0 (P,), theta_star (P,), key), x, y, lr) -> (loss, (g_x, g_y, g_lr))` for ONE trajectory:
    the key draws the minibatch order and the DSA keys, then value_and_grad of the matching loss."""
    def fn(per, x, y, lr):
        theta0, theta_star, key = per
        k_idx, k_aug = jax.random.split(key)
        idx = batch_indices(k_idx, x.shape[0], cfg.batch_syn, cfg.syn_steps)
        keys = jax.random.split(k_aug, cfg.syn_steps)
        return jax.value_and_grad(
            lambda x_, y_, lr_: matching_loss(apply_flat, x_, y_, lr_, theta0, theta_star, idx, keys, cfg.dsa,
                                              cfg.remat, cfg.meta_grad), argnums=(0, 1, 2))(x, y, lr)

    return fn


def _check_split(trajectories: int, n_devices: int) -> None:
    if trajectories % n_devices:
        raise ConfigError(f"DATM trajectories_per_iter={trajectories} must be a multiple of the {n_devices} devices "
                          f"it is split over (allowed: {n_devices}, {2 * n_devices}, ...; or devices=1)")


def trajectory_mesh(cfg: DATMConfig):
    """The 1-D device mesh the T = cfg.trajectories_per_iter trajectories are split over, or None (one device:
    T = 1, or one device resolved from cfg.devices). ConfigError when T is not a multiple of the devices."""
    n_dev, T = resolve_devices(cfg.devices, "DATM"), cfg.trajectories_per_iter
    if n_dev == 1 or T == 1:
        if n_dev > 1 and cfg.devices > 1:
            log.warning("DATM: devices=%d has nothing to split with trajectories_per_iter=1; running on one "
                        "device", cfg.devices)
        return None
    _check_split(T, n_dev)
    from jaxdistill.sharding import data_mesh

    return data_mesh(n_dev)


# Kept per (apply_flat, cfg, mesh): a second distill with the same config and expert layout (`flat_apply`
# hands it the same apply_flat) reuses the compiled step instead of tracing and compiling it again.
@functools.lru_cache(maxsize=8)
def make_outer_step(apply_flat: ApplyFlat, cfg: DATMConfig, mesh=None, *, jit: bool = True) -> Callable:
    """Jitted (pure with jit=False) `step(state, theta0, theta_star, key) -> (state, loss, finite, applied)`.

    T = cfg.trajectories_per_iter. T = 1: theta0, theta_star (P,), one trajectory. T > 1: theta0,
    theta_star (T, P); the key is split into T trajectory keys and loss / gradients are the means over the
    T trajectories, computed one after another on one device (`lax.map`) or, with `mesh` (a 1-D mesh of
    n > 1 devices, T a multiple of n), T/n per device via `sharding.sharded_trajectory_grads`.
    The three optimisers step only if the (mean) loss is finite, every gradient is finite and
    loss <= threshold; otherwise state (images, labels, lr AND momentum buffers) is returned untouched.
    """
    tx = make_optimizers(cfg)
    traj = make_trajectory_grad(apply_flat, cfg)
    T = cfg.trajectories_per_iter
    if mesh is not None and mesh.size > 1:
        _check_split(T, mesh.size)

    def mean_grads(state: SynState, theta0, theta_star, key):
        if T == 1:
            return traj((theta0, theta_star, key), state.x, state.y, state.lr)
        per = (theta0, theta_star, jax.random.split(key, T))
        if mesh is not None and mesh.size > 1:
            from jaxdistill.sharding import sharded_trajectory_grads

            loss, grads, _ = sharded_trajectory_grads(traj, per, mesh, state.x, state.y, state.lr)
            return loss, grads
        # One trajectory at a time: one unroll's memory, like a single-trajectory step.
        losses, grads = jax.lax.map(lambda p: traj(p, state.x, state.y, state.lr), per)
        return losses.mean(), tuple(g.mean(0) for g in grads)

    def step(state: SynState, theta0, theta_star, key):
        loss, grads = mean_grads(state, theta0, theta_star, key)
        finite = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in grads]))
        applied = finite & (loss <= cfg.threshold)
        grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, 0.0), grads)
        new_params, new_opt = [], []
        for p, g, t, o in zip((state.x, state.y, state.lr), grads, tx, state.opt):
            upd, o2 = t.update(g, o, p)
            new_params.append(optax.apply_updates(p, upd))
            new_opt.append(o2)
        new = SynState(*new_params, tuple(new_opt))
        out = jax.tree_util.tree_map(lambda a, b: jnp.where(applied, a, b), new, state)
        return out, loss, finite, applied

    return jax.jit(step, donate_argnums=0, compiler_options=compiler_options("datm")) if jit else step


def iteration_body(step: Callable) -> Callable:
    """The loop body for `methods.loop`: carry SynState, xs (theta0, theta_star) of this iteration,
    consts k_loop; the iteration's key is fold_in(k_loop, it) as in the per-iteration loop."""

    def body(state, it, snaps, k_loop):
        state, loss, finite, applied = step(state, snaps[0], snaps[1], jax.random.fold_in(k_loop, it))
        return state, {"loss": loss, "finite": finite, "applied": applied, "lr": state.lr}

    return body


def _cached_chunk(apply_flat: ApplyFlat, cfg: DATMConfig, mesh) -> Callable:
    # Run-control fields do not enter the step: runs that differ only in them share one compiled chunk program.
    maths = dataclasses.replace(cfg, iterations=1, checkpoint_every=1, max_nonfinite=1, chunk_iters=0, expert_dir=None)
    return _chunk_program(apply_flat, maths, mesh)


@functools.lru_cache(maxsize=8)
def _chunk_program(apply_flat: ApplyFlat, cfg: DATMConfig, mesh) -> Callable:
    return compile_chunk(iteration_body(make_outer_step(apply_flat, cfg, mesh, jit=False)), compiler_options("datm"))


# ------------------------------------------------------------------------------------------------
# Initialisation
# ------------------------------------------------------------------------------------------------

def flat_apply(net, store) -> ApplyFlat:
    """`(theta (P,), x) -> net.apply(store.unravel(theta), x)`, one function object per (net, parameter layout),
    so the programs built on it (`make_outer_step`, `_logits_fn`) are reused by every run on that layout."""
    return _flat_apply(net, json.dumps(store.info["layout"], sort_keys=True))


@functools.lru_cache(maxsize=8)
def _flat_apply(net, layout_json: str) -> ApplyFlat:
    from jax.flatten_util import ravel_pytree

    _, unravel = ravel_pytree(_template_from_layout(json.loads(layout_json)))
    return lambda theta, xb: net.apply(unravel(theta), xb)


@functools.lru_cache(maxsize=8)
def _logits_fn(apply_flat: ApplyFlat, chunk: int):
    f = jax.jit(jax.vmap(apply_flat, in_axes=(None, 0)))  # (P,), (chunks, chunk, ...) -> (chunks, chunk, C)

    def run(theta, x):
        x = np.asarray(x, np.float32)
        n = x.shape[0]
        b = min(chunk, n)
        pad = (-n) % b
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)]) if pad else x
        out = f(jnp.asarray(theta), jnp.asarray(xp.reshape(-1, b, *x.shape[1:])))
        return to_host(out).reshape(-1, out.shape[-1])[:n]

    return run


def init_samples_predicted_correctly(logits_of, store, x, y, num_classes, ipc, rng) -> tuple[np.ndarray, int]:
    """Per class, the first `ipc` images of a random permutation of the class's NOISY bucket that an
    expert's final params classify as their noisy label; moves to the next expert if one runs short,
    and fills with the remaining images (in the same order) if all experts do. -> (indices (C*ipc,), fills)."""
    from jaxdistill.data import class_buckets

    buckets = class_buckets(y, num_classes)
    perms = [rng.permutation(b) for b in buckets]
    chosen: list[list[int]] = [[] for _ in range(num_classes)]
    expert_order = rng.permutation(store.num_experts)
    for e in expert_order:
        need = [c for c in range(num_classes) if len(chosen[c]) < ipc]
        if not need:
            break
        pred = logits_of(store.flat_at(int(e), -1), x).argmax(-1)
        for c in need:
            taken = set(chosen[c])
            for i in perms[c]:
                if len(chosen[c]) == ipc:
                    break
                if int(i) not in taken and pred[i] == c:
                    chosen[c].append(int(i))
    fills = 0
    for c in range(num_classes):
        for i in perms[c]:
            if len(chosen[c]) == ipc:
                break
            if int(i) not in chosen[c]:
                chosen[c].append(int(i))
                fills += 1
    if fills:
        log.warning("DATM init: %d images could not be found that any expert classifies as their noisy label; "
                    "filled with other images of the class", fills)
    return np.array([i for c in range(num_classes) for i in chosen[c]], np.int64), fills


def soft_label_init(logits_of, store, x_syn, labels, experts=None) -> tuple[np.ndarray, int]:
    """Mean final-expert logits over the experts that classify each image as its class (-> (M, C)).
    Images no expert gets right use the mean over all experts. Returns (logits, #images without one)."""
    experts = range(store.num_experts) if experts is None else experts
    total = None
    count = np.zeros(len(labels))
    all_sum = None
    for e in experts:
        lg = logits_of(store.flat_at(int(e), -1), x_syn).astype(np.float64)
        ok = lg.argmax(-1) == labels
        total = np.where(ok[:, None], lg, 0.0) + (0.0 if total is None else total)
        all_sum = lg + (0.0 if all_sum is None else all_sum)
        count += ok
    n_all = len(list(experts))
    out = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], all_sum / n_all)
    return out.astype(np.float32), int((count == 0).sum())


# ------------------------------------------------------------------------------------------------
# Experts
# ------------------------------------------------------------------------------------------------

def expert_meta(data, cfg: DATMConfig) -> dict:
    """What a DATM expert store must have been built for (checked by ExpertStore.open)."""
    noise = data.meta.get("noise_spec") if getattr(data, "meta", None) else None
    if noise is None and getattr(data, "noise", None) is not None:
        noise = str(getattr(data.noise, "spec", data.noise))
    return {"dataset": data.name, "noise": str(noise), "noise_seed": (data.meta or {}).get("seed"),
            "preprocess": cfg.preprocess, "purpose": "datm"}


def prepare(cfg: DATMConfig, data):
    """(preprocessor, x_train in working space, net)."""
    from jaxdistill.nn import make_net
    from jaxdistill.preprocess import fit_preprocessor

    pre = fit_preprocessor(cfg.preprocess, data.x_train)
    x = np.asarray(pre.apply(data.x_train), np.float32)
    net = make_net(cfg.net_config(data.num_classes))
    return pre, x, net


def build_experts(cfg: DATMConfig, data, key: jax.Array, directory: str, progress: bool = True, *,
                  prepared=None):
    """Train (or resume, or reuse) the expert store DATM needs in `directory`. -> ExpertStore."""
    pre, x, net = prepared or prepare(cfg, data)
    meta = expert_meta(data, cfg)
    try:
        store = ExpertStore.open(directory, expect_meta={**meta, "labels_sha1": labels_fingerprint(data.y_noisy)})
    except StoreError as e:
        if "no expert store" not in str(e) and "incomplete" not in str(e):
            raise
        store = train_experts(net, x, data.y_noisy, cfg.expert_train_config(), cfg.num_experts, key, directory,
                              meta, progress=progress, group_size=cfg.expert_group_size, devices=cfg.devices)
    return store


def _check_store(store, cfg: DATMConfig, net, data):
    want_net = dataclasses.asdict(net.cfg)
    if store.meta.get("net") != want_net:
        raise StoreError(f"expert store {store.directory!r} holds nets {store.meta.get('net')}; this DATM config "
                         f"needs {want_net}")
    if list(store.meta.get("input_shape", [])) != list(data.x_train.shape[1:]):
        raise StoreError(f"expert store {store.directory!r} was trained on images {store.meta.get('input_shape')}; "
                         f"data has {list(data.x_train.shape[1:])}")
    if store.meta.get("labels_sha1") not in (None, labels_fingerprint(data.y_noisy)):
        raise StoreError(f"expert store {store.directory!r} was trained on other labels (labels_sha1 "
                         f"{store.meta.get('labels_sha1')} != {labels_fingerprint(data.y_noisy)}): another noise "
                         f"draw or data set")
    need = set(range(cfg.min_start_epoch, cfg.last_target_epoch + 1))
    missing = sorted(need - set(store.epochs))
    if missing:
        raise StoreError(f"DATM needs expert epochs {cfg.min_start_epoch}..{cfg.last_target_epoch}; store "
                         f"{store.directory!r} lacks {missing[:10]} (stored: {store.epochs[:5]}...{store.epochs[-1]})")


# ------------------------------------------------------------------------------------------------
# distill
# ------------------------------------------------------------------------------------------------

def _seed_of(key) -> tuple[int, int]:
    raw = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return int(raw.ravel()[0]), int(raw.ravel()[-1])


@register("datm", get_config)
def distill(config: DATMConfig, data, key: jax.Array, *, workdir: Optional[str] = None,
            progress: bool = True, store=None) -> DistilledSet:
    """Distil `data` (NoisyData) with DATM. Experts come from `store`, else `config.expert_dir`, else
    `workdir/experts`, else a temporary directory; they are trained there if missing.

    Returns a DistilledSet with images in ZCA space, soft-label logits as targets and the learned lr.
    """
    from jaxdistill.checkpoint import Checkpointer

    if not isinstance(config, DATMConfig):
        raise ConfigError(f"config must be a DATMConfig; got {type(config).__name__}")
    mesh = trajectory_mesh(config)  # refuses a bad split before any expert is trained
    t_start = time.perf_counter()
    c, ipc = data.num_classes, config.ipc
    from jaxdistill.data import check_ipc

    check_ipc(data.y_noisy, c, ipc)
    n_syn = c * ipc
    if config.batch_syn < n_syn and n_syn % config.batch_syn:
        raise ConfigError(f"batch_syn={config.batch_syn} must divide the {n_syn} synthetic images "
                          f"(C*ipc) or be >= {n_syn}")
    k_exp, k_init, k_loop = jax.random.split(key, 3)
    pre, x_train, net = prepared = prepare(config, data)

    tmp = None
    if store is None:
        exp_dir = config.expert_dir or (os.path.join(workdir, "experts") if workdir else None)
        if exp_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="datm_experts_")
            exp_dir = tmp.name
        store = build_experts(config, data, k_exp, exp_dir, progress, prepared=prepared)
    try:
        return _distill(config, data, store, pre, x_train, net, k_init, k_loop, workdir, progress, t_start,
                        Checkpointer, mesh)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _distill(config, data, store, pre, x_train, net, k_init, k_loop, workdir, progress, t_start,
             Checkpointer, mesh):
    c, ipc = data.num_classes, config.ipc
    _check_store(store, config, net, data)
    apply_flat = flat_apply(net, store)
    logits_of = _logits_fn(apply_flat, 500)
    labels = np.repeat(np.arange(c), ipc).astype(np.int32)

    # --- initialisation (deterministic in k_init) ---
    rng = np.random.default_rng(list(_seed_of(k_init)))
    fills = no_correct = 0
    if config.init == "samples_predicted_correctly":
        idx, fills = init_samples_predicted_correctly(logits_of, store, x_train, data.y_noisy, c, ipc, rng)
        x0 = x_train[idx]
        y0, no_correct = soft_label_init(logits_of, store, x0, labels)
    else:
        from jaxdistill.data import class_buckets

        idx = np.concatenate([rng.choice(b, ipc, replace=False) for b in class_buckets(data.y_noisy, c)])
        x0 = x_train[idx]
        y0 = logits_of(store.flat_at(0, -1), x0).astype(np.float32)
    state = init_syn_state(config, x0, y0, config.lr_teacher)

    # --- resume ---
    leaves, treedef = jax.tree_util.tree_flatten(state)
    counters = {"it": 0, "consecutive_nonfinite": 0, "nonfinite": 0, "threshold_skips": 0}
    losses: list[float] = []
    ckpt = None
    if workdir:
        # A checkpoint belongs to one config: refuse to resume another run's state.
        from jaxdistill.checkpoint import atomic_write_json, read_json

        cfg_path = os.path.join(workdir, "datm_config.json")
        want = json.loads(json.dumps(dataclasses.asdict(config)))
        have = read_json(cfg_path)
        if have is not None:
            # The device count does not change the run (same results to float tolerance), so a run may
            # resume on another machine; runs recorded before trajectories_per_iter existed used 1.
            have = {"trajectories_per_iter": 1, **have, "devices": want["devices"]}
        if have is not None and have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise StoreError(f"workdir {workdir!r} holds a DATM run with another config (differs in {diff}); "
                             f"use another workdir or delete it")
        if have is None:
            atomic_write_json(cfg_path, want)
        ckpt = Checkpointer(os.path.join(workdir, "ckpt"))
    if ckpt is not None:
        template = {"leaves": {f"{i:03d}": np.asarray(l) for i, l in enumerate(leaves)},
                    "counters": {k: np.asarray(0) for k in counters},
                    "losses": np.zeros((config.iterations,), np.float32)}
        step_no, tree = ckpt.restore_latest(template)
        if step_no is not None:
            state = jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(tree["leaves"][f"{i:03d}"]) for i in range(len(leaves))])
            counters = {k: int(v) for k, v in tree["counters"].items()}
            losses = np.asarray(tree["losses"])[: counters["it"]].tolist()
            log.info("DATM: resumed at iteration %d from %s", counters["it"], ckpt.directory)

    def save(st=None, done=None):
        if ckpt is None:
            return
        lv = jax.tree_util.tree_leaves(state if st is None else st)
        buf = np.zeros((config.iterations,), np.float32)
        buf[: len(losses)] = losses
        ckpt.save(counters["it"], {"leaves": {f"{i:03d}": to_host(l) for i, l in enumerate(lv)},
                                   "counters": {k: np.asarray(v) for k, v in counters.items()}, "losses": buf})

    T = config.trajectories_per_iter
    run = _cached_chunk(apply_flat, config, mesh)
    seed = _seed_of(k_loop)
    start_of: dict[int, int] = {}

    def chunk_inputs(its):
        """The chunk's snapshots, (c, P) or (c, T, P) each: only the needed rows leave the memory-mapped store."""
        th0, ths = [], []
        for it in its:
            draws = host_draws_multi(seed, int(it), config, store.num_experts, T)
            start_of[int(it)] = draws[0][1]
            snaps = [(m[store.row(t_)], m[store.row(t_ + config.expert_epochs)])
                     for e_, t_ in draws for m in (store.flat(e_),)]
            a, b = (z[0] if T == 1 else np.stack(z) for z in zip(*snaps))
            th0.append(a)
            ths.append(b)
        return np.stack(th0), np.stack(ths)

    def on_chunk(its, m, st):
        for loss, finite, applied in zip(np.asarray(m["loss"], float), m["finite"], m["applied"]):
            losses.append(float(loss))
            if not finite:
                counters["nonfinite"] += 1
                counters["consecutive_nonfinite"] += 1
            else:
                counters["consecutive_nonfinite"] = 0
                if not applied:
                    counters["threshold_skips"] += 1
        counters["it"] = int(its[-1]) + 1

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=counters["it"], desc="datm", unit="it", dynamic_ncols=True)
    mlog = MetricsLog(workdir, "distill_datm")
    try:
        res = run_loop("DATM", run, state, start=counters["it"], iterations=config.iterations,
                       checkpoint_every=config.checkpoint_every, max_nonfinite=config.max_nonfinite,
                       chunk=auto_chunk(config.checkpoint_every, config.iterations, config.chunk_iters),
                       consts=k_loop, chunk_inputs=chunk_inputs, on_chunk=on_chunk,
                       save=save if ckpt is not None else None,
                       log_row=lambda it, r: {"loss": float(r["loss"]), "lr": float(r["lr"]),
                                              "start_epoch": start_of.pop(it, None)},
                       metrics_log=mlog, bar=bar,
                       postfix=lambda r: {"loss": f"{float(r['loss']):.4f}", "lr": f"{float(r['lr']):.4g}"},
                       consecutive0=counters["consecutive_nonfinite"],
                       nonfinite_hint="Lower lr_img/lr_lr/lr_y")
    finally:
        mlog.close()
        if bar is not None:
            bar.close()
    state = res.carry
    save()
    if ckpt is not None:
        ckpt.close()

    tail = losses[-min(len(losses), 10):]
    meta = {
        "config": dataclasses.asdict(config), "iterations": counters["it"],
        "final_loss": float(np.mean(tail)) if tail else None, "loss_history": [float(v) for v in losses],
        "wall_time_s": time.perf_counter() - t_start, "skipped_nonfinite": counters["nonfinite"],
        "skipped_threshold": counters["threshold_skips"], "init_fills": fills,
        "init_images_without_correct_expert": no_correct, "init_indices": [int(i) for i in idx],
        "expert_store": store.directory,
        "num_experts": store.num_experts, "dataset": data.name,
        "trajectories_per_iter": T, "devices_used": mesh.size if mesh is not None else 1,
    }
    out = DistilledSet(images=to_host(state.x), labels=labels, method="datm", target_kind="soft_logits",
                       targets=to_host(state.y), lr=float(state.lr), preprocessor=pre.to_dict(), meta=meta)
    out.initial = DistilledSet(images=np.asarray(x0), labels=labels, method="datm", target_kind="soft_logits",
                               targets=np.asarray(y0), lr=float(config.lr_teacher), preprocessor=pre.to_dict(),
                               meta={"initial_of": "datm", "indices": np.asarray(idx).tolist()})
    if workdir:
        out.save(os.path.join(workdir, "distilled.npz"))
    return out
