"""The experiment grid: expand a named grid into cells, run each with `run_denoise`, aggregate the tables.

  python experiments/grid.py run GRID [--out experiments/runs/GRID] [--only 'noise=symmetric:0.4,ipc=10']
                                      [--dry-run] [--tiny]
  python experiments/grid.py aggregate GRID [--out ...] [--results-dir experiments/results]
  python experiments/grid.py list

GRID is a name in experiments/grids/ (cifar10, cifar100, cifar10n, cifar100n, tiny, fmnist, fmnist_small, digits)
or a path to a grid JSON file. One cell = dataset x noise x IPC x seed with the grid's list of methods; it runs in
`<out>/<dataset>/<noise>/ipc<K>/seed<S>/` and resumes its own finished stages (run_denoise). A cell whose
results.json holds the same config is skipped; a failing cell is recorded in `<out>/failures.json` and the grid
goes on. The clean-label upper bound is trained once per (dataset, IPC, seed): in the `clean` cell when the grid
has one, else in the first noise setting (it does not depend on the noise).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import json
import math
import os
import platform
import shlex
import sys
import time
import traceback
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxdistill.checkpoint import atomic_write_json, atomic_write_text, read_json  # noqa: E402
from jaxdistill.errors import ConfigError  # noqa: E402
from jaxdistill.pipeline import TINY_OVERRIDES  # noqa: E402

GRID_DIR = os.path.join(ROOT, "experiments", "grids")
RESULTS_DIR = os.path.join(ROOT, "experiments", "results")
GRID_KEYS = ("name", "description", "datasets", "noises", "ipcs", "seeds", "methods", "preset", "k")
OPTIONAL_GRID_KEYS = {"control_draws": 1}  # key -> default
FILTER_KEYS = ("dataset", "noise", "ipc", "seed")

# --tiny: every part shrunk to seconds, for smoke tests only.
TINY_CELL = {"k": 2, "subset": 600}


# ------------------------------------------------------------------------------------------ grids and cells
def list_grids() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(GRID_DIR) if f.endswith(".json"))


def load_grid(name: str) -> dict:
    """A named grid (experiments/grids/NAME.json) or a grid JSON path -> the grid dict (checked)."""
    path = name if name.endswith(".json") else os.path.join(GRID_DIR, f"{name}.json")
    if not os.path.exists(path):
        raise ConfigError(f"grid {name!r} not found; named grids: {list_grids()} (or give a path to a .json grid)")
    with open(path) as f:
        grid = json.load(f)
    missing = [k for k in GRID_KEYS if k not in grid]
    unknown = sorted(set(grid) - set(GRID_KEYS) - set(OPTIONAL_GRID_KEYS))
    if missing or unknown:
        raise ConfigError(f"grid {path!r}: missing keys {missing}, unknown keys {unknown}; keys are {list(GRID_KEYS)}"
                          f" and optionally {list(OPTIONAL_GRID_KEYS)}")
    grid = {**OPTIONAL_GRID_KEYS, **grid}
    for k in ("datasets", "noises", "ipcs", "seeds", "methods"):
        if not isinstance(grid[k], list) or not grid[k]:
            raise ConfigError(f"grid {path!r}: {k}={grid[k]!r} must be a non-empty list")
    return grid


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run_denoise job: dataset x noise x IPC x seed, all the grid's methods."""

    dataset: str
    noise: str
    ipc: int
    seed: int
    methods: tuple
    preset: str
    k: int
    clean_baseline: bool
    overrides: Optional[dict] = None
    subset: Optional[int] = None
    control_draws: int = 1

    def rel_dir(self) -> str:
        return os.path.join(self.dataset, noise_dirname(self.noise), f"ipc{self.ipc}", f"seed{self.seed}")

    def label(self) -> str:
        return f"dataset={self.dataset},noise={self.noise},ipc={self.ipc},seed={self.seed}"

    def config(self):
        from jaxdistill.pipeline import DenoiseConfig

        return DenoiseConfig(dataset=self.dataset, noise=self.noise, methods=tuple(self.methods), ipc=self.ipc,
                             preset=self.preset, seed=self.seed, k=self.k, subset=self.subset,
                             clean_baseline=self.clean_baseline, overrides=self.overrides,
                             control_draws=self.control_draws)


