"""GradFlowMonitor and `ssdaudit gradflow`: every rule with its bug and a clean twin, the log, DDP, bad input."""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.training.gradflow import GradFlowMonitor, analyse_gradflow, read_gradflow_log

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


class Chain(nn.Module):
    """Three linear layers; ``plain_list`` keeps the middle one in a plain list (the seed's bug)."""

    def __init__(self, plain_list=False, scale=1.0, detach=False, unused=False):
        super().__init__()
        self.first = nn.Linear(6, 6)
        middle = [nn.Linear(6, 6)]
        self.middle = middle if plain_list else nn.ModuleList(middle)
        self.last = nn.Linear(6, 2)
        if unused:
            self.spare = nn.Linear(6, 6)
        self.scale, self.detach = scale, detach

    def forward(self, x):
        x = torch.tanh(self.first(x)) * self.scale
        if self.detach:
            x = x.detach()
        for m in self.middle:
            x = torch.tanh(m(x))
        return self.last(x)


def train(model, optimizer=None, steps=3, lr=0.1, loss_fn=None, log_dir=None, every=1):
    torch.manual_seed(0)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    with GradFlowMonitor(model, optimizer, every=every, log_dir=log_dir) as mon:
        for step in range(steps):
            out = model(torch.randn(16, 6))
            loss = loss_fn(out, step) if loss_fn else out.square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return mon


def rules(mon, **kw):
    return {f.rule: f for f in analyse_gradflow(mon.run(), **kw)[0]}


def errors(mon):
    return [f for f in mon.findings() if f.severity.value == "error"]


def test_clean_model_has_no_findings():
    mon = train(Chain())
    assert mon.findings() == []
    assert [t.name for t in mon.tensors] == [n for n, _ in Chain().named_parameters()]


def test_g001_orphan_gradient_named_by_attribute_path():
    mon = train(Chain(plain_list=True))
    f = rules(mon)["G001"]
    assert f.path == "middle" and f.params == 42
    assert set(f.members) == {"middle.0.weight", "middle.0.bias"}
    run = mon.run()
    k = [t.name for t in run.tensors].index("middle.0.weight")
    assert (run.stats[:, 0, k] > 0).all()  # gradients arrive ...
    assert (run.stats[:, 3, k] == 0).all()  # ... and are never applied


def test_g002_detached_and_unused():
    found = rules(train(Chain(detach=True)))["G002"]
    assert found.path == "first" and "first.weight" in found.message
    found = rules(train(Chain(unused=True)))["G002"]
    assert found.path == "spare" and found.params == 42


def test_g003_missing_from_optimizer_and_stale_optimizer():
    model = Chain()
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("last")], lr=0.1)
    f = rules(train(model, opt))["G003"]
    assert f.path == "last" and f.params == 14
    model = Chain()
    stale = Chain()  # the optimizer was built for a model that was later replaced
    opt = torch.optim.SGD(list(model.parameters()) + list(stale.first.parameters()), lr=0.1)
    found = [f for f in train(model, opt).findings() if f.rule == "G003"]
    assert [(f.path, f.subject) for f in found] == [("", "optimizer")] and found[0].params == 42


def test_g003_an_optimizer_over_the_model_and_another_trained_module_is_not_stale():
    """One optimizer over an encoder and its decoder (itertools.chain), watched with the encoder as the model: the
    decoder's tensors get gradients, so they are trained alongside, not left from a rebuilt model. Also with two
    backward passes before the step (two heads), where the first pass reaches only one head."""
    import itertools

    encoder, decoder, head = nn.Linear(6, 4), nn.Linear(4, 6), nn.Linear(4, 1)
    opt = torch.optim.SGD(itertools.chain(encoder.parameters(), decoder.parameters(), head.parameters()), lr=0.1)
    with GradFlowMonitor(encoder, opt) as mon:
        for _ in range(3):
            x = torch.randn(16, 6)
            z = encoder(x)
            opt.zero_grad()
            (decoder(z) - x).square().mean().backward(retain_graph=True)
            head(z).square().mean().backward()
            opt.step()
    assert [f for f in mon.findings() if f.rule == "G003"] == []
    stale = nn.Linear(4, 6)  # a real stale tensor next to them still is one
    opt = torch.optim.SGD([*encoder.parameters(), *decoder.parameters(), *stale.parameters()], lr=0.1)
    with GradFlowMonitor(encoder, opt) as mon:
        for _ in range(2):
            x = torch.randn(16, 6)
            opt.zero_grad()
            (decoder(encoder(x)) - x).square().mean().backward()
            opt.step()
    found = [f for f in mon.findings() if f.rule == "G003"]
    assert [(f.subject, f.params) for f in found] == [("optimizer", 30)]


def test_g004_never_updated():
    model = Chain()
    opt = torch.optim.SGD([
        {"params": list(model.first.parameters()), "lr": 0.0},
        {"params": list(model.middle.parameters()) + list(model.last.parameters())},
    ], lr=0.1)
    f = rules(train(model, opt))["G004"]
    assert f.path == "first" and f.params == 42
    assert "G004" not in rules(train(Chain()))


