"""Each rule: the bug is found with the right path and count, and the correct twin is clean."""

import functools
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit import Severity, find_unregistered

X = torch.rand(4, 8)


def errors(model, example=X):
    return [f for f in find_unregistered(model, example) if f.severity is not Severity.INFO]


def only(findings, rule):
    hits = [f for f in findings if f.rule == rule]
    assert len(hits) == 1, findings
    return hits[0]


class ListNet(nn.Module):
    def __init__(self, wrap=lambda xs: xs):
        super().__init__()
        self.layers = wrap([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_r001_plain_list_found_with_path_count_and_line():
    f = only(errors(ListNet()), "R001")
    assert f.path == "layers" and f.params == 2 * (64 + 8) and f.modules == 2
    assert f.severity is Severity.ERROR and "ModuleList" in f.fix
    assert f.location and f.location.line == ListNet.__init__.__code__.co_firstlineno + 2


def test_r001_nested_containers_and_dicts():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = {"a": [nn.Linear(8, 8)], "b": ({"deep": nn.Linear(8, 8)},)}

        def forward(self, x):
            return self.stages["b"][0]["deep"](self.stages["a"][0](x))

    f = only(errors(Nested()), "R001")
    assert f.path == "stages" and f.params == 144 and f.modules == 2
    assert set(f.members) == {"stages.a.0", "stages.b.0.deep"}


@pytest.mark.parametrize("wrap", [nn.ModuleList, lambda xs: nn.Sequential(*xs)], ids=["ModuleList", "Sequential"])
def test_r001_registered_containers_are_clean(wrap):
    assert errors(ListNet(wrap)) == []


def test_aliases_of_registered_modules_are_not_findings():
    class Taps(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
            self.taps = [self.body[0], self.body[1]]  # a list of aliases: fine
            self.names = ["a", "b"]
            self.sizes = (1, 2.0)

        def forward(self, x):
            return self.body(x)

    assert errors(Taps()) == []


def test_r002_parameters_in_a_list():
    class P(nn.Module):
        def __init__(self, registered):
            super().__init__()
            ps = [nn.Parameter(torch.ones(8)), nn.Parameter(torch.ones(3, 8))]
            self.scales = nn.ParameterList(ps) if registered else ps

        def forward(self, x):
            return x * self.scales[0] + self.scales[1].sum()

    f = only(errors(P(False)), "R002")
    assert f.path == "scales" and f.params == 32 and f.severity is Severity.ERROR
    assert errors(P(True)) == []


class Helper:
    def __init__(self):
        self.proj = nn.Linear(8, 8)


@pytest.mark.parametrize(
    "hide",
    [
        lambda m: Helper(),
        lambda m: SimpleNamespace(proj=nn.Linear(8, 8)),
        lambda m: namedtuple("Pair", "proj other")(nn.Linear(8, 8), 1),
        lambda m: functools.partial(F.linear, weight=nn.Linear(8, 8)),
    ],
    ids=["object", "namespace", "namedtuple", "partial"],
)
def test_r003_modules_behind_plain_objects(hide):
    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.helper = hide(self)

        def forward(self, x):
            return x

    f = only(find_unregistered(Hidden(), None), "R003")
    assert f.path == "helper" and f.params == 72 and f.severity is Severity.ERROR


def test_r003_closure():
    def make_act():
        layer = nn.Linear(8, 8)
        return lambda x: layer(x)

    class Closure(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = make_act()

        def forward(self, x):
            return self.act(x)

    f = only(errors(Closure()), "R003")
    assert f.path == "act" and f.params == 72


def test_r003_clean_when_helper_is_a_module():
    class HelperModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)

    class Fine(nn.Module):
        def __init__(self):
            super().__init__()
            self.helper = HelperModule()

        def forward(self, x):
            return self.helper.proj(x)

    assert errors(Fine()) == []


class TensorAttr(nn.Module):
    def __init__(self, as_buffer, used=True):
        super().__init__()
        if as_buffer:
            self.register_buffer("offset", torch.ones(8), persistent=False)
        else:
            self.offset = torch.ones(8)
        self.unused = torch.zeros(2) if not as_buffer else None
        self.used = used
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x) + (self.offset if self.used else 0)


def test_r004_tensor_attribute_used_in_forward():
    findings = find_unregistered(TensorAttr(False), X)
    f = only(findings, "R004")
    assert f.path == "offset" and f.severity is Severity.WARNING and "register_buffer" in f.fix
    # `unused` is never read by forward(): not reported once a probe ran.
    assert all(x.path != "unused" for x in findings)
    assert errors(TensorAttr(True)) == []


class BuildsInForward(nn.Module):
    def __init__(self, assign=False):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.assign = assign

    def forward(self, x):
        head = nn.Linear(8, 3)  # rebuilt on every call: never trained
        if self.assign:
            self.late = head
        return head(self.lin(x))


def test_r005_module_built_in_forward():
    model = BuildsInForward()
    f = only(errors(model), "R005")
    assert f.path == "<forward>" and f.params == 27 and f.severity is Severity.ERROR
    assert f.location and f.location.line == BuildsInForward.forward.__code__.co_firstlineno + 1


def test_r005_module_registered_inside_forward_is_named_and_removed_again():
    model = BuildsInForward(assign=True)
    f = only(errors(model), "R005")
    assert f.path == "late" and f.params == 27
    assert not hasattr(model, "late")  # the probe leaves the model as it was


def test_r005_hidden_global_module():
    hidden = nn.Linear(8, 8)

    class UsesGlobal(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            return hidden(self.lin(x))

    f = only(errors(UsesGlobal()), "R005")
    assert f.path == "<forward>" and f.params == 72 and f.location is None


def test_r005_clean_functional_forward():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            return F.relu(self.lin(x))

    assert errors(Functional()) == []


def test_r006_dropout_in_a_list():
    class Drop(nn.Module):
        def __init__(self, registered):
            super().__init__()
            drops = [nn.Dropout(0.5), nn.BatchNorm1d(8, affine=False)]
            self.drops = nn.ModuleList(drops) if registered else drops

        def forward(self, x):
            for d in self.drops:
                x = d(x)
            return x

    f = only(errors(Drop(False)), "R006")
    assert f.path == "drops" and f.params == 0 and f.severity is Severity.ERROR
    assert errors(Drop(True)) == []


@pytest.mark.parametrize("train", [True, False])
def test_probe_leaves_the_model_unchanged(train):
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.3)).train(train)
    hidden_bn = nn.BatchNorm1d(8)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model
            self.extra = [hidden_bn]

        def forward(self, x):
            return self.extra[0](self.body(x))

    wrapped = Wrap().train(train)
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    hidden_before = {k: v.clone() for k, v in hidden_bn.state_dict().items()}
    x = torch.rand(4, 8)
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    find_unregistered(wrapped, x)
    assert torch.equal(torch.random.get_rng_state(), rng)
    after = wrapped.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(hidden_before[k], v) for k, v in hidden_bn.state_dict().items())
    assert all(m.training == train for m in model.modules())


