"""Derive a module view from a core view: the program of an ``nn.Module`` that ``torch.fx.symbolic_trace`` cannot
trace (data-dependent Python, ``torch.finfo(x.dtype)``, item assignment, shape unpacking, ...), rebuilt from its
Core ATen ``ExportedProgram`` as an ordinary ``torch.fx.GraphModule`` over the model's own submodules.

Grouping (what becomes a ``call_module`` node):

* A core ``call_function`` node belongs to the *outermost* module on its ``nn_module_stack`` that has a lowering
  rule (:func:`fxlower.lowering.book.rule_for`), other than the root. Outermost, as ``symbolic_trace`` does: a
  ``torch.nn`` module is a leaf there, so a rule-bearing ``nn.TransformerEncoderLayer`` stays one node even
  though its ``Linear`` children have rules too.
* The group is one *call* of that module: torch.export gives each call its own stack key (``L__self__lin``,
  ``L__self__lin@1``), so a module called twice (tied weights, a layer applied twice) is two groups and two
  ``call_module`` nodes with the same target. Nodes of a call need not be contiguous in the core graph, but the
  group must be convex (no outside node both depends on it and feeds it), else it is kept as ops (below).
* Size computations (SymInt nodes: ``aten.sym_size.int``, arithmetic on sizes) are never grouped and never group
  inputs: a module computes its own sizes. Those only groups read are dropped from the module view.
* The group's inputs are the values it reads that it does not compute, in first-use order, except parameters,
  buffers and lifted constants (the module owns them: a parameter must be one of the module's own tensors, which
  covers tied weights). Its outputs are the values used outside the group (or by the program's output).
* Each group is checked on the ExportedProgram's example inputs: ``module(*inputs)`` is run eagerly and every
  group output must equal, bit for bit, one leaf of the module's result (reached by ``operator.getitem`` from the
  call). A group that fails the check (its ``forward`` needs other arguments, computes different bits than its
  decomposition, mutates its inputs, or its output leaf is ambiguous), or is not convex, is *kept as ops*,
  listed with the reason in ``gm.meta["fxlower.views.derive"].kept_as_ops``: its core nodes are grouped again by the
  next rule-bearing module inside it on their stacks, and those not in any passing group stay ``call_function``
  nodes. This is what makes the module view bit-identical to ``ep.module()`` on the example inputs.

Everything else stays a ``call_function`` node with the aten ``OpOverload`` (or ``operator.getitem``) as target
and the core node's name; parameters, buffers and constants used by such nodes are ``get_attr`` nodes whose
target is the fully qualified name. Placeholders are the user inputs only, named as in the ExportedProgram.

Refused with :class:`ExportError`: programs that mutate a buffer (a KV cache, a running statistic) or a user
input, control flow (``get_attr`` of subgraphs), custom objects and effect tokens.
"""

from __future__ import annotations

import dataclasses
import heapq
import operator
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from ..lowering.book import rule_for, type_name
from ..errors import ExportError, UnsupportedModuleError

__all__ = ["derive_module_view", "DeriveInfo", "KeptGroup", "META_KEY"]

#: Key of ``GraphModule.meta`` under which :func:`derive_module_view` leaves its :class:`DeriveInfo`.
META_KEY = "fxlower.views.derive"


