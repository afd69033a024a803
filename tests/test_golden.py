"""Golden numbers: short runs of every task, asserted to the last digit.

Each case is a task and its options (flag names, as a user writes them), trained for two epochs
on tiny synthetic data with fixed seeds. `tests/golden.json` holds what the code produced when it
was recorded; a refactor that changes any loss or metric, even in the last bit, fails here.

XLA compiles for the host processor, so the summation order (and the last bits) can differ on
another CPU: the values are compared exactly where the recording processor is this one, and to
1e-4 relative elsewhere (the test says which). Record again, deliberately, with

    python tests/test_golden.py --record
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys

# As tests/conftest.py: eight host devices, so the recording runs what the tests run.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ncf_jax import tasks  # noqa: E402
from ncf_jax.data import synthetic  # noqa: E402
from ncf_jax.data.clicks import build_click_data  # noqa: E402
from ncf_jax.data.types import InteractionData  # noqa: E402

GOLDEN = pathlib.Path(__file__).with_name("golden.json")
NCF = {"num_factors": 4, "layers": "8,4", "epochs": 2, "batch_size": 64, "learning_rate": 0.01}
NCF |= {"top_k": 5}


def _ncf_cases() -> dict:
    """Every model with the paper's shuffled batches and dense Adam; each batch layout and
    optimiser on NeuMF (all four tables) and MF (its bias tables); the pairwise loss."""
    variants = [(m, "shuffled", False) for m in ("gmf", "mlp", "neumf", "mf")]
    variants += [("neumf", "shuffled", True), ("neumf", "grouped", False),
                 ("neumf", "grouped", True), ("mf", "grouped", True)]  # fmt: skip
    cases = {}
    for model, layout, lazy in variants:
        name = f"ncf_{model}_{layout}" + ("_lazy" if lazy else "")
        options = NCF | {"model": model, "batch_layout": layout, "lazy_embeddings": lazy}
        cases[name] = ("ncf", options)
    cases["ncf_mf_bpr"] = ("ncf", NCF | {"model": "mf", "loss": "bpr", "batch_layout": "grouped"})
    pretrain = {"mf_pretrain": "@ncf_gmf_shuffled", "mlp_pretrain": "@ncf_mlp_shuffled"}
    cases["ncf_neumf_pretrained"] = ("ncf", NCF | {"model": "neumf"} | pretrain)
    cases["ncf_neumf_seeds"] = ("ncf", NCF | {"model": "neumf", "seed": 3, "num_seeds": 2})
    cases["ncf_neumf_full"] = ("ncf", NCF | {"model": "neumf", "eval_protocol": "full"})
    return cases


TWO_TOWER = {"embed_dim": 8, "epochs": 2, "batch_size": 64, "learning_rate": 0.01, "top_k": 5}
TWO_TOWER |= {"eval_protocol": "full", "model": "two_tower"}
RATING = {"num_factors": 4, "epochs": 2, "batch_size": 32, "learning_rate": 0.03}
CLICKS = {"model": "feature_ncf", "layers": "16,16", "epochs": 2, "batch_size": 64}
CLICKS |= {"learning_rate": 0.01, "top_k": 2}
CASES = _ncf_cases() | {
    f"two_tower_{loss}": ("two_tower", TWO_TOWER | {"loss": loss, "num_neg": 3})
    for loss in ("bce", "softmax", "in_batch")
}
CASES |= {
    "rating_biased_mf": ("rating", RATING | {"model": "biased_mf", "lr_schedule": "cosine"}),
    "rating_mlp": ("rating", RATING | {"model": "rating_mlp", "layers": "8,4", "dropout": 0.1}),
    "clicks_feature_ncf": ("clicks", CLICKS | {"dropout": 0.1}),
}


# ------------------------------------------------------------------------------- tiny data
def ncf_data() -> InteractionData:
    return synthetic.planted(num_users=48, num_items=60, per_user=10, num_test_negatives=30)


def two_tower_data() -> InteractionData:
    return synthetic.planted(num_users=64, num_items=80, per_user=12, num_clusters=4)


def rating_data() -> InteractionData:
    rng = np.random.default_rng(0)
    num_users, num_items = 30, 25
    matrix = np.clip(3.0 + 0.8 * rng.normal(size=(num_users, 2)) @ rng.normal(size=(2, num_items)),
                     1.0, 5.0)  # fmt: skip
    users, items = np.divmod(np.arange(num_users * num_items), num_items)
    test = rng.random(len(users)) < 0.1
    split = lambda mask, prefix: {
        f"{prefix}_users": users[mask].astype(np.int32),
        f"{prefix}_items": items[mask].astype(np.int32),
        f"{prefix}_ratings": matrix[users, items][mask].astype(np.float32),
        f"{prefix}_timestamps": np.zeros(int(mask.sum()), np.int64),
    }
    return InteractionData(
        name="planted",
        num_users=num_users,
        num_items=num_items,
        **split(~test, "train"),
        **split(test, "test"),
        test_negatives=np.zeros((int(test.sum()), 0), np.int32),
        test_negatives_mask=np.zeros((int(test.sum()), 0), bool),
        user_ids=np.arange(num_users) + 1,
        item_ids=np.arange(num_items) + 1,
    )


def click_data():
    rng = np.random.default_rng(0)
    n = 1200
    x, c = rng.random(n), rng.choice(["a", "b", "c", "d"], n)
    logit = 6 * (x - 0.5) + np.where(np.isin(c, ["a", "b"]), 2.0, -2.0)
    frame = pd.DataFrame(
        {"user": rng.integers(0, 30, n), "item": rng.integers(0, 20, n),
         "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8),
         "timestamp": np.zeros(n, np.int64), "x": x, "c": c}
    )  # fmt: skip
    return build_click_data(frame, ["x"], ["c"], name="planted", split="random", seed=0,
                            test_fraction=0.2)  # fmt: skip


# ----------------------------------------------------------------------- running one case
DATA = {"ncf": ncf_data, "two_tower": two_tower_data, "rating": rating_data, "clicks": click_data}


def run_case(task: str, options: dict, workdir: pathlib.Path, workdirs: dict) -> dict:
    options = {k: str(workdirs[v[1:]]) if str(v).startswith("@") else v for k, v in options.items()}
    module = tasks.TASKS[task]
    configs = tasks.configs_from_options(module, options)
    # No history.png: plotting is tested elsewhere and costs 0.4 s a case.
    return tasks.train_and_evaluate(module, DATA[task](), configs, workdir, plot=False)


def digest(results: dict) -> dict:
    """What must not change: losses and metrics of every epoch, the selection, the init."""
    keep = lambda entry: {k: v for k, v in entry.items() if "seconds" not in k}
    out = {
        "best_epoch": results["best_epoch"],
        "best": results["best"],
        "init": results["init"],
        "history": [keep(h) for h in results["history"]],
    }
    if "seeds" in results:
        out["seeds"] = [[keep(h) for h in s["history"]] for s in results["seeds"]]
    if "baseline" in results:
        out["baseline"] = results["baseline"]
    return out


ISA = ("sse4", "avx", "fma", "f16c", "amx", "vnni", "bf16")  # what XLA's CPU codegen may use


def processor() -> str:
    """The model name and the vector extensions XLA compiles for: "AMD EPYC" alone names
    machines with and without AVX-512, whose float sums differ in the last bits."""
    name, isa = platform.processor(), set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            isa = {f for f in value.split() if f.startswith(ISA) or f in ISA}
            break
    return f"{name} [{' '.join(sorted(isa))}]"


def run_all(root: pathlib.Path) -> dict:
    workdirs, out = {}, {}
    for name, (task, options) in CASES.items():
        workdirs[name] = root / name
        out[name] = digest(run_case(task, options, workdirs[name], workdirs))
    return out


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_numbers_are_the_recorded_ones(produced, name):
    golden = json.loads(GOLDEN.read_text())
    want, got = golden["cases"][name], produced[name]
    if golden["processor"] == processor() and golden["jax"] == jax.__version__:
        assert got == want, f"{name} changed (recorded on this processor and jax: exact)"
    else:  # another CPU's codegen may reorder float sums; the structure must still match
        flat = lambda tree: jax.tree_util.tree_flatten_with_path(tree)[0]
        assert [p for p, _ in flat(got)] == [p for p, _ in flat(want)]
        for (path, g), (_, w) in zip(flat(got), flat(want), strict=True):
            assert g == pytest.approx(w, rel=1e-4, abs=1e-6), (name, path)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cases = run_all(pathlib.Path(tmp))
    record = {"processor": processor(), "jax": jax.__version__, "cases": cases}
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(f"recorded {len(cases)} cases in {GOLDEN}")
