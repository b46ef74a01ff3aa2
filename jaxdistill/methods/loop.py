"""The distillers' shared outer loop: iterations run on the device in compiled chunks.

A method supplies only its maths, as a pure per-iteration body

    body(carry, it, xs_it, consts) -> (carry, metrics)      metrics: dict of scalars, with a bool "finite"

and this module does the rest: `lax.scan` over a chunk of iterations inside one jitted program (the carry
donated), metrics stacked per chunk and read once per chunk, and, between chunks, non-finite handling,
metrics.jsonl, the progress bar, checkpoints and stop requests (SIGINT/SIGTERM). Per-iteration host inputs
(DATM's expert snapshots) are gathered for a whole chunk by `chunk_inputs(its)`, for the next chunk while the
current one runs.

Chunks end on multiples of `chunk` (a divisor of the checkpoint interval), so checkpoints and stops land on
the same iterations as the per-iteration loop did, and a run compiles at most two chunk lengths (the full one
and the last, shorter one). `chunk=1` is the per-iteration loop, the oracle the chunked results are tested
against (`tests/test_loop.py`). Each metrics.jsonl row carries its chunk's time per iteration
(`chunk_ms_per_iter`: dispatch to host read, so without the checkpoint saves between chunks).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.configs._checks import check_chunk
from jaxdistill.errors import ConfigError, NumericalError

# Upper bound of the automatic chunk: long enough to amortise the per-chunk host round trip (measured in
# benchmarks/run.py --whole-run), short enough that progress and stop requests answer within seconds on a CPU.
MAX_AUTO_CHUNK = 25

Body = Callable[[Any, jax.Array, Any, Any], tuple[Any, dict]]


def auto_chunk(checkpoint_every: int, iterations: int, requested: int = 0) -> int:
    """Iterations per compiled chunk: `requested` if > 0 (must divide checkpoint_every), else the largest
    divisor of checkpoint_every <= MAX_AUTO_CHUNK, preferring one that also divides `iterations` (one compile)."""
    check_chunk("run_loop", requested, checkpoint_every)   # the configs' own rule, one definition
    if requested:
        return requested
    divs = [d for d in range(1, min(checkpoint_every, MAX_AUTO_CHUNK) + 1) if checkpoint_every % d == 0]
    both = [d for d in divs if iterations % d == 0]
    best = max(divs)
    # A common divisor saves the second compile; take it unless it makes chunks much shorter.
    return max(both) if both and 2 * max(both) >= best else best


def compile_chunk(body: Body, compiler_options: Optional[dict] = None) -> Callable:
    """Jitted `run(carry, its (c,) int32, xs (c, ...) | None, consts) -> (carry, metrics (c,)-stacked)`.

    The carry is donated; consts (data, pools) are traced arguments, so other data of the same shapes reuse
    the program. compiler_options: the method's XLA options (`xla_options.compiler_options`)."""

    def run(carry, its, xs, consts):
        def scan_body(c, inp):
            it, x = inp
            return body(c, it, x, consts)

        return jax.lax.scan(scan_body, carry, (its, xs))

    return jax.jit(run, donate_argnums=0, compiler_options=compiler_options)


@dataclasses.dataclass
class LoopResult:
    carry: Any
    done: int
    nonfinite: int          # iterations with a non-finite loss or gradient, this call
    consecutive: int        # non-finite iterations at the end (carried into the next call via `consecutive0`)


