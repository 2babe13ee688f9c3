"""Reading side of the module and function declarations of format 1.1 (``Manifest.modules``, ``functions``,
``methods``; docs/format.md, design 1.1 sections E and F).

Two jobs, both pure functions of decoded data:

- :func:`check_declarations` checks the declarations' own shape (schema step 4): attribute type strings follow
  the grammar, names are names, parameter kinds are known, defaults are Values.
- :func:`check_record` checks one decoded lowering record against the declaration of its module type (step 8):
  every attribute is declared (directly, with ``*`` matching one decimal index, or as ``P.rest`` below a
  module-valued attribute ``P``) and holds a value of the declared type. Failures are ``lowering.attr``.

The attribute type grammar::

    type  := alt ('|' alt)*
    alt   := 'tensor' | 'int' | 'float' | 'bool' | 'str' | 'none' | 'function' | 'module' | 'dtype' | 'device'
           | 'enum(' word (',' word)* ')' | elem '[' [N] ']'
    elem  := 'int' | 'float' | 'bool' | 'str'
    word  := [A-Za-z0-9_]+
"""

# LEAD (merge): the type grammar below (parse_type / value_has_type) is this loader's own small parser, written
# before fxlower.attrtypes existed in this branch. Unify it with fxlower.attrtypes.check(type_str, value) at merge
# (one parser for the writer, the book and the loader); the values checked here are DECODED values (TensorRef for a
# tensor, FunctionRef / ModuleTypeRef, tuples for tuple Values).

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .errors import FormatError
from .names import check_function_name, check_method_name, check_name
from .values import FunctionRef, ModuleTypeRef, TensorRef, decode, kind_name

__all__ = ["PARAM_KINDS", "parse_type", "value_has_type", "check_declarations", "check_record"]

PARAM_KINDS = ("positional_only", "positional_or_keyword", "var_positional", "keyword_only", "var_keyword")

_SIMPLE = frozenset({"tensor", "int", "float", "bool", "str", "none", "function", "module", "dtype", "device"})
_ELEMS = frozenset({"int", "float", "bool", "str"})
_ENUM = re.compile(r"^enum\(([A-Za-z0-9_]+(?:,[A-Za-z0-9_]+)*)\)\Z")
_TUPLE = re.compile(r"^(int|float|bool|str)\[(0|[1-9][0-9]{0,8})?\]\Z")
_INDEX = re.compile(r"^(0|[1-9][0-9]*)\Z")


def parse_type(text: str) -> tuple[tuple, ...]:
    """Parse an attribute type into its alternatives: ``("simple", name)``, ``("enum", words)`` or
    ``("tuple", elem, n or None)``.

    Raises:
        ValueError: ``text`` breaks the grammar (the message says where).
    """
    if type(text) is not str or not text:
        raise ValueError("an attribute type is a non-empty str")
    alts = []
    for alt in text.split("|"):
        if alt in _SIMPLE:
            alts.append(("simple", alt))
            continue
        m = _ENUM.match(alt)
        if m is not None:
            alts.append(("enum", frozenset(m.group(1).split(","))))
            continue
        m = _TUPLE.match(alt)
        if m is not None:
            alts.append(("tuple", m.group(1), None if m.group(2) is None else int(m.group(2))))
            continue
        raise ValueError(f"alternative {alt!r:.40} is not one of tensor, int, float, bool, str, none, function, "
                         f"module, dtype, device, enum(a,b), T[N] or T[] (T one of int, float, bool, str)")
    return tuple(alts)


def _scalar_is(elem: str, value: Any) -> bool:
    return {"int": int, "float": float, "bool": bool, "str": str}[elem] is type(value)


def value_has_type(alts: tuple[tuple, ...], value: Any) -> bool:
    """Whether a decoded Value has one of the parsed alternatives (an int is not a float, a bool not an int)."""
    for alt in alts:
        if alt[0] == "enum":
            if type(value) is str and value in alt[1]:
                return True
        elif alt[0] == "tuple":
            if (type(value) is tuple and (alt[2] is None or len(value) == alt[2])
                    and all(_scalar_is(alt[1], v) for v in value)):
                return True
        else:
            name = alt[1]
            if name in _ELEMS:
                if _scalar_is(name, value):
                    return True
            elif ((name == "none" and value is None) or (name == "tensor" and isinstance(value, TensorRef))
                  or (name == "function" and isinstance(value, FunctionRef))
                  or (name == "module" and isinstance(value, ModuleTypeRef))
                  or (name == "dtype" and isinstance(value, torch.dtype))
                  or (name == "device" and isinstance(value, torch.device))):
                return True
    return False


