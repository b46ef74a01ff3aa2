"""The one benchmark command: time, compile time, memory, images/s and FLOP/s of every component.

Components (each built from its own module's step builder, on synthetic random inputs):
  datm   one DATM outer iteration      methods.datm.make_outer_step   (unroll of syn_steps SGD steps, DSA, remat)
  dance  one DANCE iteration            methods.dance.make_iteration   (exact per-class scan view)
  rcig   one RCIG iteration             methods.rcig.make_problem + the module's jitted Problem.step
  train  one epoch of expert training   train.make_epoch_fn            (DATM's expert recipe, K models vmapped)
  eval   one epoch of the evaluator     train.make_epoch_fn            (evaluate.get_protocol, k nets vmapped)
Settings: CIFAR-10 IPC 1/10/50 and CIFAR-100 IPC 10 (32x32x3, ConvNet-3 width 128, each method's paper
config); `train` depends on the data set only. `--small`: CPU-sized shapes (16x16, width 16, short loops).

  python benchmarks/run.py                        # GPU: all components, study shapes
  python benchmarks/run.py --small                # CPU check
  python benchmarks/run.py --only datm,dance --settings c10_ipc10
  python benchmarks/run.py --small --whole-run    # distill() end to end vs the compiled step, per distiller
Writes <out>/run.json and <out>/run.md (default out: benchmarks/results/<device>).

Measured per case: compile time (lower + compile, timed apart from running), the first call, the median of
`--repeats` calls after it, peak memory (GPU: memory_stats()['peak_bytes_in_use']; CPU: max RSS of the
process), images/s (the component's images per iteration, formula in the row), and FLOPs two ways:
  flops_xla    `jit(f).lower(*args).compile().cost_analysis()['flops']`. XLA counts a while/scan body ONCE,
               whatever its trip count, so for the unrolled/scanned components this undercounts (by
               about syn_steps for DATM).
  flops_jaxpr  our count over the traced jaxpr: dot_general / conv FLOPs (2 per MAC; convolutions: only
               taps on real input, not on padding) plus 1 per output
               element of arithmetic ops, scan bodies times their length, `cond` = its costliest branch;
               a `while` with a data-dependent trip count (RCIG's online pool steps) is counted once.
Achieved FLOP/s = flops_jaxpr / median time. Peak: H100/H200 SXM 66.9 TFLOP/s fp32 (non-tensor), the
reference for these fp32 programs ('util_fp32'); XLA may run fp32 matmuls on TF32 tensor cores (494.7
TFLOP/s dense), reported as 'util_tf32'; bf16 dense is 989.4 TFLOP/s (not used here). No peak on CPU.
By default each case runs in its own subprocess on GPU (so peak memory is that case's), in-process on CPU.
Never imports jaxdistill.data (no tensorflow/tfds needed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COMPONENTS = ("datm", "dance", "rcig", "train", "eval")
SETTINGS = {"c10_ipc1": ("cifar10", 10, 1), "c10_ipc10": ("cifar10", 10, 10), "c10_ipc50": ("cifar10", 10, 50),
            "c100_ipc10": ("cifar100", 100, 10)}
SMALL_SETTINGS = {"c10_ipc1": ("cifar10", 10, 1), "c10_ipc2": ("cifar10", 10, 2)}
# Dense peaks of one H100 SXM / H200 (same compute), FLOP/s.
PEAKS = {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12}


class Shape(NamedTuple):
    name: str
    dataset: str
    num_classes: int
    ipc: int
    size: int
    channels: int
    width: int
    small: bool


def make_shape(name: str, small: bool, **over) -> Shape:
    table = SMALL_SETTINGS if small else SETTINGS
    if name not in table:
        from jaxdistill.errors import ConfigError

        raise ConfigError(f"unknown setting {name!r}; allowed: {sorted(table)}")
    ds, c, ipc = table[name]
    s = Shape(name, ds, c, ipc, 16 if small else 32, 3, 16 if small else 128, small)
    return s._replace(**over)


class Built(NamedTuple):
    """A component ready to time: call(*dyn) runs one iteration through the jitted step, lower() gives
    its jax.stages.Lowered, advance(out, dyn) -> next dyn (threads donated state), images per call."""

    call: Callable
    lower: Callable
    dyn: tuple
    advance: Callable
    images: int
    images_formula: str
    per_call: int = 1          # iterations per call (eval runs a chunk of epochs per call)
    info: dict = {}


# ------------------------------------------------------------------------------------------------
# Builders (synthetic inputs; each component's own module builds the step)
# ------------------------------------------------------------------------------------------------

def _rng_images(key_int: int, n: int, s: Shape):
    import jax

    return jax.random.uniform(jax.random.PRNGKey(key_int), (n, s.size, s.size, s.channels))


def build_datm(s: Shape, syn_steps: Optional[int] = None, **_) -> Built:
    import jax
    from jax.flatten_util import ravel_pytree

    from jaxdistill.configs.datm import get_config
    from jaxdistill.methods import datm
    from jaxdistill.nn import make_net

    cfg = get_config(s.dataset, s.ipc if not s.small else 1, "paper")
    n = s.num_classes * s.ipc
    over = dict(ipc=s.ipc, width=s.width, threshold=1e9, batch_syn=min(cfg.batch_syn, n))
    if s.small:
        over.update(syn_steps=4, batch_syn=n)
    if syn_steps is not None:
        over["syn_steps"] = syn_steps
    if over["batch_syn"] < n and n % over["batch_syn"]:
        over["batch_syn"] = n
    cfg = cfg.replace(**over)
    net = make_net(cfg.net_config(s.num_classes))
    theta0, unravel = ravel_pytree(net.init(jax.random.PRNGKey(0), (s.size, s.size, s.channels)))
    theta_star = theta0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta0.shape)
    apply_flat = lambda th, xb: net.apply(unravel(th), xb)  # noqa: E731
    state = datm.init_syn_state(cfg, _rng_images(2, n, s), jax.random.normal(jax.random.PRNGKey(3),
                                                                            (n, s.num_classes)), 0.01)
    step = datm.make_outer_step(apply_flat, cfg)
    key = jax.random.PRNGKey(4)
    b = min(cfg.batch_syn, n)
    return Built(call=lambda *d: step(*d), lower=lambda *d: step.lower(*d), dyn=(state, theta0, theta_star, key),
                 advance=lambda out, d: (out[0], d[1], d[2], jax.random.fold_in(d[3], 1)),
                 images=cfg.syn_steps * b, images_formula="syn_steps x batch_syn (student steps, fwd+bwd)",
                 info=dict(syn_steps=cfg.syn_steps, batch_syn=b, n_syn=n, params=int(theta0.size)))


def build_dance(s: Shape, **_) -> Built:
    import jax
    import jax.numpy as jnp
    import optax

    from jaxdistill.configs.dance import get_config
    from jaxdistill.methods import dance as D
    from jaxdistill.nn import NetConfig, make_net

    cfg = get_config(s.dataset, s.ipc if not s.small else 1, "paper").replace(ipc=s.ipc, width=s.width)
    if s.small:
        cfg = cfg.replace(batch_real=8, batch_syn_max=16, num_premodel=2, pool_size=2)
    net = make_net(NetConfig(s.num_classes, width=s.width, depth=cfg.depth, norm=cfg.norm))
    per_class = 5000 if s.num_classes == 10 else 500
    if s.small:
        per_class = 16
    n_real = s.num_classes * per_class
    y = np.repeat(np.arange(s.num_classes), per_class)
    table, counts = D.class_buckets_table(y, s.num_classes)
    pool = lambda k: jax.vmap(lambda kk: net.init(kk, (s.size, s.size, s.channels)))(  # noqa: E731
        jax.random.split(jax.random.PRNGKey(k), cfg.num_premodel))
    n_syn = min(cfg.batch_syn_max, s.ipc * cfg.factor ** 2)
    st = D.Statics(num_classes=s.num_classes, ipc=s.ipc, factor=cfg.factor, n_real=cfg.batch_real, n_syn=n_syn,
                   num_premodel=cfg.num_premodel, iter_calib=cfg.iter_calib, batched=cfg.batched_classes)
    tx = optax.sgd(cfg.image_lr, momentum=cfg.mom_img)
    step = D.make_iteration(net, st, tx)
    syn = _rng_images(5, s.num_classes * s.ipc, s)
    mean = jnp.asarray(cfg.mean if cfg.mean is not None else (0.5,) * s.channels, jnp.float32)
    std = jnp.asarray(cfg.std if cfg.std is not None else (0.25,) * s.channels, jnp.float32)
    dyn = (syn, tx.init(syn), jax.random.PRNGKey(0), pool(1), pool(2), _rng_images(6, n_real, s),
           jnp.asarray(table), jnp.asarray(counts), mean, std)
    imgs = s.num_classes * (cfg.batch_real + n_syn * (1 + cfg.iter_calib))
    return Built(call=lambda *d: step(*d), lower=lambda *d: step.lower(*d), dyn=dyn,
                 advance=lambda out, d: (out[0], out[1], jax.random.fold_in(d[2], 1)) + tuple(d[3:]),
                 images=imgs, images_formula="C x (batch_real + n_syn x (1 + iter_calib))",
                 info=dict(factor=cfg.factor, batch_real=cfg.batch_real, n_syn=n_syn, num_premodel=cfg.num_premodel,
                           real_images=n_real))


def build_rcig(s: Shape, **_) -> Built:
    import jax
    import jax.numpy as jnp

    from jaxdistill.configs.rcig import get_config
    from jaxdistill.methods import rcig

    cfg = get_config(s.dataset, s.ipc if not s.small else 1, "paper").replace(ipc=s.ipc, width=s.width)
    if s.small:
        cfg = cfg.replace(pool_size=2, real_batch=32, n_inner=3, n_hinv=3, pool_max_steps=3)
    prob = rcig.make_problem(cfg, s.num_classes, (s.size, s.size, s.channels))
    n = s.num_classes * s.ipc
    y_proto = jax.nn.one_hot(jnp.arange(n) // s.ipc, s.num_classes) - 1.0 / s.num_classes
    state = prob.init_state(_rng_images(7, n, s), y_proto, jax.random.PRNGKey(8))
    n_train = min(50000, 8 * cfg.real_batch)
    xtr = _rng_images(9, n_train, s)
    ytr = jax.nn.one_hot(jnp.arange(n_train) % s.num_classes, s.num_classes)
    step = rcig._jit_step  # the module's own jitted step (Problem static)
    rows = n * (2 if cfg.use_flip else 1)
    return Built(call=lambda *d: step(prob, *d), lower=lambda *d: step.lower(prob, *d),
                 dyn=(state, xtr, ytr, jax.random.PRNGKey(10)), advance=lambda out, d: (out[0],) + tuple(d[1:]),
                 images=min(cfg.real_batch, n_train) + rows,
                 images_formula="real_batch + coreset rows (flips included)",
                 info=dict(coreset=n, rows=rows, real_batch=min(cfg.real_batch, n_train), n_inner=cfg.n_inner,
                           n_hinv=cfg.n_hinv, pool_size=cfg.pool_size))


def _epoch_built(net, tc, x, t, k: int, key_int: int, epochs_per_call: int, formula: str, info: dict) -> Built:
    import jax

    from jaxdistill import train as T

    n = x.shape[0]
    n_steps, batch = T.steps_per_epoch(n, tc.batch_size)
    epochs = tc.epochs if tc.steps is None else math.ceil(tc.steps / n_steps)
    tx = T.make_optimizer(tc, epochs * n_steps)
    state = T.init_state(net, tc, jax.random.PRNGKey(key_int), k, tuple(x.shape[1:]), tx)
    run = T.make_epoch_fn(net, tc, n, tx)
    return Built(call=lambda *d: run(*d, epochs_per_call), lower=lambda *d: run.lower(*d, epochs_per_call),
                 dyn=(state, x, t), advance=lambda out, d: (out[0], d[1], d[2]),
                 images=k * n_steps * batch * epochs_per_call, images_formula=formula, per_call=epochs_per_call,
                 info=dict(info, models=k, steps_per_epoch=n_steps, batch=batch))


def build_train(s: Shape, models: int = 4, **_) -> Built:
    import jax

    from jaxdistill.configs.datm import get_config
    from jaxdistill.nn import make_net

    cfg = get_config(s.dataset, 10 if not s.small else 1, "paper").replace(width=s.width)
    tc = cfg.expert_train_config()
    n = 50000 if not s.small else 256
    if s.small:
        tc = tc.replace(batch_size=64)
        models = min(models, 2)
    net = make_net(cfg.net_config(s.num_classes))
    x = _rng_images(11, n, s)
    t = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(12), (n,), 0, s.num_classes), s.num_classes)
    return _epoch_built(net, tc, x, t, models, 13, 1, "K x steps x batch (x2 grads with GSAM)",
                        dict(n_train=n, sam_rho=tc.sam_rho, augment=tc.augment))


def build_eval(s: Shape, eval_k: int = 5, protocol: str = "standard", **_) -> Built:
    import jax

    from jaxdistill.evaluate import get_protocol
    from jaxdistill.nn import make_net

    n = s.num_classes * s.ipc
    p = get_protocol(protocol, num_images=n, num_classes=s.num_classes, image_size=s.size, width=s.width,
                     preset="paper")
    if s.small:
        eval_k = min(eval_k, 2)
    net = make_net(p.net)
    x = _rng_images(14, n, s)
    t = jax.nn.one_hot(jax.numpy.arange(n) // s.ipc, s.num_classes)
    return _epoch_built(net, p.train, x, t, eval_k, 15, 10, "k x steps x batch per epoch",
                        dict(protocol=protocol, n_images=n))


BUILDERS = {"datm": build_datm, "dance": build_dance, "rcig": build_rcig, "train": build_train, "eval": build_eval}


# ------------------------------------------------------------------------------------------------
# FLOPs from the jaxpr (loop-aware)
# ------------------------------------------------------------------------------------------------

_FREE = {"reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice",
         "dynamic_update_slice", "gather", "scatter", "concatenate", "pad", "select_n", "convert_element_type",
         "iota", "copy", "copy_p", "rev", "stop_gradient", "random_bits", "random_seed", "random_wrap",
         "random_unwrap", "threefry2x32", "shift_right_logical", "shift_left", "or", "and", "xor", "not",
         "bitcast_convert_type", "eq", "ne", "lt", "le", "gt", "ge", "device_put", "sharding_constraint",
         "pjit", "closed_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "remat",
         "checkpoint", "pcast", "pvary", "split", "clamp", "sort", "argsort", "top_k", "argmax", "argmin",
         "scatter-add", "scatter_add", "psum", "pmean", "all_gather", "shard_map", "while", "scan", "cond"}


def _size(aval) -> int:
    return int(np.prod(getattr(aval, "shape", ()) or (1,)))


def _taps_1d(n_in: int, window: int, n_out: int, pad_lo: int, stride: int, lhs_dil: int, rhs_dil: int) -> int:
    """Window taps, summed over the output positions of one spatial dim, that land on real input (not on
    padding or lhs-dilation holes)."""
    o = np.arange(n_out)[:, None] * stride + np.arange(window)[None, :] * rhs_dil - pad_lo
    return int(np.sum((o >= 0) & (o <= (n_in - 1) * lhs_dil) & (o % lhs_dil == 0)))


def _conv_flops(eqn) -> float:
    """2 x multiply-adds of a convolution that touch real input. JAX's transposes of second-order conv
    gradients are convolutions whose window is a whole feature map sliding over a padded 3x3 kernel;
    counting window x output would overcount those ~3x, counting real taps matches the patches+matmul
    path (same maths as dot_generals)."""
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs, rhs, out = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
    taps = 1
    for d in range(len(dn.lhs_spec) - 2):
        taps *= _taps_1d(lhs[dn.lhs_spec[2 + d]], rhs[dn.rhs_spec[2 + d]], out[dn.out_spec[2 + d]], p["padding"][d][0],
                         p["window_strides"][d], p["lhs_dilation"][d], p["rhs_dilation"][d])
    # out batch x out features x (in features per group) x real taps; batch groups split the output features.
    return 2.0 * out[dn.out_spec[0]] * out[dn.out_spec[1]] * rhs[dn.rhs_spec[1]] * taps


def jaxpr_flops(jaxpr) -> tuple[float, float, int]:
    """(total FLOPs, dot/conv FLOPs, number of while loops counted once) of a (Closed)Jaxpr."""
    from jax.extend import core as jcore

    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = mm = 0.0
    whiles = 0

    def sub_jaxprs(params):
        for v in params.values():
            for item in (v if isinstance(v, (tuple, list)) else (v,)):
                if isinstance(item, (jcore.Jaxpr, jcore.ClosedJaxpr)):
                    yield item

    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            k = int(np.prod([eqn.invars[0].aval.shape[i] for i in lc])) if lc else 1
            f = 2.0 * _size(eqn.outvars[0].aval) * k
            total += f
            mm += f
        elif name == "conv_general_dilated":
            f = _conv_flops(eqn)
            total += f
            mm += f
        elif name == "scan":
            t, m, w = jaxpr_flops(eqn.params["jaxpr"])
            total += eqn.params["length"] * t
            mm += eqn.params["length"] * m
            whiles += w
        elif name == "cond":
            best = max((jaxpr_flops(b) for b in eqn.params["branches"]), key=lambda r: r[0])
            total, mm, whiles = total + best[0], mm + best[1], whiles + best[2]
        elif name == "while":
            t, m, w = jaxpr_flops(eqn.params["body_jaxpr"])
            total, mm, whiles = total + t, mm + m, whiles + w + 1
        else:
            subs = list(sub_jaxprs(eqn.params))
            if subs:
                for sj in subs:
                    t, m, w = jaxpr_flops(sj)
                    total, mm, whiles = total + t, mm + m, whiles + w
            elif name.startswith("reduce_") or name in ("cumsum", "cumprod", "cummax", "argmax", "argmin"):
                total += sum(_size(v.aval) for v in eqn.invars if hasattr(v, "aval"))
            elif name not in _FREE:
                total += sum(_size(v.aval) for v in eqn.outvars)
    return total, mm, whiles


# ------------------------------------------------------------------------------------------------
# Measuring one case
# ------------------------------------------------------------------------------------------------

def device_info() -> dict:
    import jax

    d = jax.devices()[0]
    kind = d.device_kind
    peak = PEAKS if any(k in kind for k in ("H100", "H200")) else None
    return {"platform": d.platform, "device_kind": kind, "num_devices": jax.device_count(), "jax": jax.__version__,
            "peak_flops": peak, "peak_note": ("H100/H200 SXM dense peaks; util_fp32 against fp32 non-tensor "
                                              "(66.9 TFLOP/s), util_tf32 against TF32 tensor (494.7)")
            if peak else "no peak table for this device"}


def memory_now() -> dict:
    import jax

    d = jax.devices()[0]
    stats = d.memory_stats() if d.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return {"peak_bytes": int(stats["peak_bytes_in_use"]), "memory_kind": f"{d.platform} peak_bytes_in_use"}
    return {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "memory_kind": "process max RSS"}


def _sync(out):
    import jax

    jax.block_until_ready(jax.tree_util.tree_leaves(out))


def measure(component: str, shape: Shape, repeats: int = 5, **build_kw) -> dict:
    """Build, compile, run once, then time `repeats` iterations; returns one result row."""
    import jax

    row: dict[str, Any] = {"component": component, "setting": shape.name, "dataset": shape.dataset,
                           "ipc": shape.ipc, "width": shape.width, "size": shape.size, **build_kw}
    mem0 = memory_now()
    b = BUILDERS[component](shape, **build_kw)
    row.update(b.info)
    row["images_formula"] = b.images_formula
    jaxpr = jax.make_jaxpr(b.call)(*b.dyn)
    row["flops_jaxpr"], row["flops_matmul"], row["while_counted_once"] = jaxpr_flops(jaxpr)
    t0 = time.perf_counter()
    lowered = b.lower(*b.dyn)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    row["flops_xla"] = float(ca.get("flops", float("nan"))) if ca else None
    row["lower_s"], row["compile_s"] = t1 - t0, t2 - t1
    dyn = b.dyn
    t0 = time.perf_counter()
    out = compiled(*dyn)
    _sync(out)
    row["first_call_s"] = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        dyn = b.advance(out, dyn)
        t0 = time.perf_counter()
        out = compiled(*dyn)
        _sync(out)
        times.append((time.perf_counter() - t0) / b.per_call)
    med = statistics.median(times)
    row.update(iters=repeats, per_call=b.per_call, median_s=med, min_s=min(times), times_s=times,
               images_per_iter=b.images // b.per_call, images_per_s=(b.images / b.per_call) / med)
    per_iter_flops = row["flops_jaxpr"] / b.per_call
    row["flop_per_s"] = per_iter_flops / med
    peak = PEAKS if any(k in jax.devices()[0].device_kind for k in ("H100", "H200")) else None
    row["util_fp32"] = row["flop_per_s"] / peak["fp32"] if peak else None
    row["util_tf32"] = row["flop_per_s"] / peak["tf32"] if peak else None
    mem = memory_now()
    row.update(mem)
    row["rss_before_build_bytes"] = mem0["peak_bytes"] if mem0["memory_kind"] == "process max RSS" else None
    return row


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------

def cases(only: list[str], settings: list[str]) -> list[tuple[str, str]]:
    out = []
    for comp in only:
        seen_ds = set()
        for st in settings:
            if comp == "train":  # depends on the data set only
                ds = (SMALL_SETTINGS.get(st) or SETTINGS.get(st))[0]
                if ds in seen_ds:
                    continue
                seen_ds.add(ds)
            out.append((comp, st))
    return out


def case_spec(comp: str, setting: str, args, shape_over: Optional[dict] = None,
              build_kw: Optional[dict] = None) -> dict:
    """A JSON-able description of one case (what a subprocess needs to rebuild it)."""
    kw = {"train": {"models": args.train_models}, "eval": {"eval_k": args.eval_k}}.get(comp, {})
    return {"component": comp, "setting": setting, "small": bool(args.small), "repeats": int(args.repeats),
            "shape_over": shape_over or {}, "build_kw": dict(kw, **(build_kw or {}))}


def run_spec(spec: dict) -> dict:
    """Measure one case in this process; errors (e.g. out of memory) become an 'error' row."""
    try:
        shape = make_shape(spec["setting"], spec["small"], **spec.get("shape_over", {}))
        if spec.get("shape_over", {}).get("ipc"):
            shape = shape._replace(name=f"{shape.name.split('_')[0]}_ipc{shape.ipc}")
        return measure(spec["component"], shape, repeats=spec["repeats"], **spec.get("build_kw", {}))
    except Exception as e:  # noqa: BLE001 - report the case and go on
        return {"component": spec["component"], "setting": spec["setting"],
                "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"}


def run_spec_isolated(spec: dict, timeout: int) -> dict:
    """Measure one case in a fresh Python process (its own device-memory peak)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"component": spec["component"], "setting": spec["setting"], "error": f"timeout after {timeout} s"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("ROW ")]
    if p.returncode != 0 or not lines:
        err = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
        return {"component": spec["component"], "setting": spec["setting"], "error": err}
    return json.loads(lines[-1][4:])


