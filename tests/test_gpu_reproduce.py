"""scripts/gpu_reproduce.sh at tiny shapes on the CPU: a slot cut short packs its state, the next slot unpacks it
and finishes, and a slot started from a finished state recomputes nothing."""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _slot(tmp_path, name, budget, restore=None):
    out, state = tmp_path / f"out_{name}", tmp_path / f"state_{name}"
    env = dict(os.environ, TINY="1", BUDGET_S=str(budget), OUT=str(out), STATE=str(state),
               RESTORE=str(restore or tmp_path / "none"), PYTHONPATH=ROOT)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_reproduce.sh")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return out, state, open(out / "repro.log").read()


@pytest.mark.slow
def test_gpu_reproduce_resumes_across_slots(tmp_path):
    # slot 1: stopped after 2 s (nothing finished), its state still packed
    out1, _, log1 = _slot(tmp_path, "1", 2)
    assert "stopped; run again to continue" in log1 and glob.glob(str(out1 / "state.tgz.part-*"))
    # slot 2 continues from slot 1's parts and finishes both stages
    out2, state2, log2 = _slot(tmp_path, "2", 600, restore=out1)
    assert "restored state from" in log2 and "finished" in log2
    summary = json.load(open(out2 / "summary.json"))
    assert set(summary) == {"clean", "symmetric_0.4"}
    for stage in summary.values():
        for key in ("dance/standard", "dance/dance", "control/random_noisy/standard", "control/selected_dance/standard"):
            assert 0.0 <= stage[key]["acc"] <= 100.0, key
        assert stage["published_dance"] == pytest.approx(86.3)
    assert "baseline_best" in summary["symmetric_0.4"] and "baseline_clean" in summary["symmetric_0.4"]
    # slot 3 from slot 2's parts: every stage is loaded, the figures are the same
    out3, _, log3 = _slot(tmp_path, "3", 600, restore=out2)
    assert json.load(open(out3 / "summary.json")) == summary
