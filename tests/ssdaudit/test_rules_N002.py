"""N002 (frozen parameters, a note): a model with parameters that do not require gradients, and its clean twin."""

from torch import nn

from ssdaudit.registration.params import audit_params


class PartlyFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)
        for p in self.backbone.parameters():
            p.requires_grad_(False)


def test_N002_frozen_parameters_are_a_note_with_their_count():
    notes = [f for f in audit_params(PartlyFrozen()).findings if f.rule == "N002"]
    assert len(notes) == 1
    assert notes[0].severity.value == "info" and notes[0].params == 4 * 8 + 8 and notes[0].path == "backbone"


def test_N002_clean_twin_all_trainable():
    model = PartlyFrozen()
    model.backbone.requires_grad_(True)
    assert [f for f in audit_params(model).findings if f.rule == "N002"] == []
