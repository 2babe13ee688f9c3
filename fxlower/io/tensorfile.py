"""safetensors files: a streaming, hashing writer, a strict header check, and tensors read through the
safetensors library (docs/format.md section 5).

The writer stores each tensor from its own memory (a contiguous CPU tensor is never copied; a non-contiguous or
CUDA one is copied alone), hashes it with SHA-256 on a second thread while it is being written, and orders tensors
by item size then key so that every tensor is aligned to its item size in the file.

Reading: :class:`TensorFile` checks the header strictly first, keeps the descriptor it checked, and then serves
tensors through ``safetensors.safe_open`` on that very descriptor (``/proc/self/fd/N``): zero-copy, private
mappings.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import hashlib
import json
import os
import struct
import sys
import typing
from collections.abc import Callable, Iterable

import torch

from ..format.constants import (CODE_OF_DTYPE, MAX_SAFETENSORS_HEADER, SAFETENSORS_ALIGN, STORAGE_DTYPES,
                        WEIGHTS_SHARD_FILE)
from ..errors import ExportError, FormatError
from ..format.names import check_name
from ..format.values import INT64_MAX, check_shape

__all__ = ["StoredTensor", "Slot", "FilePlan", "plan_files", "TensorSource", "write_file_plan", "write_tensor_file",
           "read_header", "tensor_bytes", "storage_code"]

_CHUNK = 64 << 20
_INLINE_HASH = 1 << 20
_MAX_JSON_DEPTH = 128
_SWAP_DTYPE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors header; ``begin``/``end`` are absolute file offsets."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def storage_code(t: torch.Tensor, where: str, *, meta_ok: bool = False) -> str:
    """The storage dtype code of a tensor fxlower can store, or ExportError naming what it is. ``meta_ok``: a
    meta tensor is accepted (its bytes come from a checkpoint, ``export(weights_from=)``)."""
    kind = None
    if t.is_sparse or t.layout != torch.strided:
        kind = f"a sparse tensor (layout {t.layout})"
    elif t.is_quantized:
        kind = "a quantized tensor"
    elif t.is_nested:
        kind = "a nested tensor"
    elif t.device.type == "meta" and not meta_ok:
        kind = "a meta tensor (it has no data)"
    elif type(t) not in (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer):
        kind = f"a tensor subclass {type(t).__module__}.{type(t).__qualname__}"
    if kind is not None:
        raise ExportError(f"{where} is {kind}; format v1 stores dense strided tensors only. Convert it "
                          f"(e.g. .to_dense(), .dequantize(), a real tensor) before export")
    code = CODE_OF_DTYPE.get(t.dtype)
    if code is None or code not in STORAGE_DTYPES:
        raise ExportError(f"{where} has dtype {t.dtype}, which format v1 cannot store (storage dtypes: "
                          f"{', '.join(STORAGE_DTYPES)})")
    return code


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's elements, row-major and little-endian, as a byte view.

    A contiguous CPU tensor is viewed in place; otherwise only this tensor is copied.
    """
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    flat = t.reshape(-1)
    if sys.byteorder == "big" and flat.element_size() > 1:
        flat = torch.from_numpy(flat.view(_SWAP_DTYPE[flat.element_size()]).numpy().byteswap())
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def _header(items: list[tuple[str, str, tuple[int, ...]]]) -> bytes:
    """Header bytes, padded with spaces so the data starts at a multiple of 8, for items already in file order."""
    header: dict[str, object] = {}
    pos = 0
    for key, code, shape in items:
        n = STORAGE_DTYPES[code][1]
        for d in shape:
            n *= d
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pad = (-(8 + len(raw))) % SAFETENSORS_ALIGN
    return raw + b" " * pad


def _nbytes(code: str, shape: tuple[int, ...]) -> int:
    n = STORAGE_DTYPES[code][1]
    for d in shape:
        n *= d
    return n


def file_order(items: Iterable[tuple[str, str, tuple[int, ...]]]) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(key, storage code, shape)`` items in the order writers store them: item size, largest first, then key."""
    return sorted(items, key=lambda e: (-STORAGE_DTYPES[e[1]][1], e[0]))


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one tensor goes in a planned file: ``offset`` is the absolute file offset of its first byte."""

    key: str
    code: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """One safetensors file before any tensor byte is written: its name, the 8-byte length plus the padded JSON
    header (``prefix``), each tensor's slot in file order, and the file's final size."""

    path: str
    prefix: bytes
    slots: tuple[Slot, ...]
    size: int


