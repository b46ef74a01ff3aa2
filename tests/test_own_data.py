"""A user's own data (`npz:PATH`) with every method and every command, as a new user would run them.

The settings of a data set without a named setting are derived from the data (`jaxdistill/configs/derive.py`):
the rule itself is tested here on its own, then each command runs through the CLI entry point in-process on a
small npz file (12x12 RGB uint8 images of 3 classes through `denoise` with every method, digits without `y_true`
through `distill`, `detect` and `repair`), with tiny budgets
(`--set`), checking the files, the accuracies, the recorded derivation and the distilled set's shape. A bad
setting fails before any work (before the baseline trains). The end-to-end runs spend their time compiling
(about 40-60 s per method on 2 cores), so they are marked slow.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxdistill import cli
from jaxdistill.configs import derive
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.pipeline import TINY_OVERRIDES

METHODS = ("datm", "dance", "rcig")


class _Data:
    """What the derivation reads from a NoisyData: images, given labels, class count."""

    def __init__(self, shape, counts):
        self.num_classes = len(counts)
        self.y_noisy = np.repeat(np.arange(len(counts)), counts)
        self.x_train = np.zeros((len(self.y_noisy), *shape), np.float32)


def _digits_npz(path, n_train=240, n_test=60, y_true=True) -> str:
    d = np.load(os.path.join(os.path.dirname(derive.__file__), "..", "data", "digits_8x8.npz"))
    x, y = d["images"].astype(np.float32) / 16.0, d["target"].astype(np.int64)
    rng = np.random.default_rng(0)
    given = y[:n_train].copy()
    flip = rng.random(n_train) < 0.2
    given[flip] = rng.integers(0, 10, flip.sum())
    arrs = dict(x=x[:n_train], y=given, x_test=x[n_train:n_train + n_test], y_test=y[n_train:n_train + n_test])
    if y_true:
        arrs["y_true"] = y[:n_train]
    np.savez(path, **arrs)
    return str(path)


def _rgb_npz(path, per_class=30, classes=3, side=12) -> str:
    """12x12x3 uint8 images, 3 classes told apart by colour; the given labels `y` have 20% of them flipped and
    `y_true` keeps the colours' classes."""
    rng = np.random.default_rng(1)

    def make(n):
        y = np.repeat(np.arange(classes), n)
        colour = np.eye(3)[y % 3] * 0.5 + 0.25
        x = np.clip(colour[:, None, None, :] + 0.15 * rng.standard_normal((len(y), side, side, 3)), 0, 1)
        return (x * 255).astype(np.uint8), y

    x, y = make(per_class)
    xt, yt = make(10)
    given = y.copy()
    flip = rng.random(len(y)) < 0.2
    given[flip] = (y[flip] + 1 + rng.integers(0, classes - 1, flip.sum())) % classes
    np.savez(path, x=x, y=given, y_true=y, x_test=xt, y_test=yt)
    return str(path)


