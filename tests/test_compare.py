"""The classic task through the one loop (EASE^R against a NumPy solve, iALS's objective per
sweep), `recommend` on a saved classic run, and the comparison suite end to end (search,
refit, per-user metrics, statistics against scipy on the saved arrays, vmapped trials)."""

import itertools
import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ncf_jax import baselines, checkpoint, evaluate, xla
from ncf_jax.commands import compare, compare_report, recommend
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic, write_ncf
from ncf_jax.errors import UsageError
from ncf_jax.models import create_model, scoring
from ncf_jax.tasks import classic, configs_from_options, ncf, train_and_evaluate


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


@pytest.fixture(scope="module")
def suite_run(folder, tmp_path_factory):
    """experiments.compare on tiny data: TopPop (no space), EASE^R (2 trials in one run) and
    NeuMF (2 trials as vmapped replicas, refitted with 2 seeds)."""
    workdir = tmp_path_factory.mktemp("suite")
    command = [sys.executable, "-m", "experiments.compare", "--dataset=ncf:tiny",
               f"--data_dir={folder}", f"--workdir={workdir}", "--models=toppop,ease,neumf",
               "--trials=2", "--trials_per_run=2", "--epochs=2", "--num_seeds=2"]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return workdir, json.loads((workdir / "compare.json").read_text())


def _arrays(workdir, row):
    with np.load(workdir / row["per_user"]) as saved:
        return {k: saved[k] for k in saved.files}


def _evaluator_metrics(run_dir, replica: int, replicas: int, protocol: str) -> dict:
    """The evaluators' own test metrics of a saved run's last epoch under `protocol`."""
    state, meta = checkpoint.restore(pathlib.Path(run_dir) / "checkpoints" / "latest")
    config = meta["results"]["config"]
    configs = configs_from_options(
        ncf, {"dataset": "ncf:tiny", "data_dir": config["data"]["data_dir"]}
    )
    data = ncf.load_data(configs)
    params = (
        state["params"] if replicas == 1 else jax.tree.map(lambda x: x[replica], state["params"])
    )
    model = create_model(config["model"], data.num_users, data.num_items)
    fns = scoring.score_fns(model, data.num_items)
    eval_config = EvalConfig(top_k=10, protocol=protocol)
    run = evaluate.make_ranking_evaluators(*fns, data, eval_config)["test"]
    return {k: float(v) for k, v in run(jax.tree.map(jnp.asarray, params), None).items()}


def test_compare_searches_refits_and_saves_per_user_metrics(suite_run, folder):
    workdir, report = suite_run
    rows = {(r["model"], r["protocol"]): r for r in report["rows"]}
    assert set(rows) == {(m, p) for m in ("toppop", "ease", "neumf") for p in compare.PROTOCOLS}
    assert rows["toppop", "sampled"]["search"] is None  # nothing to search
    s = rows["neumf", "sampled"]["search"]
    assert s == rows["neumf", "full"]["search"]  # one search, one refit, tested both ways
    assert s["trials"] == 2 and len({t["workdir"] for t in s["tried"]}) == 1  # one run
    final = json.loads(
        pathlib.Path(rows["neumf", "sampled"]["workdir"], "results.json").read_text()
    )
    config = final["config"]
    assert config["data"]["validation"] is False  # refitted on training + validation
    assert config["train"]["epochs"] == s["chosen_epoch"] == rows["neumf", "full"]["epochs"]
    assert config["train"]["learning_rate"] == s["chosen"]["learning_rate"]
    for protocol in compare.PROTOCOLS:
        values = _arrays(workdir, rows["neumf", protocol])
        assert values["seeds"].tolist() == [0, 1] and values["ndcg@10"].shape == (2, 40)
        # Each seed's per-user values average to that seed's metrics: the run's own last epoch
        # (sampled, the search's protocol) and the full-ranking evaluator on its checkpoint.
        for seed, replica in enumerate(final["seeds"]):
            want = replica["history"][-1]
            if protocol == "full":
                want = _evaluator_metrics(rows["neumf", protocol]["workdir"], seed, 2, "full")
            for metric in compare.METRICS[protocol]:
                assert values[metric][seed].mean() == pytest.approx(want[metric], abs=1e-6)
    suite = compare.CompareConfig(dataset="ncf:tiny", data_dir=str(folder),
                                  models=("toppop", "ease", "neumf"), trials=2,
                                  trials_per_run=2, epochs=2, num_seeds=2)  # fmt: skip
    assert compare.run_suite(suite, workdir)["ran"] == []  # every run and trial was complete
    assert (
        "| neumf |" in (workdir / "compare.md").read_text() and (workdir / "compare.png").exists()
    )


