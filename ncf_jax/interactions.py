"""Stage: on-device interactions. Training pairs and per-user positives, moved to device once.

`DeviceInteractions` is a pytree of device arrays: a jitted epoch takes it as an argument (never as
a closed-over constant, which would bake the data into the compiled program).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import struct

from ncf_jax.data.types import InteractionData


@struct.dataclass
class DeviceInteractions:
    """Training positives and the items each user's negatives must avoid.

    users, items: [n_train] int32 training positives.
    indptr: [num_users + 1] int32; indices: [nnz] int32 — the excluded items of user u are
      `indices[indptr[u]:indptr[u + 1]]`, ascending (the sampler binary-searches them).
    num_items: size of the catalogue (static).
    search_steps: bisection steps that cover the largest exclusion list (static).
    """

    users: jax.Array
    items: jax.Array
    indptr: jax.Array
    indices: jax.Array
    num_items: int = struct.field(pytree_node=False)
    search_steps: int = struct.field(pytree_node=False)

    @property
    def num_pairs(self) -> int:
        return self.users.shape[0]


def from_csr(users, items, indptr, indices, num_items: int, device=None) -> DeviceInteractions:
    """Checks that every user has a negative left, then puts the arrays on `device`."""
    degree = np.diff(indptr)
    full = np.flatnonzero(degree >= num_items)
    if len(full):
        raise ValueError(
            f"user {int(full[0])} (and {len(full) - 1} more) interacted with all {num_items} "
            "items: no negative can be sampled for them"
        )
    if indptr[-1] >= 2**31:
        raise ValueError("more than 2^31 positives: int32 indices would overflow")
    put = lambda x: jax.device_put(np.asarray(x, dtype=np.int32), device)
    return DeviceInteractions(
        users=put(users),
        items=put(items),
        indptr=put(indptr),
        indices=put(indices),
        num_items=int(num_items),
        search_steps=int(np.ceil(np.log2(degree.max(initial=0) + 1))),
    )


def from_data(data: InteractionData, *, exclude: str = "train", device=None) -> DeviceInteractions:
    """Device interactions of `data`'s training split.

    exclude: "train" — negatives avoid the user's training items (the NCF authors' choice);
      "known" — they also avoid the validation and test items.
    """
    if exclude == "train":
        indptr, indices = data.train_csr()
    elif exclude == "known":
        indptr, indices = data.known_csr()
    else:
        raise ValueError(f"exclude must be 'train' or 'known', got {exclude!r}")
    return from_csr(data.train_users, data.train_items, indptr, indices, data.num_items, device)
