"""Default boxes (priors) for SSDLite's feature maps."""

from __future__ import annotations

import math

import torch

from .config import SSDLiteConfig


def generate_priors(config: SSDLiteConfig, feature_map_sizes: list[int]) -> torch.Tensor:
    """(P, 4) priors in (cx, cy, w, h), fractions of the image, ordered map by map, row by row,
    box by box: the order in which the heads' outputs are flattened.

    Per location: (s_k, s_k), (s', s') with s' = sqrt(s_k * s_k+1), then (s_k*sqrt(r), s_k/sqrt(r))
    and its transpose for each ratio r. Centres are (j + 0.5) * step / image_size, with
    step = image_size / f_k unless ``config.steps`` fixes them (ssds.pytorch's 300-pixel steps).
    """
    if len(feature_map_sizes) != config.num_sources:
        raise ValueError(f"{len(feature_map_sizes)} feature maps for {config.num_sources} sources")
    rows = []
    for k, f in enumerate(feature_map_sizes):
        step = config.steps[k] / config.image_size if config.steps is not None else 1.0 / f
        centres = (torch.arange(f, dtype=torch.float64) + 0.5) * step
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        s_k, s_next = config.box_sizes[k], config.box_sizes[k + 1]
        shapes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
        for r in config.aspect_ratios[k]:
            shapes += [(s_k * math.sqrt(r), s_k / math.sqrt(r)), (s_k / math.sqrt(r), s_k * math.sqrt(r))]
        wh = torch.tensor(shapes, dtype=torch.float64)  # (B, 2)
        centre = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)
        rows.append(torch.cat([centre, wh.expand(f * f, -1, -1)], dim=-1).reshape(-1, 4))
    priors = torch.cat(rows).float()
    return priors.clamp_(0.0, 1.0) if config.clip_priors else priors
