"""``fxlower.export``: write an artifact directory, streaming and atomically (docs/format.md).

Export runs in explicit phases — COLLECT (lift, gather graphs and tensors, run the example inputs), ENCODE
(build and validate the manifest), WRITE_TENSORS, WRITE_MANIFEST, PUBLISH — in a temporary sibling directory
``<target>.fxlower-tmp-<random>`` that is created first (so a missing or read-only parent fails before any heavy
work) and held under an exclusive ``flock`` for the export's lifetime: a temporary whose lock nobody holds was left
by an export that died (e.g. SIGKILL), and the next export of the same target removes it first
(``ExportSummary.removed_temporaries``; ``fxlower clean PATH`` does it on demand). Files are fsynced, then the
directory, then it is renamed into place without replacing anything (``renameat2(RENAME_NOREPLACE)``), or
swapped with the old artifact (``RENAME_EXCHANGE``) when overwriting, and the parent is fsynced. On any failure,
interruption included, the temporary directory is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import enum
import errno
import fcntl
import hashlib
import math
import os
import re
import secrets
import shutil
import stat
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import torch
import torch.fx as fx

from .. import __version__
from ..format.constants import (FORMAT_ID, FORMAT_VERSION, GOLDEN_FILE, MANIFEST_FILE, MAX_MANIFEST_BYTES, ROLE_GOLDEN,
                        ROLE_WEIGHTS, TOLERANCES, WEIGHTS_FILE, WEIGHTS_SHARD_FILE)
from ..views.core import encode_core, origin_links, run_core, to_core, user_output_structure
from ..errors import ExportError, FormatError, UnsupportedModuleError
from ..lowering.lifting import META_KEY, iter_graph_modules, lift, module_declarations
from ..format.names import check_dotted_target, check_function_name, check_identifier, check_method_name, check_name
from .progress import bar as _progress_bar, check_progress
from ..format.schema import (FileEntry, Golden, Graph, Lowering, Manifest, MeshDim, ModuleDecl, Node, NodeLink, Placement,
                     Producer, Signature, TensorEntry, Tolerance, to_obj)
from ..lowering.signatures import CATCH_ALL, choose_overload, function_overloads, method_overloads, to_schema
from ..lowering.targets import function_name
from .tensorfile import _write_all, file_order, plan_files, storage_code, write_file_plan
from ..format.values import clone_tensors, encode, has_tensor, meta_of

__all__ = ["export", "ExportSummary", "ArtifactExistsError", "pack_manifest", "remove_orphaned_temporaries"]


class ArtifactExistsError(ExportError, FileExistsError):
    """The target path exists and ``overwrite`` was not given."""


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    """What :func:`export` wrote."""

    path: str
    nodes: int
    graphs: int
    tensors: int
    bytes_written: int
    digest: str
    #: Temporaries of earlier exports to this path that died before publishing (no live lock), removed first.
    removed_temporaries: tuple[str, ...] = ()
    #: 1.3: the number of weights files (shards; 1 without ``max_shard_bytes`` or when all fits, 0 without tensors).
    weights_files: int = 0


class Phase(enum.IntEnum):
    COLLECT = 1
    ENCODE = 2
    WRITE_TENSORS = 3
    WRITE_MANIFEST = 4
    PUBLISH = 5
    DONE = 6


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, use_single_float=False)


def pack_manifest(manifest: Manifest, packed: dict[str, bytes] | None = None) -> bytes:
    """The manifest's bytes: shortest forms, float64 floats, fields in schema order.

    Args:
        manifest: the manifest.
        packed: field name -> that field's value already packed (the digest packs graphs and signature; they
            are not packed twice).
    """
    packed = packed or {}
    fields = dataclasses.fields(manifest)
    parts = [msgpack.Packer().pack_map_header(len(fields))]
    for f in fields:
        parts.append(_pack(f.name))
        parts.append(packed[f.name] if f.name in packed else _pack(to_obj(getattr(manifest, f.name))))
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------ tensors

def _alias_key(t: torch.Tensor) -> tuple | None:
    """Tensors with equal keys view the same bytes; None for tensors without storage bytes. Meta tensors have no
    storage to compare: the same tensor object under two names (a tied Parameter) is one alias group."""
    if t.numel() == 0:
        return None
    if t.device.type == "meta":
        return ("meta", id(t))
    return (t.untyped_storage().data_ptr(), t.device, t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype)


class _TensorTable:
    """Names tensors, detects aliases (same bytes under two names) and groups them by file."""

    def __init__(self) -> None:
        self.tensors: dict[str, tuple[torch.Tensor, str]] = {}  # name -> (tensor, role)
        self.state: dict[str, tuple[str, bool, bool]] = {}  # name -> (kind, requires_grad, persistent)
        self._by_id: dict[int, str] = {}

    def add(self, name: str, t: torch.Tensor, role: str, kind: str, requires_grad: bool = False,
            persistent: bool = True) -> str:
        """Add ``t`` under ``name``; ``kind`` is "parameter", "buffer", "constant" or "golden" (format 1.1)."""
        check_name(name, f"tensor '{name}'")
        self.code(t, f"tensor '{name}'")
        if name in self.tensors:
            if self.tensors[name][0] is not t:
                raise ExportError(f"two different tensors are both named '{name}'")
            return name
        self.tensors[name] = (t, role)
        self.state[name] = (kind, requires_grad, persistent)
        self._by_id.setdefault(id(t), name)
        return name

    def code(self, t: torch.Tensor, where: str) -> str:
        """The storage dtype code of ``t``; ExportError if the format cannot store it (``where`` names it)."""
        return storage_code(t, where, meta_ok=True)  # meta: bytes from weights_from (checked before writing)

    def alias_key(self, t: torch.Tensor) -> tuple | None:
        """Tensors with equal keys (and role) are one alias group; None: a group of its own (:func:`_alias_key`)."""
        return _alias_key(t)

    def name_of(self, t: torch.Tensor) -> str | None:
        return self._by_id.get(id(t))

    def entries(self, hashes: dict[tuple[str, str], str], files: dict[tuple[str, str], str],
                placements: dict[str, Placement] | None = None) -> list[TensorEntry]:
        """Table entries sorted by name; ``hashes`` and ``files`` map (role, key) to sha256 and to the file that
        holds the key; ``placements`` maps names to their 1.3 placement."""
        placements = placements or {}
        out = []
        keys = self.keys()
        for name in sorted(self.tensors):
            t, role = self.tensors[name]
            key = keys[name]
            kind, requires_grad, persistent = self.state[name]
            out.append(TensorEntry(name=name, dtype=self.code(t, name), shape=[int(s) for s in t.shape],
                                   file=files[(role, key)], key=key, sha256=hashes[(role, key)], kind=kind,
                                   requires_grad=requires_grad, persistent=persistent,
                                   placement=placements.get(name)))
        return out

    def keys(self) -> dict[str, str]:
        """name -> stored key: the smallest name of its alias group."""
        groups: dict[tuple, list[str]] = {}
        for name, (t, role) in self.tensors.items():
            k = self.alias_key(t)
            groups.setdefault((role, k) if k is not None else (role, "name", name), []).append(name)
        keys = {}
        for names in groups.values():
            for n in names:
                keys[n] = min(names)
        return keys

    def stored(self, role: str) -> list[tuple[str, torch.Tensor]]:
        keys = self.keys()
        return [(n, t) for n, (t, r) in sorted(self.tensors.items()) if r == role and keys[n] == n]

    def meta_groups(self) -> list[tuple[list[str], str, tuple[int, ...]]]:
        """Per stored meta tensor: ``(names of its alias group, stored key first; dtype code; shape)``."""
        keys = self.keys()
        groups: dict[str, list[str]] = {}
        for name, (t, _) in sorted(self.tensors.items()):
            if t.device.type == "meta":
                groups.setdefault(keys[name], []).append(name)
        out = []
        for key, names in sorted(groups.items()):
            t = self.tensors[key][0]
            out.append(([key] + [n for n in names if n != key], storage_code(t, key, meta_ok=True),
                        tuple(int(s) for s in t.shape)))
        return out


def _checkpoint_sources(table: _TensorTable, checkpoint: Any) -> dict[str, Any]:
    """The checkpoint source of every meta tensor of ``table`` (keyed by stored key), or the error listing every
    mismatch; without a checkpoint, ExportError naming the meta tensors."""
    groups = table.meta_groups()
    if checkpoint is None:
        if not groups:
            return {}
        names = [g[0][0] for g in groups]
        more = f", and so are {len(names) - 1} more ({', '.join(names[1:4])}{', ...' if len(names) > 4 else ''})" \
            if len(names) > 1 else ""
        raise ExportError(f"tensor '{names[0]}' is a meta tensor (it has no data){more}; pass "
                          f"weights_from=<checkpoint> to take the bytes from a safetensors checkpoint by state-dict "
                          f"name, or materialise the model (e.g. load_state_dict(..., assign=True)) before export")
    from .checkpoints import sources_for
    # symbolic_trace registers every buffer as persistent, so the note cannot tell which ones were not
    notes = {name: "a buffer: checkpoints do not hold non-persistent buffers; if it is one, assign it a real tensor"
             for name, (kind, _, _) in table.state.items() if kind == "buffer"}
    sources = sources_for(checkpoint, groups, set(table.tensors), notes)
    order = file_order((key, code, shape) for (key, *_), code, shape in groups if key in sources)
    checkpoint.hash_ahead([sources[key] for key, _, _ in order])  # in the order write_tensor_file copies them
    return sources


def _has_meta(gm: fx.GraphModule | None, ep: Any) -> bool:
    """Whether the model holds a meta tensor (parameters, buffers, get_attr constants; the program's state)."""
    tensors: list = []
    if gm is not None:
        tensors += list(gm.parameters()) + list(gm.buffers())
        for path, g in iter_graph_modules(gm):
            for node in g.graph.find_nodes(op="get_attr"):
                with contextlib.suppress(AttributeError):
                    tensors.append(_get_attr(g, node.target))
    if ep is not None:
        tensors += list(ep.state_dict.values()) + list(ep.constants.values())
    return any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tensors)


