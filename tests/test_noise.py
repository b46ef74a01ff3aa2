"""Tests for jaxdistill.noise: the study's realized rates, matrix structure, samplers and every bad input."""
import os

import chex
import numpy as np
import pytest

from jaxdistill.errors import NoiseError
from jaxdistill.noise import (CIFAR100_COARSE_OF_FINE, CIFAR100_SUPERCLASSES, KINDS, NoiseSpec, apply_noise,
                              asymmetric_map, empirical_transition, format_transition, parse_noise_spec,
                              sample_exact, transition_matrix)

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def cifar10_labels():
    return np.load(os.path.join(DATA, "cifar10_train_labels.npy"))


@pytest.fixture(scope="module")
def cifar100_labels():
    return np.load(os.path.join(DATA, "cifar100_train_labels.npy"))


def study_loop(labels, P, seed=0):
    """paper.md's sampler, verbatim: the oracle for the fast sampler."""
    rs = np.random.RandomState(seed)
    noisy = np.empty(len(labels), np.int64)
    for i in range(len(labels)):
        noisy[i] = np.argmax(rs.multinomial(1, P[labels[i]], 1)[0])
    return noisy


# ------------------------------------------------------------------------ the study's realized rates
PAPER_RATES = [
    ("cifar10", 10, "symmetric", 0.2, 0.20076), ("cifar10", 10, "symmetric", 0.4, 0.40084),
    ("cifar10", 10, "symmetric", 0.6, 0.60024), ("cifar10", 10, "symmetric", 0.8, 0.79742),
    ("cifar10", 10, "asymmetric", 0.2, 0.09878), ("cifar10", 10, "asymmetric", 0.4, 0.19746),
    ("cifar10", 10, "asymmetric", 0.6, 0.30204), ("cifar10", 10, "asymmetric", 0.8, 0.40202),
    ("cifar100", 100, "symmetric", 0.2, 0.20108), ("cifar100", 100, "symmetric", 0.4, 0.40224),
    ("cifar100", 100, "symmetric", 0.6, 0.59980), ("cifar100", 100, "symmetric", 0.8, 0.79904),
]


@pytest.mark.parametrize("dataset,C,kind,rate,expected", PAPER_RATES)
def test_realized_rates_match_paper(dataset, C, kind, rate, expected, cifar10_labels, cifar100_labels):
    labels = cifar10_labels if C == 10 else cifar100_labels
    res = apply_noise(labels, f"{kind}:{rate}", C, dataset=dataset, seed=0)
    assert res.noisy.dtype == np.int64 and res.noisy.shape == (50000,)
    assert round(res.realized_rate, 5) == pytest.approx(expected, abs=1e-9)
    assert res.realized_rate == pytest.approx(float(np.mean(res.noisy != labels)))
    assert res.seed == 0 and res.spec == parse_noise_spec(f"{kind}:{rate}")


def _random_matrix(rng, C):
    """Dirichlet rows with exact zeros, a one-hot row, a half/half row and an all-on-last-class row."""
    P = rng.dirichlet(np.full(C, 0.5), size=C)
    P[rng.random((C, C)) < 0.3] = 0.0
    P[:, 0] += 1e-3  # keep every row non-empty
    P /= P.sum(axis=1, keepdims=True)
    P[1] = np.eye(C)[3]
    P[2] = 0.0
    P[2, [0, 1]] = 0.5
    P[3] = np.eye(C)[C - 1]
    return P


@pytest.mark.parametrize("C", [4, 10, 100])
def test_fast_sampler_equals_study_loop(C, cifar100_labels):
    rng = np.random.default_rng(C)
    labels = (cifar100_labels[:3000].astype(np.int64) % C)
    mats = [transition_matrix(f"symmetric:0.37", C), transition_matrix("pairflip:0.45", C), _random_matrix(rng, C)]
    for seed, P in zip((0, 1, 123), mats):
        np.testing.assert_array_equal(sample_exact(labels, P, seed), study_loop(labels, P, seed))


def test_symmetric_empirical_matrix_close_to_expected(cifar10_labels):
    res = apply_noise(cifar10_labels, "symmetric:0.4", 10)
    emp = empirical_transition(cifar10_labels, res.noisy, 10)
    # 5000 samples per row: the binomial std of an entry is <= 0.007
    chex.assert_trees_all_close(emp, res.transition, atol=0.03)


