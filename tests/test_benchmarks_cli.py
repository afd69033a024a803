"""The benchmarks' command lines: absl flags, listed by --helpshort, and one table helper."""

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


@pytest.mark.parametrize("module", sorted(FLAGS))
def test_default_flags_parse(module):
    """--only_check_args parses and validates the flags, then exits 0 before main runs."""
    proc = _run(module, "--only_check_args")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "module, flag, message",
    [
        ("data_pipeline", "--cases=1m,5m", "unknown case"),
        ("ncf_epoch", "--models=neumf-8,neumf-99", "unknown or empty --models"),
        ("ncf_epoch", "--layouts=sorted", "unknown or empty --layouts"),
        ("lazy_step", "--adam=dense,sgd", "unknown or empty --adam"),
        ("lazy_step", "--shapes=ml-5m", "unknown or empty --shapes"),
    ],
)
def test_a_bad_flag_value_is_one_absl_error(module, flag, message):
    proc = _run(module, flag, "--only_check_args")
    assert proc.returncode != 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_benchmark_parses_or_tabulates_by_hand():
    for module in FLAGS:
        text = (ROOT / "benchmarks" / f"{module}.py").read_text()
        assert "argparse" not in text, module
        assert '" | ".join' not in text, module
        assert "markdown_table" in text and "app.run(main)" in text, module
