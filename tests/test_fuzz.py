"""Property-based fuzzing (hypothesis) of the noise-spec parser, the noise sampler and the npz loader.

Each test knows, independently of the code under test, whether a generated input is valid: a valid input
must be accepted and give a well-formed result, an invalid one must raise the specific error (NoiseError,
DataError). Anything else (a TypeError/IndexError from deep inside NumPy, a valid input refused, an invalid
one accepted) fails. Where the generator cannot tell (several random faults in one npz file), the input
must load or raise DataError.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxdistill.errors import DataError, JaxDistillError, NoiseError
from jaxdistill.noise import KINDS, RATE_KINDS, NoiseSpec, apply_noise, parse_noise_spec

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------
# noise specs
# ------------------------------------------------------------------------------------------------

_KIND_TEXT = st.one_of(st.sampled_from(KINDS), st.sampled_from([k.upper() for k in KINDS]),
                       st.sampled_from(["", " ", "sym", "symmetrical", "flip", "pair-flip", "natural_", "nan"]),
                       st.text(max_size=8))
_NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1).map(lambda v: f"{v:.3f}"),
    st.integers(-5, 5).map(str),
    st.sampled_from(["", " ", "0.", ".5", "1e-1", "4e-1", "0x1", "1_0", "½", "0,4", "40%", "nan", "-inf", "0.4:0.2",
                     "aggre_label", "worse_label", "T.npy", "/no/such/T.npy", "C:\\T.csv"]),
    st.text(max_size=12),
)
_SPEC = st.one_of(
    st.text(max_size=30),
    st.tuples(_KIND_TEXT, st.sampled_from([":", "", "::", " : ", ";", "="]), _NUMBER_TEXT).map("".join),
)


def _spec_ok(s: str) -> bool:
    """The documented grammar: KIND[:ARG], kind case-insensitive, blanks around the parts ignored; `clean`
    takes no argument, rate kinds a finite rate in [0, 1), natural/matrix a non-empty argument."""
    kind, sep, arg = s.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "clean":
        return not sep
    if kind not in KINDS or not arg.strip():
        return False
    if kind in RATE_KINDS:
        try:
            r = float(arg.strip())
        except ValueError:
            return False
        return math.isfinite(r) and 0.0 <= r < 1.0
    return True


@FUZZ
@given(_SPEC)
def test_noise_spec_parser_accepts_valid_and_refuses_invalid_specs(s):
    if not _spec_ok(s):
        with pytest.raises(NoiseError) as e:
            parse_noise_spec(s)
        assert str(e.value)
        return
    spec = parse_noise_spec(s)
    assert isinstance(spec, NoiseSpec) and spec.kind == s.strip().partition(":")[0].strip().lower()
    if spec.kind in RATE_KINDS:
        assert spec.rate == float(s.partition(":")[2].strip())
    else:
        assert spec.rate is None
    # str() gives back a spec that parses to the same thing
    assert parse_noise_spec(str(spec)) == spec


@FUZZ
@given(kind=st.sampled_from(RATE_KINDS), rate=st.floats(0.0, 1.0, exclude_max=True), upper=st.booleans(),
       pad=st.sampled_from(["", " ", "  \t"]))
def test_every_valid_rate_spec_is_accepted(kind, rate, upper, pad):
    text = f"{pad}{kind.upper() if upper else kind}{pad}:{pad}{rate!r}{pad}"
    assert parse_noise_spec(text) == NoiseSpec(kind, rate=rate)


@FUZZ
@given(kind=st.sampled_from(RATE_KINDS),
       rate=st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda r: not 0.0 <= r < 1.0).map(repr),
                      st.sampled_from(["", " ", "abc", "40%", "0,4", "1e", "--1"])))
def test_every_bad_rate_is_refused(kind, rate):
    with pytest.raises(NoiseError, match="noise rate|missing its argument"):
        parse_noise_spec(f"{kind}:{rate}")


# The class count each asymmetric map is defined for, written out (aliases included).
_ASYM_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10, "digits": 10}


def _apply_noise_ok(spec: str, c: int, labels: np.ndarray, seed: int, dataset) -> bool:
    kind, _, arg = spec.partition(":")
    if kind in ("natural", "matrix"):  # no natural labels passed; the matrix file does not exist
        return False
    if kind in RATE_KINDS and not (math.isfinite(float(arg)) and 0.0 <= float(arg) < 1.0):
        return False
    if c < 2 or not 0 <= seed < 2 ** 32:
        return False
    if labels.size == 0 or labels.dtype.kind not in "iub" or labels.min() < 0 or labels.max() >= c:
        return False
    return kind != "asymmetric" or _ASYM_CLASSES.get(dataset) == c


@FUZZ
@given(spec=st.one_of(st.sampled_from(["clean", "natural:x", "matrix:/no/such.npy"]),
                      st.tuples(st.sampled_from(RATE_KINDS), st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))))
                      .map(lambda t: f"{t[0]}:{t[1]!r}")),
       c=st.integers(-1, 12), n=st.integers(0, 60), lo=st.integers(-2, 1), hi=st.integers(0, 14),
       dataset=st.sampled_from([None, "cifar10", "digits", "fashion_mnist", "cifar100", "svhn"]),
       seed=st.integers(-1, 2 ** 32), dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.bool_]))
def test_apply_noise_accepts_valid_and_refuses_invalid_inputs(spec, c, n, lo, hi, dataset, seed, dtype):
    rs = np.random.RandomState(n)
    labels = rs.randint(lo, max(hi, lo + 1), size=n).astype(dtype)
    images = rs.rand(n, 2, 2, 1).astype(np.float32)
    if not _apply_noise_ok(spec, c, labels, seed, dataset):
        with pytest.raises(NoiseError) as e:
            apply_noise(labels, spec, c, dataset=dataset, seed=seed, images=images)
        assert str(e.value)
        return
    res = apply_noise(labels, spec, c, dataset=dataset, seed=seed, images=images)
    assert res.noisy.shape == (n,) and np.issubdtype(res.noisy.dtype, np.integer)
    assert res.noisy.min() >= 0 and res.noisy.max() < c
    assert res.transition.shape == (c, c)
    np.testing.assert_allclose(res.transition.sum(1), 1.0, atol=1e-6)
    assert 0.0 <= res.realized_rate <= 1.0
    np.testing.assert_allclose(res.realized_rate, np.mean(res.noisy != labels.astype(np.int64)), atol=1e-12)
    if spec == "clean":
        np.testing.assert_array_equal(res.noisy, labels.astype(np.int64))


# ------------------------------------------------------------------------------------------------
# npz loader
# ------------------------------------------------------------------------------------------------

# Files are built from a hypothesis-drawn seed: a valid file (random sizes, dtypes and optional keys), then
# 0-3 random faults. Driving the generator with NumPy keeps the mix under control: about a quarter of the
# files load, the rest exercise each check of the loader, alone and combined.
_X_DTYPES = [np.uint8, np.float32, np.float64, np.float16]
_BAD_X_DTYPES = [np.int64, np.int8, np.bool_, np.complex64, object, "U2"]
_Y_DTYPES = [np.int64, np.int32, np.uint8, np.uint64, np.int16, np.float64, np.bool_]
_BAD_Y_DTYPES = [np.float32, np.complex64, object, "U3", "S2"]


def _valid(rs) -> dict:
    n = int(rs.randint(2, 13))
    shape = (n, int(rs.randint(1, 5)), int(rs.randint(1, 5))) + (() if rs.rand() < 0.3 else (int(rs.randint(1, 4)),))
    xd = _X_DTYPES[rs.randint(len(_X_DTYPES))]
    x = rs.randint(0, 256, size=shape).astype(np.uint8) if xd == np.uint8 else rs.rand(*shape).astype(xd)
    c = int(rs.randint(1, 5))
    yd = _Y_DTYPES[rs.randint(len(_Y_DTYPES))]
    if yd == np.bool_:
        c = 2  # bool labels are 0/1: two classes, so class_names below must name both
    y = rs.randint(0, c, size=n).astype(yd)
    out = {"x": x, "y": y}
    if rs.rand() < 0.3:
        out["y_true"] = rs.randint(0, c, size=n)
    if rs.rand() < 0.3:
        m = int(rs.randint(1, 5))
        out["x_test"] = rs.rand(m, *shape[1:]).astype(np.float32)
        out["y_test"] = rs.randint(0, c, size=m)
    if rs.rand() < 0.2:
        out["class_names"] = np.array([f"c{i}" for i in range(c + int(rs.randint(0, 3)))])
    if rs.rand() < 0.2:
        out["notes"] = np.zeros(3)
    return out


def _fault(rs, d: dict) -> bool:
    """Apply one random fault to the file contents `d` in place. Returns True when the fault alone surely
    makes a valid file invalid (a required key gone, NaN/inf or no pixels, a negative label, an array of
    objects, strings or complex numbers); False when it may still be valid (an optional key dropped, a
    large label, a float dtype, ...)."""
    key = ["x", "y", "y_true", "x_test", "y_test", "class_names"][rs.randint(6)]
    required = key in ("x", "y")
    kind = rs.randint(10)
    a = d.get(key)
    if a is None or kind == 0:
        if key in d and rs.rand() < 0.5:
            del d[key]
            return required
        d[key] = np.zeros(int(rs.randint(0, 4)))
        return key == "x"  # 1-D images
    elif kind == 1:  # wrong dtype
        pool = _BAD_X_DTYPES if key.startswith("x") else _BAD_Y_DTYPES
        dt = pool[rs.randint(len(pool))]
        if dt is object:
            b = np.empty(a.shape, object)
            b[...] = 1
            d[key] = b
        else:
            d[key] = a.astype(dt) if a.dtype.kind in "fiub" or np.dtype(dt).kind in "US" else np.zeros(a.shape, dt)
        return required and (dt is object or np.dtype(dt).kind in "USc")
    elif kind == 2:  # wrong shape
        d[key] = a.reshape(-1) if a.ndim > 1 or rs.rand() < 0.5 else a[..., None, None]
    elif kind == 3:  # wrong length
        d[key] = a[: max(0, len(a) - int(rs.randint(1, 3)))] if rs.rand() < 0.6 else np.concatenate([a, a[:1]])
    elif kind == 4 and a.dtype.kind == "f" and a.size:  # NaN / inf
        b = a.copy()
        b.reshape(-1)[rs.randint(b.size)] = [np.nan, np.inf, -np.inf][rs.randint(3)]
        d[key] = b
        return key == "x"
    elif kind == 5 and a.dtype.kind in "fiu":  # out of range values
        d[key] = a.astype(np.float64) * [255.0, -1.0, 1e12, 2.0][rs.randint(4)] + [0.0, 0.5][rs.randint(2)]
    elif kind == 6 and a.dtype.kind in "iu" and a.size:  # negative or large label
        b = a.astype(np.int64)  # a copy
        v = [-1, -7, 9, 300][rs.randint(4)]
        b.reshape(-1)[rs.randint(b.size)] = v
        d[key] = b
        return key == "y" and v < 0
    elif kind == 7:  # empty
        d[key] = a[:0]
        return key == "x"
    elif kind == 8:  # zero-size image dims
        if a.ndim >= 2:
            d[key] = np.zeros((a.shape[0], 0) + a.shape[2:], a.dtype)
            return key == "x"
    else:  # another key name
        d[key.upper()] = d.pop(key)
        return required
    return False


@st.composite
def _npz_contents(draw):
    """(contents, expected): expected is "load" for an untouched valid file, "refuse" for one surely-invalid
    fault, "either" when the faults may leave the file valid or several interact."""
    rs = np.random.RandomState(draw(st.integers(0, 2 ** 32 - 1)))
    d = _valid(rs)
    n = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
    surely_bad = []
    for _ in range(n):
        with np.errstate(all="ignore"):
            surely_bad.append(_fault(rs, d))
    expected = "load" if n == 0 else ("refuse" if n == 1 and surely_bad[0] else "either")
    return d, expected


def _check_dataset(ds) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[0] == y.shape[0]
        assert np.isfinite(x).all() and (x.size == 0 or (x.min() >= 0.0 and x.max() <= 1.0))
        assert y.dtype == np.int32
        assert y.size == 0 or (y.min() >= 0 and y.max() < ds.num_classes)
    assert ds.x_train.shape[0] >= 1 and ds.x_test.shape[1:] == ds.x_train.shape[1:]
    assert len(ds.class_names) == ds.num_classes >= 1
    if ds.y_train_true is not None:
        assert ds.y_train_true.shape == ds.y_train.shape and ds.y_train_true.max() < ds.num_classes


@FUZZ
@given(drawn=_npz_contents())
def test_npz_loader_accepts_valid_and_refuses_invalid_files(tmp_path, drawn):
    from jaxdistill.data import load_dataset

    contents, expected = drawn
    path = os.path.join(tmp_path, "fuzz.npz")
    np.savez(path, **contents)  # object arrays are pickled here and must be refused on load
    if expected == "refuse":
        with pytest.raises(DataError) as e:
            load_dataset("npz:" + path)
        assert path in str(e.value)
        return
    try:
        ds = load_dataset("npz:" + path)
    except JaxDistillError as e:
        assert expected == "either", f"a valid file was refused: {e}"
        assert isinstance(e, DataError) and str(e)
        return
    _check_dataset(ds)


@FUZZ
@given(blob=st.binary(max_size=400))
def test_npz_loader_refuses_garbage_files(tmp_path, blob):
    from jaxdistill.data import load_dataset

    path = os.path.join(tmp_path, "garbage.npz")
    with open(path, "wb") as f:
        f.write(blob)
    with pytest.raises(DataError):
        load_dataset("npz:" + path)


def test_npz_absurd_label_is_refused(tmp_path):
    from jaxdistill.data import load_dataset

    path = os.path.join(tmp_path, "big.npz")
    y = np.arange(40) % 4
    y[7] = 10 ** 6
    np.savez(path, x=np.random.RandomState(0).rand(40, 4, 4, 1).astype(np.float32), y=y)
    with pytest.raises(DataError, match="1000000"):
        load_dataset("npz:" + path)


def test_npy_file_named_npz_is_refused(tmp_path):
    """A plain .npy array saved under an .npz name (an easy mistake) is a DataError, not an AttributeError."""
    from jaxdistill.data import load_dataset

    path = os.path.join(tmp_path, "array.npz")
    with open(path, "wb") as f:
        np.save(f, np.zeros((4, 4)))
    with pytest.raises(DataError, match="array.npz"):
        load_dataset("npz:" + path)
