"""Collective export over torch.distributed (format 1.3): every rank of a tensor-parallel or FSDP2 model writes the
bytes of the DTensor shards it owns into one shared artifact, and the artifact is byte-identical to a
single-process export of the full model with the same ``placements=``.

``fxlower.export`` hands over to :func:`export` when the default process group is initialised and the module holds
DTensor parameters or buffers. Transport is torch.distributed only: object collectives (``all_gather_object``) on a
new gloo group with the caller's timeout. The protocol, in phases, each ending with an exchange of every rank's
status (so an exception on one rank becomes an :class:`ExportError` on all, naming that rank and its message):

1. PLAN: every rank traces, lifts and encodes the same graph and computes the same tensor table and file plan
   (``tensorfile.plan_files``) from global shapes and dtypes (``DTensor.shape`` is global); a fingerprint of the
   plan is compared across ranks. Rank 0 removes orphaned temporaries and creates the locked temporary directory;
   its name travels in rank 0's status.
2. CREATE: rank 0 creates each file at its final size with its safetensors header.
3. WRITE: each rank ``pwrite``s the bytes of its local shards into their (possibly strided) byte ranges: one run
   per row of the outer dimensions when a tensor is split along an inner one. A replicated piece is written by the
   rank at coordinate 0 along every replicated mesh dimension; a plain (non-DTensor) tensor by rank 0. fsync.
4. HASH: the stored tensors are dealt to ranks, balanced by bytes; each rank reads its tensors back in bounded
   chunks and hashes them (SHA-256 over the full tensor's bytes in order); the hashes are gathered.
5. MANIFEST: rank 0 writes the manifest (placements from each DTensor's ``placements`` and mesh), fsyncs.
6. PUBLISH: after that exchange, rank 0 renames the temporary into place; the last exchange hands its summary to
   every rank.

On any failure, or a peer that dies (gloo sees the closed connection at once; otherwise the group's timeout), every
surviving rank removes the temporary directory (every rank knows its path; removing it twice is harmless) and
raises; nothing is published. A rank's memory holds its own shards, one host copy of one local shard at most, and a
64 MiB read buffer; never a full tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

from . import writing as _w
from ..format.constants import CODE_OF_DTYPE, FORMAT_ID, FORMAT_VERSION, MANIFEST_FILE, MAX_MANIFEST_BYTES, ROLE_WEIGHTS, \
    STORAGE_DTYPES, WEIGHTS_FILE
from ..errors import ExportError, UnsupportedModuleError
from ..format.names import check_name
from ..format.schema import FileEntry, Manifest, Placement, Producer, TensorEntry, to_obj
from .tensorfile import FilePlan, plan_files, storage_code, tensor_bytes

__all__ = ["applies", "export", "DEFAULT_TIMEOUT"]

#: Seconds a collective phase may wait for the other ranks (``export(timeout=...)``).
DEFAULT_TIMEOUT = 300.0
_CHUNK = 64 << 20


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return None
    return DTensor


def _is_dtensor(t: Any) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def applies(gm: Any) -> bool:
    """Whether ``fxlower.export(gm, ...)`` is a collective export: torch.distributed is initialised and ``gm`` is an
    ``nn.Module`` with at least one DTensor parameter or buffer."""
    if not isinstance(gm, torch.nn.Module):
        return False
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    return any(_is_dtensor(t) for t in itertools.chain(gm.parameters(), gm.buffers()))


# ------------------------------------------------------------------------------------------------ placements

def _slice(shape: Sequence[int], placement: Placement, coord: Sequence[int]) -> list[tuple[int, int]]:
    """Index range per tensor dimension of mesh coordinate ``coord`` (docs/format.md, placement rule)."""
    ranges = [(0, int(s)) for s in shape]
    for m, dim, c in zip(placement.mesh, placement.dims, coord):
        if dim.kind != "shard":
            continue
        a, b = ranges[dim.dim]
        length = b - a
        s = -(-length // m) if length else 0
        ranges[dim.dim] = (a + min(c * s, length), a + min((c + 1) * s, length))
    return ranges


def _runs(shape: Sequence[int], ranges: Sequence[tuple[int, int]], itemsize: int):
    """``(offset in the full tensor's bytes, length)`` of each contiguous run of the slice ``ranges``, in the
    slice's row-major order (the order of a contiguous local shard's bytes)."""
    shape = [int(s) for s in shape]
    if any(b <= a for a, b in ranges) and shape:
        return
    k = -1
    for d in range(len(shape)):
        if ranges[d] != (0, shape[d]):
            k = d
    strides = [itemsize * math.prod(shape[d + 1:]) for d in range(len(shape))]
    if k < 0:
        yield 0, itemsize * math.prod(shape)
        return
    length = (ranges[k][1] - ranges[k][0]) * strides[k]
    start_k = ranges[k][0] * strides[k]
    for outer in itertools.product(*(range(a, b) for a, b in ranges[:k])):
        yield start_k + sum(i * s for i, s in zip(outer, strides)), length


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (one run of a shard)."""
    while len(data):
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


