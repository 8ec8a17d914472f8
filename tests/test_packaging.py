"""The distribution builds, passes twine's checks, and the installed wheel works away from the source tree:
both console entry points and the pytest plugin are declared, and the commands run on a model file."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_wheel_and_sdist_pass_twine_check(dist):
    pytest.importorskip("twine")
    files = sorted(dist.iterdir())
    assert {f.suffix for f in files} == {".whl", ".gz"}
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installed_wheel_runs_outside_the_repository(dist, tmp_path):
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "ssdaudit = ssdaudit.cli:main" in entry_points and "ssdlite = ssdlite_model.cli:main" in entry_points
    assert "[pytest11]" in entry_points
    assert any(n.startswith("ssdaudit/gradflow/") for n in names) and any(n.startswith("ssdlite_model/train/") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy first; its dependencies from this venv
    where = subprocess.run([sys.executable, "-c", "import ssdaudit, ssdlite_model; print(ssdaudit.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    version = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "--version"], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("ssdaudit ")
    params = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "params", str(ROOT / "examples" / "fixed_modulelist.py"),
                             "--no-roundtrip", "--format", "json"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert params.returncode == 0, params.stderr[-2000:]
    assert '"registered_params": 4577792' in params.stdout