def noise_dirname(noise: str) -> str:
    """'symmetric:0.4' -> 'symmetric_0.4'; anything but [A-Za-z0-9._-] becomes '_' (matrix paths)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in noise)


def parse_only(only: Optional[str]) -> dict:
    """'noise=symmetric:0.4,ipc=10' -> {'noise': ['symmetric:0.4'], 'ipc': ['10']}; '|' separates alternatives
    and values are shell-style globs ('noise=symmetric:*')."""
    out: dict = {}
    for part in filter(None, (only or "").split(",")):
        if "=" not in part:
            raise ConfigError(f"--only part {part!r} is not KEY=VALUE; keys are {list(FILTER_KEYS)}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in FILTER_KEYS:
            raise ConfigError(f"--only key {k!r} is not one of {list(FILTER_KEYS)}")
        out.setdefault(k, []).extend(v.split("|"))
    return out


def expand(grid: dict, only: Optional[str] = None, tiny: bool = False) -> list[Cell]:
    """The grid's cells in run order (dataset, IPC, seed, then noise), filtered by --only."""
    filt = parse_only(only)
    clean_noise = "clean" if "clean" in grid["noises"] else grid["noises"][0]
    cells = []
    for ds in grid["datasets"]:
        for ipc in grid["ipcs"]:
            for seed in grid["seeds"]:
                for noise in grid["noises"]:
                    kw = dict(dataset=ds, noise=noise, ipc=int(ipc), seed=int(seed), methods=tuple(grid["methods"]),
                              preset=grid["preset"], k=int(grid["k"]), clean_baseline=noise == clean_noise,
                              control_draws=int(grid["control_draws"]))
                    if tiny:
                        parts = ("baseline", "eval", *grid["methods"])
                        kw.update(TINY_CELL, overrides={p: v for p, v in TINY_OVERRIDES.items() if p in parts})
                    cell = Cell(**kw)
                    vals = {"dataset": ds, "noise": noise, "ipc": str(ipc), "seed": str(seed)}
                    if all(any(fnmatch.fnmatchcase(vals[k], p) for p in pats) for k, pats in filt.items()):
                        cells.append(cell)
    return cells


def cell_command(grid_name: str, out: str, cell: Cell, tiny: bool) -> str:
    only = f"dataset={cell.dataset},noise={cell.noise},ipc={cell.ipc},seed={cell.seed}"
    cmd = ["python", "experiments/grid.py", "run", grid_name, "--out", out, "--only", only] + (["--tiny"] if tiny else [])
    return " ".join(shlex.quote(c) for c in cmd)


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


def is_finished(cell_dir: str, cfg) -> bool:
    """results.json present and written for this config (or one that differs only by doing more, e.g. the
    default job's clean-label baseline: its results answer the same cell)."""
    doc = read_json(os.path.join(cell_dir, "results.json"))
    if doc is None or not isinstance(doc.get("config"), dict):
        return False
    old, new = doc["config"], _cfg_json(cfg)
    diff = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    return all(k in _SUPERSET_FLAGS and old.get(k) is True for k in diff)


# ------------------------------------------------------------------------------------------ run
def run_grid(grid_name: str, out: str, only: Optional[str] = None, dry_run: bool = False, tiny: bool = False,
             echo: Callable = print, runner: Optional[Callable] = None) -> dict:
    """Run every (filtered) cell; returns {'done': [...], 'skipped': [...], 'failed': [...]} of cell labels."""
    grid = load_grid(grid_name)
    cells = expand(grid, only, tiny)
    if runner is None:
        from jaxdistill import pipeline

        runner = lambda cfg, d: pipeline.run_denoise(cfg, d, progress=False, echo=lambda s: echo("    " + s))  # noqa: E731
    fail_path = os.path.join(out, "failures.json")
    summary: dict = {"done": [], "skipped": [], "failed": []}
    echo(f"grid {grid['name']}: {len(cells)} cell(s) x methods {grid['methods']}, preset {grid['preset']}"
         f"{' (TINY overrides)' if tiny else ''} -> {out}")
    t_grid = time.perf_counter()
    for i, cell in enumerate(cells, 1):
        cfg = cell.config()
        cdir = os.path.join(out, cell.rel_dir())
        tag = f"[{i}/{len(cells)}] {cell.label()}"
        if is_finished(cdir, cfg):
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
            runner(cfg, cdir)
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


def machine() -> str:
    return f"{platform.node()} ({platform.platform()}, {os.cpu_count()} CPUs)"


# ------------------------------------------------------------------------------------------ aggregate
def _pool(entries: list[dict]) -> Optional[tuple]:
    """Per-net accuracies pooled over seeds -> (mean, std, n); None when nothing is there."""
    import numpy as np

    accs = [a for e in entries if e for a in e.get("accs", [e.get("acc_mean")]) if a is not None]
    if not accs:
        return None
    a = np.asarray(accs, np.float64)
    return float(a.mean()), float(a.std()), len(a)


