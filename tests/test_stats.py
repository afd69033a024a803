"""The comparison's statistics over users: a planted better model (an oracle that puts the
held-out item first for a known share of users) is significantly better, two equally good
models are not; per-user values from `ncf_jax.commands.per_user` feed them; Kendall's tau and
ranks."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ncf_jax.commands import per_user, stats
from ncf_jax.data import synthetic

DATA = synthetic.planted(num_users=600, num_items=120, per_user=6, num_test_negatives=30)
SHARE = 0.2  # the oracle's share of users


def _random_table(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(DATA.num_users, DATA.num_items))


def _oracle(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`table` with each chosen user's held-out item scored above everything."""
    chosen = np.random.default_rng(7).random(DATA.num_users) < SHARE
    table = table.copy()
    users = DATA.test_users[chosen[DATA.test_users]]
    table[users, DATA.test_items[chosen[DATA.test_users]]] = 100.0
    return table, chosen[DATA.test_users]


def _sampled(table):
    score = lambda params, users, items: jnp.take_along_axis(params[users], items, axis=1)
    return per_user.sampled(score, jnp.asarray(table), DATA, k=10, ties="pessimistic")


def _full(table):
    score_all = lambda params, users: params[users]
    return per_user.full(score_all, jnp.asarray(table), DATA, k=10)


@pytest.mark.parametrize("values", [_sampled, _full], ids=["sampled", "full"])
def test_a_planted_better_model_is_significantly_better_and_a_twin_is_not(values):
    base = _random_table(0)
    oracle, chosen = _oracle(base)
    metric = "hr@10" if values is _sampled else "recall@10"
    ours = {"base": values(base)[metric], "oracle": values(oracle)[metric],
            "twin": values(_random_table(1))[metric]}  # fmt: skip
    assert np.all(ours["oracle"][chosen] == 1.0)  # the oracle hits every chosen user
    np.testing.assert_array_equal(ours["oracle"][~chosen], ours["base"][~chosen])
    result = stats.compare_models(ours, reference="base", seed=0)
    assert result["best"] == "oracle"
    models = result["models"]
    # The planted effect, derived by hand: the chosen users' misses become hits.
    want = np.sum(1.0 - ours["base"][chosen]) / len(chosen)
    vs = models["base"]["vs_best"]
    assert -vs["diff"] == pytest.approx(want) and vs["p_t_holm"] < 1e-6
    assert vs["diff_ci"][1] < 0 and not models["base"]["tied_for_best"]
    twin = models["twin"]["vs_reference"]  # two equally good (random) models
    assert twin["p_t_holm"] > stats.ALPHA and twin["diff_ci"][0] < 0 < twin["diff_ci"][1]
    assert not models["twin"]["tied_for_best"] and models["oracle"]["tied_for_best"]


def test_identical_models_are_not_different_and_both_tie_for_best():
    values = _sampled(_random_table(0))["hr@10"]
    result = stats.compare_models({"a": values, "b": values.copy()}, reference=None, seed=0)
    b = result["models"]["b"]
    assert b["vs_best"]["p_t_holm"] == 1.0 and b["vs_best"]["diff"] == 0.0 and b["tied_for_best"]


def test_the_tests_and_intervals_are_scipys_and_statsmodels():
    rng = np.random.default_rng(0)
    ours = {m: (rng.random(300) < p).astype(float) for m, p in (("a", 0.5), ("b", 0.45),
                                                                  ("neumf", 0.4))}  # fmt: skip
    result = stats.compare_models(ours, reference="neumf", seed=4)
    a, b, n = ours["a"], ours["b"], ours["neumf"]
    raw = [scipy.stats.ttest_rel(x, y).pvalue for x, y in ((b, a), (n, a), (b, n))]
    holm = np.minimum(1, np.maximum.accumulate(np.sort(raw) * [3, 2, 1]))[
        np.argsort(np.argsort(raw))
    ]
    models = result["models"]
    got = [models["b"]["vs_best"]["p_t_holm"], models["neumf"]["vs_best"]["p_t_holm"],
           models["b"]["vs_reference"]["p_t_holm"]]  # fmt: skip
    np.testing.assert_allclose(got, holm, rtol=1e-12)  # Holm by hand on scipy's p-values
    assert models["a"]["vs_reference"]["diff"] == pytest.approx((a - n).mean())
    assert models["a"]["vs_reference"]["p_t_holm"] == models["neumf"]["vs_best"]["p_t_holm"]
    # NeuMF the best: one family of two tests (against it), not each test twice.
    alone = stats.compare_models({"b": b, "x": n, "neumf": a}, reference="neumf", seed=4)
    assert alone["best"] == "neumf"
    p_b, p_x = (scipy.stats.ttest_rel(v, a).pvalue for v in (b, n))
    want = min(1, 2 * p_b) if p_b <= p_x else max(min(1, 2 * p_x), p_b)
    assert alone["models"]["b"]["vs_best"]["p_t_holm"] == pytest.approx(want, rel=1e-12)
    assert alone["models"]["b"]["vs_reference"] == alone["models"]["b"]["vs_best"]
    boot = scipy.stats.bootstrap((b,), np.mean, rng=np.random.default_rng(4 + 1),
                                 n_resamples=stats.RESAMPLES, method="percentile")  # fmt: skip
    ci = boot.confidence_interval
    assert models["b"]["ci"] == [ci.low, ci.high]


def test_kendall_tau_and_ranks_of_two_orderings():
    first = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    second = {"a": 0.09, "b": 0.06, "c": 0.07, "d": 0.05}  # b and c swap: 5 of 6 pairs agree
    agreement = stats.protocol_agreement(first, second)
    assert agreement["tau"] == pytest.approx((5 - 1) / 6)
    assert agreement["ranks"] == {"a": [1, 1], "b": [2, 3], "c": [3, 2], "d": [4, 4]}
