"""scripts/gpu_checks.sh at tiny shapes on the CPU (TINY=1), limited to two cheap steps with ONLY: the selection
runs exactly those steps, each exits 0 and writes its figures. (All steps at TINY=1 take about 12 min on 2 cores;
that full run is a manual check before a device slot, BUILD_NOTES.)"""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_checks_tiny_selected_steps(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, TINY="1", ONLY="dance_mem_scan_cc1,train1", OUT=str(out))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_checks.sh")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    steps = open(out / "steps.log").read()
    ran = dict(re.findall(r"== \S+ (\S+): exit (\d+) after", steps))
    assert ran == {"dance_mem_scan_cc1": "0", "train1": "0"}, steps
    skipped = set(re.findall(r"== \S+ (\S+): skipped", steps))
    assert {"datm", "whole_run", "rcig_nt", "train8", "det1", "det2"} <= skipped
    assert not (out / "determinism.txt").exists()
    # the memory step's XLA accounting: a positive working set for the one-class-at-a-time scan
    rows = [json.loads(line) for line in open(out / "dance_mem_scan_cc1.log") if line.startswith('{"variant"')]
    assert len(rows) == 1 and rows[0]["variant"] == "scan class_chunk=1" and rows[0]["temp_MB"] > 0
    # the training step's row: one model, timed, FLOPs counted
    row = json.load(open(out / "train1" / "run.json"))["rows"][0]
    assert row["component"] == "train" and row["models"] == 1
    assert row["median_s"] > 0 and row["flops_jaxpr"] > row["flops_matmul"] > 0
