"""One process of a multi-process SFT run on CPU (spawned by test_multiprocess.py).

    python mp_sft_worker.py SPEC_JSON PROCESS_ID

Each process owns 4 fake CPU devices; with 2 processes the (2, 2, 2) mesh spans 8 devices.
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
                             process_id=process_id, initialization_timeout_s=120)
    summary = train_sft(dataclasses.replace(base, distributed=dist))
    import jax
    import numpy as np

    if jax.process_index() == 0:
        state = nnx.state(summary["model"])
        flat = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}
        np.savez(spec["out"], **flat)
    print(f"process {jax.process_index()} of {jax.process_count()}: {summary['steps']} steps, "
          f"{jax.local_device_count()}/{jax.device_count()} devices", flush=True)


if __name__ == "__main__":
    main()
