"""MultiheadAttention (docs/semantics.md, MultiheadAttention)."""

from __future__ import annotations

import math

import numpy as np

from .common import ReferenceError, f64, linear_wb, register, softmax


def additive_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """A bool mask (true = may not attend) becomes 0 / -inf; a float mask is added as is."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return np.where(mask, -np.inf, 0.0)
    return f64(mask)


@register("torch.nn.MultiheadAttention")
def multihead_attention(attrs, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                        average_attn_weights=True, is_causal=False):
    e, h = attrs["embed_dim"], attrs["num_heads"]
    hd = e // h
    q_in, k_in, v_in = f64(query), f64(key), f64(value)
    batched = q_in.ndim == 3
    if batched and attrs["batch_first"]:
        q_in, k_in, v_in = (t.transpose(1, 0, 2) for t in (q_in, k_in, v_in))
    if not batched:
        q_in, k_in, v_in = q_in[:, None], k_in[:, None], v_in[:, None]
        if key_padding_mask is not None:
            key_padding_mask = np.asarray(key_padding_mask)[None]
    if is_causal and attn_mask is None:
        raise ReferenceError("is_causal=True needs attn_mask")
    tgt_len, n, _ = q_in.shape
    kpm = additive_mask(key_padding_mask)
    am = additive_mask(attn_mask)

    b = f64(attrs.get("in_proj_bias"))
    bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
    if attrs["_qkv_same_embed_dim"]:
        w = f64(attrs["in_proj_weight"])
        wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
    else:
        wq, wk, wv = (f64(attrs[f"{c}_proj_weight"]) for c in "qkv")
    q = linear_wb(q_in, wq, bq)
    k = linear_wb(k_in, wk, bk)
    v = linear_wb(v_in, wv, bv)

    if attrs.get("bias_k") is not None:
        k = np.concatenate([k, np.broadcast_to(f64(attrs["bias_k"]), (1, n, e))], axis=0)
        v = np.concatenate([v, np.broadcast_to(f64(attrs["bias_v"]), (1, n, e))], axis=0)
        if am is not None:
            am = np.concatenate([am, np.zeros(am.shape[:-1] + (1,))], axis=-1)
        if kpm is not None:
            kpm = np.concatenate([kpm, np.zeros(kpm.shape[:-1] + (1,))], axis=-1)

    # heads: (L, N, E) -> (N*H, L, hd), batch-major (index n*H + h)
    q = q.reshape(tgt_len, n * h, hd).transpose(1, 0, 2)
    k = k.reshape(k.shape[0], n * h, hd).transpose(1, 0, 2)
    v = v.reshape(v.shape[0], n * h, hd).transpose(1, 0, 2)

    if attrs["add_zero_attn"]:
        k = np.concatenate([k, np.zeros((n * h, 1, hd))], axis=1)
        v = np.concatenate([v, np.zeros((n * h, 1, hd))], axis=1)
        if am is not None:
            am = np.concatenate([am, np.zeros(am.shape[:-1] + (1,))], axis=-1)
        if kpm is not None:
            kpm = np.concatenate([kpm, np.zeros(kpm.shape[:-1] + (1,))], axis=-1)
    src_len = k.shape[1]

    bias = np.zeros((n * h, tgt_len, src_len))
    if am is not None:
        bias = bias + (am[None] if am.ndim == 2 else am)
    if kpm is not None:
        bias = bias + np.repeat(kpm[:, None, :], h, axis=0)   # (N, S) -> (N*H, 1, S)

    scores = (q / math.sqrt(hd)) @ k.transpose(0, 2, 1) + bias
    weights = softmax(scores, axis=-1)
    out = weights @ v                                           # (N*H, L, hd)
    out = out.transpose(1, 0, 2).reshape(tgt_len, n, e)
    out = linear_wb(out, f64(attrs["out_proj.weight"]), f64(attrs.get("out_proj.bias")))

    if batched and attrs["batch_first"]:
        out = out.transpose(1, 0, 2)
    if not batched:
        out = out[:, 0]
    if not need_weights:
        return out, None
    weights = weights.reshape(n, h, tgt_len, src_len)
    if average_attn_weights:
        weights = weights.mean(axis=1)
    if not batched:
        weights = weights[0]
    return out, weights
