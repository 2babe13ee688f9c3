"""Convolutions and transposed convolutions, 1d/2d/3d (docs/semantics.md, Convolution)."""

from __future__ import annotations

import itertools

import numpy as np

from .common import ReferenceError, f64, register
from .padding import pad

_RANK = {f"torch.nn.{k}{d}d": d for k in ("Conv", "ConvTranspose") for d in (1, 2, 3)}


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def same_padding(kernel_size, dilation):
    """(left, right) per spatial dim for padding='same': total d*(k-1), left = total // 2."""
    out = []
    for k, d in zip(kernel_size, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return out


def conv_nd(x, w, b, stride, pads, dilation, groups):
    """x (N, C, *S) already padded by ``pads`` [(lo, hi)...] with zeros here; w (O, C/groups, *K)."""
    n, c = x.shape[:2]
    rank = x.ndim - 2
    widths = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
    x = np.pad(x, widths)
    o, cg = w.shape[:2]
    k = w.shape[2:]
    out_sizes = [(x.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(rank)]
    if any(s <= 0 for s in out_sizes):
        raise ReferenceError(f"convolution output size {out_sizes} is not positive")
    xg = x.reshape((n, groups, cg) + x.shape[2:])
    wg = w.reshape((groups, o // groups, cg) + k)
    y = np.zeros((n, groups, o // groups) + tuple(out_sizes))
    for kidx in itertools.product(*(range(kk) for kk in k)):
        sl = tuple(slice(kidx[i] * dilation[i], kidx[i] * dilation[i] + (out_sizes[i] - 1) * stride[i] + 1,
                         stride[i]) for i in range(rank))
        patch = xg[(slice(None),) * 3 + sl]                       # (N, G, C/G, *out)
        y += np.einsum("ngc...,goc->ngo...", patch, wg[(slice(None),) * 3 + kidx])
    y = y.reshape((n, o) + tuple(out_sizes))
    if b is not None:
        y = y + b.reshape((1, o) + (1,) * rank)
    return y


def conv_transpose_nd(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C_in, *S); w (C_in, C_out/groups, *K)."""
    n, cin = x.shape[:2]
    rank = x.ndim - 2
    k = w.shape[2:]
    cog = w.shape[1]
    full = [(x.shape[2 + i] - 1) * stride[i] + dilation[i] * (k[i] - 1) + 1 for i in range(rank)]
    out_sizes = [full[i] - 2 * padding[i] + output_padding[i] for i in range(rank)]
    buf_sizes = [max(full[i], padding[i] + out_sizes[i]) for i in range(rank)]
    xg = x.reshape((n, groups, cin // groups) + x.shape[2:])
    wg = w.reshape((groups, cin // groups, cog) + k)
    y = np.zeros((n, groups, cog) + tuple(buf_sizes))
    for kidx in itertools.product(*(range(kk) for kk in k)):
        sl = tuple(slice(kidx[i] * dilation[i], kidx[i] * dilation[i] + (x.shape[2 + i] - 1) * stride[i] + 1,
                         stride[i]) for i in range(rank))
        y[(slice(None),) * 3 + sl] += np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None),) * 3 + kidx])
    crop = tuple(slice(padding[i], padding[i] + out_sizes[i]) for i in range(rank))
    y = y[(slice(None),) * 3 + crop].reshape((n, groups * cog) + tuple(out_sizes))
    if b is not None:
        y = y + b.reshape((1, groups * cog) + (1,) * rank)
    return y


def _conv_module(module_type):
    rank = _RANK[module_type]

    def conv(attrs, input):
        x = f64(input)
        unbatched = x.ndim == rank + 1
        if unbatched:
            x = x[None]
        w, b = f64(attrs["weight"]), f64(attrs.get("bias"))
        ks, st, dil = (_tuple(attrs[a], rank) for a in ("kernel_size", "stride", "dilation"))
        p = attrs["padding"]
        if p == "valid":
            pads = [(0, 0)] * rank
        elif p == "same":
            pads = same_padding(ks, dil)
        else:
            pads = [(pi, pi) for pi in _tuple(p, rank)]
        mode = attrs["padding_mode"]
        if mode != "zeros":
            flat = tuple(v for lo_hi in reversed(pads) for v in lo_hi)   # last dim first
            x = pad(x, flat, {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}[mode])
            pads = [(0, 0)] * rank
        y = conv_nd(x, w, b, st, pads, dil, attrs["groups"])
        return y[0] if unbatched else y
    return conv


def _conv_transpose_module(module_type):
    rank = _RANK[module_type]

    def conv_transpose(attrs, input, output_size=None):
        x = f64(input)
        unbatched = x.ndim == rank + 1
        if unbatched:
            x = x[None]
        if attrs["padding_mode"] != "zeros":
            raise ReferenceError("transposed convolution supports padding_mode 'zeros' only")
        w, b = f64(attrs["weight"]), f64(attrs.get("bias"))
        ks, st, pd, dil, op = (_tuple(attrs[a], rank)
                               for a in ("kernel_size", "stride", "padding", "dilation", "output_padding"))
        if output_size is not None:
            wanted = list(output_size)
            if len(wanted) == rank + (1 if unbatched else 2):
                wanted = wanted[len(wanted) - rank:]
            if len(wanted) != rank:
                raise ReferenceError(f"output_size {output_size} has neither {rank} nor {x.ndim} elements")
            op = []
            for i in range(rank):
                min_size = (x.shape[2 + i] - 1) * st[i] - 2 * pd[i] + dil[i] * (ks[i] - 1) + 1
                extra = wanted[i] - min_size
                if not 0 <= extra <= st[i] - 1:
                    raise ReferenceError(f"output_size {wanted} is out of range in dim {i}")
                op.append(extra)
        y = conv_transpose_nd(x, w, b, st, pd, op, dil, attrs["groups"])
        return y[0] if unbatched else y
    return conv_transpose


for _name in _RANK:
    register(_name)((_conv_transpose_module if "Transpose" in _name else _conv_module)(_name))
