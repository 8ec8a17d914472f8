"""The package layout holds: imports go one way between packages, and no module imports itself back.

Every import counts: at module level, inside functions (lazy imports, which exist only to defer torch), and
under ``TYPE_CHECKING``. The graph is read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ssdaudit"

# A package may import from packages of a lower rank only (and from itself). Why this order:
#   core          no torch: findings, the rule registry, errors, targets, atomic writes, the Report protocol
#   checkpoints   reading checkpoint formats, diff                      (core)
#   lint          static rules over source, no torch                    (core)
#   registration  probing a model: params counts a checkpoint target   (core, checkpoints)
#   training      watching a training loop; its probe builds targets   (core, registration)
#   gate          the CI gate runs lint, params and gradflow            (all of the above)
#   integrations  Lightning, Hugging Face, TensorBoard                  (training, registration)
#   render        draws every report, the gate's included               (everything below)
#   cli           commands, output formats, exit codes                  (everything)
RANK = {"core": 0, "checkpoints": 1, "lint": 1, "registration": 2, "training": 3, "gate": 4, "integrations": 4,
        "render": 5, "cli": 6}
# ssdlite_model is an ssdaudit user: the public API, the torch-free core, and the CLI helpers both CLIs share.
SSDLITE_ALLOWED = ("ssdaudit", "ssdaudit.core", "ssdaudit.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ssdaudit module that ``path`` imports, anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from ssdaudit.pkg import mod` names the submodule; `from ssdaudit.pkg import name`, the package
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else None


def test_every_package_has_a_rank():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(RANK), "a new package needs a place in RANK (and in the README's Architecture section)"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], f"modules outside the packages: {loose}"


def test_imports_go_down_the_layers():
    bad = []
    for module, targets in graph().items():
        src = package_of(module)
        for target in targets:
            dst = package_of(target)
            if src is None or dst is None or src == dst:
                continue
            if RANK[dst] >= RANK[src]:
                bad.append(f"{module} -> {target}")
    assert bad == [], "imports against the layering:\n" + "\n".join(sorted(bad))


def test_the_import_graph_has_no_cycles():
    g = graph()
    # Tarjan's strongly connected components; a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in g.get(v, ()):
                cycles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_core_and_lint_do_not_import_torch():
    """lint runs in the pre-commit hook's torch-free install: no torch anywhere. core is the torch-free base: no
    torch at import time (loading a model target imports torch when it runs, inside the function)."""
    heavy = ("torch", "torchvision", "numpy", "matplotlib", "typer", "timm", "transformers")
    bad = []
    for path in sorted((PACKAGE / "core").rglob("*.py")) + sorted((PACKAGE / "lint").rglob("*.py")):
        tree = ast.parse(path.read_text())
        nodes = ast.walk(tree) if path.parent.name == "lint" else _module_level(tree)
        for node in nodes:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{module_name(path)} imports {n}" for n in names if n.split(".")[0] in heavy]
    assert bad == []


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """The statements that run on import: the module body, descending into if/try blocks but not functions."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", []) + [
                s for h in getattr(node, "handlers", []) for s in h.body]
    return out


def test_ssdlite_model_uses_the_public_api_only():
    bad = []
    for path in (ROOT / "ssdlite_model").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssdaudit"):
                mod = node.module or ""
                if not (mod in SSDLITE_ALLOWED or mod.startswith("ssdaudit.core.")):
                    bad.append(f"{path.relative_to(ROOT)}: from {mod} import ...")
    assert bad == []


def test_the_public_api_is_complete_and_lazy():
    import subprocess
    import sys

    code = ("import sys, ssdaudit; assert 'torch' not in sys.modules, 'import ssdaudit imported torch'; "
            "missing = [n for n in ssdaudit.__all__ if not hasattr(ssdaudit, n)]; assert not missing, missing; "
            "print(len(ssdaudit.__all__))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    import ssdaudit

    required = {"find_unregistered", "audit_params", "audit_target", "check_roundtrip", "GradFlowMonitor",
                "diff_checkpoints", "open_checkpoint", "lint_paths", "run_check", "Finding", "Location", "Rule",
                "RULES", "Severity", "UserError", "UsageError", "LoadError", "ProbeError", "ConfigError"}
    assert required <= set(ssdaudit.__all__)
    assert (PACKAGE / "py.typed").is_file()


@pytest.mark.parametrize("name", sorted({"find_unregistered", "audit_params", "audit_target", "check_roundtrip",
                                         "diff_checkpoints", "open_checkpoint", "lint_paths", "run_check"}))
def test_public_functions_document_what_they_raise(name):
    import inspect

    import ssdaudit

    doc = inspect.getdoc(getattr(ssdaudit, name)) or ""
    assert len(doc) > 80, f"{name} has no real docstring"
    assert "Raise" in doc or "raise" in doc, f"{name}'s docstring does not say what it raises"


def test_one_version_source():
    import tomllib

    import ssdaudit

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ssdaudit.__version__"}
    assert ssdaudit.__version__.count(".") == 2
