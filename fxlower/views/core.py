"""The core view (format 1.2): a ``torch.export.ExportedProgram`` in Core ATen, encoded as ``schema.CoreView``.

Encoding decisions (docs/format.md, "Core view"):

* ``CoreView.graphs[0]`` is the root graph; the graph modules of control-flow operators follow in pre-order
  (depth first, in node order; one entry per distinct submodule). Such a submodule is written as a ``graph`` Value
  (its index) in the arguments of the ``cond``/``while_loop`` node, and torch.export's ``get_attr`` node for it is
  not written. A nested graph's ``name``
  is the dotted path of its submodule from the root (``true_graph_0``, ``true_graph_0.false_graph_0``).
* ``call_function`` targets: an ATen operator as ``namespace.name.overload`` (``aten.add.Tensor``,
  ``aten.relu.default``); a control-flow operator as ``higher_order.cond`` / ``higher_order.while_loop``; or one
  of :data:`PYTHON_OPS` (``operator.getitem``, and ``operator.<op>`` arithmetic and comparisons on SymInts).
  Every target used has an entry in ``CoreView.ops``: ATen schemas from ``op._schema``; the others are
  written by hand here (types ``Any``, ``Graph``, ``Any[]``, ``SymInt``, ``SymBool``).
* Meta: tensors ``{"t": "tensor", "dtype": code, "shape": [int | expr]}``; a SymInt result ``{"t": "int"}``,
  a SymBool ``{"t": "bool"}``, a SymFloat ``{"t": "float"}`` (no "symint" meta kind).
* ``origin``: from each root node's ``nn_module_stack``: the innermost entry whose module path is the target of a
  ``call_module`` node of the module view; the k-th call of a module (torch.export's stack key ``name``,
  ``name@1``, ``name@2`` ... in order of first appearance) links to its k-th ``call_module`` node. A module whose
  number of calls differs from its number of call_module nodes is ambiguous: its nodes get no origin. Nodes of
  nested graphs get none.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from ..format.constants import CODE_OF_DTYPE
from ..errors import ExportError, FormatError
from ..format.names import check_identifier, check_name
from ..format.schema import CoreInput, CoreOutput, CoreView, Graph, Node, NodeLink, OpArg, OpSchema, Symbol
from ..format.symbols import SYMBOL_NAME, UnprintableExpr, print_expr
from ..format.values import GraphRef, encode

__all__ = ["PYTHON_OPS", "HIGHER_ORDER_OPS", "to_core", "op_name", "op_schema", "encode_core", "core_meta",
           "user_output_structure"]

_BINARY = ("add", "sub", "mul", "floordiv", "mod")
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def _arg(name: str, type_: str) -> OpArg:
    return OpArg(name=name, type=type_, kwarg_only=False, default=None, required=True, mutates=False)


def _ret(type_: str) -> OpArg:
    return OpArg(name="", type=type_, kwarg_only=False, default=None, required=True, mutates=False)


#: The Python callables a core graph may call, with their hand-written schemas (docs/format.md, the core view's
#: table of Python callables: the name is the target with '::' for its first '.', the overload "").
PYTHON_OPS: dict[Callable, tuple[str, OpSchema]] = {
    operator.getitem: ("operator.getitem", OpSchema("operator::getitem", "", [_arg("a", "Any"), _arg("b", "Any")],
                                                    [_ret("Any")])),
    operator.neg: ("operator.neg", OpSchema("operator::neg", "", [_arg("a", "Scalar")], [_ret("Scalar")])),
    **{getattr(operator, n): (f"operator.{n}", OpSchema(f"operator::{n}", "", [_arg("a", "Scalar"),
                                                                                _arg("b", "Scalar")],
                                                        [_ret("Scalar")])) for n in _BINARY + _COMPARE},
}

#: Control-flow operators: qualified name -> hand-written schema.
HIGHER_ORDER_OPS: dict[str, OpSchema] = {
    "higher_order.cond": OpSchema("higher_order::cond", "", [
        _arg("pred", "Tensor"), _arg("true_fn", "Graph"), _arg("false_fn", "Graph"), _arg("operands", "Any[]")],
        [_ret("Any[]")]),
    "higher_order.while_loop": OpSchema("higher_order::while_loop", "", [
        _arg("cond_fn", "Graph"), _arg("body_fn", "Graph"), _arg("carried_inputs", "Any[]"),
        _arg("additional_inputs", "Any[]")], [_ret("Any[]")]),
}


def _is_core(ep: torch.export.ExportedProgram) -> bool:
    """Whether every ATen operator of ``ep`` is Core ATen (or a size query torch.export leaves)."""
    for gm in _graph_modules(ep.graph_module):
        for n in gm.graph.nodes:
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload):
                if torch.Tag.core not in n.target.tags and not n.target.name().startswith("aten::sym_"):
                    return False
    return True


def _graph_modules(gm: fx.GraphModule) -> list[fx.GraphModule]:
    out = [gm]
    for _, sub in gm.named_children():
        if isinstance(sub, fx.GraphModule):
            out.extend(_graph_modules(sub))
    return out


def to_core(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``ep.run_decompositions()`` (Core ATen) unless ``ep`` is already in Core ATen."""
    return ep if _is_core(ep) else ep.run_decompositions()


