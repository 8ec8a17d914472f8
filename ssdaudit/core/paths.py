"""Dotted names of model members (``backbone.0.conv.weight``) grouped by the module that owns them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def owner_prefix(name: str, depth: int = 1, root: str = "(root)") -> str:
    """The first ``depth`` parts of the path of the module that owns ``name``: ``backbone.0.conv.weight`` ->
    ``backbone`` (depth 1) or ``backbone.0`` (depth 2); a top-level tensor (``scale``) -> ``root``."""
    return ".".join(name.split(".")[:-1][:depth]) or root


def group_by_prefix(items: Iterable[T], name: Callable[[T], str], depth: int = 1,
                    root: str = "(root)") -> dict[str, list[T]]:
    """Items grouped by ``owner_prefix`` of their name, groups and items in first-seen order."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(owner_prefix(name(item), depth, root), []).append(item)
    return groups
