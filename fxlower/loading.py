"""``fxlower.load``: read an artifact safely and rebuild a GraphModule.

Safety: no pickle, no ``eval``, no import of any module named in a file. ``call_function`` targets resolve only
through :mod:`fxlower.targets` (allow-list plus user registrations), leaf modules only through the book's
registered classes, and every name that reaches ``torch.fx`` code generation is checked first (identifiers for
placeholders, methods and keyword names; dotted attribute paths for modules and attributes).

Validation follows docs/format.md section 10, in order, and every rejection is a :class:`fxlower.FormatError`
(or :class:`fxlower.VersionError`) with the spec's stable code, naming the file and field.

Tensors are memory-mapped copy-on-write and read lazily. :meth:`Artifact.to_graph_module` copies the tensors it
uses into memory it owns, so the rebuilt module does not depend on the files (a file truncated while mapped can
only fault a caller holding a tensor from :meth:`Artifact.tensor`).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import keyword
import math
import os
import re
import stat
import struct
import types
from collections.abc import Mapping
from typing import Any

import msgpack
import torch
import torch.fx as fx
import torch.nn as nn

from . import book
from .constants import (FILE_ROLES, FORMAT_ID, FORMAT_VERSION, GOLDEN_MODES, MANIFEST_FILE, MAX_MANIFEST_BYTES,
                        OPS, ROLE_GOLDEN, ROLE_WEIGHTS, STORAGE_DTYPES)
from .errors import FormatError, UnsupportedTargetError, VersionError
from .lifting import LoweringRecord
from .names import (check_dotted_target, check_file_path, check_function_name, check_identifier,
                    check_method_name, check_name)
from .schema import Manifest, from_obj
from .targets import allowed_names, is_allowed_method, resolve_function
from .tensorfile import StoredTensor, TensorFile
from .values import _kind, check_meta, check_shape, decode

__all__ = ["load", "loads_manifest", "Artifact", "LoadedNode", "LoadedGraph", "NodeRef", "TensorRef"]

_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class NodeRef:
    """A reference to a node's result, as decoded from a ``node`` Value."""

    name: str


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """A reference to a tensor of the table, as decoded from a ``tensor`` Value."""

    name: str


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


@dataclasses.dataclass(frozen=True)
class LoadedGraph:
    name: str
    nodes: tuple[LoadedNode, ...]

    def node(self, name: str) -> LoadedNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph '{self.name}' has no node '{name}'")


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
            raise FormatError("manifest.key_type", f"a map key is {_kind(k)}; keys are strings", MANIFEST_FILE)
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
        found = obj.get("format") if type(obj) is dict else _kind(obj)
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


# ------------------------------------------------------------------------------------------------ the artifact

