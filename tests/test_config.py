"""Config machinery: YAML <-> frozen dataclasses, overrides, clear errors; every shipped YAML loads."""

import dataclasses
import pathlib

import pytest

from jaxalign import config
from jaxalign.cli.chat import ChatConfig
from jaxalign.config import ConfigError
from jaxalign.demo import DemoConfig
from jaxalign.eval.run import EvalRunConfig
from jaxalign.models import ModelConfig
from jaxalign.rl.config import GRPOConfig
from jaxalign.rm.trainer import RMConfig
from jaxalign.sft.trainer import SFTConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
# configs/<kind>/*.yaml mirror these dataclasses.
KINDS = {"model": ModelConfig, "chat": ChatConfig, "sft": SFTConfig, "grpo": GRPOConfig, "demo": DemoConfig,
         "eval": EvalRunConfig, "rm": RMConfig}


def test_every_shipped_yaml_loads():
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert files
    for path in files:
        kind = path.relative_to(ROOT / "configs").parts[0]
        assert kind in KINDS, f"{path}: no config class registered for configs/{kind}/"
        loaded = config.load(KINDS[kind], path)
        # YAML is only a serialisation: dumping and reloading gives the same tree.
        assert config.from_dict(KINDS[kind], config.to_dict(loaded)) == loaded


def test_demo_yaml_is_the_embedded_default():
    assert config.load(DemoConfig, ROOT / "configs/demo/default.yaml") == DemoConfig()


def test_presets_match_their_yaml():
    assert config.load(ModelConfig, ROOT / "configs/model/smollm2_135m.yaml") == ModelConfig.smollm2_135m()
    assert config.load(ModelConfig, ROOT / "configs/model/qwen3_4b.yaml") == ModelConfig.qwen3_4b()


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: x\nsampling:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: sampling: unknown key\(s\) \['temprature'\]; "
                                          r"valid keys are \['temperature', 'top_k', 'top_p'\]"):
        config.load(ChatConfig, path)


def test_overrides_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: x\nmax_new_tokens: 8\n")
    c = config.load(ChatConfig, path, ["sampling.temperature=0.7", "prompts=[a, b]", "max_new_tokens=16"])
    assert c.sampling.temperature == 0.7 and c.prompts == ("a", "b") and c.max_new_tokens == 16
    assert dataclasses.is_dataclass(c) and c.__dataclass_params__.frozen
    with pytest.raises(ConfigError, match="max_new_tokens: expected an integer, got 'many'"):
        config.load(ChatConfig, path, ["max_new_tokens=many"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        config.load(ChatConfig, path, ["max_new_tokens"])
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\]"):
        config.load(ChatConfig, path, ["sampling.top_p=0"])
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(ChatConfig, tmp_path / "missing.yaml")


def test_model_config_validation():
    with pytest.raises(ValueError, match="num_heads=6 is not a multiple of num_kv_heads=4"):
        ModelConfig.tiny(num_heads=6, num_kv_heads=4)
    assert ModelConfig.tiny(hidden_size=64, num_heads=4).head_dim == 16
    assert ModelConfig.qwen3_4b().num_params() == 4_022_468_096


def test_exponent_floats_without_a_dot_are_numbers():
    """PyYAML reads `3e-4` as a string (YAML 1.1); float fields accept it, other strings still fail."""
    from jaxalign.demo import DemoConfig

    assert config.from_dict(DemoConfig, config.apply_overrides({}, ["rl_lr=3e-4"])).rl_lr == 3e-4
    with pytest.raises(ConfigError, match="rl_lr: expected a number, got 'fast'"):
        config.from_dict(DemoConfig, {"rl_lr": "fast"})
