"""Click-through prediction with side features: train-only scaling stored with the checkpoint,
the OOV bucket, bad click logs, a planted feature signal, and experiments.features end to end."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ncf_jax import tasks
from ncf_jax.config import ClickConfig, DataConfig
from ncf_jax.data import DataError
from ncf_jax.data.clicks import FeatureStats, build_click_data, load_clicks, read_click_csv
from ncf_jax.tasks import clicks
from ncf_jax.tasks.clicks import ClickEvalConfig, ClickModelConfig, ClickTrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _table(n=12):
    return pd.DataFrame(
        {
            "user": np.arange(n) % 3,
            "item": np.arange(n) % 4,
            "label": np.arange(n) % 2,
            "timestamp": np.arange(n) * 86400,
            "x": np.arange(n, dtype=float),
            "c": ["a", "b", "c"] * (n // 3),
        }
    )


def test_scaling_and_vocabulary_come_from_train_only():
    table = _table()
    train, test = table.iloc[:6], table.iloc[6:]
    stats = FeatureStats.fit(train, ["x"], ["c"])
    assert stats.continuous == {"x": [0.0, 5.0]}
    cont, _ = stats.transform(test)
    np.testing.assert_allclose(cont[:, 0], (test["x"].to_numpy() - 0.0) / 5.0)  # > 1: not clipped
    assert FeatureStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats


def test_unseen_categories_go_to_the_oov_bucket():
    stats = FeatureStats.fit(pd.DataFrame({"c": ["b", "a", "b"]}), [], ["c"])
    assert stats.categorical == {"c": ["a", "b"]} and stats.categorical_sizes == (3,)
    _, codes = stats.transform(pd.DataFrame({"c": ["a", "b", "zzz", "A"]}))
    assert codes[:, 0].tolist() == [1, 2, 0, 0]


def test_last_day_split_keeps_single_day_users_in_train():
    table = _table(12)
    table.loc[table["user"] == 2, "timestamp"] = 5  # user 2: one day only
    data = build_click_data(table, ["x"], ["c"], name="t", split="last_day", seed=0,
                            test_fraction=0.2)  # fmt: skip
    assert set(data.test.users.tolist()) == {0, 1}
    assert len(data.train.users) + len(data.test.users) == 12


def _write(path, text):
    path.write_text(text)
    return path


CONFIG = ClickConfig(continuous_cols=("x",), categorical_cols=("c",))
DATA = DataConfig(dataset="csv:log.csv", csv_timestamp_col="ts")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("user,item,label,ts,c\n1,2,1,0,a\n", r"missing column\(s\) \['x'\]"),
        (
            "user,item,label,ts,x,c\n1,2,1,0,0.5,a\n1,3,0,0,abc,a\n2,2,1,0,,b\n",
            r"column 'x': 2 row\(s\) not a finite number.*line 3: 'abc'.*line 4: ''",
        ),
        (
            "user,item,label,ts,x,c\n1,2,1,0,1,a\n1,3,2,0,1,a\n2,2,yes,0,1,b\n",
            r"column 'label': 2 row\(s\) with a label other than 0/1.*line 3: '2'.*line 4: 'yes'",
        ),
    ],
)
def test_bad_click_logs_name_the_column_and_rows(tmp_path, text, pattern):
    path = _write(tmp_path / "log.csv", text)
    with pytest.raises(DataError, match=pattern):
        read_click_csv(path, DATA, CONFIG)


def _planted_log(n=3000, seed=0):
    """Clicks decided by row features (x and c), not by who or what: ids are useless."""
    rng = np.random.default_rng(seed)
    x, c = rng.random(n), rng.choice(["a", "b", "c", "d"], n)
    logit = 6 * (x - 0.5) + np.where(np.isin(c, ["a", "b"]), 2.0, -2.0)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return pd.DataFrame(
        {"user": rng.integers(0, 40, n), "item": rng.integers(0, 30, n), "label": label,
         "timestamp": np.zeros(n, np.int64), "x": x, "c": c}
    )  # fmt: skip


def test_features_beat_ids_alone_on_a_planted_signal_and_stats_are_stored(tmp_path):
    data = build_click_data(_planted_log(), ["x"], ["c"], name="planted", split="random",
                            seed=0, test_fraction=0.2)  # fmt: skip
    configs = tasks.configs(
        clicks,
        model=ClickModelConfig(layers=(16, 16)),
        train=ClickTrainConfig(epochs=3, batch_size=64, learning_rate=0.01, baseline=True),
        eval=ClickEvalConfig(top_k=2),
    )
    results = tasks.train_and_evaluate(clicks, data, configs, tmp_path)
    assert results["hr_protocol"] == "test_rows"  # x and c belong to rows
    with_features, without = results["best"]["auc"], results["baseline"]["best"]["auc"]
    assert with_features > 0.8 and with_features > without + 0.15, (with_features, without)
    assert {"auc", "logloss", "hr@2", "precision", "recall", "f1"} <= set(results["best"])
    # The train-only statistics are part of the run's options, checked on resume.
    saved = json.loads((tmp_path / "options.json").read_text())
    assert saved["feature statistics"] == data.stats.to_json()
    shifted = build_click_data(_planted_log(seed=1), ["x"], ["c"], name="planted",
                               split="random", seed=0, test_fraction=0.2)  # fmt: skip
    with pytest.raises(ValueError, match="trained with other options:\n  --feature statistics"):
        tasks.train_and_evaluate(clicks, shifted, configs, tmp_path)


def test_script_end_to_end_on_a_tiny_click_log(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["uid,iid,clicked,time,age,genre"]
    for u in range(20):
        for i in rng.choice(15, 8, replace=False):
            day = rng.integers(0, 3)
            lines.append(f"u{u},{i},{rng.integers(0, 2)},{day * 86400 + i},{20 + u},g{i % 3}")
    path = _write(tmp_path / "log.csv", "\n".join(lines) + "\n")
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "experiments.clicks", f"--dataset=csv:{path}",
        "--csv_user_col=uid", "--csv_item_col=iid", "--csv_timestamp_col=time",
        "--click_label_col=clicked", "--click_continuous_cols=age",
        "--click_categorical_cols=genre", "--layers=8,8", "--epochs=1", "--batch_size=32",
        "--nobaseline", f"--workdir={workdir}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["hr_protocol"] == "catalogue"  # age is per user, genre per item
    assert {"auc", "logloss", "hr@10", "best_threshold"} <= set(results["best"])
    assert "baseline" not in results  # --nobaseline; the baseline is tested above
    assert results["feature_stats"]["continuous"]["age"] == [20.0, 39.0]
    assert results["feature_stats"]["categorical"]["genre"] == ["g0", "g1", "g2"]


def test_load_clicks_reads_a_csv(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,label,ts,x,c\n1,2,1,0,1,a\n1,3,0,99999,2,b\n")
    data = load_clicks(DataConfig(dataset=f"csv:{path}", csv_timestamp_col="ts"), CONFIG)
    assert data.num_users == 1 and len(data.test.users) == 1 and data.test.categorical[0, 0] == 0