@dataclasses.dataclass(frozen=True)
class KeptGroup:
    """A call of a rule-bearing module whose core nodes stay ``call_function`` nodes.

    Attributes:
        module: the module path (``layers.0.mlp.up``).
        call: torch.export's stack key of the call (``L__self___layers_0_mlp_up@1``).
        nodes: the core node names of the call.
        reason: why it is not one ``call_module`` node.
    """

    module: str
    call: str
    nodes: tuple[str, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class DeriveInfo:
    """What :func:`derive_module_view` reports beside the GraphModule (in ``gm.meta[META_KEY]``).

    Attributes:
        output_classes: output position -> qualified name of the pytree class that was turned into a dict of its
            fields there (``""`` is the whole output, ``"['past'][0]"`` a nested one); empty when the output
            holds builtin containers only.
        kept_as_ops: the rule-bearing module calls left as core ops, in graph order.
    """

    output_classes: Mapping[str, str]
    kept_as_ops: tuple[KeptGroup, ...]


@dataclasses.dataclass
class _Group:
    key: str
    path: str
    module: nn.Module
    nodes: list[fx.Node]
    inputs: list[fx.Node] = dataclasses.field(default_factory=list)
    outputs: list[fx.Node] = dataclasses.field(default_factory=list)
    # for each output: the key path into the module's result (() = the result itself)
    access: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    reason: str | None = None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _node_args(node: fx.Node) -> list[fx.Node]:
    """The nodes ``node`` reads, in argument order, each once."""
    seen: dict[fx.Node, None] = {}
    fx.node.map_arg((node.args, node.kwargs), lambda n: seen.setdefault(n))
    return list(seen)


def _same_bits(a: Any, b: Any) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.dtype != b.dtype or a.shape != b.shape or a.layout != torch.strided or b.layout != torch.strided:
        return False
    if a.numel() == 0:
        return True
    if a.is_floating_point() or a.is_complex():
        # bitwise: NaN == NaN and -0.0 != 0.0, as a byte comparison says
        return torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8),
                           b.detach().contiguous().reshape(-1).view(torch.uint8))
    return torch.equal(a, b)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def derive_module_view(ep: ExportedProgram, model: nn.Module) -> tuple[fx.GraphModule, dict[str, str]]:
    """Build the module view of ``model`` from its Core ATen ExportedProgram ``ep``.

    Args:
        ep: ``torch.export.export(model, args, kwargs).run_decompositions()`` (its ``example_inputs`` are used to
            check every group; see the module docstring).
        model: the module ``ep`` was exported from; the GraphModule reuses its submodules and tensors.

    Returns:
        ``(gm, links)``: ``gm`` is a GraphModule whose placeholders are ``ep``'s user inputs (flattened, same
        names), whose output is ``ep``'s user output structure (a pytree class such as a dataclass or a
        ``ModelOutput`` becomes a dict of its fields, in order; ``gm.meta["fxlower.views.derive"].output_classes``
        names the class), with one ``call_module`` node per call of a rule-bearing module. ``links`` maps every
        core node name to the module-view node it became: the ``call_module`` node for a grouped node, the
        same-named node for the other ``call_function`` and user-input placeholder nodes, the ``get_attr`` node
        for a parameter/buffer/constant placeholder that ungrouped nodes read, ``output`` for the output node.
        Without a link: a placeholder read only inside groups, and a size computation (``aten.sym_size.int``
        and arithmetic on sizes) read only by groups, which the module view drops.

    Raises:
        ExportError: ``ep`` mutates a buffer or a user input, has control flow, custom objects or effect tokens,
            has no example inputs, or names a tensor ``model`` lacks or holds different values.

    Example:
        >>> import torch, torch.nn as nn
        >>> from fxlower.views.derive import derive_module_view
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
        >>> ep = torch.export.export(model, (torch.randn(2, 4),)).run_decompositions()
        >>> gm, links = derive_module_view(ep, model)
        >>> [(n.op, n.target) for n in gm.graph.nodes if n.op == "call_module"]
        [('call_module', '0'), ('call_module', '1')]
    """
    if not isinstance(ep, ExportedProgram):
        raise TypeError(f"derive_module_view expects a torch.export.ExportedProgram, got {type(ep).__qualname__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"derive_module_view expects the nn.Module ep was exported from, got "
                        f"{type(model).__qualname__}")
    where = f"the ExportedProgram of {type(model).__qualname__}"
    sig = ep.graph_signature
    _refuse_mutations(sig, where)
    graph = ep.graph
    placeholders = graph.find_nodes(op="placeholder")
    if len(placeholders) != len(sig.input_specs):
        raise ExportError(f"{where} has {len(placeholders)} placeholders but its signature lists "
                          f"{len(sig.input_specs)} inputs; pass the program torch.export produced")

    # ---- placeholders: user inputs and the tensors the model owns
    user_inputs: list[fx.Node] = []
    owned: dict[fx.Node, tuple[str, str, torch.Tensor]] = {}  # node -> (kind, fqn, tensor)
    for node, spec in zip(placeholders, sig.input_specs):
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(node)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            owned[node] = _owned_tensor(ep, model, spec, where)
        else:
            raise ExportError(f"{where}: input '{node.name}' is a {spec.kind.name.lower()}, which a module view "
                              f"cannot hold; export a model without custom objects or side effects")
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module", "call_method"):
            what = "control flow or a submodule" if node.op == "get_attr" else f"a {node.op} node"
            raise ExportError(f"{where}: node '{node.name}' is {what} ({node.target}); a module view is derived "
                              f"only for straight-line Core ATen programs; export the core view alone")

    order = {n: i for i, n in enumerate(graph.nodes)}
    # ---- groups: one per call of the outermost rule-bearing module whose check passes; a call that fails it
    # is kept as ops and its nodes are grouped again by the next rule-bearing module inside it (a
    # TransformerEncoderLayer whose fused eval kernel differs from its decomposition still gives its Linear,
    # LayerNorm and Dropout children call_module nodes)
    output_node = graph.find_nodes(op="output")[0]
    values = _run(ep, placeholders, sig, where)
    rules: dict[str, bool] = {}
    excluded: set[str] = set()
    kept: list[_Group] = []
    checked: dict[tuple, tuple] = {}  # (call, nodes) -> (reason, access): each call is run once
    while True:
        groups = _form_groups(graph, model, owned, rules, excluded, order, where)
        failed = []
        for group in groups.values():
            if group.reason is None:
                memo = (group.key, tuple(group.nodes))
                if memo not in checked:
                    _check_group(group, values)
                    checked[memo] = (group.reason, group.access)
                group.reason, group.access = checked[memo]
            if group.reason is not None:
                failed.append(group)
        if not failed:
            break
        kept.extend(failed)
        excluded.update(g.key for g in failed)

    # ---- emit the module view
    group_of = {node: g for g in groups.values() for node in g.nodes}
    gm, links = _build(ep, model, graph, user_inputs, owned, group_of, output_node, sig, where)
    info = gm.meta[META_KEY]
    gm.meta[META_KEY] = dataclasses.replace(info, kept_as_ops=tuple(
        KeptGroup(module=g.path, call=g.key, nodes=tuple(n.name for n in g.nodes), reason=g.reason)
        for g in sorted(kept, key=lambda g: order[g.nodes[0]])))
    return gm, links


