"""Shape symbol expressions of the core view (format 1.2): the parser and the evaluator.

Grammar (no spaces; docs/format.md, the core view)::

    expr   = term { ("+" | "-") term } ;
    term   = factor { ("*" | "//" | "%") factor } ;
    factor = int | symbol | "(" expr ")" | "-" factor | ("max" | "min") "(" expr "," expr ")" ;
    symbol = "s" digits ;

``int`` is decimal digits (a value up to 2^63-1; a negative number is ``-`` applied to one). Arithmetic is on
integers: ``//`` floors, ``%`` takes the sign of the divisor (Python's rules). Evaluation fails on a division by
zero or a result outside int64. An expression is at most :data:`MAX_EXPR_CHARS` characters and nests at most
:data:`MAX_EXPR_DEPTH` levels (parentheses, unary minus, max/min), so parsing never recurses unboundedly.

A parsed expression is a tree of tuples: ``("int", n)``, ``("sym", name)``, ``("neg", e)``, and
``(op, a, b)`` with op one of ``+ - * // % max min``. The C++ reader implements the same parser and evaluator.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

__all__ = ["parse", "evaluate", "symbols_of", "ExprError", "MAX_EXPR_CHARS", "MAX_EXPR_DEPTH"]

MAX_EXPR_CHARS = 4096
MAX_EXPR_DEPTH = 64
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class ExprError(ValueError):
    """A malformed expression, an unknown symbol, or an evaluation fault; the message says where."""


class _Parser:
    def __init__(self, text: str, known: Container[str] | None):
        self.s = text
        self.i = 0
        self.known = known
        self.depth = 0

    def fail(self, what: str) -> ExprError:
        return ExprError(f"{what} at offset {self.i} of {self.s!r:.120}")

    def peek(self, token: str) -> bool:
        return self.s.startswith(token, self.i)

    def expect(self, token: str) -> None:
        if not self.peek(token):
            raise self.fail(f"expected '{token}'")
        self.i += len(token)

    def expr(self) -> tuple:
        node = self.term()
        while self.i < len(self.s) and self.s[self.i] in "+-":
            op = self.s[self.i]
            self.i += 1
            node = (op, node, self.term())
        return node

    def term(self) -> tuple:
        node = self.factor()
        while True:
            if self.peek("//"):
                self.i += 2
                node = ("//", node, self.factor())
            elif self.peek("*") or self.peek("%"):
                op = self.s[self.i]
                self.i += 1
                node = (op, node, self.factor())
            else:
                return node

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_EXPR_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_EXPR_DEPTH} levels")

    def factor(self) -> tuple:
        s, i = self.s, self.i
        if i >= len(s):
            raise self.fail("expected a number, a symbol, '(', '-', 'max(' or 'min(' but the expression ends")
        c = s[i]
        if "0" <= c <= "9":
            j = i
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            value = int(s[i:j])
            if value > _INT64_MAX:
                raise self.fail(f"the integer {s[i:j]:.40} exceeds int64")
            self.i = j
            return ("int", value)
        if c == "s" and i + 1 < len(s) and "0" <= s[i + 1] <= "9":
            j = i + 1
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            name = s[i:j]
            if self.known is not None and name not in self.known:
                raise self.fail(f"the symbol '{name}' is not declared in the core view's symbols")
            self.i = j
            return ("sym", name)
        if c == "(":
            self.nested()
            self.i += 1
            node = self.expr()
            self.expect(")")
            self.depth -= 1
            return node
        if c == "-":
            self.nested()
            self.i += 1
            node = ("neg", self.factor())
            self.depth -= 1
            return node
        for fn in ("max", "min"):
            if s.startswith(fn + "(", i):
                self.nested()
                self.i += len(fn) + 1
                a = self.expr()
                self.expect(",")
                b = self.expr()
                self.expect(")")
                self.depth -= 1
                return (fn, a, b)
        raise self.fail(f"unexpected character {c!r}")


def parse(text: str, known: Container[str] | None = None) -> tuple:
    """Parse an expression; with ``known``, every symbol must be in it.

    Raises:
        ExprError: not in the grammar (naming the offset), too long or deep, or an undeclared symbol.
    """
    if type(text) is not str or not text:
        raise ExprError(f"an expression is a non-empty str, found {text!r:.40}")
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"the expression has {len(text)} characters; at most {MAX_EXPR_CHARS}")
    p = _Parser(text, known)
    node = p.expr()
    if p.i != len(text):
        raise p.fail("unexpected trailing text")
    return node


def symbols_of(node: tuple) -> list[str]:
    """The distinct symbols of a parsed expression, in order of first use."""
    out: dict[str, None] = {}
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] == "sym":
            out.setdefault(n[1])
        elif n[0] != "int":
            stack.extend(reversed(n[1:]))
    return list(out)


def _check(v: int, node: tuple) -> int:
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ExprError(f"the value of {node[0]!r} is {v}, outside int64")
    return v


def evaluate(node: tuple | str, env: Mapping[str, int]) -> int:
    """The integer value of an expression (parsed, or text to parse) with symbols bound by ``env``.

    Raises:
        ExprError: a symbol without a value, a division or modulo by zero, or a value outside int64.
    """
    if isinstance(node, str):
        node = parse(node)
    kind = node[0]
    if kind == "int":
        return node[1]
    if kind == "sym":
        if node[1] not in env:
            raise ExprError(f"the symbol '{node[1]}' has no value")
        return _check(int(env[node[1]]), node)
    if kind == "neg":
        return _check(-evaluate(node[1], env), node)
    a = evaluate(node[1], env)
    b = evaluate(node[2], env)
    if kind == "+":
        return _check(a + b, node)
    if kind == "-":
        return _check(a - b, node)
    if kind == "*":
        return _check(a * b, node)
    if kind in ("//", "%"):
        if b == 0:
            raise ExprError(f"'{kind}' by zero")
        return _check(a // b if kind == "//" else a % b, node)
    if kind == "max":
        return max(a, b)
    return min(a, b)
