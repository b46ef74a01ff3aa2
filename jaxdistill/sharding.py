"""Several devices with `jax.sharding` (Mesh + NamedSharding) and `jax.shard_map` (pmap is legacy).

Four patterns cover jaxdistill's parallel work, each on a 1-D mesh (axis name = the mesh's only axis):

  models       the one training loop (experts, pools, evaluator nets) is vmapped over K models; putting
               the stacked state's leading axis K across devices partitions it with no communication
               (`shard_models`; `train.train_models_sharded` trains that way).
  data         a mean gradient over a batch split across devices: shard_map + `lax.pmean`
               (`sharded_mean_grad`; RCIG's real batch).
  trajectories several independent meta-gradients per iteration (DATM: one unrolled trajectory each),
               averaged across devices (`sharded_trajectory_grads`).
  classes      per-class losses and gradients of class-sliced state (DANCE's batched view), the class axis
               across devices, padded when C is not a multiple of the device count (`sharded_class_grads`).

Several processes (jax.distributed.initialize): the meshes span every process's devices; `is_primary` (process
0 writes files), `to_host` (the one way results reach NumPy, all-gathering arrays spread over processes) and
`sync` (a barrier before reading what process 0 wrote) keep the processes' files and results one.

Every function gives the single-device result up to float reassociation (tests/test_sharding.py checks
this on 4 forced host devices). On one device they run unchanged, so callers need no special case.

Wiring (each a drop-in for one existing call):
  evaluate/experts/baseline:  train_models(net, x, y, cfg, key, k, **kw)
                          ->  train.train_models_sharded(net, x, y, cfg, key, k, mesh=model_mesh(), **kw)
  RCIG Problem.step:      jax.value_and_grad(self.outer_loss, argnums=(0, 1), has_aux=True)(delta, psi, theta0, xt, yt)
                          ->  sharded_mean_grad(lambda dp, b: self.outer_loss(dp[0], dp[1], theta0, *b),
                                                (delta, psi), (xt, yt), data_mesh(), has_aux=True)
  DANCE batched view:     jax.value_and_grad(total, has_aux=True)(syn)
                          ->  sharded_class_grads(loss_c, (syn.reshape(C, ipc, *syn.shape[1:]), jnp.arange(C), extra),
                                                  class_mesh())   (grads reshaped back to syn.shape, losses summed)
  DATM, T trajectories:   sharded_trajectory_grads(value_and_grad of matching_loss per (theta0, theta*, key),
                                                   (theta0s, theta_stars, keys), data_mesh(), x, y, lr)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdistill.errors import ConfigError

MODELS = "models"
DATA = "data"
CLASSES = "classes"

tmap = jax.tree_util.tree_map


def varying_axes(x: jax.Array) -> frozenset:
    """The shard_map mesh axes x varies over (empty outside shard_map)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)  # JAX >= 0.10; earlier releases call it `vma`
    return frozenset(mat.varying if mat is not None else getattr(aval, "vma", frozenset()))


def _varying(tree: Any, axis: str | tuple) -> Any:
    """Mark replicated values as per-device inside shard_map. Without this, differentiating w.r.t. a
    replicated input makes JAX psum its cotangent over the axis (the transpose of the implicit
    invariant->varying cast), so a following pmean would count the gradient n times."""
    return tmap(lambda a: jax.lax.pcast(a, axis, to="varying"), tree)


# ------------------------------------------------------------------------------------------------
# Meshes and placement
# ------------------------------------------------------------------------------------------------

def make_mesh(axis: str, n_devices: Optional[int] = None, devices: Optional[Sequence] = None) -> Mesh:
    """1-D mesh over the first `n_devices` devices (default: all) with the one axis `axis`."""
    devs = list(devices) if devices is not None else jax.devices()
    n = len(devs) if n_devices is None else int(n_devices)
    if not 1 <= n <= len(devs):
        raise ConfigError(f"n_devices={n_devices} must be in [1, {len(devs)}] (the devices available: "
                          f"{len(devs)} x {devs[0].platform})")
    return Mesh(np.array(devs[:n]), (axis,))


def model_mesh(n_devices: Optional[int] = None) -> Mesh:
    """Mesh with axis 'models' (stacked-over-models state split across devices)."""
    return make_mesh(MODELS, n_devices)


def data_mesh(n_devices: Optional[int] = None) -> Mesh:
    """Mesh with axis 'data' (batches / trajectories split across devices)."""
    return make_mesh(DATA, n_devices)


