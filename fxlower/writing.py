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
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable
from typing import Any

import msgpack
import torch
import torch.fx as fx

from . import __version__
from .constants import (FORMAT_ID, FORMAT_VERSION, GOLDEN_FILE, MANIFEST_FILE, MAX_MANIFEST_BYTES, ROLE_GOLDEN,
                        ROLE_WEIGHTS, TOLERANCES, WEIGHTS_FILE)
from .errors import ExportError, FormatError, UnsupportedModuleError
from .lifting import META_KEY, iter_graph_modules, lift, module_declarations
from .names import check_dotted_target, check_function_name, check_identifier, check_method_name, check_name
from .schema import (FileEntry, Golden, Graph, Lowering, Manifest, ModuleDecl, Node, Producer, Signature,
                     TensorEntry, Tolerance, to_obj)
from .signatures import CATCH_ALL, choose_overload, function_overloads, method_overloads, to_schema
from .targets import function_name
from .tensorfile import _write_all, storage_code, write_tensor_file
from .values import clone_tensors, encode, has_tensor, meta_of

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
    """Tensors with equal keys view the same bytes; None for tensors without storage bytes."""
    if t.numel() == 0 or t.device.type == "meta":
        return None
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
        storage_code(t, f"tensor '{name}'")
        if name in self.tensors:
            if self.tensors[name][0] is not t:
                raise ExportError(f"two different tensors are both named '{name}'")
            return name
        self.tensors[name] = (t, role)
        self.state[name] = (kind, requires_grad, persistent)
        self._by_id.setdefault(id(t), name)
        return name

    def name_of(self, t: torch.Tensor) -> str | None:
        return self._by_id.get(id(t))

    def entries(self, hashes: dict[tuple[str, str], str], files: dict[str, str]) -> list[TensorEntry]:
        """Table entries sorted by name; ``hashes`` maps (role, key) to sha256."""
        out = []
        keys = self.keys()
        for name in sorted(self.tensors):
            t, role = self.tensors[name]
            key = keys[name]
            kind, requires_grad, persistent = self.state[name]
            out.append(TensorEntry(name=name, dtype=storage_code(t, name), shape=[int(s) for s in t.shape],
                                   file=files[role], key=key, sha256=hashes[(role, key)], kind=kind,
                                   requires_grad=requires_grad, persistent=persistent))
        return out

    def keys(self) -> dict[str, str]:
        """name -> stored key: the smallest name of its alias group."""
        groups: dict[tuple, list[str]] = {}
        for name, (t, role) in self.tensors.items():
            k = _alias_key(t)
            groups.setdefault((role, k) if k is not None else (role, "name", name), []).append(name)
        keys = {}
        for names in groups.values():
            for n in names:
                keys[n] = min(names)
        return keys

    def stored(self, role: str) -> list[tuple[str, torch.Tensor]]:
        keys = self.keys()
        return [(n, t) for n, (t, r) in sorted(self.tensors.items()) if r == role and keys[n] == n]


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
        counter = iter(range(1 << 62))

        def name(t: torch.Tensor) -> str:
            return self.table.add(f"{prefix}/{next(counter)}", t, ROLE_GOLDEN, "golden")
        return name

    def encode_graph(self, path: str, g: fx.GraphModule) -> Graph:
        nodes = []
        gwhere = f"graph '{path}'" if path else "root graph"
        modules = dict(g.named_modules(remove_duplicate=False))
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
                inputs=[n.name for n in node.all_input_nodes], users=[u.name for u in node.users],
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
            dtypes = sorted({c for c in (storage_code(t, n) for n, (t, r) in self.table.tensors.items()
                                         if r == ROLE_GOLDEN and not n.startswith("golden/inputs/"))})
            tolerances = {c: Tolerance(*TOLERANCES.get(c, (0.0, 0.0))) for c in dtypes}
            golden = Golden(mode=self.golden_mode, file=GOLDEN_FILE, inputs=inputs, outputs=outputs, nodes=nodes,
                            tolerances=tolerances)
        return graphs, signature, golden


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


def _digest(graphs: bytes, tensors: list[TensorEntry], signature: bytes) -> str:
    """docs/format.md section 7: SHA-256 of the array [graphs, weight tensors, signature], given the packed
    graphs and signature (an array of 3 is the byte 0x93 followed by its items)."""
    weights = _pack(to_obj([t for t in tensors if t.file == WEIGHTS_FILE]))
    return "sha256:" + hashlib.sha256(b"\x93" + graphs + weights + signature).hexdigest()


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
    return MANIFEST_FILE in entries or entries <= {WEIGHTS_FILE, GOLDEN_FILE}


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
    others = sorted(set(os.listdir(target)) - {WEIGHTS_FILE, GOLDEN_FILE})
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

