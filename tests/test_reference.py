"""The NumPy reference (tests/reference, written from docs/semantics.md alone) agrees with PyTorch.

Each case builds a module, traces a one-call wrapper with torch.fx.symbolic_trace, lifts it with fxlower and feeds
the lifted record's attrs (converted here: tensors to float64 NumPy arrays, functions to canonical names, module
classes to type names) with the forward's inputs to the reference. PyTorch runs the module in eval mode without
grad, in float64 unless the case says otherwise; outputs are compared with a tolerance tighter than the format's
F32 tolerance (rtol 1e-3, atol 1e-4). Integer outputs (pooling indices) compare exactly.

Run ``python3 tests/test_reference.py`` to print the largest absolute error per module family.
"""

from __future__ import annotations

import ast
import math
import pathlib
import re
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fxlower
from fxlower.lowering.book import type_name
from fxlower.lowering.targets import function_name

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import reference  # noqa: E402

REFERENCE_DIR = pathlib.Path(__file__).parent / "reference"
#: float64 runs: agreement to ~1e-9 shows the computation is the same, not merely close.
TOL64 = dict(rtol=1e-7, atol=1e-9)
#: the format's F32 tolerance (docs/format.md section 8), for cases run in float32.
TOL32 = dict(rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Glue: lifting -> reference inputs


class _Call(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


def _plain(value):
    if isinstance(value, torch.Tensor):
        a = value.detach().cpu().numpy()
        return a.astype(np.float64) if a.dtype.kind == "f" else a.copy()
    if isinstance(value, type) and issubclass(value, nn.Module):
        return type_name(value)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return function_name(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value  # int, float, bool, str (a function or module type name in the current lifting), None


def lifted(module: nn.Module) -> tuple[str, dict]:
    """(module_type, attrs) of ``module``'s lowering record, from tracing and lifting a wrapper."""
    gm = fx.symbolic_trace(_Call(module))
    fxlower.lift(gm)
    (node,) = gm.graph.find_nodes(op="call_module")
    rec = node.meta["lowering"]
    return rec.module_type, {k: _plain(v) for k, v in rec.attrs.items()}


def _np(x):
    if isinstance(x, torch.Tensor):
        a = x.detach().numpy()
        return a.astype(np.float64) if a.dtype.kind == "f" else a.copy()
    if isinstance(x, (tuple, list)):
        return type(x)(_np(v) for v in x)
    return x


def compare(actual, expected, tol, where="output"):
    """Largest absolute error; raises AssertionError on a structure, dtype kind, shape or value mismatch."""
    if expected is None:
        assert actual is None, f"{where}: expected None, got {type(actual).__name__}"
        return 0.0
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), \
            f"{where}: expected a sequence of {len(expected)}, got {actual!r:.80}"
        return max([compare(a, e, tol, f"{where}[{i}]") for i, (a, e) in enumerate(zip(actual, expected))],
                   default=0.0)
    e = expected.detach().numpy()
    a = np.asarray(actual)
    assert a.shape == e.shape, f"{where}: shape {a.shape} != PyTorch's {e.shape}"
    if e.dtype.kind in "iub":
        assert a.dtype.kind in "iub", f"{where}: PyTorch gives integers, reference gives {a.dtype}"
        np.testing.assert_array_equal(a, e, err_msg=where)
        return 0.0
    e = e.astype(np.float64)
    np.testing.assert_allclose(a, e, rtol=tol["rtol"], atol=tol["atol"], err_msg=where)
    both = np.isfinite(e) & np.isfinite(a)
    return float(np.max(np.abs(a - e)[both], initial=0.0))


# ----------------------------------------------------------------------------------------------------------------
# Cases: name -> (family, builder). A builder returns (module, args, kwargs[, options]).

CASES: dict[str, tuple[str, object]] = {}


def case(family: str, name: str):
    def deco(fn):
        assert name not in CASES
        CASES[name] = (family, fn)
        return fn
    return deco


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


def _causal(n):
    return torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)


def _with_stats(m):
    m.running_mean.copy_(torch.randn_like(m.running_mean))
    m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    return m


# --- recurrent -------------------------------------------------------------------------------------------------

@case("recurrent", "lstm_bidir_2layer_proj_h0c0")
def _():
    m = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    return m, (randn(4, 2, 3), (randn(4, 2, 2), randn(4, 2, 5))), {}


@case("recurrent", "lstm_batch_first_default_state")
def _():
    return nn.LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.3), (randn(2, 5, 3),), {}


