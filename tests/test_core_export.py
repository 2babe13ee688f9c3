"""Format 1.2, the core view, export side: what ``fxlower.export(..., core=True)`` and ``export(ExportedProgram)``
write, read back with plain msgpack and safetensors (the loader of the core view is tested elsewhere).

Expected values are written by hand for small graphs, or taken from torch.export's own graph (node names,
targets, nn_module_stack) for the zoo models. Tests that load the core view back are at the end, marked
``needs_coreload``: they run once fxlower.load supports ``to_graph_module(view="core")``.
"""

from __future__ import annotations

import hashlib
import pathlib
import warnings

import msgpack
import pytest
import sympy
import torch
import torch.fx as fx
import torch.nn as nn
from safetensors import safe_open
from torch.export import Dim
from torch.utils._sympy.functions import FloorDiv, Max, Min, PythonMod

import fxlower
from fxlower import ExportError
from fxlower.format.symbols import UnprintableExpr, print_expr
from models import MODELS, trace

warnings.filterwarnings("ignore", category=FutureWarning)


def _manifest(path) -> dict:
    return msgpack.unpackb((pathlib.Path(path) / "manifest.msgpack").read_bytes())


def _tensor(path, name: str) -> torch.Tensor:
    for f in ("golden.safetensors", "weights.safetensors"):
        p = pathlib.Path(path) / f
        if p.exists():
            with safe_open(str(p), framework="pt") as sf:
                if name in sf.keys():
                    return sf.get_tensor(name)
    raise KeyError(name)


def _key(man: dict, name: str) -> str:
    return next(t["key"] for t in man["tensors"] if t["name"] == name)


def _core_nodes(man: dict, graph: int = 0) -> list[dict]:
    return man["core"]["graphs"][graph]["nodes"]


# ------------------------------------------------------------------------------------------------ a small CNN

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


def _node(n):
    return {"t": "node", "v": n}


def _ints(*v):
    return {"t": "list", "v": list(v)}


def _arg(name, type_, *, kwarg_only=False, default=None, required=True, mutates=False):
    return {"name": name, "type": type_, "kwarg_only": kwarg_only, "default": default, "required": required,
            "mutates": mutates}


def _ret(type_):
    return _arg("", type_)


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    gm = fx.symbolic_trace(model)
    x = torch.randn(1, 3, 4, 4)
    path = tmp_path_factory.mktemp("cnn") / "a.fxl"
    fxlower.export(gm, path, (x,), core=True, golden="nodes")
    return model, x, path


def test_small_cnn_core_nodes_targets_args_and_origins(small_cnn):
    _, _, path = small_cnn
    man = _manifest(path)
    assert man["format_version"] == [1, 3]
    got = [(n["name"], n["op"], n["target"], n["args"], n["origin"]) for n in _core_nodes(man)]
    link = lambda n: {"graph": 0, "node": n}  # noqa: E731
    assert got == [
        ("p_conv_weight", "placeholder", "p_conv_weight", [], None),
        ("p_conv_bias", "placeholder", "p_conv_bias", [], None),
        ("p_fc_weight", "placeholder", "p_fc_weight", [], None),
        ("p_fc_bias", "placeholder", "p_fc_bias", [], None),
        ("x", "placeholder", "x", [], None),
        ("convolution", "call_function", "aten.convolution.default",
         [_node("x"), _node("p_conv_weight"), _node("p_conv_bias"), _ints(1, 1), _ints(1, 1), _ints(1, 1), False,
          _ints(0, 0), 1], link("conv")),
        ("relu", "call_function", "aten.relu.default", [_node("convolution")], link("act")),
        ("max_pool2d_with_indices", "call_function", "aten.max_pool2d_with_indices.default",
         [_node("relu"), _ints(2, 2), _ints(2, 2)], link("pool")),
        ("getitem", "call_function", "operator.getitem", [_node("max_pool2d_with_indices"), 0], link("pool")),
        ("view", "call_function", "aten.view.default", [_node("getitem"), _ints(1, 16)], None),  # torch.flatten
        ("permute", "call_function", "aten.permute.default", [_node("p_fc_weight"), _ints(1, 0)], link("fc")),
        ("addmm", "call_function", "aten.addmm.default", [_node("p_fc_bias"), _node("view"), _node("permute")],
         link("fc")),
        ("output", "output", "output", [{"t": "tuple", "v": [_node("addmm")]}], None),
    ]
    nodes = {n["name"]: n for n in _core_nodes(man)}
    assert nodes["max_pool2d_with_indices"]["meta"] == {"t": "tuple", "v": [
        {"t": "tensor", "dtype": "F32", "shape": [1, 4, 2, 2]}, {"t": "tensor", "dtype": "I64", "shape": [1, 4, 2, 2]}]}
    assert nodes["addmm"]["users"] == ["output"] and nodes["addmm"]["inputs"] == ["p_fc_bias", "view", "permute"]
    assert all(n["lowering"] is None and n["overload"] is None for n in nodes.values())
    # the module view's node names the links point at
    assert [n["name"] for n in man["graphs"][0]["nodes"]] == ["x", "conv", "act", "pool", "flatten", "fc", "output"]