def _form_groups(graph: fx.Graph, model: nn.Module, owned, rules: dict[str, bool], excluded: set[str],
                 order: dict[fx.Node, int], where: str) -> dict[str, _Group]:
    """The calls of the outermost rule-bearing modules not in ``excluded``, with their inputs and outputs."""
    groups: dict[str, _Group] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if _is_size(node):
            continue  # size arithmetic stays glue: a module computes its own sizes from its inputs
        found = _leaf_call(node, model, rules, excluded, where)
        if found is None:
            continue
        key, path = found
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(key=key, path=path, module=model.get_submodule(path), nodes=[])
        group.nodes.append(node)
    for group in groups.values():
        members = set(group.nodes)
        for node in group.nodes:
            for arg in _node_args(node):
                if arg in members or arg in group.inputs or _is_size(arg):
                    continue  # sizes are glue: the module computes its own from its inputs
                if arg in owned:
                    kind, fqn, tensor = owned[arg]
                    if kind != "constant" and not any(t is tensor for t in _own_tensors(group.module)):
                        group.reason = (f"it reads {kind} '{fqn}', which is not one of the module's own tensors")
                    continue
                group.inputs.append(arg)
            if any(u not in members for u in node.users):
                group.outputs.append(node)
        if not group.outputs:
            group.reason = group.reason or "no value it computes is used"
        if group.reason is None:
            loop = _feeds_back(group, members, order)
            if loop is not None:
                group.reason = (f"node '{loop.name}' outside it both depends on it and feeds it, so it cannot be "
                                f"one call_module node")
    return groups


