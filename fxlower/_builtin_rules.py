"""Built-in lowering rules: one per ``torch.nn`` module class that can be a leaf of an inference graph.

Each rule lists every name in the class's ``__constants__``, every parameter and buffer the module owns directly
(a ``None`` entry, such as the ``bias`` of ``nn.Linear(..., bias=False)``, is fetched as ``None``), and the other
hyperparameters a lowering needs to rebuild the computation.

Simple leaves are registered from the ``_GROUPS`` table: classes sharing an attribute list share a row. Composite
leaves (attention, recurrent and transformer modules, which the default ``torch.fx`` tracer does not enter) set
``subtree_tensors=True`` and list their children's hyperparameters by dotted name; the attribute lists of a fixed
child are the child class's own list under the child's name, and children that vary per instance (the layers of
``nn.TransformerEncoder``, a user-supplied norm or activation module) are listed through ``instance_attrs`` using
whatever rule applies to the child.

Excluded on purpose (they are not inference leaves): losses, containers, ``DataParallel``, the uninitialised
``Lazy*`` modules, the abstract ``RNNBase``/``RNNCellBase`` and ``AdaptiveLogSoftmaxWithLoss``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn as nn

from .book import register_module, rule_for, type_name
from .errors import UnsupportedModuleError

__all__ = ["BUILTIN_TYPES"]


def _under(prefix: str, attrs: Iterable[str]) -> tuple[str, ...]:
    """``attrs`` as dotted names below the child ``prefix``."""
    return tuple(f"{prefix}.{a}" for a in attrs)


def _child_attrs(module: nn.Module, name: str) -> list[str]:
    """The attribute names the child ``name`` of ``module`` needs, per the rule that applies to the child,
    as dotted names below ``name``.

    Raises:
        UnsupportedModuleError: no rule applies to the child; the message names the parent and the child.
    """
    child = module.get_submodule(name)
    try:
        rule = rule_for(child)
    except UnsupportedModuleError as e:
        raise UnsupportedModuleError(
            f"{type_name(type(module))} child {name!r} cannot be lifted: {e}") from e
    return [f"{name}.{a}" for a in rule.attr_names(child)]


# --------------------------------------------------------------------------------------------------------------
# Attribute lists shared by several classes.

_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
         "output_padding", "groups", "padding_mode", "weight", "bias")
_LINEAR = ("in_features", "out_features", "weight", "bias")
_BATCH_NORM = ("num_features", "eps", "momentum", "affine", "track_running_stats",
               "weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LAYER_NORM = ("normalized_shape", "eps", "elementwise_affine", "weight", "bias")
_LRN = ("size", "alpha", "beta", "k")
_INPLACE = ("inplace",)
_DIM = ("dim",)
_CLAMP = ("min_val", "max_val", "inplace")
_ALPHA = ("alpha", "inplace")
_SHRINK = ("lambd",)
_MAX_POOL = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
_AVG_POOL_1D = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
_AVG_POOL = _AVG_POOL_1D + ("divisor_override",)
_LP_POOL = ("norm_type", "kernel_size", "stride", "ceil_mode")
_ADAPTIVE_MAX_POOL = ("output_size", "return_indices")
_ADAPTIVE_AVG_POOL = ("output_size",)
_FRACTIONAL_MAX_POOL = ("kernel_size", "return_indices", "output_size", "output_ratio", "_random_samples")
_MAX_UNPOOL = ("kernel_size", "stride", "padding")
_PAD = ("padding",)
_VALUE_PAD = ("padding", "value")
_DROPOUT = ("p", "inplace")
_UPSAMPLE = ("name", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")
_EMBEDDING = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
              "sparse", "weight")
_EMBEDDING_BAG = _EMBEDDING + ("mode", "include_last_offset")
_RNN = ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
        "proj_size")
_RNN_CELL = ("input_size", "hidden_size", "bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
_MHA = ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "dropout", "batch_first", "_qkv_same_embed_dim",
        "add_zero_attn", "in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight",
        "bias_k", "bias_v") + _under("out_proj", _LINEAR)
_ENCODER_LAYER = (("norm_first", "activation_relu_or_gelu", "activation")
                  + _under("self_attn", _MHA)
                  + _under("linear1", _LINEAR) + _under("dropout", _DROPOUT) + _under("linear2", _LINEAR)
                  + _under("norm1", _LAYER_NORM) + _under("norm2", _LAYER_NORM)
                  + _under("dropout1", _DROPOUT) + _under("dropout2", _DROPOUT))
_DECODER_LAYER = (("norm_first", "activation")
                  + _under("self_attn", _MHA) + _under("multihead_attn", _MHA)
                  + _under("linear1", _LINEAR) + _under("dropout", _DROPOUT) + _under("linear2", _LINEAR)
                  + _under("norm1", _LAYER_NORM) + _under("norm2", _LAYER_NORM) + _under("norm3", _LAYER_NORM)
                  + _under("dropout1", _DROPOUT) + _under("dropout2", _DROPOUT) + _under("dropout3", _DROPOUT))


# --------------------------------------------------------------------------------------------------------------
# Simple leaves: (classes, attrs) rows.

_GROUPS: tuple[tuple[tuple[type[nn.Module], ...], tuple[str, ...]], ...] = (
    # convolutions
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), _CONV),
    # linear layers
    ((nn.Identity,), ()),
    ((nn.Linear,), _LINEAR),
    ((nn.Bilinear,), ("in1_features", "in2_features", "out_features", "weight", "bias")),
    # normalisations
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
      nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), _BATCH_NORM),
    ((nn.LayerNorm,), _LAYER_NORM),
    ((nn.RMSNorm,), ("normalized_shape", "eps", "elementwise_affine", "weight")),
    ((nn.GroupNorm,), ("num_groups", "num_channels", "eps", "affine", "weight", "bias")),
    ((nn.LocalResponseNorm, nn.CrossMapLRN2d), _LRN),
    # activations
    ((nn.Sigmoid, nn.Tanh, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softmax2d), ()),
    ((nn.ReLU, nn.SELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid), _INPLACE),
    ((nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.GLU), _DIM),
    ((nn.Hardtanh, nn.ReLU6), _CLAMP),
    ((nn.ELU, nn.CELU), _ALPHA),
    ((nn.Hardshrink, nn.Softshrink), _SHRINK),
    ((nn.Threshold,), ("threshold", "value", "inplace")),
    ((nn.RReLU,), ("lower", "upper", "inplace")),
    ((nn.LeakyReLU,), ("negative_slope", "inplace")),
    ((nn.GELU,), ("approximate",)),
    ((nn.Softplus,), ("beta", "threshold")),
    ((nn.PReLU,), ("num_parameters", "weight")),
    # pooling
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _MAX_POOL),
    ((nn.AvgPool1d,), _AVG_POOL_1D),
    ((nn.AvgPool2d, nn.AvgPool3d), _AVG_POOL),
    ((nn.LPPool1d, nn.LPPool2d, nn.LPPool3d), _LP_POOL),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), _ADAPTIVE_MAX_POOL),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _ADAPTIVE_AVG_POOL),
    ((nn.FractionalMaxPool2d, nn.FractionalMaxPool3d), _FRACTIONAL_MAX_POOL),
    ((nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d), _MAX_UNPOOL),
    # padding
    ((nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
      nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d), _VALUE_PAD),
    ((nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
      nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
      nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d), _PAD),
    # dropout
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout), _DROPOUT),
    # shape
    ((nn.Flatten,), ("start_dim", "end_dim")),
    ((nn.Unflatten,), ("dim", "unflattened_size")),
    ((nn.Fold,), ("output_size", "kernel_size", "dilation", "padding", "stride")),
    ((nn.Unfold,), ("kernel_size", "dilation", "padding", "stride")),
    ((nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), _UPSAMPLE),
    ((nn.PixelShuffle,), ("upscale_factor",)),
    ((nn.PixelUnshuffle,), ("downscale_factor",)),
    ((nn.ChannelShuffle,), ("groups",)),
    # sparse
    ((nn.Embedding,), _EMBEDDING),
    ((nn.EmbeddingBag,), _EMBEDDING_BAG),
    # distances
    ((nn.CosineSimilarity,), ("dim", "eps")),
    ((nn.PairwiseDistance,), ("norm", "eps", "keepdim")),
)


# --------------------------------------------------------------------------------------------------------------
# Composite leaves: every tensor of the subtree is fetched (subtree_tensors=True).

def _activation_attrs(module: nn.Module) -> list[str]:
    """The attributes of ``activation`` per its own rule, when it is a module rather than a function."""
    return _child_attrs(module, "activation") if isinstance(module.activation, nn.Module) else []


def _stack_attrs(module: nn.Module) -> list[str]:
    """The attributes of each of ``layers.0`` … ``layers.{num_layers-1}`` and of ``norm`` (when not None),
    per the rule of each."""
    names = [a for i in range(len(module.layers)) for a in _child_attrs(module, f"layers.{i}")]
    if module.norm is not None:
        names += _child_attrs(module, "norm")
    return names


def _transformer_attrs(module: nn.Module) -> list[str]:
    """The attributes of ``encoder`` and ``decoder`` (built-in or custom), per the rule of each."""
    return _child_attrs(module, "encoder") + _child_attrs(module, "decoder")


# (class, attrs, instance_attrs)
_COMPOSITES = (
    (nn.MultiheadAttention, _MHA, None),
    (nn.RNN, _RNN + ("nonlinearity",), None),
    (nn.LSTM, _RNN, None),
    (nn.GRU, _RNN, None),
    (nn.RNNCell, _RNN_CELL + ("nonlinearity",), None),
    (nn.LSTMCell, _RNN_CELL, None),
    (nn.GRUCell, _RNN_CELL, None),
    (nn.TransformerEncoderLayer, _ENCODER_LAYER, _activation_attrs),
    (nn.TransformerDecoderLayer, _DECODER_LAYER, _activation_attrs),
    (nn.TransformerEncoder, ("num_layers", "norm", "enable_nested_tensor", "use_nested_tensor", "mask_check"),
     _stack_attrs),
    (nn.TransformerDecoder, ("num_layers", "norm"), _stack_attrs),
    (nn.Transformer, ("d_model", "nhead", "batch_first"), _transformer_attrs),
)


def _register_all() -> tuple[type[nn.Module], ...]:
    registered: list[type[nn.Module]] = []
    for classes, attrs in _GROUPS:
        for cls in classes:
            register_module(cls, attrs=attrs, version=1)
            registered.append(cls)
    for cls, attrs, instance_attrs in _COMPOSITES:
        register_module(cls, attrs=attrs, version=1, subtree_tensors=True, instance_attrs=instance_attrs)
        registered.append(cls)
    return tuple(registered)


#: Every class that has a built-in rule, in registration order.
BUILTIN_TYPES: tuple[type[nn.Module], ...] = _register_all()
