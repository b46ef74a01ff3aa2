"""Reliability: SIGKILL mid-distillation and resume, damaged checkpoints, NaN injection, reproducibility.

The distiller tests run tests/helpers/distill_run.py in real subprocesses (tiny digits configs: width 8,
depth 1, 12 iterations, a checkpoint every 4). They share a persistent XLA compilation cache kept in
pytest's cache directory, so only the first process of each method compiles; the cache changes speed,
never results (the same executables run either way).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from jaxdistill.checkpoint import Checkpointer
from jaxdistill.methods.base import DistilledSet

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "helpers", "distill_run.py")
METHODS = ("datm", "dance", "rcig")
TIMEOUT = 600  # seconds per subprocess; generous because the CI cores are shared


# ------------------------------------------------------------------------------------------------
# subprocess plumbing
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(request):
    cache = str(request.config.cache.mkdir("jaxdistill_xla_cache"))
    e = dict(os.environ)
    e.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return e


def _run(env, method: str, workdir: str, *extra: str, expect_rc: int = 0) -> str:
    """Run the helper to completion; return its combined output."""
    p = subprocess.run([sys.executable, HELPER, method, workdir, *extra], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    out = p.stdout + p.stderr
    assert p.returncode == expect_rc, f"helper exited {p.returncode} (expected {expect_rc}):\n{out[-4000:]}"
    return out


def _steps(ckpt_dir: str) -> list[int]:
    """Committed checkpoint steps (orbax renames a finished step's temp dir to its number)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())


def _kill_after_steps(env, method: str, workdir: str, n_steps: int, log_path: str) -> None:
    """Start the helper, wait until `n_steps` checkpoints are committed, SIGKILL it before the next one.

    The helper sleeps on entry to checkpoint save n_steps+1, so the kill always lands after iterations
    that no checkpoint holds (they are lost and must be redone on resume).
    """
    with open(log_path, "w") as log:
        p = subprocess.Popen([sys.executable, HELPER, method, workdir, "--pause-before-save", str(n_steps + 1),
                              "120"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while len(_steps(os.path.join(workdir, "ckpt"))) < n_steps:
                assert p.poll() is None, f"helper ended (rc {p.returncode}) before checkpointing:\n" + \
                    open(log_path).read()[-4000:]
                assert time.monotonic() < deadline, "no checkpoint appeared in time"
                time.sleep(0.05)
            p.send_signal(signal.SIGKILL)
            rc = p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc == -signal.SIGKILL, f"helper was not killed (rc {rc})"


def _load(workdir: str) -> DistilledSet:
    return DistilledSet.load(os.path.join(workdir, "distilled.npz"))


def _assert_same_set(a: DistilledSet, b: DistilledSet) -> None:
    """Arrays equal to 1e-6 (on CPU they are in fact bit-identical; checked separately below)."""
    assert a.method == b.method and a.target_kind == b.target_kind
    np.testing.assert_array_equal(a.labels, b.labels)
    chex.assert_trees_all_close(a.images, b.images, atol=1e-6, rtol=0)
    if a.targets is None:
        assert b.targets is None
    else:
        chex.assert_trees_all_close(a.targets, b.targets, atol=1e-6, rtol=0)
    assert (a.lr is None and b.lr is None) or abs(a.lr - b.lr) <= 1e-6


_REFERENCE: dict = {}


def _reference(env, method: str, tmp_path_factory) -> DistilledSet:
    """The uninterrupted run of `method` (once per session)."""
    if method not in _REFERENCE:
        wd = str(tmp_path_factory.mktemp(f"ref_{method}"))
        _run(env, method, wd)
        _REFERENCE[method] = _load(wd)
    return _REFERENCE[method]


# ------------------------------------------------------------------------------------------------
# SIGKILL mid-distillation -> resume gives the uninterrupted result
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_sigkill_mid_distillation_then_resume_equals_uninterrupted(method, env, tmp_path, tmp_path_factory):
    ref = _reference(env, method, tmp_path_factory)
    wd = str(tmp_path / "run")
    _kill_after_steps(env, method, wd, 1, str(tmp_path / "killed.log"))
    # Killed after the step-4 checkpoint and before the step-8 one; nothing final was written.
    assert _steps(os.path.join(wd, "ckpt")) == [4]
    assert not os.path.exists(os.path.join(wd, "distilled.npz"))

    out = _run(env, method, wd)
    resumed = _load(wd)
    if method == "datm":
        assert "resumed at iteration 4" in out, out[-2000:]
    else:
        assert resumed.meta["resumed_from"] == 4
    assert ref.meta.get("resumed_from", 0) == 0
    _assert_same_set(resumed, ref)
    # Stronger than the 1e-6 contract: same executables on CPU give the very same bits.
    np.testing.assert_array_equal(resumed.images, ref.images)


@pytest.mark.slow
def test_corrupt_newest_checkpoint_after_kill_resumes_from_previous(env, tmp_path, tmp_path_factory):
    """DATM killed after two checkpoints; the newest (step 8) is then damaged on disk. The rerun warns,
    drops step 8, resumes from step 4 and still ends with the uninterrupted result."""
    ref = _reference(env, "datm", tmp_path_factory)
    wd = str(tmp_path / "run")
    _kill_after_steps(env, "datm", wd, 2, str(tmp_path / "killed.log"))
    ckpt = os.path.join(wd, "ckpt")
    assert _steps(ckpt) == [4, 8]
    n = _corrupt_step(os.path.join(ckpt, "8"))
    assert n > 0

    out = _run(env, "datm", wd)
    assert "checkpoint step 8" in out and "damaged" in out, out[-3000:]
    assert "resumed at iteration 4" in out, out[-3000:]
    _assert_same_set(_load(wd), ref)


# ------------------------------------------------------------------------------------------------
# Damaged checkpoints: the Checkpointer itself
# ------------------------------------------------------------------------------------------------

def _corrupt_step(step_dir: str) -> int:
    """Overwrite every file of a checkpoint step with garbage of the same length; return the file count."""
    n = 0
    for root, _, files in os.walk(step_dir):
        for f in files:
            p = os.path.join(root, f)
            size = os.path.getsize(p)
            with open(p, "wb") as fh:
                fh.write(b"\xde\xad\xbe\xef" * (size // 4 + 1))
            n += 1
    return n


def _tree(v: float) -> dict:
    return {"a": np.full((3, 2), v, np.float32), "b": {"c": np.arange(4, dtype=np.int32) + int(v)},
            "n": np.asarray(int(v))}


def test_checkpointer_keeps_last_k_and_falls_back_past_damaged_steps(tmp_path, caplog):
    ck = Checkpointer(str(tmp_path / "ck"), max_to_keep=3)
    for s in range(1, 6):
        ck.save(s, _tree(s))
    assert ck.all_steps() == [3, 4, 5]  # keep-last-3
    step, tree = ck.restore_latest(_tree(0))
    assert step == 5
    chex.assert_trees_all_equal(tree, _tree(5))

    # Damage the newest step: the previous one comes back, with a warning, and the bad step is removed.
    assert _corrupt_step(str(tmp_path / "ck" / "5")) > 0
    with caplog.at_level("WARNING", logger="jaxdistill"):
        step, tree = ck.restore_latest(_tree(0))
    assert step == 4
    chex.assert_trees_all_equal(tree, _tree(4))
    assert any("step 5" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert ck.all_steps() == [3, 4]

    # A step whose arrays have other shapes than the run's template counts as damaged too.
    ck.save(6, {"a": np.zeros((5, 5), np.float32), "b": {"c": np.zeros(4, np.int32)}, "n": np.asarray(0)})
    step, tree = ck.restore_latest(_tree(0))
    assert step == 4

    # Everything damaged: a fresh start, not a crash.
    for s in ck.all_steps():
        _corrupt_step(str(tmp_path / "ck" / str(s)))
    assert ck.restore_latest(_tree(0)) == (None, None)
    ck.close()


def test_checkpointer_ignores_half_written_step(tmp_path):
    """A temp directory left by a save killed mid-write is not a step; restore uses the last committed one."""
    ck = Checkpointer(str(tmp_path / "ck"))
    ck.save(1, _tree(1))
    os.makedirs(tmp_path / "ck" / "2.orbax-checkpoint-tmp-123" / "default")
    (tmp_path / "ck" / "2.orbax-checkpoint-tmp-123" / "default" / "junk").write_bytes(b"\0" * 10)
    step, tree = ck.restore_latest(_tree(0))
    assert step == 1
    chex.assert_trees_all_equal(tree, _tree(1))
    ck.close()


def test_atomic_writes_get_the_umask_mode_and_leave_no_temp_file(tmp_path):
    """mkstemp's 0600 must not leak into results: a report written for people gets 0666 & ~umask."""
    from jaxdistill.checkpoint import _umask_file_mode, atomic_save_npz, atomic_write_json, atomic_write_text

    old = os.umask(0o027)
    try:
        assert _umask_file_mode() == 0o640
    finally:
        os.umask(old)
    atomic_write_text(str(tmp_path / "a.md"), "# report\n")
    atomic_write_json(str(tmp_path / "b.json"), {"acc": 0.5})
    atomic_save_npz(str(tmp_path / "c.npz"), x=np.zeros(3))
    want = 0o666 & ~old
    if want == 0o600:
        pytest.skip("under umask 066 the wanted mode is mkstemp's own 0600, so the check cannot fail")
    assert [os.stat(tmp_path / f).st_mode & 0o777 for f in ("a.md", "b.json", "c.npz")] == [want] * 3
    assert sorted(os.listdir(tmp_path)) == ["a.md", "b.json", "c.npz"]


# ------------------------------------------------------------------------------------------------
# NaN injection: skip, count, stop with NumericalError after max_nonfinite
# ------------------------------------------------------------------------------------------------

# Updates one poisoned iteration skips: DATM and RCIG make one update per iteration; DANCE makes one
# calibration-view step per class (10 digits classes), all of which use the poisoned trained model.
SKIPS_PER_POISONED_ITER = {"datm": 1, "dance": 10, "rcig": 1}
SKIP_META_KEY = {"datm": "skipped_nonfinite", "dance": "skipped_updates", "rcig": "skipped_updates"}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_poisoned_iterations_are_skipped_and_counted(method, env, tmp_path):
    wd = str(tmp_path / "run")
    _run(env, method, wd, "--poison", "2,5")
    ds = _load(wd)
    assert ds.meta[SKIP_META_KEY[method]] == 2 * SKIPS_PER_POISONED_ITER[method]
    assert np.isfinite(ds.images).all()
    assert ds.targets is None or np.isfinite(ds.targets).all()
    if method == "datm":
        hist = np.asarray(ds.meta["loss_history"], dtype=float)
        assert hist.shape == (12,)
        np.testing.assert_array_equal(np.flatnonzero(~np.isfinite(hist)), [2, 5])


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_persistent_nans_stop_with_numerical_error_keeping_last_checkpoint(method, env, tmp_path):
    wd = str(tmp_path / "run")
    # Every iteration from 5 on is poisoned; with max_nonfinite=3 the run stops at iteration 7 (0-based).
    out = _run(env, method, wd, "--poison", "5-", "--max-nonfinite", "3", expect_rc=3)
    assert "ERROR NumericalError" in out, out[-3000:]
    # DATM and DANCE name the 0-based iteration that failed, RCIG the number of iterations done.
    it = {"datm": 7, "dance": 7, "rcig": 8}[method]
    assert "max_nonfinite=3" in out and f"iteration {it}" in out, out[-3000:]
    assert not os.path.exists(os.path.join(wd, "distilled.npz"))
    assert _steps(os.path.join(wd, "ckpt")) == [4]  # the last good checkpoint is kept


# ------------------------------------------------------------------------------------------------
# Reproducibility: two fresh runs of the same command give the same distilled set
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_distilled_set(method, env, tmp_path, tmp_path_factory):
    ref = _reference(env, method, tmp_path_factory)
    wd = str(tmp_path / "again")
    _run(env, method, wd)
    again = _load(wd)
    _assert_same_set(again, ref)
    np.testing.assert_array_equal(again.images, ref.images)
    if ref.targets is not None:
        np.testing.assert_array_equal(again.targets, ref.targets)
