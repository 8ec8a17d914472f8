import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep tests deterministic and avoid oversubscription.
    torch.set_num_threads(2)
    yield


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(args: list[str], cwd, timeout: int = 240):
    """``torchrun --nproc_per_node=2`` on localhost with this checkout importable; returns the CompletedProcess."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    return subprocess.run(
        [torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )


@pytest.fixture
def torchrun():
    """Run ``torchrun --nproc_per_node=2 ARGS`` (see run_torchrun)."""
    return run_torchrun
