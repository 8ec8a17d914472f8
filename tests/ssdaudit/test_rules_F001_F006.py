"""F001-F006: the first non-finite value of a training run, located where it was produced from finite inputs (the
input batch, a forward operation, a backward operation, the optimizer's update), each with its clean twin; and the
deliberate non-finite values that are no finding (a causal -inf mask, -inf logits of a masked vocabulary,
ignore_index, GradScaler's skipped steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core.findings import Finding, Severity
from ssdaudit.training.doctor import Watch, watch
from ssdaudit.training.doctor.checks.nonfinite import FirstNonFinite

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve().relative_to(Path.cwd())) if Path.cwd() in Path(__file__).resolve().parents \
    else str(Path(__file__).resolve())


def line_of(text: str) -> int:
    """The line of this file that holds ``text`` (the finding's file:line points there)."""
    lines = Path(__file__).read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if text in line and "line_of(" not in line)


class Net(nn.Module):
    def __init__(self, d_in: int = 8, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(d_in, 16), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def batches(n: int, steps: int, d_in: int = 8, classes: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, d_in, generator=g), torch.randint(0, classes, (n,), generator=g)) for _ in range(steps)]


def codes(w: Watch, *, at_least: Severity = Severity.WARNING) -> set[str]:
    order = [Severity.INFO, Severity.WARNING, Severity.ERROR]
    return {f.rule for f in w.findings() if order.index(f.severity) >= order.index(at_least)}


def one(w: Watch, code: str) -> Finding:
    found = [f for f in w.findings() if f.rule == code]
    assert len(found) == 1, w.findings()
    return found[0]


@pytest.fixture(autouse=True)
def _raise_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSDAUDIT_RAISE_INTERNAL", "1")


# --- F001: the input batch ------------------------------------------------------------------------------

def corrupted_batch(bug: bool) -> Watch:
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = batches(16, 6)
    if bug:
        data[3][0][5, 2] = float("nan")
        data[3][0][11, 0] = float("inf")
    with watch(model, opt) as w:
        for x, y in data:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return w


def test_f001_names_the_batch_and_rows() -> None:
    f = one(corrupted_batch(True), "F001")
    assert "step 4" in f.message and "rows 5, 11" in f.message and "argument 0" in f.message, f.message
    assert "1 NaN" in f.message and "1 +inf" in f.message, f.message
    assert codes(corrupted_batch(False)) == set()


# --- F002: a forward operation --------------------------------------------------------------------------

class SoftTargetLoss(nn.Module):
    def __init__(self, fixed: bool) -> None:
        super().__init__()
        self.fixed = fixed

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.fixed:
            log_p = F.log_softmax(logits / 0.02, dim=-1)
        else:
            log_p = torch.log(F.softmax(logits / 0.02, dim=-1))  # F002 here
        return -(target * log_p).sum(-1).mean()


def log_of_softmax(bug: bool) -> Watch:
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = SoftTargetLoss(fixed=not bug)
    with watch(model, opt) as w:
        for x, y in batches(64, 6):
            opt.zero_grad()
            loss_fn(model(x * 3), F.one_hot(y, 4).float()).backward()
            opt.step()
    return w


def test_f002_names_module_op_and_line() -> None:
    w = log_of_softmax(True)
    # the non-finite gradients that follow (G006) are its consequence: one cause at the top
    assert [f.rule for f in w.findings() if f.caused_by is None and f.severity != Severity.INFO] == ["F002"]
    f = one(w, "F002")
    assert f.path == "SoftTargetLoss" and "`log`" in f.message and "log_softmax" in f.message, f.message
    assert f.location is not None and f.location.line == line_of("# F002 here"), f.location
    assert "-inf" in f.message and "(64, 4) float32 in [0, 1]" in f.message, f.message
    assert codes(log_of_softmax(False)) == set()


