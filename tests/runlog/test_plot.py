"""plot_metrics: a real PNG of the requested size, gaps for nulls, a clear error for unknown keys."""

import struct

import pytest

from jaxalign.runlog import MetricsLogger, plot_metrics


def test_plot_writes_png_with_one_panel_per_key(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for step in range(1, 61):
            log.log(step, {"loss": 5.0 / step if step != 30 else float("nan"), "lr": 1e-3 * min(1, step / 10)})
            if step % 20 == 0:
                log.log(step, {"accuracy": step / 100}, prefix="eval")
    out = plot_metrics(tmp_path, ["train/loss", "train/lr", "eval/accuracy"], tmp_path / "plots" / "m.png",
                       title="run")
    assert out == str(tmp_path / "plots" / "m.png")
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (800, 750)  # 8 in wide, 2.5 in per panel, 100 dpi
    assert len(data) > 10_000  # three drawn panels, not an empty canvas


def test_plot_names_missing_keys(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"loss": 1.0})
    with pytest.raises(ValueError, match=r"\['train/los'\] were never logged \(logged: \['train/loss'\]\)"):
        plot_metrics(tmp_path, ["train/los"], tmp_path / "x.png")