# ------------------------------------------------------------------------------------------------ the table

class _PlacedTable(_w._TensorTable):
    """The writer's tensor table over DTensors: dtype and shape are global, a DTensor's alias group is the DTensor
    object (tied weights are one Parameter), and each placed name carries its Placement."""

    def code(self, t: torch.Tensor, where: str) -> str:
        return _code(t, where)

    def alias_key(self, t: torch.Tensor) -> tuple | None:
        return ("dtensor", id(t)) if _is_dtensor(t) else _w._alias_key(t)


def _code(t: torch.Tensor, where: str) -> str:
    if not _is_dtensor(t):
        return storage_code(t, where)
    code = CODE_OF_DTYPE.get(t.dtype)
    if code is None or code not in STORAGE_DTYPES:
        raise ExportError(f"{where} has dtype {t.dtype}, which format v1 cannot store (storage dtypes: "
                          f"{', '.join(STORAGE_DTYPES)})")
    storage_code(t.to_local(), f"{where} (its local shard)")
    return code


@dataclasses.dataclass(frozen=True)
class _Piece:
    """What this rank writes of one stored tensor: its local bytes' source and the byte runs in the file."""

    key: str
    local: torch.Tensor
    offset: int  # the tensor's first byte in its file
    runs: tuple  # (offset in the tensor's bytes, length), in local order
    file: str


# ------------------------------------------------------------------------------------------------ phases

class _Group:
    """A gloo group over every rank of the default group, with the export's timeout, and the status exchange."""

    def __init__(self, timeout: float):
        dist = torch.distributed
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.timeout = timeout
        self.pg = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))

    def exchange(self, phase: str, status: tuple[str, Any]) -> list[Any]:
        """Every rank's payload for ``phase``; ExportError if any rank failed (naming each failing rank and its
        message) or a peer is gone (closed connection or ``timeout`` seconds without an answer)."""
        got: list[Any] = [None] * self.world
        try:
            torch.distributed.all_gather_object(got, status, group=self.pg)
        except Exception as e:
            raise ExportError(f"collective export, phase {phase}: rank {self.rank} lost contact with the other "
                              f"ranks ({_short(e)}): a rank died, or did not reach this phase within "
                              f"{self.timeout:g} s (export's timeout=). Nothing was published") from e
        failed = [(r, s[1]) for r, s in enumerate(got) if s[0] != "ok"]
        if failed:
            text = "; ".join(f"rank {r}: {msg}" for r, msg in failed)
            raise ExportError(f"collective export failed in phase {phase} on {text}. Nothing was published")
        return [s[1] for s in got]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            torch.distributed.destroy_process_group(self.pg)


def _short(e: BaseException) -> str:
    """The first sentence of a transport error, without gloo's source-location prefix."""
    lines = str(e).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\] ", "", lines[0]) if lines else ""
    return text.split(". ")[0] or type(e).__name__


def _status(fn: Callable[[], Any]) -> tuple[tuple[str, Any], BaseException | None]:
    try:
        return ("ok", fn()), None
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}"), e


def _check_timeout(timeout: Any) -> float:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


