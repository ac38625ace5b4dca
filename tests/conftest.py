import os
import tempfile

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


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (ray.init is slow on 2 cores)."""
    import ray

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             configure_logging=False)
    yield ray
    ray.shutdown()




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
