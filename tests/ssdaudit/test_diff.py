"""`ssdaudit diff` on real files written here: every difference kind, naming schemes, formats, safety, bad input."""

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from ssdaudit.checkpoints.formats import TensorInfo, open_checkpoint
from ssdaudit.cli import app
from ssdaudit.checkpoints.diff import align_keys, diff_checkpoints
from ssdlite_model import build_ssdlite
from ssdlite_model.config import tiny

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run_diff(*args):
    result = runner.invoke(app, ["diff", *map(str, args), "--format", "json"])
    data = json.loads(result.stdout) if result.exit_code in (0, 1) else None
    return result, data


def small_state():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture
def base(tmp_path):
    state = small_state()
    path = tmp_path / "a.pth"
    torch.save(state, path)
    return path, state


def test_identical_exits_0(tmp_path, base):
    path, state = base
    other = tmp_path / "b.pth"
    torch.save(state, other)
    result, data = run_diff(path, other)
    assert result.exit_code == 0
    assert data["identical"] and len(data["unchanged"]) == len(state) and not data["findings"]
    assert data["a"]["tensors"] == len(state) and data["a"]["bytes"] == path.stat().st_size
    assert data["a"]["params"] == sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)


def test_one_tensor_changed(tmp_path, base):
    path, state = base
    state["3.weight"] = state["3.weight"] + 0.5
    torch.save(state, tmp_path / "b.pth")
    result, data = run_diff(path, tmp_path / "b.pth")
    assert result.exit_code == 1
    a, b = torch.load(path, weights_only=True)["3.weight"], state["3.weight"]
    # the documented figures: max |a - b| and ||a - b|| / ||a|| (not / ||b||, which differs here by the 0.5 shift)
    assert data["changed"] == [{"key": "3.weight", "max_abs_diff": float((a - b).abs().max()),
                                "rel_change": pytest.approx(float((a - b).norm() / a.norm()), rel=1e-6)}]
    assert float((a - b).norm() / b.norm()) != pytest.approx(data["changed"][0]["rel_change"], rel=1e-3)
    assert "3.weight" not in data["unchanged"] and "0.weight" in data["unchanged"]


def test_tolerance_makes_small_changes_equal(tmp_path, base):
    path, state = base
    state["3.weight"] = state["3.weight"] + 1e-6
    torch.save(state, tmp_path / "b.pth")
    assert run_diff(path, tmp_path / "b.pth")[0].exit_code == 1
    result, data = run_diff(path, tmp_path / "b.pth", "--atol", "1e-5")
    assert result.exit_code == 0 and data["close"] == ["3.weight"]


def test_missing_key_shape_and_dtype(tmp_path, base):
    path, state = base
    del state["3.bias"]
    state["0.weight"] = torch.zeros(5, 3, 3, 3)
    state["1.weight"] = state["1.weight"].half()
    torch.save(state, tmp_path / "b.pth")
    result, data = run_diff(path, tmp_path / "b.pth", "--map", "none")
    assert result.exit_code == 1
    assert [x["key"] for x in data["only_in_a"]] == ["3.bias"] and data["only_in_a"][0]["shape"] == [2]
    assert data["shape_mismatch"] == [{"key": "0.weight", "shape_a": [4, 3, 3, 3], "shape_b": [5, 3, 3, 3]}]
    assert data["dtype_mismatch"] == [{"key": "1.weight", "dtype_a": "float32", "dtype_b": "float16"}]
    rules = {f["rule"]: f for f in data["findings"]}
    assert {"C001", "C002", "C003"} <= set(rules)
    assert rules["C001"]["path"] == "3.*" and rules["C001"]["params"] == 2


