"""experiments/beyond/run_hardsamples.py (finding 4 on a named data set): a tiny digits run with a set already in
--sets, its tables add up (bins and classes to the overall counts), the figure and table are written, and a
finished noise is skipped."""
import importlib.util
import json
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), "..", "experiments", "beyond", "run_hardsamples.py")
_spec = importlib.util.spec_from_file_location("run_hardsamples", _PATH)
rh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rh)


def test_hardsamples_script_on_digits(tmp_path, capsys):
    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.detect import prototype_set

    sets = tmp_path / "sets"
    sets.mkdir()
    data = make_noisy_data(load_dataset("digits"), "symmetric:0.4", seed=0, subset=300, val_fraction=0.1)
    prototype_set(data, 2).save(str(sets / "symmetric_0.4_seed0.npz"))  # found there: nothing is distilled
    out = tmp_path / "hs.json"
    argv = ["--dataset", "digits", "--subset", "300", "--preset", "quick", "--ipc", "2", "--noise", "symmetric:0.4",
            "--k", "1", "--distiller", "prototype", "--sets", str(sets), "--out", str(out), "--fig-dir", str(tmp_path)]
    assert rh.main(argv) == 0
    r = json.load(open(out))["noises"]["symmetric:0.4"]
    ov = r["overall"]
    assert len(r["per_bin"]) == 5 and len(r["per_class"]) == 10
    for part in ("per_bin", "per_class"):
        for f in ("n", "full_correct", "lost"):
            assert sum(e[f] for e in r[part]) == ov[f], (part, f)
    assert ov["n"] == len(data.y_test) and 0 <= ov["lost"] <= ov["full_correct"]
    np.testing.assert_allclose(ov["lost_rate"], ov["lost"] / ov["full_correct"])
    assert r["finding_holds"] == (r["per_bin"][0]["lost_rate"] > r["per_bin"][-1]["lost_rate"])
    assert os.path.getsize(tmp_path / "hardsamples_digits_quick_symmetric_0.4_seed0.png") > 0
    md = (tmp_path / "hs.md").read_text()
    assert "## symmetric:0.4 (seed 0, K=1)" in md and md.startswith("# Finding 4 on digits (quick preset)")
    assert f"| 0 | {r['per_bin'][0]['margin_lo']:.2f}-" in md and "PROTOTYPE set (IPC 2" in md
    assert rh.main(argv) == 0 and "symmetric:0.4: finished, skipped" in capsys.readouterr().out
