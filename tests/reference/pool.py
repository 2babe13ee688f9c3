"""Pooling: MaxPool, AvgPool, LPPool, AdaptiveAvgPool, AdaptiveMaxPool, 1d/2d/3d (docs/semantics.md, Pooling)."""

from __future__ import annotations

import itertools
import math

import numpy as np

from .common import ReferenceError, f64, register


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def pool_out_size(size, k, s, p, d, ceil_mode):
    """Output length of a sliding window: the last window must start inside the input or the left padding."""
    num = size + 2 * p - d * (k - 1) - 1
    if num < 0:
        raise ReferenceError(f"pooling window (k={k}, d={d}) larger than the padded input ({size}+2*{p})")
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _batched(x, rank):
    x = f64(x)
    if x.ndim == rank + 1:
        return x[None], True
    if x.ndim != rank + 2:
        raise ReferenceError(f"expected a rank {rank + 1} or {rank + 2} input, got rank {x.ndim}")
    return x, False


def _spatial_flat(idx, shape):
    flat = 0
    for i, n in zip(idx, shape):
        flat = flat * n + i
    return flat


def max_pool(x, rank, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x, unbatched = _batched(x, rank)
    k, p, d = _tuple(kernel_size, rank), _tuple(padding, rank), _tuple(dilation, rank)
    s = _tuple(stride, rank) if stride is not None else k
    spatial = x.shape[2:]
    outs = [pool_out_size(spatial[i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(rank)]
    y = np.empty(x.shape[:2] + tuple(outs))
    ind = np.empty(x.shape[:2] + tuple(outs), dtype=np.int64)
    for o in itertools.product(*(range(n) for n in outs)):
        axes = [[o[i] * s[i] - p[i] + j * d[i] for j in range(k[i])] for i in range(rank)]
        axes = [[a for a in ax if 0 <= a < spatial[i]] for i, ax in enumerate(axes)]
        positions = list(itertools.product(*axes))
        block = np.stack([x[(slice(None), slice(None)) + pos] for pos in positions], axis=-1)
        arg = np.argmax(block, axis=-1)
        y[(slice(None), slice(None)) + o] = np.take_along_axis(block, arg[..., None], -1)[..., 0]
        flat = np.array([_spatial_flat(pos, spatial) for pos in positions])
        ind[(slice(None), slice(None)) + o] = flat[arg]
    if unbatched:
        y, ind = y[0], ind[0]
    return (y, ind) if return_indices else y


def avg_pool(x, rank, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
    x, unbatched = _batched(x, rank)
    k, p = _tuple(kernel_size, rank), _tuple(padding, rank)
    s = _tuple(stride, rank) if stride is not None else k
    spatial = x.shape[2:]
    outs = [pool_out_size(spatial[i], k[i], s[i], p[i], 1, ceil_mode) for i in range(rank)]
    y = np.empty(x.shape[:2] + tuple(outs))
    for o in itertools.product(*(range(n) for n in outs)):
        starts = [o[i] * s[i] - p[i] for i in range(rank)]
        ends = [min(starts[i] + k[i], spatial[i] + p[i]) for i in range(rank)]
        pool_size = math.prod(e - b for b, e in zip(starts, ends))
        starts = [max(b, 0) for b in starts]
        ends = [min(e, spatial[i]) for i, e in enumerate(ends)]
        window = x[(slice(None), slice(None)) + tuple(slice(b, e) for b, e in zip(starts, ends))]
        total = window.reshape(window.shape[:2] + (-1,)).sum(axis=-1)
        if divisor_override:
            divisor = divisor_override
        elif count_include_pad:
            divisor = pool_size
        else:
            divisor = math.prod(e - b for b, e in zip(starts, ends))
        y[(slice(None), slice(None)) + o] = total / divisor
    return y[0] if unbatched else y


def lp_pool(x, rank, norm_type, kernel_size, stride, ceil_mode):
    k = _tuple(kernel_size, rank)
    avg = avg_pool(f64(x) ** norm_type, rank, k, stride, 0, ceil_mode, True)
    return (avg * math.prod(k)) ** (1.0 / norm_type)


def _adaptive_bounds(size, out):
    return [(i * size // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_pool(x, rank, output_size, kind, return_indices=False):
    x, unbatched = _batched(x, rank)
    spatial = x.shape[2:]
    outs = [spatial[i] if o is None else o for i, o in enumerate(_tuple(output_size, rank))]
    bounds = [_adaptive_bounds(spatial[i], outs[i]) for i in range(rank)]
    y = np.empty(x.shape[:2] + tuple(outs))
    ind = np.empty(x.shape[:2] + tuple(outs), dtype=np.int64)
    for o in itertools.product(*(range(n) for n in outs)):
        win = [bounds[i][o[i]] for i in range(rank)]
        window = x[(slice(None), slice(None)) + tuple(slice(b, e) for b, e in win)]
        flatwin = window.reshape(window.shape[:2] + (-1,))
        if kind == "avg":
            y[(slice(None), slice(None)) + o] = flatwin.mean(axis=-1)
        else:
            arg = np.argmax(flatwin, axis=-1)
            y[(slice(None), slice(None)) + o] = np.take_along_axis(flatwin, arg[..., None], -1)[..., 0]
            positions = list(itertools.product(*(range(b, e) for b, e in win)))
            flat = np.array([_spatial_flat(pos, spatial) for pos in positions])
            ind[(slice(None), slice(None)) + o] = flat[arg]
    if unbatched:
        y, ind = y[0], ind[0]
    return (y, ind) if return_indices else y


def _register_rank(rank):
    @register(f"torch.nn.MaxPool{rank}d")
    def max_pool_module(attrs, input):
        return max_pool(input, rank, attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["dilation"],
                        attrs["ceil_mode"], attrs["return_indices"])

    @register(f"torch.nn.AvgPool{rank}d")
    def avg_pool_module(attrs, input):
        return avg_pool(input, rank, attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["ceil_mode"],
                        attrs["count_include_pad"], attrs.get("divisor_override"))

    @register(f"torch.nn.LPPool{rank}d")
    def lp_pool_module(attrs, input):
        return lp_pool(input, rank, attrs["norm_type"], attrs["kernel_size"], attrs["stride"], attrs["ceil_mode"])

    @register(f"torch.nn.AdaptiveAvgPool{rank}d")
    def adaptive_avg_module(attrs, input):
        return adaptive_pool(input, rank, attrs["output_size"], "avg")

    @register(f"torch.nn.AdaptiveMaxPool{rank}d")
    def adaptive_max_module(attrs, input):
        return adaptive_pool(input, rank, attrs["output_size"], "max", attrs["return_indices"])


for _rank in (1, 2, 3):
    _register_rank(_rank)
