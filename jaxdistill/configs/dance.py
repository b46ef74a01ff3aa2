"""Named DANCE settings: the study's datasets x IPC, Fashion-MNIST / digits, and a 2-core-CPU `quick` preset.

Numbers follow DANCE's `arguments/arg_condense.py` + `reproduce_condense.py` (distillers.md section 2):
10000 iterations, lr_img = 0.01 x IPC, image momentum 0.5, 128 real images per class, at most 200 decoded
synthetic images per class, 5 pretrained models sampled (20 trained for 60 epochs), one calibration round.

Choices where the original is silent or unverified (documented, overridable with `dataclasses.replace`):
- multi-formation factor: 2 for every paper setting (IDC's convention that DANCE builds on and the DANCE
  README's example); the per-IPC factors behind the paper's table are unverified.
- normalisation constants: DANCE's (IDC's) constants for CIFAR-10 and Fashion-MNIST (distillers.md 0.3/6),
  the usual CIFAR-100 constants; anything else (digits, Tiny-ImageNet, user data) is fitted on the
  training images (`mean=None`).

Run command (paper setting):  python -m jaxdistill distill dance --dataset cifar10 --ipc 10
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from jaxdistill.configs._checks import check_choice, check_chunk, check_devices, check_fraction, check_ints
from jaxdistill.errors import ConfigError

from jaxdistill.configs.presets import PRESETS

NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar10_n": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cifar100_n": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
}

# (dataset, ipc) settings the paper preset knows. Tiny-ImageNet uses ConvNet-3 as DANCE's --reproduce does.
PAPER_DATASETS = ("cifar10", "cifar10_n", "cifar100", "cifar100_n", "tiny_imagenet", "fashion_mnist", "digits")
PAPER_IPCS = (1, 10, 50)


@dataclasses.dataclass(frozen=True)
class DanceConfig:
    """Every knob of a DANCE run.

    Synthetic state: (C*ipc, H, W, Ch) images in [0,1] pixels, each holding factor x factor sub-images.
    Pool: `pool_size` ConvNets pretrained with DANCE's recipe; iterations sample among the first
    `num_premodel`. `batched_classes=True` replaces the exact per-class momentum steps (a scan over
    classes, 2C optimiser steps per iteration) with one batched step per view (2 steps per iteration).
    """

    dataset: str
    ipc: int
    iterations: int = 10000
    lr_img: Optional[float] = None          # None -> 0.01 * ipc
    mom_img: float = 0.5
    batch_real: int = 128                   # real images per class per iteration
    batch_syn_max: int = 200                # decoded synthetic images per class per step (random subset)
    factor: int = 2                         # multi-formation factor f (ipc * f^2 decoded images per class)
    iter_calib: int = 1                     # rounds of the inter-class calibration view
    batched_classes: bool = False
    # network (the study's ConvNet-3)
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    # normalisation applied inside the augmentation (None -> fitted on the training images)
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    # pretrained pool (DANCE pretrain.py)
    pool_size: int = 20
    num_premodel: int = 5
    pretrain_epochs: int = 60
    pretrain_batch: int = 64
    pretrain_lr: float = 0.01
    pretrain_momentum: float = 0.9
    pretrain_wd: float = 5e-4
    pretrain_milestones: tuple = (2 / 3, 5 / 6)
    pretrain_gamma: float = 0.2
    pretrain_cutmix_p: float = 0.5
    # robustness
    checkpoint_every: int = 500
    max_nonfinite: int = 10
    # Iterations per compiled chunk of the outer loop (methods/loop.py): 0 = automatic (a divisor of
    # checkpoint_every <= 25); it changes speed, not the set (equal to float tolerance).
    chunk_iters: int = 0
    # > 0: classes per pass where an iteration would batch all C classes at once (methods/dance.Statics.class_chunk):
    # less memory (CIFAR-10 IPC 10: XLA temp 657 -> 131 MB), the same set to float tolerance; 0 = all at once.
    class_chunk: int = 0
    preset: str = "paper"
    # several devices: the per-class gradients split across devices (classes padded to a multiple of the
    # device count). 0 = all visible devices when there are several, 1 = one device, n = the first n.
    devices: int = 0

    def __post_init__(self):
        check_ints("DANCE", self, ("ipc", "batch_real", "batch_syn_max", "factor", "width", "depth", "pool_size",
                                   "num_premodel", "pretrain_batch", "checkpoint_every", "max_nonfinite"))
        check_ints("DANCE", self, ("iterations", "iter_calib", "pretrain_epochs"), lo=0)
        check_devices("DANCE", self.devices)
        check_chunk("DANCE", self.chunk_iters, self.checkpoint_every)
        if not isinstance(self.class_chunk, int) or isinstance(self.class_chunk, bool) or self.class_chunk < 0:
            raise ConfigError(f"DANCE class_chunk={self.class_chunk!r} must be an int >= 0 (0 = all classes at once)")
        if self.num_premodel > self.pool_size:
            raise ConfigError(f"DANCE num_premodel={self.num_premodel} must be <= pool_size={self.pool_size} "
                              f"(allowed 1..{self.pool_size})")
        if self.lr_img is not None and not self.lr_img > 0:
            raise ConfigError(f"DANCE lr_img={self.lr_img!r} must be > 0 (or None for 0.01 * ipc)")
        check_fraction("DANCE", self, ("mom_img",))
        if (self.mean is None) != (self.std is None):
            raise ConfigError(f"DANCE mean={self.mean!r} and std={self.std!r} must both be set or both be None")
        if self.std is not None and any(not s > 0 for s in self.std):
            raise ConfigError(f"DANCE std={self.std!r} must be positive per channel")
        check_choice("DANCE", "preset", self.preset, PRESETS)
        check_choice("DANCE", "norm", self.norm, ("instance", "batch", "none"))

    @property
    def image_lr(self) -> float:
        return float(self.lr_img) if self.lr_img is not None else 0.01 * self.ipc

    def replace(self, **kw) -> "DanceConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _norm(dataset: str) -> tuple:
    return NORMALISATION.get(dataset, (None, None))


def get_config(dataset: str, ipc: int, preset: str = "paper") -> DanceConfig:
    """The named DANCE setting for (dataset, ipc, preset).

    paper: DANCE's reproduce settings for the study's data sets plus fashion_mnist and digits at IPC
    1/10/50 (unknown pairs raise ConfigError). quick: the same algorithm sized for a 2-core CPU
    (width 32, a small pool, few iterations) for any IPC on those data sets.
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not one of {list(PRESETS)}")
    if dataset not in PAPER_DATASETS:
        raise ConfigError(f"DANCE has no setting for dataset={dataset!r}; known: {list(PAPER_DATASETS)}; other data "
                          f"(npz:PATH) gets one derived from the data: jaxdistill.configs.derive.method_config("
                          f"'dance', dataset, ipc, preset, data), as every command does")
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ConfigError(f"ipc={ipc!r} must be a positive int; known paper settings: {list(PAPER_IPCS)}")
    mean, std = _norm(dataset)
    if preset == "paper":
        if ipc not in PAPER_IPCS:
            known = [f"{d}/ipc{i}" for d in PAPER_DATASETS for i in PAPER_IPCS]
            raise ConfigError(f"no paper DANCE setting for ({dataset!r}, ipc={ipc}); known: {known}")
        return DanceConfig(dataset=dataset, ipc=ipc, mean=mean, std=std, preset="paper")
    # quick: digits is the CPU test bed (8x8), everything else gets a tiny pool and few iterations.
    if dataset == "digits":
        return DanceConfig(dataset=dataset, ipc=ipc, iterations=200, factor=1, width=32, batch_real=64,
                           pool_size=5, num_premodel=5, pretrain_epochs=20, checkpoint_every=100,
                           mean=mean, std=std, preset="quick")
    if preset == "cpu":
        # An hour per grid cell on 2 cores: width 32, a 5-model pool pretrained 10 epochs, 500 iterations.
        return DanceConfig(dataset=dataset, ipc=ipc, iterations=500, factor=1, width=32, batch_real=128,
                           batch_syn_max=100, pool_size=5, num_premodel=5, pretrain_epochs=10,
                           checkpoint_every=100, mean=mean, std=std, preset="cpu")
    # factor 1: multi-formation quadruples the images every evaluation net trains on (too slow for the CPU job)
    return DanceConfig(dataset=dataset, ipc=ipc, iterations=60, factor=1, width=16,
                       batch_real=64, batch_syn_max=100, pool_size=2, num_premodel=2, pretrain_epochs=2,
                       checkpoint_every=20, mean=mean, std=std, preset="quick")
