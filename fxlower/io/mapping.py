"""Tensor access for a loaded artifact: the validated tensor files, by the descriptors that were validated.

A :class:`TensorFiles` owns one open descriptor per tensor file: the very descriptors :mod:`fxlower.io.reading`
opened (through the artifact's directory descriptor, refusing symlinks) and read the headers from. Everything is
read from them — a copy-on-write mapping for in-place views, ``pread`` for owned copies — and a file is never
reopened by path, so what a loaded artifact reads is what it validated, even after the artifact directory was
replaced (an export with ``overwrite=True``) or deleted: the old inodes live as long as the descriptors.

Views (:meth:`TensorFiles.view`) come from the safetensors library (``safe_open``), opened on the checked
descriptor itself through ``/proc/self/fd/N``: the library maps the file privately, so there is no copy, pages are
read on first touch and stay clean (evictable) until written, and a write goes to a private copy of the page,
never to the file. Where ``/proc/self/fd`` is missing, or on a big-endian host (where the library byte-swaps into
copies), fxlower maps the descriptor itself with the same copy-on-write semantics. A file truncated by someone else
while mapped can fault (SIGBUS) a process touching a view; owned copies cannot.

Owned copies (:meth:`TensorFiles.read_into`) are read with ``pread`` straight into the destination tensor (the
library can only hand out views of its mapping, and cloning those would hold a tensor twice), so they never map file
pages into the process: copying a model costs its size in memory and no more.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import safetensors
import torch

from ..format.constants import STORAGE_DTYPES
from ..format.schema import Placement, TensorEntry
from .tensorfile import StoredTensor

__all__ = ["TensorFiles", "shard_ranges"]

_PREAD_CHUNK = 64 << 20
#: The library opens files by path only; on Linux ``/proc/self/fd/N`` names the checked descriptor itself (no
#: re-resolution of the artifact's path). Elsewhere, or on a big-endian host, fxlower maps the descriptor itself.
_FD_PATH = "/proc/self/fd" if sys.byteorder == "little" and os.path.isdir("/proc/self/fd") else None


def shard_ranges(shape: tuple[int, ...] | list[int], placement: Placement, rank: int) -> tuple[tuple[int, int], ...]:
    """The index range ``[begin, end)`` of every tensor dimension that mesh rank ``rank`` holds under
    ``placement`` (docs/format.md section 5.2): rank is the row-major index of the mesh coordinate;
    for each mesh dimension in order, a ``shard`` of tensor dim ``d`` cuts the current range of ``d`` into
    ``ceil(length / m)``-sized chunks (torch.chunk's rule: trailing chunks short or empty) and keeps chunk
    ``c_i``; ``replicate`` keeps the range.

    Raises:
        ValueError: ``rank`` outside ``[0, prod(mesh))``; a placement built by hand that a loaded artifact could
            not hold (a mesh size outside ``[1, 65536]``, ``dims`` not one per mesh dimension, a shard dim outside
            the tensor's rank): never read a negative index from the end.
    """
    if any(isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 65536 for m in placement.mesh):
        raise ValueError(f"mesh {list(placement.mesh)!r:.80}: each size is an int in [1, 65536]")
    if len(placement.dims) != len(placement.mesh):
        raise ValueError(f"dims has {len(placement.dims)} entries for a mesh of {len(placement.mesh)} dimensions")
    for d in placement.dims:
        if d.kind == "shard" and not (type(d.dim) is int and 0 <= d.dim < len(shape)):
            raise ValueError(f"shard dim {d.dim!r:.40} is outside [0, {len(shape)}) for the shape {list(shape)}")
    world = math.prod(placement.mesh)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"rank {rank!r} is outside [0, {world}) for the mesh {list(placement.mesh)!r:.80}")
    coords = []
    r = rank
    for m in reversed(placement.mesh):
        coords.append(r % m)
        r //= m
    coords.reverse()
    ranges = [[0, int(n)] for n in shape]
    for c, m, d in zip(coords, placement.mesh, placement.dims):
        if d.kind != "shard":
            continue
        a, b = ranges[d.dim]
        length = b - a
        size = -(-length // m) if length else 0
        ranges[d.dim] = [a + min(c * size, length), a + min((c + 1) * size, length)]
    return tuple((a, b) for a, b in ranges)


class TensorFiles:
    """The tensor files of one artifact: ``fds`` (file -> open descriptor, owned) and their validated headers."""

    def __init__(self, fds: dict[str, int], stored: Mapping[str, Mapping[str, StoredTensor]]):
        self._fds = dict(fds)
        self._stored = stored
        self._maps: dict[str, Any] = {}  # file -> the artifact's own view source (a library handle or an mmap)
        self._bytes: dict[str, mmap.mmap] = {}  # file -> a read-only mapping for stored_bytes
        self._closed = False

    def info(self, entry: TensorEntry) -> StoredTensor:
        return self._stored[entry.file][entry.key]

    def _fd(self, file: str) -> int:
        if self._closed:
            raise ValueError("the artifact is closed; load it again to read its tensors")
        return self._fds[file]

    def _byte_map(self, file: str) -> mmap.mmap:
        """A read-only mapping of the whole file, for its stored bytes."""
        m = self._bytes.get(file)
        if m is None:
            m = self._bytes[file] = mmap.mmap(self._fd(file), 0, access=mmap.ACCESS_READ)
        else:
            self._fd(file)
        return m

    def _open_view_source(self, file: str) -> Any:
        """A private mapping of ``file``: a safetensors library handle on the checked descriptor, or an mmap."""
        fd = self._fd(file)
        if _FD_PATH is None:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        try:
            return safetensors.safe_open(f"{_FD_PATH}/{fd}", framework="pt")
        except safetensors.SafetensorError as e:  # never after the strict header check, unless the file changed
            raise OSError(f"{file}: the safetensors library refuses the file it was validated as ({e})") from None

    def view(self, entry: TensorEntry, maps: dict[str, Any] | None = None) -> torch.Tensor:
        """The tensor as a view of a copy-on-write mapping of its file (nothing read until used).

        Args:
            maps: file -> mapping to use, filled as needed: a caller that may write into its views passes its own
                dict, so that its writes (private pages) are seen neither by the artifact nor by other callers.
                Without it, the artifact's shared read mapping is used.
        """
        info = self.info(entry)
        dtype = STORAGE_DTYPES[entry.dtype][0]
        shape = tuple(entry.shape)
        count = math.prod(shape)
        if count == 0:
            self._fd(entry.file)  # a closed artifact refuses every read alike
            return torch.empty(shape, dtype=dtype)
        owner = self._maps if maps is None else maps
        source = owner.get(entry.file)
        if source is None:
            source = owner[entry.file] = self._open_view_source(entry.file)
        elif maps is None:
            self._fd(entry.file)
        if isinstance(source, mmap.mmap):
            return torch.frombuffer(source, dtype=dtype, count=count, offset=info.begin).reshape(shape)
        return source.get_tensor(entry.key)

    def stored_bytes(self, entry: TensorEntry) -> memoryview:
        """The stored bytes, as a view of the file mapping."""
        info = self.info(entry)
        if info.end == info.begin:
            self._fd(entry.file)
            return memoryview(b"")
        return memoryview(self._byte_map(entry.file))[info.begin:info.end]

    def read_into(self, entry: TensorEntry, on_bytes: Callable[[int], None] | None = None) -> torch.Tensor:
        """A new tensor that owns its memory, filled with ``pread`` from the validated descriptor.

        ``on_bytes(n)`` is called after each read of ``n`` bytes (fxlower.io.progress).

        Raises:
            OSError: the file ended early (it was truncated after validation), naming the file.
        """
        info = self.info(entry)
        fd = self._fd(entry.file)
        out = torch.empty(tuple(entry.shape), dtype=STORAGE_DTYPES[entry.dtype][0])
        size = info.end - info.begin
        if size == 0:
            return out
        buf = memoryview(out.view(-1).view(torch.uint8).numpy()).cast("B")
        done = 0
        while done < size:
            n = os.preadv(fd, [buf[done:done + min(_PREAD_CHUNK, size - done)]], info.begin + done)
            if n == 0:
                raise OSError(f"{entry.file} ended at byte {info.begin + done}, inside tensor '{entry.name}' "
                              f"(the file was truncated after it was validated)")
            done += n
            if on_bytes is not None:
                on_bytes(n)
        return out

    def read_box(self, entry: TensorEntry, box: tuple[tuple[int, int], ...]) -> torch.Tensor:
        """A new tensor holding ``entry[a0:b0, a1:b1, ...]`` for ``box = ((a0, b0), ...)``, read with ``pread`` of
        the box's contiguous runs only (the rest of the tensor is never read).

        Raises:
            OSError: the file ended early (it was truncated after validation), naming the file.
        """
        info = self.info(entry)
        fd = self._fd(entry.file)
        shape = tuple(entry.shape)
        out = torch.empty(tuple(b - a for a, b in box), dtype=STORAGE_DTYPES[entry.dtype][0])
        if out.numel() == 0:
            return out
        item = STORAGE_DTYPES[entry.dtype][1]
        # The innermost dimensions the box covers whole merge into one run with the first one it does not.
        k = len(shape) - 1
        while k > 0 and box[k] == (0, shape[k]):
            k -= 1
        inner = math.prod(shape[k + 1:]) if k >= 0 else 1
        strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
        run = ((box[k][1] - box[k][0]) * inner if shape else 1) * item
        buf = memoryview(out.view(-1).view(torch.uint8).numpy()).cast("B")
        outer = box[:k] if shape else ()
        index = [a for a, _ in outer]
        done = 0
        while True:
            start = (sum(i * strides[j] for j, i in enumerate(index)) + (box[k][0] * strides[k] if shape else 0))
            pos = info.begin + start * item
            got = 0
            while got < run:
                n = os.preadv(fd, [buf[done + got:done + min(run, got + _PREAD_CHUNK)]], pos + got)
                if n == 0:
                    raise OSError(f"{entry.file} ended at byte {pos + got}, inside tensor '{entry.name}' (the file "
                                  f"was truncated after it was validated)")
                got += n
            done += run
            j = len(index) - 1  # the next index of the outer dimensions, row-major
            while j >= 0:
                index[j] += 1
                if index[j] < outer[j][1]:
                    break
                index[j] = outer[j][0]
                j -= 1
            if j < 0:
                return out

    def sha256(self, entry: TensorEntry, on_bytes: Callable[[int], None] | None = None) -> str:
        """SHA-256 of the stored bytes, read with ``pread`` in chunks (no page of the file is mapped);
        ``on_bytes(n)`` is called after each chunk of ``n`` bytes is hashed (fxlower.io.progress).

        Raises:
            OSError: the file ended early (it was truncated after validation).
        """
        info = self.info(entry)
        fd = self._fd(entry.file)
        h = hashlib.sha256()
        buf = bytearray(min(_PREAD_CHUNK, max(info.end - info.begin, 1)))
        view = memoryview(buf)
        pos = info.begin
        while pos < info.end:
            n = os.preadv(fd, [view[:min(len(buf), info.end - pos)]], pos)
            if n == 0:
                raise OSError(f"{entry.file} ended at byte {pos}, inside tensor '{entry.name}' (the file was "
                              f"truncated after it was validated)")
            h.update(view[:n])
            pos += n
            if on_bytes is not None:
                on_bytes(n)
        return h.hexdigest()

    def close(self) -> None:
        """Release the mappings and descriptors. Views still in use keep their mapping alive until freed."""
        for m in [*self._maps.values(), *self._bytes.values()]:
            if not isinstance(m, mmap.mmap):
                m.__exit__(None, None, None)  # a library handle: tensors it gave out keep its mapping alive
                continue
            try:
                m.close()
            except BufferError:  # a tensor still views it; the mapping lives until that tensor is freed
                pass
        self._maps.clear()
        self._bytes.clear()
        if not self._closed:
            self._closed = True
            for fd in self._fds.values():
                os.close(fd)
