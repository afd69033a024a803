"""Stage: model. A plain registry of model classes, and `create_model` from a ModelConfig.

To add a model, write a Flax module following `ncf_jax.models.layers`' conventions and add one
entry to `MODELS`. `create_model` passes it every ModelConfig field it declares.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ncf_jax.models.features import FeatureNCF
from ncf_jax.models.gmf import GMF
from ncf_jax.models.mf import MF
from ncf_jax.models.mlp import MLP
from ncf_jax.models.neumf import NeuMF, load_pretrained
from ncf_jax.models.rating import BiasedMF, RatingMLP
from ncf_jax.models.two_tower import TwoTower

MODELS = {"gmf": GMF, "mlp": MLP, "neumf": NeuMF, "mf": MF, "two_tower": TwoTower}
# Explicit-rating and side-feature models (ncf_jax.explicit, ncf_jax.ctr).
MODELS |= {"biased_mf": BiasedMF, "rating_mlp": RatingMLP, "feature_ncf": FeatureNCF}


def create_model(model_config, num_users: int, num_items: int):
    """The registered module for `model_config.model`, sized for the dataset."""
    if model_config.model not in MODELS:
        raise ValueError(f"unknown model {model_config.model!r}; registered: {sorted(MODELS)}")
    cls = MODELS[model_config.model]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {
        k: v for k, v in dataclasses.asdict(model_config).items() if k in names and k != "dtype"
    }
    if "dtype" in names:
        kwargs["dtype"] = jnp.dtype(model_config.dtype)
    return cls(num_users=num_users, num_items=num_items, **kwargs)


__all__ = [
    "GMF",
    "MF",
    "MLP",
    "MODELS",
    "BiasedMF",
    "FeatureNCF",
    "NeuMF",
    "RatingMLP",
    "TwoTower",
    "create_model",
    "load_pretrained",
]
