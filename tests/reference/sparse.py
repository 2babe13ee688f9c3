"""Embedding and EmbeddingBag (docs/semantics.md, Embedding)."""

from __future__ import annotations

import numpy as np

from .common import ReferenceError, f64, register


def _rows(attrs, indices):
    """The looked-up rows, renormalised as max_norm prescribes (without changing the stored weight)."""
    weight = f64(attrs["weight"])
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        raise ReferenceError(f"index out of range [0, {weight.shape[0]})")
    rows = weight[idx]
    if attrs.get("max_norm") is not None:
        p = attrs["norm_type"]
        norms = np.sum(np.abs(rows) ** p, axis=-1, keepdims=True) ** (1.0 / p)
        scale = np.where(norms > attrs["max_norm"], attrs["max_norm"] / (norms + 1e-7), 1.0)
        rows = rows * scale
    return rows


@register("torch.nn.Embedding")
def embedding(attrs, input):
    return _rows(attrs, input)


@register("torch.nn.EmbeddingBag")
def embedding_bag(attrs, input, offsets=None, per_sample_weights=None):
    idx = np.asarray(input, dtype=np.int64)
    mode = attrs["mode"]
    if per_sample_weights is not None and mode != "sum":
        raise ReferenceError("per_sample_weights requires mode 'sum'")
    psw = None if per_sample_weights is None else f64(per_sample_weights)
    if idx.ndim == 2:
        if offsets is not None:
            raise ReferenceError("offsets must be None for a 2-D input")
        bags = [(b * idx.shape[1], (b + 1) * idx.shape[1]) for b in range(idx.shape[0])]
        idx = idx.reshape(-1)
        if psw is not None:
            psw = psw.reshape(-1)
    elif idx.ndim == 1:
        if offsets is None:
            raise ReferenceError("a 1-D input needs offsets")
        off = [int(o) for o in np.asarray(offsets, dtype=np.int64)]
        if attrs["include_last_offset"]:
            bags = [(off[i], off[i + 1]) for i in range(len(off) - 1)]
        else:
            bags = [(off[i], off[i + 1] if i + 1 < len(off) else idx.shape[0]) for i in range(len(off))]
    else:
        raise ReferenceError(f"input must be 1-D or 2-D, got rank {idx.ndim}")
    rows = _rows(attrs, idx)
    pad = attrs.get("padding_idx")
    out = np.zeros((len(bags), rows.shape[1]))
    for b, (start, end) in enumerate(bags):
        keep = [i for i in range(start, end) if pad is None or idx[i] != pad]
        if not keep:
            continue
        r = rows[keep]
        if psw is not None:
            r = r * psw[keep][:, None]
        if mode == "sum":
            out[b] = r.sum(axis=0)
        elif mode == "mean":
            out[b] = r.mean(axis=0)
        elif mode == "max":
            out[b] = r.max(axis=0)
        else:
            raise ReferenceError(f"unknown mode {mode!r}")
    return out
