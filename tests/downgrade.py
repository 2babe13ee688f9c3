"""Manifest surgery shared by the tests: turn a manifest (the dict of ``manifest.msgpack``) into the file an older
writer wrote, one format minor at a time, or rewrite an artifact's manifest so."""

from __future__ import annotations

from pathlib import Path

import msgpack

MANIFEST = "manifest.msgpack"


def to_1_2(m: dict) -> None:
    """Turn a 1.3 manifest into the 1.2 file a 1.2 writer wrote: version [1, 2], no 1.3 field (placement)."""
    m["format_version"] = [1, 2]
    for t in m["tensors"]:
        t.pop("placement", None)


def to_1_1(m: dict) -> None:
    """Turn a 1.2 manifest without a core view into the 1.1 file a 1.1 writer wrote: version [1, 1], no 1.2 field."""
    to_1_2(m)
    m["format_version"] = [1, 1]
    m.pop("core", None)
    if m["golden"] is not None:
        m["golden"].pop("core_nodes", None)
    for g in m["graphs"]:
        for n in g["nodes"]:
            n.pop("origin", None)


def to_1_0(m: dict) -> None:
    """Turn a 1.1 (or later) manifest into the 1.0 file a 1.0 writer wrote: version [1, 0], no 1.1 field, and function
    and module Values in lowering attributes as the plain strs of 1.0 (the legacy rule of docs/format.md 6.1)."""
    to_1_1(m)
    m["format_version"] = [1, 0]
    for key in ("modules", "functions", "methods"):
        m.pop(key, None)
    for t in m["tensors"]:
        for key in ("kind", "requires_grad", "persistent"):
            t.pop(key, None)
    for g in m["graphs"]:
        g.pop("training", None)
        for n in g["nodes"]:
            n.pop("overload", None)
            if n["lowering"] is not None:
                n["lowering"].pop("training", None)
                n["lowering"]["attrs"] = {k: v["v"] if isinstance(v, dict) and v.get("t") in ("function", "module")
                                          else v for k, v in n["lowering"]["attrs"].items()}


def rewrite(art: Path, fn=to_1_0) -> Path:
    """Apply ``fn`` (e.g. :func:`to_1_0`) to the manifest of the artifact ``art``, in place; returns ``art``."""
    path = Path(art) / MANIFEST
    m = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    fn(m)
    path.write_bytes(msgpack.packb(m, use_bin_type=True))
    return art
