"""The command line of every training script: flags of one task -> configs -> data -> the loop.

A script is `cli.define(task)` at import time and `cli.run(task)` under `__main__`. A user's
mistake (`ncf_jax.errors`: a bad option, a bad data line, a missing file, a resume that does
not match) prints one line `SCRIPT: error: MESSAGE` on stderr and exits 2 (usage) or 1 (data,
files, checkpoints), without a traceback; `--verbosity=1` shows the traceback too. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import logging

from ncf_jax import flags, lock, loop, reporting, sharding, xla
from ncf_jax.commands import entry
from ncf_jax.commands.entry import guarded  # noqa: F401  (scripts wrap their main with cli.guarded)
from ncf_jax.data.digest import data_digest
from ncf_jax.errors import UsageError


def define(task, *, defaults: dict | None = None) -> None:
    """Defines the flags of `task` (and --workdir); `defaults` override field defaults."""
    flags.define_flags(task.CONFIGS, defaults=defaults)
    flags.define_workdir_flag()
    flags.define_compilation_cache_flag()


def summary(results: dict, workdir) -> str:
    """The lines a finished run prints: the selected epoch's metrics, then each baseline's."""
    best = reporting.format_metrics(results["best"]) if "best_std" not in results else ", ".join(
        f"{k}={v:.4f}±{results['best_std'][k]:.4f}" for k, v in results["best"].items()
    )  # fmt: skip
    lines = [
        f"{results['model']} on {results['dataset']}: best epoch {results['best_epoch']} "
        f"({results['select_epoch']}) {best} -> {workdir}"
    ]
    baseline = results.get("baseline", {})
    if "best" in baseline:  # a second record run by the loop (e.g. the model without features)
        lines.append(f"baseline: {reporting.format_metrics(baseline['best'])}")
    elif "popularity" in baseline:
        lines.append(f"most-popular baseline: {reporting.format_metrics(baseline['popularity'])}")
    return "\n".join(lines)


def train_main(task, argv) -> dict:
    """Flags -> configs -> data -> the loop; returns results (also in WORKDIR)."""
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {argv[1:]} (flags look like --name=value)")
    logging.info("start: %s", pathlib.Path(sys.argv[0]).stem)  # imports and flags done
    if cache := flags.compilation_cache_from_flags():
        xla.use_compilation_cache(cache)  # before the first compile
    sharding.maybe_initialize_distributed()  # multi-host jobs: before any device is touched
    configs = flags.configs_from_flags(task.CONFIGS)  # all validated before any data is read
    workdir = flags.workdir_from_flags()
    with lock.hold(workdir):  # before the data: a second run on WORKDIR stops at once
        data = task.load_data(configs)
        logging.info(
            "data: %s", json.dumps(data.describe() if hasattr(data, "describe") else data.stats())
        )
        record = task.build(data, configs, extra={"flags": flags.flag_values()})
        results = loop.run(loop.with_data_digest(record, data_digest(data)), workdir)
    print(summary(results, workdir))
    return results


def run(task) -> None:
    """`app.run` of `task`'s training script (`ncf_jax.commands.entry`: one line per user error)."""
    entry.run(lambda argv: train_main(task, argv))
