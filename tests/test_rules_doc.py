"""docs/rules.md and docs/rules.json must be what scripts/gen_rules_doc.py renders from the registry (these tests
write no files)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fxlower.lowering._builtin_rules import BUILTIN_TYPES

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


def test_checked_in_rules_json_matches_a_fresh_render(gen):
    checked_in = (REPO / "docs" / "rules.json").read_text(encoding="utf-8")
    assert checked_in == gen.render_json(), "docs/rules.json is stale; run: python3 scripts/gen_rules_doc.py"


def test_render_is_deterministic_and_lists_every_builtin_rule(gen):
    text = gen.render()
    assert text == gen.render()
    assert "must not be edited by hand" in text
    assert "Book version: **2**" in text
    rows = [line for line in text.splitlines() if line.startswith("| [`")]
    assert len(rows) == len(BUILTIN_TYPES) == 116
    names = [row.split("`")[1] for row in rows]
    assert names == sorted(f"torch.nn.{c.__name__}" for c in BUILTIN_TYPES)
    assert "| [`torch.nn.BatchNorm2d`](#torchnnbatchnorm2d) | 1 | 2 | `forward(input)` |" in text
    assert "| [`torch.nn.ConvTranspose2d`](#torchnnconvtranspose2d) | 1 | 1 | " \
           "`forward(input, output_size=null)` |" in text
    section = text.split("## torch.nn.Conv2d\n", 1)[1].split("\n## ", 1)[0]
    assert "| `padding` | `int[2]\\|enum(same,valid)` | zero padding per spatial dimension (both sides), or " \
           "'same'/'valid' |" in section
    assert "| `bias` | `tensor\\|none` | learnable bias, None when the module has none |" in section
    encoder = text.split("## torch.nn.TransformerEncoder\n", 1)[1].split("\n## ", 1)[0]
    assert "Rule version 2, written for `_version` 1." in encoder
    assert "| `layers.*` | `module` |" in encoder and "| `norm` | `module\\|none` |" in encoder


def test_rules_json_holds_each_rules_declaration(gen):
    data = json.loads(gen.render_json())
    assert data["book_version"] == 2 and len(data["rules"]) == 116
    assert list(data["rules"]) == sorted(data["rules"])
    assert data["rules"]["torch.nn.Linear"] == {
        "version": 1, "module_version": 1,
        "attrs": [{"name": "in_features", "type": "int", "doc": "size of each input sample"},
                  {"name": "out_features", "type": "int", "doc": "size of each output sample"},
                  {"name": "weight", "type": "tensor", "doc": "weight, shape (out_features, in_features)"},
                  {"name": "bias", "type": "tensor|none", "doc": "learnable bias, None when the module has none"}],
        "forward": [{"name": "input", "kind": "positional_or_keyword", "default": None, "required": True}]}
    lstm = data["rules"]["torch.nn.LSTM"]
    assert lstm["forward"] == [{"name": "input", "kind": "positional_or_keyword", "default": None, "required": True},
                               {"name": "hx", "kind": "positional_or_keyword", "default": None, "required": False}]
    assert {"name": "weight_hr_l*", "type": "tensor",
            "doc": "hidden projection weights (LSTM with proj_size > 0) of layer * (forward direction)"} \
        in lstm["attrs"]
    assert data["rules"]["torch.nn.BatchNorm1d"]["module_version"] == 2


def test_check_mode_reports_missing_and_stale_docs(gen, monkeypatch, capsys):
    assert gen.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "docs/rules.md is up to date" in out and "docs/rules.json is up to date" in out

    monkeypatch.setattr(gen, "DOC", REPO / "docs" / "no-such-rules-file.md")
    assert gen.main(["--check"]) == 1
    assert "docs/rules.md is missing; run: python3 scripts/gen_rules_doc.py" in capsys.readouterr().err

    monkeypatch.undo()
    fresh = gen.render_json
    monkeypatch.setattr(gen, "render_json", lambda: fresh() + "\n")
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/rules.json is stale" in err and "docs/rules.md" not in err
