"""The doctor's G002 and T007 on averages, copies and frozen backbones: a parameter in no optimizer that gets no
gradient and changes without one (an EMA, ``AveragedModel``, a momentum teacher) is no G002; a frozen BatchNorm in
train mode inside the trained path (torchvision's feature-extraction recipe) is a T007 note, a teacher's a warning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor import Watch, watch


def failing(w: Watch) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in w.findings() if f.severity in (Severity.ERROR, Severity.WARNING)]


class WithAverage(nn.Module):
    """A model with its average kept beside it as a registered module (timm's train.py --model-ema shape)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        if how == "averaged_model":
            self.model_ema: nn.Module = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(0.99))
        else:
            self.model_ema = copy.deepcopy(self.model)  # requires_grad stays True, as deepcopy leaves it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def averaged(how: str, steps: int = 4) -> Watch:
    torch.manual_seed(0)
    task = WithAverage(how)
    opt = torch.optim.SGD(task.model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with watch(task, opt) as w:
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(task(x), y).backward()
            opt.step()
            with torch.no_grad():
                if how == "lerp":
                    for e, p in zip(task.model_ema.parameters(), task.model.parameters()):
                        e.lerp_(p, 0.01)
                elif how == "data":  # through .data: a version counter of its own, the norm moves
                    for e, p in zip(task.model_ema.parameters(), task.model.parameters()):
                        e.data.mul_(0.99).add_(p.data, alpha=0.01)
                elif how == "averaged_model":
                    task.model_ema.update_parameters(task.model)
                # "frozen": a copy nobody updates: a dead branch in the model (a real G002)
    return w


@pytest.mark.parametrize("how", ["lerp", "data", "averaged_model"])
def test_an_average_updated_without_gradients_is_no_g002(how: str) -> None:
    assert failing(averaged(how)) == []


def test_a_copy_that_never_changes_is_still_g002() -> None:
    found = [f for f in averaged("frozen").findings() if f.rule == "G002"]
    # one finding per rule and place: the layers are merged into one that lists each of them (``parts``)
    assert len(found) == 1 and {p.path for p in found[0].parts} == {"model_ema.0", "model_ema.2"}
    assert all(f.severity is Severity.ERROR for f in found)


def test_a_parameter_in_the_optimizer_cut_off_by_detach_is_still_g002() -> None:
    class Cut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).detach())

    torch.manual_seed(0)
    model = Cut()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert [f.path for f in w.findings() if f.rule == "G002"] == ["body"]


def backbone_and_head(bug_teacher: bool = False, separate_no_grad: bool = False) -> Watch:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for p in backbone.parameters():
        p.requires_grad = False
    head = nn.Linear(8, 4)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    if bug_teacher:  # the frozen network is a teacher: its output is only a target
        student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
        teacher = nn.Sequential(backbone, head.requires_grad_(False))
        opt = torch.optim.SGD(student.parameters(), lr=0.01)
        with watch(student, opt) as w:
            for _ in range(3):
                opt.zero_grad()
                with torch.no_grad():
                    soft = teacher(x).softmax(1)
                F.cross_entropy(student(x), soft).backward()
                opt.step()
        return w
    model = nn.Sequential(backbone, head)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    model.train()
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            if separate_no_grad:
                with torch.no_grad():
                    feats = backbone(x)
                out = head(feats)
            else:
                out = model(x)
            F.cross_entropy(out, y).backward()
            opt.step()
    return w


def test_t007_frozen_backbone_inside_the_trained_path_is_a_note() -> None:
    w = backbone_and_head()
    found = [f for f in w.findings() if f.rule == "T007"]
    assert len(found) == 1 and found[0].severity is Severity.INFO and "trained path" in found[0].message
    assert failing(w) == []


def test_t007_frozen_teacher_is_a_warning() -> None:
    found = [f for f in backbone_and_head(bug_teacher=True).findings() if f.rule == "T007"]
    assert len(found) == 1 and found[0].severity is Severity.WARNING


def test_t007_frozen_backbone_under_no_grad_feeding_the_head_is_a_note() -> None:
    found = [f for f in backbone_and_head(separate_no_grad=True).findings() if f.rule == "T007"]
    assert len(found) == 1 and found[0].severity is Severity.INFO


def test_t007_frozen_module_whose_output_feeds_nothing_trained_is_a_warning() -> None:
    # a frozen network run in train mode beside the model (a stale evaluation copy, say): not in the trained path
    torch.manual_seed(0)
    other = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)).requires_grad_(False)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            other(x)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    found = [f for f in w.findings() if f.rule == "T007"]
    assert len(found) == 1 and found[0].severity is Severity.WARNING
