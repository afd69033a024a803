"""Stage: model. A trained GMF or MLP as the start of a model: the NCF authors' Keras file
(`ncf_jax.models.keras`) or the best model of one of our WORKDIRs (`ncf_jax.checkpoint`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncf_jax import checkpoint
from ncf_jax.errors import DataError
from ncf_jax.models import keras


def load(path: str, kind: str, like: dict) -> dict:
    """{"params": ...} of the trained "gmf" or "mlp" at `path`; `like` is that model's fresh
    {"params": ...}, whose shapes it must have (DataError naming the file otherwise)."""
    if keras.is_keras_file(path):
        return keras.load(path, kind, like)
    params, _ = checkpoint.restore_params(path)
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
    if shapes(params) != shapes(like):
        raise DataError(path, f"its model's parameters {shapes(params['params'])} do not fit "
                        f"this {kind.upper()}'s {shapes(like['params'])}")  # fmt: skip
    return jax.tree.map(jnp.asarray, params)
