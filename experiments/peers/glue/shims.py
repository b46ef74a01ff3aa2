"""Stand-ins for the originals' packages that a GPU machine may lack (no package index there), written for the
peers glue (nothing of torchvision's or wandb's code is copied):

- `wandb`: init / log / finish / config._items / run.name / Image / Histogram, enough for DATM_tesla.py,
  buffer_FTD.py, DANCE.py and pretrain.py with WANDB_MODE=disabled (the glue wraps init / log / finish as it does
  the real package's). `config._items` holds the `config=` object's fields, as the scripts read their args back
  from it.
- `torchvision`: the pieces the Fashion-MNIST path uses: `datasets.FashionMNIST` (reads <root>/FashionMNIST/raw/
  IDX files; `.data` uint8 (N, 28, 28), `.targets` int64; items are (transform(image), int label) with the image
  an (H, W) uint8 tensor instead of a PIL image), `transforms.Compose / ToTensor / Normalize / ConvertImageDtype /
  RandomCrop / RandomHorizontalFlip` on tensors, `utils.make_grid` (a plain tiling) / `save_image` (no-op),
  `datasets.DatasetFolder / ImageFolder` as bases to subclass (building one raises). Any
  other attribute raises an AttributeError naming the shim, so a path that needs more fails loudly.

`install(names)` puts the named stand-ins into sys.modules; the glue calls it for each package that does not
import (`missing`), or for those named in PEERS_STUB (comma-separated) to test the stand-ins where the real ones
are installed. ToTensor on an (H, W) uint8 image gives what torchvision's gives on the PIL image of it
((1, H, W) float32 / 255), so the originals see the same numbers.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

STUBBABLE = ("wandb", "torchvision")


def missing(names=STUBBABLE) -> list:
    """The packages of `names` that do not import here, plus those PEERS_STUB names."""
    forced = [n for n in os.environ.get("PEERS_STUB", "").split(",") if n]
    out = []
    for n in names:
        if n in forced:
            out.append(n)
            continue
        try:
            importlib.import_module(n)
        except Exception:   # noqa: BLE001 - any import failure (missing, or a binary built for another torch)
            out.append(n)
    return out


def install(names) -> None:
    for n in names:
        if n == "wandb":
            sys.modules["wandb"] = wandb_stub()
        elif n == "torchvision":
            for name, mod in torchvision_stub().items():
                sys.modules[name] = mod
        else:
            raise ValueError(f"no stand-in for {n!r}; allowed {', '.join(STUBBABLE)}")
        print(f"[peers glue] {n}: the glue's stand-in (experiments/peers/glue/shims.py)", flush=True)


class _Strict(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self.__name__}.{name} is not in the peers glue's stand-in (shims.py): this path "
                             f"needs the real package")


def wandb_stub() -> types.ModuleType:
    m = _Strict("wandb")

    def init(*args, config=None, name=None, project=None, **kw):
        items = dict(vars(config)) if hasattr(config, "__dict__") else dict(config or {})
        m.config = types.SimpleNamespace(_items=items, **{k: v for k, v in items.items() if k.isidentifier()})
        m.run = types.SimpleNamespace(name=name or "peers", id="peers", project=project)
        return m.run

    m.init = init
    m.log = lambda *a, **k: None
    m.finish = lambda *a, **k: None
    m.Image = lambda *a, **k: None
    m.Histogram = lambda *a, **k: None
    m.config = types.SimpleNamespace(_items={})
    m.run = None
    return m


def torchvision_stub() -> dict:
    import numpy as np
    import torch

    tv = _Strict("torchvision")
    tv.__path__ = []
    datasets, transforms, utils = _Strict("torchvision.datasets"), _Strict("torchvision.transforms"), \
        _Strict("torchvision.utils")
    models = _Strict("torchvision.models")
    meta = types.ModuleType("torchvision._meta_registrations")

    def idx(path):
        with open(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)

    class FashionMNIST(torch.utils.data.Dataset):
        def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
            raw = os.path.join(root, "FashionMNIST", "raw")
            stem = "train" if train else "t10k"
            self.data = torch.as_tensor(idx(os.path.join(raw, f"{stem}-images-idx3-ubyte")).copy())
            self.targets = torch.as_tensor(idx(os.path.join(raw, f"{stem}-labels-idx1-ubyte")).astype(np.int64))
            self.transform, self.target_transform = transform, target_transform
            self.classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                            "Bag", "Ankle boot"]

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            img, target = self.data[i], int(self.targets[i])
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return img, target

    class Compose:
        def __init__(self, fns):
            self.fns = list(fns)

        def __call__(self, x):
            for f in self.fns:
                x = f(x)
            return x

    def _as_chw_float(x):
        t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if t.ndim == 2:
            t = t.unsqueeze(0)
        elif t.ndim == 3 and t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):
            t = t.permute(2, 0, 1)
        return t.to(torch.float32).div(255.0) if t.dtype == torch.uint8 else t.to(torch.float32)

    class ToTensor:
        def __call__(self, x):
            return _as_chw_float(x).contiguous()

    class ConvertImageDtype:
        def __init__(self, dtype):
            self.dtype = dtype

        def __call__(self, x):
            return x.to(self.dtype).div(255.0) if x.dtype == torch.uint8 else x.to(self.dtype)

    class Normalize:
        def __init__(self, mean, std, inplace=False):
            self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

        def __call__(self, x):   # (C, H, W) or (N, C, H, W): per channel
            m = self.mean.to(x.device, x.dtype).view(-1, 1, 1)
            s = self.std.to(x.device, x.dtype).view(-1, 1, 1)
            return (x - m) / s

    class RandomCrop:
        def __init__(self, size, padding=0, **kw):
            self.size = (size, size) if isinstance(size, int) else tuple(size)
            self.padding = padding

        def __call__(self, x):
            p = self.padding
            if p:
                x = torch.nn.functional.pad(x, (p, p, p, p))
            h, w = x.shape[-2:]
            th, tw = self.size
            i = int(torch.randint(0, h - th + 1, (1,)))
            j = int(torch.randint(0, w - tw + 1, (1,)))
            return x[..., i:i + th, j:j + tw]

    class RandomHorizontalFlip:
        def __init__(self, p=0.5):
            self.p = p

        def __call__(self, x):
            return x.flip(-1) if float(torch.rand(1)) < self.p else x

    def make_grid(t, nrow=8, padding=2, normalize=False, scale_each=False, **kw):
        t = torch.as_tensor(t)
        if t.ndim == 3:
            return t
        n, c, h, w = t.shape
        rows = (n + nrow - 1) // nrow
        out = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding, dtype=t.dtype)
        for k in range(n):
            r, q = divmod(k, nrow)
            out[:, padding + r * (h + padding): padding + r * (h + padding) + h,
                padding + q * (w + padding): padding + q * (w + padding) + w] = t[k]
        return out

    class DatasetFolder(torch.utils.data.Dataset):
        """A base the originals subclass at import time (DANCE's data.py); never built on the Fashion-MNIST path."""

        def __init__(self, *a, **k):
            raise NotImplementedError("torchvision.datasets folders are not in the peers glue's stand-in")

    datasets.FashionMNIST = FashionMNIST
    datasets.DatasetFolder = datasets.ImageFolder = DatasetFolder

    def default_loader(path):
        raise NotImplementedError("torchvision.datasets.folder is not in the peers glue's stand-in")

    datasets.folder = types.SimpleNamespace(default_loader=default_loader)   # a default argument in DANCE's data.py
    for name, obj in (("Compose", Compose), ("ToTensor", ToTensor), ("ConvertImageDtype", ConvertImageDtype),
                      ("Normalize", Normalize), ("RandomCrop", RandomCrop),
                      ("RandomHorizontalFlip", RandomHorizontalFlip)):
        setattr(transforms, name, obj)
    utils.make_grid = make_grid
    utils.save_image = lambda *a, **k: None
    tv.datasets, tv.transforms, tv.utils, tv.models = datasets, transforms, utils, models
    tv.__version__ = "0+peers-glue-stand-in"
    return {"torchvision": tv, "torchvision.datasets": datasets, "torchvision.transforms": transforms,
            "torchvision.utils": utils, "torchvision.models": models, "torchvision._meta_registrations": meta}