# -------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text,kind,rate,variant,path", [
    ("clean", "clean", None, None, None),
    ("symmetric:0.2", "symmetric", 0.2, None, None),
    ("asymmetric:0", "asymmetric", 0.0, None, None),
    ("pairflip:0.45", "pairflip", 0.45, None, None),
    ("instance:0.3", "instance", 0.3, None, None),
    ("natural:worse_label", "natural", None, "worse_label", None),
    ("matrix:/tmp/a:b/T.npy", "matrix", None, None, "/tmp/a:b/T.npy"),
])
def test_parse_and_round_trip(text, kind, rate, variant, path):
    spec = parse_noise_spec(text)
    assert (spec.kind, spec.rate, spec.variant, spec.path) == (kind, rate, variant, path)
    assert str(spec) == (text if text != "asymmetric:0" else "asymmetric:0.0")
    assert parse_noise_spec(str(spec)) == spec


def test_parse_normalizes_and_passes_specs_through():
    spec = parse_noise_spec("  Symmetric:.25 ")
    assert spec == NoiseSpec("symmetric", rate=0.25) and str(spec) == "symmetric:0.25"
    assert parse_noise_spec(spec) is spec


@pytest.mark.parametrize("text,needle", [
    ("symmetric:1.0", "1.0"), ("symmetric:1", "'1'"), ("asymmetric:-0.1", "-0.1"), ("pairflip:nan", "nan"),
    ("instance:inf", "inf"), ("symmetric:abc", "abc"),
])
def test_bad_rates_name_value_and_range(text, needle):
    with pytest.raises(NoiseError, match=r"\[0, 1\)") as e:
        parse_noise_spec(text)
    assert needle in str(e.value)


def test_bad_rate_in_constructor():
    with pytest.raises(NoiseError, match="1.5"):
        NoiseSpec("symmetric", rate=1.5)


def test_unknown_kind_names_allowed_kinds():
    with pytest.raises(NoiseError, match="'foo'") as e:
        parse_noise_spec("foo:0.2")
    for k in KINDS:
        assert k in str(e.value)


@pytest.mark.parametrize("text", ["symmetric", "symmetric:", "natural:", "matrix: ", "clean:0.2"])
def test_missing_or_extra_argument(text):
    with pytest.raises(NoiseError):
        parse_noise_spec(text)


# ----------------------------------------------------------------------------------------- matrices
def _row_stochastic(P):
    assert np.all(P >= 0)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)


def test_symmetric_matrix_entries():
    P = transition_matrix("symmetric:0.4", 5)
    chex.assert_shape(P, (5, 5))
    _row_stochastic(P)
    expected = np.full((5, 5), 0.1)
    np.fill_diagonal(expected, 0.6)
    chex.assert_trees_all_close(P, expected, atol=1e-15)


def test_pairflip_structure():
    P = transition_matrix("pairflip:0.3", 6)
    _row_stochastic(P)
    for i in range(6):
        assert P[i, i] == pytest.approx(0.7) and P[i, (i + 1) % 6] == pytest.approx(0.3)
        assert np.count_nonzero(P[i]) == 2
    assert P[5, 0] == pytest.approx(0.3)  # wraps around


def test_clean_is_identity_and_clean_noise_keeps_labels(cifar10_labels):
    np.testing.assert_array_equal(transition_matrix("clean", 7), np.eye(7))
    res = apply_noise(cifar10_labels[:100], "clean", 10)
    np.testing.assert_array_equal(res.noisy, cifar10_labels[:100])
    assert res.realized_rate == 0.0


def test_asymmetric_cifar10_entries():
    P = transition_matrix("asymmetric:0.3", 10, dataset="cifar10")
    _row_stochastic(P)
    for s, t in [(9, 1), (2, 0), (3, 5), (5, 3), (4, 7)]:
        assert P[s, s] == pytest.approx(0.7) and P[s, t] == pytest.approx(0.3)
        assert np.count_nonzero(P[s]) == 2
    for c in (0, 1, 6, 7, 8):
        np.testing.assert_array_equal(P[c], np.eye(10)[c])
    np.testing.assert_array_equal(transition_matrix("asymmetric:0.3", 10, dataset="cifar10_n"), P)


