"""Rebuilding an executable ``torch.fx.GraphModule`` from a validated artifact (:meth:`Artifact.to_graph_module`).

Targets resolve only through :mod:`fxlower.lowering.targets` (``call_function``: allow-list plus registrations;
``call_method``: public ``torch.Tensor`` methods) and leaf modules only through the book's registered classes.

State (format 1.1, design C and D): every parameter, buffer and constant of the tensor table is placed at its
fully qualified name, as a ``nn.Parameter`` with its recorded ``requires_grad``, a buffer with its recorded
persistence, or a plain tensor attribute, so the rebuilt module has the exported module's ``named_parameters()``,
``named_buffers()`` and ``state_dict()`` keys; leaf modules, the graph modules and the containers between them get
their recorded ``training`` flags. Aliases (one stored tensor under several names, e.g. tied weights) become one
tensor object, as they were. A 1.0 file (``kind`` ``""``) keeps the 1.0 rule: a floating leaf attribute is a frozen
parameter, any other tensor a buffer, the whole module in eval mode, and only what the graphs use is placed.

Memory: with ``copy=True`` each tensor is read once, with ``pread``, into memory the module owns (the file is never
mapped for it), so the extra memory is the model's size. With ``copy=False`` the module's tensors are views of the
artifact's private copy-on-write mappings: nothing is read until used, pages stay evictable until written, a write
changes only this process's copy, and the module keeps the mappings alive.
"""

from __future__ import annotations

import gc
import unicodedata
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..lowering import book
from ..errors import AttributeTypeError, UnsupportedModuleError, UnsupportedTargetError
from ..lowering.lifting import LoweringRecord
from ..io.mapping import TensorFiles
from ..io.reading import LoadedCore, LoadedGraph, LoadedNode
from ..format.schema import TensorEntry
from ..lowering.targets import allowed_names, is_allowed_method, resolve_function
from ..format.values import FunctionRef, GraphRef, ModuleTypeRef, NodeRef, TensorRef, walk

__all__ = ["build", "build_core"]

_CONTAINERS = {"torch.nn.ModuleList": nn.ModuleList, "torch.nn.Sequential": nn.Sequential,
               "torch.nn.ModuleDict": nn.ModuleDict}


class _State:
    """Tensors of the table as the rebuilt module holds them: one object per stored tensor (aliases share it)."""

    def __init__(self, tensors: dict[str, TensorEntry], files: TensorFiles, copy: bool, legacy: bool,
                 on_progress: Callable[[int, int], None] | None = None):
        self.tensors = tensors
        self.files = files
        self.copy = copy
        self.on_progress = on_progress  # fxlower.io.progress: (bytes, tensors) read
        self.legacy = legacy  # a 1.0 file: kinds come from the 1.0 rule
        self._raw: dict[tuple[str, str], torch.Tensor] = {}
        self._maps: dict = {}  # copy=False: this module's own private mappings (its writes stay its own)
        self._params: dict[tuple[str, str], nn.Parameter] = {}

    def raw(self, name: str) -> torch.Tensor:
        entry = self.tensors[name]
        key = (entry.file, entry.key)
        t = self._raw.get(key)
        if t is None:
            report = self.on_progress
            if self.copy:
                t = self.files.read_into(entry, None if report is None else (lambda n: report(n, 0)))
            else:
                t = self.files.view(entry, self._maps)
                if report is not None:
                    report(t.numel() * t.element_size(), 0)
            if report is not None:
                report(0, 1)
            self._raw[key] = t
        return t

    def kind(self, name: str, *, leaf_attr: bool) -> str:
        """The tensor's kind; for 1.0 files, the 1.0 rule (leaf attributes: floating -> parameter, else buffer;
        get_attr tensors: buffer)."""
        entry = self.tensors[name]
        if entry.kind:
            return entry.kind
        if leaf_attr and self.raw(name).is_floating_point():
            return "parameter"
        return "buffer"

    def value(self, name: str, kind: str) -> torch.Tensor:
        """The object placed for tensor ``name``: an ``nn.Parameter`` (shared by aliases) or the tensor."""
        if kind != "parameter":
            return self.raw(name)
        entry = self.tensors[name]
        key = (entry.file, entry.key)
        p = self._params.get(key)
        if p is None:
            p = nn.Parameter(self.raw(name), requires_grad=entry.requires_grad)
            self._params[key] = p
        return p


