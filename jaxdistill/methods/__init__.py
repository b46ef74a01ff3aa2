"""The three distillers (DATM, DANCE, RCIG) behind one lookup and one run driver.

`methods/base.py` holds `DistilledSet`, the `register` decorator and the run record; each distiller module
(`datm`, `dance`, `rcig`) registers its `distill(config, data, key, *, workdir=None)` and its config factory
there when it is imported. This package imports base and the three distillers (base imports none of them), so
`list_methods`, `get_method`, `get_config` and the run driver `distill` below see every method.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from jaxdistill.checkpoint import atomic_write_json
from jaxdistill.errors import ConfigError
from jaxdistill.methods import dance, datm, rcig  # noqa: F401  (importing a distiller registers it)
from jaxdistill.methods.base import (DISTILLED_FILE, INITIAL_FILE, RUN_FILE, DistilledSet, DistillFn, _CONFIGS,
                                     _METHODS, check_workdir, run_record)
from jaxdistill.sharding import sync

log = logging.getLogger("jaxdistill")

__all__ = ["DISTILLED_FILE", "INITIAL_FILE", "DistilledSet", "check_workdir", "distill", "get_config", "get_method",
           "list_methods", "run_record"]


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> DistillFn:
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {sorted(_METHODS)}")
    return _METHODS[name]


def get_config(method: str, dataset: str, ipc: int, preset: str = "paper"):
    get_method(method)
    return _CONFIGS[method](dataset, ipc, preset)


def distill(method: str, config, data, key, *, workdir: Optional[str] = None, progress: bool = True) -> DistilledSet:
    """The one run driver: distil with `method`, resumably inside `workdir`.

    With a workdir, the run is first checked against the one recorded there (`run.json`): another run's
    state is refused (StoreError), never reused or deleted. A finished run (its distilled.npz present) is
    loaded, not redone; an unfinished one resumes from its last checkpoint. SIGINT/SIGTERM make the
    distillers checkpoint and raise `jaxdistill.checkpoint.Interrupted`; re-running resumes. The set the
    distiller started from (`DistilledSet.initial`, the `selected` control) is saved beside it as initial.npz.
    """
    fn = get_method(method)
    if workdir is None:
        return fn(config, data, key, workdir=None, progress=progress)
    record = run_record(method, config, data, key)
    claimed = check_workdir(workdir, record)
    # A multi-process run: every process has looked at the workdir before process 0 writes into it.
    sync("distill/claimed")
    path = os.path.join(workdir, DISTILLED_FILE)
    if os.path.exists(path) and claimed:
        log.info("%s: the run in %s has finished; loading its set", method, workdir)
        ds = DistilledSet.load(path)
        init = os.path.join(workdir, INITIAL_FILE)
        ds.initial = DistilledSet.load(init) if os.path.exists(init) else None
        return ds
    ds = fn(config, data, key, workdir=workdir, progress=progress)
    if ds.initial is not None:
        ds.initial.save(os.path.join(workdir, INITIAL_FILE))
    if not os.path.exists(path):
        ds.save(path)
    if not claimed:
        atomic_write_json(os.path.join(workdir, RUN_FILE), record)
    # Callers read distilled.npz / initial.npz next (pipeline, CLI): in a multi-process run they exist by now.
    sync("distill/saved")
    return ds
