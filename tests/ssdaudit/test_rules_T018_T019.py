"""T018 (a teacher's Dropout in train mode perturbs every target) and T019 (an optimizer holding only frozen
parameters): each buggy loop, written the way people write it, is named; its clean twin is not."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor import Watch, watch


def failing(w: Watch) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in w.findings() if f.severity in (Severity.ERROR, Severity.WARNING)]


def classifier(dropout: float = 0.3) -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 4))


def distill(bug: bool, steps: int = 4, no_grad: bool = True) -> Watch:
    """Knowledge distillation: a pretrained teacher with Dropout, a student trained on its soft targets (KL at T=2)."""
    torch.manual_seed(0)
    teacher, student = classifier(), nn.Sequential(nn.Linear(8, 4))
    teacher.requires_grad_(False)
    if not bug:
        teacher.eval()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    x = torch.randn(32, 8)
    with watch(student, opt) as w:
        for _ in range(steps):
            student.train()
            opt.zero_grad()
            if no_grad:
                with torch.no_grad():
                    t_logits = teacher(x)
            else:
                t_logits = teacher(x)  # frozen: no graph either way
            loss = F.kl_div(F.log_softmax(student(x) / 2, 1), F.softmax(t_logits / 2, 1), reduction="batchmean")
            loss.backward()
            opt.step()
    return w


def test_t018_teacher_dropout_in_train_mode_is_named() -> None:
    w = distill(bug=True)
    found = [f for f in w.findings() if f.rule == "T018"]
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert "teacher" in found[0].message and "1 Dropout" in found[0].message
    assert w.first_step["T018"] <= 2


def test_t018_frozen_teacher_without_no_grad_is_named() -> None:
    assert [f.rule for f in distill(bug=True, no_grad=False).findings() if f.rule == "T018"] == ["T018"]


def test_t018_clean_twin_teacher_in_eval() -> None:
    assert failing(distill(bug=False)) == []


def test_t018_clean_frozen_encoder_feeding_a_trained_head() -> None:
    # a frozen encoder with Dropout left in train mode whose features are the head's input: the loss's target is the
    # label, not the encoder's output (no teacher)
    torch.manual_seed(0)
    encoder, head = classifier(), nn.Linear(4, 1)
    encoder.requires_grad_(False)
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randn(32)
    with watch(head, opt) as w:
        for _ in range(4):
            opt.zero_grad()
            with torch.no_grad():
                feats = encoder(x)
            F.mse_loss(head(feats).squeeze(1), y).backward()
            opt.step()
    assert [f.rule for f in w.findings() if f.rule == "T018"] == []


def test_t018_clean_peer_trained_by_its_own_optimizer() -> None:
    # deep mutual learning: each network learns from the other's detached predictions, each with its own optimizer
    torch.manual_seed(0)
    a, b = classifier(), classifier()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.05), torch.optim.SGD(b.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    with watch(a, opt_a) as w:
        for _ in range(4):
            opt_a.zero_grad()
            with torch.no_grad():
                soft_b = b(x).softmax(1)
            (F.cross_entropy(a(x), y) + F.cross_entropy(a(x), soft_b)).backward()
            opt_a.step()
            opt_b.zero_grad()
            F.cross_entropy(b(x), y).backward()
            opt_b.step()
    assert [f.rule for f in w.findings() if f.rule == "T018"] == []


def finetune(bug: bool) -> Watch:
    """Fine-tuning a classifier's head: freeze everything, replace the head, build the optimizer. The bug freezes
    after replacing the head (the new head is frozen too) and builds the optimizer from the head anyway."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    if bug:
        model[2] = nn.Linear(32, 3)
        for p in model.parameters():
            p.requires_grad = False
    else:
        for p in model.parameters():
            p.requires_grad = False
        model[2] = nn.Linear(32, 3)
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            if loss.requires_grad:
                loss.backward()
            opt.step()
    return w


def test_t019_optimizer_of_frozen_parameters_is_named() -> None:
    w = finetune(bug=True)
    found = [f for f in w.findings() if f.rule == "T019"]
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert "all 2 parameter tensors" in found[0].message and "99 values" in found[0].message
    assert w.first_step["T019"] == 1
    assert [f.rule for f in w.findings() if f.rule == "T005"] == []


def test_t019_clean_twin() -> None:
    assert failing(finetune(bug=False)) == []


def test_t019_staged_unfreezing_is_clean_once_a_group_trains() -> None:
    # an optimizer over a frozen backbone and a trained head: the head trains, so something does
    torch.manual_seed(0)
    backbone, head = nn.Linear(8, 16), nn.Linear(16, 3)
    backbone.requires_grad_(False)
    opt = torch.optim.SGD([{"params": backbone.parameters(), "lr": 0.01}, {"params": head.parameters()}], lr=0.1)
    model = nn.Sequential(backbone, head)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    with watch(model, opt) as w:
        for i in range(4):
            if i == 2:
                backbone.requires_grad_(True)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert failing(w) == []


class Distiller(nn.Module):
    """Teacher and student in one module, the teacher called under no_grad inside forward (a common wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.teacher, self.student = classifier(), nn.Sequential(nn.Linear(8, 4))
        self.teacher.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            soft = F.softmax(self.teacher(x) / 2, 1)
        return self.student(x), soft


def wrapped(bug: bool) -> Watch:
    torch.manual_seed(0)
    model = Distiller()
    opt = torch.optim.SGD(model.student.parameters(), lr=0.1)
    x = torch.randn(32, 8)
    with watch(model, opt) as w:
        for _ in range(3):
            model.train()
            if not bug:
                model.teacher.eval()
            opt.zero_grad()
            logits, soft = model(x)
            F.kl_div(F.log_softmax(logits / 2, 1), soft, reduction="batchmean").backward()
            opt.step()
    return w


def test_t018_teacher_inside_the_wrapper_is_named() -> None:
    found = [f for f in wrapped(bug=True).findings() if f.rule == "T018"]
    assert [f.path for f in found] == ["teacher"]


def test_t018_teacher_inside_the_wrapper_clean_twin() -> None:
    assert failing(wrapped(bug=False)) == []