def op_name(target: Any, where: str) -> str:
    """The qualified name a core graph writes for a call_function target."""
    if isinstance(target, torch._ops.OpOverload):
        ns, _, name = target._schema.name.partition("::")
        return f"{ns}.{name}.{target._overloadname}"
    if isinstance(target, torch._ops.HigherOrderOperator):
        name = f"higher_order.{target.name()}"
        if name in HIGHER_ORDER_OPS:
            return name
    elif target in PYTHON_OPS:
        return PYTHON_OPS[target][0]
    shown = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    raise ExportError(
        f"{where} calls {shown}, which the core view cannot carry: its call_function targets are ATen operator "
        f"overloads, higher_order.cond / higher_order.while_loop and "
        f"{', '.join(sorted(n for n, _ in PYTHON_OPS.values()))}. Rewrite the model so that torch.export "
        f"produces none of it, or export without core=True")


def op_schema(target: Any, name: str, where: str) -> OpSchema:
    """The schema of a core call_function target (``name`` from :func:`op_name`)."""
    if name in HIGHER_ORDER_OPS:
        return HIGHER_ORDER_OPS[name]
    if not isinstance(target, torch._ops.OpOverload):
        return PYTHON_OPS[target][1]
    import torchgen.model as tm  # the schema grammar's own parser: types as the schema prints them

    schema = target._schema
    try:
        parsed = tm.FunctionSchema.parse(str(schema))
    except Exception as e:
        raise ExportError(f"{where}: the schema of {name} ({schema}) cannot be parsed to be written: "
                          f"{type(e).__name__}: {e}") from e
    flat = list(parsed.arguments.flat_all)
    live = list(schema.arguments)
    if [a.name for a in flat] != [a.name for a in live]:
        raise ExportError(f"{where}: the schema of {name} has arguments {[a.name for a in live]} but prints as "
                          f"{[a.name for a in flat]}; this torch version's schema cannot be written")
    args = []
    for p, a in zip(flat, live):
        has_default = a.has_default_value()
        default = encode(a.default_value, where=f"{where}: default of argument '{a.name}' of {name}") \
            if has_default else None
        args.append(OpArg(name=a.name, type=str(p.type), kwarg_only=bool(a.kwarg_only), default=default,
                          required=not has_default,
                          mutates=bool(p.annotation is not None and p.annotation.is_write)))
    rets = [OpArg(name=r.name or "", type=str(r.type), kwarg_only=False, default=None, required=True,
                  mutates=bool(r.annotation is not None and r.annotation.is_write)) for r in parsed.returns]
    ns_name = schema.name
    return OpSchema(name=ns_name, overload=target._overloadname, arguments=args, returns=rets)


# ------------------------------------------------------------------------------------------------ metadata

