"""One report module: results.json schema, report.md, and the pictures a person looks at."""
from __future__ import annotations

import os
import platform
import sys
from typing import Optional

import numpy as np

from jaxdistill.checkpoint import atomic_write_json, atomic_write_text
from jaxdistill.controls import margins
from jaxdistill.plotting import pyplot, savefig
from jaxdistill.runlog import plot_curves, read_metrics

SCHEMA_VERSION = 1


def versions() -> dict:
    """Package versions and the device, recorded beside every result."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    import importlib.metadata as md

    for pkg in ("jaxdistill", "jax", "jaxlib", "flax", "optax", "chex", "numpy", "orbax-checkpoint",
                "neural-tangents", "tensorflow-datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    try:
        import jax

        d = jax.devices()[0]
        out["device"] = f"{d.platform}:{getattr(d, 'device_kind', '')}"
        out["device_count"] = jax.device_count()
    except Exception:  # noqa: BLE001 - recording must never fail a run
        out["device"] = "unknown"
    return out


def noise_entry(data) -> dict:
    """{"type", "rate", "realized", "seed"} of a NoisyData's noise."""
    nr = getattr(data, "noise", None)
    if nr is None:
        return {"type": "clean", "rate": 0.0, "realized": data.noise_rate, "seed": None}
    spec = nr.spec
    return {"type": spec.kind, "rate": spec.rate, "variant": spec.variant, "spec": str(spec),
            "realized": float(nr.realized_rate), "seed": int(nr.seed)}


def acc_entry(accs, **extra) -> dict:
    accs = np.asarray(accs, np.float64)
    return {"acc_mean": float(accs.mean()), "acc_std": float(accs.std()), "accs": [float(a) for a in accs], **extra}


# run_baseline's names -> the names results.json and every report use (the noisy-label field's two figures)
PUBLIC_NAMES = {"baseline_noisy": "baseline_last", "baseline_noisy_valselected": "baseline_best"}


def public_results(results: dict) -> dict:
    """`results` with run_baseline's entries under their public names (PUBLIC_NAMES), order kept."""
    return {PUBLIC_NAMES.get(k, k): v for k, v in results.items()}


def write_results(path: str, config: dict, noise: dict, results: dict, **extra) -> dict:
    results = public_results(results)
    doc = {"schema": SCHEMA_VERSION, "config": config, "noise": noise, "results": results,
           "versions": versions(), **extra}
    atomic_write_json(path, doc)
    return doc


