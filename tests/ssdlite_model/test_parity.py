"""The presets reproduce ssds.pytorch's SSDLite-MobileNetV2 exactly (../shared/reference facts)."""

import io

import pytest
import torch

import ssdlite_model
from ssdlite_model.complexity import params_per_part

REFERENCE = {
    "voc": {"backbone": 1_812_800, "norm": 96, "extras": 820_096, "loc": 311_168, "conf": 1_633_632, "total": 4_577_792},
    "coco": {"backbone": 1_812_800, "norm": 96, "extras": 820_096, "loc": 311_168, "conf": 6_301_152, "total": 9_245_312},
}
CHECKPOINT_BYTES = {"voc": 18_593_869, "coco": 37_264_141}


@pytest.fixture(scope="module")
def voc_model():
    return ssdlite_model.build_ssdlite(ssdlite_model.ssds_voc())


@pytest.mark.parametrize("name", ["voc", "coco"])
def test_parameter_counts_per_part(name):
    config = ssdlite_model.ssds_voc() if name == "voc" else ssdlite_model.ssds_coco()
    model = ssdlite_model.build_ssdlite(config)
    assert params_per_part(model) == REFERENCE[name]
    assert len(model.state_dict()) == 409
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert abs(buf.tell() - CHECKPOINT_BYTES[name]) / CHECKPOINT_BYTES[name] < 0.01


def test_backbone_differs_from_torchvision_by_the_first_expansion(voc_model):
    from torchvision.models import mobilenet_v2

    tv = sum(p.numel() for p in mobilenet_v2().features[:18].parameters())
    assert tv == 1_811_712
    assert params_per_part(voc_model)["backbone"] - tv == 1_088


def test_priors_and_feature_maps(voc_model):
    assert voc_model.feature_map_sizes == [19, 10, 5, 3, 2, 1]
    priors = voc_model.priors
    assert priors.shape == (2990, 4)
    torch.testing.assert_close(priors[0], torch.tensor([0.02667, 0.02667, 0.15, 0.15]), atol=1e-4, rtol=0)
    torch.testing.assert_close(priors[1, 2:], torch.tensor([0.21213, 0.21213]), atol=1e-4, rtol=0)
    assert priors.min() >= 0 and priors.max() <= 1
    # ssds' 32-pixel step on the 10x10 map pushes 60 centres past 1 before clipping.
    start, end = 19 * 19 * 6, 19 * 19 * 6 + 10 * 10 * 6
    assert int((priors[start:end, 0] == 1.0).sum()) == 60


def test_priors_are_not_saved_and_follow_dtype(voc_model):
    assert "priors" not in voc_model.state_dict()
    model = ssdlite_model.build_ssdlite(ssdlite_model.tiny()).to(torch.float64)
    assert model.priors.dtype == torch.float64
    loc, conf = model(torch.rand(2, 3, 96, 96, dtype=torch.float64))
    assert loc.dtype == torch.float64 and loc.shape == (2, model.priors.shape[0], 4)


def test_forward_shapes(voc_model):
    voc_model.eval()
    with torch.no_grad():
        loc, conf = voc_model(torch.rand(2, 3, 300, 300))
    assert loc.shape == (2, 2990, 4) and conf.shape == (2, 2990, 21)


def test_wrong_input_size_is_a_clear_error():
    model = ssdlite_model.build_ssdlite(ssdlite_model.tiny(image_size=96))
    with pytest.raises(ValueError, match="resize the input"):
        model(torch.rand(2, 3, 160, 160))


def test_paper_preset_is_close_to_the_paper():
    model = ssdlite_model.build_ssdlite(ssdlite_model.paper_coco())
    total = params_per_part(model)["total"]
    assert 4.0e6 < total < 4.7e6  # the paper reports 4.3M
    assert model.feature_map_sizes == [20, 10, 5, 3, 2, 1]
    # The first tap is the 576-channel expansion of the first 160-channel block.
    assert model.backbone[14].out_channels == 576


def test_invalid_config_names_the_problem():
    with pytest.raises(ValueError, match="box_sizes"):
        ssdlite_model.SSDLiteConfig(box_sizes=(0.1, 0.2))


def test_backbone_weights_load_from_a_local_file(tmp_path):
    from torchvision.models import mobilenet_v2

    tv = mobilenet_v2()
    torch.save(tv.state_dict(), tmp_path / "mnv2.pth")
    model = ssdlite_model.build_ssdlite(ssdlite_model.ssds_voc(), tmp_path / "mnv2.pth")
    torch.testing.assert_close(model.backbone[5].conv[1][0].weight, tv.features[5].conv[1][0].weight)
    # Block 1's depthwise conv moved one slot down behind the added expansion.
    torch.testing.assert_close(model.backbone[1].conv[1][0].weight, tv.features[1].conv[0][0].weight)
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read backbone weights"):
        ssdlite_model.build_ssdlite(ssdlite_model.ssds_voc(), tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        ssdlite_model.build_ssdlite(ssdlite_model.ssds_voc(), tmp_path / "missing.pth")
