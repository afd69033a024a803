"""Stage: model. Score functions of any registered model, as the evaluators and `recommend` take
them: `score_fn(params, users [c], items [c, m]) -> [c, m]` and `score_all_fn(params, users [c])
-> [c, num_items]`.

Three kinds of model: two-tower models (`user_vectors` and `score_matrix`: the catalogue is one
matrix product), pointwise Flax models (`apply(params, users, items)` on broadcast-compatible
ids: `[c, 1]` against `[c, m]`, so per-user work runs once per user), and models fitted by solves
(`score_all(params, users)`, e.g. an item-item weight matrix), whose candidates are gathered from
the catalogue's scores.
"""

from __future__ import annotations

import jax.numpy as jnp


def has_towers(model) -> bool:
    """Whether `model` exposes user / item towers (so full ranking is one matrix product)."""
    return hasattr(model, "user_vectors") and hasattr(model, "score_matrix")


def make_score_fn(apply_fn):
    """score_fn(params, users [c], items [c, m]) -> [c, m] for any pointwise model."""

    def score_fn(params, users, items):
        return apply_fn(params, users[:, None], items)

    return score_fn


def make_score_all_fn(apply_fn, num_items: int):
    """score_all_fn(params, users [c]) -> [c, num_items]: every item, for full ranking."""
    score_fn = make_score_fn(apply_fn)

    def score_all_fn(params, users):
        items = jnp.broadcast_to(jnp.arange(num_items, dtype=jnp.int32), (len(users), num_items))
        return score_fn(params, users, items)

    return score_all_fn


def score_fns(model, num_items: int, apply_fn=None):
    """(score_fn, score_all_fn) of `model`; `apply_fn` (default `model.apply`) may wrap it, e.g.
    to spread the ids over a device mesh."""
    if hasattr(model, "score_all"):
        score_all_fn = model.score_all

        def gathered(params, users, items):
            return jnp.take_along_axis(score_all_fn(params, users), items, axis=1)

        return gathered, score_all_fn
    if not has_towers(model):
        apply_fn = apply_fn or model.apply
        return make_score_fn(apply_fn), make_score_all_fn(apply_fn, num_items)
    all_items = jnp.arange(num_items, dtype=jnp.int32)

    def score_fn(params, users, items):
        return model.apply(params, users, items, method="score_candidates")

    def score_all_fn(params, users):
        return model.apply(params, users, all_items, method="score_matrix")

    return score_fn, score_all_fn