def test_small_cnn_inputs_outputs_and_shared_tensor_table(small_cnn):
    model, _, path = small_cnn
    man = _manifest(path)
    core = man["core"]
    assert core["inputs"] == [
        {"name": "p_conv_weight", "kind": "parameter", "target": "conv.weight"},
        {"name": "p_conv_bias", "kind": "parameter", "target": "conv.bias"},
        {"name": "p_fc_weight", "kind": "parameter", "target": "fc.weight"},
        {"name": "p_fc_bias", "kind": "parameter", "target": "fc.bias"},
        {"name": "x", "kind": "user_input", "target": "x"},
    ]
    assert core["outputs"] == [{"name": "addmm", "kind": "user_output", "target": ""}]
    assert core["symbols"] == {}
    weights = sorted(t["name"] for t in man["tensors"] if t["file"] == "weights.safetensors")
    assert weights == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]  # one entry each, shared by both views
    assert torch.equal(_tensor(path, "fc.weight"), model.fc.weight.detach())


def test_small_cnn_op_schemas(small_cnn):
    man = _manifest(small_cnn[2])
    ops = man["core"]["ops"]
    assert sorted(ops) == ["aten.addmm.default", "aten.convolution.default", "aten.max_pool2d_with_indices.default",
                           "aten.permute.default", "aten.relu.default", "aten.view.default", "operator.getitem"]
    # aten::addmm(Tensor self, Tensor mat1, Tensor mat2, *, Scalar beta=1, Scalar alpha=1) -> Tensor
    assert ops["aten.addmm.default"] == {"name": "aten::addmm", "overload": "default", "arguments": [
        _arg("self", "Tensor"), _arg("mat1", "Tensor"), _arg("mat2", "Tensor"),
        _arg("beta", "Scalar", kwarg_only=True, default=1, required=False),
        _arg("alpha", "Scalar", kwarg_only=True, default=1, required=False)], "returns": [_ret("Tensor")]}
    # aten::convolution(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] padding,
    #   SymInt[] dilation, bool transposed, SymInt[] output_padding, SymInt groups) -> Tensor
    assert ops["aten.convolution.default"] == {"name": "aten::convolution", "overload": "default", "arguments": [
        _arg("input", "Tensor"), _arg("weight", "Tensor"), _arg("bias", "Tensor?"), _arg("stride", "SymInt[]"),
        _arg("padding", "SymInt[]"), _arg("dilation", "SymInt[]"), _arg("transposed", "bool"),
        _arg("output_padding", "SymInt[]"), _arg("groups", "SymInt")], "returns": [_ret("Tensor")]}
    # aten::max_pool2d_with_indices(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0,
    #   int[2] dilation=1, bool ceil_mode=False) -> (Tensor, Tensor)
    assert ops["aten.max_pool2d_with_indices.default"]["arguments"] == [
        _arg("self", "Tensor"), _arg("kernel_size", "int[2]"),
        _arg("stride", "int[2]", default=_ints(), required=False),
        _arg("padding", "int[2]", default=_ints(0, 0), required=False),
        _arg("dilation", "int[2]", default=_ints(1, 1), required=False),
        _arg("ceil_mode", "bool", default=False, required=False)]
    assert ops["aten.max_pool2d_with_indices.default"]["returns"] == [_ret("Tensor"), _ret("Tensor")]
    assert ops["operator.getitem"] == {"name": "operator::getitem", "overload": "",
                                       "arguments": [_arg("a", "Any"), _arg("b", "Any")], "returns": [_ret("Any")]}


