"""experiments/budget.py: the pure parts (point parsing, the per-method summary written to cpu_preset_clean.json)."""
import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "experiments", "budget.py")
_spec = importlib.util.spec_from_file_location("budget", _PATH)
bd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bd)


def test_parse_point_and_key():
    p = bd.parse_point("iterations=400,factor=2,norm=batch")
    assert p == {"iterations": 400, "factor": 2, "norm": "batch"}
    assert bd.point_key("dance", p) == "dance:factor=2,iterations=400,norm=batch"


def _row(method, point, acc, sel=None):
    r = {"method": method, "point": point, "distill_s": 10.0, "eval": {"acc_mean": acc, "acc_std": 0.01}}
    if sel is not None:
        r["selected"] = {"acc_mean": sel}
    return r


def test_clean_summary_takes_each_methods_best_point_and_its_margin():
    doc = {"setting": {"noise": "clean"},
           "controls": {"random_clean": {"acc_mean": 0.76, "acc_std": 0.01},
                        "random_noisy": {"acc_mean": 0.75, "acc_std": 0.01}},
           "points": {"dance:iterations=100": _row("dance", {"iterations": 100}, 0.79, 0.75),
                      "dance:iterations=400": _row("dance", {"iterations": 400}, 0.815, 0.74),
                      "rcig:iterations=200": _row("rcig", {"iterations": 200}, 0.755)}}
    e = bd.clean_summary(doc)["entries"]
    assert e["dance"]["point"] == "dance:iterations=400"
    assert e["dance"]["vs_random_clean"] == pytest.approx(5.5)
    assert e["dance"]["meets_target"] is True
    assert e["dance/selected"]["acc_mean"] == 0.74            # the best point's own starting set
    assert e["rcig"]["vs_random_clean"] == pytest.approx(-0.5) and e["rcig"]["meets_target"] is False
    assert e["control/random_noisy"]["acc_mean"] == 0.75
    assert bd.clean_summary({**doc, "setting": {"noise": "symmetric:0.4"}}) is None   # clean data only
