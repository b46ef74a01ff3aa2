"""DANCE (Zhang et al., IJCAI 2024): dual-view distribution alignment with a pretrained model pool.

Per outer iteration (distillers.md section 2.3):
  1. a random pool model k < num_premodel and lambda ~ U(0,1); the middle encoder
     theta = lambda * theta_0(k) + (1 - lambda) * theta_T(k) (all parameters);
  2. the synthetic images are clamped to [0, 1] (the saved/evaluated set is the unclamped one);
  3. inner-class view: for each class c, || mean phi(A(R_c)) - mean phi(A(S_c)) ||^2 with phi the
     penultimate features of the middle encoder, A one batch-shared augmentation draw over real and
     synthetic, no gradient into the real branch; one SGD-momentum step on the whole synthetic tensor;
  4. inter-class calibration view: for each class c, CE(theta_T(k)(A'(S_c)), c); again one step per class.
All steps share one SGD(momentum) state over the whole tensor, so each per-class step also moves the other
classes by their momentum. `batched_classes=True` instead takes one step per view on the sum of the
class losses (2 steps per iteration instead of 2C): faster, different momentum dynamics.

Spaces (why the stored set is normalised): DANCE keeps the learnable images in [0,1] pixels and applies
Normalize(mean, std) *inside* its augmentation, both while condensing and while evaluating (IDC's
`aug = Compose([normalize, DiffAug])`), and the test images get the same Normalize. jaxdistill's evaluator
trains on `DistilledSet.images` as given and maps only the test images through `DistilledSet.preprocessor`.
So the DistilledSet holds the decoded images *after* Normalize (the working space) together with the
`meanstd` preprocessor: evaluation then sees normalised training and test images, exactly as the
original, and `DistilledSet.to_pixels()` (preprocessor.invert + clip) gives the pixel images back. The raw
encoded pixel tensor (factor x factor sub-images per stored image) is saved beside it in the workdir.

Multi-formation (IDC): each stored image holds f x f sub-images; `decode_zoom` pads right/bottom with 0.5
to a multiple of f, cuts f^2 crops of ceil(H/f) and upsamples each to H x W bilinearly with
align_corners=False (crop-major order, as IDC's `decode_zoom`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdistill.augment import dance_condense
from jaxdistill.configs.dance import DanceConfig, get_config
from jaxdistill.runlog import MetricsLog
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.experts import train_experts
from jaxdistill.methods.base import DistilledSet, register
from jaxdistill.methods.loop import auto_chunk, compile_chunk, run_loop
from jaxdistill.nn import Net, NetConfig, forward_net, make_net
from jaxdistill.sharding import model_mesh, resolve_devices, to_host
from jaxdistill.train import TrainConfig, train_models, train_models_sharded
from jaxdistill.xla_options import compiler_options

Array = jax.Array
tmap = jax.tree_util.tree_map


# ----------------------------------------------------------------------------------------------
# Building blocks (pure, tested against NumPy)
# ----------------------------------------------------------------------------------------------

def middle_encoder(theta0: Any, theta_t: Any, lam: Array) -> Any:
    """lambda * theta_0 + (1 - lambda) * theta_T over every leaf (lam 1 -> init, 0 -> trained)."""
    return tmap(lambda a, b: lam * a + (1.0 - lam) * b, theta0, theta_t)


def decode_zoom(x: Array, factor: int) -> Array:
    """Multi-formation decode: (M, H, W, C) -> (M * f^2, H, W, C), crop-major (crop (i,j) of every image,
    then the next crop), each crop of side ceil(H/f) upsampled bilinearly (align_corners=False)."""
    if factor == 1:
        return x
    m, h, w, c = x.shape
    sh, sw = math.ceil(h / factor), math.ceil(w / factor)
    ph, pw = sh * factor - h, sw * factor - w
    if ph or pw:  # IDC pads right/bottom with 0.5 so the grid divides evenly
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=0.5)
    crops = [x[:, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw, :] for i in range(factor) for j in range(factor)]
    crops = jnp.concatenate(crops, axis=0)
    # Upsampling (scale >= 1): jax's triangle kernel equals PyTorch bilinear with align_corners=False
    # (half-pixel centres; at the borders the clamped source index = renormalised edge weights).
    return jax.image.resize(crops, (crops.shape[0], h, w, c), method="bilinear", antialias=False)


def nearest_resize_np(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """PyTorch F.interpolate(mode='nearest'): src = floor(dst * in / out). x (N, H, W, C)."""
    h, w = x.shape[1:3]
    ri = np.minimum(np.floor(np.arange(oh) * (h / oh)).astype(np.int64), h - 1)
    ci = np.minimum(np.floor(np.arange(ow) * (w / ow)).astype(np.int64), w - 1)
    return x[:, ri][:, :, ci]


def mix_init(imgs: np.ndarray, ipc: int, factor: int) -> np.ndarray:
    """IDC 'mix' init: ipc*f^2 real images (N, H, W, C) -> ipc images, each an f x f grid of nearest-
    downsampled real images (grid cell (i, j) of image n holds real image (i*f + j)*ipc + n; the first
    H % f rows/cols of cells are one pixel larger)."""
    n, h, w, c = imgs.shape
    if n != ipc * factor ** 2:
        raise DataError(f"mix init needs ipc*f^2={ipc * factor ** 2} images, got {n}")
    out = np.zeros((ipc, h, w, c), np.float32)
    sh, sw, rh, rw = h // factor, w // factor, h % factor, w % factor
    k, r0 = 0, 0
    for i in range(factor):
        hr = sh + 1 if i < rh else sh
        c0 = 0
        for j in range(factor):
            wr = sw + 1 if j < rw else sw
            out[:, r0:r0 + hr, c0:c0 + wr] = nearest_resize_np(imgs[k * ipc:(k + 1) * ipc], hr, wr)
            c0 += wr
            k += 1
        r0 += hr
    return out


def feature_mean_loss(feat_fn: Callable[[Array], Array], real: Array, syn: Array) -> Array:
    """Inner-class view: || mean_i feat(real)_i - mean_j feat(syn)_j ||^2 (sum over feature dims).
    No gradient flows into the real branch."""
    mu_r = jax.lax.stop_gradient(feat_fn(real).mean(0))
    return jnp.sum((mu_r - feat_fn(syn).mean(0)) ** 2)


def normalise(x: Array, mean: Array, std: Array) -> Array:
    return (x - mean) / std


# ----------------------------------------------------------------------------------------------
# Pretrained pool
# ----------------------------------------------------------------------------------------------

def pool_train_config(cfg: DanceConfig) -> TrainConfig:
    """DANCE pretrain.py: SGD 0.01, momentum 0.9, wd 5e-4, lr x0.2 from epochs 2E//3 and 5E//6 (MultiStepLR per
    epoch), batch 64, per-sample color+crop DSA, CutMix p 0.5."""
    return TrainConfig(epochs=cfg.pretrain_epochs, batch_size=cfg.pretrain_batch, optimizer="sgd",
                       lr=cfg.pretrain_lr, momentum=cfg.pretrain_momentum, weight_decay=cfg.pretrain_wd,
                       schedule="multistep", milestones=tuple(cfg.pretrain_milestones), milestones_in_epochs=True,
                       gamma=cfg.pretrain_gamma,
                       augment="dance_pretrain", cutmix_p=cfg.pretrain_cutmix_p)


def net_config(cfg: DanceConfig, num_classes: int) -> NetConfig:
    return NetConfig(num_classes, width=cfg.width, depth=cfg.depth, norm=cfg.norm)


def _pool_meta(cfg: DanceConfig, data, net_cfg: NetConfig, key: Array, mean, std) -> dict:
    noise = getattr(data, "noise", None)
    # The store adds the network, train config, labels fingerprint and key itself.
    return {"kind": "dance_pool", "dataset": str(getattr(data, "name", "?")),
            "noise": str(getattr(noise, "spec", None)), "pool_size": cfg.pool_size,
            "normalise_mean": [float(v) for v in np.ravel(mean)],
            "normalise_std": [float(v) for v in np.ravel(std)]}


def pretrain_pool(cfg: DanceConfig, data, x_norm: np.ndarray, key: Array, net: Net, *,
                  directory: Optional[str] = None, meta: Optional[dict] = None,
                  progress: bool = True) -> tuple[Any, Any]:
    """Train cfg.pool_size ConvNets at once on the normalised noisy training set.

    Returns (theta_0, theta_T), each stacked with leading axis pool_size. With `directory`, the pool is
    stored (via the shared expert store when available) and reused on the next call after checking that
    it was made for the same data, labels, network and recipe (StoreError otherwise).
    """
    tc = pool_train_config(cfg)
    y = np.asarray(data.y_noisy)
    if directory is None:
        return _train_pool(cfg, x_norm, y, key, net, tc, progress)
    # The shared expert store keeps only epoch 0 (theta_0) and the last epoch (theta_T) of each model,
    # resumes an interrupted pretraining, and raises StoreError if reused for other data/labels/net.
    store = train_experts(net, x_norm, y, tc, cfg.pool_size, key, directory, meta=meta or {},
                          snapshot_epochs=[0, cfg.pretrain_epochs], progress=progress, devices=cfg.devices)
    members = list(range(cfg.pool_size))
    return store.stacked_params(members, 0), store.stacked_params(members, cfg.pretrain_epochs)


def _train_pool(cfg, x_norm, y, key, net, tc, progress):
    """In-memory pool (no workdir): same recipe, nothing stored."""
    k_init, k_train = jax.random.split(key)
    th0 = jax.vmap(lambda k: net.init(k, tuple(x_norm.shape[1:])))(jax.random.split(k_init, cfg.pool_size))
    # train_models donates its state buffers: hand it a copy so theta_0 survives.
    kw = dict(init_params=tmap(jnp.copy, th0), progress="dance pool" if progress else False)
    n_dev = resolve_devices(cfg.devices, "DANCE")
    if n_dev > 1:  # the pool's nets split over the devices (padded to a multiple of them, as the evaluator)
        res = train_models_sharded(net, x_norm, y, tc, k_train, cfg.pool_size, mesh=model_mesh(n_dev), **kw)
    else:
        res = train_models(net, x_norm, y, tc, k_train, cfg.pool_size, **kw)
    return th0, res.params


# ----------------------------------------------------------------------------------------------
# One outer iteration
# ----------------------------------------------------------------------------------------------

class Statics(NamedTuple):
    """Shapes and settings fixed for a run (closed over by the jitted iteration)."""

    num_classes: int
    ipc: int
    factor: int
    n_real: int         # real images per class per iteration
    n_syn: int          # decoded synthetic images per class per step
    num_premodel: int
    iter_calib: int
    batched: bool
    devices: int = 1    # > 1: per-class gradients split across this many devices (sharding.sharded_class_grads)
    # > 0: classes per pass where the iteration would otherwise batch all C classes at once (the real
    # branch's feature forward of C * n_real images, and the batched view's vmapped class losses): the
    # passes run one after another (lax.map), so only class_chunk classes' activations are live at a time.
    # 0: all classes in one pass (fastest on an accelerator). Same maths either way.
    class_chunk: int = 0


def class_buckets_table(y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, max_count) int32 index table (rows padded with their first index) and (C,) counts."""
    buckets = [np.flatnonzero(y == c) for c in range(num_classes)]
    counts = np.array([b.size for b in buckets], np.int32)
    table = np.zeros((num_classes, int(counts.max())), np.int32)
    for c, b in enumerate(buckets):
        table[c, :b.size] = b
        table[c, b.size:] = b[0] if b.size else 0
    return table, counts


