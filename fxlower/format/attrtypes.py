"""Types of lowering attributes: the type grammar of docs/format.md, one parser and one checker.

A lowering rule declares each attribute it records with a type string (``fxlower.format.schema.AttrDecl.type``)::

    type   := alt ('|' alt)*
    alt    := 'tensor' | 'int' | 'float' | 'bool' | 'str' | 'none' | 'function' | 'module' | 'dtype' | 'device'
            | 'enum(' word (',' word)* ')'       a str equal to one of the words
            | elem '[' [N] ']'                  a tuple of exactly N (or, with no N, any number of) elems
    elem   := 'int' | 'float' | 'bool' | 'str'
            | '(' scalar ('|' scalar)* ')'      an element that may take several kinds, e.g. (int|none)[2]
    scalar := 'int' | 'float' | 'bool' | 'str' | 'none'
    word   := [A-Za-z0-9_]+
    N      := 0 | [1-9][0-9]*

No spaces. Examples: ``int[2]|enum(same,valid)`` (Conv2d.padding), ``tensor|none`` (Conv2d.bias),
``int|(int|none)[2]`` (AdaptiveAvgPool2d.output_size).

:func:`check` works on the values lifting stores (``torch.Tensor``, function objects, ``nn.Module`` classes) and on
the values the loader decodes (``fxlower.io.loading.TensorRef``, :class:`fxlower.format.values.FunctionRef`,
:class:`fxlower.format.values.ModuleTypeRef`); tuples are tuples either way. An ``int`` is an int and never a bool; a
``float`` is a float and never an int (lifting widens an int declared ``float`` with :func:`widen` first).

Attribute names in a declaration may contain ``*``, which stands for one decimal index (``0`` or ``[1-9][0-9]*``):
``layers.*`` matches ``layers.0`` and ``layers.12``; ``weight_ih_l*_reverse`` matches ``weight_ih_l0_reverse``.
:func:`check_record` checks a whole record against the declarations, following module-valued attributes into the
child's declaration (docs/format.md, lowering records).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from .values import FunctionRef, ModuleTypeRef

__all__ = ["AttrType", "parse", "check", "widen", "describe", "name_pattern", "matches", "check_record",
           "resolve_record", "RecordProblem", "module_type_name", "type_name"]

_SCALARS = ("int", "float", "bool", "str", "none")
_ELEMS = ("int", "float", "bool", "str")
_KINDS = ("tensor", "int", "float", "bool", "str", "none", "function", "module", "dtype", "device")
_WORD = re.compile(r"[A-Za-z0-9_]+\Z")
_COUNT = re.compile(r"(0|[1-9][0-9]*)?\Z")
_INDEX = "(0|[1-9][0-9]*)"


_EXACT = {"int": int, "float": float, "bool": bool, "str": str, "none": type(None)}


@dataclasses.dataclass(frozen=True)
class AttrType:
    """A parsed type string.

    Attributes:
        text: the type string as declared.
        kinds: the plain kinds it accepts (``"tensor"``, ``"int"``, ...).
        enums: for each ``enum(...)`` alternative, its words.
        tuples: for each ``elem[N]`` alternative, ``(element kinds, N or None)``.
    """

    text: str
    kinds: frozenset[str]
    enums: tuple[frozenset[str], ...]
    tuples: tuple[tuple[frozenset[str], int | None], ...]

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this type."""
        t = type(value)
        if t in self._exact:
            return True
        if self._others and any(_is_kind(k, value) for k in self._others):
            return True
        if t is str and any(value in words for words in self.enums):
            return True
        if t is tuple:
            for elems, n in self.tuples:
                if (n is None or len(value) == n) and all(any(_is_kind(k, v) for k in elems) for v in value):
                    return True
        return False

    @functools.cached_property
    def _exact(self) -> frozenset[type]:
        return frozenset(_EXACT[k] for k in self.kinds if k in _EXACT)

    @functools.cached_property
    def _others(self) -> tuple[str, ...]:
        return tuple(sorted(k for k in self.kinds if k not in _EXACT))

    @property
    def has_module(self) -> bool:
        """Whether a value of this type may be a child module (``module`` is one of the alternatives)."""
        return "module" in self.kinds


