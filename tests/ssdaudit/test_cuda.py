"""CUDA-only checks (skipped without a GPU): the seed's bug after .cuda() is a finding, gradflow finds no false
G002 when backward runs on the device threads."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def test_seed_bug_after_cuda_is_found_not_raised():
    import buggy_plain_list

    from ssdaudit import find_unregistered

    findings = find_unregistered(buggy_plain_list.build_model().cuda(), torch.rand(2, 3, 300, 300, device="cuda"))
    (r001,) = [f for f in findings if f.rule == "R001"]
    assert r001.path == "backbone" and r001.params == 1_812_800 and "cuda" in r001.message


def test_gradflow_on_cuda_reaches_every_parameter():
    from ssdaudit import GradFlowMonitor

    model = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()) for _ in range(6)]).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with GradFlowMonitor(model, opt) as mon:
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(torch.rand(4, 4, 16, 16, device="cuda")).float().square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(t.reached for t in mon.tensors) and mon.findings() == []


def test_fp16_training_uses_the_grad_scaler(tmp_path):
    """--amp fp16 on CUDA: the GradScaler is on and its scale moves; bf16 needs none."""
    from ssdlite_model import tiny
    from ssdlite_model.train import Trainer, TrainSettings

    s = TrainSettings(data="synthetic", epochs=1, batch_size=4, image_size=64, width_mult=0.35, n_train=8, n_val=4,
                      out=str(tmp_path / "r"), progress=False, eval_every=100, device="cuda", amp="fp16")
    trainer = Trainer(s, base_config=tiny())
    assert trainer.scaler.is_enabled()
    trainer.fit()
    assert trainer.scaler.get_scale() > 0 and trainer.step == 2
