"""What ``fxlower export`` needs besides :func:`fxlower.export`: load the model a TARGET names, build its inputs
from ``--input`` specs or a safetensors file, and trace it (optionally keeping user classes as leaves).

Every failure raises :class:`CommandError` with a one-line message and the exit code the command line uses
(2 for a malformed command line, 1 for a target that cannot be loaded, traced or exported).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

__all__ = ["CommandError", "load_target", "resolve_class", "parse_input_spec", "make_inputs", "read_inputs",
           "trace", "INPUT_DTYPES"]


class CommandError(Exception):
    """A failure of a command; ``str(e)`` is one line, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(" ".join(str(message).split()))
        self.code = code


# The dtype names --input accepts (torch's names), by the family their random values come from.
INPUT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}

_DIMS = re.compile(r"^(0|[1-9][0-9]*)(x(0|[1-9][0-9]*))*$")


def _split_target(spec: str, what: str) -> tuple[str, str]:
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise CommandError(f"{what} {spec!r} is not MODULE:ATTR or FILE.py:ATTR (e.g. mypkg.models:make_model "
                           f"or models.py:net)", code=2)
    return source, attr


def _import(source: str) -> Any:
    """The module ``source`` names: a ``.py`` file path or a dotted module name."""
    try:
        if source.endswith(".py"):
            path = os.path.abspath(source)
            if not os.path.isfile(path):
                raise CommandError(f"cannot import {source}: no such file")
            name = "fxlower_target_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
            known = sys.modules.get(name)
            if known is not None and getattr(known, "__file__", None) == path:
                return known  # imported once: TARGET and --leaf FILE.py:Class share its classes
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            directory = os.path.dirname(path)
            sys.path.insert(0, directory)  # so that the file imports its siblings
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(directory)
            return module
        return importlib.import_module(source)
    except CommandError:
        raise
    except BaseException as e:  # anything the imported code raises, SystemExit included
        if isinstance(e, KeyboardInterrupt):
            raise
        raise CommandError(f"cannot import {source}: {type(e).__name__}: {e}") from e


def _attr(module: Any, source: str, attr: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
            raise CommandError(f"{source} has no attribute {attr!r} (it defines: {', '.join(public) or 'nothing'})")
        obj = getattr(obj, part)
    return obj


def load_target(spec: str) -> tuple[nn.Module, Any]:
    """The module TARGET names, and the Python module it was found in.

    TARGET is ``package.module:attr`` or ``path/to/file.py:attr``; ``attr`` (dotted allowed) is an ``nn.Module``
    instance (a GraphModule included) or a zero-argument callable (a factory function or an ``nn.Module``
    class) returning one.
    """
    source, attr = _split_target(spec, "TARGET")
    module = _import(source)
    obj = _attr(module, source, attr)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise CommandError(f"{spec} is of type {type(obj).__name__}, expected an nn.Module instance or a "
                               f"zero-argument factory returning one")
        try:
            made = obj()
        except Exception as e:
            raise CommandError(f"calling {spec}() failed: {type(e).__name__}: {e} (a factory takes no "
                               f"arguments)") from e
        if not isinstance(made, nn.Module):
            raise CommandError(f"{spec}() returned an object of type {type(made).__name__}, expected an nn.Module")
        obj = made
    return obj, module


def resolve_class(spec: str, home: Any) -> type:
    """The class ``--leaf`` names: ``module:Class``, ``file.py:Class`` or a bare name in the target's module."""
    if ":" in spec:
        source, attr = _split_target(spec, "--leaf")
        cls = _attr(_import(source), source, attr)
    else:
        if not all(p.isidentifier() for p in spec.split(".")):
            raise CommandError(f"--leaf {spec!r} is not a class name (Name, or MODULE:Name)", code=2)
        cls = _attr(home, getattr(home, "__name__", "the target's module"), spec)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CommandError(f"--leaf {spec} is not an nn.Module class")
    return cls


def parse_input_spec(spec: str) -> tuple[tuple[int, ...], torch.dtype]:
    """``1x3x224x224`` or ``1x3x224x224:float16`` -> (shape, dtype); ``:int64`` alone is a 0-d tensor."""
    dims, _, dtype_name = spec.partition(":")
    dtype_name = dtype_name or "float32"
    if dtype_name not in INPUT_DTYPES:
        raise CommandError(f"--input {spec!r}: unknown dtype {dtype_name!r}; expected one of "
                           f"{', '.join(INPUT_DTYPES)}", code=2)
    if dims and not _DIMS.match(dims):
        raise CommandError(f"--input {spec!r}: the shape is not dimensions joined by 'x' (e.g. 1x3x224x224)",
                           code=2)
    return tuple(int(d) for d in dims.split("x")) if dims else (), INPUT_DTYPES[dtype_name]


def make_inputs(specs: list[str]) -> tuple[torch.Tensor, ...]:
    """Seeded random inputs: the k-th comes from ``torch.Generator().manual_seed(k)``: ``torch.randn`` (then
    cast) for floating dtypes, ``torch.randint(0, 10)`` for integers, ``torch.randint(0, 2)`` cast for bool."""
    out = []
    for k, spec in enumerate(specs):
        shape, dtype = parse_input_spec(spec)
        g = torch.Generator().manual_seed(k)
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=g).to(torch.bool)
        else:
            t = torch.randint(0, 10, shape, generator=g, dtype=torch.int64).to(dtype)
        out.append(t)
    return tuple(out)