@case("recurrent", "lstm_unbatched_bidir_proj")
def _():
    return nn.LSTM(3, 4, bidirectional=True, proj_size=3), (randn(5, 3),), {}


@case("recurrent", "gru_bidir_2layer_h0")
def _():
    return nn.GRU(3, 4, num_layers=2, bidirectional=True), (randn(5, 2, 3), randn(4, 2, 4)), {}


@case("recurrent", "gru_batch_first_no_bias")
def _():
    return nn.GRU(3, 4, batch_first=True, bias=False), (randn(2, 6, 3),), {}


@case("recurrent", "rnn_tanh_2layer")
def _():
    return nn.RNN(3, 4, num_layers=2), (randn(5, 2, 3), randn(2, 2, 4)), {}


@case("recurrent", "rnn_relu_bidir_batch_first")
def _():
    return nn.RNN(3, 4, nonlinearity="relu", bidirectional=True, batch_first=True), (randn(2, 5, 3),), {}


@case("recurrent", "rnn_cell_tanh")
def _():
    return nn.RNNCell(3, 4), (randn(2, 3), randn(2, 4)), {}


@case("recurrent", "rnn_cell_relu_unbatched_no_bias")
def _():
    return nn.RNNCell(3, 4, bias=False, nonlinearity="relu"), (randn(3),), {}


@case("recurrent", "lstm_cell_hx")
def _():
    return nn.LSTMCell(3, 4), (randn(2, 3), (randn(2, 4), randn(2, 4))), {}


@case("recurrent", "lstm_cell_default_state")
def _():
    return nn.LSTMCell(3, 4), (randn(2, 3),), {}


@case("recurrent", "gru_cell_hx")
def _():
    return nn.GRUCell(3, 4), (randn(2, 3), randn(2, 4)), {}


@case("recurrent", "gru_cell_unbatched")
def _():
    return nn.GRUCell(3, 4), (randn(3), randn(4)), {}


# --- attention -------------------------------------------------------------------------------------------------

@case("attention", "mha_self_averaged_weights")
def _():
    x = randn(4, 2, 8)
    return nn.MultiheadAttention(8, 2), (x, x, x), {}


@case("attention", "mha_kdim_vdim_bias_kv_zero_attn_bool_masks_per_head_weights")
def _():
    m = nn.MultiheadAttention(8, 2, kdim=3, vdim=5, add_bias_kv=True, add_zero_attn=True)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 0] = True
    return m, (randn(4, 2, 8), randn(6, 2, 3), randn(6, 2, 5)), dict(
        key_padding_mask=kpm, attn_mask=mask, average_attn_weights=False)


@case("attention", "mha_float_3d_mask_batch_first_no_weights")
def _():
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    mask = randn(2 * 2, 3, 5)
    return m, (randn(2, 3, 8), randn(2, 5, 8), randn(2, 5, 8)), dict(attn_mask=mask, need_weights=False)


@case("attention", "mha_float_key_padding_mask_kdim_vdim")
def _():
    m = nn.MultiheadAttention(6, 3, kdim=4, vdim=2)
    return m, (randn(3, 2, 6), randn(5, 2, 4), randn(5, 2, 2)), dict(key_padding_mask=randn(2, 5))


@case("attention", "mha_unbatched_kpm")
def _():
    m = nn.MultiheadAttention(8, 4)
    x = randn(5, 8)
    kpm = torch.tensor([False, False, False, True, True])
    return m, (x, x, x), dict(key_padding_mask=kpm)


@case("attention", "mha_is_causal_no_weights")
def _():
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = randn(2, 5, 8)
    return m, (x, x, x), dict(attn_mask=_causal(5), is_causal=True, need_weights=False)


