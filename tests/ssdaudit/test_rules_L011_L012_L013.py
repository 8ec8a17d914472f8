"""L011 (a StepLR/MultiStepLR sized in epochs, stepped per batch), L012 (a model whose forward ends in softmax fed to
cross_entropy) and L013 (load_state_dict(strict=False) thrown away in a helper): each bug with its clean twins, as
whole scripts (the schedule built in main() and stepped in train(), the model class above its loop)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ssdaudit.lint.engine import lint_paths

SCHEDULE = '''
import argparse
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import {kind}


def train(model, loader, optimizer, scheduler):
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        {batch_step}
    {epoch_step}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=90, help="number of epochs to train")
    parser.add_argument({option}, type=int, default=30, help={help!r})
    args = parser.parse_args()
    model = torch.nn.Linear(4, 2)
    loader = [(torch.rand(2, 4), torch.tensor([0, 1]))] * 8
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    {size}
    scheduler = {kind}(optimizer, {size_arg}, gamma=0.1)
    for epoch in range(args.epochs):
        train(model, loader, optimizer, scheduler)


if __name__ == "__main__":
    main()
'''


def lint(tmp_path: Path, source: str, name: str = "train.py") -> list[tuple[str, str, str]]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return [(f.rule, f.severity.value, path.read_text().splitlines()[(f.location.line or 1) - 1].strip())
            for f in lint_paths([path]).findings]


def schedule(kind: str = "StepLR", option: str = "'--lr-step'", help: str = "epochs between learning-rate decays",
             size: str = "", size_arg: str = "step_size=args.lr_step", per_batch: bool = True) -> str:
    return SCHEDULE.format(kind=kind, option=option, help=help, size=size, size_arg=size_arg,
                           batch_step="scheduler.step()" if per_batch else "",
                           epoch_step="" if per_batch else "scheduler.step()")


@pytest.mark.parametrize("source", [
    schedule(),  # --lr-step documented as epochs
    schedule(option="'--decay-epochs'", help="decay period", size_arg="step_size=args.decay_epochs"),  # named *epoch*
    schedule(kind="MultiStepLR", option="'--milestones', nargs='+'", help="epochs at which to decay the lr",
             size_arg="milestones=args.milestones"),
    schedule(size="step = args.lr_step", size_arg="step"),  # through a local name
])
def test_l011_epoch_sized_schedule_stepped_per_batch(tmp_path: Path, source: str) -> None:
    assert lint(tmp_path, source) == [("L011", "error", "scheduler.step()")]


@pytest.mark.parametrize("source", [
    schedule(size_arg="step_size=args.lr_step * len(loader)"),  # sized in batches
    schedule(size="step = len(loader) * 30", size_arg="step_size=step"),
    schedule(per_batch=False),  # stepped once per epoch
    schedule(option="'--lr-step'", help="iterations between learning-rate decays"),  # documented in iterations
])
def test_l011_clean_twins(tmp_path: Path, source: str) -> None:
    assert lint(tmp_path, source) == []


def test_l011_another_schedule_under_the_same_name_is_left_alone(tmp_path: Path) -> None:
    # torchvision's detection recipe: an epoch-sized MultiStepLR in main(), a warm-up of the same name per batch
    source = schedule(kind="MultiStepLR", option="'--lr-steps', nargs='+'", help="decrease lr every step-size epochs",
                      size_arg="milestones=args.lr_steps").replace(
        "    model.train()\n", "    model.train()\n    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 0.001, total_iters=100)\n")
    assert "LinearLR" in source
    assert lint(tmp_path, source) == []


MODEL = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)
        {init}

    def forward(self, x):
        x = F.relu(self.fc1(x))
        {forward}


def train(model, loader, optimizer):
    for data, target in loader:
        optimizer.zero_grad()
        output = model(data)
        {loss}
        loss.backward()
        optimizer.step()


def predict(model, x):
    return model(x).argmax(dim=1)


model = Net().to("cpu")
criterion = nn.CrossEntropyLoss()
train(model, [(torch.rand(2, 4), torch.tensor([0, 1]))], torch.optim.SGD(model.parameters(), lr=0.1))
'''
CE = "loss = criterion(output, target)"


@pytest.mark.parametrize(("init", "forward", "loss"), [
    ("", "return F.softmax(self.fc2(x), dim=1)", CE),
    ("", "return self.fc2(x).softmax(dim=-1)", "loss = F.cross_entropy(output, target)"),
    ("self.softmax = nn.Softmax(dim=1)", "return self.softmax(self.fc2(x))", CE),
    ("", "x = torch.softmax(self.fc2(x), 1)\n        return x", CE),
])
def test_l012_softmax_model_to_cross_entropy(tmp_path: Path, init: str, forward: str, loss: str) -> None:
    assert lint(tmp_path, MODEL.format(init=init, forward=forward, loss=loss)) == [("L012", "error", loss)]


@pytest.mark.parametrize(("forward", "loss"), [
    ("return F.softmax(self.fc2(x), dim=1)", "loss = F.nll_loss(torch.log(output), target)"),  # NLL after a log
    ("return self.fc2(x)", CE),  # logits; softmax only for predictions
    ("logits = self.fc2(x)\n        if not self.training:\n            return F.softmax(logits, dim=1)\n        return logits", CE),
])
def test_l012_clean_twins(tmp_path: Path, forward: str, loss: str) -> None:
    assert lint(tmp_path, MODEL.format(init="", forward=forward, loss=loss)) == []


def test_l012_softmax_only_at_inference_is_clean(tmp_path: Path) -> None:
    source = MODEL.format(init="", forward="return F.softmax(self.fc2(x), dim=1)", loss="loss = output.sum()")
    assert lint(tmp_path, source) == []


HELPER = '''
import torch
from torch import nn


def build_model(checkpoint=None):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu")
        {load}
    return model
'''


def test_l013_load_result_thrown_away_in_a_helper(tmp_path: Path) -> None:
    load = 'model.load_state_dict(state["model"], strict=False)'
    assert lint(tmp_path, HELPER.format(load=load)) == [("L013", "warning", load)]


@pytest.mark.parametrize("load", [
    'result = model.load_state_dict(state, strict=False)\n        assert not result.missing_keys, result.missing_keys',
    'missing, unexpected = model.load_state_dict(state, strict=False)\n        if missing:\n            raise KeyError(missing)',
    'model.load_state_dict(state, strict=False)\n        missing_keys = [k for k in model.state_dict() if k not in state]\n'
    '        if missing_keys:\n            raise KeyError(missing_keys)',
    'model.load_state_dict(state)',
])
def test_l013_clean_twins(tmp_path: Path, load: str) -> None:
    assert lint(tmp_path, HELPER.format(load=load)) == []


def test_l013_shard_loader_is_left_alone(tmp_path: Path) -> None:
    source = '''
    import torch


    def load_model_shards(model, shards):
        for shard in shards:
            model.load_state_dict(torch.load(shard), strict=False)
        return model
    '''
    assert lint(tmp_path, source) == []


def test_l012_through_a_factory_and_a_softmax_sequential(tmp_path: Path) -> None:
    factory = MODEL.format(init="", forward="return F.softmax(self.fc2(x), dim=1)", loss=CE).replace(
        'model = Net().to("cpu")', 'def get_model():\n    return Net()\n\n\nmodel = get_model()')
    assert lint(tmp_path, factory) == [("L012", "error", CE)]
    stack = MODEL.format(init="", forward="return self.fc2(x)", loss=CE).replace(
        'model = Net().to("cpu")', "model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))")
    assert lint(tmp_path, stack, "stack.py") == [("L012", "error", CE)]
    logits = stack.replace("nn.Softmax(dim=1))", "nn.ReLU())")
    assert lint(tmp_path, logits, "logits.py") == []


def test_l011_config_key_and_range_over_batches(tmp_path: Path) -> None:
    source = schedule(size='config = {"lr_decay_epochs": args.lr_step}', size_arg='config["lr_decay_epochs"]',
                      option="'--lr-step'", help="decay period")
    assert lint(tmp_path, source) == [("L011", "error", "scheduler.step()")]
