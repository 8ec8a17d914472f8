"""Pascal VOC and COCO on disk: writing the synthetic dataset as real trees, and loading them back.

Loading goes through torchvision.datasets (``VOCDetection`` parses the XML, ``CocoDetection`` +
``wrap_dataset_for_transforms_v2`` the JSON). Items come out like ``ShapesDataset``'s:
``(image (3, H, W) float in [0, 1], {"boxes": (N, 4) xyxy pixels, "labels": (N,) in 1..K})``.
A bad annotation (box outside the image, zero area, unknown class) is dropped and counted, never fatal.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

from ssdaudit.core.errors import UserError, first_line

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_YEAR = "2007"


class DataError(UserError):
    """A dataset that cannot be read: missing root, empty, corrupt image or annotation. The message is one line."""

    kind = "data"


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _split_ids(n: int, val_fraction: float) -> dict[str, list[str]]:
    ids = [f"{i:06d}" for i in range(n)]
    n_val = int(round(n * val_fraction))
    return {"train": ids[: n - n_val], "val": ids[n - n_val:], "trainval": ids}


def write_voc(dataset: Any, root: str | Path, val_fraction: float = 0.2,
              progress: Callable[[int], None] | None = None) -> Path:
    """Write ``dataset`` as ``root/VOCdevkit/VOC2007`` (JPEGImages, Annotations, ImageSets/Main, labels.txt)."""
    from torchvision.io import write_jpeg

    base = Path(root) / "VOCdevkit" / f"VOC{VOC_YEAR}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    names = list(dataset.class_names)
    (base / "labels.txt").write_text("\n".join(names) + "\n")
    splits = _split_ids(len(dataset), val_fraction)
    for i in range(len(dataset)):
        image, target = dataset[i]
        image_id = f"{i:06d}"
        write_jpeg(_to_uint8(image), str(base / "JPEGImages" / f"{image_id}.jpg"), quality=95)
        h, w = image.shape[-2:]
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = f"VOC{VOC_YEAR}"
        ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
        size = ET.SubElement(ann, "size")
        for tag, value in (("width", w), ("height", h), ("depth", 3)):
            ET.SubElement(size, tag).text = str(int(value))
        difficult = target.get("difficult", torch.zeros(len(target["labels"]), dtype=torch.bool)).tolist()
        for box, label, hard in zip(target["boxes"].tolist(), target["labels"].tolist(), difficult):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = names[label - 1]
            ET.SubElement(obj, "difficult").text = "1" if hard else "0"
            bb = ET.SubElement(obj, "bndbox")
            # VOC pixel indices are 1-based and inclusive: xmin = x0 + 1, xmax = x1.
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (box[0] + 1, box[1] + 1, box[2], box[3])):
                ET.SubElement(bb, tag).text = str(int(round(value)))
        ET.ElementTree(ann).write(base / "Annotations" / f"{image_id}.xml")
        if progress:
            progress(i + 1)
    for split, ids in splits.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{x}\n" for x in ids))
    return base


def write_coco(dataset: Any, root: str | Path, val_fraction: float = 0.2,
               progress: Callable[[int], None] | None = None) -> Path:
    """Write ``dataset`` as ``root/images/*.jpg`` and ``root/annotations/instances_{train,val}.json``."""
    from torchvision.io import write_jpeg

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(dataset.class_names)]
    splits = _split_ids(len(dataset), val_fraction)
    docs = {s: {"images": [], "annotations": [], "categories": categories} for s in ("train", "val")}
    ann_id = 1
    for i in range(len(dataset)):
        image, target = dataset[i]
        image_id = f"{i:06d}"
        split = "val" if image_id in set(splits["val"]) else "train"
        write_jpeg(_to_uint8(image), str(root / "images" / f"{image_id}.jpg"), quality=95)
        h, w = image.shape[-2:]
        doc = docs[split]
        doc["images"].append({"id": i + 1, "file_name": f"{image_id}.jpg", "width": int(w), "height": int(h)})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x0, y0, x1, y1 = box
            doc["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })
            ann_id += 1
        if progress:
            progress(i + 1)
    for split, doc in docs.items():
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def _valid_target(target: dict[str, torch.Tensor], h: int, w: int, counts: Counter[str]) -> dict[str, torch.Tensor]:
    """Keep boxes inside the image (1 px tolerance), with positive area and a known class, with their per-box
    flags ("difficult", "iscrowd"); count the rest."""
    boxes, labels = target["boxes"], target["labels"]
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for k, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        x0, y0, x1, y1 = box
        if label <= 0:
            counts["unknown class"] += 1
            keep[k] = False
        elif x1 <= x0 or y1 <= y0:
            counts["zero area"] += 1
            keep[k] = False
        elif x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
            counts["outside the image"] += 1
            keep[k] = False
    out = {k: v[keep] for k, v in target.items()}
    out["boxes"] = out["boxes"].clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=boxes.dtype))
    return out


class VOCFiles(torch.utils.data.Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """A Pascal VOC tree (``root`` holds ``VOCdevkit/VOC2007``) through torchvision's VOCDetection."""

    def __init__(self, root: str | Path, split: str = "trainval", class_names: tuple[str, ...] | None = None) -> None:
        from torchvision.datasets import VOCDetection

        root = Path(root)
        base = root / "VOCdevkit" / f"VOC{VOC_YEAR}"
        if not root.exists():
            raise DataError(f"no such dataset root: {root}")
        if not (base / "ImageSets" / "Main" / f"{split}.txt").exists():
            raise DataError(f"{root} is not a VOC root: {base}/ImageSets/Main/{split}.txt is missing "
                            "(expected ROOT/VOCdevkit/VOC2007/...; `ssdlite data synth --format voc` writes one)")
        labels_file = base / "labels.txt"
        if class_names is None:
            class_names = tuple(labels_file.read_text().split()) if labels_file.exists() else VOC_CLASSES
        self.class_names = tuple(class_names)
        self._index = {n: k + 1 for k, n in enumerate(self.class_names)}
        self.voc = VOCDetection(str(root), year=VOC_YEAR, image_set=split, download=False)
        if len(self.voc) == 0:
            raise DataError(f"{base}/ImageSets/Main/{split}.txt lists no images: the dataset is empty")
        self.dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.voc)

    def annotation(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """(boxes (N, 4) xyxy pixels, labels (N,), difficult (N,) bool, height, width) from the XML alone;
        unknown classes get 0. Difficult objects are kept and flagged: VOC's AP ignores them, training skips them."""
        file = self.voc.annotations[index]
        try:
            tree = self.voc.parse_voc_xml(ET.parse(file).getroot())["annotation"]
            objects = tree.get("object", [])
            objects = objects if isinstance(objects, list) else [objects]
            boxes = [[float(o["bndbox"][k]) - (1 if k in ("xmin", "ymin") else 0) for k in ("xmin", "ymin", "xmax", "ymax")]
                     for o in objects]
            labels = [self._index.get(o["name"], 0) for o in objects]
            difficult = [str(o.get("difficult", "0")).strip() == "1" for o in objects]
            size = tree.get("size", {})
            height, width = int(size.get("height", 0)), int(size.get("width", 0))
        except (ET.ParseError, KeyError, TypeError, ValueError, AttributeError) as exc:
            what = "not well-formed XML" if isinstance(exc, ET.ParseError) else f"{exc.__class__.__name__}: {exc}"
            raise DataError(f"bad VOC annotation {file}: {what}; fix or remove it (and its line in ImageSets/Main)") from exc
        except OSError as exc:
            raise DataError(f"cannot read annotation {file}: {exc.strerror or exc}") from exc
        return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64),
                torch.tensor(difficult, dtype=torch.bool), height, width)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = _read_image(self.voc.images[index])
        boxes, labels, difficult, _, _ = self.annotation(index)
        h, w = image.shape[-2:]
        return image, _valid_target({"boxes": boxes, "labels": labels, "difficult": difficult}, h, w, self.dropped)


class COCOFiles(torch.utils.data.Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """A COCO image folder + instances JSON through CocoDetection and wrap_dataset_for_transforms_v2.

    Category ids are mapped to contiguous labels 1..K in id order (COCO's 80 ids run to 90)."""

    def __init__(self, images: str | Path, annotations: str | Path) -> None:
        import contextlib
        import io

        from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

        images, annotations = Path(images), Path(annotations)
        for p, what in ((images, "image folder"), (annotations, "annotation file")):
            if not p.exists():
                raise DataError(f"no such COCO {what}: {p}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                base = CocoDetection(str(images), str(annotations))
        except (ValueError, KeyError, TypeError, AttributeError, AssertionError, IndexError) as exc:
            raise DataError(f"{annotations} is not a COCO instances file (a JSON object with 'images', 'annotations' "
                            f"and 'categories'): {first_line(exc, 120)}") from exc
        except OSError as exc:
            raise DataError(f"cannot read {annotations}: {exc.strerror or exc}") from exc
        if len(base) == 0:
            raise DataError(f"{annotations} lists no images: the dataset is empty")
        cats = sorted(base.coco.cats.values(), key=lambda c: c["id"])
        self.class_names = tuple(c["name"] for c in cats)
        self._label = {c["id"]: k + 1 for k, c in enumerate(cats)}
        self.base = base
        self.wrapped = wrap_dataset_for_transforms_v2(base, target_keys=("boxes", "labels", "image_id", "iscrowd"))
        self.dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        path = Path(self.base.root) / self.base.coco.loadImgs(self.base.ids[index])[0]["file_name"]
        try:
            pil, target = self.wrapped[index]
            pil.load()
        except (OSError, SyntaxError) as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise DataError(f"cannot read image {path}: {exc}") from exc
        from torchvision.transforms.v2.functional import pil_to_tensor

        image = pil_to_tensor(pil.convert("RGB")).float() / 255
        boxes = target.get("boxes")
        boxes = torch.zeros(0, 4) if boxes is None else boxes.as_subclass(torch.Tensor).float()
        labels = target.get("labels", torch.zeros(0, dtype=torch.int64))
        labels = torch.tensor([self._label.get(int(c), 0) for c in labels], dtype=torch.int64)
        crowd = torch.as_tensor(target.get("iscrowd", torch.zeros(len(labels))), dtype=torch.bool).reshape(-1)
        h, w = image.shape[-2:]
        return image, _valid_target({"boxes": boxes, "labels": labels, "iscrowd": crowd}, h, w, self.dropped)


def _read_image(path: str | Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    try:
        image: torch.Tensor = decode_image(str(path), mode=ImageReadMode.RGB).float() / 255
        return image
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'}") from exc
