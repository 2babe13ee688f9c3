"""Reading side of the module and function declarations of format 1.1 (``Manifest.modules``, ``functions``,
``methods``; docs/format.md, design 1.1 sections E and F).

Two jobs, both pure functions of decoded data:

- :func:`check_declarations` checks the declarations' own shape (schema step 4): attribute type strings follow
  the grammar, names are names, parameter kinds are known, defaults are Values.
- :func:`check_record` checks one decoded lowering record against the declaration of its module type (step 8):
  every attribute is declared (directly, with ``*`` matching one decimal index, or as ``P.rest`` below a
  module-valued attribute ``P``) and holds a value of the declared type. Failures are ``lowering.attr``.

The attribute type grammar and the record-checking algorithm are :mod:`fxlower.format.attrtypes`'s, the same code the
book uses when lifting, so the writer never writes what this reader refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import attrtypes

from ..lowering import signatures
from ..errors import FormatError
from ..format.names import check_function_name, check_method_name, check_name
from ..format.values import ModuleTypeRef, decode

__all__ = ["PARAM_KINDS", "Declarations", "check_declarations", "check_record"]

PARAM_KINDS = tuple(signatures.PARAM_KINDS.values())


# ------------------------------------------------------------------------------------------------ shape (step 4)

class Declarations:
    """The checked ``modules`` table: module type -> its AttrDecls."""

    def __init__(self, modules: dict[str, list[Any]]):
        self.modules = modules


def _check_params(params: list, where: str) -> None:
    seen: set[str] = set()
    for i, p in enumerate(params):
        w = f"{where}[{i}]"
        if not p.name.isascii() or not p.name.isidentifier():
            raise FormatError("schema.name", f"parameter name {p.name!r:.40} is not an identifier", w + ".name")
        if p.name in seen:
            raise FormatError("schema.name", f"parameter '{p.name}' appears twice", w + ".name")
        seen.add(p.name)
        if p.kind not in PARAM_KINDS:
            raise FormatError("schema.type", f"parameter kind {p.kind!r:.40} is not one of {list(PARAM_KINDS)}",
                              w + ".kind")
        decode(p.default, w + ".default")
        if p.required and p.default is not None:
            raise FormatError("schema.type", f"parameter '{p.name}' is required, so its default is nil; found "
                              f"{p.default!r:.40}", w + ".default")


def check_declarations(manifest: Any, where: str) -> Declarations:
    """Check ``modules``, ``functions`` and ``methods`` (their form, not their use), in that order.

    Raises:
        FormatError: a module type or attribute name that is not a name ("schema.name"), an attribute type breaking
            the grammar or a parameter kind not known ("schema.type"), a function or method key that is not a
            canonical function / method name ("graph.target"), a default that is not a Value.
    """
    parsed: dict[str, list[Any]] = {}
    for mtype, decl in manifest.modules.items():
        w = f"{where}.modules.{mtype}"
        check_name(mtype, w)
        attrs = []
        seen: set[str] = set()
        for i, a in enumerate(decl.attrs):
            aw = f"{w}.attrs[{i}]"
            check_name(a.name, aw + ".name")
            parts = tuple(a.name.split("."))
            if any(p == "" for p in parts):
                raise FormatError("schema.name", f"attribute name {a.name!r:.60} has an empty component",
                                  aw + ".name")
            if a.name in seen:
                raise FormatError("schema.name", f"attribute '{a.name}' is declared twice", aw + ".name")
            seen.add(a.name)
            try:
                attrtypes.parse(a.type)
            except ValueError as e:
                raise FormatError("schema.type", f"attribute '{a.name}' has the type {a.type!r:.60}: {e}",
                                  aw + ".type") from None
            attrs.append(a)
        _check_params(decl.forward, w + ".forward")
        parsed[mtype] = attrs
    for table, check in (("functions", check_function_name), ("methods", check_method_name)):
        for name, overloads in getattr(manifest, table).items():
            w = f"{where}.{table}.{name}"
            check(name, w)
            for i, o in enumerate(overloads):
                _check_params(o.params, f"{w}[{i}].params")
    return Declarations(parsed)


# ------------------------------------------------------------------------------------------------ use (step 8)

def check_record(decls: Declarations, module_type: str, attrs: Mapping[str, Any], where: str) -> None:
    """Check a decoded lowering record's attributes against ``modules[module_type]``.

    Raises:
        FormatError ("lowering.attr"): the module type (or the type of a ``module`` Value in the record) has no
            declaration, an attribute matches no declaration, or a value is not of its declared type.
    """
    if module_type not in decls.modules:
        raise FormatError("lowering.attr", f"module type '{module_type}' has no declaration in the manifest's "
                          f"'modules'; a 1.1 writer declares every module type it records", where + ".module_type")
    problem = attrtypes.check_record(module_type, attrs, decls.modules.get)  # steps 2 and 3 of section 2.2
    if problem is not None:
        declared = f" (declared {problem.expected} by {problem.module_type})" if problem.expected else ""
        raise FormatError("lowering.attr", f"attribute '{problem.name}' of '{module_type}'{declared}: "
                          f"{problem.message}", f"{where}.attrs.{problem.name}")
    for name, value in attrs.items():  # step 4
        if isinstance(value, ModuleTypeRef) and value.name not in decls.modules:
            raise FormatError("lowering.attr", f"attribute '{name}' is a module of type '{value.name}', which has "
                              f"no declaration in 'modules'", f"{where}.attrs.{name}")