def test_g005_vanishing_gradient():
    mon = train(Chain(scale=1e-7))
    f = rules(mon, vanish=1e-3)["G005"]
    assert f.path == "first" and "vanishing" in f.message
    assert "G005" not in rules(train(Chain()), vanish=1e-3)


def test_g005_zero_init_residual_is_not_vanishing():
    """A residual branch whose last BatchNorm weight starts at 0 (timm's and torchvision's zero_init_residual): the
    branch's earlier layers get exactly 0 gradient at step 1, then tiny ones that grow as the weight opens. Not a
    vanishing gradient (found on timm resnet10t by benchmarks/train_sweep.py); the vanishing twin above stays found."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(6, 16)
            self.conv1, self.bn1 = nn.Linear(16, 16), nn.BatchNorm1d(16)
            self.conv2, self.bn2 = nn.Linear(16, 16), nn.BatchNorm1d(16)
            nn.init.zeros_(self.bn2.weight)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            branch = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return self.head(torch.relu(x + branch))

    torch.manual_seed(0)
    model = Block()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    mon = train(model, opt, steps=3)
    found = rules(mon, vanish=1e-2)
    assert "G005" not in found, found.get("G005")
    from ssdaudit.training.gradflow.analysis import layer_stats

    conv1 = next(ls for ls in layer_stats(mon.run()) if ls.path == "conv1").grad_norm_steps
    assert conv1[0] == 0 and 0 < conv1[1] < conv1[2]  # the case the exception is for: gated, then opening


def test_g005_layer_scale_opening_is_not_exploding():
    """A layer gated by LayerScale initialised to 1e-6 (ConvNeXt) grows 1000x as AdamW opens the gate, from far below
    the other layers up to (not beyond) their range: no explosion. The norms are those torchvision convnext_base
    showed in benchmarks/train_sweep.py (5 AdamW steps), where G005 called it exploding; the twin, a layer that grows
    beyond the range any layer started in, stays an explosion."""
    from ssdaudit.training.gradflow.log import GRAD_NORM, LR, UPDATE, WEIGHT, GradFlowRun, TrackedTensor

    def run(last_layer: list[float]) -> GradFlowRun:
        norms = {"stem": [0.3] * 5, "block": [1e-7, 2e-7, 1e-5, 3e-4, 9.3e-4], "head": last_layer}
        stats = np.zeros((5, 6, 3), np.float32)
        for k, values in enumerate(norms.values()):
            stats[:, GRAD_NORM, k] = values
        stats[:, UPDATE], stats[:, WEIGHT], stats[:, LR] = 1e-3, 1.0, 1e-3
        tensors = [TrackedTensor(f"{name}.weight", (4,), 4, True, True, True) for name in norms]
        return GradFlowRun(tensors, [], np.arange(1, 6), stats)

    found = [f for f in analyse_gradflow(run([0.5] * 5))[0] if f.rule == "G005"]
    assert found == [], [f.message for f in found]
    found = [f for f in analyse_gradflow(run([0.5, 0.6, 5.0, 50.0, 500.0]))[0] if f.rule == "G005"]
    assert [f.path for f in found] == ["head"] and "exploding" in found[0].message


def test_g005_exploding_gradient():
    """Explosion is growth over a layer's own history (a constant large gradient is no explosion: see
    test_gradient_scale_parameters.py for why comparing layers with each other misleads)."""
    class Loud(Chain):
        def forward(self, x):
            self.gain = getattr(self, "gain", 1.0) * 10.0  # the first layer's bias gradient grows 10x per step
            x = torch.tanh(self.first(x))
            for m in self.middle:
                x = torch.tanh(m(x))
            return self.last(x) + self.gain * self.first.bias.sum()

    found = [f for f in analyse_gradflow(train(Loud(), lr=0.0, steps=5).run(), explode=1e2)[0] if f.rule == "G005"]
    assert "first" in {f.path for f in found} and all("exploding" in f.message for f in found)
    assert "G005" not in rules(train(Chain(), lr=0.0, steps=5), explode=1e2)


def test_g006_first_non_finite_step():
    def loss_fn(out, step):
        if step == 2:
            return (out * float("inf")).sum()
        return out.square().mean()

    f = rules(train(Chain(), steps=4, lr=0.0, loss_fn=loss_fn))["G006"]
    assert "step 3" in f.message and "in 6 tensors" in f.message and f.path.startswith("last.")
    assert "G006" not in rules(train(Chain(), steps=4))


def test_log_round_trip_and_truncated_chunk(tmp_path):
    mon = train(Chain(plain_list=True), steps=5, log_dir=tmp_path, every=1)
    mon.flush()
    live = mon.run()
    assert len(live.steps) == 5
    chain = Chain()
    opt = torch.optim.SGD(chain.parameters(), lr=0.1)
    with GradFlowMonitor(chain, opt, log_dir=tmp_path / "chunks", chunk_steps=2) as mon2:
        for _ in range(5):
            opt.zero_grad()
            chain(torch.randn(4, 6)).sum().backward()
            opt.step()
    assert (mon2.run().stats[:, 3, :] > 0).any()  # the step hooks recorded updates
    chunks = sorted((tmp_path / "chunks").glob("chunk_*.npz"))
    assert len(chunks) == 3
    back = read_gradflow_log(tmp_path)
    assert np.array_equal(back.steps, live.steps) and np.allclose(back.stats, live.stats, equal_nan=True)
    assert [t.name for t in back.tensors] == [t.name for t in live.tensors]
    chunks[-1].write_bytes(chunks[-1].read_bytes()[:50])
    cut = read_gradflow_log(tmp_path / "chunks")
    assert list(cut.steps) == [1, 2, 3, 4] and "truncated" in cut.warnings[0]
    result = runner.invoke(app, ["gradflow", str(tmp_path / "chunks"), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 4 and "truncated" in result.stderr


def test_cli_json_contract_and_plots(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.blocks = [nn.Linear(4, 4)]\n"
        "        self.head = nn.Linear(4, 1)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.blocks[0](x))\n"
        "def example_input():\n    return torch.rand(3, 4)\n"
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["gradflow", str(src), "--steps", "2", "--out", str(out), "--format", "json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["steps"] == 2
    (g001,) = data["findings"]
    assert {"rule", "name", "severity", "path", "params", "message", "fix"} <= set(g001)
    assert g001["rule"] == "G001" and g001["path"] == "blocks" and g001["params"] == 20
    layers = {x["path"]: x for x in data["layers"]}
    assert set(layers) == {"head", "blocks.0"}
    assert layers["head"]["update_ratio_mean"] > 0 and layers["blocks.0"]["update_ratio_mean"] == 0
    assert layers["blocks.0"]["grad_norm_mean"] > 0
    for name in ("gradient_flow.png", "grad_norm_heatmap.png", "update_ratio.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "gradflow" / "index.json").exists()
    result = runner.invoke(app, ["gradflow", str(out), "--format", "json"])  # the RUN_DIR form renders the log
    assert result.exit_code == 1 and json.loads(result.stdout)["findings"][0]["rule"] == "G001"


def test_seed_story_voc_backbone_orphans():
    result = runner.invoke(app, ["gradflow", str(ROOT / "examples/buggy_plain_list.py"), "--steps", "1",
                                 "--batch-size", "2", "--format", "json"])
    assert result.exit_code == 1, result.output
    g001 = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == "G001"]
    assert [(f["path"], f["params"]) for f in g001] == [("backbone", 1_812_800)]
    result = runner.invoke(app, ["gradflow", str(ROOT / "examples/fixed_modulelist.py"), "--steps", "1",
                                 "--batch-size", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert not [f for f in json.loads(result.stdout)["findings"] if f["severity"] == "error"]


def test_bad_input(tmp_path):
    result = runner.invoke(app, ["gradflow", str(tmp_path)])
    assert result.exit_code == 2 and "no gradflow log" in result.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nfrom torch import nn\nclass Net(nn.Module):\n"
                      "    def __init__(self):\n        super().__init__()\n        self.l = nn.Linear(4, 4)\n"
                      "    def forward(self, x):\n        return self.l(x)\n"
                      "def example_input():\n    return torch.rand(2, 5)\n")
    result = runner.invoke(app, ["gradflow", str(broken)])
    assert result.exit_code == 2 and "probe failed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "index.json").write_text("{not json")
    result = runner.invoke(app, ["gradflow", str(tmp_path / "run")])
    assert result.exit_code == 2 and "not a gradflow index" in result.stderr


def test_ddp_unused_branch_reported_before_ddp_fails(tmp_path, torchrun):
    proc = torchrun([str(ROOT / "tests/data/ddp_unused_branch.py"), str(tmp_path / "log")], tmp_path, 180)
    out = proc.stdout
    assert "FINDINGS" in out, proc.stderr[-2000:]
    findings = json.loads(out.split("FINDINGS ", 1)[1].splitlines()[0])
    assert [(f["rule"], f["path"]) for f in findings] == [("G002", "unused")]
    assert out.index("FINDINGS") < out.index("DDP-ERROR")  # we spoke first
    index = json.loads((tmp_path / "log" / "index.json").read_text())
    assert [f["path"] for f in index["coverage_findings"]] == ["unused"]


def test_text_report_lists_layers_and_findings(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n"
                   "        super().__init__()\n        self.blocks = [nn.Linear(4, 4)]\n        self.head = nn.Linear(4, 1)\n"
                   "    def forward(self, x):\n        return self.head(self.blocks[0](x))\n"
                   "def example_input():\n    return torch.rand(3, 4)\n")
    result = runner.invoke(app, ["gradflow", str(src), "--steps", "2"])
    assert result.exit_code == 1
    assert "Layers by mean gradient norm" in result.stdout and "never" in result.stdout
    assert "G001 orphan-gradient (error) blocks" in result.stdout
