"""Canonical names of ``call_function`` targets, the load-time allow-list, and user-registered functions.

Export writes every function target under one canonical name: the first public alias found in, in order,
``torch``, ``torch.nn.functional``, ``torch.linalg``, ``torch.fft``, ``torch.special``, ``operator``, ``math`` and a
few ``builtins`` (so ``_operator.add`` is written ``operator.add``, ``torch.functional.einsum`` is written
``torch.einsum``). Load resolves a name only through this table, built from modules fxlower itself imports, or
through :func:`register_function`; it never imports a module or looks up a name found in a file.

Format 1.2 (the core view) adds operators: an ``OpOverload`` is named ``namespace.name.overload``
(``aten.convolution.default``) and resolves only if it is in the Core ATen op set of the installed torch (every
``torch.ops.aten`` overload tagged ``torch.Tag.core``, enumerated once at import) or in :data:`CORE_EXTRA_OPS`;
the control-flow operators are ``higher_order.cond`` and ``higher_order.while_loop``. The Python callables
torch.export leaves in core graphs (:data:`CORE_PYTHON_FUNCTIONS`) are ordinary allow-list names.
"""

from __future__ import annotations

import builtins
import math
import operator
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import RegistrationError, UnsupportedTargetError

__all__ = ["function_name", "resolve_function", "register_function", "allowed_names", "is_allowed_method",
           "core_op_names", "is_core_target", "CORE_EXTRA_OPS", "CORE_HIGHER_ORDER", "CORE_PYTHON_FUNCTIONS"]

# Functions of these namespaces that do I/O, touch global state or run code are never allow-listed.
_DENIED = frozenset({
    "torch.load", "torch.save", "torch.from_file", "torch.compile", "torch.manual_seed", "torch.seed",
    "torch.initial_seed", "torch.set_grad_enabled", "torch.set_default_dtype", "torch.set_default_device",
    "torch.set_default_tensor_type", "torch.set_num_threads", "torch.set_num_interop_threads",
    "torch.set_printoptions", "torch.set_rng_state", "torch.set_flush_denormal", "torch.set_warn_always",
    "torch.use_deterministic_algorithms", "torch.set_deterministic_debug_mode", "torch.set_float32_matmul_precision",
    "torch.set_autocast_enabled", "torch.import_ir_module", "torch.import_ir_module_from_buffer",
    "torch.wait", "torch.fork", "torch.vmap", "torch.cond", "torch.while_loop", "torch.func",
    "torch.autocast_increment_nesting", "torch.autocast_decrement_nesting", "torch.clear_autocast_cache",
    "operator.call",  # calls any callable value, e.g. a bound method reached through getattr
})
_BUILTINS = ("getattr", "len", "abs", "min", "max", "round", "int", "float", "bool", "pow", "divmod")
# torch functions fx itself emits that are not public.
_EXTRA = (("torch._assert", torch._assert),)


def _build_table() -> tuple[dict[str, Callable], dict[int, str]]:
    by_name: dict[str, Callable] = {}
    by_id: dict[int, str] = {}

    def add(name: str, fn: object) -> None:
        if name in _DENIED or name in by_name:
            return
        if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)):
            return
        by_name[name] = fn
        by_id.setdefault(id(fn), name)

    torch_names = [n for n in dir(torch._C._VariableFunctions) if not n.startswith("_")]
    torch_names += list(torch.functional.__all__)
    for n in sorted(set(torch_names)):
        if hasattr(torch, n):
            add(f"torch.{n}", getattr(torch, n))
    for prefix, mod in (("torch.nn.functional", F), ("torch.linalg", torch.linalg), ("torch.fft", torch.fft),
                        ("torch.special", torch.special), ("operator", operator), ("math", math)):
        for n in sorted(vars(mod)):
            if not n.startswith("_"):
                add(f"{prefix}.{n}", getattr(mod, n))
    for n in _BUILTINS:
        add(f"builtins.{n}", getattr(builtins, n))
    for name, fn in _EXTRA:
        add(name, fn)
    return by_name, by_id


_ALLOWED, _ALLOWED_IDS = _build_table()