def plan_files(items: Iterable[tuple[str, str, tuple[int, ...]]], path: str,
               max_shard_bytes: int | None = None) -> list[FilePlan]:
    """Lay ``(key, storage code, shape)`` items out over one file named ``path``, or, with ``max_shard_bytes``,
    over as few shards as the rule of docs/format.md section 5.1 gives (format 1.3):

    walk the items in file order (:func:`file_order`); a tensor starts a new shard when the current shard already
    holds a tensor and its data would grow past ``max_shard_bytes``. A tensor larger than the limit is alone in its
    shard. With one shard the file is ``path``; with ``n > 1`` shard ``i`` is ``WEIGHTS_SHARD_FILE`` (1-based).
    Deterministic: the same items and limit give the same plans, byte for byte.
    """
    if max_shard_bytes is not None and (isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int)
                                        or max_shard_bytes < 1):
        raise ValueError(f"max_shard_bytes must be a positive int (bytes of tensor data per file) or None, got "
                         f"{max_shard_bytes!r}")
    groups: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    used = 0
    for item in file_order(items):
        n = _nbytes(item[1], item[2])
        if max_shard_bytes is not None and groups[-1] and used + n > max_shard_bytes:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += n
    plans = []
    for i, group in enumerate(groups):
        name = path if len(groups) == 1 else WEIGHTS_SHARD_FILE.format(i=i + 1, n=len(groups))
        header = _header(group)
        pos = 8 + len(header)
        slots = []
        for key, code, shape in group:
            n = _nbytes(code, shape)
            slots.append(Slot(key=key, code=code, shape=tuple(shape), offset=pos, nbytes=n))
            pos += n
        plans.append(FilePlan(path=name, prefix=struct.pack("<Q", len(header)) + header, slots=tuple(slots),
                              size=pos))
    return plans


def _write_all(fd: int, data: memoryview) -> None:
    view = data
    while len(view):
        n = os.write(fd, view[:_CHUNK])
        view = view[n:]


