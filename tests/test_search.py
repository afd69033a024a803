"""The comparison's search: batches that share all but one parameter, the same budget, resume
after a kill without re-running a finished trial, the chosen point and its edge flags."""

import math
import pathlib

import optuna
import pytest

from ncf_jax.commands import search

SPACE = search.SPACES["neumf"]


def _score(params: dict) -> float:
    """A smooth objective with its optimum inside the space (lr 3e-3, reg_mf 1e-5)."""
    return (
        -(math.log10(params["learning_rate"] / 3e-3) ** 2)
        - (math.log10(params["reg_mf"] / 1e-5) ** 2) / 10
    )


class Evaluator:
    """Records every trial it runs; raises KeyboardInterrupt (a kill) on call `die_on`."""

    def __init__(self, die_on: int | None = None):
        self.calls, self.die_on = [], die_on

    def __call__(self, trials):
        if len(self.calls) == self.die_on:
            raise KeyboardInterrupt
        self.calls.append([t.number for t in trials])
        return [search.Outcome(_score(t.params), {"epoch": 1 + t.number % 3}) for t in trials]


def _search(path, evaluate, trials=10):
    study = search.open_study(path, "neumf/sampled", seed=3)
    return search.run_search(study, SPACE, evaluate, trials=trials, per_run=4,
                             shared="learning_rate", seed=3)  # fmt: skip


def test_a_batch_shares_every_value_but_the_shared_one(tmp_path):
    evaluate = Evaluator()
    study = _search(tmp_path / "s.db", evaluate)
    assert evaluate.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # the budget, 4 a run
    by_batch = {}
    for trial in study.trials:
        by_batch.setdefault(trial.user_attrs["batch"], []).append(trial.params)
    for batch in by_batch.values():
        rest = [{k: v for k, v in p.items() if k != "learning_rate"} for p in batch]
        assert all(r == rest[0] for r in rest)
        assert len({p["learning_rate"] for p in batch}) == len(batch)
    assert len({p[0]["reg_mf"] for p in by_batch.values()}) == 3  # batches differ


def test_a_search_resumed_after_a_kill_reruns_no_finished_trial(tmp_path):
    whole = _search(tmp_path / "whole.db", Evaluator(), trials=14)
    killed = Evaluator(die_on=1)  # one batch finishes, the second is cut off while running
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path / "cut.db", killed, trials=14)
    states = [t.state for t in search.open_study(tmp_path / "cut.db", "neumf/sampled", 3).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4 + [optuna.trial.TrialState.RUNNING] * 4
    resumed = Evaluator()
    study = _search(tmp_path / "cut.db", resumed, trials=14)
    # The cut-off batch with its own stored values, then new batches; no finished trial.
    assert resumed.calls == [[4, 5, 6, 7], [8, 9, 10, 11], [12, 13]]
    assert [t.params for t in study.trials] == [t.params for t in whole.trials]
    assert study.best_trial.params == whole.best_trial.params
    assert search.summary(study, SPACE, 1.0)["chosen_epoch"] == whole.best_trial.user_attrs["epoch"]
    more = Evaluator()
    _search(tmp_path / "cut.db", more, trials=14)  # complete: nothing runs
    assert more.calls == []


def test_a_model_without_a_shared_parameter_runs_one_trial_a_run(tmp_path):
    evaluate = lambda trials: [search.Outcome(-t.params["knn_k"], {}) for t in trials]
    study = search.open_study(tmp_path / "s.db", "itemknn/full", seed=0)
    sizes = []
    counted = lambda trials: sizes.append(len(trials)) or evaluate(trials)
    search.run_search(study, search.SPACES["itemknn"], counted, trials=5, per_run=4,
                      shared=None, seed=0)  # fmt: skip
    assert sizes == [1] * 5 and len(study.trials) == 5


def test_failed_trials_count_towards_the_budget_and_are_never_chosen(tmp_path):
    study = search.open_study(tmp_path / "s.db", "ease/sampled", seed=0)
    outcome = lambda t: search.Outcome(None if t.number == 0 else t.number, {})
    search.run_search(study, search.SPACES["ease"], lambda ts: [outcome(t) for t in ts],
                      trials=6, per_run=3, shared="ease_lambda", seed=0)  # fmt: skip
    summary = search.summary(study, search.SPACES["ease"], 0.0)
    assert (summary["trials"], summary["failed"], summary["chosen_trial"]) == (6, 1, 5)


def test_edges_are_flagged_on_the_log_scale():
    rate = search.SPACES["gmf"]["learning_rate"]  # 1e-4 .. 1e-2: 5 % of the log range is x1.26
    assert search.at_edge(1.2e-4, rate) and search.at_edge(0.0085, rate)
    assert not search.at_edge(1.3e-4, rate) and not search.at_edge(1e-3, rate)
    assert search.at_edge(8, search.SPACES["gmf"]["num_factors"])
    assert not search.at_edge(16, search.SPACES["gmf"]["num_factors"])
    assert search.at_edge(5, search.SPACES["itemknn"]["knn_k"])


def test_every_model_declares_a_space_and_puresvd_is_clipped_to_the_data():
    from ncf_jax.commands import compare

    assert set(search.SPACES) == set(compare.CLASSIC + compare.NEURAL)
    assert set(search.SHARED) <= set(search.SPACES)
    assert search.space_for("puresvd", 40, 30)["svd_factors"].high == 29


def test_the_docs_state_every_models_space_as_the_code_does():
    docs = pathlib.Path(__file__).parents[1] / "docs" / "comparison.md"
    text = docs.read_text()
    missing = [line for line in search.space_table() if line not in text]
    assert not missing, f"docs/comparison.md lacks (paste search.space_table()): {missing}"
