"""Stage: model. The classic baselines of `ncf_jax.baselines` as registered models, so that every
command that rebuilds a model from a saved run (`recommend`) scores them too.

A baseline is fitted by its task (`ncf_jax.tasks.classic`), not by `init`/`apply`; what the
scoring side needs is `score_all(params, users) -> [len(users), num_items]`, which
`ncf_jax.models.scoring` then gathers from for sampled candidates.
"""

from __future__ import annotations

import dataclasses

from ncf_jax import baselines


@dataclasses.dataclass(frozen=True)
class Classic:
    """A fitted baseline: `model` names its module in `ncf_jax.baselines.MODELS`."""

    num_users: int
    num_items: int
    model: str = "ease"

    def score_all(self, params, users):
        """[c] int32 user ids -> [c, num_items] float32 scores of every item."""
        return baselines.MODELS[self.model].score(params, users)
