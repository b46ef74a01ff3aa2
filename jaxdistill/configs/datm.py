"""DATM settings: the study's table (distillers.md 1.6), fashion_mnist/digits, and CPU-sized quick presets.

`get_config(dataset, ipc, preset)` -> DATMConfig; override fields with `dataclasses.replace`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from jaxdistill.configs._checks import (check_choice, check_chunk, check_devices, check_fraction, check_ints,
                                        check_positive)
from jaxdistill.errors import ConfigError

INITS = ("samples_predicted_correctly", "real")
from jaxdistill.configs.presets import PRESETS
PREPROCESS = ("zca_datm", "none", "meanstd")
# How the gradient through the unrolled student steps is taken (methods/datm.unroll): jvp and autodiff give the
# exact gradient (the same values); tesla is the study's DATM_tesla.py rule (theta_i held fixed).
META_GRADS = ("jvp", "autodiff", "tesla")
# Data sets whose settings are another's (natural-noise variants share their clean set's table row).
ALIASES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}


@dataclasses.dataclass(frozen=True)
class DATMConfig:
    """Everything a DATM run needs; field names follow the original configs where they exist.

    Start epoch t ~ randint[min_start_epoch, U); with `sequential`,
    U = min(current_max_start_epoch + int((max_start_epoch - current_max_start_epoch) * it / expansion_end_epoch),
            max_start_epoch), else U = max_start_epoch. Target = t + expert_epochs.
    """

    dataset: str
    ipc: int
    iterations: int = 10000
    syn_steps: int = 80
    expert_epochs: int = 2
    min_start_epoch: int = 0
    max_start_epoch: int = 20
    sequential: bool = True
    current_max_start_epoch: int = 10
    expansion_end_epoch: int = 1000
    lr_img: float = 100.0
    lr_lr: float = 1e-5
    lr_y: float = 2.0
    lr_teacher: float = 0.01      # initial learnable student lr (= the experts' lr)
    mom_img: float = 0.5
    mom_lr: float = 0.5
    mom_y: float = 0.9
    batch_syn: int = 100
    threshold: float = 1.0
    init: str = "samples_predicted_correctly"
    dsa: bool = True
    remat: bool = True            # meta_grad="autodiff" only: save theta per step, recompute activations
    meta_grad: str = "jvp"        # "jvp" (faster: BUILD_NOTES) or "autodiff": exact; "tesla": the study's
                                  # DATM_tesla.py (theta_i held fixed); see methods.datm.unroll
    # network (ConvNet, instance norm, ReLU, avg-pool)
    width: int = 128
    depth: int = 3
    preprocess: str = "zca_datm"
    # experts (FTD recipe: SGD 0.01, no momentum, DSA, batch 256, GSAM rho 0.01 alpha 0.3)
    num_experts: int = 100
    expert_train_epochs: int = 100
    expert_lr: float = 0.01
    expert_momentum: float = 0.0
    expert_batch: int = 256
    expert_sam_rho: float = 0.01
    expert_sam_alpha: float = 0.3
    expert_augment: str = "dsa"
    expert_group_size: Optional[int] = None   # experts trained together (memory); None = all
    expert_dir: Optional[str] = None
    # run control
    checkpoint_every: int = 500
    max_nonfinite: int = 10
    # Iterations per compiled chunk of the outer loop (methods/loop.py): 0 = automatic (a divisor of
    # checkpoint_every <= 25); it changes speed, not the set (equal to float tolerance).
    chunk_iters: int = 0
    preset: str = "paper"
    # several devices: T (expert, start epoch) trajectories per iteration, their matching-loss gradients
    # averaged (the threshold rule applies to the mean loss); with n > 1 devices the T are split across them
    # (T a multiple of n). devices: 0 = all visible devices when there are several, 1 = one device, n = n.
    trajectories_per_iter: int = 1
    devices: int = 0

    def __post_init__(self):
        check_choice("DATM", "init", self.init, INITS)
        check_choice("DATM", "preprocess", self.preprocess, PREPROCESS)
        check_choice("DATM", "meta_grad", self.meta_grad, META_GRADS)
        check_choice("DATM", "preset", self.preset, PRESETS)
        check_ints("DATM", self, ("ipc", "iterations", "syn_steps", "expert_epochs", "batch_syn", "width", "depth",
                                  "num_experts", "expert_train_epochs", "expert_batch", "checkpoint_every",
                                  "max_nonfinite", "expansion_end_epoch", "trajectories_per_iter"))
        check_devices("DATM", self.devices)
        check_chunk("DATM", self.chunk_iters, self.checkpoint_every)
        if not 0 <= self.min_start_epoch < self.max_start_epoch:
            raise ConfigError(f"start-epoch range [{self.min_start_epoch}, {self.max_start_epoch}) is empty; "
                              f"allowed 0 <= min_start_epoch < max_start_epoch")
        if self.sequential and not self.min_start_epoch < self.current_max_start_epoch <= self.max_start_epoch:
            raise ConfigError(f"current_max_start_epoch={self.current_max_start_epoch} must lie in "
                              f"({self.min_start_epoch}, {self.max_start_epoch}] when sequential")
        if self.last_target_epoch > self.expert_train_epochs:
            raise ConfigError(f"the largest target epoch {self.last_target_epoch} (max_start_epoch - 1 + "
                              f"expert_epochs) exceeds expert_train_epochs={self.expert_train_epochs}")
        check_positive("DATM", self, ("lr_img", "lr_lr", "lr_y", "lr_teacher", "expert_lr", "threshold"))
        check_fraction("DATM", self, ("mom_img", "mom_lr", "mom_y", "expert_momentum"))

    @property
    def last_target_epoch(self) -> int:
        return self.max_start_epoch - 1 + self.expert_epochs

    def replace(self, **kw) -> "DATMConfig":
        return dataclasses.replace(self, **kw)

    def net_config(self, num_classes: int):
        from jaxdistill.nn import NetConfig

        return NetConfig(num_classes=num_classes, width=self.width, depth=self.depth, norm="instance",
                         act="relu", pool="avg")

    def expert_train_config(self):
        from jaxdistill.train import TrainConfig

        return TrainConfig(epochs=self.expert_train_epochs, batch_size=self.expert_batch, optimizer="sgd",
                           lr=self.expert_lr, momentum=self.expert_momentum, augment=self.expert_augment,
                           sam_rho=self.expert_sam_rho, sam_alpha=self.expert_sam_alpha, sam_adaptive=True)



def _row(syn_steps, expert_epochs, lo, hi, seq, cur, end, lr_img, lr_lr, lr_y, batch_syn, thr=1.0,
         init="samples_predicted_correctly") -> dict:
    return dict(syn_steps=syn_steps, expert_epochs=expert_epochs, min_start_epoch=lo, max_start_epoch=hi,
                sequential=seq, current_max_start_epoch=cur if seq else hi, expansion_end_epoch=end,
                lr_img=lr_img, lr_lr=lr_lr, lr_y=lr_y, batch_syn=batch_syn, threshold=thr, init=init)


# distillers.md 1.6 (configs/*/ConvIN/IPC*.yaml). batch_syn larger than N means "the whole set".
PAPER: dict[tuple[str, int], dict] = {
    ("cifar10", 1): _row(80, 2, 0, 4, False, 4, 1000, 100, 1e-7, 5, 10, thr=1.1),
    ("cifar10", 10): _row(80, 2, 0, 20, True, 10, 1000, 100, 1e-5, 2, 100),
    ("cifar10", 50): _row(80, 2, 0, 40, True, 20, 2000, 1000, 1e-5, 2, 500),
    ("cifar10", 500): _row(40, 2, 40, 60, False, 60, 1000, 50, 1e-5, 10, 1000),
    ("cifar10", 1000): _row(100, 2, 40, 60, False, 60, 1000, 50, 1e-5, 10, 1000),
    ("cifar100", 1): _row(40, 3, 0, 20, True, 10, 1000, 1000, 1e-5, 10, 1000),
    ("cifar100", 10): _row(80, 2, 0, 50, True, 30, 2000, 1000, 1e-5, 10, 1000),
    ("cifar100", 50): _row(80, 2, 20, 70, False, 70, 1000, 1000, 1e-5, 10, 1000, init="real"),
    ("cifar100", 100): _row(80, 2, 30, 70, False, 70, 1000, 50, 1e-5, 10, 1000),
    ("tiny_imagenet", 1): _row(40, 2, 0, 20, True, 15, 2000, 10000, 1e-4, 10, 1000),
    ("tiny_imagenet", 10): _row(40, 2, 10, 50, False, 50, 1000, 100, 1e-4, 10, 500),
    ("tiny_imagenet", 50): _row(20, 2, 40, 70, False, 70, 1000, 100, 1e-4, 10, 1000),
}
# Not in the study: Fashion-MNIST and digits follow CIFAR-10's rows at the same IPC.
for _ds in ("fashion_mnist", "digits"):
    for _ipc in (1, 10, 50):
        PAPER[(_ds, _ipc)] = PAPER[("cifar10", _ipc)]


def _quick(dataset: str, ipc: int) -> dict:
    """2-core CPU sizes: width 32, few short-lived experts, a short unroll, few hundred iterations."""
    n = ipc * (100 if dataset in ("cifar100", "cifar100_n") else 200 if dataset == "tiny_imagenet" else 10)
    big = dataset not in ("digits",)
    if big:  # larger images: sized so the default `jaxdistill denoise` job finishes within 10 minutes
        return dict(
            iterations=50, syn_steps=10, expert_epochs=2, min_start_epoch=0, max_start_epoch=3, sequential=True,
            current_max_start_epoch=2, expansion_end_epoch=40, lr_img=100.0, lr_lr=1e-5, lr_y=2.0,
            lr_teacher=0.01, batch_syn=min(n, 100), threshold=1.0, width=16, num_experts=3,
            expert_train_epochs=5, expert_lr=0.01, expert_batch=128, checkpoint_every=20, preset="quick",
        )
    return dict(
        iterations=200, syn_steps=20, expert_epochs=2,
        min_start_epoch=0, max_start_epoch=6, sequential=True, current_max_start_epoch=3,
        expansion_end_epoch=100, lr_img=10.0, lr_lr=1e-5, lr_y=2.0,
        lr_teacher=0.01, batch_syn=min(n, 100), threshold=1.0, width=32,
        num_experts=8, expert_train_epochs=8, expert_lr=0.01,
        expert_batch=128, checkpoint_every=50, preset="quick",
    )


def _cpu(dataset: str, ipc: int) -> dict:
    """The `cpu` preset (an hour per grid cell on 2 cores): width 32, more and longer experts than quick, a
    20-step unroll and 300 iterations. Digits keeps its quick settings (already CPU-sized)."""
    if dataset == "digits":
        return _quick(dataset, ipc)
    n = ipc * (100 if dataset in ("cifar100", "cifar100_n") else 200 if dataset == "tiny_imagenet" else 10)
    return dict(
        iterations=300, syn_steps=20, expert_epochs=2, min_start_epoch=0, max_start_epoch=6, sequential=True,
        current_max_start_epoch=4, expansion_end_epoch=150, lr_img=100.0, lr_lr=1e-5, lr_y=2.0,
        lr_teacher=0.01, batch_syn=min(n, 100), threshold=1.0, width=32, num_experts=6,
        expert_train_epochs=10, expert_lr=0.01, expert_batch=128, checkpoint_every=50, preset="cpu",
    )


def check_batch_syn(batch_syn: int, n_syn: int) -> None:
    """DATM draws its synthetic batches as equal slices of a permutation: batch_syn divides the C*ipc
    synthetic images or covers them all."""
    if batch_syn < n_syn and n_syn % batch_syn:
        divs = [d for d in range(1, n_syn + 1) if n_syn % d == 0]
        raise ConfigError(f"DATM batch_syn={batch_syn} must divide the {n_syn} synthetic images (C*ipc) or be >= "
                          f"{n_syn}; allowed: {divs} or >= {n_syn}")


def largest_batch_syn(cap: int, n_syn: int) -> int:
    """The largest batch_syn <= cap that `check_batch_syn` accepts for n_syn synthetic images."""
    return n_syn if cap >= n_syn else max(d for d in range(1, cap + 1) if n_syn % d == 0)


def known_settings() -> list[str]:
    return [f"{d}/ipc{i}" for d, i in sorted(PAPER)]


def get_config(dataset: str, ipc: int, preset: str = "paper") -> DATMConfig:
    """Named DATM setting for (dataset, ipc) under `preset` ('paper': the study's values; 'quick': CPU)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; allowed: {list(PRESETS)}")
    base = ALIASES.get(dataset, dataset)
    depth = 4 if base == "tiny_imagenet" else 3
    if preset in ("quick", "cpu"):
        if not isinstance(ipc, int) or ipc < 1:
            raise ConfigError(f"ipc={ipc!r} must be a positive integer")
        return DATMConfig(dataset=dataset, ipc=ipc, depth=depth, **(_quick if preset == "quick" else _cpu)(base, ipc))
    if (base, ipc) not in PAPER:
        raise ConfigError(f"no DATM paper setting for dataset={dataset!r}, ipc={ipc!r}; known settings: "
                          f"{', '.join(known_settings())} (aliases: {ALIASES}); use preset='quick' or build a "
                          f"DATMConfig yourself")
    return DATMConfig(dataset=dataset, ipc=ipc, depth=depth, preset="paper", **PAPER[(base, ipc)])
