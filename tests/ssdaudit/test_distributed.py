"""Past one machine: GradFlowMonitor on an FSDP2 model (2 processes, gloo, CPU) and torch.distributed.checkpoint
(DCP) directories in ``diff`` and ``params``.

One torchrun of ``tests/data/fsdp2_dcp_worker.py`` (about 5 s) serves the module: it trains an FSDP2 model with
an unused branch and a plain-list layer, saves it with DCP from both ranks, and writes a torch.save twin."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import run_torchrun
from ssdaudit.checkpoints.formats import open_checkpoint
from ssdaudit.cli import app
from ssdaudit.checkpoints.diff import diff_checkpoints
from ssdaudit.core.errors import LoadError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo backend")


@pytest.fixture(scope="module")
def dist_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp2")
    proc = run_torchrun([str(ROOT / "tests/data/fsdp2_dcp_worker.py"), str(out)], out, 240)
    assert proc.returncode == 0 and (out / "result.json").exists(), proc.stderr[-3000:]
    return out


def result(dist_run: Path, mode: str) -> tuple[dict, dict]:
    data = json.loads((dist_run / "result.json").read_text())
    return data[mode], data["reference"]


# --- FSDP2 ---------------------------------------------------------------------------------------------


def test_fsdp2_findings_are_the_plain_list_layer_and_the_unused_branch(dist_run):
    sharded, _ = result(dist_run, "sharded")
    assert sorted((rule, label) for rule, label, _ in sharded["findings"]) == [("G001", "extra"), ("G002", "unused")]
    tensors = {t["name"]: t for t in sharded["tensors"]}
    assert {n for n, t in tensors.items() if t["registered"]} == {
        "stem.weight", "stem.bias", "unused.weight", "unused.bias", "head.weight", "head.bias"}
    assert tensors["stem.weight"]["shape"] == [16, 8]  # the full shape, not the local shard's [8, 8]
    assert not tensors["unused.weight"]["reached"] and tensors["head.weight"]["reached"]
    assert not any(n.startswith("<unregistered>") for n in tensors)  # FSDP's gathered copies are not orphans


@pytest.mark.parametrize("field", ["grad_norm", "grad_max", "grad_l1", "update_norm", "weight_norm"])
def test_fsdp2_statistics_are_the_full_tensors(dist_run, field):
    """Each figure equals the one-process figure of the unsharded model on the same batch, uneven shards included
    (head has 3 rows over 2 ranks); a monitor that reported local shards would be off by the other rank's share."""
    sharded, reference = result(dist_run, "sharded")
    compared = 0
    for name, expected in reference[field].items():
        if name.startswith("extra") and field in ("update_norm", "weight_norm"):
            continue  # not in the optimizer: no update recorded
        assert sharded[field][name] == pytest.approx(expected, rel=1e-5, abs=1e-7), name
        compared += 1
    assert compared >= 6


def test_fsdp2_without_fsdp_internals_still_finds_both(dist_run):
    """On a torch whose FSDP2 state is laid out differently, gathered copies are told apart by shape and dead
    parameters by their missing gradient: the same two findings."""
    fallback, _ = result(dist_run, "fallback")
    assert sorted((rule, label) for rule, label, _ in fallback["findings"]) == [("G001", "extra"), ("G002", "unused")]


def test_fsdp2_log_renders_with_the_cli(dist_run):
    out = runner.invoke(app, ["gradflow", str(dist_run / "gradflow"), "--format", "json"])
    assert out.exit_code == 1, out.output
    rules = sorted((f["rule"], f["path"]) for f in json.loads(out.stdout)["findings"] if f["rule"] in ("G001", "G002"))
    assert rules == [("G001", "extra"), ("G002", "unused")]


# --- DCP -------------------------------------------------------------------------------------------------


def test_dcp_from_two_ranks_equals_its_torch_save_twin(dist_run):
    dcp_ckpt = open_checkpoint(dist_run / "dcp")
    assert dcp_ckpt.wrapper_key == "model"  # {"model": state_dict, "epoch": 3}: the model's tensors
    assert dcp_ckpt.tensors["head.weight"].shape == (3, 16)  # full shapes, from shards of 2 and 1 rows
    report = diff_checkpoints(dcp_ckpt, open_checkpoint(dist_run / "full.pth"))
    assert report.identical and len(report.unchanged) == 6


def test_dcp_diff_finds_a_changed_tensor(dist_run, tmp_path):
    full = torch.load(dist_run / "full.pth", weights_only=True)
    full["head.bias"] = full["head.bias"] + 0.5
    torch.save(full, tmp_path / "changed.pth")
    out = runner.invoke(app, ["diff", str(dist_run / "dcp"), str(tmp_path / "changed.pth"), "--format", "json"])
    assert out.exit_code == 1, out.output
    report = json.loads(out.stdout)
    assert [c["key"] for c in report["changed"]] == ["head.bias"]
    assert report["changed"][0]["max_abs_diff"] == pytest.approx(0.5)


