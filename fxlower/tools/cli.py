"""The ``fxlower`` command line.

    fxlower demo [DIR]            trace, lift, export (with golden data), load back and summarise the built-in example
    fxlower inspect DIR [--nodes] [--verify] [--non-strict] [--[no-]progress]
                                  summarise an artifact (Python twin of fxlower-inspect)
    fxlower validate DIR [--verify] [--non-strict] [--[no-]progress]
                                  check an artifact; exit 0 if valid, 1 with the error code otherwise
    fxlower dump DIR [--non-strict]
                                  the canonical dump (docs: cpp/DUMP.md), identical to fxlower-dump's
    fxlower clean PATH            remove the temporaries that killed exports to PATH left behind (never a running
                                  export's) and list them
    fxlower export TARGET -o PATH [--input SHAPE[:DTYPE] ... | --inputs FILE] [--golden [outputs|nodes]]
                   [--overwrite] [--leaf CLASS ...] [--core [--dynamic INPUT:DIM[:MIN:MAX] ...]]
                   [--max-shard-bytes N] [--weights-from SRC] [--[no-]progress]
                                  load a model (MODULE:ATTR or FILE.py:ATTR), trace, lift, export, summarise
    fxlower diff A B [--values] [--json]
                                  compare two artifacts; exit 0 equal, 1 different, 2 error
    fxlower view A -o PAGE.html   one self-contained HTML page showing the graphs (docs/cli.md)

Options are named as in the C++ tools: ``--non-strict`` ignores directory entries the manifest does not list (never
opened), ``--verify`` checks every tensor's SHA-256. A progress bar (bytes and tensors) goes to stderr while
tensors are hashed or written when stderr is a terminal and the work takes over a second; ``--progress`` shows it
always (at once), ``--no-progress`` never.

Exit codes: 0 success, 1 invalid artifact, failed check or file-system error, 2 usage error (``diff``: 0 equal,
1 different, 2 error). Every failure is one line on stderr starting with ``error:``.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from typing import Any

import torch

from ..format.constants import STORAGE_DTYPES
from ..errors import FxLowerError
from ..io.loading import Artifact, NodeRef, TensorRef, load

__all__ = ["main", "summary"]


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def summary(art: Artifact, nodes: bool = False) -> str:
    """A human-readable summary of an artifact."""
    m = art.manifest
    lines = [f"artifact   {art.path}",
             f"format     {m.format} {m.format_version[0]}.{m.format_version[1]} "
             f"(written by fxlower {m.producer.version}, torch {m.producer.torch})",
             f"digest     {m.digest}",
             f"inputs     {', '.join(m.signature.inputs)}"]
    ops: collections.Counter = collections.Counter()
    targets: collections.Counter = collections.Counter()
    modules: dict[tuple[str, int], int] = collections.Counter()
    for g in art.graphs:
        for n in g.nodes:
            ops[n.op] += 1
            if n.op in ("call_function", "call_method"):
                targets[n.target] += 1
            if n.lowering is not None:
                modules[(n.lowering.module_type, n.lowering.version)] += 1
    lines.append(f"graphs     {len(art.graphs)} ({sum(len(g.nodes) for g in art.graphs)} nodes: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())) + ")")
    if modules:
        lines.append("modules    " + ", ".join(f"{t} v{v} x{c}" for (t, v), c in sorted(modules.items())))
    if targets:
        lines.append("targets    " + ", ".join(f"{t} x{c}" for t, c in sorted(targets.items())))
    # Every table entry counts, golden and aliases included (as fxlower-inspect and ExportSummary.tensors count).
    golden_files = {f.path for f in m.files if f.role == "golden"}
    by_dtype: dict[str, list[int]] = {}
    seen: set[tuple[str, str]] = set()
    aliases = golden = 0
    for t in m.tensors:
        if (t.file, t.key) in seen:
            aliases += 1
        seen.add((t.file, t.key))
        golden += t.file in golden_files
        count = 1
        for d in t.shape:
            count *= d
        acc = by_dtype.setdefault(t.dtype, [0, 0])
        acc[0] += 1
        acc[1] += count * STORAGE_DTYPES[t.dtype][1]
    total = sum(b for _, b in by_dtype.values())
    lines.append(f"tensors    {len(m.tensors)} ({aliases} alias{'es' if aliases != 1 else ''}, {golden} golden), "
                 f"{_fmt_bytes(total)} (aliases counted each time)"
                 + "".join(f"; {k}: {c} ({_fmt_bytes(b)})" for k, (c, b) in sorted(by_dtype.items())))
    if m.golden is not None:
        lines.append(f"golden     mode {m.golden.mode}, {len(m.golden.inputs)} input(s), tolerances "
                     + ", ".join(f"{k} rtol={t.rtol:g} atol={t.atol:g}" for k, t in sorted(m.golden.tolerances.items())))
    if nodes:
        for gi, g in enumerate(art.graphs):
            lines.append(f"graph {gi} '{g.name}'")
            for n in g.nodes:
                shape = ""
                if isinstance(n.meta, dict) and n.meta.get("t") == "tensor":
                    shape = f" -> {n.meta['dtype']}{n.meta['shape']}"
                lines.append(f"  {n.name} = {n.op}[{n.target}]({_short(n.args)}){shape}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = ", ".join(_render(v) for v in value)
    return text if len(text) < 120 else text[:117] + "..."


def _render(v: Any) -> str:
    if isinstance(v, NodeRef):
        return f"%{v.name}"
    if isinstance(v, TensorRef):
        return f"${v.name}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_render(x) for x in v) + (",)" if len(v) == 1 else ")")
    if isinstance(v, list):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    return repr(v)


def _demo(path: str) -> int:
    from .examples import example
    from ..lowering.lifting import lift
    from ..io.writing import export

    gm, inputs = example()
    print("== 1. lift: lowering attributes on every leaf call_module node")
    lift(gm)
    for node in gm.graph.find_nodes(op="call_module"):
        rec = node.meta["lowering"]
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in rec.attrs.items())
        print(f"  {node.name:<16} {rec.module_type} (rule v{rec.version}): {attrs}")
    print(f"\n== 2. export -> {path}")
    s = export(gm, path, inputs, golden=True, overwrite=True)
    print(f"  {s.nodes} nodes, {s.tensors} tensors, {s.bytes_written} bytes, {s.digest}")
    for name in sorted(os.listdir(path)):
        print(f"  {name:<22} {os.path.getsize(os.path.join(path, name)):>8} bytes")
    print("\n== 3. load back (validated, hashes verified) and rebuild a GraphModule")
    art = load(path, verify=True)
    print("  " + summary(art).replace("\n", "\n  "))
    rebuilt = art.to_graph_module()
    with torch.no_grad():
        same = torch.equal(rebuilt(*art.golden_inputs()), art.golden_outputs())
        fresh = torch.randn(2, 3, 32, 32)
        same_fresh = torch.equal(rebuilt(fresh), gm(fresh))
    print(f"  rebuilt module reproduces the golden output bit-exactly: {same}; on fresh inputs: {same_fresh}")
    if not (same and same_fresh):
        return 1
    runner = _runner()
    if os.path.exists(runner):
        print("\n== 4. execute in C++, without Python: fxlower-run --check")
        sys.stdout.flush()
        return subprocess.run([runner, path, "--check"]).returncode
    print(f"\n(fxlower-run not built at {runner}: build cpp/ to run the C++ check)")
    return 0


def _runner() -> str:
    """Where a build of the C++ side puts ``fxlower-run`` (cpp/build of the source tree)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "cpp", "build",
                        "fxlower-run")


