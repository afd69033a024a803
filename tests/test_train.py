"""Training: epoch batches, a planted signal, determinism, row-sparse Adam, L2, resume."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import batching, history, interactions, losses, optim, tasks, train
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic
from ncf_jax.errors import DivergedError, UsageError
from ncf_jax.models import create_model, layers
from ncf_jax.permutation import permutation
from ncf_jax.sampling import sample_negatives
from ncf_jax.tables import packing
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig
from ncf_jax.tasks.ncf import NCFTrainConfig as TrainConfig
from ncf_jax.tasks.ncf import make_loss_fn


def train_and_evaluate(data, model_config, train_config, eval_config, workdir):
    configs = tasks.configs(tasks.ncf, model=model_config, train=train_config, eval=eval_config)
    return tasks.train_and_evaluate(tasks.ncf, data, configs, workdir)


def _as_arrays(batches):
    """`[steps, batch_size, ...]` arrays of an epoch, however it is built."""
    return batches.materialise() if isinstance(batches, batching.StepBatches) else batches


DATA = synthetic.planted(num_users=48, num_items=60, per_user=10, num_test_negatives=50)


@pytest.mark.parametrize("layout", ["shuffled", "grouped"])
def test_epoch_has_every_positive_once_and_fresh_negatives(layout):
    dev = interactions.from_data(DATA)
    b = _as_arrays(batching.LAYOUTS[layout](jax.random.key(0), dev, num_neg=3, batch_size=64))
    shape = b["items"].shape
    assert b["labels"].shape == b["weights"].shape == shape and np.prod(shape[1:]) == 64
    users = np.broadcast_to(np.asarray(b["users"]), shape).ravel()
    items, labels = np.asarray(b["items"]).ravel(), np.asarray(b["labels"]).ravel()
    weights = np.asarray(b["weights"]).ravel()
    n = len(DATA.train_users)
    assert weights.sum() == 4 * n  # nothing dropped
    real = weights == 1
    pos = real & (labels == 1)
    got = sorted(zip(users[pos].tolist(), items[pos].tolist(), strict=True))
    assert got == sorted(zip(DATA.train_users.tolist(), DATA.train_items.tolist(), strict=True))
    neg = real & (labels == 0)
    assert (
        np.bincount(users[neg], minlength=DATA.num_users).tolist()
        == (3 * np.bincount(DATA.train_users, minlength=DATA.num_users)).tolist()
    )
    known = set(zip(DATA.train_users.tolist(), DATA.train_items.tolist(), strict=True))
    assert not known & set(zip(users[neg].tolist(), items[neg].tolist(), strict=True))
    if layout == "grouped":  # one user per group: its positive in column 0, then its negatives
        assert b["users"].shape == (*shape[:2], 1)
        group_labels = np.asarray(b["labels"])[np.asarray(b["weights"])[..., 0] == 1]
        assert (group_labels == [1, 0, 0, 0]).all()


def test_known_exclusion_also_avoids_test_items():
    dev = interactions.from_data(DATA, exclude="known")
    b = _as_arrays(batching.epoch_batches(jax.random.key(1), dev, num_neg=20, batch_size=128))
    neg = (np.asarray(b["labels"]) == 0) & (np.asarray(b["weights"]) == 1)
    users, items = np.asarray(b["users"])[neg].tolist(), np.asarray(b["items"])[neg].tolist()
    pairs = set(zip(users, items, strict=True))
    assert not pairs & set(zip(DATA.test_users.tolist(), DATA.test_items.tolist(), strict=True))


@pytest.mark.parametrize("step_built", [True, False])
def test_epoch_batches_are_the_whole_epoch_shuffled_at_once(step_built):
    """The epoch's batches, built step by step inside the scan or stacked before it, equal the
    epoch built whole: every row (positives, then num_neg blocks of negatives) permuted at
    once and cut into batches, the last padded with row 0 at weight False."""
    dev = interactions.from_data(DATA)
    key, num_neg, batch_size = jax.random.key(3), 2, 50
    b = batching.epoch_batches(
        key, dev, num_neg=num_neg, batch_size=batch_size, step_built=step_built
    )
    assert isinstance(b, batching.StepBatches) == step_built
    got = _as_arrays(b)
    neg_key, perm_key = jax.random.split(key)
    users = np.tile(DATA.train_users, 1 + num_neg)
    negatives = sample_negatives(neg_key, jnp.tile(dev.users, num_neg), dev)
    items = np.concatenate([DATA.train_items, np.asarray(negatives)])
    labels = np.arange(len(users)) < len(DATA.train_users)
    steps = -(-len(users) // batch_size)
    order = np.zeros(steps * batch_size, int)
    order[: len(users)] = np.asarray(permutation(perm_key, len(users)))
    want = {"users": users[order], "items": items[order], "labels": labels[order]}
    want["weights"] = np.arange(steps * batch_size) < len(users)
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[name]).ravel(), value, err_msg=name)


def test_step_built_epochs_train_the_same_parameters():
    """Two epochs on batches built inside the scan leave the parameters and optimiser state of
    stacked batches bit for bit; the mean loss agrees to float rounding."""
    dev = interactions.from_data(DATA)
    model = create_model(ModelConfig(model="neumf", num_factors=4, layers=(8, 4)), 48, 60)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    loss_fn = make_loss_fn(model.apply, ModelConfig(model="neumf"), tables)
    tx = optim.make_optimizer("adam", 0.01)
    runs = []
    for step_built in (True, False):
        make = functools.partial(
            batching.epoch_batches, num_neg=3, batch_size=64, step_built=step_built
        )
        epoch = train.make_train_epoch(loss_fn, tx, make, tables=tables)
        state = train.create_train_state(jax.tree.map(jnp.copy, params), tx)
        losses_ = []
        for _ in range(2):
            state, loss = epoch(state, dev, jax.random.key(5))
            losses_.append(float(loss))
        runs.append((state, losses_))
    (a, loss_a), (b, loss_b) = runs
    jax.tree.map(np.testing.assert_array_equal, (a.params, a.opt_state), (b.params, b.opt_state))
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)


GMF8 = ModelConfig(model="gmf", num_factors=8)


def _run(tmp_path, name, epochs=3, model=GMF8, **train_kwargs):
    return train_and_evaluate(
        DATA,
        model,
        TrainConfig(epochs=epochs, batch_size=64, learning_rate=0.01, **train_kwargs),
        EvalConfig(top_k=5),
        tmp_path / name,
    )


def test_planted_signal_beats_random_ranking_widely(tmp_path):
    result = _run(tmp_path, "planted", epochs=6)
    random_hr = 5 / 51
    assert result["init"]["hr@5"] < 2 * random_hr
    assert result["best"]["hr@5"] > 3 * random_hr, result["best"]
    saved = json.loads((tmp_path / "planted" / "results.json").read_text())
    assert saved["best"] == result["best"] and len(saved["history"]) == 6
    assert (tmp_path / "planted" / "history.png").stat().st_size > 0


def test_bpr_is_the_log_sigmoid_of_each_positive_negative_difference():
    logits = jax.random.normal(jax.random.key(0), (5, 4))  # 5 rows: a positive, 3 negatives
    weights = jnp.array([1.0, 1.0, 0.0, 1.0, 0.5])
    x = np.asarray(logits, np.float64)
    per_row = np.mean(np.log1p(np.exp(-(x[:, :1] - x[:, 1:]))), axis=1)  # -log sigmoid(d)
    want = np.sum(per_row * np.asarray(weights)) / np.sum(np.asarray(weights))
    np.testing.assert_allclose(losses.bpr(logits, weights), want, rtol=1e-6)


def test_mf_bpr_learns_the_planted_signal(tmp_path):
    mf = ModelConfig(model="mf", num_factors=8, reg_mf=0.001)
    result = _run(tmp_path, "bpr", epochs=6, model=mf, loss="bpr", batch_layout="grouped")
    random_hr = 5 / 51
    assert result["init"]["hr@5"] < 2 * random_hr
    assert result["best"]["hr@5"] > 3 * random_hr, result["best"]
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]


def test_bpr_needs_grouped_batches():
    with pytest.raises(UsageError, match="--loss=bpr .* needs --batch_layout=grouped"):
        TrainConfig(loss="bpr")


def test_same_seed_same_result_and_resume_is_exact(tmp_path):
    full = _run(tmp_path, "full", epochs=4)
    again = _run(tmp_path, "again", epochs=4)
    strip = lambda h: [{k: v for k, v in e.items() if "seconds" not in k} for e in h]
    assert strip(full["history"]) == strip(again["history"])
    # A run stopped after 2 epochs and restarted in the same workdir ends where `full` does.
    _run(tmp_path, "resumed", epochs=2)
    resumed = _run(tmp_path, "resumed", epochs=4)
    assert strip(resumed["history"]) == strip(full["history"])
    assert resumed["best"] == full["best"]
    other = _run(tmp_path, "other", epochs=1, seed=1)
    assert other["history"][0]["loss"] != full["history"][0]["loss"]


def _tables(model) -> dict:
    return layers.table_labels(model, jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))


def test_a_run_stops_at_its_target_or_its_patience_and_stays_stopped(tmp_path):
    """--stop_at ends the run after the first epoch whose selection metric reaches it, and a
    resume with more epochs trains no further; --patience ends it that many epochs after the
    best. Each history equals the uninterrupted run's first epochs."""
    numbers = lambda r: [{k: v for k, v in h.items() if "seconds" not in k} for h in r["history"]]
    full = _run(tmp_path, "full", epochs=6)
    hr = [h["hr@5"] for h in full["history"]]
    target = hr[1]  # reached at epoch 2 at the latest
    first = next(i for i, v in enumerate(hr) if v >= target) + 1
    stopped = _run(tmp_path, "target", epochs=6, stop_at=target)
    assert len(stopped["history"]) == first and f"at epoch {first}" in stopped["stopped"]
    assert numbers(stopped) == numbers(full)[:first]
    again = _run(tmp_path, "target", epochs=8, stop_at=target)  # resumed: nothing more
    assert numbers(again) == numbers(stopped)
    best = history.select_best(full["history"], "hr@5")["epoch"]
    if best + 1 < 6:  # a later epoch did not improve on the best: patience 1 stops there
        patient = _run(tmp_path, "patience", epochs=6, patience=1)
        assert len(patient["history"]) <= best + 1
        assert numbers(patient) == numbers(full)[: len(patient["history"])]


