"""Every random draw of DSA (and of RCIG's evaluation augmentation) pinned to its range and unit, read back
from the op's output on probe images built so that each parameter can be solved for exactly; and the
instance-noise transition rows against a per-sample loop.

A draw over the wrong range or in the wrong unit (degrees as radians, [0, 1) instead of [-0.5, 0.5), a
randint upper bound off by one) moves the recovered min / max / mean / std past tolerances that the right
draw meets with thousands of samples."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import augment as A
from jaxdistill.noise import apply_noise, instance_transition_rows

N = 4000  # draws per check: the min / max of U[a, b) lie within (b - a) * 0.003 of the ends with p > 0.99999


def _uniform_ok(v, lo, hi, what):
    """v: draws of U[lo, hi): range, ends reached, mean and std of the uniform law."""
    v = np.asarray(v, np.float64)
    w = hi - lo
    assert v.min() >= lo - 1e-5 * w and v.max() <= hi + 1e-5 * w, (what, v.min(), v.max(), lo, hi)
    assert v.min() < lo + 0.01 * w and v.max() > hi - 0.01 * w, (what, v.min(), v.max(), lo, hi)
    assert abs(v.mean() - (lo + hi) / 2) < 0.03 * w, (what, v.mean())
    assert abs(v.std() - w / math.sqrt(12)) < 0.03 * w, (what, v.std())


def _ramp(n, size=33):
    """(n, size, size, 2): channel 0 = normalised x (column) coordinate, channel 1 = normalised y (row),
    align_corners=True convention (-1 / +1 at the corner pixel centres). Bilinear sampling of a linear
    function is exact, so the output at a pixel reads back the input coordinate the sampler used."""
    c = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    img = np.stack([np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))], -1)
    return jnp.asarray(np.broadcast_to(img, (n, size, size, 2)).copy())


def test_color_draws_brightness_saturation_contrast():
    # Per sample 3 pixels: grey 1, grey 0, red. Brightness adds d to all; saturation leaves greys alone and
    # scales the red pixel's spread about its channel mean by s; contrast scales everything about the sample
    # mean by c and keeps the mean. So d = mean shift, c = (grey1 - grey0), s = (red_R - red_G) / c.
    x = np.zeros((N, 1, 3, 3), np.float32)
    x[:, 0, 0] = 1.0
    x[:, 0, 2] = (1.0, 0.0, 0.0)
    out = np.asarray(jax.jit(A.rand_color)(jax.random.PRNGKey(0), jnp.asarray(x)), np.float64)
    d = out.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3))
    c = out[:, 0, 0, 0] - out[:, 0, 1, 0]
    s = (out[:, 0, 2, 0] - out[:, 0, 2, 1]) / c
    p = A.DSAParams()
    _uniform_ok(d, -0.5 * p.brightness, 0.5 * p.brightness, "brightness (u - 0.5) * 1.0")
    _uniform_ok(s, 0.0, p.saturation, "saturation u * 2.0")
    _uniform_ok(c, p.contrast, 1.0 + p.contrast, "contrast u + 0.5")
    assert (p.brightness, p.saturation, p.contrast) == (1.0, 2.0, 0.5)


def test_scale_draws_each_axis_independently_in_range():
    out = np.asarray(jax.jit(A.rand_scale)(jax.random.PRNGKey(1), _ramp(N)), np.float64)
    # pixel (row 16, col 20) sits at (x, y) = (0.25, 0); pixel (row 20, col 16) at (0, 0.25)
    sx = out[:, 16, 20, 0] / 0.25
    sy = out[:, 20, 16, 1] / 0.25
    _uniform_ok(sx, 1 / 1.2, 1.2, "scale x")
    _uniform_ok(sy, 1 / 1.2, 1.2, "scale y")
    assert abs(np.corrcoef(sx, sy)[0, 1]) < 0.06  # two draws, not one


def test_rotate_draws_degrees_converted_to_radians():
    out = np.asarray(jax.jit(A.rand_rotate)(jax.random.PRNGKey(2), _ramp(N)), np.float64)
    # the output pixel at (0.25, 0) samples the input at 0.25 * (cos t, sin t)
    ang = np.arctan2(out[:, 16, 20, 1], out[:, 16, 20, 0])
    np.testing.assert_allclose(np.hypot(out[:, 16, 20, 0], out[:, 16, 20, 1]), 0.25, rtol=1e-4)
    _uniform_ok(ang, -math.radians(15.0), math.radians(15.0), "rotation angle (radians)")


def test_flip_draw_is_a_fair_coin_per_sample():
    x = _ramp(N)
    out = np.asarray(jax.jit(A.rand_flip)(jax.random.PRNGKey(3), x))
    flipped = np.all(out == np.asarray(x)[:, :, ::-1, :], axis=(1, 2, 3))
    kept = np.all(out == np.asarray(x), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)
    assert abs(flipped.mean() - 0.5) < 0.03, flipped.mean()


@pytest.mark.parametrize("size", [32, 28, 8])
def test_crop_draws_integer_shifts_in_closed_range(size):
    shift = A.crop_shift(size, 0.125)
    assert shift == int(size * 0.125 + 0.5)
    idx = np.arange(size, dtype=np.float32) + 1.0  # 1-based so the zero fill is told apart
    img = np.stack([np.broadcast_to(idx[None, :], (size, size)), np.broadcast_to(idx[:, None], (size, size))], -1)
    x = jnp.asarray(np.broadcast_to(img, (N, size, size, 2)).copy())
    out = np.asarray(jax.jit(A.rand_crop)(jax.random.PRNGKey(4), x))
    m = size // 2
    tc = out[:, m, m, 0] - (m + 1)
    tr = out[:, m, m, 1] - (m + 1)
    for t in (tc, tr):
        vals, counts = np.unique(t, return_counts=True)
        np.testing.assert_array_equal(vals, np.arange(-shift, shift + 1))  # both ends included
        np.testing.assert_allclose(counts / N, 1 / (2 * shift + 1), atol=0.03)
    assert abs(np.corrcoef(tc, tr)[0, 1]) < 0.06


def test_cutout_centre_draw_and_square_side():
    h = 32
    size = A.cutout_size(h, 0.5)
    assert size == 16
    out = np.asarray(jax.jit(A.rand_cutout)(jax.random.PRNGKey(5), jnp.ones((N, h, h, 1))))[..., 0]
    centres = []
    for axis in (2, 1):  # rows, then columns
        hit = (out == 0).any(axis=axis)  # (N, h): which rows / columns the square covers
        first = hit.argmax(1)
        last = h - 1 - hit[:, ::-1].argmax(1)
        # clamped square rows [max(0, c - 8), min(h - 1, c + 7)]: c = first + 8 unless clamped at 0
        c = np.where(first > 0, first + size // 2, last - (size - 1 - size // 2))
        centres.append(c)
        inner = (c >= size // 2) & (c <= h - 1 - (size - 1 - size // 2))
        assert np.all(last[inner] - first[inner] + 1 == size)
    for c in centres:
        vals, counts = np.unique(c, return_counts=True)
        # randint[0, H + (1 - size % 2)) = 0..32 for H = 32, size 16: 33 values, both ends reached
        np.testing.assert_array_equal(vals, np.arange(0, h + 1 - size % 2))
        np.testing.assert_allclose(counts / N, 1 / len(vals), atol=0.02)
    # the zeroed area is exactly the clamped square
    rows = (out == 0).any(axis=2).sum(1)
    cols = (out == 0).any(axis=1).sum(1)
    np.testing.assert_array_equal((out == 0).sum(axis=(1, 2)), rows * cols)


def test_dsa_mode_one_applies_one_group_with_the_default_ranges():
    # Through the pipeline DATM calls: many calls (one group each), the rotate calls' angles stay within 15 deg.
    x = _ramp(64)
    f = jax.jit(lambda k: A.dsa(k, x, mode="one"))
    angles = []
    for i in range(120):
        k = jax.random.PRNGKey(100 + i)
        if A.parse_strategy(A.DEFAULT_STRATEGY)[int(A.dsa_group_index(k))] != "rotate":
            continue
        out = np.asarray(f(k), np.float64)
        angles.append(np.arctan2(out[:, 16, 20, 1], out[:, 16, 20, 0]))
    a = np.concatenate(angles)
    assert len(angles) >= 8
    assert np.abs(a).max() <= math.radians(15.0) + 1e-4 and np.abs(a).max() > math.radians(13.0)


# ------------------------------------------------------------------------------------------------
# RCIG's evaluation ops (augmax's ranges): rotate +-15 deg, translate +-int(0.125 H + 0.5), cutout H // 4
# ------------------------------------------------------------------------------------------------

def test_rcig_eval_rotate_translate_cutout_ranges():
    x = _ramp(N)
    rot = np.asarray(jax.jit(lambda k, v: A._rcig_op("rotate", k, v))(jax.random.PRNGKey(6), x), np.float64)
    _uniform_ok(np.arctan2(rot[:, 16, 20, 1], rot[:, 16, 20, 0]), -math.radians(15), math.radians(15), "rcig rot")
    h = 32
    cut = np.asarray(jax.jit(lambda k, v: A._rcig_op("cutout", k, v))(jax.random.PRNGKey(7), jnp.ones((N, h, h, 1))))
    zeros = (cut[..., 0] == 0).sum(axis=(1, 2))
    # side 8 about a centre in [0, 32): 8 x 8 inside, down to the 4 x 4 corner left at centre (0, 0)
    assert zeros.max() == (h // 4) ** 2 and zeros.min() >= (h // 8) ** 2
    z = np.asarray(jax.jit(lambda k, v: A._rcig_op("crop", k, v))(jax.random.PRNGKey(8), x), np.float64)
    # zoom z in [0.8, 1.25] (log-uniform): the sampled coordinate spacing between two neighbours is 1 / z
    step = (z[:, 16, 17, 0] - z[:, 16, 15, 0]) / (2 * 2 / 32)
    _uniform_ok(np.log(1 / step), math.log(0.8), math.log(1.25), "rcig zoom (log)")


# ------------------------------------------------------------------------------------------------
# Instance noise: transition rows
# ------------------------------------------------------------------------------------------------

def _naive_instance_rows(y, images, q, seed, c_count):
    """Xia et al.'s rows written per sample: q_i spread over the other classes by softmax(x_i W_{y_i})."""
    rows = np.zeros((len(y), c_count))
    ws = [np.random.default_rng(ss).standard_normal((images[0].size, c_count))
          for ss in np.random.SeedSequence([seed, 0x1A5]).spawn(3)[1].spawn(c_count)]
    for i, (yi, xi) in enumerate(zip(y, images)):
        v = xi.ravel().astype(np.float64)
        v = v / max(np.linalg.norm(v), 1e-12)
        logits = v @ ws[yi]
        others = [j for j in range(c_count) if j != yi]
        e = np.exp(logits[others] - logits[others].max())
        rows[i, others] = q[i] * e / e.sum()
        rows[i, yi] = 1.0 - q[i]
    return rows


def test_instance_rows_sum_to_one_exclude_own_class_and_match_a_loop():
    rs = np.random.RandomState(0)
    c = 5
    y = rs.randint(0, c, 300)
    images = rs.rand(300, 4, 4, 1)
    probs, q = instance_transition_rows(y, images, 0.4, c, seed=3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(probs[np.arange(300), y], 1.0 - q)  # own class keeps exactly 1 - q
    assert np.all(probs >= 0) and np.all((q >= 0) & (q <= 1))
    np.testing.assert_allclose(probs, _naive_instance_rows(y, images, q, 3, c), rtol=1e-10, atol=1e-14)
    # the flip mass goes to other classes only, and their share depends on the image (not uniform)
    off = probs.copy()
    off[np.arange(300), y] = 0
    np.testing.assert_allclose(off.sum(1), q, rtol=1e-12, atol=1e-15)
    assert np.std(off[y == 0][:, 1]) > 0.01
    # the draw follows the rows: realised flips ~ mean q (0.4 nominal), never onto the own class by a flip
    noisy = apply_noise(y, "instance:0.4", c, images=images, seed=3).noisy
    flips = noisy != y
    assert abs(flips.mean() - q.mean()) < 0.06, (flips.mean(), q.mean())
