"""The main job: noise -> baseline -> distill each method -> evaluate -> report, resumable by stage.

Every stage writes its result atomically under the output directory; a re-run with the same config
loads finished stages instead of recomputing them, and an interrupted distillation resumes from its
own checkpoints (each method's `workdir`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zlib
from typing import Callable, Optional

import jax
import numpy as np

from jaxdistill.checkpoint import atomic_copy, atomic_save_npz, atomic_write_json, ensure_out_dir, read_json
from jaxdistill.errors import ConfigError
from jaxdistill.train import without_added_defaults

log = logging.getLogger("jaxdistill")

from jaxdistill.configs.presets import PRESETS, training_subset  # noqa: E402

EXTRA_METHODS = ("coteaching", "jocor")  # noisy-label training baselines, not distillers


# Every part shrunk to seconds: for smoke tests of the whole job (tests, `experiments/grid.py --tiny`).
TINY_OVERRIDES = {
    "baseline": {"width": 8, "k": 2, "epochs": 2},
    "eval": {"width": 8, "steps": 20},
    "datm": {"iterations": 3, "syn_steps": 4, "width": 8, "num_experts": 2, "expert_train_epochs": 3,
             "max_start_epoch": 1, "current_max_start_epoch": 1, "batch_syn": 10, "checkpoint_every": 2},
    "dance": {"iterations": 3, "width": 8, "pool_size": 2, "num_premodel": 2, "pretrain_epochs": 1,
              "checkpoint_every": 2},
    "rcig": {"iterations": 3, "width": 4, "n_inner": 2, "n_hinv": 2, "pool_size": 2, "tune_lr": False,
             "checkpoint_every": 2},
}


@dataclasses.dataclass(frozen=True)
class DenoiseConfig:
    """One run of the main job. protocols: 'standard' (common, hard labels) and/or 'own' (the method's)."""

    dataset: str = "fashion_mnist"
    noise: str = "symmetric:0.4"
    methods: tuple = ("datm", "dance", "rcig")
    ipc: int = 10
    preset: str = "quick"
    seed: int = 0
    k: int = 5
    subset: Optional[int] = None
    val_fraction: float = 0.1
    # None: ("standard",) at the quick preset (the 10-minute job trades the methods' own protocols for the
    # controls), else ("standard", "own").
    protocols: Optional[tuple] = None
    # Controls evaluated beside the distilled sets (jaxdistill.controls): random_noisy, random_clean, selected.
    controls: tuple = ("random_noisy", "random_clean", "selected")
    # Protocols the controls are evaluated under: "standard" only, or "all" (also each method's own).
    control_protocols: str = "standard"
    # Independent draws of each random control; their nets are pooled, so the control's spread includes how
    # much a random draw of ipc images per class varies (not only the evaluation nets).
    control_draws: int = 1
    clean_baseline: bool = True
    data_dir: Optional[str] = None
    # Field overrides per part: {"<method>": {config field: value}, "baseline": {"width", "k", "epochs"},
    # "eval": {"width", "steps" or "epochs"}} (for small test runs and sweeps).
    overrides: Optional[dict] = None

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r} is not one of {list(PRESETS)}")
        if not isinstance(self.ipc, int) or self.ipc < 1:
            raise ConfigError(f"ipc={self.ipc!r} must be an integer >= 1")
        if self.protocols is None:
            object.__setattr__(self, "protocols", ("standard",) if self.preset == "quick" else ("standard", "own"))
        object.__setattr__(self, "protocols", tuple(self.protocols))
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k={self.k!r} evaluation nets must be an integer >= 1")
        for p in self.protocols:
            if p not in ("standard", "own"):
                raise ConfigError(f"protocol {p!r} is not one of ['standard', 'own']")
        from jaxdistill.controls import CONTROLS

        for c in self.controls:
            if c not in CONTROLS:
                raise ConfigError(f"control {c!r} is not one of {list(CONTROLS)}")
        if not isinstance(self.control_draws, int) or self.control_draws < 1:
            raise ConfigError(f"control_draws={self.control_draws!r} must be an integer >= 1")
        if self.control_protocols not in ("standard", "all"):
            raise ConfigError(f"control_protocols={self.control_protocols!r} is not one of ['standard', 'all']")
        if not self.methods:
            raise ConfigError("methods is empty; give at least one of datm, dance, rcig, coteaching, jocor")
        for part in (self.overrides or {}):
            if part not in ("baseline", "eval", *self.methods):
                raise ConfigError(f"overrides for {part!r}: allowed parts are baseline, eval and the methods run "
                                  f"{list(self.methods)}")

    def part(self, name: str) -> dict:
        return dict((self.overrides or {}).get(name, {}))

    def effective_subset(self) -> Optional[int]:
        if self.subset is not None:
            return self.subset or None
        return training_subset(self.dataset, self.preset)


