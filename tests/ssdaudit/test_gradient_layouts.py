"""Trust class: gradient layouts the monitor cannot reduce in bulk (sparse, complex, mixed dtypes) never end the run,
and their statistics are the same numbers a dense twin gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssdaudit import GradFlowMonitor
from ssdaudit.training.gradflow.log import GRAD_L1, GRAD_MAX, GRAD_NORM


class BagOfWords(nn.Module):
    def __init__(self, sparse: bool):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 8, sparse=sparse)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.head(self.emb(tokens).mean(1))


def train(model, optimizers, steps=3):
    torch.manual_seed(1)
    batches = [(torch.randint(0, 50, (4, 6)), torch.randint(0, 3, (4,))) for _ in range(steps)]
    with GradFlowMonitor(model, optimizers[0]) as monitor:
        for tokens, y in batches:
            for opt in optimizers:
                opt.zero_grad()
            nn.functional.cross_entropy(model(tokens), y).backward()
            for opt in optimizers:
                opt.step()
    return monitor


def stats(monitor, name):
    run = monitor.run()
    k = [t.name for t in run.tensors].index(name)
    return run.stats[:, [GRAD_NORM, GRAD_MAX, GRAD_L1], k]


@pytest.mark.parametrize("optimizer", ["sgd", "sparse_adam"])
def test_sparse_embedding_gradients_are_measured_like_their_dense_twin(optimizer):
    sparse, dense = BagOfWords(sparse=True), BagOfWords(sparse=False)
    if optimizer == "sgd":
        opts_s = [torch.optim.SGD(sparse.parameters(), lr=0.1)]
        opts_d = [torch.optim.SGD(dense.parameters(), lr=0.1)]
    else:  # SparseAdam takes the sparse embedding, Adam the rest: the usual recipe
        opts_s = [torch.optim.SparseAdam(list(sparse.emb.parameters()), lr=0.01), torch.optim.Adam(sparse.head.parameters(), lr=0.01)]
        opts_d = [torch.optim.Adam(list(dense.emb.parameters()), lr=0.01), torch.optim.Adam(dense.head.parameters(), lr=0.01)]
    ms, md = train(sparse, opts_s), train(dense, opts_d)
    s, d = stats(ms, "emb.weight"), stats(md, "emb.weight")
    assert s.shape == (3, 3) and np.all(s[:, 0] > 0)
    # step 1 has the same weights and batch: identical gradients, so identical statistics
    np.testing.assert_allclose(s[0], d[0], rtol=1e-5)
    if optimizer == "sgd":  # SGD makes the same updates on both layouts: the whole run agrees
        np.testing.assert_allclose(s, d, rtol=1e-4)
    errors = [f for f in ms.findings() if f.severity.value in ("error", "warning") and f.rule != "G003"]
    assert errors == [], errors


def test_complex_and_mixed_dtype_parameters_in_one_step():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.randn(4, dtype=torch.complex64))
            self.d = nn.Parameter(torch.randn(4, dtype=torch.float64))
            self.f = nn.Linear(4, 1)

        def forward(self, x):
            z = (x.to(torch.complex64) * self.c).abs()
            return self.f(z + (x.double() * self.d).float())

    torch.manual_seed(0)
    model = Mixed()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(3, 4)
    with GradFlowMonitor(model, opt) as monitor:
        for _ in range(2):
            opt.zero_grad()
            model(x).sum().backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.step()
    for name, g in grads.items():
        if name == "f.bias":
            continue
        row = stats(monitor, name)[-1]
        expected = g.abs().float()
        np.testing.assert_allclose(row, [float(torch.linalg.vector_norm(expected)), float(expected.max()),
                                         float(expected.sum())], rtol=1e-5)
    assert [f for f in monitor.findings() if f.severity.value == "error"] == []


def test_gradflow_command_reports_on_a_sparse_model(tmp_path):
    import json

    from typer.testing import CliRunner

    from ssdaudit.cli import app

    model = tmp_path / "bow.py"
    model.write_text(
        "import torch\nfrom torch import nn\n\n\nclass BagOfWords(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.emb = nn.Embedding(50, 8, sparse=True)\n        self.head = nn.Linear(8, 3)\n\n"
        "    def forward(self, tokens):\n        return self.head(self.emb(tokens).mean(1))\n\n\n"
        "def example_input():\n    return torch.randint(0, 50, (4, 6))\n")
    result = CliRunner().invoke(app, ["gradflow", str(model), "--steps", "3", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["steps"] == 3
    emb = next(layer for layer in doc["layers"] if layer["path"] == "emb")
    assert emb["grad_norm_mean"] > 0
