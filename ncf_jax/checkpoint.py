"""Stage: checkpoint. Orbax save / restore of a TrainState plus JSON metadata.

A run keeps two managers under WORKDIR/checkpoints/: `latest` (for resuming after a crash; the
two newest epochs, so a damaged newest one falls back to the one before) and `best` (the
selected epoch's model, which `--mf_pretrain` / recommendation commands read).
The state is saved as a plain nested dict (`flax.serialization.to_state_dict`) and restored
onto a template, so any pytree state — optax states included — round-trips exactly.

Multi-process jobs: every process calls `save` and `restore` (Orbax writes each array's shards
from the process that holds them, the JSON meta from process 0, and synchronises the processes).
Without a template the state is read as host NumPy arrays, so a checkpoint of a job on other
devices or processes (e.g. a multi-process run's best model) loads in any one process.
"""

from __future__ import annotations

import logging as logging_std
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from ncf_jax.errors import CheckpointError


class _QuietOrbax(logging_std.Filter):
    """Orbax logs a dozen INFO lines per save through absl; keep the epoch log readable."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        return record.levelno >= logging_std.WARNING or "orbax" not in record.pathname


logging.get_absl_handler().addFilter(_QuietOrbax())


def _manager(
    directory: str | pathlib.Path, keep: int = 1, *, asynchronous: bool = False
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=asynchronous
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(), options=options, item_handlers=handlers
    )


class Writer:
    """A checkpoint folder held open for a run's saves: `save(step, state, meta)` writes `state`
    (any Flax-serialisable pytree) and JSON `meta` as `step`, keeping the newest `keep` steps.

    Saves are asynchronous in a one-process job: `save` returns once the arrays are copied off
    the device, and the files are written in the background while training goes on (Orbax
    finishes one save before it starts the next); `close` (the end of the `with` block) waits
    for the last one, so a run that returns has every checkpoint on disk. A run killed
    mid-write leaves an unfinished step that Orbax never lists, and resuming takes the newest
    finished one. One Orbax manager
    serves all of a run's saves: opening and closing one per save doubled a small state's save
    (0.18 s against 0.09 s a save for a tiny NeuMF, two saves an epoch). The manager opens at
    the first save, so a folder never saved to is not created.
    """

    def __init__(self, directory, keep: int = 1):
        self._directory, self._keep, self._manager = directory, keep, None

    def save(self, step: int, state, meta: dict) -> None:
        if self._manager is None:
            # Multi-process jobs save synchronously: two managers' asynchronous commits each
            # wait at one cross-process barrier, and Orbax names those barriers alike.
            single = jax.process_count() == 1
            self._manager = _manager(self._directory, self._keep, asynchronous=single)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(serialization.to_state_dict(state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save(directory, step: int, state, meta: dict, *, keep: int = 1) -> None:
    """Saves `state` and JSON `meta` as `step` of `directory` once (`Writer` for many saves)."""
    with Writer(directory, keep) as writer:
        writer.save(step, state, meta)


def latest_step(directory) -> int | None:
    if not pathlib.Path(directory).exists():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def all_steps(directory) -> list[int]:
    """The saved steps, oldest first ([] without any)."""
    if not pathlib.Path(directory).exists():
        return []
    with _manager(directory) as manager:
        return sorted(manager.all_steps())


def restore(directory, template=None, *, step: int | None = None):
    """(state, meta) of `step` (default: the latest); `state` takes `template`'s structure when
    given, else it is the saved nested dict of NumPy arrays. FileNotFoundError if empty."""
    step = latest_step(directory) if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {directory}")
    with _manager(directory) as manager:
        if template is None:  # NumPy leaves: Orbax would put them on the saving job's devices
            saved = manager.item_metadata(step)["state"]
            target = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), saved)
        else:
            target = serialization.to_state_dict(template)
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


def restore_intact(directory, template):
    """(state, meta) of the newest step that can be read; older ones are tried when the newest
    is damaged (and a warning says so). CheckpointError when none can be read."""
    failures = []
    for step in reversed(all_steps(directory)):
        try:
            state, meta = restore(directory, template, step=step)
        except Exception as error:  # orbax, JSON and shape errors all mean "cannot use this one"
            failures.append(f"step {step}: {type(error).__name__}: {str(error)[:200]}")
            continue
        if failures:
            logging.warning("checkpoint(s) of %s unreadable (%s); resumed from step %d",
                            directory, "; ".join(failures), step)  # fmt: skip
        return state, meta
    raise CheckpointError(
        f"no readable checkpoint in {directory} ({'; '.join(failures) or 'no steps'}): delete "
        f"{pathlib.Path(directory).parent.parent} (or its checkpoints/ folder) to start fresh"
    )


def restore_params(workdir_or_checkpoint) -> tuple[dict, dict]:
    """(params, meta) of a run's best model: accepts a run's WORKDIR or a checkpoint folder."""
    path = pathlib.Path(workdir_or_checkpoint)
    for candidate in (path / "checkpoints" / "best", path / "best", path):
        if latest_step(candidate) is not None:
            state, meta = restore(candidate)
            return state["params"], meta
    raise CheckpointError(
        f"no checkpoint found in {path} (looked in {path}/checkpoints/best, {path}/best, {path}):"
        " name the WORKDIR of a finished training run"
    )
