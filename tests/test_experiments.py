"""The NCF experiment scripts end to end, as a user runs them, on tiny data in NCF format."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ncf_jax.data import synthetic, write_ncf

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, check=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_ncf(synthetic.planted(num_users=40, num_items=50, num_test_negatives=20), folder, "tiny")
    return folder


def _common(tiny, workdir):
    return [
        "--dataset=ncf:tiny",
        f"--data_dir={tiny}",
        f"--workdir={workdir}",
        "--epochs=2",
        "--batch_size=64",
        "--num_factors=4",
        "--layers=16,8,4",
        "--top_k=5",
    ]


def test_gmf_mlp_then_pretrained_neumf(tiny, tmp_path):
    gmf, mlp, neumf = tmp_path / "gmf", tmp_path / "mlp", tmp_path / "neumf"
    _run("experiments.gmf", *_common(tiny, gmf), "--learning_rate=0.05")
    _run("experiments.mlp", *_common(tiny, mlp), "--learning_rate=0.05")
    proc = _run(
        "experiments.neumf",
        *_common(tiny, neumf),
        f"--mf_pretrain={gmf}",
        f"--mlp_pretrain={mlp}",
    )
    assert "neumf on ncf:tiny: best epoch" in proc.stdout
    for workdir, model in ((gmf, "gmf"), (mlp, "mlp"), (neumf, "neumf")):
        results = json.loads((workdir / "results.json").read_text())
        assert results["model"] == model and results["dataset"] == "ncf:tiny"
        assert set(results["best"]) == {"hr@5", "ndcg@5"} and len(results["history"]) == 2
        assert {"epoch", "loss", "hr@5", "ndcg@5", "train_seconds", "eval_seconds"} <= set(
            results["history"][0]
        )
        assert results["flags"]["num_factors"] == 4
        assert (workdir / "checkpoints" / "best").is_dir() and (workdir / "history.png").exists()
    neumf_results = json.loads((neumf / "results.json").read_text())
    assert neumf_results["learner"] == "sgd"  # the paper's optimiser after pre-training
    # NeuMF's first evaluation is the pre-trained mix, far above a random ranker's 5/21.
    assert neumf_results["init"]["hr@5"] > 0.4, neumf_results["init"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--num_neg=0", "--num_neg must be >= 1"),
        ("--layers=15,8", "even first entry"),
        ("--batch_layout=grouped --batch_size=3", "needs --batch_size >= 1 + --num_neg"),
    ],
)
def test_bad_flag_values_stop_before_any_work(tiny, tmp_path, flag, message):
    proc = _run("experiments.gmf", *_common(tiny, tmp_path / "w"), *flag.split(), check=False)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "w").exists()