#: Operators outside ``torch.Tag.core`` that torch.export + ``run_decompositions()`` still emits for real models,
#: each with the reason: checks that compute nothing, and a few operators torch 2.13 cannot decompose.
CORE_EXTRA_OPS: dict[str, str] = {
    "aten._assert_scalar.default": "runtime assertion on a symbolic shape (deferred runtime asserts of dynamic "
                                   "shapes, torch._check on sizes)",
    "aten._assert_tensor_metadata.default": "torch.export's check of a tensor's dtype/device/layout before a "
                                            "conversion (Tensor.to, type_as)",
    "aten.sym_constrain_range_for_size.default": "range constraint of an unbacked size (from .item() / nonzero "
                                                 "used as a size)",
    "aten.sym_constrain_range.default": "range constraint of an unbacked int (torch._check_is_size, "
                                        "torch._constrain_as_value)",
    "aten._assert_async.msg": "torch._check on a tensor value",
    "aten.adaptive_max_pool2d.default": "not tagged core, and run_decompositions() has no decomposition for it in "
                                        "torch 2.13 (nn.AdaptiveMaxPool2d)",
    "aten.linalg_vector_norm.default": "not tagged core, kept by run_decompositions() in torch 2.13 "
                                       "(nn.PairwiseDistance, F.normalize, torch.norm)",
    "aten._trilinear.default": "not tagged core, kept by run_decompositions() in torch 2.13 (nn.Bilinear)",
}
#: Control-flow (higher-order) operators of core graphs: name -> the operator. Their graph-module arguments are
#: ``graph`` Values (subgraphs of the core view).
CORE_HIGHER_ORDER: dict[str, Callable] = {
    "higher_order.cond": torch.ops.higher_order.cond,
    "higher_order.while_loop": torch.ops.higher_order.while_loop,
}
#: Python callables torch.export leaves in core graphs (item access of multi-output ops; arithmetic and comparison
#: on SymInt sizes). Names as function_name writes them.
CORE_PYTHON_FUNCTIONS = frozenset({
    "operator.getitem", "operator.add", "operator.sub", "operator.mul", "operator.truediv", "operator.floordiv",
    "operator.mod", "operator.pow", "operator.neg", "operator.pos", "operator.eq", "operator.ne", "operator.lt",
    "operator.le", "operator.gt", "operator.ge", "operator.and_", "operator.or_", "operator.not_",
    "torch.sym_float", "torch.sym_int", "torch.sym_max", "torch.sym_min", "torch.sym_not", "torch.sym_ite",
    "torch.sym_sum", "math.ceil", "math.floor", "math.trunc",
})


def _build_core_table() -> tuple[dict[str, Callable], dict[int, str]]:
    """Core ATen overloads of the installed torch by name, plus CORE_EXTRA_OPS and the higher-order operators.

    Enumerated from torch's registry of operator schemas (``dir(torch.ops.aten)`` lists only the packets already
    touched): each ``aten::name.overload`` is fetched from ``torch.ops.aten`` and kept if tagged core. A name read
    from a file is only ever looked up in the resulting dict."""
    by_name: dict[str, Callable] = {}
    aten = torch.ops.aten
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, packet_name = schema.name.partition("::")
        if namespace != "aten":
            continue
        overload = schema.overload_name or "default"
        name = f"aten.{packet_name}.{overload}"
        if name in by_name:
            continue
        try:
            op = getattr(getattr(aten, packet_name), overload)
        except (AttributeError, RuntimeError):  # TorchScript-only builtins have no OpOverload
            continue
        if isinstance(op, torch._ops.OpOverload) and (torch.Tag.core in op.tags or name in CORE_EXTRA_OPS):
            by_name[name] = op
    by_name.update(CORE_HIGHER_ORDER)
    return by_name, {id(fn): name for name, fn in by_name.items()}


_CORE, _CORE_IDS = _build_core_table()
# torch.sym_* are plain Python functions of the torch package, not in the table above; only these few are added.
for _n in ("sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum"):
    if callable(getattr(torch, _n, None)) and f"torch.{_n}" not in _ALLOWED:
        _ALLOWED[f"torch.{_n}"] = getattr(torch, _n)
        _ALLOWED_IDS.setdefault(id(getattr(torch, _n)), f"torch.{_n}")


