"""Library models by name, built from their configuration with random weights (nothing is downloaded).

``torchvision:resnet50`` (``torchvision.models.get_model(name, weights=None)``), ``timm:convnext_tiny``
(``timm.create_model(name, pretrained=False)``), ``hf:bert`` (a ``model_type``: ``AutoConfig.for_model``) or
``hf:path/to/folder`` (a local folder with a ``config.json``; ``AutoModel.from_config``). Each library is an
optional dependency, imported only here and only when such a target is named.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssdaudit.core.errors import LoadError, UserError, first_line

_EXTRA = {"torchvision": "ssdaudit[torch]", "timm": "timm", "hf": "ssdaudit[transformers]"}
HF_SEQUENCE_LENGTH = 16  # tokens in the probe input of a Hugging Face model
_SAFE_VOCABULARY = 100  # token ids below this are valid in any real vocabulary (special tokens, bytes)


def build_library_model(library: str, name: str, device: str = "cpu",
                        want_input: bool = True) -> tuple[Any, Any, Callable[[], Any]]:
    """(model, example input or None, rebuild) for ``library:name``; the model is in train mode with random weights,
    built on ``device`` ("cpu", or "meta": no parameter memory).

    Example inputs: image models get a (2, 3, H, W) float tensor at the size the model expects (224 unless its
    configuration says otherwise; 2 samples so that BatchNorm can train), video models (2, 3, 8, 112, 112),
    Hugging Face models (2, 16) token ids below the vocabulary size. Detection models take targets in train mode,
    so they get no example input (the audit skips the forward probe and says so). Raises ``LoadError`` for an
    unknown model name (with the closest names) or a library that is not installed (with the install line)."""
    builders = {"torchvision": _torchvision, "timm": _timm, "hf": _huggingface}
    try:
        build, example = builders[library](name, want_input)
    except ImportError as exc:
        raise LoadError(f"{library}:{name} needs {exc.name or library}, which is not installed here: "
                        f"pip install {_EXTRA[library]}") from exc

    def rebuild() -> Any:
        import torch

        try:
            with torch.device(device):
                return build()
        except UserError:
            raise
        except Exception as exc:
            raise LoadError(f"{library}:{name}: building it raised {exc.__class__.__name__}: {first_line(exc)}") from exc

    model = rebuild()
    if example is not None and device == "meta":
        import torch
        from torch.utils._pytree import tree_map

        example = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, example)
    return model, example, rebuild


def _unknown(library: str, name: str, names: list[str]) -> LoadError:
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(names)} models; e.g. {', '.join(names[:3])})"
    return LoadError(f"{library}:{name}: no such model{hint}")


def _torchvision(name: str, want_input: bool) -> tuple[Callable[[], Any], Any]:
    import torch
    import torchvision.models as tvm

    names = tvm.list_models()
    if name not in names:
        raise _unknown("torchvision", name, names)
    example = None
    if want_input:
        if name in tvm.list_models(module=tvm.video):
            example = torch.rand(2, 3, 8, 112, 112)
        elif name in tvm.list_models(module=tvm.detection) or name in tvm.list_models(module=tvm.optical_flow):
            example = None  # detection models take targets in train mode; flow models take two images
        else:
            size = 299 if name == "inception_v3" else 224
            example = torch.rand(2, 3, size, size)
    return (lambda: tvm.get_model(name, weights=None)), example


def _timm(name: str, want_input: bool) -> tuple[Callable[[], Any], Any]:
    import timm
    import torch

    names = timm.list_models()
    if name not in names:
        raise _unknown("timm", name, names)

    def build() -> Any:
        return timm.create_model(name, pretrained=False)

    example = None
    if want_input:
        cfg = timm.get_pretrained_cfg(name)
        size = tuple(getattr(cfg, "input_size", None) or (3, 224, 224))
        example = torch.rand(2, *size)
    return build, example


def _huggingface(name: str, want_input: bool) -> tuple[Callable[[], Any], Any]:
    import torch
    from transformers import AutoConfig, AutoModel

    folder = Path(name)
    if (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    elif folder.is_dir():
        raise LoadError(f"hf:{name} is a folder without a config.json")
    else:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        names = sorted(CONFIG_MAPPING.keys())
        if name not in names:
            raise _unknown("hf", name, names)
        config = AutoConfig.for_model(name)

    def build() -> Any:
        return AutoModel.from_config(config)  # type: ignore[no-untyped-call]

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(config)]
    except (KeyError, ValueError):  # AutoModel cannot build it either: building says so
        model_class = None
    return build, hf_example_input(config, model_class) if want_input else None


def hf_example_input(config: Any, model_class: Any) -> Any:
    """The probe input of a Hugging Face model, by its class's ``main_input_name``: token ids (LongTensor[2, 16])
    below the vocabulary size (the text configuration's, or below 100 where none is given), as keyword arguments
    (a dict) with ``use_cache=False`` where forward takes it, and for an encoder-decoder whose forward takes
    ``decoder_input_ids`` the same ids on both sides; images (FloatTensor[2, C, H, W]) at the configuration's
    ``image_size`` (224 where it gives none); audio (FloatTensor[2, 16000]: one second at 16 kHz); log-mel features
    (FloatTensor[2, num_mel_bins, 2 * max_source_positions], with decoder ids for an encoder-decoder). None where the
    main input is something else (the audit then skips the probe and says so)."""
    import inspect

    import torch

    name = getattr(model_class, "main_input_name", "input_ids")
    try:
        takes = set(inspect.signature(model_class.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        takes = set()
    if name == "input_features" and isinstance(getattr(config, "num_mel_bins", None), int):
        # speech models on log-mel frames (Whisper: 80 bins x 3000 frames, twice its max_source_positions)
        positions = getattr(config, "max_source_positions", None)
        frames = 2 * positions if isinstance(positions, int) and positions > 0 else 3000
        features: dict[str, Any] = {"input_features": torch.rand(2, config.num_mel_bins, frames)}
        vocab = getattr(config, "vocab_size", None)
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in takes and isinstance(vocab, int):
            features["decoder_input_ids"] = torch.randint(0, vocab, (2, 4))
        if "use_cache" in takes:
            features["use_cache"] = False
        return features if len(features) > 1 else features["input_features"]
    if name == "input_ids":
        vocab = getattr(config, "vocab_size", None)
        if not isinstance(vocab, int) and callable(getattr(config, "get_text_config", None)):
            vocab = getattr(config.get_text_config(), "vocab_size", None)  # a multimodal model's language part
        if not isinstance(vocab, int) or vocab <= 0:
            vocab = _SAFE_VOCABULARY
        ids = torch.randint(0, vocab, (2, HF_SEQUENCE_LENGTH))
        example: dict[str, Any] = {"input_ids": ids}
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in takes:
            example["decoder_input_ids"] = ids.clone()
        if "use_cache" in takes:
            example["use_cache"] = False  # a probe has no next step to cache for (and some caches refuse a probe)
        return example if len(example) > 1 else ids
    if name == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else (size[-1] if isinstance(size, (list, tuple)) and size else 224)
        channels = getattr(config, "num_channels", 3)
        return torch.rand(2, channels if isinstance(channels, int) and channels > 0 else 3, size, size)
    if name == "input_values":
        return torch.rand(2, 16000)
    return None
