"""Datasets for SSDLite: generated shapes (nothing to download), Pascal VOC and COCO trees, SSD augmentation."""

from .files import COCOFiles, DataError, VOCFiles, write_coco, write_voc
from .shapes import SHAPE_NAMES, ShapesDataset, collate_detection
from .transforms import Transformed, eval_transform, ssd_train_transform

__all__ = [
    "COCOFiles", "DataError", "SHAPE_NAMES", "ShapesDataset", "Transformed", "VOCFiles", "collate_detection",
    "eval_transform", "ssd_train_transform", "write_coco", "write_voc",
]
