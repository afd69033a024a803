"""Stage: the job. Joining the processes of a multi-process run, and what only one of them does.

A multi-process job is several copies of one script, each driving its own devices; together
they see one global device list, and `ncf_jax.sharding` builds one mesh over it. Every process
runs the same program on the same (replicated) data: the epoch and the evaluators are jitted over
the global mesh, XLA inserts the collectives (gloo on CPU, NCCL on GPU), and each fetched result
is fully replicated, so every process holds the same losses and metrics. Files that are not
global arrays (options.json, results.json, results.md, history.png) are written by process 0
only; Orbax checkpoints are written by all of them together.

Failure: a process that dies stops sending heartbeats, and the coordination service ends every
other process after `NCF_JAX_HEARTBEAT_TIMEOUT` seconds ("Terminating process because the JAX
distributed service detected fatal errors ... another task died"); a process that exits with an
error ends the others after at most `NCF_JAX_SHUTDOWN_TIMEOUT` seconds (its shutdown barrier
fails). No process waits forever in a collective for a peer that is gone.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

# Seconds; JAX's own defaults are 300 / 100 / 300. A lost peer should end a job in about a
# minute, not five.
TIMEOUTS = {"initialization_timeout": ("NCF_JAX_INIT_TIMEOUT", 300),
            "heartbeat_timeout_seconds": ("NCF_JAX_HEARTBEAT_TIMEOUT", 60),
            "shutdown_timeout_seconds": ("NCF_JAX_SHUTDOWN_TIMEOUT", 60)}  # fmt: skip


def cluster_env() -> str | None:
    """Which multi-process launcher, if any, started this process."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "jax"
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return "slurm"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "openmpi"
    return None


def timeouts() -> dict[str, int]:
    """`jax.distributed.initialize`'s timeouts, from NCF_JAX_*_TIMEOUT (seconds) or defaults."""
    return {arg: int(os.environ.get(name, default)) for arg, (name, default) in TIMEOUTS.items()}


def initialize() -> bool:
    """Calls `jax.distributed.initialize()` when this is one process of a multi-process job.

    Detected: `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, our names
    for the two values JAX cannot guess outside a cluster), a Slurm step with more than one task,
    or an Open MPI job of more than one rank (JAX reads their own variables). Call it first,
    before anything touches a device. Returns True when the process joined a cluster.
    """
    if jax.distributed.is_initialized():
        return True
    kind = cluster_env()
    if kind is None:
        return False
    kwargs = timeouts()
    if kind == "jax":  # JAX reads JAX_COORDINATOR_ADDRESS itself only on some clusters
        kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    logging.info(
        "joined a %s cluster: process %d of %d, %d local / %d global devices",
        kind,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_main() -> bool:
    """True in the process that writes the job's files (process 0; the only one, usually)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process got here (a no-op in a one-process job)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def agree(ok: bool) -> bool:
    """Process 0's `ok`, in every process (a decision only process 0 can make, e.g. whether it
    got WORKDIR's lock), so all of them go on or stop together."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(ok)))


def fetch(tree):
    """`jax.device_get(tree)` that also works for arrays split over several processes' devices:
    those are gathered first (every process gets the whole value)."""

    def get(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(get, tree)
