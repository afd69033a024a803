"""The command line answers a user's mistake with one message and an exit status, no traceback:
bad options (2), bad data and missing files (1), another task's option (absl's unknown flag),
a resume with other options (2), damaged checkpoints (an older one, or 1). Scripts list exactly
their task's flags."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ncf_jax.data import synthetic, write_ncf

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, env=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", **(env or {}))
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _error_lines(proc) -> list[str]:
    """stderr without absl's log lines (they start with I/W + a date)."""
    return [line for line in proc.stderr.splitlines() if line and line[0] not in "IW"]


def _one_error(proc, code: int, text: str) -> str:
    lines = _error_lines(proc)
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and text in lines[0], lines
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_ncf(synthetic.planted(num_users=40, num_items=50, num_test_negatives=20), folder, "tiny")
    return folder


def _ncf(tiny, workdir, *extra):
    return ["experiments.neumf", "--dataset=ncf:tiny", f"--data_dir={tiny}",
            f"--workdir={workdir}", "--epochs=1", "--batch_size=64", "--num_factors=4",
            "--layers=8,4", "--top_k=5", *extra]  # fmt: skip


def test_invalid_option_is_one_line_and_exit_2(tiny, tmp_path):
    proc = _run(*_ncf(tiny, tmp_path / "w", "--num_factors=-3"))
    _one_error(proc, 2, "neumf: error: --num_factors must be > 0, got -3")
    assert not (tmp_path / "w").exists()
    # --verbosity=1 (absl's debug level) shows the traceback for those who want it.
    verbose = _run(*_ncf(tiny, tmp_path / "w", "--num_factors=-3", "--verbosity=1"))
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_bad_data_line_names_file_and_line(tmp_path):
    folder = tmp_path / "data"
    write_ncf(synthetic.planted(num_users=40, num_items=50, num_test_negatives=20), folder, "bad")
    path = folder / "bad.train.rating"
    lines = path.read_text().splitlines()
    lines[2] = "1\tseven\t1\t0"
    path.write_text("\n".join(lines) + "\n")
    proc = _run("experiments.gmf", "--dataset=ncf:bad", f"--data_dir={folder}",
                f"--workdir={tmp_path / 'w'}")  # fmt: skip
    _one_error(proc, 1, f"gmf: error: {path}:3:")


def test_offline_download_says_where_to_put_the_file(tmp_path):
    proc = _run("experiments.neumf", "--dataset=ml-1m", f"--data_dir={tmp_path}",
                f"--workdir={tmp_path / 'w'}", env={"NCF_JAX_OFFLINE": "1"})  # fmt: skip
    message = _one_error(proc, 1, "neumf: error:")
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert str(tmp_path / "ml-1m.zip") in message


def test_each_script_knows_only_its_tasks_options():
    proc = _run("experiments.rating", "--num_neg=4", "--workdir=/tmp/never")
    assert proc.returncode != 0 and "Unknown command line flag 'num_neg'" in proc.stderr
    assert "Traceback" not in proc.stderr
    rating = _run("experiments.rating", "--helpshort").stdout
    neumf = _run("experiments.neumf", "--helpshort").stdout
    assert "--y_range" in rating and "--lr_schedule" in rating and "--num_neg" not in rating
    assert "--num_neg" in neumf and "--batch_layout" in neumf and "--y_range" not in neumf
    assert "--data_seed" in neumf and "--workdir" in neumf and "--cosine" not in neumf


def test_resume_refuses_other_options_accepts_more_epochs_and_survives_a_damaged_checkpoint(
    tiny, tmp_path
):
    """One workdir through its life: trained, refused with other options, resumed for more
    epochs, then its newest checkpoint damaged (falls back to the one before), then all of them
    (stops with a message)."""
    workdir = tmp_path / "w"
    assert _run(*_ncf(tiny, workdir)).returncode == 0
    changed = _run(*_ncf(tiny, workdir, "--learning_rate=0.01", "--num_factors=16", "--epochs=2"))
    message = _one_error(changed, 2, f"neumf: error: {workdir} holds a run trained with other")
    assert "--learning_rate: 0.001 -> 0.01" in message and "--num_factors: 4 -> 16" in message
    assert "--epochs" not in message and "another --workdir" in message
    more = _run(*_ncf(tiny, workdir, "--epochs=2"))
    assert more.returncode == 0, more.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["config"]["train"]["epochs"] == 2  # the record describes the run

    latest = workdir / "checkpoints" / "latest"
    newest = latest / "2" / "meta" / "metadata"
    newest.write_text(newest.read_text()[:20])  # truncated JSON
    proc = _run(*_ncf(tiny, workdir, "--epochs=3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from step 1" in proc.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    for step in latest.iterdir():
        (step / "meta" / "metadata").write_text("{")
    broken = _run(*_ncf(tiny, workdir, "--epochs=4"))
    message = _one_error(broken, 1, f"neumf: error: no readable checkpoint in {latest}")
    assert "to start fresh" in message