def test_dcp_from_one_process_against_torch_save_and_safetensors(tmp_path):
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
    state = model.state_dict()
    dcp.save(state, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    torch.save(state, tmp_path / "model.pth")
    a = open_checkpoint(tmp_path / "dcp")
    assert a.wrapper_key is None and set(a.tensors) == set(state)
    assert a.tensors["1.num_batches_tracked"].dtype == "int64"
    assert diff_checkpoints(a, open_checkpoint(tmp_path / "model.pth")).identical
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    assert diff_checkpoints(open_checkpoint(tmp_path / "model.safetensors"), a).identical


def test_params_reads_a_dcp_directory_as_target_and_as_checkpoint(dist_run, tmp_path):
    out = runner.invoke(app, ["params", str(dist_run / "dcp"), "--format", "json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["registered_params"] == 16 * 8 + 16 + 16 * 16 + 16 + 3 * 16 + 3
    assert report["checkpoint_bytes"] == sum(p.stat().st_size for p in (dist_run / "dcp").iterdir())
    model_file = tmp_path / "net.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.stem = nn.Linear(8, 16)\n        self.unused = nn.Linear(16, 16)\n        self.head = nn.Linear(16, 4)\n"
        "    def forward(self, x):\n        return self.head(torch.relu(self.stem(x)))\n"
        "def example_input():\n    return torch.rand(2, 8)\n")
    out = runner.invoke(app, ["params", str(model_file), "--checkpoint", str(dist_run / "dcp"), "--format", "json",
                              "--no-roundtrip"])
    ckpt = json.loads(out.stdout)["checkpoint"]
    assert sorted(ckpt["shape_mismatch"]) == ["head.bias", "head.weight"]  # 4 outputs here, 3 in the checkpoint
    assert ckpt["file_bytes"] == sum(p.stat().st_size for p in (dist_run / "dcp").iterdir())


# --- hostile DCP directories ---------------------------------------------------------------------------------


def _copy(dist_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dist_run / "dcp", tmp_path / "dcp"))


class _Shell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def json_error(args: list[str]) -> dict:
    """The error document of ``ssdaudit ARGS --format json``: exit 2, one ``error:`` line on stderr."""
    out = runner.invoke(app, [*args, "--format", "json"])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and len(out.stderr.strip().splitlines()) == 1, out.stderr
    doc = json.loads(out.stdout)
    assert out.stderr.strip() == f"error: {doc['error']['message']}"
    return doc["error"]


def test_dcp_metadata_that_runs_code_is_refused(dist_run, tmp_path):
    ckpt = _copy(dist_run, tmp_path)
    marker = tmp_path / "pwned"
    (ckpt / ".metadata").write_bytes(pickle.dumps(_Shell(marker)))
    refused = (rf"refused to read {re.escape(str(ckpt / '.metadata'))}: it needs (posix|os)\.system, which DCP metadata "
               r"never does \(unpickling it could run code\)")
    with pytest.raises(LoadError, match=refused):
        open_checkpoint(ckpt)
    for args in (["diff", str(ckpt), str(dist_run / "full.pth")], ["params", str(ckpt)]):
        error = json_error(args)
        assert error["kind"] == "load" and re.match(refused, error["message"]), error
    assert not marker.exists()


def test_dcp_metadata_pointing_outside_its_folder_is_refused(dist_run, tmp_path):
    from ssdaudit.checkpoints.dcp import read_metadata

    ckpt = _copy(dist_run, tmp_path)
    metadata = read_metadata(ckpt)
    for info in metadata.storage_data.values():
        info.relative_path = "../../etc/passwd"
    buf = io.BytesIO()
    pickle.dump(metadata, buf)
    (ckpt / ".metadata").write_bytes(buf.getvalue())
    with pytest.raises(LoadError, match="refusing to read outside it"):
        open_checkpoint(ckpt)


@pytest.mark.parametrize("damage", [
    "truncated metadata",
    "missing shard",
    "truncated shard",
])
def test_damaged_dcp_directories_give_one_line(dist_run, tmp_path, damage):
    ckpt = _copy(dist_run, tmp_path)
    if damage == "truncated metadata":
        (ckpt / ".metadata").write_bytes((ckpt / ".metadata").read_bytes()[:100])
        expect = rf"cannot read {re.escape(str(ckpt / '.metadata'))}: .*truncated"
    elif damage == "missing shard":
        (ckpt / "__1_0.distcp").unlink()
        expect = re.escape(f"{ckpt} lacks __1_0.distcp, which its .metadata names (an incomplete copy of the checkpoint?)")
    else:
        (ckpt / "__0_0.distcp").write_bytes((ckpt / "__0_0.distcp").read_bytes()[:50])
        # the first tensor read from the cut file, the reader's complaint, and the likely cause
        expect = rf"cannot read stem\.weight from {re.escape(str(ckpt))}: RuntimeError: .*\(a data file truncated or overwritten\?\)$"
    error = json_error(["diff", str(ckpt), str(dist_run / "full.pth")])
    assert error["kind"] == "load" and re.match(expect, error["message"]), error
    assert "refused" not in error["message"]  # damage is not a hostile pickle


# --- the training doctor: DDP replicas (T017, T024) --------------------------------------------------------------


def test_ddp_replicas_that_drift_are_named(tmp_path: Path) -> None:
    # 2 processes (gloo, CPU): the forward through the wrapper keeps the replicas equal; bypassing it does not
    proc = run_torchrun([str(ROOT / "tests/data/ddp_replicas_worker.py"), str(tmp_path)], tmp_path, 240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads((tmp_path / "replicas.json").read_text())
    assert found == {"clean": [], "bypass": ["T024"]}  # the cause, seen locally (T017 is its consequence)
