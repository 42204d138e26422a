"""A trainer protects its run: one writer per run_dir, unreadable checkpoints skipped, refused config changes."""

import dataclasses
import os

import jax
import numpy as np
import pytest
import yaml
from flax import nnx

from jaxalign.config import ConfigError
from jaxalign.data.checks import DataError
from jaxalign.errors import RunDirError
from jaxalign.runlog import metrics as metrics_module
from jaxalign.runlog import read_metrics
from jaxalign.sft.trainer import train_sft
from jaxalign.train import OptimConfig
from tests.checkpoint.test_manager import _truncate_arrays
from tests.sft.test_trainer import config, corpus  # noqa: F401 (corpus is a fixture)


def _params(summary):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(summary["model"]))]


def test_a_second_trainer_is_refused_while_the_first_keeps_its_records(corpus, monkeypatch):  # noqa: F811
    d, _ = corpus
    first = config(d, "shared", epochs=3, max_steps=6, save_every=2, log_every=1)
    refusals = []
    log = metrics_module.MetricsLogger.log

    def log_then_start_a_second_run(self, step, metrics, prefix="train"):
        log(self, step, metrics, prefix)
        if step == 3 and prefix == "train":  # mid-run, deterministically: the first run holds its directory
            saved = open(os.path.join(first.run.run_dir, "config.yaml")).read()
            with pytest.raises(RunDirError, match=f"is in use by pid {os.getpid()}") as info:
                train_sft(config(d, "shared", epochs=3, max_steps=30, batch_size=1), resume=False)
            refusals.append(str(info.value))
            assert open(os.path.join(first.run.run_dir, "config.yaml")).read() == saved

    monkeypatch.setattr(metrics_module.MetricsLogger, "log", log_then_start_a_second_run)
    summary = train_sft(first, resume=False)
    assert summary["steps"] == 6 and len(refusals) == 1
    assert [r["step"] for r in read_metrics(first.run.run_dir)] == [1, 2, 3, 4, 5, 6]  # every line of the first run
    assert yaml.safe_load(open(os.path.join(first.run.run_dir, "config.yaml")))["max_steps"] == 6
    assert sorted(os.listdir(d / "shared" / "checkpoints")) == ["2", "4", "6"]


def test_truncated_newest_checkpoint_is_skipped_and_the_resumed_run_is_exact(corpus, caplog):  # noqa: F811
    d, _ = corpus
    straight = train_sft(config(d, "damaged", epochs=3, max_steps=6, save_every=2, keep_checkpoints=3),
                         resume=False)
    logged = [r["step"] for r in read_metrics(d / "damaged")]
    _truncate_arrays(str(d / "damaged" / "checkpoints" / "6"))  # e.g. the disk filled after the commit
    with caplog.at_level("WARNING"):
        resumed = train_sft(config(d, "damaged", epochs=3, max_steps=6, save_every=2, keep_checkpoints=3))
    assert "checkpoint step 6 does not restore" in caplog.text and "restored step 4" in caplog.text
    assert resumed["steps"] == 6
    for x, y in zip(_params(straight), _params(resumed)):  # steps 5 and 6 trained again, the same way
        np.testing.assert_array_equal(x, y)
    assert len(os.listdir(d / "damaged" / "checkpoints" / "unreadable")) == 1  # kept, not deleted
    assert [r["step"] for r in read_metrics(d / "damaged")] == logged == [2, 4, 5, 6]  # no step twice


def test_resume_with_a_changed_config_is_refused_unless_allowed(corpus):  # noqa: F811
    d, _ = corpus
    base = dict(epochs=3, max_steps=4, save_every=2)
    train_sft(config(d, "changed", **base), resume=False)
    lr = OptimConfig(learning_rate=1e-3, warmup_fraction=0.05)
    with pytest.raises(ConfigError, match=r"optim.learning_rate \(0.003 -> 0.001\).*--allow-config-change"):
        train_sft(config(d, "changed", **base, optim=lr))
    assert train_sft(config(d, "changed", **base, log_every=1))["steps"] == 4  # a cadence keeps exactness
    assert train_sft(config(d, "changed", **base, optim=lr), allow_config_change=True)["steps"] == 4
    history = sorted(os.listdir(d / "changed" / "config_history"))
    assert history == ["0001.yaml", "0002.yaml", "0003.yaml"]  # the refused invocation left no entry


def test_resume_on_other_data_under_the_same_path_is_refused_unless_allowed(corpus, tmp_path, caplog):  # noqa: F811
    d, _ = corpus
    data_file = tmp_path / "dense.jsonl"
    lines = (d / "dense.jsonl").read_text().splitlines(keepends=True)
    data_file.write_text("".join(lines))
    cfg = config(d, "data-changed", epochs=3, max_steps=4, save_every=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, trajectories=str(data_file)))
    train_sft(cfg, resume=False)
    data_file.write_text("".join(lines[:-1]))  # one trajectory fewer: the saved data position means other rows
    with pytest.raises(DataError, match=f"{data_file}: the training rows changed since step 4"):
        train_sft(cfg)
    with caplog.at_level("WARNING"):
        assert train_sft(cfg, allow_config_change=True)["steps"] == 4
    assert "restarts from its first batch" in caplog.text