class Artifact:
    """A loaded, validated artifact. Use :func:`load` to get one.

    Attributes:
        path: the directory.
        manifest: the decoded :class:`fxlower.schema.Manifest`.
        format_version: ``(major, minor)`` of the file.
        graphs: the graphs, ``graphs[0]`` the root, nodes decoded (references as :class:`NodeRef` /
            :class:`TensorRef`, lowering records with tensor attributes as :class:`TensorRef`).
        tensors: name -> :class:`fxlower.schema.TensorEntry`.
    """

    def __init__(self, path: str, manifest: Manifest, graphs: tuple[LoadedGraph, ...],
                 files: dict[str, TensorFile], golden: dict[str, Any] | None):
        self.path = path
        self.manifest = manifest
        self.format_version = tuple(manifest.format_version)
        self.graphs = graphs
        self.tensors = {t.name: t for t in manifest.tensors}
        self._files = files
        self._golden = golden

    # --- tensors ---

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name``, backed by a copy-on-write mapping of its file (no read until used).

        Raises:
            KeyError: no tensor of that name.
        """
        entry = self.tensors[name]
        return self._files[entry.file].tensor(entry.key)

    def stored_bytes(self, name: str) -> memoryview:
        """The bytes stored for tensor ``name``, as a view of the file mapping (little-endian, row-major)."""
        entry = self.tensors[name]
        return self._files[entry.file].stored_bytes(entry.key)

    def verify(self) -> None:
        """Check every tensor's SHA-256 against the table.

        Raises:
            FormatError ("tensor.hash"): naming the first tensor whose bytes differ.
        """
        for entry in self.manifest.tensors:
            digest = hashlib.sha256(self.stored_bytes(entry.name)).hexdigest()
            if digest != entry.sha256:
                raise FormatError("tensor.hash", f"tensor '{entry.name}': stored bytes hash to {digest}, the "
                                  f"table says {entry.sha256}", entry.file)

    def close(self) -> None:
        """Release the tensor files (tensors from :meth:`tensor` stay valid: they hold their own mappings)."""
        for f in self._files.values():
            f.close()

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- values ---

    def materialize(self, value: Any, nodes: Mapping[str, Any] | None = None) -> Any:
        """Replace :class:`TensorRef` with owned tensor copies (and :class:`NodeRef` via ``nodes``)."""
        def conv(v: Any) -> Any:
            if isinstance(v, TensorRef):
                return self.tensor(v.name).clone()
            if isinstance(v, NodeRef):
                if nodes is None:
                    raise ValueError(f"a node reference '{v.name}' needs a node mapping")
                return nodes[v.name]
            if isinstance(v, list):
                return [conv(x) for x in v]
            if isinstance(v, tuple):
                return tuple(conv(x) for x in v)
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, slice):
                return slice(conv(v.start), conv(v.stop), conv(v.step))
            return v
        return conv(value)

    @property
    def golden_mode(self) -> str | None:
        return None if self._golden is None else self._golden["mode"]

    def golden_inputs(self) -> tuple:
        """The stored example inputs (owned tensors). Raises ValueError without golden data."""
        return tuple(self.materialize(v) for v in self._need_golden()["inputs"])

    def golden_outputs(self) -> Any:
        """The stored outputs, in the program's output structure."""
        return self.materialize(self._need_golden()["outputs"])

    def golden_nodes(self) -> dict[str, Any]:
        """Root node name -> stored result (empty unless exported with ``golden="nodes"``)."""
        return {k: self.materialize(v) for k, v in self._need_golden()["nodes"].items()}

    def tolerances(self) -> dict[str, tuple[float, float]]:
        """dtype code -> (rtol, atol)."""
        return {k: (t.rtol, t.atol) for k, t in self._need_golden()["tolerances"].items()}

    def _need_golden(self) -> dict[str, Any]:
        if self._golden is None:
            raise ValueError(f"{self.path} has no golden data; export with golden=True")
        return self._golden

    # --- rebuilding ---

    def to_graph_module(self) -> fx.GraphModule:
        """Rebuild an executable ``torch.fx.GraphModule`` (eval mode) that computes what the exported one did.

        Leaf modules are rebuilt from their lowering records; tensors are copied into owned memory.

        Raises:
            UnsupportedTargetError: a ``call_function`` target is neither allow-listed nor registered, a
                ``call_method`` target is not a public ``torch.Tensor`` method, or a module type has no rule.
        """
        built: dict[int, fx.GraphModule] = {}
        copies: dict[tuple[str, str], torch.Tensor] = {}

        def owned(name: str) -> torch.Tensor:
            """An owned copy of a tensor; aliases (same file and key) share one copy, as tied weights did."""
            entry = self.tensors[name]
            key = (entry.file, entry.key)
            if key not in copies:
                copies[key] = self.tensor(name).clone()
            return copies[key]

        classes = _module_classes()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # building thousands of modules and nodes; collections would rescan them again and again
        try:
            for index in _callee_first(self.graphs):
                built[index] = self._build_graph(index, built, owned, classes)
        finally:
            if gc_was_enabled:
                gc.enable()
        return built[0]

    def _build_graph(self, index: int, built: dict[int, fx.GraphModule], owned,
                     classes: dict[str, type]) -> fx.GraphModule:
        g = self.graphs[index]
        graph = fx.Graph()
        root: dict[str, Any] = {}
        env: dict[str, fx.Node] = {}
        prefix = f"{g.name}." if g.name else ""
        for node in g.nodes:
            where = f"node '{node.name}' in graph {index}"
            args = self.materialize(node.args, env)
            kwargs = self.materialize(node.kwargs, env)
            if node.op == "placeholder":
                default = args[0] if args else fx.node.inspect.Signature.empty
                out = graph.placeholder(node.target, default_value=default)
            elif node.op == "output":
                out = graph.output(args[0])
            else:
                target: Any = node.target
                if node.op == "call_function":
                    target = resolve_function(node.target, where)
                elif node.op == "call_method":
                    if not is_allowed_method(node.target):
                        raise UnsupportedTargetError(f"call_method target '{node.target}' ({where}) is not a "
                                                     f"public torch.Tensor method")
                if node.op in ("get_attr", "call_module") and node.target.split(".")[0] in _graph_module_names():
                    raise UnsupportedTargetError(f"{node.op} target '{node.target}' ({where}) would replace the "
                                                 f"GraphModule attribute '{node.target.split('.')[0]}'")
                if node.op == "get_attr":
                    root[node.target] = owned(prefix + node.target)
                elif node.op == "call_module":
                    root[node.target] = (built[node.graph] if node.graph is not None
                                         else _rebuild_module(node.lowering, owned, where, classes))
                out = graph.create_node(node.op, target, tuple(args), kwargs, name=node.name)
            env[node.name] = out
        gm = fx.GraphModule(root, graph, class_name="FxLowerGraphModule")
        gm.eval()
        return gm


