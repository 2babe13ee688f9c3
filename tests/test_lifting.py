"""The lifting pass: records on every leaf call_module node, equal to the modules' live values."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

import fxlower
from fxlower import AttributeTypeError, LiftError, UnsupportedModuleError
from fxlower.lowering.book import rules, type_name, unregister_module
from fxlower.lowering.lifting import LoweringRecord
from models import MODELS, trace
from test_book import CTOR, NOT_NEEDED, VARIANTS


def _leaf_nodes(gm: fx.GraphModule):
    for path, g in fxlower.lowering.lifting.iter_graph_modules(gm):
        for node in g.graph.nodes:
            if node.op == "call_module" and not isinstance(g.get_submodule(node.target), fx.GraphModule):
                yield g, node


def _live(module: nn.Module, name: str):
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# Private attributes the built-in rules record (read by the modules' forward).
_PRIVATE = {nn.MultiheadAttention: {"_qkv_same_embed_dim"}}


def _expected_names(module: nn.Module) -> set[str]:
    """What a record of ``module`` must hold, read off the live module: every descendant module (bare containers
    aside) by path, and every public attribute, parameter and buffer (None entries too) of each module."""
    names = set()
    for prefix, sub in module.named_modules(remove_duplicate=False):
        at = f"{prefix}." if prefix else ""
        if prefix and not isinstance(sub, nn.ModuleList):
            names.add(prefix)
        if isinstance(sub, nn.ModuleList):
            continue
        keys = [k for k in vars(sub) if not k.startswith("_") and k != "training"
                and k not in NOT_NEEDED.get(type(sub), ())]
        keys += list(sub._parameters) + list(sub._buffers) + sorted(_PRIVATE.get(type(sub), ()))
        names.update(at + k for k in keys)
    return names


def _assert_equal_to_live(value, live):
    """A lifted value equals the live attribute read directly: the same tensor or function object, the class
    of a child module (torch.nn.Linear for MultiheadAttention's NonDynamicallyQuantizableLinear), tuples for
    lists and torch.Size, and an equal int or float (an int may be widened to float)."""
    if isinstance(live, torch.Tensor):
        assert value is live
    elif isinstance(live, nn.Module):
        assert value is (nn.Linear if type(live) is NonDynamicallyQuantizableLinear else type(live))
    elif isinstance(live, (types.FunctionType, types.BuiltinFunctionType)):
        assert value is live
    elif isinstance(live, (list, tuple)):
        assert type(value) is tuple and len(value) == len(live)
        for v, lv in zip(value, live):
            _assert_equal_to_live(v, lv)
    elif type(live) is int and type(value) is float:
        assert value == float(live)
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
        assert isinstance(rec, LoweringRecord) and rec.supported
        assert rec.module_type == f"torch.nn.{type(module).__name__}"
        assert rec.version >= 1 and rec.module_version == type(module)._version
        assert set(rec.attrs) == _expected_names(module)
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


def _lift_leaf(leaf: nn.Module) -> LoweringRecord:
    gm = fx.GraphModule(_Wrap(leaf), _LeafTracer().trace(_Wrap(leaf)))
    fxlower.lift(gm)
    (node,) = gm.graph.find_nodes(op="call_module")
    return node.meta["lowering"]


@pytest.mark.parametrize("make", list(CTOR.values()) + list(VARIANTS.values()),
                         ids=[type_name(c) for c in CTOR] + list(VARIANTS))
def test_every_rule_of_the_book_lifts_a_traced_leaf(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leaf = make()
    rec = _lift_leaf(leaf)
    assert rec.module_type == f"torch.nn.{type(leaf).__name__}"
    assert set(rec.attrs) == _expected_names(leaf)
    for attr, value in rec.attrs.items():
        _assert_equal_to_live(value, _live(leaf, attr))


def test_lifted_values_are_typed_objects():
    rec = _lift_leaf(nn.TransformerEncoderLayer(8, 2, 16))
    assert rec.attrs["activation"] is F.relu  # the function itself, not its name
    assert rec.attrs["self_attn"] is nn.MultiheadAttention and rec.attrs["self_attn.out_proj"] is nn.Linear
    assert rec.attrs["norm1.normalized_shape"] == (8,) and type(rec.attrs["norm1.normalized_shape"]) is tuple
    rec = _lift_leaf(nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU()))
    assert rec.attrs["activation"] is nn.GELU and rec.attrs["activation.approximate"] == "none"
    # an int hyperparameter declared float is widened
    assert rec.attrs["self_attn.dropout"] == 0.1
    rec = _lift_leaf(nn.LPPool2d(2, 3))
    assert rec.attrs["norm_type"] == 2.0 and type(rec.attrs["norm_type"]) is float
    assert rec.attrs["kernel_size"] == 3 and type(rec.attrs["kernel_size"]) is int  # int|int[2]: stays an int
    rec = _lift_leaf(nn.CrossMapLRN2d(3, k=1))
    assert rec.attrs["k"] == 1.0 and type(rec.attrs["k"]) is float
    rec = _lift_leaf(nn.Unflatten(1, torch.Size([2, 2])))
    assert rec.attrs["unflattened_size"] == (2, 2) and type(rec.attrs["unflattened_size"]) is tuple
    rec = _lift_leaf(nn.Upsample(size=[4, 6]))
    assert rec.attrs["size"] == (4, 6) and type(rec.attrs["size"]) is tuple
    rec = _lift_leaf(nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False))
    assert rec.attrs["layers.1"] is nn.TransformerEncoderLayer and "layers" not in rec.attrs
    assert rec.attrs["norm"] is None


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
    assert '@fxlower.register_module(attrs={"weight": "tensor", "eps": "float", ...}, version=1)' in msg
    assert "strict=False" in msg
    assert set(info.value.unsupported) == {"test_lifting.UserLeaf", "test_lifting.OtherLeaf"}
    assert all("lowering" not in n.meta for n in gm.graph.nodes)  # strict failure changes nothing


def test_strict_false_records_unsupported_nodes_and_lifts_the_rest():
    gm = fxlower.lift(_user_gm(), strict=False)
    recs = {n.name: n.meta["lowering"] for n in gm.graph.find_nodes(op="call_module")}
    assert recs["lin"].supported and recs["lin"].attrs["out_features"] == 4
    assert not recs["a"].supported and recs["a"].version == 0 and dict(recs["a"].attrs) == {}
    assert recs["a"].unsupported == "test_lifting.UserLeaf has no lowering rule"


def test_a_registered_user_leaf_lifts():
    fxlower.register_module(UserLeaf, attrs={"scale": "tensor", "offset": "float"}, version=3)
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
    fxlower.register_module(OtherLeaf, attrs={"gain": "float"})
    try:
        model = _UserModel()
        fxlower.register_module(UserLeaf, attrs={"scale": "tensor"})
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

    fxlower.register_module(Odd, attrs={"table": "int"})
    try:
        root = nn.Sequential(Odd())
        with pytest.raises(LiftError, match=r"attribute 'table' is a builtins.dict"):
            fxlower.lift(fx.GraphModule(root, T().trace(root)))
    finally:
        unregister_module(Odd)


def test_lift_rejects_a_plain_module():
    with pytest.raises(TypeError, match="GraphModule"):
        fxlower.lift(nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------ typed attributes

class Holder(nn.Module):
    """A leaf holding one attribute ``v`` of any value."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x):
        return x


def _lift_holder(type_text: str, value):
    fxlower.register_module(Holder, attrs=[("v", type_text, "the value under test")], replace=True)
    try:
        return _lift_leaf(Holder(value))
    finally:
        unregister_module(Holder)


# One wrong value per type kind: (declared type, value held, how the message shows it).
WRONG = [
    ("tensor", 3, "the int 3"),
    ("int", 2.5, "the float 2.5"),
    ("int", True, "the bool True"),
    ("float", "x", "the str 'x'"),
    ("float", True, "the bool True"),
    ("bool", 1, "the int 1"),
    ("str", 5, "the int 5"),
    ("none", 0, "the int 0"),
    ("function", "torch.relu", "the str 'torch.relu'"),
    ("module", torch.ones(1), "a tensor"),
    ("dtype", "float32", "the str 'float32'"),
    ("device", "cpu", "the str 'cpu'"),
    ("enum(same,valid)", "full", "the str 'full'"),
    ("int[2]", (1, 2, 3), "the tuple (1, 2, 3)"),
    ("int[]", (1, "a"), "the tuple (1, 'a')"),
    ("float[2]", (1.5, "x"), "the tuple (1.5, 'x')"),
    ("bool[2]", (True, 1), "the tuple (True, 1)"),
    ("str[1]", ("a", 1), "the tuple ('a', 1)"),
    ("(int|none)[2]", (1, 2.5), "the tuple (1, 2.5)"),
    ("tensor|none", 1.0, "the float 1.0"),
]


@pytest.mark.parametrize("type_text, value, shown", WRONG, ids=[f"{t}-{v!r}" for t, v, _ in WRONG])
def test_a_value_not_of_its_declared_type_raises_attribute_type_error(type_text, value, shown):
    with pytest.raises(AttributeTypeError) as info:
        _lift_holder(type_text, value)
    err = info.value
    assert isinstance(err, LiftError)
    assert (err.node, err.module_type, err.attr, err.expected) == ("leaf", "test_lifting.Holder", "v", type_text)
    assert err.found is value or err.found == value
    assert str(err) == (f"node 'leaf' (test_lifting.Holder) attribute 'v': test_lifting.Holder declares it "
                        f"{type_text}, found {shown}; fix the module's value or the rule's declared type")


RIGHT = [
    ("tensor", torch.ones(2)),
    ("int", 3), ("float", 2.5), ("bool", False), ("str", "torch.relu"), ("none", None),
    ("function", torch.relu), ("function", F.gelu),
    ("dtype", torch.float16), ("device", torch.device("cpu")),
    ("enum(same,valid)", "valid"), ("int[2]", (1, 2)), ("int[]", ()), ("float[2]", (0.5, 1.5)),
    ("bool[2]", (True, False)), ("str[1]", ("a",)), ("(int|none)[2]", (None, 3)),
    ("int|int[2]", 4), ("int|int[2]", (4, 5)),
]


@pytest.mark.parametrize("type_text, value", RIGHT, ids=[f"{t}-{v!r}" for t, v in RIGHT])
def test_a_value_of_its_declared_type_lifts_as_itself(type_text, value):
    rec = _lift_holder(type_text, value)
    assert rec.attrs["v"] is value or (type(rec.attrs["v"]) is type(value) and rec.attrs["v"] == value)


class ModeLeaf(nn.Module):
    def __init__(self, mode, act):
        super().__init__()
        self.mode = mode
        self.act = act

    def forward(self, x):
        return self.act(x)


def test_a_str_declared_str_stays_a_str_and_a_function_declared_function_stays_the_function():
    fxlower.register_module(ModeLeaf, attrs={"mode": "str", "act": "function"})
    try:
        rec = _lift_leaf(ModeLeaf("torch.relu", torch.tanh))
    finally:
        unregister_module(ModeLeaf)
    assert rec.attrs["mode"] == "torch.relu" and type(rec.attrs["mode"]) is str
    assert rec.attrs["act"] is torch.tanh


@pytest.mark.parametrize("type_text, value, expected", [
    ("float", 2, 2.0), ("float|none", 0, 0.0), ("float[2]", (1, 2), (1.0, 2.0)), ("float[]", [1, 2.5], (1.0, 2.5)),
    ("int|float", 2, 2), ("float[2]|int[2]", (1, 2), (1, 2)),
], ids=["float", "float-or-none", "float-pair", "float-list", "int-or-float", "int-pair-alternative"])
def test_an_int_declared_float_is_widened(type_text, value, expected):
    got = _lift_holder(type_text, value).attrs["v"]
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, tuple):
        assert [type(v) for v in got] == [type(v) for v in expected]


