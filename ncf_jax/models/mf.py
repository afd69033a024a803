"""Stage: model. Dot-product matrix factorisation with biases (Rendle et al., RecSys 2020).

This file is also the README's worked example of adding a model: a Flax module that follows the
naming conventions of `ncf_jax.models.layers`, plus one line in the registry
(`ncf_jax/models/__init__.py`). Every script, the sampler, evaluation and checkpoints then work.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ncf_jax.config import NUM_FACTORS
from ncf_jax.models import layers


class MF(nn.Module):
    """logit = <p_u, q_i> + b_u + b_i + b."""

    num_users: int
    num_items: int
    num_factors: int = NUM_FACTORS
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, users, items):
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
        return jnp.sum(p * q, axis=-1) + b_u + b_i + b
