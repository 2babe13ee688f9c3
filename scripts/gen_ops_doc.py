#!/usr/bin/env python3
"""Render docs/ops.md, the operator coverage of fxlower-run, from the runtime's own registry.

Usage:
    python3 scripts/gen_ops_doc.py           # (re)write docs/ops.md from `fxlower-run --list-ops`
    python3 scripts/gen_ops_doc.py --check   # exit 1 if docs/ops.md differs from a fresh render
    python3 scripts/gen_ops_doc.py --binary PATH   # another fxlower-run (default: cpp/build/fxlower-run,
                                                   # or $FXLOWER_RUN)

The output depends only on the registry that `fxlower-run --list-ops` prints and on fxlower's built-in rule
list, never on the time or the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "ops.md"
DOC_NAME = "docs/ops.md"
DEFAULT_BINARY = REPO / "cpp" / "build" / "fxlower-run"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KINDS = ("module", "function", "method")

#: The call_function targets of the core views of the test zoo (tests/models.py): what
#: torch.export.export(...).run_decompositions() produces for each model under torch 2.13. tests/test_runtime.py
#: recomputes it by exporting the zoo and fails when it changes.
ZOO_CORE_OPS = (
    "aten._adaptive_avg_pool2d.default",
    "aten._assert_tensor_metadata.default",
    "aten._embedding_bag.default",
    "aten._log_softmax.default",
    "aten._native_batch_norm_legit.no_stats",
    "aten._native_batch_norm_legit_no_training.default",
    "aten._softmax.default",
    "aten._to_copy.default",
    "aten._trilinear.default",
    "aten.abs.default",
    "aten.adaptive_max_pool2d.default",
    "aten.add.Scalar",
    "aten.add.Tensor",
    "aten.addmm.default",
    "aten.amax.default",
    "aten.any.dim",
    "aten.arange.start_step",
    "aten.avg_pool2d.default",
    "aten.avg_pool3d.default",
    "aten.bmm.default",
    "aten.cat.default",
    "aten.clamp.Tensor",
    "aten.clamp.default",
    "aten.clone.default",
    "aten.constant_pad_nd.default",
    "aten.convolution.default",
    "aten.copy.default",
    "aten.div.Tensor",
    "aten.elu.default",
    "aten.embedding.default",
    "aten.empty.memory_format",
    "aten.eq.Scalar",
    "aten.exp.default",
    "aten.expand.default",
    "aten.expm1.default",
    "aten.flip.default",
    "aten.full.default",
    "aten.full_like.default",
    "aten.ge.Scalar",
    "aten.gelu.default",
    "aten.gt.Scalar",
    "aten.hardtanh.default",
    "aten.index.Tensor",
    "aten.index_put.default",
    "aten.le.Scalar",
    "aten.leaky_relu.default",
    "aten.linalg_vector_norm.default",
    "aten.log1p.default",
    "aten.logical_and.default",
    "aten.logical_not.default",
    "aten.lt.Scalar",
    "aten.max_pool2d_with_indices.default",
    "aten.max_pool3d_with_indices.default",
    "aten.maximum.default",
    "aten.mean.dim",
    "aten.minimum.default",
    "aten.mm.default",
    "aten.mul.Scalar",
    "aten.mul.Tensor",
    "aten.native_group_norm.default",
    "aten.native_layer_norm.default",
    "aten.ne.Scalar",
    "aten.neg.default",
    "aten.permute.default",
    "aten.pow.Tensor_Scalar",
    "aten.relu.default",
    "aten.repeat.default",
    "aten.rsqrt.default",
    "aten.scalar_tensor.default",
    "aten.select.int",
    "aten.sigmoid.default",
    "aten.sign.default",
    "aten.slice.Tensor",
    "aten.slice_scatter.default",
    "aten.split_with_sizes.default",
    "aten.squeeze.dims",
    "aten.sub.Tensor",
    "aten.sum.dim_IntList",
    "aten.tanh.default",
    "aten.unsqueeze.default",
    "aten.upsample_bilinear2d.vec",
    "aten.upsample_nearest2d.vec",
    "aten.view.default",
    "aten.where.self",
    "operator.getitem",
)

#: The control-flow operators the runtime executes itself (their branches and bodies are core graphs).
CONTROL_FLOW = ("torch.ops.higher_order.cond", "torch.ops.higher_order.while_loop")


def default_binary() -> Path:
    return Path(os.environ.get("FXLOWER_RUN", str(DEFAULT_BINARY)))


def list_ops(binary: Path) -> str:
    """The text `fxlower-run --list-ops` prints: one `kind name` line per registered operation."""
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} does not exist; build it first: "
                                "cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release && cmake --build cpp/build -j2")
    proc = subprocess.run([str(binary), "--list-ops"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} --list-ops failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def parse(listing: str) -> dict[str, list[str]]:
    ops: dict[str, list[str]] = {k: [] for k in KINDS}
    for line in listing.splitlines():
        if not line.strip():
            continue
        kind, _, name = line.partition(" ")
        if kind not in ops or not name:
            raise ValueError(f"unexpected --list-ops line: {line!r}")
        ops[kind].append(name)
    return {k: sorted(set(v)) for k, v in ops.items()}


def _builtin_rule_types() -> list[str]:
    from fxlower.lowering import book
    from fxlower.lowering._builtin_rules import BUILTIN_TYPES
    return sorted(book.type_name(c) for c in BUILTIN_TYPES)


def _code(s: str) -> str:
    return f"`{s}`"


def _grid(names: list[str], columns: int = 3) -> list[str]:
    """A table of `columns` names per row, column-major so that each column reads alphabetically."""
    if not names:
        return ["(none)"]
    rows = (len(names) + columns - 1) // columns
    lines = ["|" + " |" * columns, "|" + "---|" * columns]
    for r in range(rows):
        cells = []
        for c in range(columns):
            i = c * rows + r
            cells.append(_code(names[i]) if i < len(names) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _namespace(name: str) -> str:
    for prefix in ("torch.nn.functional.", "torch.special.", "torch.linalg.", "torch.", "operator.", "math.",
                   "builtins."):
        if name.startswith(prefix):
            return prefix[:-1]
    return name.rsplit(".", 1)[0]


def render(listing: str) -> str:
    """The text of docs/ops.md for the registry printed by `fxlower-run --list-ops`."""
    ops = parse(listing)
    modules, functions, methods = ops["module"], ops["function"], ops["method"]
    rules = _builtin_rule_types()
    missing = [t for t in rules if t not in set(modules)]
    lines = [
        "# fxlower-run operator coverage",
        "",
        "<!-- Generated by scripts/gen_ops_doc.py from `fxlower-run --list-ops`. Do not edit by hand. -->",
        "",
        "This file is generated by `scripts/gen_ops_doc.py` from the registry of the C++ reference runtime "
        "(`cpp/runtime/`) and must not be edited by hand: register the operation in the runtime, rebuild, then "
        "run `python3 scripts/gen_ops_doc.py` (`--check` tells whether this file is stale).",
        "",
        f"Registered: **{len(modules)}** leaf module types, **{len(functions)}** functions and "
        f"**{len(methods)}** tensor methods.",
        "",
        "How a node finds its handler:",
        "",
        "- `call_module` of a leaf module: its lowering record's `module_type`, with the record's `attrs` as the "
        "module's configuration and weights (`docs/rules.md`). A `call_module` of a nested graph runs that graph.",
        "- `call_function`: the canonical target name (`docs/format.md` section 3.1).",
        "- `call_method`: the method name. An in-place method `name_` without a handler of its own runs `name` "
        "and writes the result into its first argument, as do leaf modules with `inplace=True`, functions "
        "called with `inplace=True` and `operator.i*`.",
        "",
        "A node whose operation is not listed makes `fxlower-run` fail before executing anything, with a "
        "message naming the node and its target. Semantics are those of PyTorch inference (`eval()`, "
        "`torch.no_grad()`): dropout is the identity, batch norm uses its running statistics. Float16 and "
        "bfloat16 tensors are computed in float32 and rounded to their dtype after each node; float64 is "
        "computed in float64; integer dtypes in int64.",
        "",
        "## Running",
        "",
        "```",
        "fxlower-run DIR [--view module|core] [--inputs FILE] [--out FILE] [--check] [--threads N] [--repeat N] [--profile]",
        "fxlower-run --list-ops",
        "```",
        "",
        "- Inputs are the artifact's golden inputs, or the tensors of a safetensors file (`--inputs`, keys `0`, `1`, "
        "... in positional order; a missing trailing input takes the placeholder's default).",
        "- `--out FILE` writes the output tensors, flattened in order (tuples, lists, dict values), under the keys "
        "`0`, `1`, ... and in their own dtypes; non-tensor leaves are not written.",
        "- `--check` compares every output with the golden one (`|a - e| <= atol + rtol * |e|` with the artifact's "
        "tolerance for the dtype, NaN equal to NaN, integers and bools exact) and prints each output's largest "
        "absolute and relative error. With `golden=\"nodes\"` it also compares every root node's result as it is "
        "computed and names the first node, in graph order, that diverges.",
        "- `--threads N` (default: the hardware concurrency) sizes the runtime's thread pool; OpenBLAS runs "
        "single-threaded inside it. `--repeat N` times N executions (load excluded, after one warm-up run) and "
        "prints their median; `--profile` the time per operation.",
        "- Exit status: 0 success, 1 a `--check` mismatch, 2 a usage, load or runtime error (an unsupported "
        "operation is reported before anything runs).",
        "- `--view core` runs the core view of a format 1.2 artifact (Core ATen operators, below) instead of the "
        "module view; an artifact without a module view runs its core view by default. Its outputs are the user "
        "outputs in order (compared with the golden outputs flattened); `--check` with `golden=\"nodes\"` "
        "compares the core root nodes with `golden.core_nodes`. Shape symbols are bound from the inputs' "
        "dimensions and checked against their ranges first (an input outside a range is an error naming the "
        "symbol and the range, exit 2).",
        "",
        f"## Leaf modules ({len(modules)})",
        "",
        *_grid(modules),
        "",
        f"Built-in lowering rules without a runtime handler ({len(missing)}): "
        + (", ".join(_code(m) for m in missing) if missing else "none") + ".",
        "",
        f"## Functions ({len(functions)})",
        "",
    ]
    aten = [f for f in functions if f.startswith("aten.")]
    functions = [f for f in functions if not f.startswith("aten.")]
    lines[lines.index(f"## Functions ({len(ops['function'])})")] = f"## Functions ({len(functions)})"
    groups: dict[str, list[str]] = {}
    for f in functions:
        groups.setdefault(_namespace(f), []).append(f)
    for ns in sorted(groups):
        names = groups[ns]
        lines += [f"### `{ns}` ({len(names)})", "", *_grid(names), ""]
    lines += [f"## Tensor methods ({len(methods)})", "", *_grid(methods, 4), ""]
    covered = set(aten) | set(functions)
    zoo_missing = [op for op in ZOO_CORE_OPS if op not in covered and op not in CONTROL_FLOW]
    lines += [
        f"## Core ATen operators: the core ops the runtime covers ({len(aten)})",
        "",
        "The core view of a format 1.2 artifact (`fxlower.export(..., core=True)`) is a graph of Core ATen "
        "operators, registered under their qualified names (`aten.<name>.<overload>`). A node's arguments are "
        "bound to the operator's schema (`core.ops`) positionally, then by name, then with the schema's defaults; "
        "each handler forwards to the module view's handlers and kernels. The same handlers serve `aten.*` "
        "targets of a module view derived from a core view. `operator.getitem` and the other Python callables "
        "torch.export leaves are the functions above; " + " and ".join(_code(c) for c in CONTROL_FLOW) +
        " run their branch or body graphs.",
        "",
        *_grid(aten),
        "",
        f"Operators of the test zoo's core views ({len(ZOO_CORE_OPS)}, from `torch.export` + "
        "`run_decompositions()` on `tests/models.py`): " + ", ".join(_code(op) for op in ZOO_CORE_OPS) + ".",
        "",
        "Not covered: " + (", ".join(_code(op) for op in zoo_missing) if zoo_missing else "none") + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {DOC_NAME} is missing or differs from a fresh render; write nothing")
    parser.add_argument("--binary", type=Path, default=None, help="the fxlower-run to ask (default: %(default)s)")
    args = parser.parse_args(argv)
    binary = args.binary or default_binary()
    try:
        text = render(list_ops(binary))
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else None
        if current != text:
            why = "is missing" if current is None else "is stale"
            print(f"{DOC_NAME} {why}; run: python3 scripts/gen_ops_doc.py", file=sys.stderr)
            return 1
        print(f"{DOC_NAME} is up to date")
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8", newline="\n")
    ops = parse(list_ops(binary))
    print(f"wrote {DOC_NAME} ({', '.join(f'{len(ops[k])} {k}s' for k in KINDS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