def _attr(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"<{str(v.dtype).removeprefix('torch.')}{list(v.shape)}>"
    return repr(v)


def _clean(path: str) -> int:
    from ..io.writing import remove_orphaned_temporaries

    removed = remove_orphaned_temporaries(path)
    for tmp in removed:
        print(f"removed {tmp}")
    target = os.path.abspath(path)
    print(f"{len(removed)} orphaned temporar{'y' if len(removed) == 1 else 'ies'} of {target} removed"
          if removed else f"no orphaned temporaries of {target}")
    return 0


def _add_progress(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=f"a progress bar in bytes and tensors on stderr while {what}; by default only when stderr is "
                        f"a terminal and the work takes over a second; --progress: always, at once; "
                        f"--no-progress: never")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxlower", description="Export torch.fx graphs for compilers.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="run the whole path on the built-in example")
    p.add_argument("path", nargs="?", default=os.path.join("build", "example.fxl"))
    p = sub.add_parser("inspect", help="summarise an artifact")
    p.add_argument("path")
    p.add_argument("--nodes", action="store_true", help="also list every node")
    p.add_argument("--verify", action="store_true", help="also check every tensor's SHA-256")
    p.add_argument("--non-strict", action="store_true", help="ignore unlisted files instead of rejecting them")
    _add_progress(p, "--verify hashes the tensors")
    p = sub.add_parser("validate", help="check an artifact")
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="also check every tensor's SHA-256")
    p.add_argument("--non-strict", action="store_true", help="ignore unlisted files instead of rejecting them")
    _add_progress(p, "--verify hashes the tensors")
    p = sub.add_parser("dump", help="canonical dump, identical to fxlower-dump's")
    p.add_argument("path")
    p.add_argument("--non-strict", action="store_true", help="ignore unlisted files instead of rejecting them")
    p = sub.add_parser("clean", help="remove orphaned temporaries of killed exports to PATH")
    p.add_argument("path", help="the artifact path the exports wrote to")
    p = sub.add_parser(
        "export", help="load a model, trace, lift and export it",
        description="Load the model TARGET names, trace it (torch.fx.symbolic_trace, or a tracer keeping --leaf "
                    "classes as leaves), lift and export it, and print the summary. Random inputs: the k-th "
                    "--input is drawn from torch.Generator().manual_seed(k): torch.randn for floating dtypes, "
                    "torch.randint(0, 10) for integers, torch.randint(0, 2) for bool.")
    p.add_argument("target", metavar="TARGET",
                   help="package.module:attr or path/to/file.py:attr naming an nn.Module instance, a GraphModule "
                        "or a zero-argument factory (function or class) returning one")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the artifact directory to write")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", action="append", default=[], metavar="SHAPE[:DTYPE]",
                     help="one positional input, e.g. 1x3x224x224 or 4x16:int64 (default dtype float32); repeat "
                          "for each input; seeded random values (see above)")
    src.add_argument("--inputs", metavar="FILE.safetensors",
                     help="the inputs from a safetensors file whose keys are 0, 1, ... (the positions)")
    p.add_argument("--golden", nargs="?", const="outputs", choices=("outputs", "nodes"),
                   help="store golden data: the outputs (default) or every node's output too; needs inputs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact at PATH")
    p.add_argument("--leaf", action="append", default=[], metavar="CLASS",
                   help="keep instances of CLASS (Name in TARGET's module, or MODULE:Name) as leaf modules when "
                        "tracing; the class needs a lowering rule (repeatable)")
    p.add_argument("--core", action="store_true",
                   help="also write the core view (the program as Core ATen ops through torch.export, format "
                        "1.2): fxlower.export(..., core=True)")
    p.add_argument("--dynamic", action="append", default=[], metavar="INPUT:DIM[:MIN:MAX]",
                   help="with --core: dimension DIM of input INPUT (0-based positions) is a symbolic size, in "
                        "[MIN, MAX] when given (torch.export.Dim); repeatable")
    p.add_argument("--max-shard-bytes", type=_byte_count, metavar="N",
                   help="split the weights over files of at most N bytes of tensor data each (format 1.3); N is "
                        "bytes, or a number with K, M or G (binary: 4G = 4 << 30)")
    p.add_argument("--weights-from", metavar="SRC",
                   help="take the bytes of the model's meta tensors from a safetensors checkpoint: a file, a "
                        "directory of them or a *.safetensors.index.json (docs/scale.md)")
    _add_progress(p, "the tensor files are written")
    p = sub.add_parser("diff", help="compare two artifacts structurally",
                       description="Compare two artifacts: header fields, nodes per graph (op, target, args, kwargs, "
                                   "meta, lowering attribute by attribute) and tensors (dtype, shape, sha256). "
                                   "Exit 0 equal, 1 different, 2 error.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--values", action="store_true",
                   help="for changed tensors of equal shape, also the max absolute and relative difference")
    p.add_argument("--json", action="store_true", help="print JSON (shape documented in docs/cli.md)")
    p = sub.add_parser("view", help="write a self-contained HTML page showing an artifact",
                       description="Write ONE HTML file (no network needed to view it) showing the artifact's graphs: "
                                   "nested graphs collapsible, a side panel for the selected node, search; with a "
                                   "core view (format 1.2), both views side by side, linked.")
    p.add_argument("path", metavar="A")
    p.add_argument("-o", "--output", required=True, metavar="PAGE.html")
    return parser


