"""The one place where ssdaudit knows this project's SSDLite: its built-in references and its training probe.

Everything else in ssdaudit works on any ``nn.Module`` through the hooks a user's model file provides
(``example_input``, ``compute_loss``, ``build_optimizer``); this adapter supplies the same for SSDLite models, so
``ssdaudit gradflow examples/buggy_plain_list.py`` trains on synthetic shapes with the MultiBox loss, and
``--reference ssds-voc`` means something. ``ssdlite_model`` is imported only when one of them is used.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn


def is_ssdlite(model: nn.Module) -> bool:
    """An SSDLite of this project (or a subclass, like the seed's buggy one), told without importing it."""
    return any(cls.__module__.startswith("ssdlite_model") and cls.__name__ == "SSDLite" for cls in type(model).__mro__)


def training_hooks(model: nn.Module, batch_size: int = 2) -> tuple[Callable[[int], Any], Callable[[Any, Any], Any]] | None:
    """(make_batch, compute_loss) for a model the adapter knows, else None."""
    return ssdlite_probe(model, batch_size) if is_ssdlite(model) else None


def ssdlite_probe(model: Any, batch_size: int = 2, seed: int = 0) -> tuple[Callable[[int], Any], Callable[[Any, Any], Any]]:
    """(make_batch, compute_loss) for this project's SSDLite: synthetic shapes and the MultiBox loss."""
    from ssdlite_model.data import ShapesDataset, collate_detection
    from ssdlite_model.loss import MultiBoxLoss, targets_to_fractions

    cfg = model.config
    size = cfg.image_size
    data = ShapesDataset(n=max(batch_size * 64, 64), image_size=size, num_classes=min(cfg.num_classes - 1, 6), seed=seed)
    criterion = MultiBoxLoss(cfg.iou_threshold, cfg.neg_pos_ratio, cfg.variances)

    def make_batch(step: int) -> tuple[Any, Any]:
        items = [data[(step * batch_size + i) % len(data)] for i in range(batch_size)]
        images, targets = collate_detection(items)
        return images, targets_to_fractions(targets, size, size)

    def compute_loss(output: Any, targets: Any) -> Any:
        loc, conf = output
        return criterion(loc, conf, model.priors, targets)["loss"]

    return make_batch, compute_loss


def ssds_reference(preset: str) -> Callable[[], nn.Module]:
    """A builder of ssds.pytorch's SSDLite for a preset name of ``ssdlite_model`` ("ssds_voc", "ssds_coco")."""
    def build() -> nn.Module:
        import ssdlite_model

        return ssdlite_model.build_ssdlite(getattr(ssdlite_model, preset)())

    return build
