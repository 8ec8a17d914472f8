"""N001 (tied weights, a note): one parameter registered under two names is named once, counted once; its clean
twin (two separate weights) has no note."""

import torch
from torch import nn

from ssdaudit.registration.params import audit_params


class TiedHead(nn.Module):
    def __init__(self, tied: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        if tied:
            self.out.weight = self.embed.weight

    def forward(self, x):
        return self.out(self.embed(x))


def test_N001_tied_weights_are_one_note_counted_once():
    report = audit_params(TiedHead(tied=True), example_input=torch.tensor([1, 2]))
    (note,) = [f for f in report.findings if f.rule == "N001"]
    assert note.severity.value == "info" and note.path == "embed.weight" and note.params == 40
    assert "out.weight" in note.message and report.registered_params == 40


def test_N001_clean_twin_separate_weights():
    report = audit_params(TiedHead(tied=False), example_input=torch.tensor([1, 2]))
    assert [f for f in report.findings if f.rule == "N001"] == [] and report.registered_params == 80