def _get_attr(root: torch.nn.Module, dotted: str) -> Any:
    obj: Any = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------------------------ running

class _Recorder(fx.Interpreter):
    """Runs a graph (and its nested graphs), reporting every node's result to ``sink(path, node, value)``."""

    def __init__(self, gm: fx.GraphModule, path: str, sink: Callable[[str, fx.Node, Any], None]):
        super().__init__(gm)
        self.extra_traceback = False  # run_node's ExportError says where; no "While executing" appended to it
        self.path = path
        self.sink = sink

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except ExportError:
            raise  # from a nested graph's node, already explained
        except Exception as e:
            where = f"node '{n.name}' ({n.op} {_target_text(n.target)})"
            where += f" in graph '{self.path}'" if self.path else " in the root graph"
            raise ExportError(
                f"running the example inputs failed at {where}: {type(e).__name__}: {e}. "
                f"example_inputs must be what the model's forward accepts (count, shapes, dtypes, devices); "
                f"fix them, or export without example_inputs") from e
        self.sink(self.path, n, out)
        return out

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        sub = self.fetch_attr(target)
        if isinstance(sub, fx.GraphModule):
            names = [p.target for p in sub.graph.find_nodes(op="placeholder")]
            pos = list(args) + [kwargs[n.lstrip("*")] for n in names[len(args):] if n.lstrip("*") in kwargs]
            path = f"{self.path}.{target}" if self.path else target
            return _Recorder(sub, path, self.sink).run(*pos)
        return super().call_module(target, args, kwargs)


def _target_text(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)


def _meta_from_node(node: fx.Node) -> dict | None:
    """Metadata from an earlier shape propagation (``tensor_meta``) or fake-tensor trace (``val``)."""
    if "val" in node.meta:
        return meta_of(node.meta["val"])
    tm = node.meta.get("tensor_meta")
    if tm is None:
        return None

    def conv(x: Any) -> Any:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return torch.empty(tuple(x.shape), dtype=x.dtype, device="meta")
        if isinstance(x, (list, tuple)):
            return type(x)(conv(v) for v in x)
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    return meta_of(conv(tm))


# ------------------------------------------------------------------------------------------------ the program