def stage_key(seed: int, name: str) -> jax.Array:
    """A key per stage that does not depend on which other stages ran (so resume is exact)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def load_noisy_data(dataset: str, noise: str, seed: int = 0, subset: Optional[int] = None,
                    val_fraction: float = 0.0, data_dir: Optional[str] = None):
    from jaxdistill.data import load_dataset, make_noisy_data

    ds = load_dataset(dataset, data_dir=data_dir)
    return make_noisy_data(ds, noise, seed=seed, val_fraction=val_fraction, subset=subset)


def _check_methods(methods) -> None:
    from jaxdistill.methods import list_methods

    allowed = list_methods() + list(EXTRA_METHODS)
    for m in methods:
        if m not in allowed:
            raise ConfigError(f"unknown method {m!r}; allowed: {allowed}")


def own_protocol(method: str) -> str:
    return method if method in ("datm", "dance", "rcig") else "standard"


class Stages:
    """Finished-stage cache under out_dir/stages/*.json.

    mirror: a second directory (e.g. under experiments/results/, committed) that receives a copy of every
    finished stage and of the files it names (a distilled set), and from which a fresh run directory takes the
    stages it lacks, so that a cell's finished stages outlive its run directory. on_put(paths): called with the
    mirror paths written after each stage (to commit them)."""

    def __init__(self, out_dir: str, mirror: Optional[str] = None, on_put: Optional[Callable] = None):
        self.out_dir, self.mirror, self.on_put = out_dir, mirror, on_put
        self.dir = os.path.join(out_dir, "stages")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name.replace("/", "_") + ".json")

    def _mirrored(self, path: str) -> Optional[str]:
        return None if self.mirror is None else os.path.join(self.mirror, os.path.relpath(path, self.out_dir))

    def restore(self, path: str) -> bool:
        """Copy `path` (under out_dir) from the mirror when it is missing here; True if it exists now."""
        src = self._mirrored(path)
        if not os.path.exists(path) and src is not None and os.path.exists(src):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_copy(src, path)
        return os.path.exists(path)

    def get(self, name: str) -> Optional[dict]:
        self.restore(self.path(name))
        return read_json(self.path(name))

    def put(self, name: str, value: dict, files: tuple = ()) -> dict:
        """Write the stage; with a mirror, copy it and `files` (paths under out_dir, written before) there."""
        atomic_write_json(self.path(name), value)
        if self.mirror is not None:
            written = []
            for f in (*files, self.path(name)):  # the stage last: a mirror stage always has its files
                if os.path.exists(f):
                    dst = self._mirrored(f)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    atomic_copy(f, dst)
                    written.append(dst)
            cfg = os.path.join(self.mirror, "config.json")  # the config the mirror's stages belong to
            if os.path.exists(cfg):
                written.insert(0, cfg)
            if self.on_put is not None:
                self.on_put(written)
        return value


# Config fields a finished run may change on resume: every stage they add is keyed on its own and the
# stages already there stay valid (more control draws only add control evaluations).
_RESUMABLE_CHANGES = ("control_draws",)


def _config_guard(out_dir: str, cfg: DenoiseConfig) -> None:
    path = os.path.join(out_dir, "config.json")
    mine = json.loads(json.dumps(dataclasses.asdict(cfg)))
    old = read_json(path)
    if old is not None:
        # A run from before a resumable field existed ran with that field's default (e.g. one control draw).
        old = {**{f.name: f.default for f in dataclasses.fields(DenoiseConfig) if f.name in _RESUMABLE_CHANGES},
               **old}
    if old is not None and old != mine:
        diff = {k: (old.get(k), mine.get(k)) for k in set(old) | set(mine) if old.get(k) != mine.get(k)}
        if not set(diff) <= set(_RESUMABLE_CHANGES):
            raise ConfigError(f"{out_dir!r} holds a run with a different config {diff} (old, new); "
                              "use another --out or delete it")
    if old != mine:
        atomic_write_json(path, mine)


def _replace_checked(obj, kw: dict, what: str):
    fields = {f.name for f in dataclasses.fields(obj)}
    bad = sorted(set(kw) - fields)
    if bad:
        raise ConfigError(f"{what} has no field(s) {bad}; known fields: {sorted(fields)}")
    return dataclasses.replace(obj, **kw)


def baseline_config(cfg: DenoiseConfig, data=None):
    """The baseline's config for the run (derived from `data` for a data set without a named setting)."""
    from jaxdistill.baseline import get_baseline_config

    b = get_baseline_config(cfg.dataset, cfg.preset, data)
    ov = cfg.part("baseline")
    train_kw = {k: ov.pop(k) for k in list(ov) if k in ("epochs", "batch_size", "lr")}
    b = _replace_checked(b, ov, "baseline config")
    return dataclasses.replace(b, train=b.train.replace(**train_kw)) if train_kw else b


def method_config(cfg: DenoiseConfig, method: str, data=None):
    """The method's setting for the run: at the paper preset the study's own setting for the run's data set,
    IPC and noise (`configs/study.py`), at the quick preset the CPU setting; a data set without a named
    setting gets one derived from `data` (`configs/derive.py`); then the run's overrides."""
    from jaxdistill.configs.study import run_config

    mcfg = run_config(method, cfg.dataset, cfg.ipc, cfg.preset, cfg.noise, data=data)
    return _replace_checked(mcfg, cfg.part(method), f"{method} config")


@dataclasses.dataclass
class RunSettings:
    """Every setting a denoise run needs, resolved from the config and the loaded data before any work.

    ipc: the IPC the run distils and draws controls at (the requested one, capped at the smallest class for
    derived data); methods: name -> config (distillers and the extra baselines); protocols: the evaluation
    protocols it will use, checked at the expected set size; derived_from: `Derivation.to_dict()` for a data
    set without a named setting, else None."""

    ipc: int
    baseline: object
    methods: dict
    protocols: dict
    derived_from: Optional[dict] = None


class _SetShape:
    """Stands in for a distilled set when a protocol is checked before the set exists."""

    def __init__(self, num_images: int, image_shape: tuple):
        self.num_images, self.lr = num_images, None
        self.images = np.zeros((0, *image_shape), np.float32)


def check_protocols(names, data, ipc: int, preset: str) -> None:
    """Build each evaluation protocol a command will run, at the expected set size, before any work."""
    shape = _SetShape(ipc * data.num_classes, tuple(data.x_train.shape[1:]))
    for name in names:
        protocol_for(name, shape, data.num_classes, preset)


def derived_record(dataset: str, data, ipc: Optional[int], preset: str, echo=print) -> dict:
    """{"derived_from": ...} for a data set without a named setting (its settings are derived from the data,
    `configs/derive.py`), said once through `echo`; {} for a named data set."""
    from jaxdistill.configs.derive import derive

    d = derive(dataset, data, ipc)
    if d is None:
        return {}
    dd = d.to_dict(preset)
    echo(f"settings: derived from the data ({'x'.join(map(str, dd['image_shape']))} images, {dd['num_classes']} "
         f"classes, {dd['n_train']} training images): template {dd['template']}"
         + (f"; {dd['ipc_note']}" if "ipc_note" in dd else ""))
    return {"derived_from": dd}


def resolve_settings(cfg: DenoiseConfig, data) -> RunSettings:
    """Resolve the baseline config, every method's config and every evaluation protocol of the run up front
    (right after the data is loaded), so a missing or bad setting fails in the first second with its
    ConfigError, before the baseline trains."""
    from jaxdistill.configs.derive import derive

    _check_methods(cfg.methods)
    d = derive(cfg.dataset, data, cfg.ipc)
    ipc = cfg.ipc if d is None else d.ipc
    run_cfg = dataclasses.replace(cfg, ipc=ipc) if ipc != cfg.ipc else cfg
    methods = {m: (_extra_config(m, run_cfg) if m in EXTRA_METHODS else method_config(run_cfg, m, data))
               for m in cfg.methods}
    from jaxdistill.configs.datm import check_batch_syn

    for mcfg in methods.values():
        if hasattr(mcfg, "batch_syn"):  # DATM's synthetic batches slice the C*ipc images evenly
            check_batch_syn(mcfg.batch_syn, ipc * data.num_classes)
    shape = _SetShape(ipc * data.num_classes, tuple(data.x_train.shape[1:]))
    names = {own_protocol(m) if p == "own" else "standard" for m in cfg.methods if m not in EXTRA_METHODS
             for p in cfg.protocols}
    if cfg.controls:
        names.add("standard")
        if cfg.control_protocols == "all":
            names |= {own_protocol(m) for m in cfg.methods if m not in EXTRA_METHODS}
    protocols = {p: eval_protocol(cfg, p, shape, data.num_classes) for p in sorted(names)}
    return RunSettings(ipc=ipc, baseline=baseline_config(cfg, data), methods=methods, protocols=protocols,
                       derived_from=None if d is None else d.to_dict(cfg.preset))


def eval_protocol(cfg: DenoiseConfig, name: str, distilled, num_classes: int):
    """The named protocol at the run's preset, with the run's eval overrides applied."""
    ov = cfg.part("eval")
    return protocol_for(name, distilled, num_classes, cfg.preset, width=ov.pop("width", None), train_overrides=ov)


def protocol_for(name: str, distilled, num_classes: int, preset: str, width: Optional[int] = None,
                 train_overrides: Optional[dict] = None):
    """`get_protocol(name)` sized for this set (its image count, size, channels and learned lr) at `preset`;
    width replaces the protocol net's width, train_overrides fields of its TrainConfig (checked by name)."""
    from jaxdistill.evaluate import get_protocol

    p = get_protocol(name, num_images=distilled.num_images, num_classes=num_classes,
                     image_size=distilled.images.shape[1], preset=preset, lr=distilled.lr, width=width,
                     channels=distilled.images.shape[-1])
    if train_overrides:
        p = dataclasses.replace(p, train=_replace_checked(p.train, train_overrides, "evaluation train config"))
    return p


def run_denoise(cfg: DenoiseConfig, out_dir: str, progress: bool = True, echo=print, *,
                stage_mirror: Optional[str] = None, on_stage: Optional[Callable] = None,
                only: Optional[tuple] = None) -> dict:
    """Run (or resume) the whole job; returns the results.json document.

    stage_mirror / on_stage: a copy of every finished stage there, and finished stages taken from there
    (`Stages`): a cell's progress survives its run directory. only=('baseline',): run the baseline stage only
    (returns {'baseline': stage}); for a cell whose other stages are done elsewhere."""
    from jaxdistill.baseline import run_baseline
    from jaxdistill.evaluate import evaluate
    from jaxdistill.methods import INITIAL_FILE, DistilledSet, distill
    from jaxdistill import report
    from jaxdistill.runlog import MetricsLog

    _check_methods(cfg.methods)
    if only not in (None, ("baseline",)):
        raise ConfigError(f"only={only!r}; allowed None (the whole job) or ('baseline',)")
    ensure_out_dir(out_dir, "out_dir")
    _config_guard(out_dir, cfg)
    if stage_mirror is not None:
        ensure_out_dir(stage_mirror, "stage_mirror")
        _config_guard(stage_mirror, cfg)  # the mirror's stages were made by this config or are refused
    stages = Stages(out_dir, stage_mirror, on_stage)
    timings: dict = {}

    t0 = time.perf_counter()
    data = load_noisy_data(cfg.dataset, cfg.noise, cfg.seed, cfg.effective_subset(), cfg.val_fraction, cfg.data_dir)
    timings["data + noise"] = time.perf_counter() - t0
    # Every setting the run needs (baseline, methods, evaluation protocols; derived for a data set without
    # a named setting) is resolved here, so a bad one fails now and not after the baseline has trained.
    settings = resolve_settings(cfg, data)
    ipc = settings.ipc
    noise = report.noise_entry(data)
    atomic_save_npz(os.path.join(out_dir, "noisy_labels.npz"), y_noisy=data.y_noisy,
                    y_true=data.y_true if data.y_true is not None else np.zeros(0, np.int32),
                    train_index=data.train_index if data.train_index is not None else np.zeros(0, np.int64))
    if data.noise is not None:
        from jaxdistill.noise import empirical_transition

        # The realized matrix (counts of this draw), not the specification's expectation.
        T = (empirical_transition(data.y_true, data.y_noisy, data.num_classes) if data.y_true is not None
             else data.noise.transition)
        report.plot_transition(os.path.join(out_dir, "noise.png"), T, data.class_names,
                               f"{cfg.dataset}, {noise.get('spec')}: realized rate {100 * noise['realized']:.2f}%")
    echo(f"data: {cfg.dataset}, {len(data.y_noisy)} training images, noise {noise.get('spec')} "
         f"(realized {100 * (noise['realized'] or 0):.2f}%)")
    if settings.derived_from is not None:
        dd = settings.derived_from
        echo(f"settings: derived from the data ({'x'.join(map(str, dd['image_shape']))} images, {dd['num_classes']} "
             f"classes, {dd['n_train']} training images): template {dd['template']}"
             + (f"; {dd['ipc_note']}" if "ipc_note" in dd else ""))

    results: dict = {}
    # 1. baselines on the full noisy set (and clean labels)
    # The stage records the baseline's config: a preset whose baseline changed (issue 30's memorising schedule)
    # retrains the baseline alone, and every other finished stage stays.
    bcfg_json = json.loads(json.dumps(dataclasses.asdict(settings.baseline)))
    b = stages.get("baseline")
    # a stage from before configs were recorded was made without the memorising schedule (the guard above
    # vouches for the rest of its config)
    legacy = bcfg_json if settings.baseline.memorise is None else None
    if b is None or without_added_defaults(b.get("config", legacy)) != without_added_defaults(bcfg_json):
        t = time.perf_counter()
        b = run_baseline(data, settings.baseline, stage_key(cfg.seed, "baseline"),
                         clean=cfg.clean_baseline, progress=progress, run_dir=os.path.join(out_dir, "baseline"))
        b = stages.put("baseline", {"results": b, "seconds": time.perf_counter() - t, "config": bcfg_json})
    if only == ("baseline",):
        return {"baseline": b}
    timings["baseline"] = b["seconds"]
    for name, r in report.public_results(b["results"]).items():
        results[name] = {**r, "method": name.replace("_", " "), "protocol": "full data"}
    last = results["baseline_last"]
    echo(f"baseline (full noisy data, {last.get('schedule', 'fixed')}): {100 * last['acc_mean']:.2f}% last epoch"
         + (f", {100 * results['baseline_best']['acc_mean']:.2f}% at the noisy-validation epoch"
            if "baseline_best" in results else ""))

    def eval_stage(name: str, ds, pname: str) -> dict:
        """Evaluate one set under one protocol (a cached stage). Every set under a protocol gets the same
        key, so methods and controls are trained by the same nets from the same initialisations."""
        key = f"eval_{name}_{pname}"
        r = stages.get(key)
        if r is None:
            ev = evaluate(ds, data, eval_protocol(cfg, pname, ds, data.num_classes),
                          stage_key(cfg.seed, f"eval/{pname}"), k=cfg.k, preset=cfg.preset,
                          progress=progress and f"eval {name}/{pname}",
                          metrics_log=MetricsLog(os.path.join(out_dir, name), f"eval_{pname}") if name in cfg.methods
                          else MetricsLog(os.path.join(out_dir, "controls"), f"eval_{name}_{pname}"))
            r = stages.put(key, ev.to_dict())
        timings[f"eval {name}/{pname}"] = r["seconds"]
        return r

    from jaxdistill.controls import random_control, random_controls

    # control name -> (set, protocols beyond the common one it is also evaluated under with control_protocols='all')
    own = sorted({own_protocol(m) for m in cfg.methods if m not in EXTRA_METHODS} - {"standard"})
    controls: dict = {n: (ds, own) for n, ds in random_controls(data, ipc, cfg.seed).items() if n in cfg.controls}
    extra_draws = {n: [random_control(data, ipc, n, cfg.seed, draw=d) for d in range(1, cfg.control_draws)]
                   for n in controls}

    # 2. each method: distill (resumable inside its workdir), then evaluate
    for method in cfg.methods:
        if method in EXTRA_METHODS:
            r = stages.get(method)
            if r is None:
                t = time.perf_counter()
                r = _run_extra(method, data, cfg, stage_key(cfg.seed, method), settings.methods[method])
                r["seconds"] = time.perf_counter() - t
                stages.put(method, r)
            timings[method] = r["seconds"]
            results[method] = {**r, "method": method, "protocol": "full data"}
            continue
        workdir = os.path.join(out_dir, method)
        path = os.path.join(workdir, "distilled.npz")
        st = stages.get(f"distill_{method}")
        if st is not None:  # a stage from the mirror brings its set (and the initial set of the selected control)
            stages.restore(path)
            stages.restore(os.path.join(workdir, INITIAL_FILE))
        if st is None or not os.path.exists(path):
            mcfg = settings.methods[method]
            t = time.perf_counter()
            ds = distill(method, mcfg, data, stage_key(cfg.seed, f"distill/{method}"), workdir=workdir,
                         progress=progress)
            if not os.path.exists(path):
                ds.save(path)
            st = stages.put(f"distill_{method}", {"seconds": time.perf_counter() - t,
                                                  "config": dataclasses.asdict(mcfg)},
                            files=(path, os.path.join(workdir, INITIAL_FILE)))
        timings[f"distill {method}"] = st["seconds"]
        ds = DistilledSet.load(path)
        report.plot_distilled(os.path.join(out_dir, f"distilled_{method}.png"), ds.to_pixels(), ds.labels,
                              data.class_names, f"{method.upper()}, {cfg.dataset}, {noise.get('spec')}, IPC {ipc}")
        for proto in cfg.protocols:
            pname = "standard" if proto == "standard" else own_protocol(method)
            r = eval_stage(method, ds, pname)
            results[f"{method}/{pname}"] = {**r, "method": method, "ipc": ipc,
                                            "seconds": r["seconds"] + st["seconds"]}
            echo(f"{method} ({pname} protocol): {100 * r['acc_mean']:.2f} +- {100 * r['acc_std']:.2f}%")
        initial = os.path.join(workdir, INITIAL_FILE)
        if "selected" in cfg.controls:
            if os.path.exists(initial):
                controls[f"selected_{method}"] = (DistilledSet.load(initial),
                                                  [p for p in (own_protocol(method),) if p != "standard"])
            else:
                log.warning("%s: no initial.npz in %s (a run from before controls existed); the selected control "
                            "is skipped", method, workdir)

    # 3. controls: real images of the same size, same protocols, nets and keys (jaxdistill.controls)
    for name, (ds, extra) in controls.items():
        for pname in ["standard"] + (extra if cfg.control_protocols == "all" else []):
            r = eval_stage(f"control_{name}", ds, pname)
            draws = [r] + [eval_stage(f"control_{name}@draw{d}", dd, pname)
                           for d, dd in enumerate(extra_draws.get(name, []), start=1)]
            if len(draws) > 1:
                r = _pool_draws(draws)
            results[f"control/{name}/{pname}"] = {**r, "method": name, "control": True, "ipc": ipc}
            echo(f"control {name} ({pname} protocol): {100 * r['acc_mean']:.2f} +- {100 * r['acc_std']:.2f}%")

    report.plot_run_curves(out_dir, [m for m in cfg.methods if m not in EXTRA_METHODS])
    extra = {} if settings.derived_from is None else {"derived_from": settings.derived_from}
    doc = report.write_results(os.path.join(out_dir, "results.json"), dataclasses.asdict(cfg), noise, results,
                               timings=timings, seed=cfg.seed, **extra)
    report.write_report(out_dir, doc)
    return doc


def _pool_draws(draws: list[dict]) -> dict:
    """One control row from D draws' evaluations: every net of every draw pooled (acc_mean, acc_std, accs),
    with `draw_means` and `draw_std` (the std of the D draw means) beside them."""
    accs = [a for r in draws for a in r["accs"]]
    means = [float(np.mean(r["accs"])) for r in draws]
    return {**draws[0], "accs": accs, "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)),
            "draws": len(draws), "draw_means": means, "draw_std": float(np.std(means)),
            "seconds": float(sum(r["seconds"] for r in draws))}


def _extra_config(method: str, cfg: DenoiseConfig):
    """Co-teaching / JoCoR config: the baseline's net and budget, the run's overrides (checked by name)."""
    try:
        from jaxdistill.baselines import coteaching, jocor
    except ImportError as e:  # pragma: no cover - the module ships with the package
        raise ConfigError(f"method {method!r} is not available: {e}") from e
    from jaxdistill.noise import parse_noise_spec

    if method == "coteaching":
        mcfg = coteaching.get_coteaching_config(cfg.dataset, cfg.preset)
    else:
        mcfg = jocor.get_jocor_config(cfg.dataset, cfg.preset, parse_noise_spec(cfg.noise).kind)
    return _replace_checked(mcfg, cfg.part(method), f"{method} config")


def _run_extra(method: str, data, cfg: DenoiseConfig, key, mcfg=None) -> dict:
    """Co-teaching / JoCoR: trained on the full noisy set with the baseline's net and budget."""
    from jaxdistill.baselines import coteaching, jocor

    mcfg = mcfg if mcfg is not None else _extra_config(method, cfg)
    train = coteaching.train_coteaching if method == "coteaching" else jocor.train_jocor
    out = train(data, mcfg, key)
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str, list, dict, type(None)))}