def sample_real(key: Array, table: Array, counts: Array, n: int) -> Array:
    """(C, n) indices: per class n distinct random members (uniform without replacement)."""
    c, m = table.shape
    scores = jax.random.uniform(key, (c, m))
    scores = jnp.where(jnp.arange(m)[None, :] < counts[:, None], scores, 2.0)  # padding never chosen
    _, pos = jax.lax.top_k(-scores, n)
    return jnp.take_along_axis(table, pos, axis=1)


def map_classes(fn: Callable, xs: Any, chunk: int) -> Any:
    """`jax.vmap(fn)(xs)` over the leading (class) axis, `chunk` classes at a time (lax.map over the chunks;
    chunk <= 0 or >= C: one vmap). The last chunk is padded with copies of class 0, whose results are dropped."""
    c = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if chunk <= 0 or chunk >= c:
        return jax.vmap(fn)(xs)
    n = -(-c // chunk)
    pad = n * chunk - c

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
        return a.reshape(n, chunk, *a.shape[1:])

    out = jax.lax.map(jax.vmap(fn), tmap(split, xs))
    return tmap(lambda a: a.reshape(n * chunk, *a.shape[2:])[:c], out)


def make_iteration(net: Net, st: Statics, tx: optax.GradientTransformation, *, jit: bool = True) -> Callable:
    """Jitted (pure with jit=False, for a caller that compiles it inside its own program)
    `iteration(syn, opt_state, key, pool0, poolT, x_real, table, counts, mean, std) -> (syn, opt_state, metrics)`.
    syn: (C*ipc, H, W, Ch) pixels."""
    C, ipc, f = st.num_classes, st.ipc, st.factor
    fwd_net = forward_net(net)

    def syn_batch(syn_c, key):
        s = decode_zoom(syn_c, f)
        if s.shape[0] > st.n_syn:  # IDC's sample(c, max_size): random subset of the decoded images
            s = s[jax.random.permutation(key, s.shape[0])[:st.n_syn]]
        return s

    def feats(params, x):
        return net.apply_with_features(params, x)[1]

    def feats_nograd(params, x):
        return fwd_net.apply_with_features(params, x)[1]

    def inner_loss(syn_c, k_aug, k_sub, mu_real, th, mean, std):
        s = dance_condense(k_aug, normalise(syn_batch(syn_c, k_sub), mean, std))
        return jnp.sum((mu_real - feats(th, s).mean(0)) ** 2)

    def calib_loss(syn_c, k_aug, k_sub, c, th, mean, std):
        s = dance_condense(k_aug, normalise(syn_batch(syn_c, k_sub), mean, std))
        logp = jax.nn.log_softmax(net.apply(th, s))
        return -logp[:, c].mean()

    def apply_step(syn, opt_state, g, loss):
        ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(g))
        upd, new_opt = tx.update(g, opt_state, syn)
        new_syn = syn + upd
        # skip non-finite steps: state untouched
        syn = jnp.where(ok, new_syn, syn)
        opt_state = tmap(lambda a, b: jnp.where(ok, a, b), new_opt, opt_state)
        return syn, opt_state, ~ok

    def scan_view(syn, opt_state, loss_c, extra):
        """Exact per-class momentum steps: lax.scan over classes, full-tensor update each."""
        def body(carry, xs):
            syn, opt_state = carry
            c, e = xs
            syn_c = jax.lax.dynamic_slice_in_dim(syn, c * ipc, ipc)
            loss, g_c = jax.value_and_grad(loss_c)(syn_c, c, e)
            g = jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(syn), g_c, c * ipc, 0)
            syn, opt_state, bad = apply_step(syn, opt_state, g, loss)
            return (syn, opt_state), (loss, bad)

        (syn, opt_state), (losses, bad) = jax.lax.scan(body, (syn, opt_state), (jnp.arange(C), extra))
        return syn, opt_state, losses, bad

    def batched_view(syn, opt_state, loss_c, extra):
        """One step on the sum of the class losses (vmap over classes)."""
        if st.class_chunk and st.class_chunk < C:
            # class c's loss depends on its own slice only, so the gradient of the sum is the stack of each
            # class's gradient at its slice: taken class_chunk classes at a time
            vg = lambda sl, c, e: jax.value_and_grad(loss_c)(sl, c, e)  # noqa: E731
            losses, g = map_classes(lambda a: vg(*a), (syn.reshape(C, ipc, *syn.shape[1:]), jnp.arange(C), extra),
                                    st.class_chunk)
            syn, opt_state, bad = apply_step(syn, opt_state, g.reshape(syn.shape), losses.sum())
            return syn, opt_state, losses, bad[None]

        def total(syn):
            per = jax.vmap(loss_c)(syn.reshape(C, ipc, *syn.shape[1:]), jnp.arange(C), extra)
            return per.sum(), per

        (_, losses), g = jax.value_and_grad(total, has_aux=True)(syn)
        syn, opt_state, bad = apply_step(syn, opt_state, g, losses.sum())
        return syn, opt_state, losses, bad[None]

    mesh = None
    if st.devices > 1:
        from jaxdistill.sharding import class_mesh, sharded_class_grads

        mesh = class_mesh(st.devices)

    def class_grads(slices, loss_c, extra):
        """(losses (C,), grads (C, ipc, ...)) of every class's loss at its own slice, classes across devices."""
        return sharded_class_grads(loss_c, (slices, jnp.arange(C), extra), mesh)

    def batched_view_sharded(syn, opt_state, loss_c, extra):
        """batched_view with the class axis across devices: the gradient of the sum of class losses w.r.t.
        the whole tensor is the stack of each class's gradient w.r.t. its own slice."""
        losses, g = class_grads(syn.reshape(C, ipc, *syn.shape[1:]), loss_c, extra)
        syn, opt_state, bad = apply_step(syn, opt_state, g.reshape(syn.shape), losses.sum())
        return syn, opt_state, losses, bad[None]

    def scan_view_sharded(syn, opt_state, loss_c, extra):
        """scan_view's exact per-class momentum steps with the C gradients computed in parallel.

        Step j's gradient is zero outside class j's slice, and the optimiser is elementwise (SGD momentum),
        so class c's slice at step c is where it would be after c zero-gradient steps: a cheap first scan
        (optimiser only) records it, the C gradients are then taken at those slices across devices, and a
        second scan applies the C steps with them. If any step is non-finite, the later classes' slices
        would have differed (that step is skipped), so the iteration falls back to the sequential scan.
        """
        def shift(carry, c):
            s, o = carry
            s_c = jax.lax.dynamic_slice_in_dim(s, c * ipc, ipc)
            upd, o = tx.update(jnp.zeros_like(s), o, s)
            return (s + upd, o), s_c

        _, slices = jax.lax.scan(shift, (syn, opt_state), jnp.arange(C))
        losses, g_all = class_grads(slices, loss_c, extra)

        def body(carry, xs):
            s, o = carry
            c, g_c, loss = xs
            g = jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(s), g_c, c * ipc, 0)
            s, o, bad = apply_step(s, o, g, loss)
            return (s, o), bad

        (new_syn, new_opt), bad = jax.lax.scan(body, (syn, opt_state), (jnp.arange(C), g_all, losses))
        return jax.lax.cond(jnp.any(bad), lambda: scan_view(syn, opt_state, loss_c, extra),
                            lambda: (new_syn, new_opt, losses, bad))

    if mesh is None:
        view = batched_view if st.batched else scan_view
    else:
        view = batched_view_sharded if st.batched else scan_view_sharded

    def iteration(syn, opt_state, key, pool0, poolT, x_real, table, counts, mean, std):
        k_model, k_lam, k_real, k_aug, k_sub, k_cal = jax.random.split(key, 6)
        m = jax.random.randint(k_model, (), 0, st.num_premodel)
        th0 = tmap(lambda a: a[m], pool0)
        thT = tmap(lambda a: a[m], poolT)
        lam = jax.random.uniform(k_lam)
        th_mid = middle_encoder(th0, thT, lam)
        syn = jnp.clip(syn, 0.0, 1.0)

        # Real branch: one batched forward for all classes. The batch-shared augmentation draws its
        # parameters from the key alone, so augmenting R_c and S_c separately with the class's key is
        # the same transform as augmenting concat([R_c, S_c]) once.
        idx = sample_real(k_real, table, counts, st.n_real)           # (C, n_real)
        k_aug_c = jax.random.split(k_aug, C)
        k_sub_c = jax.random.split(k_sub, C)
        if st.class_chunk and st.class_chunk < C:
            mu_real = map_classes(lambda a: feats_nograd(th_mid, dance_condense(a[0], x_real[a[1]])).mean(0),
                                  (k_aug_c, idx), st.class_chunk)
        else:
            real_aug = jax.vmap(dance_condense)(k_aug_c, x_real[idx])       # (C, n_real, H, W, Ch)
            mu_real = feats_nograd(th_mid, real_aug.reshape(-1, *real_aug.shape[2:])).reshape(C, st.n_real, -1).mean(1)
        mu_real = jax.lax.stop_gradient(mu_real)   # (C, F)

        def l_in(syn_c, c, e):
            ka, ks, mu = e
            return inner_loss(syn_c, ka, ks, mu, th_mid, mean, std)

        syn, opt_state, losses_in, bad_in = view(syn, opt_state, l_in, (k_aug_c, k_sub_c, mu_real))

        def l_cal(syn_c, c, e):
            ka, ks = e
            return calib_loss(syn_c, ka, ks, c, thT, mean, std)

        losses_cal, bad_cal = [], []
        for r in range(st.iter_calib):
            kr = jax.random.fold_in(k_cal, r)
            ka, ks = jax.random.split(kr)
            syn, opt_state, lc, bc = view(syn, opt_state, l_cal, (jax.random.split(ka, C), jax.random.split(ks, C)))
            losses_cal.append(lc)
            bad_cal.append(bc)
        loss_cal = jnp.mean(jnp.stack(losses_cal)) if losses_cal else jnp.float32(0.0)
        n_bad = bad_in.sum() + (sum(b.sum() for b in bad_cal) if bad_cal else 0)
        metrics = {"loss_inner": jnp.mean(losses_in), "loss_calib": loss_cal,
                   "skipped": n_bad.astype(jnp.int32), "model": m, "lam": lam}
        return syn, opt_state, metrics

    # XLA:CPU's YNNPACK reductions are slow for this program (xla_options.py); options go on the top-level
    # jit only (jax refuses them on a nested one), so the chunk program takes the pure function
    return jax.jit(iteration, compiler_options=compiler_options("dance")) if jit else iteration