def dynamic_shapes(specs: list[str], inputs: tuple | None) -> tuple:
    """``--dynamic INPUT:DIM[:MIN:MAX]`` specs as torch.export ``dynamic_shapes``: one entry per input (None for a
    static one), each a ``{dim: torch.export.Dim}``; the Dim of input i, dimension d is named ``in{i}_d{d}``."""
    if inputs is None:
        raise CommandError("--dynamic needs inputs: give --input SHAPE[:DTYPE] or --inputs FILE", code=2)
    shapes: list[dict | None] = [None] * len(inputs)
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 4) or not all(p.isdigit() for p in parts):
            raise CommandError(f"--dynamic {spec!r}: expected INPUT:DIM or INPUT:DIM:MIN:MAX with non-negative "
                               f"integers, e.g. 0:0 or 0:1:1:512", code=2)
        i, d = int(parts[0]), int(parts[1])
        if i >= len(inputs) or not isinstance(inputs[i], torch.Tensor) or d >= inputs[i].dim():
            raise CommandError(f"--dynamic {spec!r}: input {i} has no dimension {d} (the inputs' shapes: "
                               f"{[list(x.shape) for x in inputs]})", code=2)
        bounds = {} if len(parts) == 2 else {"min": int(parts[2]), "max": int(parts[3])}
        if bounds and not bounds["min"] <= inputs[i].shape[d] <= bounds["max"]:
            raise CommandError(f"--dynamic {spec!r}: the example size {inputs[i].shape[d]} of input {i} dimension "
                               f"{d} is outside [{bounds['min']}, {bounds['max']}]", code=2)
        shapes[i] = dict(shapes[i] or {})
        shapes[i][d] = torch.export.Dim(f"in{i}_d{d}", **bounds)
    return tuple(shapes)


def read_inputs(path: str) -> tuple[torch.Tensor, ...]:
    """The tensors of a safetensors file whose keys are exactly ``0``, ``1``, ... (the input positions)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as e:
        raise CommandError(f"--inputs {path}: cannot read it as safetensors: {e}", code=2) from e
    expected = [str(i) for i in range(len(tensors))]
    if sorted(tensors, key=lambda k: (len(k), k)) != expected:
        raise CommandError(f"--inputs {path}: keys must be 0..{len(tensors) - 1} (the input positions), found "
                           f"{', '.join(sorted(tensors)) or 'none'}", code=2)
    return tuple(tensors[k] for k in expected)


class _LeafTracer(fx.Tracer):
    def __init__(self, leaves: tuple[type, ...]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, leaves: tuple[type, ...] = ()) -> fx.GraphModule:
    """``model`` as a GraphModule: itself if it is one, else traced (symbolic_trace, or a tracer keeping
    ``leaves`` as leaf modules)."""
    if isinstance(model, fx.GraphModule):
        return model
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    try:
        if not leaves:
            return fx.symbolic_trace(model)
        graph = _LeafTracer(leaves).trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    except Exception as e:
        raise CommandError(f"tracing {name} failed: {type(e).__name__}: {e} -- keep the untraceable submodule "
                           f"as a leaf with --leaf CLASS (it then needs a lowering rule), or export through "
                           f"torch.export with --core") from e
