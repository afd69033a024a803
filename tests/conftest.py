"""Test set-up: several host CPU devices so sharding tests run anywhere (set before JAX loads)."""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the test run, inherited by the scripts the tests start: the same tiny
# programs compile once. A compiled program is the same program, so results do not change.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller's; workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = OWN_CACHE = tempfile.mkdtemp(prefix="ncf_jax_xla_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data():
    """The real data beside the checkout (../shared/data), or a skip saying why."""
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own dataset cache root, never the user's ~/.cache/ncf_jax."""
    root = tmp_path_factory.mktemp("ncf_jax_cache")
    monkeypatch.setenv("NCF_JAX_DATA", str(root))
    return root


def pytest_sessionfinish(session):
    """The test run's compilation cache goes when the run (not a worker) ends."""
    if not hasattr(session.config, "workerinput") and "OWN_CACHE" in globals():
        shutil.rmtree(OWN_CACHE, ignore_errors=True)
