"""VOC "difficult" objects and COCO crowd regions: kept and flagged at load time, carried through augmentation
with their boxes, left out of training, and scored the way the VOC devkit and COCOeval score them."""

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from typer.testing import CliRunner

from ssdlite_model.cli import app
from ssdlite_model.data import COCOFiles, Transformed, VOCFiles, eval_transform, ssd_train_transform
from ssdlite_model.data.transforms import apply
from ssdlite_model.evaluate import evaluate_detections
from ssdlite_model.loss import MultiBoxLoss
from ssdlite_model import build_ssdlite, tiny

runner = CliRunner()
NAMES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def voc_with_difficult(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    result = runner.invoke(app, ["data", "synth", "--out", str(root), "--n", "4", "--format", "voc",
                                 "--image-size", "64", "--seed", "5"])
    assert result.exit_code == 0, result.output
    xml = root / "VOCdevkit/VOC2007/Annotations/000000.xml"
    tree = ET.parse(xml)
    first = tree.getroot().find("object")
    first.find("difficult").text = "1"
    tree.write(xml)
    return root


def test_difficult_objects_are_kept_and_flagged(voc_with_difficult):
    _, target = VOCFiles(voc_with_difficult, "trainval")[0]
    assert target["difficult"].dtype == torch.bool and target["difficult"].tolist()[0] is True
    assert len(target["difficult"]) == len(target["labels"]) == len(target["boxes"])
    assert not VOCFiles(voc_with_difficult, "trainval")[1][1]["difficult"].any()


def test_flags_stay_aligned_through_augmentation():
    image = torch.rand(3, 100, 100)
    target = {"boxes": torch.tensor([[10.0, 10, 40, 40], [60, 60, 99, 99], [0, 0, 5, 5]]),
              "labels": torch.tensor([1, 2, 3]), "difficult": torch.tensor([False, True, False]),
              "iscrowd": torch.tensor([True, False, False])}
    _, out = apply(eval_transform(50), image, target)
    assert out["difficult"].tolist() == [False, True, False] and out["iscrowd"].tolist() == [True, False, False]
    torch.manual_seed(0)
    for _ in range(30):  # crops drop boxes: each survivor keeps its own label and flags
        _, aug = apply(ssd_train_transform(64), image, target)
        assert len(aug["labels"]) == len(aug["difficult"]) == len(aug["iscrowd"]) == len(aug["boxes"])
        for label, hard, crowd in zip(aug["labels"].tolist(), aug["difficult"].tolist(), aug["iscrowd"].tolist()):
            assert (hard, crowd) == {1: (False, True), 2: (True, False), 3: (False, False)}[label]


def _one_image(detected_on_difficult: bool, detected_normal: bool):
    boxes, scores = [], []
    if detected_on_difficult:
        boxes.append([60.0, 60, 90, 90]); scores.append(0.9)
    if detected_normal:
        boxes.append([10.0, 10, 40, 40]); scores.append(0.8)
    det = {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores),
           "labels": torch.ones(len(boxes), dtype=torch.long)}
    tgt = {"boxes": torch.tensor([[10.0, 10, 40, 40], [60, 60, 90, 90]]), "labels": torch.tensor([1, 1]),
           "difficult": torch.tensor([False, True])}
    return det, tgt


def test_voc_ap_ignores_difficult_objects_as_the_devkit_does():
    # A detection on the difficult object is neither a true nor a false positive ...
    det, tgt = _one_image(detected_on_difficult=True, detected_normal=True)
    m = evaluate_detections([det], [tgt], NAMES[:1], coco_backend="own")
    assert m.per_class["circle"]["ap50"] == pytest.approx(1.0) and m.per_class["circle"]["gt"] == 1
    # ... (dropping the object at load time instead turns that detection into a false positive ranked first)
    dropped = {k: v[:1] for k, v in tgt.items()}
    assert evaluate_detections([det], [dropped], NAMES[:1], coco_backend="own").map50 == pytest.approx(0.5)
    # ... and missing it costs no recall (counting it as ground truth would halve the recall).
    det, tgt = _one_image(detected_on_difficult=False, detected_normal=True)
    assert evaluate_detections([det], [tgt], NAMES[:1], coco_backend="own").map50 == pytest.approx(1.0)
    plain = {k: v for k, v in tgt.items() if k != "difficult"}
    assert evaluate_detections([det], [plain], NAMES[:1], coco_backend="own").map50 == pytest.approx(0.5)


def test_coco_ap_treats_difficult_objects_as_ignore_regions():
    pytest.importorskip("faster_coco_eval")
    det, tgt = _one_image(detected_on_difficult=True, detected_normal=True)
    # a detection on the difficult object is ignored, not a false positive ...
    assert evaluate_detections([det], [tgt], NAMES[:1], coco_backend="faster").coco_map == pytest.approx(1.0)
    # ... and leaving it undetected costs nothing, where a plain ground-truth box would halve the recall
    missed = {k: v[1:] for k, v in det.items()}
    assert evaluate_detections([missed], [tgt], NAMES[:1], coco_backend="faster").coco_map == pytest.approx(1.0)
    plain = {k: v for k, v in tgt.items() if k != "difficult"}
    assert evaluate_detections([missed], [plain], NAMES[:1], coco_backend="faster").coco_map < 0.6


def test_training_leaves_difficult_and_crowd_boxes_out():
    priors = build_ssdlite(tiny()).priors
    loss = MultiBoxLoss()
    box = torch.tensor([[0.2, 0.2, 0.6, 0.6]])
    for flag in ("difficult", "iscrowd"):
        _, cls_plain = loss.match(priors, [{"boxes": box, "labels": torch.tensor([2])}])
        _, cls_flag = loss.match(priors, [{"boxes": box, "labels": torch.tensor([2]), flag: torch.tensor([True])}])
        assert (cls_plain == 2).any() and not (cls_flag > 0).any()


def test_coco_crowd_flags_are_read(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--n", "2", "--format", "coco",
                                 "--image-size", "64", "--seed", "3", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    ann_file = tmp_path / "annotations" / "instances_train.json"
    doc = json.loads(ann_file.read_text())
    doc["annotations"][0]["iscrowd"] = 1
    ann_file.write_text(json.dumps(doc))
    ds = COCOFiles(tmp_path / "images", ann_file)
    flags = [ds[i][1]["iscrowd"] for i in range(len(ds))]
    assert sum(int(f.sum()) for f in flags) == 1 and flags[0].tolist()[0] is True
    _, target = Transformed(ds, eval_transform(32))[0]
    assert target["iscrowd"].tolist()[0] is True
