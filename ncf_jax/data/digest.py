"""Stage: dataset arrays -> their fingerprint. A digest of the prepared arrays identifies the data
a run was trained on: it goes into WORKDIR/options.json and results.json, so a resume (or a
`recommend`) on other data is refused as one with other options is.

The digest covers every array (name, dtype, shape and bytes) of the prepared data, walking
dataclasses, named tuples, dicts and lists in a fixed order; the dataset's name is left out
(the --dataset option records it). Hashing ML-20M's arrays takes well under a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

DIGEST_CHARS = 16  # 64 bits: enough to tell data sets apart, short enough to read in a message


def _update(hasher, value, name: str) -> None:
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            if field.name != "name":
                _update(hasher, getattr(value, field.name), f"{name}.{field.name}")
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        for field, item in zip(value._fields, value, strict=True):
            _update(hasher, item, f"{name}.{field}")
    elif isinstance(value, dict | list | str | int | float | bool) or value is None:
        hasher.update(f"{name}={json.dumps(value, sort_keys=True)};".encode())
    else:
        array = np.asarray(value)
        array = np.ascontiguousarray(array.astype(str) if array.dtype == object else array)
        hasher.update(f"{name}:{array.dtype.str}{array.shape};".encode())
        hasher.update(array.reshape(-1).view(np.uint8).data)


def data_digest(data) -> str:
    """Hex digest of the prepared arrays of `data` (InteractionData, ClickData, ...)."""
    hasher = hashlib.sha256()
    _update(hasher, data, "")
    return hasher.hexdigest()[:DIGEST_CHARS]
