"""Row-sparse training (`--lazy_embeddings`, `ncf_jax.row_sparse`) on packed tables
(`ncf_jax.tables`): against dense optax, a per-table reference, and the benchmarks' floor."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from benchmarks.floor import row_sgd_update
from ncf_jax import losses, optim, row_sparse, train
from ncf_jax.errors import UsageError
from ncf_jax.models import create_model, layers
from ncf_jax.models.layers import LOOKED_UP
from ncf_jax.tables import (
    merge_tables,
    packed_state,
    split_tables,
    table_groups,
    unpacked_state,
    zero_sums,
)
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import NCFTrainConfig as TrainConfig
from ncf_jax.tasks.ncf import make_loss_fn


def _adam_rows_reference(table, moments, rows, grads, count, *, learning_rate):
    """Adam update of `table[rows]` only, gathered and scattered per table (rows >= num_rows
    are padding, dropped; a repeated id's entries of `grads` must repeat too)."""
    mu, nu = moments.mu, moments.nu
    new_rows, mu_rows, nu_rows = optim.adam_rows(
        table.at[rows].get(mode="fill", fill_value=0),
        mu.at[rows].get(mode="fill", fill_value=0),
        nu.at[rows].get(mode="fill", fill_value=0),
        grads,
        count,
        learning_rate,
    )
    return table.at[rows].set(new_rows, mode="drop"), optim.RowMoments(
        mu=mu.at[rows].set(mu_rows, mode="drop"), nu=nu.at[rows].set(nu_rows, mode="drop")
    )


def test_adam_rows_equal_optax_adam_when_every_row_is_updated():
    table = jax.random.normal(jax.random.key(0), (5, 3))
    tx = optax.adam(0.1)
    state, moments = tx.init(table), optim.init_row_moments(table)
    ref, sparse = table, table
    for step in range(3):
        g = jax.random.normal(jax.random.key(step + 1), (5, 3))
        updates, state = tx.update(g, state)
        ref = optax.apply_updates(ref, updates)
        rows = jnp.array([4, 2, 0, 1, 3, 99])  # any order; 99 is padding and is dropped
        grads = jnp.concatenate([g[rows[:5]], jnp.ones((1, 3))])
        sparse, moments = _adam_rows_reference(
            sparse, moments, rows, grads, jnp.int32(step), learning_rate=0.1
        )
    np.testing.assert_allclose(sparse, ref, rtol=1e-5, atol=1e-6)


CASES = {  # name -> (model config, batch ids); ids repeat so duplicates must be summed
    "pointwise": (
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4)),
        jnp.array([1, 1, 3, 7]),
        jnp.array([2, 5, 5, 0]),
    ),
    "regularised": (
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_mf=0.1, reg_layers=(0.2, 0.3)),
        jnp.array([1, 1, 3, 7]),
        jnp.array([2, 5, 5, 0]),
    ),
    "grouped": (  # users [groups, 1] broadcast against items [groups, 1 + num_neg]
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_mf=0.1),
        jnp.array([[1], [1], [6]]),
        jnp.array([[2, 5, 9], [5, 0, 2], [11, 3, 2]]),
    ),
}


def _tables(model) -> dict:
    return layers.table_labels(model, jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))


def _on_model_tables(update, state, batch, *, tables, **kwargs):
    """(state, loss): one step of a packed-state `update(state, sums, batch, groups=, ...)` on
    a state in the model's layout (packed, stepped with fresh sums, unpacked)."""
    groups = table_groups(state.params, tables)
    packed = packed_state(state, groups)
    packed, _, loss = update(packed, zero_sums(packed), batch, groups=groups, **kwargs)
    return unpacked_state(packed, groups), loss


adam_step = functools.partial(_on_model_tables, row_sparse.adam_update)
sgd_step = functools.partial(_on_model_tables, row_sparse.sgd_update)


