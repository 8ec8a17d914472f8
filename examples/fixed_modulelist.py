"""The one-line fix for examples/buggy_plain_list.py: the backbone blocks in an nn.ModuleList.

    ssdaudit params examples/fixed_modulelist.py --reference ssds-voc
"""

import torch
from torch import nn

from ssdlite_model import SSDLite, ssds_voc


class ModuleListSSDLite(SSDLite):
    def __init__(self, config=None):
        super().__init__(config or ssds_voc())
        blocks = list(self.backbone)
        del self.backbone
        self.backbone = nn.ModuleList(blocks)  # FIX: registered, so parameters() and state_dict() see them


def build_model() -> SSDLite:
    return ModuleListSSDLite(ssds_voc())


def example_input() -> torch.Tensor:
    return torch.rand(2, 3, 300, 300)
