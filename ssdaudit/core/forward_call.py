"""How an example input is handed to ``forward``: one convention for every probe, round trip and layer table.

A tuple is unpacked into positional arguments; a dict whose keys all name parameters of ``forward`` is passed as
keyword arguments (``{"input_ids": ..., "decoder_input_ids": ...}`` for an encoder-decoder); anything else,
including any other dict, is the single positional argument.
"""

from __future__ import annotations

import inspect
from typing import Any


def forward_arguments(model: Any, example_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(positional, keyword) arguments for ``model(...)`` from an example input, by the convention above."""
    if isinstance(example_input, tuple):
        return example_input, {}
    if isinstance(example_input, dict) and example_input and _keywords_of_forward(model, example_input):
        return (), dict(example_input)
    return (example_input,), {}


def call_forward(model: Any, example_input: Any) -> Any:
    """``model`` called on the example input (see ``forward_arguments``); whatever forward returns or raises."""
    args, kwargs = forward_arguments(model, example_input)
    return model(*args, **kwargs)


def _keywords_of_forward(model: Any, example: dict[Any, Any]) -> bool:
    """Every key of ``example`` is a string naming a parameter of ``model.forward``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return all(isinstance(k, str) and k in named for k in example)