def test_the_reported_statistics_are_scipys_on_the_saved_arrays(suite_run):
    workdir, report = suite_run
    stat = report["statistics"]
    for protocol, metric in (("sampled", "hr@10"), ("full", "recall@10")):
        rows = [r for r in report["rows"] if r["protocol"] == protocol]
        users = {r["model"]: _arrays(workdir, r)[metric].mean(axis=0) for r in rows}
        result = stat[protocol][metric]
        best = max(users, key=lambda m: users[m].mean())
        assert result["best"] == best
        for i, (model, values) in enumerate(users.items()):
            entry = result["models"][model]
            assert entry["mean"] == pytest.approx(values.mean())
            boot = scipy.stats.bootstrap((values,), np.mean, rng=np.random.default_rng(i),
                                         method="percentile", n_resamples=2000)  # fmt: skip
            ci = boot.confidence_interval
            assert entry["ci"] == pytest.approx([ci.low, ci.high])
            if model != best and np.any(values != users[best]):
                t = scipy.stats.ttest_rel(values, users[best])
                assert entry["vs_best"]["p_t"] == pytest.approx(t.pvalue)
                assert entry["vs_best"]["diff_ci"] == pytest.approx(list(t.confidence_interval()))
                w = scipy.stats.wilcoxon(values, users[best])
                assert entry["vs_best"]["p_wilcoxon"] == pytest.approx(w.pvalue)
    for name, (a, b) in compare_report.AGREEMENT.items():
        means = lambda p, m: [stat[p][m]["models"][x]["mean"] for x in ("toppop", "ease", "neumf")]
        tau = scipy.stats.kendalltau(means("sampled", a), means("full", b)).statistic
        assert stat["agreement"][name]["tau"] == pytest.approx(tau)


def test_a_batch_of_vmapped_trials_scores_as_the_trials_one_by_one(folder, tmp_path):
    """Trials that differ only in the learning rate, trained as replicas of one run, get the
    validation scores and epochs of the same trials run one at a time (the tolerance of the
    --learning_rates test)."""
    suite = compare.CompareConfig(dataset="ncf:tiny", data_dir=str(folder), models=("mf",),
                                  epochs=2)  # fmt: skip
    point = {"num_factors": 8, "reg_mf": 1e-4, "num_neg": 2}
    trials = [types.SimpleNamespace(number=n, params=point | {"learning_rate": rate})
              for n, rate in enumerate((0.002, 0.05))]  # fmt: skip
    run = compare.Runner()
    score = lambda home, batch: compare.trial_evaluator("mf", "sampled", suite, home, run)(batch)
    together = score(tmp_path / "together", trials)
    alone = [score(tmp_path / f"alone{t.number}", [t])[0] for t in trials]
    assert len(set(together[0].attrs["workdir"] for _ in together)) == 1
    assert together[0].value != together[1].value  # the rates differ, so the scores do
    for got, want in zip(together, alone, strict=True):
        assert got.value == pytest.approx(want.value, rel=1e-4, abs=1e-5)
        assert got.attrs["epoch"] == want.attrs["epoch"]


def test_a_configured_compilation_cache_is_kept(tmp_path):
    """The test run's cache (tests/conftest.py) stays; the suite would use WORKDIR/xla_cache."""
    configured = os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert xla.use_compilation_cache(tmp_path / "xla_cache") == configured
    assert jax.config.jax_compilation_cache_dir == configured


def test_the_table_puts_published_figures_beside_ours_on_ml_1m():
    entry = {"mean": 0.5, "ci": [0.45, 0.55], "tied_for_best": True}
    stat = {p: {m: {"models": {"ease": entry, "gmf": entry | {"tied_for_best": False}}}
                for m in compare.METRICS[p]} for p in compare.PROTOCOLS}  # fmt: skip
    rows = [{"model": m, "protocol": p, "fit_seconds": 1.0, "search": None}
            for m in ("ease", "gmf") for p in compare.PROTOCOLS]  # fmt: skip
    ease, gmf = compare_report.main_table(rows, stat, compare_report.published("ncf:ml-1m"))
    assert ease["paper HR@10 / NDCG@10"] == "0.7192 / 0.4494"
    assert gmf["paper HR@10 / NDCG@10"] == "n/a"
    assert ease["HR@10 (sampled)"] == "**0.5000 [0.4500, 0.5500]**"
    assert gmf["HR@10 (sampled)"] == "0.5000 [0.4500, 0.5500]"
    assert compare_report.published("ncf:pinterest-20") == {}
