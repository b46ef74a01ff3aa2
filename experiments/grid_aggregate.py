"""Aggregating the experiment grid: collect every cell's results.json (keeping the committed cells whose run
directory is absent), pool the nets over seeds, and write <GRID>.md, .png and .json. The CLI is
experiments/grid.py (`aggregate`); the tables are grid_tables.py, the plot grid_plot.py."""
from __future__ import annotations

import datetime
import os
from typing import Callable, Optional

from grid_cells import RESULTS_DIR, ROOT, cell_command, expand, load_grid, machine  # sets up sys.path for jaxdistill
from grid_plot import plot
from grid_tables import findings, markdown

from jaxdistill.checkpoint import atomic_write_json, atomic_write_text, read_json  # noqa: E402


def _pool(entries: list[dict]) -> Optional[tuple]:
    """Per-net accuracies pooled over seeds -> (mean, std, n); None when nothing is there."""
    import numpy as np

    accs = [a for e in entries if e for a in e.get("accs", [e.get("acc_mean")]) if a is not None]
    if not accs:
        return None
    a = np.asarray(accs, np.float64)
    return float(a.mean()), float(a.std()), len(a)


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


def collect(grid_name: str, out: str, tiny: bool = False, previous: Optional[dict] = None) -> dict:
    """Every cell's numbers (or its absence) from `<out>`; the document behind <GRID>.json. A cell whose run
    directory is missing but which `previous` (the committed <GRID>.json) has finished keeps that entry, marked
    `carried`, so aggregating on another checkout (run directories are not in git) loses no cell."""
    grid = load_grid(grid_name)
    carried = _previous_cells(grid, previous, tiny)
    cells = []
    for cell in expand(grid):
        cdir = os.path.join(out, cell.rel_dir())
        doc = read_json(os.path.join(cdir, "results.json"))
        old = carried.get((cell.dataset, cell.noise, cell.ipc, cell.seed))
        if doc is None and old is not None and not os.path.exists(os.path.join(cdir, "cell.json")):
            cells.append({**old, "carried": True})
            continue
        cj = read_json(os.path.join(cdir, "cell.json")) or {}
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
                         results={k: {kk: v.get(kk) for kk in ("acc_mean", "acc_std", "accs", "method", "protocol",
                                                                "best_acc_mean", "best_accs")}
                                  for k, v in doc["results"].items() if "acc_mean" in v})
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
        row["_base"].setdefault(c["seed"], res.get("baseline_noisy"))
        # run_baseline trains no separate clean net when the labels are the true ones: there the
        # full-data baseline is the clean upper bound.
        up = res.get("baseline_clean") or (res.get("baseline_noisy") if c["noise"] == "clean" else None)
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
        vals["baseline"] = _pool(list(row["_base"].values()))
        vals["clean"] = _pool(list(clean_by_ds.get(ds, {}).values()))
        real = [r for r in row["_realized"] if r is not None]
        vals["_realized"] = sum(real) / len(real) if real else None
        out[(ds, noise)] = vals
    return out


def aggregate(grid_name: str, out: str, results_dir: str = RESULTS_DIR, echo: Callable = print,
              tiny: bool = False) -> dict:
    """Write <results_dir>/<GRID>.md, .png and .json from every cell's results.json under `out`."""
    name = load_grid(grid_name)["name"]
    data = collect(grid_name, out, tiny, previous=read_json(os.path.join(results_dir, f"{name}.json")))
    summ = summarize(data)
    n_carried = sum(bool(c.get("carried")) for c in data["cells"])
    if n_carried:
        echo(f"grid {name}: {n_carried} finished cell(s) kept from {results_dir}/{name}.json (their run "
             f"directories are not under {out})")
    os.makedirs(results_dir, exist_ok=True)
    md = markdown(grid_name, data, summ)
    atomic_write_text(os.path.join(results_dir, f"{name}.md"), md)
    plot(os.path.join(results_dir, f"{name}.png"), data, summ)
    table = {f"{ds}|{n}": {k: (None if v is None else (v if k == "_realized" else
                                                       {"mean": v[0], "std": v[1], "n": v[2]}))
                           for k, v in cols.items()} for (ds, n), cols in summ.items()}
    atomic_write_json(os.path.join(results_dir, f"{name}.json"),
                      {**data, "table": table, "findings": findings(data["grid"], summ)})
    n_done = sum(c["finished"] for c in data["cells"])
    echo(f"grid {name}: {n_done}/{len(data['cells'])} cells finished -> {results_dir}/{name}.md, .png, .json")
    return {"data": data, "summary": summ, "markdown": md}
