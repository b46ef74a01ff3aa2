"""Read an original's saved synthetic set into a jaxdistill DistilledSet `.npz` (`jaxdistill evaluate --distilled`).

What each original writes (DD_LNL HEAD d59a5a5; README.md beside this file):
  DANCE  `results/<data>_ipc<I>_<noise>_<rate>/data_<it>.pt` (and data_best.pt, data_0.pt): a list
         [images (C*ipc, ch, H, W) float32 in [0,1] pixels (clamped at the start of each iteration), targets
         (C*ipc,) int64]; with --factor f > 1 each image holds f x f sub-images, decoded before training.
         Its evaluation normalises with data.py's MEANS/STDS (Fashion-MNIST 0.2861 / 0.3530).
  DATM   `logged_files/<dataset>/<ipc>/<model>/<wandb run name>/Normal/images_<it>.pt` (C*ipc, ch, H, W) in
         ZCA space when zca (kornia ZCAWhitening eps 0.1 fitted on the training images), `labels_<it>.pt`
         (C*ipc, C) learned logits (soft cross-entropy targets), `lr_<it>.pt` the learned student lr;
         images_zca_<it>.pt is the same set mapped back to pixels.
  RCIG   `<output_dir>/distilled_dataset_vis.pkl`: {'coreset_images': pixels (NHWC; the preprocessing undone:
         mean/std for Fashion-MNIST, ZCA for CIFAR), 'coreset_labels': learned regression targets (C*ipc, C),
         'dataset': an ml_collections ConfigDict} (a pickle: read only with allow_pickle=True, own files only);
         the glue copies images and labels into final_set.npz (numpy only).
The glue (`glue/launch.py`) also writes the final set itself as `final_set.npz` (numpy only, NCHW): images,
labels, optionally lr; that file needs no torch on the jaxdistill side.

`import_foreign(...)`: images in pixels or in the preprocessor's working space, NCHW or NHWC, int labels or
(M, C) targets -> DistilledSet with the preprocessing recorded (`preprocessor` dict, `meta['import']`).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np


def read_array(path: str, key: Optional[str] = None, *, allow_pickle: bool = False):
    """A tensor/array from .pt (torch.load, needs torch), .npy, .npz (key or the only array) or, with
    allow_pickle, .pkl. Returns numpy arrays (a list/tuple/dict of them for a .pt/.pkl holding several)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pt", ".pth", ".tar"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{path!r} is a torch file and torch is not importable here ({e}); "
                              f"use the glue's final_set.npz instead") from None
        obj = torch.load(path, map_location="cpu", weights_only=True)

        def conv(o):
            if isinstance(o, torch.Tensor):
                return o.detach().cpu().numpy()
            if isinstance(o, (list, tuple)):
                return type(o)(conv(v) for v in o)
            if isinstance(o, dict):
                return {k: conv(v) for k, v in o.items()}
            return o
        return conv(obj)
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if key is None:
                if len(z.files) != 1:
                    return {k: z[k] for k in z.files}
                key = z.files[0]
            return z[key]
    if ext == ".pkl" and allow_pickle:
        import pickle

        with open(path, "rb") as f:
            obj = pickle.load(f)
        return {k: np.asarray(v) if hasattr(v, "shape") else v for k, v in obj.items()} if isinstance(obj, dict) else obj
    raise ValueError(f"cannot read {path!r}: allowed .pt/.pth (torch), .npy, .npz, and .pkl with allow_pickle")


def to_nhwc(images, layout: str = "auto") -> np.ndarray:
    """(M, C, H, W) -> (M, H, W, C); `auto` takes axis 1 as channels when it is 1 or 3 and the last is not."""
    x = np.asarray(images, np.float32)
    if x.ndim == 3:  # (M, H, W): one channel
        return x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images of shape {x.shape}; expected (M, C, H, W) or (M, H, W, C)")
    if layout == "auto":
        layout = "NCHW" if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3) else "NHWC"
    if layout == "NCHW":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if layout != "NHWC":
        raise ValueError(f"layout={layout!r}; allowed auto, NCHW, NHWC")
    return x


def meanstd_preprocessor(mean, std, shape) -> dict:
    from jaxdistill.preprocess import Preprocessor

    c = shape[-1]
    m = np.broadcast_to(np.asarray(mean, np.float32), (c,)).copy()
    s = np.broadcast_to(np.asarray(std, np.float32), (c,)).copy()
    return Preprocessor(kind="meanstd", shape=tuple(int(v) for v in shape), mean=m, std=s).to_dict()


def fitted_preprocessor(kind: str, x_train, **kw) -> dict:
    """jaxdistill's fit of `kind` on the training images the original also fitted on (ZCA kinds)."""
    from jaxdistill.preprocess import fit_preprocessor

    return fit_preprocessor(kind, np.asarray(x_train, np.float32), **kw).to_dict()