def test_lists_and_sizes_lift_as_tuples():
    assert _lift_holder("int[]", [1, 2]).attrs["v"] == (1, 2)
    got = _lift_holder("int[3]", torch.Size([1, 2, 3])).attrs["v"]
    assert got == (1, 2, 3) and type(got) is tuple


def test_a_module_attribute_lifts_as_its_rule_class_and_records_the_child():
    rec = _lift_holder("module", NonDynamicallyQuantizableLinear(2, 3))
    assert rec.attrs["v"] is nn.Linear
    assert rec.attrs["v.in_features"] == 2 and rec.attrs["v.out_features"] == 3


def test_a_mistyped_child_attribute_names_the_child_module_type():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False)
    enc.layers[1].norm2.eps = "tiny"
    with pytest.raises(AttributeTypeError) as info:
        _lift_leaf(enc)
    err = info.value
    assert (err.node, err.module_type, err.attr, err.expected, err.found) == (
        "leaf", "torch.nn.LayerNorm", "layers.1.norm2.eps", "float", "tiny")
    assert "node 'leaf' (torch.nn.TransformerEncoder) attribute 'layers.1.norm2.eps': torch.nn.LayerNorm " \
           "declares it float, found the str 'tiny'" in str(err)


# ------------------------------------------------------------------------------------------------ compat