@case("attention", "mha_no_bias_bias_kv_bool_mask_batch_first")
def _():
    m = nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True, batch_first=True)
    x = randn(2, 4, 8)
    return m, (x, x, x), dict(attn_mask=_causal(4))


# --- transformer -----------------------------------------------------------------------------------------------

@case("transformer", "encoder_layer_post_norm_relu_masks")
def _():
    m = nn.TransformerEncoderLayer(8, 2, 16)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[0, 3:] = True
    return m, (randn(5, 2, 8),), dict(src_mask=randn(5, 5), src_key_padding_mask=kpm)


@case("transformer", "encoder_layer_norm_first_gelu_batch_first")
def _():
    m = nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", norm_first=True, batch_first=True)
    return m, (randn(2, 5, 8),), {}


@case("transformer", "encoder_layer_module_activation_causal")
def _():
    m = nn.TransformerEncoderLayer(8, 2, 12, activation=nn.GELU(approximate="tanh"), layer_norm_eps=1e-3)
    return m, (randn(4, 3, 8),), dict(src_mask=_causal(4), is_causal=True)


@case("transformer", "encoder_layer_leaky_relu_module_norm_first_no_bias")
def _():
    m = nn.TransformerEncoderLayer(8, 4, 16, activation=nn.LeakyReLU(0.2), norm_first=True, bias=False)
    return m, (randn(5, 2, 8),), {}


@case("transformer", "encoder_layer_float32_fast_path")
def _():
    # float32, batch_first, eval, no grad: PyTorch takes its fused fast path; same semantics within F32 tolerance
    m = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1, 3:] = True
    return m, (torch.randn(2, 5, 8),), dict(src_key_padding_mask=kpm), dict(dtype=torch.float32)


@case("transformer", "decoder_layer_post_norm_relu_masks")
def _():
    m = nn.TransformerDecoderLayer(8, 2, 16)
    mkpm = torch.zeros(2, 6, dtype=torch.bool)
    mkpm[1, 4:] = True
    return m, (randn(4, 2, 8), randn(6, 2, 8)), dict(tgt_mask=_causal(4), memory_key_padding_mask=mkpm)


@case("transformer", "decoder_layer_norm_first_gelu_batch_first")
def _():
    m = nn.TransformerDecoderLayer(8, 2, 16, activation=F.gelu, norm_first=True, batch_first=True)
    return m, (randn(2, 4, 8), randn(2, 3, 8)), dict(memory_mask=randn(4, 3))


@case("transformer", "decoder_layer_module_activation_causal")
def _():
    m = nn.TransformerDecoderLayer(8, 2, 16, activation=nn.ReLU())
    return m, (randn(4, 2, 8), randn(3, 2, 8)), dict(tgt_mask=_causal(4), tgt_is_causal=True)


@case("transformer", "encoder_2_layers_final_norm_masks")
def _():
    m = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, norm=nn.LayerNorm(8),
                              enable_nested_tensor=False)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1, 3:] = True
    return m, (randn(5, 2, 8),), dict(mask=_causal(5), src_key_padding_mask=kpm)


@case("transformer", "encoder_batch_first_nested_tensor_path_unpadded_positions")
def _():
    # PyTorch may take its nested-tensor path here and write 0 at padded positions: outside the semantics,
    # so only unpadded positions are compared.
    m = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1, 3:] = True
    keep = ~kpm
    return m, (randn(2, 5, 8),), dict(src_key_padding_mask=kpm), dict(select=lambda y: y[keep])


@case("transformer", "decoder_2_layers_final_norm")
def _():
    m = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, norm_first=True), 2, norm=nn.LayerNorm(8))
    return m, (randn(4, 2, 8), randn(5, 2, 8)), dict(tgt_mask=_causal(4))


@case("transformer", "transformer_full")
def _():
    m = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=16)
    return m, (randn(5, 2, 8), randn(4, 2, 8)), dict(tgt_mask=_causal(4))


# --- embedding -------------------------------------------------------------------------------------------------

