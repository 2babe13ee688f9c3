"""Upsample, UpsamplingNearest2d, UpsamplingBilinear2d (docs/semantics.md, Upsampling)."""

from __future__ import annotations

import math

import numpy as np

from .common import ReferenceError, f64, register
from .pool import adaptive_pool

_MODE_RANK = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
_A = -0.75


def output_sizes(in_sizes, size, scale_factor):
    if size is not None:
        return list(size) if isinstance(size, (tuple, list)) else [size] * len(in_sizes)
    sf = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * len(in_sizes)
    return [math.floor(float(n) * float(f)) for n, f in zip(in_sizes, sf)]


def _kernel_scales(in_sizes, size, scale_factor, recompute):
    """The scale_factor per dim the kernel sees, or None (then in/out is used)."""
    if size is not None or recompute or scale_factor is None:
        return [None] * len(in_sizes)
    return list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * len(in_sizes)


def _nearest_index(n_in, n_out, scale, exact, shortcuts):
    """``shortcuts``: O == L and O == 2L are special-cased (nearest with 2 spatial dimensions only)."""
    o = np.arange(n_out)
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(n_in) / np.float32(n_out)
    if exact:
        src = np.floor((o.astype(np.float32) + np.float32(0.5)) * s)
    else:
        if shortcuts and n_out == n_in:
            return o
        if shortcuts and n_out == 2 * n_in:
            return o >> 1
        src = np.floor(o.astype(np.float32) * s)
    return np.minimum(src.astype(np.int64), n_in - 1)


def _linear_source(n_in, n_out, scale, align_corners, cubic):
    o = np.arange(n_out, dtype=np.float64)
    if align_corners:
        ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return o * ratio
    ratio = 1.0 / scale if scale is not None and scale > 0 else n_in / n_out
    src = ratio * (o + 0.5) - 0.5
    return src if cubic else np.maximum(src, 0.0)


def _linear_axis(x, axis, n_out, scale, align_corners):
    n_in = x.shape[axis]
    src = _linear_source(n_in, n_out, scale, align_corners, False)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    shape = [1] * x.ndim
    shape[axis] = n_out
    lam = lam.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - lam) + np.take(x, i1, axis=axis) * lam


def _cubic_weights(t):
    a = _A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    u = 1 - t
    w2 = ((a + 2) * u - (a + 3)) * u * u + 1
    w3 = ((a * (u + 1) - 5 * a) * (u + 1) + 8 * a) * (u + 1) - 4 * a
    return [w0, w1, w2, w3]


def _cubic_axis(x, axis, n_out, scale, align_corners):
    n_in = x.shape[axis]
    src = _linear_source(n_in, n_out, scale, align_corners, True)
    base = np.floor(src).astype(np.int64)
    t = src - base
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = 0.0
    for j, w in enumerate(_cubic_weights(t)):
        idx = np.clip(base - 1 + j, 0, n_in - 1)
        out = out + np.take(x, idx, axis=axis) * w.reshape(shape)
    return out


def interpolate(x, size, scale_factor, mode, align_corners, recompute_scale_factor):
    x = f64(x)
    rank = x.ndim - 2
    if mode in _MODE_RANK and _MODE_RANK[mode] != rank:
        raise ReferenceError(f"mode {mode!r} needs a rank-{_MODE_RANK[mode] + 2} input, got rank {x.ndim}")
    outs = output_sizes(x.shape[2:], size, scale_factor)
    scales = _kernel_scales(x.shape[2:], size, scale_factor, recompute_scale_factor)
    if mode in ("nearest", "nearest-exact"):
        for i in range(rank):
            x = np.take(x, _nearest_index(x.shape[2 + i], outs[i], scales[i], mode == "nearest-exact",
                                          rank == 2), axis=2 + i)
        return x
    if mode in ("linear", "bilinear", "trilinear"):
        for i in range(rank):
            x = _linear_axis(x, 2 + i, outs[i], scales[i], bool(align_corners))
        return x
    if mode == "bicubic":
        for i in range(rank):
            x = _cubic_axis(x, 2 + i, outs[i], scales[i], bool(align_corners))
        return x
    if mode == "area":
        return adaptive_pool(x, rank, outs, "avg")
    raise ReferenceError(f"unknown upsampling mode {mode!r}")


@register("torch.nn.Upsample", "torch.nn.UpsamplingNearest2d", "torch.nn.UpsamplingBilinear2d")
def upsample(attrs, input):
    return interpolate(input, attrs["size"], attrs["scale_factor"], attrs["mode"], attrs["align_corners"],
                       attrs["recompute_scale_factor"])
