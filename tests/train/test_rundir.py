"""RunDir: one run per directory (stale locks of dead runs taken over), config history, refused changes."""

import dataclasses
import os
import subprocess
import sys
import textwrap
from typing import ClassVar

import pytest
import yaml

from jaxalign.config import ConfigError, to_dict
from jaxalign.errors import RunDirError
from jaxalign.train import OptimConfig
from jaxalign.train.config import MOVED_TO_RUN, RUN_FIELDS, RunConfig
from jaxalign.train.rundir import RunDir, check_run_dir, config_changes, exactness_changes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cfg:
    optim: OptimConfig = OptimConfig()
    batch_size: int = 8
    run: RunConfig = RunConfig(save_every=10)
    eval_every: int = 0
    stages: tuple[int, ...] = (1, 2)

    MOVED: ClassVar[dict[str, str]] = MOVED_TO_RUN


def _with_checkpoint(run_dir):
    os.makedirs(os.path.join(run_dir, "checkpoints", "10"), exist_ok=True)  # what a resume would restore


def test_second_holder_is_refused_with_the_holders_pid_and_nothing_written(tmp_path):
    run = str(tmp_path / "run")
    with RunDir(run, Cfg(), resume=True):
        before = {n: open(os.path.join(run, n), "rb").read() for n in ("config.yaml",)}
        with pytest.raises(RunDirError, match=rf"run_dir {run} is in use by pid {os.getpid()} on "):
            RunDir(run, Cfg(batch_size=4), resume=False)
        assert {n: open(os.path.join(run, n), "rb").read() for n in before} == before
        assert os.listdir(os.path.join(run, "config_history")) == ["0001.yaml"]
    with RunDir(run, Cfg(), resume=True):  # released on exit
        pass
    assert sorted(os.listdir(os.path.join(run, "config_history"))) == ["0001.yaml", "0002.yaml"]


