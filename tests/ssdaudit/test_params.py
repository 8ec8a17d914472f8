import io
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ssdlite_model
from ssdaudit import audit_params
from ssdaudit.registration.params import predict_checkpoint_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import buggy_plain_list  # noqa: E402
import fixed_modulelist  # noqa: E402


def _saved_bytes(state) -> int:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


@pytest.fixture(scope="module")
def reference():
    return ssdlite_model.build_ssdlite(ssdlite_model.ssds_voc())


def test_seed_bug_on_the_real_ssdlite(reference):
    model = buggy_plain_list.build_model()
    report = audit_params(model, reference, buggy_plain_list.example_input(), reference_name="ssds-voc")
    (r001,) = [f for f in report.findings if f.rule == "R001"]
    assert r001.path == "backbone" and r001.params == 1_812_800 and r001.modules == 18
    assert r001.location.path.endswith("buggy_plain_list.py") and r001.location.line == 20
    assert report.registered_params == 4_577_792 - 1_812_800
    assert report.effective_params == 4_577_792
    assert report.reference.difference == 1_812_800
    assert report.reference.explanation == ["1,812,800 missing = the unregistered module-in-container `backbone` (R001)"]
    # The story's checkpoints: about 11 MB saved instead of about 18.6 MB, predicted exactly.
    assert report.checkpoint_bytes == _saved_bytes(model.state_dict())
    assert 10.5e6 < report.checkpoint_bytes < 11.5e6
    assert 18.4e6 < report.checkpoint_bytes_if_fixed < 18.8e6


def test_fixed_model_matches_the_reference(reference):
    model = fixed_modulelist.build_model()
    report = audit_params(model, reference, fixed_modulelist.example_input(), reference_name="ssds-voc")
    assert [f for f in report.findings if f.severity != "info"] == []
    assert report.registered_params == 4_577_792 and report.reference.difference == 0
    assert all(row["difference"] == 0 for row in report.reference.groups)
    assert report.checkpoint_bytes == report.checkpoint_bytes_if_fixed == _saved_bytes(model.state_dict())


def test_tied_weights_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, x):
            return self.out(self.embed(x))

    report = audit_params(Tied(), example_input=torch.tensor([1, 2]))
    assert report.registered_params == 40
    (note,) = [f for f in report.findings if f.rule == "N001"]
    assert "out.weight" in note.message and note.severity == "info"


def test_meta_device_estimate_is_close():
    with torch.device("meta"):
        meta = ssdlite_model.build_ssdlite(ssdlite_model.tiny())
    real = ssdlite_model.build_ssdlite(ssdlite_model.tiny())
    size, exact = predict_checkpoint_bytes(meta.state_dict())
    assert not exact
    actual = _saved_bytes(real.state_dict())
    assert abs(size - actual) / actual < 0.01
    assert predict_checkpoint_bytes(real.state_dict()) == (actual, True)


def test_one_attribute_walk_of_the_model_per_audit(monkeypatch):
    """The model index is walked once and reused by every rule (and the tied/frozen notes); the dtype-move probe
    walks its float64 copy once. A rule that walked the model again would show here."""
    from ssdaudit.registration import walk

    walked = []
    run = walk.AttributeWalker.run

    def counting(self):
        walked.append(self.model)
        return run(self)

    monkeypatch.setattr(walk.AttributeWalker, "run", counting)
    model = buggy_plain_list.build_model()
    report = audit_params(model, example_input=buggy_plain_list.example_input())
    assert {"R001"} <= {f.rule for f in report.findings}
    assert sum(m is model for m in walked) == 1 and len(walked) == 2  # the model, then its float64 copy
