"""What every benchmark shares: the timing rule and the record of where a figure was taken.

Timing rule: one untimed call compiles; then the median of `reps` calls, each ended by
`jax.block_until_ready` before the clock is read. The flags several benchmarks share (--reps,
--out_dir) are defined here, once.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
from absl import app, flags


def define_common_flags(*, reps: int, out_dir: str | None = None) -> None:
    """Define --reps (default `reps`) and, when `out_dir` is given, --out_dir; call at import time.

    They are made key flags of the script being run, so its `--helpshort` lists them beside its own.
    """
    help_reps = "timed calls per case, after one untimed compiling call; the median is reported"
    flags.DEFINE_integer("reps", reps, help_reps, lower_bound=1)
    names = ["reps"]
    if out_dir is not None:
        flags.DEFINE_string("out_dir", out_dir, "folder for the results files")
        names.append("out_dir")
    for name in names:  # absl names the __main__ module by sys.argv[0]
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def reject_positional(argv: list[str]) -> None:
    """A benchmark takes flags only: a stray word is a mistake, as it was under argparse."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")


def median_seconds(fn, reps: int) -> tuple[float, float]:
    """(median seconds of `fn()` over `reps` calls, seconds of the first, compiling call)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), compile_s


def git_revision() -> str:
    """Short HEAD, with "+dirty" when the working tree has changes."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def environment() -> dict:
    """Device, versions, git revision and load average, to print beside each figure."""
    return {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "git": git_revision(),
        "load_average": round(os.getloadavg()[0], 2),
    }


def report_head(title: str, module: str, env: dict) -> list[str]:
    """The opening lines of a benchmark's markdown report: title, the command, the environment."""
    command = " ".join([f"python -m {module}", *sys.argv[1:]])
    environment_line = "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items())
    return [f"# {title}", "", f"    {command}", "", environment_line, ""]


def write_outputs(outputs: dict) -> None:
    """Writes each {path: text} whose path is not empty (a benchmark's --out, --json_out)."""
    for path, text in outputs.items():
        if path:
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(path).write_text(text)
