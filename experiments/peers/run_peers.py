"""Side by side with the originals: one original (DD_LNL's DANCE+ours / DATM+ours / RCIG+ours) and jaxdistill on the same
Fashion-MNIST subset, noisy labels, IPC, budget and seed, both sets evaluated by jaxdistill's evaluator with
the same nets and keys.

  python experiments/peers/run_peers.py run --peer-dir DIR --method dance --noise symmetric:0.4 --budget quick \
      --seeds 0 --out experiments/results/peers.json
  python experiments/peers/run_peers.py commands ...   # print the originals' command lines, run nothing
  python experiments/peers/run_peers.py aggregate --out experiments/results/peers.json   # -> peers.md

Per (method, noise, budget, seed) the work lives in `--work/<method>/<noise>/<budget>[-tag]/seed<S>/`:
  labels.npz        the noisy labels + subset indices (labels.py), written once, read by both sides
  original/         the glue's output (final_set.npz, timing.json, own_eval.json) and distilled.npz (import_set)
  jaxdistill/       jaxdistill's run directory (methods.base.distill) with distilled.npz
Each finished step is kept and skipped on a rerun; each seed's entry is written atomically into `--out`
(jaxdistill.checkpoint.atomic_write_json) as soon as it is done, so an interrupted run resumes per entry.
Results format: {"<method>/<noise>/<budget>": {"original": {"acc_mean", "acc_std", "ms_per_iter", "own_eval",
"per_seed"}, "jaxdistill": {...}, "seeds": n, "command": "..."}}.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from experiments.peers import budget as B  # noqa: E402
from experiments.peers import import_set as I  # noqa: E402
from experiments.peers import labels as L  # noqa: E402

GLUE = os.path.join(HERE, "glue", "launch.py")
OWN_PROTOCOL = {"dance": "dance", "datm": "datm", "rcig": "rcig"}
VENV_OF = {"dance": "torch", "datm": "torch", "rcig": "rcig"}  # venv.py's environments
FLAG_SPELLING = {"weight_decay": "--weight-decay"}
NOISE_FLAGS = {"clean": ("clean", 0.0)}


def _flag(k):
    return FLAG_SPELLING.get(k, f"--{k}")


def _noise_flags(noise: str) -> list[str]:
    kind, _, rate = noise.partition(":")
    return ["--noise_type", kind, "--noise_rate", rate or "0"]


def cell_dir(work, method, noise, budget, seed, tag=""):
    return os.path.join(work, method, noise.replace(":", "_"), budget + (f"-{tag}" if tag else ""), f"seed{seed}")


def glue_cmd(python, peer_dir, script, labels, out, seed, threads, sets=None, patches=None, rest=(),
             idx_dir=None, own_eval=1, device="cpu") -> list[str]:
    cmd = [python, GLUE, "--peer-dir", peer_dir, "--script", script, "--labels", labels, "--out", out,
           "--seed", str(seed), "--threads", str(threads), "--own-eval", str(own_eval)]
    if idx_dir:
        cmd += ["--idx-dir", idx_dir]
    for k, v in (sets or {}).items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    for k, v in (patches or {}).items():
        cmd += ["--patch", f"{k}={json.dumps(v)}"]
    if device != "cpu":
        cmd += ["--device", device]
    return cmd + ["--"] + list(rest)


def original_commands(method, cfg, *, python, peer_dir, labels, odir, seed, threads, noise, k, budget,
                      idx_dir=None, device="cpu") -> list[tuple[str, list[str], str]]:
    """[(step name, argv, the file whose presence means the step is done)] for one original run; device: the
    glue's --device (cpu redirects the scripts' CUDA calls; cuda runs them on the GPU, DANCE / DATM only)."""
    if device != "cpu" and method == "rcig":
        raise SystemExit("--device cuda: the RCIG glue has no GPU mode (its JAX 0.4.33 venv is CPU-only here)")
    m = B.to_original(method, cfg)
    ev = B.eval_settings(method, budget, 28, k)
    if method == "dance":
        pre = os.path.join(odir, "pretrained")
        p = m["pretrain.py"]
        p_sets = {**p.get("override", {}), "pretrain_dir": pre, "workers": 0}
        p_rest = ["--reproduce", "--dataset", "fashion", "--seed", str(seed)] + _noise_flags(noise)
        for key, v in p.get("flag", {}).items():
            p_rest += [_flag(key), str(v)]
        c = m["DANCE.py"]
        c_sets = {**c.get("override", {}), **ev["override"], "pretrain_dir": pre,
                  "save_dir": os.path.join(odir, "dance_out"), "workers": 0}
        c_rest = ["--reproduce", "--dataset", "fashion", "--seed", str(seed)] + _noise_flags(noise)
        for key, v in c.get("flag", {}).items():
            c_rest += [_flag(key), str(v)]
        done_pre = os.path.join(pre, f"premodel{cfg.pool_size - 1}_trained.pth.tar")
        return [("pretrain", glue_cmd(python, peer_dir, "DANCE+ours/pretrain.py", labels, os.path.join(odir, "glue_pretrain"),
                                      seed, threads, p_sets, None, p_rest, idx_dir, 0, device), done_pre),
                ("condense", glue_cmd(python, peer_dir, "DANCE+ours/DANCE.py", labels, odir, seed, threads,
                                      c_sets, None, c_rest, idx_dir, 1, device), os.path.join(odir, "own_eval.json"))]
    if method == "datm":
        buf = os.path.join(odir, "buffers")
        b = m["buffer_FTD.py"]
        patches = b.get("patch", {})
        b_rest = ["--dataset", "FashionMNIST", "--model", "ConvNet", "--buffer_path", buf, "--data_path", "unused"]
        for key, v in b.get("flag", {}).items():
            b_rest += [_flag(key), str(v)]
        if cfg.preprocess == "zca_datm":
            b_rest.append("--zca")
        y = {**m["DATM_tesla.py"].get("yaml", {}), **ev["yaml"], "dataset": "FashionMNIST", "model": "ConvNet",
             "buffer_path": buf, "data_path": "unused", "eval_it": cfg.iterations, "skip_first_eva": True,
             "project": "peers", "noise_type": noise.partition(":")[0],
             "noise_rate": float(noise.partition(":")[2] or 0)}
        y = coerce_to_defaults(y, datm_default_types(peer_dir))
        os.makedirs(odir, exist_ok=True)
        ypath = os.path.join(odir, "datm.yaml")
        with open(ypath, "w") as f:
            for key, v in y.items():
                f.write(f"{key}: {_yaml_scalar(v)}\n")
        done_buf = os.path.join(buf, "FashionMNIST", "ConvNet", "replay_buffer_0.pt")
        return [("buffer", glue_cmd(python, peer_dir, "DATM+ours/buffer/buffer_FTD.py", labels,
                                    os.path.join(odir, "glue_buffer"), seed, threads, None, patches, b_rest, idx_dir, 0,
                                    device), done_buf),
                ("distill", glue_cmd(python, peer_dir, "DATM+ours/distill/DATM_tesla.py", labels, odir, seed, threads,
                                     None, patches, ["--cfg", ypath], idx_dir, 1, device),
                 os.path.join(odir, "own_eval.json"))]
    if method == "rcig":
        r = m["distill_dataset.py"]
        cfg_json = rcig_config_json(peer_dir, m["config.json"]["json"])
        os.makedirs(odir, exist_ok=True)
        with open(os.path.join(odir, "rcig_config.json"), "w") as f:
            json.dump(cfg_json, f, indent=1)
        rest = ["--dataset_name", "fashion_mnist", "--random_seed", str(seed), "--output_dir", "rcig_out",
                "--config_path", "rcig_config.json"] + _noise_flags(noise)
        for key, v in r["flag"].items():
            rest += [_flag(key), str(v)]
        sets = dict(r.get("patch", {}))
        return [("distill", glue_cmd(python, peer_dir, "RCIG+ours/distill_dataset.py", labels, odir, seed, threads,
                                     sets, None, rest, idx_dir, 0), os.path.join(odir, "own_eval.json"))]
    raise SystemExit(f"method {method!r}: allowed dance, datm, rcig")


def rcig_config_json(peer_dir: str, values: dict) -> dict:
    """RCIG's JSON config: the original's Fashion-MNIST file (budget.RCIG_BASE_CONFIG) with the mapped keys set.
    Keys the original does not have are refused (a typo would otherwise be ignored by ml_collections' reader)."""
    path = os.path.join(peer_dir, "RCIG+ours", B.RCIG_BASE_CONFIG)
    with open(path) as f:
        base = json.load(f)
    unknown = sorted(set(values) - set(base))
    if unknown:
        raise SystemExit(f"{path} has no key(s) {unknown}")
    return {**base, **values}


def datm_default_types(peer_dir: str) -> dict:
    """{key: type} of DATM's yacs defaults (`DATM+ours/utils/cfg.py`, `CFG.key = literal` lines): yacs refuses
    a YAML value whose type differs from the default's (e.g. a float lr_img where the default is int 1000)."""
    import ast
    import re

    path = os.path.join(peer_dir, "DATM+ours", "utils", "cfg.py")
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        m = re.match(r"^CFG\.(\w+)\s*=\s*(.+?)\s*(#.*)?$", line)
        if not m:
            continue
        try:
            out[m.group(1)] = type(ast.literal_eval(m.group(2)))
        except (ValueError, SyntaxError):
            continue
    return out


def coerce_to_defaults(values: dict, types: dict) -> dict:
    """Values cast to the type of DATM's default where that is lossless (100.0 -> 100 for an int default)."""
    out = {}
    for k, v in values.items():
        t = types.get(k)
        if t is int and isinstance(v, float) and not isinstance(v, bool):
            if not float(v).is_integer():
                raise SystemExit(f"DATM's default for {k!r} is an int; {v!r} cannot be given through its YAML")
            v = int(v)
        elif t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        out[k] = v
    return out


def _yaml_scalar(v) -> str:
    """A YAML scalar PyYAML (yacs) reads back with the same type: floats always carry a '.' (PyYAML reads
    '1e-05' as a string, and yacs refuses a str where its default is a float)."""
    if isinstance(v, bool) or not isinstance(v, float):
        return json.dumps(v)
    s = repr(v)
    if "e" in s or "E" in s:
        mant, _, exp = s.lower().partition("e")
        if "." not in mant:
            mant += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        return f"{mant}e{exp}"
    return s


def _env(threads):
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS"):
        env[v] = str(threads)
    env["WANDB_MODE"] = "disabled"
    env["WANDB_SILENT"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ms_per_iter_jax(workdir):
    """(ms per iteration, note) from jaxdistill's metrics.jsonl: the median of the chunks' own times per
    iteration (`chunk_ms_per_iter`) after the first chunk; for logs written before the loop timed its chunks,
    the rate between the ends of the first and the last chunk (a chunk's rows share one wall_s; the first
    chunk's compile left out, checkpoint saves in between included), or with a single chunk wall / iterations,
    compile included."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None, "no metrics.jsonl"
    rows = [json.loads(s) for s in open(path) if s.strip()]
    rows = [r for r in rows if "wall_s" in r and "step" in r and str(r.get("stage", "")).startswith("distill")]
    if not rows:
        return None, "no distill rows"
    # Rows written since the loop timed each chunk: the median over the chunks after the first (the first
    # compiles), as the glue takes the original's median iteration; checkpoint saves between chunks left out.
    per_chunk = {}
    for r in rows:
        if "chunk_ms_per_iter" in r:
            per_chunk[r["wall_s"]] = r["chunk_ms_per_iter"]
    timed = [per_chunk[w] for w in sorted(per_chunk)][1:]
    if timed:
        return float(np.median(timed)), f"median chunk time over {len(timed)} chunks after the first (compile " \
            "and checkpoint saves excluded)"
    ends = {}
    for r in rows:  # last step logged at each distinct wall time = the end of a chunk
        ends[r["wall_s"]] = max(ends.get(r["wall_s"], 0), r["step"])
    walls = sorted(ends)
    if len(walls) >= 2:
        return 1000.0 * (walls[-1] - walls[0]) / max(ends[walls[-1]] - ends[walls[0]], 1), \
            f"between chunk ends (iterations {ends[walls[0]]}..{ends[walls[-1]]}), compile excluded"
    return 1000.0 * walls[0] / max(ends[walls[0]], 1), "one chunk: wall / iterations, compile included"


def run_seed(a, seed, results, key_top, command):
    import jax

    from jaxdistill.data import load_dataset, make_noisy_data
    from jaxdistill.evaluate import evaluate
    from jaxdistill.methods import distill  # the one run driver (workdir, run.json guard, resume)
    from jaxdistill.pipeline import stage_key
    from jaxdistill.methods.base import DistilledSet

    cdir = cell_dir(a.work, a.method, a.noise, a.budget, seed, a.tag)
    os.makedirs(cdir, exist_ok=True)
    subset = a.subset if a.subset else None
    ds = load_dataset(a.dataset, data_dir=a.data_dir)
    data = make_noisy_data(ds, a.noise, seed=a.noise_seed, val_fraction=0.0, subset=subset)
    lpath = os.path.join(cdir, "labels.npz")
    if not os.path.exists(lpath):
        L.write_labels(lpath, a.dataset, a.noise, seed=a.noise_seed, subset=subset, data=data)
    lab = L.read_labels(lpath)
    if not np.array_equal(lab["noisy"], data.y_noisy):
        raise SystemExit(f"{lpath} holds other labels than this run draws; remove it or use another --work")
    cfg = cfg_for(a)
    entry = {"seed": seed, "labels": lpath, "realized_rate": lab["header"]["realized_rate"],
             "config": {k: v for k, v in cfg.to_dict().items()} if hasattr(cfg, "to_dict") else None,
             "fixed_mismatches": B.fixed_mismatches(a.method, cfg)}
    protocol = OWN_PROTOCOL[a.method]
    ekey = stage_key(seed, f"eval/{protocol}")

    # ---- the original
    odir = os.path.join(cdir, "original")
    steps = original_commands(a.method, cfg, python=a.python, peer_dir=a.peer_dir, labels=lpath, odir=odir,
                              seed=seed, threads=a.threads, noise=a.noise, k=a.k, budget=a.budget, idx_dir=a.idx_dir,
                              device=a.device)
    step_wall = {}
    for name, argv, done in steps:
        if os.path.exists(done):
            continue
        print(f"[peers] {a.method} seed {seed}: {name}: {shlex.join(argv)}", flush=True)
        t0 = time.perf_counter()
        log = open(os.path.join(cdir, f"original_{name}.log"), "a")
        r = subprocess.run(argv, env=_env(a.threads), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        step_wall[name] = time.perf_counter() - t0
        if r.returncode != 0 or not os.path.exists(done):
            raise SystemExit(f"original step {name} failed (rc {r.returncode}); see {cdir}/original_{name}.log")
    x_train = np.asarray(data.x_train)
    oset = import_original(a.method, os.path.join(odir, "final_set.npz"), cfg, x_train)
    oset.save(os.path.join(odir, "distilled.npz"))
    timing = json.load(open(os.path.join(odir, "timing.json")))
    own = json.load(open(os.path.join(odir, "own_eval.json")))

    # ---- jaxdistill
    jdir = os.path.join(cdir, "jaxdistill")
    t0 = time.perf_counter()
    jset = distill(a.method, cfg, data, stage_key(seed, f"distill/{a.method}"), workdir=jdir)
    j_wall = time.perf_counter() - t0

    # ---- one evaluator, same key for both
    def accuracy(s) -> dict:
        r = evaluate(s, data, protocol, ekey, k=a.k, preset=a.budget)
        return {"accs": [float(v) for v in np.asarray(r.accs)], "mean": float(r.mean), "std": float(r.std)}

    res = {"original": accuracy(oset), "jaxdistill": accuracy(jset)}
    # ... and each side's starting set (the glue's initial_set.npz, jaxdistill's initial.npz), so that a gap
    # between the final sets can be split into where they started and what the distillation added
    starts = {"original": os.path.join(odir, "initial_set.npz"), "jaxdistill": os.path.join(jdir, "initial.npz")}
    for side, path in starts.items():
        if not os.path.exists(path):
            continue
        s = import_original(a.method, path, cfg, x_train) if side == "original" else DistilledSet.load(path)
        res[side]["initial"] = accuracy(s)
    entry["original"] = {**res["original"], "ms_per_iter": timing.get("ms_per_iter_median"),
                         "iterations_timed": timing.get("iterations"), "own_eval": own, "step_wall_s": step_wall}
    if "updates_skipped" in timing:  # DATM: a run whose every update was skipped did not distil anything
        entry["original"]["updates_skipped"] = timing["updates_skipped"]
        if timing["updates_skipped"] >= len(timing.get("grand_loss", [])) > 0:
            print(f"[peers] WARNING: the original {a.method} applied no update (matching loss "
                  f"{timing['grand_loss'][:3]}...): check its expert buffer", flush=True)
    ms, ms_note = _ms_per_iter_jax(jdir)
    entry["jaxdistill"] = {**res["jaxdistill"], "ms_per_iter": ms, "ms_per_iter_note": ms_note,
                           "distill_wall_s": j_wall}
    entry["protocol"] = protocol
    entry["k"] = a.k
    entry["machine"] = machine(a.device)
    entry["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    del jax
    record(a.out, key_top, seed, entry, command)
    return entry


def import_original(method: str, path: str, cfg, x_train):
    """An original's saved set (the glue's final_set.npz / initial_set.npz) -> DistilledSet in jaxdistill's terms."""
    if method == "dance":
        return I.import_dance(path, factor=cfg.factor, ipc=cfg.ipc, mean=cfg.mean or (0.2861,),
                              std=cfg.std or (0.3530,))
    if method == "rcig":  # dataloader.py: mean/std ('standard') for fashion_mnist, no ZCA
        return I.import_rcig(path, preprocess="meanstd", mean=(0.2861,), std=(0.3530,), use_flip=cfg.use_flip)
    return I.import_datm(path, x_train=x_train, zca=cfg.preprocess == "zca_datm")


def machine(device: str = "cpu") -> str:
    """'<lscpu model name>, <n> cores' (the wall times are this machine's); with device cuda the GPU's name
    (nvidia-smi) first."""
    if device == "cuda":
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            gpu = "unknown GPU"
        return f"{gpu}; host {machine('cpu')}"
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores"


def cfg_for(a):
    cfg = B.get_config(a.method, a.dataset, a.ipc, a.budget)
    kw = {}
    if getattr(a, "chunk_iters", None):
        kw["chunk_iters"] = a.chunk_iters  # speed only (not part of jaxdistill's run record)
    if a.iterations:
        kw["iterations"] = a.iterations
        if hasattr(cfg, "checkpoint_every") and cfg.checkpoint_every > a.iterations:
            kw["checkpoint_every"] = a.iterations
    for item in getattr(a, "cfg", None) or []:  # --cfg FIELD=JSON: any jaxdistill config field (both sides)
        k, _, v = item.partition("=")
        if not hasattr(cfg, k):
            raise SystemExit(f"--cfg {item!r}: {type(cfg).__name__} has no field {k!r}")
        try:
            kw[k] = json.loads(v)
        except ValueError:
            kw[k] = v
    if kw:
        cfg = cfg.replace(**kw) if hasattr(cfg, "replace") else __import__("dataclasses").replace(cfg, **kw)
    return cfg


def summarise(per_seed: dict) -> dict:
    """acc_mean / acc_std over seeds of each seed's k-net mean (over the k nets when one seed)."""
    out = {}
    for side in ("original", "jaxdistill"):
        rows = [v[side] for v in per_seed.values() if side in v]
        if not rows:
            continue
        means = np.array([r["mean"] for r in rows])
        ms = [r["ms_per_iter"] for r in rows if r.get("ms_per_iter") is not None]
        out[side] = {"acc_mean": float(means.mean()),
                     "acc_std": float(means.std()) if len(rows) > 1 else float(rows[0]["std"]),
                     "std_over": "seeds" if len(rows) > 1 else "nets",
                     "ms_per_iter": float(np.mean(ms)) if ms else None}
        if side == "original":
            own = [r.get("own_eval") or {} for r in rows]
            out[side]["own_eval"] = own
    return out


def record(path, key_top, seed, entry, command):
    from jaxdistill.checkpoint import atomic_write_json, read_json

    allr = read_json(path) or {}
    cell = allr.get(key_top, {})
    per_seed = cell.get("per_seed", {})
    per_seed[str(seed)] = entry
    s = summarise(per_seed)
    cell = {**s, "seeds": len(per_seed), "command": command, "per_seed": per_seed,
            "protocol": entry["protocol"], "k": entry["k"]}
    allr[key_top] = cell
    atomic_write_json(path, allr)


def aggregate(path, md_path):
    from jaxdistill.checkpoint import atomic_write_text, read_json

    allr = read_json(path) or {}
    lines = ["# Originals side by side with jaxdistill", "",
             "Each row: one original (DD_LNL) and jaxdistill on the same Fashion-MNIST subset, noisy labels, IPC,",
             "budget and seeds; both final sets evaluated by jaxdistill's evaluator (the method's own protocol,",
             "same nets and key). acc: mean +- std (over seeds, or over the k nets for one seed). ms/iter: the",
             "original's median per-iteration wall time (glue timing) and jaxdistill's from its metrics log.",
             "`own eval`: the original's own evaluation of its final set (its own trainer). Wall times are the",
             "running machine's (its CPU and load: experiments/peers/README.md).", "",
             "A `-smoke` cell is a smoke run (its command holds the cut budget); `run on`: CPU (lscpu) and date, where",
             "the entry records them.", "",
             "`start`: each side's starting set under the same evaluator (original / jaxdistill, mean over seeds with",
             "one), where the run recorded it.", "",
             "| cell | seeds | original acc | jaxdistill acc | start (orig / jax) | original ms/iter | jaxdistill ms/iter | own eval | run on | command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(allr):
        c = allr[key]
        o, j = c.get("original", {}), c.get("jaxdistill", {})
        fmt = lambda d: f"{100 * d['acc_mean']:.2f} +- {100 * d['acc_std']:.2f}" if "acc_mean" in d else "-"  # noqa
        ms = lambda d: f"{d['ms_per_iter']:.0f}" if d.get("ms_per_iter") is not None else "-"  # noqa
        own = [e.get("acc_last", e.get("acc_mean")) for e in o.get("own_eval", []) if e]
        own_s = ", ".join(f"{100 * v:.2f}" for v in own if v is not None) or "-"
        runs = sorted({f"{e.get('machine')}, {e.get('date')}" for e in c.get("per_seed", {}).values()
                       if e.get("machine")})
        def start(side):
            v = [e[side]["initial"]["mean"] for e in c.get("per_seed", {}).values()
                 if "initial" in e.get(side, {})]
            return f"{100 * float(np.mean(v)):.2f}" if v else "-"

        lines.append(f"| {key} | {c.get('seeds')} | {fmt(o)} | {fmt(j)} | {start('original')} / {start('jaxdistill')} | "
                     f"{ms(o)} | {ms(j)} | {own_s} | "
                     f"{'; '.join(runs) or '-'} | `{c.get('command', '')}` |")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return md_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "commands"):
        s = sub.add_parser(name)
        s.add_argument("--peer-dir", required=True, help="a checkout of DD_LNL (folders DANCE+ours, DATM+ours)")
        s.add_argument("--method", required=True, choices=["dance", "datm", "rcig"])
        s.add_argument("--noise", default="symmetric:0.4")
        s.add_argument("--budget", default="quick", choices=["quick", "cpu"])
        s.add_argument("--seeds", default="0", help="comma list")
        s.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist"])
        s.add_argument("--ipc", type=int, default=10)
        s.add_argument("--subset", type=int, default=None, help="training images (default: the budget's subset)")
        s.add_argument("--iterations", type=int, default=None, help="override the budget's iterations (smoke runs)")
        s.add_argument("--chunk-iters", type=int, default=0,
                       help="jaxdistill iterations per compiled chunk (0: the config's; small values time the "
                            "loop without its compile)")
        s.add_argument("--cfg", action="append", default=[], metavar="FIELD=JSON",
                       help="set a jaxdistill config field for both sides (mapped to the original by budget.py), "
                            "e.g. --cfg tune_lr=false --cfg inner_lr=0.003 for RCIG")
        s.add_argument("--noise-seed", type=int, default=0, help="the noise draw (the study's is 0 for every run)")
        s.add_argument("--k", type=int, default=5)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--python", default=None,
                       help="the original's interpreter (default: venv.py's venv for the method: torch, or rcig)")
        s.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist")
        s.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="the originals' device (cuda: a GPU machine; jaxdistill runs on JAX's default device)")
        s.add_argument("--data-dir", default=None)
        s.add_argument("--work", default=os.path.join(ROOT, "runs", "peers"))
        s.add_argument("--tag", default="", help="suffix of the budget in the result key and work dir")
        s.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "peers.json"))
    s = sub.add_parser("aggregate")
    s.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "peers.json"))
    s.add_argument("--md", default=None)
    a = p.parse_args(argv)
    if a.cmd == "aggregate":
        print(aggregate(a.out, a.md or os.path.splitext(a.out)[0] + ".md"))
        return 0
    from experiments.peers.venv import venv_python
    from jaxdistill.configs.presets import training_subset

    a.python = a.python or venv_python(VENV_OF[a.method])
    a.peer_dir = os.path.abspath(a.peer_dir)
    a.work = os.path.abspath(a.work)
    if a.subset is None:
        a.subset = training_subset(a.dataset, a.budget)
    budget_key = a.budget + (f"-{a.tag}" if a.tag else "")
    key_top = f"{a.method}/{a.noise}/{budget_key}"
    seeds = [int(s) for s in str(a.seeds).split(",") if s != ""]
    raw = list(argv or sys.argv[1:])
    command = "python experiments/peers/run_peers.py " + shlex.join(
        ["DIR" if os.path.abspath(x) == a.peer_dir else x for x in raw])
    if a.cmd == "commands":
        cfg = cfg_for(a)
        for seed in seeds:
            cdir = cell_dir(a.work, a.method, a.noise, a.budget, seed, a.tag)
            for name, argv_, done in original_commands(a.method, cfg, python=a.python, peer_dir=a.peer_dir,
                                                       labels=os.path.join(cdir, "labels.npz"),
                                                       odir=os.path.join(cdir, "original"), seed=seed,
                                                       threads=a.threads, noise=a.noise, k=a.k, budget=a.budget,
                                                       idx_dir=a.idx_dir, device=a.device):
                print(f"# seed {seed} {name} (done when {done} exists)\n{shlex.join(argv_)}")
        return 0
    from jaxdistill.checkpoint import read_json

    done = (read_json(a.out) or {}).get(key_top, {}).get("per_seed", {})
    for seed in seeds:
        if str(seed) in done:
            print(f"[peers] {key_top} seed {seed}: done, skipped")
            continue
        e = run_seed(a, seed, None, key_top, command)
        print(f"[peers] {key_top} seed {seed}: original {100 * e['original']['mean']:.2f} "
              f"jaxdistill {100 * e['jaxdistill']['mean']:.2f} ({e['protocol']} protocol, k={e['k']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