class Normalised(nn.Module):
    """Divides each row by its sum: a row of zeros (all ReLU outputs 0) is 0/0."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h / (h.sum(-1, keepdim=True) + self.eps)  # division here


def division_in_a_submodule(bug: bool, compiled: bool = False) -> Watch:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), Normalised(0.0 if bug else 1e-6), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    net: Any = torch.compile(model, backend="aot_eager") if compiled else model  # compiled forward and backward
    with watch(net, opt) as w:
        for x, y in batches(64, 5, classes=2):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    return w


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_f002_in_a_submodule_names_its_path(compiled: bool) -> None:
    """With ``torch.compile(model)`` the step is replayed on an eager copy of the module it wraps: the same finding,
    the user's module path (no ``_orig_mod.``)."""
    f = one(division_in_a_submodule(True, compiled), "F002")
    assert f.path == "2" and "`div`" in f.message and "NaN" in f.message and "eps" in f.message, f.message
    assert f.location is not None and f.location.line == line_of("# division here")
    assert codes(division_in_a_submodule(False, compiled)) == set()


# --- F003: a backward operation -------------------------------------------------------------------------

class Distance(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.proj = nn.Linear(8, 8)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = ((self.proj(a) - self.proj(b)) ** 2).sum(-1)
        return (d + self.eps).sqrt()  # sqrt here


def sqrt_of_zero(bug: bool) -> Watch:
    torch.manual_seed(0)
    model = Distance(0.0 if bug else 1e-12)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(2)
    with watch(model, opt) as w:
        for step in range(5):
            a = torch.randn(16, 8, generator=g)
            b = a.clone() if step == 2 else torch.randn(16, 8, generator=g)  # identical pairs: distance exactly 0
            opt.zero_grad()
            (model(a, b) - 1.0).pow(2).mean().backward()
            opt.step()
    return w


def test_f003_names_the_backward_op_and_its_forward_line() -> None:
    w = sqrt_of_zero(True)
    f = one(w, "F003")
    assert f.path == "Distance" and "`sqrt`" in f.message and "SqrtBackward0" in f.message, f.message
    assert "in [0, 0]" in f.message and "step 3" in f.message, f.message
    assert f.location is not None and f.location.line == line_of("# sqrt here")
    assert "F002" not in codes(w)
    assert codes(sqrt_of_zero(False)) == set()


# --- F004: the optimizer's update -----------------------------------------------------------------------

def update_overflow(bug: bool) -> Watch:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).half()
    opt = torch.optim.SGD(model.parameters(), lr=5e4 if bug else 1e-4)  # fp16 weights: |w| > 65504 is inf
    g = torch.Generator().manual_seed(3)
    with watch(model, opt) as w:
        for _ in range(6):
            x, y = torch.randn(32, 4, generator=g).half(), (10 * torch.randn(32, 1, generator=g)).half()
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    return w


def test_f004_names_the_parameter_lr_and_ratio() -> None:
    w = update_overflow(True)
    f = one(w, "F004")
    assert "learning rate 5e+04" in f.message and "although its gradient was finite" in f.message, f.message
    assert "update-to-weight ratio" in f.message and f.path.endswith(("weight", "bias")), f.message
    assert codes(w) & {"F002", "F003", "F001"} == set(), w.findings()
    assert codes(update_overflow(False)) - {"T014"} == set()  # fp16 weights without master copies: T014 is right


# --- deliberate non-finite values -----------------------------------------------------------------------

class CausalAttention(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, all_masked_row: bool = False) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-2, -1) / 8 ** 0.5
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        if all_masked_row:
            causal[0, 0] = True  # the first query sees no key at all
        scores = scores.masked_fill(causal, float("-inf"))
        return self.out(scores.softmax(-1) @ v)  # softmax here


def causal_mask(bug: bool) -> Watch:
    model = CausalAttention()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(4)
    with watch(model, opt) as w:
        for _ in range(5):
            x = torch.randn(2, 6, 8, generator=g)
            opt.zero_grad()
            model(x, all_masked_row=bug).pow(2).mean().backward()
            opt.step()
    return w


def test_causal_minus_inf_mask_is_no_finding_and_an_all_masked_row_is() -> None:
    assert codes(causal_mask(False), at_least=Severity.INFO) - {"T012"} == set()
    f = one(causal_mask(True), "F002")
    assert "`softmax`" in f.message and "all-masked" in f.message or "every entry is masked" in f.message, f.message
    assert f.location is not None and f.location.line == line_of("# softmax here")


