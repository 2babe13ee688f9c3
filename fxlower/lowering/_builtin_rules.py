"""Built-in lowering rules: one per ``torch.nn`` module class that can be a leaf of an inference graph.

Each rule declares, with its type and meaning, every name in the class's ``__constants__``, every parameter and
buffer the module owns directly (one that may be ``None``, such as the ``bias`` of ``nn.Linear(..., bias=False)``,
is declared ``tensor|none``), and the other hyperparameters a lowering needs to rebuild the computation. Types
follow what torch 2.x stores, not what the constructor accepts: ``nn.Conv2d`` normalises ``kernel_size`` to a pair
(``int[2]``) while ``nn.MaxPool2d`` keeps it as given (``int|int[2]``).

Composite leaves (attention, transformer modules, which the default ``torch.fx`` tracer does not enter) declare
their children as ``module`` attributes: the child's own attributes are recorded under ``<child>.`` by the child's
rule, so every tensor of the subtree is recorded by its dotted name. Recurrent modules declare their per-layer
weights with ``*`` (one decimal index): ``weight_ih_l*``, ``weight_ih_l*_reverse``, ...

Excluded on purpose (they are not inference leaves): losses, containers, ``DataParallel``, the uninitialised
``Lazy*`` modules, the abstract ``RNNBase``/``RNNCellBase`` and ``AdaptiveLogSoftmaxWithLoss``.

This module is imported by ``fxlower/__init__.py``; it imports the book, never the other way round.
"""

from __future__ import annotations

import torch.nn as nn

from .book import register_module

__all__ = ["BUILTIN_TYPES"]


# --------------------------------------------------------------------------------------------------------------
# Derived private state that the classes' __init__ computes from the recorded attributes (used by rebuild).

def _conv_finish(module: nn.Module) -> None:
    """``_reversed_padding_repeated_twice``, as ``_ConvNd.__init__`` computes it from padding, dilation and
    kernel_size (used by the non-``zeros`` padding modes)."""
    n = len(module.kernel_size)
    if isinstance(module.padding, str):
        rev = [0, 0] * n
        if module.padding == "same":
            for d, k, i in zip(module.dilation, module.kernel_size, range(n - 1, -1, -1)):
                total = d * (k - 1)
                rev[2 * i] = total // 2
                rev[2 * i + 1] = total - total // 2
        module._reversed_padding_repeated_twice = rev
    else:
        # each dimension's padding twice, last dimension first (the order F.pad takes)
        module._reversed_padding_repeated_twice = tuple(p for p in reversed(module.padding) for _ in range(2))


def _rnn_finish(module: nn.Module) -> None:
    """The flat-weight lists ``RNNBase.__init__`` builds: per layer and direction, weight_ih, weight_hh
    [, bias_ih, bias_hh][, weight_hr], suffixed ``_l{layer}[_reverse]``."""
    groups = []
    for layer in range(module.num_layers):
        for direction in range(2 if module.bidirectional else 1):
            suffix = f"_l{layer}{'_reverse' if direction else ''}"
            group = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
            group += ["weight_hr"] if module.proj_size > 0 else []
            groups.append([f"{n}{suffix}" for n in group])
    module._all_weights = groups
    module._flat_weights_names = [n for group in groups for n in group]
    module._init_flat_weights()


# --------------------------------------------------------------------------------------------------------------
# Attribute declarations shared by several classes: (name, type, one-line meaning).

_WEIGHT = ("weight", "tensor", "learnable weight")
_BIAS = ("bias", "tensor|none", "learnable bias, None when the module has none")
_INPLACE = (("inplace", "bool", "whether the input tensor is overwritten with the result"),)


def _conv(n: int, transposed: bool) -> tuple:
    t = f"int[{n}]"
    layout = "(in_channels, out_channels/groups, *kernel_size)" if transposed else \
        "(out_channels, in_channels/groups, *kernel_size)"
    return (
        ("in_channels", "int", "number of input channels"),
        ("out_channels", "int", "number of output channels"),
        ("kernel_size", t, "kernel extent per spatial dimension"),
        ("stride", t, "stride per spatial dimension"),
        ("padding", t if transposed else f"{t}|enum(same,valid)",
         "zero padding per spatial dimension (both sides)" + ("" if transposed else ", or 'same'/'valid'")),
        ("dilation", t, "spacing between kernel elements per spatial dimension"),
        ("transposed", "bool", "true for a transposed convolution"),
        ("output_padding", t, "size added to one side of each output dimension (transposed convolutions)"),
        ("groups", "int", "number of blocked connections from input to output channels"),
        ("padding_mode", "enum(zeros,reflect,replicate,circular)", "how the padded values are produced"),
        ("weight", "tensor", f"convolution kernel, shape {layout}"),
        _BIAS,
    )


