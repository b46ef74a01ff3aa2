"""Aggregating the experiment grid: collect every cell's results.json (keeping the committed cells whose run
directory is absent), pool the nets over seeds, and write <GRID>.md, .png and .json. The CLI is
experiments/grid.py (`aggregate`); the tables are grid_tables.py, the plot grid_plot.py."""
from __future__ import annotations

import datetime
import os
from typing import Callable, Optional

from grid_cells import RESULTS_DIR, ROOT, cell_command, expand, load_grid, machine  # sets up sys.path for jaxdistill
from grid_plot import plot
from grid_run import _earlier_runs, _wall_seconds
from grid_tables import findings, markdown

from jaxdistill.checkpoint import atomic_write_json, atomic_write_text, read_json  # noqa: E402


def _pool(entries: list[dict]) -> Optional[tuple]:
    """Per-net accuracies pooled over seeds -> (mean, std, n, seed_std, seeds): the nets' mean and std, and the
    std of the per-seed means over the seeds (None with one seed); None when nothing is there."""
    import numpy as np

    per_seed = [[a for a in e.get("accs", [e.get("acc_mean")]) if a is not None] for e in entries if e]
    per_seed = [p for p in per_seed if p]
    if not per_seed:
        return None
    a = np.asarray([x for p in per_seed for x in p], np.float64)
    means = [float(np.mean(p)) for p in per_seed]
    return (float(a.mean()), float(a.std()), len(a), float(np.std(means)) if len(means) > 1 else None,
            len(means))


# Fields of a result entry that the aggregate keeps (the baseline's say how it trained and what it fitted).
_KEEP = ("acc_mean", "acc_std", "accs", "method", "protocol", "best_acc_mean", "best_accs", "schedule", "wrong_fit",
         "epochs", "selected_epoch")


def _slim(results: dict) -> dict:
    """A results.json `results` (old or new names) -> the kept fields under the public names."""
    from jaxdistill.report import public_results

    out = {}
    for k, v in public_results(results).items():
        if "acc_mean" in v:
            out[k] = {kk: v.get(kk) for kk in _KEEP if kk in v or kk in _KEEP[:7]}
            memo = v.get("memorisation")
            if memo:
                out[k]["memorisation"] = {kk: memo.get(kk) for kk in ("stopped_by", "constant_epochs", "fit")}
    return out


def stored_baseline(stage_store: Optional[str], grid_name: str, cell) -> Optional[dict]:
    """The baseline entries (public names) of a cell's stage kept in the stage store, when made with the
    baseline the preset gives now; else None."""
    from grid_run import baseline_stage_current, stage_mirror_dir

    mirror = stage_mirror_dir(stage_store, grid_name, cell)
    if not baseline_stage_current(mirror, cell.config()):
        return None
    return _slim(read_json(os.path.join(mirror, "stages", "baseline.json"))["results"])


# Grid keys that change what a cell's numbers mean: a finished cell of an earlier aggregate is kept only when
# they agree (noises, datasets, ipcs and seeds may grow).
_CARRY_KEYS = ("methods", "preset", "k", "control_draws")


def _previous_cells(grid: dict, previous: Optional[dict], tiny: bool = False) -> dict:
    """{(dataset, noise, ipc, seed): cell entry} of the finished cells in an earlier <GRID>.json made with the same
    grid settings (and the same --tiny); {} when there is none or its settings differ."""
    if not previous or any(previous.get("grid", {}).get(k) != grid.get(k) for k in _CARRY_KEYS):
        return {}
    return {(c["dataset"], c["noise"], c["ipc"], c["seed"]): c for c in previous.get("cells", [])
            if c.get("finished") and c.get("results") and bool(c.get("tiny")) == tiny}


