"""No document points at a file the repository does not have: relative links in the
Markdown files, and every repository path they write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "bench" / "RESULTS.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
TOP = ("docs", "tests", "bench", "sapi", "tenantfpm", "debian", "packaging", "examples",
       "vagrant", ".ci")
TOPS = "|".join(re.escape(t) for t in TOP)
PATH = re.compile(rf"(?<![\w/.-])((?:{TOPS})/[\w./-]*\w)")  # anywhere, not only in links
MADE = ("tenantfpm/libexec/", "sapi/build/", "dist/")  # what a build makes, not in git


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_a_document_names_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for target, _ in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (doc.parent / target).exists():
            missing.append(target)
    for path in PATH.findall(text):
        if path.startswith(MADE) or "*" in path:
            continue
        if not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"{doc.relative_to(REPO)} names what does not exist: {missing}"