# ------------------------------------------------------------------------------------------ report.md
def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def results_table(results: dict, baseline_key: str = "baseline_last", timings: Optional[dict] = None) -> str:
    """Markdown: method | IPC | protocol | accuracy (%) | gap to the full-noisy baseline | best over checkpoints
    (DANCE / RCIG protocols; not the headline) | time."""
    base = results.get(baseline_key, {}).get("acc_mean")
    rows = ["| method | IPC | protocol | accuracy % (mean +- std) | vs full-noisy baseline | "
            "best over checkpoints % (not the headline) | time |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "acc_mean" not in r:
            continue
        gap = "-" if base is None or name == baseline_key else f"{100 * (r['acc_mean'] - base):+.2f}"
        secs = r.get("seconds")
        if secs is None and timings:
            secs = timings.get(r.get("method", name))
        label = f"control: {r.get('method', name)}" if r.get("control") else r.get("method", name)
        rows.append(f"| {label} | {r.get('ipc', '-')} | {r.get('protocol', '-')} | "
                    f"{_pct(r['acc_mean'])} +- {_pct(r['acc_std'])} | {gap} | {_best(r)} | {_fmt_secs(secs)} |")
    return "\n".join(rows)


def _best(r: dict) -> str:
    """The best-over-checkpoints figure of an evaluation entry, '-' where the protocol has none."""
    if r.get("best_acc_mean") is None:
        return "-"
    std = r.get("best_acc_std")
    return _pct(r["best_acc_mean"]) + ("" if std is None else f" +- {_pct(std)}")


def _fmt_secs(s) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def control_margins(results: dict) -> list[dict]:
    """Per distilled set (method/protocol): its margin in points over each control under the same protocol."""
    out = []
    for name, r in results.items():
        if "/" not in name or r.get("control") or name.startswith("control/") or "acc_mean" not in r:
            continue
        m = margins(results, name, r.get("protocol", name.split("/")[1]))
        if m:
            out.append({"set": name, "method": r.get("method", name), "protocol": r.get("protocol"),
                        "acc_mean": r["acc_mean"], "margins": m})
    return out


def controls_table(results: dict) -> str:
    rows = control_margins(results)
    if not rows:
        return ""
    names = [n for n in ("random_noisy", "random_clean", "selected") if any(n in r["margins"] for r in rows)]
    lines = ["| method | protocol | accuracy % | " + " | ".join(f"vs {n}" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = [f"{r['margins'][n]:+.2f}" if n in r["margins"] else "-" for n in names]
        lines.append(f"| {r['method']} | {r['protocol']} | {_pct(r['acc_mean'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# What the preset means for the evidence (one sentence in every report).
PRESET_NOTE = {
    "quick": "The quick preset is sized to finish in 10 minutes on 2 CPU cores; at this budget distilled sets are "
             "expected to score at the level of random real images; use `--preset paper` (a GPU) for real work "
             "(`--preset cpu`, about an hour per setting on 2 cores, lifts DANCE and DATM 2-6 points above random "
             "real images on clean Fashion-MNIST, depending on the random draw they are compared with).",
    "cpu": "The cpu preset runs about an hour per setting on 2 CPU cores and puts DANCE and DATM 2-6 points above "
           "random real images on clean Fashion-MNIST, depending on the random draw (RCIG at their level); "
           "`--preset paper` (a GPU) gives the study's settings and the evidence.",
    "paper": "The paper preset uses the study's settings per data set and IPC.",
}


def _baseline_schedule_sentence(base: dict) -> str:
    """Which baseline this is: trained to memorisation (the field's last epoch) or a fixed schedule, and how far
    it fitted the wrong labels."""
    memo, fit = base.get("memorisation") or {}, base.get("wrong_fit")
    fit_s = "" if fit is None else f"; it fits {100 * fit:.1f}% of the wrong labels (`wrong_fit`)"
    if base.get("schedule") == "memorise":
        return (f"The baseline trained at constant lr until it memorised the noise ({memo.get('stopped_by', '?')} "
                f"after {memo.get('constant_epochs', '?')} epochs), then decayed: {base.get('epochs', '?')} epochs, "
                f"the noisy-label field's last epoch{fit_s}.")
    conv = base.get("convergence") or {}
    return (f"The baseline has a {base.get('schedule', 'fixed')} schedule (not trained to memorisation; its "
            f"training accuracy {'has' if conv.get('converged') else 'has NOT'} stopped rising){fit_s}: its last "
            f"epoch is not the noisy-label field's last epoch (the `cpu` preset's baseline is).")


def findings(results: dict, noise: dict, preset: Optional[str] = None) -> list[str]:
    """Plain sentences on what the figures say (no claim beyond the numbers in the table)."""
    out = []
    base = results.get("baseline_last")
    clean = results.get("baseline_clean")
    if base:
        out.append(f"Training on all {noise.get('spec', noise.get('type'))} labels (realized noise "
                   f"{_pct(noise.get('realized'))}%) gives {_pct(base['acc_mean'])}% after the last epoch "
                   f"(`baseline_last`)"
                   + (f"; the clean-label upper bound is {_pct(clean['acc_mean'])}%." if clean else "."))
        out.append(_baseline_schedule_sentence(base))
        sel = results.get("baseline_best")
        if sel:
            out.append(f"Stopping at the epoch a noisy validation split picks (`baseline_best`, what a careful user "
                       f"gets) gives {_pct(sel['acc_mean'])}%.")
    for name, r in results.items():
        if name.startswith("baseline") or r.get("control") or "acc_mean" not in r or not base:
            continue
        parts = []
        for ref, label in ((base, "last epoch"), (results.get("baseline_best"), "noisy-validation epoch")):
            if ref:
                d = 100 * (r["acc_mean"] - ref["acc_mean"])
                spread = 100 * (r["acc_std"] + ref["acc_std"])
                verdict = ("beats" if d > spread else "falls short of" if d < -spread else "is within the spread of")
                parts.append(f"{verdict} the full-noisy baseline's {label} ({d:+.2f} points)")
        out.append(f"{r.get('method', name)} ({r.get('protocol', '-')} protocol) {' and '.join(parts)}.")
    for row in control_margins(results):
        m = row["margins"]
        ref = "random_clean" if "random_clean" in m else "random_noisy"
        if ref not in m:
            continue
        if m[ref] <= 0:
            out.append(f"{row['method']} ({row['protocol']} protocol) does not beat {ref} real images of the same "
                       f"size ({m[ref]:+.2f} points): this figure says nothing about distillation.")
        else:
            out.append(f"{row['method']} ({row['protocol']} protocol) is {m[ref]:+.2f} points above {ref} real "
                       f"images of the same size.")
    if preset in PRESET_NOTE:
        out.append(PRESET_NOTE[preset])
    return out


def write_report(out_dir: str, doc: dict, title: str = "jaxdistill denoise") -> str:
    cfg, noise, results = doc["config"], doc["noise"], doc["results"]
    lines = [f"# {title}", "",
             f"Data set **{cfg.get('dataset')}**, noise **{noise.get('spec', noise.get('type'))}** "
             f"(realized {_pct(noise.get('realized'))}%, seed {noise.get('seed')}), preset **{cfg.get('preset')}**, "
             f"IPC {cfg.get('ipc')}, {cfg.get('k')} evaluation nets per figure, device "
             f"{doc['versions'].get('device')}.", "",
             results_table(results), ""]
    ctl = controls_table(results)
    if ctl:
        lines += ["## Against the controls (points above real images of the same size)", "",
                  "random_noisy: random training images per noisy class with their noisy labels; random_clean: per "
                  "true class with true labels; selected: the set the distiller started from. Same protocol, nets "
                  "and keys as the distilled set.", "", ctl, ""]
    lines += ["## What the figures say", ""]
    lines += [f"- {s}" for s in findings(results, noise, cfg.get("preset"))]
    if doc.get("timings"):
        lines += ["", "## Wall time per stage", "", "| stage | time |", "|---|---|"]
        lines += [f"| {k} | {_fmt_secs(v)} |" for k, v in doc["timings"].items()]
    pics = [f for f in sorted(os.listdir(out_dir)) if f.endswith(".png")]
    if pics:
        lines += ["", "## Pictures", ""] + [f"![{p}]({p})" for p in pics]
    lines += ["", "Every headline figure is test accuracy after the last training step. The best-over-checkpoints "
              "column (DANCE's and RCIG's own protocols) is each net's best test accuracy over the protocol's "
              "evaluation points, picked on the test set as DANCE's paper and the study's RCIG eval.py report "
              "it, so it is optimistic and not comparable with the headline. `results.json` holds the per-net "
              "values (`best_*` beside `acc_*`), the config and the package versions.", ""]
    text = "\n".join(lines)
    atomic_write_text(os.path.join(out_dir, "report.md"), text)
    return text


# ------------------------------------------------------------------------------------------ pictures
def plot_distilled(path: str, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                   title: str = "", max_per_class: int = 10) -> None:
    """Grid: one row per class, up to max_per_class images. images (M,H,W,C) in [0,1]; images with other than
    one or three channels (a user's npz) are drawn as the mean over their channels, in grey."""
    plt = pyplot()
    classes = sorted(set(int(c) for c in labels))
    cols = max(1, min(max_per_class, max(int((labels == c).sum()) for c in classes)))
    fig, axes = plt.subplots(len(classes), cols, figsize=(cols * 0.9 + 1.4, len(classes) * 0.9 + 0.4),
                             squeeze=False)
    for r, c in enumerate(classes):
        idx = np.where(labels == c)[0][:cols]
        for j in range(cols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(idx):
                im = images[idx[j]]
                grey = im.shape[-1] != 3
                ax.imshow(im.mean(-1) if grey else im, cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r, 0].set_ylabel(class_names[c] if c < len(class_names) else str(c), rotation=0, ha="right",
                              va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    savefig(fig, path)
    plt.close(fig)


def plot_transition(path: str, T: np.ndarray, class_names: list[str], title: str = "") -> None:
    """Heatmap of a (C, C) transition matrix, P(noisy label | true label), annotated when small."""
    plt = pyplot()
    c = T.shape[0]
    fig, ax = plt.subplots(figsize=(min(1 + 0.55 * c, 14), min(0.8 + 0.5 * c, 13)))
    im = ax.imshow(T, cmap="viridis", vmin=0, vmax=1)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{T[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if T[i, j] < 0.5 else "black")
        names = [n[:12] for n in class_names[:c]]
        ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(c), names, fontsize=7)
    ax.set_xlabel("noisy label")
    ax.set_ylabel("true label")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or "realized label transition matrix", fontsize=10)
    savefig(fig, path)
    plt.close(fig)


def plot_accuracy_vs_noise(path: str, series: dict, title: str = "") -> None:
    """series: name -> list of (rate, mean, std) (accuracies in [0,1]); one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(series.items()):
        pts = sorted(pts)
        r, m, s = (np.array(v, float) for v in zip(*pts))
        style = "--k" if name.startswith("baseline") else "-o"
        ax.errorbar(r, 100 * m, yerr=100 * s, fmt=style, capsize=3, label=name, markersize=4)
    ax.set_xlabel("noise rate")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    savefig(fig, path)
    plt.close(fig)


def plot_grouped_bars(path: str, panels: list[dict], title: str = "") -> list[dict]:
    """One panel per dict, side by side: for each group on the x axis, one bar per series with its std as an
    error bar. A panel is {"title", "ylabel", "groups": [G names], "series": {name: [(mean, std) or None] * G}};
    a None leaves the bar out. Returns per panel {name: [bar height, nan where left out]}, read back from the
    drawn bars so a caller (and the tests) can check what the picture shows."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    drawn = []
    for ax, p in zip(axes[0], panels):
        groups, series = p["groups"], p["series"]
        width = 0.8 / max(1, len(series))
        heights: dict = {}
        for j, (name, vals) in enumerate(series.items()):
            xs, ms, ss, slots = [], [], [], []
            for g, v in enumerate(vals):
                if v is not None:
                    xs.append(g - 0.4 + width * (j + 0.5))
                    ms.append(v[0])
                    ss.append(v[1])
                    slots.append(g)
            h = [float("nan")] * len(groups)
            if xs:
                bars = ax.bar(xs, ms, width, yerr=ss, capsize=2, label=name)
                for g, b in zip(slots, bars.patches):
                    h[g] = float(b.get_height())
            heights[name] = h
        drawn_vals = [v for vals in series.values() for v in vals if v is not None]
        if drawn_vals:  # bars start near the lowest one so that differences of a few points stay visible
            lo, hi = min(m - s for m, s in drawn_vals), max(m + s for m, s in drawn_vals)
            pad = hi - lo + 1e-9
            ax.set_ylim(lo - 0.1 * pad, hi + 0.05 * pad)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel(p.get("ylabel", ""))
        ax.set_title(p.get("title", ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        # below the axes: inside, it would hide the tallest bars
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
        drawn.append(heights)
    if title:
        fig.suptitle(title, fontsize=10)
    savefig(fig, path)
    plt.close(fig)
    return drawn


def plot_run_curves(out_dir: str, methods: list[str]) -> Optional[str]:
    """curves.png in `out_dir`: each distiller's loss per iteration (its workdir's metrics.jsonl) and the
    baseline's train loss / noisy-validation / test accuracy per epoch (out_dir/baseline). None if no curves."""
    series = {f"distill {m}": read_metrics(os.path.join(out_dir, m), f"distill_{m}") for m in methods}
    base = read_metrics(os.path.join(out_dir, "baseline"), "baseline_noisy")
    series["baseline (noisy labels)"] = [{**r, "train_loss": r["loss"]} if "loss" in r else r for r in base
                                         if not isinstance(r.get("loss"), str)]
    for r in series["baseline (noisy labels)"]:
        r.pop("loss", None)
    return plot_curves(os.path.join(out_dir, "curves.png"), series)
