"""Per-device temporary memory of the compiled log-prob pass on 32 fake devices (run as a script).

Prints one JSON line {"rows,micro_batch": MiB, ...}; the test asserts on it.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=32"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxalign import models, sharding  # noqa: E402
from jaxalign.train.logprobs import compile_logprob_pass  # noqa: E402


def main() -> None:
    cfg = models.ModelConfig.tiny(vocab_size=8192, hidden_size=256, intermediate_size=512, num_layers=2)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: models.init_model(cfg, seed=0)))
    mesh = sharding.make_mesh(sharding.MeshConfig(data=4, fsdp=8, tensor=1))
    out = {}
    for rows, mb in [(32, None), (256, 32), (1024, 32), (1024, None)]:
        fn = compile_logprob_pass(graphdef, params, mesh, sharding.TRAIN_RULES, micro_batch=mb)
        batch = {k: jax.ShapeDtypeStruct((rows, 512), jnp.int32) for k in ("input_ids", "attention_mask", "positions")}
        out[f"{rows},{mb}"] = fn.lower(params, batch).compile().memory_analysis().temp_size_in_bytes / 2**20
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
