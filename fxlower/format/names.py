"""Name and path rules shared by the writer and the reader (docs/format.md sections 1 and 3).

One validator serves both sides, so the writer never produces a name the reader refuses.
"""

from __future__ import annotations

import keyword
import re

from .constants import MANIFEST_FILE, MAX_NAME_BYTES
from ..errors import FormatError

__all__ = ["check_name", "check_file_path", "check_dotted_target", "component_problem", "check_method_name", "check_function_name",
           "check_identifier"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[1-9]|lpt[1-9])\Z", re.IGNORECASE)
_PATH = re.compile(r"^[A-Za-z0-9._-]{1,255}\Z")
#: A component of a get_attr/call_module target or graph name (docs/format.md section 3, design 1.1 G): 1+ bytes of
#: UTF-8 without '.', '"', '\\' or a control character. torch.fx writes a component that is not an identifier as
#: ``getattr(x, "comp")``; '"' and '\\' could not survive that quoting.
_BAD_COMPONENT_CHAR = re.compile(r'[."\\\x00-\x1f\x7f]')
_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\Z")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER = re.compile(r"^\*{0,2}[A-Za-z_][A-Za-z0-9_]*\Z")


def check_name(name: object, where: str, *, allow_empty: bool = False) -> str:
    """A node, graph, tensor or key name: UTF-8, 1 to 1024 bytes, no control characters.

    Raises:
        FormatError ("schema.name").
    """
    if type(name) is not str:
        raise FormatError("schema.type", f"a name is a str, found {type(name).__name__}", where)
    if name == "" and allow_empty:
        return name
    size = len(name.encode("utf-8", "surrogatepass"))
    if size == 0 or size > MAX_NAME_BYTES:
        raise FormatError("schema.name", f"name of {size} bytes; names have 1 to {MAX_NAME_BYTES} bytes", where)
    if _CONTROL.search(name):
        raise FormatError("schema.name", f"name {name!r:.80} contains a control character", where)
    return name


def check_file_path(path: object, where: str) -> str:
    """A listed file path: one component of ``[A-Za-z0-9._-]``, 1..255 bytes, not ``.``/``..``/the manifest.

    Raises:
        FormatError ("path.invalid").
    """
    if type(path) is not str:
        raise FormatError("schema.type", f"a file path is a str, found {type(path).__name__}", where)
    if not _PATH.match(path) or path in (".", "..") or path == MANIFEST_FILE:
        raise FormatError("path.invalid", f"{path!r:.80} is not a valid member path: one component of "
                          f"[A-Za-z0-9._-], not '.', '..' or '{MANIFEST_FILE}'", where)
    if path.endswith(".") or _RESERVED.match(path.split(".")[0]):
        raise FormatError("path.invalid", f"{path!r:.80} is a Windows reserved name or ends with a dot, so it "
                          f"would not survive a copy to Windows", where)
    return path


def check_dotted_target(target: str, where: str) -> str:
    """A ``get_attr``/``call_module`` target: dotted components, each 1+ bytes of UTF-8 without ``"``, ``\\`` or
    a control character, not starting with ``__`` (``block1-0``, ``layer 1`` and ``ü`` are valid components).

    Raises:
        FormatError ("graph.target").
    """
    for part in target.split("."):
        problem = component_problem(part)
        if problem is not None:
            raise FormatError("graph.target", f"{target!r:.80} is not a dotted attribute path: component "
                              f"{part!r:.40} {problem}", where)
    return target


def component_problem(part: str) -> str | None:
    """Why ``part`` cannot be one component of a dotted attribute path, or None when it can."""
    if part == "":
        return "is empty"
    if part.startswith("__"):
        return "starts with '__'"
    bad = _BAD_COMPONENT_CHAR.search(part)
    if bad is not None:
        return f"contains {bad.group()!r} (components exclude '.', '\"', '\\\\' and control characters)"
    if not _is_utf8(part):
        return "is not valid UTF-8 text (a lone surrogate)"
    if keyword.iskeyword(part):
        # torch.fx writes an identifier component as ``self.<comp>``, which is a syntax error for a keyword.
        return "is a Python keyword"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_method_name(target: str, where: str) -> str:
    if not _METHOD.match(target):
        raise FormatError("graph.target", f"{target!r:.80} is not a public method name", where)
    return target


def check_function_name(target: str, where: str) -> str:
    if not all(_IDENT.match(p) for p in target.split(".")) or "." not in target:
        raise FormatError("graph.target", f"{target!r:.80} is not a dotted function name like 'torch.add'", where)
    return target


def check_identifier(target: str, where: str) -> str:
    """A placeholder target: a Python identifier (not a keyword), optionally starred (``*args``, ``**kwargs``)."""
    if not _PLACEHOLDER.match(target) or keyword.iskeyword(target.lstrip("*")):
        raise FormatError("graph.target", f"placeholder target {target!r:.80} is not an identifier", where)
    return target