_BYTE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byte_count(text: str) -> int:
    """``--max-shard-bytes``: a positive count of bytes, optionally with a binary unit K, M, G or T."""
    digits, unit = (text[:-1], text[-1].upper()) if text[-1:].isalpha() else (text, "")
    if unit not in _BYTE_UNITS or not digits.isdigit() or int(digits) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive byte count (e.g. 1048576, 512M, 4G)")
    return int(digits) * _BYTE_UNITS[unit]


def _export_cmd(args: argparse.Namespace) -> int:
    import inspect

    from . import cli_export
    from ..errors import UnsupportedModuleError
    from ..io.writing import export

    if args.golden and not (args.input or args.inputs):
        raise cli_export.CommandError("--golden needs inputs: give --input SHAPE[:DTYPE] or --inputs FILE", code=2)
    extra = {}
    if args.core:
        if "core" not in inspect.signature(export).parameters:
            raise cli_export.CommandError("--core needs the core view (format 1.2), which this fxlower does not "
                                          "have", code=2)
        extra["core"] = True
    inputs = cli_export.read_inputs(args.inputs) if args.inputs else (
        cli_export.make_inputs(args.input) if args.input else None)
    if args.dynamic:
        if not args.core:
            raise cli_export.CommandError("--dynamic needs --core (symbolic sizes are torch.export's, which only "
                                          "the core view runs)", code=2)
        extra["dynamic_shapes"] = cli_export.dynamic_shapes(args.dynamic, inputs)
    if args.max_shard_bytes is not None:
        extra["max_shard_bytes"] = args.max_shard_bytes
    if args.weights_from is not None:
        extra["weights_from"] = args.weights_from
    model, home = cli_export.load_target(args.target)
    leaves = tuple(cli_export.resolve_class(c, home) for c in args.leaf)
    gm = model if args.core and not leaves else cli_export.trace(model, leaves)
    golden = {None: False, "outputs": True, "nodes": "nodes"}[args.golden]
    try:
        s = export(gm, args.output, inputs, golden=golden, overwrite=args.overwrite, progress=args.progress,
                   **extra)
    except UnsupportedModuleError as e:
        listing = "; ".join(f"{t} ({', '.join(n for n, _ in uses)})" for t, uses in sorted(e.unsupported.items()))
        raise cli_export.CommandError(f"no lowering rule for {listing or e}: register one with "
                                      f"fxlower.register_module in the target's module") from e
    with load(s.path) as art:
        print(summary(art))
    print(f"written    {s.nodes} nodes, {s.tensors} tensors, {s.bytes_written} bytes")
    return 0