@contextlib.contextmanager
def _original_classes(root: torch.nn.Module):
    """FSDP2's ``fully_shard`` swaps each module's class for ``FSDP<Name>(FSDPModule, <Name>)``; while tracing and
    lifting, every such module is its original class again (a leaf stays a leaf with its own rule, and the graph
    and records are the full model's). Restored on exit."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        yield
        return
    swapped = []
    try:
        for m in root.modules():
            cls = type(m)
            if isinstance(m, FSDPModule) and len(cls.__bases__) == 2 and cls.__bases__[0] is FSDPModule:
                m.__class__ = cls.__bases__[1]
                swapped.append((m, cls))
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def _trace(module: torch.nn.Module) -> fx.GraphModule:
    """The module's graph, traced without running any submodule's hooks: tensor-parallel and FSDP2 hooks
    redistribute values at run time, while the graph is the full model's."""
    class _NoHooks(fx.Tracer):
        def call_module(self, m, forward, args, kwargs):
            if not self.is_leaf_module(m, self.path_of_module(m)):
                forward = m.forward
            return super().call_module(m, forward, args, kwargs)
    name = f"{type(module).__module__}.{type(module).__qualname__}"
    try:
        graph = _NoHooks().trace(module)
    except Exception as e:
        raise ExportError(f"export traces an nn.Module with torch.fx, which failed on {name}: "
                          f"{type(e).__name__}: {e}. Trace it yourself and pass the GraphModule") from e
    return fx.GraphModule(module, graph, type(module).__name__)


def export(gm: torch.nn.Module, path: str | os.PathLike, example_inputs: tuple | None = None, *,
           example_kwargs: dict | None = None, core: bool = False, golden: bool | str = False,
           overwrite: bool = False, max_shard_bytes: int | None = None,
           timeout: float | None = None) -> _w.ExportSummary:
    """The collective export (see the module docstring); called by ``fxlower.export`` on every rank."""
    timeout = _check_timeout(timeout)
    if golden:
        raise ValueError("golden= is not supported by a collective export (golden data would need the full "
                         "model's outputs on one rank); export with golden=False, or export the full model in one "
                         "process for golden data")
    if core:
        raise ValueError("core=True is not supported by a collective export (torch.export does not take DTensor "
                         "parameters); export the module view, or the full model in one process for the core view")
    if example_inputs is not None or example_kwargs is not None:
        raise ValueError("example_inputs are not supported by a collective export (running them would give each "
                         "rank's local shapes, not the full model's); export without them (shapes recorded by an "
                         "earlier ShapeProp / fake-tensor trace in node.meta are still written)")
    if max_shard_bytes is not None:
        plan_files([], WEIGHTS_FILE, max_shard_bytes)  # validates it (ValueError) before any collective
    target = os.path.abspath(os.fspath(path))
    group = _Group(timeout)
    try:
        return _run(group, gm, target, overwrite, max_shard_bytes)
    finally:
        group.close()


def _run(group: _Group, gm: torch.nn.Module, target: str, overwrite: bool,
         max_shard_bytes: int | None) -> _w.ExportSummary:
    rank = group.rank
    state: dict[str, Any] = {"tmp": None, "lock": None}
    p: dict[str, Any] = {}
    try:
        # --- PLAN
        def plan():
            p.update(_plan(gm, max_shard_bytes, rank))
            out = {"fingerprint": p["fingerprint"], "tmp": None, "removed": ()}
            if rank == 0:
                parent, base = os.path.split(target)
                if os.path.lexists(target) and (not overwrite or not _w._is_replaceable(target)):
                    raise _w._exists_error(target, during=False)
                out["removed"] = tuple(_w.remove_orphaned_temporaries(target)) if os.path.isdir(parent) else ()
                try:
                    state["tmp"], state["lock"] = _w._make_temporary(parent, base)
                except OSError as e:
                    raise ExportError(f"cannot create the temporary directory in {parent}: {e.strerror} "
                                      f"(errno {e.errno})") from e
                out["tmp"] = state["tmp"]
            return out
        got = _exchange(group, "plan", *_status(plan))
        state["tmp"] = got[0]["tmp"]
        fingerprints = {g["fingerprint"] for g in got}
        if len(fingerprints) != 1:
            differ = [r for r, g in enumerate(got) if g["fingerprint"] != got[0]["fingerprint"]]
            raise ExportError(f"collective export: ranks {differ} traced a different graph or tensor table than "
                              f"rank 0 (names, shapes, dtypes, placements or tied weights differ); every rank must "
                              f"export the same model. Nothing was published")
        removed = got[0]["removed"]
        tmp = state["tmp"]

        # --- CREATE
        def create():
            if rank == 0:
                for fp in p["plans"]:
                    _create(os.path.join(tmp, fp.path), fp)
        _exchange(group, "create", *_status(create))

        # --- WRITE
        def write():
            if not os.path.isdir(tmp):
                raise ExportError(f"rank {rank} cannot see the temporary directory {tmp}; the export path must be "
                                  f"on a file system every rank shares")
            _write_pieces(tmp, p["pieces"])
        _exchange(group, "write", *_status(write))

        # --- HASH
        def hash_mine():
            return {key: _hash_range(os.path.join(tmp, p["slot_file"][key]), slot.offset, slot.nbytes)
                    for key, slot in p["slots"].items() if p["hash_owner"][key] == rank}
        hashes: dict[str, str] = {}
        for part in _exchange(group, "hash", *_status(hash_mine)):
            hashes.update(part)

        # --- MANIFEST
        def manifest():
            if rank == 0:
                return _write_manifest(tmp, p, hashes)
            return None
        summary_fields = _exchange(group, "manifest", *_status(manifest))[0]

        # --- PUBLISH
        published = False

        def publish():
            nonlocal published
            if rank == 0:
                _w._publish(tmp, target, overwrite)
                published = True
                _w._fsync_dir(os.path.dirname(target))
        summary = _w.ExportSummary(path=target, removed_temporaries=removed, **summary_fields)
        try:
            _exchange(group, "publish", *_status(publish))
        except ExportError as e:
            if published:
                return summary  # complete and in place; only the other ranks' confirmation was lost
            if rank != 0:
                raise ExportError(f"{e} by this rank; rank 0 may have published {target} before contact was lost: look "
                                  f"there, or export again") from e.__cause__
            raise
        return summary
    finally:
        try:
            if state["tmp"] is not None:
                with contextlib.suppress(FileNotFoundError):
                    _w._rmtree(state["tmp"])
        finally:
            if state["lock"] is not None:
                os.close(state["lock"])


