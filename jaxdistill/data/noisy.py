"""NoisyData: a Dataset after label noise on its training split (what every method consumes)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxdistill.data.dataset import Dataset
from jaxdistill.data.split import stratified_split, stratified_subset
from jaxdistill.errors import ConfigError, DataError

SPLIT_SEED = 0  # subsets and validation splits do not move with the noise seed


@dataclasses.dataclass
class NoisyData:
    """Training images with noisy labels, and the untouched test split.

    x_train (N,H,W,C) float32 [0,1]; y_noisy (N,) int32; y_true (N,) int32 or None (unknown);
    x_test (M,H,W,C), y_test (M,); x_val/y_val (V,H,W,C)/(V,) noisy labels, y_val_true (V,) or None.
    train_index / val_index: positions in the source Dataset's training split.
    """

    name: str
    x_train: np.ndarray
    y_noisy: np.ndarray
    y_true: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    noise: Any | None = None  # jaxdistill.noise.NoiseResult
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    y_val_true: np.ndarray | None = None
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def noise_mask(self) -> np.ndarray | None:
        """(N,) bool, True where the training label is wrong; None when true labels are unknown."""
        return None if self.y_true is None else self.y_noisy != self.y_true

    @property
    def noise_rate(self) -> float | None:
        """Fraction of wrong training labels (None when unknown)."""
        m = self.noise_mask
        return None if m is None else float(m.mean()) if m.size else 0.0


def has_val_split(data) -> bool:
    """Whether `data` (a NoisyData or anything with x_val) carries a non-empty noisy validation split."""
    return getattr(data, "x_val", None) is not None and len(data.x_val) > 0


def keep_train(data: NoisyData, kept, labels=None) -> NoisyData:
    """`data` with only the training samples where `kept` (N,) bool, labelled `labels` (N,) where given (else
    their y_noisy); their true labels and source positions follow. The validation and test splits are unchanged."""
    kept = np.asarray(kept, bool)
    y = np.asarray(data.y_noisy if labels is None else labels)
    pick = lambda a: None if a is None else np.asarray(a)[kept]  # noqa: E731
    return dataclasses.replace(data, x_train=np.asarray(data.x_train)[kept], y_noisy=y[kept],
                               y_true=pick(data.y_true), train_index=pick(getattr(data, "train_index", None)))


def val_size(n: int, val_fraction: float) -> int:
    """How many of n training samples the noisy validation split takes at `val_fraction` (0: none)."""
    return max(1, int(round(float(val_fraction) * n))) if val_fraction > 0 else 0


def make_noisy_data(ds: Dataset, noise_spec, seed: int = 0, val_fraction: float = 0.0,
                    subset: int | None = None) -> NoisyData:
    """Apply `noise_spec` (str or NoiseSpec) to the training labels of `ds`.

    Order of operations: optional class-stratified `subset` of the training split (before noise, fixed
    seed), then `jaxdistill.noise.apply_noise` with `seed`, then an optional validation split of
    `val_fraction`, stratified by noisy label (fixed seed). The test split is never touched.
    For data whose given labels may already be noisy (npz with `y_true`), spec `clean` keeps them as given.
    """
    from jaxdistill import noise as noise_mod  # imported here: data loading alone must not need it

    n = ds.y_train.shape[0]
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or not 1 <= subset <= n:
            raise ConfigError(f"subset={subset!r} is not a sample count; allowed None or an int in 1..{n}")
        idx = stratified_subset(ds.y_train, int(subset), seed=SPLIT_SEED)
    else:
        idx = np.arange(n)
    if not isinstance(val_fraction, (int, float, np.floating)) or not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r}; allowed a float in [0, 1)")

    spec = noise_mod.parse_noise_spec(noise_spec)
    # Without a subset, share the source arrays (no copy of a multi-GB image array).
    take = (lambda a: a) if subset is None else (lambda a: np.asarray(a)[idx])  # noqa: E731
    x = take(ds.x_train)
    finite = np.isfinite(x).reshape(len(x), -1).all(1)
    if not finite.all():
        bad = np.where(~finite)[0]
        raise DataError(f"{ds.name}: {len(bad)} training image(s) hold NaN/inf pixels (first at index {bad[0]}); "
                        f"allowed: finite pixel values")
    y_given = take(ds.y_train)
    natural = {k: take(v) for k, v in (ds.natural_labels or {}).items()}
    if spec.kind == "natural" and spec.variant not in natural:
        # Accept the tfds key too ('natural:aggre_label' == 'natural:aggre').
        from jaxdistill.data.tfds_sources import CIFAR10N_KEYS, CIFAR100N_KEYS
        alias = {**CIFAR10N_KEYS, **CIFAR100N_KEYS}.get(spec.variant)
        if alias in natural:
            natural[spec.variant] = natural[alias]
    y_true = (take(ds.y_train_true) if ds.y_train_true is not None else y_given).astype(np.int32)
    result = noise_mod.apply_noise(y_given, spec, ds.num_classes, dataset=ds.name, seed=seed,
                                   images=x, natural=natural or None)
    if ds.y_train_true is not None and getattr(spec, "kind", None) == "clean":
        y_noisy = y_given.astype(np.int32)  # the file's own labels, exactly as given
    else:
        y_noisy = np.asarray(result.noisy).astype(np.int32)
    if y_noisy.shape != y_given.shape:
        raise ConfigError(f"apply_noise returned labels of shape {y_noisy.shape}; expected {y_given.shape}")

    x_val = y_val = y_val_true = val_index = None
    train_index = idx
    if val_fraction > 0:
        n_val = val_size(idx.shape[0], val_fraction)
        if n_val >= idx.shape[0]:
            raise ConfigError(f"val_fraction={val_fraction} leaves no training samples out of {idx.shape[0]}; "
                              f"allowed a smaller fraction")
        tr, va = stratified_split(y_noisy, n_val, seed=SPLIT_SEED)
        x_val, y_val, y_val_true, val_index = x[va], y_noisy[va], y_true[va], idx[va]
        x, y_noisy, y_true, train_index = x[tr], y_noisy[tr], y_true[tr], idx[tr]
    return NoisyData(
        name=ds.name, x_train=x, y_noisy=y_noisy, y_true=y_true, x_test=ds.x_test, y_test=ds.y_test,
        num_classes=ds.num_classes, class_names=list(ds.class_names), noise=result,
        x_val=x_val, y_val=y_val, y_val_true=y_val_true, train_index=train_index, val_index=val_index,
        meta={**ds.meta, "noise_spec": str(spec), "seed": seed, "val_fraction": float(val_fraction),
              "subset": subset},
    )
