"""Shared pieces: the module-type registry, attribute access below a child prefix, the function table for
function-valued attributes, and the simple leaves a composite calls (Linear, LayerNorm, Dropout, activations)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: module type name -> reference function ``f(attrs, *forward_args, **forward_kwargs)``.
MODULES: dict[str, Callable[..., Any]] = {}


class ReferenceError(Exception):
    """The reference cannot compute this case (unknown module type or function, or an input the semantics
    forbid); the message says which."""


def register(*type_names: str):
    def deco(fn):
        for name in type_names:
            if name in MODULES:
                raise ReferenceError(f"{name} registered twice")
            MODULES[name] = fn
        return fn
    return deco


def f64(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64)


def child(attrs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The attributes below ``prefix.`` with the prefix removed (the child's own record)."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in attrs.items() if k.startswith(p)}


def call_child(attrs: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> Any:
    """Call the child module ``prefix``: its type is the module-valued attribute ``prefix``, its attributes are
    those below ``prefix.``."""
    tname = attrs[prefix]
    fn = MODULES.get(tname)
    if fn is None:
        raise ReferenceError(f"child {prefix!r} has type {tname!r}, which has no reference implementation")
    return fn(child(attrs, prefix), *args, **kwargs)


def erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


#: function-valued attributes (canonical names) the reference knows.
FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "torch.nn.functional.relu": lambda x: np.maximum(x, 0.0),
    "torch.nn.functional.gelu": gelu,
}


def function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise ReferenceError(f"function {name!r} has no reference implementation")
    return fn


def apply_activation(attrs: dict[str, Any], prefix: str, x: np.ndarray) -> np.ndarray:
    """``activation``: a function-valued attribute (a canonical function name) or a child module (a module type
    name, its attributes below ``prefix.``). The artifact tells them apart by the Value kind; the test glue
    gives both as names, and a function name is never a module type name."""
    value = attrs[prefix]
    if value in FUNCTIONS:
        return FUNCTIONS[value](x)
    if value in MODULES:
        return call_child(attrs, prefix, x)
    raise ReferenceError(f"{prefix} = {value!r} is neither a known function nor a known module type")


@register("torch.nn.Identity", "torch.nn.Dropout", "torch.nn.Dropout1d", "torch.nn.Dropout2d",
          "torch.nn.Dropout3d", "torch.nn.AlphaDropout", "torch.nn.FeatureAlphaDropout")
def identity(attrs, input):
    return f64(input)


@register("torch.nn.ReLU")
def relu(attrs, input):
    return np.maximum(f64(input), 0.0)


@register("torch.nn.GELU")
def gelu_module(attrs, input):
    return gelu(f64(input), attrs.get("approximate", "none"))


@register("torch.nn.LeakyReLU")
def leaky_relu(attrs, input):
    x = f64(input)
    return np.where(x > 0, x, x * attrs["negative_slope"])


@register("torch.nn.Linear")
def linear(attrs, input):
    y = f64(input) @ f64(attrs["weight"]).T
    if attrs.get("bias") is not None:
        y = y + f64(attrs["bias"])
    return y


def linear_wb(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = x @ w.T
    return y if b is None else y + b