_GRAPH_MODULE_NAMES: frozenset[str] = frozenset()


def _graph_module_names() -> frozenset[str]:
    """Attribute names a GraphModule has of its own (``forward``, ``graph``, ``training``, ...)."""
    global _GRAPH_MODULE_NAMES
    if not _GRAPH_MODULE_NAMES:
        _GRAPH_MODULE_NAMES = frozenset(dir(fx.GraphModule)) | frozenset(vars(fx.GraphModule(nn.Module(),
                                                                                             fx.Graph())))
    return _GRAPH_MODULE_NAMES


def _callee_first(graphs: tuple[LoadedGraph, ...]) -> list[int]:
    order: list[int] = []
    done: set[int] = set()

    def visit(i: int) -> None:  # acyclicity was validated on load
        if i in done:
            return
        for n in graphs[i].nodes:
            if n.graph is not None:
                visit(n.graph)
        done.add(i)
        order.append(i)

    visit(0)
    return order


# ------------------------------------------------------------------------------------------------ leaf modules

_CONTAINERS = {"torch.nn.ModuleList": nn.ModuleList, "torch.nn.Sequential": nn.Sequential,
               "torch.nn.ModuleDict": nn.ModuleDict}


def _module_classes() -> dict[str, type]:
    classes = {r.type_name: r.module_type for r in book.rules()}
    classes.update(_CONTAINERS)
    return classes


def _new_module(cls: type) -> nn.Module:
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    return module


def _finish(module: nn.Module) -> None:
    """Derived state some torch.nn classes compute in ``__init__`` from recorded attributes."""
    if isinstance(module, nn.modules.conv._ConvNd):  # as _ConvNd.__init__ computes it
        if isinstance(module.padding, str):
            rev = [0, 0] * len(module.kernel_size)
            if module.padding == "same":
                for d, k, i in zip(module.dilation, module.kernel_size, range(len(module.kernel_size) - 1, -1, -1)):
                    total = d * (k - 1)
                    rev[2 * i] = total // 2
                    rev[2 * i + 1] = total - total // 2
            module._reversed_padding_repeated_twice = rev
        else:
            module._reversed_padding_repeated_twice = nn.modules.utils._reverse_repeat_tuple(module.padding, 2)
    if isinstance(module, nn.RNNBase):
        # Same naming as RNNBase.__init__: per layer and direction, weight_ih, weight_hh[, bias_ih, bias_hh]
        # [, weight_hr], suffixed _l{layer}[_reverse].
        names = []
        for layer in range(module.num_layers):
            for direction in range(2 if module.bidirectional else 1):
                suffix = f"_l{layer}{'_reverse' if direction else ''}"
                group = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
                group += ["weight_hr"] if module.proj_size > 0 else []
                names.append([f"{n}{suffix}" for n in group])
        module._all_weights = names
        module._flat_weights_names = [n for group in names for n in group]
        module._init_flat_weights()


