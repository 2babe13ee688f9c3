"""Reading an artifact: manifest bytes -> validated, decoded graphs (docs/format.md section 10, in order).

:func:`read` opens the artifact directory once and every member through that directory's descriptor (refusing
symlinks and non-regular files), validates everything, and returns a :class:`Reading`: the manifest, the decoded
graphs and golden data, and the tensor files as a :class:`fxlower.io.mapping.TensorFiles` that holds the very
descriptors whose headers were validated. Every rejection is a :class:`fxlower.FormatError` (or
:class:`fxlower.VersionError`) with the spec's stable code, naming the file and field.

Format 1.2 adds the core view (``Manifest.core``), validated by :meth:`_Validator.core` after the signature and
before golden data, and returned as :class:`LoadedCore` in :attr:`Reading.core`.

Safety: no pickle, no ``eval``, no import of any module named in a file; this module only reads and checks.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import keyword
import math
import os
import re
import stat
import struct
import types
from typing import Any

import msgpack

from ..format.constants import (FILE_ROLES, FORMAT_ID, FORMAT_VERSION, GOLDEN_MODES, MANIFEST_FILE, MAX_MANIFEST_BYTES,
                        MESH_DIM_KINDS, OPS, ROLE_GOLDEN, ROLE_WEIGHTS, STORAGE_DTYPES)
from .declarations import Declarations, check_declarations, check_record
from ..errors import FormatError, VersionError
from ..lowering.lifting import LoweringRecord
from .mapping import TensorFiles
from ..format.names import (check_dotted_target, check_file_path, check_function_name, check_identifier,
                    check_method_name, check_name, component_problem)
from ..format.schema import CoreInput, CoreOutput, Manifest, NodeLink, OpSchema, Symbol, from_obj
from ..format.symbolic import ExprError, parse as parse_expr
from ..lowering.targets import CORE_HIGHER_ORDER, CORE_PYTHON_FUNCTIONS, core_op_names
from .tensorfile import StoredTensor, read_header
from ..format.values import GraphRef, NodeRef, TensorRef, check_meta, check_shape, decode, kind_name, leaves, node_refs

__all__ = ["read", "Reading", "loads_manifest", "LoadedNode", "LoadedGraph", "LoadedCore", "NodeRef", "TensorRef",
           "GraphRef", "TENSOR_KINDS", "CORE_INPUT_KINDS", "CORE_OUTPUT_KINDS", "CORE_OPS"]

_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: TensorEntry.kind values of format 1.1 ("" only in 1.0 files).
TENSOR_KINDS = ("parameter", "buffer", "constant", "golden")
#: 1.2: CoreInput.kind and CoreOutput.kind values; the node ops of core graphs.
CORE_INPUT_KINDS = ("user_input", "parameter", "buffer", "constant")
CORE_OUTPUT_KINDS = ("user_output", "buffer_mutation")
CORE_OPS = ("placeholder", "call_function", "output")  # docs/format.md: no get_attr in core graphs
_SYMBOL = re.compile(r"^s[0-9]+\Z")
#: 1.3: the largest number of devices a placement's mesh may have (product of its dimensions).
MAX_MESH_DEVICES = 65536
#: The graph-module arguments of each control-flow operator (positions in args).
_SUBGRAPH_ARGS = {"higher_order.cond": (1, 2), "higher_order.while_loop": (0, 1)}


@dataclasses.dataclass(frozen=True)
class LoadedNode:
    name: str
    op: str
    target: str
    args: tuple
    kwargs: dict[str, Any]
    inputs: tuple[str, ...]
    users: tuple[str, ...]
    meta: Any
    lowering: LoweringRecord | None
    graph: int | None
    #: 1.1: the index of the overload of ``functions[target]`` / ``methods[target]`` the node binds to.
    overload: int | None = None
    #: 1.1: the leaf module's training flag at export (call_module nodes with a lowering record).
    training: bool = False
    #: 1.2: on a core-view node, the module-view node it came from (None for glue).
    origin: NodeLink | None = None


@dataclasses.dataclass(frozen=True)
class LoadedGraph:
    name: str
    nodes: tuple[LoadedNode, ...]
    #: 1.1: the graph module's own training flag at export.
    training: bool = False

    def node(self, name: str) -> LoadedNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph '{self.name}' has no node '{name}'")


@dataclasses.dataclass(frozen=True)
class LoadedCore:
    """1.2: the validated core view. ``graphs[0]`` is the core root graph; arguments of control-flow operators
    hold :class:`GraphRef` (an index into ``graphs``)."""

    graphs: tuple[LoadedGraph, ...]
    inputs: tuple[CoreInput, ...]
    outputs: tuple[CoreOutput, ...]
    ops: dict[str, OpSchema]
    symbols: dict[str, Symbol]


@dataclasses.dataclass
class Reading:
    """What :func:`read` validated: the manifest, decoded graphs and golden data, and the open tensor files."""

    path: str
    manifest: Manifest
    graphs: tuple[LoadedGraph, ...]
    golden: dict[str, Any] | None
    files: TensorFiles
    #: 1.2: the core view, or None.
    core: LoadedCore | None = None


# ------------------------------------------------------------------------------------------------ manifest bytes

def _no_timestamp(obj: Any) -> None:
    # msgpack decodes extension type -1 (timestamp) itself, without calling ext_hook.
    if type(obj) is msgpack.Timestamp:
        raise FormatError("manifest.decode", "extension type -1 (timestamp) is not allowed", MANIFEST_FILE)


def _list_hook(items: list) -> list:
    for v in items:
        _no_timestamp(v)
    return items


def _pairs_hook(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        _no_timestamp(k)
        _no_timestamp(v)
        if type(k) is not str:
            raise FormatError("manifest.key_type", f"a map key is {kind_name(k)}; keys are strings", MANIFEST_FILE)
        if k in out:
            raise FormatError("manifest.duplicate_key", f"the key {k!r:.80} appears twice in one map",
                              MANIFEST_FILE)
        out[k] = v
    return out


def _ext_hook(code: int, data: bytes):
    raise FormatError("manifest.decode", f"extension type {code} is not allowed", MANIFEST_FILE)


def loads_manifest(data: bytes) -> Manifest:
    """Decode and check manifest bytes up to the schema (format sections 2 and 9); no cross-references.

    Raises:
        FormatError / VersionError.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError("manifest.size", f"{len(data)} bytes exceed the limit of {MAX_MANIFEST_BYTES}",
                          MANIFEST_FILE)
    n = max(len(data), 1)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False, object_pairs_hook=_pairs_hook,
                              list_hook=_list_hook, ext_hook=_ext_hook, max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n,
                              max_ext_len=n, use_list=True)
    except FormatError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise FormatError("manifest.decode", f"not one well-formed MessagePack object "
                          f"({type(e).__name__}: {str(e)[:120] or 'invalid data'})", MANIFEST_FILE) from None
    _no_timestamp(obj)
    _check_version(obj)
    return from_obj(Manifest, obj, MANIFEST_FILE)


