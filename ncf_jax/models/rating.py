"""Stage: model. Explicit rating predictors: biased matrix factorisation and a rating MLP.

Both return predicted ratings (not logits). With `y_range=(low, high)` the raw output x is
squashed to `low + (high - low) * sigmoid(x)`; a range a little wider than the true one (the
default (0, 5.5) for 1-5 stars) keeps the extreme ratings reachable with finite outputs.
`y_range=None` returns x unchanged. Table names follow `ncf_jax.models.layers`, so
`--reg_mf` / `--reg_layers` L2 and row-sparse Adam apply as for the NCF models.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ncf_jax.config import NUM_FACTORS
from ncf_jax.models import layers

DEFAULT_Y_RANGE = (0.0, 5.5)


def squash(x: jnp.ndarray, y_range: tuple[float, float] | None) -> jnp.ndarray:
    """low + (high - low) * sigmoid(x), or x when y_range is None.

    >>> float(squash(jnp.array(0.0), (0.0, 5.0)))
    2.5
    """
    if y_range is None:
        return x
    low, high = y_range
    return low + (high - low) * nn.sigmoid(x)


def _check_y_range(y_range, name: str) -> None:
    if y_range is not None and not (len(y_range) == 2 and y_range[0] < y_range[1]):
        raise ValueError(f"{name}: y_range must be (low, high) with low < high, got {y_range}")


class BiasedMF(nn.Module):
    """rating = squash(<p_u, q_i> + b_u + b_i + b), Koren-style biased MF.

    Tables: `mf_user`, `mf_item` (num_factors wide, N(0, 0.01)), `bias_user`, `bias_item`; the
    global offset `bias` starts at 0, so with the default y_range the first prediction is 2.75.
    """

    num_users: int
    num_items: int
    num_factors: int = NUM_FACTORS
    y_range: tuple[float, float] | None = DEFAULT_Y_RANGE
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        _check_y_range(self.y_range, "BiasedMF")
        super().__post_init__()

    @nn.compact
    def __call__(self, users, items, *, train: bool = False):
        del train  # no dropout: a common signature with RatingMLP
        p = layers.embed(
            "mf_user", self.num_users, self.num_factors, users, table=layers.Table("users", "mf")
        )
        q = layers.embed(
            "mf_item", self.num_items, self.num_factors, items, table=layers.Table("items", "mf")
        )
        b_u = layers.embed("bias_user", self.num_users, 1, users, table=layers.Table("users"))[
            ..., 0
        ]
        b_i = layers.embed("bias_item", self.num_items, 1, items, table=layers.Table("items"))[
            ..., 0
        ]
        b = self.param("bias", nn.initializers.zeros, ())
        return squash(jnp.sum(p * q, axis=-1) + b_u + b_i + b, self.y_range)


class RatingMLP(nn.Module):
    """rating = squash(out(tower([p_u ; q_i ; side]))) with dropout after every dense layer.

    `layers` follows the NCF convention: layers[0] is the concatenated embedding width (each
    embedding is layers[0] // 2), layers[1:] the dense widths. `side` is an optional
    `[..., d]` float array of side features appended to the embeddings.
    """

    num_users: int
    num_items: int
    layers: Sequence[int] = (64, 32, 16, 8)
    dropout: float = 0.0
    y_range: tuple[float, float] | None = DEFAULT_Y_RANGE
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        layers.check_tower("RatingMLP", self.layers, self.dropout)
        _check_y_range(self.y_range, "RatingMLP")
        super().__post_init__()

    @nn.compact
    def __call__(self, users, items, side=None, *, train: bool = False):
        width = self.layers[0] // 2
        parts = [
            layers.embed(
                "mlp_user", self.num_users, width, users, table=layers.Table("users", "mlp")
            ),
            layers.embed(
                "mlp_item", self.num_items, width, items, table=layers.Table("items", "mlp")
            ),
        ]
        if side is not None:
            parts.append(jnp.asarray(side, jnp.float32))
        x = layers.tower(parts, self.layers[1:], self.dtype, dropout=self.dropout, train=train)
        return squash(layers.logit(x, self.dtype), self.y_range)