def masked_vocab(bug: bool) -> Watch:
    model = Net(classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    banned = torch.zeros(16, 10, dtype=torch.bool)
    banned[:, 6:] = True  # tokens 6..9 may never be predicted: their logits are -inf
    if bug:
        banned[0] = True  # a sample whose every token is banned: log_softmax of a row of -inf is NaN
    with watch(model, opt) as w:
        for x, y in batches(16, 5, classes=6):
            y = y.clone()
            y[1] = -100  # padding, ignored
            opt.zero_grad()
            F.cross_entropy(model(x).masked_fill(banned, float("-inf")), y, ignore_index=-100).backward()
            opt.step()
    return w


def test_masked_vocabulary_minus_inf_logits_and_ignore_index_are_no_finding() -> None:
    assert codes(masked_vocab(False), at_least=Severity.INFO) == set()
    f = one(masked_vocab(True), "F002")
    assert "`cross_entropy`" in f.message and "NaN" in f.message, f.message


def scaled(skips_by_design: bool) -> Watch:
    """GradScaler: a huge first scale overflows (skipped by design); or a NaN in every forward (skipped forever)."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127 if skips_by_design else 2.0 ** 8,
                                  backoff_factor=2.0 ** -107 if skips_by_design else 0.5)  # by design: then 2**20
    with watch(model, opt, scaler=scaler) as w:
        for step, (x, y) in enumerate(batches(16, 16)):
            opt.zero_grad()
            out = model(x)
            if not skips_by_design:
                out = out * torch.log(out.detach().clamp_max(0.0) * 0.0)  # log(0) = -inf, 0 * -inf = NaN
            scaler.scale(1e3 * F.cross_entropy(out, y)).backward()  # x 2**127 overflows fp32
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
    return w


def test_gradscaler_skips_by_design_are_no_finding() -> None:
    w = scaled(True)
    assert 0 < w.steps < 16
    assert codes(w) == set(), w.findings()


def test_gradscaler_skipping_every_step_is_f006_with_the_producer() -> None:
    w = scaled(False)
    assert w.steps == 0
    f6 = one(w, "F006")
    assert "in a row" in f6.message, f6.message
    f2 = one(w, "F002")
    assert "`log`" in f2.message, f2.message


# --- the guard stays out of the user's numbers ----------------------------------------------------------

def test_replay_leaves_weights_buffers_and_rng_as_they_were() -> None:
    """The replay at the first non-finite gradient runs on a copy: BatchNorm statistics, weights and the RNG stream of
    the watched run are bitwise those of an unwatched run."""

    def run(watched: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 2),
                              nn.ReLU(), Normalised(0.0), nn.Linear(2, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        w = watch(model, opt).attach() if watched else None
        for x, y in batches(32, 4, classes=2):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        if w is not None:
            w.detach()
            assert "F002" in codes(w)
        return [t.detach().clone() for t in model.state_dict().values()], torch.rand(4)

    plain, rand_plain = run(False)
    watched, rand_watched = run(True)
    assert all(torch.equal(a, b, ) or (a.isnan().any() and torch.equal(a.nan_to_num(), b.nan_to_num()))
               for a, b in zip(plain, watched))
    assert torch.equal(rand_plain, rand_watched)


def test_guard_is_silent_and_arms_nothing_on_a_clean_run() -> None:
    w = corrupted_batch(False)
    check = next(c for c in w.checks if isinstance(c, FirstNonFinite))
    assert check.armed is None and not check.done and check.clean_through == w.steps


# --- ssdaudit watch: a loss function outside any module is placed by the re-run --------------------------

LOSS_FUNCTION_SCRIPT = """
import torch, torch.nn.functional as F
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)

def loss_fn(logits, target):
    p = F.softmax(logits, -1)
    return -(target * torch.log(p{fix})).sum(-1).mean()

for step in range(8):
    x = torch.randn(16, 8) * (300 if step >= 3 else 1)
    x = x if {bug} else x / 300
    t = F.one_hot(torch.randint(0, 4, (16,)), 4).float()
    opt.zero_grad()
    loss = loss_fn(model(x), t)
    loss.backward()
    opt.step()