def _rebuild_module(record: LoweringRecord, owned, where: str, classes: dict[str, type]) -> nn.Module:
    cls = classes.get(record.module_type)
    if cls is None:
        raise UnsupportedTargetError(f"module type '{record.module_type}' ({where}) has no lowering rule here; "
                                     f"register it with fxlower.register_module before loading")
    root = _new_module(cls)
    modules: dict[str, nn.Module] = {"": root}
    for name in sorted(record.attrs, key=lambda n: n.count(".")):
        value = record.attrs[name]
        parent_path, _, leaf = name.rpartition(".")
        parent = modules.get(parent_path)
        if parent is None:
            raise UnsupportedTargetError(f"{where}: attribute '{name}' is below '{parent_path}', whose module "
                                         f"type the record does not give")
        if leaf.startswith("__") or hasattr(parent, leaf):
            raise UnsupportedTargetError(f"{where}: attribute '{name}' would replace "
                                         f"{type(parent).__qualname__}.{leaf}, which the module has already (a "
                                         f"method, property or state); a lowering record only adds attributes")
        if isinstance(value, str) and value in classes:
            child = _new_module(classes[value])
            modules[name] = child
            if isinstance(parent, nn.ModuleList) and leaf != str(len(parent)):
                raise UnsupportedTargetError(f"{where}: '{name}' is not the next index of the ModuleList "
                                             f"'{parent_path}' (expected '{parent_path}.{len(parent)}')")
            parent.add_module(leaf, child)
            continue
        if isinstance(value, TensorRef):
            t = owned(value.name)
            if t.is_floating_point():
                parent.register_parameter(leaf, nn.Parameter(t, requires_grad=False))
            else:
                parent.register_buffer(leaf, t)
            continue
        if isinstance(value, str) and value in allowed_names() and "." in value:
            value = resolve_function(value, where)
        if isinstance(value, tuple) and leaf == "_flat_weights_names":
            value = list(value)
        object.__setattr__(parent, leaf, value)
    for m in reversed(list(modules.values())):
        m.training = False
        _finish(m)
    return root


# ------------------------------------------------------------------------------------------------ validation

class _Validator:
    """docs/format.md section 10, in order."""

    def __init__(self, d: _Dir, manifest: Manifest, strict: bool):
        self.d = d
        self.m = manifest
        self.strict = strict
        self.tensor_names: dict[str, Any] = {}
        self.stored: dict[str, dict[str, StoredTensor]] = {}
        self.opened: dict[str, TensorFile] = {}  # the checked descriptors, kept for reading tensors

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
            if f.role in roles:
                raise FormatError("schema.type", f"a second file of role '{f.role}'", where)
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
        groups: dict[tuple[str, str], Any] = {}
        for t in self.m.tensors:
            first = groups.setdefault((t.file, t.key), t)
            if (first.dtype, first.shape, first.sha256) != (t.dtype, t.shape, t.sha256):
                raise FormatError("tensor.mismatch", f"aliases '{first.name}' and '{t.name}' of key '{t.key}' "
                                  f"differ in dtype, shape or sha256", MANIFEST_FILE)

    def tensor_files(self) -> None:
        for f in self.m.files:
            self.opened[f.path] = TensorFile(_open_member(self.d.fd, f.path), f.path)
            self.stored[f.path] = self.opened[f.path].entries
            keys = {t.key for t in self.m.tensors if t.file == f.path}
            for t in self.m.tensors:
                if t.file != f.path:
                    continue
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
            raise FormatError("graph.structure", "graphs is empty; the root graph is graphs[0]", MANIFEST_FILE)
        loaded = []
        weights = self._tensor_resolver(ROLE_WEIGHTS)
        for gi, g in enumerate(self.m.graphs):
            gwhere = f"{MANIFEST_FILE}: graphs[{gi}]"
            if gi == 0:
                if g.name != "":
                    raise FormatError("schema.name", "the root graph's name is ''", gwhere + ".name")
            else:
                check_name(g.name, gwhere + ".name")
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
            args = tuple(decode(a, f"{where}.args[{i}]", node=resolve_node) for i, a in enumerate(n.args))
            kwargs = {k: decode(v, f"{where}.kwargs.{k}", node=resolve_node) for k, v in n.kwargs.items()}
            self._op_args(n, args, where)
            derived: dict[str, None] = {}
            _collect_refs((args, tuple(kwargs.values())), derived)
            if list(derived) != n.inputs:
                raise FormatError("graph.structure", f"inputs is {n.inputs[:8]} but args/kwargs reference "
                                  f"{list(derived)[:8]}", where + ".inputs")
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
            if n.op == "output":
                outputs += 1
            defined[n.name] = ni
            nodes.append(LoadedNode(n.name, n.op, n.target, args, kwargs, tuple(n.inputs), tuple(n.users), n.meta,
                                    lowering, n.graph))
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
        return LoadedGraph(g.name, tuple(nodes))

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
        elif n.op == "call_function":
            check_function_name(n.target, w)
        elif n.target != "output":
            raise FormatError("graph.target", f"the output node's target is 'output', found {n.target!r:.40}", w)

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
        return LoweringRecord(module_type=low.module_type, version=low.version, module_version=low.module_version,
                              attrs=types.MappingProxyType(attrs))

    @staticmethod
    def _acyclic(graphs: list[LoadedGraph]) -> None:
        state = [0] * len(graphs)  # 0 new, 1 on stack, 2 done
        for start in range(len(graphs)):
            if state[start]:
                continue
            stack = [(start, iter([n.graph for n in graphs[start].nodes if n.graph is not None]))]
            state[start] = 1
            while stack:
                i, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[i] = 2
                    stack.pop()
                elif state[nxt] == 1:
                    raise FormatError("graph.structure", f"graph {i} calls graph {nxt}, which is already being "
                                      f"called: the graphs form a cycle", MANIFEST_FILE)
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter([n.graph for n in graphs[nxt].nodes if n.graph is not None])))

    def signature(self, graphs: tuple[LoadedGraph, ...]) -> None:
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

    def golden(self, graphs: tuple[LoadedGraph, ...]) -> dict[str, Any] | None:
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
        root = {n.name for n in graphs[0].nodes}
        nodes = {}
        for k, v in g.nodes.items():
            if k not in root:
                raise FormatError("graph.reference", f"golden node '{k}' is not a root node", where + ".nodes")
            nodes[k] = decode(v, f"{where}.nodes.{k}", tensor=res)
        tolerances = {}
        for k, t in g.tolerances.items():
            if k not in STORAGE_DTYPES:
                raise FormatError("tensor.dtype", f"tolerance for unknown dtype {k!r:.40}", where + ".tolerances")
            if not all(math.isfinite(x) and x >= 0 for x in (t.rtol, t.atol)):
                raise FormatError("schema.type", f"tolerance for {k} must be finite and >= 0",
                                  where + ".tolerances")
            tolerances[k] = t
        return {"mode": g.mode, "inputs": inputs, "outputs": outputs, "nodes": nodes, "tolerances": tolerances}

    def digest(self) -> None:
        d = self.m.digest
        if not (d.startswith("sha256:") and _SHA256.match(d[7:])):
            raise FormatError("schema.type", "digest is not 'sha256:' and 64 lowercase hex digits",
                              f"{MANIFEST_FILE}: digest")


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


