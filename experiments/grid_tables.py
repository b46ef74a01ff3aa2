"""The experiment grid's tables: the accuracy table per data set, the controls table, the study's findings
(margin, spread, verdict) and the cells table of <GRID>.md. Pure functions of the aggregated data
(grid_aggregate.py)."""
from __future__ import annotations

import math
from typing import Optional


def _fmt(v: Optional[tuple]) -> str:
    """mean +- std: over the seeds' means where there are several seeds (marked), else over the nets."""
    if v is None:
        return "-"
    if len(v) > 3 and v[3] is not None:
        return f"{100 * v[0]:.2f} +- {100 * v[3]:.2f} ({v[4]} seeds)"
    return f"{100 * v[0]:.2f} +- {100 * v[1]:.2f}"


def _spread(a: tuple, b: tuple) -> tuple:
    """(spread, over): sqrt(std_a^2 + std_b^2) over the seeds' means where both have several seeds, else over
    the evaluation nets."""
    if len(a) > 3 and len(b) > 3 and a[3] is not None and b[3] is not None:
        return math.hypot(a[3], b[3]), "seeds"
    return math.hypot(a[1], b[1]), "nets"


def markdown(grid_name: str, data: dict, summ: dict) -> str:
    grid = data["grid"]
    methods, ipcs = grid["methods"], grid["ipcs"]
    finished = [c for c in data["cells"] if c["finished"]]
    lines = [f"# Grid `{grid['name']}`", "", grid["description"], "",
             f"Preset **{grid['preset']}**, methods {', '.join(methods)}, IPC {', '.join(map(str, ipcs))}, "
             f"seeds {', '.join(map(str, grid['seeds']))}, "
             f"{'/'.join(str(k) for k in sorted({c['k'] for c in finished} or {grid['k']}))} evaluation nets per figure. "
             f"{len(finished)} of {len(data['cells'])} cells finished. Aggregated {data['aggregated']} on "
             f"{data['machine']}.", "",
             "Test accuracy %, mean over the evaluation nets pooled over seeds, +- the std over the seeds' means "
             "where a row has several seeds (marked), else over the nets. Each method cell reads "
             "`standard / own`: the common hard-label protocol, then the method's own evaluation protocol "
             "after its last step (the headline); DANCE and RCIG cells add `[best B]`, the best test accuracy "
             "over the own protocol's evaluation points (picked on the test set, as DANCE's paper reports; "
             "not the headline). "
             "`baseline last` = the same ConvNet trained on the whole noisy training set, its last epoch (with the "
             "`cpu` preset trained at constant lr until it memorised the wrong labels, then decayed: the noisy-label "
             "field's and the study's comparison); `baseline best` = the epoch a noisy validation split picks (what "
             "a careful user gets); `wrong fit` = the fraction of the wrongly labelled training images the last "
             "epoch predicts as their wrong label; `clean` = trained on the true labels (upper bound).", ""]
    if any(c["tiny"] for c in finished):
        lines += ["**Smoke-test figures (`--tiny`: every part shrunk to seconds); they say nothing about the "
                  "methods.**", ""]
    for ds in grid["datasets"]:
        head = (["noise", "realized %", "baseline last", "baseline best", "wrong fit %", "baseline schedule",
                 "clean"] + [f"{m} IPC{k}" for k in ipcs for m in methods])
        lines += [f"## {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for noise in grid["noises"]:
            v = summ.get((ds, noise))
            if v is None:
                lines.append(f"| {noise} | not run | " + " | ".join("-" for _ in head[2:]) + " |")
                continue
            real = "-" if v["_realized"] is None else f"{100 * v['_realized']:.1f}"
            cells = [f"{_fmt(v.get(f'{m}/ipc{k}/standard'))} / {_fmt(v.get(f'{m}/ipc{k}/own'))}"
                     + (f" [best {_fmt(v[f'{m}/ipc{k}/own_best'])}]" if v.get(f"{m}/ipc{k}/own_best") else "")
                     for k in ipcs for m in methods]
            fit = "-" if v.get("_wrong_fit") is None else f"{100 * v['_wrong_fit']:.1f}"
            lines.append(f"| {noise} | {real} | {_fmt(v.get('baseline_last'))} | {_fmt(v.get('baseline_best'))} | "
                         f"{fit} | {v.get('_schedule') or '-'} | {_fmt(v.get('clean'))} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _controls_tables(grid, summ)
    lines += _findings_lines(grid, summ)
    lines += [f"![accuracy vs noise]({grid['name']}.png)", "", "## Cells: how to reproduce each", "",
              "| cell | status | wall time (recorded runs) | device | machine, start | command |", "|---|---|---|---|---|---|"]
    for c in data["cells"]:
        secs = "-" if c.get("seconds") is None else f"{c['seconds'] / 60:.1f} min"
        if (c.get("runs") or 1) > 1:
            killed = c.get("killed_runs") or 0
            secs += f" ({c['runs']} runs" + (f", {killed} killed or still running: timed to its last file write)" if killed else ")")
        status = ("finished (kept from the committed .json: no run directory here)" if c.get("carried") else
                  "finished" if c["finished"] else
                  "started, not finished (a re-run resumes it)" if c.get("started") else "not run")
        lines.append(f"| {c['noise']} ipc{c['ipc']} seed{c['seed']} | {status} | {secs} | {c.get('device') or '-'} | "
                     f"{c.get('machine') or '-'}, {c.get('started') or '-'} | `{c['command']}` |")
    lines.append("")
    return "\n".join(lines)


def _controls_tables(grid: dict, summ: dict) -> list:
    """Per data set: the controls (common protocol) and each method's margin over random_clean / selected."""
    methods, ipcs = grid["methods"], grid["ipcs"]
    if not any(v.get(f"random_noisy/ipc{k}") for v in summ.values() for k in ipcs):
        return []
    lines = ["## Against the controls (common protocol)", "",
             "random_noisy / random_clean: IPC random training images per noisy / true class with those labels; "
             "selected: the set each distiller starts from. Same protocol, nets and keys as the distilled sets. "
             "Method cells: points above random_clean / above selected. A distilled set at or below random_clean "
             "says nothing about distillation."
             + (f" Each random control is drawn {grid['control_draws']} times and the nets of all draws are pooled, "
                "so its +- includes how much a random draw varies, not only the evaluation nets."
                if grid["control_draws"] > 1 else ""), ""]
    for ds in grid["datasets"]:
        head = ["noise"] + [f"{c} IPC{k}" for k in ipcs for c in ("random noisy", "random clean")] + \
               [f"{m} IPC{k}" for k in ipcs for m in methods]
        lines += [f"### {ds}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for noise in grid["noises"]:
            v = summ.get((ds, noise))
            if v is None:
                continue
            cells = [_fmt(v.get(f"{c}/ipc{k}")) for k in ipcs for c in ("random_noisy", "random_clean")]
            for k in ipcs:
                for m in methods:
                    acc, rc, sel = (v.get(x) for x in (f"{m}/ipc{k}/standard", f"random_clean/ipc{k}",
                                                       f"selected_{m}/ipc{k}"))
                    d = lambda ref: "-" if acc is None or ref is None else f"{100 * (acc[0] - ref[0]):+.1f}"  # noqa: E731
                    cells.append(f"{d(rc)} / {d(sel)}")
            lines.append(f"| {noise} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


FINDING_CLAIMS = {
    "1": "symmetric noise >= 0.2: the best distilled set beats the full noisy set",
    "3": "asymmetric noise: distillation fails (the best distilled set is below the full noisy set)",
    "denoise": "the distilled set beats random real images with their true labels (common protocol)",
}


def _verdict(margin: float, spread: float, sign: int) -> str:
    """'holds' when the margin points the claimed way by more than the spread, 'does not hold' when it points
    the other way by more than the spread, else 'within the spread'."""
    if sign * margin > spread:
        return "holds"
    if sign * margin < -spread:
        return "does not hold"
    return "within the spread"


def findings(grid: dict, summ: dict) -> list[dict]:
    """The study's findings 1 and 3, and the denoising check against random_clean, per finished row and IPC.

    Each entry: finding id, dataset, noise, ipc, what is compared, margin (a - b, accuracy fraction), spread
    (sqrt(std_a^2 + std_b^2) over the evaluation nets, and a pooled control's draws) and the verdict
    (`_verdict`). Finding 1/3 compare the best distilled set by its headline (own protocol; the common protocol
    where the own is missing) with the full-noisy baseline twice: its last epoch (`baseline_last`, the study's
    comparison) and the epoch the noisy validation split picks (`baseline_best`); 'denoise' compares each
    method's common-protocol set with random_clean. The spread is over the seeds' means where both sides have
    several seeds (`spread_over`), else over the evaluation nets.
    """
    out = []
    for ds in grid["datasets"]:
        for noise in grid["noises"]:
            v = summ.get((ds, noise))
            if v is None:
                continue
            kind, _, rate = noise.partition(":")
            for k in grid["ipcs"]:
                def add(fid, label, a, b, sign):
                    spread, over = _spread(a, b)
                    out.append({"finding": fid, "dataset": ds, "noise": noise, "ipc": k, "compared": label,
                                "a": a[0], "b": b[0], "margin": a[0] - b[0], "spread": spread, "spread_over": over,
                                "seeds": min(a[4] if len(a) > 4 else 1, b[4] if len(b) > 4 else 1),
                                "verdict": _verdict(a[0] - b[0], spread, sign)})

                heads = {m: v.get(f"{m}/ipc{k}/own") or v.get(f"{m}/ipc{k}/standard") for m in grid["methods"]}
                heads = {m: h for m, h in heads.items() if h is not None}
                fid = "1" if kind == "symmetric" and float(rate or 0) >= 0.2 else "3" if kind == "asymmetric" else None
                if fid and heads:
                    m = max(heads, key=lambda name: heads[name][0])
                    sched = v.get("_schedule")
                    # a baseline that did not train to memorisation is named so: its last epoch is not the study's
                    tag = "" if sched in (None, "memorise") else f" ({sched})"
                    for bname in ("baseline_last", "baseline_best"):
                        if v.get(bname):
                            add(fid, f"best distilled ({m}) vs {bname}{tag}", heads[m], v[bname],
                                1 if fid == "1" else -1)
                rc = v.get(f"random_clean/ipc{k}")
                if kind != "clean" and rc:
                    for m in grid["methods"]:
                        if v.get(f"{m}/ipc{k}/standard"):
                            add("denoise", f"{m} vs random_clean", v[f"{m}/ipc{k}/standard"], rc, 1)
    return out


def _findings_lines(grid: dict, summ: dict) -> list:
    rows = findings(grid, summ)
    if not rows:
        return []
    lines = ["## The study's findings, computed from the cells", "",
             "Margins in accuracy points (a - b); spread = sqrt(std_a^2 + std_b^2), over the seeds' means where "
             "both sides have several seeds, else over the evaluation nets (and the draws of a pooled random "
             "control). The study compared with training on the noisy set to the end (`baseline_last`); "
             "`baseline_best` (early stopping on a noisy validation split) is the stronger reference a careful user "
             "has. A "
             "finding **holds** when the margin points the claimed way by more than the spread, **does not hold** "
             "when it points the other way by more than the spread. Claims: "
             + "; ".join(f"{fid}: {text}" for fid, text in FINDING_CLAIMS.items())
             + ". Findings 2 (natural noise) and 4 (hard samples) are not measured by this grid.", "",
             "| finding | dataset | noise | IPC | compared | a | b | margin | spread (over) | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['finding']} | {r['dataset']} | {r['noise']} | {r['ipc']} | {r['compared']} | "
                     f"{100 * r['a']:.2f} | {100 * r['b']:.2f} | {100 * r['margin']:+.2f} | {100 * r['spread']:.2f} "
                     f"({r.get('spread_over', 'nets')}) | {r.get('seeds', 1)} | {r['verdict']} |")
    return lines + [""]