def test_module_prefix_is_mapped(tmp_path, base):
    path, state = base
    torch.save({f"module._orig_mod.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    result, data = run_diff(path, tmp_path / "ddp.pth")
    assert result.exit_code == 0
    assert data["mapping"]["3.weight"] == "module._orig_mod.3.weight" and data["mapping_confidence"] == 1.0
    result, data = run_diff(path, tmp_path / "ddp.pth", "--map", "none")
    assert result.exit_code == 1 and len(data["only_in_b"]) == len(state) and data["mapping"] is None


def test_nested_checkpoint_is_unwrapped(tmp_path, base):
    path, state = base
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=0.1, momentum=0.9)
    torch.save({"model": state, "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "full.pth")
    result, data = run_diff(path, tmp_path / "full.pth")
    assert result.exit_code == 0 and data["b"]["state_dict_key"] == "model"


def test_safetensors_and_sharded_directory(tmp_path, base):
    path, state = base
    save_file(state, tmp_path / "a.safetensors")
    result, data = run_diff(path, tmp_path / "a.safetensors")
    assert result.exit_code == 0 and data["b"]["tensors"] == len(state)
    shards = tmp_path / "sharded"
    shards.mkdir()
    keys = list(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, shards / "model-00001-of-00002.safetensors")
    torch.save({k: state[k] for k in keys[half:]}, shards / "model-00002-of-00002.bin")
    weight_map = {k: "model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.bin" for i, k in enumerate(keys)}
    (shards / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    result, data = run_diff(path, shards)
    assert result.exit_code == 0 and data["b"]["tensors"] == len(state)
    state["3.bias"] = state["3.bias"] * 2
    save_file(state, tmp_path / "changed.safetensors")
    result, data = run_diff(shards, tmp_path / "changed.safetensors")
    assert result.exit_code == 1 and [c["key"] for c in data["changed"]] == ["3.bias"]


def test_non_finite_and_view_bloat(tmp_path, base):
    path, state = base
    state["3.weight"][0, 0] = float("nan")
    big = torch.zeros(1_000_000)
    state["extra"] = big[:10]  # torch.save writes the whole 4 MB storage behind this view
    torch.save(state, tmp_path / "b.pth")
    result, data = run_diff(path, tmp_path / "b.pth")
    assert result.exit_code == 1, result.output  # 3.weight changed (its NaN), "extra" only in B
    rules = {f["rule"]: f for f in data["findings"]}
    assert rules["C005"]["path"] == "3.weight" and rules["C005"]["message"] == "NaN or Inf values: 1 in B"
    size = (tmp_path / "b.pth").stat().st_size
    assert size > 4_000_000  # the 1,000,000 float32 behind the 10-element view
    tensor_bytes = sum(t.numel() * t.element_size() for t in state.values())  # the view counts its 40 bytes
    assert (data["b"]["bytes"], data["b"]["tensor_bytes"]) == (size, tensor_bytes)
    assert [(f["path"], f["message"]) for f in data["findings"] if f["rule"] == "C006"] == [(
        str(tmp_path / "b.pth"), f"B is {size:,} bytes on disk but its tensors hold {tensor_bytes:,} bytes: torch.save "
        "wrote whole storages behind views (save t.clone() or .contiguous() copies)")]  # A is its tensors' size


class _CreatesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_malicious_pickle_is_refused_and_not_run(tmp_path, base):
    path, _ = base
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "payload": _CreatesFile(marker)}, evil)
    assert not marker.exists()
    result = runner.invoke(app, ["diff", str(path), str(evil)])
    assert result.exit_code == 2
    assert "refused" in result.stderr and "--trust-pickle" in result.stderr
    assert not marker.exists()
    raw = tmp_path / "raw.pkl.pth"  # a plain pickle, not even torch.save's zip
    raw.write_bytes(pickle.dumps(_CreatesFile(marker)))
    assert runner.invoke(app, ["diff", str(path), str(raw)]).exit_code == 2
    assert not marker.exists()


def test_full_module_pickle_needs_trust(tmp_path):
    net = nn.Sequential(nn.Linear(2, 2))
    torch.save(net.state_dict(), tmp_path / "sd.pth")
    torch.save(net, tmp_path / "module.pth")
    result = runner.invoke(app, ["diff", str(tmp_path / "sd.pth"), str(tmp_path / "module.pth")])
    assert result.exit_code == 2 and "--trust-pickle" in result.stderr and "Sequential" in result.stderr
    result = runner.invoke(app, ["diff", str(tmp_path / "sd.pth"), str(tmp_path / "module.pth"), "--trust-pickle"])
    assert result.exit_code == 0, result.output
    assert "warning: --trust-pickle" in result.stderr


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, I am a text file\n"), "text file"),
        (lambda p: None, "no such checkpoint"),
    ],
)
def test_bad_files(tmp_path, base, make, expected):
    path, _ = base
    bad = tmp_path / "bad.pth"
    make(bad)
    result = runner.invoke(app, ["diff", str(path), str(bad)])
    assert result.exit_code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_truncated_file_and_empty_directory(tmp_path, base):
    path, _ = base
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = runner.invoke(app, ["diff", str(path), str(cut)])
    assert result.exit_code == 2 and "cannot read checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["diff", str(path), str(empty)])
    assert result.exit_code == 2 and "no checkpoint in it" in result.stderr


