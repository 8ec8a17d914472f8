"""T022 (a loss identically zero: cross-entropy over one class) and T023 (lazily initialised state first used by
an eval-mode forward): each buggy loop, written the way people write it, is named; its clean twin is not."""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor import Watch, watch


def failing(w: Watch) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in w.findings() if f.severity in (Severity.ERROR, Severity.WARNING)]


def binary(bug: bool, index_targets: bool = False) -> Watch:
    """A binary classifier with one output per sample (the shape of pytorch/examples' DDP tutorial's ToyModel loss)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 6)
    y = (x[:, 0] > 0).float()
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            out = model(x)
            if bug:
                loss = F.cross_entropy(out, torch.zeros(32, dtype=torch.long) if index_targets else y.unsqueeze(1))
            else:
                loss = F.binary_cross_entropy_with_logits(out.squeeze(1), y)
            loss.backward()
            opt.step()
    return w


def test_t022_cross_entropy_over_one_class_is_named() -> None:
    w = binary(bug=True)
    found = [f for f in w.findings() if f.rule == "T022"]
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert "(32, 1)" in found[0].message and "probabilities" in found[0].message
    assert w.first_step["T022"] == 1


def test_t022_class_index_targets_are_named_too() -> None:
    assert "class indices" in [f for f in binary(bug=True, index_targets=True).findings() if f.rule == "T022"][0].message


def test_t022_clean_twin() -> None:
    assert failing(binary(bug=False)) == []


def test_t022_clean_two_classes() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
    with watch(model, opt) as w:
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert failing(w) == []


class Discriminator(nn.Module):
    def __init__(self, parametrized: bool = False) -> None:
        super().__init__()
        sn = torch.nn.utils.parametrizations.spectral_norm if parametrized else torch.nn.utils.spectral_norm
        self.fc1, self.fc2 = sn(nn.Linear(8, 16)), sn(nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.fc1(x), 0.2))


def gan_critic(bug: bool, parametrized: bool = False) -> Watch:
    """A spectrally normalised critic; the bug scores a validation batch (model.eval()) before the first training
    step, as a "sanity check" before the loop."""
    torch.manual_seed(0)
    d = Discriminator(parametrized)
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    real, fake = torch.randn(16, 8) + 1, torch.randn(16, 8)
    with watch(d, opt) as w:
        if bug:
            d.eval()
            with torch.no_grad():
                d(real)
            d.train()
        for _ in range(3):
            opt.zero_grad()
            loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
            loss.backward()
            opt.step()
        d.eval()
        with torch.no_grad():
            d(real)
    return w


def test_t023_spectral_norm_first_used_in_eval_is_named() -> None:
    w = gan_critic(bug=True)
    found = [f for f in w.findings() if f.rule == "T023"]
    # one finding per rule and place: the two layers are merged into one that lists them (``parts``)
    assert len(found) == 1 and {p.path for p in found[0].parts} == {"fc1", "fc2"}
    assert found[0].severity is Severity.WARNING and "weight_u" in found[0].message


def test_t023_clean_twin_trains_first() -> None:
    assert failing(gan_critic(bug=False)) == []


def test_t023_parametrized_spectral_norm_is_initialised_when_applied() -> None:
    assert failing(gan_critic(bug=True, parametrized=True)) == []


def test_t023_loaded_spectral_norm_is_initialised() -> None:
    torch.manual_seed(0)
    trained = Discriminator()
    trained(torch.randn(4, 8))  # a training forward: u/v refined, then saved
    d = Discriminator()
    d.load_state_dict(trained.state_dict())
    opt = torch.optim.SGD(d.parameters(), lr=0.01)
    with watch(d, opt) as w:
        d.eval()
        with torch.no_grad():
            d(torch.randn(4, 8))
        d.train()
        opt.zero_grad()
        d(torch.randn(4, 8)).mean().backward()
        opt.step()
    assert failing(w) == []


class ActNorm(nn.Module):
    """Glow's activation normalisation: scale and bias initialised from the first batch it sees."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.loc, self.log_scale = nn.Parameter(torch.zeros(features)), nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.initialized.item() == 0:
            with torch.no_grad():
                self.loc.copy_(-x.mean(0))
                self.log_scale.copy_(-torch.log(x.std(0) + 1e-6))
                self.initialized.fill_(1)
        return (x + self.loc) * torch.exp(self.log_scale)


