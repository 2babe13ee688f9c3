"""The public API is pinned: fxlower.__all__ and its signatures match tests/api_expect.txt."""

from __future__ import annotations

import inspect
import pathlib
import re

import fxlower

EXPECT = pathlib.Path(__file__).with_name("api_expect.txt")


def render_api() -> str:
    lines = []
    for name in sorted(fxlower.__all__):
        obj = getattr(fxlower, name)
        if inspect.isclass(obj):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            lines.append(f"class {name}({bases})")
        elif callable(obj):
            lines.append(re.sub(r" at 0x[0-9a-f]+", "", f"def {name}{inspect.signature(obj)}"))
        else:
            lines.append(f"{name} = {obj!r}")
    return "\n".join(lines) + "\n"


def test_public_api_matches_the_expect_file():
    assert render_api() == EXPECT.read_text(), (
        "the public API changed; if intended, regenerate with: python3 -c 'import sys; sys.path.insert(0, \"tests\");"
        " import test_api; open(\"tests/api_expect.txt\", \"w\").write(test_api.render_api())'")


def test_everything_public_is_in_all_and_nothing_else_is_exported():
    public = {n for n in vars(fxlower) if not n.startswith("_") and not inspect.ismodule(getattr(fxlower, n))}
    assert public == set(fxlower.__all__) - {"__version__"}
