"""Tasks: one module per task, each turning its configs and data into one `loop.Task` record.

A task module declares `CONFIGS` ({name: config class}: the options it reads, and so the flags
its scripts define), `load_data(configs)` and `build(data, configs, *, extra=None) -> Task`. A
task trained by gradient steps describes what is its own (model, loss, batches, evaluator,
selection) as an `assembly.Recipe`; `assembly.assemble` adds what they share (keys, optimiser,
state, `--num_seeds` replicas, devices). Task modules never import each other; what they share
lives in the stages below them.
"""

from __future__ import annotations

import dataclasses

from ncf_jax import config, loop
from ncf_jax.errors import UsageError
from ncf_jax.tasks import classic, clicks, ncf, rating, two_tower

TASKS = {"ncf": ncf, "two_tower": two_tower, "rating": rating, "clicks": clicks, "classic": classic}


def configs(task, **given) -> dict:
    """`task`'s configs: the `given` ones ({name: config}), defaults for the others."""
    unknown = set(given) - set(task.CONFIGS)
    if unknown:
        raise TypeError(f"{task.__name__} reads no {sorted(unknown)} config")
    return {name: given.get(name) or cls() for name, cls in task.CONFIGS.items()}


def configs_from_options(task, options: dict) -> dict:
    """`task`'s configs from {flag: value}, as its script would build them from those flags;
    an option the task does not read is a UsageError, as an unknown flag is."""
    known = {config.flag_name(f) for cls in task.CONFIGS.values() for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"{task.__name__} reads no option {unknown}")
    return {name: config.from_options(cls, options) for name, cls in task.CONFIGS.items()}


def replace(configs: dict, **changes) -> dict:
    """`configs` with fields changed: replace(c, train={"epochs": 3}, model={"num_factors": 16})."""
    return configs | {k: dataclasses.replace(configs[k], **v) for k, v in changes.items()}


def train_and_evaluate(
    task, data, configs: dict, workdir, *, extra: dict | None = None, plot: bool = True
) -> dict:
    """Builds `task`'s record for `data` and runs it in the one loop; returns results.json."""
    return loop.run(task.build(data, configs, extra=extra), workdir, plot=plot)


__all__ = [
    "TASKS",
    "classic",
    "clicks",
    "configs",
    "configs_from_options",
    "ncf",
    "rating",
    "replace",
]
__all__ += ["train_and_evaluate", "two_tower"]