class _Program:
    """Collects and encodes everything the manifest says about one GraphModule."""

    def __init__(self, gm: fx.GraphModule, example_inputs: tuple | None, golden: bool | str):
        self.phase = Phase.COLLECT
        self.gm = gm
        self.table = _TensorTable()
        self.graph_modules = list(iter_graph_modules(gm))
        self.graph_index = {id(g): i for i, (_, g) in enumerate(self.graph_modules)}
        self.metas: dict[tuple[str, str], dict] = {}
        self.node_values: dict[str, Any] = {}
        self.golden_mode = "nodes" if golden == "nodes" else ("outputs" if golden else None)
        self.example_inputs = example_inputs
        self.golden_inputs: tuple | None = None
        self.golden_outputs: Any = None
        # 1.1 declarations: overloads per call_function target / call_method name, rules per module type
        self.functions: dict[str, list] = {}
        self.methods: dict[str, list] = {}
        self.records: list = []  # the lowering records written, for Manifest.modules

    def advance(self, expected: Phase, to: Phase) -> None:
        if self.phase != expected:
            raise RuntimeError(f"export phase {to.name} requested while in {self.phase.name}; "
                               f"expected {expected.name}")  # a bug in fxlower, not in the input
        self.phase = to

    def collect(self) -> None:
        lift(self.gm, strict=True)
        gm = self.gm
        for name, t in gm.named_parameters(remove_duplicate=False):
            self.table.add(name, t, ROLE_WEIGHTS, "parameter", requires_grad=bool(t.requires_grad))
        for name, t in gm.named_buffers(remove_duplicate=False):
            owner, _, leaf = name.rpartition(".")
            persistent = leaf not in gm.get_submodule(owner)._non_persistent_buffers_set
            self.table.add(name, t, ROLE_WEIGHTS, "buffer", persistent=persistent)
        for path, g in self.graph_modules:
            for node in g.graph.nodes:
                if node.op == "get_attr":
                    fqn = f"{path}.{node.target}" if path else node.target
                    try:
                        value = _get_attr(g, node.target)
                    except AttributeError as e:
                        raise ExportError(f"get_attr node '{node.name}' names '{node.target}', which the module "
                                          f"does not have ({e})") from e
                    if not isinstance(value, torch.Tensor):
                        raise ExportError(f"get_attr node '{node.name}' names '{node.target}', a "
                                          f"{type(value).__qualname__}; format v1 stores tensors only")
                    self.table.add(fqn, value, ROLE_WEIGHTS, "constant")
        for path, g in self.graph_modules:
            for node in g.graph.nodes:
                record = node.meta.get(META_KEY) if node.op == "call_module" else None
                if record is None:
                    continue
                prefix = f"{path}.{node.target}" if path else node.target
                for attr, value in record.attrs.items():
                    if isinstance(value, torch.Tensor) and self.table.name_of(value) is None:
                        self.table.add(f"{prefix}.{attr}", value, ROLE_WEIGHTS, "constant")
        if self.example_inputs is not None:
            self._run()
        self.advance(Phase.COLLECT, Phase.ENCODE)

    def _run(self) -> None:
        inputs = tuple(self.example_inputs)
        on_meta = any(t.device.type == "meta" for t, _ in self.table.tensors.values())
        if on_meta:  # weights_from: shapes and dtypes by meta propagation (golden is refused before)
            inputs = torch.utils._pytree.tree_map(
                lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v, inputs)
        self.golden_inputs = clone_tensors(inputs)
        keep_nodes = self.golden_mode == "nodes"

        def sink(path: str, node: fx.Node, value: Any) -> None:
            self.metas[(path, node.name)] = meta_of(value)
            if keep_nodes and path == "" and node.op not in ("placeholder", "output"):
                self.node_values[node.name] = clone_tensors(value)

        # The artifact means eval-mode, no-grad computation (docs/semantics.md): run so, then restore the flags.
        flags = [(m, m.training) for m in self.gm.modules()]
        try:
            self.gm.eval()
            with torch.no_grad():
                out = _Recorder(self.gm, "", sink).run(*clone_tensors(inputs))
        except ExportError as e:
            if not on_meta:
                raise
            warnings.warn(f"the model has meta tensors, so its example inputs were run on the meta device, which "
                          f"failed ({e.__cause__ or e}); no output shapes were recorded from example_inputs (only "
                          f"those earlier passes left in node.meta). Materialise the tensors the failing node uses "
                          f"on the meta device too, or trace with shape propagation before export", stacklevel=4)
            self.metas.clear()
            return
        finally:
            for m, training in flags:
                m.training = training
        self.golden_outputs = out

    # --- encoding ---

    def _attr_namer(self, own: str) -> Callable[[torch.Tensor], str]:
        """Names a lowering attribute's tensor: by the module's own name for it (``own``) when that names this
        very tensor, else by its first name in the table (e.g. a tied weight owned elsewhere)."""
        def name(t: torch.Tensor) -> str:
            entry = self.table.tensors.get(own)
            if entry is not None and entry[0] is t:
                return own
            found = self.table.name_of(t)
            if found is None:
                raise ExportError(f"lowering attribute '{own}' holds a tensor that is not in the tensor table")
            return found
        return name

    def _golden_namer(self, prefix: str) -> Callable[[torch.Tensor], str]:
        return _golden_namer(self.table, prefix)

    def encode_graph(self, path: str, g: fx.GraphModule) -> Graph:
        nodes = []
        gwhere = f"graph '{path}'" if path else "root graph"
        modules = dict(g.named_modules(remove_duplicate=False))
        order = {n: i for i, n in enumerate(g.graph.nodes)}  # users are written in graph order (format.md 2.1)
        for node in g.graph.nodes:
            where = f"node '{node.name}' in {gwhere}"
            check_name(node.name, where)
            target = self._target(node, where)
            node_kwargs = _public_kwargs(node, where)
            args = [encode(a, where=f"{where} args[{i}]") for i, a in enumerate(node.args)]
            kwargs = {k: encode(v, where=f"{where} kwargs['{k}']") for k, v in node_kwargs.items()}
            lowering = None
            sub_graph = None
            overload = None
            if node.op == "call_module":
                module = modules[node.target]
                if isinstance(module, fx.GraphModule):
                    sub_graph = self.graph_index[id(module)]
                else:
                    rec = node.meta[META_KEY]
                    prefix = f"{path}.{node.target}" if path else node.target
                    self.records.append(rec)
                    lowering = Lowering(
                        module_type=rec.module_type, version=rec.version, module_version=rec.module_version,
                        attrs={k: encode(v, tensor_name=self._attr_namer(f"{prefix}.{k}"),
                                         where=f"{where} attribute '{k}'")
                               for k, v in rec.attrs.items()},
                        training=bool(module.training))
            elif node.op == "call_function":
                table = self.functions
                if target not in table:
                    table[target] = function_overloads(node.target, target)
                overload = self._bind(table[target], node, node_kwargs, path)
            elif node.op == "call_method":
                if target not in self.methods:
                    self.methods[target] = method_overloads(target)
                overload = self._bind(self.methods[target], node, node_kwargs, path)
            meta = self.metas.get((path, node.name))
            if meta is None and (path, node.name) not in self.metas:
                meta = _meta_from_node(node)
            nodes.append(Node(
                name=node.name, op=node.op, target=target, args=args, kwargs=kwargs,
                inputs=[n.name for n in node.all_input_nodes], users=[u.name for u in sorted(node.users, key=order.__getitem__)],
                meta=meta, lowering=lowering, graph=sub_graph, overload=overload))
        return Graph(name=path, nodes=nodes, training=bool(g.training))

    def _bind(self, sigs: list, node: fx.Node, kwargs: dict[str, Any], path: str) -> int:
        """The overload ``node`` binds to; a call that binds to none gets the catch-all ``(*args, **kwargs)``."""
        def is_tensor(value: Any) -> bool | None:
            if isinstance(value, fx.Node):
                meta = self.metas.get((path, value.name)) or _meta_from_node(value)
                return None if meta is None else meta.get("t") == "tensor"
            return isinstance(value, torch.Tensor)
        index = choose_overload(sigs, tuple(node.args), kwargs, is_tensor)
        if index is None:
            if CATCH_ALL not in sigs:
                sigs.append(CATCH_ALL)
            index = sigs.index(CATCH_ALL)
        return index

    def declarations(self) -> tuple[dict[str, ModuleDecl], dict[str, list], dict[str, list]]:
        """Manifest.modules, .functions and .methods, sorted by name."""
        modules = module_declarations(self.records)
        functions = {name: to_schema(self.functions[name], f"function '{name}'") for name in sorted(self.functions)}
        methods = {name: to_schema(self.methods[name], f"method '{name}'") for name in sorted(self.methods)}
        return modules, functions, methods

    @staticmethod
    def _target(node: fx.Node, where: str) -> str:
        try:
            if node.op == "call_function":
                return check_function_name(function_name(node.target), where)
            if node.op == "call_method":
                return check_method_name(node.target, where)
            if node.op in ("get_attr", "call_module"):
                return check_dotted_target(node.target, where)
            if node.op == "placeholder":
                return check_identifier(node.target, where)
        except FormatError as e:
            raise ExportError(f"{where}: its target cannot be written: {e}") from e
        return "output"

    def encode_program(self) -> tuple[list[Graph], Signature, Golden | None]:
        graphs = [self.encode_graph(path, g) for path, g in self.graph_modules]
        root = self.gm.graph
        output = [n for n in root.nodes if n.op == "output"]
        if len(output) != 1:
            raise ExportError(f"the root graph has {len(output)} output nodes; expected exactly one")
        signature = Signature(inputs=[n.name for n in root.find_nodes(op="placeholder")],
                              output=encode(output[0].args[0], where="output"))
        golden = None
        if self.golden_mode is not None:
            inputs = [encode(v, tensor_name=self._golden_namer(f"golden/inputs/{i}"), where=f"golden input {i}")
                      for i, v in enumerate(self.golden_inputs)]
            outputs = encode(self.golden_outputs, tensor_name=self._golden_namer("golden/outputs"),
                             where="golden output")
            nodes = {n: encode(v, tensor_name=self._golden_namer(f"golden/nodes/{n}"), where=f"golden node '{n}'")
                     for n, v in self.node_values.items() if has_tensor(v)}
            golden = Golden(mode=self.golden_mode, file=GOLDEN_FILE, inputs=inputs, outputs=outputs, nodes=nodes,
                            tolerances=_tolerances(self.table))
        return graphs, signature, golden


def _golden_namer(table: _TensorTable, prefix: str) -> Callable[[torch.Tensor], str]:
    counter = iter(range(1 << 62))

    def name(t: torch.Tensor) -> str:
        return table.add(f"{prefix}/{next(counter)}", t, ROLE_GOLDEN, "golden")
    return name


