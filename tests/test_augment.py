"""Tests for jaxdistill.augment: each op against NumPy / naive loops, gradients against finite
differences, the sampling behaviour of the pipelines, CutMix label mixing and the registry."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import augment as A
from jaxdistill.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 6, 7, 3)).astype(np.float32)  # non-square on purpose: H and W must not mix


# ---------------------------------------------------------------------------------------------
# deterministic ops vs NumPy
# ---------------------------------------------------------------------------------------------

def test_flip_exact():
    do = np.array([True, False, True])
    out = np.asarray(A.apply_flip(jnp.asarray(X), jnp.asarray(do)))
    want = np.stack([X[0, :, ::-1], X[1], X[2, :, ::-1]])
    np.testing.assert_array_equal(out, want)


def _translate_np(x, tr, tc):
    out = np.zeros_like(x)
    n, h, w, _ = x.shape
    for b, i, j in itertools.product(range(n), range(h), range(w)):
        si, sj = i + tr[b], j + tc[b]
        if 0 <= si < h and 0 <= sj < w:
            out[b, i, j] = x[b, si, sj]
    return out


def test_translate_exact_zero_fill():
    tr, tc = np.array([2, -1, 0]), np.array([-3, 0, 9])  # 9 > W: everything zero
    out = np.asarray(A.apply_translate(jnp.asarray(X), jnp.asarray(tr), jnp.asarray(tc)))
    np.testing.assert_array_equal(out, _translate_np(X, tr, tc))
    assert np.all(out[2] == 0)


def _cutout_np(x, cr, cc, sh, sw):
    """The DSA index convention: zero the clamped indices centre - size//2 + k, k < size."""
    out = x.copy()
    n, h, w, _ = x.shape
    for b in range(n):
        for k, l in itertools.product(range(sh), range(sw)):
            i = min(max(cr[b] - sh // 2 + k, 0), h - 1)
            j = min(max(cc[b] - sw // 2 + l, 0), w - 1)
            out[b, i, j] = 0
    return out


def test_cutout_exact_and_clamped():
    cr, cc = np.array([0, 3, 6]), np.array([7, 2, 0])  # corners clamp, middle is interior
    for sh, sw in [(3, 4), (4, 4)]:
        out = np.asarray(A.apply_cutout(jnp.asarray(X), jnp.asarray(cr), jnp.asarray(cc), sh, sw))
        np.testing.assert_array_equal(out, _cutout_np(X, cr, cc, sh, sw))
    # Interior square for size 4 at centre (3, 2): rows 1..4, cols 0..3 zeroed (16 pixels).
    m = np.asarray(A.cutout_mask(6, 7, jnp.array([3]), jnp.array([2]), 4, 4))[0]
    assert (m == 0).sum() == 16 and np.all(m[1:5, 0:4] == 0)


def test_color_closed_forms():
    d = np.array([0.3, -0.2, 0.0], np.float32)
    f = np.array([0.0, 1.7, 0.4], np.float32)
    b = np.asarray(A.apply_brightness(jnp.asarray(X), jnp.asarray(d)))
    np.testing.assert_allclose(b, X + d[:, None, None, None], rtol=1e-6)
    s = np.asarray(A.apply_saturation(jnp.asarray(X), jnp.asarray(f)))
    m = X.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(s, (X - m) * f[:, None, None, None] + m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s[0], np.broadcast_to(m[0], X[0].shape), atol=1e-6)  # factor 0 = greyscale
    c = np.asarray(A.apply_contrast(jnp.asarray(X), jnp.asarray(f)))
    m = X.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(c, (X - m) * f[:, None, None, None] + m, rtol=1e-5, atol=1e-6)
    g = X[..., :1]
    np.testing.assert_array_equal(np.asarray(A.apply_saturation(jnp.asarray(g), jnp.asarray(f))), g)


def _grid_sample_np(x, grid, align_corners):
    """Naive per-pixel bilinear sampler, PyTorch's formulas, zero padding."""
    n, h, w, c = x.shape
    _, ho, wo, _ = grid.shape
    out = np.zeros((n, ho, wo, c), np.float64)
    for b, i, j in itertools.product(range(n), range(ho), range(wo)):
        gx, gy = grid[b, i, j]
        if align_corners:
            px, py = (gx + 1) / 2 * (w - 1), (gy + 1) / 2 * (h - 1)
        else:
            px, py = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        for yy, xx in itertools.product((y0, y0 + 1), (x0, x0 + 1)):
            wt = (1 - abs(px - xx)) * (1 - abs(py - yy))
            if 0 <= yy < h and 0 <= xx < w:
                out[b, i, j] += wt * x[b, yy, xx]
    return out


@pytest.mark.parametrize("align_corners,impl", [(True, "window"), (False, "window"), (True, "taps"), (False, "taps")])
def test_grid_sample_against_naive_loop(align_corners, impl):
    grid = RNG.uniform(-1.3, 1.3, size=(3, 4, 5, 2)).astype(np.float32)  # some taps fall outside
    grid[0, 0, :3, 0] = [-1.0 - 2 / 6, 1.0 + 2 / 6, 1.0]  # exactly one pixel out: the pad's zeros
    out = np.asarray(A.grid_sample(jnp.asarray(X), jnp.asarray(grid), align_corners, impl))
    np.testing.assert_allclose(out, _grid_sample_np(X, grid, align_corners), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_grid_formula(align_corners):
    theta = RNG.normal(size=(2, 2, 3)).astype(np.float32)
    h, w = 4, 5
    g = np.asarray(A.affine_grid(jnp.asarray(theta), h, w, align_corners))
    if align_corners:
        bx, by = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
    else:
        bx, by = (2 * np.arange(w) + 1) / w - 1, (2 * np.arange(h) + 1) / h - 1
    for b, i, j in itertools.product(range(2), range(h), range(w)):
        np.testing.assert_allclose(g[b, i, j], theta[b] @ np.array([bx[j], by[i], 1.0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("align_corners", [True, False])
def test_rotate_zero_and_scale_one_are_identity(align_corners):
    x = jnp.asarray(X)
    r = A.apply_rotate(x, jnp.zeros(3), align_corners)
    s = A.apply_scale(x, jnp.ones(3), jnp.ones(3), align_corners)
    chex.assert_trees_all_close(r, x, atol=1e-5)
    chex.assert_trees_all_close(s, x, atol=1e-5)


def test_rotate_90_matches_rot90():
    img = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    ccw = np.asarray(A.apply_rotate(jnp.asarray(img), jnp.array([np.pi / 2]), True))
    cw = np.asarray(A.apply_rotate(jnp.asarray(img), jnp.array([-np.pi / 2]), True))
    np.testing.assert_allclose(ccw[0], np.rot90(img[0], k=1, axes=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(cw[0], np.rot90(img[0], k=-1, axes=(0, 1)), atol=1e-5)
    assert not np.allclose(ccw, cw, atol=1e-2)  # direction matters


def test_scale_two_samples_centre_half():
    # Scale 0.5 (align_corners=True) on a 5-wide row maps output col j to input col (j + 2) / 2 (a centred 2x zoom).
    img = np.arange(5, dtype=np.float32)[None, None, :, None] * np.ones((1, 5, 1, 1), np.float32)
    out = np.asarray(A.apply_scale(jnp.asarray(img), jnp.array([0.5]), jnp.array([1.0]), True))
    np.testing.assert_allclose(out[0, 2, :, 0], (np.arange(5) + 2) / 2, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# gradients vs finite differences (every op is affine in x, so central differences are exact)
# ---------------------------------------------------------------------------------------------

XS = RNG.normal(size=(2, 4, 4, 2)).astype(np.float32)
_JIT = {}


def jitted(name):
    """One compiled function per augmentation name, shared by the tests (compiles dominate runtime)."""
    if name not in _JIT:
        _JIT[name] = jax.jit(A.get_augment(name))
    return _JIT[name]
OPS = {
    "brightness": lambda x: A.apply_brightness(x, jnp.array([0.2, -0.1])),
    "saturation": lambda x: A.apply_saturation(x, jnp.array([1.5, 0.3])),
    "contrast": lambda x: A.apply_contrast(x, jnp.array([0.7, 1.4])),
    "flip": lambda x: A.apply_flip(x, jnp.array([True, False])),
    "translate": lambda x: A.apply_translate(x, jnp.array([1, -2]), jnp.array([0, 1])),
    "cutout": lambda x: A.apply_cutout(x, jnp.array([1, 3]), jnp.array([2, 0]), 2, 2),
    "scale": lambda x: A.apply_scale(x, jnp.array([1.13, 0.87]), jnp.array([0.9, 1.1])),
    "rotate": lambda x: A.apply_rotate(x, jnp.array([0.2, -0.25])),
    "rotate_ac_false": lambda x: A.apply_rotate(x, jnp.array([0.2, -0.25]), False),
    "sample_taps": lambda x: A.grid_sample(x, A.affine_grid(A.rotate_theta(jnp.array([0.3, -0.1])), 4, 4), True, "taps"),
}


@pytest.mark.parametrize("name", list(OPS))
def test_gradient_matches_finite_differences(name):
    op = OPS[name]
    wgt = jnp.asarray(RNG.normal(size=XS.shape).astype(np.float32))
    loss = lambda x: jnp.sum(op(x) * wgt)
    g = jax.grad(loss)(jnp.asarray(XS))
    eps = 0.5
    basis = jnp.eye(XS.size, dtype=jnp.float32).reshape((XS.size,) + XS.shape)
    fd = jax.vmap(lambda e: (loss(XS + eps * e) - loss(XS - eps * e)) / (2 * eps))(basis).reshape(XS.shape)
    chex.assert_trees_all_close(g, fd, rtol=1e-3, atol=2e-3)
    assert float(jnp.abs(g).sum()) > 0


def test_pipelines_differentiable_under_jit():
    # The two pipelines that distillation backpropagates through (DATM: dsa, DANCE: dance).
    x = jnp.asarray(X)
    for name in ("dsa", "dance"):
        fn = A.get_augment(name)
        g = jax.jit(jax.grad(lambda v: jnp.sum(fn(jax.random.PRNGKey(3), v) ** 2)))(x)
        assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0, name


# ---------------------------------------------------------------------------------------------
# random groups and pipelines
# ---------------------------------------------------------------------------------------------

def test_mode_one_picks_groups_uniformly_and_applies_the_picked_one():
    keys = jax.random.split(jax.random.PRNGKey(0), 1200)
    idx = np.asarray(jax.vmap(A.dsa_group_index)(keys))
    counts = np.bincount(idx, minlength=6)
    assert counts.shape == (6,) and np.all(np.abs(counts - 200) < 60), counts  # ~4.6 sigma
    x = jnp.asarray(X)
    dsa_j = jitted("dsa")
    groups = A.parse_strategy(A.DEFAULT_STRATEGY)
    for k in keys[:8]:
        _, k_op = jax.random.split(k)
        want = jax.jit(A.GROUP_FNS[groups[int(A.dsa_group_index(k))]])(k_op, x)
        chex.assert_trees_all_close(dsa_j(k, x), want, atol=1e-6)


def test_batch_shared_identical_transforms():
    same = jnp.broadcast_to(jnp.asarray(X[:1]), X.shape)
    key = jax.random.PRNGKey(7)
    shared = np.asarray(jax.jit(lambda k, v: A.dsa(k, v, mode="all", batch_shared=True))(key, same))
    per = np.asarray(jitted("dsa_all")(key, same))
    for b in range(1, X.shape[0]):
        np.testing.assert_array_equal(shared[b], shared[0])
    assert not np.allclose(per[1], per[0])
    # DANCE: augmenting real and synthetic separately with one key == augmenting their concatenation.
    real, syn = jnp.asarray(X), jnp.asarray(X[::-1] * 0.5 + 0.1)
    dance = jitted("dance")
    both = dance(key, jnp.concatenate([real, syn]))
    chex.assert_trees_all_close(both, jnp.concatenate([dance(key, real), dance(key, syn)]),
                                atol=1e-6)


def test_determinism_and_key_dependence():
    x = jnp.asarray(X)
    for name in ("dsa_all", "dance_eval", "rcig_eval"):
        fn = jitted(name)
        a, b = fn(jax.random.PRNGKey(11), x), fn(jax.random.PRNGKey(11), x)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        outs = [np.asarray(fn(jax.random.PRNGKey(s), x)) for s in range(3)]
        assert not (np.allclose(outs[0], outs[1]) and np.allclose(outs[1], outs[2])), name
    # RCIG draws an op per image: identical images come out different.
    same = np.asarray(jitted("rcig_eval")(jax.random.PRNGKey(4), jnp.broadcast_to(x[:1], x.shape)))
    assert not (np.allclose(same[0], same[1]) and np.allclose(same[1], same[2]))


def test_random_crop_and_cutout_ranges():
    h = 32
    img = jnp.zeros((64, h, h, 1)).at[:, 16, 16, 0].set(1.0)
    moved = np.asarray(jax.jit(A.rand_crop)(jax.random.PRNGKey(1), img))
    assert A.crop_shift(32, 0.125) == 4 and A.crop_shift(64, 0.125) == 8
    pos = np.argwhere(moved[..., 0] == 1.0)
    assert len(pos) == 64  # shift <= 4 keeps the dot inside
    shifts = 16 - pos[:, 1:]
    assert shifts.min() >= -4 and shifts.max() <= 4 and len(np.unique(shifts)) == 9
    cut = np.asarray(jax.jit(A.rand_cutout)(jax.random.PRNGKey(2), jnp.ones((64, h, h, 1))))
    zeros = (cut[..., 0] == 0).sum(axis=(1, 2))
    assert A.cutout_size(32, 0.5) == 16 and zeros.min() >= 64 and zeros.max() == 256


def test_vmap_over_keys_matches_loop():
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    x = jnp.asarray(X)
    out = jax.jit(jax.vmap(lambda k: A.dsa(k, x)))(keys)
    for i in range(3):
        chex.assert_trees_all_close(out[i], jitted("dsa")(keys[i], x), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# CutMix
# ---------------------------------------------------------------------------------------------

def test_cutmix_labels_match_box_area_and_p():
    n, h, w, p = 5, 8, 8, 0.5
    x = jnp.asarray(RNG.normal(size=(n, h, w, 2)).astype(np.float32))
    y = jax.nn.one_hot(jnp.arange(n), n) * 0.9 + 0.02  # soft targets, rows sum to 1

    def run(k):  # the outputs plus what the key layout says the box/permutation/coin were
        xm, ym = A.cutmix(k, x, y, 1.0, p)
        k_apply, k_perm, k_box = jax.random.split(k, 3)
        return (xm, ym, jax.random.permutation(k_perm, n), A.cutmix_box(k_box, h, w, 1.0)[0],
                jax.random.uniform(k_apply) < p)

    xm, ym, perm, box, applied = map(np.asarray, jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 300)))
    xn, yn = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-5)
    for i in range(len(ym)):
        a = box[i].mean() * applied[i]
        np.testing.assert_allclose(ym[i], (1 - a) * yn + a * yn[perm[i]], atol=1e-6)
        np.testing.assert_array_equal(xm[i], np.where((box[i] & applied[i])[None, :, :, None], xn[perm[i]], xn))
        if box[i].any():  # the pasted region is one axis-aligned rectangle
            rows, cols = np.where(box[i].any(1))[0], np.where(box[i].any(0))[0]
            assert box[i][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    areas = box.mean(axis=(1, 2))
    assert len(np.unique(areas)) > 5 and areas.max() > 0.3
    # Observed from the outputs alone: about p of the informative draws changed the labels.
    informative = box.any(axis=(1, 2)) & (perm != np.arange(n)).any(1)
    frac = (np.abs(ym - yn).max(axis=(1, 2)) > 0)[informative].mean()
    assert informative.sum() > 150 and 0.38 < frac < 0.62, frac


# ---------------------------------------------------------------------------------------------
# errors and registry
# ---------------------------------------------------------------------------------------------

def test_errors_name_bad_value_and_allowed():
    with pytest.raises(ConfigError, match=r"'bogus'.*dance_eval"):
        A.get_augment("bogus")
    with pytest.raises(ConfigError, match=r"'zoom'.*rotate"):
        A.dsa(jax.random.PRNGKey(0), jnp.asarray(X), strategy="color_zoom")
    with pytest.raises(ConfigError, match=r"'some'.*'one', 'all'"):
        A.dsa(jax.random.PRNGKey(0), jnp.asarray(X), mode="some")
    with pytest.raises(DataError, match=r"\(3,\)"):
        A.cutmix(jax.random.PRNGKey(0), jnp.asarray(X), jnp.arange(3))
    with pytest.raises(ConfigError, match=r"'cubic'.*window"):
        A.grid_sample(jnp.asarray(X), jnp.zeros((3, 2, 2, 2)), True, "cubic")
    with pytest.raises(DataError, match="NHWC"):
        A.dsa(jax.random.PRNGKey(0), jnp.ones((6, 7, 3)))
    assert set(A.list_augments()) >= {"none", "dsa", "dsa_all", "dance", "dance_eval", "rcig_eval"}
    np.testing.assert_array_equal(np.asarray(A.get_augment("none")(jax.random.PRNGKey(0), X)), X)


def test_crop_flip_against_a_naive_loop():
    """crop_flip = zero-pad by `pad`, crop at a random offset, flip with p = 0.5: each output is one of the
    (2 pad + 1)^2 x 2 shifted/flipped copies, computed here pixel by pixel."""
    rs = np.random.RandomState(0)
    x = rs.rand(16, 6, 5, 2).astype(np.float32)
    out = np.asarray(A.crop_flip(jax.random.PRNGKey(3), jnp.asarray(x), pad=2))
    assert A.get_augment("crop_flip") is A.crop_flip
    seen_flip = set()
    for i in range(16):
        hits = []
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                padded = np.zeros((6 + 4, 5 + 4, 2), np.float32)
                padded[2:8, 2:7] = x[i]
                crop = padded[2 + dr:8 + dr, 2 + dc:7 + dc]
                for flip in (False, True):
                    cand = crop[:, ::-1] if flip else crop
                    if np.allclose(cand, out[i]):
                        hits.append(flip)
        assert hits, f"sample {i} is no shifted/flipped copy"
        seen_flip.update(hits)
    assert seen_flip == {False, True}
