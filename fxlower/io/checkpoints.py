"""Checkpoints as a source of tensor bytes: export without materialising (``export(..., weights_from=SRC)``).

One job: index the tensors of a safetensors checkpoint — one file, a directory of files, or a Hugging Face hub
index (``*.safetensors.index.json``: ``{"metadata": {...}, "weight_map": {name: file}}``) — by name, with each
tensor's file, absolute byte range, dtype code and shape, and serve a tensor's bytes as a *source* for the writer:
an object with ``nbytes`` and ``write_into(fd, offset) -> sha256 hex``.

A source streams with bounded memory: the bytes go from the checkpoint file to the artifact file by
``os.copy_file_range`` in 64 MiB chunks (in the kernel; a reflink where the file system shares extents), while a
second thread reads the same range with ``preadv`` into one reused 64 MiB buffer and hashes it. Where
``copy_file_range`` is refused (``EXDEV``, ``ENOSYS``, ``EINVAL``, ``EOPNOTSUPP``, or no such call) the rest is
copied with ``pread``/``pwrite`` through a second buffer. So a tensor costs at most two 64 MiB buffers, whatever
its size.

The hash is of the bytes read from the checkpoint. A checkpoint file rewritten in place during the export could
make the copy differ from what was hashed; ``fxlower.load(path, verify=True)`` would then refuse the artifact.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import os
import stat
import threading

from ..errors import CheckpointMismatchError, ExportError
from .tensorfile import StoredTensor, _start_writeback, read_header, unique_keys

__all__ = ["CheckpointTensor", "Checkpoint", "CheckpointSource", "open_checkpoint", "INDEX_SUFFIX"]

INDEX_SUFFIX = ".safetensors.index.json"
_SUFFIX = ".safetensors"
_CHUNK = 64 << 20
_MAX_INDEX_BYTES = 64 << 20
#: How far (bytes of tensors) the hashing threads may run ahead of the copy.
_AHEAD_BYTES = 1 << 30
_FALLBACK_ERRNOS = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP,
                              errno.EBADF})


@dataclasses.dataclass(frozen=True)
class CheckpointTensor:
    """One tensor of a checkpoint: ``file`` is the path as found, ``begin``/``end`` absolute offsets in it."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class Checkpoint:
    """The indexed tensors of a checkpoint, with the files whose headers were checked kept open.

    Use :func:`open_checkpoint`; close it (or use it as a context manager) when the export is done.
    """

    def __init__(self, source: str, tensors: dict[str, CheckpointTensor], files: dict[str, object]):
        self.source = source
        self.tensors = tensors
        self._files = files  # path -> open binary file object (the very descriptor read_header checked)
        self.copy_file_range = hasattr(os, "copy_file_range")  # False once the kernel refused it
        # Hashing threads that live for the whole export, each with one reused buffer: a thread start or a fresh
        # 64 MiB buffer (zeroed, page-faulted) per tensor costs more than copying a small tensor.
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._workers = 1
        self._queue: collections.deque[CheckpointSource] = collections.deque()  # to hash, in write order
        self._ahead: set[CheckpointSource] = set()  # hashing or hashed, not yet copied

    def _buffer(self, role: str, size: int) -> memoryview:
        """This thread's reused buffer for ``role`` ("hash" or "copy"), at least ``size`` bytes."""
        buf = getattr(self._local, role, None)
        if buf is None or len(buf) < size:
            buf = bytearray(size)
            setattr(self._local, role, buf)
        return memoryview(buf)

    def _hash_pool(self, workers: int = 1) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                               thread_name_prefix="fxlower-ckpt-hash")
        return self._pool

    def hash_ahead(self, sources: list[CheckpointSource], workers: int | None = None) -> None:
        """Hash ``sources`` (in the order the writer will copy them) ahead of the copy on ``workers`` threads
        (default: one per CPU, at most 4), so that SHA-256, which costs more CPU than the in-kernel copy, runs on
        every core; each ``write_into`` then waits only for its own tensor's hash. The hashers run at most
        ``workers`` tensors or :data:`_AHEAD_BYTES` ahead of the copy, so the bytes they read are still in the page
        cache when the copy reads them. Memory: one 64 MiB buffer per worker."""
        if workers is None:
            workers = max(1, min(4, os.cpu_count() or 1))
        self._workers = workers
        self._hash_pool(workers)
        self._queue.extend(sources)
        self._top_up()

    def _top_up(self) -> None:
        while self._queue and (len(self._ahead) < self._workers
                               or sum(s.nbytes for s in self._ahead) + self._queue[0].nbytes <= _AHEAD_BYTES):
            src = self._queue.popleft()
            src._hashing = self._pool.submit(src._hash)
            self._ahead.add(src)

    def _copied(self, src: CheckpointSource) -> None:
        if src in self._ahead:
            self._ahead.discard(src)
            self._top_up()

    def source_of(self, name: str) -> CheckpointSource:
        e = self.tensors[name]
        return CheckpointSource(self, self._files[e.file].fileno(), e.begin, e.end - e.begin, e.file, name)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._local = threading.local()
        self._queue.clear()
        self._ahead.clear()
        files, self._files = self._files, {}
        for f in files.values():
            f.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CheckpointSource:
    """A checkpoint tensor's bytes, for the writer: ``nbytes`` and ``write_into(fd, offset) -> sha256 hex``."""

    def __init__(self, checkpoint: Checkpoint, fd: int, begin: int, nbytes: int, file: str, name: str):
        self._checkpoint = checkpoint
        self._fd = fd
        self.begin = begin
        self.nbytes = nbytes
        self.file = file
        self.name = name
        self._hashing: concurrent.futures.Future | None = None  # set by Checkpoint.hash_ahead

    def _short(self, got: int, at: int) -> ExportError:
        return ExportError(f"{self.file} ended at byte {at + got} inside tensor '{self.name}' (bytes "
                           f"{self.begin}..{self.begin + self.nbytes}): the file changed after its header was read; "
                           f"do not modify a checkpoint while exporting from it")

    def write_into(self, fd: int, offset: int) -> str:
        """Write this tensor's bytes at ``offset`` of ``fd`` (the file position is not used or moved) and return
        the SHA-256 hex digest of the bytes read from the checkpoint."""
        hashing = self._hashing or self._checkpoint._hash_pool().submit(self._hash)
        try:
            self._copy(fd, offset)
        except BaseException:
            concurrent.futures.wait([hashing])  # the copy's error wins; the hash thread is done with its buffer
            raise
        digest = hashing.result()
        self._checkpoint._copied(self)
        return digest

    def _hash(self) -> str:
        h = hashlib.sha256()
        view = self._checkpoint._buffer("hash", min(_CHUNK, self.nbytes))
        done = 0
        while done < self.nbytes:
            want = min(_CHUNK, self.nbytes - done)
            got = os.preadv(self._fd, [view[:want]], self.begin + done)
            if got <= 0:
                raise self._short(0, self.begin + done)
            h.update(view[:got])  # releases the GIL: the copy runs meanwhile
            done += got
        return h.hexdigest()

    def _copy(self, fd: int, offset: int) -> None:
        done = 0
        while done < self.nbytes and self._checkpoint.copy_file_range:
            want = min(_CHUNK, self.nbytes - done)
            try:
                got = os.copy_file_range(self._fd, fd, want, self.begin + done, offset + done)
            except OSError as e:
                if e.errno not in _FALLBACK_ERRNOS:
                    raise
                self._checkpoint.copy_file_range = False  # e.g. across file systems: pread/pwrite from now on
                break
            if got <= 0:
                raise self._short(0, self.begin + done)
            _start_writeback(fd, offset + done, got)
            done += got
        if done == self.nbytes:
            return
        view = self._checkpoint._buffer("copy", min(_CHUNK, self.nbytes - done))
        while done < self.nbytes:
            want = min(_CHUNK, self.nbytes - done)
            got = os.preadv(self._fd, [view[:want]], self.begin + done)
            if got <= 0:
                raise self._short(0, self.begin + done)
            piece = view[:got]
            while len(piece):
                n = os.pwrite(fd, piece, offset + done)
                piece = piece[n:]
                done += n
            _start_writeback(fd, offset + done - got, got)


