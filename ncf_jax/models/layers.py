"""Stage: model. Shared building blocks and the naming conventions every model follows.

Conventions the rest of the library relies on (and that a new model must keep):
- an embedding table is looked up through `embed(..., table=Table(ids, l2))`, which says, where
  the model looks it up, which batch ids index it ("users" or "items") and which regulariser
  reaches its rows. `table_labels(model, ...)` collects these from the model's structure once
  (any module names), and row-sparse Adam, per-row L2 and row sharding read them: nothing
  parses parameter names.
- `__call__(users, items)` takes int32 ids of broadcast-compatible shapes and returns float32
  logits (or predictions) of the broadcast shape, so one model scores `[batch]` pairs and
  `[users, 1]` x `[users, candidates]` grids alike. Models compute per-user work once per
  user in the second form (see `ConcatDense`): evaluation uses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# The NCF authors' Keras code: embeddings N(0, 0.01), dense layers LeCun-uniform.
embedding_init = nn.initializers.normal(stddev=0.01)
dense_init = nn.initializers.lecun_uniform()


# The variable collection holding, per table, the rows a caller has already looked up for the
# batch. Row-sparse training (`ncf_jax.row_sparse`) gathers each batch's rows itself, from
# tables it keeps packed side by side, and differentiates the loss with respect to those rows:
# the gradient then has the batch's size, never the table's.
LOOKED_UP = "looked_up"
# Rows the L2 penalty (`ncf_jax.losses.l2_penalty`) reads in place of `looked_up`'s: passed
# apart, they show whether a loss penalises table rows at all (`ncf_jax.tables.packing`).
PENALISED = "penalised"


@dataclasses.dataclass(frozen=True)
class Table:
    """What training must know of an embedding table, said where the model looks it up.

    ids: the batch entry holding the ids that index it ("users" or "items").
    l2: the regulariser of its looked-up rows: "mf" (--reg_mf), "mlp" (--reg_layers[0]) or
      None.
    """

    ids: str
    l2: str | None = None


class Embed(nn.Embed):
    """`nn.Embed` (same parameters) that returns `looked_up/<name>/embedding` as its rows when
    the caller passes that collection (then the table itself need not be passed); without
    it, a plain lookup. `table` labels it for `table_labels`."""

    table: Table | None = None

    def setup(self):
        if not self.has_variable(LOOKED_UP, "embedding"):
            super().setup()

    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        if self.has_variable(LOOKED_UP, "embedding"):
            return self.get_variable(LOOKED_UP, "embedding")
        return super().__call__(inputs)


def embed(name: str, num: int, features: int, ids: jnp.ndarray, *, table: Table) -> jnp.ndarray:
    """Looks `ids` up in a fresh N(0, 0.01) table named `name`, labelled `table` (call inside a
    compact module)."""
    return Embed(num, features, embedding_init=embedding_init, name=name, table=table)(ids)


def table_labels(model, *init_args) -> dict[tuple[str, ...], Table]:
    """{("params", ..., "embedding"): Table} of every labelled table of `model`, in the order
    the model looks them up, found by tracing `model.init(key, *init_args)` (shapes only, no
    arrays are built): the one definition of "which parameters are tables, indexed by what"."""
    found = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, Embed) and context.method_name == "__call__" and module.table:
            found[("params", *module.path, "embedding")] = module.table
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(model.init, jax.random.key(0), *init_args)
    return found


def concat(parts: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """Concatenation on the last axis of arrays whose other axes broadcast against each other."""
    batch = jnp.broadcast_shapes(*(x.shape[:-1] for x in parts))
    return jnp.concatenate([jnp.broadcast_to(x, batch + x.shape[-1:]) for x in parts], axis=-1)


class ConcatDense(nn.Module):
    """`nn.Dense` over `concatenate(xs, -1)`, computed as `sum_j xs[j] @ kernel_j + bias`.

    The parameters are exactly those of `nn.Dense` on the concatenation (`kernel` of shape
    `[sum of widths, features]`, `bias`), but the concatenation is never built: the inputs only
    need to broadcast against each other. A user embedding `[users, 1, d]` beside candidate item
    embeddings `[users, m, d]` is multiplied by its half of the kernel once, not m times.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, *xs: jnp.ndarray) -> jnp.ndarray:
        widths = [x.shape[-1] for x in xs]
        kernel = self.param("kernel", dense_init, (sum(widths), self.features), jnp.float32)
        y = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        y, start = y.astype(self.dtype), 0
        for x, width in zip(xs, widths, strict=True):
            y = y + x.astype(self.dtype) @ kernel[start : start + width].astype(self.dtype)
            start += width
        return y


def check_tower(model: str, sizes: Sequence[int], dropout: float = 0.0) -> None:
    """Raises ValueError unless `sizes` (the `layers` of an MLP tower over a user and an item
    embedding of `sizes[0] // 2` each) has an even first entry and `dropout` is in [0, 1)."""
    if len(sizes) < 1 or sizes[0] % 2:
        raise ValueError(f"{model} layers[0] must be an even embedding width, got {sizes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{model} dropout must be in [0, 1), got {dropout}")


def tower(
    parts: Sequence[jnp.ndarray],
    sizes: Sequence[int],
    dtype=jnp.float32,
    *,
    dropout: float = 0.0,
    train: bool = False,
) -> jnp.ndarray:
    """Dense + ReLU layers `mlp_dense_0, mlp_dense_1, ...` over the concatenation of `parts`.

    The NCF MLP tower without its output layer; `parts` broadcast against each other (the first
    layer is a `ConcatDense`). With `dropout`, each ReLU is followed by dropout when `train`.
    Call inside a compact module: the layers become direct children of it, so their names are
    the ones `ncf_jax.losses.l2_penalty` and `neumf.load_pretrained` look for.
    """
    if not sizes:
        return concat(parts).astype(dtype)
    x = ConcatDense(sizes[0], dtype=dtype, name="mlp_dense_0")(*parts)
    for i, size in enumerate(sizes):
        if i:
            x = nn.Dense(size, kernel_init=dense_init, dtype=dtype, name=f"mlp_dense_{i}")(x)
        x = nn.relu(x)
        if dropout:
            x = nn.Dropout(dropout, deterministic=not train)(x)
    return x


def logit(x: jnp.ndarray, dtype=jnp.float32, name: str = "out") -> jnp.ndarray:
    """The prediction layer: one LeCun-uniform unit, squeezed, in float32."""
    out = nn.Dense(1, kernel_init=dense_init, dtype=dtype, name=name)(x)
    return out[..., 0].astype(jnp.float32)
