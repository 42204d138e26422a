"""Bad checkpoints fail with errors that name the file and the tensor or field at fault."""

import json
import os

import numpy as np
import pytest

from jaxalign import models, tokenizer
from jaxalign.models import CheckpointError, safetensors_io
from tests.models.hf_reference import make_reference


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    make_reference("llama-tied-linear-mqa").save_pretrained(path)
    return path


def copy_checkpoint(src, dst, edit=None):
    os.makedirs(dst, exist_ok=True)
    with open(src / "config.json") as f:
        config = json.load(f)
    (dst / "config.json").write_text(json.dumps(config))
    st = safetensors_io.SafetensorsFile(str(src / "model.safetensors"))
    tensors = {k: np.array(st.get(k)) for k in st.keys()}
    if edit:
        edit(tensors)
    safetensors_io.save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_path_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        models.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty.*config\.json not found"):
        models.load(tmp_path / "empty")


def test_missing_tensor_is_named(checkpoint, tmp_path):
    dst = copy_checkpoint(checkpoint, tmp_path / "m", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        models.load(dst)


def test_misshaped_tensor_is_named(checkpoint, tmp_path):
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((5, 32), np.float32)

    dst = copy_checkpoint(checkpoint, tmp_path / "m", edit)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \(5, 32\), "
                                              r"expected \(8, 32\)"):
        models.load(dst)


def test_unsupported_architecture(checkpoint, tmp_path):
    dst = copy_checkpoint(checkpoint, tmp_path / "m")
    config = json.loads((dst / "config.json").read_text())
    config["model_type"] = "mistral"
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: unsupported architecture model_type='mistral'"):
        models.load(dst)


def test_missing_config_field(checkpoint, tmp_path):
    dst = copy_checkpoint(checkpoint, tmp_path / "m")
    config = json.loads((dst / "config.json").read_text())
    del config["num_hidden_layers"]
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing field 'num_hidden_layers'"):
        models.load(dst)


def test_corrupt_safetensors(checkpoint, tmp_path):
    dst = copy_checkpoint(checkpoint, tmp_path / "m")
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt tensor"):
        models.load(dst)
    (dst / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors"):
        models.load(dst)
    (dst / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        models.load(dst)


def test_corrupt_gguf_and_tokenizer_paths(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"bad\.gguf: not a readable GGUF file"):
        models.load(bad)
    with pytest.raises(CheckpointError, match=r"expected a Hugging Face directory or a \.gguf"):
        models.load(_touch(tmp_path / "x.bin"))
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        tokenizer.load(tmp_path)


def _touch(path):
    path.write_bytes(b"")
    return path


def test_out_of_vocabulary_ids_are_an_error_not_nan_logits():
    from jaxalign.errors import InputError
    from jaxalign.models import ModelConfig
    from jaxalign.sampling import Sampler

    model = models.init_model(ModelConfig.tiny(vocab_size=64))
    with pytest.raises(InputError, match=r"input_ids\[0, 2\] = 70 is outside the model's vocabulary \[0, 64\)"):
        models.jit_forward(model, np.array([[1, 2, 70]]))
    with pytest.raises(InputError, match=r"input_ids\[1, 0\] = -1"):
        models.jit_forward(model, np.array([[1, 2], [-1, 3]]))
    with pytest.raises(InputError, match=r"prompt ids\[0, \d+\] = 64 is outside"):
        Sampler(model, None).generate([[1, 64]], max_new_tokens=2)
    assert np.isfinite(np.asarray(models.jit_forward(model, np.array([[0, 63]])))).all()  # the edges are fine
