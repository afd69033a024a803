"""--dtype=bfloat16: bf16 activations, float32 parameters and optimiser state, close metrics."""

import functools

import jax
import jax.numpy as jnp
import pytest

from ncf_jax import batching, evaluate, interactions, optim, train
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic
from ncf_jax.models import create_model, scoring
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import make_loss_fn

DATA = synthetic.planted(num_users=48, num_items=60, per_user=10, num_test_negatives=30)
SIZES = {
    "neumf": dict(num_factors=8, layers=(16, 8)),
    "two_tower": dict(embed_dim=8, tower_layers=(8,)),
}


def _train_and_score(name: str, dtype: str, epochs: int = 3):
    config = ModelConfig(model="neumf", dtype=dtype)  # its (zero) L2 for the loss
    model = create_model(
        {"model": name, "dtype": dtype, **SIZES[name]}, DATA.num_users, DATA.num_items
    )
    tx = optim.make_optimizer("adam", 0.02)
    dummy = jnp.zeros((1,), jnp.int32)
    state = train.create_train_state(model.init(jax.random.key(0), dummy, dummy), tx)
    make_batches = functools.partial(batching.epoch_batches, num_neg=2, batch_size=64)
    epoch = train.make_train_epoch(make_loss_fn(model.apply, config), tx, make_batches)
    data = interactions.from_data(DATA)
    for _ in range(epochs):
        state, loss = epoch(state, data, jax.random.key(1))
    score_fns = scoring.score_fns(model, DATA.num_items)
    evaluators = evaluate.make_ranking_evaluators(*score_fns, DATA, EvalConfig(top_k=5))
    metrics = jax.device_get(evaluate.combine(evaluators)(state.params, None))
    return state, float(loss), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("name", ["neumf", "two_tower"])  # neumf covers GMF's and MLP's layers
def test_bfloat16_trains_with_float32_state_and_close_metrics(name):
    state, loss, metrics = _train_and_score(name, "bfloat16")
    _, loss32, metrics32 = _train_and_score(name, "float32")
    dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))}
    assert dtypes <= {jnp.dtype("float32"), jnp.dtype("int32")}
    assert jnp.isfinite(loss) and loss == pytest.approx(loss32, abs=0.05)
    assert metrics["hr@5"] == pytest.approx(metrics32["hr@5"], abs=0.1)