def _fmt(v: Optional[tuple]) -> str:
    return "-" if v is None else f"{100 * v[0]:.2f} +- {100 * v[1]:.2f}"


def _noise_rate(noise: str, realized: Optional[float]) -> float:
    """x position in the plots: the nominal rate, 0 for clean, the realized rate for natural noise."""
    kind, _, rest = noise.partition(":")
    if kind == "clean":
        return 0.0
    try:
        return float(rest)
    except ValueError:
        return float(realized or 0.0)


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


def markdown(grid_name: str, data: dict, summ: dict) -> str:
    grid = data["grid"]
    methods, ipcs = grid["methods"], grid["ipcs"]
    finished = [c for c in data["cells"] if c["finished"]]
    lines = [f"# Grid `{grid['name']}`", "", grid["description"], "",
             f"Preset **{grid['preset']}**, methods {', '.join(methods)}, IPC {', '.join(map(str, ipcs))}, "
             f"seeds {', '.join(map(str, grid['seeds']))}, "
             f"{'/'.join(str(k) for k in sorted({c['k'] for c in finished} or {grid['k']}))} evaluation nets per figure. "
             f"{len(finished)} of {len(data['cells'])} cells finished. Aggregated {data['aggregated']} on "
             f"{data['machine']}.", "",
             "Test accuracy %, mean +- std over the evaluation nets (pooled over seeds). Each method cell reads "
             "`standard / own`: the common hard-label protocol, then the method's own evaluation protocol "
             "after its last step (the headline); DANCE and RCIG cells add `[best B]`, the best test accuracy "
             "over the own protocol's evaluation points (picked on the test set, as DANCE's paper reports; "
             "not the headline). "
             "`baseline` = the same ConvNet trained on the whole noisy training set; `clean` = trained on the "
             "true labels (upper bound).", ""]
    if any(c["tiny"] for c in finished):
        lines += ["**Smoke-test figures (`--tiny`: every part shrunk to seconds); they say nothing about the "
                  "methods.**", ""]
    for ds in grid["datasets"]:
        head = ["noise", "realized %", "baseline", "clean"] + [f"{m} IPC{k}" for k in ipcs for m in methods]
        lines += [f"## {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for noise in grid["noises"]:
            v = summ.get((ds, noise))
            if v is None:
                lines.append(f"| {noise} | not run | " + " | ".join("-" for _ in head[2:]) + " |")
                continue
            real = "-" if v["_realized"] is None else f"{100 * v['_realized']:.1f}"
            cells = [f"{_fmt(v.get(f'{m}/ipc{k}/standard'))} / {_fmt(v.get(f'{m}/ipc{k}/own'))}"
                     + (f" [best {_fmt(v[f'{m}/ipc{k}/own_best'])}]" if v.get(f"{m}/ipc{k}/own_best") else "")
                     for k in ipcs for m in methods]
            lines.append(f"| {noise} | {real} | {_fmt(v.get('baseline'))} | {_fmt(v.get('clean'))} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += _controls_tables(grid, summ)
    lines += _findings_lines(grid, summ)
    lines += [f"![accuracy vs noise]({grid['name']}.png)", "", "## Cells: how to reproduce each", "",
              "| cell | status | wall time (recorded runs) | device | machine, start | command |", "|---|---|---|---|---|---|"]
    for c in data["cells"]:
        secs = "-" if c.get("seconds") is None else f"{c['seconds'] / 60:.1f} min"
        if (c.get("runs") or 1) > 1:
            killed = c.get("killed_runs") or 0
            secs += f" ({c['runs']} runs" + (f", {killed} killed: timed to its last file write)" if killed else ")")
        status = ("finished (kept from the committed .json: no run directory here)" if c.get("carried") else
                  "finished" if c["finished"] else
                  "started, not finished (a re-run resumes it)" if c.get("started") else "not run")
        lines.append(f"| {c['noise']} ipc{c['ipc']} seed{c['seed']} | {status} | {secs} | {c.get('device') or '-'} | "
                     f"{c.get('machine') or '-'}, {c.get('started') or '-'} | `{c['command']}` |")
    lines.append("")
    return "\n".join(lines)


def _controls_tables(grid: dict, summ: dict) -> list:
    """Per data set: the controls (common protocol) and each method's margin over random_clean / selected."""
    methods, ipcs = grid["methods"], grid["ipcs"]
    if not any(v.get(f"random_noisy/ipc{k}") for v in summ.values() for k in ipcs):
        return []
    lines = ["## Against the controls (common protocol)", "",
             "random_noisy / random_clean: IPC random training images per noisy / true class with those labels; "
             "selected: the set each distiller starts from. Same protocol, nets and keys as the distilled sets. "
             "Method cells: points above random_clean / above selected. A distilled set at or below random_clean "
             "says nothing about distillation."
             + (f" Each random control is drawn {grid['control_draws']} times and the nets of all draws are pooled, "
                "so its +- includes how much a random draw varies, not only the evaluation nets."
                if grid["control_draws"] > 1 else ""), ""]
    for ds in grid["datasets"]:
        head = ["noise"] + [f"{c} IPC{k}" for k in ipcs for c in ("random noisy", "random clean")] + \
               [f"{m} IPC{k}" for k in ipcs for m in methods]
        lines += [f"### {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for noise in grid["noises"]:
            v = summ.get((ds, noise))
            if v is None:
                continue
            cells = [_fmt(v.get(f"{c}/ipc{k}")) for k in ipcs for c in ("random_noisy", "random_clean")]
            for k in ipcs:
                for m in methods:
                    acc, rc, sel = (v.get(x) for x in (f"{m}/ipc{k}/standard", f"random_clean/ipc{k}",
                                                       f"selected_{m}/ipc{k}"))
                    d = lambda ref: "-" if acc is None or ref is None else f"{100 * (acc[0] - ref[0]):+.1f}"  # noqa: E731
                    cells.append(f"{d(rc)} / {d(sel)}")
            lines.append(f"| {noise} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


FINDING_CLAIMS = {
    "1": "symmetric noise >= 0.2: the best distilled set beats the full noisy set",
    "3": "asymmetric noise: distillation fails (the best distilled set is below the full noisy set)",
    "denoise": "the distilled set beats random real images with their true labels (common protocol)",
}


def _verdict(margin: float, spread: float, sign: int) -> str:
    """'holds' when the margin points the claimed way by more than the spread, 'does not hold' when it points
    the other way by more than the spread, else 'within the spread'."""
    if sign * margin > spread:
        return "holds"
    if sign * margin < -spread:
        return "does not hold"
    return "within the spread"


def findings(grid: dict, summ: dict) -> list[dict]:
    """The study's findings 1 and 3, and the denoising check against random_clean, per finished row and IPC.

    Each entry: finding id, dataset, noise, ipc, what is compared, margin (a - b, accuracy fraction), spread
    (sqrt(std_a^2 + std_b^2) over the evaluation nets, and a pooled control's draws) and the verdict
    (`_verdict`). Finding 1/3 compare the best distilled set by its headline (own protocol; the common protocol
    where the own is missing) with the converged full-noisy baseline; 'denoise' compares each method's
    common-protocol set with random_clean.
    """
    out = []
    for ds in grid["datasets"]:
        for noise in grid["noises"]:
            v = summ.get((ds, noise))
            if v is None:
                continue
            kind, _, rate = noise.partition(":")
            for k in grid["ipcs"]:
                def add(fid, label, a, b, sign):
                    out.append({"finding": fid, "dataset": ds, "noise": noise, "ipc": k, "compared": label,
                                "a": a[0], "b": b[0], "margin": a[0] - b[0], "spread": math.hypot(a[1], b[1]),
                                "verdict": _verdict(a[0] - b[0], math.hypot(a[1], b[1]), sign)})

                heads = {m: v.get(f"{m}/ipc{k}/own") or v.get(f"{m}/ipc{k}/standard") for m in grid["methods"]}
                heads = {m: h for m, h in heads.items() if h is not None}
                base = v.get("baseline")
                fid = "1" if kind == "symmetric" and float(rate or 0) >= 0.2 else "3" if kind == "asymmetric" else None
                if fid and heads and base:
                    m = max(heads, key=lambda name: heads[name][0])
                    add(fid, f"best distilled ({m}) vs baseline", heads[m], base, 1 if fid == "1" else -1)
                rc = v.get(f"random_clean/ipc{k}")
                if kind != "clean" and rc:
                    for m in grid["methods"]:
                        if v.get(f"{m}/ipc{k}/standard"):
                            add("denoise", f"{m} vs random_clean", v[f"{m}/ipc{k}/standard"], rc, 1)
    return out


def _findings_lines(grid: dict, summ: dict) -> list:
    rows = findings(grid, summ)
    if not rows:
        return []
    lines = ["## The study's findings, computed from the cells", "",
             "Margins in accuracy points (a - b); spread = sqrt(std_a^2 + std_b^2) over the evaluation nets (and "
             "over the draws of a pooled random control). A "
             "finding **holds** when the margin points the claimed way by more than the spread, **does not hold** "
             "when it points the other way by more than the spread. Claims: "
             + "; ".join(f"{fid}: {text}" for fid, text in FINDING_CLAIMS.items())
             + ". Findings 2 (natural noise) and 4 (hard samples) are not measured by this grid.", "",
             "| finding | dataset | noise | IPC | compared | a | b | margin | spread | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['finding']} | {r['dataset']} | {r['noise']} | {r['ipc']} | {r['compared']} | "
                     f"{100 * r['a']:.2f} | {100 * r['b']:.2f} | {100 * r['margin']:+.2f} | {100 * r['spread']:.2f} | "
                     f"{r['verdict']} |")
    return lines + [""]


def plot(path: str, data: dict, summ: dict) -> None:
    """Accuracy vs noise rate: one panel per (dataset, noise kind, IPC); lines = methods (standard and own
    protocol), the random_clean / random_noisy controls (grey), the full-noisy baseline and the clean upper
    bound. The clean row is rate 0 of every kind."""
    import numpy as np

    from jaxdistill.report import _plt, _savefig

    grid = data["grid"]
    kinds = [k for k in dict.fromkeys(n.split(":")[0] for n in grid["noises"]) if k != "clean"] or ["clean"]
    panels = [(ds, kind, ipc) for ds in grid["datasets"] for kind in kinds for ipc in grid["ipcs"]]
    plt = _plt()
    ncol = len(grid["ipcs"])
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, (ds, kind, ipc) in zip(axes.ravel(), panels):
        noises = [n for n in grid["noises"] if n == "clean" or n.split(":")[0] == kind]
        series: dict = {}
        for n in noises:
            v = summ.get((ds, n))
            if v is None:
                continue
            x = _noise_rate(n, v["_realized"])
            for m in grid["methods"]:
                for proto in ("standard", "own"):
                    if v.get(f"{m}/ipc{ipc}/{proto}") is not None:
                        series.setdefault(f"{m} ({proto})", []).append((x, *v[f"{m}/ipc{ipc}/{proto}"][:2]))
            if v.get("baseline") is not None:
                series.setdefault("baseline (full noisy)", []).append((x, *v["baseline"][:2]))
            for c in ("random_clean", "random_noisy"):
                if v.get(f"{c}/ipc{ipc}") is not None:
                    series.setdefault(f"control: {c} (standard)", []).append((x, *v[f"{c}/ipc{ipc}"][:2]))
        for name, pts in sorted(series.items()):
            r, mu, sd = (np.array(a, float) for a in zip(*sorted(pts)))
            if name.startswith("baseline"):
                style = {"fmt": "--ks"}
            elif name.startswith("control"):
                style = {"fmt": "-.x", "color": "0.35" if "clean" in name else "0.65"}
            else:
                style = {"fmt": "-o" if "standard" in name else ":^"}
            ax.errorbar(r, 100 * mu, yerr=100 * sd, capsize=3, label=name, markersize=4, **style)
        clean = next((summ[(d, n)]["clean"] for (d, n) in summ if d == ds and summ[(d, n)].get("clean")), None)
        if clean is not None:
            ax.axhline(100 * clean[0], color="g", ls="-.", lw=1, label="clean labels (upper bound)")
        ax.set_title(f"{ds}, {kind} noise, IPC {ipc}", fontsize=10)
        ax.set_xlabel("noise rate")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if series or clean is not None:
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


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


# ------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("run", "aggregate"):
        p = sub.add_parser(cmd)
        p.add_argument("grid")
        p.add_argument("--out", default=None, help="default experiments/runs/GRID (GRID-tiny with --tiny)")
        if cmd == "run":
            p.add_argument("--only", default=None, help="e.g. 'noise=symmetric:0.4,ipc=10' (globs, '|' = or)")
            p.add_argument("--dry-run", action="store_true")
            p.add_argument("--tiny", action="store_true", help="shrink every part to seconds (smoke test)")
        else:
            p.add_argument("--results-dir", default=RESULTS_DIR)
            p.add_argument("--tiny", action="store_true", help="default --out for a --tiny run")
    sub.add_parser("list")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for g in list_grids():
            grid = load_grid(g)
            print(f"{g:14s} {len(expand(grid)):4d} cells  {grid['description']}")
        return 0
    name = os.path.splitext(os.path.basename(args.grid))[0]
    out = args.out or os.path.join("experiments", "runs", name + ("-tiny" if args.tiny else ""))
    try:
        if args.cmd == "run":
            s = run_grid(args.grid, out, args.only, args.dry_run, args.tiny)
            return 1 if s["failed"] else 0
        aggregate(args.grid, out, args.results_dir, tiny=args.tiny)
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