def _collect_refs(value: Any, out: dict[str, None]) -> None:
    if isinstance(value, NodeRef):
        out.setdefault(value.name, None)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_refs(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_refs(v, out)
    elif isinstance(value, slice):
        for v in (value.start, value.stop, value.step):
            _collect_refs(v, out)


def load(path: str | os.PathLike, *, strict: bool = True, verify: bool = False) -> Artifact:
    """Open and validate an artifact directory.

    Args:
        path: the artifact directory.
        strict: reject files the manifest does not list (with ``False`` they are ignored, never read).
        verify: also check every tensor's SHA-256 (reads all tensor bytes).

    Returns:
        An :class:`Artifact`; tensors are mapped lazily.

    Raises:
        FormatError: the artifact is malformed; ``.code`` is the spec's stable code (docs/format.md §11).
        VersionError: another format, or an unsupported format version.

    Example:
        >>> import torch, fxlower
        >>> art = fxlower.load("/tmp/doc-example.fxl")          # written by fxlower.export's example
        >>> gm = art.to_graph_module()
        >>> torch.equal(gm(*art.golden_inputs()), art.golden_outputs())
        True
    """
    p = os.path.abspath(os.fspath(path))
    d = _Dir(p)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # decoding builds many young objects that hold no cycles; collections would rescan them
    v = None
    try:
        if MANIFEST_FILE not in d.entries():
            raise FormatError("artifact.missing", "the manifest does not exist", MANIFEST_FILE)
        data = d.read(MANIFEST_FILE, MAX_MANIFEST_BYTES)
        manifest = loads_manifest(data)
        v = _Validator(d, manifest, strict)
        v.files()
        v.tensors()
        v.tensor_files()
        graphs = v.graphs()
        v.signature(graphs)
        golden = v.golden(graphs)
        v.digest()
    except BaseException:
        for f in (v.opened.values() if v is not None else ()):
            f.close()
        raise
    finally:
        d.close()
        if gc_was_enabled:
            gc.enable()
    artifact = Artifact(p, manifest, graphs, v.opened, golden)
    if verify:
        try:
            artifact.verify()
        except BaseException:
            artifact.close()
            raise
    return artifact