def class_mesh(n_devices: Optional[int] = None) -> Mesh:
    """Mesh with axis 'classes' (DANCE's per-class work split across devices)."""
    return make_mesh(CLASSES, n_devices)


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ConfigError(f"expected a 1-D mesh; got axes {mesh.axis_names} (build one with make_mesh)")
    return mesh.axis_names[0]


def _leading(tree: Any) -> int:
    sizes = {int(np.shape(l)[0]) for l in jax.tree_util.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ConfigError(f"every leaf must share one leading (stacked) axis; got sizes {sorted(sizes)}")
    return sizes.pop()


def padded_size(k: int, n_devices: int) -> int:
    """Smallest multiple of n_devices >= k."""
    return int(math.ceil(k / n_devices) * n_devices)


def pad_leading(tree: Any, size: int) -> Any:
    """Repeat the last entry along the leading axis up to `size` (padding rows are ordinary copies, so
    they stay finite; callers slice them off)."""
    def pad(a):
        a = jnp.asarray(a)
        extra = size - a.shape[0]
        if extra <= 0:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])

    return tmap(pad, tree)


def shard_models(tree: Any, mesh: Mesh, *, pad: bool = False) -> Any:
    """Place a stacked pytree (leading axis K on every leaf) across the mesh's devices along its axis.

    K must be a multiple of the device count, else ConfigError; with pad=True the leading axis is padded
    (last entry repeated) to the next multiple instead, and the caller slices `[:K]` afterwards.
    """
    axis, n = _axis(mesh), mesh.size
    k = _leading(tree)
    if k % n:
        if not pad:
            raise ConfigError(f"K={k} stacked models is not divisible by the {n} devices of mesh axis {axis!r}; "
                              f"allowed: a multiple of {n}, or pad=True (pads to {padded_size(k, n)})")
        tree = pad_leading(tree, padded_size(k, n))
    return jax.device_put(tree, NamedSharding(mesh, P(axis)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy every leaf to every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def is_sharded_along(x: jax.Array, mesh: Mesh) -> bool:
    """True when x's leading axis is split across all of the mesh's devices (one block each)."""
    sh = getattr(x, "sharding", None)
    return (isinstance(sh, NamedSharding) and sh.mesh.devices.size == mesh.size and len(sh.spec) > 0
            and sh.spec[0] == _axis(mesh) and len({s.device for s in x.addressable_shards}) == mesh.size)


# ------------------------------------------------------------------------------------------------
# Data axis: mean gradients over a batch split across devices
# ------------------------------------------------------------------------------------------------

def sharded_mean_grad(loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any, mesh: Mesh,
                      *, has_aux: bool = False):
    """(loss, grads) of the batch-mean loss with the batch split across devices.

    loss_fn(params, local_batch) -> scalar MEAN over the local batch (or (scalar, aux) with has_aux).
    batch: pytree with a leading axis B on every leaf, B a multiple of the device count (equal shards make
    the mean of per-shard means the full-batch mean). params replicated. Each device differentiates its
    shard, then `lax.pmean` averages loss and grads (aux, if any, is averaged too).
    Usable inside jit (RCIG: params = (delta, psi, theta0), batch = the real batch). Traced arrays the loss
    needs must come in through params or batch, not a closure: a closed-over tracer has no device-varying
    type inside shard_map and its backward pass fails with a cotangent type mismatch ("...{V:data}");
    pass it in params and `lax.stop_gradient` it if it is not to be differentiated.
    """
    axis, n = _axis(mesh), mesh.size
    b = _leading(batch)
    if b % n:
        raise ConfigError(f"batch of {b} rows is not divisible by the {n} devices of mesh axis {axis!r}; "
                          f"allowed: a multiple of {n}")

    def local(p, bt):
        out, g = jax.value_and_grad(loss_fn, has_aux=has_aux)(_varying(p, axis), bt)
        return jax.lax.pmean((out, g), axis)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis)), out_specs=P())(params, batch)