# ------------------------------------------------------------------------------------------------ placing

_GRAPH_MODULE_NAMES: frozenset[str] = frozenset()


def _graph_module_names() -> frozenset[str]:
    """Attribute names a GraphModule has of its own (``forward``, ``graph``, ``training``, ...)."""
    global _GRAPH_MODULE_NAMES
    if not _GRAPH_MODULE_NAMES:
        _GRAPH_MODULE_NAMES = frozenset(dir(fx.GraphModule)) | frozenset(vars(fx.GraphModule(nn.Module(),
                                                                                             fx.Graph())))
    return _GRAPH_MODULE_NAMES


def _check_path(path: str, what: str, where: str) -> None:
    """Refuse a dotted path torch.fx cannot address: a first component that is a GraphModule attribute, or a
    component Python would read as another identifier (not NFKC-normalised, e.g. 'ﬁ' reads as 'fi')."""
    head = path.split(".")[0]
    if head in _graph_module_names():
        raise UnsupportedTargetError(f"{what} '{path}' ({where}) would replace the GraphModule attribute '{head}'")
    for part in path.split("."):
        if part.isidentifier() and unicodedata.normalize("NFKC", part) != part:
            raise UnsupportedTargetError(
                f"{what} '{path}' ({where}): the component {part!r} is an identifier that Python normalises to "
                f"{unicodedata.normalize('NFKC', part)!r}, so torch.fx's generated code would look up another "
                f"attribute")


def _same(a: Any, b: Any) -> bool:
    """Whether ``a`` is ``b``, or both are tensors of one dtype and shape over the same memory (a parameter and
    the tensor it wraps; two empty tensors)."""
    if a is b:
        return True
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.numel() == 0 or (a.data_ptr() == b.data_ptr() and a.stride() == b.stride())


def _container(parent: nn.Module, part: str, training: bool, path: str, where: str) -> nn.Module:
    child = parent._modules.get(part)
    if child is None:
        if hasattr(parent, part):
            raise UnsupportedTargetError(f"'{path}' ({where}) passes through {type(parent).__qualname__}.{part}, "
                                         f"which is not a module")
        child = nn.Module()
        child.training = training
        parent.add_module(part, child)
    return child


def _place(root: nn.Module, path: str, obj: Any, *, kind: str, persistent: bool, training: bool,
           where: str) -> None:
    """Put ``obj`` (a module, or a tensor of ``kind``) at the dotted ``path`` below ``root``, creating plain
    ``nn.Module`` containers (with flag ``training``) on the way. An attribute already there that is the same
    object (e.g. a parameter a leaf module already holds) is left alone; anything else there is an error."""
    *parents, leaf = path.split(".")
    parent = root
    for i, part in enumerate(parents):
        parent = _container(parent, part, training, ".".join(parents[:i + 1]), where)
    if hasattr(parent, leaf):
        existing = getattr(parent, leaf)
        if _same(existing, obj):
            if kind == "buffer" and not persistent and leaf in parent._buffers:
                parent._non_persistent_buffers_set.add(leaf)
            return
        if isinstance(existing, nn.Module) and type(existing) is nn.Module and isinstance(obj, nn.Module) \
                and not existing._parameters and not existing._buffers and not existing._modules:
            pass  # an empty container made on the way to an earlier path: the module takes its place
        else:
            raise UnsupportedTargetError(f"'{path}' ({where}) would replace {type(parent).__qualname__}.{leaf}, "
                                         f"which is already there (a method, property, module or another tensor)")
        delattr(parent, leaf)
    if isinstance(obj, nn.Module):
        parent.add_module(leaf, obj)
    elif kind == "parameter":
        parent.register_parameter(leaf, obj)
    elif kind == "buffer":
        parent.register_buffer(leaf, obj, persistent=persistent)
    else:  # constant: a plain tensor attribute, in neither parameters nor buffers
        object.__setattr__(parent, leaf, obj)


# ------------------------------------------------------------------------------------------------ leaf modules

def _module_classes() -> dict[str, type]:
    classes = {r.type_name: r.module_type for r in book.rules()}
    classes.update(_CONTAINERS)
    return classes


