import os

import pytest
import torch

# CI has 2 cores. Alone, a test may use both; under pytest-xdist (`make test` runs two workers) each worker keeps to
# one intra-op thread, so that two workers never oversubscribe the 2 cores.
# The processes the tests start (scripts, resumed runs, torchrun ranks) inherit one thread each the same way.
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)  # module-scoped fixtures run before the autouse fixture below


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(TORCH_THREADS)
    yield


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(args: list[str], cwd, timeout: int = 240, nproc: int = 2):
    """``torchrun --nproc_per_node=NPROC`` on localhost with this checkout importable; returns the CompletedProcess."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    return subprocess.run(
        [torchrun, f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )


@pytest.fixture
def torchrun():
    """Run ``torchrun --nproc_per_node=2 ARGS`` (see run_torchrun)."""
    return run_torchrun


@pytest.fixture(autouse=True)
def _internal_errors_raise(monkeypatch):
    """A bug of ours must fail a test with its traceback, never pass as a refusal (exit 2) or as findings (exit 1):
    the CLI's catch-all re-raises under SSDAUDIT_RAISE_INTERNAL, and CliRunner lets the exception reach pytest."""
    from typer.testing import CliRunner

    monkeypatch.setenv("SSDAUDIT_RAISE_INTERNAL", "1")
    invoke = CliRunner.invoke

    def invoke_raising(self, *args, **kwargs):
        kwargs.setdefault("catch_exceptions", False)
        return invoke(self, *args, **kwargs)

    monkeypatch.setattr(CliRunner, "invoke", invoke_raising)
    yield
