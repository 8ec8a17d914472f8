"""Class: probe coverage on real models. A model built on the meta device whose forward cannot run there for a
meta-only reason (``.item()``, a data-dependent shape) is probed on a CPU copy with random weights when it fits the
memory budget (``--probe-device auto``), so R004/R005/R008 still run; the report says where the probe ran and why.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit import find_unregistered

from ssdaudit.cli.main import app
from ssdaudit.core.errors import UsageError
from ssdaudit.core.findings import Severity
from ssdaudit.registration.pipeline import audit_target
from ssdaudit.registration.probe_device import meta_reason, parse_memory

# forward calls .item() (fails on meta); the scale table is read in a helper that forward's own source never names,
# so only a forward pass that really runs can see the plain tensor (R004)
ITEM_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        {scale}

    def rescale(self, y):
        return y * self.scale

    def forward(self, x):
        steps = int((x > 0.5).sum().item()) % 3 + 1
        y = self.fc(x)
        for _ in range(steps):
            y = self.rescale(y)
        return y


def example_input():
    return torch.rand(2, 4)
'''
BUGGY = "self.scale = torch.ones(4)  # a plain tensor: .to() and state_dict() miss it"
CLEAN = 'self.register_buffer("scale", torch.ones(4))'

# a data-dependent shape: boolean-mask indexing has no meta kernel
MASK_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y[y > 0].sum() + y.mean()


def example_input():
    return torch.rand(2, 4)
'''


def _file(tmp_path: Path, text: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _alarms(report) -> list:
    return [f for f in report.findings if f.severity is not Severity.INFO]


def test_item_on_meta_falls_back_to_cpu_and_finds_the_plain_tensor(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None and report.probe.device == "cpu"
    assert report.probe.reason == "meta failed: .item() on a meta tensor"
    assert [f.path for f in report.findings if f.rule == "R004"] == ["scale"]
    assert not [f for f in report.findings if f.rule == "N004"]  # the probe ran in both modes, on the CPU copy


def test_meta_only_probe_misses_it_and_says_so(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    report = audit_target(target, device="meta", probe_device="meta", roundtrip=False)
    assert report.probe is not None and report.probe.device == "meta"
    assert ".item() on a meta tensor" in report.probe.reason
    assert not [f for f in report.findings if f.rule == "R004"]
    n004 = [f for f in report.findings if f.rule == "N004"]
    # the input is fine: the note names the device as the cause and the option that fixes it, not the input
    assert n004 and all("--probe-device auto or cpu" in f.message for f in n004)


def test_clean_twin_falls_back_and_gives_no_findings(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=CLEAN))
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None and report.probe.device == "cpu"
    assert _alarms(report) == []
    assert report.registered_params == 20


def test_data_dependent_shape_falls_back(tmp_path):
    target = _file(tmp_path, MASK_MODEL)
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None
    assert (report.probe.device, report.probe.reason) == ("cpu", "meta failed: a data-dependent shape")
    assert _alarms(report) == []


def test_over_budget_probes_on_placeholder_weights_and_forced_cpu_is_refused(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    report = audit_target(target, device="meta", probe_device="auto", probe_memory=16, roundtrip=False)
    assert report.probe is not None and report.probe.device == "cpu"
    assert report.probe.reason == ("meta failed: .item() on a meta tensor; placeholder weights: a CPU copy with "
                                   "random weights would need 320 bytes, over the 16 bytes budget (--probe-memory)")
    assert [f.path for f in report.findings if f.rule == "R004"] == ["scale"]
    assert not [f for f in report.findings if f.rule == "N004"]
    # sizes come from the meta model, not from the copy whose weights share memory
    assert report.registered_params == 20 and report.bytes_exact is False
    assert report.checkpoint_bytes_if_fixed > report.checkpoint_bytes
    clean = audit_target(_file(tmp_path, ITEM_MODEL.format(scale=CLEAN), "clean.py"), device="meta",
                         probe_device="auto", probe_memory=16, roundtrip=False)
    assert clean.probe is not None and clean.probe.device == "cpu" and "placeholder" in clean.probe.reason
    assert _alarms(clean) == []
    with pytest.raises(UsageError, match="--probe-device cpu: .* over the budget of 16 bytes"):
        audit_target(target, device="meta", probe_device="cpu", probe_memory=16, roundtrip=False)
    forced = audit_target(target, device="meta", probe_device="cpu", roundtrip=False)
    assert forced.probe is not None and forced.probe.device == "cpu"
    assert [f.path for f in forced.findings if f.rule == "R004"] == ["scale"]


def test_a_model_that_probes_on_meta_stays_there(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=CLEAN).replace("int((x > 0.5).sum().item()) % 3 + 1", "2"))
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None and (report.probe.device, report.probe.reason) == ("meta", "built there")
    assert report.bytes_exact is False  # still the meta model: no CPU copy was made


def test_cli_reports_the_probe_device_in_text_and_json(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    runner = CliRunner()
    text = runner.invoke(app, ["params", target, "--device", "meta", "--no-roundtrip"])
    assert "probe: cpu (meta failed: .item() on a meta tensor)" in text.output
    out = runner.invoke(app, ["params", target, "--device", "meta", "--no-roundtrip", "--format", "json"])
    doc = json.loads(out.output)
    assert doc["probe"] == {"device": "cpu", "reason": "meta failed: .item() on a meta tensor"}
    refused = runner.invoke(app, ["params", target, "--probe-device", "meta"])
    assert refused.exit_code == 2 and "--probe-device meta needs --device meta" in refused.output
    bad = runner.invoke(app, ["params", target, "--device", "meta", "--probe-memory", "lots"])
    assert bad.exit_code == 2 and "bad --probe-memory" in bad.output
    idle = runner.invoke(app, ["params", target, "--probe-memory", "1KB"])  # a CPU build has no copy to bound
    assert idle.exit_code == 2 and "--probe-memory" in idle.output and "--device meta" in idle.output


def test_memory_sizes_and_reasons():
    assert parse_memory("4GiB") == 4 * 2**30
    assert parse_memory("512MB") == 512 * 10**6
    assert parse_memory("1.5g") == int(1.5 * 2**30)
    assert parse_memory("auto") is None
    for bad in ("", "-1G", "4 parsecs", "0"):
        with pytest.raises(UsageError):
            parse_memory(bad)
    assert meta_reason("RuntimeError: Tensor.item() cannot be called on meta tensors") == ".item() on a meta tensor"
    assert meta_reason("NotImplementedError: aten::bincount: ... no fake impl or Meta kernel registered") == \
        "an operator without a meta kernel"
    assert meta_reason("ValueError: shapes do not match") == "ValueError: shapes do not match"


class _Full(nn.Module):
    def __init__(self, proj):
        super().__init__()
        self.proj = proj
        self.dropout = nn.Dropout(0.1)  # mode-dependent, but registered from the swap on: .eval() reaches it

    def forward(self, x):
        return self.dropout(self.proj(x))


class _SwapsAttention(nn.Module):
    """Switches its attention implementation on the first forward, as Hugging Face's BigBird does for short inputs
    (a case the CPU fallback brings into reach): ``reuse`` keeps the registered projection, else a new one."""

    def __init__(self, reuse: bool):
        super().__init__()
        self.attn = _Full(nn.Linear(4, 4))
        self.reuse = reuse

    def forward(self, x):
        if x.shape[1] < 8:  # too short for the sparse kernel
            self.attn = _Full(self.attn.proj if self.reuse else nn.Linear(4, 4))
        return self.attn(x)


def test_a_module_swapped_in_forward_around_registered_parameters_hides_nothing():
    x = torch.rand(2, 4)
    model = _SwapsAttention(reuse=True)
    original = model.attn
    findings = find_unregistered(model, x)
    clean = [f for f in findings if f.severity is not Severity.INFO]
    assert clean == []
    # the swap is undone after each pass (the model is left as it was built) and both modes ran
    assert model.attn is original and not [f for f in findings if f.rule == "N004"]
    buggy = [f for f in find_unregistered(_SwapsAttention(reuse=False), x) if f.rule == "R005"]
    assert [(f.path, f.params, f.severity) for f in buggy] == [("attn", 20, Severity.ERROR)]


# a mixture-of-experts layer as today's language models write it: experts stacked in one 3-D parameter and run by a
# batched matrix product (grouped kernels reject stride-0 matrices), routing by .item()-driven control flow, and a
# 200,000 x 512 embedding: 100M+ parameters that a placeholder copy probes without allocating them
MOE_MODEL = """
import torch
from torch import nn