def run_case(spec: dict, isolate: bool, timeout: int = 900) -> dict:
    return run_spec_isolated(spec, timeout) if isolate else run_spec(spec)


def _fmt(v, scale=1.0, nd=1):
    return "-" if v is None else f"{v * scale:.{nd}f}"


def markdown(rows: list[dict], dev: dict) -> str:
    head = (f"Device: {dev['device_kind']} ({dev['platform']}, {dev['num_devices']} device(s)), jax {dev['jax']}. "
            f"{dev['peak_note']}.\n\n"
            "| component | setting | ms/iter (median) | compile s | first call s | peak MiB | images/s | "
            "GFLOP/iter (jaxpr) | GFLOP/call (XLA, loops once) | TFLOP/s | util fp32 | util tf32 |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['component']} | {r['setting']} | error: {r['error']} |||||||||| |")
            continue
        lines.append("| {c} | {s} | {t} | {cs} | {fc} | {m} | {ips} | {gf} | {gx} | {tf} | {u1} | {u2} |".format(
            c=r["component"], s=r["setting"], t=_fmt(r["median_s"], 1e3), cs=_fmt(r["compile_s"], 1, 2),
            fc=_fmt(r["first_call_s"], 1, 2), m=_fmt(r["peak_bytes"], 2 ** -20, 0), ips=_fmt(r["images_per_s"], 1, 0),
            gf=_fmt(r["flops_jaxpr"] / r["per_call"], 1e-9, 2), gx=_fmt(r["flops_xla"], 1e-9, 2),
            tf=_fmt(r["flop_per_s"], 1e-12, 3), u1=_fmt(r["util_fp32"], 100, 1) + ("%" if r["util_fp32"] else ""),
            u2=_fmt(r["util_tf32"], 100, 1) + ("%" if r["util_tf32"] else "")))
    foot = ("\n\nPeak memory is `memory_stats()['peak_bytes_in_use']` on GPU (per case when isolated) and the "
            "process max RSS on CPU (cumulative in-process). GFLOP (XLA) counts loop bodies once; the jaxpr count "
            "multiplies scan bodies by their length and is the one used for TFLOP/s.\n")
    return head + "\n".join(lines) + foot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU-sized shapes")
    ap.add_argument("--only", default=",".join(COMPONENTS), help=f"comma list of {','.join(COMPONENTS)}")
    ap.add_argument("--settings", default=None, help="comma list of settings (default: all of the mode's)")
    ap.add_argument("--repeats", type=int, default=None, help="timed iterations after the first (default 5; 2 small)")
    ap.add_argument("--train-models", type=int, default=4, help="K models per training epoch (default 4)")
    ap.add_argument("--eval-k", type=int, default=5, help="evaluator nets (default 5)")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/<device>)")
    iso = ap.add_mutually_exclusive_group()
    iso.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                     help="one subprocess per case (default on GPU)")
    iso.add_argument("--no-isolate", dest="isolate", action="store_false")
    ap.add_argument("--case-timeout", type=int, default=900)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: a case spec (JSON) -> one ROW
    ap.add_argument("--whole-run", action="store_true",
                    help="distill() end to end per distiller against its compiled step (benchmarks/whole_run.py)")
    args = ap.parse_args(argv)
    if args.whole_run:
        import whole_run

        only = [m for m in args.only.split(",") if m in whole_run.METHODS] if args.only != ",".join(COMPONENTS) \
            else list(whole_run.METHODS)
        return whole_run.main((["--small"] if args.small else []) + ["--only", ",".join(only)])
    if args.repeats is None:
        args.repeats = 2 if args.small else 5
    from jaxdistill.errors import ConfigError

    if args.one:
        print("ROW " + json.dumps(run_spec(json.loads(args.one))), flush=True)
        return 0
    only = [c for c in args.only.split(",") if c]
    bad = [c for c in only if c not in COMPONENTS]
    if bad:
        raise ConfigError(f"--only {bad} not known; allowed: {list(COMPONENTS)}")
    table = SMALL_SETTINGS if args.small else SETTINGS
    settings = args.settings.split(",") if args.settings else list(table)
    bad = [s for s in settings if s not in table]
    if bad:
        mode = " with --small" if args.small else ""
        raise ConfigError(f"--settings {bad} not known{mode}; allowed: {sorted(table)}")
    dev = device_info()
    isolate = args.isolate if args.isolate is not None else dev["platform"] != "cpu"
    out_dir = args.out or os.path.join(ROOT, "benchmarks", "results", dev["device_kind"].replace(" ", "_"))
    os.makedirs(out_dir, exist_ok=True)
    print(f"# {dev['device_kind']} ({dev['platform']}), jax {dev['jax']}; isolate={isolate}; out={out_dir}", flush=True)
    rows = []
    for comp, setting in cases(only, settings):
        r = run_case(case_spec(comp, setting, args), isolate, args.case_timeout)
        rows.append(r)
        brief = {k: r.get(k) for k in ("component", "setting", "median_s", "compile_s", "peak_bytes", "images_per_s",
                                       "flop_per_s", "util_fp32", "error") if k in r}
        print(json.dumps(brief), flush=True)
    payload = {"device": dev, "small": args.small, "isolated": isolate, "rows": rows,
               "argv": sys.argv[1:] if argv is None else list(argv)}
    from jaxdistill.checkpoint import atomic_write_json, atomic_write_text

    atomic_write_json(os.path.join(out_dir, "run.json"), payload)
    md = markdown(rows, dev)
    atomic_write_text(os.path.join(out_dir, "run.md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
