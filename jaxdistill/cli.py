"""`jaxdistill` command line: thin argparse front-ends that parse and call one library function each."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from typing import Optional, Sequence

from jaxdistill.errors import ConfigError, Interrupted, JaxDistillError

NOISE_HELP = "clean | symmetric:R | asymmetric:R | pairflip:R | instance:R | natural:VARIANT | matrix:PATH"


def _common_data(p: argparse.ArgumentParser, dataset_default: Optional[str] = "fashion_mnist") -> None:
    p.add_argument("--dataset", default=dataset_default,
                   help="fashion_mnist | digits | cifar10 | cifar100 | cifar10_n | cifar100_n | tiny_imagenet | npz:PATH")
    p.add_argument("--noise", default="symmetric:0.4", help=NOISE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draw and of every stage (default 0)")
    p.add_argument("--preset", default="quick", choices=["quick", "cpu", "paper"],
                   help="quick: the 10-minute 2-core CPU job (below random-real level); cpu: an hour per setting "
                        "on 2 cores; paper: the study's settings (GPU)")
    p.add_argument("--subset", type=int, default=None,
                   help="use a class-stratified subset of N training images (default: the preset's; 0 = all)")
    p.add_argument("--data-dir", default=None, help="where data lives (else $JAXDISTILL_DATA_DIR, system paths, tfds)")


def _noisy_data(args, val_fraction: float = 0.0):
    from jaxdistill.pipeline import DenoiseConfig, load_noisy_data

    subset = DenoiseConfig(dataset=args.dataset, preset=args.preset, subset=args.subset).effective_subset()
    return load_noisy_data(args.dataset, args.noise, args.seed, subset, val_fraction, args.data_dir)


# --------------------------------------------------------------------------------------------- noise
def cmd_noise(args) -> int:
    import numpy as np

    from jaxdistill.data.registry import load_dataset  # noqa: F401  (dataset names only)
    from jaxdistill.errors import DataError
    from jaxdistill.noise import apply_noise, format_transition, infer_num_classes

    try:
        labels = np.load(args.labels, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read labels {args.labels!r} ({e}); expected a .npy of integer class labels") from e
    if not isinstance(labels, np.ndarray):  # an .npz archive
        raise DataError(f"labels {args.labels!r} is an .npz archive; expected a .npy of integer class labels")
    c = args.classes if args.classes is not None else infer_num_classes(labels, name=f"labels {args.labels!r}")
    res = apply_noise(labels, args.noise, c, dataset=args.dataset, seed=args.seed)
    if args.out:
        from jaxdistill.checkpoint import atomic_write_bytes
        import io

        buf = io.BytesIO()
        np.save(buf, res.noisy)
        atomic_write_bytes(args.out, buf.getvalue())
    print(f"noise {res.spec} on {len(labels)} labels, {c} classes, seed {res.seed}")
    print(f"realized rate: {res.realized_rate:.5f}")
    print("transition matrix (rows: true label, columns: noisy label):")
    print(format_transition(res.transition))
    if args.out:
        print(f"noisy labels written to {args.out}")
    return 0


# --------------------------------------------------------------------------------------------- baseline
def cmd_baseline(args) -> int:
    import jax

    from jaxdistill.baseline import get_baseline_config, run_baseline
    from jaxdistill.pipeline import stage_key
    from jaxdistill.report import noise_entry, results_table, write_results

    data = _noisy_data(args, val_fraction=args.val_fraction)
    cfg = get_baseline_config(args.dataset, args.preset, data)  # derived from the data for a user's npz
    if args.k:
        cfg = dataclasses.replace(cfg, k=args.k)
    cfg = _resolved(cfg, args, "baseline config")
    from jaxdistill.config_files import save_resolved
    from jaxdistill.pipeline import derived_record

    derived = derived_record(args.dataset, data, None, args.preset)

    save_resolved(args.out, cfg)
    t0 = time.perf_counter()
    res = run_baseline(data, cfg, stage_key(args.seed, "baseline"), progress=True, run_dir=args.out)
    for r in res.values():
        r.setdefault("protocol", "full data")
    doc = write_results(os.path.join(args.out, "results.json"),
                        {"command": "baseline", "dataset": args.dataset, "preset": args.preset, "seed": args.seed,
                         "subset": len(data.y_noisy), "val_fraction": args.val_fraction,
                         "baseline": dataclasses.asdict(cfg), **derived},
                        noise_entry(data), res, seconds=time.perf_counter() - t0, **derived)
    print(results_table(doc["results"]))
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0


# --------------------------------------------------------------------------------------------- experts
def cmd_experts(args) -> int:
    from jaxdistill.configs.derive import method_config
    from jaxdistill.methods.datm import build_experts
    from jaxdistill.pipeline import stage_key

    data = _noisy_data(args)
    cfg = method_config("datm", args.dataset, args.ipc, args.preset, data)
    over = {}
    if args.experts:
        over["num_experts"] = args.experts
    if args.epochs:
        over["expert_train_epochs"] = args.epochs
    cfg = _resolved(dataclasses.replace(cfg, **over), args, "DATM config")
    from jaxdistill.config_files import save_resolved

    save_resolved(args.out, cfg)
    t0 = time.perf_counter()
    store = build_experts(cfg, data, stage_key(args.seed, "experts"), args.out, progress=True)
    print(f"expert store {args.out}: {store.num_experts} experts, epochs {store.epochs[0]}..{store.epochs[-1]} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


# --------------------------------------------------------------------------------------------- distill
def _overrides(cfg, pairs: Sequence[str]):
    """--set key=value overrides on a frozen config dataclass (`config_files.resolve`)."""
    from jaxdistill.config_files import resolve

    return resolve(cfg, None, pairs)


def _resolved(cfg, args, what: str):
    """cfg after --config FILE and --set KEY=VALUE (jaxdistill.config_files)."""
    from jaxdistill.config_files import resolve

    return resolve(cfg, getattr(args, "config", None), getattr(args, "set", None), what)


def _protocols(method: str, which: str) -> list[str]:
    from jaxdistill.pipeline import own_protocol

    return {"both": ["standard", own_protocol(method)], "none": [], "own": [own_protocol(method)],
            "standard": ["standard"]}[which]


def cmd_distill(args) -> int:
    from jaxdistill.checkpoint import read_json
    from jaxdistill.evaluate import evaluate
    from jaxdistill.configs.study import run_config
    from jaxdistill.methods import DISTILLED_FILE, DistilledSet, distill
    from jaxdistill.pipeline import check_protocols, derived_record, stage_key
    from jaxdistill.report import noise_entry, plot_distilled, results_table, write_results
    from jaxdistill.runlog import MetricsLog

    data = _noisy_data(args)  # a bad data file is named first
    # The config (and every --set) and the evaluation protocols are checked before anything is trained; at
    # the paper preset it is the study's setting for this noise (configs/study.py), as in `denoise`; a data
    # set without a named setting (a user's npz) gets one derived from the data (configs/derive.py).
    cfg = run_config(args.method, args.dataset, args.ipc, args.preset, args.noise, data=data)
    if args.experts and hasattr(cfg, "expert_dir"):
        cfg = dataclasses.replace(cfg, expert_dir=args.experts)
    cfg = _resolved(cfg, args, f"{args.method} config")
    derived = derived_record(args.dataset, data, args.ipc, args.preset)
    check_protocols(_protocols(args.method, args.eval), data, cfg.ipc, args.preset)
    from jaxdistill.config_files import save_resolved
    from jaxdistill.methods.base import check_workdir, run_record

    # Claim --out for this run first (or refuse another run's state) so that nothing of another run is
    # overwritten, config.json included; the driver repeats the same check.
    claimed = check_workdir(args.out, run_record(args.method, cfg, data, stage_key(args.seed, f"distill/{args.method}")))
    if claimed:  # else (state from before run records) the method's own guards decide first
        save_resolved(args.out, cfg)
    path = os.path.join(args.out, DISTILLED_FILE)
    res_path = os.path.join(args.out, "results.json")
    old = read_json(res_path) or {}
    t0 = time.perf_counter()
    # The run driver refuses another run's state in --out, loads a finished set, or resumes an unfinished run.
    finished = os.path.exists(path)
    distill(args.method, cfg, data, stage_key(args.seed, f"distill/{args.method}"), workdir=args.out)
    if not claimed:
        save_resolved(args.out, cfg)
    ds = DistilledSet.load(path)
    secs = old.get("distill_seconds") if finished and old.get("distill_seconds") is not None else \
        time.perf_counter() - t0
    if finished:
        print(f"{args.method}: the run in {args.out} had finished; loaded its set (evaluations not done yet run now)")
    plot_distilled(os.path.join(args.out, f"distilled_{args.method}.png"), ds.to_pixels(), ds.labels,
                   data.class_names, f"{args.method.upper()} {args.dataset} {args.noise} IPC {cfg.ipc}")
    # Evaluations already in results.json (same protocol, same number of nets) are kept, not redone.
    results = dict(old.get("results", {})) if old.get("config", {}).get("command") == "distill" else {}
    run = {"command": "distill", "method": args.method, "dataset": args.dataset, "ipc": cfg.ipc,
           "preset": args.preset, "seed": args.seed, "method_config": dataclasses.asdict(cfg), **derived}
    doc = write_results(res_path, run, noise_entry(data), results, distill_seconds=secs, **derived)
    for proto in _protocols(args.method, args.eval):
        name = f"{args.method}/{proto}"
        if len(results.get(name, {}).get("accs", [])) == args.k:
            print(f"{name}: evaluation with k={args.k} already in {res_path}; kept")
            continue
        ev = evaluate(ds, data, proto, stage_key(args.seed, f"eval_{args.method}_{proto}"), k=args.k,
                      preset=args.preset, progress=f"eval {proto}",
                      metrics_log=MetricsLog(args.out, f"eval_{proto}"))
        results[name] = {**ev.to_dict(), "method": args.method, "ipc": cfg.ipc}
        # Written after each evaluation, so an interrupted command keeps the ones that finished.
        doc = write_results(res_path, run, noise_entry(data), results, distill_seconds=secs, **derived)
    if results:
        print(results_table(doc["results"]))
    print(f"wrote {path} and {res_path}")
    return 0


# --------------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    import jax

    from jaxdistill.evaluate import evaluate
    from jaxdistill.methods.base import DistilledSet

    ds = DistilledSet.load(args.distilled)
    data = _noisy_data(args)
    ev = evaluate(ds, data, args.protocol, jax.random.PRNGKey(args.seed), k=args.k, preset=args.preset,
                  progress=f"eval {args.protocol}")
    print(f"{ds.method} / {args.protocol}: {100 * ev.mean:.2f} +- {100 * ev.std:.2f}% over {args.k} nets "
          f"({ev.seconds:.0f} s)")
    return 0


# --------------------------------------------------------------------------------------------- denoise
def cmd_denoise(args) -> int:
    from jaxdistill.pipeline import DenoiseConfig, run_denoise
    from jaxdistill.report import results_table

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    protocols = {"both": ("standard", "own"), "preset": None}.get(args.protocols, (args.protocols,))
    cfg = DenoiseConfig(dataset=args.dataset, noise=args.noise, methods=methods, ipc=args.ipc, preset=args.preset,
                        seed=args.seed, k=args.k, subset=args.subset, protocols=protocols, data_dir=args.data_dir,
                        controls=tuple(c.strip() for c in args.controls.split(",") if c.strip()),
                        control_draws=args.control_draws)
    cfg = _resolved(cfg, args, "denoise config")  # run_denoise saves it as --out/config.json
    t0 = time.perf_counter()
    doc = run_denoise(cfg, args.out, progress=True)
    print()
    print(results_table(doc["results"]))
    print(f"\n{time.perf_counter() - t0:.0f} s; report: {os.path.join(args.out, 'report.md')}")
    return 0


# --------------------------------------------------------------------------------------------- main
def _config_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--config", default=None, metavar="FILE",
                   help="config fields from a .json file, or a .py file whose get_config() returns them "
                        "(e.g. the config.json a previous run saved); applied after the other flags")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config field after --config (repeatable; JSON value; nested: train.epochs=3)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxdistill", description="Dataset distillation as a label denoiser (JAX).")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("noise", help="inject label noise into a label file; print realized rate and matrix")
    s.add_argument("--labels", required=True, help=".npy of integer labels")
    s.add_argument("--noise", required=True, help=NOISE_HELP)
    s.add_argument("--dataset", default=None, help="selects the asymmetric map (cifar10, cifar100, fashion_mnist, digits)")
    s.add_argument("--classes", type=int, default=None, help="number of classes (default: max label + 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="write the noisy labels (.npy)")
    s.set_defaults(fn=cmd_noise)

    s = sub.add_parser("datasets", help="list the data sets")
    s.set_defaults(fn=lambda a: print("\n".join(__import__("jaxdistill.data", fromlist=["x"]).list_datasets())) or 0)

    s = sub.add_parser("baseline", help="train on the full noisy set (and clean labels): the study's baseline")
    _common_data(s)
    s.add_argument("--k", type=int, default=None, help="nets per figure (default: the preset's)")
    s.add_argument("--val-fraction", type=float, default=0.1, help="noisy validation split for model selection")
    _config_flags(s)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_baseline)

    s = sub.add_parser("experts", help="train DATM's expert trajectories into a store (resumable)")
    _common_data(s)
    s.add_argument("--experts", type=int, default=None)
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--ipc", type=int, default=10, help="which DATM config's expert recipe to use")
    _config_flags(s)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_experts)

    s = sub.add_parser("distill", help="distil a noisy set with one method (resumes with the same --out)")
    _common_data(s)
    s.add_argument("--method", required=True, help="datm | dance | rcig")
    s.add_argument("--ipc", type=int, default=10)
    s.add_argument("--experts", default=None, help="an existing expert store (DATM)")
    s.add_argument("--k", type=int, default=5, help="evaluation nets")
    s.add_argument("--eval", default="both", choices=["both", "standard", "own", "none"])
    _config_flags(s)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_distill)

    s = sub.add_parser("evaluate", help="evaluate a saved distilled set")
    _common_data(s)
    s.add_argument("--distilled", required=True)
    s.add_argument("--protocol", default="standard", choices=["standard", "datm", "dance", "rcig"])
    s.add_argument("--k", type=int, default=5)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("denoise", help="the main job: baseline + distillers + evaluation + report (resumable)")
    _common_data(s)
    s.add_argument("--methods", default="datm,dance,rcig", help="comma list of datm, dance, rcig, coteaching, jocor")
    s.add_argument("--ipc", type=int, default=10)
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--protocols", default="preset", choices=["preset", "both", "standard", "own"],
                   help="evaluation protocols (default: the preset's; quick evaluates the common protocol only)")
    s.add_argument("--controls", default="random_noisy,random_clean,selected",
                   help="controls evaluated beside the distilled sets (comma list; '' for none)")
    s.add_argument("--control-draws", type=int, default=1,
                   help="independent draws of each random control, nets pooled (its spread then includes how "
                        "much a random draw varies); a finished --out may be re-run with more")
    _config_flags(s)
    s.add_argument("--out", default="runs/denoise")
    s.set_defaults(fn=cmd_denoise)

    _add_beyond(sub)
    return p


def _add_beyond(sub) -> None:
    """detect / repair live in their own modules; registered here when present."""
    try:
        from jaxdistill import cli_beyond
    except ImportError:
        return
    cli_beyond.add_commands(sub, _common_data, _noisy_data, _config_flags)


# Options that must be whole numbers >= 1 wherever a command has them (--experts is a path for distill).
_POSITIVE_INTS = ("k", "ipc", "experts", "epochs", "classes", "top", "cv_epochs", "width")
_OUT_DIR_COMMANDS = ("baseline", "experts", "distill", "denoise", "detect", "repair", "lnl")


def check_args(args) -> None:
    """Every argument that can be checked without data, checked before any work (ConfigError/NoiseError).

    Then the output directory is created and a write probed, so a bad --out fails here and not after
    the training."""
    from jaxdistill.checkpoint import ensure_out_dir

    for name in _POSITIVE_INTS:
        v = getattr(args, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={v} must be an integer >= 1")
    if getattr(args, "subset", None) is not None and args.subset < 0:
        raise ConfigError(f"--subset={args.subset} must be >= 0 (0 = all training images)")
    if getattr(args, "seed", None) is not None and not 0 <= args.seed < 2 ** 32:
        raise ConfigError(f"--seed={args.seed} must be in [0, 2**32)")
    vf = getattr(args, "val_fraction", None)
    if vf is not None and not 0.0 <= vf < 1.0:
        raise ConfigError(f"--val-fraction={vf} must be in [0, 1)")
    if getattr(args, "noise", None) is not None:
        from jaxdistill.noise import parse_noise_spec

        parse_noise_spec(args.noise)
    if args.command in ("distill", "detect", "repair"):
        from jaxdistill.methods import get_method

        get_method(args.method)
    if args.command == "repair" and getattr(args, "rule", None) == "auto" and not vf:
        raise ConfigError("--rule auto chooses on a noisy validation split: give --val-fraction in (0, 1), e.g. "
                          "0.1, or name another rule")
    if args.command == "denoise":
        from jaxdistill.pipeline import _check_methods

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise ConfigError(f"--methods={args.methods!r} names no method")
        _check_methods(methods)
    if args.command in _OUT_DIR_COMMANDS:
        ensure_out_dir(args.out)
    if args.command == "noise" and args.out:
        if os.path.isdir(args.out):
            raise ConfigError(f"--out {args.out!r} is a directory; give the .npy file to write")
        ensure_out_dir(os.path.dirname(args.out) or ".", "the directory of --out")


def _term_as_interrupt(signum, frame):
    # Outside the loops that checkpoint on a stop request, SIGTERM (preemption) ends a command like Ctrl-C.
    raise KeyboardInterrupt


def run_command(name: str, fn) -> int:
    """Run `fn()` as the command `name`: the project's errors -> one line and exit status 2; SIGINT/SIGTERM
    (after the running loop has checkpointed) -> one line and 130; re-running the command resumes."""
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _term_as_interrupt)
    try:
        return int(fn() or 0)
    except JaxDistillError as e:
        print(f"jaxdistill {name}: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print(f"jaxdistill {name}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-v", "--verbose"):
        argv = ["denoise", *argv]  # `jaxdistill` alone runs the embedded default job
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2

    def go():
        check_args(args)
        return args.fn(args)

    return run_command(args.command, go)


if __name__ == "__main__":
    sys.exit(main())