def run_loop(name: str, run: Callable, carry: Any, *, start: int, iterations: int, checkpoint_every: int,
             max_nonfinite: int, chunk: int, consts: Any = (),
             chunk_inputs: Optional[Callable[[np.ndarray], Any]] = None,
             on_chunk: Optional[Callable[[np.ndarray, dict, Any], None]] = None,
             save: Optional[Callable[[Any, int], None]] = None,
             log_row: Optional[Callable[[int, dict], dict]] = None, metrics_log=None,
             bar=None, postfix: Optional[Callable[[dict], dict]] = None,
             consecutive0: int = 0, nonfinite_hint: str = "") -> LoopResult:
    """Run iterations [start, iterations) of `run` (from `compile_chunk`) in chunks; see the module doc.

    on_chunk(its, metrics, carry): the method's bookkeeping with the chunk's host metrics (numpy, (c,) each).
    save(carry, done): write a checkpoint after `done` iterations (every checkpoint_every and on a stop
    request; the final save is the caller's). log_row(it, row) -> fields for metrics.jsonl of iteration `it`.
    Raises NumericalError at the iteration where `max_nonfinite` consecutive non-finite iterations are
    reached (no checkpoint is written past the last good one) and checkpoint.Interrupted on SIGINT/SIGTERM.
    """
    from jaxdistill.checkpoint import Interrupted, StopRequest
    from jaxdistill.sharding import to_host

    if chunk < 1 or checkpoint_every % chunk:
        raise ConfigError(f"{name}: chunk={chunk} must be >= 1 and divide checkpoint_every={checkpoint_every}")
    consecutive, nonfinite, it = consecutive0, 0, start
    ranges = [np.arange(lo, hi, dtype=np.int32) for lo, hi in chunks_of(start, iterations, chunk)]
    inputs = (lambda n: chunk_inputs(ranges[n]) if chunk_inputs is not None and n < len(ranges) else None)
    xs = inputs(0)
    with StopRequest() as stop:
        for n, its in enumerate(ranges):
            t0 = time.perf_counter()
            carry, m = run(carry, jnp.asarray(its), xs, consts)    # dispatched; runs while the host goes on
            next_xs = inputs(n + 1)                                 # gathered while the chunk runs
            m = to_host(m)                                          # the one host read of this chunk
            # the chunk's own time per iteration (compile included in a first call), without the saves and
            # logging between chunks: what a per-iteration timing of another implementation compares with
            iter_ms = 1e3 * (time.perf_counter() - t0) / len(its)
            finite = np.asarray(m["finite"], bool)
            for j, ok in enumerate(finite):
                consecutive = 0 if ok else consecutive + 1
                nonfinite += int(not ok)
                if consecutive >= max_nonfinite:
                    loss = {k: float(np.asarray(v)[j]) for k, v in m.items() if k.startswith("loss")}
                    raise NumericalError(
                        f"{name}: {consecutive} consecutive iterations with non-finite losses/gradients at iteration "
                        f"{int(its[j])} (max_nonfinite={max_nonfinite}; last {loss}); the last good checkpoint is "
                        f"kept.{(' ' + nonfinite_hint) if nonfinite_hint else ''}")
            if on_chunk is not None:
                on_chunk(its, m, carry)
            if metrics_log is not None and log_row is not None:
                metrics_log.log_many([(int(i) + 1, {**log_row(int(i), {k: np.asarray(v)[j] for k, v in m.items()}),
                                                    "chunk_ms_per_iter": round(iter_ms, 3)})
                                      for j, i in enumerate(its)])
            done = int(its[-1]) + 1
            if bar is not None:
                bar.update(len(its))
                if postfix is not None:
                    bar.set_postfix(**postfix({k: np.asarray(v)[-1] for k, v in m.items()}))
            if save is not None and done % checkpoint_every == 0 and done < iterations:
                save(carry, done)
            if stop.requested:
                if save is not None:
                    save(carry, done)
                raise Interrupted(f"{name} stopped at iteration {done}; re-run with the same workdir and key to resume")
            it, xs = done, next_xs
    return LoopResult(carry=carry, done=it, nonfinite=nonfinite, consecutive=consecutive)


def chunks_of(start: int, iterations: int, chunk: int) -> list[tuple[int, int]]:
    """The (lo, hi) iteration ranges `run_loop` runs as chunks: each ends on the next multiple of `chunk` or at
    `iterations` (a resumed run off a boundary is realigned by a shorter first chunk)."""
    out, lo = [], start
    while lo < iterations:
        hi = min(iterations, (lo // chunk + 1) * chunk)
        out.append((lo, hi))
        lo = hi
    return out


__all__ = ["MAX_AUTO_CHUNK", "auto_chunk", "compile_chunk", "run_loop", "LoopResult", "chunks_of"]

