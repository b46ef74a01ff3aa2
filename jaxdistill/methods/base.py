"""DistilledSet, the method registry's `register` decorator and a run's record.

Every distiller is `distill(config, data, key, *, workdir=None)`, registered here by its own module
(`@register("datm", get_config)`). This module imports none of them: `jaxdistill.methods` (the package) imports
this module and the three distillers and owns the lookup (`get_method`, `list_methods`, `get_config`) and the
run driver `distill`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Optional

import numpy as np

from jaxdistill.data.fingerprint import images_fingerprint, labels_fingerprint
from jaxdistill.errors import ConfigError, DataError, StoreError

TARGET_KINDS = ("hard", "soft_logits", "regression")
DISTILLED_FILE = "distilled.npz"
INITIAL_FILE = "initial.npz"
RUN_FILE = "run.json"
# What a saved set's JSON header must hold (DistilledSet.save writes all of them).
_HEADER_KEYS = ("method", "target_kind", "lr", "has_preprocessor", "preprocessor", "meta")


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
        # A set with NaN/inf pixels or targets trains nets to chance without any error: refuse it here.
        for name, a in (("images", self.images), ("targets", self.targets)):
            if a is not None and not np.isfinite(a).all():
                bad = np.argwhere(~np.isfinite(a))[0].tolist()
                raise DataError(f"{name} hold {int((~np.isfinite(a)).sum())} non-finite values (NaN/inf), first at "
                                f"index {bad}; a distilled set must be finite")
        if self.lr is not None and not np.isfinite(self.lr):
            raise DataError(f"lr={self.lr!r} must be finite")

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
        """Read a set written by `save`. Any unreadable, damaged or foreign file is one DataError naming
        `path` and what is wrong with it."""
        import zipfile
        import zlib

        def bad(what: str) -> DataError:
            return DataError(f"{path!r} is not a usable jaxdistill distilled set: {what}")

        read_errors = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"no distilled set at {path!r} (no such file)") from None
        except IsADirectoryError:
            raise DataError(f"{path!r} is a directory; give the distilled.npz file inside it") from None
        except read_errors as e:
            raise bad(f"cannot be read ({type(e).__name__}: {e})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise bad(f"it holds a single .npy array of shape {np.shape(z)}, not the .npz archive `save` writes")
        try:
            with z:
                arrays = {k: z[k] for k in z.files}
        except read_errors as e:
            raise bad(f"damaged archive ({type(e).__name__}: {e})") from None
        if "header" not in arrays:
            raise bad(f"no header (keys {sorted(arrays)})")
        try:
            header = json.loads(arrays.pop("header").tobytes().decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"the header is not JSON ({e})") from None
        if not isinstance(header, dict) or any(k not in header for k in _HEADER_KEYS):
            have = sorted(header) if isinstance(header, dict) else type(header).__name__
            raise bad(f"the header must be a JSON object with keys {list(_HEADER_KEYS)}; got {have}")
        missing = [k for k in ("images", "labels") if k not in arrays]
        if missing:
            raise bad(f"missing arrays {missing} (keys {sorted(arrays)})")
        pre = None
        try:
            if header["has_preprocessor"]:
                from jaxdistill.preprocess import Preprocessor

                pre = dict(header["preprocessor"])
                pre.update({k[4:]: v for k, v in arrays.items() if k.startswith("pre_")})
                Preprocessor.from_dict(pre)  # a damaged preprocessor fails here, not in the evaluator
            return DistilledSet(images=arrays["images"], labels=arrays["labels"], targets=arrays.get("targets"),
                                method=header["method"], target_kind=header["target_kind"], lr=header["lr"],
                                preprocessor=pre, meta=header["meta"])
        except DataError as e:
            raise bad(str(e)) from None
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise bad(f"{type(e).__name__}: {e}") from None


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


def _key_data(key) -> list:
    import jax
    import jax.numpy as jnp

    raw = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.asarray(raw).ravel().tolist()


def run_record(method: str, config, data, key) -> dict:
    """What a distillation run is: method, config, the exact training data and labels, and the key.

    Two runs with equal records give the same set, so a workdir holding another record is another run's
    state. The device count, the chunk length, DANCE's class_chunk and DATM's exact meta_grad modes (jvp,
    autodiff) are left out: they change speed and memory, not the set (results equal to float tolerance).
    meta_grad "tesla" is another gradient, so it stays in.
    """
    cfg = json.loads(json.dumps(dataclasses.asdict(config), default=_json_default))
    cfg.pop("devices", None)
    cfg.pop("chunk_iters", None)
    cfg.pop("class_chunk", None)
    if cfg.get("meta_grad") in ("jvp", "autodiff"):
        cfg.pop("meta_grad")
    x = np.asarray(data.x_train)
    noise = getattr(data, "noise", None)
    return {"method": method, "config": cfg,
            "data": {"dataset": str(getattr(data, "name", "?")),
                     "noise": None if noise is None else str(getattr(noise, "spec", noise)),
                     "noise_seed": None if noise is None else getattr(noise, "seed", None),
                     "num_train": int(x.shape[0]), "image_shape": list(x.shape[1:]),
                     "images_sha1": images_fingerprint(x),
                     "labels_sha1": labels_fingerprint(data.y_noisy)},
            "key": _key_data(key)}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_workdir(workdir: str, record: dict) -> bool:
    """Claim `workdir` for the run `record`, or refuse (StoreError naming both runs) if it holds another.

    Nothing in the workdir is changed on refusal: its checkpoints, pool, experts and set stay as they are.
    Returns True when the record is written (or already there); False for a workdir that holds state but
    no record (made before records existed): the caller writes it once the run has succeeded, so that a
    refusal by the method's own guards (checkpoint shapes, expert store) does not claim the directory.
    """
    from jaxdistill.checkpoint import atomic_write_json, ensure_out_dir, read_json

    path = os.path.join(workdir, RUN_FILE)
    if os.path.exists(path):
        have = read_json(path)
        if not isinstance(have, dict):
            raise StoreError(f"{path!r} is unreadable, so the state in {workdir!r} cannot be checked against this "
                             f"run; use another workdir / --out or delete that one")
        if have != record:
            old, new = _flat(have), _flat(record)
            diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
            hd, hc = have.get("data", {}), have.get("config", {})
            raise StoreError(
                f"{workdir!r} holds another run: {have.get('method')} on {hd.get('dataset')} with noise "
                f"{hd.get('noise')} (noise seed {hd.get('noise_seed')}, ipc {hc.get('ipc')}); this run is "
                f"{record['method']} on {record['data']['dataset']} with noise {record['data']['noise']} (noise seed "
                f"{record['data']['noise_seed']}, ipc {record['config'].get('ipc')}). Differences (old, new): {diff}. "
                f"Use another --out / workdir, or delete that one; nothing in it was changed")
        return True
    ensure_out_dir(workdir, "workdir")
    if any(os.path.exists(os.path.join(workdir, p)) for p in (DISTILLED_FILE, "ckpt", "pool", "experts")):
        return False
    atomic_write_json(path, record)
    return True
