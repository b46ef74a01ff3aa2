"""The experiment grid's grids and cells: load a named grid, expand it into cells (dataset x noise x IPC x seed),
filter them with --only, and the command that reruns one cell. Used by grid_run.py and grid_aggregate.py; the CLI
is experiments/grid.py."""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import platform
import shlex
import sys
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxdistill.errors import ConfigError  # noqa: E402
from jaxdistill.pipeline import TINY_OVERRIDES  # noqa: E402

GRID_DIR = os.path.join(ROOT, "experiments", "grids")
RESULTS_DIR = os.path.join(ROOT, "experiments", "results")
STAGE_STORE = os.path.join(RESULTS_DIR, "stages")  # finished stages of every cell, committed (grid_run.run_grid)
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


def machine() -> str:
    return f"{platform.node()} ({platform.platform()}, {os.cpu_count()} CPUs)"
