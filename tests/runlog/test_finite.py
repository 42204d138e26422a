"""check_finite names the non-finite metrics and the step."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.runlog import NonFiniteError, check_finite


def test_finite_metrics_pass():
    check_finite({"loss": jnp.float32(1.5), "grad_norm": np.float64(3.0), "tokens": 10, "v": jnp.ones(3)}, step=1)


def test_nan_loss_and_inf_grad_norm_are_named_with_the_step():
    metrics = {"loss": jnp.float32(jnp.nan), "grad_norm": jnp.bfloat16(jnp.inf), "lr": 1e-4}
    with pytest.raises(NonFiniteError, match=r"non-finite metrics at step 7: loss=nan, grad_norm=inf;") as err:
        check_finite(metrics, step=7)
    assert err.value.step == 7 and set(err.value.bad) == {"loss", "grad_norm"}
    assert "lr" not in str(err.value)
    with pytest.raises(NonFiniteError, match=r"step 2: per_layer=-inf"):
        check_finite({"per_layer": jnp.array([1.0, -jnp.inf, 2.0])}, step=2)


def test_keys_restrict_the_check_and_must_exist():
    check_finite({"loss": 1.0, "kl": float("inf")}, step=3, keys=["loss"])
    with pytest.raises(NonFiniteError, match="kl=inf"):
        check_finite({"loss": 1.0, "kl": float("inf")}, step=3)
    with pytest.raises(KeyError, match=r"\['grad_norm'\] not found at step 3"):
        check_finite({"loss": 1.0}, step=3, keys=["loss", "grad_norm"])