def test_seed_story_missing_backbone(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import buggy_plain_list
        import fixed_modulelist
    finally:
        sys.path.remove(str(ROOT / "examples"))
    torch.save(buggy_plain_list.build_model().state_dict(), tmp_path / "buggy.pth")
    torch.save(fixed_modulelist.build_model().state_dict(), tmp_path / "fixed.pth")
    result, data = run_diff(tmp_path / "fixed.pth", tmp_path / "buggy.pth")
    assert result.exit_code == 1
    assert len(data["only_in_a"]) == 312 and all(x["key"].startswith("backbone.") for x in data["only_in_a"])
    (c001,) = [f for f in data["findings"] if f["rule"] == "C001"]
    assert c001["path"] == "backbone.*" and c001["params"] == 1_812_800
    assert "312 tensors" in c001["message"] and "BatchNorm" in c001["message"]


def test_frozen_backbone_shows_unchanged_group(tmp_path):
    torch.manual_seed(0)
    model = build_ssdlite(tiny())
    torch.save(model.state_dict(), tmp_path / "epoch1.pth")
    for p in model.backbone.parameters():
        p.requires_grad_(False)  # the mistake
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loc, conf = model(torch.rand(2, 3, 96, 96))
    (loc.square().mean() + conf.square().mean()).backward()
    opt.step()
    torch.save(model.state_dict(), tmp_path / "epoch2.pth")
    result, data = run_diff(tmp_path / "epoch1.pth", tmp_path / "epoch2.pth")
    assert result.exit_code == 1
    c004 = {f["path"]: f for f in data["findings"] if f["rule"] == "C004"}
    assert "backbone.*" in c004 and "extras.*" not in c004
    assert c004["backbone.*"]["params"] == sum(p.numel() for p in model.backbone.parameters())


def test_port_from_ssds_names(tmp_path):
    torch.manual_seed(1)
    model = build_ssdlite(tiny())
    ours = model.state_dict()
    torch.save(ours, tmp_path / "ours.pth")
    # ssds.pytorch names: the backbone is "base", block internals renumbered flat.
    theirs = {}
    for k, v in ours.items():
        if k.startswith("backbone."):
            parts = k.split(".")
            k = "base." + parts[1] + "." + "_".join(parts[2:-1]) + "." + parts[-1]
        theirs[k] = v.clone()
    torch.save(theirs, tmp_path / "ssds.pth")
    out = tmp_path / "ported.pth"
    result = runner.invoke(app, ["diff", str(tmp_path / "ours.pth"), str(tmp_path / "ssds.pth"), "--write-mapped", str(out)])
    assert result.exit_code == 0, result.output
    fresh = build_ssdlite(tiny())
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ours.items())
    assert not list(tmp_path.glob(".ported.pth.*"))  # no temporary file left behind


def test_align_keys_pairs_groups_by_shape_order():
    def table(keys):
        return {k: TensorInfo(k, (2,), "float32", 2, 8) for k in keys}

    a = table(["x.0.weight", "y.0.weight"])
    b = table(["p.0.weight", "y.1.weight"])
    m = align_keys(a, b)
    assert m.pairs == {"x.0.weight": "p.0.weight", "y.0.weight": "y.1.weight"}
    assert m.method == {"x.0.weight": "shape-order", "y.0.weight": "shape-order"}
    assert align_keys(a, b, "none").pairs == {}


def test_diff_checkpoints_library_call(tmp_path, base):
    path, state = base
    state["3.bias"] += 1
    torch.save(state, tmp_path / "b.pth")
    report = diff_checkpoints(open_checkpoint(path), open_checkpoint(tmp_path / "b.pth"))
    assert not report.identical and [c["key"] for c in report.changed] == ["3.bias"]


def test_text_report_names_mapping_changes_and_unchanged_groups(tmp_path, base):
    path, state = base
    moved = {f"module.{k}": (v + 1 if k == "3.weight" else v) for k, v in state.items()}
    torch.save(moved, tmp_path / "b.pth")
    result = runner.invoke(app, ["diff", str(path), str(tmp_path / "b.pth")])
    assert result.exit_code == 1
    out = result.stdout
    assert "key mapping (--map auto)" in out and "module.3.weight  ->  3.weight" in out
    assert "Changed tensors" in out and "3.weight" in out
    assert "unchanged: 0.*" in out and "different:" in out