def core_meta(value: Any, where: str, symbols: set[str] | None, depth: int = 0) -> dict | None:
    """Meta of a core node from its ``meta['val']`` (fake tensors, SymInts); shapes may hold expressions.

    Raises:
        ExportError: a size expression outside the grammar, or one using a symbol that no input dimension
            defines (when ``symbols`` is given).
    """
    if isinstance(value, torch.Tensor):
        code = CODE_OF_DTYPE.get(value.dtype)
        if code is None:
            return {"t": "other"}
        return {"t": "tensor", "dtype": code, "shape": [_dim(d, where, symbols) for d in value.shape]}
    if isinstance(value, torch.SymInt):
        return {"t": "int"}
    if isinstance(value, torch.SymBool):
        return {"t": "bool"}
    if isinstance(value, torch.SymFloat):
        return {"t": "float"}
    if isinstance(value, (list, tuple)) and depth < 32:
        return {"t": "list" if isinstance(value, list) else "tuple",
                "v": [core_meta(v, where, symbols, depth + 1) for v in value]}
    for klass, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (type(None), "none")):
        if type(value) is klass:
            return {"t": name}
    return {"t": "other"}


def _dim(d: Any, where: str, symbols: set[str] | None) -> int | str:
    if isinstance(d, int):
        return int(d)
    expr = d.node.expr
    if expr.is_Integer:
        return int(expr)
    try:
        text = print_expr(expr)
    except UnprintableExpr as e:
        raise ExportError(f"{where}: the size expression {expr} cannot be written in the core view's grammar "
                          f"({e}); mark the dimension static, or export without dynamic_shapes") from None
    if symbols is not None:
        unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in symbols)
        if unknown:
            raise ExportError(f"{where}: the size {text} uses the symbol(s) {', '.join(unknown)}, which no input "
                              f"dimension defines; give such dimensions a Dim of their own in dynamic_shapes")
    return text


# ------------------------------------------------------------------------------------------------ encoding

def user_output_structure(ep: torch.export.ExportedProgram, leaves: list[Any]) -> Any:
    """The user outputs ``leaves`` (flat, in order) in the structure the model returns."""
    spec = ep.module_call_graph[0].signature.out_spec if ep.module_call_graph else None
    if spec is None:
        return tuple(leaves)
    return torch.utils._pytree.tree_unflatten(list(leaves), spec)


def _module_calls(graphs: list[tuple[str, fx.GraphModule]]) -> dict[str, list[tuple[int, str]]]:
    """Module path -> [(graph index, call_module node name)] in node order, for the module view's graphs."""
    out: dict[str, list[tuple[int, str]]] = {}
    for gi, (path, g) in enumerate(graphs):
        for n in g.graph.nodes:
            if n.op == "call_module":
                full = f"{path}.{n.target}" if path else n.target
                out.setdefault(full, []).append((gi, n.name))
    return out


def origin_links(root: fx.Graph, module_graphs: list[tuple[str, fx.GraphModule]]) -> dict[str, NodeLink]:
    """Core root node name -> the module-view call_module node it came from (see the module docstring)."""
    calls = _module_calls(module_graphs)
    chosen: dict[str, tuple[str, str]] = {}  # node -> (module path, stack key)
    keys: dict[str, list[str]] = {}  # module path -> distinct stack keys in order of first appearance
    for n in root.nodes:
        stack = n.meta.get("nn_module_stack") or {}
        for key, entry in reversed(list(stack.items())):
            path = entry[0] if isinstance(entry, tuple) else None
            if isinstance(path, str) and path in calls:
                chosen[n.name] = (path, key)
                seen = keys.setdefault(path, [])
                if key not in seen:
                    seen.append(key)
                break
    links = {}
    for name, (path, key) in chosen.items():
        if len(keys[path]) != len(calls[path]):
            continue  # calls and call_module nodes do not pair up one to one: no guess
        gi, node = calls[path][keys[path].index(key)]
        links[name] = NodeLink(graph=gi, node=node)
    return links


