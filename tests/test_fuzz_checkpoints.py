"""Property-based fuzz of the checkpoint readers: random bytes, truncations and mutations of real torch.save files
and safetensors headers. Whatever the bytes, only the documented LoadError escapes, nothing hangs, nothing runs."""

import io
import json
import struct
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssdaudit.checkpoints.formats import open_checkpoint
from ssdaudit.core.errors import LoadError

FUZZ = settings(max_examples=700, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOWEST_S = 5.0  # one read of a few KB: far beyond this is a hang


def _torch_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {"conv.weight": torch.arange(24.0).reshape(2, 3, 2, 2), "conv.bias": torch.ones(2)},
                "epoch": 3}, buf)
    return buf.getvalue()


def _safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "__metadata__": {"format": "pt"}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 16


TORCH_FILE, SAFETENSORS_FILE = _torch_bytes(), _safetensors_bytes()
SENTINEL = Path("/tmp/ssdaudit-fuzz-executed")


def _read(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    start = time.monotonic()
    try:
        ckpt = open_checkpoint(path)
        for key in ckpt.tensors:  # reading the data lazily must fail cleanly too
            ckpt.get(key)
    except LoadError:
        pass
    assert time.monotonic() - start < SLOWEST_S
    assert not SENTINEL.exists()


def _mutate(base: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(base)
    for pos, value in edits:
        data[pos % len(data)] = value
    return bytes(data[: max(1, cut % (len(data) + 1))])


@FUZZ
@given(data=st.binary(min_size=1, max_size=2048), suffix=st.sampled_from([".pth", ".bin", ".safetensors"]))
def test_random_bytes(tmp_path, data, suffix):
    _read(tmp_path, data, suffix)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8), cut=st.integers(0, 10**6))
def test_mutated_and_truncated_torch_save(tmp_path, edits, cut):
    _read(tmp_path, _mutate(TORCH_FILE, edits, cut), ".pth")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8), cut=st.integers(0, 10**6))
def test_mutated_and_truncated_safetensors(tmp_path, edits, cut):
    pytest.importorskip("safetensors")
    _read(tmp_path, _mutate(SAFETENSORS_FILE, edits, cut), ".safetensors")


def _dcp_files() -> dict[str, bytes]:
    """A one-process torch.distributed.checkpoint save: {file name: bytes} (.metadata and the data file)."""
    import tempfile
    import warnings

    import torch.distributed.checkpoint as dcp

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {"conv.weight": torch.arange(24.0).reshape(2, 3, 2, 2), "conv.bias": torch.ones(2)},
                  "epoch": 3}, checkpoint_id=tmp, no_dist=True)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir()}


DCP_FILES = _dcp_files() if torch.distributed.is_available() else {}


@FUZZ
@given(which=st.sampled_from(sorted(DCP_FILES) or [".metadata"]),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8), cut=st.integers(0, 10**6))
def test_mutated_and_truncated_dcp_directory(tmp_path, which, edits, cut):
    """The .metadata pickle (read by an allow-list unpickler) and the data files, mutated and cut."""
    if not DCP_FILES:
        pytest.skip("torch without torch.distributed")
    folder = tmp_path / "dcp"
    folder.mkdir(exist_ok=True)
    for name, data in DCP_FILES.items():
        (folder / name).write_bytes(_mutate(data, edits, cut) if name == which else data)
    start = time.monotonic()
    try:
        ckpt = open_checkpoint(folder)
        for key in ckpt.tensors:
            ckpt.get(key)
    except LoadError:
        pass
    assert time.monotonic() - start < SLOWEST_S
    assert not SENTINEL.exists()
