"""Class: the default loss is a guess. Without ``compute_loss`` gradflow backpropagates the sum of the outputs'
means; a parameter only the real criterion reaches (an adaptive-softmax decoder run inside the loss, never called in
forward) is then a G002 warning saying how to give the loss, and nothing once ``compute_loss`` reaches it. A module
forward never calls stays that warning with the user's ``compute_loss`` (unused, not a graph cut: see
test_rules_G002.py for the errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdaudit import Severity
from ssdaudit.training.gradflow.pipeline import gradflow_target

MODEL = '''
import torch
from torch import nn


class LM(nn.Module):
    """Forward returns hidden states and the decoder; the criterion runs the decoder (as adaptive softmax does)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 6)
        self.decoder = nn.Linear(6, 10)
        self.unused = nn.Linear(6, 6)

    def forward(self, x):
        return self.embed(x), self.decoder


def build_model():
    return LM()


def example_input():
    return torch.rand(3, 6)
'''

REAL_LOSS = '''

def compute_loss(output):
    hidden, decoder = output
    return decoder(hidden).logsumexp(-1).mean()
'''


def _g002(tmp_path: Path, source: str) -> dict[str, Severity]:
    path = tmp_path / "lm.py"
    path.write_text(source)
    report = gradflow_target(str(path), steps=2, timeout=0)
    return {f.path: f.severity for f in report.findings if f.rule == "G002"}


def test_default_loss_makes_uncalled_a_warning_that_says_how(tmp_path: Path) -> None:
    path = tmp_path / "lm.py"
    path.write_text(MODEL)
    report = gradflow_target(str(path), steps=2, timeout=0)
    g002 = [f for f in report.findings if f.rule == "G002"]
    assert {f.path for f in g002} == {"decoder", "unused"}
    assert all(f.severity is Severity.WARNING and "forward never calls" in f.message
               and "compute_loss(output)" in f.message for f in g002)
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_user_loss_clears_the_decoder_and_keeps_the_unused_a_warning(tmp_path: Path) -> None:
    assert _g002(tmp_path, MODEL + REAL_LOSS) == {"unused": Severity.WARNING}