def test_compat_works_by_changing_one_import():
    from fxlower.lowering.compat import lift_lowering_attrs_to_nodes  # was torch.fx.passes.param_fetch

    gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.AdaptiveAvgPool1d(2)))
    lift_lowering_attrs_to_nodes(gm)
    conv, flatten, pool = gm.graph.find_nodes(op="call_module")
    assert conv.attrs_for_lowering["name"] == "torch.nn.modules.conv.Conv2d"
    assert conv.attrs_for_lowering["weight"] is gm.get_submodule("0").weight
    assert conv.attrs_for_lowering["output_padding"] == (0, 0)  # the seed dropped it
    assert flatten.attrs_for_lowering["start_dim"] == 1  # the seed stopped at Flatten
    assert pool.attrs_for_lowering["output_size"] == 2  # raw values, as the seed stored them


def test_compat_module_fetch_book_has_the_seed_shape():
    from fxlower.lowering.compat import default_matching, module_fetch_book

    version, attrs, match = module_fetch_book[nn.BatchNorm2d]
    assert version == 2 and match is default_matching
    assert attrs == ["num_features", "eps", "momentum", "affine", "track_running_stats", "weight", "bias",
                     "running_mean", "running_var", "num_batches_tracked"]
    assert nn.Conv2d in module_fetch_book and nn.MSELoss not in module_fetch_book
    assert len(module_fetch_book) == len(rules())