def _has_module(alts: tuple[tuple, ...]) -> bool:
    return ("simple", "module") in alts


# ------------------------------------------------------------------------------------------------ shape (step 4)

class Declarations:
    """The parsed ``modules`` table: module type -> [(attr name components, parsed type, type text)]."""

    def __init__(self, modules: dict[str, list[tuple[tuple[str, ...], tuple, str]]]):
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


def check_declarations(manifest: Any, where: str) -> Declarations:
    """Check ``modules``, ``functions`` and ``methods`` (their form, not their use), in that order.

    Raises:
        FormatError: a module type or attribute name that is not a name ("schema.name"), an attribute type breaking
            the grammar or a parameter kind not known ("schema.type"), a function or method key that is not a
            canonical function / method name ("graph.target"), a default that is not a Value.
    """
    parsed: dict[str, list[tuple[tuple[str, ...], tuple, str]]] = {}
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
                alts = parse_type(a.type)
            except ValueError as e:
                raise FormatError("schema.type", f"attribute '{a.name}' has the type {a.type!r:.60}: {e}",
                                  aw + ".type") from None
            attrs.append((parts, alts, a.type))
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

def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    return len(pattern) == len(parts) and all(p == q or (p == "*" and _INDEX.match(q) is not None)
                                              for p, q in zip(pattern, parts))


def _type_of(decls: Declarations, mtype: str, parts: tuple[str, ...], prefix: str,
             attrs: Mapping[str, Any]) -> tuple[tuple, str] | None:
    """The declared (parsed type, type text) of the attribute ``parts`` of a module of type ``mtype`` whose own
    attributes are ``prefix + name`` in the record, or None when nothing declares it (design E rules 1 and 2)."""
    declared = decls.modules[mtype]
    for pattern, alts, text in declared:
        if _matches(pattern, parts):
            return alts, text
    for cut in range(1, len(parts)):
        head, rest = parts[:cut], parts[cut:]
        for pattern, alts, _ in declared:
            if not (_has_module(alts) and _matches(pattern, head)):
                continue
            child = attrs.get(prefix + ".".join(head))
            if isinstance(child, ModuleTypeRef) and child.name in decls.modules:
                found = _type_of(decls, child.name, rest, prefix + ".".join(head) + ".", attrs)
                if found is not None:
                    return found
    return None


def check_record(decls: Declarations, module_type: str, attrs: Mapping[str, Any], where: str) -> None:
    """Check a decoded lowering record's attributes against ``modules[module_type]``.

    Raises:
        FormatError ("lowering.attr"): the module type (or the type of a ``module`` Value in the record) has no
            declaration, an attribute matches no declaration, or a value is not of its declared type.
    """
    if module_type not in decls.modules:
        raise FormatError("lowering.attr", f"module type '{module_type}' has no declaration in the manifest's "
                          f"'modules'; a 1.1 writer declares every module type it records", where + ".module_type")
    for name, value in attrs.items():
        w = f"{where}.attrs.{name}"
        if isinstance(value, ModuleTypeRef) and value.name not in decls.modules:
            raise FormatError("lowering.attr", f"attribute '{name}' is a module of type '{value.name}', which has "
                              f"no declaration in 'modules'", w)
        found = _type_of(decls, module_type, tuple(name.split(".")), "", attrs)
        if found is None:
            raise FormatError("lowering.attr", f"attribute '{name}' is not declared by '{module_type}' (nor below "
                              f"one of its module-valued attributes)", w)
        alts, text = found
        if not value_has_type(alts, value):
            shown = type(value).__name__ if not isinstance(value, (tuple, list, dict)) else kind_name(value)
            raise FormatError("lowering.attr", f"attribute '{name}' of '{module_type}' is declared {text} but "
                              f"holds {shown} {value!r:.60}", w)
