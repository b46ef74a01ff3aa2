"""Running the experiment grid: each (filtered) cell with `run_denoise`, skipping finished cells, recording
failures and every run's wall time in the cell's cell.json. The CLI is experiments/grid.py (`run`)."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
import traceback
from typing import Callable, Optional

from grid_cells import RESULTS_DIR, ROOT, cell_command, expand, load_grid, machine  # sets up sys.path for jaxdistill

from jaxdistill.checkpoint import atomic_write_json, read_json  # noqa: E402


def _cfg_json(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# Config fields whose True value only adds work to a run (a run that did it also answers a cell that does not).
_SUPERSET_FLAGS = ("clean_baseline",)


def _last_write(cell_dir: str) -> Optional[float]:
    """The newest modification time (epoch seconds) of a file under cell_dir other than cell.json."""
    times = [os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(cell_dir) for f in fs if f != "cell.json"]
    return max(times) if times else None


def _earlier_runs(cell_json: str) -> list:
    """The runs a cell's cell.json records (a file from before the runs list holds its last run only).

    A run that was killed (its entry still has seconds None) gets, as a lower bound on its wall time, the span
    from its start to the cell's last file write before now, marked "killed"."""
    cj = read_json(cell_json) or {}
    if "runs" not in cj:
        if cj.get("seconds") is not None:
            return [{"started": cj.get("started"), "seconds": cj["seconds"], "machine": cj.get("machine")}]
        return []
    runs = []
    for r in cj["runs"]:
        if r.get("seconds") is None:
            last = _last_write(os.path.dirname(cell_json))
            t0 = datetime.datetime.fromisoformat(r["started"]).timestamp()
            r = {**r, "seconds": max(0.0, (last or t0) - t0), "killed": True}
        runs.append(r)
    return runs


def _wall_seconds(runs: list) -> Optional[float]:
    """A cell's wall time: the sum over its ended runs (None before any run ended)."""
    ended = [r["seconds"] for r in runs if r.get("seconds") is not None]
    return sum(ended) if ended else None


def _record_run(cell_json: str, started: str, secs: float, failed: bool = False) -> None:
    """Record this run's end in cell.json's runs (in place of the under-way entry its start wrote); `seconds`
    is the sum over the ended runs, the cell's wall time over every resume."""
    cj = read_json(cell_json) or {}
    runs = [r for r in cj.get("runs", []) if not (r.get("started") == started and r.get("seconds") is None)]
    runs.append({"started": started, "seconds": secs, "machine": machine(), **({"failed": True} if failed else {})})
    atomic_write_json(cell_json, {**cj, "runs": runs, "seconds": _wall_seconds(runs),
                                  "started": runs[0]["started"] or started})


def baseline_stage_current(stage_dir: Optional[str], cfg) -> bool:
    """stage_dir/stages/baseline.json holds a baseline made with the config the preset gives now."""
    from jaxdistill.pipeline import baseline_config

    st = read_json(os.path.join(stage_dir, "stages", "baseline.json")) if stage_dir else None
    return st is not None and st.get("config") == _cfg_json(baseline_config(cfg))


def is_finished(cell_dir: str, cfg, mirror: Optional[str] = None, baseline_only: bool = False) -> bool:
    """results.json present and written for this config (or one that differs only by doing more, e.g. the
    default job's clean-label baseline: its results answer the same cell), and its baseline stage, where the
    run directory has one, made with the preset's current baseline (a changed baseline retrains that stage
    alone). baseline_only: the baseline stage is current here or in the mirror."""
    if baseline_only:
        return baseline_stage_current(cell_dir, cfg) or baseline_stage_current(mirror, cfg)
    doc = read_json(os.path.join(cell_dir, "results.json"))
    if doc is None or not isinstance(doc.get("config"), dict):
        return False
    old, new = doc["config"], _cfg_json(cfg)
    diff = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    if not all(k in _SUPERSET_FLAGS and old.get(k) is True for k in diff):
        return False
    return (not os.path.exists(os.path.join(cell_dir, "stages", "baseline.json"))
            or baseline_stage_current(cell_dir, cfg))


def stage_mirror_dir(stage_store: Optional[str], grid_name: str, cell) -> Optional[str]:
    """Where a cell's finished stages are kept beside the repository (stage_store/<grid>/<cell dir>)."""
    return None if stage_store is None else os.path.join(stage_store, grid_name, cell.rel_dir())


def git_committer(label: str, echo: Callable = print, repo: str = ROOT) -> Callable:
    """on_stage callback: commit the stage files just written (only those paths: other staged work is left)."""
    import subprocess

    def commit(paths: list) -> None:
        if not paths:
            return
        names = ", ".join(os.path.basename(p) for p in paths)
        for attempt in range(5):
            try:
                subprocess.run(["git", "add", "--", *paths], cwd=repo, check=True, capture_output=True)
                subprocess.run(["git", "commit", "-q", "-m", f"grid stage {label}: {names}", "--", *paths],
                               cwd=repo, check=True, capture_output=True)
                return
            except subprocess.CalledProcessError as e:  # a failed commit must not lose the run: the files are there
                err = e.stderr.decode(errors="replace")
                if "index.lock" in err and attempt < 4:  # another process (a second grid run) is committing
                    time.sleep(2.0 * (attempt + 1))
                    continue
                echo(f"    (commit of {names} failed: {err[-300:]})")
                return

    return commit

