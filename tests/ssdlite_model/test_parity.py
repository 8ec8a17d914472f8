"""The presets reproduce ssds.pytorch's SSDLite-MobileNetV2 exactly (../shared/reference facts)."""

import io

import pytest
import torch

import ssdlite_model
from ssdlite_model.complexity import params_per_part

# The parameter-count table of ../shared/reference/ssds_pytorch_ssdlite.md ("Parameter counts (measured)"), which
# reference_state_dict below re-derives from the structure the same file describes.
REFERENCE = {
    "voc": {"backbone": 1_812_800, "norm": 96, "extras": 820_096, "loc": 311_168, "conf": 1_633_632, "total": 4_577_792},
    "coco": {"backbone": 1_812_800, "norm": 96, "extras": 820_096, "loc": 311_168, "conf": 6_301_152, "total": 9_245_312},
}
# `torch.save(state_dict)` of ssds.pytorch's model, measured there (same file, "state_dict entries: ... file: ...").
MEASURED_CHECKPOINT_BYTES = {"voc": 18_593_869, "coco": 37_264_141}
NUM_CLASSES = {"voc": 21, "coco": 81}


def _conv_bn(conv: str, norm: str, cin: int, cout: int, k: int, groups: int = 1) -> dict:
    c = (cout,)
    return {f"{conv}.weight": (cout, cin // groups, k, k), f"{norm}.weight": c, f"{norm}.bias": c,
            f"{norm}.running_mean": c, f"{norm}.running_var": c, f"{norm}.num_batches_tracked": ()}


def _inverted_residual(prefix: str, cin: int, hidden: int, cout: int) -> dict:
    # ssds' flat Sequential: 1x1 conv, BN, ReLU6, 3x3 depthwise conv, BN, ReLU6, 1x1 conv, BN
    return {**_conv_bn(f"{prefix}.0", f"{prefix}.1", cin, hidden, 1),
            **_conv_bn(f"{prefix}.3", f"{prefix}.4", hidden, hidden, 3, groups=hidden),
            **_conv_bn(f"{prefix}.6", f"{prefix}.7", hidden, cout, 1)}


def reference_state_dict(num_classes: int) -> dict[str, torch.Tensor]:
    """ssds.pytorch's SSDLite-MobileNetV2 state_dict (zeros), built from the reference file's "Structure" section
    under its key scheme (``base.N.conv.M``, ``norm``, ``extras.N``, ``loc.N``, ``conf.N``), without our code."""
    shapes = _conv_bn("base.0.conv.0", "base.0.conv.1", 3, 32, 3)  # the stem
    cin, block = 32, 1
    for t, c, n, _stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                             (6, 320, 1, 1)]:
        for _ in range(n):  # t=1 keeps its 1x1 expansion conv (32->32) and BN, unlike torchvision
            shapes.update(_inverted_residual(f"base.{block}.conv", cin, cin * t, c))
            cin, block = c, block + 1
    assert block == 18
    shapes["norm.weight"] = (96,)  # L2Norm on the first tap (block 13, 96 channels)
    for j, c in enumerate([512, 256, 256, 128]):  # extras: expansion ratio 1, the first 1x1 conv maps to the width
        shapes.update(_inverted_residual(f"extras.{j}.conv", cin, c, c))
        cin = c
    for head, per_box in (("loc", 4), ("conf", num_classes)):
        for j, (channels, boxes) in enumerate(zip([96, 320, 512, 256, 256, 128], [6, 6, 6, 6, 4, 4])):
            shapes[f"{head}.{j}.weight"] = (boxes * per_box, channels, 3, 3)
            shapes[f"{head}.{j}.bias"] = (boxes * per_box,)
    return {k: torch.zeros(s, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
            for k, s in shapes.items()}


def saved_bytes(state: dict) -> int:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


@pytest.fixture(scope="module")
def voc_model():
    return ssdlite_model.build_ssdlite(ssdlite_model.ssds_voc())


@pytest.mark.parametrize("name", ["voc", "coco"])
def test_reference_structure_reproduces_the_measured_figures(name):
    """The structure transcribed in reference_state_dict gives the reference file's measured numbers, so it can
    stand in for ssds.pytorch's state_dict below."""
    ref = reference_state_dict(NUM_CLASSES[name])
    parts: dict[str, int] = {}
    for key, t in ref.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            part = {"base": "backbone"}.get(key.split(".")[0], key.split(".")[0])
            parts[part] = parts.get(part, 0) + t.numel()
    assert {**parts, "total": sum(parts.values())} == REFERENCE[name]
    assert len(ref) == 409  # the file's "state_dict entries: 409"
    assert sum(t.numel() * t.element_size() for t in ref.values()) == {"voc": 18_465_792, "coco": 37_135_872}[name]
    # the file size also depends on the exact key names, which the reference file gives only in outline
    assert abs(saved_bytes(ref) - MEASURED_CHECKPOINT_BYTES[name]) / MEASURED_CHECKPOINT_BYTES[name] < 0.001


@pytest.mark.parametrize("name", ["voc", "coco"])
def test_parameter_counts_per_part(name):
    config = ssdlite_model.ssds_voc() if name == "voc" else ssdlite_model.ssds_coco()
    model = ssdlite_model.build_ssdlite(config)
    assert params_per_part(model) == REFERENCE[name]
    ours, ref = model.state_dict(), reference_state_dict(NUM_CLASSES[name])
    # entry for entry, in ssds' order (base, norm, extras, loc, conf): the same shape and dtype under our names
    assert [(tuple(t.shape), t.dtype) for t in ours.values()] == [(tuple(t.shape), t.dtype) for t in ref.values()]
    assert sum(t.numel() * t.element_size() for t in ours.values()) == {"voc": 18_465_792, "coco": 37_135_872}[name]
    # the saved file: the same tensor bytes, and only the key names (zip entry and pickle overhead) differ
    assert abs(saved_bytes(ours) - saved_bytes(ref)) / saved_bytes(ref) < 0.002


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
