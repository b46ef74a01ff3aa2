"""Settings for a data set that has no named setting (a user's `npz:PATH`), derived from the data itself.

The one rule, used for every method (DATM, DANCE, RCIG), the baseline and the evaluation budgets:

1. template: the named data set nearest to the data by channels, then resolution, then class count
   (`template_for`): among the named sets with the same channel count (all of them when none has it), the
   one whose pixel count H*W is nearest on a log scale, ties broken by the class count (log scale). So
   8x8x1 -> digits, 28x28x1 -> fashion_mnist, 12x12x3 with 3 classes -> cifar10, 64x64x3 -> tiny_imagenet.
2. the method's setting is the template's at the run's preset (`get_config(method, template, ipc, preset)`;
   at the paper preset the template's table row at the nearest tabled IPC, 1, 10 or 50), with
   - ipc: the requested IPC, capped at the number of training images of the smallest class (given labels);
   - dataset: the data's own name; per-channel normalisation constants: none (fitted on the data);
   - depth: at most what the image size allows (each ConvNet block halves the side; `max_depth`);
   - batch sizes not above the set they draw from: DATM `batch_syn` <= ipc x classes (and dividing it),
     `expert_batch` <=
     training images; DANCE `batch_real` <= the smallest class, `pretrain_batch` <= training images; RCIG
     `real_batch` <= training images;
3. the baseline: the template's budget (`presets.baseline_budget`) with its batch <= training images;
4. the evaluation protocols: `presets.eval_budget` already goes by image size (no change).

`derive(dataset, data, ipc)` returns None for a named data set (its own settings apply) and a `Derivation`
otherwise; `Derivation.to_dict()` is what a run records as `derived_from` (results.json).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from jaxdistill.configs.presets import baseline_budget, check_preset
from jaxdistill.errors import ConfigError, DataError

# The named data sets whose settings a template can lend: image shape (H, W, C) and class count.
NAMED: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((8, 8, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "tiny_imagenet": ((64, 64, 3), 200),
}
ALIASES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}
PAPER_IPCS = (1, 10, 50)  # the IPCs every method's paper table holds for every template


def is_named(dataset: str) -> bool:
    return ALIASES.get(dataset, dataset) in NAMED


def template_for(image_shape, num_classes: int) -> str:
    """The named data set nearest to (H, W, C) images of `num_classes` classes (rule 1 above)."""
    h, w, c = (int(s) for s in image_shape)
    if min(h, w, c) < 1 or num_classes < 1:
        raise ConfigError(f"cannot derive settings for image shape {tuple(image_shape)} and {num_classes} classes; "
                          f"allowed positive sizes and >= 1 class")
    same = [n for n, (s, _) in NAMED.items() if s[2] == c]

    def distance(name: str):
        (th, tw, _), tk = NAMED[name]
        return (round(abs(math.log(h * w) - math.log(th * tw)), 9), round(abs(math.log(num_classes) - math.log(tk)), 9),
                name)

    return min(same or list(NAMED), key=distance)


def max_depth(image_shape) -> int:
    """The most ConvNet blocks (conv, pool /2) the image size allows: the side after the first conv (a
    one-channel input gets padding 3, so +4) must stay >= 1 after each halving."""
    h, w, c = (int(s) for s in image_shape)
    side = min(h, w) + (4 if c == 1 else 0)
    return max(1, int(math.floor(math.log2(side))))


@dataclasses.dataclass(frozen=True)
class Derivation:
    """Where a derived setting came from: the data's facts and the template they picked."""

    dataset: str
    image_shape: tuple
    num_classes: int
    n_train: int
    smallest_class: int      # training images (given labels) of the smallest class
    template: str
    ipc_requested: Optional[int]
    ipc: Optional[int]       # the IPC used: ipc_requested capped at smallest_class

    @property
    def max_depth(self) -> int:
        return max_depth(self.image_shape)

    def template_ipc(self, preset: str) -> int:
        """The template's IPC whose setting is used: the paper tables hold 1, 10 and 50 (nearest, the smaller
        on a tie); the cpu / quick settings exist for any IPC."""
        ipc = self.ipc or 1
        return min(PAPER_IPCS, key=lambda t: (abs(t - ipc), t)) if preset == "paper" else ipc

    def to_dict(self, preset: Optional[str] = None) -> dict:
        d = {"image_shape": [int(s) for s in self.image_shape], "num_classes": self.num_classes,
             "n_train": self.n_train, "smallest_class": self.smallest_class, "template": self.template}
        if self.ipc is not None:
            d["ipc"] = self.ipc
            if self.ipc != self.ipc_requested:
                d["ipc_requested"] = self.ipc_requested
                d["ipc_note"] = f"IPC {self.ipc_requested} capped at the smallest class ({self.smallest_class} images)"
            if preset is not None:
                d["template_ipc"] = self.template_ipc(preset)
        d["rule"] = "jaxdistill/configs/derive.py"
        return d


