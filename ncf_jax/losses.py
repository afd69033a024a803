"""Stage: loss. Pointwise losses with optax-style signatures, and the NCF L2 penalties.

L2 on embeddings is applied to the rows looked up in the batch (weighted like the samples),
not to whole tables: that keeps its cost O(batch) and makes it identical for dense and
row-sparse optimisers. Dense layers are penalised whole, as Keras' kernel_regularizer does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w); 0 when every weight is 0 (a fully padded batch)."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def bce_with_logits(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean binary cross-entropy of `[batch]` logits against 0/1 labels."""
    return weighted_mean(optax.sigmoid_binary_cross_entropy(logits, labels), weights)


def mse(predictions: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean squared error."""
    return weighted_mean(jnp.square(predictions - targets), weights)


def l2_penalty(params, users, items, weights, model_config) -> jax.Array:
    """The NCF regulariser for a batch: reg_mf / reg_layers[0] on the looked-up embedding
    rows of `mf_*` / `mlp_*` tables, reg_layers[i + 1] on the kernel of `mlp_dense_i`.

    Args:
      params: Flax variables `{"params": ...}`; tables follow `ncf_jax.models.layers` naming.
      users, items: [batch] int32 ids indexing those tables.
      weights: [batch] float32 sample weights (0 for padding).
      model_config: a `ncf_jax.config.ModelConfig`.
    """
    total = jnp.zeros((), jnp.float32)
    for name, leaf in params["params"].items():
        if not isinstance(leaf, dict):
            continue
        if "embedding" in leaf:
            coef = model_config.reg_mf if name.startswith("mf_") else model_config.layer_reg(0)
            if coef and name.startswith(("mf_", "mlp_")):
                ids = users if name.endswith("_user") else items
                rows = leaf["embedding"][ids]
                total += coef * weighted_mean(jnp.sum(jnp.square(rows), axis=-1), weights)
        elif name.startswith("mlp_dense_"):
            coef = model_config.layer_reg(int(name.rsplit("_", 1)[1]) + 1)
            if coef:
                total += coef * jnp.sum(jnp.square(leaf["kernel"]))
    return total
