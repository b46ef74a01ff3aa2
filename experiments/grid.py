"""The experiment grid: expand a named grid into cells, run each with `run_denoise`, aggregate the tables.

  python experiments/grid.py run GRID [--out experiments/runs/GRID] [--only 'noise=symmetric:0.4,ipc=10']
                                      [--dry-run] [--tiny] [--stage-store DIR | --no-stage-store] [--commit]
                                      [--baseline-only]
  python experiments/grid.py aggregate GRID [--out ...] [--results-dir experiments/results]
  python experiments/grid.py list

GRID is a name in experiments/grids/ (cifar10, cifar100, cifar10n, cifar100n, tiny, fmnist, fmnist_small, digits)
or a path to a grid JSON file. One cell = dataset x noise x IPC x seed with the grid's list of methods; it runs in
`<out>/<dataset>/<noise>/ipc<K>/seed<S>/` and resumes its own finished stages (run_denoise). A cell whose
results.json holds the same config is skipped; every finished stage of a cell (baseline, each distilled set, each
evaluation) is also kept in the stage store (experiments/results/stages/GRID/..., small files meant to be
committed; `--commit` commits each at once), and a cell takes from there the stages its run directory lacks, so
a cell longer than a working session goes on from a fresh checkout. `--baseline-only` runs only the baseline
stage of each cell (a preset whose baseline changed; `aggregate` puts a current stored baseline beside a cell's
kept results). A failing cell is recorded in `<out>/failures.json` and the grid
goes on. The clean-label upper bound is trained once per (dataset, IPC, seed): in the `clean` cell when the grid
has one, else in the first noise setting (it does not depend on the noise).

This file is the CLI; the parts: grid_cells.py (grids, cells, --only), grid_run.py (running cells),
grid_aggregate.py (collecting and pooling the cells, writing <GRID>.md/.png/.json), grid_tables.py (the tables
and findings of <GRID>.md), grid_plot.py (<GRID>.png). Their names are re-exported here.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the grid_* modules beside this file

from grid_cells import (FILTER_KEYS, GRID_DIR, GRID_KEYS, OPTIONAL_GRID_KEYS, RESULTS_DIR, ROOT,  # noqa: E402,F401
                        STAGE_STORE, TINY_CELL, Cell, cell_command, expand, list_grids, load_grid, machine, noise_dirname,
                        parse_only)
from grid_run import (_SUPERSET_FLAGS, _cfg_json, _earlier_runs, _last_write, _record_run,  # noqa: E402,F401
                      _wall_seconds, baseline_stage_current, git_committer, is_finished, run_grid,
                      stage_mirror_dir)
from grid_aggregate import _CARRY_KEYS, _pool, _previous_cells, aggregate, collect, summarize  # noqa: E402,F401
from grid_tables import (FINDING_CLAIMS, _controls_tables, _findings_lines, _fmt, _verdict,  # noqa: E402,F401
                         findings, markdown)
from grid_plot import _noise_rate, plot  # noqa: E402,F401

from jaxdistill.errors import ConfigError  # noqa: E402


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
            p.add_argument("--commit", action="store_true", help="git-commit each stage kept in the stage store")
            p.add_argument("--baseline-only", action="store_true", help="run only each cell's baseline stage")
        else:
            p.add_argument("--results-dir", default=RESULTS_DIR)
            p.add_argument("--tiny", action="store_true", help="default --out for a --tiny run")
        p.add_argument("--stage-store", default=None,
                       help=f"default {os.path.relpath(STAGE_STORE, ROOT)} (none with --tiny)")
        p.add_argument("--no-stage-store", action="store_true", help="keep stages in the run directory only")
    sub.add_parser("list")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for g in list_grids():
            grid = load_grid(g)
            print(f"{g:14s} {len(expand(grid)):4d} cells  {grid['description']}")
        return 0
    name = os.path.splitext(os.path.basename(args.grid))[0]
    out = args.out or os.path.join("experiments", "runs", name + ("-tiny" if args.tiny else ""))
    store = None if args.no_stage_store else (args.stage_store or (None if args.tiny else STAGE_STORE))
    try:
        if args.cmd == "run":
            s = run_grid(args.grid, out, args.only, args.dry_run, args.tiny, stage_store=store, commit=args.commit,
                         baseline_only=args.baseline_only)
            return 1 if s["failed"] else 0
        aggregate(args.grid, out, args.results_dir, tiny=args.tiny, stage_store=store)
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
