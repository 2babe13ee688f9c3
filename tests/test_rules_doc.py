"""docs/rules.md must be what scripts/gen_rules_doc.py renders from the registry (these tests write no files)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import fxlower.book
from fxlower._builtin_rules import BUILTIN_TYPES

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_rules_doc", REPO / "scripts" / "gen_rules_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_rules_doc_matches_a_fresh_render(gen):
    checked_in = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    assert checked_in == gen.render(), "docs/rules.md is stale; run: python3 scripts/gen_rules_doc.py"


def test_render_is_deterministic_and_lists_every_builtin_rule(gen):
    text = gen.render()
    assert text == gen.render()
    assert "must not be edited by hand" in text
    assert f"Book version: **{fxlower.book.BOOK_VERSION}**" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(BUILTIN_TYPES)
    names = [row.split("`")[1] for row in rows]
    assert names == sorted(fxlower.book.type_name(c) for c in BUILTIN_TYPES)
    assert "| `torch.nn.BatchNorm2d` | 1 | 2 | no | `num_features`, `eps`," in text
    encoder = next(row for row in rows if row.startswith("| `torch.nn.TransformerEncoder` |"))
    assert "| yes |" in encoder and "**Plus per instance:**" in encoder and "`layers.0`" in encoder


def test_check_mode_reports_missing_and_stale_docs(gen, monkeypatch, capsys):
    assert gen.main(["--check"]) == 0
    assert "docs/rules.md is up to date" in capsys.readouterr().out

    monkeypatch.setattr(gen, "DOC", REPO / "docs" / "no-such-rules-file.md")
    assert gen.main(["--check"]) == 1
    assert "docs/rules.md is missing; run: python3 scripts/gen_rules_doc.py" in capsys.readouterr().err

    monkeypatch.undo()
    fresh = gen.render
    monkeypatch.setattr(gen, "render", lambda: fresh() + "extra\n")
    assert gen.main(["--check"]) == 1
    assert "docs/rules.md is stale" in capsys.readouterr().err
