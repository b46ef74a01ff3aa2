"""The one training loop: K ConvNets trained at once (vmap), one jitted program per chunk of epochs.

It serves the noisy-data baseline, DATM's experts, DANCE's and RCIG's model pools, the evaluator of
distilled sets and the Co-teaching/JoCoR baselines' building blocks, so there is one place to make
training fast. Each model has its own init key, shuffle order and augmentation draws.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxdistill.errors import ConfigError, DataError
from jaxdistill.nn import Net, NetConfig, forward_net, make_net
from jaxdistill.sharding import model_mesh, padded_size, replicate, shard_models, to_host
from jaxdistill.xla_options import compiler_options

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "multistep", "warmup_cosine")
LOSSES = ("ce", "mse")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.

    milestones are fractions of the total number of steps (multistep: lr *= gamma at each).
    milestones_in_epochs: each milestone is the whole epoch floor(f x epochs) (the first one at the lower lr), as
    torch's MultiStepLR stepped once per epoch with milestones `2 * E // 3` (the originals' evaluators, DANCE's
    pool), instead of step round(f x steps); ignored when `steps` is set. Milestones on one step multiply.
    reset_momentum: the momentum buffer starts again from zero at each milestone, as in code that builds a new
    SGD optimiser when it lowers the lr (DATM's evaluate_synset).
    sam_rho > 0 turns on sharpness-aware steps; sam_alpha > 0 makes them GSAM (surrogate-gap
    ascent, as FTD's flat expert trajectories). steps, if set, replaces epochs x steps-per-epoch.
    drop_last=False keeps the last, smaller batch of each epoch (ceil(N / batch) steps, as the PyTorch
    loaders of DATM, DANCE and FTD's experts); True drops it (floor(N / batch) steps, as Co-teaching's).
    """

    epochs: int = 1
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: tuple = ()
    milestones_in_epochs: bool = False
    reset_momentum: bool = False
    gamma: float = 0.1
    warmup_steps: int = 0
    cosine_alpha: float = 0.01
    loss: str = "ce"
    augment: str = "none"
    cutmix_p: float = 0.0
    sam_rho: float = 0.0
    sam_alpha: float = 0.0
    sam_adaptive: bool = True
    steps: Optional[int] = None
    drop_last: bool = False

    def __post_init__(self):
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES), ("loss", self.loss, LOSSES)):
            if value not in allowed:
                raise ConfigError(f"train {name}={value!r} is not one of {list(allowed)}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 0 and batch_size={self.batch_size} >= 1")
        if not (self.lr > 0):
            raise ConfigError(f"lr={self.lr} must be > 0")
        if self.reset_momentum and self.schedule != "multistep":
            raise ConfigError(f"reset_momentum=True restarts momentum at multistep milestones; "
                              f"got schedule={self.schedule!r}")

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


# Fields added to TrainConfig after runs, stores and stages were saved with its JSON form. Absent from a stored
# config they meant their default, so comparisons drop them where they hold it (`without_added_defaults`): a
# stored config of an unchanged recipe still matches, one whose recipe did change (a DANCE pool now stepped per
# epoch) does not.
# (milestone_epochs, empty, was written for an hour by commit e220c63 before milestones_in_epochs replaced it.)
ADDED_TRAIN_FIELDS = {"milestones_in_epochs": False, "reset_momentum": False, "milestone_epochs": []}


def without_added_defaults(d: Any) -> Any:
    """A config's JSON form (nested dicts / lists) without the ADDED_TRAIN_FIELDS that hold their default."""
    if isinstance(d, dict):
        return {k: without_added_defaults(v) for k, v in d.items()
                if not (k in ADDED_TRAIN_FIELDS and v == ADDED_TRAIN_FIELDS[k])}
    if isinstance(d, (list, tuple)):
        return [without_added_defaults(v) for v in d]
    return d


