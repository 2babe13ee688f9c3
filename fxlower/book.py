"""The book of lowering rules: which attributes of each leaf module a lowering needs.

A :class:`LoweringRule` says, for one ``nn.Module`` class, which attributes to fetch (hyperparameters and tensors,
dotted names reaching into children for composite modules), the rule's own version, and the ``_version`` of the
module class it was written against. Rules live in one registry keyed by class. The built-in rules covering
``torch.nn`` are in :mod:`fxlower._builtin_rules`; users add theirs with :func:`register_module`.

Lookup (:func:`rule_for`) walks the class's MRO: a class with its own rule uses it; a subclass without one uses
its nearest registered base's rule only if no class in between overrides ``forward`` (otherwise its computation may
differ from the base's and it is unsupported until registered). A module whose class ``_version`` is newer than
the one the rule was written for is refused, since its attribute names may have changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch.nn as nn
from torch.nn.modules.lazy import LazyModuleMixin

from .errors import RegistrationError, UnsupportedModuleError

__all__ = [
    "BOOK_VERSION",
    "LoweringRule",
    "default_matching",
    "register_module",
    "unregister_module",
    "find_rule",
    "rule_for",
    "rules",
    "type_name",
]

#: Version of the built-in book as a whole. Bumped whenever a built-in rule is added, removed or changed.
BOOK_VERSION = 1


def default_matching(name: str, target_version: int) -> str:
    """Map a rule's attribute name to the module's attribute name; the identity, as in ``param_fetch``."""
    return name


def type_name(cls: type) -> str:
    """The qualified name recorded for a module class: ``torch.nn.Conv2d`` for public ``torch.nn`` classes,
    ``module.QualName`` otherwise."""
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True)
class LoweringRule:
    """How to lift one module class.

    Attributes:
        module_type: the ``nn.Module`` class this rule is for.
        version: the rule's own version; bump it when the attribute list or meaning changes.
        attrs: attribute names to fetch, in order. Dotted names reach into children (``"out_proj.weight"``).
        module_version: the class ``_version`` the rule was written against.
        match: maps ``(attr name, module._version)`` to the attribute name on the module (seed compatible).
        subtree_tensors: also fetch every descendant module (recorded as its type name) and every parameter and
            buffer of the module's subtree under its dotted name (for composite leaves such as
            ``nn.TransformerEncoder``).
        instance_attrs: optional function returning extra attribute names that depend on the instance
            (e.g. per-layer hyperparameters of ``layers.0`` … ``layers.N-1``).
    """

    module_type: type
    version: int
    attrs: tuple[str, ...]
    module_version: int
    match: Callable[[str, int], str] = default_matching
    subtree_tensors: bool = False
    instance_attrs: Callable[[nn.Module], Iterable[str]] | None = None

    @property
    def type_name(self) -> str:
        return type_name(self.module_type)

    def declaration(self):  # TEMPORARY (lead's branch): replaced by the typed declaration from the book branch
        from .schema import ModuleDecl
        return ModuleDecl(version=self.version, attrs=[], forward=[])

    def attr_names(self, module: nn.Module) -> tuple[str, ...]:
        """Every attribute name this rule fetches from ``module``, in a stable order without duplicates."""
        names: dict[str, None] = dict.fromkeys(self.attrs)
        if self.instance_attrs is not None:
            names.update(dict.fromkeys(self.instance_attrs(module)))
        if self.subtree_tensors:
            # Every descendant module (its value is lifted as its type name, so a consumer knows what it is),
            # then every tensor of the subtree.
            names.update(dict.fromkeys(n for n, _ in module.named_modules(remove_duplicate=False) if n))
            names.update(dict.fromkeys(n for n, _ in module.named_parameters(remove_duplicate=False)))
            names.update(dict.fromkeys(n for n, _ in module.named_buffers(remove_duplicate=False)))
        return tuple(names)

    def fetch(self, module: nn.Module) -> dict[str, Any]:
        """Fetch the raw attribute values (not yet normalised) named by :meth:`attr_names`.

        Raises:
            AttributeError: an attribute is missing on the module (the caller adds context).
        """
        module_version = getattr(type(module), "_version", 1)
        out: dict[str, Any] = {}
        for name in self.attr_names(module):
            obj: Any = module
            for part in self.match(name, module_version).split("."):
                obj = getattr(obj, part)
            out[name] = obj
        return out


_REGISTRY: dict[type, LoweringRule] = {}


def _validate(rule: LoweringRule) -> None:
    if not (isinstance(rule.module_type, type) and issubclass(rule.module_type, nn.Module)):
        raise RegistrationError(f"register_module expects an nn.Module subclass, got {rule.module_type!r}")
    for field in ("version", "module_version"):
        value = getattr(rule, field)
        if type(value) is not int or value < 1:
            raise RegistrationError(
                f"{rule.type_name}: {field} must be a positive int, got {value!r}")
    seen: set[str] = set()
    for a in rule.attrs:
        if not isinstance(a, str) or not a or any(p == "" for p in a.split(".")):
            raise RegistrationError(f"{rule.type_name}: attribute name {a!r} is not a (dotted) identifier")
        if a in seen:
            raise RegistrationError(f"{rule.type_name}: attribute {a!r} is listed twice")
        seen.add(a)


def register_module(
    cls: type | None = None,
    *,
    attrs: Iterable[str] = (),
    version: int = 1,
    module_version: int | None = None,
    match: Callable[[str, int], str] = default_matching,
    subtree_tensors: bool = False,
    instance_attrs: Callable[[nn.Module], Iterable[str]] | None = None,
    replace: bool = False,
):
    """Register a lowering rule for a module class; usable as a decorator.

    Args:
        cls: the ``nn.Module`` subclass. Omit it to use ``register_module(...)`` as a decorator.
        attrs: attribute names a lowering needs (hyperparameters and tensors; dotted names reach children).
        version: the rule's version, recorded on every lifted node.
        module_version: the class ``_version`` the rule is written for; defaults to ``cls._version``.
        match: maps a rule attribute name to the module's attribute name, given the module's ``_version``.
        subtree_tensors: also fetch every parameter and buffer of the subtree (composite leaves).
        instance_attrs: extra attribute names computed from each instance.
        replace: allow replacing an existing rule for ``cls``; otherwise registering twice raises.

    Returns:
        ``cls`` (so the decorator leaves the class unchanged).

    Raises:
        RegistrationError: ``cls`` already has a rule and ``replace`` is false, or the arguments are invalid.

    Example:
        >>> import torch, torch.nn as nn, fxlower
        >>> @fxlower.register_module(attrs=["weight", "scale"], version=1)
        ... class Scale(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.weight = nn.Parameter(torch.ones(3)); self.scale = 2.0
        ...     def forward(self, x):
        ...         return x * self.weight * self.scale
    """

    def apply(klass: type) -> type:
        if isinstance(attrs, str):  # tuple("weight") would silently become ("w", "e", ...)
            raise RegistrationError(
                f"{type_name(klass) if isinstance(klass, type) else repr(klass)}: attrs must be a list of "
                f"attribute names, got the string {attrs!r}; write attrs=[{attrs!r}]")
        rule = LoweringRule(
            module_type=klass,
            version=version,
            attrs=tuple(attrs),
            module_version=getattr(klass, "_version", 1) if module_version is None else module_version,
            match=match,
            subtree_tensors=subtree_tensors,
            instance_attrs=instance_attrs,
        )
        _validate(rule)
        if klass in _REGISTRY and not replace:
            raise RegistrationError(
                f"{rule.type_name} already has a lowering rule (version {_REGISTRY[klass].version}); "
                f"pass replace=True to register_module to replace it")
        _REGISTRY[klass] = rule
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
        return _REGISTRY.pop(cls)
    except KeyError:
        raise RegistrationError(f"{type_name(cls)} has no lowering rule to unregister") from None


def find_rule(cls: type) -> LoweringRule | None:
    """The rule registered for exactly ``cls``, or None."""
    return _REGISTRY.get(cls)


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


from . import _builtin_rules  # noqa: E402,F401  (registers the torch.nn rules)
