"""The lifting pass: records on every leaf call_module node, equal to the modules' live values."""

from __future__ import annotations

import types

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import fxlower
from fxlower import LiftError, UnsupportedModuleError
from fxlower.book import rule_for, rules, type_name, unregister_module
from fxlower.lifting import LoweringRecord
from models import MODELS, trace
from test_book import CTOR


def _leaf_nodes(gm: fx.GraphModule):
    for path, g in fxlower.lifting.iter_graph_modules(gm):
        for node in g.graph.nodes:
            if node.op == "call_module" and not isinstance(g.get_submodule(node.target), fx.GraphModule):
                yield g, node


def _live(module: nn.Module, name: str):
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _assert_equal_to_live(value, live):
    """A lifted value equals the live attribute: the same tensor object, or the plain form of the value."""
    if isinstance(live, torch.Tensor):
        assert value is live
    elif isinstance(live, (nn.ModuleList, nn.Sequential, nn.ModuleDict)):
        assert value == type_name(type(live))
    elif isinstance(live, nn.Module):
        assert value == rule_for(live).type_name
    elif isinstance(live, (types.FunctionType, types.BuiltinFunctionType)):
        assert value == fxlower.targets.function_name(live)
    elif isinstance(live, (list, tuple)):
        assert isinstance(value, tuple) and len(value) == len(live)
        for v, lv in zip(value, live):
            _assert_equal_to_live(v, lv)
    else:
        assert type(value) is type(live) and value == live


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_leaf_of_the_model_zoo_is_lifted_with_live_values(name):
    case = MODELS[name]()
    gm = fxlower.lift(trace(case))
    leaves = list(_leaf_nodes(gm))
    assert leaves, "the zoo model has no leaf module"
    for g, node in leaves:
        module = g.get_submodule(node.target)
        rec = node.meta["lowering"]
        rule = rule_for(module)
        assert isinstance(rec, LoweringRecord) and rec.supported
        assert (rec.module_type, rec.version, rec.module_version) == (rule.type_name, rule.version,
                                                                      type(module)._version)
        assert tuple(rec.attrs) == rule.attr_names(module)
        for attr, value in rec.attrs.items():
            _assert_equal_to_live(value, _live(module, attr))
    assert not hasattr(leaves[0][1], "attrs_for_lowering")  # results live in node.meta only


class _Wrap(nn.Module):
    def __init__(self, leaf: nn.Module):
        super().__init__()
        self.leaf = leaf

    def forward(self, x):
        return self.leaf(x)


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return qualname == "leaf" or super().is_leaf_module(m, qualname)


@pytest.mark.parametrize("cls", sorted(CTOR, key=type_name), ids=type_name)
def test_every_rule_of_the_book_lifts_a_traced_leaf(cls):
    leaf = CTOR[cls]()
    gm = fx.GraphModule(_Wrap(leaf), _LeafTracer().trace(_Wrap(leaf)))
    fxlower.lift(gm)
    (node,) = gm.graph.find_nodes(op="call_module")
    rec = node.meta["lowering"]
    assert rec.module_type == type_name(cls)
    assert tuple(rec.attrs) == rule_for(leaf).attr_names(leaf)
    for attr, value in rec.attrs.items():
        _assert_equal_to_live(value, _live(leaf, attr))


def test_every_book_rule_is_exercised_by_the_lifting_tests():
    assert {r.module_type for r in rules()} <= set(CTOR)


def test_records_are_read_only():
    gm = fxlower.lift(fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2))))
    rec = gm.graph.find_nodes(op="call_module")[0].meta["lowering"]
    with pytest.raises(TypeError):
        rec.attrs["in_features"] = 3
    with pytest.raises(AttributeError):
        rec.version = 2


def test_nested_graph_modules_are_lifted_recursively():
    case = MODELS["nested_graphmodule"]()
    gm = fxlower.lift(trace(case))
    inner = [n for g, n in _leaf_nodes(gm) if g is not gm]
    assert inner and all(n.meta["lowering"].supported for n in inner)


class UserLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((4,), 2.0))
        self.offset = 0.5

    def forward(self, x):
        return x * self.scale + self.offset


class OtherLeaf(nn.Module):
    def forward(self, x):
        return -x


class _UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = UserLeaf()
        self.b = UserLeaf()
        self.c = OtherLeaf()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.c(self.b(self.a(self.lin(x))))


class _UserTracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (UserLeaf, OtherLeaf)) or super().is_leaf_module(m, qualname)


def _user_gm() -> fx.GraphModule:
    model = _UserModel()
    return fx.GraphModule(model, _UserTracer().trace(model))


