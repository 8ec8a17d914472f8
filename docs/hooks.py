"""MkDocs hook: the site's home page is the README (one source), its links rewritten for the site."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPO = "https://github.com/ssdaudit/ssdaudit/blob/main/"


def readme_for_site() -> str:
    """README.md with links into docs/ made relative to the site and links to other repository files absolute."""
    text = (ROOT / "README.md").read_text()

    def link(m: re.Match[str]) -> str:
        target = m.group(2)
        if target.startswith(("http://", "https://", "#")):
            return m.group(0)
        if target.startswith("docs/"):
            return f"{m.group(1)}({target[len('docs/'):]})"
        return f"{m.group(1)}({REPO}{target})"

    return re.sub(r"(\]|\]\s?)\(([^)\s]+)\)", link, text)


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    if page.file.src_uri == "index.md":
        return readme_for_site()
    return markdown