def encode_core(ep: torch.export.ExportedProgram, *, tensor_name: Callable[[torch.Tensor], str],
                signature_inputs: list[str] | None, links: dict[str, NodeLink]) -> CoreView:
    """The CoreView of ``ep`` (already Core ATen).

    Args:
        tensor_name: names a tensor of the table (for tensor constants in arguments, which torch.export lifts).
        signature_inputs: the module view's ``signature.inputs`` (the k-th user input binds to the k-th); None
            for a core-only artifact (a user input binds to its own placeholder name).
        links: core root node name -> origin.
    """
    sig = ep.graph_signature
    IK, OK = torch.export.graph_signature.InputKind, torch.export.graph_signature.OutputKind
    kinds = {IK.USER_INPUT: "user_input", IK.PARAMETER: "parameter", IK.BUFFER: "buffer",
             IK.CONSTANT_TENSOR: "constant"}
    inputs: list[CoreInput] = []
    user = 0
    for spec in sig.input_specs:
        kind = kinds.get(spec.kind)
        if kind is None:
            raise ExportError(f"the exported program's input '{spec.arg.name}' is a {spec.kind.name}, which the "
                              f"core view cannot carry (it holds user inputs, parameters, buffers and tensor "
                              f"constants)")
        if kind == "user_input":
            if signature_inputs is None:
                target = spec.arg.name
            elif user < len(signature_inputs):
                target = signature_inputs[user]
            else:
                raise ExportError(f"the exported program has more user inputs than the module view's "
                                  f"{len(signature_inputs)} inputs ({', '.join(signature_inputs)}); pass every "
                                  f"input as its own tensor in example_inputs / example_kwargs")
            user += 1
        else:
            target = spec.target
        inputs.append(CoreInput(name=spec.arg.name, kind=kind, target=target))
    if signature_inputs is not None and user != len(signature_inputs):
        raise ExportError(f"the exported program has {user} user inputs but the module view has "
                          f"{len(signature_inputs)} ({', '.join(signature_inputs)}); pass every input of forward "
                          f"in example_inputs / example_kwargs")
    outputs: list[CoreOutput] = []
    for spec in sig.output_specs:
        constant = isinstance(spec.arg, torch.export.graph_signature.ConstantArgument)
        name = "" if constant else spec.arg.name
        if spec.kind == OK.USER_OUTPUT:
            outputs.append(CoreOutput(name=name, kind="user_output", target=""))
        elif spec.kind == OK.BUFFER_MUTATION:
            outputs.append(CoreOutput(name=name, kind="buffer_mutation", target=spec.target))
        else:
            raise ExportError(f"the exported program's output '{name}' is a {spec.kind.name}, which the core view "
                              f"cannot carry (user outputs and buffer mutations only); a model that mutates its "
                              f"inputs or parameters in place cannot be exported with core=True")

    gms: list[tuple[str, fx.GraphModule]] = []
    index: dict[int, int] = {}

    def visit(path: str, gm: fx.GraphModule) -> None:
        index[id(gm)] = len(gms)
        gms.append((path, gm))
        for n in gm.graph.nodes:
            if n.op == "get_attr":
                sub = _attr(gm, n.target)
                if isinstance(sub, fx.GraphModule) and id(sub) not in index:
                    visit(f"{path}.{n.target}" if path else n.target, sub)

    visit("", ep.graph_module)
    symbols = _symbols(ep, inputs)
    names = set(symbols)
    ops: dict[str, OpSchema] = {}
    graphs = [_encode_graph(path, gm, index, ops, names, tensor_name, links if path == "" else {})
              for path, gm in gms]
    return CoreView(graphs=graphs, inputs=inputs, outputs=outputs, ops={k: ops[k] for k in sorted(ops)},
                    symbols=symbols)


def _attr(gm: fx.GraphModule, dotted: str) -> Any:
    obj: Any = gm
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _symbols(ep: torch.export.ExportedProgram, inputs: list[CoreInput]) -> dict[str, Symbol]:
    """Every symbol of ``ep.range_constraints`` that a user input's dimension is exactly, with its range."""
    from torch.utils._sympy.numbers import int_oo
    import sympy

    nodes = {n.name: n for n in ep.graph.find_nodes(op="placeholder")}
    defined: dict[str, tuple[int, int]] = {}
    for k, ci in enumerate(inputs):
        if ci.kind != "user_input":
            continue
        val = nodes[ci.name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for d, size in enumerate(val.shape):
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                defined.setdefault(str(size.node.expr), (k, d))
    out = {}
    for sym, vr in sorted(ep.range_constraints.items(), key=lambda kv: str(kv[0])):
        name = str(sym)
        if name not in defined:
            continue  # derived from others (an expression), or not a size of an input
        if not SYMBOL_NAME.match(name):
            raise ExportError(f"the shape symbol '{name}' is not named s<digits>; the core view cannot carry it")
        lo, hi = vr.lower, vr.upper
        if lo in (-int_oo, -sympy.oo):
            lo = 0
        hi = None if hi in (int_oo, sympy.oo) else int(hi)
        k, d = defined[name]
        out[name] = Symbol(min=int(lo), max=hi, input=k, dim=d)
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))


