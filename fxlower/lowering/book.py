"""The book of lowering rules: which attributes of each leaf module a lowering needs, and how to rebuild it.

A :class:`LoweringRule` says, for one ``nn.Module`` class, which attributes to record, each with a type (the
grammar of :mod:`fxlower.format.attrtypes`) and a one-line meaning; the rule's own version; the ``_version`` of the module
class it was written against; the module's ``forward`` parameters; and how to rebuild a module from recorded
attributes (:meth:`LoweringRule.rebuild`). Rules live in one registry keyed by class. The built-in rules covering
``torch.nn`` are in :mod:`fxlower.lowering._builtin_rules` (imported by the package); users add theirs with
:func:`register_module`.

Composite modules declare their children as ``module``-typed attributes (``out_proj: module``); a child's own
attributes are recorded under ``<child>.`` as the child's rule declares them. A declared name may contain ``*``,
one decimal index (``layers.*``, ``weight_ih_l*``): it stands for every such child module, parameter or buffer the
instance has.

Lookup (:func:`rule_for`) walks the class's MRO: a class with its own rule uses it; a subclass without one uses
its nearest registered base's rule only if no class in between overrides ``forward`` (otherwise its computation may
differ from the base's and it is unsupported until registered). A module whose class ``_version`` is newer than
the one the rule was written for is refused, since its attribute names may have changed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules.lazy import LazyModuleMixin

from ..format import attrtypes
from ..format.attrtypes import type_name
from ..errors import AttributeTypeError, ExportError, RegistrationError, UnsupportedModuleError
from ..format.schema import AttrDecl, ModuleDecl, Param
from .signatures import PARAM_KINDS
from ..format.values import encode

__all__ = [
    "BOOK_VERSION",
    "LoweringRule",
    "default_matching",
    "register_module",
    "unregister_module",
    "find_rule",
    "rule_for",
    "rule_named",
    "rules",
    "type_name",
]

#: Version of the built-in book as a whole. Bumped whenever a built-in rule is added, removed or changed.
BOOK_VERSION = 2

_NO_PERSISTENT: Mapping[str, bool] = types.MappingProxyType({})
_CONTAINER_TYPES = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def default_matching(name: str, target_version: int) -> str:
    """Map a rule's attribute name to the module's attribute name; the identity, as in ``param_fetch``."""
    return name


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _new_module(cls: type) -> nn.Module:
    """An instance of ``cls`` with only ``nn.Module`` state (its ``__init__`` is not run)."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    return module


def _is_module_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, nn.Module)


