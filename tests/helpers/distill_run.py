"""Subprocess body of the crash tests: one tiny distillation on digits into WORKDIR.

usage: python distill_run.py METHOD WORKDIR [--pause-before-save N SECONDS] [--poison ITERS]
                                            [--max-nonfinite K]

--pause-before-save N S: sleep S seconds on entry to the N-th (1-based) `Checkpointer.save` call, so a
  test that waits for N-1 checkpoint step directories and then SIGKILLs the process is guaranteed to kill
  it before checkpoint N is written, with the iterations done since checkpoint N-1 lost. A SIGINT/SIGTERM
  ends the pause early (the run's stop request is then set), so the signal lands on a checkpoint
  iteration: save N goes ahead, and the stop request saves that same step again. Timing only: the
  numerics are untouched.
--poison ITERS: feed a poisoned input to the outer step on the listed 0-based iterations ("2,5", or "5-" for
  every iteration from 5 on): DATM gets a NaN expert snapshot theta_t, DANCE a trained pool whose classifier
  bias is NaN (the calibration view's loss), RCIG real training images full of NaN pixels. The wrapper wraps
  the method's loop body (`iteration_body`), selecting the iteration from the traced index inside the
  compiled chunk.
--max-nonfinite K: override the config's max_nonfinite.
The run goes through the run driver (`jaxdistill.methods.distill`) inside the command line's
`run_command`, as `jaxdistill distill` does: a SIGINT/SIGTERM checkpoints, prints "interrupted; re-run the
same command to resume" and exits with status 130. Writes WORKDIR/distilled.npz and prints "done"; a
JaxDistillError prints "ERROR <type>: <message>" and exits with status 3.

`cli_args(method)` gives the same tiny settings as `jaxdistill distill` arguments (for in-process tests).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

SUBSET = 200
NOISE = "symmetric:0.4"
SEED = 3


def tiny_config(method: str):
    """get_config(method, 'digits', 1, 'quick') shrunk to width 8, 12 iterations, checkpoints every 4."""
    from jaxdistill.methods import get_config

    cfg = get_config(method, "digits", 1, "quick")
    common = dict(width=8, depth=1, iterations=12, checkpoint_every=4)
    if method == "datm":
        return dataclasses.replace(cfg, **common, syn_steps=4, batch_syn=10, max_start_epoch=3,
                                   current_max_start_epoch=2, expansion_end_epoch=10, num_experts=2,
                                   expert_train_epochs=4, expert_batch=64)
    if method == "dance":
        return dataclasses.replace(cfg, **common, batch_real=16, pool_size=2, num_premodel=2, pretrain_epochs=2,
                                   pretrain_batch=64, factor=1)
    if method == "rcig":
        return dataclasses.replace(cfg, **common, pool_size=2, real_batch=32, n_inner=3, n_hinv=3,
                                   tune_max_tries=2, adapt_every=5)
    raise SystemExit(f"unknown method {method!r}")


def cli_args(method: str) -> list[str]:
    """`jaxdistill distill` arguments for the tiny setting of `method` (every changed field as --set)."""
    from jaxdistill.methods import get_config

    base, tiny = dataclasses.asdict(get_config(method, "digits", 1, "quick")), dataclasses.asdict(tiny_config(method))
    sets = [f"{k}={json.dumps(v)}" for k, v in tiny.items() if v != base[k]]
    return ["distill", "--method", method, "--dataset", "digits", "--subset", str(SUBSET), "--noise", NOISE,
            "--seed", str(SEED), "--ipc", "1", "--preset", "quick", *[a for kv in sets for a in ("--set", kv)]]


def _stop_requested() -> bool:
    """True once the running loop's StopRequest has caught a SIGINT/SIGTERM."""
    stop = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    return bool(getattr(stop, "requested", False))


def tiny_data():
    from jaxdistill.data import load_dataset, make_noisy_data

    return make_noisy_data(load_dataset("digits"), NOISE, seed=0, subset=SUBSET)


