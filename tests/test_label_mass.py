"""experiments/label_mass.py: the per-class soft-label mass against a naive loop, and the script on a grid layout."""
import importlib.util
import json
import math
import os

import chex
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("label_mass_under_test", os.path.join(ROOT, "experiments", "label_mass.py"))
lm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lm)


def test_label_mass_equals_a_naive_loop():
    rng = np.random.default_rng(0)
    c, n = 4, 12
    targets, labels = rng.normal(size=(n, c)) * 3, np.repeat(np.arange(c), n // c)
    want = np.zeros((c, c))
    for k in range(c):
        rows = [i for i in range(n) if labels[i] == k]
        for i in rows:
            e = [math.exp(t) for t in targets[i]]
            want[k] += np.array(e) / sum(e) / len(rows)
    got = lm.label_mass(targets, labels, c)
    chex.assert_trees_all_close(got, want, atol=1e-12)
    chex.assert_trees_all_close(got.sum(1), np.ones(c), atol=1e-12)


def test_script_reports_the_mass_on_the_flip_target(tmp_path, capsys):
    d = tmp_path / "fashion_mnist" / "asymmetric_0.4" / "ipc1" / "seed0" / "datm"
    d.mkdir(parents=True)
    targets = np.full((10, 10), -10.0)
    targets[np.arange(10), np.arange(10)] = 0.0
    targets[0, 6] = 0.0  # class 0's one image: half its mass on 6, the class our map flips 0 to
    np.savez(d / "distilled.npz", images=np.zeros((10, 2, 2, 1)), labels=np.arange(10), targets=targets)
    assert lm.main(["--out", str(tmp_path), "--json", str(tmp_path / "m.json")]) == 0
    doc = json.load(open(tmp_path / "m.json"))
    (cell,) = doc["cells"]
    assert cell["cell"] == "fashion_mnist/asymmetric_0.4/ipc1/seed0"
    assert abs(cell["to_flip_target"]["0"] - 0.5) < 1e-3 and cell["to_flip_target"]["2"] < 1e-3
    assert abs(cell["own"][0] - 0.5) < 1e-3 and abs(cell["own"][1] - 1.0) < 1e-3
    assert "0->6 0.50" in capsys.readouterr().out
    assert lm.main(["--out", str(tmp_path / "none")]) == 1
