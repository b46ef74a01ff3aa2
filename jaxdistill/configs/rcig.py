"""RCIG settings: RCIG's configs_final (distillers.md 3.6 + section 6), fashion_mnist/digits, quick presets.

`get_config(dataset, ipc, preset)` -> RCIGConfig; override fields with `dataclasses.replace`.
RCIG's evaluation recipe is the "rcig" protocol of `jaxdistill.evaluate.get_protocol`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from jaxdistill.configs._checks import (check_choice, check_chunk, check_devices, check_fraction, check_ints,
                                        check_positive)
from jaxdistill.errors import ConfigError

from jaxdistill.configs.presets import PRESETS
PREPROCESS = ("zca_rcig", "meanstd", "none")
ALIASES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}

# Per-channel normalisation constants RCIG/FRePo hard-code (distillers.md 0.3 and section 6).
MEANSTD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": ((0.4759, 0.4481, 0.3926), (0.2763, 0.2687, 0.2813)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
}


@dataclasses.dataclass(frozen=True)
class RCIGConfig:
    """Everything an RCIG run needs; names follow the original's config keys where they exist.

    pool_max_steps is exclusive: each iteration trains the chosen pool model randint(1, pool_max_steps)
    steps (1..15 for the original's n_max_steps_pool=16).
    """

    dataset: str
    ipc: int
    iterations: int = 10000
    # network (RCIG's Conv: width doubling, no norm, softplus(beta x)/beta while distilling; 0 = ReLU)
    width: int = 128
    depth: int = 3
    softplus_temp: float = 60.0
    # data
    preprocess: str = "zca_rcig"
    mean: Optional[tuple] = None       # per-channel constants; None = fitted on the training split
    std: Optional[tuple] = None
    zca_reg: float = 0.1
    use_flip: bool = True
    real_batch: int = 1024
    # coreset
    learn_labels: bool = True
    proto_lr: float = 0.003
    temp_lr: float = 0.03
    ema_decay: float = 0.99
    # convexified inner problem / implicit gradient
    l2_rate: float = 5e-4
    n_inner: int = 20
    n_hinv: int = 20
    inner_lr: float = 1e-5
    hvp_lr: float = 5e-5
    tune_lr: bool = True
    tune_max_tries: int = 60
    adapt_every: int = 50
    adapt_fail_frac: float = 0.29
    adapt_monotone_frac: float = 0.70
    # model pool
    pool_size: int = 30
    pool_lr: float = 5e-5
    pool_max_steps: int = 16
    max_online_steps: int = 100
    # run control
    checkpoint_every: int = 500
    max_nonfinite: int = 10
    # Iterations per compiled chunk of the outer loop (methods/loop.py): 0 = automatic (a divisor of
    # checkpoint_every <= 25); it changes speed, not the set (equal to float tolerance).
    chunk_iters: int = 0
    preset: str = "paper"
    # several devices: the outer loss/gradient on the real batch split across devices (the batch,
    # min(real_batch, N), a multiple of the device count). 0 = all visible devices when there are several,
    # 1 = one device, n = the first n.
    devices: int = 0
    # Who computes RCIG's pieces (kernels.py): "nt" = neural-tangents, "jax" = the same maths by hand.
    # kernel_backend: the head's empirical NTK (nt.empirical_ntk_fn) and the kernel ridge regression
    # (nt.predict.gp_inference); same XLA FLOPs as by hand. linearize_backend: the tangent logits
    # J(x) delta; "nt" (nt.linearize) costs ~12% more FLOPs per step, because nt.linearize returns
    # primal + tangent and the gradient into the coreset images then also runs back through the
    # (cancelling) primal, so the hand-written jax.jvp stays the default (BUILD_NOTES.md, "RCIG through
    # neural-tangents").
    kernel_backend: str = "nt"
    linearize_backend: str = "jax"

    def __post_init__(self):
        check_choice("RCIG", "preprocess", self.preprocess, PREPROCESS)
        check_choice("RCIG", "preset", self.preset, PRESETS)
        check_choice("RCIG", "kernel_backend", self.kernel_backend, ("nt", "jax"))
        check_choice("RCIG", "linearize_backend", self.linearize_backend, ("nt", "jax"))
        check_ints("RCIG", self, ("ipc", "iterations", "width", "depth", "real_batch", "n_inner", "n_hinv",
                                  "tune_max_tries", "adapt_every", "pool_size", "max_online_steps",
                                  "checkpoint_every", "max_nonfinite"))
        check_ints("RCIG", self, ("pool_max_steps",), lo=2)  # online steps are drawn from [1, pool_max_steps)
        check_positive("RCIG", self, ("proto_lr", "temp_lr", "l2_rate", "inner_lr", "hvp_lr", "pool_lr", "zca_reg"))
        check_fraction("RCIG", self, ("ema_decay",))
        if self.softplus_temp < 0:
            raise ConfigError(f"RCIG softplus_temp={self.softplus_temp!r} must be >= 0 (0 = ReLU)")
        for name in ("adapt_fail_frac", "adapt_monotone_frac"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"RCIG {name}={getattr(self, name)!r} must be in (0, 1]")
        check_devices("RCIG", self.devices)
        check_chunk("RCIG", self.chunk_iters, self.checkpoint_every)
        if (self.mean is None) != (self.std is None):
            raise ConfigError(f"RCIG mean={self.mean!r} and std={self.std!r} must be given together or both None")

    def replace(self, **kw) -> "RCIGConfig":
        return dataclasses.replace(self, **kw)

    def net_config(self, num_classes: int, distill: bool = True):
        """RCIG's Conv: softplus(temp) while distilling, ReLU for evaluation (distill=False); flax's default
        init (lecun-normal kernels, zero biases) as RCIG's flax `models.Conv`, for the pool and its resets."""
        from jaxdistill.nn import NetConfig

        act = "softplus" if distill and self.softplus_temp > 0 else "relu"
        return NetConfig(num_classes=num_classes, width=self.width, depth=self.depth, norm="none", act=act,
                         softplus_temp=self.softplus_temp if act == "softplus" else 60.0, pool="avg",
                         width_growth=2, init="flax")


_DEPTH3 = dict(depth=3, softplus_temp=60.0, use_flip=True, preprocess="zca_rcig", l2_rate=5e-4)
_DEPTH3_NO_FLIP = dict(_DEPTH3, use_flip=False, preprocess="meanstd")        # MNIST / Fashion-MNIST (section 6)
_DEPTH4_200 = dict(depth=4, softplus_temp=0.0, use_flip=True, preprocess="zca_rcig", l2_rate=5e-4)
_DEPTH4_BIG = dict(_DEPTH4_200, use_flip=False)

# configs_final: depth_3 (CIFAR-10, CIFAR-100 IPC 1/10), cifar100_50 (no flip), depth_4_200 (Tiny IPC1),
# depth_4_big (Tiny IPC10; IPC50 is not in RCIG, the study's grid has it: same config). The original's
# large-coreset subsampling trick (direct/implicit batch sizes) is not implemented: full coreset always.
PAPER: dict[tuple[str, int], dict] = {
    ("cifar10", 1): _DEPTH3, ("cifar10", 10): _DEPTH3, ("cifar10", 50): _DEPTH3,
    ("cifar100", 1): _DEPTH3, ("cifar100", 10): _DEPTH3, ("cifar100", 50): dict(_DEPTH3, use_flip=False),
    ("tiny_imagenet", 1): _DEPTH4_200, ("tiny_imagenet", 10): _DEPTH4_BIG, ("tiny_imagenet", 50): _DEPTH4_BIG,
    ("fashion_mnist", 1): _DEPTH3_NO_FLIP, ("fashion_mnist", 10): _DEPTH3_NO_FLIP,
    ("fashion_mnist", 50): _DEPTH3_NO_FLIP,
    ("digits", 1): _DEPTH3_NO_FLIP, ("digits", 10): _DEPTH3_NO_FLIP, ("digits", 50): _DEPTH3_NO_FLIP,
}


def known_settings() -> list[str]:
    return [f"{d}/ipc{i}" for d, i in sorted(PAPER)]


def _quick(base: str) -> dict:
    """2-core CPU sizes: width 32, an 8-model pool, a 128-image real batch, 10 inner / 10 inverse-Hessian
    steps, 100 iterations; the lr search starts nearer its usual end (1e-3 / 5e-3) and stops after 12 tries."""
    if base == "digits":
        return dict(width=32, iterations=100, pool_size=8, real_batch=128, n_inner=10, n_hinv=10, inner_lr=1e-3,
                    hvp_lr=5e-3, tune_max_tries=12, checkpoint_every=50, preset="quick")
    # Larger images on a 2-core CPU: the default `jaxdistill denoise` job must finish within 10 minutes.
    return dict(width=16, iterations=30, pool_size=4, real_batch=128, n_inner=5, n_hinv=5, inner_lr=3e-3,
                hvp_lr=1e-2, tune_max_tries=3, checkpoint_every=20, preset="quick")


def _cpu(base: str) -> dict:
    """The `cpu` preset (an hour per grid cell on 2 cores): width 32, an 8-model pool, 10 inner / 10
    inverse-Hessian steps, 200 iterations. Digits keeps its quick settings."""
    if base == "digits":
        return _quick(base)
    return dict(width=32, iterations=200, pool_size=8, real_batch=128, n_inner=10, n_hinv=10, inner_lr=1e-3,
                hvp_lr=5e-3, tune_max_tries=6, checkpoint_every=50, preset="cpu")


def get_config(dataset: str, ipc: int, preset: str = "paper") -> RCIGConfig:
    """Named RCIG setting for (dataset, ipc) under `preset` ('paper': the original's values; 'quick': CPU)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; allowed: {list(PRESETS)}")
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError(f"ipc={ipc!r} must be a positive integer")
    base = ALIASES.get(dataset, dataset)
    if (base, ipc) in PAPER:
        row = dict(PAPER[(base, ipc)])
    elif preset in ("quick", "cpu"):
        # Unknown data set: one-channel / small images follow the no-flip MNIST config, else depth_3.
        row = dict(_DEPTH3)
    else:
        raise ConfigError(f"no RCIG paper setting for dataset={dataset!r}, ipc={ipc!r}; known settings: "
                          f"{', '.join(known_settings())} (aliases: {ALIASES}); use preset='quick' or build an "
                          f"RCIGConfig yourself")
    if base in MEANSTD:
        row.update(mean=MEANSTD[base][0], std=MEANSTD[base][1])
    if preset in ("quick", "cpu"):
        row.update((_quick if preset == "quick" else _cpu)(base))
    else:
        row.update(preset="paper")
    return RCIGConfig(dataset=dataset, ipc=ipc, **row)
