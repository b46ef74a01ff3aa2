"""Map a jaxdistill config to each original's settings (command-line flags, YAML keys, post-parse values) and back.

`KNOBS[method]` is the table: one `Knob` per jaxdistill config field that the original can set, naming the
original's script, its setting and how the glue delivers it:
  flag      an ordinary command-line flag of that script
  override  set on the script's parsed `args` by the glue after parsing (`glue/launch.py --set`), because the
            script (DANCE's `--reproduce`, `arg_condense.py`'s data-set block) overwrites the flag after parsing
  yaml      a key of the YAML config file DATM_tesla.py reads with `--cfg` (its boolean flags cannot be set on
            the command line: argparse's `type=bool` turns any string into True)
  fixed     hard-coded in the original: not mappable, `fixed_mismatches` reports where jaxdistill's value differs
  patch     a module-level constant the glue patches (DATM's ConvNet width/depth in `get_default_convnet_setting`;
            RCIG's real-data batch, hard-coded 1024 in distill_dataset.get_config)
  json      a key of the JSON config RCIG's distill_dataset.py reads with --config_path

`to_original(method, cfg)` -> {script: {setting: value}}; `from_original(method, settings, dataset, ipc, preset)`
rebuilds the jaxdistill config from those settings (the round trip is the identity on every mapped field).
`eval_settings(method, preset, image_size, k)` maps the evaluation protocol's length onto the original's own
evaluation (DANCE's `args.epochs`, DATM's `epoch_eval_train` / `num_eval`).
Everything here reads the originals' sources as of DD_LNL HEAD d59a5a5 (README.md beside this file).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

ident = lambda v: v  # noqa: E731


@dataclasses.dataclass(frozen=True)
class Knob:
    field: str                     # jaxdistill config field
    script: str                    # the original's script that reads it
    setting: Optional[str]         # the original's flag / args attribute / YAML key (None: fixed)
    how: str                       # flag | override | yaml | patch | fixed
    to_orig: Callable[[Any], Any] = ident
    from_orig: Callable[[Any], Any] = ident
    fixed: Any = None              # the original's hard-coded value (how == 'fixed')
    note: str = ""


def _w(v):
    return float(v) / 128.0


def _unw(v):
    return int(round(float(v) * 128))


DANCE_KNOBS = (
    # DANCE.py (arguments/arg_condense.py; --reproduce then sets niter=10000, lr_img=0.01*ipc, depth=3,
    # net_type=convnet, pretrain_dir, data_dir, save_dir: the glue re-applies these after it)
    Knob("ipc", "DANCE.py", "ipc", "flag"),
    Knob("iterations", "DANCE.py", "niter", "override", note="--reproduce forces 10000"),
    Knob("lr_img", "DANCE.py", "lr_img", "override", note="--reproduce forces 0.01*ipc; None maps to 0.01*ipc"),
    Knob("mom_img", "DANCE.py", "mom_img", "flag"),
    Knob("batch_real", "DANCE.py", "batch_real", "flag"),
    Knob("batch_syn_max", "DANCE.py", "batch_syn_max", "flag"),
    Knob("factor", "DANCE.py", "factor", "flag", note="original default 1 (IDC-I); --reproduce leaves it"),
    Knob("iter_calib", "DANCE.py", "iter_calib", "flag"),
    Knob("width", "DANCE.py", "width", "flag", _w, _unw, note="a multiplier: channels = int(128 * width)"),
    Knob("depth", "DANCE.py", "depth", "override", note="--reproduce forces 3"),
    Knob("norm", "DANCE.py", "norm_type", "flag"),
    Knob("num_premodel", "DANCE.py", "num_premodel", "flag"),
    # pretrain.py (arguments/arg_pretrain.py; its --reproduce forces pretrain_amount=20, pretrain_epochs=60)
    Knob("pool_size", "pretrain.py", "pretrain_amount", "override", note="--reproduce forces 20"),
    Knob("pretrain_epochs", "pretrain.py", "pretrain_epochs", "override", note="--reproduce forces 60"),
    Knob("pretrain_batch", "pretrain.py", "batch_real", "flag", note="pretrain trains on the class loader"),
    Knob("pretrain_lr", "pretrain.py", "lr", "flag"),
    Knob("pretrain_momentum", "pretrain.py", "momentum", "flag"),
    Knob("pretrain_wd", "pretrain.py", "weight_decay", "flag"),
    Knob("width", "pretrain.py", "width", "flag", _w, _unw),
    Knob("depth", "pretrain.py", "depth", "override", note="--reproduce forces 3"),
    Knob("norm", "pretrain.py", "norm_type", "flag"),
    # hard-coded in the original
    Knob("pretrain_milestones", "pretrain.py", None, "fixed", fixed=(2 / 3, 5 / 6),
         note="MultiStepLR at 2E//3 and 5E//6"),
    Knob("pretrain_gamma", "pretrain.py", None, "fixed", fixed=0.2),
    Knob("pretrain_cutmix_p", "pretrain.py", None, "fixed", fixed=0.5, note="mix_p = 0.5 for fashion"),
    Knob("mean", "data.py", None, "fixed", fixed=(0.2861,), note="MEANS['fashion']"),
    Knob("std", "data.py", None, "fixed", fixed=(0.3530,), note="STDS['fashion']"),
    Knob("batched_classes", "DANCE.py", None, "fixed", fixed=False, note="one momentum step per class"),
)

DATM_KNOBS = (
    # buffer/buffer_FTD.py (the experts; GSAM-trained)
    Knob("num_experts", "buffer_FTD.py", "num_experts", "flag",
         note="save_interval is set to the same number: experts are written only every save_interval"),
    Knob("expert_train_epochs", "buffer_FTD.py", "train_epochs", "flag"),
    Knob("expert_lr", "buffer_FTD.py", "lr_teacher", "flag"),
    Knob("expert_momentum", "buffer_FTD.py", "mom", "flag"),
    Knob("expert_batch", "buffer_FTD.py", "batch_train", "flag"),
    Knob("expert_sam_rho", "buffer_FTD.py", "rho_max", "flag", note="rho_min is given the same value"),
    Knob("expert_sam_alpha", "buffer_FTD.py", "alpha", "flag"),
    Knob("width", "buffer_FTD.py", "net_width", "patch", note="get_default_convnet_setting()"),
    Knob("depth", "buffer_FTD.py", "net_depth", "patch"),
    # distill/DATM_tesla.py (YAML via --cfg)
    Knob("ipc", "DATM_tesla.py", "ipc", "yaml"),
    Knob("iterations", "DATM_tesla.py", "Iteration", "yaml"),
    Knob("syn_steps", "DATM_tesla.py", "syn_steps", "yaml"),
    Knob("expert_epochs", "DATM_tesla.py", "expert_epochs", "yaml"),
    Knob("min_start_epoch", "DATM_tesla.py", "min_start_epoch", "yaml"),
    Knob("max_start_epoch", "DATM_tesla.py", "max_start_epoch", "yaml"),
    Knob("current_max_start_epoch", "DATM_tesla.py", "current_max_start_epoch", "yaml"),
    Knob("expansion_end_epoch", "DATM_tesla.py", "expansion_end_epoch", "yaml"),
    Knob("sequential", "DATM_tesla.py", "Sequential_Generation", "yaml"),
    Knob("lr_img", "DATM_tesla.py", "lr_img", "yaml"),
    Knob("lr_lr", "DATM_tesla.py", "lr_lr", "yaml"),
    Knob("lr_y", "DATM_tesla.py", "lr_y", "yaml"),
    Knob("lr_teacher", "DATM_tesla.py", "lr_teacher", "yaml", note="the learned student lr's start"),
    Knob("mom_y", "DATM_tesla.py", "Momentum_y", "yaml"),
    Knob("batch_syn", "DATM_tesla.py", "batch_syn", "yaml"),
    Knob("threshold", "DATM_tesla.py", "threshold", "yaml"),
    Knob("init", "DATM_tesla.py", "pix_init", "yaml"),
    Knob("dsa", "DATM_tesla.py", "dsa", "yaml"),
    Knob("preprocess", "DATM_tesla.py", "zca", "yaml", lambda p: p == "zca_datm",
         lambda z: "zca_datm" if z else "none", note="kornia ZCAWhitening(eps=0.1) on [0,1] pixels"),
    Knob("width", "DATM_tesla.py", "net_width", "patch"),
    Knob("depth", "DATM_tesla.py", "net_depth", "patch"),
    Knob("mom_img", "DATM_tesla.py", None, "fixed", fixed=0.5, note="SGD([image_syn], momentum=0.5)"),
    Knob("mom_lr", "DATM_tesla.py", None, "fixed", fixed=0.5, note="SGD([syn_lr], momentum=0.5)"),
    Knob("meta_grad", "DATM_tesla.py", None, "fixed", fixed="tesla",
         note="theta_i held fixed in the image / label / lr gradients (distillers.md 1.8)"),
)

RCIG_KNOBS = (
    # distill_dataset.py: a `fire` CLI; the algorithm's settings come from a JSON file (--config_path), which the
    # harness writes from the original's configs_final/depth_3_no_flip.txt (Fashion-MNIST) with these keys set.
    Knob("ipc", "distill_dataset.py", "n_images", "flag"),
    Knob("iterations", "distill_dataset.py", "max_steps", "flag"),
    Knob("width", "distill_dataset.py", "width", "flag", note="first layer; doubles per layer (width * 2**i)"),
    Knob("tune_lr", "distill_dataset.py", "skip_tune", "flag", lambda t: not t, lambda s: not s,
         note="the lr search before training; skip_tune keeps 1e-5 / 5e-5"),
    Knob("pool_size", "config.json", "pool_model_count", "json"),
    Knob("l2_rate", "config.json", "l2_rate", "json", note="l2 = l2_rate * ipc * C"),
    Knob("n_inner", "config.json", "n_inner_steps", "json"),
    Knob("n_hinv", "config.json", "n_hinv_steps", "json"),
    Knob("max_online_steps", "config.json", "max_online_steps", "json"),
    Knob("pool_max_steps", "config.json", "n_max_steps_pool", "json", note="randint(1, n) steps: exclusive"),
    Knob("learn_labels", "config.json", "learn_labels", "json"),
    Knob("pool_lr", "config.json", "pool_learning_rate", "json"),
    Knob("proto_lr", "config.json", "proto_learning_rate", "json"),
    Knob("softplus_temp", "config.json", "softplus_temp", "json"),
    Knob("use_flip", "config.json", "use_flip", "json"),
    Knob("real_batch", "distill_dataset.py", "real_batch", "patch",
         note="config.kernel.batch_size = 1024 in the script: the glue sets the training loader's batch"),
    Knob("inner_lr", "distill_dataset.py", "inner_lr", "patch",
         note="only with tune_lr False: the glue hands it to run_rcig (the script would pass 1e-5)"),
    Knob("hvp_lr", "distill_dataset.py", "hvp_lr", "patch",
         note="only with tune_lr False: the glue hands it to run_rcig (the script would pass 5e-5)"),
    # hard-coded in the original
    Knob("depth", "distill_dataset.py", None, "fixed", fixed=3, note="from the image size (28/32 -> 3)"),
    Knob("preprocess", "dataloader.py", None, "fixed", fixed="meanstd",
         note="'standard' (mean/std) for mnist/fashion_mnist; normalize_zca (zca_rcig) for the others"),
    Knob("mean", "dataloader.py", None, "fixed", fixed=(0.2861,), note="data_stats['fashion_mnist']"),
    Knob("std", "dataloader.py", None, "fixed", fixed=(0.3530,)),
    # with tune_lr True: the search starts at these (x1.2 per try until an inner run is not monotone, then x0.7)
    Knob("inner_lr", "distill_dataset.py", None, "fixed", fixed=1e-5, note="start of the lr search (tune_lr)"),
    Knob("hvp_lr", "distill_dataset.py", None, "fixed", fixed=5e-5, note="start of the lr search (tune_lr)"),
    Knob("tune_max_tries", "distill_dataset.py", None, "fixed", fixed=None, note="unbounded search (tune_lr)"),
    Knob("temp_lr", "algorithms.py", None, "fixed", fixed=0.03, note="adabelief(0.03) on log_temp"),
    Knob("ema_decay", "algorithms.py", None, "fixed", fixed=0.99),
    Knob("adapt_every", "algorithms.py", None, "fixed", fixed=50, note="lr_monitor_interval"),
)

RCIG_TUNE_ONLY = ("inner_lr", "hvp_lr")  # fixed (search start) with tune_lr, delivered (patch) without

KNOBS = {"dance": DANCE_KNOBS, "datm": DATM_KNOBS, "rcig": RCIG_KNOBS}
SCRIPTS = {"dance": ("pretrain.py", "DANCE.py"), "datm": ("buffer_FTD.py", "DATM_tesla.py"),
           "rcig": ("distill_dataset.py", "config.json")}
RCIG_BASE_CONFIG = "configs_final/depth_3_no_flip.txt"  # the study's config for Fashion-MNIST (README.md)


def get_config(method: str, dataset: str, ipc: int, preset: str):
    """The jaxdistill config the comparison runs (the method's named setting at `preset`)."""
    if method == "dance":
        from jaxdistill.configs.dance import get_config as g
    elif method == "datm":
        from jaxdistill.configs.datm import get_config as g
    elif method == "rcig":
        from jaxdistill.configs.rcig import get_config as g
    else:
        raise ValueError(f"method {method!r}; allowed dance, datm, rcig")
    return g(dataset, ipc, preset)


def _value(cfg, field):
    if field == "lr_img" and hasattr(cfg, "image_lr"):
        return cfg.image_lr  # DANCE: None means 0.01 * ipc, which the original's --reproduce also computes
    return getattr(cfg, field)


def to_original(method: str, cfg) -> dict[str, dict[str, dict[str, Any]]]:
    """{script: {how: {setting: value}}} for every mappable knob (fixed ones excluded)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for k in KNOBS[method]:
        if k.how == "fixed":
            continue
        v = k.to_orig(_value(cfg, k.field))
        out.setdefault(k.script, {}).setdefault(k.how, {})[k.setting] = v
    if method == "datm":
        b = out["buffer_FTD.py"]["flag"]
        b["rho_min"] = b["rho_max"]
        b["save_interval"] = b["num_experts"]
    if method == "rcig" and cfg.tune_lr:  # the original's search starts at its own 1e-5 / 5e-5
        for k in RCIG_TUNE_ONLY:
            out["distill_dataset.py"]["patch"].pop(k, None)
    return out


def from_original(method: str, settings: dict, dataset: str, ipc: int, preset: str):
    """The jaxdistill config whose mapped fields take the original's settings (`to_original`'s shape)."""
    cfg = get_config(method, dataset, ipc, preset)
    repl = {}
    for k in KNOBS[method]:
        if k.how == "fixed":
            continue
        v = settings.get(k.script, {}).get(k.how, {}).get(k.setting)
        if v is None:
            continue
        repl[k.field] = k.from_orig(v)
    if method == "dance" and cfg.lr_img is None and abs(repl.get("lr_img", 0.0) - 0.01 * repl.get("ipc", ipc)) < 1e-12:
        repl["lr_img"] = None  # 0.01 * ipc: keep jaxdistill's "default" spelling
    return cfg.replace(**repl) if hasattr(cfg, "replace") else dataclasses.replace(cfg, **repl)


def fixed_mismatches(method: str, cfg) -> list[str]:
    """Where jaxdistill's value differs from a setting the original hard-codes."""
    out = []
    for k in KNOBS[method]:
        if k.how != "fixed" or not hasattr(cfg, k.field):
            continue
        if method == "rcig" and k.field in RCIG_TUNE_ONLY + ("tune_max_tries",) and not cfg.tune_lr:
            continue  # no search: the lrs are delivered (patch) and the tries do not matter
        v = getattr(cfg, k.field)
        f = k.fixed
        same = (tuple(round(float(a), 4) for a in v) == tuple(round(float(a), 4) for a in f)
                if isinstance(f, tuple) and v is not None else v == f)
        if not same:
            out.append(f"{k.field}: jaxdistill {v!r}, original {f!r} ({k.script}{': ' + k.note if k.note else ''})")
    return out


