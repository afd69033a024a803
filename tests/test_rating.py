"""Explicit ratings: BiasedMF / RatingMLP shapes and y_range, learning a planted low-rank
matrix, bad ratings, and experiments.rating end to end on a tiny u.data."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import optim, tasks
from ncf_jax.data.types import InteractionData
from ncf_jax.models import BiasedMF, RatingMLP, create_model
from ncf_jax.tasks import rating
from ncf_jax.tasks.rating import RatingEvalConfig as EvalConfig
from ncf_jax.tasks.rating import RatingModelConfig as ModelConfig
from ncf_jax.tasks.rating import RatingTrainConfig as TrainConfig

NU, NI = 7, 11


def _data(users, items, ratings, test, num_users, num_items) -> InteractionData:
    """InteractionData with rows `~test` in train and `test` in test (no negatives)."""
    n = lambda mask: int(mask.sum())
    split = lambda mask, prefix: {
        f"{prefix}_users": users[mask].astype(np.int32),
        f"{prefix}_items": items[mask].astype(np.int32),
        f"{prefix}_ratings": ratings[mask].astype(np.float32),
        f"{prefix}_timestamps": np.zeros(n(mask), np.int64),
    }
    return InteractionData(
        name="planted",
        num_users=num_users,
        num_items=num_items,
        **split(~test, "train"),
        **split(test, "test"),
        test_negatives=np.zeros((n(test), 0), np.int32),
        test_negatives_mask=np.zeros((n(test), 0), bool),
        user_ids=np.arange(num_users) + 1,
        item_ids=np.arange(num_items) + 1,
    )


def test_biased_mf_shapes_and_first_prediction():
    model = BiasedMF(NU, NI, num_factors=4)
    # Jitted, as the tasks call them: op-by-op, every op compiled on its own (seconds a test).
    params = jax.jit(model.init)(jax.random.key(0), jnp.array([0, 1]), jnp.array([2, 3]))
    shapes = jax.tree.map(jnp.shape, params["params"])
    assert shapes == {
        "mf_user": {"embedding": (NU, 4)},
        "mf_item": {"embedding": (NI, 4)},
        "bias_user": {"embedding": (NU, 1)},
        "bias_item": {"embedding": (NI, 1)},
        "bias": (),
    }
    grid = jax.jit(model.apply)(params, jnp.zeros((3, 5), jnp.int32), jnp.zeros((3, 5), jnp.int32))
    assert grid.shape == (3, 5)
    # Embeddings N(0, 0.01) and zero biases: sigmoid(~0) * 5.5 ~ 2.75.
    np.testing.assert_allclose(grid, 2.75, atol=0.1)


def test_y_range_bounds_even_for_huge_outputs():
    y_range = (1.0, 2.0)
    for model in (
        BiasedMF(NU, NI, y_range=y_range),
        RatingMLP(NU, NI, layers=(8, 4), y_range=y_range),
    ):
        users, items = jnp.arange(NU), jnp.arange(NU) % NI
        params = jax.jit(model.init)(jax.random.key(1), users, items)
        far = jax.jit(lambda p: jax.tree.map(lambda x: x * 1e3 + 50.0, p))
        out = jax.jit(model.apply)(far(params), users, items)  # the raw output driven far out
        assert out.shape == (NU,)
        assert jnp.all(out >= y_range[0]) and jnp.all(out <= y_range[1])
    raw = BiasedMF(NU, NI, y_range=None)
    params = jax.tree.map(lambda x: x + 10.0, jax.jit(raw.init)(jax.random.key(1), users, items))
    assert jnp.all(jax.jit(raw.apply)(params, users, items) > 10.0)


def test_rating_mlp_dropout_and_side_features():
    model = RatingMLP(NU, NI, layers=(8, 16), dropout=0.5)
    users, items, side = jnp.arange(4), jnp.arange(4), jnp.ones((4, 3))
    params = jax.jit(model.init)(jax.random.key(0), users, items, side)
    assert params["params"]["mlp_dense_0"]["kernel"].shape == (8 + 3, 16)
    apply = jax.jit(model.apply, static_argnames="train")
    eval_out = apply(params, users, items, side)
    np.testing.assert_array_equal(eval_out, apply(params, users, items, side))
    key = {"dropout": jax.random.key(3)}
    train_out = apply(params, users, items, side, train=True, rngs=key)
    assert not np.allclose(eval_out, train_out)


def test_create_model_passes_y_range_and_dropout():
    config = ModelConfig(model="rating_mlp", layers=(8, 4), y_range=(1.0, 5.0), dropout=0.1)
    model = create_model(config, NU, NI)
    assert isinstance(model, RatingMLP) and model.y_range == (1.0, 5.0) and model.dropout == 0.1
    with pytest.raises(ValueError, match="y_range"):
        ModelConfig(y_range=(5.0, 1.0))


def test_weight_decay_optimisers():
    params = {"w": jnp.ones(2)}
    zero = {"w": jnp.zeros(2)}
    for learner in ("sgd", "adam"):
        tx = optim.make_optimizer(learner, 0.1, weight_decay=0.5)
        updates, _ = tx.update(zero, tx.init(params), params)
        assert jnp.all(updates["w"] < 0)  # decay alone shrinks the weights
    tx = optim.make_optimizer("adamw", 0.1, weight_decay=0.5)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.05)  # decoupled: -lr * wd * w


def _planted(seed=0, num_users=60, num_items=50, rank=2):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(num_users, rank))
    v = rng.normal(size=(num_items, rank))
    matrix = np.clip(3.0 + 0.8 * u @ v.T, 1.0, 5.0)
    users, items = np.divmod(np.arange(num_users * num_items), num_items)
    test = rng.random(len(users)) < 0.1
    return _data(users, items, matrix[users, items], test, num_users, num_items)


def test_biased_mf_learns_a_planted_low_rank_matrix(tmp_path):
    data = _planted()
    spread = float(np.std(data.test_ratings))
    configs = tasks.configs(
        rating,
        model=ModelConfig(model="biased_mf", num_factors=4),
        train=TrainConfig(epochs=8, batch_size=32, learning_rate=0.03, lr_schedule="cosine"),
        eval=EvalConfig(),
    )
    results = tasks.train_and_evaluate(rating, data, configs, tmp_path)
    assert results["init"]["rmse"] > 0.8 * spread
    assert results["best"]["rmse"] < 0.25 * spread, (results["best"], spread)
    assert set(results["best"]) == {"rmse", "mae", "mse"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best"] == results["best"] and saved["best_epoch"] >= 6


def test_row_sparse_sgd_trains_biased_mf_as_dense_sgd(tmp_path):
    """BiasedMF by SGD with `--lazy_embeddings` (what a Netflix-sized table needs) learns what
    dense SGD learns: the same RMSE every epoch up to float rounding of repeated ids."""
    data = _planted()
    history = {}
    for lazy in (False, True):
        configs = tasks.configs(
            rating,
            model=ModelConfig(model="biased_mf", num_factors=4, reg_mf=0.01),
            train=TrainConfig(
                epochs=6,
                batch_size=32,
                learner="sgd",
                learning_rate=0.5,
                lr_schedule="cosine",
                lazy_embeddings=lazy,
            ),
            eval=EvalConfig(),
        )
        results = tasks.train_and_evaluate(rating, data, configs, tmp_path / str(lazy))
        history[lazy] = [entry["rmse"] for entry in results["history"]]
    np.testing.assert_allclose(history[True], history[False], rtol=1e-4)
    assert history[True][-1] < 0.75 * history[True][0], history[True]  # it learns


def test_ratings_outside_y_range_name_column_and_rows(tmp_path):
    data = _planted()
    ratings = data.train_ratings.copy()
    ratings[[3, 9]] = [7.0, -1.0]
    import dataclasses

    bad = dataclasses.replace(data, train_ratings=ratings)
    u, i = bad.user_ids[bad.train_users[3]], bad.item_ids[bad.train_items[3]]
    with pytest.raises(ValueError, match=r"column 'stars'.*2 value\(s\) outside") as error:
        rating.check_ratings(bad, ModelConfig().y_range, column="stars")
    assert f"user {u} item {i} rating 7" in str(error.value)
    assert not (tmp_path / "results.json").exists()


def test_script_end_to_end_on_a_tiny_u_data(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    rows = [
        f"{u}\t{i}\t{rng.integers(1, 6)}\t{880000000 + 7 * u + i}"
        for u in range(1, 31)
        for i in range(1, 21)
        if rng.random() < 0.6
    ]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "experiments.rating",
        "--flagfile=experiments/configs/ml100k_biased_mf.flags",
        f"--data_dir={tmp_path}", f"--workdir={workdir}", "--epochs=1", "--nodata_cache",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=_root(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["model"] == "biased_mf" and len(results["history"]) == 1
    assert set(results["best"]) == {"rmse", "mae", "mse"}
    assert 0 < results["best"]["rmse"] < 3
    assert results["flags"]["split"] == "random" and results["flags"]["test_fraction"] == 0.1


def _root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[1]