def _resolve_attrs(record: LoweringRecord, state: _State, classes: dict[str, type], legacy: bool,
                   where: str) -> tuple[dict[str, Any], dict[str, bool]]:
    """The record's attributes as the book's rebuild takes them: tensors as ``nn.Parameter`` (parameters, with
    their requires_grad) or tensors; functions resolved through the allow-list; module types to their classes;
    a str stays a str (1.0 files: the legacy rule reads a known module type name or an allow-listed dotted name
    as that class or function). Also returns ``{attr: persistent}`` for every buffer-kind tensor attribute."""
    buffers: dict[str, bool] = {}
    allowed = allowed_names() if legacy else frozenset()

    def leaf(v: Any, w: str) -> Any:
        if isinstance(v, TensorRef):
            kind = state.kind(v.name, leaf_attr=True)
            if kind == "buffer":
                buffers[w] = state.tensors[v.name].persistent
            return state.value(v.name, kind)
        if isinstance(v, FunctionRef):
            return resolve_function(v.name, where)
        if isinstance(v, ModuleTypeRef):
            cls = classes.get(v.name)
            if cls is None:
                raise UnsupportedTargetError(f"{where}: module type '{v.name}' has no lowering rule here; register "
                                             f"it with fxlower.register_module before loading")
            return cls
        if legacy and isinstance(v, str):
            if v in classes:
                return classes[v]
            if "." in v and v in allowed:
                return resolve_function(v, where)
        return v

    attrs = {}
    for name, value in record.attrs.items():
        attrs[name] = walk(value, leaf, where=name)
    return attrs, buffers


def _rebuild_leaf(record: LoweringRecord, attrs: dict[str, Any], buffers: dict[str, bool], where: str,
                  legacy: bool) -> nn.Module:
    """The leaf module, rebuilt by its rule in the book (the same place that fetched its attributes)."""
    rule = book.rule_named(record.module_type)
    if rule is None:
        raise UnsupportedTargetError(f"module type '{record.module_type}' ({where}) has no lowering rule here; "
                                     f"register it with fxlower.register_module before loading")
    if legacy:  # 1.0 records also listed the containers between a composite and its children (layers: ModuleList)
        attrs = {k: v for k, v in attrs.items() if not (isinstance(v, type) and v in _CONTAINERS.values())}
    try:
        return rule.rebuild(attrs, persistent=buffers)
    except (AttributeTypeError, UnsupportedModuleError) as e:
        raise UnsupportedTargetError(f"{where}: the {record.module_type} rule here (version {rule.version}) cannot "
                                     f"rebuild this record: {e}") from e


# ------------------------------------------------------------------------------------------------ graphs

def _callee_first(graphs: tuple[LoadedGraph, ...]) -> list[int]:
    order: list[int] = []
    done: set[int] = set()

    def visit(i: int) -> None:  # acyclicity was validated on load
        if i in done:
            return
        for n in graphs[i].nodes:
            if n.graph is not None:
                visit(n.graph)
        done.add(i)
        order.append(i)

    visit(0)
    return order


def _materialize(value: Any, env: dict[str, fx.Node]) -> Any:
    return walk(value, lambda v, w: env[v.name] if isinstance(v, NodeRef) else v, where=None)