def _feeds_back(group: _Group, members: set[fx.Node], order: dict[fx.Node, int]) -> fx.Node | None:
    """A node outside the group on a path from a member to a member (the group is not convex), or None."""
    start = order[group.nodes[0]]
    for first in group.inputs:
        if order[first] < start:
            continue
        stack, seen = [first], {first}
        while stack:
            node = stack.pop()
            for arg in _node_args(node):
                if arg in members:
                    return first
                if arg not in seen and order[arg] > start:
                    seen.add(arg)
                    stack.append(arg)
    return None


def _refuse_mutations(sig, where: str) -> None:
    if sig.buffers_to_mutate:
        names = ", ".join(f"'{b}'" for b in sorted(set(sig.buffers_to_mutate.values())))
        raise ExportError(f"{where} mutates the buffer(s) {names} (e.g. a KV cache or running statistics); a "
                          f"module view cannot express buffer updates: export the model in eval mode without "
                          f"state updates (pass the cache as an input and return the new one)")
    mutated_inputs = getattr(sig, "user_inputs_to_mutate", {})
    if mutated_inputs:
        names = ", ".join(f"'{b}'" for b in sorted(set(mutated_inputs.values())))
        raise ExportError(f"{where} mutates its input(s) {names} in place; a module view cannot express that: "
                          f"clone the input inside forward before writing to it")


def _owned_tensor(ep: ExportedProgram, model: nn.Module, spec, where: str) -> tuple[str, str, torch.Tensor]:
    fqn = spec.target
    if spec.kind == InputKind.CONSTANT_TENSOR:
        value = ep.constants.get(fqn)
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{where}: lifted constant '{fqn}' is missing from ep.constants")
        return "constant", fqn, value
    kind = "parameter" if spec.kind == InputKind.PARAMETER else "buffer"
    try:
        tensor = model.get_parameter(fqn) if kind == "parameter" else model.get_buffer(fqn)
    except AttributeError as e:
        raise ExportError(f"{where} reads {kind} '{fqn}', which {type(model).__qualname__} does not have ({e}); "
                          f"pass the model the program was exported from") from None
    exported = ep.state_dict.get(fqn, ep.constants.get(fqn))
    if exported is not None and exported is not tensor and not _same_bits(exported.detach(), tensor.detach()):
        raise ExportError(f"{where}: {kind} '{fqn}' differs from the model's; pass the model the program was "
                          f"exported from, unchanged since")
    return kind, fqn, tensor


def _own_tensors(module: nn.Module):
    yield from module.parameters()
    yield from module.buffers()


def _is_size(node: fx.Node) -> bool:
    """Whether ``node`` computes a size (a SymInt/SymFloat/SymBool or a plain number), not a tensor."""
    val = node.meta.get("val")
    return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool))


# the stack entry torch.export gives nodes it creates outside any module (e.g. sym_size with dynamic shapes)
_NO_STACK = "_empty_nn_module_stack_from_metadata_hook"


def _leaf_call(node: fx.Node, model: nn.Module, rules: dict[str, bool], excluded: set[str],
               where: str) -> tuple[str, str] | None:
    """``(stack key, module path)`` of the outermost rule-bearing module on ``node``'s stack (not the root), whose
    call is not in ``excluded``."""
    stack = node.meta.get("nn_module_stack") or {}
    for key, entry in stack.items():
        path = entry[0]
        if not path or path == _NO_STACK or key in excluded:
            continue
        if path not in rules:
            try:
                module = model.get_submodule(path)
            except AttributeError as e:
                raise ExportError(f"{where}: node '{node.name}' comes from module '{path}', which "
                                  f"{type(model).__qualname__} does not have ({e}); pass the model the program "
                                  f"was exported from") from None
            try:
                rule_for(module)
                rules[path] = True
            except UnsupportedModuleError:
                rules[path] = False
        if rules[path]:
            return key, path
    return None


