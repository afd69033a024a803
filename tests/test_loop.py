"""The one loop runs a model that is not trained by gradient steps: a closed-form item-item model
fitted in one "epoch" gets the same evaluation, checkpoints, results, plot and `recommend` as
every trained model, with no code of its own beyond the fit."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import evaluate, history, loop, reporting
from ncf_jax.commands import recommend
from ncf_jax.config import DataConfig, EvalConfig, TrainConfig, option, resume_options
from ncf_jax.data import load_dataset, synthetic, write_ncf
from ncf_jax.models import MODELS, scoring


@dataclasses.dataclass(frozen=True)
class Cooccurrence:
    """scores = X[users] @ B, B = X^T X + lam I solved against X^T X (a ridge item-item model)."""

    num_users: int
    num_items: int
    lam: float = 1.0

    def score_all(self, params, users):
        return params["history"][users] @ params["weights"]


@dataclasses.dataclass(frozen=True)
class CooccurrenceConfig:
    model: str = option("cooccurrence", "Model name.")
    lam: float = option(1.0, "Ridge strength.")


def _fit_epoch(lam):
    def fit(state, x, key):
        gram = x.T @ x
        weights = jnp.linalg.solve(gram + lam * jnp.eye(gram.shape[0]), gram)
        loss = jnp.mean(jnp.square(x - x @ weights))  # the objective the solve minimises
        return loop.FitState(state.epoch + 1, {"weights": weights, "history": x}), loss

    return jax.jit(fit)


def _task(data, configs) -> loop.Task:
    model = Cooccurrence(data.num_users, data.num_items, configs["model"].lam)
    x = np.zeros((data.num_users, data.num_items), np.float32)
    x[data.train_users, data.train_items] = 1.0
    params = {"weights": jnp.zeros((data.num_items,) * 2), "history": jnp.asarray(x)}
    evaluators = evaluate.make_ranking_evaluators(
        *scoring.score_fns(model, data.num_items), data, configs["eval"]
    )
    return loop.Task(
        state=loop.FitState(jnp.zeros((), jnp.int32), params),
        train_epoch=_fit_epoch(model.lam),
        data=jnp.asarray(x),
        evaluate=evaluate.combine(evaluators),
        key=jax.random.key(0),
        select=history.selected("hr@5", "test"),
        epochs=configs["train"].epochs,
        results=reporting.describe_run("closed_form", data.name, configs),
        options=resume_options(configs),
    )


@pytest.fixture
def fitted(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "cooccurrence", Cooccurrence)
    write_ncf(synthetic.planted(num_users=40, num_items=50, num_test_negatives=20), tmp_path, "t")
    configs = {
        "data": DataConfig(dataset="ncf:t", data_dir=str(tmp_path)),
        "model": CooccurrenceConfig(),
        "train": TrainConfig(epochs=1),
        "eval": EvalConfig(top_k=5),
    }
    data = load_dataset(configs["data"])
    results = loop.run(_task(data, configs), tmp_path / "w")
    return data, configs, results, tmp_path / "w"


def test_a_closed_form_fit_gets_evaluation_checkpoints_results_and_plot(fitted):
    data, configs, results, workdir = fitted
    assert [h["epoch"] for h in results["history"]] == [1] and results["best_epoch"] == 1
    assert results["init"]["hr@5"] < 0.4 < results["best"]["hr@5"]  # planted clusters found
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["best"] == results["best"] and saved["task"] == "closed_form"
    assert (workdir / "history.png").exists() and (workdir / "checkpoints" / "best").is_dir()
    again = loop.run(_task(data, configs), workdir)  # resumes: nothing left to fit
    assert again["history"] == results["history"]


def test_recommend_reads_the_fitted_run_back(fitted):
    data, _, _, workdir = fitted
    run = recommend.load_run(workdir)
    (rec,) = recommend.recommend(run, [data.user_ids[3]], 4)
    x = np.zeros((data.num_users, data.num_items), np.float32)
    x[data.train_users, data.train_items] = 1.0
    gram = x.T @ x
    scores = (x @ np.linalg.solve(gram + np.eye(len(gram)), gram))[3]  # NumPy reference
    scores[x[3] > 0] = -np.inf
    want = np.argsort(-scores, kind="stable")[:4]
    assert rec["items"] == data.item_ids[want].tolist()