_LINEAR = (
    ("in_features", "int", "size of each input sample"),
    ("out_features", "int", "size of each output sample"),
    ("weight", "tensor", "weight, shape (out_features, in_features)"),
    _BIAS,
)
_NORM_BASE = (
    ("num_features", "int", "number of channels C of the input"),
    ("eps", "float", "value added to the variance for numerical stability"),
    ("momentum", "float|none", "running-statistics update factor; None for a cumulative moving average"),
    ("affine", "bool", "whether the module has learnable weight and bias"),
    ("track_running_stats", "bool", "whether running mean and variance are kept and used in eval mode"),
    ("weight", "tensor|none", "per-channel scale (None unless affine)"),
    ("bias", "tensor|none", "per-channel shift (None unless affine)"),
    ("running_mean", "tensor|none", "running mean per channel (None unless track_running_stats)"),
    ("running_var", "tensor|none", "running variance per channel (None unless track_running_stats)"),
    ("num_batches_tracked", "tensor|none", "number of batches seen in training (None unless track_running_stats)"),
)
_LAYER_NORM = (
    ("normalized_shape", "int[]", "trailing dimensions normalised over"),
    ("eps", "float", "value added to the variance for numerical stability"),
    ("elementwise_affine", "bool", "whether the module has learnable per-element weight (and bias)"),
    ("weight", "tensor|none", "per-element scale, shape normalized_shape (None unless elementwise_affine)"),
    ("bias", "tensor|none", "per-element shift (None unless elementwise_affine and bias)"),
)
_LRN = (
    ("size", "int", "number of neighbouring channels used for normalisation"),
    ("alpha", "float", "multiplicative factor"),
    ("beta", "float", "exponent"),
    ("k", "float", "additive factor"),
)
_DIM_OPT = (("dim", "int|none", "dimension along which the function is computed (None: torch's legacy choice)"),)
_CLAMP = (
    ("min_val", "float", "lower end of the linear region"),
    ("max_val", "float", "upper end of the linear region"),
) + _INPLACE
_ALPHA = (("alpha", "float", "the alpha of the formula"),) + _INPLACE
_SHRINK = (("lambd", "float", "the lambda threshold"),)
_DROPOUT = (
    ("p", "float", "probability of an element (or channel) being zeroed in training; eval mode is the identity"),
) + _INPLACE


def _max_pool(n: int) -> tuple:
    t = f"int|int[{n}]"
    return (
        ("kernel_size", t, "window size, as given to the constructor"),
        ("stride", t, "window stride (the kernel size when not given)"),
        ("padding", t, "implicit negative-infinity padding on both sides"),
        ("dilation", t, "spacing between window elements"),
        ("return_indices", "bool", "whether forward also returns the argmax indices"),
        ("ceil_mode", "bool", "whether the output size is rounded up instead of down"),
    )


def _avg_pool(n: int) -> tuple:
    t = "int[1]" if n == 1 else f"int|int[{n}]"
    out = (
        ("kernel_size", t, "window size"),
        ("stride", t, "window stride (the kernel size when not given)"),
        ("padding", t, "implicit zero padding on both sides"),
        ("ceil_mode", "bool", "whether the output size is rounded up instead of down"),
        ("count_include_pad", "bool", "whether the zero padding counts in the averaging divisor"),
    )
    if n > 1:
        out += (("divisor_override", "int|none", "the divisor to use instead of the window size, if given"),)
    return out


def _lp_pool(n: int) -> tuple:
    return (
        ("norm_type", "float", "the power p of the power-average"),
        ("kernel_size", f"int|int[{n}]", "window size"),
        ("stride", f"int|int[{n}]|none", "window stride; None means the kernel size"),
        ("ceil_mode", "bool", "whether the output size is rounded up instead of down"),
    )


def _adaptive_size(n: int) -> tuple:
    if n == 1:
        return (("output_size", "int|int[1]", "target output length"),)
    return (("output_size", f"int|(int|none)[{n}]",
             "target output size; a None element keeps the input's size in that dimension"),)


_RETURN_INDICES = (("return_indices", "bool", "whether forward also returns the argmax indices"),)


