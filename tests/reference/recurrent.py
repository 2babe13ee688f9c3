"""RNN, LSTM, GRU and their cells (docs/semantics.md, Recurrent layers)."""

from __future__ import annotations

import numpy as np

from .common import ReferenceError, f64, sigmoid, register


def _affine(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def rnn_cell_step(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None, nonlinearity="tanh"):
    """One step; returns (h', c') (c' None except for LSTM)."""
    gi = _affine(x, w_ih, b_ih)
    gh = _affine(h, w_hh, b_hh)
    if kind == "RNN":
        pre = gi + gh
        return (np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0.0)), None
    if kind == "LSTM":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c2 = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h2 = sigmoid(o) * np.tanh(c2)
        if w_hr is not None:
            h2 = h2 @ w_hr.T
        return h2, c2
    if kind == "GRU":
        ir, iz, in_ = np.split(gi, 3, axis=-1)
        hr, hz, hn = np.split(gh, 3, axis=-1)
        r = sigmoid(ir + hr)
        z = sigmoid(iz + hz)
        nn_ = np.tanh(in_ + r * hn)
        return (1 - z) * nn_ + z * h, None
    raise ReferenceError(f"unknown recurrent kind {kind!r}")


def _run(attrs, kind, input, hx):
    x = f64(input)
    batched = x.ndim == 3
    if not batched:
        x = x[:, None]
    elif attrs["batch_first"]:
        x = x.transpose(1, 0, 2)
    seq, n, _ = x.shape
    d = 2 if attrs["bidirectional"] else 1
    layers = attrs["num_layers"]
    hidden = attrs["hidden_size"]
    proj = attrs.get("proj_size", 0) or 0
    h_out = proj if proj > 0 else hidden
    h0 = c0 = None
    if hx is not None:
        h0, c0 = (hx if kind == "LSTM" else (hx, None))
        h0 = f64(h0)
        c0 = f64(c0)
        if not batched:
            h0 = h0[:, None]
            c0 = None if c0 is None else c0[:, None]
    if h0 is None:
        h0 = np.zeros((layers * d, n, h_out))
    if kind == "LSTM" and c0 is None:
        c0 = np.zeros((layers * d, n, hidden))
    hn, cn = [], []
    layer_in = x
    for layer in range(layers):
        outs = []
        for direction in range(d):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih, w_hh = f64(attrs["weight_ih" + sfx]), f64(attrs["weight_hh" + sfx])
            b_ih, b_hh = f64(attrs.get("bias_ih" + sfx)), f64(attrs.get("bias_hh" + sfx))
            w_hr = f64(attrs.get("weight_hr" + sfx)) if proj > 0 else None
            h = h0[layer * d + direction]
            c = c0[layer * d + direction] if kind == "LSTM" else None
            steps = range(seq - 1, -1, -1) if direction else range(seq)
            out = np.zeros((seq, n, h_out))
            for t in steps:
                h, c = rnn_cell_step(kind, layer_in[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr,
                                     attrs.get("nonlinearity", "tanh"))
                out[t] = h
            outs.append(out)
            hn.append(h)
            cn.append(c)
        layer_in = np.concatenate(outs, axis=-1)   # dropout between layers: identity
    out = layer_in
    h_n = np.stack(hn)
    c_n = np.stack(cn) if kind == "LSTM" else None
    if not batched:
        out, h_n = out[:, 0], h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    elif attrs["batch_first"]:
        out = out.transpose(1, 0, 2)
    return (out, (h_n, c_n)) if kind == "LSTM" else (out, h_n)


@register("torch.nn.RNN")
def rnn(attrs, input, hx=None):
    return _run(attrs, "RNN", input, hx)


@register("torch.nn.LSTM")
def lstm(attrs, input, hx=None):
    return _run(attrs, "LSTM", input, hx)


@register("torch.nn.GRU")
def gru(attrs, input, hx=None):
    return _run(attrs, "GRU", input, hx)


def _cell(attrs, kind, input, hx):
    x = f64(input)
    batched = x.ndim == 2
    if not batched:
        x = x[None]
    hidden = attrs["hidden_size"]
    if hx is None:
        h = np.zeros((x.shape[0], hidden))
        c = np.zeros((x.shape[0], hidden))
    else:
        h, c = (hx if kind == "LSTM" else (hx, None))
        h = f64(h) if batched else f64(h)[None]
        c = None if c is None else (f64(c) if batched else f64(c)[None])
    h2, c2 = rnn_cell_step(kind, x, h, c, f64(attrs["weight_ih"]), f64(attrs["weight_hh"]),
                           f64(attrs.get("bias_ih")), f64(attrs.get("bias_hh")),
                           nonlinearity=attrs.get("nonlinearity", "tanh"))
    if not batched:
        h2 = h2[0]
        c2 = None if c2 is None else c2[0]
    return (h2, c2) if kind == "LSTM" else h2


@register("torch.nn.RNNCell")
def rnn_cell(attrs, input, hx=None):
    return _cell(attrs, "RNN", input, hx)


@register("torch.nn.LSTMCell")
def lstm_cell(attrs, input, hx=None):
    return _cell(attrs, "LSTM", input, hx)


@register("torch.nn.GRUCell")
def gru_cell(attrs, input, hx=None):
    return _cell(attrs, "GRU", input, hx)
