"""Stage: evaluation, per user. Each test pair's metrics, not their mean: what paired tests and
bootstrap intervals over users need (`ncf_jax.commands.stats`), for any saved run of a ranking task.

The values are those the run's evaluators average (`ncf_jax.evaluate`), from the same metric
functions (`ncf_jax.metrics`): "sampled" ranks the held-out item against its sampled negatives
(HR@k, NDCG@k, the evaluator's tie policy); "full" ranks the catalogue with the user's training
items excluded (top-k by `jax.lax.top_k`, ties to the lower item id; Recall@k, NDCG@k, HR@k).
With one held-out item per user (leave-one-out) a pair is a user.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax import baselines, checkpoint, metrics
from ncf_jax.data.types import InteractionData
from ncf_jax.models import create_model, scoring

CHUNK = 256  # users scored at once; full ranking holds [CHUNK, num_items] scores


def sampled(score_fn, params, data: InteractionData, *, k: int, ties: str) -> dict:
    """{"hr@k", "ndcg@k"}: [n_test] float arrays, one value per test pair."""
    if ties == "random":
        raise ValueError("per-user values need a deterministic tie policy, not ties='random'")
    candidates = np.concatenate([data.test_items[:, None], data.test_negatives], axis=1)
    mask = data.test_negatives_mask
    ranks = []
    for start in range(0, len(candidates), CHUNK):
        part = slice(start, start + CHUNK)
        users = jnp.asarray(data.test_users[part], jnp.int32)
        scores = score_fn(params, users, jnp.asarray(candidates[part], jnp.int32))
        negatives_mask = None if mask is None else jnp.asarray(mask[part])
        ranks.append(metrics.rank_against_negatives(
            scores[:, 0], scores[:, 1:], negatives_mask, ties=ties))  # fmt: skip
    rank = jnp.concatenate(ranks)
    return {f"hr@{k}": np.asarray(metrics.hit_rate(rank, k), np.float64),
            f"ndcg@{k}": np.asarray(metrics.ndcg(rank, k), np.float64)}  # fmt: skip


def full(score_all_fn, params, data: InteractionData, *, k: int) -> dict:
    """{"recall@k", "ndcg@k", "hr@k"}: [n_test] float arrays, one value per test pair (its user
    ranking the whole catalogue, training items excluded)."""
    if len(np.unique(data.test_users)) != len(data.test_users):
        raise ValueError("per-user full-ranking values need one held-out item per user "
                         "(leave-one-out); this split holds several for some users")  # fmt: skip
    indptr, indices = data.train_csr()
    out = {"recall": [], "ndcg": [], "hr": []}
    for start in range(0, len(data.test_users), CHUNK):
        users = data.test_users[start : start + CHUNK]
        scores = np.array(score_all_fn(params, jnp.asarray(users, jnp.int32)), np.float32)
        for row, user in enumerate(users):
            scores[row, indices[indptr[user] : indptr[user + 1]]] = -np.inf
        values, top = jax.lax.top_k(jnp.asarray(scores), k)
        top = jnp.where(values == -jnp.inf, -1, top)
        relevant = jnp.asarray(data.test_items[start : start + CHUNK, None], jnp.int32)
        hits = metrics.topk_hits(top, relevant)
        count = metrics.num_relevant(relevant)
        out["recall"].append(metrics.recall_at_k(hits, count))
        out["ndcg"].append(metrics.ndcg_at_k(hits, count))
        out["hr"].append(metrics.hit_rate_at_k(hits))
    return {f"{name}@{k}": np.asarray(jnp.concatenate(v), np.float64) for name, v in out.items()}


def _score_fns(model_config: dict, data: InteractionData):
    model = create_model(model_config, data.num_users, data.num_items)
    score_fn, score_all_fn = scoring.score_fns(model, data.num_items)
    prepare = getattr(baselines.MODELS.get(model_config["model"]), "for_scoring", None)
    return score_fn, score_all_fn, prepare or (lambda params: params)


def of_run(workdir, data: InteractionData, replicas: int, protocols=("sampled", "full")) -> dict:
    """{protocol: {metric: [replicas, n_test]}} of WORKDIR's last epoch (its latest checkpoint)
    under each of `protocols`, with the run's own k and tie policy (from its results.json)."""
    state, meta = checkpoint.restore(pathlib.Path(workdir) / "checkpoints" / "latest")
    config = meta["results"]["config"]
    score_fn, score_all_fn, prepare = _score_fns(config["model"], data)
    k, ties = config["eval"]["top_k"], config["eval"]["ties"]
    out = {protocol: [] for protocol in protocols}
    for r in range(replicas):
        params = state["params"] if replicas == 1 else jax.tree.map(lambda x, r=r: x[r],
                                                                    state["params"])  # fmt: skip
        params = prepare(jax.tree.map(jnp.asarray, params))
        for protocol in protocols:
            out[protocol].append(
                sampled(score_fn, params, data, k=k, ties=ties) if protocol == "sampled"
                else full(score_all_fn, params, data, k=k)
            )  # fmt: skip
    return {p: {m: np.stack([v[m] for v in values]) for m in values[0]}
            for p, values in out.items()}  # fmt: skip
