"""Run one of the study's original scripts on this CPU with runtime patches only (nothing of theirs is copied).

Runs inside the original's venv (torch; numpy), never imports jaxdistill:

  <venv>/bin/python experiments/peers/glue/launch.py --peer-dir DIR --script "DANCE+ours/DANCE.py" \
      --labels LABELS.npz --idx-dir /usr/share/datasets/fashion-mnist --out OUT --seed 0 --threads 2 \
      [--set KEY=JSON ...] [--patch KEY=JSON ...] -- <the script's own arguments>

Patches, installed before the script is run with `runpy` from its own folder (its relative imports and paths):
- threads: torch.set_num_threads / set_num_interop_threads (the harness also sets OMP/MKL variables);
- CUDA -> CPU: a `TorchFunctionMode` that rewrites `device='cuda...'` arguments (factories, `.to`) to the CPU,
  and `Tensor.cuda` / `nn.Module.cuda` return their receiver; `torch.cuda.is_available()` stays False;
  `Tensor.cpu` returns a copy, as the device copy it is on a GPU (torch returns a CPU tensor itself, which made
  DATM's expert snapshots `p.detach().cpu()` aliases of the live parameters);
- `Tensor.view` falls back to `reshape` where the tensor is not contiguous (DSA's crop of one-channel input
  feeds the ConvNet's `.view`);
- `torchvision._meta_registrations` stubbed before torchvision is imported (PyPI's torchvision beside the CPU
  torch wheel), `efficientnet_pytorch` stubbed when missing (DANCE's common.py imports it);
- data: DANCE's `common.load_resized_data` is wrapped: its Fashion-MNIST training set is cut to the labels
  file's subset and given its noisy labels; DATM's `get_dataset` (utils_baseline for DATM_tesla.py,
  utils_gsam for buffer_FTD.py) gains a 'FashionMNIST' branch built here (subset, noisy labels, kornia ZCA eps
  0.1 when --zca, else mean/std);
- `--set`: attributes of the parsed `args` (DANCE: arguments.arg_condense / arg_pretrain, imported first so
  DANCE's --reproduce and data-set block run before the overrides);
- `--patch net_width=16 net_depth=3`: DATM's `get_default_convnet_setting`;
- wandb (WANDB_MODE=disabled): `wandb.log({'Progress': it})` marks each iteration (timing.json); at
  `wandb.finish()` the final set is taken from the finishing function's locals and written to
  OUT/final_set.npz (DANCE: synset.data / targets; DATM: image_syn / label_syn / syn_lr), and DANCE's own
  evaluation (`synset.test`) is run on it (own_eval.json).
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
def install_torch_patches(threads: int):
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torch
    from torch.overrides import TorchFunctionMode

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(max(1, threads))
    except RuntimeError:
        pass

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
    mode = CpuMode()
    mode.__enter__()
    return mode


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


def torchvision_root(idx_dir, out):
    """A folder torchvision's FashionMNIST reads offline: <root>/FashionMNIST/raw/<uncompressed IDX files>."""
    raw = os.path.join(out, "tv_data", "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
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
    return os.path.join(out, "tv_data")


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
    arrays, own = {}, {}
    if "synset" in loc:  # DANCE.condense
        syn = loc["synset"]
        arrays = {"images": syn.data.detach().cpu().numpy(), "labels": syn.targets.cpu().numpy()}
        np.savez(os.path.join(out, "final_set.npz"), **arrays)
        if a.own_eval and "val_loader" in loc:
            t0 = time.perf_counter()
            best, last = syn.test(loc["args"], loc["val_loader"], loc.get("logger", print))
            own = {"acc_last": float(last) / 100.0, "acc_best": float(best) / 100.0, "nets": 1,
                   "epochs": int(getattr(loc["args"], "epochs", -1)), "eval_s": time.perf_counter() - t0}
    elif "image_syn" in loc:  # DATM_tesla.main
        arrays = {"images": loc["image_syn"].detach().cpu().numpy(),
                  "labels": loc["label_syn"].detach().cpu().numpy()}
        if "syn_lr" in loc:
            arrays["lr"] = np.asarray(float(loc["syn_lr"].detach().cpu().reshape(-1)[0]))
        np.savez(os.path.join(out, "final_set.npz"), **arrays)
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


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    peer = os.path.abspath(a.peer_dir)
    script = os.path.join(peer, a.script)
    sdir = os.path.dirname(script)
    lab = read_labels(os.path.abspath(a.labels))
    import random

    random.seed(a.seed)
    np.random.seed(a.seed)
    install_torch_patches(a.threads)
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