def test_asymmetric_cifar10_leaves_other_classes_untouched(cifar10_labels):
    res = apply_noise(cifar10_labels, "asymmetric:0.4", 10, dataset="cifar10")
    y, z = cifar10_labels.astype(np.int64), res.noisy
    clean = np.isin(y, [0, 1, 6, 7, 8])
    np.testing.assert_array_equal(z[clean], y[clean])
    flipped = z != y
    targets = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    assert all(targets[a] == b for a, b in zip(y[flipped], z[flipped]))
    # half the classes flip at rate 0.4: overall about 0.2, per source class about 0.4
    for s in targets:
        assert abs(np.mean(z[y == s] != s) - 0.4) < 0.03


def test_cifar100_superclasses_cover_each_class_once():
    groups = [fines for _, fines in CIFAR100_SUPERCLASSES]
    assert len(groups) == 20 and all(len(g) == 5 for g in groups)
    assert sorted(c for g in groups for c in g) == list(range(100))
    assert all(list(g) == sorted(g) for g in groups)
    # independent oracle: the coarse label of each fine label as shipped with CIFAR-100
    coarse = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
              0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4,
              18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19,
              5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13]
    np.testing.assert_array_equal(CIFAR100_COARSE_OF_FINE, coarse)


def test_asymmetric_cifar100_cyclic_within_superclass():
    P = transition_matrix("asymmetric:0.2", 100, dataset="cifar100")
    _row_stochastic(P)
    nxt = asymmetric_map("cifar100")
    assert sorted(nxt) == list(range(100))
    for k in range(100):
        assert P[k, k] == pytest.approx(0.8) and P[k, nxt[k]] == pytest.approx(0.2)
        assert CIFAR100_COARSE_OF_FINE[nxt[k]] == CIFAR100_COARSE_OF_FINE[k]
        c, seen = k, set()
        for _ in range(5):
            seen.add(c)
            c = nxt[c]
        assert c == k and len(seen) == 5  # a 5-cycle
    assert nxt[4] == 30 and nxt[95] == 4 and nxt[0] == 51 and nxt[83] == 0


@pytest.mark.parametrize("dataset,pairs,clean", [
    ("fashion_mnist", [(0, 6), (6, 0), (2, 4), (5, 7), (9, 7)], [1, 3, 4, 7, 8]),
    ("digits", [(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)], [0, 1, 4, 8, 9]),
    ("mnist", [(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)], [0, 1, 4, 8, 9]),
])
def test_asymmetric_other_datasets(dataset, pairs, clean):
    P = transition_matrix("asymmetric:0.25", 10, dataset=dataset)
    _row_stochastic(P)
    for s, t in pairs:
        assert P[s, s] == pytest.approx(0.75) and P[s, t] == pytest.approx(0.25)
    for c in clean:
        np.testing.assert_array_equal(P[c], np.eye(10)[c])


def test_asymmetric_unknown_dataset_names_known_ones():
    with pytest.raises(NoiseError, match="'svhn'") as e:
        transition_matrix("asymmetric:0.2", 10, dataset="svhn")
    for name in ("cifar10", "cifar100", "fashion_mnist", "digits"):
        assert name in str(e.value)
    with pytest.raises(NoiseError, match="dataset"):
        transition_matrix("asymmetric:0.2", 10)
    with pytest.raises(NoiseError, match="100 classes"):
        transition_matrix("asymmetric:0.2", 10, dataset="cifar100")


def test_instance_and_natural_have_no_fixed_matrix():
    for s in ("instance:0.2", "natural:aggre_label"):
        with pytest.raises(NoiseError, match="no fixed transition matrix"):
            transition_matrix(s, 10)


