"""Logit parity with the transformers reference (torch, float32) on padded batches."""

import numpy as np
import pytest
import transformers

from jaxalign import models
from tests.models.hf_reference import VARIANTS, make_reference, padded_batch, reference_logits


def assert_close_logits(ours, ref, mask):
    real = mask.astype(bool)
    diff = np.abs(ours - ref)[real]
    bound = 1e-4 * np.maximum(1.0, np.abs(ref)[real])
    assert np.all(diff <= bound), f"max |dlogit| {diff.max():.3g} (bound {bound.min():.3g}..)"


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(request, tmp_path_factory):
    model = make_reference(request.param)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, str(path)


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_transformers(reference, side):
    _, ref_model, path = reference
    ours = models.load(path)
    ids, mask = padded_batch(ours.config.vocab_size, [11, 7, 3, 11], side)
    got = np.asarray(models.jit_forward(ours, ids, attention_mask=mask))
    assert got.dtype == np.float32 and got.shape == ids.shape + (ours.config.vocab_size,)
    assert_close_logits(got, reference_logits(ref_model, ids, mask), mask)


@pytest.mark.parametrize("implementation", ["splash", "pallas_gpu"])
def test_logits_match_transformers_with_the_pallas_kernels(reference, implementation):
    """The TPU and GPU attention kernels (interpret mode here) inside the whole model."""
    _, ref_model, path = reference
    ours = models.replace_config(models.load(path), attention=implementation)
    for side in ("left", "right"):
        ids, mask = padded_batch(ours.config.vocab_size, [11, 7, 3, 11], side)
        got = np.asarray(models.jit_forward(ours, ids, attention_mask=mask))
        assert_close_logits(got, reference_logits(ref_model, ids, mask), mask)


def test_left_and_right_padding_agree(reference):
    _, _, path = reference
    ours = models.load(path)
    lengths = [9, 4, 1]
    ids_l, mask_l = padded_batch(ours.config.vocab_size, lengths, "left", seed=3)
    ids_r, mask_r = padded_batch(ours.config.vocab_size, lengths, "right", seed=3)
    left = np.asarray(models.forward(ours, ids_l, attention_mask=mask_l))
    right = np.asarray(models.forward(ours, ids_r, attention_mask=mask_r))
    np.testing.assert_allclose(left[mask_l.astype(bool)], right[mask_r.astype(bool)], atol=1e-5)


def test_export_round_trip(reference, tmp_path):
    variant, ref_model, path = reference
    ours = models.load(path)
    out = models.save_hf(ours, tmp_path / "export")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
    assert type(reloaded) is type(ref_model)
    ids, mask = padded_batch(ours.config.vocab_size, [8, 5], "left")
    np.testing.assert_allclose(reference_logits(reloaded, ids, mask)[mask.astype(bool)],
                               reference_logits(ref_model, ids, mask)[mask.astype(bool)], atol=1e-6)
    # And our own loader reads the export back to the same parameters.
    again = models.load(out)
    np.testing.assert_array_equal(np.asarray(models.forward(again, ids, attention_mask=mask)),
                                  np.asarray(models.forward(ours, ids, attention_mask=mask)))


def test_sharded_export_with_index(tmp_path):
    ref_model = make_reference("qwen2")
    ref_model.save_pretrained(tmp_path / "src")
    ours = models.load(tmp_path / "src")
    out = models.save_hf(ours, tmp_path / "sharded", max_shard_bytes=40_000)
    files = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(files) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
    ids, mask = padded_batch(ours.config.vocab_size, [6, 6], "right")
    assert_close_logits(np.asarray(models.forward(models.load(out), ids, attention_mask=mask)),
                        reference_logits(reloaded, ids, mask), mask)


def test_bfloat16_compute_is_close(reference):
    _, ref_model, path = reference
    ours = models.load(path, dtype="float32", compute_dtype="bfloat16")
    ids, mask = padded_batch(ours.config.vocab_size, [10, 6], "left")
    got = np.asarray(models.forward(ours, ids, attention_mask=mask))
    ref = reference_logits(ref_model, ids, mask)
    real = mask.astype(bool)
    assert got.dtype == np.float32
    # bf16 has 8 mantissa bits: agreement to a few percent of the logit scale, and same argmax
    # almost everywhere.
    assert np.abs(got - ref)[real].max() < 0.05 * np.abs(ref).max() + 0.02
    assert (got.argmax(-1) == ref.argmax(-1))[real].mean() > 0.9
    bf16_params = models.load(path, dtype="bfloat16")
    assert bf16_params.embed.get_value().dtype == np.dtype("bfloat16")


def test_yarn_frequencies_and_a_context_beyond_the_limit(tmp_path):
    """YaRN's inverse frequencies and attention factor equal transformers' own; a sequence longer
    than the model's context without rope scaling is refused, not extrapolated."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from jaxalign.models.layers import rope_attention_factor, rope_inv_freq

    hf_config = VARIANTS["qwen3-yarn"]()
    want_freq, want_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config, "cpu")
    hf_config.save_pretrained(tmp_path)
    config = models.load_config(str(tmp_path))
    assert config.rope_scaling.type == "yarn" and config.rope_scaling.original_max_position_embeddings == 64
    np.testing.assert_allclose(rope_inv_freq(config), want_freq.numpy(), rtol=1e-6)
    assert abs(rope_attention_factor(config) - want_factor) < 1e-12 and want_factor > 1.1
    plain = models.init_model(models.ModelConfig.tiny(max_position_embeddings=16), seed=0)
    with pytest.raises(ValueError, match="17 tokens exceed the model's context of 16"):
        models.forward(plain, np.zeros((1, 17), np.int32))
