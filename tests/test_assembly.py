"""The one assembly: every trained task gets many seeds and data-parallel devices from
`ncf_jax.assembly`. Replica k of `--num_seeds` equals the single run with seed + k; a run on a
mesh of several devices (as a multi-process job builds it) equals the one-device run; a task
that cannot take replicas says why in one line."""

import jax
import numpy as np
import pandas as pd
import pytest

from ncf_jax import loop, tasks
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic
from ncf_jax.data.clicks import build_click_data
from ncf_jax.errors import UsageError
from ncf_jax.tasks import classic, clicks, two_tower
from ncf_jax.tasks.classic import ClassicModelConfig, ClassicTrainConfig
from ncf_jax.tasks.clicks import ClickEvalConfig, ClickModelConfig, ClickTrainConfig
from ncf_jax.tasks.two_tower import TwoTowerModelConfig, TwoTowerTrainConfig

RANKING = synthetic.planted(num_users=40, num_items=50, per_user=8, num_test_negatives=20)


def _click_data():
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {"user": rng.integers(0, 20, n), "item": rng.integers(0, 15, n),
         "label": (rng.random(n) < 0.4).astype(np.int8), "timestamp": np.zeros(n, np.int64),
         "x": rng.random(n), "c": rng.choice(["a", "b", "c"], n)}
    )  # fmt: skip
    return build_click_data(frame, ["x"], ["c"], name="clicks", split="random", seed=0,
                            test_fraction=0.2)  # fmt: skip


CASES = {  # task -> (data, metrics compared, configs given the train options)
    "two_tower": (
        lambda: RANKING,
        ("loss", "hr@5", "ndcg@5"),
        lambda **t: tasks.configs(
            two_tower,
            model=TwoTowerModelConfig(embed_dim=4),
            train=TwoTowerTrainConfig(epochs=2, batch_size=64, learning_rate=0.01, **t),
            eval=EvalConfig(top_k=5),
        ),
    ),
    "clicks": (
        _click_data,
        ("loss", "auc", "logloss", "hr@2"),
        lambda **t: tasks.configs(
            clicks,
            model=ClickModelConfig(layers=(8, 4), dropout=0.1),
            train=ClickTrainConfig(
                epochs=2, batch_size=64, learning_rate=0.01, baseline=False, **t
            ),
            eval=ClickEvalConfig(top_k=2),
        ),
    ),
}


def _compare(got: list, want: list, names) -> None:
    for a, b in zip(got, want, strict=True):
        for name in names:
            assert a[name] == pytest.approx(b[name], abs=1e-5), (a["epoch"], name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_replica_k_equals_the_single_run_with_seed_plus_k(tmp_path, name):
    make_data, names, configs = CASES[name]
    task, data = tasks.TASKS[name], make_data()
    many = tasks.train_and_evaluate(task, data, configs(seed=3, num_seeds=2), tmp_path / "many")
    assert [r["seed"] for r in many["seeds"]] == [3, 4]
    for replica, seed in zip(many["seeds"], (3, 4), strict=True):
        single = tasks.train_and_evaluate(task, data, configs(seed=seed), tmp_path / f"s{seed}")
        _compare(replica["history"], single["history"], names)
    assert many["history"][0]["loss"] == pytest.approx(
        np.mean([r["history"][0]["loss"] for r in many["seeds"]]), abs=1e-6
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_multi_process_job_splits_batches_over_every_device(tmp_path, monkeypatch, name):
    """Built as in a multi-process job (the batches split over the "data" axis of a mesh of all
    eight host devices), the run trains as on one device, up to the order of its sums."""
    make_data, names, configs = CASES[name]
    task, data = tasks.TASKS[name], make_data()
    one = tasks.train_and_evaluate(task, data, configs(), tmp_path / "one")
    with monkeypatch.context() as patch:
        patch.setattr(jax, "process_count", lambda: 2)
        record = task.build(data, configs())
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(record.state))
    split = loop.run(record, tmp_path / "split", plot=False)
    _compare(split["history"], one["history"], names)


def test_a_task_that_cannot_take_replicas_says_why():
    configs = tasks.configs(
        classic, model=ClassicModelConfig(model="ease"), train=ClassicTrainConfig(num_seeds=2)
    )
    with pytest.raises(UsageError, match="--model=ease is deterministic: --num_seeds applies"):
        classic.build(RANKING, configs)
