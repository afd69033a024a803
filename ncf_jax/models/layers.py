"""Stage: model. Shared building blocks and the naming conventions every model follows.

Conventions the rest of the library relies on (and that a new model must keep):
- an embedding table looked up with user ids is a module named `<prefix>_user`, one looked up
  with item ids `<prefix>_item`; its parameter is called `embedding`. Row-sparse ("lazy")
  optimisers and per-row L2 use these names to find which ids index which table.
- `__call__(users, items)` takes int32 ids of any matching shape and returns float32 logits
  (or predictions) of that same shape, so one model scores `[batch]` pairs and
  `[users, candidates]` grids alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# The NCF authors' Keras code: embeddings N(0, 0.01), dense layers LeCun-uniform.
embedding_init = nn.initializers.normal(stddev=0.01)
dense_init = nn.initializers.lecun_uniform()


def embed(name: str, num: int, features: int, ids: jnp.ndarray) -> jnp.ndarray:
    """Looks `ids` up in a fresh N(0, 0.01) table named `name` (call inside a compact module)."""
    return nn.Embed(num, features, embedding_init=embedding_init, name=name)(ids)


def tower(x: jnp.ndarray, sizes: Sequence[int], dtype=jnp.float32) -> jnp.ndarray:
    """Dense + ReLU layers `mlp_dense_0, mlp_dense_1, ...` (the NCF MLP tower; no output layer).

    Call inside a compact module: the layers become direct children of it, so their names are
    the ones `ncf_jax.losses.l2_penalty` and `neumf.load_pretrained` look for.
    """
    for i, size in enumerate(sizes):
        x = nn.relu(nn.Dense(size, kernel_init=dense_init, dtype=dtype, name=f"mlp_dense_{i}")(x))
    return x


def logit(x: jnp.ndarray, dtype=jnp.float32, name: str = "out") -> jnp.ndarray:
    """The prediction layer: one LeCun-uniform unit, squeezed, in float32."""
    out = nn.Dense(1, kernel_init=dense_init, dtype=dtype, name=name)(x)
    return out[..., 0].astype(jnp.float32)