def _tolerances(table: _TensorTable) -> dict[str, Tolerance]:
    """A tolerance for every dtype of the golden results (inputs excluded)."""
    dtypes = sorted({storage_code(t, n) for n, (t, r) in table.tensors.items()
                     if r == ROLE_GOLDEN and not n.startswith("golden/inputs/")})
    return {c: Tolerance(*TOLERANCES.get(c, (0.0, 0.0))) for c in dtypes}


#: Private keyword arguments that only affect warnings; the format carries no "_" keyword (docs/format.md).
_DROPPED_KWARGS = frozenset({"_stacklevel"})


def _public_kwargs(node: fx.Node, where: str) -> dict[str, Any]:
    """The node's kwargs without the private ones that do not change the result (``_stacklevel``)."""
    out = {}
    for k, v in node.kwargs.items():
        if k.startswith("_"):
            if k in _DROPPED_KWARGS:
                continue
            raise ExportError(f"{where} passes the private keyword argument '{k}', which the format does not "
                              f"carry (a consumer could not bind it); call the function without it")
        out[k] = v
    return out


def _digest(graphs: bytes, tensors: list[TensorEntry], signature: bytes, core: bytes | None = None) -> str:
    """docs/format.md section 7: SHA-256 of the array [graphs, weight tensors, signature], given the packed
    graphs and signature (an array of 3 is the byte 0x93 followed by its items); with a core view (1.2), of
    [graphs, weight tensors, signature, core] (0x94 and the packed CoreView appended)."""
    weights = _pack(to_obj([t for t in tensors if t.file != GOLDEN_FILE]))  # the golden file is never sharded
    if core is None:
        return "sha256:" + hashlib.sha256(b"\x93" + graphs + weights + signature).hexdigest()
    return "sha256:" + hashlib.sha256(b"\x94" + graphs + weights + signature + core).hexdigest()


# ------------------------------------------------------------------------------------------------ file system

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """Linux renameat2; False if the platform lacks it (the caller then falls back)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL) and flags:
        return False
    raise OSError(err, os.strerror(err), dst)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(tmp: str, name: str, write: Callable[[int], Any]) -> tuple[Any, int]:
    """Create ``tmp/name`` (mode 0o666 less the umask), let ``write(fd)`` fill it, fsync, close."""
    path = os.path.join(tmp, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        result = write(fd)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return result, size


_SHARD_NAME = re.compile(re.escape(WEIGHTS_SHARD_FILE.split("{")[0]) + r"[0-9]{5}-of-[0-9]{5}\.safetensors\Z")


def _is_tensor_file_name(name: str) -> bool:
    """Whether ``name`` is a tensor file an export writes (weights, a weights shard, golden)."""
    return name in (WEIGHTS_FILE, GOLDEN_FILE) or _SHARD_NAME.match(name) is not None


def _is_replaceable(target: str) -> bool:
    """Whether overwrite may replace ``target``: a real directory that is an fxlower artifact (it has a
    manifest) or holds nothing but the files an export writes (empty, or an artifact another export is
    replacing at this moment). Anything else may be a user's data and is never replaced."""
    try:
        st = os.lstat(target)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            return False
        entries = set(os.listdir(target))
    except FileNotFoundError:
        return True  # gone meanwhile: nothing to protect
    return MANIFEST_FILE in entries or all(_is_tensor_file_name(e) for e in entries)


def _describe(target: str) -> str:
    """What ``target`` is, for a message about why overwrite cannot replace it."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return "it is gone"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is a file, not a directory"
    others = sorted(e for e in os.listdir(target) if not _is_tensor_file_name(e))
    shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    return f"it is a directory without {MANIFEST_FILE} that holds {shown}"


def _exists_error(target: str, during: bool) -> ArtifactExistsError:
    """The error for an existing ``target``: overwrite=True is suggested only where it would work."""
    how = "was created by someone else during export" if during else "exists"
    if _is_replaceable(target):
        msg = f"{target} {how} (an fxlower artifact); pass overwrite=True to replace it, or choose another path"
    else:
        msg = (f"{target} {how} and is not an fxlower artifact directory ({_describe(target)}); overwrite=True "
               f"replaces only artifact directories, never other data. Choose another path, or move or remove "
               f"what is there yourself")
    return ArtifactExistsError(errno.EEXIST, msg, target)


def _publish(tmp: str, target: str, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``: never replacing anything without ``overwrite``, and with it, swapping
    atomically with the old artifact (or, where ``renameat2`` is missing, renaming the old one aside first)."""
    while True:
        if not os.path.lexists(target):
            try:
                if not _renameat2(tmp, target, _RENAME_NOREPLACE):
                    if os.path.lexists(target):
                        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
                    os.rename(tmp, target)
                return
            except FileExistsError:
                if not overwrite:
                    raise _exists_error(target, during=True) from None
                continue  # a concurrent export published first: replace it below
        if not overwrite:
            raise _exists_error(target, during=False)
        if not _is_replaceable(target):
            raise _exists_error(target, during=False)
        if _renameat2(tmp, target, _RENAME_EXCHANGE):
            _rmtree(tmp)  # tmp now holds the old artifact
            return
        old = f"{target}.fxlower-old-{secrets.token_hex(8)}"
        os.rename(target, old)
        os.rename(tmp, target)
        _rmtree(old)
        return


# ------------------------------------------------------------------------------------------------ temporaries

_TMP_MARK = ".fxlower-tmp-"
_TMP_ATTEMPTS = 100


def _rmtree(path: str) -> None:
    """Remove a tree; entries that vanish meanwhile (a concurrent clean of the same orphan) are not errors."""
    def ignore_vanished(func, p, exc):
        exc = exc[1] if isinstance(exc, tuple) else exc  # onerror gets exc_info, onexc (3.12+) the exception
        if not isinstance(exc, FileNotFoundError):
            raise exc
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=ignore_vanished)
    else:
        shutil.rmtree(path, onerror=ignore_vanished)


_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.EBADF}


def _try_lock(fd: int) -> bool | None:
    """Lock a directory exclusively without waiting: True if locked, False if someone holds it, None where the
    file system offers no flock on directories (e.g. some NFS setups; there no temporary is ever judged orphaned)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_LOCKS:
            return None
        raise


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))


def _make_temporary(parent: str, base: str) -> tuple[str, int]:
    """Create ``<base>.fxlower-tmp-<random>`` in ``parent`` and lock it; return its path and the locked fd.

    A concurrent clean may lock and remove a directory in the instant between its mkdir and our flock: then the
    lock fails or the path no longer names the locked directory, and a new name is tried."""
    for _ in range(_TMP_ATTEMPTS):
        tmp = os.path.join(parent, f"{base}{_TMP_MARK}{secrets.token_hex(8)}")
        os.mkdir(tmp, 0o777)
        try:
            fd = _open_dir(tmp)
        except FileNotFoundError:
            continue
        try:
            if _try_lock(fd) is not False:
                st, now = os.fstat(fd), os.lstat(tmp)
                if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    return tmp, fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.rmdir(tmp)
            raise
        os.close(fd)
    raise ExportError(f"could not create and lock a temporary directory in {parent} in {_TMP_ATTEMPTS} "
                      f"attempts (each was removed at once by a concurrent 'fxlower clean'); retry the export")


def remove_orphaned_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporaries that exports to ``path`` left when they died before publishing (killed, power
    loss): ``<path>.fxlower-tmp-<16 hex digits>`` directories whose lock no live export holds. A running
    export's temporary is locked and never touched.

    Args:
        path: the artifact path the exports wrote to.

    Returns:
        The removed directories' paths, sorted.

    Raises:
        ExportError: the parent directory cannot be listed, or an orphan cannot be removed (errno and path named).
    """
    target = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(target)
    pattern = re.compile(re.escape(base + _TMP_MARK) + "[0-9a-f]{16}")
    try:
        names = sorted(n for n in os.listdir(parent) if pattern.fullmatch(n))
    except OSError as e:
        raise ExportError(f"cannot list {parent} to look for temporaries of {target}: {e.strerror} "
                          f"(errno {e.errno})") from e
    removed = []
    for name in names:
        tmp = os.path.join(parent, name)
        try:
            fd = _open_dir(tmp)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone meanwhile, or not ours (a file or a symbolic link of that name is left alone)
        except OSError as e:
            if e.errno == errno.ELOOP:
                continue
            raise ExportError(f"cannot open the temporary {tmp}: {e.strerror} (errno {e.errno})") from e
        try:
            if _try_lock(fd) is not True:
                continue  # a live export holds it (or locks are not available here: then it cannot be told)
            try:
                _rmtree(tmp)
            except OSError as e:
                raise ExportError(f"cannot remove the orphaned temporary {tmp}: {e.strerror} (errno {e.errno}, "
                                  f"{e.filename or tmp}); remove it by hand") from e
            removed.append(tmp)
        finally:
            os.close(fd)
    return removed


