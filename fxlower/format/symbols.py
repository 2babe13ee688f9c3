"""Symbolic shape expressions of the core view (format 1.2): torch's sympy expressions printed in the format's
small integer grammar::

    expr   = term { ("+" | "-") term } ;
    term   = factor { ("*" | "//" | "%") factor } ;
    factor = int | symbol | "(" expr ")" | "-" factor | ("max" | "min") "(" expr "," expr ")" ;
    symbol = "s" digits ;

Integer arithmetic; ``//`` is floor division and ``%`` takes the sign of the divisor (Python's). No spaces. The
printer accepts sums, products, non-negative integer powers, ``FloorDiv``, ``Mod``/``PythonMod``, and two-argument
(or n-argument, nested left to right) ``Max``/``Min`` over integers and symbols named ``s<digits>``; anything else
(unbacked ``u0`` symbols, true division, rationals, floats, ``CeilToInt`` ...) raises :class:`UnprintableExpr`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["UnprintableExpr", "print_expr", "shape_entry", "SYMBOL_NAME"]

#: A symbol's name in the grammar.
SYMBOL_NAME = re.compile(r"^s[0-9]+\Z")

_EXPR, _TERM, _FACTOR = 0, 1, 2


class UnprintableExpr(ValueError):
    """The expression is outside the grammar; the message says which part."""


def print_expr(expr: Any) -> str:
    """The expression as grammar text (deterministic: sympy's canonical argument order)."""
    text, _ = _print(expr)
    return text


def shape_entry(dim: Any) -> int | str:
    """A Meta shape entry: the int for a concrete (or constant symbolic) size, else the printed expression."""
    if isinstance(dim, int):
        return int(dim)
    node = getattr(dim, "node", None)
    if node is None:
        raise UnprintableExpr(f"a dimension of type {type(dim).__qualname__}")
    expr = node.expr
    if expr.is_Integer:
        return int(expr)
    return print_expr(expr)


def _wrap(text_level: tuple[str, int], need: int) -> str:
    text, level = text_level
    return f"({text})" if level < need else text


def _print(e: Any) -> tuple[str, int]:
    """(text, precedence level of the text's outermost operator)."""
    import sympy
    from torch.utils._sympy.functions import FloorDiv, Max, Min, Mod, PythonMod

    if e.is_Integer:
        v = int(e)
        return (str(v), _FACTOR) if v >= 0 else (f"-{-v}", _FACTOR)
    if e.is_Symbol:
        name = str(e)
        if not SYMBOL_NAME.match(name):
            raise UnprintableExpr(f"the symbol '{name}' (only input-defined symbols s<digits> are printable; "
                                  f"'u' symbols are data-dependent sizes)")
        return name, _FACTOR
    if e.is_Add:
        # positive terms first, constants last among each: "s0+3", "s0-1", "3-s0"
        terms = sorted(e.args, key=lambda t: (_is_negative(t), bool(t.is_Number), sympy.default_sort_key(t)))
        out = _print(terms[0])[0] if not _is_negative(terms[0]) else _wrap(_print(terms[0]), _TERM)
        for t in terms[1:]:
            if _is_negative(t):
                out += "-" + _wrap(_print(-t), _TERM)
            else:
                out += "+" + _wrap(_print(t), _TERM)
        return out, _EXPR
    if e.is_Mul:
        coeff, rest = e.as_coeff_Mul()
        if coeff == -1:
            return "-" + _wrap(_print(rest), _FACTOR), _FACTOR
        if not coeff.is_Integer:
            raise UnprintableExpr(f"the non-integer coefficient {coeff} in {e}")
        factors = sorted(sympy.Mul.make_args(rest), key=sympy.default_sort_key)
        parts = ([str(int(coeff))] if coeff != 1 else []) + [_wrap(_print(f), _FACTOR) for f in factors]
        if coeff < 0:
            parts[0] = f"({parts[0]})"
        return "*".join(parts), _TERM
    if e.is_Pow:
        base, exp = e.args
        if not exp.is_Integer or int(exp) < 0:
            raise UnprintableExpr(f"the power {e}")
        n = int(exp)
        if n == 0:
            return "1", _FACTOR
        b = _wrap(_print(base), _FACTOR)
        return "*".join([b] * n), (_TERM if n > 1 else _FACTOR)
    if isinstance(e, FloorDiv):
        a, b = e.args
        return f"{_wrap(_print(a), _TERM)}//{_wrap(_print(b), _FACTOR)}", _TERM
    if isinstance(e, (Mod, PythonMod)):
        a, b = e.args
        return f"{_wrap(_print(a), _TERM)}%{_wrap(_print(b), _FACTOR)}", _TERM
    if isinstance(e, (Max, Min)):
        name = "max" if isinstance(e, Max) else "min"
        args = sorted(e.args, key=sympy.default_sort_key)
        out = _print(args[0])[0]
        for a in args[1:]:
            out = f"{name}({out},{_print(a)[0]})"
        return out, _FACTOR
    raise UnprintableExpr(f"{type(e).__name__} in {e}")


def _is_negative(t: Any) -> bool:
    if t.is_Integer:
        return int(t) < 0
    if t.is_Mul:
        coeff, _ = t.as_coeff_Mul()
        return bool(coeff.is_Number and coeff < 0)
    return False
