"""Cells that outlive a session (issue 30): every finished stage is mirrored to a stage store and a fresh run
directory takes the stages it lacks from there; a changed baseline retrains the baseline stage alone; the grid
runs baseline-only passes, commits each stored stage, and aggregates a stored baseline beside kept results."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdistill.errors import ConfigError
from jaxdistill.pipeline import TINY_OVERRIDES, DenoiseConfig, run_denoise

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import grid  # noqa: E402
import grid_run  # noqa: E402


def _cfg(**kw):
    base = dict(dataset="digits", noise="symmetric:0.4", methods=("dance",), ipc=1, preset="quick", k=1,
                subset=300, overrides={p: v for p, v in TINY_OVERRIDES.items() if p in ("baseline", "eval", "dance")},
                protocols=("standard",), controls=("random_noisy",))
    base.update(kw)
    return DenoiseConfig(**base)


def _boom(*a, **k):
    raise AssertionError("a stage kept in the store was recomputed")


@pytest.mark.slow
def test_stages_survive_the_run_directory(tmp_path, monkeypatch):
    import shutil

    import jaxdistill.baseline as b
    import jaxdistill.evaluate as e
    import jaxdistill.methods as m

    run, store = str(tmp_path / "run"), str(tmp_path / "store")
    put = []
    # 1. one stage (the baseline) in one session ...
    st = run_denoise(_cfg(), run, progress=False, stage_mirror=store, on_stage=put.append, only=("baseline",))
    assert sorted(os.listdir(os.path.join(store, "stages"))) == ["baseline.json"]
    assert put == [[os.path.join(store, "config.json"), os.path.join(store, "stages", "baseline.json")]]
    assert json.load(open(os.path.join(store, "stages", "baseline.json")))["results"] == st["baseline"]["results"]
    # 2. ... its run directory is lost (a fresh checkout); the next run trains only what is missing
    shutil.rmtree(run)
    real_baseline = b.run_baseline
    monkeypatch.setattr(b, "run_baseline", _boom)
    doc = run_denoise(_cfg(), run, progress=False, stage_mirror=store, on_stage=put.append)
    kept = sorted(os.listdir(os.path.join(store, "stages")))
    assert kept == ["baseline.json", "distill_dance.json", "eval_control_random_noisy_standard.json",
                    "eval_dance_standard.json"]
    assert os.path.exists(os.path.join(store, "dance", "distilled.npz"))  # the distill stage brings its set
    assert [os.path.basename(p) for p in put[1]] == ["config.json", "distilled.npz", "initial.npz",
                                                    "distill_dance.json"]
    np.testing.assert_allclose(doc["results"]["baseline_last"]["accs"], st["baseline"]["results"]["baseline_noisy"]["accs"])
    # 3. lost again: nothing is recomputed, and the results are the same
    shutil.rmtree(run)
    monkeypatch.setattr(e, "evaluate", _boom)
    monkeypatch.setattr(m, "distill", _boom)
    doc2 = run_denoise(_cfg(), run, progress=False, stage_mirror=store)
    assert json.dumps(doc2["results"], sort_keys=True) == json.dumps(doc["results"], sort_keys=True)
    # 4. a store made by another config is refused, not mixed in
    with pytest.raises(ConfigError, match="different config"):
        run_denoise(_cfg(seed=1), str(tmp_path / "run2"), progress=False, stage_mirror=store)
    # 5. the preset's baseline changed (a memorising schedule): the baseline stage alone is retrained
    calls = []

    def counted(*a, **k):
        calls.append(a[1])
        return real_baseline(*a, **k)

    monkeypatch.setattr(b, "run_baseline", counted)
    real_cfg = b.get_baseline_config
    monkeypatch.setattr(b, "get_baseline_config", lambda *a, **k: dataclasses.replace(
        real_cfg(*a, **k), memorise=b.MemoriseConfig(max_epochs=3, min_epochs=1, decay_epochs=2)))
    doc3 = run_denoise(_cfg(), run, progress=False, stage_mirror=store)
    assert len(calls) == 1 and calls[0].memorise.max_epochs == 3
    assert doc3["results"]["baseline_last"]["schedule"] == "memorise"
    same = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731 (a fresh stage holds tuples, a read one lists)
    assert same(doc3["results"]["dance/standard"]) == same(doc["results"]["dance/standard"])
    stored = json.load(open(os.path.join(store, "stages", "baseline.json")))
    assert stored["config"]["memorise"]["max_epochs"] == 3
    # a baseline stage from before configs were recorded (no "config"): kept for a fixed schedule, retrained
    # for a memorising one
    monkeypatch.setattr(b, "get_baseline_config", real_cfg)
    path = os.path.join(run, "stages", "baseline.json")
    json.dump({k: v for k, v in json.load(open(path)).items() if k != "config"}, open(path, "w"))
    calls.clear()
    run_denoise(_cfg(), run, progress=False)
    assert calls == []
    with pytest.raises(ConfigError, match=r"only=\('distill',\); allowed None"):
        run_denoise(_cfg(), run, progress=False, only=("distill",))


def test_grid_stage_store_paths_baseline_only_and_is_finished(tmp_path, monkeypatch):
    gpath = tmp_path / "g.json"
    gpath.write_text(json.dumps({"name": "g", "description": "t", "datasets": ["digits"], "noises": ["symmetric:0.4"],
                                 "ipcs": [1], "seeds": [0], "methods": ["dance"], "preset": "quick", "k": 1}))
    cell = grid.expand(grid.load_grid(str(gpath)))[0]
    store = str(tmp_path / "store")
    mirror = grid.stage_mirror_dir(store, "g", cell)
    assert mirror == os.path.join(store, "g", "digits", "symmetric_0.4", "ipc1", "seed0")
    seen = []

    def runner(cfg, d, **kw):
        seen.append(kw)
        os.makedirs(os.path.join(kw["stage_mirror"], "stages"), exist_ok=True)
        from jaxdistill.pipeline import baseline_config

        with open(os.path.join(kw["stage_mirror"], "stages", "baseline.json"), "w") as f:
            json.dump({"config": grid._cfg_json(baseline_config(cfg)), "results": {}}, f)

    out = str(tmp_path / "runs")
    s = grid.run_grid(str(gpath), out, echo=lambda s: None, runner=runner, stage_store=store, baseline_only=True)
    assert s["done"] == [cell.label()] and seen[0]["only"] == ("baseline",) and seen[0]["on_stage"] is None
    assert grid.is_finished(os.path.join(out, cell.rel_dir()), cell.config(), mirror, baseline_only=True)
    # the second pass finds the stored baseline current and skips the cell
    s = grid.run_grid(str(gpath), out, echo=lambda s: None, runner=runner, stage_store=store, baseline_only=True)
    assert s["skipped"] == [cell.label()] and len(seen) == 1
    # a baseline made with another config is not current
    with open(os.path.join(mirror, "stages", "baseline.json"), "w") as f:
        json.dump({"config": {"width": 1}, "results": {}}, f)
    assert not grid.is_finished(os.path.join(out, cell.rel_dir()), cell.config(), mirror, baseline_only=True)


def test_aggregate_puts_a_stored_baseline_beside_kept_results(tmp_path):
    """A finished cell from before the memorising baseline (results.json with baseline_noisy) and a current
    baseline stage in the store: the aggregate reports the stored baseline_last / baseline_best with its fit."""
    from jaxdistill.pipeline import baseline_config

    gpath = tmp_path / "g.json"
    gpath.write_text(json.dumps({"name": "g", "description": "t", "datasets": ["digits"], "noises": ["symmetric:0.4"],
                                 "ipcs": [1], "seeds": [0], "methods": ["dance"], "preset": "quick", "k": 2}))
    cell = grid.expand(grid.load_grid(str(gpath)))[0]
    out, store = str(tmp_path / "runs"), str(tmp_path / "store")
    d = os.path.join(out, cell.rel_dir())
    os.makedirs(d)
    acc = lambda a: {"acc_mean": float(np.mean(a)), "acc_std": float(np.std(a)), "accs": a}  # noqa: E731
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({"config": grid._cfg_json(cell.config()), "noise": {"realized": 0.4},
                   "results": {"baseline_noisy": acc([0.8, 0.8]), "dance/standard": acc([0.7, 0.72])}}, f)
    md = grid.aggregate(str(gpath), out, str(tmp_path / "r"), echo=lambda s: None, stage_store=store)["markdown"]
    assert "| symmetric:0.4 | 40.0 | 80.00 +- 0.00 | - | - | fixed (before issue 30) |" in md
    mirror = grid.stage_mirror_dir(store, "g", cell)
    os.makedirs(os.path.join(mirror, "stages"))
    with open(os.path.join(mirror, "stages", "baseline.json"), "w") as f:
        json.dump({"config": grid._cfg_json(baseline_config(cell.config())), "results": {
            "baseline_noisy": {**acc([0.6, 0.62]), "schedule": "memorise", "wrong_fit": 0.95, "epochs": 80,
                               "curve": {"wrong_fit": [0.1, 0.95]}},
            "baseline_noisy_valselected": acc([0.83, 0.85])}}, f)
    agg = grid.aggregate(str(gpath), out, str(tmp_path / "r"), echo=lambda s: None, stage_store=store)
    assert "| symmetric:0.4 | 40.0 | 61.00 +- 1.00 | 84.00 +- 1.00 | 95.0 | memorise |" in agg["markdown"]
    js = json.load(open(tmp_path / "r" / "g.json"))
    res = js["cells"][0]["results"]
    assert js["cells"][0]["baseline_from"] == "stage store" and "curve" not in res["baseline_last"]
    assert (res["baseline_last"]["wrong_fit"], res["baseline_best"]["acc_mean"]) == (0.95, 0.84)
    assert [f["compared"] for f in js["findings"] if f["finding"] == "1"] == [
        "best distilled (dance) vs baseline_last", "best distilled (dance) vs baseline_best"]


def _git_repo(repo):
    """A fresh git repository at `repo`; returns git(*args) -> stdout run in it."""
    repo.mkdir()

    def git(*a):
        return subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    return git


def test_git_committer_commits_only_the_stage_files(tmp_path):
    repo = tmp_path / "repo"
    git = _git_repo(repo)
    (repo / "other.txt").write_text("staged work of someone else")
    git("add", "other.txt")
    (repo / "s").mkdir()
    stage = repo / "s" / "baseline.json"
    stage.write_text("{}")
    said = []
    grid.git_committer("g cell", said.append, repo=str(repo))([str(stage)])
    assert git("log", "--format=%s").strip() == "grid stage g cell: baseline.json"
    assert git("show", "--name-only", "--format=").split() == ["s/baseline.json"]
    assert git("diff", "--cached", "--name-only").split() == ["other.txt"]  # still staged, not committed
    grid.git_committer("g cell", said.append, repo=str(tmp_path))([str(stage)])  # not a repository: said, no raise
    assert said and "commit of baseline.json failed" in said[0]


def test_git_committer_waits_for_another_process_holding_the_index_lock(tmp_path, monkeypatch):
    """Two grid runs side by side commit into one repository: a held index.lock is waited for, not a failure."""
    repo = tmp_path / "repo"
    git = _git_repo(repo)
    stage = repo / "baseline.json"
    stage.write_text("{}")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    slept = []

    def sleep(s):  # the other process finishes its commit while we wait
        slept.append(s)
        lock.unlink()

    monkeypatch.setattr(grid_run.time, "sleep", sleep)
    said = []
    grid.git_committer("g cell", said.append, repo=str(repo))([str(stage)])
    assert slept == [2.0] and said == []
    assert git("log", "--format=%s").strip() == "grid stage g cell: baseline.json"


def test_run_skips_a_cell_finished_in_the_committed_grid_json(tmp_path):
    """On a fresh checkout a cell kept in results/<GRID>.json is not run again (its run directory is gone); with
    --baseline-only it still gets its baseline stage; other grid settings (k) do not count as finished."""
    g = {"name": "g", "description": "t", "datasets": ["digits"], "noises": ["symmetric:0.4"], "ipcs": [1],
         "seeds": [0], "methods": ["dance"], "preset": "quick", "k": 1}
    gpath = tmp_path / "g.json"
    gpath.write_text(json.dumps(g))
    cell = grid.expand(grid.load_grid(str(gpath)))[0]
    rdir = tmp_path / "results"
    rdir.mkdir()
    (rdir / "g.json").write_text(json.dumps({"grid": {**g, "control_draws": 1}, "cells": [
        {"dataset": "digits", "noise": "symmetric:0.4", "ipc": 1, "seed": 0, "finished": True, "tiny": False,
         "results": {"dance/standard": {"acc_mean": 0.5}}}]}))
    ran = []
    runner = lambda cfg, d, **kw: ran.append(kw)  # noqa: E731
    s = grid.run_grid(str(gpath), str(tmp_path / "runs"), echo=lambda s: None, runner=runner, results_dir=str(rdir))
    assert s["skipped"] == [cell.label()] and ran == []
    s = grid.run_grid(str(gpath), str(tmp_path / "runs"), echo=lambda s: None, runner=runner, results_dir=str(rdir),
                      baseline_only=True)
    assert s["done"] == [cell.label()] and ran == [{"only": ("baseline",)}]
    gpath.write_text(json.dumps({**g, "k": 2}))
    s = grid.run_grid(str(gpath), str(tmp_path / "runs2"), echo=lambda s: None, runner=runner, results_dir=str(rdir))
    assert s["done"] == [cell.label()]


def test_a_baseline_only_rerun_keeps_the_committed_cell_in_the_aggregate(tmp_path):
    """--baseline-only writes the cell's run directory (cell.json) but no results.json: the aggregate must keep
    the committed cell (and put the stored baseline beside it), not report it as unfinished."""
    from jaxdistill.pipeline import baseline_config

    g = {"name": "g", "description": "t", "datasets": ["digits"], "noises": ["symmetric:0.4"], "ipcs": [1],
         "seeds": [0], "methods": ["dance"], "preset": "quick", "k": 1, "control_draws": 1}
    gpath = tmp_path / "g.json"
    gpath.write_text(json.dumps(g))
    cell = grid.expand(grid.load_grid(str(gpath)))[0]
    rdir, out, store = tmp_path / "results", tmp_path / "runs", str(tmp_path / "store")
    rdir.mkdir()
    (rdir / "g.json").write_text(json.dumps({"grid": g, "cells": [
        {"dataset": "digits", "noise": "symmetric:0.4", "ipc": 1, "seed": 0, "finished": True, "tiny": False,
         "k": 1, "command": "python experiments/grid.py run g", "seconds": 60.0,
         "results": {"baseline_noisy": {"acc_mean": 0.8, "accs": [0.8]}, "dance/standard": {"acc_mean": 0.5,
                                                                                           "accs": [0.5]}}}]}))
    os.makedirs(out / cell.rel_dir())
    (out / cell.rel_dir() / "cell.json").write_text(json.dumps({"started": "2026-12-06T05:00:00+00:00"}))
    mirror = grid.stage_mirror_dir(store, "g", cell)
    os.makedirs(os.path.join(mirror, "stages"))
    with open(os.path.join(mirror, "stages", "baseline.json"), "w") as f:
        json.dump({"config": grid._cfg_json(baseline_config(cell.config())), "results": {
            "baseline_noisy": {"acc_mean": 0.6, "accs": [0.6], "schedule": "memorise", "wrong_fit": 0.99}}}, f)
    agg = grid.aggregate(str(gpath), str(out), str(rdir), echo=lambda s: None, stage_store=store)
    c = agg["data"]["cells"][0]
    assert c["finished"] and c.get("carried") and c["baseline_from"] == "stage store"
    assert c["results"]["baseline_last"]["acc_mean"] == 0.6 and c["results"]["dance/standard"]["acc_mean"] == 0.5