# ------------------------------------------------------------------------------------------------ export

def export(gm: fx.GraphModule | torch.nn.Module | torch.export.ExportedProgram, path: str | os.PathLike,
           example_inputs: tuple | None = None, *, example_kwargs: dict[str, Any] | None = None,
           core: bool = False, dynamic_shapes: Any = None, module: torch.nn.Module | None = None,
           golden: bool | str = False, overwrite: bool = False, max_shard_bytes: int | None = None,
           placements: dict[str, tuple] | None = None, weights_from: str | os.PathLike | None = None,
           timeout: float | None = None, progress: bool | None = None) -> ExportSummary:
    """Lift ``gm`` and write it as an fxlower artifact directory at ``path``.

    Temporaries that earlier exports to ``path`` left behind when they were killed are removed first and listed
    in the summary's ``removed_temporaries``.

    Args:
        gm: the GraphModule; nested GraphModules reached by ``call_module`` become graphs of their own. Any
            other ``nn.Module`` is traced first with ``torch.fx.symbolic_trace`` (with ``core=True``, one that
            cannot be traced is exported through ``torch.export`` and its module view derived from the core
            view). A ``torch.export.ExportedProgram`` gives the core view only (``graphs`` empty, ``signature``
            from the core root graph), or, with ``module=``, also the module view derived over that module.
        path: the artifact directory to create.
        example_inputs: positional inputs; when given, every node's output shape and dtype are recorded from a
            run on them (otherwise from ``node.meta`` where an earlier pass left them).
        example_kwargs: keyword inputs of forward, passed with ``example_inputs`` (to torch.export and to the
            module view's run, where they bind to the root placeholders of those names).
        core: also write the core view (format 1.2): ``torch.export.export`` then ``run_decompositions()``
            (Core ATen), linked node by node to the module view. Needs ``example_inputs``.
        dynamic_shapes: passed to ``torch.export.export`` (``core=True`` only); symbolic sizes are written as
            expressions over the symbols the core view declares.
        module: with an ExportedProgram, the ``nn.Module`` it was exported from: the module view is derived over
            its submodules.
        golden: ``True`` to store the example inputs and the outputs they produce, with tolerances;
            ``"nodes"`` to store every root node's output too (and every core root node's). Requires
            ``example_inputs`` (an ExportedProgram's own example inputs serve when none are given).
        overwrite: replace an existing artifact at ``path`` (atomically); otherwise an existing path raises.
        max_shard_bytes: split the weights over several files (format 1.3, docs/format.md section 5.1) of at most
            this many bytes of tensor data each (a larger tensor is alone in its file): ``weights-00001-of-0000N.
            safetensors``, ... With ``None``, or when everything fits, one ``weights.safetensors``.
        placements: format 1.3 placements to record: tensor name -> ``(mesh_shape, [Shard(d) | Replicate(), ...])``
            (``torch.distributed.tensor`` placement objects, one per mesh dimension), optionally with a third item,
            the mesh dimension names. The stored tensor stays whole; the placement tells a multi-device consumer
            how to lay it out (and ``Artifact.tensor(name, shard=(rank, world))`` reads one rank's slice).
        weights_from: a safetensors checkpoint (one file, a directory of them, or a Hugging Face hub
            ``*.safetensors.index.json``) that holds the bytes of the model's meta tensors, e.g. of a model built
            under ``torch.device("meta")``: each is taken by its state-dict name and streamed from the file into
            the artifact (``copy_file_range``), hashed on the way, with a bounded amount of memory whatever the
            model's size. Tensors not on the meta device are written from memory. The artifact is byte-identical
            to the export of the materialised model. Not with ``golden`` (a meta model cannot run) or ``core``;
            ``example_inputs`` are run on the meta device to record shapes (docs/scale.md).
        timeout: seconds each phase of a collective export may wait for the other ranks (default 300). A
            collective export happens when torch.distributed is initialised and ``gm`` holds DTensor parameters
            or buffers: then every rank must call export with the same arguments (fxlower.io.collective).
        progress: a tqdm bar on stderr while the tensor files are written, in bytes and tensors. None (default):
            only when stderr is a terminal and the writing has taken a second; True: at once, on any stderr;
            False: never. The files written are the same either way.

    Returns:
        An :class:`ExportSummary` (path, node and tensor counts of the module view, bytes written, digest,
        removed temporaries, number of weights files).

    Raises:
        ArtifactExistsError: ``path`` exists and ``overwrite`` is false, or it is not an artifact directory
            (which ``overwrite`` never replaces); also a ``FileExistsError``.
        UnsupportedModuleError: a leaf module has no lowering rule.
        CheckpointMismatchError: ``weights_from`` lacks meta tensors, holds tensors the model does not use, or
            holds them with another shape or dtype (all listed at once).
        FormatError: a ``weights_from`` file's safetensors header is malformed (the file is named).
        ExportError: tracing an ``nn.Module`` failed; torch.export failed; running the example inputs failed;
            a value, tensor, name, operator or size expression cannot be written; or the file system failed
            (errno and path named).

    Example:
        >>> import torch, torch.nn as nn, fxlower
        >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        >>> s = fxlower.export(gm, "/tmp/doc-example.fxl", (torch.randn(1, 4),), golden=True, overwrite=True)
        >>> s.nodes, s.tensors
        (4, 4)
    """
    if golden not in (False, True, "nodes"):
        raise ValueError(f"golden must be False, True or 'nodes', got {golden!r}")
    check_progress(progress)
    plan_files([], WEIGHTS_FILE, max_shard_bytes)  # ValueError for a limit that is not a positive int
    placed = _placements(placements)
    from . import collective
    if collective.applies(gm):
        if placements is not None or weights_from is not None:
            raise ValueError("placements= and weights_from= are for a single-process export; a collective export "
                             "records each DTensor's own placements and writes each rank's own shards")
        return collective.export(gm, path, example_inputs, example_kwargs=example_kwargs, core=core,
                                 golden=golden, overwrite=overwrite, max_shard_bytes=max_shard_bytes,
                                 timeout=timeout)
    if example_inputs is not None and not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if example_kwargs is not None and not isinstance(example_kwargs, dict):
        raise TypeError(f"example_kwargs must be a dict of keyword inputs, got {type(example_kwargs).__qualname__}")
    if module is not None and not isinstance(gm, torch.export.ExportedProgram):
        raise ValueError("module= is for an ExportedProgram (the module it was exported from); a GraphModule or "
                         "nn.Module is its own module view")
    ep = None
    derived = None
    if isinstance(gm, torch.export.ExportedProgram):
        if dynamic_shapes is not None:
            raise ValueError("dynamic_shapes applies when export runs torch.export; an ExportedProgram has its "
                             "dynamic shapes already")
        ep = gm
        if example_inputs is None and example_kwargs is None and ep.example_inputs is not None:
            example_inputs, example_kwargs = tuple(ep.example_inputs[0]), dict(ep.example_inputs[1])
        gm = None
        if module is not None:
            ep = _to_core(ep)
            gm, derived = _derive(ep, module)
    elif not isinstance(gm, fx.GraphModule):
        if not isinstance(gm, torch.nn.Module):
            raise TypeError(f"export expects a torch.fx.GraphModule, a torch.nn.Module or a "
                            f"torch.export.ExportedProgram, got {type(gm).__module__}.{type(gm).__qualname__}")
        if core:
            try:
                gm = fx.symbolic_trace(gm)
            except Exception:
                model = gm
                ep = _to_core(_torch_export(model, example_inputs, example_kwargs, dynamic_shapes))
                gm, derived = _derive(ep, model)
        else:
            gm = _trace(gm)
    if not core and ep is None and (dynamic_shapes is not None):
        raise ValueError("dynamic_shapes needs core=True (it is passed to torch.export, which only the core view "
                         "runs)")
    if golden and example_inputs is None:
        raise ValueError(f"golden={golden!r} needs example_inputs (golden data is the outputs they produce); pass "
                         f"them, e.g. export(gm, path, (x,), golden={golden!r}), or leave golden=False")
    if golden and _has_meta(gm, ep):
        raise ValueError(f"golden={golden!r} needs the model to run on real data, and it has tensors on the meta "
                         f"device (nothing to run); export without golden, or materialise the model first")
    if core and _has_meta(gm, ep):
        # torch.export traces a meta model, but its Core ATen graph is not the materialised model's (decompositions
        # are chosen per device: 244 against 248 nodes for a small Llama), so the artifact would differ
        raise ValueError("core=True on a model with tensors on the meta device is not supported: torch.export's core "
                         "graph depends on the device, so it would not be the materialised model's. Export the "
                         "module view only (core=False) with weights_from=, or materialise the model first")
    if weights_from is not None and not isinstance(weights_from, (str, os.PathLike)):
        raise TypeError(f"weights_from must be a path (str or os.PathLike), got {type(weights_from).__qualname__}")
    if core and ep is None:
        if example_inputs is None:
            raise ValueError("core=True needs example_inputs (torch.export traces the model on them); pass them, "
                             "e.g. export(gm, path, (x,), core=True)")
        ep = _to_core(_torch_export(gm, example_inputs, example_kwargs, dynamic_shapes))
    elif ep is not None:
        ep = _to_core(ep)
    target = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(target)
    if os.path.lexists(target) and (not overwrite or not _is_replaceable(target)):
        raise _exists_error(target, during=False)
    removed = tuple(remove_orphaned_temporaries(target)) if os.path.isdir(parent) else ()
    checkpoint = None
    if weights_from is not None:
        from .checkpoints import open_checkpoint  # headers only; files stay open for the copy
        checkpoint = open_checkpoint(weights_from)
    try:
        tmp, lock_fd = _make_temporary(parent, base)
    except OSError as e:
        if checkpoint is not None:
            checkpoint.close()
        raise ExportError(f"cannot create the temporary directory in {parent}: {e.strerror} "
                          f"(errno {e.errno})") from e
    try:
        summary = _export_into(gm, example_inputs, golden, tmp, target, overwrite, ep=ep, derived=derived,
                               example_kwargs=example_kwargs, max_shard_bytes=max_shard_bytes, placements=placed,
                               checkpoint=checkpoint, progress=progress)
        return dataclasses.replace(summary, removed_temporaries=removed)
    except OSError as e:
        if isinstance(e, ArtifactExistsError):
            raise
        raise ExportError(f"export to {target} failed: {e.strerror or e} (errno {e.errno}, "
                          f"{e.filename or tmp})") from e
    except UnsupportedModuleError as e:
        raise UnsupportedModuleError(_unsupported_for_export(e.unsupported), e.unsupported) from e
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):
                _rmtree(tmp)
        finally:
            os.close(lock_fd)  # releases the lock, after the temporary is gone (or published)
            if checkpoint is not None:
                checkpoint.close()