class _Builder:
    def __init__(self, graphs: tuple[LoadedGraph, ...], state: _State, legacy: bool):
        self.graphs = graphs
        self.state = state
        self.legacy = legacy
        self.classes = _module_classes()
        self.built: dict[int, fx.GraphModule] = {}

    def graph(self, index: int) -> fx.GraphModule:
        g = self.graphs[index]
        training = False if self.legacy else g.training
        gm = fx.GraphModule(nn.Module(), fx.Graph(), class_name="FxLowerGraphModule")
        gm.training = training
        graph = fx.Graph()
        env: dict[str, fx.Node] = {}
        prefix = f"{g.name}." if g.name else ""
        get_attrs: list[tuple[LoadedNode, str]] = []
        called: set[str] = set()
        for node in g.nodes:
            where = f"node '{node.name}' in graph {index}"
            args = _materialize(node.args, env)
            kwargs = _materialize(node.kwargs, env)
            if node.op == "placeholder":
                default = args[0] if args else fx.node.inspect.Signature.empty
                out = graph.placeholder(node.target, default_value=default)
            elif node.op == "output":
                out = graph.output(args[0])
            else:
                target: Any = node.target
                if node.op == "call_function":
                    target = resolve_function(node.target, where)
                elif node.op == "call_method":
                    if not is_allowed_method(node.target):
                        raise UnsupportedTargetError(f"call_method target '{node.target}' ({where}) is not a "
                                                     f"public torch.Tensor method")
                elif node.op == "get_attr":
                    _check_path(node.target, node.op + " target", where)
                    get_attrs.append((node, where))
                elif node.target not in called:  # call_module; a module called twice is rebuilt once
                    _check_path(node.target, node.op + " target", where)
                    module = self.built[node.graph] if node.graph is not None else self.leaf(node, where)
                    _place(gm, node.target, module, kind="module", persistent=True, training=training, where=where)
                    called.add(node.target)
                out = graph.create_node(node.op, target, tuple(args), kwargs, name=node.name)
            env[node.name] = out
        # After the modules: a get_attr of a tensor a leaf module holds (EdgeNeXt-style: a LayerNorm subclass
        # whose forward uses self.weight, traced through here and a leaf there) finds it already in place.
        for node, where in get_attrs:
            name = prefix + node.target
            kind = self.state.kind(name, leaf_attr=False)
            _place(gm, node.target, self.state.value(name, kind), kind=kind,
                   persistent=self.state.tensors[name].persistent, training=training, where=where)
        gm.graph = graph
        return gm

    def leaf(self, node: LoadedNode, where: str) -> nn.Module:
        attrs, buffers = _resolve_attrs(node.lowering, self.state, self.classes, self.legacy, where)
        module = _rebuild_leaf(node.lowering, attrs, buffers, where, self.legacy)
        module.train(False if self.legacy else node.training)
        return module

    def place_table(self, root: fx.GraphModule) -> None:
        """1.1: every parameter, buffer and constant at its fully qualified name (those the graphs did not
        already place: unused parameters, state of containers)."""
        for name, entry in self.state.tensors.items():
            if entry.kind not in ("parameter", "buffer", "constant"):
                continue
            where = f"tensor '{name}'"
            _check_path(name, "tensor", where)
            _place(root, name, self.state.value(name, entry.kind), kind=entry.kind, persistent=entry.persistent,
                   training=root.training, where=where)


def build(graphs: tuple[LoadedGraph, ...], tensors: dict[str, TensorEntry], files: TensorFiles,
          format_version: tuple[int, int], *, copy: bool = True,
          on_progress: Callable[[int, int], None] | None = None) -> fx.GraphModule:
    """Rebuild the root GraphModule (see the module docstring).

    Raises:
        UnsupportedTargetError: a target is neither allow-listed nor registered, a module type has no rule, or a
            name cannot be placed (it would replace an attribute of a GraphModule or of a rebuilt module).
    """
    legacy = tuple(format_version) < (1, 1)
    state = _State(tensors, files, copy, legacy, on_progress)
    builder = _Builder(graphs, state, legacy)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # building thousands of modules and nodes; collections would rescan them again and again
    try:
        for index in _callee_first(graphs):
            builder.built[index] = builder.graph(index)
        root = builder.built[0]
        if legacy:
            root.eval()
        else:
            builder.place_table(root)
    finally:
        if gc_was_enabled:
            gc.enable()
    return root


# ------------------------------------------------------------------------------------------------ 1.2 core view

def _template_leaves(template: Any) -> int:
    count = 0

    def leaf(v: Any, w: Any) -> None:
        nonlocal count
        count += 1
    walk(template, leaf, join=None, where=None)
    return count


