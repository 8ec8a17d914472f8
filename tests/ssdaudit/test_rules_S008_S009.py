"""``ssdaudit watch`` at save time (S008, S009): a checkpoint the script saves is compared with the live training
state; each missing piece the run uses is named once, at the torch.save line, and the exact twins (``--fixed``) and
state the run does not use (RNG without randomness, no scheduler) are not flagged."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor.runner import run_watched

SCRIPTS = Path(__file__).resolve().parents[1] / "data" / "resume"

MISSING = [
    ("optimizer_momentum", "optimizer state", "momentum_buffer of 4 tensors"),
    ("adam_moments", "optimizer state", "exp_avg of 4 tensors"),
    ("scheduler", "scheduler", "LambdaLR"),
    ("grad_scaler", "GradScaler", "scale"),
    ("rng_dropout", "RNG states", "dropout `2`"),
    ("shuffle_global_rng", "RNG states", "global torch RNG"),
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _s_findings(script: str, *args: str) -> list:
    report = run_watched(["python", str(SCRIPTS / f"{script}.py"), *args], steps=12)
    return [f for f in report.findings if f.rule in ("S008", "S009")]


@pytest.mark.parametrize("script,piece,words", MISSING, ids=[m[0] for m in MISSING])
def test_the_missing_piece_is_named_at_the_save_line(script: str, piece: str, words: str) -> None:
    found = _s_findings(script)
    assert [(f.rule, f.subject) for f in found] == [("S008", piece)], found
    assert words in found[0].message
    assert found[0].location is not None and found[0].location.path.endswith(f"{script}.py")
    assert "torch.save" in (SCRIPTS / f"{script}.py").read_text().splitlines()[found[0].location.line - 1] or \
        "save" in (SCRIPTS / f"{script}.py").read_text().splitlines()[found[0].location.line - 1]


@pytest.mark.parametrize("script", [m[0] for m in MISSING] + ["epoch_counter", "data_position", "weights_not_loaded"])
def test_the_twins_and_complete_checkpoints_are_clean(script: str) -> None:
    assert _s_findings(script, "--fixed") == []


def test_a_bare_state_dict_lacks_the_optimizer_but_needs_no_counter(tmp_path: Path) -> None:
    script = tmp_path / "bare.py"
    script.write_text(
        "import torch\nfrom torch import nn\nm = nn.Linear(3, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)\n"
        "for i in range(4):\n    opt.zero_grad()\n    m(torch.ones(2, 3)).sum().backward()\n    opt.step()\n"
        "    torch.save(m.state_dict(), 'w.pt')\n")
    report = run_watched(["python", str(script)], steps=4)
    # the weights alone may be an export: a note, not a warning
    assert [(f.subject, f.severity) for f in report.findings if f.rule == "S008"] == [
        ("optimizer state, weights only", Severity.INFO)]


def test_the_whole_model_saved_needs_no_counter_and_stays_loadable(tmp_path: Path) -> None:
    """``torch.save(model, path)`` is bare weights too (no counter asked for), and under the doctor the saved model
    pickles and loads: nothing of the doctor's sits on the module (no hook, no instance attribute)."""
    script = tmp_path / "whole.py"
    script.write_text(
        "import torch\nfrom torch import nn\nm = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for i in range(4):\n    opt.zero_grad()\n    m(torch.ones(2, 3)).sum().backward()\n    opt.step()\n"
        f"    torch.save(m, {str(tmp_path / 'm.pt')!r})\n"
        f"m2 = torch.load({str(tmp_path / 'm.pt')!r}, weights_only=False)\n"
        "assert not m2._forward_hooks and not m2._forward_pre_hooks and 'zero_grad' not in vars(m2)\n")
    report = run_watched(["python", str(script)], steps=10)
    assert report.steps == 4 and [f.rule for f in report.findings] == []


@pytest.mark.parametrize("whole", [True, False], ids=["objects pickled whole", "state_dicts"])
def test_a_checkpoint_of_whole_objects_holds_what_their_state_dicts_hold(tmp_path: Path, whole: bool) -> None:
    """torch.save({"model": model, "opt": opt, "sched": sched, "rng": ...}) pickles the optimizer and the scheduler
    themselves: their state is in the file, as in the state_dict twin (a new user's trial found S008 warnings here)."""
    script = tmp_path / "objects.py"
    pieces = ('{"model": model, "opt": opt, "sched": sched, "rng": torch.get_rng_state()}' if whole else
              '{"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), '
              '"rng": torch.get_rng_state()}')
    script.write_text(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))\n"
        "opt = torch.optim.Adam(model.parameters(), lr=1e-3)\nsched = torch.optim.lr_scheduler.StepLR(opt, 100)\n"
        "x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))\n"
        "for step in range(6):\n    opt.zero_grad()\n    nn.functional.cross_entropy(model(x), y).backward()\n"
        f"    opt.step()\n    sched.step()\n    if step == 4:\n        torch.save({pieces}, {str(tmp_path / 'all.pt')!r})\n")
    report = run_watched(["python", str(script)], steps=6)
    assert report.steps == 6 and [f.rule for f in report.findings] == []


def test_weights_saved_from_a_wrapper(tmp_path: Path) -> None:
    script = tmp_path / "dp.py"
    script.write_text(
        "import torch\nfrom torch import nn\nnet = nn.Linear(3, 1)\nmodel = nn.DataParallel(net)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for i in range(3):\n    opt.zero_grad()\n    model(torch.ones(2, 3)).sum().backward()\n    opt.step()\n"
        "    torch.save({'model': model.state_dict(), 'opt': opt.state_dict(), 'step': i}, 'w.pt')\n"
        "    torch.save({'model': model.module.state_dict(), 'opt': opt.state_dict(), 'step': i}, 'w2.pt')\n")
    report = run_watched(["python", str(script)], steps=3)
    s = [f for f in report.findings if f.rule.startswith("S")]
    assert [f.rule for f in s] == ["S009"]
    assert s[0].location is not None and s[0].location.line == 10
