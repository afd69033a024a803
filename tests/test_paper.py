"""The paper suite end to end on tiny synthetic data: every table and figure, shared cells trained
once, per-replica pre-training, and a suite interrupted between cells resuming without
retraining the finished ones."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ncf_jax import checkpoint
from ncf_jax.commands import paper
from ncf_jax.commands.paper import suite
from ncf_jax.data import synthetic
from ncf_jax.errors import UsageError

DATA = synthetic.planted(num_users=24, num_items=40, per_user=6, num_test_negatives=15)
# One factor, two negatives, two depths: 4 (Table 2) + 3 (Figure 7, 1 negative) + 1 (MLP-0)
# + 3 baselines (MF-BPR, iALS, ItemKNN).
GRID = paper.Grid(factors=(8,), negatives=(1, 4), hidden_layers=(0, 3), figure5_factor=8,
                  figure6_factor=8, figure7_factor=8)  # fmt: skip
BASE = paper.PAPER_OPTIONS | {"dataset": "ncf:tiny", "epochs": 1, "num_seeds": 2, "seed": 0}


class Interrupt(Exception):
    pass


def test_tower_follows_the_flagfiles():
    assert suite.tower(8) == (64, 32, 16, 8)  # experiments/configs/ml100k_mlp_8.flags
    assert suite.tower(16) == (128, 64, 32, 16)
    assert suite.tower(8, 0) == (8,)  # MLP-0: the concatenation is the predictive factors


def test_identical_configurations_are_one_cell():
    plan = paper.plan_for(paper.EXPERIMENTS, BASE)
    assert plan["table2"][(8, "with")] is not plan["figure4"][("neumf", 8)]
    assert plan["table2"][(8, "with")] == plan["figure4"][("neumf", 8)]
    assert plan["figure7"][("mlp", 4)] == plan["figure4"][("mlp", 16)]
    assert plan["tables34"][(32, 3)] == plan["figure4"][("mlp", 32)]
    assert plan["figure5"][("gmf",)] == plan["figure4"][("gmf", 8)]
    # ItemKNN has no factors: one cell along Figure 4's x axis; iALS has one per factor.
    assert plan["figure4"][("itemknn", 8)] == plan["figure4"][("itemknn", 64)]
    assert plan["figure4"][("ials", 8)] != plan["figure4"][("ials", 64)]
    assert plan["figure4"][("mf_bpr", 8)].values["loss"] == "bpr"
    cells = suite.cells_in_order(plan)
    points = sum(len(p) for p in plan.values())
    # 4 factors x 4 models, 4 x 2 + 1 baselines, 9 more negatives x 3 models, 4 more depths
    # x 4 factors.
    assert (len(cells), points) == (16 + 9 + 27 + 16, 8 + 28 + 7 + 4 + 30 + 20)
    for i, cell in enumerate(cells):  # pre-training cells come first
        assert all(cells.index(dep) < i for _, dep in cell.pretrain)
    assert len({c.name for c in cells}) == len(cells)


def test_unknown_experiment_is_a_usage_error():
    with pytest.raises(UsageError, match="figure9"):
        paper.plan_for(["figure9"], BASE)


def test_the_whole_suite_resumes_cell_by_cell(tmp_path):
    lines = []

    def interrupt_at_third(line):
        lines.append(line)
        if line.startswith("cell 3/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        paper.reproduce(DATA, BASE, tmp_path, grid=GRID, log=interrupt_at_third)
    assert len(list((tmp_path / "cells").glob("*/results.json"))) == 2
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*/results.json")}
    so_far = paper.reproduce(DATA, BASE, tmp_path, grid=GRID, log=lambda _: None, train=False)
    assert (
        so_far["cells_finished"] == [2, 11]
        and "2 of 11 cells" in (tmp_path / "paper.md").read_text()
    )

    resumed = []
    out = paper.reproduce(DATA, BASE, tmp_path, grid=GRID, log=resumed.append)
    plan = paper.plan_for(paper.EXPERIMENTS, BASE, GRID)
    cells = suite.cells_in_order(plan)
    assert len(cells) == 11 < sum(len(p) for p in plan.values())  # shared cells trained once
    trained = [line for line in resumed if line.startswith("cell ")]
    assert len(trained) == len(cells) - 2 and trained[0].startswith("cell 3/11")
    assert "left" in trained[-1] and "unknown" not in trained[-1]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not retrained

    for name in ("paper.json", "paper.md", *(f"figure{i}.png" for i in (4, 5, 6, 7))):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "paper.md").read_text()
    for title in paper.report.TITLES.values():
        assert title in md
    assert json.loads((tmp_path / "paper.json").read_text())["experiments"].keys() == plan.keys()
    row = out["experiments"]["table2"]["rows"][0]
    assert row["paper_hr@10"] == 0.684 and row["diff_hr@10"] == row["hr@10"] - 0.684
    assert row["hr@10_std"] is not None  # two seeds
    fig5 = out["experiments"]["figure5"]["rows"][0]
    hrs = [fig5[f"hr@{k}"] for k in range(1, 11)]
    assert hrs == sorted(hrs) and fig5["hr@10"] == out["experiments"]["figure4"]["rows"][0]["hr@10"]
    fig4 = {r["model"] for r in out["experiments"]["figure4"]["rows"]}
    assert {"mf_bpr", "ials", "itemknn"} < fig4  # the baselines beside GMF, MLP, NeuMF
    assert fig4 == {r["model"] for r in out["experiments"]["figure5"]["rows"]}
    curve = out["experiments"]["figure6"]["rows"][0]["curve"]
    assert [c["epoch"] for c in curve] == [0, 1] and "loss" in curve[1]

    # Nothing left to train: a third run only reads the cells back.
    again = []
    paper.reproduce(DATA, BASE, tmp_path, ["table2"], grid=GRID, log=again.append)
    assert not [line for line in again if line.startswith("cell ")]

    # NeuMF's replica k starts from GMF's and MLP's replica k.
    neumf = plan["table2"][(8, "with")]
    deps = {flag: tmp_path / "cells" / dep.name for flag, dep in neumf.pretrain}
    gmf = [checkpoint.restore_params(deps["mf_pretrain"] / "replicas" / str(k))[0] for k in (0, 1)]
    assert not np.allclose(gmf[0]["params"]["out"]["kernel"], gmf[1]["params"]["out"]["kernel"])
    results = json.loads((tmp_path / "cells" / neumf.name / "results.json").read_text())
    assert results["learner"] == "sgd"


def test_script_rejects_an_unknown_experiment(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "experiments.paper", "--dataset=ncf:tiny",
         f"--workdir={tmp_path}", "--experiments=table2,figure9"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("paper: error: --experiments")