def _sets(method: str) -> list[str]:
    return [a for k, v in TINY_OVERRIDES[method].items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _run(capsys, *argv) -> str:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    return out


def _accs_ok(results: dict) -> None:
    assert results
    for name, r in results.items():
        if "acc_mean" in r:
            assert 0.0 <= r["acc_mean"] <= 1.0, name
            assert all(0.0 <= a <= 1.0 for a in r["accs"]), name


# ------------------------------------------------------------------------------------------------
# the derivation rule
# ------------------------------------------------------------------------------------------------

def test_templates_by_channels_resolution_and_classes():
    assert derive.template_for((8, 8, 1), 10) == "digits"
    assert derive.template_for((28, 28, 1), 10) == "fashion_mnist"
    assert derive.template_for((32, 32, 1), 10) == "fashion_mnist"  # one channel: the one-channel sets first
    assert derive.template_for((12, 12, 3), 3) == "cifar10"
    assert derive.template_for((32, 32, 3), 100) == "cifar100"
    assert derive.template_for((64, 64, 3), 200) == "tiny_imagenet"
    assert derive.template_for((20, 17, 5), 7) == "fashion_mnist"  # no 5-channel set: nearest resolution
    for name in ("digits", "cifar10", "cifar10_n", "tiny_imagenet"):
        assert derive.derive(name, None, 10) is None  # named sets keep their own settings
    with pytest.raises(ConfigError, match="no named setting"):
        derive.derive("npz:x.npz", None, 10)


def test_caps_for_a_small_three_class_set():
    """90 RGB 12x12 images in 3 classes of 40, 30, 20: IPC and batches are capped by the set's size."""
    data = _Data((12, 12, 3), [40, 30, 20])
    d = derive.derive("npz:mine.npz", data, 50)
    assert (d.template, d.ipc, d.ipc_requested, d.smallest_class, d.n_train) == ("cifar10", 20, 50, 20, 90)
    rec = d.to_dict("quick")
    assert rec["image_shape"] == [12, 12, 3] and rec["num_classes"] == 3 and rec["template"] == "cifar10"
    assert rec["ipc"] == 20 and rec["ipc_requested"] == 50 and "capped" in rec["ipc_note"]
    for preset in ("quick", "cpu", "paper"):
        cfgs = {m: derive.derived_method_config(m, d, preset) for m in METHODS}
        for m, c in cfgs.items():
            assert (c.dataset, c.ipc, c.preset) == ("npz:mine.npz", 20, preset), (m, preset)
            assert c.depth <= derive.max_depth((12, 12, 3)) == 3
        assert cfgs["datm"].batch_syn <= 20 * 3 and cfgs["datm"].expert_batch <= 90
        assert cfgs["dance"].batch_real <= 20 and cfgs["dance"].pretrain_batch <= 90
        assert cfgs["dance"].mean is None and cfgs["rcig"].mean is None  # fitted on the data, not CIFAR's
        assert cfgs["rcig"].real_batch <= 90
        assert derive.baseline_budget_for("npz:mine.npz", preset, data).batch_size <= 90
    assert derive.derived_method_config("dance", d, "quick").batch_real == 20  # the template's 64 was capped
    assert derive.derived_method_config("datm", d, "quick").batch_syn == 60
    # DATM's batch_syn must divide the C*ipc synthetic images: 3 x 50 = 150 -> 75, not the template's 100
    big = derive.derive("npz:m", _Data((12, 12, 3), [60, 60, 60]), 50)
    assert derive.derived_method_config("datm", big, "quick").batch_syn == 75
    # the paper tables hold IPC 1, 10, 50: the nearest row lends its values
    assert derive.derive("npz:m", data, 3).template_ipc("paper") == 1
    assert derive.derive("npz:m", data, 7).template_ipc("paper") == 10


def test_unknown_shapes_still_get_a_setting():
    for shape, counts in [((5, 7, 2), [6, 6, 6, 6]), ((3, 3, 1), [4, 5]), ((40, 40, 4), [3] * 12),
                          ((100, 60, 3), [2] * 5)]:
        data = _Data(shape, counts)
        d = derive.derive("npz:odd.npz", data, 10)
        assert d.ipc == min(counts) and d.template in derive.NAMED
        for preset in ("quick", "cpu", "paper"):
            for m in METHODS:
                c = derive.derived_method_config(m, d, preset)
                assert 1 <= c.depth <= derive.max_depth(shape) and c.ipc == min(counts)
    with pytest.raises(DataError, match=r"class\(es\) \[1\] of 3 have no training image"):
        derive.derive("npz:gap.npz", _Data((8, 8, 1), [3, 0, 2]), 1)


# ------------------------------------------------------------------------------------------------
# every setting is resolved before any work
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,match", [
    ({"dance": {"iterationz": 3}}, ["'iterationz'", "known fields", "iterations"]),
    ({"rcig": {"preprocess": "zca"}}, ["preprocess='zca'", "zca_rcig"]),
    ({"eval": {"stepz": 3}}, ["'stepz'", "evaluation train config", "steps"]),
    ({"baseline": {"widht": 3}}, ["'widht'", "baseline config", "width"]),
    ({"datm": {"batch_syn": 7}}, ["batch_syn=7", "100 synthetic images", "allowed: [1, 2, 4, 5, 10, 20, 25, 50, 100]"]),
])
def test_bad_setting_fails_before_the_baseline(capsys, tmp_path, monkeypatch, overrides, match):
    import jaxdistill.baseline as baseline

    def no_baseline(*a, **kw):
        raise AssertionError("the baseline trained before the settings were checked")

    monkeypatch.setattr(baseline, "run_baseline", no_baseline)
    path = _digits_npz(tmp_path / "d.npz")
    out = tmp_path / "o"
    rc = cli.main(["denoise", "--dataset", f"npz:{path}", "--methods", "datm,dance,rcig", "--out", str(out),
                   "--set", f"overrides={json.dumps(overrides)}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("jaxdistill denoise: error: ") and len(err.strip().splitlines()) == 1, err
    for m in match:
        assert m in err, (m, err)
    assert not os.path.exists(out / "stages" / "baseline.json")


# ------------------------------------------------------------------------------------------------
# every command on a user's npz
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_denoise_all_three_methods_on_own_rgb_npz(capsys, tmp_path):
    """Every method through `denoise`, both protocols, on 3-channel uint8 images of a shape no named set has."""
    path = _rgb_npz(tmp_path / "rgb.npz")
    out = tmp_path / "run"
    text = _run(capsys, "denoise", "--dataset", f"npz:{path}", "--methods", "datm,dance,rcig", "--ipc", "2",
                "--k", "1", "--noise", "clean", "--controls", "random_noisy", "--protocols", "both", "--out",
                str(out), "--set", f"overrides={json.dumps(TINY_OVERRIDES)}")
    assert "template cifar10" in text
    doc = json.load(open(out / "results.json"))
    d = doc["derived_from"]
    assert (d["image_shape"], d["num_classes"], d["template"], d["ipc"]) == ([12, 12, 3], 3, "cifar10", 2)
    assert d["n_train"] == 81  # 90 less the 10% noisy validation split
    res = doc["results"]
    for name in ("baseline_last", "baseline_best", "baseline_clean", "control/random_noisy/standard",
                 *(f"{m}/{p}" for m in METHODS for p in ("standard", m))):
        assert name in res, name
    _accs_ok(res)
    from jaxdistill.methods.base import DistilledSet

    for m in METHODS:
        ds = DistilledSet.load(out / m / "distilled.npz")
        assert ds.images.shape == (2 * 3, 12, 12, 3) and sorted(set(ds.labels.tolist())) == [0, 1, 2], m
        assert json.load(open(out / "stages" / f"distill_{m}.json"))["config"]["dataset"] == f"npz:{path}"
    for f in ("report.md", "noise.png", "config.json"):
        assert os.path.getsize(out / f) > 0


@pytest.mark.slow
def test_distill_on_own_npz_without_true_labels(capsys, tmp_path):
    """`distill` with its own evaluation protocol on one-channel images and only the given labels."""
    path = _digits_npz(tmp_path / "d.npz", y_true=False)
    out = tmp_path / "dance"
    _run(capsys, "distill", "--method", "dance", "--dataset", f"npz:{path}", "--noise", "symmetric:0.2",
         "--ipc", "2", "--k", "1", "--eval", "own", "--out", str(out), *_sets("dance"))
    doc = json.load(open(out / "results.json"))
    d = doc["derived_from"]
    assert (d["image_shape"], d["num_classes"], d["n_train"], d["template"]) == ([8, 8, 1], 10, 240, "digits")
    assert doc["config"]["method_config"]["dataset"] == f"npz:{path}" and doc["config"]["ipc"] == 2
    _accs_ok(doc["results"])
    assert list(doc["results"]) == ["dance/dance"]
    from jaxdistill.methods.base import DistilledSet

    ds = DistilledSet.load(out / "distilled.npz")
    assert ds.images.shape == (2 * 10, 8, 8, 1)
    assert json.load(open(out / "config.json"))["dataset"] == f"npz:{path}"


@pytest.mark.slow
def test_detect_and_repair_on_own_npz(capsys, tmp_path):
    """detect, then repair into the same --out: repair loads the set detect distilled (same run), scores the
    labels and trains with its default rule (forward correction from the anchor's most confident predictions)
    on the derived baseline."""
    path = _digits_npz(tmp_path / "d.npz", y_true=False)
    out = tmp_path / "o"
    common = ["--method", "dance", "--dataset", f"npz:{path}", "--noise", "clean", "--ipc", "2", "--k", "1",
              "--out", str(out), *_sets("dance")]
    _run(capsys, "detect", *common, "--no-cleanlab")
    doc = json.load(open(out / "results.json"))
    assert doc["derived_from"]["template"] == "digits" and doc["derived_from"]["image_shape"] == [8, 8, 1]
    assert doc["config"]["command"] == "detect" and doc["results"]["distilled"]["flagged"] >= 0
    rows = open(out / "label_issues.csv").read().splitlines()
    assert rows[0].startswith("rank,index,given_label") and len(rows) == 241  # header + every training image

    _run(capsys, "repair", *common)
    doc = json.load(open(out / "results.json"))
    assert doc["config"]["command"] == "repair" and doc["derived_from"]["num_classes"] == 10
    assert doc["config"]["repair"]["train"]["train"]["batch_size"] <= 240
    _accs_ok(doc["results"])
    assert {"repair", "baseline_last", "distilled"} <= set(doc["results"])
    assert doc["config"]["repair"]["rule"] == "forward_confident"
