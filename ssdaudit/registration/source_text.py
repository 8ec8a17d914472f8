"""Source-text heuristics for runtime findings: where ``self.<attr>`` is assigned in the owner's class (the
finding's file:line), and how the owner's ``forward`` reads an attribute when no forward pass ran."""

from __future__ import annotations

import inspect
import re

from torch import nn

from ssdaudit.registration.tracer import relative_path
from ssdaudit.registration.walk import MOVE_FUNCTIONS


def assignment_location(owner: nn.Module, attr: str) -> str | None:
    """file:line where ``self.<attr>`` is assigned in the owner's class (or its bases), also through
    ``setattr(self, f"name{i}", value)``, whose f-string is matched against the attribute's name."""
    pattern = re.compile(rf"self\.{re.escape(attr)}\s*(=|:|\.append|\.extend|\[)")
    for cls in type(owner).__mro__:
        if cls.__module__.startswith("torch.") or cls is object:
            continue
        try:
            lines, start = inspect.getsourcelines(cls)
            filename = inspect.getsourcefile(cls)
        except (OSError, TypeError):
            continue
        if filename is None:
            continue
        for offset, text in enumerate(lines):
            if pattern.search(text):
                return f"{relative_path(filename)}:{start + offset}"
        found = setattr_line(lines, attr)
        if found is not None:
            return f"{relative_path(filename)}:{start + found - 1}"
    return None


def setattr_line(lines: list[str], attr: str) -> int | None:
    """1-based line (within ``lines``) of ``setattr(self, NAME, ...)`` whose NAME (a string or an f-string) can be
    ``attr``."""
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"):
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value == attr:
                return node.lineno
            if isinstance(name, ast.JoinedStr):
                regex = "".join(re.escape(str(v.value)) if isinstance(v, ast.Constant) else ".+" for v in name.values)
                if re.fullmatch(regex, attr):
                    return node.lineno
    return None



def forward_use(owner: nn.Module, attr: str) -> str | None:
    """How the owner's ``forward`` source uses ``self.<attr>``: "unread", "moved" (every read goes through a move
    such as ``.to(x.device)`` or ``.type_as(x)``), "read", or None when the source cannot be read."""
    import ast
    import textwrap

    forward = type(owner).forward
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(forward)))
    except (OSError, TypeError, SyntaxError):
        return None
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == attr
             and isinstance(n.value, ast.Name) and n.value.id == "self" and isinstance(n.ctx, ast.Load)]
    if not reads:
        return "unread"
    for read in reads:
        moved = False
        node: ast.AST = read
        while isinstance(method := parents.get(node), ast.Attribute):  # self.x.detach().type_as(y).to(...): follow it
            if method.attr in MOVE_FUNCTIONS:
                moved = True
                break
            call = parents.get(method)
            node = call if isinstance(call, ast.Call) and call.func is method else method
        if not moved:
            return "read"
    return "moved"