def _exchange(group: _Group, phase: str, status: tuple[str, Any], err: BaseException | None) -> list[Any]:
    """The phase's exchange; this rank's own exception, if any, is the cause of the ExportError."""
    try:
        return group.exchange(phase, status)
    except ExportError as e:
        if err is not None:
            raise e from err
        raise


def _plan(gm: torch.nn.Module, max_shard_bytes: int | None, rank: int) -> dict[str, Any]:
    """Everything this rank needs, computed the same on every rank: the encoded program, the table, the file plan,
    the placements, the hash assignment, and this rank's own pieces."""
    with _original_classes(gm):
        if not isinstance(gm, fx.GraphModule):
            gm = _trace(gm)
        program = _w._Program(gm, None, False)
        program.table = _PlacedTable()
        try:
            program.collect()
        except UnsupportedModuleError as e:
            raise UnsupportedModuleError(_w._unsupported_for_export(e.unsupported), e.unsupported) from e
        graphs, signature, _ = program.encode_program()
        modules, functions, methods = program.declarations()
    table: _PlacedTable = program.table
    keys = table.keys()
    placements: dict[str, Placement] = {}
    for name, (t, _) in table.tensors.items():
        if _is_dtensor(t):
            mesh = t.device_mesh
            placements[name] = _w.placement_of(tuple(mesh.shape), tuple(t.placements), f"tensor '{name}'",
                                               names=mesh.mesh_dim_names, shape=t.shape, error=ExportError)
    stored = {n: t for n, (t, role) in table.tensors.items() if keys[n] == n}
    items = [(n, _code(t, n), tuple(int(s) for s in t.shape)) for n, t in stored.items()]
    plans = plan_files(items, WEIGHTS_FILE, max_shard_bytes)
    slots = {s.key: s for fp in plans for s in fp.slots}
    slot_file = {s.key: fp.path for fp in plans for s in fp.slots}
    # hashing: largest first to the least-loaded rank (ties: lowest rank); the same on every rank
    world = torch.distributed.get_world_size()
    load = [0] * world
    hash_owner = {}
    for s in sorted(slots.values(), key=lambda s: (-s.nbytes, s.key)):
        r = min(range(world), key=lambda i: (load[i], i))
        hash_owner[s.key] = r
        load[r] += s.nbytes
    pieces = []
    for key, t in sorted(stored.items()):
        slot = slots[key]
        if _is_dtensor(t):
            coord = t.device_mesh.get_coordinate()
            pl = placements[key]
            if coord is None or any(d.kind == "replicate" and c != 0 for d, c in zip(pl.dims, coord)):
                continue
            ranges = _slice(t.shape, pl, coord)
            local = t.to_local()
            want = tuple(b - a for a, b in ranges)
            if tuple(local.shape) != want:
                raise ExportError(f"tensor '{key}': this rank's local shard has shape {tuple(local.shape)}, but its "
                                  f"placement {t.placements} at mesh coordinate {tuple(coord)} of {tuple(t.shape)} "
                                  f"gives {want} (torch.chunk's rule); uneven shards are not supported")
        else:
            if rank != 0:
                continue
            ranges = [(0, int(s)) for s in t.shape]
            local = t
        runs = tuple(_runs(t.shape, ranges, STORAGE_DTYPES[slot.code][1]))
        if runs:
            pieces.append(_Piece(key=key, local=local, offset=slot.offset, runs=runs, file=slot_file[key]))
    packed = {"graphs": _w._pack(to_obj(graphs)), "signature": _w._pack(to_obj(signature))}
    fp_hash = hashlib.sha256(packed["graphs"] + packed["signature"])
    fp_hash.update(repr(sorted((n, keys[n], _code(t, n), tuple(t.shape), placements.get(n))
                               for n, (t, _) in table.tensors.items())).encode())
    fp_hash.update(repr(plans).encode())
    return {"program": program, "graphs": graphs, "signature": signature, "modules": modules,
            "functions": functions, "methods": methods, "table": table, "placements": placements, "plans": plans,
            "slots": slots, "slot_file": slot_file, "hash_owner": hash_owner, "pieces": pieces, "packed": packed,
            "fingerprint": fp_hash.hexdigest()}


