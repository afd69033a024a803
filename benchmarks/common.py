"""What every benchmark shares: the timing rule and the record of where a figure was taken.

Timing rule: one untimed call compiles; then the median of `reps` calls, each ended by
`jax.block_until_ready` before the clock is read.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import jax


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
