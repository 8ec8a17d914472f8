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
    assert any(n.startswith("ssdaudit/training/gradflow/") for n in names) and any(n.startswith("ssdlite_model/train/") for n in names)
    assert "ssdaudit/py.typed" in names  # the strict typing reaches users
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


# A finder that makes the heavy packages unimportable, as in the pre-commit hook's environment (typer and rich only).
_NO_TORCH = (
    "import sys\n"
    "from importlib.abc import MetaPathFinder\n"
    "BLOCKED = {'torch', 'torchvision', 'torchinfo', 'numpy', 'matplotlib'}\n"
    "class Blocker(MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in BLOCKED:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Blocker())\n"
)


def test_base_install_needs_no_torch(dist):
    """The pre-commit hook installs the base distribution: its requirements are typer, rich and libcst (the lint
    engine); torch and the rest come only with the [torch] extra (which [dev] includes)."""
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires if "extra ==" not in r)
    assert base == ["libcst", "rich", "typer"], requires
    torch_extra = [r for r in requires if 'extra == "torch"' in r]
    assert any(r.startswith("torch") for r in torch_extra) and any(r.startswith("torchvision") for r in torch_extra)


def _run_without_torch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = _NO_TORCH + f"sys.argv = ['ssdaudit', *{args!r}]\nfrom ssdaudit.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_lint_runs_without_torch_and_other_commands_say_what_to_install(tmp_path):
    (tmp_path / "net.py").write_text(
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.blocks = [nn.Linear(4, 4)]\n    def forward(self, x):\n        return self.blocks[0](x)\n")
    lint = _run_without_torch(["lint", "net.py", "--format", "sarif"], tmp_path)
    assert lint.returncode == 1, lint.stderr
    assert '"ruleId": "R001"' in lint.stdout
    rules = _run_without_torch(["rules"], tmp_path)
    assert rules.returncode == 0 and "R001" in rules.stdout, rules.stderr
    params = _run_without_torch(["params", "net.py"], tmp_path)
    assert params.returncode == 2
    assert params.stderr.strip().splitlines() == [
        "error: this command needs torch, which is not installed here: pip install 'ssdaudit[torch]' (or install "
        "PyTorch your own way; `ssdaudit lint` and `ssdaudit rules` work without it)"]