# ------------------------------------------------------------------------------------------ run
def run_grid(grid_name: str, out: str, only: Optional[str] = None, dry_run: bool = False, tiny: bool = False,
             echo: Callable = print, runner: Optional[Callable] = None, stage_store: Optional[str] = None,
             commit: bool = False, baseline_only: bool = False, results_dir: str = RESULTS_DIR) -> dict:
    """Run every (filtered) cell; returns {'done': [...], 'skipped': [...], 'failed': [...]} of cell labels.

    stage_store: every finished stage of a cell is also kept under stage_store/<grid>/<cell dir> and a cell
    takes the stages it lacks from there (pipeline.Stages), so a fresh checkout goes on where the last
    session stopped; commit: each stage kept there is committed at once. baseline_only: run only the baseline
    stage of each cell (the cells' other stages were made before). A cell finished in the committed
    <results_dir>/<GRID>.json (same grid settings) is skipped: its run directory is gone with an earlier session,
    and its numbers are kept there (a changed baseline is then run with baseline_only)."""
    from grid_aggregate import _previous_cells

    grid = load_grid(grid_name)
    cells = expand(grid, only, tiny)
    committed = _previous_cells(grid, read_json(os.path.join(results_dir, f"{grid['name']}.json")), tiny)
    if runner is None:
        from jaxdistill import pipeline

        def runner(cfg, d, **kw):
            return pipeline.run_denoise(cfg, d, progress=False, echo=lambda s: echo("    " + s), **kw)
    fail_path = os.path.join(out, "failures.json")
    summary: dict = {"done": [], "skipped": [], "failed": []}
    echo(f"grid {grid['name']}: {len(cells)} cell(s) x methods {grid['methods']}, preset {grid['preset']}"
         f"{' (TINY overrides)' if tiny else ''} -> {out}")
    t_grid = time.perf_counter()
    for i, cell in enumerate(cells, 1):
        cfg = cell.config()
        cdir = os.path.join(out, cell.rel_dir())
        mirror = stage_mirror_dir(stage_store, grid["name"], cell)
        tag = f"[{i}/{len(cells)}] {cell.label()}"
        kw = {}
        if mirror is not None:
            kw.update(stage_mirror=mirror, on_stage=git_committer(f"{grid['name']} {cell.label()}", echo)
                      if commit else None)
        if baseline_only:
            kw["only"] = ("baseline",)
        if not baseline_only and not os.path.exists(os.path.join(cdir, "results.json")) and \
                (cell.dataset, cell.noise, cell.ipc, cell.seed) in committed:
            summary["skipped"].append(cell.label())
            echo(f"{tag}: finished in the committed {grid['name']}.json (no run directory here), skipped")
            continue
        if is_finished(cdir, cfg, mirror, baseline_only):
            summary["skipped"].append(cell.label())
            echo(f"{tag}: finished, skipped")
            if not dry_run:
                stale = read_json(fail_path) or {}
                if stale.pop(cell.label(), None) is not None:  # failed once, finished since
                    atomic_write_json(fail_path, stale)
            continue
        if dry_run:
            echo(f"{tag}: would run in {cdir}\n    {cell_command(grid_name, out, cell, tiny)}")
            continue
        os.makedirs(cdir, exist_ok=True)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        runs = _earlier_runs(os.path.join(cdir, "cell.json"))
        # this run's entry is written now, under way (seconds None): a kill leaves it for the next run to time
        under_way = {"started": started, "seconds": None, "machine": machine()}
        atomic_write_json(os.path.join(cdir, "cell.json"), {
            "grid": grid["name"], "command": cell_command(grid_name, out, cell, tiny), "tiny": tiny,
            "started": runs[0]["started"] if runs else started, "machine": machine(), "runs": runs + [under_way],
            "seconds": _wall_seconds(runs)})
        echo(f"{tag}: running")
        t = time.perf_counter()
        failures = read_json(fail_path) or {}
        try:
            runner(cfg, cdir, **kw)
        except Exception as e:  # noqa: BLE001 - one bad cell must not stop the grid
            secs = time.perf_counter() - t
            failures[cell.label()] = {"error": type(e).__name__, "message": str(e)[:2000], "dir": cdir,
                                      "seconds": secs, "when": started,
                                      "traceback": traceback.format_exc()[-4000:]}
            atomic_write_json(fail_path, failures)
            _record_run(os.path.join(cdir, "cell.json"), started, secs, failed=True)
            summary["failed"].append(cell.label())
            echo(f"{tag}: FAILED after {secs:.0f} s: {type(e).__name__}: {str(e)[:300]}")
            continue
        secs = time.perf_counter() - t
        if failures.pop(cell.label(), None) is not None:  # an earlier failure of this cell is now fixed
            atomic_write_json(fail_path, failures)
        _record_run(os.path.join(cdir, "cell.json"), started, secs)
        summary["done"].append(cell.label())
        echo(f"{tag}: done in {secs / 60:.1f} min")
    echo(f"grid {grid['name']}: {len(summary['done'])} run, {len(summary['skipped'])} skipped, "
         f"{len(summary['failed'])} failed in {(time.perf_counter() - t_grid) / 60:.1f} min"
         + (f"; failures in {fail_path}" if summary["failed"] else ""))
    return summary