class TrainState(NamedTuple):
    params: Any      # stacked over models: leading axis K
    opt_state: Any   # stacked over models
    key: jax.Array   # (K, 2) raw keys
    step: jax.Array  # (K,) int32


class TrainResult(NamedTuple):
    params: Any                      # stacked, leading axis K
    state: TrainState
    snapshots: Optional[list]        # per-epoch stacked params (epoch 0 = init) when asked for
    history: dict                    # 'loss': (epochs, K); 'test_acc': list of (epoch, (K,)) when eval_data


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> tuple[int, int]:
    """(steps, batch): the whole set as one batch if it fits, else ceil(n / batch) steps whose last batch
    holds the n % batch leftover images (drop_last=False, PyTorch's DataLoader default), or floor(n / batch)
    full batches (drop_last=True)."""
    if n <= batch_size:
        return 1, n
    return (n // batch_size if drop_last else -(-n // batch_size)), batch_size


def epoch_batches(n: int, batch_size: int, drop_last: bool = False) -> tuple[int, int, int]:
    """(full, batch, tail): `full` batches of `batch` images, then one batch of `tail` images (0: none)."""
    steps, batch = steps_per_epoch(n, batch_size, drop_last)
    full = min(steps, n // batch)
    return full, batch, (n - full * batch if steps > full else 0)


def lr_schedule(cfg: TrainConfig, total_steps: int, lr: Any = None):
    """The learning rate: a float (constant) or an optax schedule step -> lr.

    lr, if given, replaces cfg.lr and may be a traced scalar: the training program then takes the lr as an
    argument, so sets that differ only in their lr (DATM's learned lr) share one compiled program."""
    total_steps = max(int(total_steps), 1)
    lr = cfg.lr if lr is None else lr
    if cfg.schedule == "constant":
        return lr
    if cfg.schedule == "multistep":
        return optax.piecewise_constant_schedule(lr, milestone_steps(cfg, total_steps))
    if isinstance(lr, (int, float)):
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1), lr * cfg.cosine_alpha)
    # optax compares the peak with 0 in Python, which a traced lr cannot do: scale the unit-peak schedule
    unit = lr_schedule(cfg, total_steps, 1.0)
    return lambda count: lr * unit(count)


def milestone_steps(cfg: TrainConfig, total_steps: int) -> dict[int, float]:
    """{first step at the lower lr: factor} of a multistep schedule over `total_steps` optimiser steps (for
    milestones_in_epochs: epochs x steps per epoch). Milestones that land on one step multiply, as torch's
    MultiStepLR counts a repeated milestone (DANCE's 2E//3 and 5E//6 are both 1 for a 2-epoch pool)."""
    total_steps = max(int(total_steps), 1)
    if cfg.milestones_in_epochs and cfg.steps is None and cfg.epochs > 0:
        per_epoch = total_steps // cfg.epochs
        # + 1e-9: 2/3 * 3 must floor to 2, as 2 * 3 // 3 does
        at = [int(math.floor(f * cfg.epochs + 1e-9)) * per_epoch for f in cfg.milestones]
    else:
        at = [int(round(f * total_steps)) for f in cfg.milestones]
    bounds: dict[int, float] = {}
    for s in at:
        bounds[s] = bounds.get(s, 1.0) * cfg.gamma
    return bounds


class _RestartTraceState(NamedTuple):
    count: jax.Array
    trace: Any


