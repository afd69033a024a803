"""The classic task through the one loop (EASE^R against a NumPy solve, iALS's objective per
sweep), `recommend` on a saved classic run, and the comparison suite end to end."""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import baselines, compare, recommend, xla
from ncf_jax.data import synthetic, write_ncf
from ncf_jax.errors import UsageError
from ncf_jax.tasks import classic, configs_from_options, train_and_evaluate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    write_ncf(synthetic.planted(num_users=40, num_items=50, num_test_negatives=20), path, "tiny")
    return path


def _run(folder, workdir, **options):
    given = {"dataset": "ncf:tiny", "data_dir": str(folder), "top_k": 5} | options
    configs = configs_from_options(classic, given)
    data = classic.load_data(configs)
    return data, train_and_evaluate(classic, data, configs, workdir)


def _ease_reference(data, lam):
    x = np.zeros((data.num_users, data.num_items))
    x[data.train_users, data.train_items] = 1.0
    p = np.linalg.solve(x.T @ x + lam * np.eye(data.num_items), np.eye(data.num_items))
    b = np.eye(data.num_items) - p / np.diag(p)[None, :]  # Steck's closed form, diag(B) = 0
    return x, x @ b


@pytest.fixture(scope="module")
def ease_run(folder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ease")
    data, results = _run(folder, workdir, model="ease", ease_lambda=20.0)
    return data, results, workdir


def test_ease_through_the_loop_scores_as_a_numpy_solve(ease_run):
    data, results, workdir = ease_run
    assert [h["epoch"] for h in results["history"]] == [1] and results["task"] == "classic"
    assert results["history"][0]["loss"] == 0.0 and results["best"]["hr@5"] > 0.5
    run = recommend.load_run(workdir)
    users = jnp.arange(data.num_users, dtype=jnp.int32)
    _, want = _ease_reference(data, 20.0)
    np.testing.assert_allclose(np.asarray(run.model.score_all(run.params, users)), want, atol=2e-4)


def test_recommend_on_a_saved_classic_run(ease_run):
    data, _, workdir = ease_run
    run = recommend.load_run(workdir)
    (rec,) = recommend.recommend(run, [data.user_ids[7]], 4)
    x, scores = _ease_reference(data, 20.0)
    row = np.where(x[7] > 0, -np.inf, scores[7])
    assert rec["items"] == data.item_ids[np.argsort(-row, kind="stable")[:4]].tolist()


def test_ials_objective_does_not_increase_over_sweeps(folder, tmp_path):
    _, results = _run(folder, tmp_path, model="ials", ials_factors=8, epochs=5, num_seeds=2)
    losses = [h["loss"] for h in results["history"]]
    assert len(losses) == 5 and all(b <= a * (1 + 1e-5) for a, b in itertools.pairwise(losses))
    assert results["seed"] == [0, 1] and len(results["best_epoch"]) == 2


def test_ials_grid_points_share_one_compiled_sweep(folder):
    """alpha0, reg and nu are arguments of the compiled epoch: two grid points compile once, and
    each sweeps as `baselines.ials.sweep` with those values as Python constants."""
    compiled = []  # programs in the epoch's cache after each point (other files' runs included)
    for point in ({"ials_reg": 0.01, "ials_alpha0": 0.3}, {"ials_reg": 0.03, "ials_alpha0": 1.0}):
        given = {"dataset": "ncf:tiny", "data_dir": str(folder), "model": "ials"}
        configs = configs_from_options(classic, given | {"ials_factors": 8} | point)
        task = classic.build(classic.load_data(configs), configs)
        start = task.state.params
        state, loss = task.train_epoch(task.state, task.data, task.key)
        hp = configs["model"].hyperparameters()
        want = baselines.ials.sweep(start, task.data["interactions"], **hp)
        for name in ("users", "items"):
            np.testing.assert_allclose(state.params[name], want[name], rtol=1e-5, atol=1e-6)
        assert float(loss) == pytest.approx(
            float(baselines.ials.objective(want, task.data["interactions"], **hp)), rel=1e-5
        )
        compiled.append((task.train_epoch, task.train_epoch._cache_size()))
    (first, n), (second, m) = compiled
    assert first is second and m == n  # one jitted epoch, no second program


def test_ease_lambdas_run_as_replicas_of_one_fit(folder, tmp_path):
    """--ease_lambdas: one fit_grid, each lambda a replica whose metrics are its own fit's."""
    lams = (0.1, 30.0)
    _, grid = _run(folder, tmp_path / "grid", model="ease", ease_lambdas=lams)
    assert grid["seed"] == [0, 0] and len(grid["seeds"]) == 2
    singles = [_run(folder, tmp_path / str(lam), model="ease", ease_lambda=lam)[1]["best"]
               for lam in lams]  # fmt: skip
    assert singles[0]["ndcg@5"] < singles[1]["ndcg@5"] - 0.02  # the lambdas rank differently
    for replica, single in zip(grid["seeds"], singles, strict=True):
        for name, value in single.items():
            np.testing.assert_allclose(replica["best"][name], value, atol=1e-6, err_msg=name)
    with pytest.raises(UsageError, match="--ease_lambdas applies to --model=ease only"):
        _run(folder, tmp_path / "knn", model="itemknn", ease_lambdas=lams)


def test_deterministic_models_refuse_seeds(folder, tmp_path):
    with pytest.raises(UsageError, match="num_seeds applies to --model=ials only"):
        _run(folder, tmp_path, model="ease", num_seeds=2)


def test_compare_end_to_end_then_a_rerun_trains_nothing(folder, tmp_path):
    workdir = tmp_path / "suite"
    command = [sys.executable, "-m", "experiments.compare", "--dataset=ncf:tiny",
               f"--data_dir={folder}", f"--workdir={workdir}", "--models=toppop,ease"]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((workdir / "compare.json").read_text())
    rows = {(r["model"], r["protocol"]) for r in report["rows"]}
    assert rows == {(m, p) for m in ("toppop", "ease") for p in ("sampled", "full")}
    assert "recall@10" in report["rows"][1]["metrics"] and (workdir / "compare.png").exists()
    assert "| ease |" in (workdir / "compare.md").read_text()
    suite = compare.CompareConfig(dataset="ncf:tiny", data_dir=str(folder),
                                  models=("toppop", "ease"))  # fmt: skip
    assert compare.run_suite(suite, workdir)["ran"] == []  # every run was complete


def test_tuning_records_every_point_and_the_chosen_one(folder, tmp_path):
    suite = compare.CompareConfig(dataset="ncf:tiny", data_dir=str(folder), models=("ease",),
                                  tune=True)  # fmt: skip
    grids = {"ease": {"ease_lambda": [1.0, 100.0]}}
    rows = compare.run_suite(suite, tmp_path, grids=grids)["rows"]
    assert [len(r["tried"]) for r in rows] == [2, 2]
    for row in rows:
        best = max(row["tried"], key=lambda t: t["valid_hr@10"])["settings"]
        assert row["chosen"] == best and row["settings"]["ease_lambda"] == best["ease_lambda"]
        # Tried points write their results but no history plot; the reported run plots.
        for tried in row["tried"]:
            folder = pathlib.Path(tried["workdir"])
            assert (folder / "results.json").exists() and not (folder / "history.png").exists()
        assert (pathlib.Path(row["workdir"]) / "history.png").exists()


def test_a_configured_compilation_cache_is_kept(tmp_path):
    """The test run's cache (tests/conftest.py) stays; the suite would use WORKDIR/xla_cache."""
    configured = os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert xla.use_compilation_cache(tmp_path / "xla_cache") == configured
    assert jax.config.jax_compilation_cache_dir == configured


def test_the_table_puts_published_figures_beside_ours_on_ml_1m():
    metric = {"mean": 0.5, "std": 0.01}
    rows = [
        {"model": m, "protocol": p, "metrics": dict.fromkeys(compare.METRICS[p], metric),
         "fit_seconds": 1.0, "eval_seconds": 0.1, "tried": []}
        for m in ("ease", "gmf") for p in compare.PROTOCOLS
    ]  # fmt: skip
    ease, gmf = compare.table_rows(rows, "ncf:ml-1m")
    assert (
        ease["paper HR@10 / NDCG@10"] == "0.7192 / 0.4494" and gmf["paper HR@10 / NDCG@10"] == "n/a"
    )
    assert ease["HR@10 (sampled)"] == "0.5000 ± 0.0100"
    assert "paper HR@10 / NDCG@10" not in compare.table_rows(rows, "ncf:pinterest-20")[0]


def test_an_ncf_models_learning_rates_are_searched_in_one_vmapped_run(folder, tmp_path):
    grid = compare.points({"learning_rate": [0.001, 0.01], "reg_mf": [0.0, 0.01]})
    groups = compare.vmapped_groups("mf", grid)
    assert [[p["learning_rate"] for p in g] for g in groups] == [[0.001, 0.01]] * 2
    assert [g[0]["reg_mf"] for g in groups] == [0.0, 0.01]
    assert compare.vmapped_groups("ease", compare.points({"ease_lambda": [1, 2]})) == [
        [{"ease_lambda": 1}, {"ease_lambda": 2}]
    ]
    assert compare.vmapped_groups("itemknn", compare.points({"knn_k": [1, 2]})) == [
        [{"knn_k": 1}],
        [{"knn_k": 2}],
    ]
    ials = compare.points({"ials_alpha0": [0.1, 1.0], "ials_reg": [0.01, 0.03]})
    assert compare.vmapped_groups("ials", ials) == [[p] for p in ials]
    suite = compare.CompareConfig(dataset="ncf:tiny", data_dir=str(folder), models=("mf",),
                                  epochs=2, tune=True)  # fmt: skip
    grid = {"learning_rate": [0.001, 0.05]}
    sampled = compare.run_row("mf", "sampled", suite, tmp_path, compare.Runner(), grid)
    assert [t["settings"] for t in sampled["tried"]] == [
        {"learning_rate": 0.001},
        {"learning_rate": 0.05},
    ]
    assert {t["workdir"] for t in sampled["tried"]} == {
        str(tmp_path / "mf" / "sampled" / "tune" / "learning_rates=0.001,0.05")
    }
    runs = json.loads(pathlib.Path(sampled["tried"][0]["workdir"], "results.json").read_text())
    scores = [max(h["valid_hr@10"] for h in r["history"]) for r in runs["seeds"]]
    assert [t["valid_hr@10"] for t in sampled["tried"]] == scores
    assert sampled["settings"]["learning_rate"] == sampled["chosen"]["learning_rate"]