def test_compare_in_many_chunks_equals_one_pass(monkeypatch):
    """The chunked compare (tensors above CHUNK_ELEMENTS) gives the figures of a direct computation."""
    import ssdaudit.checkpoints.diff as diff_mod

    monkeypatch.setattr(diff_mod, "CHUNK_ELEMENTS", 7)
    a = torch.arange(50, dtype=torch.float32).reshape(5, 10)
    b = a.clone()
    b[3, 4] += 2.5  # one change, in the fifth chunk
    b[0, 1] = float("nan")
    c = diff_mod.compare_tensors(a, b)
    assert not c.bitwise_equal and c.nonfinite_a == 0 and c.nonfinite_b == 1
    d = (a - b)[~torch.isnan(b)]
    assert c.max_abs_diff == pytest.approx(float(d.abs().max()))
    same = diff_mod.compare_tensors(a, a.clone())
    assert same.bitwise_equal and same.close and same.max_abs_diff == 0.0
    small = a.clone()
    small[4, 9] += 1e-4
    assert diff_mod.compare_tensors(a, small, rtol=1e-3).close and not diff_mod.compare_tensors(a, small).close


def test_diff_rtol_and_top_on_the_cli(tmp_path):
    a = {f"w{i}": torch.full((4,), 1.0 + i) for i in range(12)}
    b = {k: v * (1 + 1e-5) for k, v in a.items()}
    torch.save(a, tmp_path / "a.pth")
    torch.save(b, tmp_path / "b.pth")
    assert runner.invoke(app, ["diff", str(tmp_path / "a.pth"), str(tmp_path / "b.pth")]).exit_code == 1
    assert runner.invoke(app, ["diff", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--rtol", "1e-3"]).exit_code == 0
    out = runner.invoke(app, ["diff", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--top", "3"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("│ w")]
    assert len(rows) == 3 and "top 3 of 12" in out


def test_a_nan_does_not_hide_a_change_and_json_stays_strict(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from ssdaudit.cli import app

    a = torch.zeros(4)
    b = torch.tensor([float("nan"), 0.5, 0.0, 0.0])
    torch.save({"w": a}, tmp_path / "a.pth")
    torch.save({"w": b}, tmp_path / "b.pth")
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--format", "json"])
    assert result.exit_code == 1, result.output
    doc = _json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    (changed,) = doc["changed"]
    assert changed["key"] == "w" and changed["max_abs_diff"] == 0.5
    assert any(f["rule"] == "C005" for f in doc["findings"])


def test_write_mapped_never_replaces_an_input_or_invents_a_folder(tmp_path, base):
    """--write-mapped over A or B would destroy the very checkpoint being compared; a missing folder is a typo."""
    path, state = base
    b = tmp_path / "b.pth"
    torch.save({"epoch": 3, "model": state}, b)
    before = {p: p.read_bytes() for p in (path, b)}
    for out in (path, b, tmp_path / "." / "a.pth", tmp_path / "missing" / "m.pth", tmp_path):
        result = runner.invoke(app, ["diff", str(path), str(b), "--write-mapped", str(out)])
        assert result.exit_code == 2, (out, result.output)
        errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
        assert len(errors) == 1 and "--write-mapped" in errors[0], result.stderr
    assert {p: p.read_bytes() for p in (path, b)} == before
    assert not (tmp_path / "missing").exists()
    ok = runner.invoke(app, ["diff", str(path), str(b), "--write-mapped", str(tmp_path / "m.pth")])
    assert ok.exit_code == 0 and (tmp_path / "m.pth").is_file(), ok.output


def test_a_folder_of_separate_checkpoints_is_not_read_as_shards(tmp_path, base):
    """Two full checkpoints in one folder share every key: merging them would silently pick one file's tensors."""
    path, state = base
    folder = tmp_path / "runs"
    folder.mkdir()
    torch.save(state, folder / "epoch1.pth")
    torch.save({k: v + 1 for k, v in state.items()}, folder / "epoch2.pth")
    result = runner.invoke(app, ["diff", str(path), str(folder)])
    assert result.exit_code == 2, result.output
    assert "share tensor names" in result.stderr and "epoch1.pth" in result.stderr
    # real shards (disjoint keys) still open as one checkpoint
    keys = list(state)
    shards = tmp_path / "shards"
    shards.mkdir()
    torch.save({k: state[k] for k in keys[:2]}, shards / "part1.pth")
    torch.save({k: state[k] for k in keys[2:]}, shards / "part2.pth")
    same = runner.invoke(app, ["diff", str(path), str(shards)])
    assert same.exit_code == 0, same.output
