"""The benchmarks' command lines: absl flags, listed by --helpshort, and one table helper."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAGS = {  # benchmark -> the flags its --helpshort must list
    "cpu_dots": ["reps", "steps"],
    "data_pipeline": ["cases"],
    "eval_speed": ["reps", "num_negatives", "sampled_chunk_size", "full_chunk_size", "dim"],
    # lazy_step imports ncf_epoch's CASES: a flag clash between the two would fail here.
    "lazy_step": ["shapes", "model", "adam", "steps", "batch_size", "reps"],
    "ncf_epoch": ["shape", "models", "adam", "batch_size", "num_neg", "reps", "layouts"],
    "seeds_speed": ["dataset", "data_dir", "model", "num_seeds", "epochs", "batch_size"],
    "throughput": [
        "models",
        "shapes",
        "batch_sizes",
        "target_samples",
        "num_neg",
        "dtype",
        "reps",
        "eval",
        "sampled_eval_users",
        "full_users",
        "full_chunk",
        "out_dir",
    ],  # fmt: skip
}


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("module", sorted(FLAGS))
def test_helpshort_lists_the_benchmarks_flags(module):
    proc = _run(module, "--helpshort")
    # absl ends every --help with exit status 1 (app.HelpFlag), after the usage on stdout.
    assert proc.returncode == 1, proc.stderr
    assert "Try --helpfull" in proc.stdout and "Traceback" not in proc.stderr
    listed = {line.split(":")[0].strip() for line in proc.stdout.splitlines() if "  --" in line}
    assert listed == {f"--{name}" for name in FLAGS[module]}


BAD = {  # benchmark -> [(a bad flag value, what its absl error says)]
    "data_pipeline": [("--cases=1m,5m", "unknown case")],
    "ncf_epoch": [("--models=neumf-8,neumf-99", "unknown or empty --models"),
                  ("--layouts=sorted", "unknown or empty --layouts")],
    "lazy_step": [("--adam=dense,sgd", "unknown or empty --adam"),
                  ("--shapes=ml-5m", "unknown or empty --shapes")],
}  # fmt: skip

# Parses argv lists with the benchmark's own flags and validators in one process (a process
# per case cost 3-5 s of imports): "ok" or the absl error of each.
PARSE = """
import importlib, json, sys
from absl import flags
module = importlib.import_module("benchmarks." + sys.argv[1])
getattr(module, "define_flags", lambda: None)()  # as its __main__ does
out = []
for argv in json.loads(sys.argv[2]):
    try:
        flags.FLAGS(["prog", *argv])
        out.append("ok")
    except flags.Error as error:
        out.append(str(error))
    flags.FLAGS.unparse_flags()
print(json.dumps(out))
"""


@pytest.mark.parametrize("module", sorted(FLAGS))
def test_default_flags_parse_and_bad_values_are_one_absl_error(module):
    """The defaults pass every flag validator; each bad value fails its own with its message
    (as a command line, absl prints that message and exits 1 before main runs)."""
    cases = [[]] + [[flag] for flag, _ in BAD.get(module, [])]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", PARSE, module, json.dumps(cases)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got[0] == "ok", got[0]
    for (flag, message), error in zip(BAD.get(module, []), got[1:], strict=True):
        assert message in error, (flag, error)


def test_a_bad_flag_value_on_the_command_line_is_one_absl_error():
    proc = _run("ncf_epoch", "--layouts=sorted", "--only_check_args")
    assert proc.returncode != 0 and "unknown or empty --layouts" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_benchmark_parses_or_tabulates_by_hand():
    for module in FLAGS:
        text = (ROOT / "benchmarks" / f"{module}.py").read_text()
        assert "argparse" not in text, module
        assert '" | ".join' not in text, module
        assert "markdown_table" in text and "app.run(main)" in text, module