class _CoreBuilder:
    """Rebuilds the core view: placeholders for the user inputs only; parameters, buffers and constants are module
    attributes at their table names read with get_attr; operators only through the allow-list; each control-flow
    subgraph a GraphModule attribute (named as its graph) passed to the higher-order operator."""

    def __init__(self, core: LoadedCore, state: _State):
        self.core = core
        self.state = state

    def graph(self, index: int, output_template: Any = None) -> fx.GraphModule:
        g = self.core.graphs[index]
        gm = fx.GraphModule(nn.Module(), fx.Graph(), class_name="FxLowerCoreGraphModule")
        gm.training = g.training
        graph = fx.Graph()
        env: dict[str, fx.Node] = {}
        subgraphs: dict[int, fx.Node] = {}
        inputs = {ci.name: ci for ci in self.core.inputs} if index == 0 else {}
        get_attrs: list[tuple[str, str]] = []

        def leaf(v: Any, w: Any) -> Any:
            if isinstance(v, NodeRef):
                return env[v.name]
            if isinstance(v, GraphRef):
                node = subgraphs.get(v.index)
                if node is None:
                    sub = self.graph(v.index)
                    name = self.core.graphs[v.index].name
                    where = f"core graph {v.index}"
                    _check_path(name, "subgraph", where)
                    _place(gm, name, sub, kind="module", persistent=True, training=g.training, where=where)
                    node = subgraphs[v.index] = graph.get_attr(name)
                return node
            return v

        for node in g.nodes:
            where = f"node '{node.name}' in core graph {index}"
            args = walk(node.args, leaf, where=None)
            kwargs = walk(node.kwargs, leaf, where=None)
            if node.op == "placeholder":
                ci = inputs.get(node.name)
                if ci is not None and ci.kind != "user_input":
                    _check_path(ci.target, "tensor", where)
                    out = graph.get_attr(ci.target)
                    get_attrs.append((ci.target, where))
                else:
                    default = args[0] if args else fx.node.inspect.Signature.empty
                    out = graph.placeholder(node.target, default_value=default)
            elif node.op == "get_attr":
                _check_path(node.target, "get_attr target", where)
                get_attrs.append((node.target, where))
                out = graph.get_attr(node.target)
            elif node.op == "call_function":
                out = graph.create_node("call_function", resolve_function(node.target, where), tuple(args), kwargs,
                                        name=node.name)
            else:  # output
                out = graph.output(self._root_output(graph, args[0], output_template) if index == 0 else args[0])
            env[node.name] = out
        for name, where in get_attrs:
            entry = self.state.tensors[name]
            _place(gm, name, self.state.value(name, entry.kind), kind=entry.kind, persistent=entry.persistent,
                   training=g.training, where=where)
        gm.graph = graph
        return gm

    def _root_output(self, graph: fx.Graph, elements: Any, template: Any) -> Any:
        """What the rebuilt module returns: the user outputs, in the structure of ``template`` (the signature's
        output) when it has one leaf per user output, else as a tuple (one output: itself). Buffer mutations are
        applied to the buffers (``aten.copy_``), as ``ExportedProgram.module()`` does."""
        users = []
        for value, out in zip(elements, self.core.outputs):
            if out.kind == "user_output":
                users.append(value)
            else:
                buffer = graph.get_attr(out.target)
                graph.call_function(torch.ops.aten.copy_.default, (buffer, value))
        if template is not None and _template_leaves(template) == len(users):
            it = iter(users)
            return walk(template, lambda v, w: next(it), where=None)
        return users[0] if len(users) == 1 else tuple(users)


def build_core(core: LoadedCore, output_template: Any, tensors: dict[str, TensorEntry], files: TensorFiles, *,
               copy: bool = True, on_progress: Callable[[int, int], None] | None = None) -> fx.GraphModule:
    """Rebuild the core view as a GraphModule (see :class:`_CoreBuilder`), with every parameter, buffer and
    constant of the table at its name and with its recorded state.

    Raises:
        UnsupportedTargetError: an operator is not in this torch's Core ATen set (nor admitted), or a name
            cannot be placed.
    """
    state = _State(tensors, files, copy, legacy=False, on_progress=on_progress)
    builder = _CoreBuilder(core, state)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        root = builder.graph(0, output_template)
        for name, entry in tensors.items():
            if entry.kind not in ("parameter", "buffer", "constant"):
                continue
            where = f"tensor '{name}'"
            _check_path(name, "tensor", where)
            _place(root, name, state.value(name, entry.kind), kind=entry.kind, persistent=entry.persistent,
                   training=root.training, where=where)
    finally:
        if gc_was_enabled:
            gc.enable()
    return root
