"""The attribute type grammar: parsing, checking lifted and decoded values, widening, name patterns and whole
records checked against declarations (what the loader reports as ``lowering.attr``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fxlower.format import attrtypes
from fxlower.format.attrtypes import RecordProblem, check, check_record, matches, parse, widen
from fxlower.lowering.book import rule_named
from fxlower.io.loading import TensorRef
from fxlower.format.schema import AttrDecl
from fxlower.format.values import FunctionRef, ModuleTypeRef


def test_parse_splits_alternatives():
    t = parse("int|int[2]|enum(same,valid)|(int|none)[3]|float[]|none")
    assert t.kinds == frozenset({"int", "none"})
    assert t.enums == (frozenset({"same", "valid"}),)
    assert t.tuples == ((frozenset({"int"}), 2), (frozenset({"int", "none"}), 3), (frozenset({"float"}), None))
    assert parse("module|none").has_module and not parse("int").has_module


@pytest.mark.parametrize("text, message", [
    ("", "a type is a non-empty string"),
    ("Int", "'Int' in the type 'Int' is not a type"),
    ("int|", "'' in the type 'int|' is not a type"),
    ("int[01]", "the count in 'int[01]'"),
    ("int[-1]", "the count in 'int[-1]'"),
    ("tensor[2]", "a tuple element is one of int, float, bool, str"),
    ("(int|tensor)[2]", "'tensor' in '(int|tensor)[2]' is not"),
    ("()[2]", "a tuple element is one of"),
    ("enum()", "'' in 'enum()' is not one"),
    ("enum(a-b)", "'a-b' in 'enum(a-b)' is not one"),
    ("enum(a,b", "unbalanced parentheses"),
    ("int[2][2]", "a tuple element is one of"),
    ("int |none", "'int ' in the type 'int |none' is not a type"),
])
def test_parse_rejects_what_the_grammar_does_not_hold(text, message):
    with pytest.raises(ValueError) as info:
        parse(text)
    assert message in str(info.value)


# (type, values of that type, values not of it). Lifted objects and decoded refs both.
CASES = [
    ("tensor", [torch.ones(1), nn.Parameter(torch.ones(1)), TensorRef("w")], [None, 1, "w", FunctionRef("a.b")]),
    ("int", [0, -3, 2**63 - 1], [True, 1.0, "1", None, (1,)]),
    ("float", [0.0, -1.5, float("inf")], [1, True, "1.0", None]),
    ("bool", [True, False], [0, 1, "true", None]),
    ("str", ["", "torch.relu"], [FunctionRef("torch.relu"), 1, None, ("a",)]),
    ("none", [None], [0, "", False, ()]),
    ("function", [F.relu, torch.relu, FunctionRef("torch.nn.functional.relu")],
     ["torch.relu", nn.ReLU, None, ModuleTypeRef("torch.nn.ReLU")]),
    ("module", [nn.Linear, ModuleTypeRef("torch.nn.Linear")],
     [nn.Linear(1, 1), "torch.nn.Linear", int, F.relu, None]),
    ("dtype", [torch.float32, torch.int8], ["F32", None]),
    ("device", [torch.device("cpu"), torch.device("cuda:1")], ["cpu", None]),
    ("enum(zeros,reflect)", ["zeros", "reflect"], ["circular", "", 0, None]),
    ("int[2]", [(1, 2), (0, -1)], [(1,), (1, 2, 3), [1, 2], (1, 2.0), (True, 1), 2]),
    ("int[]", [(), (1,), (1, 2, 3, 4)], [[1], (1, "a"), None]),
    ("float[2]", [(1.0, 2.5)], [(1, 2), (1.0,), (1.0, None)]),
    ("bool[1]", [(True,)], [(1,), (True, False)]),
    ("str[2]", [("a", "b")], [("a", 1), ("a",)]),
    ("(int|none)[2]", [(1, None), (None, None), (3, 4)], [(1.0, None), (None,), None]),
    ("int|int[2]|none", [3, (3, 4), None], [(3,), 3.0]),
    ("function|module", [F.gelu, nn.GELU, FunctionRef("torch.nn.functional.gelu"), ModuleTypeRef("torch.nn.GELU")],
     ["gelu", nn.GELU()]),
]


@pytest.mark.parametrize("text, good, bad", CASES, ids=[c[0] for c in CASES])
def test_check_accepts_exactly_the_values_of_the_type(text, good, bad):
    for value in good:
        assert check(text, value) is None, value
    for value in bad:
        message = check(text, value)
        assert message is not None and message.startswith(f"expected {text}, found "), value


def test_check_messages_show_the_value():
    assert check("int", "3") == "expected int, found the str '3'"
    assert check("tensor|none", 1.5) == "expected tensor|none, found the float 1.5"
    assert check("int[2]", (1, 2, 3)) == "expected int[2], found the tuple (1, 2, 3)"
    assert check("str", FunctionRef("torch.relu")) == "expected str, found the function torch.relu"
    assert check("function", nn.ReLU) == "expected function, found the module type torch.nn.ReLU"
    assert check("function", ModuleTypeRef("pkg.M")) == "expected function, found the module type pkg.M"
    assert check("module", nn.ReLU()) == "expected module, found a torch.nn.modules.activation.ReLU module instance"
    assert check("int", {1: 2}) == "expected int, found a builtins.dict ({1: 2})"
    assert check("float", None) == "expected float, found None"
    assert check("bool", torch.ones(1)) == "expected bool, found a tensor"


def test_widen_turns_ints_into_floats_only_where_an_int_is_not_accepted():
    assert widen("float", 2) == 2.0 and type(widen("float", 2)) is float
    assert type(widen("int|float", 2)) is int
    assert widen("float", True) is True  # a bool is not an int here
    assert widen("float[2]", (1, 2.5)) == (1.0, 2.5)
    assert widen("float[2]", (1, 2, 3)) == (1, 2, 3)  # wrong length: unchanged, check() reports it
    assert widen("float[]|int[2]", (1, 2)) == (1, 2)
    assert widen("str", 1) == 1


def test_name_patterns_stand_for_one_decimal_index():
    assert matches("layers.*", "layers.0") and matches("layers.*", "layers.17")
    assert not matches("layers.*", "layers.01") and not matches("layers.*", "layers.x")
    assert not matches("layers.*", "layers.0.norm") and not matches("layers.*", "layers")
    assert matches("weight_ih_l*", "weight_ih_l3") and not matches("weight_ih_l*", "weight_ih_l3_reverse")
    assert matches("weight_ih_l*_reverse", "weight_ih_l0_reverse")
    assert matches("a.b", "a.b") and not matches("a.b", "aXb")  # no regex leaks
    assert attrtypes.name_pattern("x.*").match("x.12").groups() == ("12",)


# Declarations as a manifest's ``modules`` table would hold them (a loader checks decoded records against these).
DECLS = {
    "pkg.Stack": [AttrDecl("depth", "int", ""), AttrDecl("blocks.*", "module", ""),
                  AttrDecl("head", "module|none", ""), AttrDecl("act", "function|module", "")],
    "pkg.Block": [AttrDecl("weight", "tensor", ""), AttrDecl("scale", "float", ""), AttrDecl("inner", "module", "")],
    "pkg.Inner": [AttrDecl("mode", "enum(a,b)", "")],
}


def _decls(name):
    return DECLS.get(name)


def test_a_decoded_record_with_nested_children_checks():
    attrs = {"depth": 2, "blocks.0": ModuleTypeRef("pkg.Block"), "blocks.0.weight": TensorRef("w0"),
             "blocks.0.scale": 1.0, "blocks.0.inner": ModuleTypeRef("pkg.Inner"), "blocks.0.inner.mode": "a",
             "blocks.1": ModuleTypeRef("pkg.Block"), "head": None, "act": FunctionRef("torch.relu")}
    assert check_record("pkg.Stack", attrs, _decls) is None
    found, problem = attrtypes.resolve_record("pkg.Stack", attrs, _decls)
    assert problem is None
    assert found["blocks.0.inner.mode"] == ("pkg.Inner", DECLS["pkg.Inner"][0])
    assert found["blocks.1"] == ("pkg.Stack", DECLS["pkg.Stack"][1])


@pytest.mark.parametrize("attrs, problem", [
    ({"depth": 1.0}, RecordProblem("depth", "pkg.Stack", "int", "expected int, found the float 1.0")),
    ({"width": 1}, RecordProblem("width", "pkg.Stack", "",
                                 "'width' is not an attribute pkg.Stack declares (nor one of a declared child "
                                 "module's)")),
    ({"blocks.x": ModuleTypeRef("pkg.Block")},
     RecordProblem("blocks.x", "pkg.Stack", "", "'blocks.x' is not an attribute pkg.Stack declares (nor one of a "
                                                "declared child module's)")),
    ({"blocks.0.scale": 1.0},  # the child's type is not given
     RecordProblem("blocks.0.scale", "pkg.Stack", "", "'blocks.0.scale' is not an attribute pkg.Stack declares "
                                                      "(nor one of a declared child module's)")),
    ({"depth": 1, "blocks.0": ModuleTypeRef("pkg.Block"), "blocks.0.scale": "big"},
     RecordProblem("blocks.0.scale", "pkg.Block", "float", "expected float, found the str 'big'")),
    ({"blocks.0": ModuleTypeRef("pkg.Block"), "blocks.0.inner": ModuleTypeRef("pkg.Inner"),
      "blocks.0.inner.mode": "c"},
     RecordProblem("blocks.0.inner.mode", "pkg.Inner", "enum(a,b)", "expected enum(a,b), found the str 'c'")),
    ({"head": ModuleTypeRef("pkg.Missing"), "head.x": 1},
     RecordProblem("head.x", "pkg.Missing", "", "the module type pkg.Missing has no declaration")),
    ({"depth": "2"}, RecordProblem("depth", "pkg.Stack", "int", "expected int, found the str '2'")),
    ({"act": "torch.relu"}, RecordProblem("act", "pkg.Stack", "function|module",
                                          "expected function|module, found the str 'torch.relu'")),
    ({"blocks.0": "pkg.Block"}, RecordProblem("blocks.0", "pkg.Stack", "module",
                                              "expected module, found the str 'pkg.Block'")),
], ids=["mistyped", "undeclared", "bad-index", "child-without-type", "child-mistyped", "grandchild-mistyped",
        "child-without-declaration", "int-as-str", "function-as-str", "module-as-str"])
def test_record_problems(attrs, problem):
    assert check_record("pkg.Stack", attrs, _decls) == problem


def test_a_record_of_an_undeclared_module_type():
    assert check_record("pkg.Nope", {"a": 1}, _decls) == RecordProblem(
        "a", "pkg.Nope", "", "the module type pkg.Nope has no declaration")


def test_lifted_builtin_records_check_against_the_book():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU()), 2,
                                norm=nn.LayerNorm(8), enable_nested_tensor=False)
    import fxlower.lowering.lifting as lifting  # noqa: F401  (the book's rules are registered by the package)
    from test_lifting import _lift_leaf

    rec = _lift_leaf(enc)

    def decls(name):
        rule = rule_named(name)
        return None if rule is None else rule.attrs

    assert check_record(rec.module_type, rec.attrs, decls) is None
    broken = dict(rec.attrs)
    broken["layers.0.self_attn.out_proj.bias"] = 0.5
    assert check_record(rec.module_type, broken, decls) == RecordProblem(
        "layers.0.self_attn.out_proj.bias", "torch.nn.Linear", "tensor|none",
        "expected tensor|none, found the float 0.5")