def _parse_iters(spec: str):
    """'2,5' -> traced predicate it in {2, 5}; '5-' -> it >= 5. The distillers run their iterations inside
    compiled chunks (methods/loop.py), so the poison is a function of the traced iteration index."""
    import jax.numpy as jnp

    if spec.endswith("-"):
        lo = int(spec[:-1])
        return lambda it: it >= lo
    its = sorted({int(v) for v in spec.split(",")})
    return lambda it: jnp.any(it == jnp.asarray(its))


def _install_poison(method: str, poisoned) -> None:
    """Wrap the method's loop body so that the iterations `poisoned(it)` see damaged inputs."""
    import jax
    import jax.numpy as jnp

    def nan_where(bad, a):
        return jnp.where(bad, jnp.full_like(a, jnp.nan), a)

    if method == "datm":
        from jaxdistill.methods import datm

        real = datm.iteration_body

        def body_factory(step):
            body = real(step)

            def wrapped(state, it, snaps, consts):
                return body(state, it, (nan_where(poisoned(it), snaps[0]), snaps[1]), consts)  # a damaged snapshot

            return wrapped

        datm.iteration_body = body_factory
    elif method == "dance":
        from jaxdistill.methods import dance

        real = dance.iteration_body

        def body_factory(step):
            body = real(step)

            def wrapped(carry, it, xs, consts):
                # A damaged pretrained model: NaN classifier bias in the trained pool. (NaN *pixels* are no use
                # here: on CPU the compiled ConvNet can turn all-NaN inputs into finite feature sums, so the
                # loss stays finite and nothing is skipped.)
                k_loop, (pool0, poolT, *rest) = consts
                bad = poisoned(it)
                poolT = jax.tree_util.tree_map_with_path(
                    lambda path, a: nan_where(bad, a) if "head" in str(path) and "bias" in str(path) else a, poolT)
                return body(carry, it, xs, (k_loop, (pool0, poolT, *rest)))

            return wrapped

        dance.iteration_body = body_factory
    elif method == "rcig":
        from jaxdistill.methods import rcig

        real = rcig.iteration_body

        def body_factory(prob):
            body = real(prob)

            def wrapped(state, it, xs, consts):
                xtr, ytr, k_loop = consts
                return body(state, it, xs, (nan_where(poisoned(it), xtr), ytr, k_loop))  # NaN real pixels

            return wrapped

        rcig.iteration_body = body_factory


def main(argv: list[str]) -> int:
    method, workdir = argv[0], argv[1]
    pause_at, pause_s, poison, max_nonfinite = None, 0.0, None, None
    rest = argv[2:]
    while rest:
        if rest[0] == "--pause-before-save":
            pause_at, pause_s, rest = int(rest[1]), float(rest[2]), rest[3:]
        elif rest[0] == "--poison":
            poison, rest = _parse_iters(rest[1]), rest[2:]
        elif rest[0] == "--max-nonfinite":
            max_nonfinite, rest = int(rest[1]), rest[2:]
        else:
            raise SystemExit(f"unknown argument {rest[0]!r}")

    import logging

    import jax

    from jaxdistill import checkpoint
    from jaxdistill.cli import run_command
    from jaxdistill.errors import JaxDistillError
    from jaxdistill.methods import distill

    # Resume and damaged-checkpoint messages go to the log the tests read.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jaxdistill").setLevel(logging.INFO)

    if pause_at is not None:
        real_save = checkpoint.Checkpointer.save
        calls = {"n": 0}

        def paused_save(self, step, tree):
            calls["n"] += 1
            if calls["n"] == pause_at:
                print(f"pausing before checkpoint save #{pause_at} (step {step})", flush=True)
                deadline = time.monotonic() + pause_s
                while time.monotonic() < deadline and not _stop_requested():
                    time.sleep(0.05)
            return real_save(self, step, tree)

        checkpoint.Checkpointer.save = paused_save
    if poison is not None:
        _install_poison(method, poison)

    cfg = tiny_config(method)
    if max_nonfinite is not None:
        cfg = dataclasses.replace(cfg, max_nonfinite=max_nonfinite)

    def run() -> int:
        try:
            distill(method, cfg, tiny_data(), jax.random.PRNGKey(SEED), workdir=workdir)
        except JaxDistillError as e:
            print(f"ERROR {type(e).__name__}: {e}", flush=True)
            return 3
        print("done", flush=True)
        return 0

    return run_command("distill", run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
