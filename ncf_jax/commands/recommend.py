"""Stage: recommendation. Top-K items for users of a trained run, seen items excluded.

`load_run(workdir)` rebuilds any registered model from the config saved with its best
checkpoint and reloads the dataset it was trained on; `recommend(run, user_ids, k)` answers in
ORIGINAL user and item ids (as in the source files), with titles where the dataset has them.
`top_k` is the device part: it works on model ids and any `score_all_fn`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ncf_jax import checkpoint
from ncf_jax.config import DataConfig, from_dict
from ncf_jax.data import dataset, side_info
from ncf_jax.data.digest import data_digest
from ncf_jax.data.types import InteractionData
from ncf_jax.errors import CheckpointError, UsageError
from ncf_jax.loop import DATA_DIGEST
from ncf_jax.models import classic, create_model
from ncf_jax.models.scoring import score_fns


def top_k(
    score_all_fn,
    params,
    users,
    k: int,
    *,
    num_items: int,
    exclude_indptr=None,
    exclude_indices=None,
    chunk_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of each user, excluding a CSR of items per user.

    Args:
      score_all_fn: `score_all_fn(params, users [c]) -> [c, num_items]`.
      users: [n] int model user ids.
      exclude_indptr, exclude_indices: CSR (over all users) of items never to recommend, e.g.
        `data.train_csr()`; None excludes nothing.
      chunk_size: users scored per device call; memory is [chunk_size, num_items].

    Returns:
      (items [n, k] int32, scores [n, k] float32), best first; ties go to the lower item id.
      Where fewer than k items remain, the empty slots hold item -1 and score -inf.
    """
    users = np.asarray(users, np.int32).reshape(-1)
    if not 1 <= k <= num_items:
        raise ValueError(f"k must be in [1, num_items={num_items}], got {k}")
    chunk = max(1, min(chunk_size, len(users)))

    @jax.jit
    def run(params, users, excluded):
        scores = jnp.where(excluded, -jnp.inf, score_all_fn(params, users).astype(jnp.float32))
        values, items = jax.lax.top_k(scores, k)
        return jnp.where(values == -jnp.inf, -1, items), values

    out_items, out_scores = [], []
    for start in range(0, len(users), chunk):
        part = users[start : start + chunk]
        padded = np.pad(part, (0, chunk - len(part)))  # one shape: one compilation
        excluded = np.zeros((chunk, num_items), bool)
        if exclude_indptr is not None:
            for row, user in enumerate(part):
                excluded[row, exclude_indices[exclude_indptr[user] : exclude_indptr[user + 1]]] = 1
        items, scores = jax.device_get(run(params, padded, excluded))
        out_items.append(items[: len(part)])
        out_scores.append(scores[: len(part)])
    return np.concatenate(out_items), np.concatenate(out_scores)


class Run(NamedTuple):
    """A trained run, ready to score: the model, its best parameters, the data it saw."""

    model: Any
    params: Any
    data: InteractionData
    data_config: DataConfig
    results: dict


def _data_config(results: dict, data_dir: str | None) -> DataConfig:
    saved = results.get("config", {}).get("data")
    if saved is None:  # runs from before the data config was saved: rebuild it from the flags
        flags = results.get("flags", {})
        saved = {k: flags[k] for k in ("dataset", "data_dir", "split") if k in flags}
        names = [f.name for f in dataclasses.fields(DataConfig)]
        saved |= {k: v for k, v in flags.items() if k in names}
        saved["seed"] = flags.get("data_seed", 0)
        if not saved.get("dataset"):
            raise UsageError("the run saved neither its data config nor its flags")
    if data_dir is not None:
        saved = saved | {"data_dir": data_dir}
    return from_dict(DataConfig, saved)


def load_run(workdir, *, data_dir: str | None = None) -> Run:
    """The best checkpoint of WORKDIR with its model rebuilt and its dataset reloaded.

    data_dir: read the dataset from here instead of the folder saved with the run.
    """
    params, meta = checkpoint.restore_params(workdir)
    results = meta["results"]
    data_config = _data_config(results, data_dir)
    data = dataset.load_dataset(data_config)
    check_data(results, data, workdir)
    model = create_model(results["config"]["model"], data.num_users, data.num_items)
    if isinstance(model, classic.Classic):
        check_baseline_params(model, params, workdir)
    return Run(model, params, data, data_config, results)


