"""Per-program XLA compile options: the one place that chooses them.

XLA:CPU hands matmuls and reductions to YNNPACK fusions by default. For DANCE's iteration that default is
slow: one YNNPACK reduction fusion (instance norm + ReLU + pool of the real branch) took a third of the quick
iteration, and keeping YNNPACK for matmuls only made the whole iteration 0.70-0.90x the time at widths 16-128
on the 2-core AMD EPYC (`benchmarks/studies/cpu_ynn_reduce_by_width.py`, BUILD_NOTES.md). DATM's unrolled
second-order step goes the other way (1.25x slower at width 16, 1.83x at width 128), so the choice is per
program, not global: a program asks for its options by name (`compiler_options("dance")`) and passes them to
`jax.jit(..., compiler_options=...)`.

The ratio may differ on other CPUs (the project meets Intel and AMD machines), so the environment variable
JAXDISTILL_YNN_REDUCE overrides the per-program choice for every program that asks (the three distillers' chunk
programs and DATM's outer step, DANCE's iteration, the training epoch program behind the evaluator, experts,
pools and baselines): `auto` (default: the table below), `on` (YNNPACK reductions, XLA's default), `off`
(matmuls only). Off the CPU backend no option is set.
The variable is read when a program is built; programs are cached per process, so set it before the first run.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import jax

from jaxdistill.errors import ConfigError

ENV = "JAXDISTILL_YNN_REDUCE"
CHOICES = ("auto", "on", "off")
_DOT_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}

# Programs measured faster with YNNPACK reductions off (matmuls only) on XLA:CPU. Programs not named keep
# XLA's default.
YNN_REDUCE_OFF = frozenset({"dance"})


def ynn_reduce_mode() -> str:
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in CHOICES:
        raise ConfigError(f"{ENV}={mode!r} is not one of {list(CHOICES)}")
    return mode


@functools.lru_cache(maxsize=1)
def _option_supported() -> bool:
    """Whether this jaxlib's XLA:CPU knows the option (it is experimental: a jaxlib that dropped it would
    refuse every compile that sets it, so it is then left out)."""
    try:
        jax.jit(lambda x: x.sum(), compiler_options=_DOT_ONLY)(jax.numpy.ones(2)).block_until_ready()
        return True
    except Exception:  # noqa: BLE001 (XlaRuntimeError / JaxRuntimeError naming the unknown option)
        return False


def compiler_options(program: str) -> Optional[dict]:
    """The compile options for `program` ("dance", "datm", "rcig", "train", ...) on the current backend, or
    None for XLA's defaults."""
    mode = ynn_reduce_mode()
    if jax.default_backend() != "cpu" or mode == "on":
        return None
    if (mode == "off" or program in YNN_REDUCE_OFF) and _option_supported():
        return dict(_DOT_ONLY)
    return None


__all__ = ["ENV", "CHOICES", "YNN_REDUCE_OFF", "ynn_reduce_mode", "compiler_options"]