@dataclasses.dataclass(frozen=True)
class LoweringRule:
    """How to lift, declare and rebuild one module class.

    Attributes:
        module_type: the ``nn.Module`` class this rule is for.
        version: the rule's own version; bump it when the attribute list or meaning changes.
        attrs: the declared attributes (name, type, one-line doc), in record order. A name may be dotted and may
            contain ``*`` (one decimal index).
        module_version: the class ``_version`` the rule was written against.
        match: maps ``(attr name, module._version)`` to the attribute name on the module (seed compatible).
        containers: ``(path, container class)`` pairs: the containers that hold declared children without being
            recorded themselves (``("layers", nn.ModuleList)`` for ``layers.*``); rebuild creates them.
        finish: called with the rebuilt module after its attributes are set, to derive the private state the
            class's ``__init__`` computes (e.g. ``_ConvNd._reversed_padding_repeated_twice``).
        forward: the parameters of the class's ``forward`` (without ``self``), defaults encoded as Values.
    """

    module_type: type
    version: int
    attrs: tuple[AttrDecl, ...]
    module_version: int
    match: Callable[[str, int], str] = default_matching
    containers: tuple[tuple[str, type], ...] = ()
    finish: Callable[[nn.Module], None] | None = None
    forward: tuple[Param, ...] = ()

    @functools.cached_property
    def type_name(self) -> str:
        """The qualified name of :attr:`module_type` (:func:`type_name`)."""
        return type_name(self.module_type)

    @property
    def names(self) -> tuple[str, ...]:
        """The declared attribute names (with their ``*``), in order."""
        return tuple(d.name for d in self.attrs)

    def declaration(self) -> ModuleDecl:
        """The rule as the manifest's ``modules`` table holds it (docs/format.md)."""
        return ModuleDecl(version=self.version, attrs=list(self.attrs), forward=list(self.forward))

    def decl_of(self, name: str) -> AttrDecl | None:
        """The declaration a record attribute name matches directly (``*`` = one index), or None."""
        for d in self.attrs:
            if attrtypes.matches(d.name, name):
                return d
        return None

    # ------------------------------------------------------------------------------------------- lifting

    def _expanded(self, module: nn.Module) -> list[tuple[str, AttrDecl]]:
        """``(record name, declaration)`` for every declared attribute of ``module``, in record order.

        A run of consecutive ``*`` declarations expands together, ordered by index first and declaration order
        second (``weight_ih_l0, weight_hh_l0, ..., weight_ih_l1, ...``: the order the module registered them).
        """
        out: list[tuple[str, AttrDecl]] = []
        decls = self.attrs
        i = 0
        while i < len(decls):
            if "*" not in decls[i].name:
                out.append((decls[i].name, decls[i]))
                i += 1
                continue
            j = i
            while j < len(decls) and "*" in decls[j].name:
                j += 1
            run = decls[i:j]
            candidates = dict.fromkeys(n for n, _ in module.named_modules(remove_duplicate=False) if n)
            candidates.update(dict.fromkeys(n for n, _ in module.named_parameters(remove_duplicate=False)))
            candidates.update(dict.fromkeys(n for n, _ in module.named_buffers(remove_duplicate=False)))
            found = []
            for name in candidates:
                for pos, d in enumerate(run):
                    m = attrtypes.name_pattern(d.name).match(name)
                    if m is not None:
                        found.append(([int(x) for x in m.groups()], pos, name, d))
                        break
            found.sort(key=lambda f: (f[0], f[1]))
            out.extend((name, d) for _, _, name, d in found)
            i = j
        return out

    def walk(self, module: nn.Module) -> list[tuple[str, Any, AttrDecl]]:
        """Every attribute this rule records for ``module``: ``(name, raw value, declaration)`` in record order.

        A ``*`` name yields each matching child module, parameter or buffer of the instance, by index. After a
        module-typed attribute whose value is a module come the child's own attributes, per the child's rule, as
        ``<name>.<attr>``.

        Raises:
            AttributeError: a declared attribute (without ``*``) is missing on the module (the caller adds
                context).
            UnsupportedModuleError: a child module has no usable rule; the message names parent and child.
        """
        module_version = getattr(type(module), "_version", 1)
        out: list[tuple[str, Any, AttrDecl]] = []
        seen: set[str] = set()
        for name, decl in self._expanded(module):
            if name in seen:
                continue
            seen.add(name)
            value = _get(module, self.match(name, module_version))
            out.append((name, value, decl))
            if isinstance(value, nn.Module) and attrtypes.parse(decl.type).has_module:
                try:
                    child_rule = rule_for(value)
                except UnsupportedModuleError as e:
                    raise UnsupportedModuleError(
                        f"{self.type_name} child {name!r} cannot be lifted: {e}") from e
                for sub, v, d in child_rule.walk(value):
                    seen.add(f"{name}.{sub}")
                    out.append((f"{name}.{sub}", v, d))
        return out

    def attr_names(self, module: nn.Module) -> tuple[str, ...]:
        """Every attribute name this rule records for ``module``, in record order (see :meth:`walk`)."""
        return tuple(name for name, _, _ in self.walk(module))

    def fetch(self, module: nn.Module) -> dict[str, Any]:
        """The raw attribute values (not yet normalised) named by :meth:`attr_names`; a child module is the
        module object itself.

        Raises:
            AttributeError: an attribute is missing on the module (the caller adds context).
        """
        return {name: value for name, value, _ in self.walk(module)}

    # ------------------------------------------------------------------------------------------- rebuilding

    def rebuild(self, attrs: Mapping[str, Any], *, persistent: Mapping[str, bool] = _NO_PERSISTENT) -> nn.Module:
        """A module of :attr:`module_type` (eval mode) built from a record's resolved attributes.

        Args:
            attrs: record attribute name -> resolved value: tensors as ``torch.Tensor`` (``nn.Parameter``
                instances for parameters, with their ``requires_grad`` already set), functions as function
                objects, module-typed attributes as ``nn.Module`` classes (the child is rebuilt by that class's
                rule from the ``<name>.`` attributes), everything else as lifting stores it.
            persistent: buffer attribute name -> whether it is persistent (in ``state_dict()``). A tensor that
                is neither an ``nn.Parameter`` nor named here becomes a plain tensor attribute.

        Raises:
            AttributeTypeError: an attribute is not declared (by this rule or a child's), or its value does not
                have its declared type.
            UnsupportedModuleError: a module-typed attribute names a class without a rule of its own.
        """
        module = _new_module(self.module_type)
        own: list[tuple[str, Any, AttrDecl]] = []
        children: dict[str, dict[str, Any]] = {}
        for name, value in attrs.items():
            decl = self.decl_of(name)
            if decl is not None:
                problem = attrtypes.check(decl.type, value)
                if problem is not None:
                    raise AttributeTypeError(
                        f"rebuilding {self.type_name}: attribute '{name}' {problem}", node="",
                        module_type=self.type_name, attr=name, expected=decl.type, found=value)
                own.append((name, value, decl))
                continue
            head = self._child_head(name, attrs)
            if head is None:
                raise AttributeTypeError(
                    f"rebuilding {self.type_name}: '{name}' is not an attribute {self.type_name} declares (nor "
                    f"one of a declared child module's); declared: {', '.join(self.names) or '(none)'}",
                    node="", module_type=self.type_name, attr=name, expected="", found=value)
            children.setdefault(head, {})[name[len(head) + 1:]] = value
        created: list[nn.Module] = [module]
        for name, value, decl in own:
            parent, leaf = self._parent(module, name, created)
            if _is_module_class(value):
                rule = _REGISTRY.get(value)
                if rule is None:
                    raise UnsupportedModuleError(
                        f"rebuilding {self.type_name}: child '{name}' is a {type_name(value)}, which has no "
                        f"lowering rule of its own; register one with fxlower.register_module")
                prefix = name + "."
                sub_persistent = {k[len(prefix):]: p for k, p in persistent.items() if k.startswith(prefix)}
                child = rule.rebuild(children.get(name, {}), persistent=sub_persistent)
                if isinstance(parent, nn.ModuleList) and leaf != str(len(parent)):
                    raise AttributeTypeError(
                        f"rebuilding {self.type_name}: '{name}' is not the next index of the ModuleList "
                        f"'{name.rpartition('.')[0]}' (expected index {len(parent)})", node="",
                        module_type=self.type_name, attr=name, expected=decl.type, found=value)
                parent.add_module(leaf, child)
            elif isinstance(value, nn.Parameter):
                parent.register_parameter(leaf, value)
            elif isinstance(value, torch.Tensor) and name in persistent:
                parent.register_buffer(leaf, value, persistent=bool(persistent[name]))
            else:
                object.__setattr__(parent, leaf, value)
        if self.finish is not None:
            self.finish(module)
        for m in created:
            m.training = False
        return module

    def _child_head(self, name: str, attrs: Mapping[str, Any]) -> str | None:
        """The declared module-typed attribute ``P`` such that ``name`` is ``P.rest`` and the record's value of
        ``P`` is a module class, or None."""
        parts = name.split(".")
        for k in range(1, len(parts)):
            head = ".".join(parts[:k])
            decl = self.decl_of(head)
            if decl is not None and attrtypes.parse(decl.type).has_module and _is_module_class(attrs.get(head)):
                return head
        return None

    def _parent(self, module: nn.Module, name: str, created: list[nn.Module]) -> tuple[nn.Module, str]:
        """The module that holds attribute ``name`` (creating declared containers on the way) and its leaf name."""
        path, _, leaf = name.rpartition(".")
        parent = module
        if path:
            walked = []
            for part in path.split("."):
                walked.append(part)
                nxt = parent._modules.get(part)
                if nxt is None:
                    cls = dict(self.containers).get(".".join(walked))
                    if cls is None:
                        raise AttributeTypeError(
                            f"rebuilding {self.type_name}: attribute '{name}' is below '{'.'.join(walked)}', which "
                            f"is neither a declared child module nor a container of the rule", node="",
                            module_type=self.type_name, attr=name, expected="", found=None)
                    nxt = cls()
                    created.append(nxt)
                    if isinstance(parent, nn.ModuleList) and part != str(len(parent)):
                        raise AttributeTypeError(
                            f"rebuilding {self.type_name}: '{'.'.join(walked)}' is not the next index of its "
                            f"ModuleList", node="", module_type=self.type_name, attr=name, expected="", found=None)
                    parent.add_module(part, nxt)
                parent = nxt
        return parent, leaf