def _run(ep: ExportedProgram, placeholders: list[fx.Node], sig, where: str) -> dict[fx.Node, Any]:
    example = getattr(ep, "example_inputs", None)
    if example is None:
        raise ExportError(f"{where} carries no example inputs; export it with torch.export.export(model, args, "
                          f"kwargs), which records them")
    args, kwargs = example
    in_spec = ep.call_spec.in_spec
    if in_spec is not None and in_spec.num_children == 2:
        keys = in_spec.child(1).context
        if isinstance(keys, list) and set(keys) == set(kwargs):
            kwargs = {k: kwargs[k] for k in keys}
    flat, _ = pytree.tree_flatten((args, kwargs))
    n_user = sum(1 for s in sig.input_specs if s.kind == InputKind.USER_INPUT)
    if len(flat) != n_user:
        raise ExportError(f"{where}: its example inputs flatten to {len(flat)} values but it has {n_user} user "
                          f"inputs")
    flat_iter = iter(flat)
    feed = []
    for spec in sig.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            feed.append(next(flat_iter))
        elif spec.kind == InputKind.CONSTANT_TENSOR or spec.target not in ep.state_dict:
            feed.append(ep.constants[spec.target])
        else:
            feed.append(ep.state_dict[spec.target])
    recorder = _Recorder(ep.graph_module)
    with torch.no_grad():
        recorder.run(*feed)
    return recorder.values


def _check_group(group: _Group, values: dict[fx.Node, Any]) -> None:
    module = group.module
    given = [values[n] for n in group.inputs]
    copies = [v.clone() if isinstance(v, torch.Tensor) else v for v in given]
    try:
        with torch.no_grad():
            result = module(*copies)
    except Exception as e:  # the module's own forward: any failure means "not callable like this"
        group.reason = (f"{type_name(type(module))}.forward does not run on the group's {len(given)} input(s) "
                        f"in first-use order ({type(e).__name__}: {str(e)[:120]})")
        return
    for before, after in zip(given, copies):
        if isinstance(before, torch.Tensor) and not _same_bits(before, after):
            group.reason = f"{type_name(type(module))}.forward mutates its input in place"
            return
    leaves, _ = pytree.tree_flatten_with_path(result)
    for out in group.outputs:
        want = values[out]
        hits = [path for path, leaf in leaves if _same_bits(leaf, want)]
        if len(hits) != 1:
            group.reason = (f"core node '{out.name}' (an output of the group) equals {len(hits)} leaves of "
                            f"{type_name(type(module))}.forward's result, bit for bit; expected exactly one")
            return
        access = []
        for k in hits[0]:
            if isinstance(k, pytree.SequenceKey):
                access.append(k.idx)
            elif isinstance(k, pytree.MappingKey):
                access.append(k.key)
            else:
                group.reason = f"its result is reached through {k!r}, not by indexing"
                return
        group.access.append(tuple(access))