def test_unsupported_leaves_are_listed_in_one_error_with_their_nodes_and_the_fix():
    gm = _user_gm()
    with pytest.raises(UnsupportedModuleError) as info:
        fxlower.lift(gm)
    msg = str(info.value)
    assert msg.startswith("2 module type(s) in the graph have no usable lowering rule:")
    assert "test_lifting.UserLeaf: test_lifting.UserLeaf has no lowering rule; used by node 'a', node 'b'" in msg
    assert "test_lifting.OtherLeaf" in msg and "node 'c'" in msg
    assert "@fxlower.register_module(attrs=" in msg and "strict=False" in msg
    assert set(info.value.unsupported) == {"test_lifting.UserLeaf", "test_lifting.OtherLeaf"}
    assert all("lowering" not in n.meta for n in gm.graph.nodes)  # strict failure changes nothing


def test_strict_false_records_unsupported_nodes_and_lifts_the_rest():
    gm = fxlower.lift(_user_gm(), strict=False)
    recs = {n.name: n.meta["lowering"] for n in gm.graph.find_nodes(op="call_module")}
    assert recs["lin"].supported and recs["lin"].attrs["out_features"] == 4
    assert not recs["a"].supported and recs["a"].version == 0 and dict(recs["a"].attrs) == {}
    assert recs["a"].unsupported == "test_lifting.UserLeaf has no lowering rule"


def test_a_registered_user_leaf_lifts():
    fxlower.register_module(UserLeaf, attrs=["scale", "offset"], version=3)
    fxlower.register_module(OtherLeaf, attrs=[])
    try:
        model = _user_gm()
        gm = fxlower.lift(model)
        rec = gm.graph.find_nodes(op="call_module", target="a")[0].meta["lowering"]
        assert (rec.module_type, rec.version) == ("test_lifting.UserLeaf", 3)
        assert rec.attrs["scale"] is model.a.scale and rec.attrs["offset"] == 0.5
    finally:
        unregister_module(UserLeaf)
        unregister_module(OtherLeaf)


def test_a_rule_naming_a_missing_attribute_raises_lift_error_naming_node_and_attribute():
    fxlower.register_module(OtherLeaf, attrs=["gain"])
    try:
        model = _UserModel()
        fxlower.register_module(UserLeaf, attrs=["scale"])
        try:
            with pytest.raises(LiftError, match=r"node 'c' \(test_lifting.OtherLeaf\).*'gain'"):
                fxlower.lift(fx.GraphModule(model, _UserTracer().trace(model)))
        finally:
            unregister_module(UserLeaf)
    finally:
        unregister_module(OtherLeaf)


def test_a_value_without_plain_encoding_raises_lift_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = {1: 2}

        def forward(self, x):
            return x

    class T(fx.Tracer):
        def is_leaf_module(self, m, q):
            return isinstance(m, Odd) or super().is_leaf_module(m, q)

    fxlower.register_module(Odd, attrs=["table"])
    try:
        root = nn.Sequential(Odd())
        with pytest.raises(LiftError, match=r"attribute 'table' is a builtins.dict"):
            fxlower.lift(fx.GraphModule(root, T().trace(root)))
    finally:
        unregister_module(Odd)


def test_lift_rejects_a_plain_module():
    with pytest.raises(TypeError, match="GraphModule"):
        fxlower.lift(nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------ compat

def test_compat_works_by_changing_one_import():
    from fxlower.compat import lift_lowering_attrs_to_nodes  # was torch.fx.passes.param_fetch

    gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.AdaptiveAvgPool1d(2)))
    lift_lowering_attrs_to_nodes(gm)
    conv, flatten, pool = gm.graph.find_nodes(op="call_module")
    assert conv.attrs_for_lowering["name"] == "torch.nn.modules.conv.Conv2d"
    assert conv.attrs_for_lowering["weight"] is gm.get_submodule("0").weight
    assert conv.attrs_for_lowering["output_padding"] == (0, 0)  # the seed dropped it
    assert flatten.attrs_for_lowering["start_dim"] == 1  # the seed stopped at Flatten
    assert pool.attrs_for_lowering["output_size"] == 2  # raw values, as the seed stored them


def test_compat_module_fetch_book_has_the_seed_shape():
    from fxlower.compat import default_matching, module_fetch_book

    version, attrs, match = module_fetch_book[nn.BatchNorm2d]
    assert version == 2 and match is default_matching
    assert {"weight", "bias", "running_mean", "running_var", "eps", "momentum", "affine"} <= set(attrs)
    assert nn.Conv2d in module_fetch_book and nn.MSELoss not in module_fetch_book
    assert len(module_fetch_book) == len(rules())


def test_compat_unknown_module_raises_a_runtime_error_without_sending_users_to_a_person():
    from fxlower.compat import CompatUnsupportedModuleError, extract_attrs_for_lowering

    with pytest.raises(RuntimeError) as info:
        extract_attrs_for_lowering(OtherLeaf())
    assert isinstance(info.value, CompatUnsupportedModuleError)
    assert isinstance(info.value, UnsupportedModuleError)
    assert "register_module(OtherLeaf" in str(info.value) and "@" not in str(info.value).split("register")[0]