def check_data(results: dict, data: InteractionData, workdir) -> None:
    """UsageError when the run recorded a digest of its data and `data` is other data (ids
    would name other users and items)."""
    saved, now = results.get(DATA_DIGEST), data_digest(data)
    if saved is not None and saved != now:
        raise UsageError(
            f"{workdir} was trained on other data than {data.name} as read now (digest of the "
            f"prepared arrays {saved} -> {now}): pass the data it was trained on "
            "(--data_dir_override=FOLDER)"
        )


def check_baseline_params(model: classic.Classic, params: dict, workdir) -> None:
    """A fitted baseline's saved params must be what its `score` reads (ItemKNN and SLIM
    changed from a dense "w" to neighbour lists): CheckpointError naming WORKDIR if not."""
    try:
        jax.eval_shape(model.score_all, params, jnp.zeros(1, jnp.int32))  # traces, runs nothing
    except KeyError as missing:
        raise CheckpointError(
            f"{workdir}: the saved {model.model} parameters ({', '.join(sorted(params))}) have "
            f"no {missing}, which this version's {model.model} scores with: they were written "
            "by an older ncf_jax; fit the model again in a new --workdir"
        ) from None


def titles(data_config: DataConfig, original_item_ids) -> np.ndarray | None:
    """Titles of ORIGINAL item ids from the dataset's item file, or None where it has none."""
    if data_config.dataset.startswith(("ncf:", "csv:")):
        return None
    # The item file alone: `dataset.item_titles` also reads the user file, which may be absent.
    path = dataset.source_files(data_config).get("items")
    if path is None or not pathlib.Path(path).is_file():
        return None
    table = side_info.read_side_table(path)  # a bad line is the user's to fix: DataError
    original_item_ids = np.asarray(original_item_ids)
    missing = ~np.isin(original_item_ids, table.index.to_numpy())
    if missing.any():
        logging.warning("%s has no line for items %s: shown without titles", path,
                        original_item_ids[missing][:10].tolist())  # fmt: skip
    found = side_info.titles_of(table, original_item_ids[~missing])
    names = np.full(len(original_item_ids), "", dtype=object)
    names[~missing] = found
    return names.astype(str)


def user_codes(data: InteractionData, original_user_ids) -> np.ndarray:
    """Model ids of ORIGINAL user ids (strings are parsed like the source ids)."""
    try:
        text = data.user_ids.dtype.kind in "US"  # str, not the table's width: no truncation
        ids = np.asarray(original_user_ids).astype(str if text else data.user_ids.dtype)
    except (ValueError, OverflowError):
        raise UsageError(f"--users: {list(original_user_ids)[:10]} are not ids of "
                         f"{data.name}, whose user ids are integers") from None  # fmt: skip
    codes = np.searchsorted(data.user_ids, ids)  # user_ids are sorted (see data.splits)
    codes = np.minimum(codes, len(data.user_ids) - 1)
    unknown = data.user_ids[codes] != ids
    if unknown.any():
        raise UsageError(f"--users: {ids[unknown][:10].tolist()} are not users of {data.name} "
                         "(give the ids of its source file)")  # fmt: skip
    return codes.astype(np.int32)


def recommend(run: Run, original_user_ids, k: int = 10, *, exclude_seen: bool = True) -> list:
    """Top-k for each ORIGINAL user id: a list of {"user", "items", "scores", "titles"} dicts
    (original item ids; titles None where the dataset has none). exclude_seen drops the user's
    training items."""
    data = run.data
    codes = user_codes(data, original_user_ids)
    if not 1 <= k <= data.num_items:
        raise UsageError(f"--k must be in 1..{data.num_items} (the items of {data.name}), got {k}")
    _, score_all_fn = score_fns(run.model, data.num_items)
    exclude = data.train_csr() if exclude_seen else (None, None)
    items, scores = top_k(
        score_all_fn,
        run.params,
        codes,
        k,
        num_items=data.num_items,
        exclude_indptr=exclude[0],
        exclude_indices=exclude[1],
    )
    out = []
    for user, row, row_scores in zip(np.asarray(original_user_ids), items, scores, strict=True):
        kept = row >= 0
        originals = data.item_ids[row[kept]]
        names = titles(run.data_config, originals)
        out.append(
            {
                "user": user.item() if hasattr(user, "item") else user,
                "items": originals.tolist(),
                "scores": row_scores[kept].tolist(),
                "titles": None if names is None else names.tolist(),
            }
        )
    return out