def test_small_cnn_golden_shared_and_core_nodes(small_cnn):
    model, x, path = small_cnn
    man = _manifest(path)
    golden = man["golden"]
    assert golden["mode"] == "nodes"
    assert sorted(golden["core_nodes"]) == ["addmm", "convolution", "getitem", "max_pool2d_with_indices",
                                            "permute", "relu", "view"]
    assert golden["core_nodes"]["max_pool2d_with_indices"] == {"t": "tuple", "v": [
        {"t": "tensor", "v": "golden/core/max_pool2d_with_indices/0"},
        {"t": "tensor", "v": "golden/core/max_pool2d_with_indices/1"}]}
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
        pooled, idx = torch.nn.functional.max_pool2d(conv.relu(), 2, return_indices=True)
        out = model(x)
    assert torch.equal(_tensor(path, _key(man, "golden/core/convolution/0")), conv)
    assert torch.equal(_tensor(path, _key(man, "golden/core/max_pool2d_with_indices/1")), idx)
    assert torch.allclose(_tensor(path, _key(man, "golden/core/addmm/0")), out, rtol=1e-6, atol=1e-6)
    # inputs and outputs stored once, as in 1.1
    assert golden["inputs"] == [{"t": "tensor", "v": "golden/inputs/0/0"}]
    assert torch.equal(_tensor(path, _key(man, "golden/inputs/0/0")), x)


def test_digest_covers_the_core_view_as_a_fourth_element(small_cnn):
    man = _manifest(small_cnn[2])
    weights = [t for t in man["tensors"] if t["file"] == "weights.safetensors"]
    pack = lambda o: msgpack.packb(o, use_bin_type=True)  # noqa: E731
    four = hashlib.sha256(pack([man["graphs"], weights, man["signature"], man["core"]])).hexdigest()
    assert man["digest"] == "sha256:" + four


def test_without_core_no_core_view_and_the_1_1_digest(tmp_path):
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 2)))
    fxlower.export(gm, tmp_path / "a", (torch.randn(1, 4),))
    man = _manifest(tmp_path / "a")
    assert man["core"] is None
    weights = [t for t in man["tensors"] if t["file"] == "weights.safetensors"]
    three = hashlib.sha256(msgpack.packb([man["graphs"], weights, man["signature"]], use_bin_type=True))
    assert man["digest"] == "sha256:" + three.hexdigest()


def test_core_export_is_byte_identical_when_repeated(tmp_path):
    files = []
    for name in ("a", "b"):
        torch.manual_seed(0)
        model = SmallCNN().eval()
        fxlower.export(model, tmp_path / name, (torch.ones(2, 3, 4, 4),), core=True, golden="nodes",
                       dynamic_shapes=({0: Dim("batch", min=1, max=8)},))
        files.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert sorted(files[0]) == ["golden.safetensors", "manifest.msgpack", "weights.safetensors"]
    assert files[0] == files[1]


# ------------------------------------------------------------------------------------------------ links, zoo

