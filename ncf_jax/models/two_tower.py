"""Stage: model. The two-tower (DSSM-style) retrieval model: score = <user tower, item tower>.

Each tower is an embedding (`tower_user` / `tower_item`, following `layers`' naming) optionally
concatenated with fixed side features and followed by a ReLU MLP (`user_dense_i` / `item_dense_i`)
whose last layer is linear, so the output vector can take any sign. The towers are exposed as
methods, so every item vector can be exported once and retrieval is a matrix product:

    item_vecs = model.apply(params, jnp.arange(num_items), method="item_vectors")
    user_vecs = model.apply(params, users, method="user_vectors")
    scores = user_vecs @ item_vecs.T / model.temperature
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import optax

from ncf_jax.models import layers

# Cosine towers divide by max(|x|, MIN_NORM), so a zero vector stays zero. Through
# optax.safe_norm, not jnp.maximum(norm(x), MIN_NORM): JAX differentiates both branches of a
# max, and the norm's gradient at x = 0 is NaN. At x = 0 the gradient is then 1 / MIN_NORM,
# tf.math.l2_normalize's 1e6 (it clamps the squared norm at 1e-12), not 1e12.
MIN_NORM = 1e-6


class Tower(nn.Module):
    """ids -> vectors: an embedding, optional side features, then an MLP (linear last layer)."""

    num: int
    embed_dim: int
    hidden: Sequence[int] = ()
    features: Any = None  # [num, num_features] float array of fixed side features, or None
    normalise: bool = False
    kind: str = "user"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids):
        x = layers.embed(
            f"tower_{self.kind}", self.num, self.embed_dim, ids, table=layers.Table(f"{self.kind}s")
        )
        if self.features is not None:
            side = jnp.asarray(self.features, jnp.float32)[ids]
            x = jnp.concatenate([x, side], axis=-1)
        x = x.astype(self.dtype)
        for i, size in enumerate(self.hidden):
            dense = nn.Dense(
                size, kernel_init=layers.dense_init, dtype=self.dtype, name=f"dense_{i}"
            )
            x = dense(x)
            x = nn.relu(x) if i < len(self.hidden) - 1 else x
        x = x.astype(jnp.float32)
        if self.normalise:
            x = x / optax.safe_norm(x, MIN_NORM, axis=-1, keepdims=True)
        return x


class TwoTower(nn.Module):
    """score(u, i) = <user_vectors(u), item_vectors(i)> / temperature.

    With `cosine`, both vectors are L2-normalised, so scores lie in [-1/t, 1/t].
    `__call__(users, items)` follows the pointwise convention of `layers` (matching shapes in,
    that shape out), so NCF code paths accept the model; retrieval code uses the towers.

    >>> import jax
    >>> model = TwoTower(num_users=3, num_items=5, embed_dim=4, tower_layers=(8, 4))
    >>> params = model.init(jax.random.key(0), jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32))
    >>> model.apply(params, jnp.arange(3), method="user_vectors").shape
    (3, 4)
    >>> model.apply(params, jnp.arange(3), jnp.arange(5), method="score_matrix").shape
    (3, 5)
    """

    num_users: int
    num_items: int
    embed_dim: int = 16
    tower_layers: Sequence[int] = ()
    cosine: bool = False
    temperature: float = 1.0
    user_features: Any = None
    item_features: Any = None
    dtype: Any = jnp.float32

    def setup(self):
        common = dict(
            embed_dim=self.embed_dim,
            hidden=tuple(self.tower_layers),
            normalise=self.cosine,
            dtype=self.dtype,
        )
        # Children named user / item: parameters are user/tower_user/embedding, ... .
        self.user = Tower(self.num_users, features=self.user_features, kind="user", **common)
        self.item = Tower(self.num_items, features=self.item_features, kind="item", **common)

    def user_vectors(self, users):
        """[...] int32 user ids -> [..., dim] float32."""
        return self.user(users)

    def item_vectors(self, items):
        """[...] int32 item ids -> [..., dim] float32."""
        return self.item(items)

    def __call__(self, users, items):
        """Scores of (users, items) pairs of matching shape."""
        dot = jnp.sum(self.user(users) * self.item(items), axis=-1)
        return dot / self.temperature

    def score_candidates(self, users, items):
        """[b] users, [b, m] candidate items -> [b, m]; each user tower runs once."""
        dot = jnp.einsum("bd,bmd->bm", self.user(users), self.item(items))
        return dot / self.temperature

    def score_matrix(self, users, items):
        """[b] users x [m] items -> [b, m]: every user against every item (in-batch, full)."""
        return self.user(users) @ self.item(items).T / self.temperature
