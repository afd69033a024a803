"""Stage: model (baselines). Non-neural recommenders fitted in closed form or by alternating
solves, for the baselines of Dacrema et al. 2019 ("Are we really making much progress?").

Every module offers `fit(indptr, indices, *, num_users, num_items, <hyperparameters>, key=None)
-> params` from a CSR of binary training interactions and a jitted `score(params, users) ->
[len(users), num_items] float32`, so any of them plugs into `ncf_jax.evaluate`. No module
depends on a driver. Modules: toppop, itemknn, userknn, rp3beta, puresvd, slim (ElasticNet by
FISTA), ease (plus `fit_grid` / `score_grid` / `grid_member`), ials (plus `prepare`, `init`,
`sweep`, `objective`).
"""

from ncf_jax.baselines import ease, ials, itemknn, puresvd, rp3beta, slim, toppop, userknn

MODELS = {
    "toppop": toppop,
    "itemknn": itemknn,
    "userknn": userknn,
    "rp3beta": rp3beta,
    "puresvd": puresvd,
    "slim": slim,
    "ease": ease,
    "ials": ials,
}

__all__ = ["MODELS", "ease", "ials", "itemknn", "puresvd", "rp3beta", "slim", "toppop", "userknn"]
