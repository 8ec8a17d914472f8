"""GradFlowMonitor where it used to fail: transient autograd-node wrappers (the CUDA false G002), backward on
another thread, models that carry state across steps, models with no registered parameter, updates that round
to zero in float32."""

import json
import threading
import weakref

import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.training.gradflow import GradFlowMonitor, analyse_gradflow, autograd_leaves

runner = CliRunner()


class _CppNode:
    """Stands for an autograd node in C++: it lives as long as the graph."""

    def __init__(self, children=(), variable=None):
        self.children, self.variable = list(children), variable


_wrappers: "weakref.WeakValueDictionary[int, _Wrapper]" = weakref.WeakValueDictionary()


class _Wrapper:
    """Stands for torch's Python wrapper of a node: made on access, cached only while someone holds it."""

    def __init__(self, node):
        self._node = node

    @property
    def next_functions(self):
        return tuple((_wrap(c), 0) for c in self._node.children)

    @property
    def variable(self):
        return self._node.variable


def _wrap(node):
    w = _wrappers.get(id(node))
    if w is None:
        w = _Wrapper(node)
        _wrappers[id(node)] = w
    return w


def test_walk_survives_wrappers_that_are_dropped_between_visits():
    # A long chain with a leaf at every node: a walk keyed by the ids of dropped wrappers sees the next wrapper
    # reuse a freed id and skips the rest of the chain.
    leaves = [torch.zeros(1) for _ in range(50)]
    node = None
    for leaf in reversed(leaves):
        node = _CppNode([node] if node is not None else [], leaf)
    found = autograd_leaves([_wrap(node)])
    assert len(found) == 50 and {id(t) for t in leaves} == set(found)


def test_walk_reaches_every_parameter_of_a_real_graph():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(10)])
    out = model(torch.rand(2, 4)).sum()
    leaves = autograd_leaves([out.grad_fn])
    assert {id(p) for p in model.parameters()} == set(leaves)


def test_backward_on_another_thread_finds_no_false_g002():
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    errors = []
    with GradFlowMonitor(model, opt) as mon:
        for _ in range(3):
            loss = model(torch.randn(8, 6)).square().mean()
            opt.zero_grad()
            t = threading.Thread(target=lambda: _safe(loss.backward, errors))
            t.start()
            t.join()
            opt.step()
    assert errors == []
    assert [f.rule for f in mon.findings()] == []
    assert all(t.reached for t in mon.tensors) and len(mon.tensors) == 4


def _safe(fn, errors):
    try:
        fn()
    except Exception as exc:  # pragma: no cover - reported by the assertion
        errors.append(exc)


def test_update_below_float32_rounding_is_not_g004():
    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.full((4,), 1e4))
            self.lin = nn.Linear(4, 1)

        def forward(self, x):
            return self.lin(x) + 1e-7 * (self.w * x).sum()

    for lr_w, expect in ((0.01, False), (0.0, True)):
        model = Big()
        opt = torch.optim.SGD([{"params": [model.w], "lr": lr_w}, {"params": model.lin.parameters()}], lr=0.1)
        with GradFlowMonitor(model, opt) as mon:
            for _ in range(3):
                opt.zero_grad()
                model(torch.rand(8, 4)).square().mean().backward()
                opt.step()
        run = mon.run()
        k = [t.name for t in run.tensors].index("w")
        assert (run.stats[:, 3, k] == 0).all() and (run.stats[:, 0, k] > 0).all()  # no change, though gradients came
        assert ("G004" in {f.rule for f in analyse_gradflow(run)[0]}) is expect


STATEFUL = '''
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 4, batch_first=True)
        self.state = None
    def forward(self, x):
        out, self.state = self.rnn(x, self.state)  # carried across steps, never detached
        return out
def example_input():
    return torch.rand(2, 3, 4)
'''

ALL_PLAIN = '''
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(4, 4), nn.Linear(4, 2)]
    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
def example_input():
    return torch.rand(3, 4)
'''


def test_stateful_model_stops_with_exit_2_naming_step_and_cause(tmp_path):
    src = tmp_path / "rnn.py"
    src.write_text(STATEFUL)
    result = runner.invoke(app, ["gradflow", str(src), "--steps", "3"])
    assert result.exit_code == 2, result.output
    assert "step 2" in result.stderr and "detach" in result.stderr
    assert "Traceback" not in result.output


def test_no_registered_parameter_gives_g001_on_everything(tmp_path):
    src = tmp_path / "plain.py"
    src.write_text(ALL_PLAIN)
    result = runner.invoke(app, ["gradflow", str(src), "--steps", "2", "--format", "json"])
    assert result.exit_code == 1, result.output
    (g001,) = json.loads(result.stdout)["findings"]
    assert g001["rule"] == "G001" and g001["path"] == "layers" and g001["params"] == 20 + 10