def _check_version(obj: Any) -> None:
    where = MANIFEST_FILE
    ours = f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}"
    if type(obj) is not dict or obj.get("format") != FORMAT_ID:
        found = obj.get("format") if type(obj) is dict else kind_name(obj)
        raise VersionError("format.identifier", f"not an fxlower manifest: format is {found!r:.60}, expected "
                           f"'{FORMAT_ID}' (this reader reads format {ours})", where)
    version = obj.get("format_version")
    if (type(version) is not list or len(version) != 2 or any(type(v) is not int or v < 0 for v in version)):
        raise VersionError("format.version", f"format_version is {version!r:.60}, expected [major, minor] "
                           f"(this reader reads {ours})", where)
    major, minor = version
    if major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
        raise VersionError("format.version", f"the artifact is format {major}.{minor}; this reader reads "
                           f"{ours} (same major, minor up to {FORMAT_VERSION[1]}). Use a fxlower release that "
                           f"reads {major}.{minor}", where)



# ------------------------------------------------------------------------------------------------ directory

def _open_member(dir_fd: int, name: str) -> int:
    """Open a member for reading, refusing symlinks and non-regular files."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0),
                     dir_fd=dir_fd)
    except FileNotFoundError:
        raise FormatError("artifact.missing", "the file does not exist", name) from None
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):  # not a fault of the artifact: say so, never artifact.missing
            raise OSError(e.errno, f"{name}: cannot open: {e.strerror}; a loaded artifact keeps one descriptor per "
                          f"tensor file (a sharded artifact: one per shard), so raise the open-file limit "
                          f"(ulimit -n, resource.setrlimit(RLIMIT_NOFILE)) above the number of files") from None
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise FormatError("artifact.not_regular", "not a regular file (symlink, directory or device)",
                              name) from None
        raise FormatError("artifact.missing", f"cannot open: {e.strerror}", name) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FormatError("artifact.not_regular", "not a regular file (directory, FIFO, socket or device)", name)
    return fd


class _Dir:
    def __init__(self, path: str):
        self.path = path
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise FormatError("artifact.missing", "the artifact directory does not exist", path) from None
        if not stat.S_ISDIR(st.st_mode):
            raise FormatError("artifact.not_regular", "the artifact is not a directory (or is a symlink)", path)
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))

    def entries(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def read(self, name: str, limit: int) -> bytes:
        fd = _open_member(self.fd, name)
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                raise FormatError("manifest.size", f"{size} bytes exceed the limit of {limit}", name)
            chunks = []
            remaining = size
            while remaining:
                chunk = os.read(fd, min(remaining, 64 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)



# ------------------------------------------------------------------------------------------------ validation

class _Validator:
    """docs/format.md section 10, in order."""

    def __init__(self, d: _Dir, manifest: Manifest, strict: bool, decls: Declarations):
        self.d = d
        self.m = manifest
        self.strict = strict
        self.decls = decls
        #: 1.1 rules (declared lowering attrs, overloads, no private kwargs, no "" tensor kind) apply.
        self.v11 = tuple(manifest.format_version) >= (1, 1)
        #: 1.3 rules (several weights files, placements) apply.
        self.v13 = tuple(manifest.format_version) >= (1, 3)
        self.tensor_names: dict[str, Any] = {}
        self.stored: dict[str, dict[str, StoredTensor]] = {}
        #: file -> the descriptor its header was validated from (handed to the TensorFiles on success).
        self.fds: dict[str, int] = {}

    def files(self) -> None:
        seen: dict[str, str] = {}
        roles: set[str] = set()
        for i, f in enumerate(self.m.files):
            where = f"{MANIFEST_FILE}: files[{i}]"
            check_file_path(f.path, where + ".path")
            if f.path.lower() in seen:
                raise FormatError("path.invalid", f"'{f.path}' is listed twice (case-insensitively)", where)
            seen[f.path.lower()] = f.path
            if f.role not in FILE_ROLES:
                raise FormatError("schema.type", f"role {f.role!r:.40} is not one of {list(FILE_ROLES)}", where)
            if f.role in roles and not (f.role == ROLE_WEIGHTS and self.v13):
                more = (" (several weights files, a sharded artifact, need format 1.3; this file is "
                        f"{self.m.format_version[0]}.{self.m.format_version[1]})" if f.role == ROLE_WEIGHTS else "")
                raise FormatError("schema.type", f"a second file of role '{f.role}'{more}", where)
            roles.add(f.role)
        entries = self.d.entries()
        listed = set(seen.values()) | {MANIFEST_FILE}
        for f in self.m.files:
            if f.path not in entries:
                raise FormatError("artifact.missing", "a listed file does not exist", f.path)
        if self.strict:
            for e in entries:
                if e not in listed:
                    raise FormatError("artifact.extra_file", "the directory holds a file the manifest does not "
                                      "list; remove it (or load with strict=False)", e)

    def tensors(self) -> None:
        files = {f.path: f.role for f in self.m.files}
        prev = None
        for i, t in enumerate(self.m.tensors):
            where = f"{MANIFEST_FILE}: tensors[{i}]"
            check_name(t.name, where + ".name")
            if t.name in self.tensor_names:
                raise FormatError("schema.name", f"tensor name '{t.name}' appears twice", where)
            if prev is not None and t.name < prev:
                raise FormatError("schema.type", f"tensor table is not sorted by name ('{t.name}' after "
                                  f"'{prev}')", where)
            prev = t.name
            self.tensor_names[t.name] = t
            if t.dtype not in STORAGE_DTYPES:
                raise FormatError("tensor.dtype", f"unknown storage dtype {t.dtype!r:.40}", where + ".dtype")
            check_shape(t.shape, where + ".shape", STORAGE_DTYPES[t.dtype][1])
            if t.file not in files:
                raise FormatError("tensor.reference", f"file '{t.file}' is not listed in files", where + ".file")
            check_name(t.key, where + ".key")
            if not _SHA256.match(t.sha256):
                raise FormatError("schema.type", "sha256 is not 64 lowercase hex digits", where + ".sha256")
            self._tensor_state(t, files[t.file], where)
            if t.placement is not None:
                self._placement(t, files[t.file], where + ".placement")
        groups: dict[tuple[str, str], Any] = {}
        for t in self.m.tensors:
            first = groups.setdefault((t.file, t.key), t)
            if (first.dtype, first.shape, first.sha256) != (t.dtype, t.shape, t.sha256):
                raise FormatError("tensor.mismatch", f"aliases '{first.name}' and '{t.name}' of key '{t.key}' "
                                  f"differ in dtype, shape or sha256", MANIFEST_FILE)

    def _tensor_state(self, t: Any, role: str, where: str) -> None:
        """1.1 tensor state (design C): kind, requires_grad, persistent."""
        if t.kind == "":
            if self.v11:
                raise FormatError("schema.type", "kind is '' (the 1.0 default); a 1.1 file gives every tensor one "
                                  f"of {list(TENSOR_KINDS)}", where + ".kind")
        elif t.kind not in TENSOR_KINDS:
            raise FormatError("schema.type", f"kind {t.kind!r:.40} is not one of {list(TENSOR_KINDS)}",
                              where + ".kind")
        elif (t.kind == "golden") != (role == ROLE_GOLDEN):
            raise FormatError("schema.type", f"a tensor of kind '{t.kind}' in a {role} file; golden tensors and only "
                              f"they have kind 'golden'", where + ".kind")
        if t.requires_grad and t.kind != "parameter":
            raise FormatError("schema.type", f"requires_grad is true on a tensor of kind {t.kind!r}; only "
                              f"parameters require grad", where + ".requires_grad")
        if not t.persistent and t.kind != "buffer":
            raise FormatError("schema.type", f"persistent is false on a tensor of kind {t.kind!r}; only buffers "
                              f"can be non-persistent", where + ".persistent")

    def _placement(self, t: Any, role: str, where: str) -> None:
        """1.3 placement (docs/format.md section 2.1): a 1.3 field (``schema.unknown_field`` in older files), on a
        weights tensor only and with known mesh-dimension kinds (``schema.type``), then its shape rules
        (``tensor.placement``)."""
        p = t.placement
        if not self.v13:
            raise FormatError("schema.unknown_field", "the field 'placement' is new in format 1.3; this file is "
                              f"{self.m.format_version[0]}.{self.m.format_version[1]}", where)
        if role != ROLE_WEIGHTS:
            raise FormatError("schema.type", f"a tensor of a {role} file has a placement; only tensors of weights "
                              f"files are placed (write nil)", where)
        for i, d in enumerate(p.dims):
            if d.kind not in MESH_DIM_KINDS:
                raise FormatError("schema.type", f"kind {d.kind!r:.40} is not one of {list(MESH_DIM_KINDS)}",
                                  f"{where}.dims[{i}].kind")
        if not p.mesh:
            raise FormatError("tensor.placement", "mesh is empty; a placement has at least one mesh dimension",
                              where + ".mesh")
        devices = 1
        for i, m in enumerate(p.mesh):
            if m < 1:
                raise FormatError("tensor.placement", f"mesh dimension {i} has size {m}; sizes are at least 1",
                                  where + ".mesh")
            devices *= m
            if devices > MAX_MESH_DEVICES:
                raise FormatError("tensor.placement", f"mesh {p.mesh!r:.80} has more than {MAX_MESH_DEVICES} devices",
                                  where + ".mesh")
        if len(p.dims) != len(p.mesh):
            raise FormatError("tensor.placement", f"dims has {len(p.dims)} entries for a mesh of "
                              f"{len(p.mesh)} dimensions; give one per mesh dimension", where + ".dims")
        rank = len(t.shape)
        for i, d in enumerate(p.dims):
            if d.kind == "shard" and not 0 <= d.dim < rank:
                raise FormatError("tensor.placement", f"shard dim {d.dim} is outside [0, {rank}) for a tensor of "
                                  f"shape {t.shape}", f"{where}.dims[{i}].dim")
            if d.kind == "replicate" and d.dim != -1:
                raise FormatError("tensor.placement", f"a replicate mesh dimension has dim {d.dim}; it must be -1",
                                  f"{where}.dims[{i}].dim")
        names = p.mesh_dim_names
        if names:
            if len(names) != len(p.mesh):
                raise FormatError("tensor.placement", f"mesh_dim_names has {len(names)} names for a mesh of "
                                  f"{len(p.mesh)} dimensions; give one per dimension or none",
                                  where + ".mesh_dim_names")
            seen: set[str] = set()  # a set: a mesh of many size-1 dimensions has as many names (linear, not n^2)
            for i, n in enumerate(names):
                if not _IDENT.match(n):
                    raise FormatError("tensor.placement", f"mesh dimension name {n!r:.60} is not an identifier "
                                      f"([A-Za-z_][A-Za-z0-9_]*)", f"{where}.mesh_dim_names[{i}]")
                if n in seen:
                    raise FormatError("tensor.placement", f"mesh dimension name '{n}' appears twice",
                                      f"{where}.mesh_dim_names[{i}]")
                seen.add(n)

    def tensor_files(self) -> None:
        by_file: dict[str, list[Any]] = {f.path: [] for f in self.m.files}
        for t in self.m.tensors:  # grouped once: per-file scans of the table would cost files x tensors
            by_file[t.file].append(t)
        for f in self.m.files:
            fd = _open_member(self.d.fd, f.path)
            self.fds[f.path] = fd  # kept: tensors are read from this descriptor, never by path again
            with os.fdopen(fd, "rb", closefd=False) as fh:
                self.stored[f.path] = read_header(fh, os.fstat(fd).st_size, f.path)
            keys = {t.key for t in by_file[f.path]}
            for t in by_file[f.path]:
                info = self.stored[f.path].get(t.key)
                if info is None:
                    raise FormatError("tensor.missing", f"tensor '{t.name}' has key '{t.key}', which the file "
                                      f"does not hold", f.path)
                if info.dtype != t.dtype or list(info.shape) != t.shape:
                    raise FormatError("tensor.mismatch", f"tensor '{t.name}' is {t.dtype}{t.shape} in the "
                                      f"manifest but {info.dtype}{list(info.shape)} in the file", f.path)
            for key in self.stored[f.path]:
                if key not in keys:
                    raise FormatError("safetensors.unreferenced", f"key '{key}' is not used by any tensor of "
                                      f"the manifest", f.path)

    def _tensor_resolver(self, file_role: str | None):
        role_files = {f.path for f in self.m.files if file_role is None or f.role == file_role}

        def resolve(name: str, where: str) -> TensorRef:
            t = self.tensor_names.get(name)
            if t is None or t.file not in role_files:
                raise FormatError("tensor.reference", f"tensor '{name}' is not in the tensor table"
                                  + (f" (in a {file_role} file)" if file_role else ""), where)
            return TensorRef(name)
        return resolve

    def graphs(self) -> tuple[LoadedGraph, ...]:
        if not self.m.graphs:
            if self.m.core is not None:
                return ()  # 1.2: an artifact with the core view only
            raise FormatError("graph.structure", "graphs is empty; the root graph is graphs[0] (only an artifact "
                              "with a core view may have no module view)", MANIFEST_FILE)
        loaded = []
        weights = self._tensor_resolver(ROLE_WEIGHTS)
        for gi, g in enumerate(self.m.graphs):
            gwhere = f"{MANIFEST_FILE}: graphs[{gi}]"
            if gi == 0:
                if g.name != "":
                    raise FormatError("schema.name", "the root graph's name is ''", gwhere + ".name")
            else:
                check_name(g.name, gwhere + ".name")
                for part in g.name.split("."):
                    problem = component_problem(part)
                    if problem is not None:
                        raise FormatError("schema.name", f"graph name {g.name!r:.80} is not a dotted module path: "
                                          f"component {part!r:.40} {problem}", gwhere + ".name")
            loaded.append(self._graph(gi, g, gwhere, weights))
        self._acyclic(loaded)
        return tuple(loaded)

    def _graph(self, gi: int, g: Any, gwhere: str, weights) -> LoadedGraph:
        defined: dict[str, int] = {}
        nodes: list[LoadedNode] = []
        outputs = 0

        def resolve_node(name: str, where: str) -> NodeRef:
            if name not in defined:
                raise FormatError("graph.reference", f"'{name}' is not an earlier node of this graph", where)
            return NodeRef(name)

        prefix = f"{g.name}." if g.name else ""
        for ni, n in enumerate(g.nodes):
            where = f"{gwhere}.nodes[{ni}]"
            check_name(n.name, where + ".name")
            if n.name in defined:
                raise FormatError("schema.name", f"node name '{n.name}' appears twice in the graph", where)
            if n.op not in OPS:
                raise FormatError("graph.op", f"op {n.op!r:.40} is not one of {list(OPS)}", where + ".op")
            if outputs:
                raise FormatError("graph.output", "a node follows the output node", where)
            self._target(n, where, prefix)
            for k in n.kwargs:
                if not _IDENT.match(k) or keyword.iskeyword(k):
                    raise FormatError("schema.name", f"keyword {k!r:.40} is not an identifier", where + ".kwargs")
                if self.v11 and k.startswith("_"):
                    raise FormatError("schema.name", f"keyword argument {k!r:.40} starts with '_'; 1.1 writers drop "
                                      f"private keyword arguments (such as _stacklevel)", where + ".kwargs")
            args = tuple(decode(a, f"{where}.args[{i}]", node=resolve_node) for i, a in enumerate(n.args))
            kwargs = {k: decode(v, f"{where}.kwargs.{k}", node=resolve_node) for k, v in n.kwargs.items()}
            self._op_args(n, args, where)
            derived = node_refs((args, tuple(kwargs.values())))
            if derived != n.inputs:
                raise FormatError("graph.structure", f"inputs is {n.inputs[:8]} but args/kwargs reference "
                                  f"{derived[:8]}", where + ".inputs")
            if n.meta is not None:
                check_meta(n.meta, where + ".meta")
            lowering = None
            if n.op == "call_module" and n.graph is None:
                if n.lowering is None:
                    raise FormatError("graph.structure", "a call_module node without 'graph' needs 'lowering'",
                                      where)
                lowering = self._lowering(n.lowering, where + ".lowering", weights)
            elif n.lowering is not None:
                raise FormatError("graph.structure", "'lowering' is only for call_module nodes of leaf modules",
                                  where)
            if n.graph is not None:
                if n.op != "call_module" or not 0 < n.graph < len(self.m.graphs):
                    raise FormatError("graph.structure", f"'graph' {n.graph} must index a nested graph "
                                      f"(1..{len(self.m.graphs) - 1}) from a call_module node", where + ".graph")
            self._overload(n, where)
            if n.origin is not None:
                raise FormatError("graph.structure", "origin is set on a module-view node; only core-view nodes "
                                  "link to the module view", where + ".origin")
            if n.op == "output":
                outputs += 1
            defined[n.name] = ni
            nodes.append(LoadedNode(n.name, n.op, n.target, args, kwargs, tuple(n.inputs), tuple(n.users), n.meta,
                                    lowering, n.graph, n.overload, n.lowering.training if lowering else False))
        return _closed_graph(g, nodes, outputs, gwhere)

    def _target(self, n: Any, where: str, prefix: str) -> None:
        w = where + ".target"
        if n.op == "placeholder":
            check_identifier(n.target, w)
        elif n.op in ("get_attr", "call_module"):
            check_dotted_target(n.target, w)
            if n.op == "get_attr":
                if prefix + n.target not in self.tensor_names:
                    raise FormatError("tensor.reference", f"get_attr names '{prefix + n.target}', which is not "
                                      f"in the tensor table", w)
                if self.tensor_names[prefix + n.target].file not in {f.path for f in self.m.files
                                                                     if f.role == ROLE_WEIGHTS}:
                    raise FormatError("tensor.reference", "get_attr names a golden tensor", w)
        elif n.op == "call_method":
            check_method_name(n.target, w)
            if self.v11 and n.target not in self.m.methods:
                raise FormatError("graph.target", f"method '{n.target}' has no entry in the manifest's 'methods'; a "
                                  f"1.1 writer lists the overloads of every call_method target", w)
        elif n.op == "call_function":
            check_function_name(n.target, w)
            if self.v11 and n.target not in self.m.functions:
                raise FormatError("graph.target", f"function '{n.target}' has no entry in the manifest's "
                                  f"'functions'; a 1.1 writer lists the overloads of every call_function target", w)
        elif n.target != "output":
            raise FormatError("graph.target", f"the output node's target is 'output', found {n.target!r:.40}", w)

    def _overload(self, n: Any, where: str) -> None:
        """Node.overload (design F): nil off call_function/call_method; on them, an index into the target's
        overload list — required in 1.1 files, checked when present in 1.0 files."""
        w = where + ".overload"
        if n.op not in ("call_function", "call_method"):
            if n.overload is not None:
                raise FormatError("graph.structure", f"overload {n.overload} on a {n.op} node; only call_function "
                                  f"and call_method nodes bind to an overload", w)
            return
        table = self.m.functions if n.op == "call_function" else self.m.methods
        if n.overload is None:
            if self.v11:
                raise FormatError("graph.structure", f"a {n.op} node of a 1.1 file names the overload it binds "
                                  f"to; overload is nil", w)
            return
        count = len(table.get(n.target, ()))
        if not 0 <= n.overload < count:
            raise FormatError("graph.structure", f"overload {n.overload} is out of range: '{n.target}' has "
                              f"{count} overload(s)", w)

    @staticmethod
    def _op_args(n: Any, args: tuple, where: str) -> None:
        if n.op == "placeholder" and len(args) > 1:
            raise FormatError("graph.structure", "a placeholder has at most one arg (its default)", where)
        if n.op == "output" and len(args) != 1:
            raise FormatError("graph.output", f"the output node has {len(args)} args; expected 1", where)
        if n.op == "call_function" and n.target == "builtins.getattr":
            if len(args) < 2 or type(args[1]) is not str or args[1].startswith("_"):
                raise FormatError("graph.target", "builtins.getattr needs a public attribute name (a str not "
                                  "starting with '_') as args[1]", where)
        if n.op == "call_method" and not args:
            raise FormatError("graph.structure", "a call_method node needs the object as args[0]", where)

    def _lowering(self, low: Any, where: str, weights) -> LoweringRecord:
        check_name(low.module_type, where + ".module_type")
        attrs = {}
        for k, v in low.attrs.items():
            check_name(k, where + ".attrs")
            attrs[k] = decode(v, f"{where}.attrs.{k}", tensor=weights)
        if self.v11:
            check_record(self.decls, low.module_type, attrs, where)
        return LoweringRecord(module_type=low.module_type, version=low.version, module_version=low.module_version,
                              attrs=types.MappingProxyType(attrs))

    @staticmethod
    def _acyclic(graphs: list[LoadedGraph]) -> None:
        calls = [[n.graph for n in g.nodes if n.graph is not None] for g in graphs]
        _, cycle = _walk_calls(calls, range(len(graphs)))
        if cycle is not None:
            raise FormatError("graph.structure", f"graph {cycle[0]} calls graph {cycle[1]}, which is already being "
                              f"called: the graphs form a cycle", MANIFEST_FILE)

    def signature(self, graphs: tuple[LoadedGraph, ...]) -> None:
        if not graphs:
            return  # 1.2 core view only: the signature describes the core root and is checked with the core view
        root = graphs[0]
        where = f"{MANIFEST_FILE}: signature"
        placeholders = [n.name for n in root.nodes if n.op == "placeholder"]
        if self.m.signature.inputs != placeholders:
            raise FormatError("graph.structure", f"signature inputs {self.m.signature.inputs[:8]} differ from the "
                              f"root placeholders {placeholders[:8]}", where + ".inputs")
        names = {n.name for n in root.nodes}

        def resolve(name: str, w: str) -> NodeRef:
            if name not in names:
                raise FormatError("graph.reference", f"'{name}' is not a node of the root graph", w)
            return NodeRef(name)
        decode(self.m.signature.output, where + ".output", node=resolve)
        out_node = [n for n in self.m.graphs[0].nodes if n.op == "output"][0]
        if not _same_value(self.m.signature.output, out_node.args[0]):
            raise FormatError("graph.output", "signature output differs from the output node's args[0]",
                              where + ".output")

    # -------------------------------------------------------------------------------------------- 1.2 core view

    def core(self, graphs: tuple[LoadedGraph, ...]) -> LoadedCore | None:
        """The core view (format 1.2), after the signature and before golden data, in this order: the view has a
        root graph (``core.structure``); the op schemas (``core.op``); the symbols' names and ranges
        (``core.symbol``); each core graph node by node (as module-view graphs, with the core rules: ops,
        targets, ``core.op`` for a target without a schema or arguments that do not bind, ``core.symbol`` for
        shape expressions, ``graph.reference`` for origin links and graph Values); no cycle through graph Values
        (``core.structure``); inputs, then outputs (``core.structure``, ``tensor.reference``); the signature when
        there is no module view; each symbol's defining input and dimension (``core.symbol``)."""
        c = self.m.core
        if c is None:
            return None
        cw = f"{MANIFEST_FILE}: core"
        if tuple(self.m.format_version) < (1, 2):
            raise FormatError("schema.unknown_field", "the field 'core' is new in format 1.2; this file is "
                              f"{self.m.format_version[0]}.{self.m.format_version[1]}", cw)
        if not c.graphs:
            raise FormatError("core.structure", "core.graphs is empty; the core root graph is graphs[0]",
                              cw + ".graphs")
        for key, op in c.ops.items():
            self._op_schema(key, op, f"{cw}.ops.{key}")
        for name, sym in c.symbols.items():
            w = f"{cw}.symbols.{name}"
            if not _SYMBOL.match(name):
                raise FormatError("core.symbol", f"symbol name {name!r:.40} is not 's' and digits (like s0)", w)
            if sym.min < 0:
                raise FormatError("core.symbol", f"min is {sym.min}; a size symbol is >= 0", w + ".min")
            if sym.max is not None and sym.max < sym.min:
                raise FormatError("core.symbol", f"max {sym.max} is below min {sym.min}", w + ".max")
        module_nodes = [{n.name for n in g.nodes} for g in graphs]
        loaded = tuple(self._core_graph(gi, g, f"{cw}.graphs[{gi}]", module_nodes) for gi, g in enumerate(c.graphs))
        self._core_acyclic(loaded, cw)
        root = loaded[0]
        users = self._core_inputs(root, cw)
        user_outputs = self._core_outputs(root, cw)
        if not graphs:
            self._core_signature(root, users, user_outputs)
        for name, sym in c.symbols.items():
            w = f"{cw}.symbols.{name}"
            if not 0 <= sym.input < len(c.inputs) or c.inputs[sym.input].kind != "user_input":
                raise FormatError("core.symbol", f"input {sym.input} is not the index of a user_input of "
                                  f"core.inputs (0..{len(c.inputs) - 1})", w + ".input")
            meta = root.node(c.inputs[sym.input].name).meta
            if not (type(meta) is dict and meta.get("t") == "tensor"):
                raise FormatError("core.symbol", f"input {sym.input} ('{c.inputs[sym.input].name}') has no tensor "
                                  f"metadata to take dimension {sym.dim} from", w + ".input")
            rank = len(meta["shape"])
            if not 0 <= sym.dim < rank:
                raise FormatError("core.symbol", f"dim {sym.dim} is outside the rank {rank} of input "
                                  f"'{c.inputs[sym.input].name}'", w + ".dim")
            if meta["shape"][sym.dim] != name:
                raise FormatError("core.symbol", f"dimension {sym.dim} of input '{c.inputs[sym.input].name}' is "
                                  f"{meta['shape'][sym.dim]!r:.40}, not the symbol '{name}' it defines", w + ".dim")
        return LoadedCore(loaded, tuple(c.inputs), tuple(c.outputs), dict(c.ops), dict(c.symbols))

    def _op_schema(self, key: str, op: OpSchema, w: str) -> None:
        if key in CORE_HIGHER_ORDER or key in CORE_PYTHON_FUNCTIONS:  # hand-written schemas: name a::b, overload ""
            want_name, want_overload = key.replace(".", "::", 1), ""
        else:
            parts = key.split(".")
            if len(parts) != 3 or not all(_IDENT.match(p) for p in parts):
                raise FormatError("core.op", f"ops key {key!r:.80} is not an operator name namespace.name.overload "
                                  f"(like aten.convolution.default)", w)
            want_name, want_overload = f"{parts[0]}::{parts[1]}", parts[2]
        if op.name != want_name or op.overload != want_overload:
            raise FormatError("core.op", f"the schema names {op.name!r:.60} overload {op.overload!r:.40}; the key "
                              f"'{key}' needs '{want_name}' overload '{want_overload}'", w)
        for field in ("arguments", "returns"):
            seen: set[str] = set()
            for i, a in enumerate(getattr(op, field)):
                aw = f"{w}.{field}[{i}]"
                if field == "arguments" or a.name:
                    check_name(a.name, aw + ".name")
                if a.name and a.name in seen:
                    raise FormatError("core.op", f"argument name '{a.name}' appears twice", aw + ".name")
                seen.add(a.name)
                check_name(a.type, aw + ".type")
                decode(a.default, aw + ".default")
                if a.required and a.default is not None:  # as for Param (section 2.2): schema.type
                    raise FormatError("schema.type", "a required argument has a default; default is nil when "
                                      "required is true", aw + ".default")

    def _core_graph(self, gi: int, g: Any, gwhere: str, module_nodes: list[set[str]]) -> LoadedGraph:
        c = self.m.core
        defined: dict[str, int] = {}
        nodes: list[LoadedNode] = []
        outputs = 0
        weights = {f.path for f in self.m.files if f.role == ROLE_WEIGHTS}
        known = c.symbols

        def resolve_node(name: str, where: str) -> NodeRef:
            if name not in defined:
                raise FormatError("graph.reference", f"'{name}' is not an earlier node of this graph", where)
            return NodeRef(name)

        def resolve_graph(index: int, where: str) -> GraphRef:
            if not 0 < index < len(c.graphs) or index == gi:
                raise FormatError("core.structure", f"graph {index} is not a subgraph of the core view other "
                                  f"than this one (1..{len(c.graphs) - 1}, not {gi})", where)
            return GraphRef(index)

        def check_dim(text: str, where: str) -> None:
            try:
                parse_expr(text, known)
            except ExprError as e:
                raise FormatError("core.symbol", f"shape expression: {e}", where) from None

        if gi == 0:
            if g.name != "":
                raise FormatError("schema.name", "the core root graph's name is ''", gwhere + ".name")
        else:
            check_name(g.name, gwhere + ".name")
        for ni, n in enumerate(g.nodes):
            where = f"{gwhere}.nodes[{ni}]"
            check_name(n.name, where + ".name")
            if n.name in defined:
                raise FormatError("schema.name", f"node name '{n.name}' appears twice in the graph", where)
            if n.op not in CORE_OPS:
                raise FormatError("graph.op", f"op {n.op!r:.40} is not one of the core-graph ops {list(CORE_OPS)}",
                                  where + ".op")
            if outputs:
                raise FormatError("graph.output", "a node follows the output node", where)
            for k in n.kwargs:
                if not _IDENT.match(k) or keyword.iskeyword(k):
                    raise FormatError("schema.name", f"keyword {k!r:.40} is not an identifier", where + ".kwargs")
            self._core_target(n, where, weights)
            args = tuple(decode(a, f"{where}.args[{i}]", node=resolve_node, graph=resolve_graph)
                         for i, a in enumerate(n.args))
            kwargs = {k: decode(v, f"{where}.kwargs.{k}", node=resolve_node, graph=resolve_graph)
                      for k, v in n.kwargs.items()}
            self._op_args(n, args, where)
            self._core_binding(n, args, kwargs, where)
            derived = node_refs((args, tuple(kwargs.values())))
            if derived != n.inputs:
                raise FormatError("graph.structure", f"inputs is {n.inputs[:8]} but args/kwargs reference "
                                  f"{derived[:8]}", where + ".inputs")
            if n.meta is not None:
                check_meta(n.meta, where + ".meta", dim=check_dim)
            for field in ("lowering", "graph", "overload"):
                if getattr(n, field) is not None:
                    raise FormatError("graph.structure", f"'{field}' is set on a core-view node; core nodes have "
                                      f"no {field}", f"{where}.{field}")
            if n.origin is not None:
                o = n.origin
                if not 0 <= o.graph < len(module_nodes) or o.node not in module_nodes[o.graph]:
                    raise FormatError("graph.reference", f"origin (graph {o.graph}, node {o.node!r:.80}) is not a "
                                      f"node of the module view", where + ".origin")
            if n.op == "output":
                outputs += 1
            defined[n.name] = ni
            nodes.append(LoadedNode(n.name, n.op, n.target, args, kwargs, tuple(n.inputs), tuple(n.users), n.meta,
                                    None, None, None, False, n.origin))
        return _closed_graph(g, nodes, outputs, gwhere)

    def _core_target(self, n: Any, where: str, weights: set[str]) -> None:
        w = where + ".target"
        if n.op == "placeholder":
            check_identifier(n.target, w)
        elif n.op == "get_attr":
            check_dotted_target(n.target, w)
            t = self.tensor_names.get(n.target)
            if t is None or t.file not in weights:
                raise FormatError("tensor.reference", f"get_attr names '{n.target}', which is not in the tensor "
                                  f"table (in a weights file)", w)
        elif n.op == "call_function":
            check_function_name(n.target, w)
            if not (n.target in CORE_HIGHER_ORDER or n.target in CORE_PYTHON_FUNCTIONS) and len(n.target.split(".")) != 3:
                raise FormatError("graph.target", f"core target {n.target!r:.80} is neither an operator "
                                  f"(namespace.name.overload, like aten.convolution.default), a control-flow "
                                  f"operator ({', '.join(CORE_HIGHER_ORDER)}) nor one of the Python functions "
                                  f"core graphs may call", w)
            if len(n.target.split(".")) == 3 and n.target not in CORE_HIGHER_ORDER and n.target not in core_op_names():
                raise FormatError("core.op", f"operator '{n.target}' is not a Core ATen operator of this torch "
                                  f"(docs/core-ops.md lists them); export with run_decompositions()", w)
            if n.target not in self.m.core.ops:
                raise FormatError("core.op", f"operator '{n.target}' has no schema in core.ops; the writer lists "
                                  f"the schema of every operator the core graphs call", w)
        elif n.target != "output":
            raise FormatError("graph.target", f"the output node's target is 'output', found {n.target!r:.40}", w)

    def _core_binding(self, n: Any, args: tuple, kwargs: dict[str, Any], where: str) -> None:
        """Graph Values only as the subgraph arguments of control-flow operators (``core.structure``); an
        operator's args and kwargs bind to its schema by position then by name (``core.op``)."""
        located = [(a, f"{where}.args[{i}]") for i, a in enumerate(args)]
        located += [(v, f"{where}.kwargs.{k}") for k, v in kwargs.items()]
        refs = [w for value, at in located for v, w in leaves(value, where=at) if isinstance(v, GraphRef)]
        sub = _SUBGRAPH_ARGS.get(n.target) if n.op == "call_function" else None
        if sub is not None:
            for i in sub:
                if i >= len(args) or not isinstance(args[i], GraphRef):
                    raise FormatError("core.structure", f"{n.target} takes a graph Value as args[{i}]", where)
            if len(refs) != len(sub):
                raise FormatError("core.structure", f"{n.target} takes graph Values only as args{list(sub)}", where)
            return
        if refs:
            raise FormatError("core.structure", "a graph Value is only an argument of a control-flow operator "
                              f"({', '.join(_SUBGRAPH_ARGS)})", refs[0])
        if n.op != "call_function" or n.target not in self.m.core.ops:
            return
        schema = self.m.core.ops[n.target]
        positional = [a for a in schema.arguments if not a.kwarg_only]
        if len(args) > len(positional):
            raise FormatError("core.op", f"{len(args)} positional args; '{n.target}' takes at most "
                              f"{len(positional)}", where + ".args")
        given = {a.name for a in positional[:len(args)]}
        names = {a.name for a in schema.arguments}
        for k in kwargs:
            if k not in names:
                raise FormatError("core.op", f"'{n.target}' has no argument '{k}'", where + ".kwargs")
            if k in given:
                raise FormatError("core.op", f"argument '{k}' of '{n.target}' is given by position and by name",
                                  where + ".kwargs")
        for a in schema.arguments:
            if a.required and a.name not in given and a.name not in kwargs:
                raise FormatError("core.op", f"the required argument '{a.name}' of '{n.target}' is not given",
                                  where)

    @staticmethod
    def _core_acyclic(graphs: tuple[LoadedGraph, ...], cw: str) -> None:
        calls = [[v.index for n in g.nodes for v, _ in leaves((n.args, n.kwargs), where=None)
                  if isinstance(v, GraphRef)] for g in graphs]
        reached, cycle = _walk_calls(calls, [0])
        if cycle is not None:
            raise FormatError("core.structure", f"core graph {cycle[0]} refers to graph {cycle[1]}, which is already "
                              f"being called: the core graphs form a cycle", cw + ".graphs")
        for i, seen in enumerate(reached):
            if not seen:
                raise FormatError("core.structure", f"core graph {i} is not reached from the core root graph",
                                  f"{cw}.graphs[{i}]")

    def _core_inputs(self, root: LoadedGraph, cw: str) -> list[CoreInput]:
        c = self.m.core
        placeholders = [n.name for n in root.nodes if n.op == "placeholder"]
        if len(c.inputs) != len(placeholders):
            raise FormatError("core.structure", f"core.inputs has {len(c.inputs)} entries; the core root graph has "
                              f"{len(placeholders)} placeholders", cw + ".inputs")
        users = []
        for i, (ci, ph) in enumerate(zip(c.inputs, placeholders)):
            w = f"{cw}.inputs[{i}]"
            if ci.name != ph:
                raise FormatError("core.structure", f"name is {ci.name!r:.80}; placeholder {i} of the core root is "
                                  f"'{ph}'", w + ".name")
            if ci.kind not in CORE_INPUT_KINDS:
                raise FormatError("core.structure", f"kind {ci.kind!r:.40} is not one of {list(CORE_INPUT_KINDS)}",
                                  w + ".kind")
            if ci.kind == "user_input":
                users.append(ci)
                continue
            t = self.tensor_names.get(ci.target)
            if t is None or t.kind == "golden":
                raise FormatError("tensor.reference", f"target '{ci.target}' is not a tensor of the table",
                                  w + ".target")
            if t.kind != ci.kind:
                raise FormatError("core.structure", f"a {ci.kind} input names '{ci.target}', a tensor of kind "
                                  f"'{t.kind}'", w + ".kind")
        sig = self.m.signature.inputs
        if [u.target for u in users] != list(sig):
            raise FormatError("core.structure", f"the user inputs bind to {[u.target for u in users][:8]}; the "
                              f"signature's inputs are {list(sig)[:8]} (the k-th user input binds to the k-th "
                              f"signature input)", cw + ".inputs")
        return users

    def _core_outputs(self, root: LoadedGraph, cw: str) -> list[CoreOutput]:
        c = self.m.core
        out = [n for n in root.nodes if n.op == "output"][0]
        elements = out.args[0]
        if type(elements) not in (tuple, list):
            raise FormatError("core.structure", "the core root's output node returns a tuple or list of its "
                              "outputs", f"{cw}.graphs[0].nodes[{root.nodes.index(out)}].args[0]")
        if len(c.outputs) != len(elements):
            raise FormatError("core.structure", f"core.outputs has {len(c.outputs)} entries; the core root returns "
                              f"{len(elements)}", cw + ".outputs")
        user_outputs = []
        for i, (co, e) in enumerate(zip(c.outputs, elements)):
            w = f"{cw}.outputs[{i}]"
            expected = e.name if isinstance(e, NodeRef) else ""
            if co.name != expected:
                raise FormatError("core.structure", f"name is {co.name!r:.80}; output element {i} is "
                                  f"{expected!r:.80}", w + ".name")
            if co.kind not in CORE_OUTPUT_KINDS:
                raise FormatError("core.structure", f"kind {co.kind!r:.40} is not one of {list(CORE_OUTPUT_KINDS)}",
                                  w + ".kind")
            if co.kind == "user_output":
                if co.target != "":
                    raise FormatError("core.structure", "a user_output has target ''", w + ".target")
                user_outputs.append(co)
                continue
            t = self.tensor_names.get(co.target)
            if t is None:
                raise FormatError("tensor.reference", f"target '{co.target}' is not a tensor of the table",
                                  w + ".target")
            if t.kind != "buffer":
                raise FormatError("core.structure", f"a buffer_mutation updates '{co.target}', a tensor of kind "
                                  f"'{t.kind}'", w + ".target")
        return user_outputs

    def _core_signature(self, root: LoadedGraph, users: list[CoreInput], user_outputs: list[CoreOutput]) -> None:
        """No module view: the signature describes the core root (its user inputs, its user outputs)."""
        where = f"{MANIFEST_FILE}: signature"
        names = [u.name for u in users]
        if list(self.m.signature.inputs) != names:
            raise FormatError("graph.structure", f"signature inputs {self.m.signature.inputs[:8]} differ from the "
                              f"core root's user-input placeholders {names[:8]}", where + ".inputs")
        defined = {n.name for n in root.nodes}

        def resolve(name: str, w: str) -> NodeRef:
            if name not in defined:
                raise FormatError("graph.reference", f"'{name}' is not a node of the core root graph", w)
            return NodeRef(name)
        value = decode(self.m.signature.output, where + ".output", node=resolve)
        refs = [v.name for v, _ in leaves(value, where=None) if isinstance(v, NodeRef)]
        expected = [o.name for o in user_outputs if o.name]
        if refs != expected:
            raise FormatError("graph.output", f"signature output references {refs[:8]}; the core view's user "
                              f"outputs are {expected[:8]}", where + ".output")

    def golden(self, graphs: tuple[LoadedGraph, ...], core: LoadedCore | None = None) -> dict[str, Any] | None:
        g = self.m.golden
        if g is None:
            return None
        where = f"{MANIFEST_FILE}: golden"
        if g.mode not in GOLDEN_MODES:
            raise FormatError("schema.type", f"mode {g.mode!r:.40} is not one of {list(GOLDEN_MODES)}",
                              where + ".mode")
        if g.file not in {f.path for f in self.m.files if f.role == ROLE_GOLDEN}:
            raise FormatError("tensor.reference", f"golden file '{g.file}' is not a listed golden file",
                              where + ".file")
        res = self._tensor_resolver(ROLE_GOLDEN)
        inputs = [decode(v, f"{where}.inputs[{i}]", tensor=res) for i, v in enumerate(g.inputs)]
        outputs = decode(g.outputs, where + ".outputs", tensor=res)
        root = {n.name for n in graphs[0].nodes} if graphs else set()
        nodes = {}
        for k, v in g.nodes.items():
            if k not in root:
                raise FormatError("graph.reference", f"golden node '{k}' is not a root node", where + ".nodes")
            nodes[k] = decode(v, f"{where}.nodes.{k}", tensor=res)
        core_root = {n.name for n in core.graphs[0].nodes} if core is not None else set()
        core_nodes = {}
        for k, v in g.core_nodes.items():
            if k not in core_root:
                raise FormatError("graph.reference", f"golden core node '{k}' is not a node of the core root graph",
                                  where + ".core_nodes")
            core_nodes[k] = decode(v, f"{where}.core_nodes.{k}", tensor=res)
        tolerances = {}
        for k, t in g.tolerances.items():
            if k not in STORAGE_DTYPES:
                raise FormatError("tensor.dtype", f"tolerance for unknown dtype {k!r:.40}", where + ".tolerances")
            if not all(math.isfinite(x) and x >= 0 for x in (t.rtol, t.atol)):
                raise FormatError("schema.type", f"tolerance for {k} must be finite and >= 0",
                                  where + ".tolerances")
            tolerances[k] = t
        return {"mode": g.mode, "inputs": inputs, "outputs": outputs, "nodes": nodes, "tolerances": tolerances,
                "core_nodes": core_nodes}

    def digest(self) -> None:
        d = self.m.digest
        if not (d.startswith("sha256:") and _SHA256.match(d[7:])):
            raise FormatError("schema.type", "digest is not 'sha256:' and 64 lowercase hex digits",
                              f"{MANIFEST_FILE}: digest")