def export(gm: fx.GraphModule | torch.nn.Module, path: str | os.PathLike, example_inputs: tuple | None = None, *,
           golden: bool | str = False, overwrite: bool = False) -> ExportSummary:
    """Lift ``gm`` and write it as an fxlower artifact directory at ``path``.

    Temporaries that earlier exports to ``path`` left behind when they were killed are removed first and listed
    in the summary's ``removed_temporaries``.

    Args:
        gm: the GraphModule; nested GraphModules reached by ``call_module`` become graphs of their own. Any
            other ``nn.Module`` is traced first with ``torch.fx.symbolic_trace``.
        path: the artifact directory to create.
        example_inputs: positional inputs; when given, every node's output shape and dtype are recorded from a
            run on them (otherwise from ``node.meta`` where an earlier pass left them).
        golden: ``True`` to store the example inputs and the outputs they produce, with tolerances;
            ``"nodes"`` to store every root node's output too. Requires ``example_inputs``.
        overwrite: replace an existing artifact at ``path`` (atomically); otherwise an existing path raises.

    Returns:
        An :class:`ExportSummary` (path, node and tensor counts, bytes written, digest, removed temporaries).

    Raises:
        ArtifactExistsError: ``path`` exists and ``overwrite`` is false, or it is not an artifact directory
            (which ``overwrite`` never replaces); also a ``FileExistsError``.
        UnsupportedModuleError: a leaf module has no lowering rule.
        ExportError: tracing an ``nn.Module`` failed; running the example inputs failed; a value, tensor or name
            cannot be written; or the file system failed (errno and path named).

    Example:
        >>> import torch, torch.nn as nn, fxlower
        >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        >>> s = fxlower.export(gm, "/tmp/doc-example.fxl", (torch.randn(1, 4),), golden=True, overwrite=True)
        >>> s.nodes, s.tensors
        (4, 4)
    """
    if not isinstance(gm, fx.GraphModule):
        if not isinstance(gm, torch.nn.Module):
            raise TypeError(f"export expects a torch.fx.GraphModule or a torch.nn.Module, got "
                            f"{type(gm).__module__}.{type(gm).__qualname__}")
        gm = _trace(gm)
    if golden not in (False, True, "nodes"):
        raise ValueError(f"golden must be False, True or 'nodes', got {golden!r}")
    if golden and example_inputs is None:
        raise ValueError(f"golden={golden!r} needs example_inputs (golden data is the outputs they produce); pass "
                         f"them, e.g. export(gm, path, (x,), golden={golden!r}), or leave golden=False")
    if example_inputs is not None and not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    target = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(target)
    if os.path.lexists(target) and (not overwrite or not _is_replaceable(target)):
        raise _exists_error(target, during=False)
    removed = tuple(remove_orphaned_temporaries(target)) if os.path.isdir(parent) else ()
    try:
        tmp, lock_fd = _make_temporary(parent, base)
    except OSError as e:
        raise ExportError(f"cannot create the temporary directory in {parent}: {e.strerror} "
                          f"(errno {e.errno})") from e
    try:
        summary = _export_into(gm, example_inputs, golden, tmp, target, overwrite)
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


def _export_into(gm: fx.GraphModule, example_inputs: tuple | None, golden: bool | str, tmp: str, target: str,
                 overwrite: bool) -> ExportSummary:
    program = _Program(gm, example_inputs, golden)
    program.collect()
    graphs, signature, golden_obj = program.encode_program()
    modules, functions, methods = program.declarations()
    program.advance(Phase.ENCODE, Phase.WRITE_TENSORS)

    roles = sorted({role for _, role in program.table.tensors.values()})
    files = {ROLE_WEIGHTS: WEIGHTS_FILE, ROLE_GOLDEN: GOLDEN_FILE}
    hashes: dict[tuple[str, str], str] = {}
    total = 0
    for role in roles:
        stored = program.table.stored(role)
        file_hashes, size = _write_file(tmp, files[role], lambda fd: write_tensor_file(fd, stored))
        hashes.update({(role, k): h for k, h in file_hashes.items()})
        total += size
    program.advance(Phase.WRITE_TENSORS, Phase.WRITE_MANIFEST)

    tensors = program.table.entries(hashes, files)
    packed = {"graphs": _pack(to_obj(graphs)), "signature": _pack(to_obj(signature))}
    manifest = Manifest(
        format=FORMAT_ID,
        format_version=list(FORMAT_VERSION),
        producer=Producer(name="fxlower", version=__version__, torch=torch.__version__),
        files=[FileEntry(path=files[r], role=r) for r in roles],
        tensors=tensors,
        graphs=graphs,
        signature=signature,
        golden=golden_obj,
        digest=_digest(packed["graphs"], tensors, packed["signature"]),
        modules=modules,
        functions=functions,
        methods=methods,
    )
    data = pack_manifest(manifest, packed)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ExportError(f"the manifest would be {len(data)} bytes, over the format's limit of "
                          f"{MAX_MANIFEST_BYTES}; readers would refuse it")
    _, size = _write_file(tmp, MANIFEST_FILE, lambda fd: _write_all(fd, memoryview(data)))
    total += size
    _fsync_dir(tmp)
    program.advance(Phase.WRITE_MANIFEST, Phase.PUBLISH)

    _publish(tmp, target, overwrite)
    _fsync_dir(os.path.dirname(target))
    program.advance(Phase.PUBLISH, Phase.DONE)
    return ExportSummary(path=target, nodes=sum(len(g.nodes) for g in graphs), graphs=len(graphs),
                         tensors=len(tensors), bytes_written=total, digest=manifest.digest)