def import_foreign(images, labels, *, method: str, space: str = "pixels", preprocessor: Optional[dict] = None,
                   layout: str = "auto", lr: Optional[float] = None, target_kind: Optional[str] = None,
                   factor: int = 1, num_classes: Optional[int] = None, ipc: Optional[int] = None,
                   meta: Optional[dict] = None):
    """A foreign synthetic set as a DistilledSet.

    space: 'pixels' -> images are [0,1] pixels and `preprocessor` maps them to the working space (applied here);
           'working' -> images are already in `preprocessor`'s space (DATM's ZCA-space images).
    labels: (M,) ints (hard) or (M, C) targets (`target_kind` 'soft_logits' for DATM, 'regression' for RCIG).
    factor > 1: DANCE's multi-formation: decode each image into factor^2 images (jaxdistill's decode).
    """
    from jaxdistill.methods.base import DistilledSet
    from jaxdistill.preprocess import Preprocessor

    if space not in ("pixels", "working"):
        raise ValueError(f"space={space!r}; allowed pixels, working")
    x = to_nhwc(images, layout)
    lab = np.asarray(labels)
    targets = None
    if lab.ndim == 2:
        targets = lab.astype(np.float32)
        hard = targets.argmax(1).astype(np.int32)
        target_kind = target_kind or "soft_logits"
    elif lab.ndim == 1:
        hard = lab.astype(np.int32)
        target_kind = target_kind or "hard"
    else:
        raise ValueError(f"labels of shape {lab.shape}; expected (M,) or (M, C)")
    if x.shape[0] != hard.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {hard.shape[0]} labels")
    info = {"space": space, "layout_in": layout, "shape_in": list(np.shape(images)), "factor": int(factor)}
    if factor > 1:
        if space != "pixels" or targets is not None or num_classes is None or ipc is None:
            raise ValueError("factor > 1 (DANCE multi-formation) needs pixel images, hard labels, num_classes, ipc")
        from jaxdistill.methods.dance import decoded_set

        pre = Preprocessor.from_dict(preprocessor) if preprocessor is not None else None
        mean = pre.mean if pre is not None and pre.kind == "meanstd" else np.zeros(x.shape[-1], np.float32)
        std = pre.std if pre is not None and pre.kind == "meanstd" else np.ones(x.shape[-1], np.float32)
        order = np.argsort(hard, kind="stable")
        x_work, hard = decoded_set(x[order], num_classes, ipc, factor, mean, std)
        x_work = np.asarray(x_work, np.float32)
    elif space == "pixels" and preprocessor is not None:
        x_work = np.asarray(Preprocessor.from_dict(preprocessor).apply(x), np.float32)
    else:
        x_work = x
    if preprocessor is not None:
        info["preprocessor_kind"] = str(np.asarray(preprocessor["kind"]))
    return DistilledSet(images=x_work, labels=hard, method=method, target_kind=target_kind, targets=targets,
                        lr=None if lr is None else float(np.asarray(lr).reshape(-1)[0]),
                        preprocessor=preprocessor, meta={**(meta or {}), "import": info})


