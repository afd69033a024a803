"""Stage: results. The comparison's statistics over users, from scipy and statsmodels.

Input: per model, one value per test user (a metric averaged over the model's seeds), the users
in one order for every model. Output, per protocol and metric (`compare_models`):
  - a 95 % bootstrap interval of each model's mean (percentile bootstrap over users, seeded);
  - paired tests of every model against the best one (highest mean) and against a reference
    model (NeuMF): the paired t-test (primary, `scipy.stats.ttest_rel`) and the Wilcoxon
    signed-rank test (`scipy.stats.wilcoxon`), each family corrected by Holm's method
    (`statsmodels.stats.multitest.multipletests`);
  - the effect size: the mean paired difference with its 95 % t interval (`ttest_rel`'s
    `confidence_interval`) and Cohen's d_z (mean difference / its standard deviation);
  - "tied for best": the best model and every model whose corrected t-test against it is not
    significant at ALPHA.
Two models whose per-user values are equal for every user have no difference to test: their
p-values are 1 (scipy would return NaN for a zero-variance difference).
`protocol_agreement` gives Kendall's tau-b (`scipy.stats.kendalltau`) between the models'
orderings under two protocols and each model's rank under both (`scipy.stats.rankdata`).
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
LEVEL = 0.95
RESAMPLES = 2000
CORRECTION = "holm"


def bootstrap_ci(values, *, seed: int) -> list[float]:
    """[low, high] 95 % percentile-bootstrap interval of the mean of `values` (over users)."""
    rng = np.random.default_rng(seed)
    result = scipy.stats.bootstrap((np.asarray(values, np.float64),), np.mean, rng=rng,
                                   confidence_level=LEVEL, n_resamples=RESAMPLES,
                                   method="percentile")  # fmt: skip
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def paired(a, b) -> dict:
    """Model a against model b over users: the mean difference a - b with its 95 % t interval,
    Cohen's d_z, and the raw p-values of the paired t-test and the Wilcoxon test."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = a - b
    out = {"diff": float(diff.mean())}
    if not diff.any():  # equal on every user: nothing to test
        return out | {"diff_ci": [0.0, 0.0], "d_z": 0.0, "p_t": 1.0, "p_wilcoxon": 1.0}
    t = scipy.stats.ttest_rel(a, b)
    ci = t.confidence_interval(LEVEL)
    sd = diff.std(ddof=1)
    return out | {
        "diff_ci": [float(ci.low), float(ci.high)],
        "d_z": float(diff.mean() / sd) if sd > 0 else float("inf") * np.sign(diff.mean()),
        "p_t": float(t.pvalue),
        "p_wilcoxon": float(scipy.stats.wilcoxon(a, b).pvalue),
    }


def _flipped(test: dict) -> dict:
    """The test of (a, b) as the test of (b, a): the difference and its interval negated."""
    low, high = test["diff_ci"]
    return test | {"diff": -test["diff"], "diff_ci": [-high, -low], "d_z": -test["d_z"]}


def correct(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values of one family of tests."""
    if not pvalues:
        return []
    return [float(p) for p in multipletests(pvalues, alpha=ALPHA, method=CORRECTION)[1]]


def compare_models(per_user: dict, *, reference: str | None, seed: int) -> dict:
    """Statistics of one protocol and metric. per_user: {model: [users] values}.

    Returns {"best", "reference", "models": {model: {"mean", "ci", "tied_for_best",
    "vs_best": paired(model, best) + Holm-adjusted "p_t_holm", "p_wilcoxon_holm",
    "vs_reference": likewise}}}. One family is the tests against the best and against the
    reference together (each pair once)."""
    models = list(per_user)
    means = {m: float(np.mean(per_user[m])) for m in models}
    best = max(models, key=lambda m: means[m])  # the first listed wins a tie
    reference = reference if reference in per_user else None
    pairs = [(m, best) for m in models if m != best]
    if reference != best:  # else the tests against the best are those against the reference
        pairs += [(m, reference) for m in models if reference and m not in (reference, best)]
    tests = {pair: paired(per_user[pair[0]], per_user[pair[1]]) for pair in pairs}
    for kind in ("p_t", "p_wilcoxon"):
        adjusted = correct([tests[p][kind] for p in pairs])
        for pair, value in zip(pairs, adjusted, strict=True):
            tests[pair][f"{kind}_holm"] = value
    out = {}
    for i, m in enumerate(models):
        vs_best = tests.get((m, best))
        vs_reference = tests.get((m, reference))
        if m == best and reference and reference != best:  # the same test, seen from the best
            vs_reference = _flipped(tests[(reference, best)])
        tied = m == best or vs_best["p_t_holm"] >= ALPHA
        out[m] = {"mean": means[m], "ci": bootstrap_ci(per_user[m], seed=seed + i),
                  "tied_for_best": bool(tied), "vs_best": vs_best,
                  "vs_reference": vs_reference}  # fmt: skip
    return {"best": best, "reference": reference, "models": out}


def protocol_agreement(first: dict, second: dict) -> dict:
    """Kendall's tau-b between two orderings of the same models ({model: mean}, higher is
    better) and each model's rank (1 = best; ties share the lower rank) under both."""
    models = [m for m in first if m in second]
    if len(models) < 2:
        return {"tau": None, "p": None, "ranks": {}}
    x = np.array([first[m] for m in models])
    y = np.array([second[m] for m in models])
    tau = scipy.stats.kendalltau(x, y)
    rank = lambda v: scipy.stats.rankdata(-v, method="min").astype(int)
    ranks = {m: [int(a), int(b)] for m, a, b in zip(models, rank(x), rank(y), strict=True)}
    return {"tau": float(tau.statistic), "p": float(tau.pvalue), "ranks": ranks}
