"""The shape of the code: no import cycle among the project's modules, ssdaudit independent of ssdlite_model
except through its one adapter, every rule's SARIF level equal to its registry severity, and every SARIF
result's level its own finding's severity (which a detector may override)."""

import ast
import json
from pathlib import Path

from ssdaudit.core.findings import RULES, Severity
from ssdaudit.render.sarif import render_sarif
from ssdaudit.lint.engine import lint_paths

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ssdaudit", "ssdlite_model")
ADAPTER = "ssdaudit.registration.ssdlite_adapter"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    # imports for type annotations only (`if TYPE_CHECKING:`) never run: no cycle of code
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, module_name(p), known) for p in files}


def test_no_import_cycles():
    edges = graph()
    # packages import their submodules lazily or eagerly; a submodule importing its own package is no cycle of
    # code, so package -> child edges are left out
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_ssdaudit_imports_ssdlite_model_only_through_the_adapter():
    offenders = {m: sorted(t for t in ts if t.startswith("ssdlite_model"))
                 for m, ts in graph().items() if m.startswith("ssdaudit") and m != ADAPTER}
    assert {m: ts for m, ts in offenders.items() if ts} == {}


SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}  # SARIF 2.1.0 has no "info": a note


def test_sarif_levels_follow_the_registry_for_every_rule():
    # every rule with every severity: a detector may lower or raise a finding's severity below its rule's default
    findings = [RULES[code].finding("x", "m", severity=severity) for code in RULES for severity in Severity]
    assert any(f.severity != RULES[f.rule].severity for f in findings)
    doc = json.loads(render_sarif(findings, "0"))
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(RULES)
    for rule in rules:
        assert rule["defaultConfiguration"]["level"] == SARIF_LEVEL[RULES[rule["id"]].severity.value], rule["id"]
    # each result has its own finding's level (not the rule's default) and points at its own rule
    assert [(r["ruleId"], r["level"]) for r in run["results"]] == [(f.rule, SARIF_LEVEL[f.severity.value]) for f in findings]
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in run["results"])


def test_sarif_level_of_an_overridden_severity_from_a_detector(tmp_path):
    """R005 is an error, but a parameter-free module built in forward() is only a note: SARIF says so per result."""
    source = tmp_path / "net.py"
    source.write_text("from torch import nn\n\n\nclass Net(nn.Module):\n    def forward(self, x):\n"
                      "        x = nn.ReLU()(x)\n        return nn.Linear(4, 4)(x)\n")
    findings = lint_paths([source]).findings
    assert [(f.rule, f.severity, f.location.line) for f in findings] == [
        ("R005", Severity.INFO, 6), ("R005", Severity.ERROR, 7)]
    run = json.loads(render_sarif(findings, "0"))["runs"][0]
    assert [r["defaultConfiguration"]["level"] for r in run["tool"]["driver"]["rules"]] == ["error"]
    assert [(r["level"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in run["results"]] == [
        ("note", 6), ("error", 7)]