def sharded_trajectory_grads(fn: Callable[..., tuple], per_device_args: Any, mesh: Mesh, *shared: Any,
                             vectorize: bool = False):
    """Mean over T independent (loss, grads) evaluations, the T split across devices.

    fn(per, *shared) -> (loss scalar, grads pytree) for ONE trajectory, where `per` is one slice of
    `per_device_args` (pytree, leading axis T on every leaf, T a multiple of the device count) and
    `shared` are replicated (e.g. DATM: per = (theta0, theta_star, key) per trajectory, shared = the
    synthetic images, label logits, lr; fn = value_and_grad of the matching loss).
    Each device runs its T/n trajectories one after another (`lax.map`: one unroll's memory at a time;
    vectorize=True vmaps them instead), then `lax.pmean` gives the mean over all T.
    Returns (mean loss, mean grads, per-trajectory losses (T,)).
    """
    axis, n = _axis(mesh), mesh.size
    t = _leading(per_device_args)
    if t % n:
        raise ConfigError(f"T={t} trajectories is not divisible by the {n} devices of mesh axis {axis!r}; "
                          f"allowed: a multiple of {n}")

    def local(per, *sh):
        sh = _varying(sh, axis)
        one = lambda p: fn(p, *sh)  # noqa: E731
        losses, grads = jax.vmap(one)(per) if vectorize else jax.lax.map(one, per)
        mean_loss, mean_g = jax.lax.pmean((losses.mean(), tmap(lambda g: g.mean(0), grads)), axis)
        return mean_loss, mean_g, losses

    specs = (P(axis),) + tuple(P() for _ in shared)
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(), P(), P(axis)))(per_device_args, *shared)


# ------------------------------------------------------------------------------------------------
# Class axis: per-class losses and gradients (DANCE)
# ------------------------------------------------------------------------------------------------

def sharded_class_grads(loss_c: Callable[..., jax.Array], per_class_args: tuple, mesh: Mesh, *shared: Any):
    """Per-class losses and gradients w.r.t. each class's own slice, the class axis split across devices.

    loss_c(arg0_c, *rest_c, *shared) -> scalar for one class; per_class_args = (arg0, *rest), pytrees with a
    leading class axis C (arg0 is differentiated: DANCE's syn.reshape(C, ipc, H, W, Ch); rest e.g. class
    ids and per-class keys / real-feature means). Equals `jax.vmap(jax.value_and_grad(loss_c))` over C, i.e.
    the gradient of sum_c loss_c w.r.t. the class-stacked arg0 (classes do not share arg0 slices).
    C not a multiple of the device count: padded with copies of the last class, sliced off after.
    Returns (losses (C,), grads like arg0 (C, ...)).
    """
    axis, n = _axis(mesh), mesh.size
    c = _leading(per_class_args)
    cp = padded_size(c, n)
    args = pad_leading(per_class_args, cp) if cp != c else per_class_args

    def local(a, *sh):
        sh = _varying(sh, axis)
        vg = jax.value_and_grad(lambda a0, *r: loss_c(a0, *r, *sh))
        return jax.vmap(vg)(*a)

    specs = (P(axis),) + tuple(P() for _ in shared)
    losses, grads = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(axis), P(axis)))(args, *shared)
    if cp != c:
        losses, grads = losses[:c], tmap(lambda g: g[:c], grads)
    return losses, grads


# ------------------------------------------------------------------------------------------------
# Several processes (jax.distributed.initialize): one writer, gathered host copies
# ------------------------------------------------------------------------------------------------

def is_primary() -> bool:
    """True in the process that writes files (process 0; the only process of a one-process run). Every process
    computes the same results, so the others skip their writes rather than race on the same paths."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Barrier across processes (no-op in a one-process run): placed where a process reads what process 0 has
    just written (a store's files, run.json) so no process reads before the write is in place."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
    """NumPy copy of every leaf. An array spread over devices of several processes cannot be read by one of
    them (np.asarray raises); it is all-gathered (`process_allgather`, a collective: every process must
    call this at the same point), so each process gets the whole global array. Replicated and
    single-process arrays are copied directly."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return tmap(one, tree)


# ------------------------------------------------------------------------------------------------
# The distillers' `devices` setting
# ------------------------------------------------------------------------------------------------

def resolve_devices(requested: int, owner: str = "") -> int:
    """How many devices a distiller (`owner`, for messages) splits its work over: `requested` 0 = every visible
    device, 1 = the single-device path, n > 1 = the first n devices. ConfigError when n exceeds the visible
    devices (or is not an int >= 0: the configs' own check)."""
    from jaxdistill.configs._checks import check_devices

    check_devices(owner, requested)
    avail = jax.device_count()
    if requested > avail:
        raise ConfigError(f"{owner} devices={requested} exceeds the {avail} visible {jax.devices()[0].platform} "
                          f"devices; allowed: 0 (all) or 1..{avail}".lstrip())
    return avail if requested == 0 else requested
