"""Links between the README and docs/ lead somewhere: each linked file exists, and each #anchor is
a heading of that file (as GitHub makes anchors from headings)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_docs_resolves():
    broken = []
    for doc in DOCS:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md|)(?:#([^)\s]+))?\)", doc.read_text(encoding="utf-8")):
            path = doc if not target else (doc.parent / target).resolve()
            if not path.is_file():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and anchor not in anchors(path):
                broken.append(f"{doc.name}: {target}#{anchor}")
    assert broken == []