"""


@pytest.mark.parametrize("bug", [True, False])
def test_runner_places_a_loss_function_by_re_running(tmp_path: Path, bug: bool) -> None:
    script = tmp_path / "train.py"
    script.write_text(LOSS_FUNCTION_SCRIPT.format(fix="" if bug else ".clamp_min(1e-12)", bug=bug))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ssdaudit", "watch", "--format", "json", "--", "python", str(script)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    import json

    report = json.loads(proc.stdout)
    rules = {f["rule"]: f for f in report["findings"]}
    if not bug:
        assert proc.returncode == 0 and not rules, report
        return
    f = rules["F002"]
    assert f["path"] == "<loss>" and "`log`" in f["message"] and f["location"].endswith("train.py:10"), f
    assert "re-running" in f["message"], f


@pytest.mark.parametrize("fixed", [False, True])
def test_example_log_softmax_names_module_log_and_line(fixed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/watch_nan_log_softmax.py as the README runs it: F002 names the loss module, `log` and its line; the
    --fixed script (log_softmax) has no finding."""
    import io

    from ssdaudit.training.doctor.runner import run_watched

    monkeypatch.chdir(ROOT)
    script = "examples/watch_nan_log_softmax.py"
    report = run_watched(["python", script, *(["--fixed"] if fixed else [])], steps=5, script_stdout=io.StringIO())
    if fixed:
        assert report.findings == []
        return
    f = next(f for f in report.findings if f.rule == "F002")
    line = next(i + 1 for i, text in enumerate((ROOT / script).read_text().splitlines()) if "torch.log(F.softmax" in text)
    assert f.path == "SoftTargetLoss" and "`log`" in f.message and str(f.location) == f"{script}:{line}", f
    assert report.exit_code() == 1


def test_under_ddp_the_producing_rank_is_named_and_the_others_say_where_their_nan_came_from(tmp_path: Path) -> None:
    """torchrun, 2 ranks on gloo: rank 1 produces -inf in forward; DDP's all-reduce makes rank 0's gradients NaN too.
    Rank 0 reports rank 1's F002 (the operation and line, "rank 1"), a note that its own replay is finite (the NaN
    came through the all-reduce), G006 folded under F002; the clean twin has no finding."""
    from conftest import run_torchrun

    worker = Path(__file__).resolve().parents[1] / "data" / "ddp_nonfinite_worker.py"
    proc = run_torchrun([str(worker), str(tmp_path)], tmp_path, 240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads((tmp_path / "nonfinite.json").read_text())
    bug = found["nan_on_rank1"]
    assert bug["causes"] == ["F002"], bug
    message = bug["messages"]["F002"]
    assert "rank 1" in message and "`log`" in message and "-inf" in message, message
    assert any("came from another rank" in n and n.startswith("rank 0") for n in bug["notes"]), bug["notes"]
    assert found["clean"] == {"causes": [], "messages": {}, "notes": []}, found["clean"]


class GatheredFocalLoss(nn.Module):
    """A focal loss written by hand: log(softmax) (or log_softmax), then gather and squeeze (views of the -inf)."""

    def __init__(self, stable: bool) -> None:
        super().__init__()
        self.stable = stable

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, 1) if self.stable else torch.log(torch.softmax(logits, 1))  # focal log here
        logp_t = logp.gather(1, target[:, None]).squeeze(1)
        return (-(1 - logp_t.exp()) ** 2 * logp_t).mean()


def test_f002_through_a_gather_and_a_view_names_the_log_not_the_input() -> None:
    """The -inf reaches the loss through gather and squeeze (a view the trace does not inspect): its origin passes on
    to the view, so the finding is the `log` that produced it, not an "input" of the loss module."""
    def run(stable: bool) -> Watch:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 6))
        crit = GatheredFocalLoss(stable)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with watch(model, opt) as w:
            for x, y in batches(64, 3, d_in=16, classes=6):
                opt.zero_grad()
                crit(model(x * 3) / 0.02, y).backward()
                opt.step()
        return w

    f = one(run(False), "F002")
    assert f.path == "GatheredFocalLoss" and "`log`" in f.message, f.message
    assert f.location is not None and f.location.line == line_of("# focal log here")
    assert codes(run(True)) == set()