_MAX_MESH_DEVICES = 65536  # docs/format.md section 2.1 (reading.MAX_MESH_DEVICES)


def placement_of(mesh: Any, placements: Any, where: str, *, names: Any = None, shape: Sequence[int] | None = None,
                 error: type[Exception] = ValueError) -> Placement:
    """The format's Placement of a tensor laid out as ``placements`` (``Shard(d)`` / ``Replicate()`` of
    ``torch.distributed.tensor``, one per mesh dimension) over a mesh of shape ``mesh`` with the mesh dimensions'
    ``names`` (None: none). With the tensor's ``shape``, shard dims are resolved against its rank (a negative dim
    counts from the end, as in torch); without it they are kept as given. The one conversion of ``export``'s
    ``placements=`` and of a collective export's DTensor placements; ``where`` names the tensor in messages.

    Raises:
        error: a mesh shape that is not a non-empty tuple of positive ints, or has over 65536 devices; a placement
            count that differs from the mesh's rank; a ``Partial`` placement (a pending reduction, not a layout);
            a strided shard (FSDP2 over tensor parallelism) or another placement type; a shard dim out of range;
            bad or repeated mesh dim names.
    """
    from torch.distributed.tensor import Partial, Replicate, Shard  # imported when used: torch.distributed is optional
    if (not isinstance(mesh, (tuple, list)) or not mesh
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mesh)):
        raise error(f"{where}: the mesh shape must be a non-empty tuple of positive ints, got {mesh!r:.80}")
    mesh = [int(m) for m in mesh]
    devices = math.prod(mesh)
    if devices > _MAX_MESH_DEVICES:
        raise error(f"{where}: the mesh {tuple(mesh)} has {devices} devices; the format allows at most "
                    f"{_MAX_MESH_DEVICES}")
    if not isinstance(placements, (tuple, list)) or len(placements) != len(mesh):
        raise error(f"{where}: give one placement per mesh dimension ({len(mesh)} for the mesh {tuple(mesh)}), got "
                    f"{placements!r:.80}")
    dims = []
    for i, p in enumerate(placements):
        if isinstance(p, Partial):
            raise error(f"{where} is {p!r} on mesh dimension {i}: a pending reduction, not a layout of stored "
                        f"values; redistribute it first, e.g. t.redistribute(mesh, [Replicate()]) (or export "
                        f"before the step that makes it partial)")
        if type(p) is Shard:
            d = int(p.dim)
            if shape is not None:
                rank = len(shape)
                if not -rank <= d < rank:
                    raise error(f"{where}: Shard({d}) on mesh dimension {i} is out of range for a tensor of rank "
                                f"{rank} (shape {[int(s) for s in shape]})")
                d %= rank
            dims.append(MeshDim(kind="shard", dim=d))
        elif isinstance(p, Replicate):
            dims.append(MeshDim(kind="replicate", dim=-1))
        else:
            raise error(f"{where} is {p!r:.60} on mesh dimension {i}; the format records Shard(d) and Replicate() "
                        f"only (a strided shard comes from FSDP2 over tensor parallelism: export the "
                        f"tensor-parallel model alone, or redistribute)")
    names = list(names) if names is not None else []
    if names and (len(names) != len(mesh) or len(set(names)) != len(names)
                  or any(not isinstance(n, str) or not n.isascii() or not n.isidentifier() for n in names)):
        raise error(f"{where}: mesh_dim_names must be {len(mesh)} distinct identifiers, got {names!r:.80}")
    return Placement(mesh=mesh, dims=dims, mesh_dim_names=[str(n) for n in names])


