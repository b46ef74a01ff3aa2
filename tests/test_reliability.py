"""Reliability: SIGKILL mid-distillation and resume, damaged checkpoints, NaN injection, reproducibility.

The distiller tests run tests/helpers/distill_run.py in real subprocesses (tiny digits configs: width 8,
depth 1, 12 iterations, a checkpoint every 4). They share a persistent XLA compilation cache kept in
pytest's cache directory, so only the first process of each method compiles; the cache changes speed,
never results (the same executables run either way).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from jaxdistill import cli
from jaxdistill.checkpoint import Checkpointer
from jaxdistill.errors import ConfigError, DataError, NoiseError, StoreError
from jaxdistill.methods.base import DistilledSet
from helpers import distill_run  # the tiny settings, also as `jaxdistill distill` arguments

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # the checkout under test
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
    # The subprocesses import this checkout's jaxdistill, not whichever one is installed.
    e["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
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

    # A step that reads back whole but holds other shapes is another run's state: refused, and kept on disk.
    ck.save(6, {"a": np.zeros((5, 5), np.float32), "b": {"c": np.zeros(4, np.int32)}, "n": np.asarray(0)})
    with pytest.raises(StoreError, match=r"step 6 .* another run .*\(5, 5\).*\(3, 2\)"):
        ck.restore_latest(_tree(0))
    assert ck.all_steps() == [3, 4, 6]
    shutil.rmtree(tmp_path / "ck" / "6")

    # Saving a step that is already committed keeps the committed one (no StepAlreadyExistsError).
    ck.save(4, _tree(4))
    step, tree = ck.restore_latest(_tree(0))
    assert step == 4
    chex.assert_trees_all_equal(tree, _tree(4))

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
    # Every method names the 0-based iteration at which max_nonfinite was reached.
    it = 7
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


# ------------------------------------------------------------------------------------------------
# SIGINT / SIGTERM: checkpoint, one line, exit status 130, identical resume
# ------------------------------------------------------------------------------------------------

INTERRUPTED_LINE = "interrupted; re-run the same command to resume"


def _signal_on_checkpoint(env, method: str, workdir: str, sig: int, log_path: str) -> tuple[int, str]:
    """Start the helper, wait until it pauses before its 2nd checkpoint save (step 8), send `sig`.

    The signal ends the pause, so it lands on a checkpoint iteration: step 8 is saved, then the stop request
    saves step 8 again (this used to crash with orbax's StepAlreadyExistsError) and the run stops."""
    with open(log_path, "w") as log:
        p = subprocess.Popen([sys.executable, HELPER, method, workdir, "--pause-before-save", "2", "300"], env=env,
                             stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while "pausing before checkpoint save #2" not in open(log_path).read():
                assert p.poll() is None, f"helper ended (rc {p.returncode}) early:\n" + open(log_path).read()[-4000:]
                assert time.monotonic() < deadline, "the helper did not reach its 2nd checkpoint in time"
                time.sleep(0.05)
            p.send_signal(sig)
            rc = p.wait(timeout=TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    return rc, open(log_path).read()


# Each loop once, each signal at least once (StopRequest handles both alike; the in-process experts test
# below sends both): about 20 s a case on the 2-core CPU.
@pytest.mark.slow
@pytest.mark.parametrize("method,sig", [("datm", signal.SIGTERM), ("dance", signal.SIGINT), ("rcig", signal.SIGTERM)],
                         ids=["datm-SIGTERM", "dance-SIGINT", "rcig-SIGTERM"])
def test_signal_checkpoints_exits_130_and_resume_equals_uninterrupted(method, sig, env, tmp_path, tmp_path_factory):
    ref = _reference(env, method, tmp_path_factory)
    wd = str(tmp_path / "run")
    rc, out = _signal_on_checkpoint(env, method, wd, sig, str(tmp_path / "signalled.log"))
    assert rc == 130, out[-3000:]
    assert f"jaxdistill distill: {INTERRUPTED_LINE}" in out and "Traceback" not in out, out[-3000:]
    assert _steps(os.path.join(wd, "ckpt")) == [4, 8]
    assert not os.path.exists(os.path.join(wd, "distilled.npz"))

    out = _run(env, method, wd)
    resumed = _load(wd)
    if method == "datm":
        assert "resumed at iteration 8" in out, out[-2000:]
    else:
        assert resumed.meta["resumed_from"] == 8
    _assert_same_set(resumed, ref)
    np.testing.assert_array_equal(resumed.images, ref.images)


def _commit_signal(monkeypatch, sig: int, at_call: int) -> None:
    """Send `sig` to this process on the `at_call`-th expert-store epoch commit (an in-process Ctrl-C)."""
    from jaxdistill import experts

    real, calls = experts.atomic_save_npz, {"n": 0}

    def save(path, **arrays):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), sig)
        return real(path, **arrays)

    monkeypatch.setattr(experts, "atomic_save_npz", save)


EXPERTS_ARGS = ["experts", "--dataset", "digits", "--subset", "120", "--noise", "symmetric:0.4", "--seed", "3",
                "--ipc", "1", "--experts", "1", "--epochs", "8"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_expert_training_exits_130_and_resume_equals_uninterrupted(sig, tmp_path, capsys,
                                                                                 monkeypatch):
    """`jaxdistill experts`: the signal arrives while epoch 1 is committed; training stops after it (rc 130,
    one line) and the re-run trains epochs 2..8 to the same store as an uninterrupted run."""
    ref_dir, wd = str(tmp_path / "ref"), str(tmp_path / "run")
    assert cli.main([*EXPERTS_ARGS, "--out", ref_dir]) == 0
    capsys.readouterr()
    with monkeypatch.context() as m:
        _commit_signal(m, sig, at_call=2)  # call 1 commits epoch 0, call 2 epoch 1
        rc = cli.main([*EXPERTS_ARGS, "--out", wd])
    err = capsys.readouterr().err
    assert rc == 130 and f"jaxdistill experts: {INTERRUPTED_LINE}" in err and "Traceback" not in err, err
    with np.load(os.path.join(wd, "state_g000.npz")) as z:
        assert int(z["epoch"]) == 1
    assert cli.main([*EXPERTS_ARGS, "--out", wd]) == 0
    np.testing.assert_array_equal(np.load(os.path.join(wd, "expert_0000.npy")),
                                  np.load(os.path.join(ref_dir, "expert_0000.npy")))


def test_sigterm_outside_a_checkpointing_loop_is_a_clean_interrupt(capsys):
    """SIGTERM while no loop polls a stop request (loading data, evaluating) ends the command like Ctrl-C."""

    def work():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    old = signal.getsignal(signal.SIGTERM)
    assert cli.run_command("denoise", work) == 130
    assert capsys.readouterr().err.strip() == f"jaxdistill denoise: {INTERRUPTED_LINE}"
    assert signal.getsignal(signal.SIGTERM) is old  # the handler is put back


# ------------------------------------------------------------------------------------------------
# Re-runs into the same --out: a finished run is loaded; another run's state is refused, never deleted
# ------------------------------------------------------------------------------------------------

def _tree_bytes(d: str) -> dict:
    """{relative path: bytes} of every file under d except results/plots (what a refused run must not touch)."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


class _StubEval:
    """Stands in for the evaluator (the evaluation itself is tested elsewhere): records each protocol asked for."""

    def __init__(self):
        self.calls = []

    def __call__(self, ds, data, proto, key, k, preset, progress, **kw):
        from jaxdistill.evaluate import EvalResult

        self.calls.append(proto)
        accs = [0.5 + 0.01 * i for i in range(k)]
        return EvalResult(protocol=proto, mean=float(np.mean(accs)), std=float(np.std(accs)), accs=accs)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["datm", "dance"])
def test_finished_distill_rerun_loads_the_set_and_runs_only_missing_evaluations(method, tmp_path, capsys,
                                                                                  monkeypatch):
    import jaxdistill.evaluate

    out = str(tmp_path / "out")
    argv = [*distill_run.cli_args(method), "--out", out]
    assert cli.main([*argv, "--eval", "none"]) == 0
    capsys.readouterr()
    before = _tree_bytes(out)
    stub = _StubEval()
    monkeypatch.setattr(jaxdistill.evaluate, "evaluate", stub)

    # Re-run with an evaluation: rc 0 (was orbax's StepAlreadyExistsError), the set loaded, not redone.
    assert cli.main([*argv, "--eval", "standard", "--k", "2"]) == 0
    assert "had finished; loaded its set" in capsys.readouterr().out
    assert stub.calls == ["standard"]
    after = _tree_bytes(out)
    for f in before:
        if not f.startswith(("results.json", "distilled_")):
            assert after[f] == before[f], f"{f} changed on a finished re-run"
    # Both protocols asked for: only the missing one runs; then nothing is left to run.
    assert cli.main([*argv, "--eval", "both", "--k", "2"]) == 0
    assert stub.calls == ["standard", method]
    assert cli.main([*argv, "--eval", "both", "--k", "2"]) == 0
    assert stub.calls == ["standard", method]
    res = json.load(open(os.path.join(out, "results.json")))["results"]
    assert sorted(res) == [f"{method}/{method}", f"{method}/standard"]
    assert all(len(r["accs"]) == 2 for r in res.values())
    # Another number of nets is another evaluation.
    assert cli.main([*argv, "--eval", "standard", "--k", "3"]) == 0
    assert stub.calls == ["standard", method, "standard"]


@pytest.fixture(scope="module")
def finished_rcig(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rcig_finished") / "out")
    assert cli.main([*distill_run.cli_args("rcig"), "--eval", "none", "--out", out]) == 0
    return out


def _swap(argv: list, flag: str, value: str) -> list:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


@pytest.mark.slow
@pytest.mark.parametrize("flag,value,named", [("--noise", "symmetric:0.2", ["symmetric:0.4", "symmetric:0.2"]),
                                              ("--seed", "4", ["noise seed 3", "noise seed 4", "'key'"])])
def test_rcig_rerun_with_other_noise_or_seed_is_refused(flag, value, named, finished_rcig, capsys):
    """Used to return the old run's set bit-for-bit and record the new noise against it."""
    before = _tree_bytes(finished_rcig)
    argv = _swap([*distill_run.cli_args("rcig"), "--eval", "none", "--out", finished_rcig], flag, value)
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxdistill distill: error: ") and "holds another run" in err, err
    for m in named:
        assert m in err, (m, err)
    assert _tree_bytes(finished_rcig) == before  # nothing touched, results.json included


@pytest.mark.slow
def test_dance_rerun_with_other_ipc_is_refused_and_keeps_the_checkpoints(tmp_path, capsys):
    """Used to call the old checkpoints damaged and delete them."""
    out = str(tmp_path / "out")
    argv = [*distill_run.cli_args("dance"), "--eval", "none", "--out", out]
    assert cli.main(argv) == 0
    os.remove(os.path.join(out, "distilled.npz"))  # as if the run had been stopped after its last checkpoint
    before = _tree_bytes(out)
    capsys.readouterr()
    assert cli.main(_swap(argv, "--ipc", "2")) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "ipc 1" in err and "ipc 2" in err, err
    assert _tree_bytes(out) == before

    # Without the run record (a workdir from before records existed) the checkpointer still refuses:
    # the step holds other shapes, so it is another run's state, not damage, and it stays on disk.
    os.remove(os.path.join(out, "run.json"))
    before = _tree_bytes(out)
    assert cli.main(_swap(argv, "--ipc", "2")) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err, err
    assert _tree_bytes(out) == before


# ------------------------------------------------------------------------------------------------
# Bad --out paths: rc 2 and one line, before any work
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Make loading data (the first step of every command's work) fail loudly."""
    import jaxdistill.pipeline

    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(jaxdistill.pipeline, "load_noisy_data", boom)
    monkeypatch.setattr(cli, "_noisy_data", boom)


def _one_line_error(capsys, argv: list, match: list) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"jaxdistill {argv[0]}: error: "), (rc, err)
    for m in match:
        assert m in err, (m, err)
    return err


def _bad_outs(tmp_path) -> dict:
    f = tmp_path / "a_file"
    f.write_text("x")
    cases = {"existing file": (str(f), ["is an existing file"]),
             "under a file": (str(f / "sub" / "out"), ["lies under the file", str(f)]),
             # /sys refuses new directories even to root, so this case holds whoever runs the tests.
             "unwritable": ("/sys/jaxdistill_test/out", ["cannot be written"])}
    if os.geteuid() != 0:
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        cases["read-only dir"] = (str(ro), ["cannot be written"])
    return cases


@pytest.mark.parametrize("command", ["distill", "denoise", "baseline", "experts", "detect", "repair"])
def test_bad_out_path_is_refused_before_any_work(command, tmp_path, capsys, no_work):
    extra = {"distill": ["--method", "dance"], "detect": ["--no-cleanlab"]}.get(command, [])
    for name, (out, match) in _bad_outs(tmp_path).items():
        _one_line_error(capsys, [command, "--dataset", "digits", *extra, "--out", out], [out, *match])
    assert not os.path.exists(tmp_path / "a_file" / "sub")


def test_noise_out_that_is_a_directory_or_under_a_file(tmp_path, capsys):
    labels = tmp_path / "y.npy"
    np.save(labels, np.arange(10) % 3)
    (tmp_path / "f").write_text("x")
    base = ["noise", "--labels", str(labels), "--noise", "symmetric:0.2", "--out"]
    _one_line_error(capsys, [*base, str(tmp_path)], ["is a directory"])
    _one_line_error(capsys, [*base, str(tmp_path / "f" / "y.npy")], [str(tmp_path / "f"), "is an existing file"])


def test_run_denoise_refuses_a_file_as_out_dir(tmp_path):
    from jaxdistill.pipeline import DenoiseConfig, run_denoise

    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is an existing file"):
        run_denoise(DenoiseConfig(dataset="digits", methods=("dance",)), str(tmp_path / "f"), progress=False)


# ------------------------------------------------------------------------------------------------
# Every argument checked before any work
# ------------------------------------------------------------------------------------------------

ARG_CASES = {
    "distill --k 0": (["distill", "--method", "dance", "--k", "0"], ["--k=0", ">= 1"]),
    "distill --ipc 0": (["distill", "--method", "rcig", "--ipc", "0"], ["--ipc=0", ">= 1"]),
    "distill --subset -5": (["distill", "--method", "datm", "--subset", "-5"], ["--subset=-5", ">= 0"]),
    "distill --seed -1": (["distill", "--method", "dance", "--seed", "-1"], ["--seed=-1", "[0, 2**32)"]),
    "distill --method mtt": (["distill", "--method", "mtt"], ["'mtt'", "available"]),
    "distill --noise gauss": (["distill", "--method", "dance", "--noise", "gauss:0.2"], ["'gauss'"]),
    "denoise --k 0": (["denoise", "--k", "0"], ["--k=0"]),
    "denoise --methods ,": (["denoise", "--methods", ","], ["names no method"]),
    "evaluate --k 0": (["evaluate", "--distilled", "x.npz", "--k", "0"], ["--k=0"]),
    "baseline --k 0": (["baseline", "--k", "0"], ["--k=0"]),
    "baseline --val-fraction 1": (["baseline", "--val-fraction", "1.0"], ["--val-fraction=1.0", "[0, 1)"]),
    "experts --experts 0": (["experts", "--experts", "0"], ["--experts=0"]),
    "experts --epochs 0": (["experts", "--epochs", "0"], ["--epochs=0"]),
    "detect --top 0": (["detect", "--top", "0", "--no-cleanlab"], ["--top=0"]),
    "detect --cv-epochs 0": (["detect", "--cv-epochs", "0", "--no-cleanlab"], ["--cv-epochs=0"]),
    "repair --ipc 0": (["repair", "--ipc", "0"], ["--ipc=0"]),
    "repair --rule auto": (["repair", "--rule", "auto"], ["--rule auto", "--val-fraction in (0, 1)"]),
    "repair --val-fraction 1": (["repair", "--val-fraction", "1.0"], ["--val-fraction=1.0", "[0, 1)"]),
}


@pytest.mark.parametrize("case", sorted(ARG_CASES))
def test_every_argument_is_checked_before_any_work(case, tmp_path, capsys, no_work):
    argv, match = ARG_CASES[case]
    out = [] if argv[0] == "evaluate" else ["--out", str(tmp_path / "o")]
    _one_line_error(capsys, [*argv, "--dataset", "digits", *out], match)
    assert not os.path.exists(tmp_path / "o")  # not even the output directory


def test_noise_classes_zero_is_refused(tmp_path, capsys):
    labels = tmp_path / "y.npy"
    np.save(labels, np.arange(10) % 3)
    _one_line_error(capsys, ["noise", "--labels", str(labels), "--noise", "clean", "--classes", "0"], ["--classes=0"])


@pytest.mark.parametrize("arr,match", [(np.zeros(0, np.int64), ["is empty"]),
                                       (np.array(["cat", "dog"]), ["integer dtype", "<U3"]),
                                       (np.array([[0, 1], [1, 0]]), ["1-D", "(2, 2)"]),
                                       (np.array([0, -1, 2]), ["outside [0,"])],
                         ids=["empty", "strings", "2d", "negative"])
def test_noise_labels_that_are_not_class_ids(arr, match, tmp_path, capsys):
    """Used to crash in labels.max() before the labels were checked."""
    path = tmp_path / "y.npy"
    np.save(path, arr)
    _one_line_error(capsys, ["noise", "--labels", str(path), "--noise", "symmetric:0.2"], [str(path), *match])
    from jaxdistill.noise import infer_num_classes

    with pytest.raises(NoiseError):
        infer_num_classes(arr)


def test_detect_checks_cleanlab_before_any_work(tmp_path, capsys, monkeypatch, no_work):
    from jaxdistill.cli_beyond import resolve_cleanlab

    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab -> ImportError
    _one_line_error(capsys, ["detect", "--dataset", "digits", "--cleanlab", "--out", str(tmp_path / "o")],
                    ["cleanlab is not installed", "--no-cleanlab"])
    # Unset: off, with a note; --no-cleanlab: off.
    assert resolve_cleanlab(None) is False and "cleanlab is not installed" in capsys.readouterr().out
    assert resolve_cleanlab(False) is False
    monkeypatch.setitem(sys.modules, "cleanlab", sys.modules["os"])  # any importable module stands in
    assert resolve_cleanlab(None) is True and resolve_cleanlab(True) is True


# ------------------------------------------------------------------------------------------------
# Damaged / foreign distilled-set files: one DataError naming the file and the fault
# ------------------------------------------------------------------------------------------------

def _good_set() -> DistilledSet:
    rs = np.random.RandomState(0)
    return DistilledSet(images=rs.rand(4, 8, 8, 1), labels=np.arange(4) % 2, method="dance",
                        preprocessor={"kind": "meanstd", "shape": np.array([8, 8, 1]), "mean": np.zeros(1),
                                      "std": np.ones(1)}, meta={"a": 1})


def _npz_with(path: str, **changes) -> None:
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d.update(changes)
    for k in [k for k, v in d.items() if v is None]:
        del d[k]
    np.savez(path, **d)


def _flip_byte(path: str) -> None:
    b = bytearray(open(path, "rb").read())
    with np.load(path) as z:
        pos = bytes(b).find(z["images"].tobytes()[:16])  # inside the images member: its CRC no longer matches
    b[pos + 8] ^= 0xFF
    open(path, "wb").write(bytes(b))


CORRUPT_CASES = {
    "truncated": (lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2), "cannot be read"),
    "empty": (lambda p: open(p, "wb").close(), "cannot be read"),
    "bit_flipped": (_flip_byte, "damaged archive"),
    "no_header": (lambda p: _npz_with(p, header=None), "no header"),
    "header_not_json": (lambda p: _npz_with(p, header=np.frombuffer(b"{not json", np.uint8)), "not JSON"),
    "header_not_utf8": (lambda p: _npz_with(p, header=np.frombuffer(b"\xff\xfe", np.uint8)), "not JSON"),
    "header_missing_keys": (lambda p: _npz_with(p, header=np.frombuffer(b'{"method": "dance"}', np.uint8)),
                            "must be a JSON object with keys"),
    "header_a_list": (lambda p: _npz_with(p, header=np.frombuffer(b"[1, 2]", np.uint8)), "got list"),
    "no_images": (lambda p: _npz_with(p, images=None), "missing arrays ['images']"),
    "labels_wrong_length": (lambda p: _npz_with(p, labels=np.zeros(3, np.int32)), "must be (M,H,W,C) and (M,)"),
    "renamed_npy": (lambda p: np.save(open(p, "wb"), np.zeros((4, 8, 8, 1))), "single .npy array"),
    "nan_pixels": (lambda p: _npz_with(p, images=np.full((4, 8, 8, 1), np.nan, np.float32)), "non-finite"),
    "preprocessor_damaged": (lambda p: _npz_with(p, pre_mean=None), "lacks ['mean']"),
    "a_directory": (lambda p: (os.remove(p), os.mkdir(p)), "is a directory"),
    "missing": (os.remove, "no such file"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_CASES))
def test_damaged_distilled_file_is_one_data_error(case, tmp_path, capsys, no_work):
    path = str(tmp_path / "distilled.npz")
    _good_set().save(path)
    damage, what = CORRUPT_CASES[case]
    damage(path)
    with pytest.raises(DataError) as e:
        DistilledSet.load(path)
    assert path in str(e.value) and what in str(e.value), str(e.value)
    # The same through `jaxdistill evaluate`: rc 2, one line, before the data is loaded.
    _one_line_error(capsys, ["evaluate", "--distilled", path, "--dataset", "digits"], [path, what])


def test_undamaged_distilled_file_round_trips(tmp_path):
    """The control for the cases above: the file they start from loads and equals the saved set."""
    path = str(tmp_path / "distilled.npz")
    ds = _good_set()
    ds.save(path)
    back = DistilledSet.load(path)
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.meta == {"a": 1} and back.preprocessor["kind"] == "meanstd"


def test_set_with_nan_pixels_or_targets_is_refused():
    """A NaN set used to be evaluated silently to chance (9.6% on digits)."""
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[1, 2, 3, 0] = np.nan
    with pytest.raises(DataError, match=r"images hold 1 non-finite .* index \[1, 2, 3, 0\]"):
        DistilledSet(images=x, labels=[0, 1], method="rcig")
    with pytest.raises(DataError, match="targets hold 1 non-finite"):
        DistilledSet(images=np.zeros((2, 4, 4, 1)), labels=[0, 1], method="rcig", target_kind="regression",
                     targets=np.array([[0.0, np.inf], [0.0, 1.0]]))
