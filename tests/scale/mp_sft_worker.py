"""One process of a multi-process SFT run on CPU (spawned by test_multiprocess.py).

    python mp_sft_worker.py SPEC_JSON PROCESS_ID

Each process owns 4 fake CPU devices; with 2 processes the (2, 2, 2) mesh spans 8 devices. After
training it checks the multi-host pieces GRPO relies on (per-host batch rows, resharding global
training weights onto this host's rollout mesh, host-side gathers) and writes what it found to
SPEC["out"].<process>.json.
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
    from flax import nnx

    from jaxalign import config as cfglib
    from jaxalign.distributed import DistributedConfig
    from jaxalign.sft.trainer import SFTConfig, train_sft

    base = cfglib.from_dict(SFTConfig, spec["config"])
    dist = DistributedConfig(coordinator_address=f"127.0.0.1:{spec['port']}", num_processes=2,
                             process_id=process_id, initialization_timeout_s=900)
    summary = train_sft(dataclasses.replace(base, run=dataclasses.replace(base.run, distributed=dist)))
    import jax
    import numpy as np

    if jax.process_index() == 0:
        state = nnx.state(summary["model"])
        flat = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}
        np.savez(spec["out"], **flat)
    with open(f"{spec['out']}.{jax.process_index()}.json", "w") as f:
        json.dump(check_helpers(summary["model"], base.run.mesh), f)
    print(f"process {jax.process_index()} of {jax.process_count()}: {summary['steps']} steps, "
          f"{jax.local_device_count()}/{jax.device_count()} devices", flush=True)


def check_helpers(model, mesh_config) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from jaxalign import distributed, sharding
    from jaxalign.rl.placement import rollout_mesh

    train_mesh = sharding.make_mesh(mesh_config)
    host = nnx.state(model)
    glob = jax.tree.map(lambda v, s: jax.make_array_from_callback(v.shape, s, lambda idx: np.asarray(v)[idx]),
                        host, sharding.tree_shardings(host, train_mesh, sharding.TRAIN_RULES))
    mesh = rollout_mesh(None, train_mesh)
    local = sharding.reshard(glob, sharding.tree_shardings(glob, mesh, sharding.ROLLOUT_RULES))
    pairs = list(zip(jax.tree.leaves(host), jax.tree.leaves(local), jax.tree.leaves(glob)))
    lo, hi = distributed.batch_rows(train_mesh, sharding.TRAIN_RULES, 8)
    rows = np.arange(24, dtype=np.float32).reshape(8, 3)
    batch = distributed.global_batch(rows[lo:hi], train_mesh, sharding.TRAIN_RULES, batch_axis=0)
    return {
        "source_spans_hosts": all(not g.is_fully_addressable for _, _, g in pairs),
        "rollout_is_local": all(x.is_fully_addressable and x.sharding.mesh == mesh for _, x, _ in pairs),
        "rollout_mesh": list(mesh.devices.shape),
        "rollout_values_equal": all(np.array_equal(np.asarray(h), np.asarray(x)) for h, x, _ in pairs),
        "rows": [lo, hi],
        "batch_shape": list(batch.shape),
        "batch_sum": float(jax.jit(lambda b: b.sum())(batch)),
        "local_rows_back": bool(np.array_equal(distributed.local_rows(batch), rows[lo:hi])),
        "gather_lists": distributed.gather_lists([jax.process_index()] * (jax.process_index() + 1)),
        "sum": distributed.sum_over_processes({"x": jax.process_index() + 1})["x"],
    }


if __name__ == "__main__":
    main()
