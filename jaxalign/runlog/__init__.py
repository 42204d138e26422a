"""Run logging for long trainings: metrics.jsonl + TensorBoard, plots, a progress bar, NaN checks.

    with MetricsLogger(run_dir) as log, Progress(total=steps, desc="sft") as bar:
        log.truncate_after(restored_step)            # on resume
        check_finite(metrics, step)                  # NonFiniteError: stop, keep the last checkpoint
        log.log(step, metrics); bar.update(tokens=n, loss=metrics["loss"])
    plot_metrics(run_dir, ["train/loss"], f"{run_dir}/loss.png")
"""

from jaxalign.runlog.console import Progress, format_metrics
from jaxalign.runlog.finite import NonFiniteError, check_finite
from jaxalign.runlog.metrics import MetricsLogger, read_metrics
from jaxalign.runlog.plot import plot_metrics

__all__ = ["MetricsLogger", "NonFiniteError", "Progress", "check_finite", "format_metrics", "plot_metrics",
           "read_metrics"]
