"""No false alarms on well-written models: a representative subset of torchvision's builders."""

import pytest
import torch
import torchvision

from ssdaudit import Severity, find_unregistered

PROBED = ["resnet18", "mobilenet_v3_small", "vit_b_16", "swin_t", "efficientnet_b0", "convnext_tiny"]
WALKED = ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn", "deeplabv3_mobilenet_v3_large", "raft_small", "r3d_18"]


def _build(name):
    with torch.device("meta"):
        try:
            return torchvision.models.get_model(name, weights=None, weights_backbone=None)
        except TypeError:
            return torchvision.models.get_model(name, weights=None)


@pytest.mark.parametrize("name", PROBED + WALKED)
def test_torchvision_models_are_clean(name):
    model = _build(name).eval()
    example = torch.rand(1, 3, 224, 224, device="meta") if name in PROBED else None
    bad = [f for f in find_unregistered(model, example) if f.severity is not Severity.INFO]
    assert bad == []
