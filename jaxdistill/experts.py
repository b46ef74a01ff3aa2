"""The expert / model-pool store: E nets trained at once, per-epoch parameter snapshots on disk.

One store serves DATM (expert trajectories, every epoch), DANCE (init + final weights only) and RCIG.

Layout of a store directory:
  store.json          config: meta (data set, noise, network, ...), train config, snapshot epochs,
                      parameter layout (leaf paths + shapes), num_experts; written once, atomically.
  expert_0000.npy     (S, P) float32, row s = flat parameters after epoch `epochs[s]` (epoch 0 = init).
  ...                 Created under a temporary name and renamed; rows are filled in place.
  state_g000.npz      training state of expert group g (params, optimiser state, keys, step) and the
                      epoch it reached: the COMMIT RECORD. Rows are flushed to disk before this file is
                      atomically replaced, so every row with epoch <= committed epoch is complete, and a
                      crash at any point resumes from the last committed epoch.
  progress.json       groups finished (their state file is then deleted).

Reads are memory-mapped (`np.load(mmap_mode='r')`), so 100 experts x 100 epochs of CIFAR size
(about 13 GB) never sit in RAM; only the rows asked for are paged in.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxdistill.checkpoint import (Interrupted, StopRequest, _json_default, atomic_save_npz, atomic_write_json,
                                   read_json)
from jaxdistill.data.fingerprint import labels_fingerprint
from jaxdistill.errors import ConfigError, StoreError
from jaxdistill.nn import Net
from jaxdistill.runlog import MetricsLog
from jaxdistill.sharding import is_primary, model_mesh, resolve_devices, sync, to_host
from jaxdistill.train import (init_state, make_optimizer, steps_per_epoch, train_models, train_models_sharded,
                              without_added_defaults)

STORE_VERSION = 1
STORE_FILE = "store.json"
PROGRESS_FILE = "progress.json"


class ExpertRunInterrupted(Interrupted):
    """A stop request (SIGTERM/SIGINT) ended expert training after the last epoch was committed."""


def _jsonable(v: Any) -> Any:
    """Round-trip through JSON so stored and expected meta compare equal (tuples -> lists etc.)."""
    return json.loads(json.dumps(v, default=_json_default))


def _leaf_layout(params: Any) -> list[dict]:
    """[{path: ['conv0', 'kernel'], shape: [...]}, ...] in ravel_pytree (tree-flatten) order."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", str(k)))) for k in path]
        out.append({"path": [str(n) for n in names], "shape": list(np.shape(leaf))})
    return out


def _template_from_layout(layout: list[dict]) -> dict:
    """Nested dict of zeros with the stored leaf paths/shapes (dict flatten order = sorted keys = stored order)."""
    tree: dict = {}
    for leaf in layout:
        node = tree
        for name in leaf["path"][:-1]:
            node = node.setdefault(name, {})
        node[leaf["path"][-1]] = np.zeros(leaf["shape"], np.float32)
    return tree


def check_meta(stored: dict, expected: Optional[dict], directory: str) -> None:
    """StoreError naming every key whose stored value differs from the expected one."""
    if not expected:
        return
    expected = without_added_defaults(_jsonable(expected))
    stored = without_added_defaults(stored)
    bad = [k for k in expected if k not in stored or stored[k] != expected[k]]
    if bad:
        detail = "; ".join(f"{k}: store has {stored.get(k, '<missing>')!r}, run expects {expected[k]!r}"
                           for k in bad)
        raise StoreError(f"expert store {directory!r} was built for a different setting ({detail}). "
                         f"Use another directory or delete this one to rebuild it.")


