"""The benchmarks' command lines: absl flags, listed by --helpshort, and one table function."""

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


def test_helpshort_of_a_benchmark_lists_its_flags():
    proc = _run("ncf_epoch", "--helpshort")
    # absl ends every --help with exit status 1 (app.HelpFlag), after the usage on stdout.
    assert proc.returncode == 1, proc.stderr
    assert "Try --helpfull" in proc.stdout and "Traceback" not in proc.stderr
    listed = {line.split(":")[0].strip() for line in proc.stdout.splitlines() if "  --" in line}
    assert listed == {f"--{name}" for name in FLAGS["ncf_epoch"]}


BAD = {  # benchmark -> [(a bad flag value, what its absl error says)]
    "data_pipeline": [("--cases=1m,5m", "unknown case")],
    "ncf_epoch": [("--models=neumf-8,neumf-99", "unknown or empty --models"),
                  ("--layouts=sorted", "unknown or empty --layouts")],
    "lazy_step": [("--adam=dense,sgd", "unknown or empty --adam"),
                  ("--shapes=ml-5m", "unknown or empty --shapes")],
}  # fmt: skip

# Imports the benchmark as its __main__ would (a flag clash with what it imports fails here),
# lists its key flags (those --helpshort shows) and parses argv lists with its own flags and
# validators, all in one process (a process per case cost 2-5 s of imports): the key flags and
# "ok" or the absl error of each argv.
PARSE = """
import importlib, json, sys
from absl import flags
name = "benchmarks." + sys.argv[1]
module = importlib.import_module(name)
getattr(module, "define_flags", lambda: None)()  # as its __main__ does
out = []
for argv in json.loads(sys.argv[2]):
    try:
        flags.FLAGS(["prog", *argv])
        out.append("ok")
    except flags.Error as error:
        out.append(str(error))
    flags.FLAGS.unparse_flags()
# Run as a script, its flags and those benchmarks.common adopts belong to sys.argv[0].
key = sorted({f.name for m in (name, sys.argv[0]) for f in flags.FLAGS.get_key_flags_for_module(m)})
print(json.dumps({"key_flags": key, "parsed": out}))
"""


@pytest.mark.parametrize("module", sorted(FLAGS))
def test_flags_are_its_own_defaults_parse_and_bad_values_are_one_absl_error(module):
    """The benchmark defines exactly its flags (what --helpshort lists); the defaults pass every
    flag validator; each bad value fails its own with its message (as a command line, absl
    prints that message and exits 1 before main runs)."""
    cases = [[]] + [[flag] for flag, _ in BAD.get(module, [])]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", PARSE, module, json.dumps(cases)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["key_flags"] == sorted(FLAGS[module])
    got = out["parsed"]
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