def test_stop_reason_against_a_hand_written_history():
    h = [{"epoch": e, "rmse": v} for e, v in enumerate([0.9, 0.8, 0.85, 0.84, 0.83], 1)]
    assert history.stop_reason(h, "rmse", "min", stop_at=0.8).endswith("at epoch 2")
    assert history.stop_reason(h, "rmse", "min", stop_at=0.79) is None
    assert history.stop_reason(h, "rmse", "min", patience=3) is not None  # epochs 3-5
    assert history.stop_reason(h, "rmse", "min", patience=4) is None
    assert history.stop_reason(h[:2], "rmse", "min", patience=1) is None


def test_l2_penalty_by_hand():
    config = ModelConfig(
        model="neumf", num_factors=2, layers=(4, 2), reg_mf=0.1, reg_layers=(0.2, 0.3)
    )
    model = create_model(config, 3, 4)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    users, items, weights = jnp.array([0, 2]), jnp.array([1, 1]), jnp.array([1.0, 0.0])
    p = jax.tree.map(np.asarray, params["params"])
    expected = (
        0.1
        * (np.sum(p["mf_user"]["embedding"][0] ** 2) + np.sum(p["mf_item"]["embedding"][1] ** 2))
        + 0.2
        * (np.sum(p["mlp_user"]["embedding"][0] ** 2) + np.sum(p["mlp_item"]["embedding"][1] ** 2))
        + 0.3 * np.sum(p["mlp_dense_0"]["kernel"] ** 2)
    )
    got = losses.l2_penalty(params, {"users": users, "items": items}, weights,
                            tables=_tables(model), reg_mf=config.reg_mf,
                            reg_layers=config.reg_layers)  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_row_sparse_training_learns_too(tmp_path):
    result = _run(tmp_path, "row_sparse", epochs=6, lazy_embeddings=True)
    assert result["best"]["hr@5"] > 3 * 5 / 51