def _case(case):
    """(config, users, items, model, params, tables) of a CASES entry on 10 users, 12 items."""
    config, users, items = CASES[case]
    model = create_model(config, 10, 12)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    return config, users, items, model, params, _tables(model)


@pytest.mark.parametrize("case", sorted(CASES))
def test_row_sparse_step_matches_dense_on_the_first_step_then_only_touches_batch_rows(case):
    config, users, items, model, params, tables = _case(case)
    loss_fn = make_loss_fn(model.apply, config, tables)
    tx = optim.make_optimizer("adam", 0.01)
    labels = (jnp.arange(items.size).reshape(items.shape) % 2).astype(jnp.float32)
    batch = {"users": users, "items": items, "labels": labels, "weights": jnp.ones(items.shape)}
    # Jitted, as the epoch runs them (op by op, a step compiled hundreds of ops one at a time).
    dense_step = jax.jit(functools.partial(train.dense_step, loss_fn=loss_fn, tx=tx))
    dense, dense_loss = dense_step(train.create_train_state(params, tx), batch)
    sparse_state = train.create_train_state(params, tx, row_sparse=True, tables=tables)
    step = jax.jit(functools.partial(adam_step, loss_fn=loss_fn, tx=tx, learning_rate=0.01,
                                     tables=tables))  # fmt: skip
    sparse, sparse_loss = step(sparse_state, batch)
    np.testing.assert_allclose(sparse_loss, dense_loss, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        dense.params,
        sparse.params,
    )
    batch2 = dict(batch, users=jnp.zeros_like(users))
    sparse2, _ = step(sparse, batch2)
    before, after = (
        sparse.params["params"]["mf_user"]["embedding"],
        sparse2.params["params"]["mf_user"]["embedding"],
    )
    np.testing.assert_array_equal(before[1:], after[1:])  # rows not in the batch are untouched
    assert not np.array_equal(before[0], after[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_row_sparse_sgd_is_dense_sgd_without_the_zero_rows(case):
    """`--lazy_embeddings --learner=sgd` against optax's dense SGD over whole tables, three
    steps with a learning-rate schedule: equal up to the rounding of repeated ids' sums; rows
    outside every batch bitwise unchanged; no Adam moments kept."""
    config, users, items, model, params, tables = _case(case)
    loss_fn = make_loss_fn(model.apply, config, tables)
    schedule = optax.linear_schedule(0.5, 0.1, 3)
    tx = optim.make_optimizer("sgd", schedule)
    labels = (jnp.arange(items.size).reshape(items.shape) % 2).astype(jnp.float32)
    batch = {"users": users, "items": items, "labels": labels, "weights": jnp.ones(items.shape)}
    dense = train.create_train_state(params, tx)
    sparse = train.create_train_state(params, tx, row_sparse=True, tables=tables, row_learner="sgd")
    assert sparse.table_moments == {}
    dense_step = jax.jit(functools.partial(train.dense_step, loss_fn=loss_fn, tx=tx))
    sparse_step = jax.jit(functools.partial(
        sgd_step, loss_fn=loss_fn, tx=tx, learning_rate=schedule, tables=tables
    ))  # fmt: skip
    for _ in range(3):
        dense, dense_loss = dense_step(dense, batch)
        sparse, sparse_loss = sparse_step(sparse, batch)
        np.testing.assert_allclose(sparse_loss, dense_loss, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        dense.params,
        sparse.params,
    )
    user_table = sparse.params["params"]["mf_user"]["embedding"]
    untouched = np.setdiff1d(np.arange(10), np.asarray(users))
    start = params["params"]["mf_user"]["embedding"]
    np.testing.assert_array_equal(user_table[untouched], start[untouched])
    assert not np.allclose(user_table[1], start[1])


def test_row_sparse_training_refuses_other_learners():
    with pytest.raises(UsageError, match="row-sparse Adam or SGD, not --learner=adagrad"):
        TrainConfig(lazy_embeddings=True, learner="adagrad")
    TrainConfig(lazy_embeddings=True, learner="sgd")  # accepted
    with pytest.raises(ValueError, match="row-sparse tables take"):
        train.create_train_state({}, optax.sgd(0.1), row_sparse=True, tables={("a",): None},
                                 row_learner="adagrad")  # fmt: skip
    # Row-sparse Adam's arithmetic has optax's default decays and epsilon, and only those.
    TrainConfig(lazy_embeddings=True, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8)  # accepted
    with pytest.raises(UsageError, match="uses Adam's default b1/b2/eps"):
        TrainConfig(lazy_embeddings=True, adam_b2=0.5)
    TrainConfig(lazy_embeddings=True, learner="sgd", adam_b2=0.5)  # SGD ignores them


def _reference_adam_step(state, batch, *, loss_fn, tx, learning_rate, tables):
    """Row-sparse Adam without the gradient-sum buffers: duplicate ids summed by a sort and
    a segment sum, then `_adam_rows_reference` (the dense parameters as
    the library updates them, `row_sparse.dense_tx`: tested against per-leaf optax below)."""
    labels = tables
    tables, dense = split_tables(state.params, labels)
    ids = {path: batch[labels[path].ids] for path in tables}
    rows = {path: table[ids[path]] for path, table in tables.items()}

    def loss_of(dense, rows):
        looked_up = {(LOOKED_UP, *path[1:]): r for path, r in rows.items()}
        return loss_fn(dense | traverse_util.unflatten_dict(looked_up), batch)

    loss, (g_dense, g_rows) = jax.value_and_grad(loss_of, argnums=(0, 1))(dense, rows)
    updates, opt_state = row_sparse.dense_tx(tx).update(g_dense, state.opt_state, dense)
    dense = optax.apply_updates(dense, updates)
    new_tables, moments = {}, {}
    for path, table in tables.items():
        name = "/".join(path)
        flat_ids = ids[path].reshape(-1)
        order = jnp.argsort(flat_ids)
        sorted_ids = flat_ids[order]
        new = (sorted_ids[1:] != sorted_ids[:-1]).astype(jnp.int32)
        segment = jnp.cumsum(jnp.concatenate([jnp.zeros(1, jnp.int32), new]))
        grads = g_rows[path].reshape(-1, table.shape[-1])[order]
        totals = jax.ops.segment_sum(
            grads, segment, num_segments=flat_ids.shape[0], indices_are_sorted=True
        )
        new_tables[path], moments[name] = _adam_rows_reference(
            table,
            state.table_moments[name],
            sorted_ids,
            totals[segment],
            state.step,
            learning_rate=learning_rate,
        )
    params = merge_tables(new_tables, dense)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, table_moments=moments
    )
    return new_state, loss


@pytest.mark.parametrize("case", sorted(CASES))
def test_row_sparse_steps_are_bitwise_the_sorted_segment_sum_formulation(case):
    config, users, items, model, params, tables = _case(case)
    kwargs = {
        "loss_fn": make_loss_fn(model.apply, config, tables),
        "tx": optim.make_optimizer("adam", 0.01),
        "learning_rate": 0.01,
        "tables": tables,
    }
    labels = (jnp.arange(items.size).reshape(items.shape) % 2).astype(jnp.float32)
    steps = 6  # ids shifted each step, so rows come back with stale moments; repeats in each
    batches = {
        "users": jnp.stack([(users + s) % 10 for s in range(steps)]),
        "items": jnp.stack([(items * (s + 1)) % 12 for s in range(steps)]),
        "labels": jnp.stack([labels] * steps),
        "weights": jnp.ones((steps, *items.shape)),
    }
    want = got = train.create_train_state(params, kwargs["tx"], row_sparse=True, tables=tables)
    reference = jax.jit(functools.partial(_reference_adam_step, **kwargs))
    new = jax.jit(functools.partial(adam_step, **kwargs))
    for s in range(steps):
        batch = jax.tree.map(lambda b, s=s: b[s], batches)
        (want, want_loss), (got, loss) = reference(want, batch), new(got, batch)
        assert float(loss) == float(want_loss)
    pairs = zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True)
    if case == "regularised":
        # XLA fuses the L2 term's gradient into the row gradient differently in the two
        # programs: the moments of a row can differ in the last bit, and after six Adam steps
        # (an update of mu / sqrt(nu) amplifies it) a value near 1e-4 by a few 1e-10.
        for a, b in pairs:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    else:
        assert all(bool(jnp.array_equal(a, b)) for a, b in pairs)
    # The scanned epoch (one program, sums carried through the scan) learns the same, up to
    # how XLA fuses the whole epoch's program (last-bit differences in a few entries).
    make_batches = lambda key, data: batches
    epoch = train.make_train_epoch(
        kwargs["loss_fn"], kwargs["tx"], make_batches, row_sparse=True, learning_rate=0.01,
        tables=tables,
    )  # fmt: skip
    start = train.create_train_state(params, kwargs["tx"], row_sparse=True, tables=tables)
    state, _ = epoch(start, None, jax.random.key(0))
    for a, b in zip(jax.tree.leaves(want.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("learner", ["adam", "sgd"])
def test_dense_tx_is_the_per_leaf_optimiser_on_one_flat_vector(learner):
    """Row-sparse Adam updates the dense parameters as one vector (`row_sparse.dense_tx`): the same
    numbers as optax leaf by leaf, up to the last bits (XLA evaluates Adam's bias correction
    inside each vectorised loop, and an element's lane position decides its rounding), and one
    state array per moment. A tree with no leaves (MF) keeps the optimiser as it is."""
    key = jax.random.key(0)
    params = {"a": {"kernel": jnp.ones((8, 4)), "bias": jnp.zeros(4)}, "b": jnp.ones((3,))}
    tx = optim.make_optimizer(learner, 0.01)
    flat, leaf = row_sparse.dense_tx(tx), tx
    flat_state, leaf_state = flat.init(params), leaf.init(params)
    assert all(x.ndim <= 1 for x in jax.tree.leaves(flat_state))
    assert len(jax.tree.leaves(flat_state)) <= 3  # count, mu, nu: not one per leaf
    p_flat = p_leaf = params
    for step in range(5):
        grads = jax.tree.map(
            lambda x, s=step: jax.random.normal(jax.random.fold_in(key, s), x.shape), params
        )
        u_flat, flat_state = flat.update(grads, flat_state, p_flat)
        u_leaf, leaf_state = leaf.update(grads, leaf_state, p_leaf)
        p_flat, p_leaf = optax.apply_updates(p_flat, u_flat), optax.apply_updates(p_leaf, u_leaf)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), p_flat, p_leaf)
    moved = jax.tree.map(lambda a, b: bool(jnp.all(a != b)), p_flat, params)
    assert all(jax.tree.leaves(moved))
    assert row_sparse.dense_tx(tx).init({}) == tx.init({})