def _expected_links(man: dict, ep: torch.export.ExportedProgram) -> dict[str, dict | None]:
    """From torch.export's nn_module_stack: the innermost entry naming a call_module target of the module view;
    the call index from the stack key's '@k' suffix (torch.export numbers repeated calls so)."""
    calls: dict[str, list[tuple[int, str]]] = {}
    for gi, g in enumerate(man["graphs"]):
        for n in g["nodes"]:
            if n["op"] == "call_module":
                calls.setdefault(f"{g['name']}.{n['target']}" if g["name"] else n["target"], []).append(
                    (gi, n["name"]))
    picked = {}
    for n in ep.graph.nodes:
        for key, (path, _) in reversed(list((n.meta.get("nn_module_stack") or {}).items())):
            if path in calls:
                k = int(key.rpartition("@")[2]) if "@" in key else 0
                picked[n.name] = (path, k)
                break
    counts: dict[str, set[int]] = {}
    for path, k in picked.values():
        counts.setdefault(path, set()).add(k)
    out: dict[str, dict | None] = {n.name: None for n in ep.graph.nodes}
    for name, (path, k) in picked.items():
        if counts[path] == set(range(len(calls[path]))):
            gi, node = calls[path][k]
            out[name] = {"graph": gi, "node": node}
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_core_origin_links_follow_nn_module_stack(tmp_path, name):
    case = MODELS[name]()
    gm = trace(case)
    kwargs = case.kwargs or None
    fxlower.export(gm, tmp_path / "a", case.inputs, example_kwargs=kwargs, core=True)
    man = _manifest(tmp_path / "a")
    gm.eval()
    ep = torch.export.export(gm, case.inputs, kwargs=kwargs).run_decompositions()
    expected = _expected_links(man, ep)
    got = {n["name"]: n["origin"] for n in _core_nodes(man)}
    assert list(got) == [n.name for n in ep.graph.nodes]
    assert got == expected
    # not vacuous: every model's leaf-module calls link somewhere
    assert sum(v is not None for v in got.values()) > 0
    # every user input binds to the module view's signature input at its position
    users = [c["target"] for c in man["core"]["inputs"] if c["kind"] == "user_input"]
    assert users == man["signature"]["inputs"]


def test_repeated_module_calls_link_to_their_own_call_module_node(tmp_path):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.lin(x).relu())

    fxlower.export(Twice(), tmp_path / "a", (torch.randn(2, 3),), core=True)
    man = _manifest(tmp_path / "a")
    assert [n["name"] for n in man["graphs"][0]["nodes"] if n["op"] == "call_module"] == ["lin", "lin_1"]
    got = {n["name"]: (n["origin"] or {}).get("node") for n in _core_nodes(man) if n["op"] == "call_function"}
    assert got == {"permute": "lin", "addmm": "lin", "relu": None, "permute_1": "lin_1", "addmm_1": "lin_1"}


# ------------------------------------------------------------------------------------------------ dynamic shapes

class Batch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        y = self.fc(x)
        return torch.cat([y, y]).view(-1, 3), x.shape[0] * 2


def test_dynamic_batch_symbol_and_symbolic_shapes(tmp_path):
    fxlower.export(Batch().eval(), tmp_path / "a", (torch.randn(5, 4),), core=True,
                   dynamic_shapes=({0: Dim("batch", min=2, max=50)},))
    man = _manifest(tmp_path / "a")
    core = man["core"]
    (sym,) = core["symbols"]
    assert sym.startswith("s") and sym[1:].isdigit()
    # the inputs: fc.weight, fc.bias, then x (index 2), whose dim 0 defines the symbol
    assert [c["name"] for c in core["inputs"]] == ["p_fc_weight", "p_fc_bias", "x"]
    assert core["symbols"] == {sym: {"min": 2, "max": 50, "input": 2, "dim": 0}}
    metas = {n["name"]: n["meta"] for n in _core_nodes(man)}
    assert metas["x"] == {"t": "tensor", "dtype": "F32", "shape": [sym, 4]}
    assert metas["addmm"] == {"t": "tensor", "dtype": "F32", "shape": [sym, 6]}
    assert metas["cat"] == {"t": "tensor", "dtype": "F32", "shape": [f"2*{sym}", 6]}
    assert metas["view"] == {"t": "tensor", "dtype": "F32", "shape": [f"4*{sym}", 3]}
    # the size query and the arithmetic on it: SymInt-valued nodes have int metadata, and the Python operator
    nodes = {n["name"]: n for n in _core_nodes(man)}
    sizes = [n for n in nodes.values() if n["target"] == "aten.sym_size.int"]
    assert [(n["args"], n["meta"]) for n in sizes] == [([_node("x"), 0], {"t": "int"})]
    (mul,) = [n for n in nodes.values() if n["target"] == "operator.mul"]
    assert mul["args"] == [_node(sizes[0]["name"]), 2] and mul["meta"] == {"t": "int"}
    assert core["ops"]["operator.mul"] == {"name": "operator::mul", "overload": "", "arguments": [
        _arg("a", "Scalar"), _arg("b", "Scalar")], "returns": [_ret("Scalar")]}
    assert core["outputs"] == [{"name": "view", "kind": "user_output", "target": ""},
                               {"name": mul["name"], "kind": "user_output", "target": ""}]


