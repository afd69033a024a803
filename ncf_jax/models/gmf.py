"""Stage: model. Generalised Matrix Factorisation (He et al., WWW 2017, section 3.2)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ncf_jax.config import NUM_FACTORS
from ncf_jax.models import layers


class GMF(nn.Module):
    """logit = h^T (p_u * q_i): the element-wise product of embeddings, then one output unit.

    >>> import jax
    >>> model = GMF(num_users=3, num_items=5, num_factors=4)
    >>> params = model.init(jax.random.key(0), jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32))
    >>> model.apply(params, jnp.array([0, 2]), jnp.array([1, 4])).shape
    (2,)
    """

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
        return layers.logit((p * q).astype(self.dtype), self.dtype)