def _placements(placements: dict[str, tuple] | None) -> dict[str, tuple]:
    """``export``'s ``placements=`` checked (:func:`placement_of` without the tensors' shapes, known later): name
    -> (mesh shape, placements, mesh dim names or None).

    Raises:
        ValueError: not a dict of (mesh shape, placements[, mesh dim names]); what :func:`placement_of` raises.
    """
    if placements is None:
        return {}
    if not isinstance(placements, dict):
        raise ValueError(f"placements must be a dict of tensor name -> (mesh_shape, [Shard(d) | Replicate()]), got "
                         f"{type(placements).__qualname__}")
    out = {}
    for name, spec in placements.items():
        where = f"placements['{name}']"
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ValueError(f"{where} must be (mesh_shape, [Shard(d) | Replicate(), ...]) or (mesh_shape, "
                             f"placements, mesh_dim_names), got {spec!r:.80}")
        spec = (spec[0], spec[1], spec[2] if len(spec) == 3 else None)
        placement_of(*spec[:2], where, names=spec[2])
        out[name] = spec
    return out


def _check_placements(placements: dict[str, tuple], table: "_TensorTable") -> dict[str, Placement]:
    """Placements (of :func:`_placements`) whose names are weights tensors of ``table``, with shard dims resolved
    against each tensor's rank.

    Raises:
        ValueError: a name that is not a parameter, buffer or constant of the export; a shard dim out of range.
    """
    unknown = sorted(n for n in placements if n not in table.tensors or table.tensors[n][1] != ROLE_WEIGHTS)
    if unknown:
        known = sorted(n for n, (_, r) in table.tensors.items() if r == ROLE_WEIGHTS)
        raise ValueError(f"placements name {unknown}, which are not tensors of the exported module (its tensors: "
                         f"{known[:8]}{', ...' if len(known) > 8 else ''})")
    return {name: placement_of(mesh, kinds, f"placements['{name}']", names=names, shape=table.tensors[name][0].shape)
            for name, (mesh, kinds, names) in sorted(placements.items())}