@case("embedding", "embedding_padding_idx")
def _():
    return nn.Embedding(10, 3, padding_idx=2), (torch.tensor([[1, 2, 9], [0, 2, 4]]),), {}


@case("embedding", "embedding_max_norm")
def _():
    m = nn.Embedding(10, 4, max_norm=1.5, norm_type=3.0)
    return m, (torch.tensor([1, 5, 1, 7]),), {}


@case("embedding", "embedding_bag_sum_offsets")
def _():
    m = nn.EmbeddingBag(10, 3, mode="sum")
    return m, (torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 3, 3, 6])), {}


@case("embedding", "embedding_bag_mean_include_last_offset_padding_idx")
def _():
    m = nn.EmbeddingBag(10, 3, mode="mean", include_last_offset=True, padding_idx=4)
    return m, (torch.tensor([1, 4, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 3, 5, 8])), {}


@case("embedding", "embedding_bag_max_2d")
def _():
    return nn.EmbeddingBag(10, 3, mode="max"), (torch.tensor([[1, 2, 4], [5, 4, 3]]),), {}


@case("embedding", "embedding_bag_sum_per_sample_weights")
def _():
    m = nn.EmbeddingBag(10, 3, mode="sum")
    return m, (torch.tensor([1, 2, 4, 5, 4]), torch.tensor([0, 2])), dict(per_sample_weights=randn(5))


@case("embedding", "embedding_bag_mean_max_norm_empty_bag")
def _():
    m = nn.EmbeddingBag(10, 3, mode="mean", max_norm=1.0)
    return m, (torch.tensor([1, 2, 4, 5]), torch.tensor([0, 2, 2])), {}


# --- bilinear --------------------------------------------------------------------------------------------------

@case("bilinear", "bilinear_bias")
def _():
    return nn.Bilinear(3, 4, 5), (randn(2, 3), randn(2, 4)), {}


@case("bilinear", "bilinear_no_bias_extra_dims")
def _():
    return nn.Bilinear(3, 2, 4, bias=False), (randn(2, 3, 3), randn(2, 3, 2)), {}


# --- upsampling ------------------------------------------------------------------------------------------------

def _up(name, make, shape):
    @case("upsample", name)
    def _():
        return make(), (randn(*shape),), {}


_up("upsample_nearest_x2", lambda: nn.Upsample(scale_factor=2), (1, 2, 3, 4))
_up("upsample_nearest_x1.5", lambda: nn.Upsample(scale_factor=1.5), (1, 2, 3, 5))
_up("upsample_nearest_x0.7_size_from_scale", lambda: nn.Upsample(scale_factor=(0.7, 1.3)), (1, 1, 7, 6))
_up("upsample_nearest_size", lambda: nn.Upsample(size=(5, 7)), (1, 2, 3, 4))
_up("upsample_nearest_1d_recompute", lambda: nn.Upsample(scale_factor=1.7, recompute_scale_factor=True),
    (1, 2, 5))
# 16 x 2.2 and 16 x 1.1: the source index differs between single- and double-precision arithmetic
_up("upsample_nearest_single_precision_index", lambda: nn.Upsample(scale_factor=2.2), (1, 1, 16))
_up("upsample_nearest_exact_single_precision_index", lambda: nn.Upsample(scale_factor=1.1, mode="nearest-exact"),
    (1, 1, 16))
# O == 2L and O == L with a scale_factor other than 2 and 1: shortcut in 2-d only
_up("upsample_nearest_1d_no_shortcut", lambda: nn.Upsample(scale_factor=2.1), (1, 1, 7))
_up("upsample_nearest_2d_shortcuts", lambda: nn.Upsample(scale_factor=(2.1, 1.1)), (1, 1, 7, 7))
_up("upsample_nearest_3d_no_shortcut", lambda: nn.Upsample(scale_factor=(2.1, 1.1, 1.0)), (1, 1, 7, 7, 2))
_up("upsample_nearest_exact", lambda: nn.Upsample(scale_factor=1.6, mode="nearest-exact"), (1, 2, 5, 3))
_up("upsample_linear_align", lambda: nn.Upsample(scale_factor=2.5, mode="linear", align_corners=True),
    (2, 2, 4))