def test_compat_unknown_module_raises_a_runtime_error_without_sending_users_to_a_person():
    from fxlower.lowering.compat import CompatUnsupportedModuleError, extract_attrs_for_lowering

    with pytest.raises(RuntimeError) as info:
        extract_attrs_for_lowering(OtherLeaf())
    assert isinstance(info.value, CompatUnsupportedModuleError)
    assert isinstance(info.value, UnsupportedModuleError)
    assert "register_module(OtherLeaf" in str(info.value) and "@" not in str(info.value).split("register")[0]


def test_module_declarations_cover_record_types_and_child_module_types():
    root = nn.Sequential(nn.Linear(8, 8),
                         nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU()), 2,
                                               enable_nested_tensor=False),
                         UserLeaf())
    gm = fxlower.lift(fx.symbolic_trace(root), strict=False)
    records = [n.meta["lowering"] for n in gm.graph.find_nodes(op="call_module")]
    table = fxlower.lowering.lifting.module_declarations(records)
    assert list(table) == ["torch.nn.Dropout", "torch.nn.GELU", "torch.nn.LayerNorm", "torch.nn.Linear",
                           "torch.nn.MultiheadAttention", "torch.nn.TransformerEncoder",
                           "torch.nn.TransformerEncoderLayer"]  # not the unsupported UserLeaf
    assert table["torch.nn.Linear"] == fxlower.lowering.book.rule_named("torch.nn.Linear").declaration()
    assert table["torch.nn.TransformerEncoder"].version == 2
    assert [a.name for a in table["torch.nn.GELU"].attrs] == ["approximate"]
