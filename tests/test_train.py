"""Training: epoch batches, a planted signal, determinism, lazy Adam, L2, resume."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from ncf_jax import batching, interactions, losses, optim, tasks, train
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic
from ncf_jax.errors import DivergedError, UsageError
from ncf_jax.models import create_model, layers
from ncf_jax.models.layers import LOOKED_UP
from ncf_jax.permutation import permutation
from ncf_jax.sampling import sample_negatives
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import NCFTrainConfig as TrainConfig


def train_and_evaluate(data, model_config, train_config, eval_config, workdir):
    configs = tasks.configs(tasks.ncf, model=model_config, train=train_config, eval=eval_config)
    return tasks.train_and_evaluate(tasks.ncf, data, configs, workdir)


DATA = synthetic.planted(num_users=48, num_items=60, per_user=10, num_test_negatives=50)


@pytest.mark.parametrize("layout", ["shuffled", "grouped"])
def test_epoch_has_every_positive_once_and_fresh_negatives(layout):
    dev = interactions.from_data(DATA)
    b = batching.as_arrays(
        batching.LAYOUTS[layout](jax.random.key(0), dev, num_neg=3, batch_size=64)
    )
    shape = b["items"].shape
    assert b["labels"].shape == b["weights"].shape == shape and np.prod(shape[1:]) == 64
    users = np.broadcast_to(np.asarray(b["users"]), shape).ravel()
    items, labels = np.asarray(b["items"]).ravel(), np.asarray(b["labels"]).ravel()
    weights = np.asarray(b["weights"]).ravel()
    n = len(DATA.train_users)
    assert weights.sum() == 4 * n  # nothing dropped
    real = weights == 1
    pos = real & (labels == 1)
    got = sorted(zip(users[pos].tolist(), items[pos].tolist(), strict=True))
    assert got == sorted(zip(DATA.train_users.tolist(), DATA.train_items.tolist(), strict=True))
    neg = real & (labels == 0)
    assert (
        np.bincount(users[neg], minlength=DATA.num_users).tolist()
        == (3 * np.bincount(DATA.train_users, minlength=DATA.num_users)).tolist()
    )
    known = set(zip(DATA.train_users.tolist(), DATA.train_items.tolist(), strict=True))
    assert not known & set(zip(users[neg].tolist(), items[neg].tolist(), strict=True))
    if layout == "grouped":  # one user per group: its positive in column 0, then its negatives
        assert b["users"].shape == (*shape[:2], 1)
        group_labels = np.asarray(b["labels"])[np.asarray(b["weights"])[..., 0] == 1]
        assert (group_labels == [1, 0, 0, 0]).all()


def test_known_exclusion_also_avoids_test_items():
    dev = interactions.from_data(DATA, exclude="known")
    b = batching.as_arrays(
        batching.epoch_batches(jax.random.key(1), dev, num_neg=20, batch_size=128)
    )
    neg = (np.asarray(b["labels"]) == 0) & (np.asarray(b["weights"]) == 1)
    users, items = np.asarray(b["users"])[neg].tolist(), np.asarray(b["items"])[neg].tolist()
    pairs = set(zip(users, items, strict=True))
    assert not pairs & set(zip(DATA.test_users.tolist(), DATA.test_items.tolist(), strict=True))


@pytest.mark.parametrize("step_built", [True, False])
def test_epoch_batches_are_the_whole_epoch_shuffled_at_once(step_built):
    """The epoch's batches, built step by step inside the scan or stacked before it, equal the
    epoch built whole: every row (positives, then num_neg blocks of negatives) permuted at
    once and cut into batches, the last padded with row 0 at weight False."""
    dev = interactions.from_data(DATA)
    key, num_neg, batch_size = jax.random.key(3), 2, 50
    b = batching.epoch_batches(
        key, dev, num_neg=num_neg, batch_size=batch_size, step_built=step_built
    )
    assert isinstance(b, batching.StepBatches) == step_built
    got = batching.as_arrays(b)
    neg_key, perm_key = jax.random.split(key)
    users = np.tile(DATA.train_users, 1 + num_neg)
    negatives = sample_negatives(neg_key, jnp.tile(dev.users, num_neg), dev)
    items = np.concatenate([DATA.train_items, np.asarray(negatives)])
    labels = np.arange(len(users)) < len(DATA.train_users)
    steps = -(-len(users) // batch_size)
    order = np.zeros(steps * batch_size, int)
    order[: len(users)] = np.asarray(permutation(perm_key, len(users)))
    want = {"users": users[order], "items": items[order], "labels": labels[order]}
    want["weights"] = np.arange(steps * batch_size) < len(users)
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[name]).ravel(), value, err_msg=name)


def test_step_built_epochs_train_the_same_parameters():
    """Two epochs on batches built inside the scan leave the parameters and optimiser state of
    stacked batches bit for bit; the mean loss agrees to float rounding."""
    dev = interactions.from_data(DATA)
    model = create_model(ModelConfig(model="neumf", num_factors=4, layers=(8, 4)), 48, 60)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    loss_fn = train.make_loss_fn(model.apply, ModelConfig(model="neumf"), tables)
    tx = optim.make_optimizer("adam", 0.01)
    runs = []
    for step_built in (True, False):
        make = functools.partial(
            batching.epoch_batches, num_neg=3, batch_size=64, step_built=step_built
        )
        epoch = train.make_train_epoch(loss_fn, tx, make, tables=tables)
        state = train.create_train_state(jax.tree.map(jnp.copy, params), tx, lazy=False)
        losses_ = []
        for _ in range(2):
            state, loss = epoch(state, dev, jax.random.key(5))
            losses_.append(float(loss))
        runs.append((state, losses_))
    (a, loss_a), (b, loss_b) = runs
    jax.tree.map(np.testing.assert_array_equal, (a.params, a.opt_state), (b.params, b.opt_state))
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)


GMF8 = ModelConfig(model="gmf", num_factors=8)


def _run(tmp_path, name, epochs=3, model=GMF8, **train_kwargs):
    return train_and_evaluate(
        DATA,
        model,
        TrainConfig(epochs=epochs, batch_size=64, learning_rate=0.01, **train_kwargs),
        EvalConfig(top_k=5),
        tmp_path / name,
    )


def test_planted_signal_beats_random_ranking_widely(tmp_path):
    result = _run(tmp_path, "planted", epochs=6)
    random_hr = 5 / 51
    assert result["init"]["hr@5"] < 2 * random_hr
    assert result["best"]["hr@5"] > 3 * random_hr, result["best"]
    saved = json.loads((tmp_path / "planted" / "results.json").read_text())
    assert saved["best"] == result["best"] and len(saved["history"]) == 6
    assert (tmp_path / "planted" / "history.png").stat().st_size > 0


def test_bpr_is_the_log_sigmoid_of_each_positive_negative_difference():
    logits = jax.random.normal(jax.random.key(0), (5, 4))  # 5 rows: a positive, 3 negatives
    weights = jnp.array([1.0, 1.0, 0.0, 1.0, 0.5])
    x = np.asarray(logits, np.float64)
    per_row = np.mean(np.log1p(np.exp(-(x[:, :1] - x[:, 1:]))), axis=1)  # -log sigmoid(d)
    want = np.sum(per_row * np.asarray(weights)) / np.sum(np.asarray(weights))
    np.testing.assert_allclose(losses.bpr(logits, weights), want, rtol=1e-6)


def test_mf_bpr_learns_the_planted_signal(tmp_path):
    mf = ModelConfig(model="mf", num_factors=8, reg_mf=0.001)
    result = _run(tmp_path, "bpr", epochs=6, model=mf, loss="bpr", batch_layout="grouped")
    random_hr = 5 / 51
    assert result["init"]["hr@5"] < 2 * random_hr
    assert result["best"]["hr@5"] > 3 * random_hr, result["best"]
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]


def test_bpr_needs_grouped_batches():
    with pytest.raises(UsageError, match="--loss=bpr .* needs --batch_layout=grouped"):
        TrainConfig(loss="bpr")


def test_same_seed_same_result_and_resume_is_exact(tmp_path):
    full = _run(tmp_path, "full", epochs=4)
    again = _run(tmp_path, "again", epochs=4)
    strip = lambda h: [{k: v for k, v in e.items() if "seconds" not in k} for e in h]
    assert strip(full["history"]) == strip(again["history"])
    # A run stopped after 2 epochs and restarted in the same workdir ends where `full` does.
    _run(tmp_path, "resumed", epochs=2)
    resumed = _run(tmp_path, "resumed", epochs=4)
    assert strip(resumed["history"]) == strip(full["history"])
    assert resumed["best"] == full["best"]
    other = _run(tmp_path, "other", epochs=1, seed=1)
    assert other["history"][0]["loss"] != full["history"][0]["loss"]


def test_lazy_adam_rows_equal_optax_adam_when_every_row_is_updated():
    table = jax.random.normal(jax.random.key(0), (5, 3))
    tx = optax.adam(0.1)
    state, moments = tx.init(table), optim.init_row_moments(table)
    ref, lazy = table, table
    for step in range(3):
        g = jax.random.normal(jax.random.key(step + 1), (5, 3))
        updates, state = tx.update(g, state)
        ref = optax.apply_updates(ref, updates)
        rows = jnp.array([4, 2, 0, 1, 3, 99])  # any order; 99 is padding and is dropped
        grads = jnp.concatenate([g[rows[:5]], jnp.ones((1, 3))])
        lazy, moments = optim.lazy_adam_rows(
            lazy, moments, rows, grads, jnp.int32(step), learning_rate=0.1
        )
    np.testing.assert_allclose(lazy, ref, rtol=1e-5, atol=1e-6)


LAZY_CASES = {  # name -> (model config, batch ids); ids repeat so duplicates must be summed
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


@pytest.mark.parametrize("case", sorted(LAZY_CASES))
def test_lazy_step_matches_dense_on_the_first_step_then_only_touches_batch_rows(case):
    config, users, items = LAZY_CASES[case]
    model = create_model(config, 10, 12)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    loss_fn = train.make_loss_fn(model.apply, config, tables)
    tx = optim.make_optimizer("adam", 0.01)
    labels = (jnp.arange(items.size).reshape(items.shape) % 2).astype(jnp.float32)
    batch = {"users": users, "items": items, "labels": labels, "weights": jnp.ones(items.shape)}
    # Jitted, as the epoch runs them (op by op, a step compiled hundreds of ops one at a time).
    dense_step = jax.jit(functools.partial(train.dense_step, loss_fn=loss_fn, tx=tx))
    dense, dense_loss = dense_step(train.create_train_state(params, tx, lazy=False), batch)
    lazy_state = train.create_train_state(params, tx, lazy=True, tables=tables)
    step = jax.jit(functools.partial(train.lazy_step, loss_fn=loss_fn, tx=tx, learning_rate=0.01,
                                     tables=tables))  # fmt: skip
    lazy, lazy_loss = step(lazy_state, batch)
    np.testing.assert_allclose(lazy_loss, dense_loss, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        dense.params,
        lazy.params,
    )
    batch2 = dict(batch, users=jnp.zeros_like(users))
    lazy2, _ = step(lazy, batch2)
    before, after = (
        lazy.params["params"]["mf_user"]["embedding"],
        lazy2.params["params"]["mf_user"]["embedding"],
    )
    np.testing.assert_array_equal(before[1:], after[1:])  # rows not in the batch are untouched
    assert not np.array_equal(before[0], after[0])


@pytest.mark.parametrize("case", sorted(LAZY_CASES))
def test_row_sparse_sgd_is_dense_sgd_without_the_zero_rows(case):
    """`--lazy_embeddings --learner=sgd` against optax's dense SGD over whole tables, three
    steps with a learning-rate schedule: equal up to the rounding of repeated ids' sums; rows
    outside every batch bitwise unchanged; no Adam moments kept."""
    config, users, items = LAZY_CASES[case]
    model = create_model(config, 10, 12)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    loss_fn = train.make_loss_fn(model.apply, config, tables)
    schedule = optax.linear_schedule(0.5, 0.1, 3)
    tx = optim.make_optimizer("sgd", schedule)
    labels = (jnp.arange(items.size).reshape(items.shape) % 2).astype(jnp.float32)
    batch = {"users": users, "items": items, "labels": labels, "weights": jnp.ones(items.shape)}
    dense = train.create_train_state(params, tx, lazy=False)
    lazy = train.create_train_state(params, tx, lazy=True, tables=tables, row_learner="sgd")
    assert lazy.table_moments == {}
    dense_step = jax.jit(functools.partial(train.dense_step, loss_fn=loss_fn, tx=tx))
    lazy_step = jax.jit(functools.partial(
        train.lazy_sgd_step, loss_fn=loss_fn, tx=tx, learning_rate=schedule, tables=tables
    ))  # fmt: skip
    for _ in range(3):
        (dense, dense_loss), (lazy, lazy_loss) = dense_step(dense, batch), lazy_step(lazy, batch)
        np.testing.assert_allclose(lazy_loss, dense_loss, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        dense.params,
        lazy.params,
    )
    user_table = lazy.params["params"]["mf_user"]["embedding"]
    untouched = np.setdiff1d(np.arange(10), np.asarray(users))
    start = params["params"]["mf_user"]["embedding"]
    np.testing.assert_array_equal(user_table[untouched], start[untouched])
    assert not np.allclose(user_table[1], start[1])


def test_row_sparse_training_refuses_other_learners():
    with pytest.raises(UsageError, match="row-sparse Adam or SGD, not --learner=adagrad"):
        TrainConfig(lazy_embeddings=True, learner="adagrad")
    TrainConfig(lazy_embeddings=True, learner="sgd")  # accepted
    with pytest.raises(ValueError, match="row-sparse tables take"):
        train.create_train_state({}, optax.sgd(0.1), lazy=True, tables={("a",): None},
                                 row_learner="adagrad")  # fmt: skip


def _reference_lazy_step(state, batch, *, loss_fn, tx, learning_rate, tables):
    """Row-sparse Adam as it was before the gradient-sum buffers (git 365f9e2): duplicate ids
    summed by a sort and a segment sum, then `optim.lazy_adam_rows` (the dense parameters as
    the library updates them, `train.dense_tx`: tested against per-leaf optax below)."""
    labels = tables
    tables, dense = train.split_tables(state.params, labels)
    ids = {path: batch[labels[path].ids] for path in tables}
    rows = {path: table[ids[path]] for path, table in tables.items()}

    def loss_of(dense, rows):
        looked_up = {(LOOKED_UP, *path[1:]): r for path, r in rows.items()}
        return loss_fn(dense | traverse_util.unflatten_dict(looked_up), batch)

    loss, (g_dense, g_rows) = jax.value_and_grad(loss_of, argnums=(0, 1))(dense, rows)
    updates, opt_state = train.dense_tx(tx).update(g_dense, state.opt_state, dense)
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
        new_tables[path], moments[name] = optim.lazy_adam_rows(
            table,
            state.table_moments[name],
            sorted_ids,
            totals[segment],
            state.step,
            learning_rate=learning_rate,
        )
    params = train.merge_tables(new_tables, dense)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, table_moments=moments
    )
    return new_state, loss


@pytest.mark.parametrize("case", sorted(LAZY_CASES))
def test_lazy_steps_are_bitwise_the_sorted_segment_sum_formulation(case):
    config, users, items = LAZY_CASES[case]
    model = create_model(config, 10, 12)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    kwargs = {
        "loss_fn": train.make_loss_fn(model.apply, config, tables),
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
    want = got = train.create_train_state(params, kwargs["tx"], lazy=True, tables=tables)
    reference = jax.jit(functools.partial(_reference_lazy_step, **kwargs))
    new = jax.jit(functools.partial(train.lazy_step, **kwargs))
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
        kwargs["loss_fn"], kwargs["tx"], make_batches, lazy=True, learning_rate=0.01,
        tables=tables,
    )  # fmt: skip
    start = train.create_train_state(params, kwargs["tx"], lazy=True, tables=tables)
    state, _ = epoch(start, None, jax.random.key(0))
    for a, b in zip(jax.tree.leaves(want.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("learner", ["adam", "sgd"])
def test_dense_tx_is_the_per_leaf_optimiser_on_one_flat_vector(learner):
    """Row-sparse Adam updates the dense parameters as one vector (`train.dense_tx`): the same
    numbers as optax leaf by leaf, up to the last bits (XLA evaluates Adam's bias correction
    inside each vectorised loop, and an element's lane position decides its rounding), and one
    state array per moment. A tree with no leaves (MF) keeps the optimiser as it is."""
    key = jax.random.key(0)
    params = {"a": {"kernel": jnp.ones((8, 4)), "bias": jnp.zeros(4)}, "b": jnp.ones((3,))}
    tx = optim.make_optimizer(learner, 0.01)
    flat, leaf = train.dense_tx(tx), tx
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
    assert train.dense_tx(tx).init({}) == tx.init({})


def test_row_sgd_floor_is_sgd_on_the_looked_up_rows():
    config, users, items = LAZY_CASES["pointwise"]
    model = create_model(config, 10, 12)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    loss_fn = train.make_loss_fn(model.apply, config, _tables(model))
    batch = {"users": users, "items": items, "labels": jnp.ones(4), "weights": jnp.ones(4)}
    tx = optax.sgd(0.1)
    dense, dense_loss = train.dense_step(
        train.create_train_state(params, tx, lazy=False), batch, loss_fn=loss_fn, tx=tx
    )
    floor, loss = train.on_model_tables(
        train.row_sgd_update, train.create_train_state(params, tx, lazy=False), batch,
        tables=_tables(model), loss_fn=loss_fn, learning_rate=0.1,
    )  # fmt: skip
    assert float(loss) == float(dense_loss) and int(floor.step) == 1
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
        dense.params,
        floor.params,
    )


def test_lazy_step_builds_nothing_of_a_table_size_but_the_updated_tables():
    num_users, num_items = 1009, 1013  # table sizes that no batch-sized array has
    config = ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_mf=0.1)
    model = create_model(config, num_users, num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.01)
    tables = _tables(model)
    state = train.create_train_state(params, tx, lazy=True, tables=tables)
    batch = {
        "users": jnp.arange(8),
        "items": jnp.arange(8),
        "labels": jnp.ones(8),
        "weights": jnp.ones(8),
    }
    groups = train.table_groups(params, tables)
    step = functools.partial(
        train.lazy_update,
        loss_fn=train.make_loss_fn(model.apply, config, tables),
        tx=tx,
        learning_rate=0.01,
        groups=groups,
    )
    packed = train.packed_state(state, groups)  # as the epoch runs it
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


def test_l2_penalty_by_hand():
    config = ModelConfig(
        model="neumf", num_factors=2, layers=(4, 2), reg_mf=0.1, reg_layers=(0.2, 0.3)
    )
    model = create_model(config, 3, 4)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    users, items, weights = jnp.array([0, 2]), jnp.array([1, 1]), jnp.array([1.0, 0.0])
    p = jax.tree.map(np.asarray, params["params"])
    expected = (
        0.1
        * (np.sum(p["mf_user"]["embedding"][0] ** 2) + np.sum(p["mf_item"]["embedding"][1] ** 2))
        + 0.2
        * (np.sum(p["mlp_user"]["embedding"][0] ** 2) + np.sum(p["mlp_item"]["embedding"][1] ** 2))
        + 0.3 * np.sum(p["mlp_dense_0"]["kernel"] ** 2)
    )
    got = losses.l2_penalty(params, {"users": users, "items": items}, weights,
                            tables=_tables(model), reg_mf=config.reg_mf,
                            reg_layers=config.reg_layers)  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_lazy_training_learns_too(tmp_path):
    result = _run(tmp_path, "lazy", epochs=6, lazy_embeddings=True)
    assert result["best"]["hr@5"] > 3 * 5 / 51


def test_grouped_batches_train_neumf_too(tmp_path):
    model = ModelConfig(model="neumf", num_factors=8, layers=(16, 8))
    result = _run(tmp_path, "grouped", epochs=6, model=model, batch_layout="grouped")
    assert result["best"]["hr@5"] > 3 * 5 / 51
    assert result["config"]["train"]["batch_layout"] == "grouped"


def test_nan_loss_stops_with_the_epoch(tmp_path):
    with pytest.raises(DivergedError, match="epoch 1"):
        train_and_evaluate(
            DATA,
            ModelConfig(model="gmf", num_factors=8),
            TrainConfig(epochs=2, batch_size=64, learning_rate=1e30, learner="sgd"),
            EvalConfig(top_k=5),
            tmp_path / "nan",
        )


def test_train_epoch_is_deterministic_and_donates_state():
    dev = interactions.from_data(DATA)
    model = create_model(ModelConfig(model="gmf", num_factors=4), DATA.num_users, DATA.num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.01)
    make = functools.partial(batching.epoch_batches, num_neg=2, batch_size=32)
    epoch = train.make_train_epoch(
        train.make_loss_fn(model.apply, ModelConfig(model="gmf")), tx, make
    )
    outs = []
    for _ in range(2):
        state = train.create_train_state(jax.tree.map(jnp.copy, params), tx, lazy=False)
        state, loss = epoch(state, dev, jax.random.key(5))
        outs.append((float(loss), np.asarray(state.params["params"]["mf_user"]["embedding"])))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert int(state.epoch) == 1 and int(state.step) == batching.num_steps(
        len(DATA.train_users), num_neg=2, batch_size=32
    )


PACKED_CASES = {  # name -> (model config, learner, batch layout, packed?)
    "neumf-adam": (
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4)),
        "adam",
        "shuffled",
        True,
    ),
    "neumf-kernel-l2-grouped-adamw": (  # a penalty on the kernels only: the rows are not read
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_layers=(0.0, 0.3)),
        "adamw",
        "grouped",
        True,
    ),
    "gmf-adagrad": (ModelConfig(model="gmf", num_factors=4), "adagrad", "shuffled", True),
    "neumf-rows-l2": (  # the penalty reads the rows: per-table autodiff, unpacked
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_mf=0.1, reg_layers=(0.2, 0.3)),
        "adam",
        "shuffled",
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(PACKED_CASES))
def test_packed_dense_epochs_are_bitwise_optax_on_the_model_tables(case):
    """Dense training runs its epochs on the tables packed one array per batch id
    (`train.packed_dense_step`) unless the L2 penalty reads their rows; against
    `train.dense_step` on the model's own tables (no `tables=`): two epochs with the same
    losses, parameters and optimiser state, bit for bit, for any elementwise optimiser and
    either batch layout; the state between epochs in the model's layout."""
    config, learner, layout, packs = PACKED_CASES[case]
    dev = interactions.from_data(DATA)
    model = create_model(config, DATA.num_users, DATA.num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    loss_fn = train.make_loss_fn(model.apply, config, tables)
    tx = optim.make_optimizer(learner, 0.01)
    make = functools.partial(batching.LAYOUTS[layout], num_neg=3, batch_size=64)
    first = jax.tree.map(lambda x: x[0], batching.as_arrays(make(jax.random.key(0), dev)))
    groups = train.packing(loss_fn, params, tables, first)
    if not packs:
        assert groups is None
    else:
        sides = [(ids, [p[1] for p, _ in cols]) for ids, cols in groups]
        assert sides == (
            [("items", ["mf_item"]), ("users", ["mf_user"])]
            if config.model == "gmf"
            else [("items", ["mf_item", "mlp_item"]), ("users", ["mf_user", "mlp_user"])]
        )
    packed = train.make_train_epoch(loss_fn, tx, make, tables=tables)
    per_table = train.make_train_epoch(loss_fn, tx, make)
    states = [train.create_train_state(jax.tree.map(jnp.copy, params), tx, lazy=False)
              for _ in range(2)]  # fmt: skip
    for epoch in range(2):
        key = jax.random.key(epoch)
        (states[0], loss), (states[1], reference) = (
            packed(states[0], dev, key),
            per_table(states[1], dev, key),
        )
        assert float(loss) == float(reference)
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
    jax.tree.map(np.testing.assert_array_equal, states[0], states[1])
    assert not np.array_equal(  # it trained
        states[0].params["params"]["mf_user"]["embedding"], params["params"]["mf_user"]["embedding"]
    )


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
    state = train.create_train_state(params, tx, lazy=True, tables=tables)
    state, _ = train.lazy_step(state, batch, loss_fn=loss_fn, tx=tx, learning_rate=0.01,
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


def test_row_sparse_training_refuses_other_learners_after_pre_training(tmp_path):
    """NeuMF continues after pre-training with --pretrain_learner: that one must be row-sparse."""
    parts = {"mf_pretrain": str(tmp_path / "gmf"), "mlp_pretrain": str(tmp_path / "mlp")}
    model = ModelConfig(model="neumf", num_factors=4, layers=(8, 4), **parts)
    train_config = TrainConfig(lazy_embeddings=True, pretrain_learner="adagrad")
    configs = tasks.configs(tasks.ncf, model=model, train=train_config, eval=EvalConfig())
    with pytest.raises(UsageError, match="not --pretrain_learner=adagrad"):
        tasks.ncf.build(DATA, configs)