def test_unbounded_dim_has_nil_max(tmp_path):
    fxlower.export(Batch().eval(), tmp_path / "a", (torch.randn(5, 4),), core=True,
                   dynamic_shapes=({0: Dim("batch")},))
    (entry,) = _manifest(tmp_path / "a")["core"]["symbols"].values()
    assert entry["max"] is None and entry["input"] == 2 and entry["dim"] == 0


def test_data_dependent_size_is_refused_naming_the_node(tmp_path):
    class NonZero(nn.Module):
        def forward(self, x):
            return x.nonzero()

    with pytest.raises(ExportError) as e:
        fxlower.export(NonZero(), tmp_path / "a", (torch.tensor([1.0, 0.0, 2.0]),), core=True)
    assert "node 'nonzero'" in str(e.value) and "u0" in str(e.value)
    assert not (tmp_path / "a").exists()


def test_expression_printer_grammar():
    s0, s1 = sympy.Symbol("s0", integer=True, positive=True), sympy.Symbol("s1", integer=True, positive=True)
    assert print_expr(s0) == "s0"
    assert print_expr(2 * s0) == "2*s0"
    assert print_expr(s0 - 1) == "s0-1"
    assert print_expr(s0 * s1 + 3) == "s0*s1+3"
    assert print_expr(FloorDiv(s0 + 1, 2)) == "(s0+1)//2"
    assert print_expr(PythonMod(s0, 3)) == "s0%3"
    assert print_expr(Max(s0, s1)) == "max(s0,s1)"
    assert print_expr(Min(s0, 4)) == "min(4,s0)"
    assert print_expr(-s0) == "-s0"
    assert print_expr(s0 ** 2) == "s0*s0"
    assert print_expr(2 * (s0 + s1)) == "2*s0+2*s1"  # sympy distributes the integer
    with pytest.raises(UnprintableExpr, match="u0"):
        print_expr(sympy.Symbol("u0", integer=True))
    with pytest.raises(UnprintableExpr):
        print_expr(s0 / 3)


# ------------------------------------------------------------------------------------------------ control flow

class CondLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.cond(x.sum() > 0, lambda v: self.lin(v).sin(), lambda v: v.cos(), (x,))
        _, z = torch._higher_order_ops.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 2),
                                                  (torch.tensor(0), y))
        return z


def test_cond_and_while_loop_export_with_nested_graphs(tmp_path):
    x = torch.randn(2, 4)
    ep = torch.export.export(CondLoop().eval(), (x,))
    fxlower.export(ep, tmp_path / "a", golden=True)
    man = _manifest(tmp_path / "a")
    with torch.no_grad():
        assert torch.equal(_tensor(tmp_path / "a", _key(man, "golden/outputs/0")), ep.module()(x))
    core = man["core"]
    assert [g["name"] for g in core["graphs"]] == ["", "true_graph_0", "false_graph_0", "while_loop_cond_graph_0",
                                                   "while_loop_body_graph_0"]
    root = {n["name"]: n for n in core["graphs"][0]["nodes"]}
    # subgraphs are graph Values in the control-flow node's arguments; torch.export's get_attr nodes are not written
    assert [n["op"] for n in root.values() if n["op"] not in ("placeholder", "call_function", "output")] == []
    assert root["cond"]["target"] == "higher_order.cond"
    assert root["cond"]["args"] == [_node("gt"), {"t": "graph", "v": 1}, {"t": "graph", "v": 2},
                                    {"t": "tuple", "v": [_node("x"), _node("p_lin_bias"), _node("p_lin_weight")]}]
    assert root["cond"]["inputs"] == ["gt", "x", "p_lin_bias", "p_lin_weight"]
    assert root["while_loop"]["target"] == "higher_order.while_loop"
    assert root["while_loop"]["args"] == [{"t": "graph", "v": 3}, {"t": "graph", "v": 4},
                                          {"t": "tuple", "v": [_node("clone"), _node("getitem")]},
                                          {"t": "tuple", "v": []}]
    assert [(n["name"], n["op"], n["target"]) for n in core["graphs"][2]["nodes"]] == [
        ("x", "placeholder", "x"), ("p_lin_bias", "placeholder", "p_lin_bias"),
        ("p_lin_weight", "placeholder", "p_lin_weight"), ("cos", "call_function", "aten.cos.default"),
        ("output", "output", "output")]
    assert [(n["op"], n["target"]) for n in core["graphs"][4]["nodes"]] == [
        ("placeholder", "arg0_1"), ("placeholder", "arg1_1"), ("call_function", "aten.add.Tensor"),
        ("call_function", "aten.mul.Tensor"), ("output", "output")]
    assert {"higher_order.cond", "higher_order.while_loop", "aten.sin.default", "aten.lt.Scalar"} <= set(core["ops"])
    assert [a["type"] for a in core["ops"]["higher_order.cond"]["arguments"]] == ["Tensor", "Graph", "Graph",
                                                                                  "Any[]"]
    # the lifted loop counter is a tensor constant of the shared table
    assert {"name": "c_lifted_tensor_0", "kind": "constant", "target": "lifted_tensor_0"} in core["inputs"]
    entry = next(t for t in man["tensors"] if t["name"] == "lifted_tensor_0")
    assert (entry["kind"], entry["dtype"], entry["shape"]) == ("constant", "I64", [])