def eval_settings(method: str, preset: str, image_size: int, k: int) -> dict:
    """The original's own evaluation sized like jaxdistill's protocol of the same name at `preset`."""
    from jaxdistill.configs.presets import eval_budget

    b = eval_budget(preset, image_size)
    if method == "dance":   # DANCE.py: args.epochs (forced 1500 for small data sets), one net per test
        return {"override": {"epochs": b.dance_epochs, "batch_size": 64}, "nets": 1, "width": b.width}
    if method == "datm":    # DATM_tesla.py: num_eval nets for epoch_eval_train epochs at the final iteration
        return {"yaml": {"epoch_eval_train": b.datm_epochs, "num_eval": k, "batch_train": 128}, "nets": k,
                "width": b.width}
    # RCIG: distill_dataset.py has no evaluation of its own (eval.py is a separate script, not run)
    return {"flag": {}, "nets": 0, "width": b.width}


def table(method: str) -> str:
    """The knob table as markdown (README.md)."""
    rows = ["| jaxdistill field | script | original setting | delivered as | note |", "|---|---|---|---|---|"]
    for k in KNOBS[method]:
        setting = k.setting if k.setting else f"(hard-coded {k.fixed!r})"
        rows.append(f"| `{k.field}` | {k.script} | `{setting}` | {k.how} | {k.note} |")
    return "\n".join(rows)
