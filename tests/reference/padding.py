"""Padding: the pad operation (constant, reflect, replicate, circular) and the padding modules
(docs/semantics.md, Padding)."""

from __future__ import annotations

import numpy as np

from .common import ReferenceError, f64, register


def _index(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Source index along one dim of size ``n`` for each of the ``lo + n + hi`` output positions (lo/hi >= 0)."""
    j = np.arange(-lo, n + hi)
    if mode == "reflect":
        if lo >= n or hi >= n:
            raise ReferenceError(f"reflect padding ({lo}, {hi}) must be < the dim size {n}")
        j = np.abs(j)
        return np.where(j > n - 1, 2 * (n - 1) - j, j)
    if mode == "replicate":
        if n == 0:
            raise ReferenceError("replicate padding of an empty dim")
        return np.clip(j, 0, n - 1)
    if mode == "circular":
        if lo > n or hi > n:
            raise ReferenceError(f"circular padding ({lo}, {hi}) must be <= the dim size {n}")
        return np.mod(j, n)
    raise ReferenceError(f"unknown padding mode {mode!r}")


def pad(x: np.ndarray, pads: tuple[int, ...], mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """``pads`` = (left, right) of the last dim, then of the dim before it, ...; negative values crop."""
    x = f64(x)
    if len(pads) % 2 or len(pads) // 2 > x.ndim:
        raise ReferenceError(f"padding {pads} does not fit a rank-{x.ndim} input")
    for i in range(len(pads) // 2):
        axis = x.ndim - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        # crop first (negative amounts), then pad
        n = x.shape[axis]
        start, stop = max(-lo, 0), n - max(-hi, 0)
        x = np.take(x, np.arange(start, stop), axis=axis)
        lo, hi = max(lo, 0), max(hi, 0)
        if mode == "constant":
            widths = [(0, 0)] * x.ndim
            widths[axis] = (lo, hi)
            x = np.pad(x, widths, mode="constant", constant_values=value)
        else:
            x = np.take(x, _index(x.shape[axis], lo, hi, mode), axis=axis)
    return x


@register("torch.nn.ConstantPad1d", "torch.nn.ConstantPad2d", "torch.nn.ConstantPad3d",
          "torch.nn.ZeroPad1d", "torch.nn.ZeroPad2d", "torch.nn.ZeroPad3d")
def constant_pad(attrs, input):
    return pad(input, attrs["padding"], "constant", attrs["value"])


@register("torch.nn.ReflectionPad1d", "torch.nn.ReflectionPad2d", "torch.nn.ReflectionPad3d")
def reflection_pad(attrs, input):
    return pad(input, attrs["padding"], "reflect")


@register("torch.nn.ReplicationPad1d", "torch.nn.ReplicationPad2d", "torch.nn.ReplicationPad3d")
def replication_pad(attrs, input):
    return pad(input, attrs["padding"], "replicate")


@register("torch.nn.CircularPad1d", "torch.nn.CircularPad2d", "torch.nn.CircularPad3d")
def circular_pad(attrs, input):
    return pad(input, attrs["padding"], "circular")
