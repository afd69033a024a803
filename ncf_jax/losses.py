"""Stage: loss. Pointwise losses with optax-style signatures, and the NCF L2 penalties.

L2 on embeddings is applied to the rows looked up in the batch (weighted like the samples),
not to whole tables: that keeps its cost O(batch) and makes it identical for dense and
row-sparse optimisers. Dense layers are penalised whole, as Keras' kernel_regularizer does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ncf_jax.models.layers import LOOKED_UP, PENALISED


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w); 0 when every weight is 0 (a fully padded batch)."""
    weights = weights.astype(values.dtype)  # bool padding masks count as 0 / 1
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def bce_with_logits(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean binary cross-entropy of `[batch]` logits against 0/1 labels (bool or
    float: the epoch builders keep them as bool)."""
    labels = labels.astype(logits.dtype)
    return weighted_mean(optax.sigmoid_binary_cross_entropy(logits, labels), weights)


def bpr(logits: jax.Array, weights: jax.Array) -> jax.Array:
    """Bayesian personalised ranking (Rendle et al., UAI 2009): -log sigmoid(s_pos - s_neg) of
    each positive against each of its own sampled negatives.

    Args:
      logits: [..., 1 + num_neg] scores of one positive (column 0) and its negatives, as the
        grouped batches (`batching.grouped_batches`) lay them out.
      weights: [...] row weights (0 for padding).

    Returns:
      The weighted mean over rows of the mean over the row's negatives.
    """
    per_row = -jnp.mean(jax.nn.log_sigmoid(logits[..., :1] - logits[..., 1:]), axis=-1)
    return weighted_mean(per_row, weights)


def mse(predictions: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean squared error."""
    return weighted_mean(jnp.square(predictions - targets), weights)


def layer_coefficient(reg_layers: tuple, i: int) -> float:
    """L2 coefficient of MLP layer i (0 = the embedding rows): one value broadcasts."""
    return reg_layers[0] if len(reg_layers) == 1 else reg_layers[i]


def l2_penalty(params, batch, weights, *, tables, reg_mf: float, reg_layers: tuple) -> jax.Array:
    """The NCF regulariser for a batch: reg_mf / reg_layers[0] on the looked-up rows of the
    tables labelled "mf" / "mlp", reg_layers[i + 1] on the kernel of `mlp_dense_i` (the layers
    `ncf_jax.models.layers.tower` builds).

    Args:
      params: Flax variables `{"params": ...}`. A `looked_up` collection (row-sparse training)
        gives rows already looked up; its tables need not be in `params`. A `penalised` one
        gives the rows to penalise instead (`ncf_jax.tables.packing`).
      batch: the batch, holding the ids ("users", "items") each table is indexed by.
      weights: [batch] float32 sample weights (0 for padding).
      tables: {path: Table} of the model (`layers.table_labels`); None when the model has no
        table to regularise (then reg_mf and reg_layers[0] must be 0).
      reg_mf, reg_layers: the coefficients; one reg_layers value broadcasts.
    """
    coefs = {"mf": reg_mf, "mlp": layer_coefficient(reg_layers, 0)}
    if tables is None and any(coefs.values()):
        raise ValueError("embedding L2 needs tables=layers.table_labels(model, ...)")
    tables = tables or {}
    if any(len(path) != 3 and t.l2 for path, t in tables.items()):
        raise ValueError("embedding L2 reaches tables of the model's top level only")
    total = jnp.zeros((), jnp.float32)
    looked_up = params.get(PENALISED, params.get(LOOKED_UP, {}))
    for name, leaf in (looked_up | params.get("params", {})).items():
        if not isinstance(leaf, dict):
            continue
        table = tables.get(("params", name, "embedding"))
        if table is not None:
            coef = coefs.get(table.l2, 0.0)
            if coef:
                # row-sparse training passes the rows it looked up, not the table
                rows = looked_up[name]["embedding"] if name in looked_up else None
                rows = leaf["embedding"][batch[table.ids]] if rows is None else rows
                total += coef * weighted_mean(jnp.sum(jnp.square(rows), axis=-1), weights)
        elif name.startswith("mlp_dense_"):
            coef = layer_coefficient(reg_layers, int(name.rsplit("_", 1)[1]) + 1)
            if coef:
                total += coef * jnp.sum(jnp.square(leaf["kernel"]))
    return total


# ------------------------------------------------------------------ candidate (retrieval) losses
def sampled_bce(logits: jax.Array, weights: jax.Array) -> jax.Array:
    """BCE over each row's candidates: column 0 is the positive, the rest sampled negatives.

    Args:
      logits: [batch, 1 + num_negatives] float scores.
      weights: [batch] float32 row weights (0 for padding).

    Returns:
      The weighted mean over rows of the mean BCE over the row's 1 + num_negatives candidates
      (equal to pointwise BCE over the flattened candidates, as the reference notebook trains).
    """
    labels = jnp.zeros(logits.shape, logits.dtype).at[:, 0].set(1.0)
    per_row = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)
    return weighted_mean(per_row, weights)


def sampled_softmax(logits: jax.Array, weights: jax.Array) -> jax.Array:
    """Softmax cross-entropy of the positive (column 0) against its sampled negatives.

    logits: [batch, 1 + num_negatives]; weights: [batch]. Returns the weighted mean of
    logsumexp(row) - row[0].
    """
    per_row = jax.nn.logsumexp(logits, axis=-1) - logits[:, 0]
    return weighted_mean(per_row, weights)


def in_batch_softmax(
    logits: jax.Array, items: jax.Array, log_q: jax.Array | None, weights: jax.Array
) -> jax.Array:
    """In-batch sampled softmax: row i's positive is item i, the other rows' positives are its
    negatives; log-Q correction (Yi et al., RecSys 2019) subtracts each column's log sampling
    probability, because popular items appear as in-batch negatives more often than uniform ones.

    Args:
      logits: [batch, batch] scores, logits[i, j] = score(user_i, item_j).
      items: [batch] int32 positive item of each row; a column holding the row's own item
        (the same positive twice in a batch) is masked out, except the diagonal.
      log_q: [batch] log probability that item_j is drawn as a positive (its training share),
        or None for no correction.
      weights: [batch] row weights; a weight-0 (padding) row is neither a query nor a negative.

    Returns:
      Weighted mean over rows of logsumexp(corrected row) - corrected[i, i].
    """
    n = logits.shape[0]
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = (items[:, None] == items[None, :]) & ~jnp.eye(n, dtype=bool)
    # The diagonal always stays, so a padding row's loss is finite (then weighted by 0).
    keep = (~same & (weights[None, :] > 0)) | jnp.eye(n, dtype=bool)
    logits = jnp.where(keep, logits, -jnp.inf)
    per_row = jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)
    return weighted_mean(per_row, weights)
