"""The seed's bug: SSDLite whose MobileNetV2 backbone blocks sit in a plain Python list.

forward() runs them, so the model "works", but model.parameters() misses all 1,812,800 backbone
parameters (the optimizer never updates them) and state_dict() misses its 312 tensors (the 18.6 MB
checkpoint shrinks to 11 MB and a reloaded model gets a random backbone).

    ssdaudit params examples/buggy_plain_list.py --reference ssds-voc
"""

import torch

from ssdlite_model import SSDLite, ssds_voc


class PlainListSSDLite(SSDLite):
    def __init__(self, config=None):
        super().__init__(config or ssds_voc())
        blocks = list(self.backbone)
        del self.backbone
        self.backbone = blocks  # BUG: a plain list; nn.ModuleList(blocks) would register them


def build_model() -> SSDLite:
    return PlainListSSDLite(ssds_voc())


def example_input() -> torch.Tensor:
    return torch.rand(2, 3, 300, 300)