# ------------------------------------------------------------------------------------ matrix files
def test_matrix_file_npy_and_csv(tmp_path, cifar10_labels):
    P = _random_matrix(np.random.default_rng(0), 10)
    np.save(tmp_path / "T.npy", P)
    np.savetxt(tmp_path / "T.csv", P, delimiter=",", fmt="%.17g")
    np.savetxt(tmp_path / "T.txt", P, fmt="%.17g")
    for name in ("T.npy", "T.csv", "T.txt"):
        chex.assert_trees_all_close(transition_matrix(f"matrix:{tmp_path / name}", 10), P, atol=0, rtol=0)
    res = apply_noise(cifar10_labels[:2000], f"matrix:{tmp_path / 'T.npy'}", 10, seed=5)
    np.testing.assert_array_equal(res.noisy, study_loop(cifar10_labels[:2000].astype(np.int64), P, 5))


def test_matrix_not_row_stochastic(tmp_path):
    P = np.eye(4)
    P[2, 3] = 0.5
    np.save(tmp_path / "T.npy", P)
    with pytest.raises(NoiseError, match=r"row-stochastic.*rows \[2\] sum to \[1.5\]"):
        transition_matrix(f"matrix:{tmp_path / 'T.npy'}", 4)


def test_matrix_wrong_size(tmp_path):
    np.save(tmp_path / "T.npy", np.eye(3))
    with pytest.raises(NoiseError, match=r"shape \(3, 3\).*\(4, 4\)"):
        transition_matrix(f"matrix:{tmp_path / 'T.npy'}", 4)


@pytest.mark.parametrize("bad,needle", [(-0.5, "negative"), (np.nan, "non-finite")])
def test_matrix_negative_or_nan(tmp_path, bad, needle):
    P = np.eye(3)
    P[0] = [1.5, bad, 0.0] if bad < 0 else [bad, 1.0, 0.0]
    np.save(tmp_path / "T.npy", P)
    with pytest.raises(NoiseError, match=needle):
        transition_matrix(f"matrix:{tmp_path / 'T.npy'}", 3)


def test_matrix_missing_file_or_bad_suffix(tmp_path):
    with pytest.raises(NoiseError, match="does not exist"):
        transition_matrix(f"matrix:{tmp_path / 'nope.npy'}", 3)
    with pytest.raises(NoiseError, match=r"\.json.*\.npy"):
        transition_matrix(f"matrix:{tmp_path / 'T.json'}", 3)


# ------------------------------------------------------------------------------------ label checks
def test_labels_out_of_range_named():
    with pytest.raises(NoiseError, match=r"\[0, 10\).*\[10, 12\]"):
        apply_noise(np.array([0, 3, 10, 12, 1]), "symmetric:0.2", 10)
    with pytest.raises(NoiseError, match=r"\[-1\]"):
        apply_noise(np.array([0, -1]), "symmetric:0.2", 10)


@pytest.mark.parametrize("labels,needle", [
    (np.array([], np.int64), "empty"), (np.zeros((2, 3), np.int64), "1-D"), (np.array([0.0, 1.0]), "integer"),
])
def test_bad_label_arrays(labels, needle):
    with pytest.raises(NoiseError, match=needle):
        apply_noise(labels, "symmetric:0.2", 10)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_bad_seed(seed):
    with pytest.raises(NoiseError, match="seed"):
        apply_noise(np.array([0, 1]), "symmetric:0.2", 10, seed=seed)


# ---------------------------------------------------------------------------------- instance noise
@pytest.fixture(scope="module")
def tiny_images():
    rng = np.random.default_rng(0)
    return rng.random((5000, 4, 4, 3)).astype(np.float32), rng.integers(0, 10, 5000)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_instance_noise_rate(rate, tiny_images):
    x, y = tiny_images
    res = apply_noise(y, f"instance:{rate}", 10, images=x, seed=3)
    # truncation at 0 lifts the mean flip rate by <= 0.006 for R >= 0.2; sampling std ~0.007
    assert abs(res.realized_rate - rate) < 0.03
    chex.assert_trees_all_close(res.transition, empirical_transition(y, res.noisy, 10))
    np.testing.assert_allclose(res.transition.sum(axis=1), 1.0)


