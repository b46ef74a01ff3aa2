"""The experiment grid's plot: accuracy vs noise rate, one panel per (data set, noise kind, IPC)."""
from __future__ import annotations

from typing import Optional


def _noise_rate(noise: str, realized: Optional[float]) -> float:
    """x position in the plots: the nominal rate, 0 for clean, the realized rate for natural noise."""
    kind, _, rest = noise.partition(":")
    if kind == "clean":
        return 0.0
    try:
        return float(rest)
    except ValueError:
        return float(realized or 0.0)


def plot(path: str, data: dict, summ: dict) -> None:
    """Accuracy vs noise rate: one panel per (dataset, noise kind, IPC); lines = methods (standard and own
    protocol), the random_clean / random_noisy controls (grey), the full-noisy baseline (last epoch and the noisy
    validation split's epoch) and the clean upper
    bound. The clean row is rate 0 of every kind."""
    import numpy as np

    from jaxdistill.plotting import pyplot, savefig

    grid = data["grid"]
    kinds = [k for k in dict.fromkeys(n.split(":")[0] for n in grid["noises"]) if k != "clean"] or ["clean"]
    panels = [(ds, kind, ipc) for ds in grid["datasets"] for kind in kinds for ipc in grid["ipcs"]]
    plt = pyplot()
    ncol = len(grid["ipcs"])
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, (ds, kind, ipc) in zip(axes.ravel(), panels):
        noises = [n for n in grid["noises"] if n == "clean" or n.split(":")[0] == kind]
        series: dict = {}
        for n in noises:
            v = summ.get((ds, n))
            if v is None:
                continue
            x = _noise_rate(n, v["_realized"])
            for m in grid["methods"]:
                for proto in ("standard", "own"):
                    if v.get(f"{m}/ipc{ipc}/{proto}") is not None:
                        series.setdefault(f"{m} ({proto})", []).append((x, *v[f"{m}/ipc{ipc}/{proto}"][:2]))
            for b, label in (("baseline_last", "baseline last epoch (full noisy)"),
                             ("baseline_best", "baseline noisy-val epoch (full noisy)")):
                if v.get(b) is not None:
                    series.setdefault(label, []).append((x, *v[b][:2]))
            for c in ("random_clean", "random_noisy"):
                if v.get(f"{c}/ipc{ipc}") is not None:
                    series.setdefault(f"control: {c} (standard)", []).append((x, *v[f"{c}/ipc{ipc}"][:2]))
        for name, pts in sorted(series.items()):
            r, mu, sd = (np.array(a, float) for a in zip(*sorted(pts)))
            if name.startswith("baseline"):
                style = {"fmt": "--ks" if "last" in name else ":ks", "mfc": "k" if "last" in name else "w"}
            elif name.startswith("control"):
                style = {"fmt": "-.x", "color": "0.35" if "clean" in name else "0.65"}
            else:
                style = {"fmt": "-o" if "standard" in name else ":^"}
            ax.errorbar(r, 100 * mu, yerr=100 * sd, capsize=3, label=name, markersize=4, **style)
        clean = next((summ[(d, n)]["clean"] for (d, n) in summ if d == ds and summ[(d, n)].get("clean")), None)
        if clean is not None:
            ax.axhline(100 * clean[0], color="g", ls="-.", lw=1, label="clean labels (upper bound)")
        ax.set_title(f"{ds}, {kind} noise, IPC {ipc}", fontsize=10)
        ax.set_xlabel("noise rate")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if series or clean is not None:
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