def test_row_sgd_floor_is_sgd_on_the_looked_up_rows():
    config, users, items = CASES["pointwise"]
    model = create_model(config, 10, 12)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    loss_fn = make_loss_fn(model.apply, config, _tables(model))
    batch = {"users": users, "items": items, "labels": jnp.ones(4), "weights": jnp.ones(4)}
    tx = optax.sgd(0.1)
    dense, dense_loss = train.dense_step(
        train.create_train_state(params, tx), batch, loss_fn=loss_fn, tx=tx
    )
    floor, loss = _on_model_tables(
        row_sgd_update, train.create_train_state(params, tx), batch,
        tables=_tables(model), loss_fn=loss_fn, learning_rate=0.1,
    )  # fmt: skip
    assert float(loss) == float(dense_loss) and int(floor.step) == 1
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
        dense.params,
        floor.params,
    )


def test_row_sparse_step_builds_nothing_of_a_table_size_but_the_updated_tables():
    num_users, num_items = 1009, 1013  # table sizes that no batch-sized array has
    config = ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_mf=0.1)
    model = create_model(config, num_users, num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.01)
    tables = _tables(model)
    state = train.create_train_state(params, tx, row_sparse=True, tables=tables)
    batch = {
        "users": jnp.arange(8),
        "items": jnp.arange(8),
        "labels": jnp.ones(8),
        "weights": jnp.ones(8),
    }
    groups = table_groups(params, tables)
    step = functools.partial(
        row_sparse.adam_update,
        loss_fn=make_loss_fn(model.apply, config, tables),
        tx=tx,
        learning_rate=0.01,
        groups=groups,
    )
    packed = packed_state(state, groups)  # as the epoch runs it
    sums = tuple(jnp.zeros_like(m.mu) for m in packed.table_moments)
    jaxpr = jax.make_jaxpr(step)(packed, sums, batch).jaxpr
    table_sized = [
        eqn.primitive.name
        for eqn in jaxpr.eqns
        for out in eqn.outvars
        if getattr(out.aval, "shape", ())[:1] in ((num_users,), (num_items,))
    ]
    # two packed tables (mf_ and mlp_ side by side, a user and an item one), each scattered
    # back with its two Adam moments, and its gradient-sum buffer: added to, then zeroed
    assert [g[0] for g in groups] == ["items", "users"]
    assert sorted(set(table_sized)) == ["scatter", "scatter-add"], table_sized
    assert table_sized.count("scatter") == 2 * 4 and table_sized.count("scatter-add") == 2