def test_no_example_input_gives_a_note():
    findings = find_unregistered(ListNet(), None)
    assert {f.rule for f in findings} == {"R001", "N003"}


def test_probe_records_only_its_own_threads_module_constructions():
    """The probe patches nn.Module.__init__ process-wide; a model built meanwhile in another thread is built
    normally and none of its modules is taken for one built by the probed forward."""
    import threading

    from ssdaudit.registration.unregistered import probe_forward

    class BuildsInForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            started.set()
            finished.wait(timeout=5)  # the other thread builds its modules while this forward is running
            return nn.Linear(4, 4)(self.fc(x))

    started, finished = threading.Event(), threading.Event()
    built: list[nn.Module] = []

    def build_elsewhere():
        started.wait(timeout=5)
        built.extend(nn.Linear(2, 2) for _ in range(3))
        finished.set()

    other = threading.Thread(target=build_elsewhere)
    other.start()
    result = probe_forward(BuildsInForward(), torch.randn(2, 4))
    other.join()
    assert len(built) == 3 and all(isinstance(m.weight, nn.Parameter) for m in built)
    assert [type(m).__name__ for m in result.created] == ["Linear"]
    assert all(m is not b for m in result.created for b in built)
    assert nn.Module.__init__ is torch.nn.modules.module.Module.__init__