def _encode_graph(path: str, gm: fx.GraphModule, index: dict[int, int], ops: dict[str, OpSchema],
                  symbols: set[str], tensor_name: Callable[[torch.Tensor], str],
                  links: dict[str, NodeLink]) -> Graph:
    gwhere = f"core graph '{path}'" if path else "the core root graph"
    nodes = []
    # A control-flow subgraph is a get_attr node in torch.export's graph; the core view writes no node for it and
    # refers to the subgraph by a graph Value ({"t": "graph", "v": index}) where the cond/while_loop node uses it.
    subgraphs: dict[fx.Node, GraphRef] = {}
    order = {n: i for i, n in enumerate(gm.graph.nodes)}  # users are written in graph order (format.md 2.1)
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            value = _attr(gm, n.target)
            if not isinstance(value, fx.GraphModule):
                raise ExportError(f"node '{n.name}' in {gwhere} reads the attribute '{n.target}', a "
                                  f"{type(value).__qualname__}; in a core graph get_attr names a control-flow graph "
                                  f"only (torch.export lifts tensors to inputs)")
            subgraphs[n] = GraphRef(index[id(value)])
    for n in gm.graph.nodes:
        if n in subgraphs:
            continue
        where = f"node '{n.name}' in {gwhere}"
        try:
            check_name(n.name, where)
            if n.op == "placeholder":
                target = check_identifier(n.target, where)
            elif n.op == "call_function":
                target = op_name(n.target, where)
                if target not in ops:
                    ops[target] = op_schema(n.target, target, where)
            elif n.op == "output":
                target = "output"
            else:
                raise ExportError(f"{where} is a {n.op} node; a core graph has placeholder, call_function and "
                                  f"output nodes only")
        except FormatError as e:
            raise ExportError(f"{where}: it cannot be written: {e}") from e
        node_args = fx.node.map_arg(n.args, lambda a: subgraphs.get(a, a))
        node_kwargs = fx.node.map_arg(n.kwargs, lambda a: subgraphs.get(a, a))
        args = [encode(a, tensor_name=tensor_name, where=f"{where} args[{i}]") for i, a in enumerate(node_args)]
        kwargs = {k: encode(v, tensor_name=tensor_name, where=f"{where} kwargs['{k}']")
                  for k, v in node_kwargs.items()}
        if n.op == "output":
            vals = fx.node.map_arg(n.args[0], lambda a: a.meta.get("val"))
            meta = core_meta(vals, where, symbols)
        elif "val" in n.meta:
            meta = core_meta(n.meta["val"], where, symbols)
        else:
            meta = None
        nodes.append(Node(name=n.name, op=n.op, target=target, args=args, kwargs=kwargs,
                          inputs=[a.name for a in n.all_input_nodes if a not in subgraphs],
                          users=[u.name for u in sorted(n.users, key=order.__getitem__)], meta=meta, lowering=None, graph=None, overload=None,
                          origin=links.get(n.name)))
    return Graph(name=path, nodes=nodes, training=False)


# ------------------------------------------------------------------------------------------------ running

def run_core(ep: torch.export.ExportedProgram, user_inputs: list[Any], record: bool) -> tuple[list, dict]:
    """Run the root graph on ``user_inputs`` (flat, in order): (the output node's values, node -> value for
    every root call_function node when ``record``)."""
    sig = ep.graph_signature
    IK = torch.export.graph_signature.InputKind
    flat = []
    users = iter(user_inputs)
    for spec in sig.input_specs:
        if spec.kind == IK.USER_INPUT:
            flat.append(next(users))
        elif spec.kind in (IK.PARAMETER, IK.BUFFER):
            flat.append(ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target])
        else:
            flat.append(ep.constants[spec.target])
    values: dict[str, Any] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            try:
                out = super().run_node(n)
            except Exception as e:
                raise ExportError(f"running the example inputs through the core view failed at node '{n.name}' "
                                  f"({n.op} {n.target}): {type(e).__name__}: {e}") from e
            if record and n.op == "call_function":
                values[n.name] = out
            return out

    with torch.no_grad():
        out = Rec(ep.graph_module).run(*flat)
    return list(out), values