# ------------------------------------------------------------------------------------------------ indexing

def open_checkpoint(src: str | os.PathLike) -> Checkpoint:
    """Index the tensors of ``src``: a ``.safetensors`` file, a directory (its ``*.safetensors.index.json`` if it
    holds one, else every ``*.safetensors`` file in it), or a ``*.safetensors.index.json``.

    Headers are read with fxlower's strict :func:`fxlower.io.tensorfile.read_header`, not ``safetensors.safe_open``:
    the library does not expose a tensor's byte offsets, which the copy needs, and accepts headers the format
    refuses (duplicate keys, gaps, unaligned data).

    Raises:
        FormatError: a checkpoint file's header is malformed (``where`` names the file).
        ExportError: ``src`` does not exist or holds no safetensors file; the index JSON is malformed, names a
            file outside its directory or that does not exist, or disagrees with a file's header; a tensor name
            is in two files.
    """
    src = os.fspath(src)
    if not os.path.exists(src):
        raise ExportError(f"weights_from={src!r} does not exist; give a .safetensors file, a directory of them, or "
                          f"a *{INDEX_SUFFIX} file")
    if os.path.isdir(src):
        names = sorted(os.listdir(src))
        indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
        if len(indexes) > 1:
            raise ExportError(f"weights_from={src!r} is a directory holding {len(indexes)} index files "
                              f"({', '.join(indexes)}); pass the one to use")
        if indexes:
            return _from_index(os.path.join(src, indexes[0]))
        files = [os.path.join(src, n) for n in names if n.endswith(_SUFFIX) and os.path.isfile(os.path.join(src, n))]
        if not files:
            raise ExportError(f"weights_from={src!r} is a directory without *{_SUFFIX} files or a "
                              f"*{INDEX_SUFFIX}")
        return _from_files(src, files, None)
    if src.endswith(".json"):
        return _from_index(src)
    return _from_files(src, [src], None)


