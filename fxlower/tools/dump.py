"""The canonical dump of an artifact: one sorted line per fact, byte-identical to ``fxlower-dump``'s.

Both readers produce it so that a test can compare what the Python loader and the C++ reader see (node ops,
targets, arguments, output metadata, lowering records, tensors and the SHA-256 of their stored bytes, tensor
state, training flags, overload indices, module declarations and function/method signatures). The line grammar
is defined in ``cpp/DUMP.md``. It reads only public attributes of a loaded artifact: ``art.manifest`` (the schema
dataclasses, Values and Meta as their msgpack objects) and ``art.stored_bytes(name)``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..io.loading import Artifact

__all__ = ["dump", "render_value", "render_meta"]



def _placement(p) -> str:
    """1.3: ``[mesh]:dim,dim...`` plus ``:name,name...`` when the mesh dimensions are named; a dim is ``shard(d)``
    or ``replicate``."""
    dims = ",".join(f"shard({d.dim})" if d.kind == "shard" else "replicate" for d in p.dims)
    text = f"[{','.join(str(m) for m in p.mesh)}]:{dims}"
    return text + (":" + ",".join(p.mesh_dim_names) if p.mesh_dim_names else "")

def _float(x: float) -> str:
    return repr(x)


def render_value(obj: Any) -> str:
    """Render a raw manifest Value (its msgpack object)."""
    t = type(obj)
    if obj is None:
        return "None"
    if t is bool:
        return "True" if obj else "False"
    if t is int:
        return str(obj)
    if t is float:
        return _float(obj)
    if t is str:
        return json.dumps(obj, ensure_ascii=False)
    kind, v = obj["t"], obj["v"]
    if kind == "node":
        return f"%{v}"
    if kind == "tensor":
        return f"${v}"
    if kind == "list":
        return "[" + ", ".join(render_value(x) for x in v) + "]"
    if kind == "tuple":
        inner = ", ".join(render_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if kind == "dict":
        return "{" + ", ".join(f"{render_value(k)}: {render_value(x)}" for k, x in v) + "}"
    if kind == "slice":
        return "slice(" + ", ".join(render_value(x) for x in v) + ")"
    if kind == "ellipsis":
        return "..."
    if kind == "complex":
        return f"complex({_float(v[0])}, {_float(v[1])})"
    return f"{kind}({v})"  # dtype, device, memory_format, layout, function, module, graph (1.2)


def render_meta(obj: Any) -> str:
    """Render raw output metadata."""
    if obj is None:
        return "None"
    kind = obj["t"]
    if kind == "tensor":
        return f"tensor({obj['dtype']},{_shape(obj['shape'])})"
    if kind in ("tuple", "list"):
        return f"{kind}(" + ", ".join(render_meta(m) for m in obj["v"]) + ")"
    if kind == "dict":
        return "dict(" + ", ".join(f"{render_value(k)}: {render_meta(m)}" for k, m in obj["v"]) + ")"
    if kind == "symint":  # format 1.2 core graphs: a SymInt and its symbol expression
        return f"symint({obj['v']})"
    return kind  # int, float, bool, str, none, other, device, dtype, memory_format, layout


def _bool(b: bool) -> str:
    return "True" if b else "False"


def _shape(shape: list) -> str:  # ints, or (1.2 core graphs) symbol expressions as they are written
    return "[" + ",".join(str(d) for d in shape) + "]"


def _dict(items: dict[str, Any]) -> str:
    return render_value({"t": "dict", "v": [[k, v] for k, v in items.items()]})


def _strs(items: list[str]) -> str:
    return render_value({"t": "list", "v": list(items)})


def dump(art: Artifact) -> str:
    """The canonical dump of a loaded artifact (reads every tensor's bytes to hash them)."""
    m = art.manifest
    q = render_value
    lines = [f"format {m.format_version[0]}.{m.format_version[1]}",
             f"producer {q(m.producer.name)} {q(m.producer.version)} {q(m.producer.torch)}",
             f"digest {m.digest}"]
    lines += [f"file {f.path} {f.role}" for f in m.files]
    for gi, g in enumerate(m.graphs):
        lines.append(f"graph {gi} {q(g.name)} {len(g.nodes)} training={_bool(g.training)}")
        for i, n in enumerate(g.nodes):
            args = render_value({"t": "list", "v": n.args})
            lines.append(f"node {gi} {i} {n.name} {n.op} {n.target} args={args} kwargs={_dict(n.kwargs)} "
                         f"meta={render_meta(n.meta)} overload={q(n.overload)}")
            if n.lowering is not None:
                lo = n.lowering
                lines.append(f"lowering {gi} {n.name} {lo.module_type} {lo.version} {lo.module_version} "
                             f"training={_bool(lo.training)} attrs={_dict(lo.attrs)}")
            if n.graph is not None:
                lines.append(f"subgraph {gi} {n.name} {n.graph}")
    core = getattr(m, "core", None)
    if core is not None:
        lines.append(f"core graphs={len(core.graphs)} inputs={len(core.inputs)} outputs={len(core.outputs)} "
                     f"ops={len(core.ops)} symbols={len(core.symbols)}")
        for gi, g in enumerate(core.graphs):
            lines.append(f"core_graph {gi} {q(g.name)} {len(g.nodes)} training={_bool(g.training)}")
            for i, n in enumerate(g.nodes):
                args = render_value({"t": "list", "v": n.args})
                origin = "None" if n.origin is None else f"{n.origin.graph}:{n.origin.node}"
                lines.append(f"core_node {gi} {i} {n.name} {n.op} {n.target} args={args} kwargs={_dict(n.kwargs)} "
                             f"meta={render_meta(n.meta)} origin={origin}")
        lines += [f"core_input {i} {x.name} {x.kind} {x.target}" for i, x in enumerate(core.inputs)]
        lines += [f"core_output {i} {q(x.name)} {x.kind} {q(x.target)}" for i, x in enumerate(core.outputs)]
        for key, op in core.ops.items():
            lines.append(f"op {key} {q(op.name)} {q(op.overload)} arguments={len(op.arguments)} "
                         f"returns={len(op.returns)}")
            for which, args in (("arguments", op.arguments), ("returns", op.returns)):
                lines += [f"op_arg {key} {which} {j} {q(a.name)} {q(a.type)} kwarg_only={_bool(a.kwarg_only)} "
                          f"required={_bool(a.required)} mutates={_bool(a.mutates)} default={q(a.default)}"
                          for j, a in enumerate(args)]
        lines += [f"symbol {name} min={s.min} max={q(s.max)} input={s.input} dim={s.dim}"
                  for name, s in core.symbols.items()]
    lines.append(f"signature inputs={_strs(m.signature.inputs)} output={q(m.signature.output)}")
    if m.golden is not None:
        g = m.golden
        lines.append(f"golden {g.mode} {g.file} inputs={render_value({'t': 'list', 'v': g.inputs})} "
                     f"outputs={q(g.outputs)}")
        lines += [f"golden_node {k} {q(v)}" for k, v in g.nodes.items()]
        lines += [f"golden_core_node {k} {q(v)}" for k, v in getattr(g, "core_nodes", {}).items()]
        lines += [f"tolerance {k} {_float(t.rtol)} {_float(t.atol)}" for k, t in g.tolerances.items()]
    for t in m.tensors:
        lines.append(f"tensor {t.name} {t.dtype} {_shape(t.shape)} {t.file} {t.key} "
                     f"{hashlib.sha256(art.stored_bytes(t.name)).hexdigest()} kind={q(t.kind)} "
                     f"requires_grad={_bool(t.requires_grad)} persistent={_bool(t.persistent)}"
                     + ("" if getattr(t, "placement", None) is None else f" placement={_placement(t.placement)}"))

    def params(prefix: str, ps: list) -> None:
        lines.extend(f"{prefix} {j} {p.name} {p.kind} required={_bool(p.required)} default={q(p.default)}"
                     for j, p in enumerate(ps))

    for name, d in m.modules.items():
        lines.append(f"module {name} version={d.version} attrs={len(d.attrs)} forward={len(d.forward)}")
        lines += [f"module_attr {name} {i} {a.name} {a.type} {q(a.doc)}" for i, a in enumerate(d.attrs)]
        params(f"module_param {name}", d.forward)
    for what, table in (("function", m.functions), ("method", m.methods)):
        for name, overloads in table.items():
            for i, o in enumerate(overloads):
                lines.append(f"overload {what} {name} {i} params={len(o.params)} returns={q(o.returns)}")
                params(f"overload_param {what} {name} {i}", o.params)
    return "".join(line + "\n" for line in sorted(lines))
