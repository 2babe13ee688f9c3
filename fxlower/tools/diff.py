"""Structural comparison of two artifacts (``fxlower diff A B``).

Nodes, lowering records and values are compared in their on-disk form (the manifest's encoded Values: a node
reference is ``{"t": "node", "v": name}``, a tensor ``{"t": "tensor", "v": name}``), so the comparison sees
exactly what a reader sees.

The result (``diff(a, b).to_json()``) has this shape; every list is empty when nothing differs there::

    {"equal": bool,
     "header":  [{"field": str, "a": any, "b": any}],          # format_version, producer, signature.inputs,
                                                               # signature.output, golden, modules.<type>,
                                                               # functions.<name>, methods.<name>
     "graphs":  [{"index": int, "name": str,                   # graphs that differ (by index)
                  "added":   [{"node": str, "op": str, "target": str}],
                  "removed": [{"node": str, "op": str, "target": str}],
                  "changed": [{"node": str, "field": str, "a": any, "b": any}]}],
                  # field: op, target, args, kwargs, meta, graph, overload, lowering (one side has none),
                  # lowering.module_type, lowering.version, lowering.module_version, lowering.training,
                  # lowering.attrs.<name> (an absent attribute is null)
     "tensors": {"added": [str], "removed": [str],
                 "changed": [{"name": str, "fields": {"dtype"|"shape"|"sha256"|"kind"|...: [a, b]},
                              "max_abs_diff": float, "max_rel_diff": float}]}}   # the two only with --values

``max_abs_diff`` is max |b - a| and ``max_rel_diff`` max |b - a| / |a| over the elements (computed in float64;
an element with a = 0 and b != 0 makes it inf), given only for changed tensors of equal shape. Non-finite floats
are written as Python's ``json`` writes them (``Infinity``, ``NaN``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import torch

from ..io.loading import Artifact
from ..format.schema import to_obj

__all__ = ["diff", "Diff", "format_text", "show_value"]


@dataclasses.dataclass
class Diff:
    header: list[dict] = dataclasses.field(default_factory=list)
    graphs: list[dict] = dataclasses.field(default_factory=list)
    tensors: dict = dataclasses.field(default_factory=lambda: {"added": [], "removed": [], "changed": []})

    @property
    def equal(self) -> bool:
        return not (self.header or self.graphs or any(self.tensors.values()))

    def to_json(self) -> dict:
        return {"equal": self.equal, "header": self.header, "graphs": self.graphs, "tensors": self.tensors}


def _header(a: Artifact, b: Artifact) -> list[dict]:
    ma, mb = a.manifest, b.manifest
    fields = {
        "format_version": (list(ma.format_version), list(mb.format_version)),
        "producer": (to_obj(ma.producer), to_obj(mb.producer)),
        "signature.inputs": (list(ma.signature.inputs), list(mb.signature.inputs)),
        "signature.output": (ma.signature.output, mb.signature.output),
        "golden": (ma.golden.mode if ma.golden else None, mb.golden.mode if mb.golden else None),
    }
    for t in sorted(set(ma.modules) | set(mb.modules)):
        da, db = ma.modules.get(t), mb.modules.get(t)
        fields[f"modules.{t}"] = (to_obj(da) if da else None, to_obj(db) if db else None)
    for kind in ("functions", "methods"):
        ta, tb = getattr(ma, kind), getattr(mb, kind)
        for t in sorted(set(ta) | set(tb)):
            fields[f"{kind}.{t}"] = (to_obj(ta[t]) if t in ta else None, to_obj(tb[t]) if t in tb else None)
    return [{"field": k, "a": va, "b": vb} for k, (va, vb) in fields.items() if va != vb]


_NODE_FIELDS = ("op", "target", "args", "kwargs", "meta", "graph", "overload")
_LOWERING_FIELDS = ("module_type", "version", "module_version", "training")


def _node_changes(na: Any, nb: Any) -> list[dict]:
    out = []
    for f in _NODE_FIELDS:
        va, vb = to_obj(getattr(na, f)), to_obj(getattr(nb, f))
        if va != vb:
            out.append({"node": na.name, "field": f, "a": va, "b": vb})
    la, lb = na.lowering, nb.lowering
    if (la is None) != (lb is None):
        out.append({"node": na.name, "field": "lowering", "a": to_obj(la), "b": to_obj(lb)})
    elif la is not None:
        for f in _LOWERING_FIELDS:
            if getattr(la, f) != getattr(lb, f):
                out.append({"node": na.name, "field": f"lowering.{f}", "a": getattr(la, f), "b": getattr(lb, f)})
        for k in list(la.attrs) + [k for k in lb.attrs if k not in la.attrs]:
            va, vb = la.attrs.get(k), lb.attrs.get(k)
            if va != vb or (k in la.attrs) != (k in lb.attrs):
                out.append({"node": na.name, "field": f"lowering.attrs.{k}", "a": va, "b": vb})
    return out


def _brief(n: Any) -> dict:
    return {"node": n.name, "op": n.op, "target": n.target}


def _graphs(a: Artifact, b: Artifact) -> list[dict]:
    ga, gb = a.manifest.graphs, b.manifest.graphs
    out = []
    for i in range(max(len(ga), len(gb))):
        nodes_a = {n.name: n for n in ga[i].nodes} if i < len(ga) else {}
        nodes_b = {n.name: n for n in gb[i].nodes} if i < len(gb) else {}
        entry = {"index": i, "name": (ga[i] if i < len(ga) else gb[i]).name,
                 "added": [_brief(n) for k, n in nodes_b.items() if k not in nodes_a],
                 "removed": [_brief(n) for k, n in nodes_a.items() if k not in nodes_b],
                 "changed": [c for k, n in nodes_a.items() if k in nodes_b for c in _node_changes(n, nodes_b[k])]}
        if i < len(ga) and i < len(gb) and ga[i].name != gb[i].name:
            entry["changed"].insert(0, {"node": "", "field": "graph.name", "a": ga[i].name, "b": gb[i].name})
        if entry["added"] or entry["removed"] or entry["changed"]:
            out.append(entry)
    return out


def _value_diff(ta: torch.Tensor, tb: torch.Tensor) -> tuple[float, float]:
    da, db = ta.to(torch.float64), tb.to(torch.float64)
    d = (db - da).abs()
    if d.numel() == 0:
        return 0.0, 0.0
    rel = d / da.abs()
    rel = torch.where(d == 0, torch.zeros_like(rel), rel)  # 0/0 -> 0
    return float(d.max()), float(rel.max())


def _tensors(a: Artifact, b: Artifact, values: bool) -> dict:
    out: dict = {"added": sorted(set(b.tensors) - set(a.tensors)),
                 "removed": sorted(set(a.tensors) - set(b.tensors)), "changed": []}
    for name in sorted(set(a.tensors) & set(b.tensors)):
        ea, eb = to_obj(a.tensors[name]), to_obj(b.tensors[name])
        fields = {k: [ea[k], eb[k]] for k in ea if k not in ("file", "key") and ea[k] != eb.get(k)}
        if not fields:
            continue
        entry: dict = {"name": name, "fields": fields}
        if values and ea["shape"] == eb["shape"]:
            entry["max_abs_diff"], entry["max_rel_diff"] = _value_diff(a.tensor(name), b.tensor(name))
        out["changed"].append(entry)
    return out


def diff(a: Artifact, b: Artifact, *, values: bool = False) -> Diff:
    """Compare two loaded artifacts: header fields, graphs node by node, the tensor table.

    Args:
        a, b: the artifacts (:func:`fxlower.load`).
        values: also compute the largest absolute and relative difference of changed tensors of equal shape.
    """
    return Diff(_header(a, b), _graphs(a, b), _tensors(a, b, values))


def show_value(v: Any) -> str:
    """An encoded Value as compact text: node refs %name, tensors $name, containers bracketed."""
    if isinstance(v, dict) and "t" in v:
        t, inner = v["t"], v.get("v")
        if t == "node":
            return f"%{inner}"
        if t == "tensor" and isinstance(inner, str):
            return f"${inner}"
        if t in ("list", "tuple"):
            body = ", ".join(show_value(x) for x in inner)
            return f"[{body}]" if t == "list" else f"({body}{',' if len(inner) == 1 else ''})"
        if t == "dict" and isinstance(inner, list):
            return "{" + ", ".join(f"{show_value(k)}: {show_value(x)}" for k, x in inner) + "}"
        if "dtype" in v:  # a Meta tensor
            return f"{v['dtype']}{list(v['shape'])}"
        return f"{t}:{show_value(inner)}" if inner is not None else t
    if isinstance(v, list):
        return "[" + ", ".join(show_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {show_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    return json.dumps(v) if isinstance(v, str) else str(v)


def format_text(d: Diff, a_name: str, b_name: str) -> str:
    """The diff as lines for people: ``-`` only in A, ``+`` only in B, ``~`` changed (A -> B)."""
    if d.equal:
        return f"{a_name} and {b_name} are equal"
    lines = [f"--- {a_name}", f"+++ {b_name}"]
    for h in d.header:
        lines.append(f"~ header {h['field']}: {show_value(h['a'])} -> {show_value(h['b'])}")
    for g in d.graphs:
        lines.append(f"graph {g['index']} {g['name']!r}:")
        for n in g["removed"]:
            lines.append(f"  - node {n['node']} = {n['op']}[{n['target']}]")
        for n in g["added"]:
            lines.append(f"  + node {n['node']} = {n['op']}[{n['target']}]")
        for c in g["changed"]:
            lines.append(f"  ~ node {c['node']} {c['field']}: {show_value(c['a'])} -> {show_value(c['b'])}")
    t = d.tensors
    if any(t.values()):
        lines.append("tensors:")
        lines += [f"  - {n}" for n in t["removed"]] + [f"  + {n}" for n in t["added"]]
        for c in t["changed"]:
            what = "; ".join(f"{k} {show_value(va)} -> {show_value(vb)}" for k, (va, vb) in c["fields"].items())
            extra = (f"; max |diff| {c['max_abs_diff']:.6g}, max rel {c['max_rel_diff']:.6g}"
                     if "max_abs_diff" in c else "")
            lines.append(f"  ~ {c['name']}: {what}{extra}")
    return "\n".join(lines)