# ------------------------------------------------------------------------------------------------ state

class Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(1))
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        self.count.add_(1)
        return self.fc(x) + torch.tensor([10.0, 20.0])


def test_lifted_constant_and_mutated_buffer(tmp_path):
    torch.manual_seed(0)
    model = Stateful().eval()
    ep = torch.export.export(model, (torch.ones(1, 2),))
    fxlower.export(ep, tmp_path / "a")
    man = _manifest(tmp_path / "a")
    core = man["core"]
    assert core["inputs"] == [
        {"name": "p_fc_weight", "kind": "parameter", "target": "fc.weight"},
        {"name": "p_fc_bias", "kind": "parameter", "target": "fc.bias"},
        {"name": "b_count", "kind": "buffer", "target": "count"},
        {"name": "c_lifted_tensor_0", "kind": "constant", "target": "lifted_tensor_0"},
        {"name": "x", "kind": "user_input", "target": "x"}]
    nodes = {n["name"]: n for n in _core_nodes(man)}
    assert core["outputs"][0] == {"name": "add", "kind": "buffer_mutation", "target": "count"}
    assert nodes["add"]["args"] == [_node("b_count"), 1] and nodes["add"]["target"] == "aten.add.Tensor"
    assert [o["kind"] for o in core["outputs"]] == ["buffer_mutation", "user_output"]
    kinds = {t["name"]: t["kind"] for t in man["tensors"]}
    assert kinds == {"count": "buffer", "fc.bias": "parameter", "fc.weight": "parameter",
                     "lifted_tensor_0": "constant"}
    assert torch.equal(_tensor(tmp_path / "a", "lifted_tensor_0"), torch.tensor([10.0, 20.0]))


# ------------------------------------------------------------------------------------------------ an ExportedProgram

def test_exported_program_alone_core_view_only(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 4, 4)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: Dim("n", min=1, max=16)},))
    s = fxlower.export(ep, tmp_path / "a", golden=True)  # the program's own example inputs
    man = _manifest(tmp_path / "a")
    assert man["graphs"] == [] and (s.graphs, s.nodes) == (0, 0)
    assert man["modules"] == {} and man["functions"] == {} and man["methods"] == {}
    assert man["signature"] == {"inputs": ["x"], "output": _node("addmm")}
    assert [c for c in man["core"]["inputs"] if c["kind"] == "user_input"] == [
        {"name": "x", "kind": "user_input", "target": "x"}]
    assert "aten.linear.default" not in man["core"]["ops"]  # decomposed to Core ATen
    out = _tensor(tmp_path / "a", _key(man, "golden/outputs/0"))
    with torch.no_grad():
        assert torch.equal(out, ep.module()(x))
    assert torch.equal(_tensor(tmp_path / "a", _key(man, "golden/inputs/0/0")), x)