def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    run = str(tmp_path / "run")
    # A child takes the lock and dies without releasing it (SIGKILL: no cleanup code runs).
    code = textwrap.dedent(f"""
        import os, signal
        from jaxalign.train.rundir import RunDir
        RunDir({run!r}, {{}}, resume=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert open(os.path.join(run, ".lock")).read().startswith("pid ")  # the dead holder's name stayed
    with caplog.at_level("INFO", logger="jaxalign.train.rundir"):
        with RunDir(run, Cfg(), resume=True):
            pass
    assert "taking over the lock left by pid" in caplog.text
    assert open(os.path.join(run, ".lock")).read() == ""  # a clean exit leaves no name behind


def test_changed_config_on_resume_is_refused_naming_fields_unless_allowed(tmp_path, caplog):
    run = str(tmp_path / "run")
    with RunDir(run, Cfg(), resume=True):
        pass
    _with_checkpoint(run)
    saved = open(os.path.join(run, "config.yaml")).read()
    changed = Cfg(optim=OptimConfig(learning_rate=1e-3), batch_size=4)
    with pytest.raises(ConfigError, match=r"batch_size \(8 -> 4\), optim.learning_rate \(3e-05 -> 0.001\).*"
                                          r"--allow-config-change"):
        RunDir(run, changed, resume=True)
    assert open(os.path.join(run, "config.yaml")).read() == saved  # the refused invocation wrote nothing
    assert len(os.listdir(os.path.join(run, "config_history"))) == 1
    with RunDir(run, Cfg(run=RunConfig(save_every=5), eval_every=2), resume=True):  # cadences: exactness is kept
        pass
    with caplog.at_level("WARNING", logger="jaxalign.train.rundir"):
        with RunDir(run, changed, resume=True, allow_config_change=True):
            pass
    assert "changed config (allowed): batch_size" in caplog.text
    assert yaml.safe_load(open(os.path.join(run, "config.yaml")))["batch_size"] == 4
    with RunDir(run, Cfg(batch_size=2), resume=False):  # starting over: any config
        pass
    history = sorted(os.listdir(os.path.join(run, "config_history")))
    assert history == ["0001.yaml", "0002.yaml", "0003.yaml", "0004.yaml"]
    header = open(os.path.join(run, "config_history", "0004.yaml")).read().split("\nbatch_size")[0]
    assert "# invocation: 4\n" in header and "# resume: False\n" in header


def test_a_run_saved_with_flat_run_keys_still_resumes(tmp_path):
    # config.yaml written before `run:` existed: its run keys are compared at their new place
    run = str(tmp_path / "run")
    os.makedirs(run)
    _with_checkpoint(run)
    # only the fields that existed then: `run.attention` came later, absent from it, and is no change
    flat = {k: v for k, v in to_dict(RunConfig(save_every=10)).items() if k in RUN_FIELDS}
    old = {"optim": dataclasses.asdict(OptimConfig()), "batch_size": 8, **flat, "eval_every": 0, "stages": [1, 2]}
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump(old, f)
    with RunDir(run, Cfg(), resume=True):
        pass
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump({**old, "seed": 3}, f)
    with pytest.raises(ConfigError, match=r"run.seed \(3 -> 0\)"):
        RunDir(run, Cfg(), resume=True)


def test_run_info_holds_the_invocation_facts_and_metadata(tmp_path):
    import json

    run = str(tmp_path / "run")
    with RunDir(run, Cfg(), resume=True, metadata={"sandbox_backend": "bubblewrap"}):
        pass
    info = json.load(open(os.path.join(run, "run_info.json")))
    assert info["sandbox_backend"] == "bubblewrap" and info["pid"] == os.getpid() and info["invocation"] == 1
    assert "# sandbox_backend: bubblewrap\n" in open(os.path.join(run, "config_history", "0001.yaml")).read()
    assert yaml.safe_load(open(os.path.join(run, "config_history", "0001.yaml"))) == yaml.safe_load(
        open(os.path.join(run, "config.yaml")))  # the header is YAML comments: the entry loads as the config


def test_without_checkpoints_there_is_nothing_to_keep_exact(tmp_path):
    run = str(tmp_path / "run")
    with RunDir(run, Cfg(), resume=True):
        pass
    with RunDir(run, Cfg(batch_size=2), resume=True):  # the first invocation never saved a step
        pass


def test_config_changes_compare_serialised_values():
    saved = {"a": [1, 2], "b": {"c": 1, "d": 2}, "e": 1}
    assert config_changes(saved, {"a": (1, 2), "b": {"c": 1, "d": 3}, "f": 0}) == ["b.d", "e", "f"]
    assert exactness_changes({"run": {"save_every": 1, "mesh": {"data": 1}, "seed": 0}},
                             {"run": {"save_every": 2, "mesh": {"data": 2}, "seed": 1}}) == ["run.seed"]


def test_run_dir_that_is_a_file_or_under_a_file_is_refused_before_anything_is_made(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match=f"run_dir {f} is a file, not a directory"):
        check_run_dir(str(f))
    with pytest.raises(RunDirError, match="its parent .* is a file"):
        check_run_dir(str(f / "run"))
    with pytest.raises(RunDirError, match="run_dir is empty"):
        check_run_dir("")
    check_run_dir(str(tmp_path / "new" / "deeper"))
    assert not (tmp_path / "new").exists()


def test_a_field_added_after_the_run_was_saved_is_no_change_at_its_default(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    _with_checkpoint(run)
    saved = to_dict(Cfg())
    del saved["run"]["attention"]  # written by a version without run.attention
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump(saved, f)
    with RunDir(run, Cfg(), resume=True):
        pass
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump(saved, f)
    changed = Cfg(run=dataclasses.replace(Cfg().run, attention="splash"))  # not the default: a change
    with pytest.raises(ConfigError, match=r"run.attention \(None -> 'splash'\)"):
        RunDir(run, changed, resume=True)