_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux/glibc: writeback simply starts at fsync
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return fn


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` to disk now (Linux ``sync_file_range``),
    so the disk works while later tensors are copied; the final fsync still decides durability. A no-op where
    unavailable or refused."""
    if _sync_file_range is not None and length:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _sha256(buf: memoryview) -> str:
    h = hashlib.sha256()
    for i in range(0, len(buf), _CHUNK):
        h.update(buf[i:i + _CHUNK])
    return h.hexdigest()


def _needs_copy(t: torch.Tensor) -> bool:
    """Whether :func:`tensor_bytes` must copy ``t`` (it views contiguous little-endian CPU tensors in place)."""
    return (t.device.type != "cpu" or not t.is_contiguous() or t.is_conj() or t.is_neg()
            or (sys.byteorder == "big" and t.element_size() > 1))


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    view = data
    while len(view):
        n = os.pwrite(fd, view[:_CHUNK], offset)
        view = view[n:]
        offset += n


@typing.runtime_checkable
class TensorSource(typing.Protocol):
    """A tensor's bytes that are not a ``torch.Tensor`` in memory (e.g. a range of a checkpoint file): ``nbytes``
    stored bytes (row-major, little-endian), which ``write_into(fd, offset)`` writes at ``offset`` of ``fd``
    (pwrite, copy_file_range, ...), returning the SHA-256 hex digest of exactly those bytes."""

    nbytes: int

    def write_into(self, fd: int, offset: int) -> str: ...


def write_file_plan(fd: int, plan: FilePlan, fetch: Callable[[Slot], "torch.Tensor | TensorSource"],
                    on_progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """Write one planned safetensors file (:func:`plan_files`) to ``fd``, fsync it, and return ``{key: sha256}``.

    The prefix (length and header) is written first, then each slot at its offset in file order; ``fetch(slot)``
    is called once per slot, in that order, right before the slot is written, and returns a ``torch.Tensor`` of the
    slot's dtype and shape or a :class:`TensorSource` of ``slot.nbytes`` bytes. Tensors: the writing thread never
    waits for hashing (SHA-256 runs on two other threads; tensors under 1 MiB are hashed inline, where a hand-off
    would cost more); only a tensor that must be copied to the host (CUDA, non-contiguous) waits for the previous
    copy's hash, so at most one host copy exists at a time. Writeback to disk is started after every 64 MiB written
    (``sync_file_range``), and the fsync comes as soon as the last byte is written, while hashes may still run.
    ``on_progress`` is called as ``on_progress(nbytes, 0)`` after each piece of at most 64 MiB is written and
    ``on_progress(0, 1)`` after each tensor (fxlower.io.progress); it does not change what is written.

    Raises:
        ExportError: a value does not match its slot (dtype, shape or size) or cannot be stored; OSError from
            writing or syncing propagates.
    """
    _pwrite_all(fd, memoryview(plan.prefix), 0)
    hashes: dict[str, str] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="fxlower-hash") as pool:
        pending: dict[str, concurrent.futures.Future] = {}
        copy_hash: concurrent.futures.Future | None = None
        for slot in plan.slots:
            value = fetch(slot)
            if not isinstance(value, torch.Tensor):
                if not isinstance(value, TensorSource) or value.nbytes != slot.nbytes:
                    raise ExportError(f"tensor '{slot.key}' needs {slot.nbytes} bytes ({slot.code}"
                                      f"{list(slot.shape)}); its source gives "
                                      f"{getattr(value, 'nbytes', type(value).__qualname__)}")
                hashes[slot.key] = value.write_into(fd, slot.offset)
                _start_writeback(fd, slot.offset, slot.nbytes)
                if on_progress is not None:
                    on_progress(slot.nbytes, 1)
                continue
            code = storage_code(value, f"tensor '{slot.key}'")
            if code != slot.code or tuple(int(s) for s in value.shape) != slot.shape:
                raise ExportError(f"tensor '{slot.key}' is {code}{list(value.shape)} but its slot in {plan.path} is "
                                  f"{slot.code}{list(slot.shape)}")
            copied = _needs_copy(value)
            if copied and copy_hash is not None:
                copy_hash.result()  # the previous host copy is released once hashed and written
            buf = tensor_bytes(value)
            if len(buf) < _INLINE_HASH:
                hashes[slot.key] = _sha256(buf)
            else:
                pending[slot.key] = pool.submit(_sha256, buf)
                if copied:
                    copy_hash = pending[slot.key]
            pos = slot.offset
            for start in range(0, len(buf), _CHUNK):
                piece = buf[start:start + _CHUNK]
                _pwrite_all(fd, piece, pos)
                _start_writeback(fd, pos, len(piece))
                pos += len(piece)
                if on_progress is not None:
                    on_progress(len(piece), 0)
            del buf, value
            if on_progress is not None:
                on_progress(0, 1)
        size = os.fstat(fd).st_size
        if size != plan.size:
            raise ExportError(f"{plan.path} is {size} bytes after writing, but its plan says {plan.size} (a tensor "
                              f"source wrote past or short of its slot)")
        os.fsync(fd)
        hashes.update({k: f.result() for k, f in pending.items()})
    return hashes


# Not safetensors.serialize_file: it needs all tensors in host memory at once, writes a path (0600, no fsync), no hash.
def write_tensor_file(fd: int, tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, str]:
    """Write a safetensors file of ``(key, tensor)`` pairs (keys unique) to ``fd``, fsync it, and return
    ``{key: sha256 hex}``: one unsharded :func:`plan_files` plan written by :func:`write_file_plan`.

    Raises:
        ExportError: a tensor cannot be stored (kind or dtype); OSError from writing or syncing propagates.
    """
    by_key = {}
    items = []
    for key, t in tensors:
        items.append((key, storage_code(t, f"tensor '{key}'"), tuple(int(s) for s in t.shape)))
        by_key[key] = t
    (plan,) = plan_files(items, "")
    return write_file_plan(fd, plan, lambda slot: by_key[slot.key])


# ------------------------------------------------------------------------------------------------ reading

def _json_depth_ok(raw: bytes) -> bool:
    depth = 0
    in_str = False
    escape = False
    for b in raw:
        if in_str:
            if escape:
                escape = False
            elif b == 0x5C:
                escape = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x7B, 0x5B):
            depth += 1
            if depth > _MAX_JSON_DEPTH:
                return False
        elif b in (0x7D, 0x5D):
            depth -= 1
    return True


# Not the library's parser: it accepts duplicate keys, leading whitespace, unaligned data, any key (RELIABILITY.md).
def unique_keys(error: Callable[[str], BaseException]) -> Callable[[list], dict]:
    """A ``json.loads`` ``object_pairs_hook`` that builds each object and raises ``error(key)`` for a key that one
    object holds twice."""
    def hook(pairs: list) -> dict:
        out = {}
        for k, v in pairs:
            if k in out:
                raise error(k)
            out[k] = v
        return out
    return hook


def read_header(f, file_size: int, where: str) -> dict[str, StoredTensor]:
    """Read and validate a safetensors header (docs/format.md section 5).

    Args:
        f: a binary file object positioned at 0.
        file_size: the file's size from ``fstat``.
        where: the file's name, for messages.

    Returns:
        key -> StoredTensor with absolute offsets, in header order.

    Raises:
        FormatError: "safetensors.header", "safetensors.layout", "schema.name", "tensor.dtype", "tensor.shape".
    """
    def bad(msg: str, code: str = "safetensors.header") -> FormatError:
        return FormatError(code, msg, where)

    if file_size < 8:
        raise bad(f"file of {file_size} bytes is shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_SAFETENSORS_HEADER or n > file_size - 8:
        raise bad(f"header length {n} exceeds the limit {MAX_SAFETENSORS_HEADER} or the file size {file_size}")
    raw = f.read(n)
    if len(raw) != n:
        raise bad(f"file ended inside the {n}-byte header")
    if not raw.startswith(b"{"):
        raise bad("header does not start with '{' (leading whitespace or not a JSON object)")
    body = raw.rstrip(b" ")
    if not body.endswith(b"}"):
        raise bad("the header's JSON object must be followed by spaces only")
    if not _json_depth_ok(body):
        raise bad(f"header JSON nests deeper than {_MAX_JSON_DEPTH}")

    no_dups = unique_keys(lambda k: bad(f"header has the key {k!r:.80} twice"))
    try:
        text = body.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=no_dups, parse_constant=lambda c: _reject_constant(c, where))
    except FormatError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"header is not one valid UTF-8 JSON object followed by spaces ({e})") from None
    if type(obj) is not dict:
        raise bad("header is not a JSON object")
    data_start = 8 + n
    if data_start % SAFETENSORS_ALIGN:
        raise bad(f"data section starts at byte {data_start}, not a multiple of {SAFETENSORS_ALIGN}",
                  "safetensors.layout")
    entries: dict[str, StoredTensor] = {}
    for key, info in obj.items():
        _check_utf8(key, where)
        if key == "__metadata__":
            if type(info) is not dict or any(type(v) is not str for v in info.values()):
                raise bad("__metadata__ is not a map of str to str")
            for k, v in info.items():
                _check_utf8(k, where)
                _check_utf8(v, where)
            continue
        check_name(key, f"{where}: key")
        if type(info) is not dict or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {key!r:.80} must have exactly dtype, shape and data_offsets")
        code, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if type(code) is not str or code not in STORAGE_DTYPES:
            raise FormatError("tensor.dtype", f"tensor {key!r:.80} has unknown dtype {code!r:.40}", where)
        count = check_shape(shape, f"{where}: tensor {key!r:.80}", STORAGE_DTYPES[code][1])
        if (type(offs) is not list or len(offs) != 2 or any(type(x) is not int for x in offs)
                or not 0 <= offs[0] <= offs[1] <= INT64_MAX):
            raise bad(f"tensor {key!r:.80} data_offsets is not [begin, end] with 0 <= begin <= end")
        size = STORAGE_DTYPES[code][1]
        if offs[1] - offs[0] != count * size:
            raise bad(f"tensor {key!r:.80} spans {offs[1] - offs[0]} bytes but {code}{shape} needs {count * size}",
                      "safetensors.layout")
        entries[key] = StoredTensor(key, code, tuple(shape), data_start + offs[0], data_start + offs[1])
    pos = data_start
    for e in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            raise bad(f"tensor {e.key!r:.80} starts at data offset {e.begin - data_start}, expected "
                      f"{pos - data_start} (gap or overlap)", "safetensors.layout")
        if e.begin % STORAGE_DTYPES[e.dtype][1]:
            raise bad(f"tensor {e.key!r:.80} at file offset {e.begin} is not aligned to its item size",
                      "safetensors.layout")
        pos = e.end
    if pos != file_size:
        raise bad(f"tensors end at byte {pos} but the file has {file_size} bytes (truncated or trailing data)",
                  "safetensors.layout")
    return entries


def _check_utf8(text: str, where: str) -> None:
    """JSON ``\\ud800`` escapes decode to lone surrogates, which are not Unicode text (not UTF-8 encodable)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("safetensors.header", f"header string {text!r:.60} holds a lone surrogate escape",
                          where) from None


def _reject_constant(name: str, where: str):
    raise FormatError("safetensors.header", f"header contains the non-JSON constant {name}", where)
