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

from absl import app, logging

from ncf_jax import flags, lock, reporting, sharding
from ncf_jax.errors import USER_ERRORS, UsageError
from ncf_jax.tasks import train_and_evaluate


def define(task, *, defaults: dict | None = None) -> None:
    """Defines the flags of `task` (and --workdir); `defaults` override field defaults."""
    flags.define_flags(task.CONFIGS, defaults=defaults)
    flags.define_workdir_flag()


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
    sharding.maybe_initialize_distributed()  # multi-host jobs: before any device is touched
    configs = flags.configs_from_flags(task.CONFIGS)  # all validated before any data is read
    workdir = flags.workdir_from_flags()
    with lock.hold(workdir):  # before the data: a second run on WORKDIR stops at once
        data = task.load_data(configs)
        logging.info(
            "data: %s", json.dumps(data.describe() if hasattr(data, "describe") else data.stats())
        )
        extra = {"flags": flags.flag_values()}
        results = train_and_evaluate(task, data, configs, workdir, extra=extra)
    print(summary(results, workdir))
    return results


def guarded(main):
    """`main(argv)` whose user errors end in one line on stderr and their exit status."""

    def run_main(argv):
        try:
            main(argv)  # app.run would sys.exit() with whatever main returned
        except USER_ERRORS as error:
            if flags.show_tracebacks():
                raise
            script = pathlib.Path(sys.argv[0]).stem
            sys.stderr.write(f"{script}: error: {error}\n")
            sys.exit(getattr(error, "exit_code", 1))

    return run_main


def run(task) -> None:
    """`app.run` of `task`'s training script."""
    app.run(guarded(lambda argv: train_main(task, argv)))
