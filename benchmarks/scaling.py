"""How iteration time and memory grow with the knobs that set each distiller's cost; fitted exponents.

Sweeps (CIFAR-10 shapes, ConvNet-3 width 128, each method's paper config otherwise):
  datm  vs syn_steps 20/40/80 at IPC 10;   datm vs IPC 1/10/50 at syn_steps 80 (batch_syn = the whole set)
  dance vs IPC 1/10/50;                    rcig vs coreset size (IPC 1/10/50 -> 10/100/500 images)
For each sweep: time ~ a * x^b and memory ~ a * x^b fitted by least squares on log-log (b printed).
`--small`: CPU-sized (16x16, width 16; syn_steps 2/4/8; IPC 1/2/4).

  python benchmarks/scaling.py                 # GPU (one subprocess per point: per-point memory peak)
  python benchmarks/scaling.py --small         # CPU check (in-process; memory = cumulative max RSS)
  python benchmarks/scaling.py --only datm_steps,rcig_coreset
Writes <out>/scaling.json and <out>/scaling.md (default benchmarks/results/<device>).
Built on benchmarks/run.py (same builders and measurement). Never imports jaxdistill.data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as R  # noqa: E402  (benchmarks/run.py)

# name -> (component, x label, values (full), values (small), fixed shape overrides, how x enters)
SWEEPS = {
    "datm_steps": ("datm", "syn_steps", (20, 40, 80), (2, 4, 8), {"ipc": 10}, "build"),
    "datm_ipc": ("datm", "ipc", (1, 10, 50), (1, 2, 4), {}, "shape"),
    "dance_ipc": ("dance", "ipc", (1, 10, 50), (1, 2, 4), {}, "shape"),
    "rcig_coreset": ("rcig", "coreset images (C x IPC)", (1, 10, 50), (1, 2, 4), {}, "shape"),
}


def fit_exponent(x, y) -> Optional[float]:
    """Least-squares slope b of log y = log a + b log x (None with < 2 usable points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def sweep(name: str, args, isolate: bool) -> dict:
    comp, label, full, small, fixed, where = SWEEPS[name]
    values = small if args.small else full
    rows, xs = [], []
    for v in values:
        shape_over, build_kw = dict(fixed), {}
        if where == "build":
            build_kw[label] = v
            if args.small:
                shape_over.pop("ipc", None)
        else:
            shape_over["ipc"] = v
        spec = R.case_spec(comp, "c10_ipc1", args, shape_over, build_kw)
        r = R.run_case(spec, isolate, args.case_timeout)
        r["x"] = v if label != "coreset images (C x IPC)" else 10 * v
        rows.append(r)
        xs.append(r["x"])
        print(json.dumps({k: r.get(k) for k in ("component", "setting", "x", "median_s", "peak_bytes", "error")}),
              flush=True)
    good = [r for r in rows if "error" not in r]
    t_exp = fit_exponent([r["x"] for r in good], [r["median_s"] for r in good])
    m_exp = fit_exponent([r["x"] for r in good], [r["peak_bytes"] for r in good])
    f_exp = fit_exponent([r["x"] for r in good], [r["flops_jaxpr"] / r["per_call"] for r in good])
    return {"sweep": name, "component": comp, "x": label, "values": list(values), "rows": rows,
            "time_exponent": t_exp, "memory_exponent": m_exp, "flops_exponent": f_exp}


def markdown(results: list[dict], dev: dict, isolate: bool) -> str:
    mem = "per point (subprocess)" if isolate else "cumulative process peak (in-process), exponent not meaningful"
    out = [f"Device: {dev['device_kind']} ({dev['platform']}), jax {dev['jax']}; memory: {mem}.",
           "", "| sweep | x | ms/iter | peak MiB | GFLOP/iter |", "|---|---|---|---|---|"]
    for s in results:
        for r in s["rows"]:
            if "error" in r:
                out.append(f"| {s['sweep']} | {r['x']} | error: {r['error']} | | |")
            else:
                out.append(f"| {s['sweep']} | {r['x']} | {r['median_s'] * 1e3:.1f} | {r['peak_bytes'] / 2**20:.0f} | "
                           f"{r['flops_jaxpr'] / r['per_call'] / 1e9:.2f} |")
    out += ["", "| sweep | x | time exponent | memory exponent | FLOP exponent |", "|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for s in results:
        out.append(f"| {s['sweep']} | {s['x']} | {f(s['time_exponent'])} | {f(s['memory_exponent'])} | "
                   f"{f(s['flops_exponent'])} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--only", default=",".join(SWEEPS), help=f"comma list of {','.join(SWEEPS)}")
    ap.add_argument("--repeats", type=int, default=None, help="timed iterations per point (default 3; 2 small)")
    ap.add_argument("--out", default=None)
    iso = ap.add_mutually_exclusive_group()
    iso.add_argument("--isolate", dest="isolate", action="store_true", default=None)
    iso.add_argument("--no-isolate", dest="isolate", action="store_false")
    ap.add_argument("--case-timeout", type=int, default=900)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.small else 3)
    args.train_models, args.eval_k = 4, 5   # unused here; case_spec expects them
    from jaxdistill.errors import ConfigError

    names = [n for n in args.only.split(",") if n]
    bad = [n for n in names if n not in SWEEPS]
    if bad:
        raise ConfigError(f"--only {bad} not known; allowed: {list(SWEEPS)}")
    dev = R.device_info()
    isolate = args.isolate if args.isolate is not None else dev["platform"] != "cpu"
    out_dir = args.out or os.path.join(R.ROOT, "benchmarks", "results", dev["device_kind"].replace(" ", "_"))
    os.makedirs(out_dir, exist_ok=True)
    results = [sweep(n, args, isolate) for n in names]
    for s in results:
        print(f"{s['sweep']:<14} time ~ x^{s['time_exponent']}  memory ~ x^{s['memory_exponent']}  "
              f"FLOPs ~ x^{s['flops_exponent']}  (x = {s['x']})", flush=True)
    from jaxdistill.checkpoint import atomic_write_json, atomic_write_text

    atomic_write_json(os.path.join(out_dir, "scaling.json"),
                      {"device": dev, "small": args.small, "isolated": isolate, "sweeps": results})
    md = markdown(results, dev, isolate)
    atomic_write_text(os.path.join(out_dir, "scaling.md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