def test_exported_program_with_kwargs_and_tuple_output(tmp_path):
    class KW(nn.Module):
        def forward(self, x, *, scale):
            return x * scale, (x + 1,)

    x, scale = torch.randn(2), torch.tensor(3.0)
    ep = torch.export.export(KW(), (x,), kwargs={"scale": scale})
    fxlower.export(ep, tmp_path / "a", golden=True)
    man = _manifest(tmp_path / "a")
    assert man["signature"] == {"inputs": ["x", "scale"], "output": {"t": "tuple", "v": [
        _node("mul"), {"t": "tuple", "v": [_node("add")]}]}}
    assert torch.equal(_tensor(tmp_path / "a", _key(man, "golden/outputs/0")), x * scale)
    assert torch.equal(_tensor(tmp_path / "a", _key(man, "golden/inputs/1/0")), scale)


def test_core_with_example_kwargs_from_a_graph_module(tmp_path):
    class KW(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x, bias=None):
            return self.fc(x) + bias

    x, b = torch.randn(1, 2), torch.randn(2)
    fxlower.export(KW().eval(), tmp_path / "a", (x,), example_kwargs={"bias": b}, core=True, golden=True)
    man = _manifest(tmp_path / "a")
    assert man["signature"]["inputs"] == ["x", "bias"]
    assert [c["target"] for c in man["core"]["inputs"] if c["kind"] == "user_input"] == ["x", "bias"]
    assert man["golden"]["inputs"] == [{"t": "tensor", "v": "golden/inputs/0/0"},
                                       {"t": "tensor", "v": "golden/inputs/1/0"}]


def test_constant_outputs_and_an_int_input(tmp_path):
    class C(nn.Module):
        def forward(self, x, n: int):
            return x + n, 3, None

    ep = torch.export.export(C(), (torch.ones(2), 5))
    fxlower.export(ep, tmp_path / "a", golden=True)
    man = _manifest(tmp_path / "a")
    assert man["signature"] == {"inputs": ["x", "n"], "output": {"t": "tuple", "v": [_node("add"), 3, None]}}
    assert man["core"]["outputs"] == [{"name": "add", "kind": "user_output", "target": ""},
                                      {"name": "", "kind": "user_output", "target": ""},
                                      {"name": "", "kind": "user_output", "target": ""}]
    assert man["golden"]["inputs"] == [{"t": "tensor", "v": "golden/inputs/0/0"}, 5]
    assert man["golden"]["outputs"] == {"t": "tuple", "v": [{"t": "tensor", "v": "golden/outputs/0"}, 3, None]}
    assert torch.equal(_tensor(tmp_path / "a", "golden/outputs/0"), torch.full((2,), 6.0))


def test_input_mutation_is_refused(tmp_path):
    class Mut(nn.Module):
        def forward(self, x):
            x.add_(1)
            return x * 2

    with pytest.raises(ExportError, match=r"output 'add' is a USER_INPUT_MUTATION, which the core view cannot "
                                          r"carry"):
        fxlower.export(Mut(), tmp_path / "a", (torch.ones(2),), core=True)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------ arguments

