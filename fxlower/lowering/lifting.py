"""The lifting pass: put each leaf module's lowering attributes on its ``call_module`` node.

``lift(gm)`` walks every graph (recursing into nested ``GraphModule``s) and stores a :class:`LoweringRecord` in
``node.meta["lowering"]`` for every ``call_module`` node whose target is a leaf module. Tensor attributes in the
record are the module's own tensors (not copies); hyperparameters are normalised to plain values (int, float,
bool, str, None, tuples of those -- lists and ``torch.Size`` become tuples --, ``torch.dtype``/``device``/
``memory_format``/``layout``); a function-valued attribute (e.g. ``TransformerEncoderLayer.activation``) stays the
function object, and a module-valued one becomes the class of the rule that applies to the child
(``rule_for(child).module_type``, e.g. ``nn.Linear`` for ``NonDynamicallyQuantizableLinear``), its own attributes
recorded under ``<name>.`` by that rule.

Every value is then checked against the type its rule declares (:mod:`fxlower.format.attrtypes`), after widening an int
declared ``float`` to a float; a mismatch raises :class:`fxlower.AttributeTypeError` naming the node, the module
type, the attribute, the declared type and the value found.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..format import attrtypes
from .book import LoweringRule, rule_for, rule_named, type_name
from ..errors import AttributeTypeError, LiftError, UnsupportedModuleError
from ..format.schema import ModuleDecl

__all__ = ["LoweringRecord", "lift", "META_KEY", "iter_graph_modules", "module_declarations"]

#: Key of ``node.meta`` that holds the lowering record.
META_KEY = "lowering"


@dataclasses.dataclass(frozen=True)
class LoweringRecord:
    """What the lifting pass stores on a ``call_module`` node.

    Attributes:
        module_type: qualified type name of the rule's class, e.g. ``"torch.nn.Conv2d"``.
        version: the lowering rule's version (0 when unsupported).
        module_version: the module class's ``_version``.
        attrs: attribute name → value (read-only mapping), in record order, each of its declared type: tensors
            are the module's own tensors, functions the function objects, child modules the class of their rule
            (their own attributes follow under ``<name>.``).
        unsupported: None when lifted; otherwise why no rule applied (only with ``lift(..., strict=False)``).
    """

    module_type: str
    version: int
    module_version: int
    attrs: Mapping[str, Any]
    unsupported: str | None = None

    @property
    def supported(self) -> bool:
        return self.unsupported is None


_PASSTHROUGH = (torch.dtype, torch.device, torch.memory_format, torch.layout)
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.BuiltinMethodType)


def _plain(value: Any, where: str) -> Any:
    """Normalise one fetched attribute value (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        return value
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (tuple, list)):  # includes torch.Size
        return tuple(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, _PASSTHROUGH):
        return value
    if isinstance(value, nn.Module):
        try:  # the class whose semantics it has (e.g. torch.nn.Linear for NonDynamicallyQuantizableLinear)
            return rule_for(value).module_type
        except UnsupportedModuleError:
            return type(value)
    if isinstance(value, _FUNCTIONS):
        return value
    raise LiftError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which has no plain "
                    f"encoding; expected a tensor, int, float, bool, str, None, tuple, dtype, device, function "
                    f"or module. Drop it from the rule's attrs or register a rule that fetches its parts")


def _record(rule: LoweringRule, module: nn.Module, node: str, where: str) -> LoweringRecord:
    try:
        walked = rule.walk(module)
    except AttributeError as e:
        raise LiftError(f"{where}: the {rule.type_name} rule (version {rule.version}) names an attribute the "
                        f"module does not have ({e}); fix the rule's attrs or its match function") from e
    attrs: dict[str, Any] = {}
    for name, raw, decl in walked:
        value = _plain(raw, f"{where} attribute '{name}'")
        if not attrtypes.parse(decl.type).accepts(value):
            value = attrtypes.widen(decl.type, value)
        if not attrtypes.parse(decl.type).accepts(value):
            owner = _owner(rule, attrs, name)
            raise AttributeTypeError(
                f"{where} attribute '{name}': {owner} declares it {decl.type}, found "
                f"{attrtypes.describe(value)}; fix the module's value or the rule's declared type",
                node=node, module_type=owner, attr=name, expected=decl.type, found=value)
        attrs[name] = value
    return LoweringRecord(
        module_type=rule.type_name,
        version=rule.version,
        module_version=getattr(type(module), "_version", 1),
        attrs=types.MappingProxyType(attrs),
    )


def _owner(rule: LoweringRule, attrs: dict[str, Any], name: str) -> str:
    """The type name of the rule that declares the record attribute ``name``: the nearest enclosing child module
    recorded before it, else the record's own."""
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        child = attrtypes.module_type_name(attrs.get(".".join(parts[:k])))
        if child is not None:
            return child
    return rule.type_name