_up("upsample_linear", lambda: nn.Upsample(size=9, mode="linear"), (2, 2, 4))
_up("upsample_bilinear_scale", lambda: nn.Upsample(scale_factor=1.7, mode="bilinear"), (1, 2, 4, 5))
_up("upsample_bilinear_recompute", lambda: nn.Upsample(scale_factor=1.7, mode="bilinear",
                                                       recompute_scale_factor=True), (1, 2, 4, 5))
_up("upsample_bilinear_down", lambda: nn.Upsample(size=(3, 2), mode="bilinear"), (1, 2, 7, 5))
_up("upsample_bicubic", lambda: nn.Upsample(scale_factor=2, mode="bicubic"), (1, 2, 4, 3))
_up("upsample_bicubic_align", lambda: nn.Upsample(size=(7, 5), mode="bicubic", align_corners=True),
    (1, 1, 4, 3))
_up("upsample_trilinear", lambda: nn.Upsample(scale_factor=(1.5, 2, 0.8), mode="trilinear"), (1, 2, 3, 2, 5))
_up("upsample_area", lambda: nn.Upsample(size=(3, 4), mode="area"), (1, 2, 7, 5))
_up("upsampling_nearest2d", lambda: nn.UpsamplingNearest2d(scale_factor=3), (1, 2, 2, 3))
_up("upsampling_bilinear2d", lambda: nn.UpsamplingBilinear2d(size=(5, 6)), (1, 2, 3, 4))


# --- convolution -----------------------------------------------------------------------------------------------

def _conv(name, make, shape, **kwargs):
    @case("convolution", name)
    def _():
        return make(), (randn(*shape),), kwargs


_conv("conv1d_stride_dilation", lambda: nn.Conv1d(4, 6, 3, stride=2, dilation=2, padding=1), (2, 4, 11))
_conv("conv2d_same_even_kernel_dilation", lambda: nn.Conv2d(3, 4, (4, 2), padding="same", dilation=(1, 3)),
      (1, 3, 7, 8))
_conv("conv1d_same_even_kernel", lambda: nn.Conv1d(2, 3, 4, padding="same"), (2, 2, 6))
_conv("conv2d_valid_groups", lambda: nn.Conv2d(4, 6, 3, padding="valid", groups=2, bias=False), (2, 4, 6, 5))
_conv("conv2d_reflect", lambda: nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="reflect"), (1, 2, 5, 6))
_conv("conv2d_replicate_stride", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=2, padding_mode="replicate"),
      (1, 2, 5, 6))
_conv("conv2d_circular_groups", lambda: nn.Conv2d(4, 4, 3, padding=(2, 1), padding_mode="circular", groups=4),
      (2, 4, 5, 6))
_conv("conv1d_same_reflect_even", lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect",
                                                    dilation=2), (1, 2, 9))
_conv("conv2d_same_circular_even", lambda: nn.Conv2d(2, 2, (2, 4), padding="same", padding_mode="circular"),
      (1, 2, 5, 6))
_conv("conv3d_replicate", lambda: nn.Conv3d(2, 3, (2, 3, 2), padding=1, padding_mode="replicate",
                                            stride=(1, 2, 1)), (1, 2, 4, 5, 3))
_conv("conv2d_unbatched", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 4))
_conv("conv_transpose1d_output_padding", lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=1,
                                                                    padding=1), (2, 3, 5))
_conv("conv_transpose2d_groups_dilation", lambda: nn.ConvTranspose2d(
    4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(2, 1)), (1, 4, 4, 3))
_conv("conv_transpose3d", lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, bias=False), (1, 2, 2, 3, 2))
_conv("conv_transpose2d_output_size", lambda: nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1), (1, 2, 4, 3),
      output_size=[11, 9])


# --- pooling ---------------------------------------------------------------------------------------------------

def _pool(name, make, shape, positive=False):
    @case("pooling", name)
    def _():
        x = randn(*shape)
        return make(), ((x.abs() + 0.1) if positive else x,), {}


