"""docs/site-toml.md is what the config model says now (config/reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantfpm.config import reference

DOC = Path(__file__).resolve().parent.parent / "docs" / "site-toml.md"


def test_site_toml_reference_is_current():
    assert DOC.read_text() == reference.render(), (
        "docs/site-toml.md is stale: .venv/bin/python -m tenantfpm.config.reference "
        "> docs/site-toml.md")


def test_a_key_without_docs_is_an_error(monkeypatch):
    monkeypatch.delitem(reference.DOCS, "pm.max_children")
    with pytest.raises(KeyError, match=r"pm\.max_children"):
        reference.render()


def test_docs_for_a_key_the_model_lacks_is_an_error(monkeypatch):
    monkeypatch.setitem(reference.DOCS, "pm.max_childs", ("", "", ""))
    with pytest.raises(KeyError, match=r"pm\.max_childs"):
        reference.render()
