"""The two helpers behind every picture: pyplot on the file-only Agg backend, and an atomic PNG write.

`report` (noise.png, distilled.png, the bar charts, curves.png), `runlog.plot_curves`, `hardsamples` and the
experiment scripts draw with these. matplotlib is imported only when a picture is drawn.
"""
from __future__ import annotations

import io

from jaxdistill.checkpoint import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig, path: str) -> None:
    """`fig` as a PNG (110 dpi, tight box) at `path`, written atomically; in a multi-process run by process 0
    only (`checkpoint.atomic_write_bytes`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
