"""The study's own settings (arXiv 2411.11924's scripts, DD_LNL) where they differ from the method papers.

The method papers' values are the `paper` rows of `configs/datm.py` and `configs/dance.py`. The study ran
its noisy grids with a few changes, selected by data set, IPC and noise; `study_overrides` names them and
`study_config` applies them to the paper row:

DATM (`DATM+ours/configs/<data>/ConvIN/<noise>/IPC<k>_<rate>.yaml` against the same folder's `clean/IPC<k>.yaml`):
  - CIFAR-10, symmetric / asymmetric noise, IPC 1, 10, 50: the learned student lr starts at 0.001
    (`lr_teacher`; the experts still train at 0.01); at rate 0.8 its own lr `lr_lr` is 1e-6 for symmetric
    IPC 10 and asymmetric IPC 10 and 50 (not symmetric IPC 1 or 50, nor asymmetric IPC 1);
  - CIFAR-10 IPC 1000: 6000 iterations (symmetric at every rate, asymmetric 0.2 and 0.4); lr_teacher 0.008 at
    symmetric 0.4 and 0.005 at symmetric 0.8; real-image initialisation at rate 0.8 (both kinds);
  - CIFAR-100 IPC 100: real-image initialisation at symmetric 0.4 / 0.6 / 0.8 and asymmetric 0.6 / 0.8;
  - Tiny-ImageNet IPC 50: real-image initialisation at symmetric 0.4 / 0.6 / 0.8;
  - CIFAR-10N `worse_label` at IPC 10: lr_teacher 0.001.
  The clean rows equal the DATM paper rows. The study ran DATM's TESLA script (`DATM_tesla.py`: per-batch
  gradients from the stored student gradients, memory-constant); jaxdistill backpropagates through the whole
  unroll, DATM's own formulation (`DATM.py`); see docs/architecture.md.
DANCE (`DANCE+ours/arguments/reproduce_*.py`): Tiny-ImageNet at depth 4 (ConvNet-4; DANCE's own reproduce
  settings use depth 3), at every noise setting.
RCIG: the study's RCIG scripts change the evaluation only (the `rcig` protocol of `jaxdistill.evaluate`).
"""
from __future__ import annotations

from typing import Optional

from jaxdistill.errors import ConfigError

METHODS = ("datm", "dance", "rcig")
ALIASES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}


def _noise(noise) -> tuple[str, Optional[float], Optional[str]]:
    from jaxdistill.noise import parse_noise_spec

    spec = parse_noise_spec(noise)
    return spec.kind, (None if spec.rate is None else round(float(spec.rate), 6)), spec.variant


def datm_overrides(dataset: str, ipc: int, noise) -> dict:
    """The study's DATM changes to the paper row of (dataset, ipc) under `noise` (a spec such as
    'symmetric:0.4'); {} where the study used the paper row."""
    kind, rate, variant = _noise(noise)
    base = ALIASES.get(dataset, dataset)
    out: dict = {}
    flip = kind in ("symmetric", "asymmetric")
    if base == "cifar10" and flip and ipc in (1, 10, 50):
        out["lr_teacher"] = 0.001
        if rate == 0.8 and (ipc == 10 or (kind == "asymmetric" and ipc == 50)):
            out["lr_lr"] = 1e-6
    if base == "cifar10" and flip and ipc == 1000:
        if kind == "symmetric" or rate in (0.2, 0.4):
            out["iterations"] = 6000
        if kind == "symmetric" and rate in (0.4, 0.8):
            out["lr_teacher"] = {0.4: 0.008, 0.8: 0.005}[rate]
        if rate == 0.8:
            out["init"] = "real"
    if base == "cifar100" and ipc == 100 and ((kind == "symmetric" and rate in (0.4, 0.6, 0.8))
                                              or (kind == "asymmetric" and rate in (0.6, 0.8))):
        out["init"] = "real"
    if base == "tiny_imagenet" and ipc == 50 and kind == "symmetric" and rate in (0.4, 0.6, 0.8):
        out["init"] = "real"
    if dataset == "cifar10_n" and kind == "natural" and variant in ("worse_label", "worse") and ipc == 10:
        out["lr_teacher"] = 0.001
    return out


def dance_overrides(dataset: str, ipc: int, noise) -> dict:
    """The study's DANCE changes: ConvNet-4 on Tiny-ImageNet (any noise)."""
    _noise(noise)  # a bad spec fails here, as for DATM
    return {"depth": 4} if dataset == "tiny_imagenet" else {}


def study_overrides(method: str, dataset: str, ipc: int, noise) -> dict:
    """Field -> value the study changed for `method` at (dataset, ipc, noise); {} for none."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r} for the study's settings; allowed: {list(METHODS)}")
    if method == "datm":
        return datm_overrides(dataset, ipc, noise)
    if method == "dance":
        return dance_overrides(dataset, ipc, noise)
    _noise(noise)
    return {}


def study_config(method: str, dataset: str, ipc: int, noise):
    """The method's paper setting for (dataset, ipc) with the study's changes for `noise` applied."""
    from jaxdistill.methods import get_config

    return get_config(method, dataset, ipc, "paper").replace(**study_overrides(method, dataset, ipc, noise))


def run_config(method: str, dataset: str, ipc: int, preset: str, noise, data=None):
    """The setting a run of `method` uses: at the paper preset the study's own setting for (dataset, ipc,
    noise) (`study_config`), at the cpu / quick presets the method's CPU setting (no study changes).
    A data set without a named setting (a user's npz) gets one derived from `data` (`configs/derive.py`;
    the study's changes do not apply to it)."""
    from jaxdistill.configs import derive

    d = derive.derive(dataset, data, ipc) if not derive.is_named(dataset) else None
    if d is not None:
        _noise(noise)
        return derive.derived_method_config(method, d, preset)
    if preset == "paper":
        return study_config(method, dataset, ipc, noise)
    from jaxdistill.methods import get_config

    return get_config(method, dataset, ipc, preset)