_REGISTRY: dict[type, LoweringRule] = {}
_BY_NAME: dict[str, LoweringRule] = {}


def _normalise_attrs(owner: str, attrs: Any) -> tuple[AttrDecl, ...]:
    """``attrs`` as given to register_module -> AttrDecls, or RegistrationError saying how to write them."""
    if isinstance(attrs, str):
        raise RegistrationError(
            f"{owner}: attrs must be a dict {{name: type}} or a list of (name, type) / (name, type, doc) tuples, "
            f"got the string {attrs!r}; write attrs={{{attrs!r}: '<type>'}}")
    items = list(attrs.items()) if isinstance(attrs, Mapping) else list(attrs)
    out: list[AttrDecl] = []
    for item in items:
        if isinstance(item, str):
            raise RegistrationError(
                f"{owner}: attribute {item!r} has no type; write it as ({item!r}, '<type>') or "
                f"({item!r}, '<type>', '<one-line meaning>'), or attrs={{{item!r}: '<type>'}}, where <type> is e.g. "
                f"'tensor', 'tensor|none', 'int', 'float', 'bool', 'str', 'int[2]', 'enum(a,b)', 'function', "
                f"'module' (docs/writing-rules.md lists the grammar)")
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise RegistrationError(
                f"{owner}: each attribute is a (name, type) or (name, type, doc) tuple, got {item!r}")
        name, type_text = item[0], item[1]
        doc = item[2] if len(item) == 3 else ""
        if not isinstance(name, str) or not name or any(p == "" or p.startswith("__") or "**" in p
                                                         for p in name.split(".")):
            raise RegistrationError(f"{owner}: attribute name {name!r} is not a (dotted) identifier")
        try:
            attrtypes.parse(type_text)
        except (ValueError, TypeError) as e:
            raise RegistrationError(f"{owner}: attribute {name!r} has an invalid type: {e}") from None
        if not isinstance(doc, str) or "\n" in doc:
            raise RegistrationError(f"{owner}: the doc of attribute {name!r} must be one line of text, got {doc!r}")
        out.append(AttrDecl(name=name, type=type_text, doc=doc))
    return tuple(out)