def _trace_restarting(decay: float, restarts: tuple) -> optax.GradientTransformation:
    """Heavy-ball momentum (optax.trace: buf = decay * buf + g) whose buffer is zero again at the steps in
    `restarts`, as when torch code replaces its SGD optimiser at an lr milestone."""

    def init(params):
        return _RestartTraceState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        keep = jnp.ones([], jnp.float32)
        for s in restarts:
            keep = jnp.where(state.count == s, 0.0, keep)
        new = jax.tree_util.tree_map(lambda g, t: g + (decay * keep).astype(t.dtype) * t, updates, state.trace)
        return new, _RestartTraceState(state.count + 1, new)

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: TrainConfig, total_steps: int, lr: Any = None) -> optax.GradientTransformation:
    """cfg's optimiser; lr (possibly traced) replaces cfg.lr. The state's structure does not depend on lr."""
    sched = lr_schedule(cfg, total_steps, lr)
    parts = []
    if cfg.weight_decay > 0:  # torch-style coupled L2: added to the gradient before momentum
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.optimizer == "sgd" and cfg.reset_momentum and cfg.momentum:
        parts += [_trace_restarting(cfg.momentum, tuple(sorted(milestone_steps(cfg, total_steps)))),
                  optax.scale_by_learning_rate(sched)]
    elif cfg.optimizer == "sgd":
        parts.append(optax.sgd(sched, momentum=cfg.momentum or None))
    else:
        parts.append(optax.adam(sched))
    return optax.chain(*parts)


