"""Training-loop rules (L): each bug in a function as well as a script, and its clean twins (the patterns real
training code uses on purpose: accumulation, closures, step-sized schedules, evaluation in another function)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ssdaudit.lint.engine import lint_paths

HEAD = ("import torch\nimport torch.nn.functional as F\nfrom torch import nn\nfrom torch.cuda.amp import GradScaler\n"
        "from torch.nn.parallel import DistributedDataParallel as DDP\n"
        "from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, StepLR\n\n")


def found(tmp_path: Path, body: str) -> list[tuple[str, str, int]]:
    path = tmp_path / "train.py"
    path.write_text(HEAD + textwrap.dedent(body))
    offset = HEAD.count("\n")
    return [(f.rule, f.severity.value, (f.location.line or 0) - offset if f.location else 0)
            for f in lint_paths([path]).findings]


CASES = {
    "L001": ("""
        def train(model, loader, optimizer):
            for epoch in range(3):
                for x, y in loader:
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    optimizer.step()
        """, [("L001", "error", 7)]),
    "L001-accumulation": ("""
        def train(model, loader, optimizer, accum=4):
            for i, (x, y) in enumerate(loader):
                (F.cross_entropy(model(x), y) / accum).backward()
                if (i + 1) % accum == 0:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        """, []),
    "L001-closure": ("""
        def train(model, loader, optimizer):
            for x, y in loader:
                def closure():
                    optimizer.zero_grad()
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    return loss
                optimizer.step(closure)
        """, []),
    "L001-grad-none": ("""
        for x, y in loader:
            F.cross_entropy(model(x), y).backward()
            opt.step()
            for p in model.parameters():
                p.grad = None
        """, []),
    # branches (#25): a bug on one path of an if/else is a bug; accumulation and clears on every path are not
    "L001-step-in-a-branch": ("""
        def train(model, loader, optimizer, use_amp, scaler):
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                if use_amp:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
        """, [("L001", "error", 7)]),
    "L001-cleared-on-one-path-only": ("""
        for epoch in range(3):
            for x, y in loader:
                F.cross_entropy(model(x), y).backward()
                opt.step()
                if epoch > 0:
                    opt.zero_grad()
        """, [("L001", "warning", 5)]),
    "L001-cleared-only-in-an-else": ("""
        for epoch in range(3):
            for x, y in loader:
                if epoch == 0:
                    warmup(opt)
                else:
                    opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        """, [("L001", "warning", 9)]),
    "L001-cleared-in-one-arm": ("""
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            if use_amp:
                opt.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(opt)
            else:
                loss.backward()
                opt.step()
        """, [("L001", "warning", 7)]),
    "L001-cleared-in-both-arms": ("""
        for x, y in loader:
            if use_amp:
                opt.zero_grad(set_to_none=True)
            else:
                model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        """, []),
    "L001-periodic-clear-but-step-every-iteration": ("""
        for i, (x, y) in enumerate(loader):
            if i % accum == 0:
                opt.zero_grad()
            (F.cross_entropy(model(x), y) / accum).backward()
            opt.step()
        """, [("L001", "warning", 6)]),
    "L001-gradient-accumulation": ("""
        for i, (x, y) in enumerate(loader):
            (F.cross_entropy(model(x), y) / accum).backward()
            if (i + 1) % accum == 0:
                opt.step()
                opt.zero_grad()
        """, []),
    "L001-clear-after-branches": ("""
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            if use_amp:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad()
        """, []),
    "L004-softmax-in-one-branch": ("""
        def step(model, x, y, calibrated):
            logits = model(x)
            if calibrated:
                out = logits.softmax(dim=-1)
            else:
                out = logits
            return F.cross_entropy(out, y)
        """, [("L004", "error", 8)]),
    "L004-softmax-overwritten-before-the-loss": ("""
        def step(model, x, y, calibrated):
            out = model(x).softmax(dim=-1)
            if calibrated:
                out = model(x)
            else:
                out = model(x) * 2
            return F.cross_entropy(out, y)
        """, []),
    "L004-another-loss-under-the-same-name": ("""
        def classify(logits, y):
            loss_fct = nn.CrossEntropyLoss()
            return loss_fct(logits, y)
        def distill(logits, target):
            loss_fct = nn.KLDivLoss(reduction="batchmean")
            scores = F.log_softmax(logits, dim=-1)
            return loss_fct(scores, target)
        """, []),
    "L002": ("""
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.zero_grad()
            optimizer.step()
        """, [("L002", "error", 5)]),
    "L002-after-step": ("""
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        """, []),
    "L003-in-function": ("""
        def fit(model, loader, optimizer, epochs):
            sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[30, 60])
            for epoch in range(epochs):
                for x, y in loader:
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                    sched.step()
        """, [("L003", "error", 9)]),
    "L003-sized-in-steps": ("""
        def fit(model, loader, optimizer, epochs):
            sched = CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
            onecycle = OneCycleLR(optimizer, max_lr=0.1, total_steps=100)
            for epoch in range(epochs):
                for x, y in loader:
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                    sched.step()
                    onecycle.step()
        """, []),
    "L004-through-a-name": ("""
        criterion = nn.CrossEntropyLoss()
        probs = model(x).softmax(dim=-1)
        loss = criterion(probs, y)
        """, [("L004", "error", 4)]),
    "L004-log-softmax-is-a-note": ("""
        loss = F.cross_entropy(F.log_softmax(model(x), dim=1), y)
        nll = F.nll_loss(F.log_softmax(model(x), dim=1), y)
        """, [("L004", "info", 2)]),
    "L005-unscaled-first": ("""
        def step(model, x, y, optimizer, scaler):
            scaler.scale(F.cross_entropy(model(x), y)).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
        scaler = GradScaler()
        """, []),
    "L005-in-function": ("""
        def step(model, x, y, optimizer, scaler):
            scaler.scale(F.cross_entropy(model(x), y)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
        scaler = GradScaler()
        """, [("L005", "error", 4)]),
    "L006": ("""
        def step(model, x, y):
            loss = F.cross_entropy(model(x).detach(), y)
            loss.requires_grad_()
            x.requires_grad = True
            return loss
        """, [("L006", "error", 4)]),
    "L007-train-back-in-another-function": ("""
        def evaluate(model, loader):
            model.eval()
        def fit(model, loader, optimizer):
            for epoch in range(3):
                for x, y in loader:
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                evaluate(model, loader)
        """, []),
    "L007-in-function": ("""
        def fit(model, loader, optimizer):
            model.train()
            for epoch in range(3):
                for x, y in loader:
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                model.eval()
        """, [("L007", "warning", 9)]),
    "L008-library-loader": ("""
        def load_shards(model, shards):
            for shard in shards:
                model.load_state_dict(torch.load(shard), strict=False)
        """, []),
    "L008-in-training": ("""
        def fit(model, loader, optimizer):
            model.load_state_dict(torch.load("init.pth"), strict=False)
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
        """, [("L008", "warning", 3)]),
    "L009-state-dict-through-module-is-fine": ("""
        def fit(net, loader, optimizer):
            model = DDP(net)
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            torch.save(model.module.state_dict(), "m.pth")
        """, []),
    "L009-in-function": ("""
        def fit(net, loader, optimizer):
            model = DDP(net)
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model.module(x), y).backward()
                optimizer.step()
        """, [("L009", "error", 6)]),
    "L010-second-backward-uses-the-graph": ("""
        for x, y in loader:
            optimizer.zero_grad()
            features = model(x)
            head_a(features).sum().backward(retain_graph=True)
            head_b(features).sum().backward()
            optimizer.step()
        """, []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loop_rule_case(name, tmp_path):
    body, expected = CASES[name]
    assert found(tmp_path, body) == expected


def test_loop_rules_stay_out_of_files_without_their_triggers(tmp_path):
    """A file none of whose rules can fire is only syntax-checked (libcst never parses it)."""
    from ssdaudit.lint import engine

    assert engine._applicable("x = 1\n", frozenset(), frozenset()) == []
    assert "L001" in engine._applicable("loss.backward()\n", frozenset(), frozenset())
