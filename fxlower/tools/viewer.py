"""``fxlower view``: one self-contained HTML file showing an artifact's graphs (no network at view time).

The layout is computed here, at export time, by a small layered (Sugiyama-style) layout: longest-path layering,
a few barycentric ordering sweeps, and x positions pulled towards the mean of each node's predecessors. The page
(fxlower/tools/viewer_assets/viewer.js, hand-written) draws the nodes on a canvas, culled to the viewport, so that a
graph of thousands of nodes stays interactive; a nested graph (a ``call_module`` node whose module is a graph) is
drawn inside its node when expanded.

When the artifact has a core view (format 1.2: ``manifest.core``), both views are shown side by side and
selecting a node highlights the nodes it is linked to through ``Node.origin`` (core -> module).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from ..format.constants import STORAGE_DTYPES
from .diff import show_value
from ..io.loading import Artifact

__all__ = ["build_model", "layout", "render_html", "write_html"]

_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "viewer_assets")
_SWEEPS = 4


def layout(nodes: list[Any]) -> tuple[list[int], list[float]]:
    """Layer and x slot of each node of one graph (nodes in topological order, ``inputs`` naming nodes).

    Returns:
        ``(layers, xs)``: the layer of each node (longest path from a node without inputs; a node without inputs
        other than a placeholder, such as a get_attr, one layer above its first user) and its x position in
        slot units (distinct slots within a layer, at least 1 apart).
    """
    index = {n.name: i for i, n in enumerate(nodes)}
    preds = [[index[p] for p in n.inputs if p in index] for n in nodes]
    succs: list[list[int]] = [[] for _ in nodes]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    layers = [0] * len(nodes)
    for i, ps in enumerate(preds):
        if ps:
            layers[i] = max(layers[p] for p in ps) + 1
    for i in range(len(nodes) - 1, -1, -1):  # a constant (get_attr) sits just above its first user, not at the top
        if not preds[i] and succs[i] and getattr(nodes[i], "op", "") != "placeholder":
            layers[i] = min(layers[s] for s in succs[i]) - 1
    rows: list[list[int]] = [[] for _ in range(max(layers, default=-1) + 1)]
    for i, layer in enumerate(layers):
        rows[layer].append(i)
    pos = [0.0] * len(nodes)
    for row in rows:
        for k, i in enumerate(row):
            pos[i] = k
    for sweep in range(_SWEEPS):  # barycentric ordering, down then up
        order = rows if sweep % 2 == 0 else rows[::-1]
        near = preds if sweep % 2 == 0 else succs
        for row in order:
            bary = {i: (sum(pos[j] for j in near[i]) / len(near[i]) if near[i] else pos[i]) for i in row}
            row.sort(key=lambda i: (bary[i], pos[i]))
            for k, i in enumerate(row):
                pos[i] = k
    xs = [0.0] * len(nodes)
    for row in rows:  # x: the mean of the predecessors' x, then pushed right to keep slots apart
        prev = None
        for i in row:
            want = sum(xs[p] for p in preds[i]) / len(preds[i]) if preds[i] else float(pos[i])
            x = want if prev is None else max(want, prev + 1.0)
            xs[i] = x
            prev = x
    return layers, xs


def _attr_types(manifest: Any) -> dict[str, list[tuple[re.Pattern, str]]]:
    out = {}
    for mtype, decl in manifest.modules.items():
        out[mtype] = [(re.compile("^" + ".".join("[0-9]+" if c == "*" else re.escape(c)
                                                   for c in a.name.split(".")) + "$"), a.type) for a in decl.attrs]
    return out


def _tensor_names(v: Any, out: list[str]) -> None:
    if isinstance(v, dict):
        if v.get("t") == "tensor" and isinstance(v.get("v"), str):
            out.append(v["v"])
            return
        for x in v.values():
            _tensor_names(x, out)
    elif isinstance(v, list):
        for x in v:
            _tensor_names(x, out)


def _node(n: Any, types: dict, tensors: set[str]) -> dict:
    refs: list[str] = []
    _tensor_names(n.args, refs)
    _tensor_names(n.kwargs, refs)
    d: dict[str, Any] = {"n": n.name, "o": n.op, "t": n.target,
                         "a": ", ".join(show_value(a) for a in n.args),
                         "k": ", ".join(f"{k}={show_value(v)}" for k, v in n.kwargs.items()),
                         "m": show_value(n.meta) if n.meta is not None else ""}
    if n.op == "get_attr" and n.target in tensors:
        refs.append(n.target)
    if n.graph is not None:
        d["g"] = n.graph
    if n.lowering is not None:
        decls = types.get(n.lowering.module_type, [])
        attrs = []
        for k, v in n.lowering.attrs.items():
            _tensor_names(v, refs)
            attrs.append([k, next((t for pat, t in decls if pat.match(k)), "?"), show_value(v)])
        d["l"] = {"type": n.lowering.module_type, "v": n.lowering.version, "attrs": attrs}
    origin = getattr(n, "origin", None)  # format 1.2, core view nodes
    if origin is not None:
        d["org"] = [origin.graph, origin.node]
    if refs:
        d["r"] = list(dict.fromkeys(refs))
    return d


def _graphs(graphs: list[Any], types: dict, tensors: set[str]) -> list[dict]:
    out = []
    for g in graphs:
        layers, xs = layout(g.nodes)
        index = {n.name: i for i, n in enumerate(g.nodes)}
        nodes = []
        for i, n in enumerate(g.nodes):
            d = _node(n, types, tensors)
            d["y"], d["x"] = layers[i], round(xs[i], 3)
            d["i"] = [index[p] for p in n.inputs if p in index]
            nodes.append(d)
        out.append({"name": g.name, "nodes": nodes})
    return out


def build_model(art: Artifact) -> dict:
    """The data the page shows: views (module, and core when present), each a list of laid-out graphs; tensors."""
    m = art.manifest
    types = _attr_types(m)
    tensors = {t.name: [t.dtype, list(t.shape), _nbytes(t), t.sha256, t.kind] for t in m.tensors}
    views = [{"name": "module view", "graphs": _graphs(m.graphs, types, set(tensors))}]
    core = getattr(m, "core", None)
    if core is not None:
        views.append({"name": "core view (Core ATen)", "graphs": _graphs(core.graphs, types, set(tensors)),
                      "linksTo": 0})
    fv = m.format_version
    return {"title": os.path.basename(os.path.normpath(str(art.path))), "format": f"{fv[0]}.{fv[1]}",
            "digest": m.digest, "views": views, "tensors": tensors}


def _nbytes(t: Any) -> int:
    count = 1
    for d in t.shape:
        count *= d
    return count * STORAGE_DTYPES[t.dtype][1]


def render_html(art: Artifact) -> str:
    """The page for ``art``: HTML with the data, the script and the style inlined."""
    with open(os.path.join(_ASSETS, "viewer.html"), encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(_ASSETS, "viewer.js"), encoding="utf-8") as f:
        script = f.read()
    data = json.dumps(build_model(art), separators=(",", ":"), allow_nan=True)
    data = data.replace("<", "\\u003c")  # no "</script>" inside the inline data
    title = os.path.basename(os.path.normpath(str(art.path)))
    title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (page.replace("/*TITLE*/", title).replace("/*DATA*/", data)
            .replace("/*SCRIPT*/", script.replace("</script", "<\\/script")))


def write_html(art: Artifact, path: str) -> int:
    """Write the page for ``art`` to ``path``; returns its size in bytes."""
    text = render_html(art)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return len(text.encode("utf-8"))