def forward_params(cls: type) -> tuple[Param, ...]:
    """The parameters of ``cls.forward`` without ``self``, as schema Params (defaults encoded as Values).

    A parameter without a default is ``required`` (``*args``/``**kwargs`` are not) and has a nil default.

    Raises:
        RegistrationError: a default has no Value encoding (only None, bool, int, float, str, and tuples or
            lists of those are written); the message names the parameter.
    """
    try:
        sig = inspect.signature(cls.forward)
    except (TypeError, ValueError) as e:
        raise RegistrationError(f"{type_name(cls)}: the signature of forward cannot be read ({e})") from None
    params = list(sig.parameters.values())
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # self
    out = []
    for p in params:
        var = p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        if p.default is inspect.Parameter.empty:
            out.append(Param(name=p.name, kind=PARAM_KINDS[p.kind], default=None, required=not var))
            continue
        if not _plain_default(p.default):
            raise RegistrationError(
                f"{type_name(cls)}: forward parameter '{p.name}' has the default {p.default!r:.60}, which a "
                f"manifest cannot hold (defaults are None, bool, int, float, str, or tuples of those); give "
                f"forward a default of None and compute the value inside it")
        try:
            default = encode(p.default, where=f"{type_name(cls)}.forward parameter '{p.name}'")
        except ExportError as e:
            raise RegistrationError(str(e)) from None
        out.append(Param(name=p.name, kind=PARAM_KINDS[p.kind], default=default, required=False))
    return tuple(out)