def test_argument_errors(tmp_path):
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="module= is for an ExportedProgram"):
        fxlower.export(gm, tmp_path / "a", (torch.randn(1, 2),), module=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dynamic_shapes needs core=True"):
        fxlower.export(gm, tmp_path / "a", (torch.randn(1, 2),), dynamic_shapes=({0: Dim("b")},))
    with pytest.raises(ValueError, match="core=True needs example_inputs"):
        fxlower.export(gm, tmp_path / "a", core=True)
    ep = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
    with pytest.raises(ValueError, match="an ExportedProgram has its dynamic shapes already"):
        fxlower.export(ep, tmp_path / "a", dynamic_shapes=({0: Dim("b")},))
    assert not (tmp_path / "a").exists()


def test_torch_export_failure_is_an_export_error(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            return x.numpy()

    with pytest.raises(ExportError, match="torch.export.export failed on"):
        fxlower.export(Bad(), tmp_path / "a", (torch.randn(2),), core=True)


# ------------------------------------------------------------------------------------------------ derived views
# These need fxlower.views.derive (another part of 1.2); they skip, saying so, until it is merged.

def _derive_available() -> bool:
    try:
        from fxlower.views.derive import derive_module_view  # noqa: F401
    except ImportError:
        return False
    return True


needs_derive = pytest.mark.skipif(not _derive_available(), reason="fxlower.views.derive is not merged in this branch")


@needs_derive
def test_exported_program_with_module_derives_the_module_view(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    ep = torch.export.export(model, (torch.randn(1, 3, 4, 4),))
    fxlower.export(ep, tmp_path / "a", module=model)
    man = _manifest(tmp_path / "a")
    assert [n["target"] for n in man["graphs"][0]["nodes"] if n["op"] == "call_module"] == ["conv", "act", "pool",
                                                                                             "fc"]
    targets = {n["name"]: n["target"] for n in man["graphs"][0]["nodes"]}
    got = {n["name"]: targets[n["origin"]["node"]] for n in _core_nodes(man) if n["origin"]}
    assert got["convolution"] == "conv" and got["relu"] == "act" and got["addmm"] == "fc"


@needs_derive
def test_an_untraceable_module_with_control_flow_asks_for_the_core_view_alone(tmp_path):
    with pytest.raises(Exception):
        fx.symbolic_trace(CondLoop())  # the premise: symbolic_trace cannot take it
    with pytest.raises(ExportError, match=r"control flow.*export the core view alone"):
        fxlower.export(CondLoop().eval(), tmp_path / "a", (torch.randn(2, 4),), core=True)
    assert not (tmp_path / "a").exists()


@needs_derive
@pytest.mark.parametrize("make", ["gpt2", "bert", "llama"])
def test_transformers_style_models_export_with_both_views(tmp_path, make):
    """Models written as transformers 5 writes them (keyword inputs, item assignment, dataclass outputs), which
    symbolic_trace cannot take, export from the plain nn.Module: the derived module view holds call_module nodes
    with lowering records for their layers (the hand-written list of tests/hf_models.py), both views rebuild and
    reproduce the golden outputs."""
    import hf_models
    case = getattr(hf_models, make)()
    with pytest.raises(Exception):
        fx.symbolic_trace(case.module)
    fxlower.export(case.module, tmp_path / "a", (), example_kwargs=case.kwargs, core=True, golden=True)
    man = _manifest(tmp_path / "a")
    root = man["graphs"][0]["nodes"]
    calls = [n["target"] for n in root if n["op"] == "call_module"]
    assert calls == list(case.leaf_calls)
    assert all(n["lowering"] is not None for n in root if n["op"] == "call_module")
    linked = {(n["origin"]["graph"], n["origin"]["node"]) for n in man["core"]["graphs"][0]["nodes"] if n["origin"]}
    assert {(0, n["name"]) for n in root if n["op"] == "call_module"} <= linked
    art = fxlower.load(tmp_path / "a", verify=True)
    inputs = art.golden_inputs()
    want = art.golden_outputs()
    for view in ("module", "core"):
        got = art.to_graph_module(view=view)(*inputs)
        got_leaves = [t for t in (got.values() if isinstance(got, dict) else got if isinstance(got, (tuple, list))
                                  else [got])]
        want_leaves = [t for t in (want.values() if isinstance(want, dict) else want
                                   if isinstance(want, (tuple, list)) else [want])]
        assert len(got_leaves) == len(want_leaves)
        for g, w in zip(got_leaves, want_leaves):
            assert torch.allclose(g, w, rtol=1e-5, atol=1e-6), view


# ------------------------------------------------------------------------------------------------ loading
# needs_coreload: enable once fxlower.load rebuilds the core view (to_graph_module(view="core")).

CORELOAD = True
needs_coreload = pytest.mark.skipif(not CORELOAD, reason="the core-view loader is not merged in this branch")


@needs_coreload
def test_core_view_rebuilds_bit_identical_to_the_exported_program(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 4, 4)
    ep = torch.export.export(model, (x,)).run_decompositions()
    fxlower.export(ep, tmp_path / "a")
    gm = fxlower.load(tmp_path / "a").to_graph_module(view="core")
    assert torch.equal(gm(x), ep.module()(x))


@needs_coreload
def test_control_flow_core_view_rebuilds(tmp_path):
    x = torch.randn(2, 4)
    model = CondLoop().eval()
    ep = torch.export.export(model, (x,)).run_decompositions()
    fxlower.export(ep, tmp_path / "a")
    gm = fxlower.load(tmp_path / "a").to_graph_module(view="core")
    assert torch.equal(gm(x), ep.module()(x))

