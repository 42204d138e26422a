"""A writer SIGKILLed in the middle of saving a 200 MiB checkpoint never leaves a listed, partial step."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxalign.checkpoint import CheckpointManager

N_LEAVES, N = 8, 25 * 2**20 // 4  # 8 x 25 MiB of uint32 = 200 MiB per step
TMP_SUFFIX = ".orbax-checkpoint-tmp"

# Random bits (so that orbax's compression cannot shrink the write to nothing) xor a per-step constant:
# the parent can recompute exactly what the child saved at any step.
WRITER = textwrap.dedent(
    f"""
    import itertools, sys
    import jax, jax.numpy as jnp, numpy as np
    from jaxalign.checkpoint import CheckpointManager

    base = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, size={N}, dtype=np.uint32))
    mgr = CheckpointManager(sys.argv[1], keep=2, save_every=1)
    for step in itertools.count((mgr.latest_step() or 0) + 1):
        state = {{"w": [base ^ jnp.uint32(step * 10 + i) for i in range({N_LEAVES})], "key": jax.random.key(step)}}
        mgr.save(step, state, extra={{"step": step}})
    """
)


def expected_state(step: int, base: np.ndarray) -> dict:
    return {"w": [base ^ np.uint32(step * 10 + i) for i in range(N_LEAVES)], "key": jax.random.key(step)}


def step_dirs(directory) -> tuple[set[int], set[int]]:
    """(final-named step directories, steps with a temporary directory) currently on disk."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    final = {int(n) for n in names if n.isdigit()}
    tmp = {int(n.split(".")[0]) for n in names if n.endswith(TMP_SUFFIX)}
    return final, tmp


def run_writer_and_kill(script, directory, kill_at: int, delay: float, log) -> set[int]:
    """Starts the writer, SIGKILLs it `delay` s after a directory for step `kill_at` appears.

    Returns the steps left as temporary directories. Watching final names too keeps the trigger working
    for writers that write in place (which this test must then catch).
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, str(script), str(directory)], stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 900  # a hang guard: starting JAX on a loaded machine takes long
    try:
        while not any(s >= kill_at for s in set.union(*step_dirs(directory))):
            assert proc.poll() is None, f"writer exited early with {proc.returncode}; see {log.name}"
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.002)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return step_dirs(directory)[1]


@pytest.mark.slow  # about 25 s: four writer processes, 200 MiB per step
def test_sigkill_during_save_leaves_latest_complete_checkpoint(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    directory = tmp_path / "ckpt"
    base = np.random.default_rng(0).integers(0, 2**32, size=N, dtype=np.uint32)
    abstract = jax.eval_shape(lambda: expected_state(1, base))
    rng = random.Random(1234)
    latest, killed_mid_save = 0, 0
    with open(tmp_path / "writer.log", "w") as log:
        for _ in range(4):
            kill_at = latest + 2 + rng.randrange(2)  # at least one new step is committed before the kill
            left_tmp = run_writer_and_kill(script, directory, kill_at, rng.uniform(0.0, 0.3), log)
            killed_mid_save += bool(left_tmp)
            final, _ = step_dirs(directory)
            mgr = CheckpointManager(directory, keep=2, save_every=1)
            steps = mgr.all_steps()
            # Every directory under a final step name is a complete checkpoint; temporaries are never listed.
            assert set(steps) == final and not (set(steps) & left_tmp), (steps, final, left_tmp)
            assert kill_at - 1 <= steps[-1] <= kill_at and mgr.latest_step() == steps[-1]
            for step in steps:
                got_step, got, extra = mgr.restore(abstract, step=None if step == steps[-1] else step)
                assert got_step == step and extra == {"step": step}
                want = expected_state(step, base)
                assert all(np.array_equal(g, w) for g, w in zip(got["w"], want["w"])), f"step {step} corrupt"
                assert np.array_equal(jax.random.key_data(got["key"]), jax.random.key_data(want["key"]))
            mgr.close()
            assert not step_dirs(directory)[1], "temporary directories are cleaned when the manager opens"
            latest = steps[-1]
    assert killed_mid_save >= 2, f"only {killed_mid_save} of 4 kills hit a save in progress"