def _plain_default(value: Any, depth: int = 0) -> bool:
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (tuple, list) and depth < 8:
        return all(_plain_default(v, depth + 1) for v in value)
    return False


def _containers(owner: str, decls: tuple[AttrDecl, ...], given: Mapping[str, type] | None) -> tuple:
    """Containers rebuild creates: every prefix followed by a ``*`` component (nn.ModuleList unless given)."""
    out: dict[str, type] = {}
    for d in decls:
        parts = d.name.split(".")
        for k in range(1, len(parts)):
            if parts[k] == "*":
                out.setdefault(".".join(parts[:k]), nn.ModuleList)
    for path, cls in (given or {}).items():
        if not isinstance(path, str) or not path or not (isinstance(cls, type) and issubclass(cls, _CONTAINER_TYPES)):
            raise RegistrationError(f"{owner}: containers maps a path to nn.ModuleList, nn.Sequential or "
                                    f"nn.ModuleDict, got {path!r}: {cls!r}")
        out[path] = cls
    return tuple(out.items())


def _validate(rule: LoweringRule) -> None:
    for field in ("version", "module_version"):
        value = getattr(rule, field)
        if type(value) is not int or value < 1:
            raise RegistrationError(
                f"{rule.type_name}: {field} must be a positive int, got {value!r}")
    seen: set[str] = set()
    for d in rule.attrs:
        if d.name in seen:
            raise RegistrationError(f"{rule.type_name}: attribute {d.name!r} is listed twice")
        seen.add(d.name)
    if rule.finish is not None and not callable(rule.finish):
        raise RegistrationError(f"{rule.type_name}: finish must be a callable taking the module, got "
                                f"{rule.finish!r}")


def register_module(
    cls: type | None = None,
    *,
    attrs: Mapping[str, str] | Iterable[tuple[str, str] | tuple[str, str, str]] = (),
    version: int = 1,
    module_version: int | None = None,
    match: Callable[[str, int], str] = default_matching,
    containers: Mapping[str, type] | None = None,
    finish: Callable[[nn.Module], None] | None = None,
    replace: bool = False,
):
    """Register a lowering rule for a module class; usable as a decorator.

    Args:
        cls: the ``nn.Module`` subclass. Omit it to use ``register_module(...)`` as a decorator.
        attrs: the attributes a lowering needs, each with its type (docs/writing-rules.md gives the grammar): a
            dict ``{name: type}``, or a list of ``(name, type)`` or ``(name, type, one-line doc)`` tuples. Dotted
            names reach children; ``*`` stands for one decimal index (``"blocks.*"``); declare a child module
            with the type ``module`` to record its attributes by its own rule.
        version: the rule's version, recorded on every lifted node.
        module_version: the class ``_version`` the rule is written for; defaults to ``cls._version``.
        match: maps a rule attribute name to the module's attribute name, given the module's ``_version``.
        containers: ``{path: nn.ModuleList | nn.Sequential | nn.ModuleDict}``: containers holding declared
            children that rebuild must create; a path followed by a ``*`` component defaults to nn.ModuleList.
        finish: called with a rebuilt module after its attributes are set, to derive private state that the
            class's ``__init__`` computes from them.
        replace: allow replacing an existing rule for ``cls`` or for another class of the same type name;
            otherwise registering twice raises.

    Returns:
        ``cls`` (so the decorator leaves the class unchanged).

    Raises:
        RegistrationError: ``cls`` (or another class with the same type name, such as an earlier definition of
            it) already has a rule and ``replace`` is false, or the arguments are invalid (an attribute without a
            type, an invalid type string, a forward default that a manifest cannot hold, ...).

    Example:
        >>> import torch, torch.nn as nn, fxlower
        >>> @fxlower.register_module(attrs={"weight": "tensor", "scale": "float"}, version=1)
        ... class Scale(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.weight = nn.Parameter(torch.ones(3)); self.scale = 2.0
        ...     def forward(self, x):
        ...         return x * self.weight * self.scale
    """

    def apply(klass: type) -> type:
        if not (isinstance(klass, type) and issubclass(klass, nn.Module)):
            raise RegistrationError(f"register_module expects an nn.Module subclass, got {klass!r}")
        owner = type_name(klass)
        decls = _normalise_attrs(owner, attrs)
        rule = LoweringRule(
            module_type=klass,
            version=version,
            attrs=decls,
            module_version=getattr(klass, "_version", 1) if module_version is None else module_version,
            match=match,
            containers=_containers(owner, decls, containers),
            finish=finish,
            forward=forward_params(klass),
        )
        _validate(rule)
        if klass in _REGISTRY and not replace:
            raise RegistrationError(
                f"{rule.type_name} already has a lowering rule (version {_REGISTRY[klass].version}); "
                f"pass replace=True to register_module to replace it")
        other = _BY_NAME.get(rule.type_name)
        if other is not None and other.module_type is not klass:
            if not replace:
                raise RegistrationError(
                    f"{rule.type_name} is already the type name of another registered class "
                    f"({other.module_type!r}, e.g. an earlier definition of the same class); a loader could not "
                    f"tell the two apart: pass replace=True to register_module to replace its rule")
            del _REGISTRY[other.module_type]
        _REGISTRY[klass] = rule
        _BY_NAME[rule.type_name] = rule
        return klass

    if cls is None:
        return apply
    return apply(cls)


