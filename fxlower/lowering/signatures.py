"""Signatures of the functions and methods a graph calls, so that a consumer binds arguments without PyTorch.

For every distinct ``call_function`` target and ``call_method`` name, the manifest lists its overloads
(``Manifest.functions`` / ``Manifest.methods``, docs/format.md), each a parameter list with names, kinds and
defaults; every call node records which overload its arguments bind to (``Node.overload``).

Where the parameters come from:

- Python functions (``torch.nn.functional.*``, ``operator.*``, a user's wrapped function): ``inspect.signature``.
- torch builtins (``torch.flatten``, ``torch.add``): the TorchScript schemas of the aten operator, through
  ``torch.fx.operator_schemas.get_signature_for_torch_op`` (all overloads, in its order).
- Tensor methods: the schemas of ``aten::<name>``, the tensor first (named ``input`` as the schemas do).
- Anything without a signature (``x.float()``, ``builtins.getattr``): the table below, else the catch-all
  overload ``(*args, **kwargs)``, which says honestly that nothing more is known.

The overload a node binds to is chosen the way Python would call it: the first overload that the node's
arguments bind to by Python's rules, preferring one whose tensor parameters receive tensors and whose number
parameters receive numbers. A Tensor method whose last positional parameter is an int list may be called with
those ints as separate positionals (``x.view(1, 2, 3)``); such a call binds with the ints packed into the list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch.fx.operator_schemas import get_signature_for_torch_op

from ..errors import ExportError
from ..format.schema import Overload, Param
from ..format.values import encode

__all__ = ["function_overloads", "method_overloads", "choose_overload", "to_schema", "CATCH_ALL", "PARAM_KINDS"]

#: How the format names Python's parameter kinds (docs/format.md, Param.kind).
PARAM_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}

_P = inspect.Parameter
#: ``(*args, **kwargs)``: the overload of a callable whose parameters are not known.
CATCH_ALL = inspect.Signature([_P("args", _P.VAR_POSITIONAL), _P("kwargs", _P.VAR_KEYWORD)])

#: Callables whose signature neither inspect nor the TorchScript schemas give.
_KNOWN: dict[str, list[inspect.Signature]] = {
    "builtins.getattr": [inspect.Signature([_P("object", _P.POSITIONAL_ONLY), _P("name", _P.POSITIONAL_ONLY)]),
                         inspect.Signature([_P("object", _P.POSITIONAL_ONLY), _P("name", _P.POSITIONAL_ONLY),
                                            _P("default", _P.POSITIONAL_ONLY)])],
}
_NO_ARG_METHODS = ("float", "double", "half", "bfloat16", "int", "long", "short", "bool", "byte", "char", "cpu",
                   "dim", "numel", "element_size", "is_contiguous", "is_floating_point")
for _m in _NO_ARG_METHODS:
    _KNOWN[f"Tensor.{_m}"] = [inspect.Signature([_P("input", _P.POSITIONAL_ONLY)])]
_KNOWN["Tensor.float"] = _KNOWN["Tensor.double"] = _KNOWN["Tensor.half"] = [inspect.Signature(
    [_P("input", _P.POSITIONAL_ONLY), _P("memory_format", _P.KEYWORD_ONLY, default=torch.preserve_format)])]

#: TorchScript writes enum defaults as ints; these are their meanings (c10's MemoryFormat and Layout enums).
_TS_MEMORY_FORMATS = {0: torch.contiguous_format, 1: torch.preserve_format, 2: torch.channels_last,
                      3: torch.channels_last_3d}
_TS_LAYOUTS = {0: torch.strided, 1: torch.sparse_coo}


def _default(name: str, value: Any, where: str) -> tuple[Any, bool]:
    """(encoded default, required)."""
    if value is inspect.Parameter.empty:
        return None, True
    if type(value) is int and name == "memory_format" and value in _TS_MEMORY_FORMATS:
        value = _TS_MEMORY_FORMATS[value]
    elif type(value) is int and name == "layout" and value in _TS_LAYOUTS:
        value = _TS_LAYOUTS[value]
    try:
        return encode(value, where=f"{where} default of '{name}'"), False
    except ExportError as e:
        raise ExportError(f"{e}; the signature of this callable cannot be recorded") from e


def _overload(sig: inspect.Signature, where: str) -> Overload:
    params = []
    for p in sig.parameters.values():
        default, required = _default(p.name, p.default, where)
        if p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD):
            default, required = None, False
        params.append(Param(name=p.name, kind=PARAM_KINDS[p.kind], default=default, required=required))
    ret = sig.return_annotation
    returns = "" if ret is inspect.Signature.empty else (ret if isinstance(ret, str) else _type_text(ret))
    return Overload(params=params, returns=returns)


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, type):
        return "Tensor" if annotation is torch.Tensor else annotation.__name__
    return str(annotation).replace("torch.Tensor", "Tensor").replace("typing.", "")


def _function_signatures(fn: Callable, name: str) -> list[inspect.Signature]:
    if name in _KNOWN:
        return _KNOWN[name]
    if inspect.isfunction(fn):  # Python code (torch.nn.functional.*, torch.split, a user's function): its own names
        return [inspect.signature(fn)]
    sigs = None
    try:
        sigs = get_signature_for_torch_op(fn)
    except Exception:  # noqa: BLE001 -- fx raises assorted errors for callables it does not know
        sigs = None
    if sigs:
        return list(sigs)
    try:
        return [inspect.signature(fn)]
    except (TypeError, ValueError):
        return [CATCH_ALL]


def _method_signatures(name: str) -> list[inspect.Signature]:
    if f"Tensor.{name}" in _KNOWN:
        return _KNOWN[f"Tensor.{name}"]
    from torch.fx.operator_schemas import _torchscript_schema_to_signature  # the one converter fx has
    sigs = []
    for schema in torch._C._jit_get_schemas_for_operator(f"aten::{name}"):
        try:
            sigs.append(_torchscript_schema_to_signature(schema))
        except Exception:  # noqa: BLE001 -- an overload fx cannot express is left out
            continue
    return sigs or [CATCH_ALL]


def function_overloads(fn: Callable, name: str) -> list[inspect.Signature]:
    """The overloads of the ``call_function`` target ``fn`` (canonical name ``name``), in order."""
    return _function_signatures(fn, name)


def method_overloads(name: str) -> list[inspect.Signature]:
    """The overloads of the Tensor method ``name``, the tensor first."""
    return _method_signatures(name)


def to_schema(sigs: Sequence[inspect.Signature], where: str) -> list[Overload]:
    """The manifest form of a list of overloads."""
    return [_overload(s, where) for s in sigs]


# ------------------------------------------------------------------------------------------------ binding

def _is_tensor_arg(value: Any) -> bool | None:
    """True for a tensor, False for a non-tensor, None when unknown (a node without metadata)."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, fx.Node):
        val = value.meta.get("val", value.meta.get("tensor_meta"))
        if val is None:
            meta = value.meta.get("fxlower_meta")
            return None if meta is None else meta.get("t") == "tensor"
        return isinstance(val, torch.Tensor) or hasattr(val, "stride")
    return False