def data_facts(data) -> tuple[tuple, int, int, np.ndarray]:
    """(image_shape, num_classes, n_train, per-class counts of the given labels) of a NoisyData / Dataset."""
    x = data.x_train
    y = np.asarray(getattr(data, "y_noisy", None) if getattr(data, "y_noisy", None) is not None else data.y_train)
    c = int(data.num_classes)
    return tuple(int(s) for s in x.shape[1:]), c, int(x.shape[0]), np.bincount(y, minlength=c)[:c]


def derive(dataset: str, data, ipc: Optional[int] = None) -> Optional[Derivation]:
    """None for a named data set; else the derivation for `data` (NoisyData or Dataset) at `ipc` (None: the
    run distils nothing, e.g. the baseline alone). Every class needs a training image (DataError naming the
    empty ones)."""
    if is_named(dataset):
        return None
    if data is None:
        raise ConfigError(f"dataset={dataset!r} has no named setting (named: {sorted(NAMED) + sorted(ALIASES)}); "
                          f"its settings are derived from the data, so pass the loaded data")
    shape, c, n, counts = data_facts(data)
    if len(shape) != 3:
        raise DataError(f"{dataset}: images of shape {shape}; allowed (H, W, C)")
    empty = [int(k) for k in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{dataset}: class(es) {empty[:10]}{' ...' if len(empty) > 10 else ''} of {c} have no training "
                        f"image (given labels, after the subset / validation split); every class id 0..{c - 1} "
                        f"needs at least one")
    smallest = int(counts.min())
    if ipc is not None and (not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1):
        raise ConfigError(f"ipc={ipc!r} must be a positive integer")
    return Derivation(dataset=dataset, image_shape=shape, num_classes=c, n_train=n, smallest_class=smallest,
                      template=template_for(shape, c), ipc_requested=ipc,
                      ipc=None if ipc is None else min(ipc, smallest))


def named_config(method: str, dataset: str, ipc: int, preset: str):
    """`configs/<method>.get_config(dataset, ipc, preset)` (the distillers' own tables; no methods import)."""
    from jaxdistill.configs import dance, datm, rcig

    tables = {"datm": datm.get_config, "dance": dance.get_config, "rcig": rcig.get_config}
    if method not in tables:
        raise ConfigError(f"unknown method {method!r}; allowed: {sorted(tables)}")
    return tables[method](dataset, ipc, preset)


def derived_method_config(method: str, d: Derivation, preset: str):
    """The method's setting for derived data (rule 2 of the module docstring)."""
    check_preset(preset)
    if d.ipc is None:
        raise ConfigError(f"{method}: a derived setting needs the run's IPC")
    cfg = named_config(method, d.template, d.template_ipc(preset), preset)
    n_syn = d.ipc * d.num_classes
    kw: dict = dict(dataset=d.dataset, ipc=d.ipc, depth=min(cfg.depth, d.max_depth))
    if method == "datm":
        from jaxdistill.configs.datm import largest_batch_syn

        kw.update(batch_syn=largest_batch_syn(cfg.batch_syn, n_syn), expert_batch=min(cfg.expert_batch, d.n_train))
    elif method == "dance":
        kw.update(batch_real=min(cfg.batch_real, d.smallest_class), pretrain_batch=min(cfg.pretrain_batch, d.n_train),
                  mean=None, std=None)
    elif method == "rcig":
        kw.update(real_batch=min(cfg.real_batch, d.n_train), mean=None, std=None)
    return cfg.replace(**kw)


def method_config(method: str, dataset: str, ipc: int, preset: str, data=None):
    """The method's setting for (dataset, ipc, preset): the named one, or derived from `data`."""
    d = derive(dataset, data, ipc)
    return named_config(method, dataset, ipc, preset) if d is None else derived_method_config(method, d, preset)


def baseline_budget_for(dataset: str, preset: str, data=None):
    """`presets.baseline_budget` for a named data set (or when no data is given); for other data the
    template's budget with its batch at most the training set (rule 3)."""
    d = derive(dataset, data) if data is not None else None
    if d is None:
        return baseline_budget(dataset, preset)
    b = baseline_budget(d.template, preset)
    return dataclasses.replace(b, batch_size=min(b.batch_size, d.n_train))