_pool("maxpool1d_ceil_pad_dilation_indices", lambda: nn.MaxPool1d(3, 2, padding=1, dilation=2, ceil_mode=True,
                                                                  return_indices=True), (2, 3, 10))
_pool("maxpool2d_ceil_last_window_dropped", lambda: nn.MaxPool2d(2, 2, padding=1, ceil_mode=True,
                                                                 return_indices=True), (1, 2, 5, 4))
_pool("maxpool2d_floor", lambda: nn.MaxPool2d((3, 2), stride=(2, 1)), (1, 2, 7, 5))
_pool("maxpool3d_ceil", lambda: nn.MaxPool3d(2, stride=2, ceil_mode=True), (1, 2, 3, 5, 4))
_pool("maxpool2d_unbatched", lambda: nn.MaxPool2d(2), (2, 4, 5))
_pool("avgpool1d_ceil_exclude_pad", lambda: nn.AvgPool1d(3, 2, padding=1, ceil_mode=True,
                                                         count_include_pad=False), (2, 3, 8))
_pool("avgpool1d_ceil_include_pad", lambda: nn.AvgPool1d(3, 2, padding=1, ceil_mode=True), (2, 3, 8))
_pool("avgpool2d_ceil_include_pad", lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (1, 2, 6, 7))
_pool("avgpool2d_divisor_override", lambda: nn.AvgPool2d(2, 2, padding=1, ceil_mode=True, divisor_override=3),
      (1, 2, 5, 5))
_pool("avgpool3d_exclude_pad", lambda: nn.AvgPool3d(2, 1, padding=1, count_include_pad=False), (1, 1, 3, 2, 3))
_pool("lppool1d_p2_ceil", lambda: nn.LPPool1d(2, 3, 2, ceil_mode=True), (1, 2, 8))
_pool("lppool2d_p3", lambda: nn.LPPool2d(3, (2, 3), stride=(1, 2)), (1, 2, 5, 7), positive=True)
_pool("lppool3d_p1.5", lambda: nn.LPPool3d(1.5, 2), (1, 1, 4, 4, 5), positive=True)
_pool("adaptive_avg1d_non_divisible", lambda: nn.AdaptiveAvgPool1d(3), (2, 3, 7))
_pool("adaptive_avg2d_non_divisible", lambda: nn.AdaptiveAvgPool2d((3, 4)), (1, 2, 7, 5))
_pool("adaptive_avg3d_none", lambda: nn.AdaptiveAvgPool3d((2, None, 3)), (1, 1, 5, 2, 4))
_pool("adaptive_max1d_indices", lambda: nn.AdaptiveMaxPool1d(4, return_indices=True), (2, 2, 9))
_pool("adaptive_max2d_indices", lambda: nn.AdaptiveMaxPool2d((3, 2), return_indices=True), (1, 2, 7, 5))
_pool("adaptive_max3d", lambda: nn.AdaptiveMaxPool3d((2, 3, 2)), (1, 1, 3, 5, 4))


# --- padding ---------------------------------------------------------------------------------------------------

def _pad(name, make, shape):
    @case("padding", name)
    def _():
        return make(), (randn(*shape),), {}


