"""Differentiable Siamese augmentation (DSA) for every method, on NHWC float batches.

One module serves MTT/DATM (one op group per call, per-sample parameters), DANCE (IDC's ``DiffAug``:
color/flip/cutout always, one of the rest, optionally one draw shared by the batch), DANCE's and
RCIG's evaluation augmentations, and CutMix.

Layers:
  * deterministic ops that take explicit per-sample parameters (``apply_*``, ``affine_grid``,
    ``grid_sample``); tests check these against NumPy;
  * random groups ``rand_<group>(key, x, params, shared)`` that draw the parameters and call the ops;
  * pipelines ``dsa``, ``dance_condense``, ``dance_eval``, ``rcig_eval``, ``cutmix`` and the registry
    ``get_augment``.

Every function is pure, jit-able and vmap-able, and differentiable with respect to ``x`` (DATM and
DANCE backpropagate into the synthetic images through it). Random parameters are constants with
respect to ``x``; no gradient flows into them.

Index conventions (NHWC; "row" = H axis, "col" = W axis):
  * translation ``apply_translate(x, tr, tc)``: ``out[n, i, j] = x[n, i + tr[n], j + tc[n]]`` when that
    index is inside the image, else 0 (the DSA code pads one zero pixel and gathers clamped indices,
    which is the same thing). So a positive shift moves content up/left.
  * cutout ``apply_cutout(x, cr, cc, size_h, size_w)``: ``cr``/``cc`` is the square's centre offset,
    drawn from ``randint[0, H + (1 - size_h % 2))``; the zeroed rows are the clamped indices
    ``clip(cr - size_h//2 + k, 0, H-1)`` for ``k in range(size_h)``, i.e. rows
    ``[max(0, cr - size_h//2), min(H-1, cr - size_h//2 + size_h - 1)]`` (same for columns). For H = 32
    the size is 16 and the square covers rows ``cr-8 .. cr+7``.
  * affine ops follow PyTorch ``affine_grid``/``grid_sample``: ``theta`` maps normalised output
    coordinates (x = width, y = height, in [-1, 1]) to normalised input coordinates; bilinear, zero
    padding; ``align_corners=True`` for MTT/DATM (-1/+1 are the centres of the corner pixels),
    ``False`` for DANCE's IDC code (-1/+1 are the outer edges).
  * rotation by ``t`` uses ``[[cos t, -sin t, 0], [sin t, cos t, 0]]``; with align_corners=True and
    a square image, ``t = +90 deg`` is exactly ``np.rot90(img, k=1)`` (counter-clockwise).

Note for callers: under ``vmap`` with a *batched* key, ``lax.switch`` lowers to a select that evaluates
every branch; prefer one key per call (unbatched) inside hot loops.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxdistill.errors import ConfigError, DataError

Array = jax.Array
AugmentFn = Callable[[Array, Array], Array]

GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
MODES = ("one", "all")


@dataclasses.dataclass(frozen=True)
class DSAParams:
    """Magnitudes of DSA (MTT's ``ParamDiffAug``; IDC/DANCE uses the same numbers).

    ``align_corners`` selects the affine sampler convention: True for MTT/DATM, False for DANCE/IDC.
    ``ratio_noise`` is carried for completeness; no op uses it (as in the original code).
    """

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    ratio_noise: float = 0.05
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    align_corners: bool = True


def _check_nhwc(x: Array, where: str) -> None:
    if x.ndim != 4:
        raise DataError(f"{where}: expected an NHWC batch (4 dims), got shape {tuple(x.shape)}")


def _bcast(v: Array) -> Array:
    """(N,) -> (N, 1, 1, 1) so per-sample scalars broadcast over NHWC."""
    return jnp.asarray(v).reshape(-1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------
# Deterministic ops with explicit parameters
# ----------------------------------------------------------------------------------------------

def apply_brightness(x: Array, delta: Array) -> Array:
    """x + delta[n]; delta (N,). DSA draws delta = (u - 0.5) * brightness."""
    return x + _bcast(delta).astype(x.dtype)


def apply_saturation(x: Array, factor: Array) -> Array:
    """(x - m) * factor[n] + m with m the per-pixel mean over channels; identity for C == 1."""
    if x.shape[-1] == 1:  # channel mean equals the pixel: the op is exactly the identity
        return x
    m = jnp.mean(x, axis=-1, keepdims=True)
    return (x - m) * _bcast(factor).astype(x.dtype) + m


def apply_contrast(x: Array, factor: Array) -> Array:
    """(x - m) * factor[n] + m with m the per-sample mean over (H, W, C)."""
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * _bcast(factor).astype(x.dtype) + m


def apply_flip(x: Array, do_flip: Array) -> Array:
    """Horizontal (width) flip of the samples where do_flip[n] is True; do_flip (N,) bool."""
    return jnp.where(_bcast(do_flip), x[:, :, ::-1, :], x)


def apply_translate(x: Array, tr: Array, tc: Array) -> Array:
    """out[n,i,j] = x[n, i+tr[n], j+tc[n]] inside the image, else 0. tr, tc (N,) int."""
    n, h, w, _ = x.shape
    rows = jnp.arange(h)[None, :] + jnp.asarray(tr).reshape(-1, 1)  # (N, H)
    cols = jnp.arange(w)[None, :] + jnp.asarray(tc).reshape(-1, 1)  # (N, W)
    valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
    rows = jnp.clip(rows, 0, h - 1)
    cols = jnp.clip(cols, 0, w - 1)
    # Two separable gathers (rows, then columns) are cheaper than one 2-D gather.
    out = jnp.take_along_axis(x, rows[:, :, None, None], axis=1)
    out = jnp.take_along_axis(out, cols[:, None, :, None], axis=2)
    return out * valid[..., None].astype(x.dtype)


def cutout_mask(h: int, w: int, cr: Array, cc: Array, size_h: int, size_w: int) -> Array:
    """(N, H, W) float mask: 0 inside the clamped cutout square, 1 elsewhere (see module doc)."""
    cr = jnp.asarray(cr).reshape(-1, 1)
    cc = jnp.asarray(cc).reshape(-1, 1)
    r0 = jnp.clip(cr - size_h // 2, 0, h - 1)
    r1 = jnp.clip(cr - size_h // 2 + size_h - 1, 0, h - 1)
    c0 = jnp.clip(cc - size_w // 2, 0, w - 1)
    c1 = jnp.clip(cc - size_w // 2 + size_w - 1, 0, w - 1)
    ri = jnp.arange(h)[None, :]
    ci = jnp.arange(w)[None, :]
    in_r = (ri >= r0) & (ri <= r1)  # (N, H)
    in_c = (ci >= c0) & (ci <= c1)  # (N, W)
    return 1.0 - (in_r[:, :, None] & in_c[:, None, :]).astype(jnp.float32)


def apply_cutout(x: Array, cr: Array, cc: Array, size_h: int, size_w: int) -> Array:
    """Zero a size_h x size_w square centred at (cr[n], cc[n]), clamped to the image."""
    n, h, w, _ = x.shape
    mask = cutout_mask(h, w, cr, cc, size_h, size_w)
    return x * mask[..., None].astype(x.dtype)


def affine_grid(theta: Array, h: int, w: int, align_corners: bool = True) -> Array:
    """PyTorch-style affine grid: theta (N, 2, 3) -> (N, H, W, 2) normalised input coords (x, y)."""
    def base(size: int) -> Array:
        lin = jnp.linspace(-1.0, 1.0, size) if size > 1 else jnp.zeros((1,))
        # align_corners=False: pixel centres sit at (2k+1)/size - 1.
        return lin if align_corners else lin * (size - 1) / size
    bx = base(w)[None, :]                         # (1, W)
    by = base(h)[:, None]                         # (H, 1)
    theta = jnp.asarray(theta, jnp.float32)
    t = theta[:, :, :, None, None]                # (N, 2, 3, 1, 1)
    gx = t[:, 0, 0] * bx + t[:, 0, 1] * by + t[:, 0, 2]   # (N, H, W)
    gy = t[:, 1, 0] * bx + t[:, 1, 1] * by + t[:, 1, 2]
    return jnp.stack([gx, gy], axis=-1)


SAMPLERS = ("taps", "window")


def _pixel_coords(grid: Array, h: int, w: int, align_corners: bool) -> tuple[Array, Array]:
    """Normalised grid (x, y) -> pixel coordinates (px, py); constants w.r.t. x."""
    gx, gy = grid[..., 0], grid[..., 1]
    if align_corners:
        px, py = (gx + 1.0) * 0.5 * (w - 1), (gy + 1.0) * 0.5 * (h - 1)
    else:
        px, py = ((gx + 1.0) * w - 1.0) * 0.5, ((gy + 1.0) * h - 1.0) * 0.5
    # Sampling positions are random constants, not learned: no gradient into them.
    return lax.stop_gradient(px), lax.stop_gradient(py)


def _sample_taps(x: Array, px: Array, py: Array) -> Array:
    """Four flat gathers, one per bilinear tap; each tap outside the image contributes 0."""
    n, h, w, c = x.shape
    _, ho, wo = px.shape
    x0f, y0f = jnp.floor(px), jnp.floor(py)
    wx1, wy1 = px - x0f, py - y0f
    x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
    flat = x.reshape(n, h * w, c)

    def tap(iy: Array, ix: Array, wt: Array) -> Array:
        valid = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        idx = jnp.clip(iy, 0, h - 1) * w + jnp.clip(ix, 0, w - 1)        # (N, Ho, Wo)
        v = jnp.take_along_axis(flat, idx.reshape(n, ho * wo, 1), axis=1)  # (N, Ho*Wo, C)
        wt = jnp.where(valid, wt, 0.0).astype(x.dtype)
        return v.reshape(n, ho, wo, c) * wt[..., None]

    return (tap(y0, x0, (1 - wy1) * (1 - wx1)) + tap(y0, x0 + 1, (1 - wy1) * wx1)
            + tap(y0 + 1, x0, wy1 * (1 - wx1)) + tap(y0 + 1, x0 + 1, wy1 * wx1))


def _sample_window(x: Array, px: Array, py: Array) -> Array:
    """One gather of the 2x2 neighbourhood from a 1-pixel zero-padded image; the pad supplies the
    zero padding for taps one pixel outside, windows further out are masked. Its gradient is one
    window scatter-add instead of four scatters (about 2-6x faster backward on CPU)."""
    n, h, w, c = x.shape
    x0f, y0f = jnp.floor(px), jnp.floor(py)
    wx1, wy1 = px - x0f, py - y0f
    x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
    valid = (x0 >= -1) & (x0 <= w - 1) & (y0 >= -1) & (y0 <= h - 1)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows, cols = jnp.clip(y0 + 1, 0, h), jnp.clip(x0 + 1, 0, w)  # window start in padded coords
    bidx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None, None], rows.shape)
    dn = lax.GatherDimensionNumbers(offset_dims=(3, 4, 5), collapsed_slice_dims=(0,), start_index_map=(0, 1, 2))
    win = lax.gather(xp, jnp.stack([bidx, rows, cols], -1), dn, slice_sizes=(1, 2, 2, c),
                     mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)          # (N, Ho, Wo, 2, 2, C)
    wy = jnp.stack([1 - wy1, wy1], -1)
    wx = jnp.stack([1 - wx1, wx1], -1)
    wt = (wy[..., :, None] * wx[..., None, :]) * valid[..., None, None]  # (N, Ho, Wo, 2, 2)
    return jnp.einsum("nijab,nijabc->nijc", wt.astype(x.dtype), win)


def grid_sample(x: Array, grid: Array, align_corners: bool = True, impl: str = "window") -> Array:
    """Bilinear sampling with zero padding (PyTorch ``grid_sample`` semantics), NHWC.

    x (N, H, W, C); grid (N, Ho, Wo, 2) with grid[..., 0] the width coordinate and grid[..., 1] the
    height coordinate, both normalised to [-1, 1]. Returns (N, Ho, Wo, C). Differentiable in x
    (the gradient is the scatter-add of the bilinear weights). impl: 'window' (one 2x2-window
    gather) or 'taps' (four gathers); same numbers.
    """
    n, h, w, c = x.shape
    px, py = _pixel_coords(grid, h, w, align_corners)
    if impl == "window":
        return _sample_window(x, px, py)
    if impl == "taps":
        return _sample_taps(x, px, py)
    raise ConfigError(f"grid_sample impl={impl!r} is not one of {list(SAMPLERS)}")


def apply_affine(x: Array, theta: Array, align_corners: bool = True) -> Array:
    """Warp x (N,H,W,C) by per-sample affine theta (N, 2, 3) (bilinear, zero padding)."""
    _, h, w, _ = x.shape
    return grid_sample(x, affine_grid(theta, h, w, align_corners), align_corners)


def scale_theta(sx: Array, sy: Array) -> Array:
    """(N,) scale factors -> (N, 2, 3) theta [[sx, 0, 0], [0, sy, 0]]."""
    sx = jnp.asarray(sx, jnp.float32)
    z = jnp.zeros_like(sx)
    return jnp.stack([jnp.stack([sx, z, z], -1), jnp.stack([z, jnp.asarray(sy, jnp.float32), z], -1)], -2)


def rotate_theta(angle: Array) -> Array:
    """(N,) angles in radians -> (N, 2, 3) theta [[cos, -sin, 0], [sin, cos, 0]]."""
    angle = jnp.asarray(angle, jnp.float32)
    c, s, z = jnp.cos(angle), jnp.sin(angle), jnp.zeros_like(angle)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1)], -2)


def apply_scale(x: Array, sx: Array, sy: Array, align_corners: bool = True) -> Array:
    """Per-sample scaling of the sampling grid by (sx, sy) (sx > 1 zooms out)."""
    return apply_affine(x, scale_theta(sx, sy), align_corners)


def apply_rotate(x: Array, angle: Array, align_corners: bool = True) -> Array:
    """Per-sample rotation by angle (radians); +pi/2 on a square image = np.rot90(k=1)."""
    return apply_affine(x, rotate_theta(angle), align_corners)


# ----------------------------------------------------------------------------------------------
# Random groups: draw parameters (per sample, or one draw broadcast to the batch) and apply
# ----------------------------------------------------------------------------------------------

def _uniform(key: Array, n: int, shared: bool, lo: float = 0.0, hi: float = 1.0) -> Array:
    u = jax.random.uniform(key, (1 if shared else n,), jnp.float32, lo, hi)
    return jnp.broadcast_to(u, (n,))


def _randint(key: Array, n: int, shared: bool, lo: int, hi: int) -> Array:
    """Integers in [lo, hi) per sample (or one shared)."""
    r = jax.random.randint(key, (1 if shared else n,), lo, hi)
    return jnp.broadcast_to(r, (n,))


def crop_shift(size: int, ratio: float) -> int:
    """Maximum integer translation int(size * ratio + 0.5) (4 for 32, 8 for 64)."""
    return int(size * ratio + 0.5)


def cutout_size(size: int, ratio: float) -> int:
    """Cutout side int(size * ratio + 0.5) (16 for 32)."""
    return int(size * ratio + 0.5)


def rand_color(key: Array, x: Array, params: DSAParams = DSAParams(), shared: bool = False) -> Array:
    """brightness, then saturation, then contrast, each with its own uniform draw."""
    n = x.shape[0]
    kb, ks, kc = jax.random.split(key, 3)
    x = apply_brightness(x, (_uniform(kb, n, shared) - 0.5) * params.brightness)
    x = apply_saturation(x, _uniform(ks, n, shared) * params.saturation)
    return apply_contrast(x, _uniform(kc, n, shared) + params.contrast)


def rand_crop(key: Array, x: Array, params: DSAParams = DSAParams(), shared: bool = False) -> Array:
    """Integer translation in [-shift, shift] per axis with zero fill."""
    n, h, w, _ = x.shape
    sh, sw = crop_shift(h, params.ratio_crop_pad), crop_shift(w, params.ratio_crop_pad)
    kr, kc = jax.random.split(key)
    return apply_translate(x, _randint(kr, n, shared, -sh, sh + 1), _randint(kc, n, shared, -sw, sw + 1))


def rand_cutout(key: Array, x: Array, params: DSAParams = DSAParams(), shared: bool = False) -> Array:
    """Zero one square of side int(H * ratio_cutout + 0.5) at a random (clamped) centre."""
    n, h, w, _ = x.shape
    szh, szw = cutout_size(h, params.ratio_cutout), cutout_size(w, params.ratio_cutout)
    kr, kc = jax.random.split(key)
    cr = _randint(kr, n, shared, 0, h + (1 - szh % 2))
    cc = _randint(kc, n, shared, 0, w + (1 - szw % 2))
    return apply_cutout(x, cr, cc, szh, szw)


def rand_flip(key: Array, x: Array, params: DSAParams = DSAParams(), shared: bool = False) -> Array:
    """Horizontal flip with probability prob_flip."""
    return apply_flip(x, _uniform(key, x.shape[0], shared) < params.prob_flip)


def rand_scale(key: Array, x: Array, params: DSAParams = DSAParams(), shared: bool = False) -> Array:
    """sx, sy ~ U[1/ratio_scale, ratio_scale] independently."""
    n = x.shape[0]
    r = params.ratio_scale
    kx, ky = jax.random.split(key)
    sx = _uniform(kx, n, shared, 1.0 / r, r)
    sy = _uniform(ky, n, shared, 1.0 / r, r)
    return apply_scale(x, sx, sy, params.align_corners)


def rand_rotate(key: Array, x: Array, params: DSAParams = DSAParams(), shared: bool = False) -> Array:
    """angle ~ U[-ratio_rotate, ratio_rotate] degrees."""
    deg = params.ratio_rotate
    ang = _uniform(key, x.shape[0], shared, -deg, deg) * (math.pi / 180.0)
    return apply_rotate(x, ang, params.align_corners)


GROUP_FNS: dict[str, Callable[..., Array]] = {
    "color": rand_color, "crop": rand_crop, "cutout": rand_cutout,
    "flip": rand_flip, "scale": rand_scale, "rotate": rand_rotate,
}


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """'color_crop_cutout' -> ('color', 'crop', 'cutout'); unknown groups raise ConfigError."""
    if not isinstance(strategy, str) or not strategy.strip():
        raise ConfigError(f"DSA strategy {strategy!r} is empty; use '_'-joined groups from {list(GROUPS)}")
    groups = tuple(strategy.lower().split("_"))
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ConfigError(f"DSA strategy {strategy!r} has unknown groups {bad}; allowed groups are {list(GROUPS)}")
    return groups


def _check_params(params: DSAParams) -> None:
    if not isinstance(params, DSAParams):
        raise ConfigError(f"params={params!r} must be a DSAParams")


# ----------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------

def dsa_group_index(key: Array, strategy: str = DEFAULT_STRATEGY) -> Array:
    """The group index (into ``parse_strategy(strategy)``) that ``dsa(key, ..., mode='one')`` applies."""
    groups = parse_strategy(strategy)
    k_choice, _ = jax.random.split(key)
    return jax.random.randint(k_choice, (), 0, len(groups))


def dsa(key: Array, x: Array, strategy: str = DEFAULT_STRATEGY, mode: str = "one",
        params: DSAParams = DSAParams(), batch_shared: bool = False) -> Array:
    """DSA on x (N, H, W, C) -> same shape.

    mode 'one' (MTT/DATM): one group drawn uniformly per call (``lax.switch``), applied to the whole
    batch with per-sample parameters. mode 'all': every group of the strategy, in order, with its own key.
    batch_shared=True draws one parameter set for the whole batch (Siamese augmentation).
    Key layout: ``k_choice, k_op = split(key)``; mode 'all' splits k_op once per group.
    """
    _check_nhwc(x, "dsa")
    _check_params(params)
    groups = parse_strategy(strategy)
    if mode not in MODES:
        raise ConfigError(f"DSA mode={mode!r} is not one of {list(MODES)}")
    k_choice, k_op = jax.random.split(key)
    if mode == "all":
        for g, k in zip(groups, jax.random.split(k_op, len(groups))):
            x = GROUP_FNS[g](k, x, params, batch_shared)
        return x
    if len(groups) == 1:
        return GROUP_FNS[groups[0]](k_op, x, params, batch_shared)
    idx = jax.random.randint(k_choice, (), 0, len(groups))
    branches = [lambda k, v, f=GROUP_FNS[g]: f(k, v, params, batch_shared) for g in groups]
    return lax.switch(idx, branches, k_op, x)


def idc_augment(key: Array, x: Array, strategy: str, params: DSAParams = DSAParams(align_corners=False),
                batch_shared: bool = False) -> Array:
    """IDC/DANCE ``DiffAug`` semantics: flip, color (if listed) always, then ONE of the remaining groups
    (one index per call, per-sample or shared params), then cutout (if listed) always.

    Key layout: ``k_flip, k_color, k_choice, k_op, k_cut = split(key, 5)``.
    """
    _check_nhwc(x, "idc_augment")
    _check_params(params)
    groups = parse_strategy(strategy)
    rest = [g for g in groups if g not in ("flip", "color", "cutout")]
    k_flip, k_color, k_choice, k_op, k_cut = jax.random.split(key, 5)
    if "flip" in groups:
        x = rand_flip(k_flip, x, params, batch_shared)
    if "color" in groups:
        x = rand_color(k_color, x, params, batch_shared)
    if len(rest) == 1:
        x = GROUP_FNS[rest[0]](k_op, x, params, batch_shared)
    elif len(rest) > 1:
        idx = jax.random.randint(k_choice, (), 0, len(rest))
        branches = [lambda k, v, f=GROUP_FNS[g]: f(k, v, params, batch_shared) for g in rest]
        x = lax.switch(idx, branches, k_op, x)
    if "cutout" in groups:
        x = rand_cutout(k_cut, x, params, batch_shared)
    return x


def dance_condense(key: Array, x: Array) -> Array:
    """DANCE condensation: batch-shared ``color_crop_cutout`` (color, crop, cutout; one draw per call).

    Apply it ONCE to concat([real, synthetic]) so both views get the same transform.
    """
    return idc_augment(key, x, "color_crop_cutout", DSAParams(align_corners=False), batch_shared=True)


def dance_pretrain(key: Array, x: Array) -> Array:
    """DANCE pool pretraining: per-sample ``color_crop`` (color always, then crop)."""
    return idc_augment(key, x, "color_crop", DSAParams(align_corners=False), batch_shared=False)


def dance_eval(key: Array, x: Array) -> Array:
    """DANCE evaluation: per-sample flip + color always, then one of crop/scale/rotate per call
    (IDC sampler, align_corners=False). CutMix is separate (``cutmix``)."""
    return idc_augment(key, x, "color_crop_flip_scale_rotate", DSAParams(align_corners=False), batch_shared=False)


RCIG_OPS = ("flip", "color", "crop", "rotate", "translate", "cutout")
RCIG_EVAL_STRATEGY = "flip_color_crop_rotate_translate_cutout"
RCIG_EVAL_STRATEGY_GRAY = "crop_rotate_translate_cutout"  # MNIST / Fashion-MNIST (no flip, no colour)


def _rcig_op(name: str, key: Array, x: Array) -> Array:
    """One RCIG eval op on the whole batch with per-sample params (approximating augmax's ops)."""
    n, h, w, _ = x.shape
    if name == "flip":  # HorizontalFlip(p=0.5)
        return apply_flip(x, _uniform(key, n, False) < 0.5)
    if name == "color":  # NormalizedColorJitter(0.25, 0.25, 0.25) on normalised (ZCA) images
        kb, kc, ks = jax.random.split(key, 3)
        x = apply_brightness(x, _uniform(kb, n, False, -0.25, 0.25))
        x = apply_contrast(x, _uniform(kc, n, False, 0.75, 1.25))
        return apply_saturation(x, _uniform(ks, n, False, 0.75, 1.25))
    if name == "crop":  # RandomSizedCrop zoom in (0.8, 1.25): isotropic zoom z (log-uniform) about a
        kz, kx, ky = jax.random.split(key, 3)  # random centre that keeps the crop inside the image
        z = jnp.exp(_uniform(kz, n, False, math.log(0.8), math.log(1.25)))
        s = 1.0 / z  # grid scale: z > 1 zooms in
        room = jnp.maximum(1.0 - s, 0.0)
        tx = _uniform(kx, n, False, -1.0, 1.0) * room
        ty = _uniform(ky, n, False, -1.0, 1.0) * room
        zero = jnp.zeros_like(s)
        theta = jnp.stack([jnp.stack([s, zero, tx], -1), jnp.stack([zero, s, ty], -1)], -2)
        return apply_affine(x, theta, True)
    if name == "translate":  # RandomTranslate(0.125): integer shift, zero fill
        return rand_crop(key, x, DSAParams(ratio_crop_pad=0.125))
    if name == "rotate":  # Rotate(+-15 deg)
        return rand_rotate(key, x, DSAParams(ratio_rotate=15.0, align_corners=True))
    if name == "cutout":  # Cutout(1 hole of side H/4)
        szh, szw = max(h // 4, 1), max(w // 4, 1)
        kr, kc = jax.random.split(key)
        cr = _randint(kr, n, False, 0, h)
        cc = _randint(kc, n, False, 0, w)
        return apply_cutout(x, cr, cc, szh, szw)
    raise ConfigError(f"RCIG eval op {name!r} is not one of {list(RCIG_OPS)}")


def rcig_eval(key: Array, x: Array, strategy: str = RCIG_EVAL_STRATEGY) -> Array:
    """RCIG evaluation augmentation: per IMAGE one op drawn uniformly from the strategy.

    An approximation of RCIG's augmax chain ``flip_color_crop_rotate_translate_cutout`` (not a port):
    flip p=0.5; colour jitter = brightness +U[-.25,.25], contrast x U[.75,1.25], saturation
    x U[.75,1.25]; crop = isotropic zoom log-U[0.8, 1.25] about a random centre (bilinear);
    translate = integer shift up to int(0.125 H + 0.5), zero fill; rotate U[-15, 15] deg; cutout one
    zero square of side H//4 at a uniform centre. Every op runs on the whole batch and each sample
    keeps the output of its own op (a per-sample select; cost = all ops, fine for evaluation).
    Key layout: ``k_choice, *k_ops = split(key, 1 + n_ops)``.
    """
    _check_nhwc(x, "rcig_eval")
    if not isinstance(strategy, str) or not strategy:
        raise ConfigError(f"RCIG eval strategy {strategy!r} is empty; use '_'-joined ops from {list(RCIG_OPS)}")
    ops = tuple(strategy.lower().split("_"))
    bad = [o for o in ops if o not in RCIG_OPS]
    if bad:
        raise ConfigError(f"RCIG eval strategy {strategy!r} has unknown ops {bad}; allowed are {list(RCIG_OPS)}")
    keys = jax.random.split(key, 1 + len(ops))
    choice = jax.random.randint(keys[0], (x.shape[0],), 0, len(ops))
    out = jnp.zeros_like(x)
    for i, (op, k) in enumerate(zip(ops, keys[1:])):
        out = jnp.where(_bcast(choice == i), _rcig_op(op, k, x), out)
    return out


def cutmix_box(key: Array, h: int, w: int, beta: float = 1.0) -> tuple[Array, Array]:
    """CutMix box: lam ~ Beta(beta, beta), side = int(size * sqrt(1 - lam)), uniform centre,
    half-sides of side//2 on each side, clipped to the image. Returns ((H, W) bool box, lam)."""
    k_lam, k_r, k_c = jax.random.split(key, 3)
    lam = jax.random.beta(k_lam, beta, beta)
    cut = jnp.sqrt(1.0 - lam)
    ch = jnp.floor(h * cut).astype(jnp.int32)
    cw = jnp.floor(w * cut).astype(jnp.int32)
    cr = jax.random.randint(k_r, (), 0, h)
    cc = jax.random.randint(k_c, (), 0, w)
    r0, r1 = jnp.clip(cr - ch // 2, 0, h), jnp.clip(cr + ch // 2, 0, h)
    c0, c1 = jnp.clip(cc - cw // 2, 0, w), jnp.clip(cc + cw // 2, 0, w)
    ri, ci = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (ri >= r0) & (ri < r1) & (ci >= c0) & (ci < c1)
    return box, lam


def cutmix(key: Array, x: Array, y_targets: Array, beta: float = 1.0, p: float = 0.5) -> tuple[Array, Array]:
    """CutMix with probability p: paste one box from a permuted batch into every sample.

    x (N, H, W, C); y_targets (N, K) one-hot or soft targets. Returns (x_mixed, y_mixed) with
    y_mixed = (1 - a) * y + a * y[perm], a = (actual clipped box area) / (H * W) (a = 0 when not applied).
    Key layout: ``k_apply, k_perm, k_box = split(key, 3)``.
    """
    _check_nhwc(x, "cutmix")
    if y_targets.ndim != 2 or y_targets.shape[0] != x.shape[0]:
        raise DataError(f"cutmix needs (N, K) one-hot/soft targets for N={x.shape[0]} images, "
                        f"got shape {tuple(y_targets.shape)}")
    if not 0.0 <= p <= 1.0 or beta <= 0:
        raise ConfigError(f"cutmix p={p} must be in [0, 1] and beta={beta} > 0")
    n, h, w, _ = x.shape
    k_apply, k_perm, k_box = jax.random.split(key, 3)
    perm = jax.random.permutation(k_perm, n)
    box, _ = cutmix_box(k_box, h, w, beta)
    box = box & (jax.random.uniform(k_apply) < p)
    x_mixed = jnp.where(box[None, :, :, None], x[perm], x)
    a = jnp.mean(box.astype(jnp.float32)).astype(y_targets.dtype)
    return x_mixed, (1 - a) * y_targets + a * y_targets[perm]


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

def _none(key: Array, x: Array) -> Array:
    del key
    return x


def crop_flip(key: jax.Array, x: Array, pad: int = 4) -> Array:
    """The LNL papers' training augmentation (DivideMix, ELR on CIFAR): zero-pad by `pad`, take a random crop of
    the original size (a per-sample shift in [-pad, pad] with zero fill), flip horizontally with probability 0.5."""
    _check_nhwc(x, "crop_flip")
    k_r, k_c, k_f = jax.random.split(key, 3)
    n = x.shape[0]
    tr = jax.random.randint(k_r, (n,), -pad, pad + 1)
    tc = jax.random.randint(k_c, (n,), -pad, pad + 1)
    return apply_flip(apply_translate(x, tr, tc), jax.random.bernoulli(k_f, 0.5, (n,)))


AUGMENTS: dict[str, AugmentFn] = {
    "crop_flip": crop_flip,
    "none": _none,
    "dsa": lambda key, x: dsa(key, x, mode="one"),
    "dsa_all": lambda key, x: dsa(key, x, mode="all"),
    "dance": dance_condense,
    "dance_pretrain": dance_pretrain,
    "dance_eval": dance_eval,
    "rcig_eval": rcig_eval,
    "rcig_eval_gray": lambda key, x: rcig_eval(key, x, RCIG_EVAL_STRATEGY_GRAY),
}


def list_augments() -> list[str]:
    return list(AUGMENTS)


def get_augment(name: str) -> AugmentFn:
    """Name -> fn(key, x) -> x. Names: crop_flip, none, dsa, dsa_all, dance, dance_pretrain, dance_eval,
    rcig_eval, rcig_eval_gray (RCIG's crop_rotate_translate_cutout for one-channel data)."""
    try:
        return AUGMENTS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"augmentation {name!r} is not one of {list(AUGMENTS)}") from None


__all__: Sequence[str] = (
    "DSAParams", "GROUPS", "DEFAULT_STRATEGY", "apply_brightness", "apply_saturation", "apply_contrast",
    "apply_flip", "apply_translate", "apply_cutout", "cutout_mask", "affine_grid", "grid_sample",
    "apply_affine", "apply_scale", "apply_rotate", "scale_theta", "rotate_theta", "rand_color", "rand_crop",
    "rand_cutout", "rand_flip", "rand_scale", "rand_rotate", "parse_strategy", "dsa", "dsa_group_index",
    "idc_augment", "dance_condense", "dance_pretrain", "dance_eval", "rcig_eval", "cutmix", "cutmix_box",
    "get_augment", "list_augments", "crop_shift", "cutout_size", "crop_flip",
)
