"""The host loop every trainer runs: cadence, host-counted steps, lr metric, NaN stop, exact resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxalign.runlog import read_metrics
from jaxalign.runlog.finite import NonFiniteError
from jaxalign.train.batches import BatchOrder, OrderedBatches
from jaxalign.train.config import RunConfig
from jaxalign.train.loop import run_loop
from jaxalign.train.state import apply_gradients, init_train_state

ROWS = np.arange(12, dtype=np.float32).reshape(12, 1) / 10.0  # a table of 12 one-number rows


def problem(total: int):
    """Least squares w -> mean((w - x)^2) over each batch, AdamW under a warmup schedule."""
    schedule = optax.linear_schedule(0.0, 0.1, total)
    opt = optax.adamw(schedule)

    def step(state, batch):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((p["w"] - batch["x"]) ** 2))(state.params)
        state, update = apply_gradients(state, grads, opt, schedule)
        return state, {"loss": loss, **update}

    state = init_train_state({"w": jnp.zeros((1,))}, opt)
    return jax.jit(step), state, schedule


def source(order_seed: int = 0, layout=None, allow=False):
    order = BatchOrder(len(ROWS), batch_size=2, accum=1, seed=order_seed)
    return OrderedBatches(order, 2, lambda idx: {"x": ROWS[idx[0]]}, layout=layout or {"rows": 12},
                          what="toy rows", allow_change=allow, tokens=lambda b: int(b["x"].size))


def run(tmp_path, total=12, resume=False, **run_kw):
    step, state, schedule = problem(total)
    cfg = RunConfig(run_dir=str(tmp_path), **{"save_every": 4, "log_every": 3, **run_kw})
    return run_loop(cfg, name="toy", total=total, state=state, step_fn=step, source=source(), resume=resume), schedule


def test_metrics_at_the_cadence_with_the_rate_of_each_step(tmp_path):
    result, schedule = run(tmp_path)
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [3, 4, 6, 8, 9, 12]  # log_every=3, and the saves (every 4)
    for r in rows:  # the rate the step used: schedule(step - 1), returned by the step itself
        assert r["train/lr"] == pytest.approx(float(schedule(r["step"] - 1)), rel=1e-6)
        assert r["train/epoch"] == pytest.approx(r["step"] / 6)
    assert result.step == 12 and int(result.state.step) == 12 and isinstance(result.metrics["loss"], float)


def test_a_resumed_run_continues_exactly(tmp_path):
    straight, _ = run(tmp_path / "straight")
    step, state, _ = problem(12)
    cfg = RunConfig(run_dir=str(tmp_path / "split"), save_every=4, log_every=3)

    class Stop(Exception):
        pass

    def stop_after_8(s, batch):  # a crash after step 8's checkpoint (step 9 never completes)
        if int(s.step) == 8:
            raise Stop
        return step(s, batch)

    with pytest.raises(Stop):
        run_loop(cfg, name="toy", total=12, state=state, step_fn=stop_after_8, source=source(), resume=False)
    resumed = run_loop(cfg, name="toy", total=12, state=problem(12)[1], step_fn=step, source=source(), resume=True)
    assert resumed.step == 12
    np.testing.assert_array_equal(np.asarray(resumed.state.params["w"]), np.asarray(straight.state.params["w"]))
    assert [r["step"] for r in read_metrics(str(tmp_path / "split"))] == [3, 4, 6, 8, 9, 12]
    last = [{k: v for k, v in read_metrics(str(tmp_path / d))[-1].items() if k != "time"}
            for d in ("split", "straight")]
    assert last[0] == last[1]  # every metric of the last step, bit for bit


def test_non_finite_metrics_stop_before_a_save(tmp_path):
    step, state, _ = problem(12)

    def nan_at_6(s, batch):
        s, m = step(s, batch)
        return s, {**m, "loss": jnp.where(s.step == 6, jnp.nan, m["loss"])}

    cfg = RunConfig(run_dir=str(tmp_path), save_every=2, log_every=100)
    with pytest.raises(NonFiniteError, match="step 6"):
        run_loop(cfg, name="toy", total=12, state=state, step_fn=nan_at_6, source=source(), resume=False)
    from jaxalign.checkpoint import CheckpointManager

    with CheckpointManager(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 4  # step 6's state was never saved


def test_a_changed_layout_is_refused_on_resume_unless_allowed(tmp_path):
    from jaxalign.data.checks import DataError

    run(tmp_path, total=4)
    step, state, _ = problem(8)
    cfg = RunConfig(run_dir=str(tmp_path), save_every=4, log_every=3)
    with pytest.raises(DataError, match="toy rows: the training rows changed since step 4"):
        run_loop(cfg, name="toy", total=8, state=state, step_fn=step, source=source(layout={"rows": 11}), resume=True)
    ok = run_loop(cfg, name="toy", total=8, state=problem(8)[1], step_fn=step,
                  source=source(layout={"rows": 11}, allow=True), resume=True)
    assert ok.step == 8


def test_after_step_metrics_are_logged_whatever_the_cadence(tmp_path):
    step, state, _ = problem(6)
    cfg = RunConfig(run_dir=str(tmp_path), save_every=100, log_every=100)
    seen = []

    def after(k, metrics):
        seen.append(k)
        return {"eval/score": float(k)} if k == 2 else {}

    run_loop(cfg, name="toy", total=6, state=state, step_fn=step, source=source(), resume=False, after_step=after)
    assert seen == [1, 2, 3, 4, 5, 6]
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [2, 6] and rows[0]["train/eval/score"] == 2.0  # 6: the last step