class LazyFlag(nn.Module):
    """The same idea with a Python attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))
        self.is_initialized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_initialized:
            with torch.no_grad():
                self.scale.copy_(1 / (x.std(0) + 1e-6))
            self.is_initialized = True
        return x * self.scale


def flow(bug: bool, flag: str = "buffer") -> Watch:
    torch.manual_seed(0)
    norm: nn.Module = ActNorm(8) if flag == "buffer" else LazyFlag()
    model = nn.Sequential(nn.Linear(8, 8), norm, nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_x, val_x = torch.randn(32, 8) * 3, torch.randn(32, 8)
    with watch(model, opt) as w:
        for epoch in range(2):
            if bug or epoch > 0:  # the bug validates before the first epoch
                model.eval()
                with torch.no_grad():
                    model(val_x)
            model.train()
            opt.zero_grad()
            model(train_x).pow(2).mean().backward()
            opt.step()
    return w


def test_t023_data_dependent_init_in_eval_is_named() -> None:
    found = [f for f in flow(bug=True).findings() if f.rule == "T023"]
    assert [f.path for f in found] == ["1"] and "initialized set" in found[0].message


def test_t023_attribute_flag_in_eval_is_named() -> None:
    found = [f for f in flow(bug=True, flag="attr").findings() if f.rule == "T023"]
    assert [f.path for f in found] == ["1"] and "is_initialized set" in found[0].message


def test_t023_clean_twins() -> None:
    assert failing(flow(bug=False)) == []
    assert failing(flow(bug=False, flag="attr")) == []




def test_t023_lazy_module_materialised_in_eval_inside_the_watch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = nn.LazyLinear(4)
    with watch(model, opt) as w:
        probe.eval()
        probe(torch.randn(2, 8))
        opt.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
    assert [f.rule for f in w.findings() if f.rule == "T023"] == ["T023"]


CRITIC_SCRIPT = """
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

torch.manual_seed(0)
critic = nn.Sequential(spectral_norm(nn.Linear(8, 16)), nn.LeakyReLU(0.2), spectral_norm(nn.Linear(16, 1)))
real, fake = torch.randn(16, 8) + 1, torch.randn(16, 8)
if EVAL_FIRST:  # a score of the untrained critic before training starts
    critic.eval()
    with torch.no_grad():
        print("initial score", float(critic(real).mean()))
    critic.train()
else:
    critic(real)  # a training forward: the power iteration has run
opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
for _ in range(4):
    opt.zero_grad()
    (F.softplus(-critic(real)).mean() + F.softplus(critic(fake)).mean()).backward()
    opt.step()
"""


def test_t023_eval_forward_before_the_optimizer_is_built_is_named_under_the_runner(tmp_path: Path) -> None:
    """``ssdaudit watch`` builds its watch with the optimizer; an eval forward made before that is still named (the
    runner records such forwards from the script's first line), and its twin is clean. No hook of the record is
    left once the first optimizer is watched, nor after the run."""
    from ssdaudit.training.doctor.early_forwards import recent_early_forwards
    from ssdaudit.training.doctor.runner import run_watched

    before = (dict(nn.modules.module._global_forward_pre_hooks), dict(nn.modules.module._global_forward_hooks))
    rules = {}
    for bug in (True, False):
        script = tmp_path / f"critic_{bug}.py"
        script.write_text(CRITIC_SCRIPT.replace("EVAL_FIRST", str(bug)))
        report = run_watched(["python", str(script)], steps=4, script_stdout=io.StringIO())
        rules[bug] = [(f.rule, f.message) for f in report.findings if f.severity is not Severity.INFO]
        assert (dict(nn.modules.module._global_forward_pre_hooks),
                dict(nn.modules.module._global_forward_hooks)) == before
    assert [r for r, _ in rules[True]] == ["T023"]
    assert "weight_u" in rules[True][0][1] and "before the optimizer was built" in rules[True][0][1]
    assert rules[False] == []
    assert recent_early_forwards() == []  # the clean run started a new record


def test_the_early_forward_record_stops_at_the_first_watch() -> None:
    """Once released, the record's hooks are gone (a training loop pays nothing for it)."""
    from ssdaudit.training.doctor.early_forwards import clear_early_forwards, record_early_forwards, recent_early_forwards

    clear_early_forwards()
    lazy = nn.LazyLinear(2)
    record = record_early_forwards()
    n = len(nn.modules.module._global_forward_pre_hooks)
    lazy.eval()
    lazy(torch.randn(3, 4))
    assert [(m, w.split(":")[0]) for m, w in recent_early_forwards()] == [(lazy, "its lazy parameters are uninitialised")]
    record.release()
    assert len(nn.modules.module._global_forward_pre_hooks) == n - 1 and not record.active
    nn.LazyLinear(2).eval()(torch.randn(3, 4))
    assert len(recent_early_forwards()) == 1
    clear_early_forwards()
