"""Line plots of logged metrics, read back from `metrics.jsonl`."""

from __future__ import annotations

import math
import os

from jaxalign.runlog.metrics import read_metrics


def plot_metrics(
    run_dir: str | os.PathLike, keys: list[str], out_png: str | os.PathLike, title: str | None = None
) -> str:
    """Plots each of `keys` (e.g. "train/loss") against step, one subplot per key, into `out_png`.

    Null (NaN / inf) values show as gaps. Raises ValueError naming the keys that were never logged.
    Returns the path of the PNG.
    """
    # A Figure with an explicit Agg canvas: no pyplot global state, no backend switch for the caller.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not keys:
        raise ValueError("plot_metrics: no keys to plot")
    records = read_metrics(run_dir)
    logged = {key for record in records for key in record}
    if missing := [key for key in keys if key not in logged]:
        available = sorted(logged - {"step", "time"})
        raise ValueError(f"{run_dir}: metrics {missing} were never logged (logged: {available})")
    fig = Figure(figsize=(8, 2.5 * len(keys)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        points = [(r["step"], math.nan if r[key] is None else r[key]) for r in records if key in r]
        steps, values = zip(*points)
        ax.plot(steps, values, linewidth=1.2, marker="." if len(points) < 50 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:
        fig.suptitle(title)
    out_png = os.fspath(out_png)
    if parent := os.path.dirname(out_png):
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