_pad("constant_pad1d", lambda: nn.ConstantPad1d((2, 1), 3.5), (2, 3, 4))
_pad("constant_pad2d_negative", lambda: nn.ConstantPad2d((1, -1, -2, 2), -1.0), (1, 2, 4, 5))
_pad("constant_pad3d", lambda: nn.ConstantPad3d((1, 0, 0, 2, 1, 1), 0.5), (1, 1, 2, 3, 2))
_pad("zero_pad1d", lambda: nn.ZeroPad1d((0, 3)), (1, 2, 4))
_pad("zero_pad2d", lambda: nn.ZeroPad2d((1, 2, 3, 0)), (1, 2, 3, 3))
_pad("zero_pad3d", lambda: nn.ZeroPad3d(1), (1, 1, 2, 2, 2))
_pad("reflection_pad1d", lambda: nn.ReflectionPad1d((3, 1)), (2, 2, 5))
_pad("reflection_pad2d", lambda: nn.ReflectionPad2d((1, 2, 2, 0)), (1, 2, 3, 4))
_pad("reflection_pad3d", lambda: nn.ReflectionPad3d((1, 0, 2, 1, 1, 1)), (1, 1, 2, 3, 3))
_pad("replication_pad1d", lambda: nn.ReplicationPad1d((4, 1)), (2, 2, 3))
_pad("replication_pad2d", lambda: nn.ReplicationPad2d((0, 3, 2, 1)), (1, 2, 3, 4))
_pad("replication_pad3d", lambda: nn.ReplicationPad3d((1, 2, 0, 1, 2, 0)), (1, 1, 2, 3, 2))
_pad("circular_pad1d", lambda: nn.CircularPad1d((3, 1)), (2, 2, 4))
_pad("circular_pad2d", lambda: nn.CircularPad2d((1, 2, 2, 0)), (1, 2, 3, 4))
_pad("circular_pad3d", lambda: nn.CircularPad3d((1, 0, 2, 1, 1, 1)), (1, 1, 2, 3, 3))


# --- normalisation ---------------------------------------------------------------------------------------------

@case("normalisation", "layer_norm_2d_shape")
def _():
    return nn.LayerNorm((3, 4), eps=1e-3), (randn(2, 3, 4),), {}


@case("normalisation", "layer_norm_no_affine")
def _():
    return nn.LayerNorm(5, elementwise_affine=False), (randn(2, 5),), {}


@case("normalisation", "rms_norm_eps_none_f32")
def _():
    m = nn.RMSNorm(4)
    m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(3, 4) * 1e-4   # small: eps = finfo(float32).eps matters
    return m, (x,), {}, dict(dtype=torch.float32, ref_kwargs=dict(input_dtype="float32"))


@case("normalisation", "rms_norm_eps_none_f64")
def _():
    x = randn(3, 4) * 1e-7
    return nn.RMSNorm(4), (x,), {}, dict(ref_kwargs=dict(input_dtype="float64"))


@case("normalisation", "rms_norm_eps")
def _():
    return nn.RMSNorm((2, 3), eps=1e-2), (randn(2, 2, 3),), {}


@case("normalisation", "group_norm")
def _():
    m = nn.GroupNorm(2, 4)
    m.weight.data.normal_()
    m.bias.data.normal_()
    return m, (randn(2, 4, 3, 2),), {}


@case("normalisation", "instance_norm1d_affine_running_stats")
def _():
    return _with_stats(nn.InstanceNorm1d(3, affine=True, track_running_stats=True)), (randn(2, 3, 5),), {}


@case("normalisation", "instance_norm2d_instance_stats_unbatched")
def _():
    return nn.InstanceNorm2d(3), (randn(3, 4, 5),), {}


@case("normalisation", "batch_norm2d_running_stats")
def _():
    m = _with_stats(nn.BatchNorm2d(3))
    m.weight.data.normal_()
    return m, (randn(2, 3, 4, 2),), {}


@case("normalisation", "batch_norm1d_no_running_stats")
def _():
    return nn.BatchNorm1d(3, track_running_stats=False), (randn(4, 3),), {}


# ----------------------------------------------------------------------------------------------------------------

