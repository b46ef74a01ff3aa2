"""DistilledSet and the method registry: every distiller is `distill(config, data, key, *, workdir=None)`."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional

import numpy as np

from jaxdistill.errors import ConfigError, DataError

TARGET_KINDS = ("hard", "soft_logits", "regression")


@dataclasses.dataclass
class DistilledSet:
    """A distilled training set.

    images:  (M, H, W, C) float32, in the method's working space (ZCA space for DATM/RCIG, pixels for DANCE).
    labels:  (M,) int, the class each image was made for.
    targets: (M, C) float32 or None. soft_logits: softmax(targets) are the training targets (DATM);
             regression: MSE targets (RCIG); None with target_kind "hard": one-hot of labels.
    lr:      learned student learning rate (DATM) or None.
    preprocessor: dict from `Preprocessor.to_dict()` mapping raw [0,1] pixels to the working space, or None.
    """

    images: np.ndarray
    labels: np.ndarray
    method: str
    target_kind: str = "hard"
    targets: Optional[np.ndarray] = None
    lr: Optional[float] = None
    preprocessor: Optional[dict] = None
    meta: dict = dataclasses.field(default_factory=dict)
    # The set the distiller started from before its first step (same format), kept for the `selected`
    # control (jaxdistill.controls); not part of save(): `distill(..., workdir=)` writes it to initial.npz.
    initial: Optional["DistilledSet"] = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.target_kind not in TARGET_KINDS:
            raise ConfigError(f"target_kind={self.target_kind!r} is not one of {list(TARGET_KINDS)}")
        self.images = np.asarray(self.images, np.float32)
        self.labels = np.asarray(self.labels, np.int32)
        if self.images.ndim != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"images {self.images.shape} and labels {self.labels.shape} must be (M,H,W,C) and (M,)")
        if self.targets is not None:
            self.targets = np.asarray(self.targets, np.float32)
            if self.targets.shape[0] != self.images.shape[0]:
                raise DataError(f"targets {self.targets.shape} must have {self.images.shape[0]} rows")

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def training_targets(self, num_classes: int) -> np.ndarray:
        """(M, C) targets for the training loop: probabilities (hard/soft) or regression values."""
        if self.target_kind == "hard" or self.targets is None:
            return np.eye(num_classes, dtype=np.float32)[self.labels]
        if self.target_kind == "soft_logits":
            t = self.targets - self.targets.max(1, keepdims=True)
            e = np.exp(t)
            return (e / e.sum(1, keepdims=True)).astype(np.float32)
        return self.targets

    def to_pixels(self) -> np.ndarray:
        """Images mapped back to [0,1] pixel space (for viewing)."""
        from jaxdistill.preprocess import Preprocessor

        x = self.images
        if self.preprocessor is not None:
            x = np.asarray(Preprocessor.from_dict(self.preprocessor).invert(x))
        return np.clip(x, 0.0, 1.0)

    def save(self, path: str) -> None:
        """Atomic .npz (no pickle): arrays, preprocessor arrays under `pre_*`, the rest as JSON."""
        from jaxdistill.checkpoint import atomic_save_npz

        arrays = {"images": self.images, "labels": self.labels}
        if self.targets is not None:
            arrays["targets"] = self.targets
        pre_meta = {}
        for k, v in (self.preprocessor or {}).items():
            if isinstance(v, np.ndarray) or hasattr(v, "shape"):
                arrays[f"pre_{k}"] = np.asarray(v)
            else:
                pre_meta[k] = v
        header = {"method": self.method, "target_kind": self.target_kind, "lr": self.lr,
                  "has_preprocessor": self.preprocessor is not None, "preprocessor": pre_meta, "meta": self.meta}
        arrays["header"] = np.frombuffer(json.dumps(header, default=_json_default).encode(), np.uint8)
        atomic_save_npz(path, **arrays)

    @staticmethod
    def load(path: str) -> "DistilledSet":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read distilled set {path!r}: {e}") from e
        if "header" not in arrays:
            raise DataError(f"{path!r} is not a jaxdistill distilled set (no header)")
        header = json.loads(arrays.pop("header").tobytes().decode())
        pre = None
        if header["has_preprocessor"]:
            pre = dict(header["preprocessor"])
            pre.update({k[4:]: v for k, v in arrays.items() if k.startswith("pre_")})
        return DistilledSet(images=arrays["images"], labels=arrays["labels"], targets=arrays.get("targets"),
                            method=header["method"], target_kind=header["target_kind"], lr=header["lr"],
                            preprocessor=pre, meta=header["meta"])


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


DistillFn = Callable[..., DistilledSet]
_METHODS: dict[str, DistillFn] = {}
_CONFIGS: dict[str, Callable[..., Any]] = {}


def register(name: str, get_config: Callable[..., Any]):
    """Decorator: register `distill(config, data, key, *, workdir=None)` under `name` with its config factory
    `get_config(dataset: str, ipc: int, preset: str) -> config`."""

    def deco(fn: DistillFn) -> DistillFn:
        _METHODS[name] = fn
        _CONFIGS[name] = get_config
        return fn

    return deco


def _ensure_loaded():
    # Importing the method modules registers them; done lazily so `import jaxdistill` stays light.
    import importlib

    for mod in ("datm", "dance", "rcig"):
        try:
            importlib.import_module(f"jaxdistill.methods.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"jaxdistill.methods.{mod}":
                raise


def list_methods() -> list[str]:
    _ensure_loaded()
    return sorted(_METHODS)


def get_method(name: str) -> DistillFn:
    _ensure_loaded()
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {sorted(_METHODS)}")
    return _METHODS[name]


def get_config(method: str, dataset: str, ipc: int, preset: str = "paper"):
    get_method(method)
    return _CONFIGS[method](dataset, ipc, preset)


def distill(method: str, config, data, key, *, workdir: Optional[str] = None, progress: bool = True) -> DistilledSet:
    """Run the registered distiller; with a workdir the set it started from is saved as `initial.npz`."""
    out = get_method(method)(config, data, key, workdir=workdir, progress=progress)
    if workdir and out.initial is not None:
        import os

        out.initial.save(os.path.join(workdir, "initial.npz"))
    return out
