"""The shared outer loop (methods/loop.py): chunk planning, and chunked runs equal to the per-iteration
loop (chunk_iters=1, one iteration per compiled call: the oracle) for each distiller, same keys."""
from __future__ import annotations

import dataclasses
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))

from jaxdistill.errors import ConfigError, NumericalError  # noqa: E402
from jaxdistill.methods import loop  # noqa: E402


def test_auto_chunk_divides_the_checkpoint_interval_and_prefers_one_compile():
    assert loop.auto_chunk(4, 12) == 4
    assert loop.auto_chunk(100, 1200) == 25
    assert loop.auto_chunk(50, 300) == 25
    assert loop.auto_chunk(500, 5000) == 25
    assert loop.auto_chunk(20, 30) == 10          # 10 divides both 20 and 30: one chunk length
    assert loop.auto_chunk(20, 33) == 20          # no useful common divisor: two lengths (20 and 13)
    assert loop.auto_chunk(7, 100) == 7
    assert loop.auto_chunk(100, 1200, requested=1) == 1
    for ce in (1, 4, 20, 37, 100, 500):
        c = loop.auto_chunk(ce, 1000)
        assert ce % c == 0 and 1 <= c <= loop.MAX_AUTO_CHUNK
    msg = r"chunk_iters=3 must be 0 \(automatic\) or divide checkpoint_every=4; allowed: 0 or \[1, 2, 4\]"
    with pytest.raises(ConfigError, match=msg):
        loop.auto_chunk(4, 12, requested=3)


def test_chunks_cover_the_iterations_once_and_end_on_checkpoints():
    assert loop.chunks_of(0, 12, 4) == [(0, 4), (4, 8), (8, 12)]
    assert loop.chunks_of(6, 13, 4) == [(6, 8), (8, 12), (12, 13)]   # resumed off a boundary: realigned
    for start, n, c in ((0, 100, 25), (3, 57, 5), (0, 1, 1)):
        ch = loop.chunks_of(start, n, c)
        assert [i for lo, hi in ch for i in range(lo, hi)] == list(range(start, n))
        assert all(hi % c == 0 or hi == n for _, hi in ch)


def _toy_body(carry, it, x, consts):
    # A running sum whose update depends on the iteration, its input and a constant; NaN at it == 5.
    new = carry * consts + x + it.astype(jnp.float32)
    new = jnp.where(it == 5, jnp.nan, new)
    finite = jnp.isfinite(new)
    return jnp.where(finite, new, carry), {"loss": new, "finite": finite}


def _naive(n, xs, k, start=0, carry=1.0):
    out = []
    for it in range(start, n):
        new = carry * k + xs[it] + it
        if it == 5:
            out.append(np.nan)
            continue
        carry = new
        out.append(new)
    return carry, out


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_run_loop_equals_a_naive_loop_with_saves_on_the_checkpoint_interval(chunk):
    xs = np.linspace(-1, 1, 12).astype(np.float32)
    run = loop.compile_chunk(_toy_body)
    saves, seen = [], []
    res = loop.run_loop("toy", run, jnp.float32(1.0), start=0, iterations=12, checkpoint_every=4, max_nonfinite=2,
                        chunk=chunk, consts=jnp.float32(0.5), chunk_inputs=lambda its: xs[its],
                        on_chunk=lambda its, m, c: seen.extend(np.asarray(m["loss"]).tolist()),
                        save=lambda c, done: saves.append((done, float(c))))
    want, hist = _naive(12, xs, 0.5)
    chex.assert_trees_all_close(float(res.carry), want, rtol=1e-6)
    np.testing.assert_allclose(seen, hist, rtol=1e-6)
    assert [d for d, _ in saves] == [4, 8] and res.nonfinite == 1 and res.done == 12
    np.testing.assert_allclose(saves[0][1], _naive(4, xs, 0.5)[0], rtol=1e-6)


def test_run_loop_refuses_a_chunk_that_does_not_divide_the_checkpoint_interval():
    with pytest.raises(ConfigError, match="chunk=3 must be >= 1 and divide checkpoint_every=4"):
        loop.run_loop("toy", loop.compile_chunk(_toy_body), jnp.float32(1.0), start=0, iterations=12,
                      checkpoint_every=4, max_nonfinite=2, chunk=3, consts=jnp.float32(0.5))


def test_run_loop_stops_at_the_iteration_that_reaches_max_nonfinite():
    body = lambda c, it, x, k: (c, {"loss": jnp.where(it >= 5, jnp.nan, 1.0), "finite": it < 5})
    saves = []
    with pytest.raises(NumericalError, match=r"toy: 3 consecutive .* at iteration 7 \(max_nonfinite=3"):
        loop.run_loop("toy", loop.compile_chunk(body), jnp.float32(0), start=0, iterations=12, checkpoint_every=4,
                      max_nonfinite=3, chunk=4, save=lambda c, d: saves.append(d))
    assert saves == [4]   # nothing is saved past the last good checkpoint


def test_run_loop_compiles_one_program_per_chunk_length():
    traces = []

    def body(c, it, x, k):
        traces.append(1)
        return c + it, {"finite": jnp.bool_(True)}

    run = loop.compile_chunk(body)
    res = loop.run_loop("toy", run, jnp.int32(0), start=0, iterations=30, checkpoint_every=10, max_nonfinite=1,
                        chunk=10)
    assert int(res.carry) == sum(range(30)) and len(traces) == 1
    loop.run_loop("toy", run, jnp.int32(0), start=0, iterations=33, checkpoint_every=10, max_nonfinite=1, chunk=10)
    assert len(traces) == 2   # the last, shorter chunk (3 iterations) is the one new program


@pytest.mark.parametrize("method", ["datm", "dance", "rcig"])
def test_chunked_distillation_equals_the_per_iteration_loop(method, tmp_path):
    from distill_run import SEED, tiny_config, tiny_data

    from jaxdistill.methods import distill

    data = tiny_data()
    key = jax.random.PRNGKey(SEED)
    cfg = dataclasses.replace(tiny_config(method), iterations=8)
    expert_dir = str(tmp_path / "experts")
    if method == "datm":
        cfg = dataclasses.replace(cfg, expert_dir=expert_dir)
    a = distill(method, dataclasses.replace(cfg, chunk_iters=1), data, key, progress=False)
    b = distill(method, dataclasses.replace(cfg, chunk_iters=4), data, key, progress=False)
    chex.assert_trees_all_close(b.images, a.images, atol=2e-5, rtol=2e-5)
    if a.targets is not None:
        chex.assert_trees_all_close(b.targets, a.targets, atol=2e-5, rtol=2e-5)
    if a.lr is not None:
        np.testing.assert_allclose(b.lr, a.lr, rtol=1e-5)
    assert not np.allclose(a.images, a.initial.images)   # the runs did move the set: equality means something
