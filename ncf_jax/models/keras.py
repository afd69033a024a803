"""Stage: model. The NCF authors' Keras weight files (HDF5) as GMF / MLP parameters.

The authors' GMF.py and MLP.py save their models with Keras' `save_weights` (Keras 1, their
README's `Pretrain/ml-1m_GMF_8_*.h5`, `Pretrain/ml-1m_MLP_[64,32,16,8]_*.h5`). The layout:
the file's attribute `layer_names` lists the layers in order; each layer is a group of that name
whose attribute `weight_names` lists its arrays, each a dataset under the group (a name holding
"/", as Keras 2 writes "layer1/kernel:0", is a path inside the group). A whole-model file
(`model.save`) keeps the same layout under its `model_weights` group.

Their layer names, mapped to ours (Dense kernels are [in, out] in both; `prediction` is [W, b]):

  GMF  user_embedding -> mf_user, item_embedding -> mf_item, prediction -> out
  MLP  user_embedding -> mlp_user, item_embedding -> mlp_item, layer<k> -> mlp_dense_<k-1>,
       prediction -> out

The MLP's first dense layer reads [user ; item] in both, so its kernel needs no reordering.
Every array's shape is checked against the model built from --num_factors / --layers and the
data; a mismatch, a missing layer or an unused one is one error naming the Keras layer.
`h5py` is an optional dependency: `pip install 'ncf_jax[keras]'`.
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np

from ncf_jax.errors import DataError, UsageError

_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of every HDF5 file
_WEIGHTS = {"embedding": ("embedding",), "dense": ("kernel", "bias")}


def is_keras_file(path) -> bool:
    """True for an HDF5 file (a WORKDIR or a checkpoint folder is not one)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(_SIGNATURE)) == _SIGNATURE


def _names(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_layers(path) -> dict[str, list[np.ndarray]]:
    """{layer name: its arrays in `weight_names` order} of a Keras weight file."""
    try:
        import h5py
    except ImportError:
        raise UsageError(f"{path} is a Keras (HDF5) file: reading it needs h5py "
                         "(pip install 'ncf_jax[keras]')") from None  # fmt: skip
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise DataError(path, "not a Keras weight file (no 'layer_names' attribute)")
        layers = {}
        for name in _names(root.attrs["layer_names"]):
            group = root[name]
            weights = _names(group.attrs.get("weight_names", []))
            layers[name] = [np.asarray(group[w]) for w in weights]
    return {name: arrays for name, arrays in layers.items() if arrays}


def layer_map(kind: str, num_dense: int) -> dict[str, tuple[str, str]]:
    """{the authors' layer: (our module, "embedding" or "dense")} for "gmf" or "mlp"."""
    prefix = {"gmf": "mf", "mlp": "mlp"}[kind]
    mapping = {"user_embedding": (f"{prefix}_user", "embedding"),
               "item_embedding": (f"{prefix}_item", "embedding")}  # fmt: skip
    if kind == "mlp":
        mapping |= {f"layer{k}": (f"mlp_dense_{k - 1}", "dense") for k in range(1, num_dense + 1)}
    return mapping | {"prediction": ("out", "dense")}


def load(path, kind: str, like: dict) -> dict:
    """{"params": ...} of our GMF or MLP ("gmf" / "mlp") from the authors' Keras file `path`;
    `like` is that model's freshly initialised {"params": ...}, whose shapes must match."""
    target = like["params"]
    num_dense = sum(name.startswith("mlp_dense_") for name in target)
    mapping = layer_map(kind, num_dense)
    layers = read_layers(path)
    model = "GMF" if kind == "gmf" else "MLP"
    unused = sorted(set(layers) - set(mapping))
    if unused:
        raise DataError(path, f"layer {unused[0]!r} has no place in ncf_jax's {model} (its "
                        f"layers: {sorted(mapping)}): check --layers / --num_factors, or "
                        "whether this is the other model's file")  # fmt: skip
    params = {}
    for layer, (module, kind_of) in mapping.items():
        if layer not in layers:
            raise DataError(path, f"no layer {layer!r} (the file has {sorted(layers)}): "
                            f"ncf_jax's {model} needs {sorted(mapping)}")  # fmt: skip
        names = _WEIGHTS[kind_of]
        arrays = layers[layer]
        if len(arrays) != len(names):
            raise DataError(path, f"layer {layer!r} holds {len(arrays)} arrays, ncf_jax's "
                            f"{module} needs {len(names)} ({', '.join(names)})")  # fmt: skip
        params[module] = {}
        for name, array in zip(names, arrays, strict=True):
            want = tuple(target[module][name].shape)
            if array.shape != want:
                raise DataError(path, f"layer {layer!r} {name} has shape {array.shape}, "
                                f"ncf_jax's {model} needs {want} (--num_factors / --layers and "
                                "the dataset's user and item counts)")  # fmt: skip
            params[module][name] = jnp.asarray(array, target[module][name].dtype)
    return {"params": params}