@functools.lru_cache(maxsize=8)
def _cached_iteration(ncfg: NetConfig, st: Statics, lr: float, mom: float) -> Callable:
    # One compiled iteration per (network, shapes, optimiser): a resumed or repeated run reuses it.
    return make_iteration(make_net(ncfg), st, optax.sgd(lr, momentum=mom))


def iteration_body(step: Callable) -> Callable:
    """The loop body for `methods.loop`: carry (syn, opt_state), consts (k_loop, args of `step`)."""

    def body(carry, it, _, consts):
        k_loop, args = consts
        syn, opt_state, m = step(carry[0], carry[1], jax.random.fold_in(k_loop, it), *args)
        return (syn, opt_state), {**m, "finite": m["skipped"] == 0}

    return body


@functools.lru_cache(maxsize=8)
def _cached_chunk(ncfg: NetConfig, st: Statics, lr: float, mom: float) -> Callable:
    # One compiled chunk program per setting, so a second run with the same shapes compiles nothing.
    step = make_iteration(make_net(ncfg), st, optax.sgd(lr, momentum=mom), jit=False)
    return compile_chunk(iteration_body(step), compiler_options("dance"))


# ----------------------------------------------------------------------------------------------
# distill()
# ----------------------------------------------------------------------------------------------

def initial_synset(x: np.ndarray, y: np.ndarray, num_classes: int, ipc: int, factor: int) -> np.ndarray:
    """(C*ipc, H, W, Ch) pixels: f=1 'random' = the first ipc images of each (noisy) class in dataset order;
    f>1 'mix' = the first ipc*f^2 images, nearest-downsampled into the f x f grid."""
    out = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)[: ipc * factor ** 2]
        imgs = np.asarray(x[members], np.float32)
        out.append(imgs if factor == 1 else mix_init(imgs, ipc, factor))
    return np.concatenate(out).astype(np.float32)