def collect(grid_name: str, out: str, tiny: bool = False, previous: Optional[dict] = None,
            stage_store: Optional[str] = None) -> dict:
    """Every cell's numbers (or its absence) from `<out>`; the document behind <GRID>.json. A cell whose run
    directory is missing but which `previous` (the committed <GRID>.json) has finished keeps that entry, marked
    `carried`, so aggregating on another checkout (run directories are not in git) loses no cell. A finished cell
    whose baseline in the stage store is newer (a preset's baseline that changed, run with --baseline-only) gets
    that baseline (`baseline_from`: 'stage store')."""
    grid = load_grid(grid_name)
    carried = _previous_cells(grid, previous, tiny)
    cells = []

    def with_stored_baseline(entry: dict, cell) -> dict:
        b = stored_baseline(stage_store, grid["name"], cell) if entry.get("results") else None
        if b is None:
            return entry
        # the stored baseline's entries replace the kept ones; a kept clean-label bound stays where the stored run
        # trained none
        kept = {k: v for k, v in entry["results"].items()
                if k not in b and (not k.startswith("baseline_") or k == "baseline_clean")}
        return {**entry, "results": {**b, **kept}, "baseline_from": "stage store"}

    for cell in expand(grid):
        cdir = os.path.join(out, cell.rel_dir())
        doc = read_json(os.path.join(cdir, "results.json"))
        old = carried.get((cell.dataset, cell.noise, cell.ipc, cell.seed))
        # no results here (never run on this checkout, or only its baseline stage re-run): the committed numbers
        # are the cell's latest finished ones
        if doc is None and old is not None:
            cells.append(with_stored_baseline({**old, "carried": True,
                                               "results": _slim(old["results"])}, cell))
            continue
        cj = read_json(os.path.join(cdir, "cell.json")) or {}
        if doc is None and cj.get("runs"):
            # an unfinished cell: a run without an end (killed, or still running) counts up to its last file write
            runs = _earlier_runs(os.path.join(cdir, "cell.json"))
            cj = {**cj, "runs": runs, "seconds": _wall_seconds(runs)}
        entry = {"dataset": cell.dataset, "noise": cell.noise, "ipc": cell.ipc, "seed": cell.seed,
                 "dir": os.path.relpath(cdir, ROOT) if os.path.isabs(cdir) else cdir,
                 "command": cj.get("command") or cell_command(grid_name, out, cell, tiny),
                 "tiny": bool(cj.get("tiny", False)), "machine": cj.get("machine"), "started": cj.get("started"),
                 "seconds": cj.get("seconds"), "runs": len(cj.get("runs", [])) or None,
                 "killed_runs": sum(bool(r.get("killed")) for r in cj.get("runs", [])),
                 "finished": doc is not None,
                 "k": (doc or {}).get("config", {}).get("k", cell.k)}
        if doc is not None:
            entry.update(noise_realized=doc.get("noise", {}).get("realized"), device=doc.get("versions", {}).get("device"),
                         results=_slim(doc["results"]))
            entry = with_stored_baseline(entry, cell)
        cells.append(entry)
    return {"grid": grid, "out": out, "cells": cells,
            "aggregated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine()}


def summarize(data: dict) -> dict:
    """(dataset, noise) rows -> column -> (mean, std, n) pooled over seeds; columns 'baseline', 'clean',
    '<method>/ipc<K>/standard', '<method>/ipc<K>/own' and, for protocols with evaluation points (DANCE, RCIG),
    '<method>/ipc<K>/own_best' (each net's best over them; not the headline)."""
    from jaxdistill.pipeline import own_protocol

    grid = data["grid"]
    rows: dict = {}
    clean_by_ds: dict = {}
    for c in data["cells"]:
        if not c["finished"]:
            continue
        res = c["results"]
        row = rows.setdefault((c["dataset"], c["noise"]), {"_cols": {}, "_realized": [], "_base": {}})
        row["_realized"].append(c.get("noise_realized"))
        add = lambda col, e: row["_cols"].setdefault(col, []).append(e)  # noqa: E731
        # The full-data baselines do not depend on IPC: one copy per (noise, seed), from the first IPC finished.
        for b in ("baseline_last", "baseline_best"):
            row["_base"].setdefault(b, {}).setdefault(c["seed"], res.get(b))
        # run_baseline trains no separate clean net when the labels are the true ones: there the
        # full-data baseline is the clean upper bound.
        up = res.get("baseline_clean") or (res.get("baseline_last") if c["noise"] == "clean" else None)
        if up is not None:
            clean_by_ds.setdefault(c["dataset"], {}).setdefault(c["seed"], up)
        for m in grid["methods"]:
            add(f"{m}/ipc{c['ipc']}/standard", res.get(f"{m}/standard"))
            own = res.get(f"{m}/{own_protocol(m)}")
            add(f"{m}/ipc{c['ipc']}/own", own)
            if own and own.get("best_accs"):  # DANCE / RCIG: best over checkpoints, beside the headline
                add(f"{m}/ipc{c['ipc']}/own_best", {"accs": own["best_accs"]})
            add(f"selected_{m}/ipc{c['ipc']}", res.get(f"control/selected_{m}/standard"))
        for name in ("random_noisy", "random_clean"):
            add(f"{name}/ipc{c['ipc']}", res.get(f"control/{name}/standard"))
    out: dict = {}
    for (ds, noise), row in rows.items():
        vals = {col: _pool(es) for col, es in row["_cols"].items()}
        for b, per_seed in row["_base"].items():
            vals[b] = _pool(list(per_seed.values()))
        lasts = [e for e in row["_base"].get("baseline_last", {}).values() if e]
        fits = [e["wrong_fit"] for e in lasts if e.get("wrong_fit") is not None]
        vals["_wrong_fit"] = sum(fits) / len(fits) if fits and len(fits) == len(lasts) else None
        vals["_schedule"] = ", ".join(sorted({e.get("schedule") or "fixed (before issue 30)" for e in lasts}))
        vals["clean"] = _pool(list(clean_by_ds.get(ds, {}).values()))
        real = [r for r in row["_realized"] if r is not None]
        vals["_realized"] = sum(real) / len(real) if real else None
        out[(ds, noise)] = vals
    return out


def aggregate(grid_name: str, out: str, results_dir: str = RESULTS_DIR, echo: Callable = print,
              tiny: bool = False, stage_store: Optional[str] = None) -> dict:
    """Write <results_dir>/<GRID>.md, .png and .json from every cell's results.json under `out` (and the
    baselines kept in `stage_store`)."""
    name = load_grid(grid_name)["name"]
    data = collect(grid_name, out, tiny, previous=read_json(os.path.join(results_dir, f"{name}.json")),
                   stage_store=stage_store)
    summ = summarize(data)
    n_carried = sum(bool(c.get("carried")) for c in data["cells"])
    if n_carried:
        echo(f"grid {name}: {n_carried} finished cell(s) kept from {results_dir}/{name}.json (their run "
             f"directories are not under {out})")
    os.makedirs(results_dir, exist_ok=True)
    md = markdown(grid_name, data, summ)
    atomic_write_text(os.path.join(results_dir, f"{name}.md"), md)
    plot(os.path.join(results_dir, f"{name}.png"), data, summ)
    table = {f"{ds}|{n}": {k: (None if v is None else (v if k.startswith("_") else
                                                       {"mean": v[0], "std": v[1], "n": v[2], "seed_std": v[3],
                                                        "seeds": v[4]}))
                           for k, v in cols.items()} for (ds, n), cols in summ.items()}
    atomic_write_json(os.path.join(results_dir, f"{name}.json"),
                      {**data, "table": table, "findings": findings(data["grid"], summ)})
    n_done = sum(c["finished"] for c in data["cells"])
    echo(f"grid {name}: {n_done}/{len(data['cells'])} cells finished -> {results_dir}/{name}.md, .png, .json")
    return {"data": data, "summary": summ, "markdown": md}
