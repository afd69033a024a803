"""What a user must be able to trust, each case run as the command a user types: the main job
without ../shared (derived data, or one line saying what to fetch), one run per WORKDIR (a
second stops at once, a dead holder's lock is taken over), and a clean stop on divergence."""

import fcntl
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import checkpoint, lock, loop
from ncf_jax.commands import compare, paper
from ncf_jax.data import synthetic, write_ncf
from ncf_jax.errors import DivergedError, WorkdirBusyError

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAIN = ["experiments.neumf", "--flagfile=experiments/configs/ml100k_neumf.flags"]


def _run(args, tmp_path, **env):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", NCF_JAX_DATA=str(tmp_path / "cache"),
               **env)  # fmt: skip
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _one_line(proc, code: int, *texts: str) -> str:
    """The one error line (absl's log lines start with I/W and a date); no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line and line[0] not in "IW"]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert all(text in lines[0] for text in texts), lines[0]
    return lines[0]


def _tiny_u_data(cache: pathlib.Path) -> None:
    """A GroupLens-layout u.data in the cache root: 6 users, ids from 1, 130 items."""
    rng = np.random.default_rng(0)
    rows = [(u, i, 3, int(t)) for u in range(1, 7)
            for t, i in enumerate(rng.choice(np.arange(1, 131), 15, replace=False))]  # fmt: skip
    (cache / "ml-100k").mkdir(parents=True)
    (cache / "ml-100k" / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))


def test_main_job_offline_without_data_says_what_to_fetch(tmp_path):
    proc = _run([*MAIN, f"--data_dir={tmp_path / 'absent'}", f"--workdir={tmp_path / 'w'}"],
                tmp_path, NCF_JAX_OFFLINE="1")  # fmt: skip
    _one_line(proc, 1, "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
              str(tmp_path / "cache" / "ml-100k.zip"), "ml-100k.train.rating")  # fmt: skip
    assert [p.name for p in (tmp_path / "w").iterdir()] == [".lock"]
    assert (tmp_path / "w" / ".lock").read_text() == ""  # released


def test_one_run_per_workdir(tmp_path):
    """A held WORKDIR stops a second run at once, naming the holder; a lock file left by a dead
    process is taken over with a warning (with the main job on data derived from u.data)."""
    workdir = tmp_path / "w"
    args = [*MAIN, f"--data_dir={tmp_path / 'absent'}", f"--workdir={workdir}", "--epochs=1"]
    with lock.hold(workdir):
        busy = _run(args, tmp_path)
    _one_line(busy, 1, f"PID {os.getpid()}", "wait for that run to end", "another --workdir")
    assert [p.name for p in workdir.iterdir()] == [".lock"]

    _tiny_u_data(tmp_path / "cache")
    dead = {"host": "elsewhere", "pid": 999999999, "started": "then", "command": "old"}
    (workdir / ".lock").write_text(json.dumps(dead))  # its holder was killed: no lock held
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "taking over the lock of PID 999999999 on elsewhere" in proc.stderr
    assert json.loads((workdir / "results.json").read_text())["dataset"] == "ncf:ml-100k"
    assert (workdir / ".lock").read_text() == ""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_ncf(synthetic.planted(num_users=40, num_items=50, num_test_negatives=20), folder, "tiny")
    return folder


def test_divergence_is_one_line_and_keeps_the_record(tiny, tmp_path):
    workdir = tmp_path / "w"
    proc = _run(["experiments.neumf", "--dataset=ncf:tiny", f"--data_dir={tiny}",
                 f"--workdir={workdir}", "--epochs=3", "--batch_size=64", "--num_factors=4",
                 "--layers=8,4", "--top_k=5", "--learner=sgd", "--learning_rate=1e30"],
                tmp_path)  # fmt: skip
    _one_line(proc, 1, "diverged in epoch 1", "loss is nan", "--learning_rate")
    results = json.loads((workdir / "results.json").read_text())
    assert results["diverged"].startswith("epoch 1") and "hr@5" in results["init"]
    assert "history" not in results and "diverged" in (workdir / "results.md").read_text()


def _task(bad_epoch: int, what: str) -> loop.Task:
    """Epoch e has loss 1/e and hr@1 e/10, until `bad_epoch` makes `what` NaN."""

    def train_epoch(state, data, key):
        epoch = state.epoch + 1
        loss = jnp.where((epoch == bad_epoch) & (what == "loss"), jnp.nan, 1.0 / epoch)
        return state.replace(epoch=epoch, params={"w": state.params["w"] + 1}), loss

    def evaluate(params, key):
        hr = params["w"][0] / 10
        return {"hr@1": jnp.where((params["w"][0] == bad_epoch) & (what == "hr"), jnp.inf, hr)}

    state = loop.FitState(epoch=jnp.int32(0), params={"w": jnp.zeros(2)})
    return loop.Task(state=state, train_epoch=train_epoch, data=None, evaluate=evaluate,
                     key=jax.random.key(0), select="hr@1", epochs=5, results={"model": "m"},
                     options={"a": 1})  # fmt: skip


@pytest.mark.parametrize(
    "what, shown", [("loss", "the training loss is nan"), ("hr", "hr@1 is inf")]
)
def test_divergence_writes_the_epochs_before_and_keeps_their_checkpoints(tmp_path, what, shown):
    with pytest.raises(DivergedError, match=f"epoch 3: {shown}.*epochs 1-2 are in"):
        loop.run(_task(3, what), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2] and results["best_epoch"] == 2
    assert results["diverged"] == f"epoch 3: {shown}"
    assert (tmp_path / "history.png").is_file()
    assert checkpoint.all_steps(tmp_path / "checkpoints" / "latest") == [1, 2]
    state, _ = checkpoint.restore(tmp_path / "checkpoints" / "latest")
    np.testing.assert_array_equal(state["params"]["w"], [2.0, 2.0])  # the last finite one


@pytest.mark.parametrize("suite", ["paper", "compare", "cell"])
def test_suites_and_their_cells_hold_their_workdir(tmp_path, suite):
    """A suite's WORKDIR, or a run's (each cell of a suite is one), held by another process:
    it stops at once, naming the holder."""
    holder = {"host": "h", "pid": 7, "started": "now", "command": "x"}
    (tmp_path / ".lock").write_text(json.dumps(holder))
    with open(tmp_path / ".lock") as held:  # another open file: a lock this `hold` cannot share
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(WorkdirBusyError, match=f"{tmp_path} is in use by PID 7 on h"):
            if suite == "compare":
                compare.run_suite(compare.CompareConfig(dataset="ncf:x", models=("toppop",)),
                                  tmp_path)  # fmt: skip
            elif suite == "paper":
                base = paper.PAPER_OPTIONS | {"dataset": "ncf:x", "epochs": 1, "num_seeds": 1,
                                              "seed": 0}  # fmt: skip
                paper.reproduce(None, base, tmp_path, ["table2"], log=lambda _: None)
            else:
                loop.run(_task(0, "none"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