class ExpertStore:
    """Read access to a finished store. Use `ExpertStore.open(directory, expect_meta)`."""

    def __init__(self, directory: str, info: dict):
        self.directory = os.path.abspath(directory)
        self.info = info
        self.meta: dict = info["meta"]
        self._template = _template_from_layout(info["layout"])
        flat0, self._unravel = ravel_pytree(self._template)
        self.num_params = int(flat0.size)
        self._mmaps: dict[int, np.ndarray] = {}

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str, expect_meta: Optional[dict] = None, *, allow_incomplete: bool = False
             ) -> "ExpertStore":
        """Open a store; StoreError if missing, incomplete (unless allowed) or built for another setting."""
        info = read_json(os.path.join(directory, STORE_FILE))
        if info is None:
            raise StoreError(f"no expert store at {directory!r} (missing or unreadable {STORE_FILE}); "
                             f"build one with train_experts(...)")
        if info.get("version") != STORE_VERSION:
            raise StoreError(f"expert store {directory!r} has version {info.get('version')!r}; "
                             f"this code reads version {STORE_VERSION}")
        check_meta(info["meta"], expect_meta, directory)
        store = cls(directory, info)
        if not allow_incomplete and not store.complete:
            raise StoreError(f"expert store {directory!r} is incomplete ({store.groups_done} of "
                             f"{store.num_groups} expert groups finished); rerun train_experts with the same "
                             f"arguments to resume it")
        return store

    # -- properties ------------------------------------------------------------------------------
    @property
    def num_experts(self) -> int:
        return int(self.info["num_experts"])

    @property
    def epochs(self) -> list[int]:
        """Stored epoch indices (0 = initialisation), ascending."""
        return list(self.info["snapshot_epochs"])

    @property
    def num_groups(self) -> int:
        return len(self.info["groups"])

    @property
    def groups_done(self) -> int:
        prog = read_json(os.path.join(self.directory, PROGRESS_FILE)) or {}
        return len(prog.get("done", []))

    @property
    def complete(self) -> bool:
        return self.groups_done == self.num_groups

    @property
    def template(self) -> Any:
        return self._template

    # -- reads -----------------------------------------------------------------------------------
    def _check_expert(self, e: int) -> int:
        if not (isinstance(e, (int, np.integer)) and 0 <= int(e) < self.num_experts):
            raise StoreError(f"expert index {e!r} out of range; allowed 0..{self.num_experts - 1}")
        return int(e)

    def row(self, epoch: int) -> int:
        """Row of `epoch` in an expert's (S, P) array; negative indices count from the last stored epoch."""
        eps = self.epochs
        if isinstance(epoch, (int, np.integer)) and -len(eps) <= epoch < 0:
            return len(eps) + int(epoch)
        if epoch not in eps:
            raise StoreError(f"epoch {epoch!r} is not stored; stored epochs: {eps}")
        return eps.index(int(epoch))

    def flat(self, e: int) -> np.ndarray:
        """Expert e's snapshots as a read-only memmap (S, P), rows in the order of `.epochs`."""
        e = self._check_expert(e)
        if e not in self._mmaps:
            path = os.path.join(self.directory, f"expert_{e:04d}.npy")
            try:
                m = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise StoreError(f"cannot read {path!r}: {err}") from err
            if m.shape != (len(self.epochs), self.num_params):
                raise StoreError(f"{path!r} has shape {m.shape}; store.json says "
                                 f"{(len(self.epochs), self.num_params)}")
            self._mmaps[e] = m
        return self._mmaps[e]

    def flat_at(self, e: int, epoch: int) -> np.ndarray:
        """(P,) float32 copy of expert e's flat parameters after `epoch`."""
        return np.array(self.flat(e)[self.row(epoch)])

    def params(self, e: int, epoch: int) -> Any:
        """Expert e's parameter pytree after `epoch` (negative: counted from the last stored epoch)."""
        return self.unravel(self.flat_at(e, epoch))

    def stacked_params(self, experts: Sequence[int], epoch: int) -> Any:
        """Parameters of several experts at `epoch`, stacked on a leading axis (for vmapped predict)."""
        flat = np.stack([self.flat_at(e, epoch) for e in experts])
        return jax.vmap(self.unravel)(jnp.asarray(flat))

    def unravel(self, flat: Any) -> Any:
        """(P,) vector -> parameter pytree (the inverse of ravel_pytree on the stored layout)."""
        if np.shape(flat) != (self.num_params,):
            raise StoreError(f"flat vector of shape {np.shape(flat)}; this store's nets have "
                             f"{self.num_params} parameters")
        return self._unravel(flat)


def _plan_groups(num_experts: int, group_size: Optional[int]) -> list[list[int]]:
    g = num_experts if not group_size else int(group_size)
    return [list(range(s, min(s + g, num_experts))) for s in range(0, num_experts, g)]