def decoded_set(syn: np.ndarray, num_classes: int, ipc: int, factor: int, mean, std) -> tuple:
    """Encoded synthetic state (C*ipc, H, W, Ch) pixels -> (images (C*ipc*f^2, H, W, Ch) normalised,
    grouped by class with the crop order kept, labels (C*ipc*f^2,))."""
    decoded = np.asarray(decode_zoom(jnp.asarray(syn), factor))   # crop-major within the whole set
    labels = np.tile(np.repeat(np.arange(num_classes), ipc), factor * factor)
    order = np.argsort(labels, kind="stable")
    return (decoded[order] - mean) / std, labels[order]


def _meanstd(cfg: DanceConfig, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ch = x.shape[-1]
    if cfg.mean is not None:
        mean, std = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
        if mean.shape != (ch,) or std.shape != (ch,):
            raise ConfigError(f"DANCE mean={cfg.mean} / std={cfg.std} must have {ch} entries (image channels)")
        return mean, std
    return (x.mean((0, 1, 2)).astype(np.float32), x.std((0, 1, 2)).astype(np.float32))


def _preprocessor_dict(mean: np.ndarray, std: np.ndarray, shape: tuple) -> dict:
    from jaxdistill.preprocess import Preprocessor

    return Preprocessor(kind="meanstd", shape=tuple(int(s) for s in shape), mean=mean, std=std).to_dict()


def distill(config: DanceConfig, data, key: Array, *, workdir: Optional[str] = None,
            progress: bool = True) -> DistilledSet:
    """Run DANCE on `data` (NoisyData: x_train [0,1] NHWC, y_noisy) -> DistilledSet of decoded,
    normalised images (ipc * factor^2 per class), hard labels and the meanstd preprocessor.

    workdir: pool store (`workdir/pool`), orbax checkpoints every config.checkpoint_every iterations and on
    SIGTERM/SIGINT (`workdir/ckpt`), `distilled.npz` and `synset_encoded.npz` at the end. Calling again
    with the same workdir and key resumes and gives the same set as an uninterrupted run.
    """
    if not isinstance(config, DanceConfig):
        raise ConfigError(f"config must be a DanceConfig, got {type(config).__name__}")
    t_start = time.perf_counter()
    x = np.asarray(data.x_train, np.float32)
    y = np.asarray(data.y_noisy).astype(np.int32)
    C = int(data.num_classes)
    if x.ndim != 4 or x.shape[0] != y.shape[0]:
        raise DataError(f"x_train {x.shape} / y_noisy {y.shape} must be (N,H,W,C) / (N,)")
    f, ipc = config.factor, config.ipc
    from jaxdistill.data import check_ipc  # the one IPC check (DataError naming the short classes)

    check_ipc(y, C, ipc * f ** 2)
    mean, std = _meanstd(config, x)
    x_norm = (x - mean) / std
    ncfg = net_config(config, C)
    net = make_net(ncfg)
    k_pool, k_loop = jax.random.split(key)

    meta = _pool_meta(config, data, ncfg, k_pool, mean, std)
    pool_dir = os.path.join(workdir, "pool") if workdir else None
    pool0, poolT = pretrain_pool(config, data, x_norm, k_pool, net, directory=pool_dir, meta=meta,
                                 progress=progress)
    pool0 = tmap(lambda a: a[: config.num_premodel], pool0)
    poolT = tmap(lambda a: a[: config.num_premodel], poolT)

    table, counts = class_buckets_table(y, C)
    st = Statics(num_classes=C, ipc=ipc, factor=f, n_real=int(min(config.batch_real, counts.min())),
                 n_syn=int(min(config.batch_syn_max, ipc * f * f)), num_premodel=config.num_premodel,
                 iter_calib=config.iter_calib, batched=config.batched_classes,
                 devices=resolve_devices(config.devices, "DANCE"), class_chunk=config.class_chunk)
    tx = optax.sgd(config.image_lr, momentum=config.mom_img)
    syn = jnp.asarray(initial_synset(x, y, C, ipc, f))
    opt_state = tx.init(syn)
    opt_def = jax.tree_util.tree_structure(opt_state)
    args = (pool0, poolT, jnp.asarray(x_norm), jnp.asarray(table), jnp.asarray(counts),
            jnp.asarray(mean), jnp.asarray(std))

    start, skipped, ckpt = 0, 0, None
    if workdir:
        from jaxdistill.checkpoint import Checkpointer

        ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=2)
        template = {"syn": syn, "opt": jax.tree_util.tree_leaves(opt_state), "skipped": np.int64(0)}
        step, tree = ckpt.restore_latest(template)
        if step is not None:
            start, skipped = int(step), int(tree["skipped"])
            syn = jnp.asarray(tree["syn"])
            opt_state = jax.tree_util.tree_unflatten(opt_def, [jnp.asarray(a) for a in tree["opt"]])

    def save(carry, it):
        if ckpt is not None:
            ckpt.save(it, {"syn": carry[0], "opt": jax.tree_util.tree_leaves(carry[1]),
                           "skipped": np.int64(skipped)})

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=start, desc=f"dance {data.name} ipc{ipc}", unit="it",
                   dynamic_ncols=True)
    history = {"loss_inner": [], "loss_calib": []}
    last = {}

    def on_chunk(its, m, carry):
        nonlocal skipped, last
        skipped += int(np.sum(m["skipped"]))
        history["loss_inner"].extend(np.asarray(m["loss_inner"], float).tolist())
        history["loss_calib"].extend(np.asarray(m["loss_calib"], float).tolist())
        last = {k: np.asarray(v)[-1] for k, v in m.items()}

    log = MetricsLog(workdir, "distill_dance")
    try:
        # DANCE's loss is the inner (matching) loss; the calibration loss is a separate term.
        res = run_loop("DANCE", _cached_chunk(ncfg, st, config.image_lr, config.mom_img), (syn, opt_state),
                       start=start, iterations=config.iterations, checkpoint_every=config.checkpoint_every,
                       max_nonfinite=config.max_nonfinite,
                       chunk=auto_chunk(config.checkpoint_every, config.iterations, config.chunk_iters),
                       consts=(k_loop, args), on_chunk=on_chunk, save=save if ckpt is not None else None,
                       log_row=lambda it, r: {"loss": float(r["loss_inner"]), "loss_calib": float(r["loss_calib"]),
                                              "lr": config.image_lr},
                       metrics_log=log, bar=bar,
                       postfix=lambda r: {"inner": f"{float(r['loss_inner']):.4g}",
                                          "calib": f"{float(r['loss_calib']):.3f}"},
                       nonfinite_hint="Lower image_lr or check the data and the pool for NaNs")
    finally:
        log.close()
        if bar is not None:
            bar.close()
    syn, opt_state = res.carry

    syn_np = to_host(syn)  # gathered: the class-split step may leave syn spread over processes
    images, labels_out = decoded_set(syn_np, C, ipc, f, mean, std)
    meta_out = {
        "config": config.to_dict(), "iterations": config.iterations, "resumed_from": start,
        "final_loss": {k: (float(last[k]) if k in last else None) for k in ("loss_inner", "loss_calib")},
        "wall_time_s": time.perf_counter() - t_start, "skipped_updates": skipped,
        "factor": f, "encoded_shape": list(syn_np.shape), "mean": mean.tolist(), "std": std.tolist(),
        "space": "meanstd-normalised pixels; DistilledSet.to_pixels() maps back to [0,1]",
        "net": dataclasses.asdict(ncfg), "devices_used": st.devices,
    }
    pre_dict = _preprocessor_dict(mean, std, x.shape[1:])
    out = DistilledSet(images=images, labels=labels_out, method="dance", target_kind="hard",
                       preprocessor=pre_dict, meta=meta_out)
    out.initial = DistilledSet(*decoded_set(initial_synset(x, y, C, ipc, f), C, ipc, f, mean, std), method="dance",
                               target_kind="hard", preprocessor=pre_dict, meta={"initial_of": "dance"})
    if workdir:
        from jaxdistill.checkpoint import atomic_save_npz

        save((syn, opt_state), config.iterations)
        atomic_save_npz(os.path.join(workdir, "synset_encoded.npz"), syn=syn_np,
                        labels=np.repeat(np.arange(C), ipc))
        out.save(os.path.join(workdir, "distilled.npz"))
        ckpt.close()
    return out


register("dance", get_config)(distill)

__all__ = ["DanceConfig", "get_config", "distill", "middle_encoder", "decode_zoom", "mix_init",
           "feature_mean_loss", "pretrain_pool", "pool_train_config", "make_iteration", "initial_synset",
           "sample_real", "class_buckets_table", "Statics"]