def module_declarations(records: Iterable[LoweringRecord]) -> dict[str, ModuleDecl]:
    """The manifest's ``modules`` table for these records: the declaration of every module type used as a
    record's ``module_type`` or as a module-valued attribute in one, sorted by type name. Unsupported records
    (``lift(..., strict=False)``) contribute nothing.

    Raises:
        UnsupportedModuleError: a module type has no registered rule (it was unregistered after lifting).
    """
    names: set[str] = set()
    for record in records:
        if not record.supported:
            continue
        names.add(record.module_type)
        names.update(n for n in map(attrtypes.module_type_name, record.attrs.values()) if n is not None)
    out: dict[str, ModuleDecl] = {}
    for name in sorted(names):
        rule = rule_named(name)
        if rule is None:
            raise UnsupportedModuleError(f"{name} has no lowering rule registered any more; register it again "
                                         f"before exporting")
        out[name] = rule.declaration()
    return out


def iter_graph_modules(gm: fx.GraphModule, path: str = ""):
    """Yield ``(path, graph_module)`` for ``gm`` and every GraphModule it calls through ``call_module``, depth
    first in node order; each GraphModule object is yielded once."""
    seen: set[int] = set()

    def walk(g: fx.GraphModule, p: str):
        if id(g) in seen:
            return
        seen.add(id(g))
        yield p, g
        modules = dict(g.named_modules(remove_duplicate=False))
        for node in g.graph.nodes:
            if node.op == "call_module":
                sub = modules[node.target]
                if isinstance(sub, fx.GraphModule):
                    yield from walk(sub, f"{p}.{node.target}" if p else node.target)

    yield from walk(gm, path)


def lift(gm: fx.GraphModule, *, strict: bool = True) -> fx.GraphModule:
    """Store a lowering record in ``node.meta["lowering"]`` on every leaf ``call_module`` node.

    Args:
        gm: the graph module; nested GraphModules reached by ``call_module`` are lifted too.
        strict: if true, any module without a usable rule raises one error listing all of them; if false, such
            nodes get a record with ``unsupported`` set to the reason, and the rest is lifted.

    Returns:
        ``gm`` itself (modified in place).

    Raises:
        UnsupportedModuleError: ``strict`` and at least one leaf module has no usable rule.
        LiftError: a rule names an attribute its module lacks, or a value has no plain encoding.

    Example:
        >>> import torch, torch.nn as nn, fxlower
        >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
        >>> rec = fxlower.lift(gm).graph.find_nodes(op="call_module")[0].meta["lowering"]
        >>> rec.module_type, rec.attrs["kernel_size"]
        ('torch.nn.Conv2d', (3, 3))
    """
    if not isinstance(gm, fx.GraphModule):
        raise TypeError(f"lift expects a torch.fx.GraphModule, got {type(gm).__qualname__}")
    unsupported: dict[str, list[tuple[str, str]]] = {}
    pending: list[tuple[fx.Node, LoweringRecord]] = []
    for path, g in iter_graph_modules(gm):
        modules = dict(g.named_modules(remove_duplicate=False))
        for node in g.graph.nodes:
            if node.op != "call_module":
                continue
            module = modules[node.target]
            if isinstance(module, fx.GraphModule):
                continue
            where = f"node '{node.name}'" + (f" in graph '{path}'" if path else "")
            try:
                rule = rule_for(module)
            except UnsupportedModuleError as e:
                tname = type_name(type(module))
                unsupported.setdefault(tname, []).append((where, str(e)))
                pending.append((node, LoweringRecord(tname, 0, getattr(type(module), "_version", 1),
                                                     types.MappingProxyType({}), unsupported=str(e))))
                continue
            pending.append((node, _record(rule, module, node.name, f"{where} ({rule.type_name})")))
    if unsupported and strict:
        raise UnsupportedModuleError(_unsupported_message(unsupported), unsupported)
    for node, record in pending:
        node.meta[META_KEY] = record
    return gm


def _unsupported_message(unsupported: dict[str, list[tuple[str, str]]]) -> str:
    lines = [f"{len(unsupported)} module type(s) in the graph have no usable lowering rule:"]
    for tname, uses in sorted(unsupported.items()):
        reason = uses[0][1]
        nodes = ", ".join(w for w, _ in uses)
        lines.append(f"  {tname}: {reason}; used by {nodes}")
    first = sorted(unsupported)[0].rsplit(".", 1)[-1]
    lines.append("Register a rule for each, e.g. decorate the class with "
                 "@fxlower.register_module(attrs={\"weight\": \"tensor\", \"eps\": \"float\", ...}, version=1), "
                 f"or call fxlower.register_module({first}, attrs={{...}}, version=1); "
                 "or pass strict=False to record these nodes as unsupported.")
    return "\n".join(lines)
