"""Run one of the study's original scripts on this CPU with runtime patches only (nothing of theirs is copied).

Runs inside the original's venv (torch for DANCE/DATM, the JAX 0.4.33 stack for RCIG; numpy), never imports
jaxdistill:

  <venv>/bin/python experiments/peers/glue/launch.py --peer-dir DIR --script "DANCE+ours/DANCE.py" \
      --labels LABELS.npz --idx-dir /usr/share/datasets/fashion-mnist --out OUT --seed 0 --threads 2 \
      [--set KEY=JSON ...] [--patch KEY=JSON ...] -- <the script's own arguments>

Patches, installed before the script is run with `runpy` from its own folder (its relative imports and paths):
- threads: torch.set_num_threads / set_num_interop_threads (the harness also sets OMP/MKL variables);
- `--device cuda` (a GPU machine): none of the CPU redirections below; `--device cpu` (default):
- CUDA -> CPU: a `TorchFunctionMode` that rewrites `device='cuda...'` arguments (factories, `.to`) to the CPU,
  and `Tensor.cuda` / `nn.Module.cuda` return their receiver; `torch.cuda.is_available()` stays False;
  `Tensor.cpu` returns a copy, as the device copy it is on a GPU (torch returns a CPU tensor itself, which made
  DATM's expert snapshots `p.detach().cpu()` aliases of the live parameters);
- `Tensor.view` falls back to `reshape` where the tensor is not contiguous (DSA's crop of one-channel input
  feeds the ConvNet's `.view`);
- wandb / torchvision that do not import (a GPU machine without a package index), or named in PEERS_STUB: the
  glue's stand-ins (`shims.py`: the Fashion-MNIST path's pieces only);
- `torchvision._meta_registrations` stubbed before torchvision is imported (PyPI's torchvision beside the CPU
  torch wheel), `efficientnet_pytorch` stubbed when missing (DANCE's common.py imports it);
- data: DANCE's `common.load_resized_data` is wrapped: its Fashion-MNIST training set is cut to the labels
  file's subset and given its noisy labels; DATM's `get_dataset` (utils_baseline for DATM_tesla.py,
  utils_gsam for buffer_FTD.py) gains a 'FashionMNIST' branch built here (subset, noisy labels, kornia ZCA eps
  0.1 when --zca, else mean/std);
- `--set`: attributes of the parsed `args` (DANCE: arguments.arg_condense / arg_pretrain, imported first so
  DANCE's --reproduce and data-set block run before the overrides);
- `--patch net_width=16 net_depth=3`: DATM's `get_default_convnet_setting`;
- wandb (WANDB_MODE=disabled): `wandb.log({'Progress': it})` marks each iteration (timing.json), and its first
  call (it = 0) writes the starting set to OUT/initial_set.npz (same format as final_set.npz); at
  `wandb.finish()` the final set is taken from the finishing function's locals and written to
  OUT/final_set.npz (DANCE: synset.data / targets; DATM: image_syn / label_syn / syn_lr), and DANCE's own
  evaluation (`synset.test`) is run on it (own_eval.json).

RCIG (`RCIG+ours/distill_dataset.py`, a `fire` CLI; `install_rcig_patches`, `patch_rcig`):
- threads: XLA_FLAGS `--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N`, TF intra/inter-op
  threads N (environment before jax/tensorflow are imported, then `tf.config.threading`), JAX_PLATFORMS=cpu;
- `jax.devices('gpu')` (and 'cuda'/'tpu'): answered with the default backend's devices (algorithms.run_rcig
  moves each pool model to `jax.devices('gpu')[0]`);
- `torch` stubbed when missing (algorithms.py and dataSolu/utils_noise.py import it; the Fashion-MNIST path
  never calls it: distill_dataset.py applies `noisify` only for cifar10/cifar100/tiny_imagenet);
- tfds offline: `DownloadManager.download_and_extract/download/extract` map the four Fashion-MNIST URLs to
  the IDX files of --idx-dir, decompressed under OUT/tfds_idx; tfds's data_dir is OUT/tfds;
- data: `dataloader.get_dataset` is wrapped: the tfds training split (in tfds's shuffled order,
  mean/std-normalised by the original) is joined to the labels file by image content (`labels.join_keys`
  on the pixels recovered as x*std+mean) and cut to the subset with its noisy labels;
- `--set real_batch=N`: the training loader's batch (`configure_dataloader`, hard-coded 1024 in the script);
  `--set inner_lr=X --set hvp_lr=Y` (only passed with --skip_tune True): the lrs run_rcig trains with, in place
  of the script's 1e-5 / 5e-5;
- timing: `algorithms.run_rcig` (the lr-tune calls excluded) and `algorithms.do_meta_train_step` are
  wrapped; each meta step's start is an iteration mark (timing.json);
- the run is made from OUT (the script writes `./<output_dir>`, reads `./<config_path>`); the final set is
  taken from the script's own `distilled_dataset_vis.pkl` (pixels, ZCA/meanstd undone; learned labels) with
  the EMA working-space images from run_rcig's return, written to OUT/final_set.npz. distill_dataset.py has
  no evaluation of its own (eval.py is a separate script): own_eval.json holds the max outer (train-batch)
  accuracy the script prints, marked as such.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import runpy
import shutil
import sys
import time
import types

import numpy as np

STATE = {"marks": [], "out": None, "labels": None, "method": None, "final": False}


def parse(argv):
    p = argparse.ArgumentParser(description="run an original script with the CPU glue")
    p.add_argument("--peer-dir", required=True)
    p.add_argument("--script", required=True, help="path under --peer-dir, e.g. 'DANCE+ours/DANCE.py'")
    p.add_argument("--labels", required=True, help="peers labels file (.npz)")
    p.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST IDX (.gz) files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="KEY=JSON set on the parsed args")
    p.add_argument("--patch", action="append", default=[], help="net_width=N / net_depth=N (DATM)")
    p.add_argument("--own-eval", type=int, default=1, help="1: run the original's own evaluation at the end")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu: redirect the scripts' CUDA calls to the CPU (default); cuda: run them as written")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.rest and a.rest[0] == "--":
        a.rest = a.rest[1:]
    return a


def kv(items):
    out = {}
    for s in items:
        k, _, v = s.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


# ------------------------------------------------------------------------------------------------ torch
def install_torch_patches(threads: int, device: str = "cpu"):
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torch
    from torch.overrides import TorchFunctionMode

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(max(1, threads))
    except RuntimeError:
        pass
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("peers glue: --device cuda, but torch sees no CUDA device")
        install_view_fallback(torch)
        return

    def is_cuda(d):
        return (isinstance(d, torch.device) and d.type == "cuda") or (isinstance(d, str) and d.startswith("cuda"))

    class CpuMode(TorchFunctionMode):
        def __torch_function__(self, func, types_, args=(), kwargs=None):
            kwargs = kwargs or {}
            if "device" in kwargs and is_cuda(kwargs["device"]):
                kwargs = {**kwargs, "device": "cpu"}
            if any(is_cuda(a) for a in args):
                args = tuple("cpu" if is_cuda(a) else a for a in args)
            return func(*args, **kwargs)

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    orig_cpu = torch.Tensor.cpu

    def cpu(self, *a, **k):
        # On the GPU the scripts were written for, `.cpu()` is a device copy; on a CPU tensor torch returns the
        # tensor itself. DATM's buffer_FTD.py snapshots each epoch as `[p.detach().cpu() for p in params]`:
        # without a copy every snapshot shares storage with the live parameters, the optimiser's in-place
        # updates rewrite them all, each stored trajectory is its final epoch repeated, ||theta_t -
        # theta_{t+M}|| = 0 and DATM_tesla's matching loss is inf, so no update is ever applied (issue 29).
        out = orig_cpu(self, *a, **k)
        return out.clone() if out is self else out

    torch.Tensor.cpu = cpu
    install_view_fallback(torch)
    mode = CpuMode()
    mode.__enter__()
    return mode


def install_view_fallback(torch):
    """`Tensor.view` falls back to `reshape` on a non-contiguous tensor (DSA's crop of one-channel input), and
    `efficientnet_pytorch` is stubbed where missing (DANCE's common.py imports it); both devices."""
    orig_view = torch.Tensor.view

    def view(self, *shape, **kw):
        try:
            return orig_view(self, *shape, **kw)
        except RuntimeError:
            if kw or (len(shape) == 1 and isinstance(shape[0], torch.dtype)):
                raise
            return self.reshape(*shape)

    torch.Tensor.view = view
    try:
        import efficientnet_pytorch  # noqa: F401
    except ImportError:
        stub = types.ModuleType("efficientnet_pytorch")

        class EfficientNet:  # noqa: D401
            @staticmethod
            def from_name(*a, **k):
                raise RuntimeError("efficientnet_pytorch is stubbed by the peers glue")

        stub.EfficientNet = EfficientNet
        sys.modules["efficientnet_pytorch"] = stub


# ------------------------------------------------------------------------------------------------ data
def read_labels(path):
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["header"] = json.loads(out["header"].tobytes().decode())
    return out


def idx_images(idx_dir, train=True):
    """Fashion-MNIST images (N, 28, 28) uint8 and labels from the IDX files (gz or not)."""
    pre = "train" if train else "t10k"
    def rd(name, off):
        for p in (os.path.join(idx_dir, name), os.path.join(idx_dir, name + ".gz")):
            if os.path.exists(p):
                with (gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")) as f:
                    return np.frombuffer(f.read(), np.uint8, offset=off)
        raise FileNotFoundError(f"{name}(.gz) not in {idx_dir}")
    x = rd(f"{pre}-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    y = rd(f"{pre}-labels-idx1-ubyte", 8).astype(np.int64)
    return x, y


FASHION_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def torchvision_root(idx_dir, out):
    """A folder torchvision's FashionMNIST reads offline: <root>/FashionMNIST/raw/<uncompressed IDX files>."""
    uncompressed_idx(idx_dir, os.path.join(out, "tv_data", "FashionMNIST", "raw"))
    return os.path.join(out, "tv_data")


def uncompressed_idx(idx_dir, raw):
    """Fashion-MNIST's four IDX files, uncompressed, in folder `raw` (copied, or gunzipped from `<stem>.gz`)."""
    os.makedirs(raw, exist_ok=True)
    for stem in FASHION_IDX:
        dst = os.path.join(raw, stem)
        if os.path.exists(dst):
            continue
        src = os.path.join(idx_dir, stem)
        if os.path.exists(src):
            shutil.copyfile(src, dst)
        else:
            with gzip.open(src + ".gz", "rb") as f, open(dst + ".tmp", "wb") as g:
                shutil.copyfileobj(f, g)
            os.replace(dst + ".tmp", dst)
    return raw


def subset_noisy(ds, lab):
    """Cut a torchvision MNIST-style dataset to the labels file's subset, with its noisy labels."""
    import torch

    idx = torch.as_tensor(lab["indices"], dtype=torch.long)
    ds.data = ds.data[idx]
    ds.targets = torch.as_tensor(lab["noisy"], dtype=torch.long)
    return ds


def patch_dance_data(lab, tv_root):
    import common  # DANCE+ours/common.py

    orig = common.load_resized_data

    def load_resized_data(args):
        if args.dataset != "fashion":
            raise RuntimeError(f"peers glue: only dataset 'fashion' is wired (got {args.dataset!r})")
        args.data_dir = tv_root
        train, val_loader = orig(args)
        subset_noisy(train, lab)
        train.nclass = 10
        print(f"[peers glue] DANCE training set: {len(train)} images, noisy labels from the labels file "
              f"(realized rate {lab['header'].get('realized_rate')})", flush=True)
        return train, val_loader

    common.load_resized_data = load_resized_data


def patch_datm_data(lab, idx_dir, module_names):
    import importlib

    import torch

    def get_dataset(dataset, data_path, batch_size=1, subset="imagenette", args=None, **kw):
        if dataset != "FashionMNIST":
            raise RuntimeError(f"peers glue: only dataset 'FashionMNIST' is wired (got {dataset!r})")
        mod = importlib.import_module(module_names[0])
        x_tr, _ = idx_images(idx_dir, True)
        x_te, y_te = idx_images(idx_dir, False)
        x_tr = torch.as_tensor(x_tr[lab["indices"]], dtype=torch.float32).unsqueeze(1) / 255.0
        x_te = torch.as_tensor(x_te, dtype=torch.float32).unsqueeze(1) / 255.0
        y_tr = torch.as_tensor(lab["noisy"], dtype=torch.long)
        y_te = torch.as_tensor(y_te, dtype=torch.long)
        mean, std = [0.2861], [0.3530]
        if getattr(args, "zca", False):
            import kornia as K

            zca = K.enhance.ZCAWhitening(eps=0.1, compute_inv=True)
            zca.fit(x_tr)
            x_tr, x_te = zca(x_tr), zca(x_te)
            args.zca_trans = zca
        else:
            x_tr = (x_tr - mean[0]) / std[0]
            x_te = (x_te - mean[0]) / std[0]
        dst_train = mod.TensorDataset(x_tr, y_tr)
        dst_test = mod.TensorDataset(x_te, y_te)
        testloader = torch.utils.data.DataLoader(dst_test, batch_size=256, shuffle=False, num_workers=0)
        class_map = {i: i for i in range(10)}
        names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
        print(f"[peers glue] DATM training set: {len(y_tr)} images, noisy labels from the labels file, "
              f"zca={getattr(args, 'zca', False)}", flush=True)
        return 1, (28, 28), 10, names, mean, std, dst_train, dst_test, testloader, None, class_map, class_map

    for name in module_names:
        mod = importlib.import_module(name)
        mod.get_dataset = get_dataset


def patch_datm_net(patches, module_names):
    import importlib

    if not patches:
        return
    for name in module_names:
        mod = importlib.import_module(name)
        orig = mod.get_default_convnet_setting

        def setting(orig=orig):
            w, d, act, norm, pool = orig()
            return patches.get("net_width", w), patches.get("net_depth", d), act, norm, pool

        mod.get_default_convnet_setting = setting


# ------------------------------------------------------------------------------------------------ wandb
def patch_wandb(a):
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    # wandb.init rebinds the module's `log` (and `finish`) to the new run's methods, so the wrappers are
    # installed again after every init.
    def wrap_log(orig_log):
        def log(data=None, *args, **kw):
            if isinstance(data, dict) and "Progress" in data:
                STATE["marks"].append((int(data["Progress"]), time.perf_counter()))
                if int(data["Progress"]) == 0 and not STATE.get("initial"):  # the loop's first mark: the start set
                    frame = sys._getframe(1)
                    try:
                        capture_initial(frame.f_locals, a)
                    finally:
                        del frame
            if isinstance(data, dict) and "falts" in data:  # DATM_tesla: loss > threshold, no update applied
                STATE["skipped"] = STATE.get("skipped", 0) + 1
            if isinstance(data, dict) and "Grand_Loss" in data:  # DATM_tesla: one per iteration
                STATE.setdefault("grand_loss", []).append(float(data["Grand_Loss"]))
            try:
                return orig_log(data, *args, **kw)
            except Exception:  # a disabled run may refuse histograms/images: they are not needed here
                return None
        log._peers = True
        return log

    def wrap_finish(orig_finish):
        def finish(*args, **kw):
            frame = sys._getframe(1)
            try:
                if not STATE["final"]:
                    capture(frame.f_locals, a)
            finally:
                del frame
            return orig_finish(*args, **kw)
        finish._peers = True
        return finish

    orig_init = wandb.init

    def init(*args, **kw):
        run = orig_init(*args, **kw)
        if not getattr(wandb.log, "_peers", False):
            wandb.log = wrap_log(wandb.log)
        if not getattr(wandb.finish, "_peers", False):
            wandb.finish = wrap_finish(wandb.finish)
        return run

    wandb.init = init
    wandb.log, wandb.finish = wrap_log(wandb.log), wrap_finish(wandb.finish)


def set_arrays(loc) -> dict:
    """The synthetic set in a function's locals as arrays ({} if none): DANCE's `synset` (data / targets), or
    DATM_tesla's image_syn / label_syn / syn_lr. The format of final_set.npz and initial_set.npz."""
    if "synset" in loc:  # DANCE.condense
        syn = loc["synset"]
        return {"images": syn.data.detach().cpu().numpy(), "labels": syn.targets.cpu().numpy()}
    if "image_syn" in loc:  # DATM_tesla.main
        arrays = {"images": loc["image_syn"].detach().cpu().numpy(), "labels": loc["label_syn"].detach().cpu().numpy()}
        if "syn_lr" in loc:
            arrays["lr"] = np.asarray(float(loc["syn_lr"].detach().cpu().reshape(-1)[0]))
        return arrays
    return {}


def capture_initial(loc, a):
    """OUT/initial_set.npz: the set as the distillation loop starts (its first iteration mark)."""
    arrays = set_arrays(loc)
    if arrays:
        np.savez(os.path.join(a.out, "initial_set.npz"), **arrays)
        STATE["initial"] = True


def capture(loc, a):
    """Write the final set from the finishing function's locals, timings, and (DANCE) the own evaluation."""
    import torch

    out = a.out
    t_end = time.perf_counter()
    marks = STATE["marks"]
    per_iter = [(marks[i + 1][1] - marks[i][1]) for i in range(len(marks) - 1)]
    if marks:
        per_iter.append(t_end - marks[-1][1])  # the last iteration ends at finish
    timing = {"iterations": len(marks), "ms_per_iter_median": 1000 * float(np.median(per_iter)) if per_iter else None,
              "ms_per_iter_mean": 1000 * float(np.mean(per_iter)) if per_iter else None,
              "loop_s": float(t_end - marks[0][1]) if marks else None}
    if "grand_loss" in STATE:  # DATM: the matching loss per iteration and how many updates the threshold skipped
        timing.update(grand_loss=STATE["grand_loss"], updates_skipped=int(STATE.get("skipped", 0)))
    own = {}
    arrays = set_arrays(loc)
    if arrays:
        np.savez(os.path.join(out, "final_set.npz"), **arrays)
    if "synset" in loc:  # DANCE.condense
        syn = loc["synset"]
        if a.own_eval and "val_loader" in loc:
            t0 = time.perf_counter()
            best, last = syn.test(loc["args"], loc["val_loader"], loc.get("logger", print))
            own = {"acc_last": float(last) / 100.0, "acc_best": float(best) / 100.0, "nets": 1,
                   "epochs": int(getattr(loc["args"], "epochs", -1)), "eval_s": time.perf_counter() - t0}
    elif "image_syn" in loc:  # DATM_tesla.main
        accs = loc.get("accs_test")
        if accs is not None and len(np.atleast_1d(accs)):
            acc = np.atleast_1d(np.asarray(accs, np.float64))
            scale = 100.0 if acc.max() > 1.0 else 1.0
            own = {"acc_mean": float(acc.mean() / scale), "acc_std": float(acc.std() / scale), "nets": int(acc.size),
                   "at_iteration": int(loc.get("it", -1))}
    with open(os.path.join(out, "timing.json"), "w") as f:
        json.dump(timing, f, indent=1)
    with open(os.path.join(out, "own_eval.json"), "w") as f:
        json.dump(own, f, indent=1)
    STATE["final"] = True
    del torch



# ------------------------------------------------------------------------------------------------ RCIG (JAX)
def rcig_thread_env(threads: int) -> dict:
    """Environment that pins XLA's and TensorFlow's CPU threads (set before jax/tensorflow are imported)."""
    flags = os.environ.get("XLA_FLAGS", "")
    add = [f for f in ("--xla_cpu_multi_thread_eigen=false", f"intra_op_parallelism_threads={threads}")
           if f.split("=")[0] not in flags]
    return {"XLA_FLAGS": " ".join([flags] + add).strip(), "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(threads), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def stub_module(name: str, why: str) -> types.ModuleType:
    """A module whose every attribute access raises (imported by the original, never used on this path)."""
    class Stub(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise RuntimeError(f"{name}.{attr}: {name} is stubbed by the peers glue ({why})")

    m = Stub(name)
    m.__path__ = []  # a package, so `import torch.nn.functional` resolves to further stubs
    return m


def install_rcig_patches(threads: int):
    for k, v in rcig_thread_env(threads).items():
        os.environ[k] = v
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        why = "imported by algorithms.py / dataSolu/utils_noise.py, unused for Fashion-MNIST"
        for n in ("torch", "torch.nn", "torch.nn.functional"):
            sys.modules[n] = stub_module(n, why)
        sys.modules["torch"].nn = sys.modules["torch.nn"]
        sys.modules["torch.nn"].functional = sys.modules["torch.nn.functional"]
    import jax
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    orig_devices = jax.devices

    def devices(backend=None):
        if isinstance(backend, str) and backend.lower() in ("gpu", "cuda", "rocm", "tpu"):
            return orig_devices()
        return orig_devices(backend)

    devices._peers = True
    jax.devices = devices
    return jax


def tfds_offline(idx_dir: str, out: str):
    """tfds's download manager answers the Fashion-MNIST URLs with local decompressed IDX files."""
    import tensorflow_datasets as tfds

    raw = uncompressed_idx(idx_dir, os.path.join(out, "tfds_idx"))

    def local(url):
        base = os.path.basename(str(url))
        stem = base[:-3] if base.endswith(".gz") else base
        if stem not in FASHION_IDX:
            raise RuntimeError(f"peers glue: tfds asked for {url!r}; only Fashion-MNIST's IDX files are offline")
        return os.path.join(raw, stem)

    def mapped(self, url_or_urls, *args, **kw):
        if isinstance(url_or_urls, dict):
            return {k: local(v) for k, v in url_or_urls.items()}
        if isinstance(url_or_urls, (list, tuple)):
            return type(url_or_urls)(local(v) for v in url_or_urls)
        return local(url_or_urls)

    dm = tfds.download.DownloadManager
    dm.download_and_extract = mapped
    dm.download = mapped
    dm.extract = lambda self, paths, *a, **k: paths
    return os.path.join(out, "tfds")


def load_peers_labels_module():
    """experiments/peers/labels.py by path (numpy + hashlib at import; nothing of jaxdistill)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "labels.py")
    spec = importlib.util.spec_from_file_location("peers_labels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rcig_subset(x_norm, mean, std, lab):
    """(order, pixels) with x_norm[order] the labels file's subset: the original's normalised images are
    mapped back to uint8 pixels (x*std+mean) and joined to the labels file's content keys."""
    L = load_peers_labels_module()
    pix = np.asarray(x_norm, np.float64) * np.asarray(std, np.float64) + np.asarray(mean, np.float64)
    order = L.join_keys(lab["hash64"], L.image_keys(np.clip(pix, 0.0, 1.0)))
    return order


def patch_rcig(a, lab, sets):
    import dataloader  # RCIG+ours/dataloader.py
    import tensorflow as tf

    import algorithms  # RCIG+ours/algorithms.py

    orig_get = dataloader.get_dataset

    def get_dataset(config, is_coarse, return_raw=False):
        if config.name != "fashion_mnist":
            raise RuntimeError(f"peers glue: only dataset 'fashion_mnist' is wired (got {config.name!r})")
        (x_tr, y_tr, x_te, y_te), pre, rev, scale = orig_get(config, is_coarse, return_raw=True)
        mean, std = dataloader.data_stats[config.name]
        t0 = time.perf_counter()
        order = rcig_subset(x_tr, mean, std, lab)
        y_true = np.asarray(y_tr)[order]
        if "true" in lab and not np.array_equal(y_true, lab["true"]):
            raise RuntimeError("peers glue: content join disagrees with the labels file's clean labels")
        x_sub, y_sub = x_tr[order], np.asarray(lab["noisy"], np.int64)
        STATE["join"] = {"n": int(len(order)), "join_s": time.perf_counter() - t0,
                         "tfds_order_differs": bool(np.any(order != lab["indices"]))}
        print(f"[peers glue] RCIG training set: {len(order)} of {len(y_tr)} tfds images joined by content "
              f"(clean labels agree), noisy labels from the labels file (realized rate "
              f"{lab['header'].get('realized_rate')})", flush=True)
        with config.unlocked():
            config.train_size = int(len(order))
        if return_raw:
            return (x_sub, y_sub, x_te, y_te), pre, rev, scale
        ds_tr = tf.data.Dataset.from_tensor_slices((x_sub, y_sub))
        ds_te = tf.data.Dataset.from_tensor_slices((x_te, y_te))
        return (ds_tr, ds_te), pre, rev, scale

    dataloader.get_dataset = get_dataset
    if "real_batch" in sets:
        orig_conf = dataloader.configure_dataloader

        def configure_dataloader(ds, batch_size, *args, train=False, **kw):
            if train:
                batch_size = int(sets["real_batch"])
            return orig_conf(ds, batch_size, *args, train=train, **kw)

        dataloader.configure_dataloader = configure_dataloader

    orig_run, orig_meta = algorithms.run_rcig, algorithms.do_meta_train_step
    STATE["timing_on"] = False

    def run_rcig(*args, lr_tune=False, **kw):
        if lr_tune:
            STATE["tune_calls"] = STATE.get("tune_calls", 0) + 1
            return orig_run(*args, lr_tune=True, **kw)
        STATE["timing_on"] = True
        args = list(args)
        for i, name in ((7, "inner_lr"), (8, "hvp_lr")):  # --set: the harness's lrs when the script skips tuning
            if name in sets:
                STATE.setdefault("lrs_script", [None, None])[i - 7] = float(args[i])
                args[i] = float(sets[name])
        STATE["lrs_in"] = [float(v) for v in args[7:9]]
        try:
            res = orig_run(*args, lr_tune=False, **kw)
        finally:
            STATE["timing_on"] = False
            STATE["t_end"] = time.perf_counter()
        state = res[0]
        STATE["final_state"] = {k: np.asarray(v) for k, v in state.ema_average.items()}
        STATE["lrs_out"] = [float(res[3]), float(res[4])]
        STATE["max_outer_acc"] = float(res[5])
        return res

    def do_meta_train_step(*args, **kw):
        if STATE["timing_on"]:
            STATE["marks"].append((len(STATE["marks"]) + 1, time.perf_counter()))
        return orig_meta(*args, **kw)

    algorithms.run_rcig = run_rcig
    algorithms.do_meta_train_step = do_meta_train_step


def capture_rcig(a, output_dir):
    """final_set.npz from the script's own pickle (+ the EMA working-space images), timing, own_eval."""
    import pickle

    marks = STATE["marks"]
    t_end = STATE.get("t_end", time.perf_counter())
    per_iter = [marks[i + 1][1] - marks[i][1] for i in range(len(marks) - 1)]
    if marks:
        per_iter.append(t_end - marks[-1][1])
    timing = {"iterations": len(marks), "ms_per_iter_median": 1000 * float(np.median(per_iter)) if per_iter else None,
              "ms_per_iter_mean": 1000 * float(np.mean(per_iter)) if per_iter else None,
              "ms_per_iter_first": 1000 * float(per_iter[0]) if per_iter else None,
              "loop_s": float(t_end - marks[0][1]) if marks else None, "lr_tune_calls": STATE.get("tune_calls", 0),
              "lrs_after_tune": STATE.get("lrs_in"), "lrs_script_replaced": STATE.get("lrs_script"), "lrs_final": STATE.get("lrs_out"), "join": STATE.get("join")}
    pkl = os.path.join(output_dir, "distilled_dataset_vis.pkl")
    with open(pkl, "rb") as f:  # the script's own output, written by this run
        vis = pickle.load(f)
    arrays = {"images": np.asarray(vis["coreset_images"], np.float32),
              "labels": np.asarray(vis["coreset_labels"], np.float32)}
    fs = STATE.get("final_state") or {}
    if "x_proto" in fs:
        arrays["images_working"] = np.asarray(fs["x_proto"], np.float32)
    if "log_temp" in fs:
        arrays["log_temp"] = np.asarray(fs["log_temp"], np.float32)
    np.savez(os.path.join(a.out, "final_set.npz"), **arrays)
    own = {}
    if "max_outer_acc" in STATE:
        own = {"max_outer_train_batch_acc": STATE["max_outer_acc"],
               "note": "distill_dataset.py has no test evaluation; this is the max outer (real training batch) "
                       "accuracy it prints, not a test accuracy"}
    with open(os.path.join(a.out, "timing.json"), "w") as f:
        json.dump(timing, f, indent=1)
    with open(os.path.join(a.out, "own_eval.json"), "w") as f:
        json.dump(own, f, indent=1)
    STATE["final"] = True


def rcig_output_dir(rest):
    """The script's --output_dir (relative to the run folder)."""
    for i, t in enumerate(rest):
        if t == "--output_dir" and i + 1 < len(rest):
            return rest[i + 1]
        if t.startswith("--output_dir="):
            return t.split("=", 1)[1]
    raise SystemExit("peers glue: RCIG needs --output_dir (the final pickle is read from it)")


def main_rcig(a, lab, peer, script, sdir) -> int:
    """distill_dataset.py from OUT (its relative output/config paths), its folder and DD_LNL on sys.path."""
    import random

    random.seed(a.seed)
    np.random.seed(a.seed)
    install_rcig_patches(a.threads)
    sets = kv(a.set)
    rest = list(a.rest)
    out_rel = rcig_output_dir(rest)
    if os.path.isabs(out_rel) or ".." in out_rel.split(os.sep):
        raise SystemExit("peers glue: RCIG's --output_dir must be relative (the script writes './<output_dir>')")
    tfds_dir = tfds_offline(a.idx_dir, a.out)
    if "--data_path" not in rest:
        rest += ["--data_path", tfds_dir]
    sys.path.insert(0, sdir)
    sys.path.insert(1, peer)  # the script's sys.path.append("../") for dataSolu, relative to its folder
    os.chdir(a.out)
    patch_rcig(a, lab, sets)
    sys.argv = [script] + rest
    print(f"[peers glue] distill_dataset.py from {a.out}: {' '.join(rest)}; set {sets}", flush=True)
    t0 = time.perf_counter()
    runpy.run_path(script, run_name="__main__")
    wall = time.perf_counter() - t0
    capture_rcig(a, os.path.join(a.out, out_rel))
    with open(os.path.join(a.out, "wall.json"), "w") as f:
        json.dump({"script": a.script, "wall_s": wall, "final_captured": STATE["final"], "argv": rest,
                   "set": sets, "seed": a.seed, "threads": a.threads}, f, indent=1)
    return 0

# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    peer = os.path.abspath(a.peer_dir)
    script = os.path.join(peer, a.script)
    sdir = os.path.dirname(script)
    lab = read_labels(os.path.abspath(a.labels))
    if os.path.basename(script) == "distill_dataset.py":  # RCIG: the JAX venv (no torch, no wandb)
        return main_rcig(a, lab, peer, script, sdir)
    import random

    random.seed(a.seed)
    np.random.seed(a.seed)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import shims  # experiments/peers/glue/shims.py: stand-ins for wandb / torchvision where they do not import

    install_torch_patches(a.threads, a.device)   # first: it stubs torchvision's _meta_registrations for the check
    shims.install(shims.missing())
    import torch

    torch.manual_seed(a.seed)
    patch_wandb(a)
    os.chdir(sdir)
    sys.path.insert(0, sdir)
    name = os.path.basename(script)
    sys.argv = [script] + list(a.rest)
    sets = kv(a.set)
    patches = kv(a.patch)
    if name in ("DANCE.py", "pretrain.py"):
        tv_root = torchvision_root(a.idx_dir, a.out)
        patch_dance_data(lab, tv_root)
        argmod = __import__("arguments.arg_condense" if name == "DANCE.py" else "arguments.arg_pretrain",
                            fromlist=["args"])
        for k, v in sets.items():
            setattr(argmod.args, k, v)
        print(f"[peers glue] {name}: args after overrides: " +
              ", ".join(f"{k}={getattr(argmod.args, k)!r}" for k in sorted(sets)), flush=True)
    elif name in ("DATM_tesla.py", "buffer_FTD.py"):
        sys.path.insert(1, os.path.dirname(sdir))  # the scripts' own sys.path.append("../"), before we import
        mods = ["utils.utils_baseline"] if name == "DATM_tesla.py" else ["utils.utils_gsam"]
        patch_datm_data(lab, a.idx_dir, mods)
        patch_datm_net(patches, mods)
    else:
        raise SystemExit(f"peers glue: no wiring for {name!r}")
    t0 = time.perf_counter()
    runpy.run_path(script, run_name="__main__")
    with open(os.path.join(a.out, "wall.json"), "w") as f:
        json.dump({"script": a.script, "wall_s": time.perf_counter() - t0, "final_captured": STATE["final"],
                   "argv": a.rest, "set": sets, "patch": patches, "seed": a.seed, "threads": a.threads}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