def _diff_cmd(args: argparse.Namespace) -> int:
    import json

    from .diff import diff, format_text

    try:
        with load(args.a) as a, load(args.b) as b:
            d = diff(a, b, values=args.values)
    except FxLowerError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(d.to_json(), indent=1, sort_keys=False))
    else:
        print(format_text(d, args.a, args.b))
    return 0 if d.equal else 1


def _view_cmd(args: argparse.Namespace) -> int:
    from .viewer import write_html

    with load(args.path) as art:
        size = write_html(art, args.output)
        count = sum(len(g.nodes) for g in art.manifest.graphs)
    print(f"wrote {args.output} ({_fmt_bytes(size)}, {count} nodes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2 on a usage error)."""
    args = _parser().parse_args(argv)
    if args.cmd == "diff":
        return _diff_cmd(args)
    if args.cmd == "export":
        from .cli_export import CommandError
        try:
            return _export_cmd(args)
        except CommandError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.code
        except FxLowerError as e:  # the library's message, the API's option named as the command line's
            print(f"error: {' '.join(str(e).split()).replace('overwrite=True', '--overwrite')}", file=sys.stderr)
            return 1
        except OSError as e:
            print(f"error: {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
            return 1
    try:
        if args.cmd == "view":
            return _view_cmd(args)
        if args.cmd == "demo":
            os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
            return _demo(args.path)
        if args.cmd == "clean":
            return _clean(args.path)
        strict = not args.non_strict
        if args.cmd == "inspect":
            art = load(args.path, strict=strict, verify=args.verify, progress=args.progress)
            print(summary(art, nodes=args.nodes))
            if args.verify:
                print(f"verify     {len(art.manifest.tensors)} tensors: all SHA-256 match")
        elif args.cmd == "validate":
            load(args.path, strict=strict, verify=args.verify, progress=args.progress)
            print(f"{args.path}: valid")
        else:
            from .dump import dump
            sys.stdout.write(dump(load(args.path, strict=strict)))
        return 0
    except FxLowerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the demo's directory, or the file system under an export
        print(f"error: {e.filename or args.path}: {e.strerror or e} (errno {e.errno})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