def _split_top(text: str) -> list[str]:
    """Split at the '|' that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@functools.lru_cache(maxsize=None)
def parse(text: str) -> AttrType:
    """Parse a type string.

    Raises:
        ValueError: ``text`` is not in the grammar; the message names the offending part.
    """
    if type(text) is not str or not text:
        raise ValueError(f"a type is a non-empty string such as 'int' or 'tensor|none', got {text!r}")
    if text.count("(") != text.count(")"):
        raise ValueError(f"unbalanced parentheses in the type {text!r}")
    kinds: set[str] = set()
    enums: list[frozenset[str]] = []
    tuples: list[tuple[frozenset[str], int | None]] = []
    for alt in _split_top(text):
        if alt in _KINDS:
            kinds.add(alt)
        elif alt.startswith("enum(") and alt.endswith(")"):
            words = alt[5:-1].split(",")
            bad = [w for w in words if not _WORD.match(w)]
            if bad:
                raise ValueError(f"enum words are [A-Za-z0-9_]+, separated by ',' without spaces; {bad[0]!r} "
                                 f"in {text!r} is not one")
            enums.append(frozenset(words))
        elif alt.endswith("]") and "[" in alt:
            elem, _, count = alt[:-1].rpartition("[")
            if not _COUNT.match(count):
                raise ValueError(f"the count in {alt!r} (type {text!r}) is not a decimal number")
            if elem in _ELEMS:
                elems = frozenset({elem})
            elif elem.startswith("(") and elem.endswith(")") and elem[1:-1]:
                inner = elem[1:-1].split("|")
                bad = [s for s in inner if s not in _SCALARS]
                if bad:
                    raise ValueError(f"a tuple element alternative is one of {', '.join(_SCALARS)}; {bad[0]!r} in "
                                     f"{text!r} is not")
                elems = frozenset(inner)
            else:
                raise ValueError(f"a tuple element is one of {', '.join(_ELEMS)} or a parenthesised union of "
                                 f"{', '.join(_SCALARS)}; {elem!r} in {text!r} is not")
            tuples.append((elems, int(count) if count else None))
        else:
            raise ValueError(f"{alt!r} in the type {text!r} is not a type; expected one of {', '.join(_KINDS)}, "
                             f"enum(a,b), int[N], int[], float[N], bool[N], str[N] or (int|none)[N]")
    return AttrType(text, frozenset(kinds), tuple(enums), tuple(tuples))


def _is_kind(kind: str, value: Any) -> bool:
    if kind == "none":
        return value is None
    if kind in ("int", "float", "bool", "str"):
        return type(value) is {"int": int, "float": float, "bool": bool, "str": str}[kind]
    if kind == "tensor":
        # a decoded TensorRef is checked by name first so that lifting never imports the loader
        return isinstance(value, torch.Tensor) or (type(value).__name__ == "TensorRef" and _is_tensor_ref(value))
    if kind == "function":
        return isinstance(value, (FunctionRef, types.FunctionType, types.BuiltinFunctionType,
                                  types.BuiltinMethodType))
    if kind == "module":
        return isinstance(value, ModuleTypeRef) or (isinstance(value, type) and issubclass(value, nn.Module))
    if kind == "dtype":
        return isinstance(value, torch.dtype)
    return isinstance(value, torch.device)  # device


def _is_tensor_ref(value: Any) -> bool:
    from ..io.loading import TensorRef  # the loaded representation (loading imports the book, which imports this)
    return isinstance(value, TensorRef)


def check(type_text: str, value: Any) -> str | None:
    """None when ``value`` has the type ``type_text``, else a message saying what was expected and found.

    Raises:
        ValueError: ``type_text`` is not a valid type string.
    """
    if parse(type_text).accepts(value):
        return None
    return f"expected {type_text}, found {describe(value)}"


def widen(type_text: str, value: Any) -> Any:
    """``value`` with ints widened to floats where the type wants a float and not an int.

    An int (never a bool) is widened when the type accepts float but not int; a tuple is widened element-wise
    when, as it is, no alternative accepts it but one with float elements of the right length would. Any other
    value is returned unchanged (check it with :func:`check`).
    """
    t = parse(type_text)
    if t.accepts(value):
        return value
    if type(value) is int and "float" in t.kinds:
        return float(value)
    if type(value) is tuple:
        wider = tuple(float(v) if type(v) is int else v for v in value)
        if t.accepts(wider):
            return wider
    return value


def describe(value: Any) -> str:
    """How an error message shows a value: ``the int 3``, ``the str 'x'``, ``a tensor``, ``None``, ..."""
    if value is None:
        return "None"
    if type(value) in (bool, int, float, str):
        return f"the {type(value).__name__} {value!r:.60}"
    if type(value) is tuple:
        return f"the tuple {value!r:.80}"
    if isinstance(value, torch.Tensor) or type(value).__name__ == "TensorRef":
        return "a tensor"
    if isinstance(value, FunctionRef):
        return f"the function {value.name}"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.BuiltinMethodType)):
        return f"the function {getattr(value, '__module__', None)}.{getattr(value, '__qualname__', value)}"
    name = module_type_name(value)
    if name is not None:
        return f"the module type {name}"
    if isinstance(value, nn.Module):
        return f"a {type(value).__module__}.{type(value).__qualname__} module instance"
    return f"a {type(value).__module__}.{type(value).__qualname__} ({value!r:.60})"


def type_name(cls: type) -> str:
    """The qualified name recorded for a module class: ``torch.nn.Conv2d`` for public ``torch.nn`` classes,
    ``module.QualName`` otherwise (also ``fxlower.lowering.book.type_name``)."""
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def module_type_name(value: Any) -> str | None:
    """The module type name a module-kind value stands for (an ``nn.Module`` class or a ModuleTypeRef), else
    None."""
    if isinstance(value, ModuleTypeRef):
        return value.name
    if isinstance(value, type) and issubclass(value, nn.Module):
        return type_name(value)
    return None


# ------------------------------------------------------------------------------------------------ names

@functools.lru_cache(maxsize=None)
def name_pattern(name: str) -> re.Pattern[str]:
    """The regular expression a declared attribute name stands for (``*`` is one decimal index, captured as a
    group)."""
    return re.compile("".join(_INDEX if c == "*" else re.escape(c) for c in name) + r"\Z")


def matches(declared: str, name: str) -> bool:
    """Whether the record attribute ``name`` is an instance of the declared name ``declared``."""
    if "*" not in declared:
        return declared == name
    return name_pattern(declared).match(name) is not None


@dataclasses.dataclass(frozen=True)
class RecordProblem:
    """What is wrong with one attribute of a lowering record.

    Attributes:
        name: the attribute name in the record (dotted).
        module_type: the module type whose declaration the name was checked against (the record's own, or a
            child's for ``P.rest`` names).
        expected: the declared type, or ``""`` when the name matches no declaration.
        message: what is wrong, e.g. ``expected float, found the str 'x'``.
    """

    name: str
    module_type: str
    expected: str
    message: str


Decls = Callable[[str], Sequence[Any] | None]  # module type name -> its AttrDecls (name, type, doc) or None


def resolve_record(module_type: str, attrs: Mapping[str, Any],
                   decls: Decls) -> tuple[dict[str, tuple[str, Any]], RecordProblem | None]:
    """Find the declaration of every attribute of a record.

    Rules (docs/format.md): a name matches a declared name (``*`` = one decimal index); otherwise it is
    ``P.rest`` where ``P`` matches a declaration whose type includes ``module``, the record's value of ``P`` is a
    module type ``M`` (a class or ModuleTypeRef), and ``rest`` is resolved against ``M``'s declaration.

    Args:
        module_type: the record's module type name.
        attrs: the record's attributes (name -> value).
        decls: maps a module type name to its declared attributes (objects with ``name`` and ``type``), or None
            when it has no declaration.

    Returns:
        ``(found, problem)``: ``found`` maps each resolved name to ``(owning module type, AttrDecl)``;
        ``problem`` is the first name that resolves to nothing (in record order), or None.
    """
    found: dict[str, tuple[str, Any]] = {}
    problem = _resolve(module_type, "", list(attrs), attrs, decls, found)
    return found, problem


def _resolve(module_type: str, prefix: str, names: list[str], attrs: Mapping[str, Any], decls: Decls,
             found: dict[str, tuple[str, Any]]) -> RecordProblem | None:
    declared = decls(module_type)
    if declared is None:
        return RecordProblem(prefix + names[0] if names else prefix.rstrip("."), module_type, "",
                             f"the module type {module_type} has no declaration")
    children: dict[str, list[str]] = {}
    child_types: dict[str, str] = {}
    for name in names:
        decl = next((d for d in declared if matches(d.name, name)), None)
        if decl is not None:
            found[prefix + name] = (module_type, decl)
            continue
        parts = name.split(".")
        for k in range(1, len(parts)):
            head = ".".join(parts[:k])
            hdecl = next((d for d in declared if matches(d.name, head)), None)
            if hdecl is None or not _has_module(hdecl.type):
                continue
            child = module_type_name(attrs.get(prefix + head))
            if child is None:
                continue
            children.setdefault(head, []).append(".".join(parts[k:]))
            child_types[head] = child
            break
        else:
            return RecordProblem(prefix + name, module_type, "",
                                 f"'{name}' is not an attribute {module_type} declares (nor one of a declared "
                                 f"child module's)")
    for head, rest in children.items():
        problem = _resolve(child_types[head], f"{prefix}{head}.", rest, attrs, decls, found)
        if problem is not None:
            return problem
    return None


def _has_module(type_text: str) -> bool:
    try:
        return parse(type_text).has_module
    except ValueError:
        return False


def check_record(module_type: str, attrs: Mapping[str, Any], decls: Decls) -> RecordProblem | None:
    """The first problem of a record against the declarations (an undeclared name, a value not of its declared
    type, a bad declared type), or None when every attribute is declared and has its type.

    This is what the loader checks for the ``lowering.attr`` code, on decoded values.
    """
    found, problem = resolve_record(module_type, attrs, decls)
    if problem is not None:
        return problem
    for name, value in attrs.items():
        owner, decl = found[name]
        try:
            message = check(decl.type, value)
        except ValueError as e:
            return RecordProblem(name, owner, str(decl.type), f"the declared type is invalid: {e}")
        if message is not None:
            return RecordProblem(name, owner, decl.type, message)
    return None
