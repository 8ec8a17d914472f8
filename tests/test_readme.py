"""The README's pasted command outputs are what the commands print today."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
update_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme)

BLOCKS = update_readme.blocks((ROOT / "README.md").read_text())


def test_the_tour_has_commands():
    assert any(cmd.startswith("ssdaudit params examples/buggy_plain_list.py") for cmd, _ in BLOCKS)


@pytest.mark.parametrize("cmd, body", BLOCKS, ids=[c for c, _ in BLOCKS])
def test_readme_block_is_current(cmd, body):
    assert body == f"$ {cmd}\n{update_readme.run(cmd)}", "README is stale: run python docs/update_readme.py"


def test_readme_links_exist():
    import re

    text = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)\)", text):
        assert (ROOT / link).exists(), link


def test_rules_table_is_generated_from_the_registry():
    from ssdaudit.core.findings import RULES
    from ssdaudit.render.rule_docs import rules_table

    text = (ROOT / "README.md").read_text()
    body = text.split("<!-- rules -->\n", 1)[1].split("<!-- /rules -->", 1)[0]
    assert body == rules_table(), "README is stale: run python docs/update_readme.py"
    assert all(f"[{code}](docs/rules/{code}.md)" in body for code in RULES)