def loss_fn(logits: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
    """Per-example loss. logits, targets: (B, C) -> (B,). ce: targets are probabilities."""
    if kind == "ce":
        return -(targets * jax.nn.log_softmax(logits)).sum(-1)
    return 0.5 * ((logits - targets) ** 2).sum(-1)


def as_targets(y: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) int labels -> one-hot (N, C); (N, C) targets pass through."""
    y = np.asarray(y)
    if y.ndim == 1:
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"labels must be in [0, {num_classes}); got min {y.min()}, max {y.max()}")
        return np.eye(num_classes, dtype=np.float32)[y.astype(np.int64)]
    if y.ndim != 2 or y.shape[1] != num_classes:
        raise DataError(f"targets of shape {y.shape} must be (N,) labels or (N, {num_classes})")
    return y.astype(np.float32)


def _sam_grad(grad_fn, params, cfg: TrainConfig):
    """Gradient of a (G)SAM step. grad_fn(params) -> (loss, grads)."""
    loss, g = grad_fn(params)
    if cfg.sam_rho <= 0:
        return loss, g
    if cfg.sam_adaptive:
        scaled = jax.tree_util.tree_map(lambda p, gg: p * p * gg, params, g)
        norm = optax.global_norm(jax.tree_util.tree_map(lambda p, gg: p * gg, params, g))
    else:
        scaled, norm = g, optax.global_norm(g)
    eps = jax.tree_util.tree_map(lambda s: cfg.sam_rho * s / (norm + 1e-12), scaled)
    _, gp = grad_fn(jax.tree_util.tree_map(jnp.add, params, eps))
    if cfg.sam_alpha <= 0:
        return loss, gp
    # GSAM: descend the perturbed loss and ascend the surrogate gap along g's part orthogonal to gp.
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gp)))
    gp_sq = sum(jnp.vdot(b, b) for b in jax.tree_util.tree_leaves(gp)) + 1e-12
    g_orth = jax.tree_util.tree_map(lambda a, b: a - dot / gp_sq * b, g, gp)
    return loss, jax.tree_util.tree_map(lambda b, o: b - cfg.sam_alpha * o, gp, g_orth)


MODEL_LOOPS = ("auto", "vmap", "map")


def resolve_model_loop(model_loop: str) -> str:
    """'vmap' batches the K models into one program; 'map' runs them one after another (lax.map).

    'auto' is 'map' on CPU: XLA:CPU runs the vmapped ConvNet step far slower than K single-model steps
    (measured 2026-12-02, 5 nets, width 16, 100 images: 322 ms vs 171 ms per gradient, BUILD_NOTES.md),
    while accelerators gain from the batch. With several devices the models axis is sharded (jaxdistill.sharding),
    and a sequential loop over a sharded axis would gather it, so 'auto' keeps vmap there."""
    if model_loop not in MODEL_LOOPS:
        raise ConfigError(f"unknown model_loop {model_loop!r}; allowed: {list(MODEL_LOOPS)}")
    if model_loop == "auto":
        return "map" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"
    return model_loop


def over_models(fn: Callable, model_loop: str = "auto") -> Callable:
    """fn applied to every model of a pytree stacked on axis 0, as `resolve_model_loop(model_loop)` says."""
    if resolve_model_loop(model_loop) == "vmap":
        return jax.vmap(fn)
    return lambda stacked: jax.lax.map(fn, stacked)


def make_epoch_fn(net: Net, cfg: TrainConfig, n: int, tx: Optional[optax.GradientTransformation],
                  model_loop: str = "auto", total_steps: Optional[int] = None) -> Callable:
    """Returns jitted `run(state, x, t, num_epochs, lr=None) -> (state, losses (num_epochs, K))` (num_epochs
    static).

    tx: the optimiser, lr baked in; or None: the program builds `make_optimizer(cfg, total_steps, lr)` from its
    traced `lr` argument (a float32 scalar), so one compiled program serves every lr.
    model_loop: how the K models run inside the program (see `resolve_model_loop`)."""
    if tx is None and total_steps is None:
        raise ConfigError("make_epoch_fn: with tx=None the schedule length total_steps is needed")
    full, batch, tail = epoch_batches(n, cfg.batch_size, cfg.drop_last)
    augment = None
    if cfg.augment != "none":
        from jaxdistill.augment import get_augment

        augment = get_augment(cfg.augment)

    def one_model_epoch(tx, params, opt_state, key, step, x, t):
        key, perm_key = jax.random.split(key)
        perm = jax.random.permutation(perm_key, n)

        def body(carry, idx):
            params, opt_state, key, step = carry
            key, k_aug, k_mix = jax.random.split(key, 3)
            xb, tb = x[idx], t[idx]
            if augment is not None:
                xb = augment(k_aug, xb)
            if cfg.cutmix_p > 0:
                from jaxdistill.augment import cutmix

                xb, tb = cutmix(k_mix, xb, tb, 1.0, cfg.cutmix_p)

            def grad_fn(p):
                return jax.value_and_grad(lambda q: loss_fn(net.apply(q, xb), tb, cfg.loss).mean())(p)

            loss, grads = _sam_grad(grad_fn, params, cfg)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, key, step + 1), loss

        carry, losses = jax.lax.scan(body, (params, opt_state, key, step), perm[: full * batch].reshape(full, batch))
        if tail:  # the leftover images as one smaller batch (its own shape, so one more traced step)
            carry, last = body(carry, perm[full * batch:])
            losses = jnp.concatenate([losses, last[None]])
        params, opt_state, key, step = carry
        return params, opt_state, key, step, losses.mean()

    resolve_model_loop(model_loop)  # a bad name fails here, not at the first call

    def run(state: TrainState, x, t, num_epochs: int, lr=None):
        if (tx is None) != (lr is not None):
            raise ConfigError("make_epoch_fn: pass lr to run exactly when tx=None was given")
        tx_ = tx if tx is not None else make_optimizer(cfg, total_steps, lr)
        per_model = over_models(lambda a: one_model_epoch(tx_, *a, x, t), model_loop)

        def ep(state, _):
            params, opt_state, key, step, loss = per_model((state.params, state.opt_state, state.key, state.step))
            return TrainState(params, opt_state, key, step), loss

        return jax.lax.scan(ep, state, None, length=num_epochs)

    return jax.jit(run, static_argnums=3, donate_argnums=0, compiler_options=compiler_options("train"))


@functools.lru_cache(maxsize=32)
def _epoch_fn(net: Net, cfg: TrainConfig, n: int, total_steps: int) -> tuple[Callable, optax.GradientTransformation]:
    """(make_epoch_fn's program taking the lr as an argument, an optimiser for its state), kept per (net,
    config, set size, schedule length); call with cfg.lr normalised away (`_unit_lr`), so that sets which
    differ only in their lr (DATM's learned lr) reuse the program: the default job evaluates several sets
    under the same protocol, and each compile costs seconds on CPU. The optimiser's state does not depend
    on its lr, so the returned tx (lr 1) initialises the state of every lr."""
    return make_epoch_fn(net, cfg, n, None, total_steps=total_steps), make_optimizer(cfg, total_steps)


def _unit_lr(cfg: TrainConfig) -> TrainConfig:
    return cfg.replace(lr=1.0)


def _lr_arg(lr) -> jax.Array:
    # one strongly typed float32 whatever the caller passes: a Python float (weakly typed), a NumPy float32 and
    # a float64 would each be a compile of their own
    return jnp.asarray(np.float32(lr))


@functools.lru_cache(maxsize=32)
def _stacked_opt_init(tx: optax.GradientTransformation) -> Callable:
    """tx.init over stacked models as one program, kept per optimiser (`_epoch_fn` hands out the same tx for a
    config): run eagerly each zeros_like compiles alone, and a fresh jit wrapper would re-lower on every call."""
    return jax.jit(jax.vmap(tx.init))


def init_state(net: Net, cfg: TrainConfig, key: jax.Array, num_models: int, input_shape: tuple,
               tx: optax.GradientTransformation, init_params: Any = None) -> TrainState:
    k_init, k_run = jax.random.split(key)
    if init_params is None:
        init_params = jax.vmap(lambda k: net.init(k, input_shape))(jax.random.split(k_init, num_models))
    opt_state = _stacked_opt_init(tx)(init_params)
    keys = jax.random.split(k_run, num_models)
    return TrainState(init_params, opt_state, keys, jnp.zeros((num_models,), jnp.int32))


def train_models(net: Net, x, y, cfg: TrainConfig, key: jax.Array, num_models: int = 1, *,
                 snapshots: bool = False, init_params: Any = None, state: Optional[TrainState] = None,
                 start_epoch: int = 0, eval_data: Optional[tuple] = None, eval_every: int = 0,
                 on_epoch: Optional[Callable[[int, TrainState], None]] = None,
                 progress: bool | str = False, num_classes: Optional[int] = None,
                 metrics_log: Any = None) -> TrainResult:
    """Train `num_models` nets on (x, y) from independent inits.

    x: (N, H, W, C); y: (N,) int labels or (N, C) targets (probabilities for 'ce', values for 'mse').
    snapshots: keep stacked params after every epoch (index 0 = initialisation) in memory.
    on_epoch(epoch, state): called after each epoch (epoch counts from 1), e.g. to store snapshots or
    checkpoint; passing state + start_epoch resumes. eval_data=(x_test, y_test) with eval_every=k records
    test accuracy every k epochs and after the last one. metrics_log (a `runlog.MetricsLog`): per epoch the
    mean loss over the nets, the lr at the epoch's end and, where measured, the mean test accuracy.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise DataError(f"x must be (N, H, W, C); got shape {x.shape}")
    c = num_classes or net.cfg.num_classes
    t = jnp.asarray(as_targets(y, c))
    if t.shape[0] != x.shape[0]:
        raise DataError(f"x has {x.shape[0]} rows but y has {t.shape[0]}")
    n = x.shape[0]
    n_steps, _ = steps_per_epoch(n, cfg.batch_size, cfg.drop_last)
    epochs = cfg.epochs if cfg.steps is None else math.ceil(cfg.steps / n_steps)
    run, tx = _epoch_fn(net, _unit_lr(cfg), n, epochs * n_steps)
    lr = _lr_arg(cfg.lr)
    if state is None:
        state = init_state(net, cfg, key, num_models, tuple(x.shape[1:]), tx, init_params)
    # A state passed in may carry padding models (train_models_sharded pads K to a multiple of the devices):
    # losses, accuracies and the metrics log cover the first num_models only.
    snaps = [to_host(state.params)] if snapshots and start_epoch == 0 else ([] if snapshots else None)
    history: dict = {"loss": [], "test_acc": []}

    # Chunk epochs into one jitted call where nothing needs to happen between them.
    per_call = 1 if (snapshots or on_epoch is not None) else max(1, eval_every or min(epochs, 50))
    bar = _progress(progress, epochs - start_epoch)
    epoch = start_epoch
    while epoch < epochs:
        k = min(per_call, epochs - epoch)
        state, losses = run(state, x, t, k, lr)
        epoch += k
        losses = to_host(losses)[:, :num_models]
        history["loss"].extend(losses.tolist())
        if snapshots:
            snaps.append(to_host(state.params))
        if on_epoch is not None:
            on_epoch(epoch, state)
        if eval_data is not None and eval_every and (epoch % eval_every == 0 or epoch == epochs):
            history["test_acc"].append((epoch, accuracy(net, state.params, *eval_data)[:num_models].tolist()))
        if metrics_log is not None:
            _log_epochs(metrics_log, losses, epoch, n_steps, lr_schedule(cfg, epochs * n_steps),
                        history["test_acc"])
        if bar is not None:
            bar.update(k)
            bar.set_postfix(loss=f"{float(np.mean(losses[-1])):.3f}")
    if bar is not None:
        bar.close()
    return TrainResult(state.params, state, snaps, history)


def _log_epochs(log, losses: np.ndarray, epoch: int, n_steps: int, sched, test_acc: list) -> None:
    """Log the epochs (epoch - len(losses), epoch] of one chunk: losses (k, K)."""
    for i, row in enumerate(losses):
        e = epoch - len(losses) + 1 + i
        lr = sched(e * n_steps) if callable(sched) else sched
        acc = test_acc[-1][1] if test_acc and test_acc[-1][0] == e else None
        log.log(e, loss=float(np.mean(row)), lr=float(lr), test_acc=None if acc is None else float(np.mean(acc)))


def _progress(progress, total):
    if not progress or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=progress if isinstance(progress, str) else "train", unit="ep",
                leave=False, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


def default_predict_batch() -> int:
    """Chunk size for inference: small chunks stay in cache on CPU (10,000 test images, 5 nets width 16:
    5.6-5.7 s in chunks of 100-200 vs 7.9 s in chunks of 1000, 2026-12-02); accelerators want big ones."""
    return 250 if jax.default_backend() == "cpu" else 1000


def predict(net: Net, params_stacked: Any, x, batch: Optional[int] = None) -> jax.Array:
    """Logits of every model: (K, N, num_classes). Runs in fixed-size chunks (pads the last)."""
    batch = batch or default_predict_batch()
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    b = min(batch, n)
    pad = (-n) % b
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    out = _predict_fn(net.cfg)(params_stacked, xp.reshape(-1, b, *x.shape[1:]))
    return out[:, :n]


@functools.lru_cache(maxsize=64)
def _predict_fn(cfg: NetConfig) -> Callable:
    """One jitted predictor per architecture (compiled once per input shape, not once per call).

    Inference is never differentiated twice, so `auto` resolves to lax.conv here even on CPU: the patches
    path exists for second-order gradients, and for a forward pass lax.conv was 1.6-2.1x faster on the 2-core
    CPU (2000 x 28x28x1 images, width 16 / 32: 0.33 / 0.46 s vs 0.53 / 0.98 s). Parameters are shared.
    The models run as `resolve_model_loop("auto")` says: one after another on CPU, where that was 2.9-3.5x
    faster than vmapping them (10,000 test images, 5 nets width 16 / 3 nets width 32: 8.3 / 8.1 s vs
    24.2 / 27.9 s, 2026-12-02).
    """
    net = forward_net(make_net(cfg))

    @jax.jit
    def f(params_stacked, xs):
        per_model = lambda p: jax.lax.map(lambda xb: net.apply(p, xb), xs)  # (chunks, b, C)
        out = over_models(per_model)(params_stacked)
        return out.reshape(out.shape[0], -1, out.shape[-1])

    return f


def accuracy(net: Net, params_stacked: Any, x, y, batch: Optional[int] = None) -> np.ndarray:
    """Test accuracy of each model, (K,), in [0, 1]."""
    logits = predict(net, params_stacked, x, batch)
    return to_host((jnp.argmax(logits, -1) == jnp.asarray(y)[None]).mean(-1))


def timed(fn: Callable, *args, **kw):
    """(result, seconds) with device sync."""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    jax.block_until_ready(jax.tree_util.tree_leaves(out))
    return out, time.perf_counter() - t0


def _initial_state(net, x, cfg, key, num_models: int, init_params=None):
    """The TrainState train_models would build for itself (same key use, same optimiser), so a sharded
    run starts from exactly the single-device run's state."""
    n = x.shape[0]
    n_steps, _ = steps_per_epoch(n, cfg.batch_size, cfg.drop_last)
    epochs = cfg.epochs if cfg.steps is None else math.ceil(cfg.steps / n_steps)
    tx = make_optimizer(cfg, epochs * n_steps)
    return init_state(net, cfg, key, num_models, tuple(x.shape[1:]), tx, init_params)


def train_models_sharded(net, x, y, cfg, key: jax.Array, num_models: int = 1, mesh: Optional[Mesh] = None,
                         **kw):
    """`train_models` with the models axis split across devices; same result as one device.

    x: (N, H, W, C) and y: (N,) or (N, C) are replicated; the TrainState (params, optimiser state, per-model
    keys and steps, leading axis K) is placed with NamedSharding(mesh, P('models')), and the training loop's
    jitted, vmapped epochs then run partitioned along K (XLA's sharding propagation; the models never
    communicate). K not divisible by the device count: the state is padded with copies of the last model,
    trained, and sliced back to K (params, state, snapshots, history).
    kw: passed to train_models (snapshots, init_params, state + start_epoch to resume, eval_data, ...).
    Returns TrainResult with params stacked over K (sharded when K is a multiple of the devices).
    """
    mesh = mesh if mesh is not None else model_mesh()
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise DataError(f"x must be (N, H, W, C); got shape {x.shape}")
    state = kw.pop("state", None)
    init_params = kw.pop("init_params", None)
    if state is None:
        state = _initial_state(net, x, cfg, key, num_models, init_params)
    k = int(np.shape(jax.tree_util.tree_leaves(state.params)[0])[0])  # shard_models checks every leaf
    kp = padded_size(k, mesh.size)
    state = shard_models(state, mesh, pad=True)
    cut = lambda t: jax.tree_util.tree_map(lambda a: a[:k], t)  # noqa: E731
    if kp != k and kw.get("on_epoch") is not None:
        user_cb = kw["on_epoch"]
        kw["on_epoch"] = lambda epoch, st: user_cb(epoch, cut(st))  # callbacks never see the padding models
    res = train_models(net, replicate(x, mesh), y, cfg, key, k, state=state, **kw)
    if kp == k:
        return res
    hist = dict(res.history)
    hist["loss"] = [list(row)[:k] if np.ndim(row) else row for row in hist.get("loss", [])]
    hist["test_acc"] = [(e, list(a)[:k]) for e, a in hist.get("test_acc", [])]
    snaps = None if res.snapshots is None else [cut(s) for s in res.snapshots]
    return TrainResult(cut(res.params), cut(res.state), snaps, hist)


def train_models_auto(net: Net, x, y, cfg: TrainConfig, key: jax.Array, num_models: int = 1, **kw) -> TrainResult:
    """`train_models`, with the models axis split across devices when there are several (same results as
    one device to float tolerance; see jaxdistill.sharding)."""
    if jax.device_count() > 1 and num_models > 1 and kw.get("state") is None:
        return train_models_sharded(net, x, y, cfg, key, num_models, mesh=model_mesh(), **kw)
    return train_models(net, x, y, cfg, key, num_models, **kw)