def test_instance_noise_deterministic_and_image_dependent(tiny_images):
    x, y = tiny_images
    a = apply_noise(y, "instance:0.4", 10, images=x, seed=7).noisy
    b = apply_noise(y, "instance:0.4", 10, images=x.copy(), seed=7).noisy
    np.testing.assert_array_equal(a, b)
    c = apply_noise(y, "instance:0.4", 10, images=x, seed=8).noisy
    assert np.mean(a != c) > 0.1
    # same labels, other images: the flip targets follow the images
    d = apply_noise(y, "instance:0.4", 10, images=x[::-1].copy(), seed=7).noisy
    assert np.mean(a != d) > 0.1
    # flip targets are not uniform: per class, the most frequent target takes well over 1/9 of flips
    flipped = a != y
    shares = [np.bincount(a[flipped & (y == k)], minlength=10).max() / max((flipped & (y == k)).sum(), 1)
              for k in range(10)]
    assert np.mean(shares) > 0.2


def test_instance_rate_zero_is_clean(tiny_images):
    x, y = tiny_images
    np.testing.assert_array_equal(apply_noise(y, "instance:0", 10, images=x).noisy, y)


def test_instance_needs_images(tiny_images):
    _, y = tiny_images
    with pytest.raises(NoiseError, match="images"):
        apply_noise(y, "instance:0.2", 10)
    with pytest.raises(NoiseError, match="4 samples"):
        apply_noise(y, "instance:0.2", 10, images=np.zeros((4, 2, 2, 1)))
    bad = np.zeros((len(y), 2, 2, 1))
    bad[np.flatnonzero(y == 3)[0], 0, 0, 0] = np.nan
    with pytest.raises(NoiseError, match="class 3 contain non-finite"):
        apply_noise(y, "instance:0.2", 10, images=bad)


# ----------------------------------------------------------------------------------- natural noise
def test_natural_noise_uses_given_labels():
    y = np.array([0, 1, 2, 2, 1, 0])
    nat = {"aggre_label": np.array([0, 1, 2, 0, 1, 1]), "worse_label": np.array([1, 1, 0, 0, 2, 0])}
    res = apply_noise(y, "natural:aggre_label", 3, natural=nat)
    np.testing.assert_array_equal(res.noisy, nat["aggre_label"])
    assert res.realized_rate == pytest.approx(2 / 6)
    chex.assert_trees_all_close(res.transition, np.array([[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]]))


def test_natural_unknown_variant_names_available():
    y = np.array([0, 1])
    with pytest.raises(NoiseError, match=r"'random_label9'.*\['aggre_label', 'worse_label'\]"):
        apply_noise(y, "natural:random_label9", 2, natural={"worse_label": y, "aggre_label": y})
    with pytest.raises(NoiseError, match=r"available variants: \[\]"):
        apply_noise(y, "natural:aggre_label", 2)
    with pytest.raises(NoiseError, match="shape"):
        apply_noise(y, "natural:aggre_label", 2, natural={"aggre_label": np.array([0, 1, 1])})


# ------------------------------------------------------------------------------- helpers / display
def test_empirical_transition_against_loop():
    rng = np.random.default_rng(1)
    y, z = rng.integers(0, 5, 400), rng.integers(0, 5, 400)
    y[y == 4] = 3  # class 4 absent: identity row
    expected = np.zeros((5, 5))
    for a, b in zip(y, z):
        expected[a, b] += 1
    for a in range(5):
        expected[a] = expected[a] / expected[a].sum() if expected[a].sum() else np.eye(5)[a]
    chex.assert_trees_all_close(empirical_transition(y, z, 5), expected, atol=1e-15)


def test_format_transition_dense_and_sparse():
    P = transition_matrix("asymmetric:0.4", 10, dataset="cifar10")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    text = format_transition(P, names)
    lines = text.splitlines()
    assert len(lines) == 12 and "automobi" in lines[0]
    truck = lines[-1].split("|")[1].split()
    assert truck == [".", "0.40", ".", ".", ".", ".", ".", ".", ".", "0.60"]
    sparse = format_transition(transition_matrix("pairflip:0.2", 30))
    assert len(sparse.splitlines()) == 30 and sparse.splitlines()[29].split() == ["29", "->", "0:", "0.20,", "29:",
                                                                                   "0.80"]
    with pytest.raises(NoiseError, match="3 names"):
        format_transition(np.eye(4), ["a", "b", "c"])
