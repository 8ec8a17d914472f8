"""pytest plugin (entry point ``pytest11``): the ``ssdaudit`` fixture and the ``--ssdaudit`` flag.

    def test_model_is_clean(ssdaudit):
        ssdaudit.assert_clean(build_model(), example_input=torch.rand(1, 3, 300, 300))

    def test_model_file_is_clean(ssdaudit):
        ssdaudit.assert_clean("models/net.py:build")     # the same pipeline as `ssdaudit params`

    def test_checkpoint_holds_everything(ssdaudit):
        ssdaudit.assert_reloads(build_model, torch.rand(2, 3, 300, 300))

With ``pytest --ssdaudit``, every test that uses an ``ssdaudit_models`` fixture (a model, a list of models or a
dict name -> model, or (model, example_input) pairs) also has those models audited after it passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pytest

if TYPE_CHECKING:
    from torch import nn

    from ssdaudit.core.findings import Finding


class Auditor:
    """What the ``ssdaudit`` fixture returns."""

    def findings(self, model: nn.Module | str, example_input: Any = None, strict: bool = False) -> list[Finding]:
        """The failing findings of a model object, or of a target spec ("model.py[:NAME]", "pkg.module:NAME") audited
        through the same pipeline as ``ssdaudit params`` (``audit.audit_target``)."""
        from ssdaudit.core.findings import Severity

        if isinstance(model, str):
            from ssdaudit.registration.pipeline import audit_target

            report = audit_target(model, input_shape=tuple(example_input) if example_input is not None else None)
        else:
            from ssdaudit.registration.params import audit_params

            report = audit_params(model, example_input=example_input)
        failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
        return [f for f in report.findings if f.severity in failing]

    def assert_reloads(self, build: Callable[[], nn.Module], example_input: Any, atol: float = 0.0) -> None:
        """Fail the test when a model made by ``build()`` and reloaded from another's state_dict computes
        something else (R007: state that a checkpoint does not hold)."""
        from ssdaudit.registration.roundtrip import check_roundtrip

        found = check_roundtrip(build, example_input, atol)
        if found:
            pytest.fail(render(found, getattr(build, "__name__", "model")), pytrace=False)

    def assert_clean(self, model: nn.Module | str, example_input: Any = None, strict: bool = False) -> None:
        """Fail the test with the rendered findings when ``model`` (an object, or a target spec with
        ``example_input`` an input shape) has unregistered members (errors; warnings too with ``strict``)."""
        found = self.findings(model, example_input, strict)
        if found:
            pytest.fail(render(found, model if isinstance(model, str) else type(model).__name__), pytrace=False)


def render(findings: list[Finding], name: str) -> str:
    lines = [f"ssdaudit: {len(findings)} finding(s) in {name}:"]
    for f in findings:
        where = f" ({f.location})" if f.location else ""
        lines.append(f"  {f.rule} {f.name} at {f.label}{where}: {f.message}")
        lines.append(f"      fix: {f.fix}")
    return "\n".join(lines)


@pytest.fixture
def ssdaudit() -> Auditor:
    return Auditor()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ssdaudit")
    group.addoption("--ssdaudit", action="store_true", default=False,
                    help="audit the models of every test that uses an `ssdaudit_models` fixture")


def _models(value: Any) -> list[tuple[str, Any, Any]]:
    from torch import nn

    if isinstance(value, nn.Module):
        return [(type(value).__name__, value, None)]
    if isinstance(value, dict):
        return [(name, *_pair(v)) for name, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [(type(_pair(v)[0]).__name__, *_pair(v)) for v in value]
    raise TypeError(f"ssdaudit_models must return a module, a list or a dict of modules, got {type(value).__name__}")


def _pair(v: Any) -> tuple[Any, Any]:
    return (v[0], v[1]) if isinstance(v, tuple) and len(v) == 2 else (v, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    result = yield  # a failing test raises here and is reported as it is
    if not item.config.getoption("--ssdaudit", default=False) or "ssdaudit_models" not in getattr(item, "fixturenames", ()):
        return result
    auditor = Auditor()
    problems = []
    for name, model, example in _models(item.funcargs["ssdaudit_models"]):  # type: ignore[attr-defined]  # a Function item
        found = auditor.findings(model, example)
        if found:
            problems.append(render(found, name))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    return result
