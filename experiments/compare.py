"""Classic baselines beside GMF, MLP, NeuMF and MF, under the sampled (1 + 99) and
full-catalogue protocols (Ferrari Dacrema et al. 2021), every model searched with the same
number of trials, refitted on training + validation, tested per user (docs/comparison.md).
Writes WORKDIR/compare.json, compare.md, compare.png and per_user/; a rerun resumes. Example:

  python -m experiments.compare --dataset=ncf:ml-100k --data_dir=../shared/data/ncf \
      --workdir=runs/compare --num_seeds=3 --trials=20
"""

import os
import pathlib
import platform
import subprocess
import sys

from ncf_jax import flags
from ncf_jax.commands import compare, entry

flags.define_flags({"compare": compare.CompareConfig})
flags.define_workdir_flag("Output folder: one subfolder per model and protocol, compare.*.")


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True)
        return out.stdout.decode().strip() or "unknown"
    except OSError:
        return "unknown"


def machine() -> str:
    """The CPU's model name (Linux) or architecture, and its core count."""
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def main(argv) -> None:
    if len(argv) > 1:
        raise flags.UsageError(f"unexpected arguments: {argv[1:]}")
    suite = flags.configs_from_flags({"compare": compare.CompareConfig})["compare"]
    workdir = flags.workdir_from_flags()
    head = {"command": " ".join(["python -m experiments.compare", *sys.argv[1:]]),
            "flags": flags.flag_values(), "git_rev": git_rev(), "machine": machine()}  # fmt: skip
    result = compare.run_suite(suite, workdir, head=head)
    print(pathlib.Path(workdir, "compare.md").read_text())
    print(f"trained {len(result['ran'])} run(s) this time -> {workdir}")


if __name__ == "__main__":
    entry.run(main)