def _from_files(source: str, files: list[str], weight_map: dict[str, str] | None) -> Checkpoint:
    opened: dict[str, object] = {}
    tensors: dict[str, CheckpointTensor] = {}
    try:
        for path in files:
            f = _open_regular(path, "the checkpoint file")
            opened[path] = f
            header = read_header(f, os.fstat(f.fileno()).st_size, path)
            for key, st in header.items():
                if weight_map is not None and weight_map.get(key) != path:
                    where = ("names no file for it" if key not in weight_map
                             else f"says it is in {weight_map[key]}")
                    raise ExportError(f"{path} holds the tensor '{key}' but the index {source} {where}; the "
                                      f"index and the files disagree (regenerate the index)")
                if key in tensors:
                    raise ExportError(f"the tensor '{key}' is in two checkpoint files, {tensors[key].file} and "
                                      f"{path}; keep one")
                tensors[key] = _entry(key, path, st)
        if weight_map is not None:
            absent = sorted(k for k in weight_map if k not in tensors)
            if absent:
                raise ExportError(f"the index {source} maps {len(absent)} tensor(s) to files that do not hold "
                                  f"them: " + ", ".join(f"'{k}' ({weight_map[k]})" for k in absent[:10])
                                  + (", ..." if len(absent) > 10 else "") + "; regenerate the index")
    except BaseException:
        for f in opened.values():
            f.close()
        raise
    return Checkpoint(source, tensors, opened)