def import_dance(path: str, *, mean=(0.2861,), std=(0.3530,), factor: int = 1, num_classes: int = 10,
                 ipc: Optional[int] = None, meta: Optional[dict] = None):
    """DANCE's data_<it>.pt ([images NCHW pixels, targets]) or the glue's final_set.npz."""
    obj = read_array(path)
    if isinstance(obj, dict):
        images, labels = obj["images"], obj["labels"]
    else:
        images, labels = obj[0], obj[1]
    x = to_nhwc(images)
    pre = meanstd_preprocessor(mean, std, x.shape[1:])
    ipc = ipc or int(x.shape[0] // num_classes)
    return import_foreign(x, labels, method="dance_original", space="pixels", preprocessor=pre, layout="NHWC",
                          factor=factor, num_classes=num_classes, ipc=ipc,
                          meta={**(meta or {}), "source": os.path.abspath(path),
                                "preprocessing": f"meanstd mean={list(mean)} std={list(std)} (DANCE data.py)"})


def import_datm(images_path: str, labels_path: Optional[str] = None, lr_path: Optional[str] = None, *,
                x_train=None, zca: bool = True, meta: Optional[dict] = None):
    """DATM's images_<it>.pt / labels_<it>.pt / lr_<it>.pt (or the glue's final_set.npz with all three).
    x_train: the raw [0,1] training images the original fitted its ZCA on (NHWC): jaxdistill's `zca_datm`
    fitted on them is the recorded preprocessing."""
    obj = read_array(images_path)
    if isinstance(obj, dict):
        images, labels, lr = obj["images"], obj["labels"], obj.get("lr")
    else:
        images = obj
        labels = read_array(labels_path)
        lr = read_array(lr_path) if lr_path else None
    pre = None
    if zca:
        if x_train is None:
            raise ValueError("zca=True needs x_train (the images the original fitted its ZCA on)")
        pre = fitted_preprocessor("zca_datm", x_train)
    return import_foreign(images, labels, method="datm_original", space="working", preprocessor=pre,
                          lr=None if lr is None else float(np.asarray(lr).reshape(-1)[0]), target_kind="soft_logits",
                          meta={**(meta or {}), "source": os.path.abspath(images_path),
                                "preprocessing": "zca_datm (kornia ZCAWhitening eps 0.1) fitted on the subset"
                                if zca else "none"})


def import_rcig(path: str, *, preprocess: str = "meanstd", mean=(0.2861,), std=(0.3530,), x_train=None,
                use_flip: bool = False, meta: Optional[dict] = None):
    """RCIG's set: the glue's final_set.npz (`images` = the script's pickle's pixels, `labels` = learned
    regression targets) or the script's own distilled_dataset_vis.pkl (read with pickle: only a file the
    harness's own run wrote; it holds an ml_collections ConfigDict, so that package must be importable).

    preprocess: what RCIG's dataloader.py applied: 'meanstd' ('standard': mnist / fashion_mnist, the data_stats
    constants) or 'zca_rcig' (normalize_zca, every other data set: jaxdistill's fit on `x_train`).
    use_flip: the config's use_flip (the rcig protocol then appends the flipped copies, as RCIG's eval.py)."""
    if path.endswith(".pkl"):
        try:
            obj = read_array(path, allow_pickle=True)
        except ModuleNotFoundError as e:
            raise ImportError(f"{path!r} holds RCIG's ml_collections ConfigDict and {e.name!r} is not importable "
                              f"here; read the glue's final_set.npz (same images and labels) instead") from None
        images, labels = obj["coreset_images"], obj["coreset_labels"]
    else:
        obj = read_array(path)
        images, labels = obj["images"], obj["labels"]
    x = to_nhwc(images, "NHWC")
    if np.asarray(labels).ndim != 2:
        raise ValueError(f"RCIG's labels are (M, C) regression targets; got shape {np.shape(labels)}")
    if preprocess == "meanstd":
        pre = meanstd_preprocessor(mean, std, x.shape[1:])
        how = f"meanstd mean={list(mean)} std={list(std)} (RCIG dataloader.py 'standard')"
    elif preprocess == "zca_rcig":
        if x_train is None:
            raise ValueError("preprocess='zca_rcig' needs x_train (the images the original fitted its ZCA on)")
        pre = fitted_preprocessor("zca_rcig", x_train)
        how = "zca_rcig (meanstd then ZCA reg 0.1 trace/D) fitted on the subset"
    else:
        raise ValueError(f"preprocess={preprocess!r}; allowed meanstd, zca_rcig")
    return import_foreign(x, labels, method="rcig_original", space="pixels", preprocessor=pre, layout="NHWC",
                          target_kind="regression",
                          meta={**(meta or {}), "source": os.path.abspath(path), "preprocessing": how,
                                "use_flip": bool(use_flip)})


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="import an original's synthetic set into a jaxdistill DistilledSet .npz")
    p.add_argument("--method", required=True, choices=["dance", "datm", "rcig"])
    p.add_argument("--images", required=True,
                   help="DANCE data_<it>.pt, DATM images_<it>.pt, RCIG distilled_dataset_vis.pkl, or final_set.npz")
    p.add_argument("--labels", default=None)
    p.add_argument("--lr", default=None)
    p.add_argument("--labels-file", default=None, help="peers labels file (for the subset DATM's ZCA is fitted on)")
    p.add_argument("--factor", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    _root_on_path()  # run as a script from anywhere: jaxdistill and experiments.* from this checkout
    if a.method == "dance":
        ds = import_dance(a.images, factor=a.factor)
    elif a.method == "rcig":  # Fashion-MNIST: mean/std (the only data set the harness wires)
        ds = import_rcig(a.images)
    else:
        x_train = subset_images(a.labels_file) if a.labels_file else None
        ds = import_datm(a.images, a.labels, a.lr, x_train=x_train, zca=x_train is not None)
    ds.save(a.out)
    print(f"wrote {a.out}: {ds.num_images} images {ds.images.shape[1:]}, {ds.target_kind}, lr={ds.lr}")
    return 0


def subset_images(labels_file: str, data_dir: Optional[str] = None) -> np.ndarray:
    """The raw training images of a peers labels file's subset (NHWC [0,1])."""
    _root_on_path()
    from experiments.peers.labels import read_labels
    from jaxdistill.data import load_dataset

    lab = read_labels(labels_file)
    ds = load_dataset(lab["header"]["dataset"], data_dir=data_dir)
    return np.asarray(ds.x_train)[lab["indices"]]


def _root_on_path() -> None:
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)


if __name__ == "__main__":
    raise SystemExit(main())
