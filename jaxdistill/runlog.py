"""Training curves: each long stage appends its metrics to ``metrics.jsonl`` in its run directory as it goes.

One JSON object per line: ``{"stage", "step", "wall_s", <metrics>}``; ``wall_s`` counts from the log's
creation, metrics are plain floats (loss, lr, accuracies when measured). A resumed stage appends to the
same file (its steps continue; ``wall_s`` restarts). Each line is flushed when written, so a crash keeps
every finished step. When ``tensorboardX`` (or else ``clu``) is installed, the same scalars also go to
TensorBoard event files under ``<run dir>/tb/<stage>``; neither is a dependency.
`read_metrics` reads a file back; `plot_curves` draws the report's curves.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Optional

from jaxdistill.plotting import pyplot, savefig

FILENAME = "metrics.jsonl"


def _tb_writer(logdir: str):
    """A (add_scalar(name, value, step), flush, close) writer, or None when no TensorBoard writer is installed."""
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter(logdir)
    except ImportError:
        pass
    try:
        from clu import metric_writers

        w = metric_writers.SummaryWriter(logdir)

        class _Clu:
            def add_scalar(self, name, value, step):
                w.write_scalars(step, {name: value})

            def flush(self):
                w.flush()

            def close(self):
                w.close()

        return _Clu()
    except ImportError:
        return None


class MetricsLog:
    """Appends ``{"stage", "step", "wall_s", **metrics}`` lines to ``run_dir/metrics.jsonl``.

    run_dir=None gives a log that records nothing (stages without a run directory), as does every process but
    process 0 of a multi-process run.
    """

    def __init__(self, run_dir: Optional[str], stage: str, *, tensorboard: bool = True):
        self.stage = stage
        import jax

        # Only process 0 of a multi-process run writes (the others would append the same lines again).
        self.path = os.path.join(run_dir, FILENAME) if run_dir and jax.process_index() == 0 else None
        self._t0 = time.perf_counter()
        self._tb = None
        if self.path:
            os.makedirs(run_dir, exist_ok=True)
            if tensorboard:
                self._tb = _tb_writer(os.path.join(run_dir, "tb", stage.replace("/", "_")))

    def log(self, step: int, **metrics: Any) -> None:
        """Append one line now. None values are dropped; arrays of one value become floats."""
        self.log_many([(step, metrics)])

    def log_many(self, rows: list) -> None:
        """Append the lines of [(step, metrics), ...] with one file write (a compiled chunk's iterations)."""
        if self.path is None or not rows:
            return
        wall = round(time.perf_counter() - self._t0, 4)
        out = []
        for step, metrics in rows:
            row: dict = {"stage": self.stage, "step": int(step), "wall_s": wall}
            for k, v in metrics.items():
                if v is None:
                    continue
                v = float(v)
                row[k] = v if math.isfinite(v) else str(v)  # JSON has no NaN/inf
            out.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in out))
        if self._tb is not None:
            for row in out:
                for k, v in row.items():
                    if k not in ("stage", "step") and isinstance(v, float):
                        self._tb.add_scalar(f"{self.stage}/{k}", v, int(row["step"]))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str, stage: Optional[str] = None) -> list[dict]:
    """Rows of a metrics.jsonl (a directory or the file), optionally of one stage; a torn last line is skipped."""
    if os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write
            if stage is None or row.get("stage") == stage:
                rows.append(row)
    return rows


def plot_curves(path: str, series: dict[str, list[dict]], title: str = "") -> Optional[str]:
    """One panel per entry of `series` (name -> metrics rows): every numeric metric against step.

    Returns `path`, or None when there is nothing to plot.
    """
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], series.items()):
        acc_ax = None
        for k in ("loss", "train_loss", "val_acc", "test_acc", "test_acc_selected", "wrong_fit"):
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), float)]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if "acc" in k or k == "wrong_fit":  # accuracies and the wrong-label fit on a [0, 1] axis
                acc_ax = acc_ax or ax.twinx()
                acc_ax.plot(xs, ys, "o--" if len(pts) < 4 else "--", color=f"C{2 + len(acc_ax.lines)}", label=k)
                acc_ax.set_ylim(0, 1)
                acc_ax.set_ylabel("accuracy")
            else:
                ax.plot(xs, ys, marker="o" if len(pts) < 4 else None, color="C0", label=k)
                ax.set_ylabel("loss")
        handles = ax.get_legend_handles_labels()
        if acc_ax is not None:
            h2 = acc_ax.get_legend_handles_labels()
            handles = (handles[0] + h2[0], handles[1] + h2[1])
        ax.legend(*handles, fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("step" if "distill" in name else "epoch")
    if title:
        fig.suptitle(title)
    savefig(fig, path)
    plt.close(fig)
    return path