def unregister_module(cls: type) -> LoweringRule:
    """Remove and return the rule registered for exactly ``cls``.

    Raises:
        RegistrationError: ``cls`` has no rule of its own.
    """
    try:
        rule = _REGISTRY.pop(cls)
    except KeyError:
        raise RegistrationError(f"{type_name(cls)} has no lowering rule to unregister") from None
    if _BY_NAME.get(rule.type_name) is rule:
        del _BY_NAME[rule.type_name]
    return rule


def find_rule(cls: type) -> LoweringRule | None:
    """The rule registered for exactly ``cls``, or None."""
    return _REGISTRY.get(cls)


def rule_named(name: str) -> LoweringRule | None:
    """The rule whose :attr:`LoweringRule.type_name` is ``name`` (as a record's ``module_type`` or a ``module``
    Value gives it), or None."""
    return _BY_NAME.get(name)


def rules() -> tuple[LoweringRule, ...]:
    """Every registered rule, sorted by type name."""
    return tuple(sorted(_REGISTRY.values(), key=lambda r: r.type_name))


def rule_for(module: nn.Module) -> LoweringRule:
    """The rule that lifts ``module``.

    Raises:
        UnsupportedModuleError: no rule applies; the message says why (no rule, ``forward`` overridden by a
            subclass, a module ``_version`` newer than the rule's, or a lazy module not yet initialised).
    """
    cls = type(module)
    name = type_name(cls)
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        # A lazy module's class does not override forward, so without this check it would get its base's rule
        # (LazyLinear -> Linear) and fetch UninitializedParameter placeholders instead of tensors.
        becomes = getattr(cls, "cls_to_become", None)
        after = f" (it then becomes {type_name(becomes)})" if isinstance(becomes, type) else ""
        raise UnsupportedModuleError(
            f"{name} is a lazy module whose parameters are not initialised yet; run one forward pass{after} "
            f"before lifting")
    overriding: list[str] = []
    for klass in cls.__mro__:
        rule = _REGISTRY.get(klass)
        if rule is not None:
            if overriding:
                raise UnsupportedModuleError(
                    f"{name} subclasses {rule.type_name} but {overriding[0]} overrides forward, so the "
                    f"{rule.type_name} rule may not describe its computation")
            module_version = getattr(cls, "_version", 1)
            if module_version > rule.module_version:
                raise UnsupportedModuleError(
                    f"{name} has _version {module_version} but its rule (version {rule.version}) was written "
                    f"for _version {rule.module_version}; check its attributes and register an updated rule "
                    f"with replace=True")
            return rule
        if klass is nn.Module:
            break
        if "forward" in vars(klass):
            overriding.append(type_name(klass))
    raise UnsupportedModuleError(f"{name} has no lowering rule")