def _open_regular(path: str, what: str):
    """``path`` opened for reading, refusing anything but a regular file before reading a byte: opening a FIFO
    would block until a writer appears (``O_NONBLOCK`` returns at once), and a directory or device is no file of
    tensors. Symlinks are followed: hub caches link every file of a snapshot to its blob."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ExportError(f"cannot open {what} {path}: {e.strerror} (errno {e.errno})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ExportError(f"{what} {path} is {kind}; give a regular .safetensors / index file")
    return os.fdopen(fd, "rb")


def _entry(key: str, path: str, st: StoredTensor) -> CheckpointTensor:
    return CheckpointTensor(name=key, file=path, dtype=st.dtype, shape=st.shape, begin=st.begin, end=st.end)


def _from_index(index: str) -> Checkpoint:
    def bad(msg: str) -> ExportError:
        return ExportError(f"the checkpoint index {index}: {msg}. It must be a JSON object with a \"weight_map\" "
                           f"object mapping each tensor name to a .safetensors file in the index's directory")

    with _open_regular(index, "the checkpoint index") as f:
        try:
            raw = f.read(_MAX_INDEX_BYTES + 1)
        except OSError as e:
            raise ExportError(f"cannot read the checkpoint index {index}: {e.strerror} (errno {e.errno})") from e
    if len(raw) > _MAX_INDEX_BYTES:
        raise bad(f"it is larger than {_MAX_INDEX_BYTES} bytes")

    no_dups = unique_keys(lambda k: bad(f"the key {k!r:.80} appears twice"))
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
    except ExportError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"it is not valid UTF-8 JSON ({e})") from None
    if type(obj) is not dict or type(obj.get("weight_map")) is not dict:
        raise bad("it has no \"weight_map\" object")
    base = os.path.dirname(os.path.abspath(index))
    weight_map: dict[str, str] = {}
    for name, file in obj["weight_map"].items():
        if type(file) is not str or not _plain_relative(file):
            raise bad(f"tensor {name!r:.80} maps to {file!r:.80}, not a relative path inside the index's directory")
        weight_map[name] = os.path.join(os.path.dirname(index), file)
    files = sorted(set(weight_map.values()))
    for path in files:
        if not os.path.exists(path):  # a FIFO, directory or device is refused by _open_regular, by its kind
            raise bad(f"it names the file {os.path.relpath(path, base)}, which does not exist next to it")
    return _from_files(index, files, weight_map)


def _plain_relative(path: str) -> bool:
    if not path or "\0" in path or os.path.isabs(path) or "\\" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


# ------------------------------------------------------------------------------------------------ matching

def sources_for(checkpoint: Checkpoint, groups: list[tuple[list[str], str, tuple[int, ...]]], known: set[str],
                notes: dict[str, str] | None = None) -> dict[str, CheckpointSource]:
    """The checkpoint source of every group of meta tensors, or one error listing every problem.

    Args:
        checkpoint: the indexed checkpoint.
        groups: per stored tensor, ``(names, dtype code, shape)``: the names of one alias group (tied weights),
            the stored key first; the checkpoint may hold any or all of them.
        known: every tensor name of the model, meta or not: a checkpoint key among them is expected (a tensor
            that is not on the meta device is written from memory, and its checkpoint copy is not read).
        notes: name -> a remark for the "missing" listing (e.g. that a non-persistent buffer is not saved).

    Returns:
        stored key -> source.

    Raises:
        CheckpointMismatchError: missing, unexpected, wrong-shape or wrong-dtype tensors, all listed.
    """
    notes = notes or {}
    missing: list[str] = []
    wrong_shape: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = []
    wrong_dtype: list[tuple[str, str, str, str]] = []
    tied: dict[str, list[str]] = {}
    used: set[str] = set()
    sources: dict[str, CheckpointSource] = {}
    for names, code, shape in groups:
        present = [n for n in names if n in checkpoint.tensors]
        used.update(present)
        if not present:
            missing.append(names[0])
            tied[names[0]] = names[1:]
            continue
        ok = True
        for n in present:
            e = checkpoint.tensors[n]
            if e.shape != tuple(shape):
                wrong_shape.append((n, e.file, tuple(shape), e.shape))
                ok = False
            if e.dtype != code:
                wrong_dtype.append((n, e.file, code, e.dtype))
                ok = False
        if ok:
            sources[names[0]] = checkpoint.source_of(present[0])
    unexpected = sorted((k, e.file) for k, e in checkpoint.tensors.items() if k not in known and k not in used)
    if not (missing or unexpected or wrong_shape or wrong_dtype):
        return sources
    missing.sort()
    wrong_shape.sort()
    wrong_dtype.sort()
    count = len(missing) + len(unexpected) + len(wrong_shape) + len(wrong_dtype)
    lines = [f"weights_from={checkpoint.source!r} does not match the model's meta tensors ({count} problem(s); "
             f"nothing was written):"]
    if missing:
        lines.append(f"  missing ({len(missing)}), in no checkpoint file:")
        for n in missing:
            extra = f" (tied: also named {', '.join(repr(t) for t in tied[n])})" if tied[n] else ""
            note = f" ({notes[n]})" if n in notes else ""
            lines.append(f"    '{n}'{extra}{note}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}), used by no tensor of the model:")
        lines.extend(f"    '{n}' in {os.path.basename(f)}" for n, f in unexpected)
    if wrong_shape:
        lines.append(f"  wrong shape ({len(wrong_shape)}):")
        lines.extend(f"    '{n}' in {os.path.basename(f)}: model {list(a)}, checkpoint {list(b)}"
                     for n, f, a, b in wrong_shape)
    if wrong_dtype:
        lines.append(f"  wrong dtype ({len(wrong_dtype)}):")
        lines.extend(f"    '{n}' in {os.path.basename(f)}: model {a}, checkpoint {b}" for n, f, a, b in wrong_dtype)
    hint = _prefix_hint(missing, [n for n, _ in unexpected])
    if hint:
        lines.append(hint)
    lines.append("Tensors are matched by their state-dict names (fully qualified in the root module). Build the "
                 "model with the checkpoint's configuration (shapes, dtype), rename the checkpoint's keys, or "
                 "materialise the tensors the checkpoint lacks (assign real tensors) before export.")
    raise CheckpointMismatchError("\n".join(lines), missing=missing, unexpected=unexpected, wrong_shape=wrong_shape,
                                  wrong_dtype=wrong_dtype)


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """A line naming a prefix that the checkpoint's names have and the model's lack (or the reverse)."""
    ends = _prefixes(unexpected)
    for m in missing:
        if m in ends:
            return (f"  hint: the checkpoint's names carry the prefix '{ends[m]}' (e.g. '{ends[m]}{m}'); strip it "
                    f"from the checkpoint's keys, or export the submodule the checkpoint was saved from")
    miss = _prefixes(missing)
    for u in unexpected:
        if u in miss:
            return (f"  hint: the model's names carry the prefix '{miss[u]}' that the checkpoint's lack (e.g. "
                    f"'{u}'); export the module the checkpoint was saved from, or add the prefix to its keys")
    return ""


def _prefixes(names: list[str]) -> dict[str, str]:
    """Each name's tail after one of its dots -> the prefix before it (up to the dot, included); the first wins."""
    out: dict[str, str] = {}
    for name in names:
        for i, c in enumerate(name):
            if c == ".":
                out.setdefault(name[i + 1:], name[:i + 1])
    return out