def _fractional(n: int) -> tuple:
    return (
        ("kernel_size", f"int[{n}]", "window size"),
        ("return_indices", "bool", "whether forward also returns the argmax indices"),
        ("output_size", f"int[{n}]|none", "target output size (None when output_ratio is given)"),
        ("output_ratio", f"float[{n}]|none", "output size as a ratio of the input size (None when output_size "
                                             "is given)"),
        ("_random_samples", "tensor|none", "fixed pseudo-random window offsets, None to draw them per call"),
    )


def _max_unpool(n: int) -> tuple:
    t = f"int[{n}]"
    return (
        ("kernel_size", t, "window size of the max pooling being inverted"),
        ("stride", t, "stride of the max pooling being inverted"),
        ("padding", t, "padding of the max pooling being inverted"),
    )


def _pad(n: int, value: bool) -> tuple:
    out = (("padding", f"int[{2 * n}]", "padding sizes (left, right[, top, bottom[, front, back]])"),)
    if value:
        out += (("value", "float", "the fill value"),)
    return out


_UPSAMPLE = (
    ("name", "str", "the class name, as torch stores it"),
    ("size", "int|int[]|none", "output spatial size (None when scale_factor is given)"),
    ("scale_factor", "float|float[]|none", "multiplier of the spatial size (None when size is given)"),
    ("mode", "str", "interpolation: nearest, linear, bilinear, bicubic, trilinear, area or nearest-exact"),
    ("align_corners", "bool|none", "whether corner pixels of input and output are aligned (linear modes only)"),
    ("recompute_scale_factor", "bool|none", "whether the scale factor is recomputed from the output size"),
)
_EMBEDDING = (
    ("num_embeddings", "int", "size of the dictionary"),
    ("embedding_dim", "int", "size of each embedding vector"),
    ("padding_idx", "int|none", "index whose entry gets no gradient (None for none)"),
    ("max_norm", "float|none", "embeddings with a larger norm are renormalised in forward (None: never)"),
    ("norm_type", "float", "the p of the p-norm used with max_norm"),
    ("scale_grad_by_freq", "bool", "whether gradients are scaled by inverse word frequency"),
    ("sparse", "bool", "whether the weight gradient is sparse"),
    ("weight", "tensor", "the embedding table, shape (num_embeddings, embedding_dim)"),
)
_EMBEDDING_BAG = _EMBEDDING + (
    ("mode", "enum(sum,mean,max)", "how each bag is reduced"),
    ("include_last_offset", "bool", "whether offsets has one extra element, the end of the last bag"),
)
_RNN = (
    ("mode", "enum(RNN_TANH,RNN_RELU,LSTM,GRU)", "the recurrent cell"),
    ("input_size", "int", "number of features of the input"),
    ("hidden_size", "int", "number of features of the hidden state"),
    ("num_layers", "int", "number of stacked recurrent layers"),
    ("bias", "bool", "whether the layers have bias weights"),
    ("batch_first", "bool", "whether input and output are (batch, seq, feature) instead of (seq, batch, feature)"),
    ("dropout", "float", "dropout probability between layers in training"),
    ("bidirectional", "bool", "whether each layer also runs in reverse"),
    ("proj_size", "int", "size of the LSTM projection of the hidden state (0: no projection)"),
)
_RNN_WEIGHTS = tuple(
    (f"{name}_l*{suffix}", kind, f"{what} of layer * ({direction} direction)")
    for suffix, direction in (("", "forward"), ("_reverse", "reverse"))
    for name, kind, what in (
        ("weight_ih", "tensor", "input-hidden weights"),
        ("weight_hh", "tensor", "hidden-hidden weights"),
        ("bias_ih", "tensor", "input-hidden bias (present only with bias)"),
        ("bias_hh", "tensor", "hidden-hidden bias (present only with bias)"),
        ("weight_hr", "tensor", "hidden projection weights (LSTM with proj_size > 0)"),
    )
)
_NONLINEARITY = (("nonlinearity", "enum(tanh,relu)", "the nonlinearity of the cell"),)
_RNN_CELL = (
    ("input_size", "int", "number of features of the input"),
    ("hidden_size", "int", "number of features of the hidden state"),
    ("bias", "bool", "whether the cell has bias weights"),
    ("weight_ih", "tensor", "input-hidden weights"),
    ("weight_hh", "tensor", "hidden-hidden weights"),
    ("bias_ih", "tensor|none", "input-hidden bias (None without bias)"),
    ("bias_hh", "tensor|none", "hidden-hidden bias (None without bias)"),
)
_MHA = (
    ("embed_dim", "int", "total dimension of the model"),
    ("kdim", "int", "number of features of the keys"),
    ("vdim", "int", "number of features of the values"),
    ("num_heads", "int", "number of parallel attention heads"),
    ("head_dim", "int", "dimension of each head (embed_dim // num_heads)"),
    ("dropout", "float", "dropout probability on the attention weights in training"),
    ("batch_first", "bool", "whether inputs and outputs are (batch, seq, feature)"),
    ("_qkv_same_embed_dim", "bool", "whether kdim == vdim == embed_dim (one packed in_proj_weight)"),
    ("add_zero_attn", "bool", "whether a batch of zeros is appended to the key and value sequences"),
    ("in_proj_weight", "tensor|none", "packed query/key/value projection (None when kdim or vdim differ)"),
    ("q_proj_weight", "tensor|none", "query projection (None when packed in in_proj_weight)"),
    ("k_proj_weight", "tensor|none", "key projection (None when packed in in_proj_weight)"),
    ("v_proj_weight", "tensor|none", "value projection (None when packed in in_proj_weight)"),
    ("in_proj_bias", "tensor|none", "packed query/key/value projection bias (None without bias)"),
    ("bias_k", "tensor|none", "bias appended to the key sequence (None unless add_bias_kv)"),
    ("bias_v", "tensor|none", "bias appended to the value sequence (None unless add_bias_kv)"),
    ("out_proj", "module", "the output projection (a torch.nn.Linear)"),
)
_ACTIVATION = ("activation", "function|module", "the feed-forward activation: a function or a module")
_FEED_FORWARD = (
    ("linear1", "module", "first feed-forward linear layer"),
    ("dropout", "module", "dropout inside the feed-forward block"),
    ("linear2", "module", "second feed-forward linear layer"),
)
_ENCODER_LAYER = (
    ("norm_first", "bool", "whether layer norms come before attention and feed-forward (pre-norm)"),
    ("activation_relu_or_gelu", "int", "1 when activation is relu, 2 when gelu, else 0 (fast-path selector)"),
    ("self_attn", "module", "self-attention (a torch.nn.MultiheadAttention)"),
) + _FEED_FORWARD + (
    ("norm1", "module", "layer norm of the self-attention block"),
    ("norm2", "module", "layer norm of the feed-forward block"),
    ("dropout1", "module", "dropout after self-attention"),
    ("dropout2", "module", "dropout after the feed-forward block"),
    _ACTIVATION,
)
_DECODER_LAYER = (
    ("norm_first", "bool", "whether layer norms come before each block (pre-norm)"),
    ("self_attn", "module", "self-attention (a torch.nn.MultiheadAttention)"),
    ("multihead_attn", "module", "attention over the encoder memory (a torch.nn.MultiheadAttention)"),
) + _FEED_FORWARD + (
    ("norm1", "module", "layer norm of the self-attention block"),
    ("norm2", "module", "layer norm of the memory-attention block"),
    ("norm3", "module", "layer norm of the feed-forward block"),
    ("dropout1", "module", "dropout after self-attention"),
    ("dropout2", "module", "dropout after memory attention"),
    ("dropout3", "module", "dropout after the feed-forward block"),
    _ACTIVATION,
)
_STACK = (
    ("num_layers", "int", "number of layers"),
    ("layers.*", "module", "layer * of the stack (the layers are held in a torch.nn.ModuleList)"),
    ("norm", "module|none", "final normalisation module, None for none"),
)


