"""Atomic result files and resumable checkpoints (orbax-checkpoint).

Result files are written to a temporary file in the same directory and renamed into place, so a
reader never sees a half-written file. Checkpoints keep the last few good steps; a damaged newest
checkpoint is skipped with a warning and the previous one is used.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from typing import Any, Optional

import jax
import numpy as np

from jaxdistill.errors import Interrupted  # noqa: F401  (raised by the loops that poll a StopRequest)

log = logging.getLogger("jaxdistill")


def _umask_file_mode() -> int:
    m = os.umask(0)
    os.umask(m)
    return 0o666 & ~m


# mkstemp makes 0600 files; results and reports should get the mode any file the user writes gets.
# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_FILE_MODE = _umask_file_mode()


def _tmp_path(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    return tmp


def _replace(tmp: str, path: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _atomic(path: str, mode: str):
    """Open a temp file beside `path`; on success fsync and rename it over `path`, else remove it."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# In a multi-process run (jax.distributed.initialize) every process computes the same results; only process 0
# writes result files (`sharding.is_primary`), the others return without touching the path. Values are
# brought to the host first on every process, as gathering an array spread over processes is a collective.

def atomic_write_text(path: str, text: str) -> None:
    from jaxdistill.sharding import is_primary

    if not is_primary():
        return
    with _atomic(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any) -> None:
    # dumps runs on every process: _json_default may gather a jax.Array (a collective)
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_bytes(path: str, data: bytes) -> None:
    from jaxdistill.sharding import is_primary

    if not is_primary():
        return
    with _atomic(path, "wb") as f:
        f.write(data)


def atomic_save_npz(path: str, **arrays) -> None:
    from jaxdistill.sharding import is_primary, to_host

    arrays = {k: to_host(v) for k, v in arrays.items()}
    if not is_primary():
        return
    with _atomic(path, "wb") as f:
        np.savez(f, **arrays)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, jax.Array)):
        from jaxdistill.sharding import to_host

        return to_host(o).tolist()
    import dataclasses

    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def read_json(path: str) -> Optional[dict]:
    """The JSON at `path`, or None if missing or unreadable (a stage that must be redone)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def atomic_copy(src: str, dst: str) -> None:
    """Copy a file so that `dst` is never seen half-written."""
    with open(src, "rb") as f:
        data = f.read()
    with _atomic(dst, "wb") as g:
        g.write(data)


def update_json(path: str, fn) -> Any:
    """Read-modify-write the JSON at `path` under an exclusive lock (`path`.lock), so that several processes
    adding entries to one store (experiment cells) never drop each other's: fn(doc or None) -> the new doc,
    written atomically. Returns the new doc."""
    import fcntl

    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            doc = fn(read_json(path))
            atomic_write_json(path, doc)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return doc


class Checkpointer:
    """Keep-last-k orbax checkpoints of a pytree of arrays, with fallback past damaged steps.

    save(step, tree) writes synchronously (so a SIGKILL right after returns leaves a complete step);
    restore_latest(template) returns (step, tree) of the newest step that restores, or (None, None).
    """

    def __init__(self, directory: str, max_to_keep: int = 3):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False))

    def all_steps(self) -> list[int]:
        self._mgr.reload()
        return sorted(self._mgr.all_steps())

    def save(self, step: int, tree: Any) -> None:
        """Write `tree` as `step`. A step that is already committed is kept as it is: runs are deterministic,
        so a second save of one step (a stop request landing on a checkpoint iteration, the final save of a
        finished run) would write the same arrays, and orbax refuses to overwrite a step."""
        if step in self.all_steps():
            return
        from jaxdistill.sharding import to_host

        # Every process calls save (orbax synchronises them and process 0 writes the host arrays).
        tree = to_host(tree)
        self._mgr.save(step, args=self._ocp.args.StandardSave(tree), force=True)
        self._mgr.wait_until_finished()

    def restore_latest(self, template: Any) -> tuple[Optional[int], Any]:
        template = jax.tree_util.tree_map(np.asarray, template)
        for step in reversed(self.all_steps()):
            try:
                tree = self._mgr.restore(step, args=self._ocp.args.StandardRestore(template))
            except Exception as e:  # noqa: BLE001 - any failure to read means this step is unusable
                log.warning("checkpoint step %d in %s is damaged (%s); trying the previous one",
                            step, self.directory, str(e).splitlines()[0][:200])
                from jaxdistill.sharding import is_primary, sync

                if is_primary():
                    shutil.rmtree(os.path.join(self.directory, str(step)), ignore_errors=True)
                sync(f"checkpoint-drop-{step}")
                self._mgr.reload()
                continue
            got = [np.shape(a) for a in jax.tree_util.tree_leaves(tree)]
            want = [np.shape(b) for b in jax.tree_util.tree_leaves(template)]
            if got != want:
                # A step that reads back whole but holds other shapes is another run's state, not damage:
                # refuse, and leave it on disk.
                diff = next((g, w) for g, w in zip(got, want) if g != w) if len(got) == len(want) else \
                    (f"{len(got)} arrays", f"{len(want)} arrays")
                from jaxdistill.errors import StoreError

                raise StoreError(f"checkpoint step {step} in {self.directory!r} belongs to another run (it holds "
                                 f"shape {diff[0]} where this run has {diff[1]}); use another workdir / --out or "
                                 f"delete that one")
            return step, tree
        return None, None

    def close(self) -> None:
        self._mgr.close()


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag a long loop polls, so it can checkpoint and exit cleanly.

    The loop saves its state and raises `Interrupted`; the command line turns that into exit status 130."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def ensure_out_dir(path: str, what: str = "--out") -> str:
    """Create the output directory `path` (and parents) and check that a file can be written in it.

    Raises ConfigError naming `path` when it is an existing file, lies under a file, or cannot be created
    or written; so a command fails before any work, not after it. Returns `path`.
    """
    from jaxdistill.errors import ConfigError

    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{what}={path!r} must name a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is an existing file; give a directory (new or existing)")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{what} {path!r} lies under the file {parent!r}; give a directory path")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".jaxdistill-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"{what} {path!r} cannot be written ({e.strerror or e}); give a writable "
                          f"directory") from None
    return path