def _walk_calls(calls: list[list[int]], starts) -> tuple[list[bool], tuple[int, int] | None]:
    """Depth-first walk of the graph-calls-graph relation (``calls[i]``: the graphs graph ``i`` calls), from each
    of ``starts`` in order. Returns which graphs were reached and the first call that closes a cycle (caller,
    callee), or None. Iterative: a deep chain of nested graphs cannot exhaust Python's stack."""
    state = [0] * len(calls)  # 0 new, 1 on the stack, 2 done
    for start in starts:
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(calls[start]))]
        while stack:
            i, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[i] = 2
                stack.pop()
            elif state[nxt] == 1:
                return [st != 0 for st in state], (i, nxt)
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(calls[nxt])))
    return [st != 0 for st in state], None

def _closed_graph(g: Any, nodes: list, outputs: int, gwhere: str) -> "LoadedGraph":
    """The end of a graph's check, for both views: exactly one output node, and every node's ``users`` equal to
    the nodes whose ``inputs`` name it, in graph order (format.md section 2.1)."""
    if outputs != 1:
        raise FormatError("graph.output", "the graph has no output node", gwhere)
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users[i].append(n.name)
    for ni, n in enumerate(nodes):
        if list(n.users) != users[n.name]:
            raise FormatError("graph.structure", f"users of '{n.name}' is {list(n.users)[:8]}, but the "
                              f"nodes using it are {users[n.name][:8]}", f"{gwhere}.nodes[{ni}].users")
    return LoadedGraph(g.name, tuple(nodes), g.training)

