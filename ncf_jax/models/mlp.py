"""Stage: model. The NCF multi-layer perceptron (He et al., WWW 2017, section 3.3)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ncf_jax.models import layers


class MLP(nn.Module):
    """Concatenated user/item embeddings of `layers[0] // 2` each -> ReLU tower `layers[1:]`.

    `layers` follows the authors' flag: its first entry is the width of the concatenated
    embedding, so `layers=(64, 32, 16, 8)` means 32-dim embeddings and dense layers 32-16-8.
    """

    num_users: int
    num_items: int
    layers: Sequence[int] = (64, 32, 16, 8)
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        layers.check_tower("MLP", self.layers)
        super().__post_init__()

    @nn.compact
    def __call__(self, users, items):
        width = self.layers[0] // 2
        p = layers.embed(
            "mlp_user", self.num_users, width, users, table=layers.Table("users", "mlp")
        )
        q = layers.embed(
            "mlp_item", self.num_items, width, items, table=layers.Table("items", "mlp")
        )
        x = layers.tower([p, q], self.layers[1:], self.dtype)
        return layers.logit(x, self.dtype)