def _to_core(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    try:
        return to_core(ep)
    except Exception as e:
        raise ExportError(f"run_decompositions() (Core ATen) failed on the exported program: "
                          f"{type(e).__name__}: {e}") from e


def _torch_export(model: torch.nn.Module, args: tuple | None, kwargs: dict | None,
                  dynamic_shapes: Any) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` in eval mode (the artifact's computation), flags restored after."""
    if args is None:
        raise ValueError("core=True needs example_inputs (torch.export traces the model on them); pass them, "
                         "e.g. export(model, path, (x,), core=True)")
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        return torch.export.export(model, tuple(args), kwargs=kwargs, dynamic_shapes=dynamic_shapes)
    except Exception as e:
        raise ExportError(f"torch.export.export failed on {name}: {type(e).__name__}: {e}. The core view needs a "
                          f"model torch.export can take; fix what it names, or export without core=True") from e
    finally:
        for m, training in flags:
            m.training = training


def _derive(ep: torch.export.ExportedProgram, model: torch.nn.Module) -> tuple[fx.GraphModule, dict[str, str]]:
    """The module view derived from the core view over ``model``'s submodules (fxlower.views.derive)."""
    from ..views.derive import derive_module_view  # imported when needed: the module view of a core-only export
    return derive_module_view(ep, model)


def _unsupported_for_export(unsupported: dict[str, list[tuple[str, str]]]) -> str:
    """The message for leaf modules without a rule, with a fix that works for export (lift's alternative,
    ``strict=False``, records unsupported nodes, which an artifact cannot hold)."""
    lines = [f"export needs a lowering rule for every leaf module; {len(unsupported)} module type(s) in the graph "
             f"have none:"]
    for tname, uses in sorted(unsupported.items()):
        lines.append(f"  {tname}: {uses[0][1]}; used by {', '.join(w for w, _ in uses)}")
    first = sorted(unsupported)[0].rsplit(".", 1)[-1]
    lines.append(f"Register a rule for each before exporting (docs/writing-rules.md), e.g. "
                 f"fxlower.register_module({first}, attrs=[...], version=1), or decorate the class with "
                 f"@fxlower.register_module(attrs=[...], version=1).")
    return "\n".join(lines)


def _trace(module: torch.nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(module)``, or ExportError saying why it failed and what to do."""
    name = f"{type(module).__module__}.{type(module).__qualname__}"
    try:
        return fx.symbolic_trace(module)
    except Exception as e:
        raise ExportError(
            f"export traces an nn.Module with torch.fx.symbolic_trace, which failed on {name}: "
            f"{type(e).__name__}: {e}. Keep the untraceable submodule as a leaf (a torch.fx.Tracer subclass whose "
            f"is_leaf_module returns True for it, plus @fxlower.register_module for its rule) or the function "
            f"(torch.fx.wrap), trace it yourself and pass the GraphModule") from e


def _module_args(gm: fx.GraphModule, args: tuple | None, kwargs: dict | None) -> tuple | None:
    """The module view's inputs as one positional tuple: ``args``, then each further root placeholder from
    ``kwargs`` by its name (or its default)."""
    if args is None or not kwargs:
        return args
    placeholders = list(gm.graph.find_nodes(op="placeholder"))
    out = list(args)
    left = dict(kwargs)
    for p in placeholders[len(args):]:
        name = p.target.lstrip("*")
        if name in left:
            out.append(left.pop(name))
        elif p.args:
            out.append(p.args[0])
        else:
            raise ValueError(f"the module view's input '{name}' is given neither in example_inputs nor in "
                             f"example_kwargs")
    if left:
        raise ValueError(f"example_kwargs names {sorted(left)}, which are not inputs of the module view "
                         f"(its inputs: {[p.target for p in placeholders]})")
    return tuple(out)


class _Core:
    """The core view's share of an export: its tensors, its golden run and its encoding."""

    def __init__(self, ep: torch.export.ExportedProgram, args: tuple | None, kwargs: dict | None,
                 golden_mode: str | None):
        self.ep = ep
        self.golden_mode = golden_mode
        self.user_inputs: list | None = None
        self.outputs: list | None = None
        self.node_values: dict[str, Any] = {}
        if args is not None and golden_mode is not None:
            self.user_inputs = self._flat_inputs(args, kwargs or {})
            outs, values = run_core(ep, clone_tensors(self.user_inputs), golden_mode == "nodes")
            self.outputs = clone_tensors(outs)
            self.node_values = {n: clone_tensors(v) for n, v in values.items() if has_tensor(v)}

    def _flat_inputs(self, args: tuple, kwargs: dict) -> list:
        spec = self.ep.module_call_graph[0].signature.in_spec if self.ep.module_call_graph else None
        if spec is not None and spec.num_children == 2:
            keys = list(spec.child(1).context or [])
            missing = [k for k in keys if k not in kwargs]
            if missing or len(keys) != len(kwargs):
                raise ValueError(f"the exported program takes the keyword inputs {list(keys)}; example_kwargs has "
                                 f"{sorted(kwargs)}")
            kwargs = {k: kwargs[k] for k in keys}
        flat = torch.utils._pytree.tree_leaves((tuple(args), kwargs))
        n = len(self.ep.graph_signature.user_inputs)
        if len(flat) != n:
            raise ValueError(f"the exported program has {n} user inputs; the example inputs flatten to {len(flat)}")
        return flat

    def add_tensors(self, table: _TensorTable) -> None:
        """Parameters, buffers and lifted constants under their fully qualified names (shared with the module
        view: a name already in the table must hold the same tensor)."""
        IK = torch.export.graph_signature.InputKind
        ep = self.ep
        for spec in ep.graph_signature.input_specs:
            if spec.kind == IK.USER_INPUT:
                continue
            name = spec.target
            t = ep.state_dict.get(name) if name in ep.state_dict else ep.constants.get(name)
            if not isinstance(t, torch.Tensor):
                raise ExportError(f"the exported program's input '{spec.arg.name}' ({spec.kind.name} '{name}') is "
                                  f"a {type(t).__qualname__}; the core view stores tensors only")
            have = table.tensors.get(name)
            if have is not None:
                old = have[0]
                if old is t or _alias_key(old) == _alias_key(t) or (
                        old.dtype == t.dtype and old.shape == t.shape and torch.equal(old, t)):
                    continue
                raise ExportError(f"the tensor '{name}' of the exported program differs from the module view's "
                                  f"tensor of that name")
            if spec.kind == IK.PARAMETER:
                table.add(name, t, ROLE_WEIGHTS, "parameter", requires_grad=bool(t.requires_grad))
            elif spec.kind == IK.BUFFER:
                table.add(name, t, ROLE_WEIGHTS, "buffer", persistent=bool(spec.persistent))
            else:
                table.add(name, t, ROLE_WEIGHTS, "constant")

    def user_output_nodes(self) -> Any:
        OK = torch.export.graph_signature.OutputKind
        root = {n.name: n for n in self.ep.graph.nodes}
        leaves = []
        for spec in self.ep.graph_signature.output_specs:
            if spec.kind == OK.USER_OUTPUT:
                name = getattr(spec.arg, "name", None)
                leaves.append(root[name] if name in root else getattr(spec.arg, "value", None))
        return user_output_structure(self.ep, leaves)

    def user_output_values(self) -> Any:
        OK = torch.export.graph_signature.OutputKind
        vals = [v for v, spec in zip(self.outputs, self.ep.graph_signature.output_specs)
                if spec.kind == OK.USER_OUTPUT]
        return user_output_structure(self.ep, vals)


def _export_into(gm: fx.GraphModule | None, example_inputs: tuple | None, golden: bool | str, tmp: str,
                 target: str, overwrite: bool, *, ep: torch.export.ExportedProgram | None = None,
                 derived: dict[str, str] | None = None, example_kwargs: dict | None = None,
                 max_shard_bytes: int | None = None,
                 placements: dict[str, tuple[Placement, list[int]]] | None = None,
                 checkpoint: Any = None, progress: bool | None = None) -> ExportSummary:
    golden_mode = "nodes" if golden == "nodes" else ("outputs" if golden else None)
    # the core run comes first: the module view's run may update buffers in place
    core = _Core(ep, example_inputs, example_kwargs, golden_mode) if ep is not None else None
    if gm is not None:
        program = _Program(gm, _module_args(gm, example_inputs, example_kwargs), golden)
        program.collect()
        graphs, signature, golden_obj = program.encode_program()
        modules, functions, methods = program.declarations()
        table = program.table
    else:
        program = None
        table = _TensorTable()
        graphs, modules, functions, methods = [], {}, {}, {}
        signature = golden_obj = None
    core_view = None
    if core is not None:
        core.add_tensors(table)
        if derived is not None:
            links = {c: NodeLink(graph=0, node=m) for c, m in derived.items()}
        elif program is not None:
            links = origin_links(ep.graph, program.graph_modules)
        else:
            links = {}

        def core_tensor(t: torch.Tensor) -> str:
            name = table.name_of(t)
            if name is None:
                raise ExportError("a core node's argument holds a tensor that is not in the tensor table")
            return name
        core_view = encode_core(ep, tensor_name=core_tensor,
                                signature_inputs=None if signature is None else signature.inputs, links=links)
        if signature is None:
            signature = Signature(inputs=[c.name for c in core_view.inputs if c.kind == "user_input"],
                                  output=encode(core.user_output_nodes(), where="output"))
        if golden_mode is not None:
            if golden_obj is None:
                inputs = [encode(v, tensor_name=_golden_namer(table, f"golden/inputs/{i}"),
                                 where=f"golden input {i}") for i, v in enumerate(core.user_inputs)]
                outputs = encode(core.user_output_values(), tensor_name=_golden_namer(table, "golden/outputs"),
                                 where="golden output")
                golden_obj = Golden(mode=golden_mode, file=GOLDEN_FILE, inputs=inputs, outputs=outputs, nodes={},
                                    tolerances={})
            core_nodes = {n: encode(v, tensor_name=_golden_namer(table, f"golden/core/{n}"),
                                    where=f"golden core node '{n}'") for n, v in core.node_values.items()}
            golden_obj = dataclasses.replace(golden_obj, core_nodes=core_nodes, tolerances=_tolerances(table))
    sources = _checkpoint_sources(table, checkpoint)
    advance = program.advance if program is not None else (lambda expected, to: None)
    advance(Phase.ENCODE, Phase.WRITE_TENSORS)

    placed = _check_placements(placements or {}, table)
    roles = sorted({role for _, role in table.tensors.values()})
    files: dict[tuple[str, str], str] = {}  # (role, key) -> the file holding it
    file_entries: list[FileEntry] = []
    hashes: dict[tuple[str, str], str] = {}
    total = 0
    weights_files = 0
    stored = {role: dict(table.stored(role)) for role in roles}
    work = [t for role in roles for t in stored[role].values()]
    with _progress_bar("export", sum(t.numel() * t.element_size() for t in work), len(work), progress) as report:
        for role in roles:  # golden, then weights: the file order of format 1.2, kept
            held = stored[role]
            items = [(k, storage_code(t, f"tensor '{k}'", meta_ok=k in sources), tuple(int(s) for s in t.shape))
                     for k, t in held.items()]
            if role == ROLE_WEIGHTS:
                plans = plan_files(items, WEIGHTS_FILE, max_shard_bytes)
                weights_files = len(plans)
            else:
                plans = plan_files(items, GOLDEN_FILE)  # golden data is never sharded
            for plan in plans:
                file_hashes, size = _write_file(
                    tmp, plan.path, lambda fd, plan=plan, held=held: write_file_plan(
                        fd, plan, lambda slot: sources.get(slot.key, held[slot.key]), on_progress=report))
                hashes.update({(role, k): h for k, h in file_hashes.items()})
                files.update({(role, slot.key): plan.path for slot in plan.slots})
                file_entries.append(FileEntry(path=plan.path, role=role))
                total += size
    advance(Phase.WRITE_TENSORS, Phase.WRITE_MANIFEST)

    tensors = table.entries(hashes, files, placed)
    packed = {"graphs": _pack(to_obj(graphs)), "signature": _pack(to_obj(signature))}
    if core_view is not None:
        packed["core"] = _pack(to_obj(core_view))
    manifest = Manifest(
        format=FORMAT_ID,
        format_version=list(FORMAT_VERSION),
        producer=Producer(name="fxlower", version=__version__, torch=torch.__version__),
        files=file_entries,
        tensors=tensors,
        graphs=graphs,
        signature=signature,
        golden=golden_obj,
        digest=_digest(packed["graphs"], tensors, packed["signature"], packed.get("core")),
        modules=modules,
        functions=functions,
        methods=methods,
        core=core_view,
    )
    data = pack_manifest(manifest, packed)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ExportError(f"the manifest would be {len(data)} bytes, over the format's limit of "
                          f"{MAX_MANIFEST_BYTES}; readers would refuse it")
    _, size = _write_file(tmp, MANIFEST_FILE, lambda fd: _write_all(fd, memoryview(data)))
    total += size
    _fsync_dir(tmp)
    advance(Phase.WRITE_MANIFEST, Phase.PUBLISH)

    _publish(tmp, target, overwrite)
    _fsync_dir(os.path.dirname(target))
    advance(Phase.PUBLISH, Phase.DONE)
    return ExportSummary(path=target, nodes=sum(len(g.nodes) for g in graphs), graphs=len(graphs),
                         tensors=len(tensors), bytes_written=total, digest=manifest.digest,
                         weights_files=weights_files)
