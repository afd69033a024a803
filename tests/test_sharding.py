"""Sharding: 8 forced host devices give the single-device training and evaluation numbers."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ncf_jax import batching, evaluate, interactions, optim, sharding, train
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic
from ncf_jax.models import create_model, layers, scoring
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import make_loss_fn

DATA = synthetic.planted(num_users=64, num_items=80, per_user=10, num_test_negatives=30)
MODEL = ModelConfig(model="neumf", num_factors=8, layers=(16, 8, 4))


def _train(mesh, *, shard_tables=False, row_sparse=False, epochs=2):
    """Params after `epochs` epochs of NeuMF on DATA, on `mesh` (None: one device)."""
    model = create_model(MODEL, DATA.num_users, DATA.num_items)
    tx = optim.make_optimizer("adam", 0.01)
    init_key, key = jax.random.split(jax.random.key(0))
    dummy = jax.numpy.zeros((1,), jax.numpy.int32)
    tables = layers.table_labels(model, dummy, dummy)
    state = train.create_train_state(model.init(init_key, dummy, dummy), tx, row_sparse=row_sparse,
                                     tables=tables)  # fmt: skip
    make_batches = functools.partial(batching.epoch_batches, num_neg=2, batch_size=64)
    apply_fn = sharding.data_parallel_apply(model.apply, mesh)
    epoch = train.make_train_epoch(
        make_loss_fn(apply_fn, MODEL),
        tx,
        sharding.data_parallel_batches(make_batches, mesh),
        row_sparse=row_sparse,
        learning_rate=0.01,
        tables=tables,
    )
    data = interactions.from_data(DATA)
    epoch, state, data = sharding.shard_train_epoch(
        epoch, state, data, mesh, tables=tables if shard_tables else None
    )
    losses = []
    for _ in range(epochs):
        state, loss = epoch(state, data, key)
        losses.append(float(loss))
    return state, losses


@pytest.fixture(scope="module")
def single():
    return _train(None)


def _assert_close(a, b, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


def test_eight_devices_are_forced():
    assert jax.device_count() == 8


def test_data_parallel_epoch_matches_one_device(single):
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": 8, "model": 1}
    state, losses = _train(mesh)
    table = state.params["params"]["mf_user"]["embedding"]
    assert len(table.sharding.device_set) == 8 and table.sharding.spec == P()
    np.testing.assert_allclose(losses, single[1], rtol=1e-5)
    _assert_close(state.params, single[0].params)


def test_row_sharded_tables_match_one_device(single):
    mesh = sharding.make_mesh(num_model=2)
    state, losses = _train(mesh, shard_tables=True)
    params = state.params["params"]
    assert params["mlp_item"]["embedding"].sharding.spec == P("model", None)
    assert params["mlp_dense_0"]["kernel"].sharding.spec == P()
    adam = jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
    moments = [leaf for path, leaf in adam if "embedding" in jax.tree_util.keystr(path)]
    assert moments and all(m.sharding.spec == P("model", None) for m in moments)
    np.testing.assert_allclose(losses, single[1], rtol=1e-5)
    _assert_close(state.params, single[0].params)


def test_row_sharded_row_sparse_adam_matches_one_device():
    one, _ = _train(None, row_sparse=True, epochs=1)
    many, _ = _train(sharding.make_mesh(num_model=2), shard_tables=True, row_sparse=True, epochs=1)
    _assert_close(many.params, one.params)
    _assert_close(many.table_moments, one.table_moments)


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_sharded_evaluation_matches_one_device(single, protocol):
    model = create_model(MODEL, DATA.num_users, DATA.num_items)
    params = single[0].params
    mesh = sharding.make_mesh()
    config = EvalConfig(top_k=5, protocol=protocol, chunk_size=32)
    spread_apply = sharding.data_parallel_apply(model.apply, mesh)
    plain = evaluate.make_ranking_evaluators(
        *scoring.score_fns(model, DATA.num_items), DATA, config
    )
    spread = scoring.score_fns(model, DATA.num_items, spread_apply)
    spread = evaluate.make_ranking_evaluators(*spread, DATA, config)
    placed = sharding.place(params, sharding.state_shardings(params, mesh))
    fetch = lambda e, p: jax.device_get(evaluate.combine(e)(p, None))
    want, got = fetch(plain, params), fetch(spread, placed)
    assert want.keys() == got.keys() and want["hr@5"] > 0
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-6), name


def test_mesh_errors_and_no_cluster(monkeypatch):
    with pytest.raises(ValueError, match="--mesh_model=3 must divide"):
        sharding.make_mesh(num_model=3)
    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert sharding.maybe_initialize_distributed() is False
    assert sharding.is_trivial(None)
    assert sharding.is_trivial(sharding.make_mesh(devices=jax.devices()[:1]))
    assert sharding.padded_rows(63, sharding.make_mesh(num_model=2)) == 64
