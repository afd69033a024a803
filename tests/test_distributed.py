"""Multi-process jobs on one machine: two CPU processes joined by `jax.distributed` on 127.0.0.1
(gloo collectives) train, evaluate, checkpoint and resume like one process with as many devices.

The jobs are the real scripts (`python -m experiments.neumf`, `.rating`, `.two_tower`) on tiny data,
started by `Job` with the launcher's variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID). They run concurrently in two phases (the module fixture `jobs`), every process
under a deadline, so nothing here can hang: a process still running at its deadline is killed and
the test fails with the tail of its log.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import checkpoint, distributed, loop
from ncf_jax.data import synthetic, write_ncf

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEADLINE = 240  # seconds per job; a job takes 20-60 s on a loaded 2-core machine
HEARTBEAT = 10  # NCF_JAX_HEARTBEAT_TIMEOUT of the jobs: a dead peer ends the others after this
NCF = ["--model=neumf", "--num_factors=4", "--layers=8,4", "--batch_size=64", "--top_k=5"]
FULL = ["--model=gmf", "--num_factors=4", "--batch_size=64", "--top_k=5", "--eval_protocol=full"]
RATING = ["--model=biased_mf", "--num_factors=4", "--batch_size=32", "--learning_rate=0.03"]
TOWERS = ["--embed_dim=4", "--batch_size=64", "--top_k=5", "--learning_rate=0.01", "--num_seeds=2"]
CACHE = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
RTOL, ATOL = 1e-5, 1e-6  # float32 sums in another order (the gradient all-reduce), two epochs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """`processes` copies of `python -m module flags`, each with `devices` host CPU devices."""

    def __init__(self, root: pathlib.Path, name: str, module: str, flags: list[str], *,
                 processes: int, devices: int, workdir: str | None = None):  # fmt: skip
        self.workdir = root / (workdir or name)
        self.logs = [root / f"{name}.{k}.log" for k in range(processes)]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JAX_", "SLURM_", "OMPI_", "XLA_"))}  # fmt: skip
        env |= {"JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1", "NCF_JAX_DATA": str(root),
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                "NCF_JAX_HEARTBEAT_TIMEOUT": str(HEARTBEAT), "NCF_JAX_SHUTDOWN_TIMEOUT": "30",
                "NCF_JAX_INIT_TIMEOUT": "120"}  # fmt: skip
        env |= {k: os.environ[k] for k in CACHE if k in os.environ}  # conftest's test-run cache
        if processes > 1:
            env |= {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}",
                    "JAX_NUM_PROCESSES": str(processes)}  # fmt: skip
        data = ["--dataset=ncf:tiny", f"--data_dir={root / 'data'}", "--data_cache=false"]
        command = [sys.executable, "-m", module, *data, *flags, f"--workdir={self.workdir}"]
        self.started = time.monotonic()
        run = lambda k: subprocess.Popen(command, cwd=ROOT, stdout=self.logs[k].open("w"),
                                         stderr=subprocess.STDOUT,
                                         env=env | {"JAX_PROCESS_ID": str(k)})  # fmt: skip
        self.processes = [run(k) for k in range(processes)]

    def log(self, k: int = 0) -> str:
        return self.logs[k].read_text(errors="replace")

    def tails(self) -> str:
        return "\n".join(f"--- process {k}:\n{self.log(k)[-3000:]}" for k in range(len(self.logs)))

    def kill(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()

    def wait(self, timeout: float = DEADLINE) -> list[int]:
        """Exit statuses; kills every process and fails when one is still running at
        `timeout` seconds after the start."""
        try:
            for p in self.processes:
                p.wait(max(1.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.workdir.name} still running after {timeout} s:\n{self.tails()}")
        return [p.returncode for p in self.processes]

    def wait_for(self, k: int, text: str, timeout: float = DEADLINE) -> None:
        while text not in self.log(k):
            if self.processes[k].poll() is not None or time.monotonic() > self.started + timeout:
                self.kill()
                pytest.fail(f"{self.workdir.name}: process {k} never logged {text!r}:\n"
                            f"{self.tails()}")  # fmt: skip
            time.sleep(0.1)


def kill_one(job: Job, victim: int) -> dict:
    """SIGKILLs process `victim` once it logged epoch 2 (so epoch 1 is checkpointed); how long
    the others took to exit."""
    job.wait_for(victim, "epoch   2  loss")
    os.kill(job.processes[victim].pid, signal.SIGKILL)
    killed = time.monotonic()
    codes = job.wait()
    return {"codes": codes, "seconds": time.monotonic() - killed}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Phase 1: a two-process NCF job killed in epoch 3, its one-process twin (as many devices),
    full ranking, rating and two-tower (two seeds) jobs and their twins. Phase 2: the killed job
    resumed to epoch 4."""
    root = tmp_path_factory.mktemp("jobs")
    write_ncf(synthetic.planted(48, 60, per_user=10, num_test_negatives=30), root / "data", "tiny")
    t0 = time.monotonic()
    new = lambda name, module, flags, p, d: Job(root, name, module, flags, processes=p, devices=d)
    # epochs is resume-safe: the killed 20-epoch job resumes as a 4-epoch one
    started = {
        "ncf_mp": new("ncf_mp", "experiments.neumf", [*NCF, "--epochs=20"], 2, 1),
        "ncf_sp": new("ncf_sp", "experiments.neumf", [*NCF, "--epochs=4"], 1, 2),
        "full_mp": new("full_mp", "experiments.neumf", [*FULL, "--epochs=2"], 2, 2),
        "full_sp": new("full_sp", "experiments.neumf", [*FULL, "--epochs=2"], 1, 4),
        "rating_mp": new("rating_mp", "experiments.rating", [*RATING, "--epochs=2"], 2, 1),
        "rating_sp": new("rating_sp", "experiments.rating", [*RATING, "--epochs=2"], 1, 2),
        "towers_mp": new("towers_mp", "experiments.two_tower", [*TOWERS, "--epochs=2"], 2, 1),
        "towers_sp": new("towers_sp", "experiments.two_tower", [*TOWERS, "--epochs=2"], 1, 2),
    }
    try:
        out = {"killed": kill_one(started["ncf_mp"], victim=1), "root": root}
        out["killed"]["log"] = started["ncf_mp"].log(0)
        out |= {name: (job, job.wait()) for name, job in started.items() if name != "ncf_mp"}
        resumed = Job(root, "resumed", "experiments.neumf", [*NCF, "--epochs=4"], processes=2,
                      devices=1, workdir="ncf_mp")  # fmt: skip
        out["resumed"] = (resumed, resumed.wait())
    finally:
        for job in started.values():
            job.kill()
    out["seconds"] = time.monotonic() - t0
    print(f"multi-process jobs took {out['seconds']:.0f} s; the survivor of the kill exited "
          f"{out['killed']['seconds']:.1f} s after it")  # fmt: skip
    return out