class _Renamed(nn.Module):
    """GMF with tables named unlike any convention: the labels, not the names, decide."""

    @nn.compact
    def __call__(self, users, items):
        p = layers.embed("alpha", 10, 4, users, table=layers.Table("users", "mf"))
        q = layers.embed("beta", 12, 4, items, table=layers.Table("items", "mf"))
        return jnp.sum(p * q, axis=-1)


def test_tables_are_found_by_structure_not_by_name():
    model = _Renamed()
    tables = _tables(model)
    assert tables == {
        ("params", "alpha", "embedding"): layers.Table("users", "mf"),
        ("params", "beta", "embedding"): layers.Table("items", "mf"),
    }
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    users, items = jnp.array([1, 1, 3]), jnp.array([2, 5, 2])
    batch = {"users": users, "items": items, "weights": jnp.ones(3)}
    # L2 reaches the looked-up rows of both tables
    got = losses.l2_penalty(params, batch, batch["weights"], tables=tables, reg_mf=0.5,
                            reg_layers=(0.0,))  # fmt: skip
    p = jax.tree.map(np.asarray, params["params"])
    rows = np.sum(p["alpha"]["embedding"][users] ** 2 + p["beta"]["embedding"][items] ** 2, -1)
    np.testing.assert_allclose(got, 0.5 * rows.mean(), rtol=1e-6)
    # row-sparse Adam touches the batch's rows only
    tx = optim.make_optimizer("adam", 0.01)
    loss_fn = lambda params, batch: jnp.mean(model.apply(params, batch["users"], batch["items"]))
    state = train.create_train_state(params, tx, row_sparse=True, tables=tables)
    state, _ = adam_step(state, batch, loss_fn=loss_fn, tx=tx, learning_rate=0.01,
                               tables=tables)  # fmt: skip
    alpha = np.asarray(state.params["params"]["alpha"]["embedding"])
    changed = np.flatnonzero(np.any(alpha != p["alpha"]["embedding"], axis=1))
    assert changed.tolist() == [1, 3]
    # and row sharding splits them (and their moments) over "model"
    from ncf_jax import sharding

    mesh = sharding.make_mesh(num_model=2)
    specs = sharding.state_shardings(state, mesh, tables=tables)
    rows = jax.sharding.PartitionSpec("model", None)
    assert specs.params["params"]["alpha"]["embedding"].spec == rows
    assert specs.table_moments["params/beta/embedding"].mu.spec == rows
