import os
import tempfile
import time
import warnings

import pytest
import torch

# Ray writes an auth token under $HOME/.ray and RLlib logs to ~/ray_results: keep the
# test session out of the user's home.
_SESSION_HOME = tempfile.mkdtemp(prefix="snnlab-test-home-")
os.environ["HOME"] = _SESSION_HOME
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# Keep every test offline and out of the user's home.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Each test runs in its own temp dir, with W&B's config dirs inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".cache" / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / ".local" / "wandb"))
    yield


def pytest_sessionfinish(session, exitstatus):
    # A run that collected nothing is a broken run, not a green one.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


RAY_CPUS = 2


def _start_ray():
    import ray

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             configure_logging=False)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (ray.init is slow on 2 cores)."""
    import ray

    _start_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _ray_left_clean(request):
    """After a test that used Ray: the instance runs a task and has every CPU free again within a
    minute, or the next test gets a fresh instance.

    A test that fails half-way (an Algorithm that raised while its actors were starting) can
    leave actors holding the instance's CPUs; the next test's EnvRunner would then wait for a
    CPU forever. Such a leak is reported as a warning and the instance restarted, so one
    failure stays one failure."""
    yield
    if "ray_session" not in request.fixturenames:
        return
    import ray

    if not ray.is_initialized():
        return
    problem = _ray_problem(ray)
    if problem:
        warnings.warn(f"{request.node.nodeid}: {problem}; Ray restarted for the next test")
        ray.shutdown()
        _start_ray()


_NOOP = []


def _noop_task(ray):
    """A zero-CPU Ray task that does nothing (made once: each new remote function is exported)."""
    if not _NOOP:
        # a lambda: pickled by value (a worker cannot import this test package by name)
        _NOOP.append(ray.remote(num_cpus=0)(lambda: None))
    return _NOOP[0]


def _ray_problem(ray, wait_s: float = 60.0) -> str | None:
    """Why the shared Ray instance is not fit for the next test (None: it is): it does not run a
    zero-CPU task within ``wait_s``, or not all of its CPUs are free again within ``wait_s``."""
    try:
        ray.get(_noop_task(ray).remote(), timeout=wait_s)
    except Exception as e:  # a dead raylet, a lost GCS: whatever it is, the instance is unusable
        return f"Ray did not run a task ({type(e).__name__}: {e})"
    deadline = time.monotonic() + wait_s
    while (free := ray.available_resources().get("CPU", 0.0)) < RAY_CPUS:
        if time.monotonic() > deadline:
            return f"{RAY_CPUS - free:g} of {RAY_CPUS} Ray CPUs still held after the test ended"
        time.sleep(0.5)
    return None


@pytest.fixture(scope="session")
def tiny_sweep(ray_session, tmp_path_factory):
    """One real supervised sweep (2 settings x 2 seeds x 3 epochs), shared by the tests that read it."""
    import contextlib
    import io
    from snnlab.cli import main

    from .helpers import TINY_SL_SWEEP

    root = tmp_path_factory.mktemp("tiny_sweep")
    path = root / "s.yaml"
    path.write_text(TINY_SL_SWEEP)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["sweep", str(path), "--storage", str(root / "runs"), "--verbose", "1"])
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "file": path,
            "storage": root / "runs", "exp": root / "runs" / "tiny"}