class _Names:
    """Fresh node names that collide with no core node name."""

    def __init__(self, reserved: set[str]):
        self.used = set(reserved)

    def fresh(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "_unnamed"
        if base[0].isdigit():
            base = f"_{base}"
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _build(ep, model, graph, user_inputs, owned, group_of, output_node, sig, where):
    names = _Names({n.name for n in graph.nodes})
    order = {n: i for i, n in enumerate(graph.nodes)}

    # units: a group (by key) or a single ungrouped call_function node
    units: dict[Any, list[fx.Node]] = {}
    unit_of: dict[fx.Node, Any] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        u = group_of[node].key if node in group_of else node
        units.setdefault(u, []).append(node)
        unit_of[node] = u
    deps: dict[Any, set] = {u: set() for u in units}
    users: dict[Any, set] = {u: set() for u in units}
    for u, nodes in units.items():
        # a call_module node reads only its group's inputs (sizes inside the group are the module's own)
        reads = group_of[nodes[0]].inputs if nodes[0] in group_of else _node_args(nodes[0])
        for arg in reads:
            v = unit_of.get(arg)
            if v is not None and v != u:
                deps[u].add(v)
                users[v].add(u)
    first = {u: order[nodes[0]] for u, nodes in units.items()}
    ready = [(first[u], i, u) for i, u in enumerate(units) if not deps[u]]
    heapq.heapify(ready)
    ids = {u: i for i, u in enumerate(units)}
    pending = {u: len(d) for u, d in deps.items()}
    schedule = []
    while ready:
        _, _, u = heapq.heappop(ready)
        schedule.append(u)
        for v in users[u]:
            pending[v] -= 1
            if pending[v] == 0:
                heapq.heappush(ready, (first[v], ids[v], v))
    if len(schedule) != len(units):
        stuck = sorted({group_of[n].path for u in units if u not in schedule for n in units[u] if n in group_of})
        raise ExportError(f"{where}: the core nodes of module call(s) {stuck} are interleaved with nodes that "
                          f"depend on them and feed them, so they cannot become one call_module node")

    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    links: dict[str, str] = {}
    attached: dict[str, Any] = {}  # target -> object, for the root module

    for node in user_inputs:
        p = new.create_node("placeholder", node.target, name=node.name)
        p.meta = dict(node.meta)
        env[node] = p
        links[node.name] = p.name

    def value_of(arg: fx.Node) -> fx.Node:
        if arg in env:
            return env[arg]
        if arg in owned:
            kind, fqn, tensor = owned[arg]
            g = new.create_node("get_attr", fqn, name=names.fresh(fqn.replace(".", "_")))
            g.meta = dict(arg.meta)
            attached[fqn] = (kind, tensor)
            env[arg] = g
            links[arg.name] = g.name
            return g
        raise ExportError(f"{where}: node '{arg.name}' is used before it is defined")  # a bug, not the input

    for u in schedule:
        nodes = units[u]
        if nodes[0] not in group_of:
            node = nodes[0]
            args = fx.node.map_arg(node.args, value_of)
            kwargs = fx.node.map_arg(node.kwargs, value_of)
            n = new.create_node("call_function", node.target, args, kwargs, name=node.name)
            n.meta = dict(node.meta)
            env[node] = n
            links[node.name] = n.name
            continue
        group = group_of[nodes[0]]
        call = new.create_node("call_module", group.path, tuple(value_of(a) for a in group.inputs), {},
                               name=names.fresh(group.path.replace(".", "_")))
        call.meta["nn_module_stack"] = {group.key: (group.path, _qualname(type(group.module)))}
        attached[group.path] = ("module", group.module)
        for out, access in zip(group.outputs, group.access):
            v = call
            for k in access:
                g = new.create_node("call_function", operator.getitem, (v, k), {},
                                    name=names.fresh(f"{call.name}_getitem"))
                v = g
            v.meta["val"] = out.meta.get("val")
            env[out] = v
        if len(group.outputs) == 1 and not group.access[0]:
            call.meta["val"] = group.outputs[0].meta.get("val")
        for node in nodes:
            links[node.name] = call.name

    # output: the user outputs, in ep's structure, pytree classes as dicts
    out_args = output_node.args[0]
    user_out = [a for a, spec in zip(out_args, sig.output_specs) if spec.kind == OutputKind.USER_OUTPUT]
    if len(user_out) != len(out_args):
        raise ExportError(f"{where} returns values other than user outputs (buffer or input mutations)")
    mapped = [fx.node.map_arg(a, value_of) if isinstance(a, fx.Node) else a for a in user_out]
    classes: dict[str, str] = {}
    structure = _unflatten(ep.call_spec.out_spec, iter(mapped), "", classes, where)
    out = new.output(structure)
    links[output_node.name] = out.name
    # size computations only groups read (a module computes its own sizes) are dead here: drop them and their links
    for n in reversed(list(new.nodes)):
        if n.op == "call_function" and not n.users and _is_size(n):
            del links[n.name]  # an ungrouped core node keeps its name
            new.erase_node(n)

    gm = fx.GraphModule(nn.Module(), fx.Graph(), class_name=type(model).__name__)
    _attach(gm, model, attached)
    gm.graph = new
    gm.train(model.training)
    gm.meta[META_KEY] = DeriveInfo(output_classes=classes, kept_as_ops=())
    gm.graph.lint()
    return gm, links


def _unflatten(spec, leaves, at: str, classes: dict[str, str], where: str) -> Any:
    if spec is None or spec.is_leaf():
        return next(leaves)
    kids = list(spec.children())
    t = spec.type
    if t in (tuple, list):
        return t(_unflatten(c, leaves, f"{at}[{i}]", classes, where) for i, c in enumerate(kids))
    if t in (dict, OrderedDict):
        keys = spec.context
        return {k: _unflatten(c, leaves, f"{at}[{k!r}]", classes, where) for k, c in zip(keys, kids)}
    if t is type(None):
        return None
    keys = _field_names(spec)
    if keys is None:
        what = getattr(t, "__qualname__", t)
        raise ExportError(f"{where}: the output at {at or 'the top'} is a {what}, whose pytree context "
                          f"{spec.context!r:.80} does not name its fields; register it as a dataclass "
                          f"(torch.utils._pytree.register_dataclass) or flatten it to its field values with the "
                          f"field names as context")
    classes[at] = _qualname(spec.context if isinstance(spec.context, type) else t)
    return {k: _unflatten(c, leaves, f"{at}[{k!r}]", classes, where) for k, c in zip(keys, kids)}


def _field_names(spec) -> list[str] | None:
    """The field names of a pytree class's children: a namedtuple's fields, a context that is their list of
    names (ModelOutput style), or register_dataclass's ``[present fields, None fields]``."""
    n = spec.num_children
    ctx = spec.context
    # a namedtuple's spec has type collections.namedtuple and the class as its context
    fields = getattr(ctx if isinstance(ctx, type) else spec.type, "_fields", None)
    if isinstance(fields, tuple) and len(fields) == n and all(isinstance(f, str) for f in fields):
        return list(fields)
    if isinstance(ctx, (list, tuple)) and len(ctx) == n and all(isinstance(k, str) for k in ctx):
        return list(ctx)
    if (isinstance(ctx, (list, tuple)) and len(ctx) == 2 and isinstance(ctx[0], (list, tuple))
            and len(ctx[0]) == n and all(isinstance(k, str) for k in ctx[0])):
        return list(ctx[0])
    return None


def _attach(gm: fx.GraphModule, model: nn.Module, attached: dict[str, tuple[str, Any]]) -> None:
    """Install every referenced module and tensor on ``gm`` at its dotted path: modules and tensors are the
    model's own objects; the containers between them are fresh ``nn.Module``s."""
    for target in sorted(attached, key=lambda t: (t.count("."), t)):
        kind, obj = attached[target]
        *prefix, leaf = target.split(".")
        parent: nn.Module = gm
        for k, item in enumerate(prefix):
            child = getattr(parent, item, None)
            if child is None:
                child = nn.Module()
                parent.add_module(item, child)
            elif not isinstance(child, nn.Module):
                raise ExportError(f"'{'.'.join(prefix[:k + 1])}' is both a tensor and the parent of '{target}'")
            parent = child
        if getattr(parent, leaf, None) is obj:
            continue  # already there (a tensor of a module installed before)
        if kind == "module":
            parent.add_module(leaf, obj)
        elif kind == "parameter":
            parent.register_parameter(leaf, obj)
        elif kind == "buffer":
            owner = model.get_submodule(".".join(prefix))
            parent.register_buffer(leaf, obj, persistent=leaf not in owner._non_persistent_buffers_set)
        else:
            setattr(parent, leaf, obj)
