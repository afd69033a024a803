"""Stage: model. A plain registry of model classes, and `create_model` from a task's model config.

To add a model, write a Flax module following `ncf_jax.models.layers`' conventions and add one
entry to `MODELS`. `create_model` passes it every model-config field it declares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax.numpy as jnp

from ncf_jax import baselines
from ncf_jax.errors import UsageError
from ncf_jax.models.classic import Classic
from ncf_jax.models.feature_ncf import FeatureNCF
from ncf_jax.models.gmf import GMF
from ncf_jax.models.mf import MF
from ncf_jax.models.mlp import MLP
from ncf_jax.models.neumf import NeuMF, load_pretrained
from ncf_jax.models.rating import BiasedMF, RatingMLP
from ncf_jax.models.two_tower import TwoTower

MODELS = {"gmf": GMF, "mlp": MLP, "neumf": NeuMF, "mf": MF, "two_tower": TwoTower}
# Explicit-rating and side-feature models (ncf_jax.tasks.rating, ncf_jax.tasks.clicks).
MODELS |= {"biased_mf": BiasedMF, "rating_mlp": RatingMLP, "feature_ncf": FeatureNCF}
# Classic baselines fitted by solves (ncf_jax.tasks.classic): scored through `score_all`.
MODELS |= {name: Classic for name in baselines.MODELS}


def create_model(model_config, num_users: int, num_items: int):
    """The registered module for `model_config.model`, sized for the dataset.

    `model_config` is any task's model config, or its saved dict (as `recommend` reads it back):
    the module gets every field it declares.
    """
    values = model_config if isinstance(model_config, Mapping) else dataclasses.asdict(model_config)
    if values["model"] not in MODELS:
        raise UsageError(f"unknown model {values['model']!r}; registered: {sorted(MODELS)}")
    cls = MODELS[values["model"]]
    names = {f.name for f in dataclasses.fields(cls)} - {"num_users", "num_items"}
    as_field = lambda v: tuple(v) if isinstance(v, list) else v  # JSON lists back to tuples
    kwargs = {k: as_field(v) for k, v in values.items() if k in names and k != "dtype"}
    if "dtype" in names:
        kwargs["dtype"] = jnp.dtype(values.get("dtype", "float32"))
    return cls(num_users=num_users, num_items=num_items, **kwargs)


__all__ = [
    "GMF",
    "MF",
    "MLP",
    "MODELS",
    "BiasedMF",
    "Classic",
    "FeatureNCF",
    "NeuMF",
    "RatingMLP",
    "TwoTower",
    "create_model",
    "load_pretrained",
]