class Experts(nn.Module):
    def __init__(self, n=8, d=512):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n, d, d))
        {table}

    def forward(self, x):
        k = int(x.abs().sum().item() > 0)  # data-dependent: fails on meta
        h = torch.bmm(x.unsqueeze(0).expand(self.w.shape[0], -1, -1), self.w)
        return h[k] * self.table


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(200_000, 512)
        self.experts = Experts()
        self.head = nn.Linear(512, 512)

    def forward(self, ids):
        return self.head(self.experts(self.embed(ids)))


def example_input():
    return torch.randint(0, 200_000, (4,))
"""


def test_a_model_over_budget_is_probed_in_little_memory(tmp_path):
    import resource

    from ssdaudit.registration.placeholder import placeholder_copy

    buggy = _file(tmp_path, MOE_MODEL.format(table="self.table = torch.ones(512)"), "moe.py")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # a budget the placeholder copy is far below but a full-size copy (4x 400 MB at its peak) is over: the probe must
    # not expand the placeholder weights anywhere (the dtype-move probe once cloned them to 2x their size)
    report = audit_target(buggy + ":Net", device="meta", probe_device="auto", probe_memory=int(1.5 * 2**30),
                          roundtrip=False)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # bytes (Linux: KiB)
    assert report.registered_params > 100_000_000  # 400 MB of float32 weights
    assert report.probe is not None and report.probe.device == "cpu" and "placeholder weights" in report.probe.reason
    assert grown < 200 * 2**20  # the copy's weights share a few rows and blocks
    assert [f.path for f in report.findings if f.rule == "R004"] == ["experts.table"]
    clean = _file(tmp_path, MOE_MODEL.format(table='self.register_buffer("table", torch.ones(512))'), "moe2.py")
    report = audit_target(clean + ":Net", device="meta", probe_device="auto", probe_memory=int(1.5 * 2**30),
                          roundtrip=False)
    assert report.probe is not None and "placeholder weights" in report.probe.reason
    assert _alarms(report) == [] and not [f for f in report.findings if f.rule == "N004"]
    # the copy: same names, shapes and flags; tied parameters stay one object; the meta model is untouched
    with torch.device("meta"):
        meta = nn.Sequential(nn.Embedding(1000, 64), nn.Linear(64, 1000, bias=False))
    meta[1].weight = meta[0].weight
    meta[0].weight.requires_grad_(False)
    meta.register_buffer("steps", torch.zeros(3, dtype=torch.long))
    copy = placeholder_copy(meta)
    assert copy[1].weight is copy[0].weight and not copy[0].weight.requires_grad
    assert copy[0].weight.device.type == "cpu" and copy[0].weight.shape == (1000, 64)
    assert copy[0].weight.untyped_storage().nbytes() < 1000 * 64 * 4
    assert copy.steps.device.type == "cpu" and copy.steps.tolist() == [0, 0, 0]
    assert meta[0].weight.is_meta


def test_the_dtype_move_keeps_placeholder_weights_small():
    from ssdaudit.registration.move_probe import cast_keeping_layout

    row = torch.randn(64)
    wide = row.expand(10_000, 64)
    moved = cast_keeping_layout(wide, torch.float64)
    assert moved.dtype == torch.float64 and moved.stride() == (0, 1)
    assert moved.untyped_storage().nbytes() == 64 * 8
    assert torch.equal(moved, wide.double())
    dense = torch.randn(3, 4).t()
    assert torch.equal(cast_keeping_layout(dense, torch.float64), dense.double())
    ints = torch.arange(3)
    assert cast_keeping_layout(ints, torch.float64) is ints


def test_a_dict_of_forward_keywords_is_passed_as_keywords():
    from ssdaudit.core.forward_call import call_forward, forward_arguments

    class EncoderDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, input_ids, attention_mask=None, decoder_input_ids=None):
            return self.fc(input_ids) + self.fc(decoder_input_ids)

    class TakesABatch(nn.Module):
        def forward(self, batch):
            return batch["x"] * 2

    x = torch.rand(2, 4)
    kwargs = {"input_ids": x, "decoder_input_ids": x}
    assert forward_arguments(EncoderDecoder(), kwargs) == ((), kwargs)
    assert call_forward(EncoderDecoder(), kwargs).shape == (2, 4)
    batch = {"x": x}  # a dict whose keys are not forward's parameters: the single argument
    assert forward_arguments(TakesABatch(), batch) == ((batch,), {})
    assert torch.equal(call_forward(TakesABatch(), batch), x * 2)
    assert forward_arguments(TakesABatch(), (x, x)) == ((x, x), {})
    findings = find_unregistered(EncoderDecoder(), kwargs)
    assert not [f for f in findings if f.rule in ("N003", "N004")]  # the probe ran with both inputs


def test_a_placeholder_probe_past_the_time_limit_leaves_the_meta_report(tmp_path):
    """A CPU forward can be slow for a very large model: past --timeout the audit still reports (the meta run's
    findings, and why the probe did not finish), rather than failing as a whole."""
    slow = ITEM_MODEL.format(scale=CLEAN).replace(
        "    def forward(self, x):\n", "    def forward(self, x):\n        if not x.is_meta:\n"
        "            import time\n            time.sleep(30)\n")
    report = audit_target(_file(tmp_path, slow), device="meta", probe_device="auto", probe_memory=16,
                          roundtrip=False, timeout=3)
    assert report.probe is not None and report.probe.device == "meta"
    assert "ran past --timeout" in report.probe.reason
    assert report.registered_params == 20
    n004 = [f for f in report.findings if f.rule == "N004"]
    assert n004 and "raise --timeout" in n004[0].message
