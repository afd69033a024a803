"""Checkpoints: a TrainState (dense and row-sparse optimiser states) round-trips exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import checkpoint, optim, train
from ncf_jax.errors import CheckpointError
from ncf_jax.models import create_model, layers
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import make_loss_fn


@pytest.mark.parametrize("row_sparse", [False, True])
def test_train_state_round_trips_exactly(tmp_path, row_sparse):
    model = create_model(ModelConfig(model="neumf", num_factors=4, layers=(8, 4)), 6, 9)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.01)
    tables = layers.table_labels(model, jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    state = train.create_train_state(
        jax.tree.map(jnp.copy, params), tx, row_sparse=row_sparse, tables=tables
    )
    batch = {
        "users": jnp.array([0, 5]),
        "items": jnp.array([3, 8]),
        "labels": jnp.array([1.0, 0.0]),
        "weights": jnp.ones(2),
    }
    loss_fn = make_loss_fn(model.apply, ModelConfig())
    one_step = lambda key, data: jax.tree.map(lambda x: x[None], batch)
    epoch = train.make_train_epoch(loss_fn, tx, one_step, row_sparse=row_sparse, learning_rate=0.01,
                                   tables=tables)  # fmt: skip
    state, _ = epoch(state, None, jax.random.key(0))  # non-trivial moments
    checkpoint.save(tmp_path / "ckpt", 7, state, {"note": "x", "history": [{"epoch": 1}]})
    template = train.create_train_state(params, tx, row_sparse=row_sparse, tables=tables)
    restored, meta = checkpoint.restore(tmp_path / "ckpt", template)
    assert meta == {"note": "x", "history": [{"epoch": 1}]}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    params_only, _ = checkpoint.restore_params(tmp_path / "ckpt")
    np.testing.assert_array_equal(
        params_only["params"]["mf_user"]["embedding"],
        state.params["params"]["mf_user"]["embedding"],
    )


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        checkpoint.restore_params(tmp_path)


def test_a_writer_keeps_the_newest_steps_and_creates_nothing_unused(tmp_path):
    """Every save is on disk once the writer closes; the newest `keep` steps remain."""
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    with checkpoint.Writer(tmp_path / "kept", keep=2) as writer:
        for step in (1, 2, 3):
            writer.save(step, {"w": state["w"] * step}, {"step": step})
            # asynchronous: the step before this one is on disk (one save at a time)
            assert checkpoint.latest_step(tmp_path / "kept") in (step - 1, step, None)
    with checkpoint.Writer(tmp_path / "unused"):
        pass
    assert checkpoint.all_steps(tmp_path / "kept") == [2, 3]
    restored, meta = checkpoint.restore(tmp_path / "kept", step=2)
    np.testing.assert_array_equal(restored["w"], state["w"] * 2)
    assert meta == {"step": 2} and not (tmp_path / "unused").exists()