def test_grouped_batches_train_neumf_too(tmp_path):
    model = ModelConfig(model="neumf", num_factors=8, layers=(16, 8))
    result = _run(tmp_path, "grouped", epochs=6, model=model, batch_layout="grouped")
    assert result["best"]["hr@5"] > 3 * 5 / 51
    assert result["config"]["train"]["batch_layout"] == "grouped"


def test_nan_loss_stops_with_the_epoch(tmp_path):
    with pytest.raises(DivergedError, match="epoch 1"):
        train_and_evaluate(
            DATA,
            ModelConfig(model="gmf", num_factors=8),
            TrainConfig(epochs=2, batch_size=64, learning_rate=1e30, learner="sgd"),
            EvalConfig(top_k=5),
            tmp_path / "nan",
        )


def test_train_epoch_is_deterministic_and_donates_state():
    dev = interactions.from_data(DATA)
    model = create_model(ModelConfig(model="gmf", num_factors=4), DATA.num_users, DATA.num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tx = optim.make_optimizer("adam", 0.01)
    make = functools.partial(batching.epoch_batches, num_neg=2, batch_size=32)
    epoch = train.make_train_epoch(make_loss_fn(model.apply, ModelConfig(model="gmf")), tx, make)
    outs = []
    for _ in range(2):
        state = train.create_train_state(jax.tree.map(jnp.copy, params), tx)
        state, loss = epoch(state, dev, jax.random.key(5))
        outs.append((float(loss), np.asarray(state.params["params"]["mf_user"]["embedding"])))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert int(state.epoch) == 1 and int(state.step) == batching.num_steps(
        len(DATA.train_users), num_neg=2, batch_size=32
    )


PACKED_CASES = {  # name -> (model config, learner, batch layout, packed?)
    "neumf-adam": (
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4)),
        "adam",
        "shuffled",
        True,
    ),
    "neumf-kernel-l2-grouped-adamw": (  # a penalty on the kernels only: the rows are not read
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_layers=(0.0, 0.3)),
        "adamw",
        "grouped",
        True,
    ),
    "gmf-adagrad": (ModelConfig(model="gmf", num_factors=4), "adagrad", "shuffled", True),
    "neumf-rows-l2": (  # the penalty reads the rows: per-table autodiff, unpacked
        ModelConfig(model="neumf", num_factors=4, layers=(8, 4), reg_mf=0.1, reg_layers=(0.2, 0.3)),
        "adam",
        "shuffled",
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(PACKED_CASES))
def test_packed_dense_epochs_are_bitwise_optax_on_the_model_tables(case):
    """Dense training runs its epochs on the tables packed one array per batch id
    (`tables.packed_dense_step`) unless the L2 penalty reads their rows; against
    `train.dense_step` on the model's own tables (no `tables=`): two epochs with the same
    losses, parameters and optimiser state, bit for bit, for any elementwise optimiser and
    either batch layout; the state between epochs in the model's layout."""
    config, learner, layout, packs = PACKED_CASES[case]
    dev = interactions.from_data(DATA)
    model = create_model(config, DATA.num_users, DATA.num_items)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    tables = _tables(model)
    loss_fn = make_loss_fn(model.apply, config, tables)
    tx = optim.make_optimizer(learner, 0.01)
    make = functools.partial(batching.LAYOUTS[layout], num_neg=3, batch_size=64)
    first = jax.tree.map(lambda x: x[0], _as_arrays(make(jax.random.key(0), dev)))
    groups = packing(loss_fn, params, tables, first)
    if not packs:
        assert groups is None
    else:
        sides = [(ids, [p[1] for p, _ in cols]) for ids, cols in groups]
        assert sides == (
            [("items", ["mf_item"]), ("users", ["mf_user"])]
            if config.model == "gmf"
            else [("items", ["mf_item", "mlp_item"]), ("users", ["mf_user", "mlp_user"])]
        )
    packed = train.make_train_epoch(loss_fn, tx, make, tables=tables)
    per_table = train.make_train_epoch(loss_fn, tx, make)
    states = [train.create_train_state(jax.tree.map(jnp.copy, params), tx)
              for _ in range(2)]  # fmt: skip
    for epoch in range(2):
        key = jax.random.key(epoch)
        (states[0], loss), (states[1], reference) = (
            packed(states[0], dev, key),
            per_table(states[1], dev, key),
        )
        assert float(loss) == float(reference)
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
    jax.tree.map(np.testing.assert_array_equal, states[0], states[1])
    assert not np.array_equal(  # it trained
        states[0].params["params"]["mf_user"]["embedding"], params["params"]["mf_user"]["embedding"]
    )


def test_row_sparse_training_refuses_other_learners_after_pre_training(tmp_path):
    """NeuMF continues after pre-training with --pretrain_learner: that one must be row-sparse."""
    parts = {"mf_pretrain": str(tmp_path / "gmf"), "mlp_pretrain": str(tmp_path / "mlp")}
    model = ModelConfig(model="neumf", num_factors=4, layers=(8, 4), **parts)
    train_config = TrainConfig(lazy_embeddings=True, pretrain_learner="adagrad")
    configs = tasks.configs(tasks.ncf, model=model, train=train_config, eval=EvalConfig())
    with pytest.raises(UsageError, match="not --pretrain_learner=adagrad"):
        tasks.ncf.build(DATA, configs)