def train_experts(net: Net, x, y, train_cfg, num_experts: int, key: jax.Array, directory: str,
                  meta: dict, snapshot_epochs: Optional[Sequence[int]] = None, progress: bool = True,
                  *, group_size: Optional[int] = None, devices: int = 1,
                  on_epoch: Optional[Callable[[int, int], None]] = None) -> ExpertStore:
    """Train `num_experts` nets with the one training loop (vmapped) and store their snapshots.

    x: (N, H, W, C) images in the working space (e.g. ZCA'd); y: (N,) labels (noisy) or (N, C) targets.
    train_cfg: `jaxdistill.train.TrainConfig` (e.g. SGD 0.01, DSA, GSAM for DATM's flat experts).
    meta: what the store is for ({'dataset', 'noise', 'net', ...}); recorded, and checked on reuse.
    snapshot_epochs: epochs to keep (0 = init), default all 0..E; e.g. [0, E] for DANCE's pool.
    group_size: experts trained together in one vmapped program (memory bound); default all.
    devices: as the distillers' `devices` (0 = all visible, 1 = one device, n = the first n): each group's
    nets are split over a `models` mesh (`train.train_models_sharded`; a group size that is not a multiple
    of n is padded with copies of its last net, as the evaluator does). Not part of the store's identity:
    the snapshots equal one device's to float tolerance, and a store may resume with another count.
    on_epoch(group, epoch): called after each epoch is committed (for tests / logging).
    Reruns with the same arguments resume an interrupted run; a different setting raises StoreError.
    """
    if num_experts < 1:
        raise ConfigError(f"num_experts={num_experts} must be >= 1")
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    n_steps, _ = steps_per_epoch(n, train_cfg.batch_size, train_cfg.drop_last)
    total_epochs = train_cfg.epochs if train_cfg.steps is None else math.ceil(train_cfg.steps / n_steps)
    if snapshot_epochs is None:
        snaps = list(range(total_epochs + 1))
    else:
        snaps = sorted({int(s) for s in snapshot_epochs})
        bad = [s for s in snaps if not 0 <= s <= total_epochs]
        if bad or not snaps:
            raise ConfigError(f"snapshot_epochs {list(snapshot_epochs)} must be non-empty and within "
                              f"0..{total_epochs} (the run's epochs)")
    params0 = net.init(jax.random.PRNGKey(0), tuple(x.shape[1:]))
    layout = _leaf_layout(params0)
    num_params = int(ravel_pytree(params0)[0].size)
    groups = _plan_groups(num_experts, group_size)
    full_meta = _jsonable({
        **meta,
        "net": dataclasses.asdict(net.cfg),
        "train": dataclasses.asdict(train_cfg),
        "num_train": int(n),
        "input_shape": list(x.shape[1:]),
        "labels_sha1": labels_fingerprint(np.asarray(y).argmax(-1) if np.ndim(y) == 2 else y),
    })
    info = {"version": STORE_VERSION, "meta": full_meta, "num_experts": int(num_experts),
            "snapshot_epochs": snaps, "total_epochs": int(total_epochs), "num_params": num_params,
            "layout": layout, "groups": groups,
            "key": np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                              else key).tolist()}
    os.makedirs(directory, exist_ok=True)
    store_path = os.path.join(directory, STORE_FILE)
    existing = read_json(store_path)
    if existing is None:
        atomic_write_json(store_path, info)
    else:
        check_meta(existing.get("meta", {}), full_meta, directory)
        for k in ("num_experts", "snapshot_epochs", "groups", "key", "layout"):
            if existing.get(k) != _jsonable(info[k]):
                raise StoreError(f"expert store {directory!r} was built with {k}={existing.get(k)!r}; this run "
                                 f"asks for {info[k]!r}. Use another directory or delete this one.")
    store = ExpertStore(directory, _jsonable(info))
    # Every process has read the store's files before process 0 writes any (a multi-process run).
    sync("experts/opened")
    if store.complete:
        return store
    n_dev = resolve_devices(devices, "experts")
    mesh = model_mesh(n_dev) if n_dev > 1 else None

    tx = make_optimizer(train_cfg, total_epochs * n_steps)
    prog_path = os.path.join(directory, PROGRESS_FILE)
    row_of = {ep: i for i, ep in enumerate(snaps)}
    # Read once: in a multi-process run only process 0 writes progress.json, so the others track it here.
    done = set((read_json(prog_path) or {}).get("done", []))
    with StopRequest() as stop:
        for gi, members in enumerate(groups):
            if gi in done:
                continue
            _train_group(net, x, y, train_cfg, jax.random.fold_in(key, gi), gi, members, directory, snaps,
                         row_of, num_params, total_epochs, tx, init_state, mesh, progress, stop, on_epoch)
            done.add(gi)
            atomic_write_json(prog_path, {"done": sorted(done)})
            state_path = os.path.join(directory, f"state_g{gi:03d}.npz")
            if is_primary() and os.path.exists(state_path):
                os.remove(state_path)
    sync("experts/finished")
    return ExpertStore.open(directory)


