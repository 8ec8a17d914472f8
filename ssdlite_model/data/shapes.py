"""A synthetic detection dataset of coloured shapes on noisy, textured backgrounds."""

from __future__ import annotations


import torch
from torch.utils.data import Dataset

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "ring", "cross")


class ShapesDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """``n`` images of ``image_size`` pixels with 1..``max_objects`` shapes each, deterministic per
    (``seed``, index): the same arguments always give the same images and boxes.

    Item: ``(image (3, H, W) float in [0, 1], {"boxes": (N, 4) xyxy pixels, "labels": (N,) in 1..K})``;
    label k is ``SHAPE_NAMES[k - 1]`` (0 is background).
    """

    def __init__(
        self,
        n: int = 256,
        image_size: int = 128,
        num_classes: int = 3,
        max_objects: int = 3,
        seed: int = 0,
        min_size: float = 0.2,
        max_size: float = 0.5,
    ) -> None:
        if not 1 <= num_classes <= len(SHAPE_NAMES):
            raise ValueError(f"num_classes must be 1..{len(SHAPE_NAMES)} shape kinds, got {num_classes}")
        if n < 1 or max_objects < 1:
            raise ValueError("n and max_objects must be at least 1")
        self.n, self.image_size, self.num_classes = n, image_size, num_classes
        self.max_objects, self.seed = max_objects, seed
        self.min_size, self.max_size = min_size, max_size
        self.class_names = SHAPE_NAMES[:num_classes]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s = self.image_size
        image = self._background(g)
        ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
        boxes, labels = [], []
        count = int(torch.randint(1, self.max_objects + 1, (1,), generator=g))
        for _ in range(count):
            label = int(torch.randint(1, self.num_classes + 1, (1,), generator=g))
            side = s * (self.min_size + (self.max_size - self.min_size) * float(torch.rand(1, generator=g)))
            aspect = 0.7 + 0.6 * float(torch.rand(1, generator=g))
            w, h = min(side * aspect, s), min(side / aspect, s)
            x0 = float(torch.rand(1, generator=g)) * (s - w)
            y0 = float(torch.rand(1, generator=g)) * (s - h)
            mask = _shape_mask(SHAPE_NAMES[label - 1], xs, ys, x0, y0, w, h)
            if mask.sum() < 4:
                continue
            colour = 0.15 + 0.85 * torch.rand(3, 1, 1, generator=g)
            image = torch.where(mask, colour.expand(3, s, s), image)
            yy, xx = mask.nonzero(as_tuple=True)
            boxes.append([float(xx.min()), float(yy.min()), float(xx.max()) + 1, float(yy.max()) + 1])
            labels.append(label)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        return image.clamp_(0.0, 1.0), target

    def _background(self, g: torch.Generator) -> torch.Tensor:
        s = self.image_size
        base = 0.2 + 0.5 * torch.rand(3, 1, 1, generator=g)
        ramp = torch.linspace(-0.15, 0.15, s).view(1, 1, s) * (torch.rand(3, 1, 1, generator=g) - 0.5)
        stripes = 0.05 * torch.sin(torch.arange(s).view(1, s, 1) * (0.2 + float(torch.rand(1, generator=g))))
        noise = 0.08 * torch.randn(3, s, s, generator=g)
        return base + ramp + stripes + noise


def _shape_mask(kind: str, xs: torch.Tensor, ys: torch.Tensor, x0: float, y0: float, w: float, h: float) -> torch.Tensor:
    """Boolean (H, W) mask of a shape inscribed in the box (x0, y0, w, h)."""
    u = (xs - x0) / w * 2 - 1  # -1..1 across the box
    v = (ys - y0) / h * 2 - 1
    inside = (u.abs() <= 1) & (v.abs() <= 1)
    if kind == "circle":
        return u**2 + v**2 <= 1
    if kind == "square":
        return inside
    if kind == "triangle":
        return inside & (u.abs() <= (v + 1) / 2)
    if kind == "diamond":
        return u.abs() + v.abs() <= 1
    if kind == "ring":
        r = u**2 + v**2
        return (r <= 1) & (r >= 0.35)
    if kind == "cross":
        return inside & ((u.abs() <= 0.3) | (v.abs() <= 0.3))
    raise ValueError(f"unknown shape {kind!r}")


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack same-size images into (N, 3, H, W) and keep targets as a list."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


