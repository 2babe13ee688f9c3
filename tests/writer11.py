"""Test support (temporary): complete an export with the format-1.1 fields the writer does not record yet.

LEAD (merge): once writing.py records tensor state (TensorEntry.kind/requires_grad/persistent), training flags
(Lowering.training, Graph.training), `function`/`module` Values, Manifest.modules/functions/methods and
Node.overload, set ``WRITER_RECORDS_1_1 = True`` (then :func:`complete_1_1` only checks that the export has
them) or delete this module and its calls. The loader's tests were written against design 1.1; this module fills
in, from the exported PyTorch module itself, what design 1.1 says a writer records — nothing here is an expected
value of a test.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import torch
import torch.fx as fx

from fxlower.book import rules
from fxlower.targets import allowed_names

WRITER_RECORDS_1_1 = False

MANIFEST = "manifest.msgpack"


def _read(d: Path) -> dict:
    return msgpack.unpackb((d / MANIFEST).read_bytes(), raw=False, strict_map_key=False)


def _write(d: Path, m: dict) -> None:
    (d / MANIFEST).write_bytes(msgpack.packb(m, use_bin_type=True))


def _type_of(v) -> str:
    if v is None:
        return "none"
    if type(v) is bool:
        return "bool"
    if type(v) is int:
        return "int"
    if type(v) is float:
        return "float"
    if type(v) is str:
        return "str"
    if isinstance(v, dict):
        t = v["t"]
        if t in ("tensor", "function", "module", "dtype", "device"):
            return t
        if t == "tuple":
            elems = {_type_of(x) for x in v["v"]}
            elem = elems.pop() if len(elems) == 1 else "int"
            return f"{elem}[{len(v['v'])}]"
    raise AssertionError(f"no attribute type for {v!r}")


def complete_1_1(path: Path, gm: fx.GraphModule) -> None:
    """Add to the artifact at ``path`` (exported from ``gm``) the 1.1 fields design 1.1 says a writer records."""
    m = _read(path)
    if WRITER_RECORDS_1_1:
        assert all("kind" in t for t in m["tensors"]) and "modules" in m, "the writer should record 1.1 fields"
        return
    params = {n: p for n, p in gm.named_parameters(remove_duplicate=False)}
    buffers = {}
    for n, b in gm.named_buffers(remove_duplicate=False):
        owner, _, leaf = n.rpartition(".")
        buffers[n] = leaf not in gm.get_submodule(owner)._non_persistent_buffers_set
    golden_files = {f["path"] for f in m["files"] if f["role"] == "golden"}
    for t in m["tensors"]:
        if t["file"] in golden_files:
            t["kind"], t["requires_grad"], t["persistent"] = "golden", False, True
        elif t["name"] in params:
            t["kind"], t["requires_grad"], t["persistent"] = "parameter", params[t["name"]].requires_grad, True
        elif t["name"] in buffers:
            t["kind"], t["requires_grad"], t["persistent"] = "buffer", False, buffers[t["name"]]
        else:
            t["kind"], t["requires_grad"], t["persistent"] = "constant", False, True
    module_types = {r.type_name for r in rules()} | {"torch.nn.ModuleList", "torch.nn.Sequential",
                                                     "torch.nn.ModuleDict"}
    functions = allowed_names()
    decls: dict[str, dict[str, set[str]]] = {}
    m["functions"], m["methods"] = {}, {}
    for g in m["graphs"]:
        owner = gm.get_submodule(g["name"])
        g["training"] = owner.training
        for n in g["nodes"]:
            n["kwargs"] = {k: v for k, v in n["kwargs"].items() if not k.startswith("_")}
            n["overload"] = None
            if n["op"] in ("call_function", "call_method"):
                table = m["functions"] if n["op"] == "call_function" else m["methods"]
                table.setdefault(n["target"], [{"params": [], "returns": ""}])
                n["overload"] = 0
            low = n["lowering"]
            if low is None:
                continue
            low["training"] = owner.get_submodule(n["target"]).training
            attrs = decls.setdefault(low["module_type"], {})
            for k, v in low["attrs"].items():
                if type(v) is str and v in module_types:
                    v = low["attrs"][k] = {"t": "module", "v": v}
                    decls.setdefault(v["v"], {})
                elif type(v) is str and "." in v and v in functions:
                    v = low["attrs"][k] = {"t": "function", "v": v}
                attrs.setdefault(k, set()).add(_type_of(v))
    m["modules"] = {t: {"version": 1, "attrs": [{"name": k, "type": "|".join(sorted(ts)), "doc": ""}
                                                for k, ts in attrs.items()], "forward": []}
                    for t, attrs in decls.items()}
    _write(path, m)


def export11(gm: fx.GraphModule, path, example_inputs=None, **kwargs) -> None:
    """``fxlower.export`` followed by :func:`complete_1_1`."""
    import fxlower
    fxlower.export(gm, path, example_inputs, **kwargs)
    complete_1_1(Path(path), gm)


__all__ = ["WRITER_RECORDS_1_1", "complete_1_1", "export11"]