# --------------------------------------------------------------------------------------------------------------
# The rules: (classes, attrs[, finish]) rows.

_ROWS: tuple = (
    # convolutions
    ((nn.Conv1d,), _conv(1, False), _conv_finish),
    ((nn.Conv2d,), _conv(2, False), _conv_finish),
    ((nn.Conv3d,), _conv(3, False), _conv_finish),
    ((nn.ConvTranspose1d,), _conv(1, True), _conv_finish),
    ((nn.ConvTranspose2d,), _conv(2, True), _conv_finish),
    ((nn.ConvTranspose3d,), _conv(3, True), _conv_finish),
    # linear layers
    ((nn.Identity,), ()),
    ((nn.Linear,), _LINEAR),
    ((nn.Bilinear,), (
        ("in1_features", "int", "size of each first input sample"),
        ("in2_features", "int", "size of each second input sample"),
        ("out_features", "int", "size of each output sample"),
        ("weight", "tensor", "weight, shape (out_features, in1_features, in2_features)"),
        _BIAS,
    )),
    # normalisations
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
      nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), _NORM_BASE),
    ((nn.LayerNorm,), _LAYER_NORM),
    ((nn.RMSNorm,), (
        ("normalized_shape", "int[]", "trailing dimensions normalised over"),
        ("eps", "float|none", "value added for numerical stability; None means the dtype's machine epsilon"),
        ("elementwise_affine", "bool", "whether the module has a learnable per-element weight"),
        ("weight", "tensor|none", "per-element scale (None unless elementwise_affine)"),
    )),
    ((nn.GroupNorm,), (
        ("num_groups", "int", "number of groups the channels are divided into"),
        ("num_channels", "int", "number of channels of the input"),
        ("eps", "float", "value added to the variance for numerical stability"),
        ("affine", "bool", "whether the module has learnable per-channel weight and bias"),
        ("weight", "tensor|none", "per-channel scale (None unless affine)"),
        ("bias", "tensor|none", "per-channel shift (None unless affine)"),
    )),
    ((nn.LocalResponseNorm, nn.CrossMapLRN2d), _LRN),
    # activations
    ((nn.Sigmoid, nn.Tanh, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softmax2d), ()),
    ((nn.ReLU, nn.SELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid), _INPLACE),
    ((nn.Softmax, nn.Softmin, nn.LogSoftmax), _DIM_OPT),
    ((nn.GLU,), (("dim", "int", "dimension split in half"),)),
    ((nn.Hardtanh, nn.ReLU6), _CLAMP),
    ((nn.ELU, nn.CELU), _ALPHA),
    ((nn.Hardshrink, nn.Softshrink), _SHRINK),
    ((nn.Threshold,), (
        ("threshold", "float", "values at or below it are replaced"),
        ("value", "float", "the replacement value"),
    ) + _INPLACE),
    ((nn.RReLU,), (
        ("lower", "float", "lower bound of the random slope (eval mode uses the mean of lower and upper)"),
        ("upper", "float", "upper bound of the random slope"),
    ) + _INPLACE),
    ((nn.LeakyReLU,), (("negative_slope", "float", "slope for negative inputs"),) + _INPLACE),
    ((nn.GELU,), (("approximate", "enum(none,tanh)", "the exact erf form, or the tanh approximation"),)),
    ((nn.Softplus,), (
        ("beta", "float", "the beta of the formula"),
        ("threshold", "float", "above beta*x > threshold the function is the identity"),
    )),
    ((nn.PReLU,), (
        ("num_parameters", "int", "number of learnable slopes (1, or the number of channels)"),
        ("weight", "tensor", "the learnable negative slopes"),
    )),
    # pooling
    ((nn.MaxPool1d,), _max_pool(1)),
    ((nn.MaxPool2d,), _max_pool(2)),
    ((nn.MaxPool3d,), _max_pool(3)),
    ((nn.AvgPool1d,), _avg_pool(1)),
    ((nn.AvgPool2d,), _avg_pool(2)),
    ((nn.AvgPool3d,), _avg_pool(3)),
    ((nn.LPPool1d,), _lp_pool(1)),
    ((nn.LPPool2d,), _lp_pool(2)),
    ((nn.LPPool3d,), _lp_pool(3)),
    ((nn.AdaptiveMaxPool1d,), _adaptive_size(1) + _RETURN_INDICES),
    ((nn.AdaptiveMaxPool2d,), _adaptive_size(2) + _RETURN_INDICES),
    ((nn.AdaptiveMaxPool3d,), _adaptive_size(3) + _RETURN_INDICES),
    ((nn.AdaptiveAvgPool1d,), _adaptive_size(1)),
    ((nn.AdaptiveAvgPool2d,), _adaptive_size(2)),
    ((nn.AdaptiveAvgPool3d,), _adaptive_size(3)),
    ((nn.FractionalMaxPool2d,), _fractional(2)),
    ((nn.FractionalMaxPool3d,), _fractional(3)),
    ((nn.MaxUnpool1d,), _max_unpool(1)),
    ((nn.MaxUnpool2d,), _max_unpool(2)),
    ((nn.MaxUnpool3d,), _max_unpool(3)),
    # padding
    ((nn.ConstantPad1d, nn.ZeroPad1d), _pad(1, True)),
    ((nn.ConstantPad2d, nn.ZeroPad2d), _pad(2, True)),
    ((nn.ConstantPad3d, nn.ZeroPad3d), _pad(3, True)),
    ((nn.ReflectionPad1d, nn.ReplicationPad1d, nn.CircularPad1d), _pad(1, False)),
    ((nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d), _pad(2, False)),
    ((nn.ReflectionPad3d, nn.ReplicationPad3d, nn.CircularPad3d), _pad(3, False)),
    # dropout
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout), _DROPOUT),
    # shape
    ((nn.Flatten,), (
        ("start_dim", "int", "first dimension flattened"),
        ("end_dim", "int", "last dimension flattened"),
    )),
    ((nn.Unflatten,), (
        ("dim", "int", "dimension unflattened"),
        ("unflattened_size", "int[]", "the sizes it is unflattened into"),
    )),
    ((nn.Fold,), (
        ("output_size", "int|int[2]", "spatial size of the output"),
        ("kernel_size", "int|int[2]", "size of the sliding blocks"),
        ("dilation", "int|int[2]", "spacing between block elements"),
        ("padding", "int|int[2]", "implicit zero padding on both sides"),
        ("stride", "int|int[2]", "stride of the sliding blocks"),
    )),
    ((nn.Unfold,), (
        ("kernel_size", "int|int[2]", "size of the sliding blocks"),
        ("dilation", "int|int[2]", "spacing between block elements"),
        ("padding", "int|int[2]", "implicit zero padding on both sides"),
        ("stride", "int|int[2]", "stride of the sliding blocks"),
    )),
    ((nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), _UPSAMPLE),
    ((nn.PixelShuffle,), (("upscale_factor", "int", "factor the spatial size is multiplied by"),)),
    ((nn.PixelUnshuffle,), (("downscale_factor", "int", "factor the spatial size is divided by"),)),
    ((nn.ChannelShuffle,), (("groups", "int", "number of channel groups shuffled"),)),
    # sparse
    ((nn.Embedding,), _EMBEDDING),
    ((nn.EmbeddingBag,), _EMBEDDING_BAG),
    # distances
    ((nn.CosineSimilarity,), (
        ("dim", "int", "dimension along which the similarity is computed"),
        ("eps", "float", "small value to avoid division by zero"),
    )),
    ((nn.PairwiseDistance,), (
        ("norm", "float", "the p of the p-norm"),
        ("eps", "float", "small value added to the difference to avoid division by zero"),
        ("keepdim", "bool", "whether the reduced dimension is kept"),
    )),
    # composites and recurrent modules
    ((nn.MultiheadAttention,), _MHA),
    ((nn.RNN,), _RNN + _NONLINEARITY + _RNN_WEIGHTS, _rnn_finish),
    ((nn.LSTM,), _RNN + _RNN_WEIGHTS, _rnn_finish),
    ((nn.GRU,), _RNN + _RNN_WEIGHTS, _rnn_finish),
    ((nn.RNNCell,), _RNN_CELL + _NONLINEARITY),
    ((nn.LSTMCell,), _RNN_CELL),
    ((nn.GRUCell,), _RNN_CELL),
    ((nn.TransformerEncoderLayer,), _ENCODER_LAYER),
    ((nn.TransformerDecoderLayer,), _DECODER_LAYER),
    ((nn.TransformerEncoder,), _STACK + (
        ("enable_nested_tensor", "bool", "whether the fast path may use nested tensors (as constructed)"),
        ("use_nested_tensor", "bool", "whether the fast path uses nested tensors (after torch's checks)"),
        ("mask_check", "bool", "whether the fast path checks the padding mask is left-aligned"),
    ), None, 2),
    ((nn.TransformerDecoder,), _STACK, None, 2),
    ((nn.Transformer,), (
        ("d_model", "int", "number of expected features of the inputs"),
        ("nhead", "int", "number of attention heads"),
        ("batch_first", "bool", "whether inputs and outputs are (batch, seq, feature)"),
        ("encoder", "module", "the encoder (a torch.nn.TransformerEncoder or a custom module)"),
        ("decoder", "module", "the decoder (a torch.nn.TransformerDecoder or a custom module)"),
    ), None, 2),
)


def _register_all() -> tuple[type[nn.Module], ...]:
    registered: list[type[nn.Module]] = []
    for row in _ROWS:
        classes, attrs = row[0], row[1]
        finish = row[2] if len(row) > 2 else None
        version = row[3] if len(row) > 3 else 1
        for cls in classes:
            register_module(cls, attrs=attrs, version=version, finish=finish)
            registered.append(cls)
    return tuple(registered)


#: Every class that has a built-in rule, in registration order.
BUILTIN_TYPES: tuple[type[nn.Module], ...] = _register_all()
