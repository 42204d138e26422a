"""One process of a two-process GRPO run on CPU (spawned by test_multiprocess.py).

    python mp_grpo_worker.py SPEC_JSON PROCESS_ID

Each host owns 4 fake CPU devices, samples its own prompts on them with its own sandbox pool, and
joins the other host for the training steps on the global (2, 2, 2) mesh.
"""

import dataclasses
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAXALIGN_NO_PROGRESS"] = "1"


def main() -> None:
    spec = json.loads(sys.argv[1])
    process_id = int(sys.argv[2])
    import jax
    import numpy as np

    from jaxalign import config as cfglib
    from jaxalign.distributed import DistributedConfig
    from jaxalign.rewards import register_reward
    from jaxalign.rl.config import GRPOConfig
    from jaxalign.rl.trainer import GRPOTrainer

    register_reward("mp_says_7", lambda text, answer: float(answer in text))
    base = cfglib.from_dict(GRPOConfig, spec["config"])
    dist = DistributedConfig(coordinator_address=f"127.0.0.1:{spec['port']}", num_processes=2,
                             process_id=process_id, initialization_timeout_s=900)
    trainer = GRPOTrainer(dataclasses.replace(base, run=dataclasses.replace(base.run, distributed=dist)))
    try:
        history = trainer.run(resume=False)["history"]
        model = trainer.policy()  # a gather both hosts take part in
        policy = [np.asarray(x) for x in jax.tree.leaves(model)]
        embed = np.asarray(trainer.sampler.weights.embed)
        devices = [d for x in jax.tree.leaves(trainer.sampler.weights) for d in x.devices()]
    finally:
        trainer.close()
    result = {"losses": [h.get("loss") for h in history], "groups_seen": [h["groups_seen"] for h in history],
              "policy_checksum": float(sum(np.abs(p).sum() for p in policy)),
              "sampler_on_local_devices": all(d.process_index == jax.process_index() for d in devices),
              "sampler_embed_equals_policy": bool(np.array_equal(embed, np.asarray(model.embed.get_value()))),
              "prompts_per_host": trainer.prompts_per_host}
    with open(f"{spec['out']}.{jax.process_index()}.json", "w") as f:
        json.dump(result, f)
    print(f"grpo process {jax.process_index()} done", flush=True)


if __name__ == "__main__":
    main()
