"""Recommendation: top-K against brute force, seen items excluded, any model; and the scripts
experiments.two_tower and experiments.recommend end to end on tiny ml-100k-format files."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import tasks
from ncf_jax.commands import recommend
from ncf_jax.config import DataConfig
from ncf_jax.data import load_dataset
from ncf_jax.data.types import csr_from_pairs
from ncf_jax.errors import CheckpointError, UsageError
from ncf_jax.tasks.classic import ClassicModelConfig
from ncf_jax.tasks.ncf import NCFModelConfig, NCFTrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_top_k_matches_brute_force_and_excludes_seen():
    rng = np.random.default_rng(0)
    num_users, num_items, k = 7, 12, 4
    # Small integers: many ties, which must go to the lower item id.
    scores = rng.integers(0, 4, (num_users, num_items)).astype(np.float32)
    seen_u = rng.integers(0, num_users, 30)
    seen_i = rng.integers(0, num_items, 30)
    indptr, indices = csr_from_pairs(seen_u, seen_i, num_users)
    users = np.array([3, 0, 6, 3, 1])
    items, values = recommend.top_k(
        lambda params, u: params[u],
        jnp.asarray(scores),
        users,
        k,
        num_items=num_items,
        exclude_indptr=indptr,
        exclude_indices=indices,
        chunk_size=2,  # several chunks, the last one padded
    )
    for row, user in enumerate(users):
        seen = set(indices[indptr[user] : indptr[user + 1]].tolist())
        allowed = [j for j in range(num_items) if j not in seen]
        expected = sorted(allowed, key=lambda j: (-scores[user, j], j))[:k]
        assert items[row][items[row] >= 0].tolist() == expected
        np.testing.assert_array_equal(values[row][: len(expected)], scores[user, expected])
        assert not seen & set(items[row].tolist())


def test_top_k_pads_when_too_few_items_remain():
    scores = jnp.asarray([[3.0, 2.0, 1.0]])
    indptr, indices = csr_from_pairs(np.array([0, 0]), np.array([0, 2]), 1)
    items, values = recommend.top_k(
        lambda p, u: p[u], scores, [0], 2, num_items=3, exclude_indptr=indptr,
        exclude_indices=indices,
    )  # fmt: skip
    assert items.tolist() == [[1, -1]] and values[0, 1] == -np.inf


def write_tiny_ml100k(root, num_users=24, num_items=30, per_user=14, seed=0):
    """u.data (tab-separated, MovieLens ids from 1) and u.item with titles, in root/ml-100k."""
    rng = np.random.default_rng(seed)
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    lines = []
    for user in range(1, num_users + 1):
        cluster = user % 2
        pool = [i for i in range(1, num_items + 1) if i % 2 == cluster]
        for j, item in enumerate(rng.choice(pool, per_user, replace=False)):
            stamp = 1000 * j + user  # every user's later items fall in the temporal test set
            lines.append(f"{user}\t{item}\t{rng.integers(3, 6)}\t{stamp}")
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    flags = "|".join(["0"] * 18 + ["1"])
    items = [f"{i}|Movie {i} (1999)|01-Jan-1999||http://x/{i}|{flags}" for i in range(1, 31)]
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    return root


def run_module(module, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def two_tower_run(tmp_path_factory):
    """experiments.two_tower on tiny data: the end-to-end test of the script."""
    root = write_tiny_ml100k(tmp_path_factory.mktemp("data"))
    workdir = tmp_path_factory.mktemp("run")
    stdout = run_module(
        "experiments.two_tower",
        "--flagfile=experiments/configs/ml100k_two_tower.flags",
        f"--data_dir={root}",
        "--min_user_interactions=5",
        "--epochs=2",
        "--batch_size=32",
        "--num_neg=3",
        f"--workdir={workdir}",
    )
    return root, workdir, stdout


def test_two_tower_script_end_to_end(two_tower_run):
    _, workdir, stdout = two_tower_run
    results = json.loads((workdir / "results.json").read_text())
    assert results["eval_protocol"] == "full" and results["model"] == "two_tower"
    for name in ("hr@10", "ndcg@10", "recall@10", "mrr@10", "coverage@10"):
        assert 0.0 <= results["best"][name] <= 1.0
        assert name in results["baseline"]["popularity"]
    assert results["config"]["data"]["split"] == "temporal"
    assert len(results["history"]) == 2
    assert "most-popular baseline" in stdout


def test_recommend_command_prints_original_ids_and_titles(two_tower_run):
    _, workdir, _ = two_tower_run
    stdout = run_module("experiments.recommend", f"--workdir={workdir}", "--users=2,7", "--k=5")
    assert "user 2:" in stdout and "user 7:" in stdout
    assert stdout.count("Movie ") == 10  # five titles per user
    run = recommend.load_run(workdir)
    train = run.data.train_csr()
    for rec in recommend.recommend(run, [2, 7], 5):
        code = int(recommend.user_codes(run.data, [rec["user"]])[0])
        seen = set(run.data.item_ids[train[1][train[0][code] : train[0][code + 1]]].tolist())
        assert len(rec["items"]) == 5 and not seen & set(rec["items"])
        assert rec["titles"] == [f"Movie {i} (1999)" for i in rec["items"]]


def test_recommend_works_for_pointwise_models(tmp_path):
    root = write_tiny_ml100k(tmp_path / "data")
    data_config = DataConfig(dataset="ml-100k", data_dir=str(root), num_test_negatives=5)
    data = load_dataset(data_config)
    configs = tasks.configs(
        tasks.ncf,
        data=data_config,
        model=NCFModelConfig(model="gmf", num_factors=4),
        train=NCFTrainConfig(epochs=1, batch_size=64),
    )
    tasks.train_and_evaluate(tasks.ncf, data, configs, tmp_path / "gmf")
    run = recommend.load_run(tmp_path / "gmf")
    (rec,) = recommend.recommend(run, ["3"], 4, exclude_seen=True)
    users = np.flatnonzero(run.data.user_ids == 3)
    _, score_all_fn = recommend.score_fns(run.model, run.data.num_items)
    scores = np.array(score_all_fn(run.params, jnp.asarray(users, jnp.int32)))[0]
    indptr, indices = run.data.train_csr()
    scores[indices[indptr[users[0]] : indptr[users[0] + 1]]] = -np.inf
    best = np.argsort(-scores, kind="stable")[:4]
    assert rec["items"] == run.data.item_ids[best].tolist()
    with pytest.raises(UsageError, match="are not users of"):
        recommend.recommend(run, [999], 4)


def test_recommend_scores_a_fitted_baseline_and_refuses_an_old_layout(tmp_path):
    root = write_tiny_ml100k(tmp_path / "data")
    data_config = DataConfig(dataset="ml-100k", data_dir=str(root), num_test_negatives=5)
    data = load_dataset(data_config)
    model = ClassicModelConfig(model="itemknn", knn_k=3)
    configs = tasks.configs(tasks.classic, data=data_config, model=model)
    tasks.train_and_evaluate(tasks.classic, data, configs, tmp_path / "knn")
    run = recommend.load_run(tmp_path / "knn")
    (rec,) = recommend.recommend(run, ["3"], 4, exclude_seen=True)
    user = int(np.flatnonzero(run.data.user_ids == 3)[0])
    x = np.asarray(run.params["x"], np.float32)
    ids, weights = np.asarray(run.params["neighbours"]), np.asarray(run.params["weights"])
    w = np.zeros((data.num_items, data.num_items), np.float32)  # column j: target j's list
    w[ids, np.arange(data.num_items)[:, None]] = weights
    scores = x[user] @ w
    scores[x[user] > 0] = -np.inf
    assert rec["items"] == run.data.item_ids[np.argsort(-scores, kind="stable")[:4]].tolist()
    old = {"x": run.params["x"], "w": jnp.asarray(w)}  # the dense layout before neighbour lists
    with pytest.raises(CheckpointError, match="have no 'neighbours'.*fit the model again"):
        recommend.check_baseline_params(run.model, old, tmp_path / "knn")
