"""VOC/COCO trees on disk, augmentation, mAP against pycocotools, ONNX export, detect."""

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from typer.testing import CliRunner

from ssdlite_model.cli import app
from ssdlite_model.data import COCOFiles, DataError, ShapesDataset, Transformed, VOCFiles, ssd_train_transform
from ssdlite_model.evaluate import coco_eval, evaluate_detections

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(8, 64, num_classes=3, seed=3)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, shapes):
    root = tmp_path_factory.mktemp("voc")
    result = runner.invoke(app, ["data", "synth", "--out", str(root), "--n", "8", "--format", "voc",
                                 "--image-size", "64", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return root


def test_voc_round_trip(voc_root, shapes):
    ds = VOCFiles(voc_root, "trainval")
    assert ds.class_names == shapes.class_names and len(ds) == 8
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 64, 64)
        assert torch.equal(target["boxes"], shapes[i][1]["boxes"])
        assert torch.equal(target["labels"], shapes[i][1]["labels"])
    assert len(VOCFiles(voc_root, "train")) + len(VOCFiles(voc_root, "val")) == 8


def test_coco_round_trip(tmp_path, shapes):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--n", "8", "--format", "coco",
                                 "--image-size", "64", "--seed", "3", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    ds = COCOFiles(tmp_path / "images", tmp_path / "annotations" / "instances_train.json")
    assert ds.class_names == shapes.class_names and len(ds) == 8
    for i in range(len(ds)):
        _, target = ds[i]
        assert torch.allclose(target["boxes"], shapes[i][1]["boxes"])
        assert torch.equal(target["labels"], shapes[i][1]["labels"])


def test_bad_annotations_are_dropped_and_counted(voc_root, tmp_path):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    xml = root / "VOCdevkit/VOC2007/Annotations/000000.xml"
    tree = ET.parse(xml)
    ann = tree.getroot()
    for name, box in (("circle", (50, 50, 90, 90)), ("square", (20, 10, 19, 30)), ("unicorn", (5, 5, 20, 20))):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = str(v)
    tree.write(xml)
    ds = VOCFiles(root, "trainval")
    _, target = ds[0]
    clean = VOCFiles(voc_root, "trainval")[0][1]
    assert torch.equal(target["boxes"], clean["boxes"])
    assert dict(ds.dropped) == {"outside the image": 1, "zero area": 1, "unknown class": 1}


def test_missing_empty_and_corrupt(tmp_path, voc_root):
    import shutil

    with pytest.raises(DataError, match="no such dataset root"):
        VOCFiles(tmp_path / "nope")
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    (root / "VOCdevkit/VOC2007/ImageSets/Main/val.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        VOCFiles(root, "val")
    (root / "VOCdevkit/VOC2007/JPEGImages/000001.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="000001.jpg"):
        VOCFiles(root, "trainval")[1]
    result = runner.invoke(app, ["train", "--data", f"voc:{tmp_path / 'missing'}", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "no such dataset root" in result.stderr


def test_augmentation_keeps_boxes_valid(shapes):
    torch.manual_seed(0)
    ds = Transformed(shapes, ssd_train_transform(64, strong=True))
    for _ in range(5):
        for i in range(len(shapes)):
            image, target = ds[i]
            boxes = target["boxes"]
            assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
            assert len(boxes) == len(target["labels"])
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert (boxes >= 0).all() and (boxes <= 64).all()


def _case():
    g = torch.Generator().manual_seed(0)
    dets, tgts = [], []
    for _ in range(8):
        xy = torch.rand(3, 2, generator=g) * 60
        gt = torch.cat([xy, xy + 10 + torch.rand(3, 2, generator=g) * 30], 1)
        labels = torch.randint(1, 3, (3,), generator=g)
        tgts.append({"boxes": gt, "labels": labels})
        noisy = gt + torch.randn(3, 4, generator=g) * 3
        spurious = torch.cat([xy[:2] + 5, xy[:2] + 25], 1)
        dets.append({"boxes": torch.cat([noisy, spurious]), "scores": torch.rand(5, generator=g),
                     "labels": torch.cat([labels, torch.randint(1, 3, (2,), generator=g)])})
    return dets, tgts


def test_map_matches_pycocotools():
    dets, tgts = _case()
    stats = coco_eval(dets, tgts, num_classes=3)
    for backend in ("faster", "pycocotools", "own"):  # the maintained evaluators and our fallback loop
        ours = evaluate_detections(dets, tgts, ("a", "b"), coco_backend=backend)
        assert ours.coco_map == pytest.approx(stats[0], abs=1e-9), backend
    assert 0.05 < stats[0] < 0.9  # a case where the answer is not trivial
    # max_dets binding: at most 2 detections per (image, class) count, in every evaluator
    for backend in ("faster", "own"):
        two = evaluate_detections(dets, tgts, ("a", "b"), max_dets=2, coco_backend=backend)
        assert two.coco_map == pytest.approx(coco_eval(dets, tgts, num_classes=3, max_dets=2)[0], abs=1e-9)
        assert two.coco_map != pytest.approx(stats[0])


def test_crowd_boxes_are_ignored_as_coco_does():
    dets, tgts = _case()
    tgts[0] = {**tgts[0], "iscrowd": torch.tensor([1, 0, 0])}  # a crowd region: detections on it are not false
    reference = coco_eval(dets, tgts, num_classes=3)[0]
    assert evaluate_detections(dets, tgts, ("a", "b"), coco_backend="faster").coco_map == pytest.approx(reference, abs=1e-9)
    assert reference != pytest.approx(coco_eval(*_case(), num_classes=3)[0])  # the crowd flag changed the answer


def test_voc_ap_hand_computed():
    gt = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}
    # best-scored detection is a false positive, then both hits: precision 0, 1/2, 2/3 at recall 0, 0.5, 1
    det = {"boxes": torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}
    m = evaluate_detections([det], [gt], ("a",))
    assert m.map50 == pytest.approx(2 / 3)  # the envelope is 2/3 from recall 0 to 1
    assert m.map50_11pt == pytest.approx(2 / 3)
    perfect = evaluate_detections([{**gt, "scores": torch.tensor([0.9, 0.8])}], [gt], ("a",))
    assert perfect.map50 == 1.0 and perfect.coco_map == 1.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    result = runner.invoke(app, ["train", "--preset", "tiny", "--epochs", "1", "--image-size", "64", "--width-mult", "0.35",
                                 "--n-train", "8", "--n-val", "4", "--batch-size", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "last.pth"


def test_onnx_export_matches_pytorch(checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(checkpoint), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    import numpy as np
    import onnxruntime as ort

    from ssdlite_model.checkpoint import load_checkpoint_model

    model, _ = load_checkpoint_model(checkpoint)
    x = torch.rand(3, 3, 64, 64)
    loc, conf = ort.InferenceSession(str(out)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_loc, ref_conf = model(x)
    assert np.abs(loc - ref_loc.numpy()).max() < 1e-4 and np.abs(conf - ref_conf.numpy()).max() < 1e-4


def test_eval_and_detect_cli(checkpoint, tmp_path):
    result = runner.invoke(app, ["eval", str(checkpoint), "--n-val", "4", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == 4 and set(data["per_class"]) <= {"circle", "square", "triangle"}
    # the CLI reports what the library computes on the same checkpoint and data (seed from the checkpoint)
    from ssdlite_model.checkpoint import load_checkpoint_model
    from ssdlite_model.evaluate import evaluate_model
    from ssdlite_model.train import TrainSettings, build_datasets

    model, state = load_checkpoint_model(checkpoint)
    s = TrainSettings(image_size=model.config.image_size, n_val=4, n_train=1, seed=state["settings"]["seed"],
                      num_shapes=min(model.config.num_classes - 1, 6))
    direct = evaluate_model(model, build_datasets(s)[1], 32).to_dict()
    assert data["map50"] == pytest.approx(direct["map50"]) and data["coco_map"] == pytest.approx(direct["coco_map"])
    from torchvision.io import write_png

    image = (ShapesDataset(1, 80, 3, seed=9)[0][0] * 255).to(torch.uint8)
    write_png(image, str(tmp_path / "a.png"))
    result = runner.invoke(app, ["detect", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "d"), "--score", "0.0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "a_detections.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, ["detect", str(checkpoint), str(tmp_path / "missing.png")])
    assert result.exit_code == 2 and "no such image" in result.stderr


def test_eval_rejects_another_architecture(tmp_path, checkpoint):
    from torchvision.models import mobilenet_v3_small

    foreign = tmp_path / "foreign.pth"
    torch.save(mobilenet_v3_small().state_dict(), foreign)
    result = runner.invoke(app, ["eval", str(foreign), "--preset", "tiny"])
    assert result.exit_code == 2
    assert "missing" in result.stderr and "unexpected" in result.stderr and "features.0.0.weight" in result.stderr
    result = runner.invoke(app, ["eval", str(foreign)])
    assert result.exit_code == 2 and "--preset" in result.stderr


def test_detections_come_back_in_the_image_pixels(checkpoint):
    from ssdlite_model.checkpoint import load_checkpoint_model
    from ssdlite_model.cli import detect_in_image

    model, _ = load_checkpoint_model(checkpoint)
    size = model.config.image_size
    seen = {}

    def fake_detect(images, score_threshold):
        seen["shape"] = tuple(images.shape)
        return [{"boxes": torch.tensor([[0.0, 0.0, size / 2, size / 4]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])}]

    model.detect = fake_detect
    det = detect_in_image(model, torch.rand(3, 100, 240), 0.3)
    assert seen["shape"] == (1, 3, size, size)  # the model saw its own input size
    assert torch.allclose(det["boxes"], torch.tensor([[0.0, 0.0, 120.0, 25.0]]))  # half the width, a quarter of the height
