"""Each command-line entry point ends a user's mistake in one line: the message (FILE:LINE where
there is a line), no traceback, exit status 2 for usage and 1 for data, files and checkpoints;
accepted data logs its counts. One subprocess per case (docs/input-validation.md); the readers'
own cases run in-process in test_input_validation.py."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset
from ncf_jax.data.digest import data_digest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN = "0\t1\t5\t10\n0\t3\t4\t11\n1\t0\t4\t10\n1\t2\t4\t11\n2\t0\t3\t12\n2\t1\t3\t13\n"
TEST = "0\t2\t5\t20\n1\t1\t3\t20\n2\t3\t4\t20\n"
NEGATIVES = "(0,2)\t0\n(1,1)\t3\n(2,3)\t2\n"


def _run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _one_error(proc, code: int, script: str, message: str) -> str:
    """The one line that is not absl's log (I/W + date), `SCRIPT: error: ...MESSAGE...`,
    checked with the exit status and the absence of a traceback."""
    lines = [line for line in proc.stderr.splitlines() if line and line[0] not in "IW"]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), lines
    assert message in lines[0], lines
    return lines[0]


def _ncf(folder, train=TRAIN, test=TEST, negatives=NEGATIVES) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".train.rating", train), (".test.rating", test),
                         (".test.negative", negatives)):  # fmt: skip
        (folder / f"x{suffix}").write_text(text)
    return folder


def _prepare(folder, *flags):
    return _run("experiments.prepare", "--dataset=ncf:x", f"--data_dir={folder}", *flags)


@pytest.mark.parametrize(
    "files, flags, code, message",
    [
        ({"train": TRAIN + "1\t1\t5\t9\n"}, [], 1, "x.train.rating:7: training pair (1, 1) is"),
        ({}, ["--split=temporal"], 2, "--split=temporal cannot apply to --dataset=ncf:x"),
        ({}, ["--min_user_interactions=3", "--rating_threshold=4"], 2, "--rating_threshold=4.0,"),
        ({}, ["--nosuchflag"], 2, "Unknown command line flag 'nosuchflag'"),
        ({}, ["--flagfile=/nonexistent.flags"], 2, "Unable to open flagfile: [Errno 2] No such"),
        ({}, ["--num_test_negatives=many"], 2, "--num_test_negatives=many: invalid literal"),
        ({"negatives": "(0,2)\t0\n(1,1)\t3\n(2,3)\tx\n"}, [], 1, "x.test.negative:3: negative"),
    ],
)
def test_prepare_ends_a_mistake_in_one_line(tmp_path, files, flags, code, message):
    proc = _prepare(_ncf(tmp_path / "d", **files), *flags)
    _one_error(proc, code, "prepare", message)


def test_prepare_csv_and_movielens_mistakes(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("u,i,r\n1,2,3\n")
    proc = _run("experiments.prepare", f"--dataset=csv:{path}", "--csv_sep=;;")
    _one_error(proc, 2, "prepare", "--csv_sep must be one character")
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t2\t4\t5\n1\t3\t9\t6\n")
    proc = _run("experiments.prepare", "--dataset=ml-100k", f"--data_dir={tmp_path}")
    _one_error(proc, 1, "prepare", f"{tmp_path / 'ml-100k' / 'u.data'}:2: 9: rating outside 0.5..5")


def test_prepare_logs_counts_of_accepted_findings_and_rebuilds_a_damaged_cache(tmp_path):
    folder = _ncf(tmp_path / "d", train=TRAIN + "0\t1\t5\t30\n", negatives=NEGATIVES.replace(
        "(1,1)\t3", "(1,1)\t2"))  # fmt: skip
    dataset.load_dataset(DataConfig(dataset="ncf:x", data_dir=str(folder)))  # the cache
    (cache,) = dataset.default_data_dir().glob("processed/*.npz")
    cache.write_bytes(b"PK\x03\x04 not a zip any more")
    proc = _prepare(folder, "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"damaged cache {cache} (BadZipFile" in proc.stderr
    assert f"moved to {cache}.damaged; rebuilding it from the source files" in proc.stderr
    assert f"1 repeated (user, item) training lines, dropped (each pair kept once: its latest" \
        f" line) (first at {folder / 'x.train.rating'}:7)" in proc.stderr  # fmt: skip
    assert f"1 lines list an item the user is known to like (1 such negatives, masked) (first " \
        f"at {folder / 'x.test.negative'}:2)" in proc.stderr  # fmt: skip
    assert '"train_interactions": 6' in proc.stdout and '"masked_test_negatives": 1' in proc.stdout


# ---------------------------------------------------------------- training and recommend scripts
def _tiny_ml100k(folder: pathlib.Path, drop: int = 0) -> pathlib.Path:
    """u.data (8 users x 6 items) and u.item with titles, in folder/ml-100k."""
    (folder / "ml-100k").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t{10 * i + u}" for u in range(1, 9)
             for i in range(1, 7) if (u + i) % 3]  # fmt: skip
    (folder / "ml-100k" / "u.data").write_text("\n".join(lines[drop:]) + "\n")
    flags = "|".join("0" * 18 + "1")
    titles = [f"{i}|Movie {i} (1999)|01-Jan-1999||http://x/{i}|{flags}" for i in range(1, 7)]
    (folder / "ml-100k" / "u.item").write_text("\n".join(titles) + "\n")
    return folder


def _gmf(data_dir, workdir):
    return _run("experiments.gmf", "--dataset=ml-100k", f"--data_dir={data_dir}",
                f"--workdir={workdir}", "--epochs=1", "--num_factors=2", "--batch_size=64",
                "--num_test_negatives=2", "--top_k=2")  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data_dir = _tiny_ml100k(tmp_path_factory.mktemp("data"))
    workdir = tmp_path_factory.mktemp("runs") / "gmf"
    proc = _gmf(data_dir, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data_dir, workdir


def test_training_script_refuses_a_workdir_that_is_a_file_and_other_data(trained, tmp_path):
    data_dir, workdir = trained
    data = dataset.load_dataset(DataConfig(data_dir=str(data_dir), num_test_negatives=2))
    for record in ("options.json", "results.json"):  # the run's record identifies its data
        assert json.loads((workdir / record).read_text())["data_digest"] == data_digest(data)
    (tmp_path / "f").write_text("")
    _one_error(_gmf(data_dir, tmp_path / "f"), 2, "gmf", f"--workdir={tmp_path / 'f'} is a file")
    other = _tiny_ml100k(tmp_path / "other", drop=1)  # one rating fewer
    refused = _gmf(other, workdir)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "the data (digest of the prepared arrays):" in refused.stderr


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--users=99"], 2, "--users: [99] are not users of ml-100k"),
        (["--users=abc"], 2, "--users: ['abc'] are not ids of ml-100k"),
        (["--users=1", "--k=7"], 2, "--k must be in 1..6"),
        (["--data_dir_override={other}"], 2, "{workdir} was trained on other data"),
        (["--data_dir_override={titles}"], 1, "{titles}/ml-100k/u.item:3: expected 24 fields"),
    ],
)
def test_recommend_ends_a_mistake_in_one_line(trained, tmp_path, flags, code, message):
    data_dir, workdir = trained
    other = _tiny_ml100k(tmp_path / "other", drop=1)
    titles = tmp_path / "titles"
    shutil.copytree(data_dir, titles)
    item = titles / "ml-100k" / "u.item"
    item.write_text(item.read_text().replace("Movie 3 (1999)|", "Movie 3 (1999)"))
    places = {"other": other, "titles": titles, "workdir": workdir}
    flags = [flag.format(**places) for flag in flags]
    proc = _run("experiments.recommend", f"--workdir={workdir}", "--users=1", "--k=2", *flags)
    _one_error(proc, code, "recommend", message.format(**places))


def test_recommend_without_a_checkpoint(tmp_path):
    proc = _run("experiments.recommend", f"--workdir={tmp_path}", "--users=1")
    _one_error(proc, 1, "recommend", f"no checkpoint found in {tmp_path}")
