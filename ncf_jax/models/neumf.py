"""Stage: model. Neural Matrix Factorisation, GMF + MLP fused (He et al., WWW 2017, 3.4).

`load_pretrained` initialises NeuMF from trained GMF and MLP parameters (section 3.4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ncf_jax.config import NUM_FACTORS
from ncf_jax.models import layers


class NeuMF(nn.Module):
    """logit = h^T [p_u^G * q_i^G ; MLP(p_u^M, q_i^M)] with separate GMF and MLP embeddings."""

    num_users: int
    num_items: int
    num_factors: int = NUM_FACTORS
    layers: Sequence[int] = (64, 32, 16, 8)
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        layers.check_tower("NeuMF", self.layers)
        super().__post_init__()

    @nn.compact
    def __call__(self, users, items):
        k = self.num_factors
        p_mf = layers.embed("mf_user", self.num_users, k, users, table=layers.Table("users", "mf"))
        q_mf = layers.embed("mf_item", self.num_items, k, items, table=layers.Table("items", "mf"))
        mf = p_mf * q_mf
        width = self.layers[0] // 2
        p = layers.embed(
            "mlp_user", self.num_users, width, users, table=layers.Table("users", "mlp")
        )
        q = layers.embed(
            "mlp_item", self.num_items, width, items, table=layers.Table("items", "mlp")
        )
        x = layers.tower([p, q], self.layers[1:], self.dtype)
        return layers.logit(jnp.concatenate([mf.astype(self.dtype), x], axis=-1), self.dtype)


def load_pretrained(neumf_params, gmf_params, mlp_params, *, alpha: float = 0.5):
    """NeuMF parameters taken from trained GMF and MLP parameters.

    Embeddings and tower weights are copied; the output layer becomes
    `[alpha * h_gmf ; (1 - alpha) * h_mlp]` with bias `alpha * b_gmf + (1 - alpha) * b_mlp`, so
    the first NeuMF logit is exactly `alpha * gmf_logit + (1 - alpha) * mlp_logit`.
    Every entry of `neumf_params` must be filled from a source of identical shape, and every
    source entry must be used: a mismatch raises `ValueError` naming the entry.
    """
    target = neumf_params["params"]
    gmf, mlp = dict(gmf_params["params"]), dict(mlp_params["params"])
    gmf_out, mlp_out = gmf.pop("out"), mlp.pop("out")
    sources = {**gmf, **mlp}
    if set(sources) != set(target) - {"out"} or set(gmf) & set(mlp):
        raise ValueError(
            f"pre-trained entries {sorted(sources)} do not match NeuMF's "
            f"{sorted(set(target) - {'out'})}: were GMF and MLP trained with NeuMF's sizes?"
        )
    out = {
        "kernel": jnp.concatenate(
            [alpha * gmf_out["kernel"], (1 - alpha) * mlp_out["kernel"]], axis=0
        ),
        "bias": alpha * gmf_out["bias"] + (1 - alpha) * mlp_out["bias"],
    }
    loaded = {**sources, "out": out}
    for path, (want, got) in _zip_leaves(target, loaded):
        if want.shape != got.shape:
            raise ValueError(f"pre-trained {path} has shape {got.shape}, NeuMF needs {want.shape}")
    return {"params": jax.tree.map(jnp.asarray, loaded)}


def _zip_leaves(a, b):
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
    for path, leaf in flat_a:
        yield jax.tree_util.keystr(path), (leaf, flat_b[path])