def _annotation_says_tensor(annotation: Any) -> bool | None:
    if annotation is inspect.Parameter.empty:
        return None
    text = _type_text(annotation)
    if text in ("Tensor", "Optional[Tensor]"):
        return True
    if text in ("int", "float", "bool", "Number", "numbers.Number", "complex", "Optional[int]", "Optional[float]",
                "Optional[bool]", "Optional[Number]", "Optional[numbers.Number]") or "Number" in text:
        return False
    return None


def _fits(sig: inspect.Signature, bound: inspect.BoundArguments, kinds: Callable[[Any], bool | None]) -> bool:
    for pname, value in bound.arguments.items():
        param = sig.parameters[pname]
        if param.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD):
            continue
        want = _annotation_says_tensor(param.annotation)
        got = kinds(value)
        if want is not None and got is not None and want != got and value is not None:
            return False
    return True


def _list_form(sig: inspect.Signature, args: tuple) -> tuple | None:
    """``args`` with trailing ints packed into the last positional int-list parameter (``x.view(1, 2, 3)``)."""
    positional = [p for p in sig.parameters.values() if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    if not positional or len(args) <= len(positional):
        return None
    last = positional[-1]
    if "List[int]" not in _type_text(last.annotation):
        return None
    head = len(positional) - 1
    return tuple(args[:head]) + (tuple(args[head:]),)


def choose_overload(sigs: Sequence[inspect.Signature], args: tuple, kwargs: dict[str, Any],
                    kinds: Callable[[Any], bool | None] = _is_tensor_arg) -> int | None:
    """The index of the overload ``args``/``kwargs`` bind to, or None when none does.

    Preference: an overload that binds and whose annotated tensor/number parameters receive tensors/numbers;
    else the first that binds; the int-list varargs form is tried after the plain form.
    """
    first_binding = None
    for form in ("plain", "list"):
        for i, sig in enumerate(sigs):
            call_args = args if form == "plain" else _list_form(sig, args)
            if call_args is None:
                continue
            try:
                bound = sig.bind(*call_args, **kwargs)
            except TypeError:
                continue
            if _fits(sig, bound, kinds):
                return i
            if first_binding is None:
                first_binding = i
        if first_binding is not None:
            return first_binding
    return None