def _same_value(a: Any, b: Any) -> bool:
    """Equality of two decoded msgpack objects as MessagePack values: types must match (a bool is not an int,
    an int not a float), floats compare by their bits (NaN equals NaN, -0.0 differs from 0.0), maps compare by
    key set whatever their order. Both were depth-checked by decode()."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is list:
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def read(path: str | os.PathLike, *, strict: bool = True) -> Reading:
    """Open and validate an artifact directory (docs/format.md section 10, in order).

    Raises:
        FormatError / VersionError: the first fault in the spec's validation order.
    """
    p = os.path.abspath(os.fspath(path))
    d = _Dir(p)
    v = None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # decoding builds many young objects that hold no cycles; collections would rescan them
    try:
        if MANIFEST_FILE not in d.entries():
            raise FormatError("artifact.missing", "the manifest does not exist", MANIFEST_FILE)
        data = d.read(MANIFEST_FILE, MAX_MANIFEST_BYTES)
        manifest = loads_manifest(data)
        decls = check_declarations(manifest, MANIFEST_FILE)
        v = _Validator(d, manifest, strict, decls)
        v.files()
        v.tensors()
        v.tensor_files()
        graphs = v.graphs()
        v.signature(graphs)
        core = v.core(graphs)
        golden = v.golden(graphs, core)
        v.digest()
        files = TensorFiles(v.fds, v.stored)
        v.fds = {}
    finally:
        if v is not None:
            for fd in v.fds.values():  # validation failed: the files it opened are closed again
                os.close(fd)
        d.close()
        if gc_was_enabled:
            gc.enable()
    return Reading(p, manifest, graphs, golden, files, core)
