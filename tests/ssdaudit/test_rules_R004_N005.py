"""Class: device-only moves. A plain floating tensor attribute that forward moves with the input's device only
(``.to(x.device)``) misses ``.half()``/``.bfloat16()``/``.double()``: an R004 warning naming it and the dtype it
keeps. A move that follows device and dtype stays an N005 note (a host-to-device copy per call)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from ssdaudit import Severity, find_unregistered


class PosEmbedDetector(nn.Module):
    """A detector's positional embeddings kept as a plain tensor, moved per call to the feature map's device."""

    def __init__(self, move: str) -> None:
        super().__init__()
        self.head = nn.Linear(8, 8)
        self.pos = torch.randn(5, 8)
        self.move = move

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = {
            "device": lambda: self.pos.to(x.device),
            "device_kw": lambda: self.pos.to(device=x.device, non_blocking=True),
            "device_then_float": lambda: self.pos.to(x.device).float(),
            "like": lambda: self.pos.to(x),
            "type_as": lambda: self.pos.type_as(x),
            "device_and_dtype": lambda: self.pos.to(device=x.device, dtype=x.dtype),
            "device_then_type_as": lambda: self.pos.to(x.device).type_as(x),
        }[self.move]()
        return self.head(x + pos)


class TimeSamples(nn.Module):
    """A deblurring model's time samples: a linspace table multiplied in after a device-only move."""

    def __init__(self, registered: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        t = torch.linspace(0.0, 1.0, 8)
        if registered:
            self.register_buffer("times", t, persistent=False)
        else:
            self.times = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.times.to(x.device)


X = torch.rand(2, 5, 8)


def _attr(findings: list, path: str) -> list:
    return [f for f in findings if f.path == path and f.rule in ("R004", "N005")]


@pytest.mark.parametrize("move", ["device", "device_kw", "device_then_float"])
def test_device_only_move_is_a_warning_naming_the_dtype(move: str) -> None:
    (f,) = _attr(find_unregistered(PosEmbedDetector(move), X), "pos")
    assert f.rule == "R004" and f.severity is Severity.WARNING
    assert "`pos`" in f.message and "float32" in f.message and ".half()" in f.message


@pytest.mark.parametrize("move", ["like", "type_as", "device_and_dtype", "device_then_type_as"])
def test_move_following_device_and_dtype_stays_a_note(move: str) -> None:
    (f,) = _attr(find_unregistered(PosEmbedDetector(move), X), "pos")
    assert f.rule == "N005" and f.severity is Severity.INFO
    assert "host-to-device copy per call" in f.message


def test_time_samples_plain_vs_buffer() -> None:
    (f,) = _attr(find_unregistered(TimeSamples(registered=False), torch.rand(2, 8)), "times")
    assert f.rule == "R004" and "stays float32" in f.message
    clean = find_unregistered(TimeSamples(registered=True), torch.rand(2, 8))
    assert [x for x in clean if x.severity is not Severity.INFO] == []


class Uncopyable(PosEmbedDetector):
    """deepcopy fails (a lock): the dtype-move probe cannot run, the probe's record of the move's arguments decides."""

    def __init__(self, move: str) -> None:
        super().__init__(move)
        self.lock = threading.Lock()


@pytest.mark.parametrize(("move", "rule"), [("device", "R004"), ("like", "N005")])
def test_fallback_without_the_move_probe(move: str, rule: str) -> None:
    model = Uncopyable(move)
    with pytest.raises(TypeError):
        copy.deepcopy(model)
    (f,) = _attr(find_unregistered(model, X), "pos")
    assert f.rule == rule
