"""Stage: checkpoint. Orbax save / restore of a TrainState plus JSON metadata.

A run keeps two managers under WORKDIR/checkpoints/: `latest` (for resuming after a crash)
and `best` (the selected epoch's model, which `--mf_pretrain` / recommendation commands read).
The state is saved as a plain nested dict (`flax.serialization.to_state_dict`) and restored
onto a template, so any pytree state — optax states included — round-trips exactly.
"""

from __future__ import annotations

import logging as logging_std
import pathlib

import orbax.checkpoint as ocp
from absl import logging
from flax import serialization


class _QuietOrbax(logging_std.Filter):
    """Orbax logs a dozen INFO lines per save through absl; keep the epoch log readable."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        return record.levelno >= logging_std.WARNING or "orbax" not in record.pathname


logging.get_absl_handler().addFilter(_QuietOrbax())


def _manager(directory: str | pathlib.Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(), options=options, item_names=("state", "meta")
    )


def save(directory, step: int, state, meta: dict) -> None:
    """Saves `state` (any Flax-serialisable pytree) and JSON `meta` as `step`, keeping one."""
    with _manager(directory) as manager:
        manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(serialization.to_state_dict(state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        manager.wait_until_finished()


def latest_step(directory) -> int | None:
    if not pathlib.Path(directory).exists():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def restore(directory, template=None):
    """(state, meta) of the latest step; `state` takes `template`'s structure when given,
    else it is the saved nested dict of NumPy arrays. Raises FileNotFoundError if empty."""
    step = latest_step(directory)
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {directory}")
    with _manager(directory) as manager:
        target = None if template is None else serialization.to_state_dict(template)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
    state = restored["state"]
    if template is not None:
        state = serialization.from_state_dict(template, state)
    return state, restored["meta"]


def restore_params(workdir_or_checkpoint) -> tuple[dict, dict]:
    """(params, meta) of a run's best model: accepts a run's WORKDIR or a checkpoint folder."""
    path = pathlib.Path(workdir_or_checkpoint)
    for candidate in (path / "checkpoints" / "best", path / "best", path):
        if latest_step(candidate) is not None:
            state, meta = restore(candidate)
            return state["params"], meta
    raise FileNotFoundError(
        f"no checkpoint found in {path} (looked in {path}/checkpoints/best, {path}/best, {path})"
    )