def _create(path: str, fp: FilePlan) -> None:
    """Rank 0: the file at its final size, with its header; the data bytes are filled in by the ranks."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        _pwrite(fd, memoryview(fp.prefix), 0)
        os.ftruncate(fd, fp.size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_pieces(tmp: str, pieces: list[_Piece]) -> None:
    fds: dict[str, int] = {}
    try:
        for piece in pieces:
            if piece.file not in fds:
                fds[piece.file] = os.open(os.path.join(tmp, piece.file), os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            fd = fds[piece.file]
            buf = tensor_bytes(piece.local)  # a view of a contiguous CPU shard; else a copy of this shard only
            pos = 0
            for off, length in piece.runs:
                _pwrite(fd, buf[pos:pos + length], piece.offset + off)
                pos += length
            del buf
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)


def _hash_range(path: str, offset: int, nbytes: int) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        end = offset + nbytes
        while offset < end:
            data = os.pread(fd, min(_CHUNK, end - offset), offset)
            if not data:
                raise ExportError(f"{path} ended at byte {offset} while hashing; expected {end} bytes")
            h.update(data)
            offset += len(data)
    finally:
        os.close(fd)
    return h.hexdigest()


def _write_manifest(tmp: str, p: dict[str, Any], hashes: dict[str, str]) -> dict[str, Any]:
    """Rank 0: the manifest, as the single-process writer builds it; returns the summary's fields."""
    from .. import __version__
    table: _PlacedTable = p["table"]
    role_of = {n: role for n, (_, role) in table.tensors.items()}  # a stored key is the name of a tensor
    tensors = table.entries({(role_of[k], k): h for k, h in hashes.items()},
                            {(role_of[k], k): f for k, f in p["slot_file"].items()}, p["placements"])
    packed = p["packed"]
    manifest = Manifest(
        format=FORMAT_ID,
        format_version=list(FORMAT_VERSION),
        producer=Producer(name="fxlower", version=__version__, torch=torch.__version__),
        files=[FileEntry(path=fp.path, role=ROLE_WEIGHTS) for fp in p["plans"]],
        tensors=tensors,
        graphs=p["graphs"],
        signature=p["signature"],
        golden=None,
        digest=_w._digest(packed["graphs"], tensors, packed["signature"]),
        modules=p["modules"],
        functions=p["functions"],
        methods=p["methods"],
        core=None,
    )
    data = _w.pack_manifest(manifest, packed)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ExportError(f"the manifest would be {len(data)} bytes, over the format's limit of "
                          f"{MAX_MANIFEST_BYTES}; readers would refuse it")
    _, size = _w._write_file(tmp, MANIFEST_FILE, lambda fd: _w._write_all(fd, memoryview(data)))
    _w._fsync_dir(tmp)
    total = size + sum(fp.size for fp in p["plans"])
    return {"nodes": sum(len(g.nodes) for g in p["graphs"]), "graphs": len(p["graphs"]), "tensors": len(tensors),
            "bytes_written": total, "digest": manifest.digest, "weights_files": len(p["plans"])}