def _open_rows(directory: str, e: int, shape: tuple) -> np.ndarray:
    """Expert e's (S, P) file opened for in-place row writes (created atomically if missing)."""
    path = os.path.join(directory, f"expert_{e:04d}.npy")
    if not os.path.exists(path):
        tmp = path + ".tmp"
        m = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        m.flush()
        del m
        os.replace(tmp, path)
    m = np.load(path, mmap_mode="r+")
    if m.shape != shape:
        raise StoreError(f"{path!r} has shape {m.shape}; expected {shape}")
    return m


def _train_group(net, x, y, cfg, key, gi, members, directory, snaps, row_of, num_params, total_epochs, tx,
                 init_state, mesh, progress, stop, on_epoch):
    k = len(members)
    state_path = os.path.join(directory, f"state_g{gi:03d}.npz")
    # Fresh state from the group key: the template for restoring and the start if nothing is committed.
    state = init_state(net, cfg, key, k, tuple(x.shape[1:]), tx)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    start = 0
    if os.path.exists(state_path):
        try:
            with np.load(state_path) as z:
                saved = [z[f"leaf_{i}"] for i in range(len(leaves))]
                start = int(z["epoch"])
        except (OSError, ValueError, KeyError) as err:
            raise StoreError(f"cannot read the training state {state_path!r} ({err}); delete the store "
                             f"directory {directory!r} to rebuild it") from err
        if [s.shape for s in saved] != [np.shape(l) for l in leaves]:
            raise StoreError(f"training state {state_path!r} does not fit this run's network/optimiser")
        state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s) for s in saved])
    sync(f"experts/g{gi:03d}/read")  # no process reads the state file after process 0 rewrites it
    rows = [_open_rows(directory, e, (len(snaps), num_params)) for e in members] if is_primary() else []

    def commit(epoch: int, st) -> None:
        if epoch in row_of:
            flat = to_host(jax.vmap(lambda p: ravel_pytree(p)[0])(st.params))  # (k, P), gathered on every process
            for j, m in enumerate(rows):
                m[row_of[epoch]] = flat[j]
                m.flush()  # rows reach the file before the commit record names this epoch
        host = to_host(jax.tree_util.tree_leaves(st))
        atomic_save_npz(state_path, epoch=np.asarray(epoch), **{f"leaf_{i}": a for i, a in enumerate(host)})
        if on_epoch is not None:
            on_epoch(gi, epoch)

    if start == 0:
        commit(0, state)

    def on_ep(epoch, st):
        commit(epoch, st)
        if stop.requested and epoch < total_epochs:
            raise ExpertRunInterrupted(f"stopped after epoch {epoch}; rerun to resume")

    if start < total_epochs:
        label = f"experts {members[0]}-{members[-1]}" if progress else False
        # Curves of this group (mean over its nets) in the store's metrics.jsonl, e.g. stage 'experts/g000'.
        log = MetricsLog(directory, f"{os.path.basename(os.path.normpath(directory))}/g{gi:03d}")
        kw = dict(state=state, start_epoch=start, on_epoch=on_ep, progress=label,
                  num_classes=net.cfg.num_classes, metrics_log=log)
        try:
            if mesh is None:
                train_models(net, x, y, cfg, key, num_models=k, **kw)
            else:  # the group's nets split over the devices; on_ep sees the unpadded k nets
                train_models_sharded(net, x, y, cfg, key, k, mesh=mesh, **kw)
        finally:
            log.close()
    for m in rows:
        m.flush()
    del rows
