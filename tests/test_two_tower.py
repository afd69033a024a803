"""Two-tower model, its losses (against hand / NumPy references), the candidate batches and a
short training run that must beat random ranking under full-catalogue evaluation."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import batching, interactions, losses, tasks
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic
from ncf_jax.models import create_model, two_tower
from ncf_jax.tasks import two_tower as task
from ncf_jax.tasks.ncf import NCFModelConfig
from ncf_jax.tasks.two_tower import TwoTowerModelConfig as ModelConfig
from ncf_jax.tasks.two_tower import TwoTowerTrainConfig as TrainConfig


def _model(**kwargs):
    config = ModelConfig(model="two_tower", embed_dim=4, **kwargs)
    model = create_model(config, 6, 9)
    dummy = jnp.zeros(1, jnp.int32)
    return model, model.init(jax.random.key(0), dummy, dummy)


def _train(data, model_config, train_config, eval_config, workdir):
    configs = tasks.configs(task, model=model_config, train=train_config, eval=eval_config)
    return tasks.train_and_evaluate(task, data, configs, workdir)


def test_doctests():
    assert doctest.testmod(two_tower).failed == 0


@pytest.mark.parametrize(
    "kwargs", [{}, {"tower_layers": (8, 3), "cosine": True, "temperature": 0.2}]
)
def test_towers_equal_the_score(kwargs):
    model, params = _model(**kwargs)
    users, items = jnp.arange(6), jnp.arange(9)
    u = model.apply(params, users, method="user_vectors")
    v = model.apply(params, items, method="item_vectors")
    dim = kwargs.get("tower_layers", (4,))[-1]
    assert u.shape == (6, dim) and v.shape == (9, dim)
    expected = np.asarray(u) @ np.asarray(v).T / kwargs.get("temperature", 1.0)
    matrix = model.apply(params, users, items, method="score_matrix")
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-6)
    grid_u, grid_i = jnp.meshgrid(users, items, indexing="ij")
    np.testing.assert_allclose(model.apply(params, grid_u, grid_i), expected, rtol=1e-5, atol=1e-6)
    cands = jnp.array([[0, 3, 8], [1, 1, 2]])
    got = model.apply(params, jnp.array([2, 5]), cands, method="score_candidates")
    np.testing.assert_allclose(got, expected[[[2], [5]], cands], rtol=1e-5, atol=1e-6)
    if kwargs.get("cosine"):
        np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, rtol=1e-5)


def test_side_features_feed_the_tower():
    model, _ = _model(tower_layers=(5,))
    features = np.eye(9, 2, dtype=np.float32)
    model = model.clone(item_features=features)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    assert params["params"]["item"]["dense_0"]["kernel"].shape == (4 + 2, 5)
    assert params["params"]["user"]["dense_0"]["kernel"].shape == (4, 5)


LOGITS = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], np.float32)
WEIGHTS = np.array([1.0, 3.0], np.float32)


def _sigmoid_bce(x, y):
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_sampled_bce_against_hand_reference():
    rows = [np.mean([_sigmoid_bce(x, float(j == 0)) for j, x in enumerate(r)]) for r in LOGITS]
    expected = (rows[0] * 1 + rows[1] * 3) / 4
    got = losses.sampled_bce(jnp.asarray(LOGITS), jnp.asarray(WEIGHTS))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_sampled_softmax_against_hand_reference():
    rows = [math.log(sum(math.exp(x) for x in r)) - r[0] for r in LOGITS]
    expected = (rows[0] * 1 + rows[1] * 3) / 4
    got = losses.sampled_softmax(jnp.asarray(LOGITS), jnp.asarray(WEIGHTS))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def _in_batch_reference(logits, items, log_q, weights):
    total = 0.0
    for i in range(len(items)):
        row = [
            logits[i, j] - (log_q[j] if log_q is not None else 0.0)
            for j in range(len(items))
            if j == i or (items[j] != items[i] and weights[j] > 0)
        ]
        own = logits[i, i] - (log_q[i] if log_q is not None else 0.0)
        total += weights[i] * (math.log(sum(math.exp(x) for x in row)) - own)
    return total / sum(weights)


@pytest.mark.parametrize("with_log_q", [False, True])
def test_in_batch_softmax_against_numpy_reference(with_log_q):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 5)).astype(np.float32)
    items = np.array([3, 1, 3, 7, 2])  # item 3 twice: neither copy is the other's negative
    weights = np.array([1, 1, 1, 1, 0], np.float32)  # the last row is padding
    log_q = np.log(np.array([0.3, 0.1, 0.3, 0.05, 0.2], np.float32)) if with_log_q else None
    expected = _in_batch_reference(logits, items, log_q, weights)
    got = losses.in_batch_softmax(
        jnp.asarray(logits), jnp.asarray(items), None if log_q is None else jnp.asarray(log_q),
        jnp.asarray(weights),
    )  # fmt: skip
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_log_q_correction_removes_popularity_advantage():
    """Scores equal to log q (pure popularity): corrected, every column ties, so the loss is
    log(batch); uncorrected it is logsumexp(log q) - mean(log q) = -mean(log q)."""
    log_q = jnp.log(jnp.array([0.5, 0.25, 0.125, 0.125]))
    logits = jnp.broadcast_to(log_q, (4, 4))
    items, weights = jnp.arange(4), jnp.ones(4)
    corrected = losses.in_batch_softmax(logits, items, log_q, weights)
    assert float(corrected) == pytest.approx(math.log(4), rel=1e-6)
    uncorrected = losses.in_batch_softmax(logits, items, None, weights)
    assert float(uncorrected) == pytest.approx(-float(jnp.mean(log_q)), rel=1e-6)


def test_candidate_batches_rows():
    data = synthetic.planted(8, 16, per_user=4, num_clusters=2, num_test_negatives=5)
    device = interactions.from_data(data)
    batches = batching.candidate_batches(jax.random.key(0), device, num_neg=3, batch_size=5)
    n = len(data.train_users)
    assert batches["items"].shape == (-(-n // 5), 5, 4)
    real = np.asarray(batches["weights"]).reshape(-1) > 0
    users = np.asarray(batches["users"]).reshape(-1)[real]
    items = np.asarray(batches["items"]).reshape(-1, 4)[real]
    train = set(zip(data.train_users.tolist(), data.train_items.tolist(), strict=True))
    assert sorted(zip(users.tolist(), items[:, 0].tolist(), strict=True)) == sorted(train)
    for user, negatives in zip(users, items[:, 1:], strict=True):
        assert not any((user, j) in train for j in negatives.tolist())
    counts = np.bincount(data.train_items, minlength=16)
    log_q = np.asarray(batches["log_q"]).reshape(-1)[real]
    np.testing.assert_allclose(log_q, np.log(counts[items[:, 0]] / n), rtol=1e-5)


def test_training_beats_random_under_full_ranking(tmp_path):
    """In-batch softmax here; experiments.two_tower trains BCE end to end (test_recommend)."""
    data = synthetic.planted(64, 80, per_user=12, num_clusters=4)
    results = _train(
        data,
        ModelConfig(model="two_tower", embed_dim=8),
        TrainConfig(epochs=6, batch_size=64, num_neg=4, learning_rate=0.02, loss="in_batch"),
        EvalConfig(protocol="full"),
        tmp_path,
    )
    # Random ranking of the 69 unseen items finds the one test item in the top 10 w.p. 10/69.
    assert results["best"]["hr@10"] > 0.6
    assert results["init"]["hr@10"] < 0.35
    assert results["baseline"]["popularity"]["hr@10"] < 0.35
    assert (tmp_path / "results.json").exists()


def test_pointwise_models_rejected(tmp_path):
    data = synthetic.planted(8, 16, per_user=4, num_clusters=2, num_test_negatives=5)
    with pytest.raises(ValueError, match="no towers"):
        _train(data, NCFModelConfig(model="gmf"), TrainConfig(), EvalConfig(protocol="full"),
               tmp_path)  # fmt: skip


def test_cosine_tower_has_finite_gradients_at_the_zero_vector():
    """x / max(|x|, m) at x = 0: the output is 0 and its Jacobian is I / m (hand-derived: the
    clamp is constant there); a plain max(norm, m) gives NaN. Elsewhere the Jacobian is
    (I - x x^T / |x|^2) / |x|, compared with NumPy."""
    model, params = _model(cosine=True)
    table = params["params"]["user"]["tower_user"]["embedding"]
    params["params"]["user"]["tower_user"]["embedding"] = table.at[0].set(0.0)

    def user_vector(p, user, k):
        return model.apply(p, jnp.array([user]), method="user_vectors")[0, k]

    for user in (0, 1):
        x = np.asarray(params["params"]["user"]["tower_user"]["embedding"][user], np.float64)
        norm = np.linalg.norm(x)
        want = np.eye(4) / two_tower.MIN_NORM if norm == 0 else (
            np.eye(4) - np.outer(x, x) / norm**2) / norm  # fmt: skip
        for k in range(4):
            grads = jax.grad(user_vector)(params, user, k)
            assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
            row = grads["params"]["user"]["tower_user"]["embedding"][user]
            np.testing.assert_allclose(row, want[k], rtol=1e-4, atol=1e-6)