# --------------------------------------------------------------------------------- checks
def results(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def assert_same_run(mp: Job, sp: Job) -> None:
    """Every epoch's loss and metrics, the selection and the final parameters of the job equal
    the one-process run's, to RTOL / ATOL."""
    got, want = results(mp.workdir), results(sp.workdir)
    assert got["best_epoch"] == want["best_epoch"]
    assert len(got["history"]) == len(want["history"])
    for g, w in zip([got["init"], *got["history"]], [want["init"], *want["history"]], strict=True):
        for name in (k for k in w if "seconds" not in k):
            assert g[name] == pytest.approx(w[name], rel=RTOL, abs=ATOL), name
    (g_state, _), (w_state, _) = (checkpoint.restore(j.workdir / "checkpoints" / "latest")
                                  for j in (mp, sp))  # fmt: skip
    flat = lambda tree: jax.tree_util.tree_flatten_with_path(tree)[0]
    for (path, g), (_, w) in zip(flat(g_state["params"]), flat(w_state["params"]), strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=str(path))


def assert_finished(job: Job, codes: list[int]) -> None:
    assert codes == [0] * len(codes), job.tails()
    summaries = [[line for line in job.log(k).splitlines() if " best epoch " in line]
                 for k in range(len(codes))]  # fmt: skip
    assert summaries[0] and all(s == summaries[0] for s in summaries), summaries  # same metrics


def test_a_killed_process_ends_the_job_with_a_clear_error_in_bounded_time(jobs):
    killed = jobs["killed"]
    assert killed["codes"][0] != 0 and killed["codes"][1] == -signal.SIGKILL
    assert killed["seconds"] < HEARTBEAT + 50, killed  # heartbeat timeout plus load slack
    assert "another task died" in killed["log"], killed["log"][-3000:]


def test_resumed_ncf_job_equals_one_process_with_as_many_devices(jobs):
    job, codes = jobs["resumed"]
    assert_finished(job, codes)
    assert all("resumed from" in job.log(k) for k in range(2)), job.tails()
    assert len(results(job.workdir)["history"]) == 4
    assert_same_run(job, jobs["ncf_sp"][0])
    assert checkpoint.latest_step(job.workdir / "checkpoints" / "best") is not None


def test_full_ranking_job_on_four_devices_equals_one_process(jobs):
    job, codes = jobs["full_mp"]
    assert_finished(job, codes)
    assert "coverage@5" in results(job.workdir)["history"][0]
    assert_same_run(job, jobs["full_sp"][0])


def test_rating_job_is_data_parallel_and_equals_one_process(jobs):
    job, codes = jobs["rating_mp"]
    assert_finished(job, codes)
    assert_same_run(job, jobs["rating_sp"][0])


def test_two_tower_replicas_job_is_data_parallel_and_equals_one_process(jobs):
    job, codes = jobs["towers_mp"]
    assert_finished(job, codes)
    assert_same_run(job, jobs["towers_sp"][0])
    assert [r["seed"] for r in results(job.workdir)["seeds"]] == [0, 1]


# ----------------------------------------------------------------------- in this process
def test_only_process_zero_writes_the_run_files(tmp_path, monkeypatch):
    state = loop.FitState(epoch=jnp.int32(0), params={"w": jnp.zeros(2)})
    task = loop.Task(
        state=state, data=None, key=jax.random.key(0), select="hr@1", epochs=2,
        train_epoch=lambda s, data, key: (s.replace(epoch=s.epoch + 1), jnp.float32(0.5)),
        evaluate=lambda params, key: {"hr@1": jnp.float32(1.0)}, results={}, options={"a": 1},
    )  # fmt: skip
    files = ("options.json", "results.json", "results.md", "history.png")
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    loop.run(task, tmp_path / "other")
    assert checkpoint.latest_step(tmp_path / "other" / "checkpoints" / "latest") == 2
    assert not any((tmp_path / "other" / name).exists() for name in files)
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    loop.run(task, tmp_path / "main")
    assert all((tmp_path / "main" / name).exists() for name in files)


def test_timeouts_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("NCF_JAX_HEARTBEAT_TIMEOUT", "7")
    monkeypatch.delenv("NCF_JAX_SHUTDOWN_TIMEOUT", raising=False)
    got = distributed.timeouts()
    assert got["heartbeat_timeout_seconds"] == 7 and got["shutdown_timeout_seconds"] == 60
    assert distributed.fetch({"x": jnp.arange(3)})["x"].tolist() == [0, 1, 2]
