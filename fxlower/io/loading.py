"""``fxlower.load``: the public surface for reading an artifact — :func:`load` and :class:`Artifact`.

The work is split by job:

- :mod:`fxlower.io.reading` — decode and validate (docs/format.md section 10, in order): manifest bytes ->
  validated, decoded graphs; every rejection a :class:`fxlower.FormatError` with the spec's code.
- :mod:`fxlower.io.mapping` — tensor access through the descriptors that were validated (never reopened by path).
- :mod:`fxlower.views.rebuild` — :meth:`Artifact.to_graph_module`.

Safety: no pickle, no ``eval``, no import of any module named in a file. ``call_function`` targets resolve only
through :mod:`fxlower.lowering.targets` (allow-list plus user registrations), leaf modules only through the book's
registered classes, and every name that reaches ``torch.fx`` code generation is checked first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx

from ..errors import FormatError
from .progress import bar as _progress_bar, check_progress
from .reading import LoadedCore, LoadedGraph, LoadedNode, Reading, loads_manifest, read
from .mapping import shard_ranges
from ..views.rebuild import build, build_core
from ..format.values import GraphRef, NodeRef, TensorRef, decode, walk

__all__ = ["load", "loads_manifest", "Artifact", "LoadedNode", "LoadedGraph", "LoadedCore", "NodeRef", "TensorRef",
           "GraphRef"]


class Artifact:
    """A loaded, validated artifact. Use :func:`load` to get one.

    The artifact reads its tensors from the files it validated, through descriptors it keeps open until
    :meth:`close`: replacing or deleting the artifact directory afterwards does not change what it reads.

    Attributes:
        path: the directory.
        manifest: the decoded :class:`fxlower.format.schema.Manifest`.
        format_version: ``(major, minor)`` of the file.
        graphs: the graphs, ``graphs[0]`` the root, nodes decoded (references as :class:`NodeRef` /
            :class:`TensorRef`, lowering records with tensor attributes as :class:`TensorRef`).
        tensors: name -> :class:`fxlower.format.schema.TensorEntry`.
        core: 1.2: the core view (:class:`LoadedCore`: ``graphs`` with ``graphs[0]`` the core root, ``inputs``,
            ``outputs``, ``ops``, ``symbols``), or None when the artifact has none.
    """

    def __init__(self, reading: Reading):
        self.path = reading.path
        self.manifest = reading.manifest
        self.format_version = tuple(reading.manifest.format_version)
        self.graphs = reading.graphs
        self.tensors = {t.name: t for t in reading.manifest.tensors}
        self._files = reading.files
        self._golden = reading.golden
        self.core: LoadedCore | None = reading.core

    # --- tensors ---

    def tensor(self, name: str, *, shard: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor ``name``, backed by a copy-on-write mapping of its file (no read until used); or, with
        ``shard=(rank, world)``, the slice that mesh rank ``rank`` holds under the tensor's 1.3 placement
        (docs/format.md section 5.2) as a new tensor read from only that slice's bytes. A tensor without
        a placement is replicated: every rank gets the whole tensor.

        Raises:
            KeyError: no tensor of that name.
            ValueError: the artifact was closed; ``world`` differs from the placement's number of devices (the
                product of its mesh), or ``rank`` is outside ``[0, world)``.
        """
        entry = self.tensors[name]
        if shard is None:
            return self._files.view(entry)
        if (not isinstance(shard, tuple) or len(shard) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in shard)):
            raise ValueError(f"shard must be (rank, world), two ints, got {shard!r:.60}")
        rank, world = shard
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"shard=(rank={rank}, world={world}): rank must be in [0, world) and world at least 1")
        p = entry.placement
        if p is None:
            return self._files.view(entry)
        devices = math.prod(p.mesh)
        if world != devices:
            raise ValueError(f"shard=(rank={rank}, world={world}) for tensor '{name}', whose placement is over the "
                             f"mesh {list(p.mesh)!r:.80} of {devices} devices; world must be {devices}")
        return self._files.read_box(entry, shard_ranges(entry.shape, p, rank))

    def stored_bytes(self, name: str) -> memoryview:
        """The bytes stored for tensor ``name``, as a view of the file mapping (little-endian, row-major)."""
        return self._files.stored_bytes(self.tensors[name])

    def verify(self, *, progress: bool | None = None) -> None:
        """Check every tensor's SHA-256 against the table (read with pread from the validated files; nothing is
        mapped, so verifying does not grow the process's resident memory by the files' size).

        Args:
            progress: a tqdm bar on stderr, in bytes and tensors (every table entry, an alias hashed again). None
                (default): only when stderr is a terminal and verifying has taken a second; True: at once, on
                any stderr; False: never.

        Raises:
            FormatError ("tensor.hash"): naming the first tensor whose bytes differ.
        """
        entries = self.manifest.tensors
        total = sum(info.end - info.begin for info in map(self._files.info, entries))
        with _progress_bar("verify", total, len(entries), progress) as report:
            on_bytes = None if report is None else (lambda n: report(n, 0))
            for entry in entries:
                digest = self._files.sha256(entry, on_bytes)
                if digest != entry.sha256:
                    raise FormatError("tensor.hash", f"tensor '{entry.name}': stored bytes hash to {digest}, the "
                                      f"table says {entry.sha256}", entry.file)
                if report is not None:
                    report(0, 1)

    def close(self) -> None:
        """Release the file mappings and descriptors. Tensors from :meth:`tensor` and modules rebuilt with
        ``copy=False`` keep their mapping alive; no other read is possible afterwards."""
        self._files.close()

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- values ---

    def materialize(self, value: Any, nodes: Mapping[str, Any] | None = None) -> Any:
        """Replace :class:`TensorRef` with owned tensor copies (and :class:`NodeRef` via ``nodes``)."""
        def leaf(v: Any, where: str) -> Any:
            if isinstance(v, TensorRef):
                return self._files.read_into(self.tensors[v.name])
            if isinstance(v, NodeRef):
                if nodes is None:
                    raise ValueError(f"a node reference '{v.name}' needs a node mapping")
                return nodes[v.name]
            return v
        return walk(value, leaf, where=None)

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

    def golden_core_nodes(self) -> dict[str, Any]:
        """1.2: core root node name -> stored result (empty unless exported with ``golden="nodes"`` and a core
        view)."""
        return {k: self.materialize(v) for k, v in self._need_golden()["core_nodes"].items()}

    def links(self) -> dict[tuple[int, str], tuple[tuple[int, str], ...]]:
        """1.2: each module-view node that core nodes came from -> those core nodes, in graph and node order.

        Keys are ``(module graph index, node name)``; values are ``(core graph index, core node name)`` pairs (the
        inverse of the core nodes' ``origin``). Empty without a core view; glue nodes (no origin) appear nowhere.
        """
        out: dict[tuple[int, str], list[tuple[int, str]]] = {}
        if self.core is not None:
            for gi, g in enumerate(self.core.graphs):
                for n in g.nodes:
                    if n.origin is not None:
                        out.setdefault((n.origin.graph, n.origin.node), []).append((gi, n.name))
        return {k: tuple(v) for k, v in out.items()}

    def tolerances(self) -> dict[str, tuple[float, float]]:
        """dtype code -> (rtol, atol)."""
        return {k: (t.rtol, t.atol) for k, t in self._need_golden()["tolerances"].items()}

    def _need_golden(self) -> dict[str, Any]:
        if self._golden is None:
            raise ValueError(f"{self.path} has no golden data; export with golden=True")
        return self._golden

    # --- rebuilding ---

    def to_graph_module(self, *, copy: bool = True, view: str = "module",
                        progress: bool | None = None) -> fx.GraphModule:
        """Rebuild an executable ``torch.fx.GraphModule`` that computes what the exported one did.

        Format 1.1: the module has the exported module's parameters (with their ``requires_grad``), buffers
        (with their persistence), ``state_dict()`` keys and ``training`` flags. 1.0 files: eval mode, floating
        leaf tensors as frozen parameters, other tensors as buffers.

        Args:
            copy: ``True`` (default): tensors are read into memory the module owns (extra memory: the model's
                size; the module is independent of the files). ``False``: tensors are views of the artifact's
                private copy-on-write mappings — about no extra memory until pages are touched, writes stay in
                this process; a tensor file truncated by someone else meanwhile can fault (SIGBUS) the process.
            view: ``"module"`` (default): the module view (``graphs``). ``"core"`` (1.2): the core view, Core ATen
                operators only; placeholders for the user inputs, parameters/buffers/constants as attributes at
                their table names; returns the user outputs in the signature's structure and applies buffer
                mutations to its buffers, as ``ExportedProgram.module()`` does.
            progress: a tqdm bar on stderr while tensors are read, in bytes and tensors (each stored tensor of
                the non-golden files once). None (default): only when stderr is a terminal and reading has taken
                a second; True: at once, on any stderr; False: never.

        Raises:
            ValueError: ``view`` is not "module" or "core", or the artifact lacks that view.
            UnsupportedTargetError: a ``call_function`` target is neither allow-listed nor registered, a
                ``call_method`` target is not a public ``torch.Tensor`` method, or a module type has no rule.
        """
        check_progress(progress)
        if view == "core":
            if self.core is None:
                raise ValueError(f"{self.path} has no core view; export it with fxlower.export(..., core=True) "
                                 f"(format 1.2) to rebuild view='core'")
            template = decode(self.manifest.signature.output, "signature.output", node=lambda n, w: NodeRef(n))
            with self._read_progress(progress) as report:
                return build_core(self.core, template, self.tensors, self._files, copy=copy, on_progress=report)
        if view != "module":
            raise ValueError(f"view is {view!r}; expected 'module' or 'core'")
        if not self.graphs:
            raise ValueError(f"{self.path} has only a core view (no module view); use to_graph_module(view='core'), "
                             f"or export with module=<the nn.Module> to derive a module view")
        with self._read_progress(progress) as report:
            return build(self.graphs, self.tensors, self._files, self.format_version, copy=copy,
                         on_progress=report)

    def _read_progress(self, progress: bool | None):
        """The bar of :meth:`to_graph_module`: every stored tensor of the files that are not golden, once."""
        golden = {f.path for f in self.manifest.files if f.role == "golden"}
        stored = {(e.file, e.key): self._files.info(e) for e in self.manifest.tensors if e.file not in golden}
        return _progress_bar("load", sum(i.end - i.begin for i in stored.values()), len(stored), progress)


def load(path: str | os.PathLike, *, strict: bool = True, verify: bool = False,
         progress: bool | None = None) -> Artifact:
    """Open and validate an artifact directory.

    Args:
        path: the artifact directory.
        strict: reject files the manifest does not list (with ``False`` they are ignored, never read).
        verify: also check every tensor's SHA-256 (reads all tensor bytes).
        progress: with ``verify``, a tqdm bar on stderr while hashing (see :meth:`Artifact.verify`). None
            (default): only when stderr is a terminal and verifying has taken a second; True: at once; False:
            never.

    Returns:
        An :class:`Artifact`; tensors are read lazily, from the files that were validated.

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
    check_progress(progress)
    artifact = Artifact(read(path, strict=strict))
    if verify:
        try:
            artifact.verify(progress=progress)
        except BaseException:
            artifact.close()
            raise
    return artifact