def run_case(name: str) -> float:
    """Run one case; returns the largest absolute error."""
    family, build = CASES[name]
    torch.manual_seed(sum(name.encode()))
    built = build()
    module, args, kwargs = built[:3]
    options = built[3] if len(built) > 3 else {}
    dtype = options.get("dtype", torch.float64)
    module = module.to(dtype).eval()
    args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else
                 (tuple(t.to(dtype) for t in a) if isinstance(a, tuple) else a) for a in args)
    kwargs = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
    module_type, attrs = lifted(module)      # before running: max_norm changes the weight in place
    with torch.no_grad():
        expected = module(*args, **kwargs)
    actual = reference.forward(module_type, attrs, *_np(args), **_np(kwargs), **options.get("ref_kwargs", {}))
    select = options.get("select")
    if select is not None:
        expected, actual = select(expected), select(torch.from_numpy(np.asarray(actual))).numpy()
    return compare(actual, expected, TOL64 if dtype == torch.float64 else TOL32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_matches_pytorch(name):
    run_case(name)


def test_every_composite_and_family_module_has_a_reference_and_a_case():
    """Every module type the brief names has a reference implementation and at least one case."""
    covered = set()
    for family, build in CASES.values():
        torch.manual_seed(0)
        covered.add(type_name(type(build()[0])))
    expected = {f"torch.nn.{c}" for c in (
        "MultiheadAttention RNN LSTM GRU RNNCell LSTMCell GRUCell TransformerEncoderLayer "
        "TransformerDecoderLayer TransformerEncoder TransformerDecoder Transformer Embedding EmbeddingBag "
        "Bilinear Upsample UpsamplingNearest2d UpsamplingBilinear2d LayerNorm RMSNorm GroupNorm "
        "BatchNorm1d BatchNorm2d InstanceNorm1d InstanceNorm2d").split()}
    expected |= {f"torch.nn.{k}{d}d" for d in (1, 2, 3) for k in (
        "Conv", "ConvTranspose", "MaxPool", "AvgPool", "LPPool", "AdaptiveAvgPool", "AdaptiveMaxPool",
        "ConstantPad", "ZeroPad", "ReflectionPad", "ReplicationPad", "CircularPad")}
    assert expected - covered == set()
    assert expected - set(reference.MODULES) == set()


def test_every_module_the_reference_implements_is_specified_in_semantics_md():
    """The reference is written from docs/semantics.md: each class it implements is named there, as is each
    function it accepts as an activation."""
    text = (REFERENCE_DIR.parent.parent / "docs" / "semantics.md").read_text()
    for name in reference.MODULES:
        cls = name.rsplit(".", 1)[1]
        forms = {cls, re.sub(r"[123]d$", "{d}d", cls), re.sub(r"[123]d$", "1d/2d/3d", cls)}
        assert any(f in text for f in forms), f"{name} is not specified in semantics.md"
    for fn in reference.common.FUNCTIONS:
        assert f"`{fn}`" in text, fn


def test_reference_package_never_imports_torch():
    """tests/reference is an independent implementation: no file imports torch, statically or at run time."""
    files = sorted(REFERENCE_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "attention.py", "recurrent.py", "transformer.py"}
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{f.name} imports {names}"
        assert "__import__" not in f.read_text() and "importlib" not in f.read_text(), f.name
    # and at run time, with torch made unimportable
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); import numpy as np; "
            "import reference; "
            "y = reference.forward('torch.nn.ReLU', {'inplace': False}, np.array([-1.0, 2.0])); "
            "assert list(y) == [0.0, 2.0], y; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(REFERENCE_DIR.parent)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_compare_rejects_a_wrong_reference():
    """The comparison is not vacuous: a perturbed output, a wrong shape and a missing None all fail."""
    e = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.raises(AssertionError):
        compare(np.array([1.0, 2.0 + 1e-6]), e, TOL64)
    with pytest.raises(AssertionError, match="shape"):
        compare(np.array([[1.0, 2.0]]), e, TOL64)
    with pytest.raises(AssertionError, match="expected None"):
        compare((np.array([1.0, 2.0]), np.array([0.0])), (e, None), TOL64)
    with pytest.raises(AssertionError):
        compare(np.array([0, 2]), torch.tensor([1, 2]), TOL64)


if __name__ == "__main__":
    worst: dict[str, tuple[float, str]] = {}
    t0 = time.perf_counter()
    for n in sorted(CASES):
        err = run_case(n)
        fam = CASES[n][0]
        if err >= worst.get(fam, (-1.0, ""))[0]:
            worst[fam] = (err, n)
    print(f"{len(CASES)} configurations in {time.perf_counter() - t0:.2f} s")
    for fam, (err, n) in sorted(worst.items()):
        print(f"  {fam:14s} max abs error {err:.3g}  ({n})")
    _ = math
