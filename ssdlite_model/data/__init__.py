"""Datasets for SSDLite: a procedurally generated shapes dataset (nothing to download)."""

from .shapes import SHAPE_NAMES, ShapesDataset, collate_detection

__all__ = ["SHAPE_NAMES", "ShapesDataset", "collate_detection"]
