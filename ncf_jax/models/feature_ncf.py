"""Stage: model. NCF with side features: a click-probability MLP over ids and row features.

The input of the tower is `[p_u ; q_i ; continuous ; e_1(c_1) ; ... ; e_k(c_k)]`: user and
item embeddings, the min-max-scaled continuous features as they are, and one small embedding
per categorical feature (index 0 of each is the out-of-vocabulary bucket; see
`ncf_jax.data.clicks`). With no feature columns it is a plain NCF MLP with dropout, which is
the "without features" baseline. The output is a logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ncf_jax.models import layers


class FeatureNCF(nn.Module):
    """logit = out(tower([p_u ; q_i ; x_cont ; embeddings of x_cat])).

    layers: NCF convention, layers[0] is the concatenated user + item embedding width.
    num_continuous: width of the `continuous` input ([..., num_continuous] float32).
    categorical_sizes: table size of each categorical column (vocabulary + 1 OOV row); the
      `categorical` input is `[..., len(categorical_sizes)]` int32.
    categorical_dim: embedding width of every categorical feature.
    """

    num_users: int
    num_items: int
    layers: Sequence[int] = (64, 32, 16, 8)
    num_continuous: int = 0
    categorical_sizes: Sequence[int] = ()
    categorical_dim: int = 4
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        layers.check_tower("FeatureNCF", self.layers, self.dropout)
        super().__post_init__()

    @nn.compact
    def __call__(self, users, items, continuous=None, categorical=None, *, train: bool = False):
        width = self.layers[0] // 2
        parts = [
            layers.embed(
                "mlp_user", self.num_users, width, users, table=layers.Table("users", "mlp")
            ),
            layers.embed(
                "mlp_item", self.num_items, width, items, table=layers.Table("items", "mlp")
            ),
        ]
        if self.num_continuous:
            parts.append(jnp.asarray(continuous, jnp.float32))
        for j, size in enumerate(self.categorical_sizes):
            # Plain nn.Embed, no Table: indexed by feature codes, not by user or item ids.
            init = layers.embedding_init
            table = nn.Embed(size, self.categorical_dim, embedding_init=init, name=f"feat_{j}")
            parts.append(table(categorical[..., j]))
        x = layers.tower(parts, self.layers[1:], self.dtype, dropout=self.dropout, train=train)
        return layers.logit(x, self.dtype)
