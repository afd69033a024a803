"""Memory that scales with the data, from XLA's own analysis of each compiled program.

Every device program whose size grows with the data (the NCF epoch, the sampled and full
evaluators, the classic models' Gram product and iALS sweep) is compiled on a small,
deliberately heavy-tailed dataset (a few users hold most of the interactions, as on Netflix)
and its arguments and temporaries are checked against the bound `docs/memory.md` states as a
function of users, items and interactions. A layout that grows with users x the longest
history (or with chunks x the busiest chunk) breaks these bounds by several times here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import batching, evaluate, interactions, optim, train
from ncf_jax.baselines import _matrix, ials
from ncf_jax.data.types import csr_from_pairs
from ncf_jax.models import create_model, layers
from ncf_jax.tasks import ncf
from ncf_jax.tasks.ncf import NCFModelConfig

NUM_USERS, NUM_ITEMS = 2048, 1500


@pytest.fixture(scope="module")
def heavy():
    """Pareto history lengths: median about 6, the longest users near the whole catalogue."""
    rng = np.random.default_rng(0)
    lengths = np.minimum((rng.pareto(1.0, NUM_USERS) * 4 + 2).astype(int), NUM_ITEMS - 1)
    users = np.repeat(np.arange(NUM_USERS), lengths).astype(np.int32)
    items = np.concatenate([rng.choice(NUM_ITEMS, n, replace=False) for n in lengths])
    indptr, indices = csr_from_pairs(users, items.astype(np.int32), NUM_USERS)
    assert lengths.max() > 100 * np.median(lengths)  # heavy-tailed, as meant
    return {"users": users, "items": items.astype(np.int32), "indptr": indptr,
            "indices": indices, "nnz": int(lengths.sum())}  # fmt: skip


def _memory(lowered):
    analysis = lowered.compile().memory_analysis()
    return analysis.argument_size_in_bytes, analysis.temp_size_in_bytes


def _bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("step_built", [True, False])
def test_ncf_epoch_is_linear_in_samples(heavy, step_built):
    """Temporaries <= 32 bytes a sample (the epoch's negatives, their draws, the stacked
    batches where stacked) + 3 x the train state (its packed copy and updates)."""
    num_neg = 4
    dev = interactions.from_csr(
        heavy["users"], heavy["items"], heavy["indptr"], heavy["indices"], NUM_ITEMS
    )
    config = NCFModelConfig(model="neumf", num_factors=8, layers=(16, 8))
    model = create_model(config, NUM_USERS, NUM_ITEMS)
    ids = jnp.zeros(1, jnp.int32)
    params = model.init(jax.random.key(0), ids, ids)
    tables = layers.table_labels(model, ids, ids)
    tx = optim.make_optimizer("adam", 0.001)
    make = functools.partial(
        batching.epoch_batches, num_neg=num_neg, batch_size=256, step_built=step_built
    )
    epoch = train.make_train_epoch(ncf.make_loss_fn(model.apply, config, tables), tx, make,
                                   tables=tables)  # fmt: skip
    state = train.create_train_state(params, tx, row_sparse=False)
    _, temp = _memory(epoch.lower(state, dev, jax.random.key(0)))
    samples = heavy["nnz"] * (1 + num_neg)
    assert temp <= 32 * samples + 3 * _bytes(state), (temp, samples)


def test_full_evaluator_is_linear_in_excluded_pairs(heavy):
    """Device data <= the parameters + 12 bytes an excluded pair (6 for the pair, 6 for at most
    one window of padding) + 32 bytes a test user; temporaries <= 4 score blocks
    [chunk, num_items] float32. Padding every chunk to the busiest, with the users sorted
    longest history first, needs 8 bytes x chunks x the busiest chunk: 4-5x this bound here."""
    rng = np.random.default_rng(1)
    params = {"u": jnp.ones((NUM_USERS, 8)), "i": jnp.ones((NUM_ITEMS, 8))}
    score_all = lambda p, users: p["u"][users] @ p["i"].T
    test_users = np.arange(NUM_USERS)
    run = evaluate.make_full_evaluator(
        score_all, test_users, rng.integers(0, NUM_ITEMS, NUM_USERS), heavy["indptr"],
        heavy["indices"], num_items=NUM_ITEMS, k=10, chunk_size=256,
    )  # fmt: skip
    args, temp = _memory(run.lower(params))
    assert args - _bytes(params) <= 12 * heavy["nnz"] + 32 * len(test_users), args
    assert temp <= 4 * 256 * NUM_ITEMS * 4, temp


def test_sampled_evaluator_is_linear_in_test_pairs():
    """Device data <= 5 bytes a candidate (an int32 id, a bool mask) + 8 a pair; temporaries
    <= a chunk's candidates' looked-up rows (the score function's, width 8 here) and 4 blocks
    of their scores, float32."""
    rng = np.random.default_rng(2)
    n, negatives, chunk = 5000, 99, 1024
    params = {"u": jnp.ones((NUM_USERS, 8)), "i": jnp.ones((NUM_ITEMS, 8))}
    score = lambda p, users, items: jnp.einsum("cd,cmd->cm", p["u"][users], p["i"][items])
    run = evaluate.make_sampled_evaluator(
        score, rng.integers(0, NUM_USERS, n), rng.integers(0, NUM_ITEMS, n),
        rng.integers(0, NUM_ITEMS, (n, negatives)), chunk_size=chunk,
    )  # fmt: skip
    args, temp = _memory(run.lower(params))
    padded = -(-n // chunk) * chunk
    assert args - _bytes(params) <= padded * (5 * (1 + negatives) + 8), args
    assert temp <= chunk * (1 + negatives) * (8 + 4) * 4, temp


def test_gram_is_quadratic_in_items_only(heavy):
    """`_matrix.gram`: temporaries <= 3 [num_items, num_items] float32 (the walked rows, their
    reordering and the mirrored result) + one dense block's sums; never users x items floats."""
    x, columns = _gram_inputs(heavy)
    weights = jnp.ones(NUM_USERS, jnp.float32)
    _, temp = _memory(_matrix.gram.lower(x, weights, columns))
    square = NUM_ITEMS * NUM_ITEMS * 4
    assert temp <= 3 * square + 2 * _matrix.GRAM_ITEMS * NUM_ITEMS * 4, (temp, square)


def _gram_inputs(heavy):
    x = _matrix.dense_binary(heavy["indptr"], heavy["indices"], NUM_USERS, NUM_ITEMS)
    return x, _matrix.item_users(heavy["indptr"], heavy["indices"], NUM_USERS, NUM_ITEMS)


def test_ials_sweep_is_linear_in_pairs_and_rows(heavy):
    """An iALS sweep (CG): temporaries <= 2 float32 factor rows a padded bucket entry (the
    other side's rows gathered for each user's or item's list) + 4 rows a user and item."""
    factors = 16
    data = ials.prepare(heavy["indptr"], heavy["indices"], num_users=NUM_USERS,
                        num_items=NUM_ITEMS)  # fmt: skip
    params = ials.init(jax.random.key(0), num_users=NUM_USERS, num_items=NUM_ITEMS,
                       factors=factors)  # fmt: skip
    _, temp = _memory(ials.sweep.lower(params, data))
    entries = sum(cols.size for side in ("user_buckets", "item_buckets")
                  for _, cols in data[side])  # fmt: skip
    assert entries <= 4 * heavy["nnz"]  # the buckets' padding is bounded too
    row = factors * 4
    assert temp <= 2 * entries * row + 4 * (NUM_USERS + NUM_ITEMS) * row, (temp, entries)
