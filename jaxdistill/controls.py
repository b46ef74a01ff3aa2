"""Controls for every distilled-set accuracy: sets of real training images of the same size.

A distilled set of k images per class says something about distillation only if it beats k real images
per class trained under the same protocol, nets and keys:
  random_noisy   k random training images per *noisy* class, with those noisy labels (what a user could
                 take from the noisy set without distilling);
  random_clean   k random training images per *true* class, with true labels (where true labels are known);
  selected       the set a distiller starts from before its first step (e.g. DATM's images that its experts
                 classify as their noisy label), in the distiller's own format: `DistilledSet.initial`.
Random controls are raw [0,1] pixels with hard labels (no preprocessor), reproducible from (seed, name).
"""
from __future__ import annotations

import zlib

import numpy as np

from jaxdistill.errors import ConfigError
from jaxdistill.methods.base import DistilledSet

RANDOM_CONTROLS = ("random_noisy", "random_clean")
CONTROLS = RANDOM_CONTROLS + ("selected",)


def random_control(data, ipc: int, name: str, seed: int = 0, draw: int = 0) -> DistilledSet:
    """`ipc` images per class drawn without replacement from `data.x_train`, class-balanced by the noisy
    (`random_noisy`) or true (`random_clean`) labels, labelled with those labels.

    Returns a DistilledSet (C*ipc, H, W, Ch) of raw pixels, grouped by class, `meta['indices']` the rows
    of `data.x_train` it took. The draw depends only on (seed, name, draw, labels); draw 0 is the control's
    first draw, further draws (draw >= 1) measure how much the control itself varies between draws."""
    from jaxdistill.data import check_ipc, class_buckets

    if name not in RANDOM_CONTROLS:
        raise ConfigError(f"unknown random control {name!r}; allowed: {list(RANDOM_CONTROLS)}")
    if name == "random_clean":
        y = getattr(data, "y_true", None)
        if y is None:
            raise ConfigError("random_clean needs the true training labels (data.y_true), which this data set "
                              "does not have; use random_noisy")
    else:
        y = data.y_noisy
    y = np.asarray(y).astype(np.int64)
    c = int(data.num_classes)
    check_ipc(y, c, ipc)
    if not isinstance(draw, (int, np.integer)) or draw < 0:
        raise ConfigError(f"draw={draw!r} must be an integer >= 0")
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())] + ([int(draw)] if draw else []))
    idx = np.concatenate([np.sort(rng.choice(b, ipc, replace=False)) for b in class_buckets(y, c)])
    return DistilledSet(images=np.asarray(data.x_train[idx], np.float32), labels=y[idx], method=name,
                        target_kind="hard", meta={"control": name, "indices": idx.tolist(), "seed": int(seed),
                                                "draw": int(draw)})


def random_controls(data, ipc: int, seed: int = 0) -> dict[str, DistilledSet]:
    """Both random controls, or only `random_noisy` where the true labels are unknown."""
    names = RANDOM_CONTROLS if getattr(data, "y_true", None) is not None else ("random_noisy",)
    return {n: random_control(data, ipc, n, seed) for n in names}


def margins(results: dict, method_key: str, protocol: str) -> dict[str, float]:
    """Points (x100) by which `results[method_key]` beats each control evaluated under `protocol`.

    results: the results.json `results` mapping; control rows are keyed `control/<name>/<protocol>` and
    `control/selected_<method>/<protocol>`."""
    method = method_key.split("/")[0]
    acc = results[method_key]["acc_mean"]
    out = {}
    for name in (*RANDOM_CONTROLS, f"selected_{method}"):
        row = results.get(f"control/{name}/{protocol}")
        if row is not None:
            out[name.split("_")[0] if name.startswith("selected") else name] = 100.0 * (acc - row["acc_mean"])
    return out