def core_op_names() -> frozenset[str]:
    """The operator names (``aten.*.*`` and ``higher_order.*``) that load: the Core ATen set of the installed
    torch, CORE_EXTRA_OPS and CORE_HIGHER_ORDER."""
    return frozenset(_CORE)


def is_core_target(name: str) -> bool:
    """Whether a core-graph call_function target resolves here (an operator above or a CORE_PYTHON_FUNCTIONS
    name)."""
    return name in _CORE or (name in CORE_PYTHON_FUNCTIONS and name in _ALLOWED)
_REGISTERED: dict[str, Callable] = {}
_REGISTERED_IDS: dict[int, str] = {}


def allowed_names() -> frozenset[str]:
    """Every built-in allow-listed function name."""
    return frozenset(_ALLOWED)


def function_name(fn: Callable) -> str:
    """The canonical name export writes for ``fn``: its allow-list name, else its registered name, else
    ``module.qualname`` (which loads only once registered)."""
    name = _ALLOWED_IDS.get(id(fn)) or _CORE_IDS.get(id(fn)) or _REGISTERED_IDS.get(id(fn))
    if name is not None:
        return name
    if isinstance(fn, torch._ops.OpOverload):  # an operator outside the Core ATen set: named, but does not load
        return f"{fn.namespace}.{fn._schema.name.split('::', 1)[-1]}.{fn._overloadname}"
    if isinstance(fn, torch._ops.HigherOrderOperator):
        return f"higher_order.{fn.name()}"
    module = getattr(fn, "__module__", None) or "<unknown>"
    if module == "_operator":
        module = "operator"
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


def resolve_function(name: str, where: str = "") -> Callable:
    """The callable for a canonical name, from the allow-list or the user's registrations only.

    Raises:
        UnsupportedTargetError: the name is neither allow-listed nor registered.
    """
    fn = _ALLOWED.get(name) or _CORE.get(name) or _REGISTERED.get(name)
    if fn is None:
        at = f" ({where})" if where else ""
        if name.startswith(("aten.", "higher_order.")):
            raise UnsupportedTargetError(
                f"operator '{name}'{at} is not in the Core ATen op set of this torch ({torch.__version__}) nor "
                f"among fxlower's admitted non-core operators; export with the default decomposition table "
                f"(run_decompositions()) so that only Core ATen operators remain, or load with the torch that "
                f"wrote the artifact")
        raise UnsupportedTargetError(
            f"call_function target '{name}'{at} is not on fxlower's allow-list and was not registered; if you "
            f"trust it, call fxlower.register_function(fn, name='{name}') before loading")
    return fn


def register_function(fn: Callable, name: str | None = None, *, replace: bool = False) -> Callable:
    """Allow ``fn`` as a ``call_function`` target on load (and name it so on export).

    Args:
        fn: the function (e.g. one wrapped with ``torch.fx.wrap`` that the tracer kept as a leaf).
        name: the name the exporter records; defaults to ``fn.__module__ + "." + fn.__qualname__``.
        replace: allow re-registering a name with another function.

    Returns:
        ``fn``, so this works as a decorator.

    Raises:
        RegistrationError: the name is allow-listed already, or registered to another function.
    """
    if not callable(fn):
        raise RegistrationError(f"register_function expects a callable, got {type(fn).__qualname__}")
    if name is None:
        name = f"{fn.__module__}.{fn.__qualname__}"
    if not isinstance(name, str) or not name or any(not p.isidentifier() for p in name.split(".")):
        raise RegistrationError(f"register_function: {name!r} is not a dotted name")
    if name in _ALLOWED or name in _CORE:
        raise RegistrationError(f"'{name}' is a built-in allow-listed function; it needs no registration")
    old = _REGISTERED.get(name)
    if old is not None and old is not fn and not replace:
        raise RegistrationError(f"'{name}' is already registered to another function; pass replace=True")
    if old is not None:
        _REGISTERED_IDS.pop(id(old), None)
    _REGISTERED[name] = fn
    _REGISTERED_IDS[id(fn)] = name
    return fn


def is_allowed_method(name: str) -> bool:
    """Whether a ``call_method`` target may be called on load: a public method of ``torch.Tensor``."""
    return (isinstance(name, str) and name.isidentifier() and not name.startswith("_")
            and callable(getattr(torch.Tensor, name, None)))
