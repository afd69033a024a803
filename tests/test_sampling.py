"""The negative sampler against a NumPy set-difference reference: exact, uniform, seeded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import interactions, sampling
from ncf_jax.data.types import csr_from_pairs
from ncf_jax.permutation import permutation


def _data(positives: dict[int, list[int]], num_users: int, num_items: int):
    users = np.concatenate([[u] * len(p) for u, p in positives.items()]).astype(np.int32)
    items = np.concatenate(list(positives.values())).astype(np.int32)
    indptr, indices = csr_from_pairs(users, items, num_users)
    return interactions.from_csr(users, items, indptr, indices, num_items)


# Edge cases on purpose: positives at both ends of the catalogue, a run of consecutive items,
# a user with all but one item, and a user with a single positive.
POSITIVES = {0: [0, 1, 2, 9], 1: [5], 2: list(range(1, 10)), 3: [3, 4, 5, 6, 0, 8]}


def test_never_a_positive_and_only_allowed_items():
    data = _data(POSITIVES, 4, 10)
    users = jnp.repeat(jnp.arange(4, dtype=jnp.int32), 2000)
    drawn = np.asarray(jax.jit(sampling.sample_negatives)(jax.random.key(0), users, data))
    for u, pos in POSITIVES.items():
        got = set(drawn[np.asarray(users) == u].tolist())
        assert got == set(range(10)) - set(pos), u  # every allowed item, and nothing else


@pytest.mark.parametrize("chunk", [1, 7, 1000, 8000])
def test_draws_in_passes_are_the_draws_of_one_pass(chunk):
    """Bisecting `chunk` draws a pass (the last pass overlapping the one before) gives the
    draws of one pass over all of them, whatever the chunk and a [users, k] shape."""
    data = _data(POSITIVES, 4, 10)
    users = jnp.tile(jnp.arange(4, dtype=jnp.int32), (1001, 2))  # 8008 draws, [1001, 8]
    one = sampling.sample_negatives(jax.random.key(3), users, data, chunk=len(users.ravel()))
    passes = sampling.sample_negatives(jax.random.key(3), users, data, chunk=chunk)
    assert passes.shape == users.shape
    np.testing.assert_array_equal(np.asarray(passes), np.asarray(one))


def test_uniform_over_allowed_items():
    rng = np.random.default_rng(1)
    num_items = 50
    positives = {
        u: sorted(rng.choice(num_items, size=s, replace=False).tolist())
        for u, s in enumerate([1, 10, 30, 45])
    }
    data = _data(positives, 4, num_items)
    n = 40_000
    users = jnp.repeat(jnp.arange(4, dtype=jnp.int32), n)
    drawn = np.asarray(sampling.sample_negatives(jax.random.key(3), users, data)).reshape(4, n)
    for u, pos in positives.items():
        allowed = np.setdiff1d(np.arange(num_items), pos)
        counts = np.bincount(drawn[u], minlength=num_items)[allowed]
        expected = n / len(allowed)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        dof = len(allowed) - 1
        assert chi2 < dof + 5 * np.sqrt(2 * dof), (u, chi2, dof)  # ~5 sigma


def test_same_key_same_draws_and_other_key_differs():
    data = _data(POSITIVES, 4, 10)
    users = jnp.tile(jnp.arange(4, dtype=jnp.int32), 100)
    a = sampling.sample_negatives(jax.random.key(7), users, data)
    b = sampling.sample_negatives(jax.random.key(7), users, data)
    c = sampling.sample_negatives(jax.random.key(8), users, data)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_user_with_every_item_is_an_error():
    with pytest.raises(ValueError, match="interacted with all 3 items"):
        _data({0: [0, 1, 2]}, 1, 3)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_permutation(n):
    p = np.asarray(permutation(jax.random.key(n), n))
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_permutation_positions_are_uniform_and_seeded():
    n, reps = 12, 3000
    keys = jax.random.split(jax.random.key(0), reps)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(keys))
    counts = np.stack([np.bincount(np.argmax(perms == v, axis=1), minlength=n) for v in range(n)])
    expected = reps / n
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=1)
    assert chi2.max() < (n - 1) + 6 * np.sqrt(2 * (n - 1)), chi2
    np.testing.assert_array_equal(perms[0], np.asarray(permutation(keys[0], n)))
    assert len({tuple(p) for p in perms[:200]}) > 190  # keys give different orders
