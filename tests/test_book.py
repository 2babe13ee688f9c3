"""Tests of the book of lowering rules: coverage of torch.nn, the built-in typed attribute declarations, forward
signatures, rebuild, subclass lookup, versions and registration."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

import fxlower
from fxlower import AttributeTypeError, RegistrationError, UnsupportedModuleError
from fxlower.format import attrtypes
from fxlower.lowering.book import (LoweringRule, find_rule, register_module, rule_for, rule_named, rules, type_name,
                          unregister_module)
from fxlower.format.schema import AttrDecl, ModuleDecl, Param
from fxlower.lowering._builtin_rules import BUILTIN_TYPES

# ----------------------------------------------------------------------------------------------------------------
# torch.nn classes deliberately without a rule.

_LOSS = "a loss: computes a training objective, not part of an inference graph"
_CONTAINER = "a container: the tracer enters it and records its children, so it is never a leaf"
_LAZY = "a lazy module: parameters are uninitialised until a forward pass turns it into its non-lazy base"

EXCLUDED: dict[type, str] = {
    nn.Module: "the base class; user modules need their own rule",
    nn.Container: _CONTAINER + " (deprecated)",
    nn.Sequential: _CONTAINER,
    nn.ModuleList: _CONTAINER,
    nn.ModuleDict: _CONTAINER,
    nn.ParameterList: _CONTAINER,
    nn.ParameterDict: _CONTAINER,
    nn.DataParallel: "a multi-device wrapper: the tracer enters it, the wrapped module is what gets lowered",
    nn.RNNBase: "abstract base of RNN/LSTM/GRU, which have their own rules",
    nn.RNNCellBase: "abstract base of RNNCell/LSTMCell/GRUCell, which have their own rules",
    nn.AdaptiveLogSoftmaxWithLoss: "a loss (returns output and loss), used in training only",
    nn.LazyLinear: _LAZY,
    nn.LazyConv1d: _LAZY,
    nn.LazyConv2d: _LAZY,
    nn.LazyConv3d: _LAZY,
    nn.LazyConvTranspose1d: _LAZY,
    nn.LazyConvTranspose2d: _LAZY,
    nn.LazyConvTranspose3d: _LAZY,
    nn.LazyBatchNorm1d: _LAZY,
    nn.LazyBatchNorm2d: _LAZY,
    nn.LazyBatchNorm3d: _LAZY,
    nn.LazyInstanceNorm1d: _LAZY,
    nn.LazyInstanceNorm2d: _LAZY,
    nn.LazyInstanceNorm3d: _LAZY,
    nn.L1Loss: _LOSS,
    nn.MSELoss: _LOSS,
    nn.CrossEntropyLoss: _LOSS,
    nn.CTCLoss: _LOSS,
    nn.NLLLoss: _LOSS,
    nn.NLLLoss2d: _LOSS + " (deprecated alias of NLLLoss)",
    nn.PoissonNLLLoss: _LOSS,
    nn.GaussianNLLLoss: _LOSS,
    nn.KLDivLoss: _LOSS,
    nn.BCELoss: _LOSS,
    nn.BCEWithLogitsLoss: _LOSS,
    nn.MarginRankingLoss: _LOSS,
    nn.HingeEmbeddingLoss: _LOSS,
    nn.MultiLabelMarginLoss: _LOSS,
    nn.HuberLoss: _LOSS,
    nn.SmoothL1Loss: _LOSS,
    nn.SoftMarginLoss: _LOSS,
    nn.MultiLabelSoftMarginLoss: _LOSS,
    nn.CosineEmbeddingLoss: _LOSS,
    nn.MultiMarginLoss: _LOSS,
    nn.TripletMarginLoss: _LOSS,
    nn.TripletMarginWithDistanceLoss: _LOSS,
}
# Classes that only recent torch releases have (pyproject allows torch >= 2.4).
EXCLUDED.update({getattr(nn, name): reason for name, reason in {
    "LinearCrossEntropyLoss": _LOSS + " (fused with its final Linear)",
}.items() if hasattr(nn, name)})

# ----------------------------------------------------------------------------------------------------------------
# A small valid instance of every class with a built-in rule.

_ENC = lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)  # noqa: E731
_DEC = lambda: nn.TransformerDecoderLayer(8, 2, dim_feedforward=16)  # noqa: E731

CTOR = {
    nn.Conv1d: lambda: nn.Conv1d(2, 4, 3),
    nn.Conv2d: lambda: nn.Conv2d(2, 4, 3),
    nn.Conv3d: lambda: nn.Conv3d(2, 4, 3),
    nn.ConvTranspose1d: lambda: nn.ConvTranspose1d(2, 4, 3),
    nn.ConvTranspose2d: lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=1),
    nn.ConvTranspose3d: lambda: nn.ConvTranspose3d(2, 4, 3),
    nn.Identity: nn.Identity,
    nn.Linear: lambda: nn.Linear(3, 4),
    nn.Bilinear: lambda: nn.Bilinear(2, 3, 4),
    nn.BatchNorm1d: lambda: nn.BatchNorm1d(4),
    nn.BatchNorm2d: lambda: nn.BatchNorm2d(4),
    nn.BatchNorm3d: lambda: nn.BatchNorm3d(4),
    nn.SyncBatchNorm: lambda: nn.SyncBatchNorm(4),
    nn.InstanceNorm1d: lambda: nn.InstanceNorm1d(4),
    nn.InstanceNorm2d: lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
    nn.InstanceNorm3d: lambda: nn.InstanceNorm3d(4),
    nn.LayerNorm: lambda: nn.LayerNorm(4),
    nn.RMSNorm: lambda: nn.RMSNorm(4),
    nn.GroupNorm: lambda: nn.GroupNorm(2, 4),
    nn.LocalResponseNorm: lambda: nn.LocalResponseNorm(2),
    nn.CrossMapLRN2d: lambda: nn.CrossMapLRN2d(3),
    nn.Sigmoid: nn.Sigmoid,
    nn.Tanh: nn.Tanh,
    nn.LogSigmoid: nn.LogSigmoid,
    nn.Softsign: nn.Softsign,
    nn.Tanhshrink: nn.Tanhshrink,
    nn.Softmax2d: nn.Softmax2d,
    nn.ReLU: nn.ReLU,
    nn.SELU: nn.SELU,
    nn.SiLU: nn.SiLU,
    nn.Mish: nn.Mish,
    nn.Hardswish: nn.Hardswish,
    nn.Hardsigmoid: nn.Hardsigmoid,
    nn.Softmax: lambda: nn.Softmax(dim=1),
    nn.Softmin: lambda: nn.Softmin(dim=1),
    nn.LogSoftmax: lambda: nn.LogSoftmax(dim=1),
    nn.GLU: nn.GLU,
    nn.Hardtanh: lambda: nn.Hardtanh(-2.0, 2.0),
    nn.ReLU6: nn.ReLU6,
    nn.ELU: nn.ELU,
    nn.CELU: nn.CELU,
    nn.Hardshrink: nn.Hardshrink,
    nn.Softshrink: nn.Softshrink,
    nn.Threshold: lambda: nn.Threshold(0.1, 20.0),
    nn.RReLU: nn.RReLU,
    nn.LeakyReLU: nn.LeakyReLU,
    nn.GELU: lambda: nn.GELU(approximate="tanh"),
    nn.Softplus: nn.Softplus,
    nn.PReLU: lambda: nn.PReLU(4),
    nn.MaxPool1d: lambda: nn.MaxPool1d(2),
    nn.MaxPool2d: lambda: nn.MaxPool2d(2),
    nn.MaxPool3d: lambda: nn.MaxPool3d(2),
    nn.AvgPool1d: lambda: nn.AvgPool1d(2),
    nn.AvgPool2d: lambda: nn.AvgPool2d(2),
    nn.AvgPool3d: lambda: nn.AvgPool3d(2),
    nn.LPPool1d: lambda: nn.LPPool1d(2, 2),
    nn.LPPool2d: lambda: nn.LPPool2d(2, 2),
    nn.LPPool3d: lambda: nn.LPPool3d(2, 2),
    nn.AdaptiveMaxPool1d: lambda: nn.AdaptiveMaxPool1d(2),
    nn.AdaptiveMaxPool2d: lambda: nn.AdaptiveMaxPool2d(2),
    nn.AdaptiveMaxPool3d: lambda: nn.AdaptiveMaxPool3d(2),
    nn.AdaptiveAvgPool1d: lambda: nn.AdaptiveAvgPool1d(2),
    nn.AdaptiveAvgPool2d: lambda: nn.AdaptiveAvgPool2d((2, None)),
    nn.AdaptiveAvgPool3d: lambda: nn.AdaptiveAvgPool3d(2),
    nn.FractionalMaxPool2d: lambda: nn.FractionalMaxPool2d(2, output_size=3),
    nn.FractionalMaxPool3d: lambda: nn.FractionalMaxPool3d(2, output_ratio=0.5),
    nn.MaxUnpool1d: lambda: nn.MaxUnpool1d(2),
    nn.MaxUnpool2d: lambda: nn.MaxUnpool2d(2),
    nn.MaxUnpool3d: lambda: nn.MaxUnpool3d(2),
    nn.ConstantPad1d: lambda: nn.ConstantPad1d(1, 0.5),
    nn.ConstantPad2d: lambda: nn.ConstantPad2d((1, 0, 2, 0), 0.5),
    nn.ConstantPad3d: lambda: nn.ConstantPad3d(1, 0.5),
    nn.ZeroPad1d: lambda: nn.ZeroPad1d(1),
    nn.ZeroPad2d: lambda: nn.ZeroPad2d(1),
    nn.ZeroPad3d: lambda: nn.ZeroPad3d(1),
    nn.ReflectionPad1d: lambda: nn.ReflectionPad1d(1),
    nn.ReflectionPad2d: lambda: nn.ReflectionPad2d(1),
    nn.ReflectionPad3d: lambda: nn.ReflectionPad3d(1),
    nn.ReplicationPad1d: lambda: nn.ReplicationPad1d(1),
    nn.ReplicationPad2d: lambda: nn.ReplicationPad2d(1),
    nn.ReplicationPad3d: lambda: nn.ReplicationPad3d(1),
    nn.CircularPad1d: lambda: nn.CircularPad1d(1),
    nn.CircularPad2d: lambda: nn.CircularPad2d(1),
    nn.CircularPad3d: lambda: nn.CircularPad3d(1),
    nn.Dropout: nn.Dropout,
    nn.Dropout1d: nn.Dropout1d,
    nn.Dropout2d: nn.Dropout2d,
    nn.Dropout3d: nn.Dropout3d,
    nn.AlphaDropout: nn.AlphaDropout,
    nn.FeatureAlphaDropout: nn.FeatureAlphaDropout,
    nn.Flatten: nn.Flatten,
    nn.Unflatten: lambda: nn.Unflatten(1, (2, 2)),
    nn.Fold: lambda: nn.Fold(output_size=(4, 4), kernel_size=2),
    nn.Unfold: lambda: nn.Unfold(kernel_size=2),
    nn.Upsample: lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    nn.UpsamplingNearest2d: lambda: nn.UpsamplingNearest2d(scale_factor=2),
    nn.UpsamplingBilinear2d: lambda: nn.UpsamplingBilinear2d(size=(4, 4)),
    nn.PixelShuffle: lambda: nn.PixelShuffle(2),
    nn.PixelUnshuffle: lambda: nn.PixelUnshuffle(2),
    nn.ChannelShuffle: lambda: nn.ChannelShuffle(2),
    nn.Embedding: lambda: nn.Embedding(5, 3),
    nn.EmbeddingBag: lambda: nn.EmbeddingBag(5, 3, mode="sum", include_last_offset=True),
    nn.CosineSimilarity: nn.CosineSimilarity,
    nn.PairwiseDistance: nn.PairwiseDistance,
    nn.MultiheadAttention: lambda: nn.MultiheadAttention(8, 2),
    nn.RNN: lambda: nn.RNN(3, 4, nonlinearity="relu"),
    nn.LSTM: lambda: nn.LSTM(3, 4),
    nn.GRU: lambda: nn.GRU(3, 4),
    nn.RNNCell: lambda: nn.RNNCell(3, 4),
    nn.LSTMCell: lambda: nn.LSTMCell(3, 4),
    nn.GRUCell: lambda: nn.GRUCell(3, 4),
    nn.TransformerEncoderLayer: _ENC,
    nn.TransformerDecoderLayer: _DEC,
    nn.TransformerEncoder: lambda: nn.TransformerEncoder(_ENC(), 2, enable_nested_tensor=False),
    nn.TransformerDecoder: lambda: nn.TransformerDecoder(_DEC(), 2),
    nn.Transformer: lambda: nn.Transformer(8, 2, 1, 1, 16),
}

# Non-default constructions: None-valued parameters and buffers, optional tensors, per-instance attributes.
VARIANTS = {
    "Linear-no-bias": lambda: nn.Linear(3, 4, bias=False),
    "Conv2d-no-bias": lambda: nn.Conv2d(2, 4, 3, bias=False, padding="same", padding_mode="reflect"),
    "Conv1d-circular": lambda: nn.Conv1d(2, 4, 3, padding=(2,), dilation=2, padding_mode="circular"),
    "Conv3d-replicate": lambda: nn.Conv3d(2, 4, (1, 2, 3), padding=(0, 1, 2), padding_mode="replicate"),
    "BatchNorm2d-no-affine-no-stats": lambda: nn.BatchNorm2d(4, affine=False, track_running_stats=False),
    "LayerNorm-no-affine": lambda: nn.LayerNorm(4, elementwise_affine=False),
    "LayerNorm-no-bias": lambda: nn.LayerNorm(4, bias=False),
    "RMSNorm-no-affine": lambda: nn.RMSNorm(4, elementwise_affine=False),
    "Embedding-padding": lambda: nn.Embedding(5, 3, padding_idx=0, max_norm=1.0),
    "FractionalMaxPool2d-samples": lambda: nn.FractionalMaxPool2d(2, output_size=3,
                                                                 _random_samples=torch.rand(1, 2, 2)),
    "MultiheadAttention-kv-dims": lambda: nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True,
                                                                kdim=4, vdim=6, batch_first=True),
    "LSTM-deep-proj": lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, bias=False),
    "GRUCell-no-bias": lambda: nn.GRUCell(3, 4, bias=False),
    "TransformerEncoderLayer-gelu-module": lambda: nn.TransformerEncoderLayer(
        8, 2, 16, activation=nn.GELU(approximate="tanh"), bias=False, norm_first=True, batch_first=True),
    "TransformerEncoder-norm": lambda: nn.TransformerEncoder(_ENC(), 3, norm=nn.LayerNorm(8),
                                                             enable_nested_tensor=False),
    "TransformerDecoder-rmsnorm": lambda: nn.TransformerDecoder(_DEC(), 2, norm=nn.RMSNorm(8)),
}

# Public instance attributes a lowering does not need.
NOT_NEEDED = {
    nn.SyncBatchNorm: {"process_group"},  # distributed training only
    nn.PReLU: {"init"},  # the initial value of ``weight``, which is fetched
}


def _build(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


def _cases():
    for cls in sorted(BUILTIN_TYPES, key=lambda c: c.__name__):
        yield pytest.param(cls, CTOR.get(cls), id=cls.__name__)
    for name, make in VARIANTS.items():
        yield pytest.param(None, make, id=name)


# ----------------------------------------------------------------------------------------------------------------
# Coverage of torch.nn.

def _torch_nn_module_classes() -> list[type]:
    return sorted({v for v in vars(nn).values() if isinstance(v, type) and issubclass(v, nn.Module)},
                  key=lambda c: c.__name__)


def test_every_torch_nn_module_class_is_in_the_book_or_excluded():
    classes = _torch_nn_module_classes()
    neither = [c.__name__ for c in classes if find_rule(c) is None and c not in EXCLUDED]
    both = [c.__name__ for c in classes if find_rule(c) is not None and c in EXCLUDED]
    assert not neither, f"torch.nn classes with no rule that EXCLUDED does not list: {neither}"
    assert not both, f"classes with a rule that EXCLUDED also lists: {both}"
    stale = [c.__name__ for c in EXCLUDED if c not in classes]
    assert not stale, f"EXCLUDED lists classes torch.nn does not export: {stale}"
    assert all(isinstance(r, str) and r and "\n" not in r for r in EXCLUDED.values())


def test_builtin_types_are_exactly_the_ruled_torch_nn_classes():
    ruled = {c for c in _torch_nn_module_classes() if find_rule(c) is not None}
    assert set(BUILTIN_TYPES) == ruled
    assert len(BUILTIN_TYPES) == len(set(BUILTIN_TYPES))
    missing_ctor = sorted(c.__name__ for c in BUILTIN_TYPES if c not in CTOR)
    assert not missing_ctor, f"add a constructor to CTOR for: {missing_ctor}"
    assert set(CTOR) == set(BUILTIN_TYPES)


# Rule versions and class _versions, written out by hand: the rules whose record changed shape in book 2 are at
# version 2; torch's _NormBase subclasses are at _version 2 (num_batches_tracked), every other class at 1.
RULE_VERSION_2 = {nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer}
MODULE_VERSION_2 = {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d}


@pytest.mark.parametrize("cls", BUILTIN_TYPES, ids=lambda c: c.__name__)
def test_builtin_rule_metadata(cls):
    rule = find_rule(cls)
    assert isinstance(rule, LoweringRule)
    assert rule.module_type is cls
    assert rule.type_name == f"torch.nn.{cls.__name__}"
    assert rule.version == (2 if cls in RULE_VERSION_2 else 1)
    assert rule.module_version == (2 if cls in MODULE_VERSION_2 else 1)
    assert rule_named(f"torch.nn.{cls.__name__}") is rule


def test_book_version_and_rule_count():
    assert fxlower.lowering.book.BOOK_VERSION == 2
    assert len(BUILTIN_TYPES) == 116


def test_module_version_defaults_to_the_class_version_for_user_rules():
    class Versioned(nn.Module):
        _version = 4

        def forward(self, x):
            return x

    register_module(Versioned, attrs=[])
    try:
        assert find_rule(Versioned).module_version == 4
    finally:
        unregister_module(Versioned)


@pytest.mark.parametrize("cls, make", _cases())
def test_rules_cover_constants_params_buffers_and_the_subtree(cls, make):
    assert make is not None, f"{cls.__name__} has a built-in rule but no constructor in CTOR"
    module = _build(make)
    rule = rule_for(module)
    assert rule is find_rule(type(module))
    names = rule.attr_names(module)
    assert len(names) == len(set(names))

    missing = [c for c in getattr(type(module), "__constants__", ()) if c not in names]
    assert not missing, f"{rule.type_name} rule lacks __constants__ {missing}"
    own = {**module._parameters, **module._buffers}
    missing = [k for k in own if k not in names]
    assert not missing, f"{rule.type_name} rule lacks its own parameters/buffers {missing}"

    fetched = rule.fetch(module)
    assert tuple(fetched) == names
    for key, tensor in own.items():  # None entries are fetched as None; tensors are the module's own
        assert fetched[key] is tensor, key

    # Every tensor of the subtree is recorded under its dotted name, and every descendant module that is not a
    # bare container (the ModuleList of layers.*) is recorded as a module-typed attribute.
    subtree = dict(module.named_parameters(remove_duplicate=False))
    subtree.update(module.named_buffers(remove_duplicate=False))
    missing = [k for k in subtree if k not in names]
    assert not missing, f"{rule.type_name} rule lacks subtree tensors {missing}"
    for key, tensor in subtree.items():
        assert fetched[key] is tensor, key
    for path, sub in module.named_modules(remove_duplicate=False):
        if path and not isinstance(sub, nn.ModuleList):
            assert fetched.get(path) is sub, f"{rule.type_name}: child {path!r} is not recorded"


@pytest.mark.parametrize("cls, make", _cases())
def test_rules_cover_public_hyperparameters(cls, make):
    """Every public instance attribute of the module, and of each module in its subtree, is fetched (dotted)."""
    module = _build(make)
    names = set(rule_for(module).attr_names(module))
    missing = []
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for key in vars(sub):
            if key.startswith("_") or key == "training" or key in NOT_NEEDED.get(type(sub), ()):
                continue
            name = f"{prefix}.{key}" if prefix else key
            if name not in names:
                missing.append(name)
    assert not missing, f"{type_name(type(module))} rule lacks hyperparameters {missing}"


@pytest.mark.parametrize("cls", BUILTIN_TYPES, ids=lambda c: c.__name__)
def test_every_declared_attribute_has_a_valid_type_and_a_one_line_doc(cls):
    for decl in find_rule(cls).attrs:
        attrtypes.parse(decl.type)
        assert decl.doc and "\n" not in decl.doc and decl.doc == decl.doc.strip(), decl.name


@pytest.mark.parametrize("cls, make", _cases())
def test_every_recorded_name_is_an_instance_of_its_declaration(cls, make):
    module = _build(make)
    for name, _, decl in rule_for(module).walk(module):
        parts = name.split(".")
        # the declaration is the record's own (whole name) or a child's (a trailing part of the name)
        assert any(attrtypes.matches(decl.name, ".".join(parts[k:])) for k in range(len(parts))), (name, decl)


# Declared types, written out from what torch 2.x stores (the brief's list and the tricky ones).
EXPECTED_TYPES = {
    (nn.MaxPool2d, "kernel_size"): "int|int[2]",
    (nn.MaxPool2d, "stride"): "int|int[2]",
    (nn.MaxPool1d, "padding"): "int|int[1]",
    (nn.Conv2d, "padding"): "int[2]|enum(same,valid)",
    (nn.Conv3d, "kernel_size"): "int[3]",
    (nn.ConvTranspose2d, "padding"): "int[2]",
    (nn.Conv2d, "bias"): "tensor|none",
    (nn.Conv1d, "padding_mode"): "enum(zeros,reflect,replicate,circular)",
    (nn.BatchNorm2d, "momentum"): "float|none",
    (nn.BatchNorm2d, "running_mean"): "tensor|none",
    (nn.LayerNorm, "eps"): "float",
    (nn.LayerNorm, "normalized_shape"): "int[]",
    (nn.RMSNorm, "eps"): "float|none",
    (nn.Upsample, "size"): "int|int[]|none",
    (nn.Upsample, "scale_factor"): "float|float[]|none",
    (nn.Upsample, "align_corners"): "bool|none",
    (nn.AvgPool1d, "kernel_size"): "int[1]",
    (nn.AvgPool2d, "divisor_override"): "int|none",
    (nn.LPPool2d, "stride"): "int|int[2]|none",
    (nn.LPPool2d, "norm_type"): "float",
    (nn.AdaptiveAvgPool2d, "output_size"): "int|(int|none)[2]",
    (nn.AdaptiveMaxPool1d, "output_size"): "int|int[1]",
    (nn.FractionalMaxPool3d, "output_ratio"): "float[3]|none",
    (nn.ConstantPad2d, "padding"): "int[4]",
    (nn.ReflectionPad3d, "padding"): "int[6]",
    (nn.Softmax, "dim"): "int|none",
    (nn.GELU, "approximate"): "enum(none,tanh)",
    (nn.EmbeddingBag, "mode"): "enum(sum,mean,max)",
    (nn.Embedding, "max_norm"): "float|none",
    (nn.RNN, "nonlinearity"): "enum(tanh,relu)",
    (nn.LSTM, "weight_hr_l*_reverse"): "tensor",
    (nn.GRUCell, "bias_ih"): "tensor|none",
    (nn.MultiheadAttention, "out_proj"): "module",
    (nn.MultiheadAttention, "in_proj_weight"): "tensor|none",
    (nn.TransformerEncoderLayer, "activation"): "function|module",
    (nn.TransformerEncoderLayer, "self_attn"): "module",
    (nn.TransformerEncoderLayer, "linear1"): "module",
    (nn.TransformerEncoderLayer, "norm1"): "module",
    (nn.TransformerDecoderLayer, "multihead_attn"): "module",
    (nn.TransformerEncoder, "layers.*"): "module",
    (nn.TransformerEncoder, "norm"): "module|none",
    (nn.TransformerDecoder, "norm"): "module|none",
    (nn.Transformer, "encoder"): "module",
    (nn.Transformer, "decoder"): "module",
}


@pytest.mark.parametrize("cls, name", list(EXPECTED_TYPES), ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_declared_types(cls, name):
    decl = find_rule(cls).decl_of(name.replace("*", "0"))
    assert decl is not None and decl.name == name
    assert decl.type == EXPECTED_TYPES[(cls, name)]


def test_declared_names_in_order():
    assert find_rule(nn.Linear).names == ("in_features", "out_features", "weight", "bias")
    assert find_rule(nn.TransformerEncoder).names == (
        "num_layers", "layers.*", "norm", "enable_nested_tensor", "use_nested_tensor", "mask_check")
    assert find_rule(nn.Transformer).names == ("d_model", "nhead", "batch_first", "encoder", "decoder")
    assert find_rule(nn.GRU).names[-10:] == (
        "weight_ih_l*", "weight_hh_l*", "bias_ih_l*", "bias_hh_l*", "weight_hr_l*",
        "weight_ih_l*_reverse", "weight_hh_l*_reverse", "bias_ih_l*_reverse", "bias_hh_l*_reverse",
        "weight_hr_l*_reverse")


def test_declaration_is_the_manifest_module_decl():
    decl = find_rule(nn.Linear).declaration()
    assert decl == ModuleDecl(version=1, attrs=[
        AttrDecl("in_features", "int", "size of each input sample"),
        AttrDecl("out_features", "int", "size of each output sample"),
        AttrDecl("weight", "tensor", "weight, shape (out_features, in_features)"),
        AttrDecl("bias", "tensor|none", "learnable bias, None when the module has none"),
    ], forward=[Param("input", "positional_or_keyword", None, True)])
    assert fxlower.format.schema.from_obj(ModuleDecl, fxlower.format.schema.to_obj(decl), "decl") == decl


def test_forward_parameters():
    P = Param
    assert find_rule(nn.ConvTranspose2d).forward == (
        P("input", "positional_or_keyword", None, True), P("output_size", "positional_or_keyword", None, False))
    assert find_rule(nn.LSTM).forward == (
        P("input", "positional_or_keyword", None, True), P("hx", "positional_or_keyword", None, False))
    assert find_rule(nn.MultiheadAttention).forward == (
        P("query", "positional_or_keyword", None, True), P("key", "positional_or_keyword", None, True),
        P("value", "positional_or_keyword", None, True),
        P("key_padding_mask", "positional_or_keyword", None, False),
        P("need_weights", "positional_or_keyword", True, False),
        P("attn_mask", "positional_or_keyword", None, False),
        P("average_attn_weights", "positional_or_keyword", True, False),
        P("is_causal", "positional_or_keyword", False, False))
    assert [p.name for p in find_rule(nn.Transformer).forward][:3] == ["src", "tgt", "src_mask"]
    assert find_rule(nn.Bilinear).forward == (
        P("input1", "positional_or_keyword", None, True), P("input2", "positional_or_keyword", None, True))


def test_forward_parameter_kinds_and_encoded_defaults():
    class Sig(nn.Module):
        def forward(self, a, /, b=(1, 2.5), *rest, c: str = "x", d, **more):
            return a

    register_module(Sig, attrs=[])
    try:
        assert find_rule(Sig).forward == (
            Param("a", "positional_only", None, True),
            Param("b", "positional_or_keyword", {"t": "tuple", "v": [1, 2.5]}, False),
            Param("rest", "var_positional", None, False),
            Param("c", "keyword_only", "x", False),
            Param("d", "keyword_only", None, True),
            Param("more", "var_keyword", None, False))
    finally:
        unregister_module(Sig)


def test_a_forward_default_without_a_value_encoding_is_refused_at_registration():
    class Odd(nn.Module):
        def forward(self, x, scale=torch.ones(1)):
            return x * scale

    with pytest.raises(RegistrationError) as info:
        register_module(Odd, attrs=[])
    msg = str(info.value)
    assert type_name(Odd) in msg and "forward parameter 'scale'" in msg and "default of None" in msg
    assert find_rule(Odd) is None


def test_fetched_hyperparameters_are_the_module_values():
    conv = nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=1, groups=2, bias=False)
    got = rule_for(conv).fetch(conv)
    assert got["kernel_size"] == (3, 3) and got["stride"] == (2, 2) and got["output_padding"] == (1, 1)
    assert got["transposed"] is True and got["groups"] == 2 and got["padding_mode"] == "zeros"
    assert got["weight"] is conv.weight and got["bias"] is None

    bn = nn.BatchNorm2d(4, momentum=None)
    got = rule_for(bn).fetch(bn)
    assert got["momentum"] is None and got["eps"] == 1e-5 and got["affine"] is True
    assert got["running_var"] is bn.running_var and got["num_batches_tracked"] is bn.num_batches_tracked

    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)
    got = rule_for(mha).fetch(mha)
    assert got["_qkv_same_embed_dim"] is False and got["head_dim"] == 4
    assert got["in_proj_weight"] is None and got["q_proj_weight"] is mha.q_proj_weight
    assert got["out_proj"] is mha.out_proj and got["out_proj.weight"] is mha.out_proj.weight
    assert got["bias_k"] is None

    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True)
    got = rule_for(rnn).fetch(rnn)
    assert got["mode"] == "RNN_RELU" and got["nonlinearity"] == "relu" and got["batch_first"] is True
    assert got["weight_hh_l1"] is rnn.weight_hh_l1
    assert [n for n in got if n.startswith(("weight_", "bias_"))] == [  # as RNNBase registers them
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"]


def test_transformer_encoder_records_every_layer_and_its_norm():
    enc = _build(lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 3,
                                               norm=nn.LayerNorm(8, eps=1e-3)))
    rule = rule_for(enc)
    names = rule.attr_names(enc)
    for i in range(3):
        assert f"layers.{i}" in names
        for suffix in ("norm_first", "activation", "self_attn", "self_attn.num_heads", "self_attn.batch_first",
                       "norm1", "norm1.eps", "norm2.normalized_shape", "linear1.in_features", "dropout.p",
                       "self_attn.out_proj", "self_attn.out_proj.weight"):
            assert f"layers.{i}.{suffix}" in names
    assert "layers.3" not in names and "layers" not in names  # the ModuleList itself is implicit
    assert names[:3] == ("num_layers", "layers.0", "layers.0.norm_first")
    got = rule.fetch(enc)
    assert got["num_layers"] == 3 and got["norm"] is enc.norm and got["norm.eps"] == 1e-3
    assert got["mask_check"] is True and got["enable_nested_tensor"] is True
    assert got["layers.2.activation"] is F.relu and got["layers.1.self_attn.batch_first"] is True
    assert got["layers.0.linear1.weight"] is enc.layers[0].linear1.weight

    bare = _build(lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1,
                                                enable_nested_tensor=False))
    got = rule_for(bare).fetch(bare)
    assert got["norm"] is None
    assert not any(n.startswith("norm.") for n in got)


def test_transformer_layer_with_module_activation_records_its_attributes():
    layer = nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU(approximate="tanh"))
    got = rule_for(layer).fetch(layer)
    assert got["activation"] is layer.activation and got["activation.approximate"] == "tanh"
    assert got["activation_relu_or_gelu"] == 2


def test_composite_with_an_unruled_child_names_parent_and_child():
    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    layer = nn.TransformerEncoderLayer(8, 2, 16, activation=Swish())
    with pytest.raises(UnsupportedModuleError) as info:
        rule_for(layer).attr_names(layer)
    msg = str(info.value)
    assert "torch.nn.TransformerEncoderLayer child 'activation'" in msg
    assert f"{type_name(Swish)} has no lowering rule" in msg


# ----------------------------------------------------------------------------------------------------------------
# Rebuild: rule.rebuild(lifted attributes) computes what the original module computes.

def _x(*shape):
    return torch.randn(*shape)


def _unpool_input(n):
    pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[n - 1](2, return_indices=True)
    return lambda: pool(torch.randn(1, 2, *([4] * n)))


INPUTS = {
    nn.Conv1d: lambda: (_x(1, 2, 8),), nn.Conv2d: lambda: (_x(1, 2, 8, 8),), nn.Conv3d: lambda: (_x(1, 2, 5, 5, 5),),
    nn.ConvTranspose1d: lambda: (_x(1, 2, 6),), nn.ConvTranspose2d: lambda: (_x(1, 2, 5, 5),),
    nn.ConvTranspose3d: lambda: (_x(1, 2, 3, 3, 3),),
    nn.Identity: lambda: (_x(2, 3),), nn.Linear: lambda: (_x(2, 3),), nn.Bilinear: lambda: (_x(5, 2), _x(5, 3)),
    nn.BatchNorm1d: lambda: (_x(3, 4),), nn.BatchNorm2d: lambda: (_x(2, 4, 3, 3),),
    nn.BatchNorm3d: lambda: (_x(2, 4, 2, 2, 2),), nn.SyncBatchNorm: lambda: (_x(2, 4, 3, 3),),
    nn.InstanceNorm1d: lambda: (_x(2, 4, 6),), nn.InstanceNorm2d: lambda: (_x(2, 4, 3, 3),),
    nn.InstanceNorm3d: lambda: (_x(2, 4, 2, 2, 2),),
    nn.LayerNorm: lambda: (_x(2, 4),), nn.RMSNorm: lambda: (_x(2, 4),), nn.GroupNorm: lambda: (_x(2, 4, 3),),
    nn.LocalResponseNorm: lambda: (_x(1, 4, 3, 3),), nn.CrossMapLRN2d: lambda: (_x(1, 4, 3, 3),),
    nn.Softmax2d: lambda: (_x(1, 4, 3, 3),), nn.PReLU: lambda: (_x(2, 4, 3),),
    nn.MaxPool1d: lambda: (_x(1, 2, 8),), nn.MaxPool2d: lambda: (_x(1, 2, 8, 8),),
    nn.MaxPool3d: lambda: (_x(1, 2, 4, 4, 4),),
    nn.AvgPool1d: lambda: (_x(1, 2, 8),), nn.AvgPool2d: lambda: (_x(1, 2, 8, 8),),
    nn.AvgPool3d: lambda: (_x(1, 2, 4, 4, 4),),
    nn.LPPool1d: lambda: (_x(1, 2, 8),), nn.LPPool2d: lambda: (_x(1, 2, 8, 8),),
    nn.LPPool3d: lambda: (_x(1, 2, 4, 4, 4),),
    nn.AdaptiveMaxPool1d: lambda: (_x(1, 2, 8),), nn.AdaptiveMaxPool2d: lambda: (_x(1, 2, 8, 8),),
    nn.AdaptiveMaxPool3d: lambda: (_x(1, 2, 4, 4, 4),),
    nn.AdaptiveAvgPool1d: lambda: (_x(1, 2, 8),), nn.AdaptiveAvgPool2d: lambda: (_x(1, 2, 8, 8),),
    nn.AdaptiveAvgPool3d: lambda: (_x(1, 2, 4, 4, 4),),
    nn.FractionalMaxPool2d: lambda: (_x(1, 2, 8, 8),), nn.FractionalMaxPool3d: lambda: (_x(1, 2, 6, 6, 6),),
    nn.MaxUnpool1d: _unpool_input(1), nn.MaxUnpool2d: _unpool_input(2), nn.MaxUnpool3d: _unpool_input(3),
    nn.ConstantPad1d: lambda: (_x(1, 2, 5),), nn.ConstantPad2d: lambda: (_x(1, 2, 4, 4),),
    nn.ConstantPad3d: lambda: (_x(1, 2, 3, 3, 3),),
    nn.ZeroPad1d: lambda: (_x(1, 2, 5),), nn.ZeroPad2d: lambda: (_x(1, 2, 4, 4),),
    nn.ZeroPad3d: lambda: (_x(1, 2, 3, 3, 3),),
    nn.ReflectionPad1d: lambda: (_x(1, 2, 5),), nn.ReflectionPad2d: lambda: (_x(1, 2, 4, 4),),
    nn.ReflectionPad3d: lambda: (_x(1, 2, 3, 3, 3),),
    nn.ReplicationPad1d: lambda: (_x(1, 2, 5),), nn.ReplicationPad2d: lambda: (_x(1, 2, 4, 4),),
    nn.ReplicationPad3d: lambda: (_x(1, 2, 3, 3, 3),),
    nn.CircularPad1d: lambda: (_x(1, 2, 5),), nn.CircularPad2d: lambda: (_x(1, 2, 4, 4),),
    nn.CircularPad3d: lambda: (_x(1, 2, 3, 3, 3),),
    nn.Dropout1d: lambda: (_x(2, 4, 3),), nn.Dropout2d: lambda: (_x(1, 2, 3, 3),),
    nn.Dropout3d: lambda: (_x(1, 2, 2, 2, 2),), nn.FeatureAlphaDropout: lambda: (_x(1, 2, 3, 3),),
    nn.Flatten: lambda: (_x(2, 3, 4),), nn.Unflatten: lambda: (_x(3, 4),),
    nn.Fold: lambda: (_x(1, 4, 9),), nn.Unfold: lambda: (_x(1, 2, 4, 4),),
    nn.Upsample: lambda: (_x(1, 2, 3, 3),), nn.UpsamplingNearest2d: lambda: (_x(1, 2, 3, 3),),
    nn.UpsamplingBilinear2d: lambda: (_x(1, 2, 3, 3),),
    nn.PixelShuffle: lambda: (_x(1, 8, 2, 2),), nn.PixelUnshuffle: lambda: (_x(1, 2, 4, 4),),
    nn.ChannelShuffle: lambda: (_x(1, 4, 2, 2),),
    nn.Embedding: lambda: (torch.randint(0, 5, (2, 3)),),
    nn.EmbeddingBag: lambda: (torch.randint(0, 5, (6,)), torch.tensor([0, 2, 6])),
    nn.CosineSimilarity: lambda: (_x(3, 4), _x(3, 4)), nn.PairwiseDistance: lambda: (_x(3, 4), _x(3, 4)),
    nn.MultiheadAttention: lambda: (_x(5, 1, 8), _x(6, 1, 8), _x(6, 1, 8)),
    nn.RNN: lambda: (_x(5, 1, 3),), nn.LSTM: lambda: (_x(5, 1, 3),), nn.GRU: lambda: (_x(5, 1, 3),),
    nn.RNNCell: lambda: (_x(2, 3),), nn.LSTMCell: lambda: (_x(2, 3),), nn.GRUCell: lambda: (_x(2, 3),),
    nn.TransformerEncoderLayer: lambda: (_x(5, 1, 8),), nn.TransformerDecoderLayer: lambda: (_x(5, 1, 8), _x(6, 1, 8)),
    nn.TransformerEncoder: lambda: (_x(5, 1, 8),), nn.TransformerDecoder: lambda: (_x(5, 1, 8), _x(6, 1, 8)),
    nn.Transformer: lambda: (_x(5, 1, 8), _x(4, 1, 8)),
}
VARIANT_INPUTS = {
    "MultiheadAttention-kv-dims": lambda: (_x(1, 5, 8), _x(1, 6, 4), _x(1, 6, 6)),
    "TransformerEncoderLayer-gelu-module": lambda: (_x(1, 5, 8),),
    "FractionalMaxPool2d-samples": lambda: (_x(1, 2, 8, 8),),
    "Conv2d-no-bias": lambda: (_x(1, 2, 6, 6),),
}


def _inputs(cls, variant):
    if variant in VARIANT_INPUTS:
        return VARIANT_INPUTS[variant]()
    return INPUTS.get(cls, lambda: (_x(2, 4),))()


def _resolved(attrs):
    """Lifted attributes as a loader hands them to rebuild: copies of the tensors (parameters as new
    nn.Parameters with the original requires_grad), tied tensors staying tied."""
    copies = {}
    out = {}
    for name, value in attrs.items():
        if isinstance(value, torch.Tensor):
            if id(value) not in copies:
                data = value.detach().clone()
                copies[id(value)] = (nn.Parameter(data, requires_grad=value.requires_grad)
                                     if isinstance(value, nn.Parameter) else data)
            value = copies[id(value)]
        out[name] = value
    return out


def _flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    assert value is None, type(value)
    return []


def _leaf_graph_module(leaf: nn.Module) -> torch.fx.GraphModule:
    """A GraphModule calling ``leaf`` as its one call_module node."""
    graph = torch.fx.Graph()
    graph.output(graph.call_module("leaf", (graph.placeholder("x"),)))
    return torch.fx.GraphModule(nn.ModuleDict({"leaf": leaf}), graph)


def _rebuild_cases():
    for cls in sorted(BUILTIN_TYPES, key=lambda c: c.__name__):
        yield pytest.param(cls, CTOR[cls], None, id=cls.__name__)
    for name, make in VARIANTS.items():
        yield pytest.param(None, make, name, id=name)


@pytest.mark.parametrize("cls, make, variant", _rebuild_cases())
def test_rebuild_from_lifted_attributes_computes_what_the_original_computes(cls, make, variant):
    torch.manual_seed(0)
    original = _build(make).eval()
    for p in original.parameters():  # a mix of trainable and frozen parameters must survive
        p.requires_grad_(p.dim() > 1)
    cls = type(original)
    gm = _leaf_graph_module(original)
    fxlower.lift(gm)
    (node,) = gm.graph.find_nodes(op="call_module")
    record = node.meta["lowering"]
    state = original.state_dict()
    persistent = {name: name in state for name, _ in original.named_buffers(remove_duplicate=False)}

    rebuilt = rule_named(record.module_type).rebuild(_resolved(record.attrs), persistent=persistent)

    assert type(rebuilt) is find_rule(cls).module_type and not rebuilt.training
    assert [(n, p.requires_grad, p.shape) for n, p in rebuilt.named_parameters(remove_duplicate=False)] == \
        [(n, p.requires_grad, p.shape) for n, p in original.named_parameters(remove_duplicate=False)]
    assert [n for n, _ in rebuilt.named_buffers()] == [n for n, _ in original.named_buffers()]
    assert list(rebuilt.state_dict()) == list(state)
    for key, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    assert [type(m) for m in rebuilt.modules()] == [type(m) if not isinstance(m, NonDynamicallyQuantizableLinear)
                                                      else nn.Linear for m in original.modules()]

    inputs = _inputs(cls, variant)
    with torch.enable_grad():
        torch.manual_seed(1)
        expected = original(*inputs)
        torch.manual_seed(1)
        got = rebuilt(*inputs)
    expected, got = _flat(expected), _flat(got)
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape and torch.equal(g, e)
        assert g.requires_grad == e.requires_grad


def test_rebuild_sets_buffer_persistence_and_plain_tensor_attributes():
    rule = find_rule(nn.BatchNorm1d)
    bn = nn.BatchNorm1d(3)
    attrs = {n: (nn.Parameter(v.detach().clone()) if isinstance(v, nn.Parameter) else v)
             for n, v in rule.fetch(bn).items()}
    rebuilt = rule.rebuild(attrs, persistent={"running_mean": True, "running_var": False})
    assert sorted(rebuilt.state_dict()) == ["bias", "running_mean", "weight"]
    assert sorted(n for n, _ in rebuilt.named_buffers()) == ["running_mean", "running_var"]
    assert "num_batches_tracked" not in rebuilt._buffers and rebuilt.num_batches_tracked is attrs["num_batches_tracked"]


def test_rebuild_creates_children_by_their_own_rules_and_the_implicit_module_list():
    attrs = {"num_layers": 2, "norm": nn.LayerNorm, "norm.normalized_shape": (4,), "norm.eps": 1e-5,
             "norm.elementwise_affine": False, "norm.weight": None, "norm.bias": None,
             "enable_nested_tensor": False, "use_nested_tensor": False, "mask_check": True}
    for i in range(2):
        attrs[f"layers.{i}"] = nn.Identity
    enc = find_rule(nn.TransformerEncoder).rebuild(attrs)
    assert type(enc.layers) is nn.ModuleList and [type(m) for m in enc.layers] == [nn.Identity, nn.Identity]
    assert type(enc.norm) is nn.LayerNorm and enc.norm.normalized_shape == (4,) and enc.norm.weight is None
    assert not enc.training and not enc.layers.training and not enc.norm.training


def test_rebuild_rejects_undeclared_and_mistyped_attributes_and_unruled_children():
    rule = find_rule(nn.Linear)
    with pytest.raises(AttributeTypeError) as info:
        rule.rebuild({"in_features": 3, "forward": 1})
    assert "'forward' is not an attribute torch.nn.Linear declares" in str(info.value)
    assert (info.value.module_type, info.value.attr, info.value.expected) == ("torch.nn.Linear", "forward", "")
    with pytest.raises(AttributeTypeError) as info:
        rule.rebuild({"in_features": "3"})
    assert "attribute 'in_features' expected int, found the str '3'" in str(info.value)
    assert (info.value.attr, info.value.expected, info.value.found) == ("in_features", "int", "3")

    class Unruled(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedModuleError, match=r"child 'out_proj' is a .*Unruled, which has no lowering rule"):
        find_rule(nn.MultiheadAttention).rebuild({"out_proj": Unruled})
    with pytest.raises(AttributeTypeError, match=r"'layers.1' is not the next index of the ModuleList 'layers'"):
        find_rule(nn.TransformerEncoder).rebuild({"layers.1": nn.Identity})


# ----------------------------------------------------------------------------------------------------------------
# Import structure.

def test_the_book_does_not_import_the_builtin_rules():
    import ast
    import pathlib

    source = pathlib.Path(fxlower.lowering.book.__file__).read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "_builtin_rules" not in imported
    out = subprocess.run([sys.executable, "-c", "import fxlower.lowering.book as b; print(len(b.rules()))"],
                         capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "116", out.stderr


# ----------------------------------------------------------------------------------------------------------------
# Lookup through subclasses and versions.

def test_subclass_without_forward_override_uses_the_base_rule():
    class MyConv(nn.Conv2d):
        pass

    assert rule_for(MyConv(2, 4, 3)) is find_rule(nn.Conv2d)


def test_subclass_overriding_forward_is_unsupported():
    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(UnsupportedModuleError) as info:
        rule_for(MyConv(2, 4, 3))
    msg = str(info.value)
    assert f"{type_name(MyConv)} subclasses torch.nn.Conv2d" in msg
    assert "overrides forward" in msg


def test_forward_override_in_an_intermediate_class_is_found():
    class Doubling(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Named(Doubling):
        pass

    with pytest.raises(UnsupportedModuleError) as info:
        rule_for(Named(3, 4))
    assert f"{type_name(Named)} subclasses torch.nn.Linear but {type_name(Doubling)} overrides forward" \
        in str(info.value)


def test_non_dynamically_quantizable_linear_uses_the_linear_rule():
    assert type_name(NonDynamicallyQuantizableLinear) == \
        "torch.nn.modules.linear.NonDynamicallyQuantizableLinear"
    assert rule_for(NonDynamicallyQuantizableLinear(3, 4)) is find_rule(nn.Linear)
    assert type(nn.MultiheadAttention(8, 2).out_proj) is NonDynamicallyQuantizableLinear


def test_newer_module_version_is_refused():
    class NewConv(nn.Conv2d):
        _version = 99

    with pytest.raises(UnsupportedModuleError) as info:
        rule_for(NewConv(2, 4, 3))
    msg = str(info.value)
    assert f"{type_name(NewConv)} has _version 99" in msg
    assert "written for _version 1" in msg and "replace=True" in msg

    class NewBatchNorm(nn.BatchNorm2d):
        _version = 3

    with pytest.raises(UnsupportedModuleError, match=r"has _version 3 but .* written for _version 2"):
        rule_for(NewBatchNorm(4))


def test_excluded_classes_are_unsupported():
    with pytest.raises(UnsupportedModuleError, match=r"^torch\.nn\.MSELoss has no lowering rule$"):
        rule_for(nn.MSELoss())
    with pytest.raises(UnsupportedModuleError, match=r"^torch\.nn\.Sequential has no lowering rule$"):
        rule_for(nn.Sequential())


def test_uninitialised_lazy_module_is_refused_until_materialised():
    lazy = nn.LazyLinear(4)  # a subclass of nn.Linear that does not override forward
    with pytest.raises(UnsupportedModuleError) as info:
        rule_for(lazy)
    msg = str(info.value)
    assert "torch.nn.LazyLinear is a lazy module whose parameters are not initialised" in msg
    assert "becomes torch.nn.Linear" in msg
    lazy(torch.ones(2, 3))
    assert type(lazy) is nn.Linear and rule_for(lazy) is find_rule(nn.Linear)


# ----------------------------------------------------------------------------------------------------------------
# Registration.

def _restore(rule: LoweringRule) -> None:
    register_module(rule.module_type, attrs=[(d.name, d.type, d.doc) for d in rule.attrs], version=rule.version,
                    module_version=rule.module_version, match=rule.match, containers=dict(rule.containers),
                    finish=rule.finish, replace=True)


def test_registering_a_registered_class_needs_replace():
    original = find_rule(nn.ReLU)
    with pytest.raises(RegistrationError) as info:
        register_module(nn.ReLU, attrs={"inplace": "bool"})
    msg = str(info.value)
    assert "torch.nn.ReLU already has a lowering rule (version 1)" in msg and "replace=True" in msg
    assert find_rule(nn.ReLU) is original


def test_replace_true_replaces_the_rule():
    original = find_rule(nn.ReLU)
    try:
        assert register_module(nn.ReLU, attrs={"inplace": "bool", "training": "bool"}, version=2,
                               replace=True) is nn.ReLU
        rule = rule_for(nn.ReLU())
        assert rule is not original and rule.version == 2 and rule.names == ("inplace", "training")
        assert rule_named("torch.nn.ReLU") is rule
        assert rule.fetch(nn.ReLU(inplace=True)) == {"inplace": True, "training": True}
    finally:
        _restore(original)
    assert find_rule(nn.ReLU) == original


def test_register_module_as_a_decorator_with_a_dict_of_types():
    @fxlower.register_module(attrs={"weight": "tensor", "scale": "float"}, version=3)
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))
            self.scale = 2.0

        def forward(self, x):
            return x * self.weight * self.scale

    try:
        assert isinstance(Scale, type) and Scale.__name__ == "Scale"
        module = Scale()
        rule = rule_for(module)
        assert rule is find_rule(Scale)
        assert (rule.module_type, rule.version, rule.module_version) == (Scale, 3, 1)
        assert rule.type_name == f"{__name__}.test_register_module_as_a_decorator_with_a_dict_of_types.<locals>.Scale"
        assert rule.attrs == (AttrDecl("weight", "tensor", ""), AttrDecl("scale", "float", ""))
        assert rule.forward == (Param("x", "positional_or_keyword", None, True),)
        got = rule.fetch(module)
        assert got["weight"] is module.weight and got["scale"] == 2.0
    finally:
        unregister_module(Scale)
    assert find_rule(Scale) is None and rule_named(rule.type_name) is None


def test_register_module_with_typed_tuples_docs_patterns_and_module_children():
    class Block(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.heads = nn.ModuleList(nn.Linear(4, 2) for _ in range(n))
            self.gain = 3

        def forward(self, x):
            return [h(self.proj(x)) * self.gain for h in self.heads]

    assert register_module(Block, attrs=[("gain", "float", "output multiplier"), ("proj", "module"),
                                         ("heads.*", "module", "one head per output")]) is Block
    try:
        rule = find_rule(Block)
        assert rule.attrs == (AttrDecl("gain", "float", "output multiplier"), AttrDecl("proj", "module", ""),
                              AttrDecl("heads.*", "module", "one head per output"))
        assert rule.containers == (("heads", nn.ModuleList),)
        block = Block(2)
        got = rule.fetch(block)
        assert list(got) == ["gain", "proj", "proj.in_features", "proj.out_features", "proj.weight", "proj.bias",
                             "heads.0", "heads.0.in_features", "heads.0.out_features", "heads.0.weight",
                             "heads.0.bias", "heads.1", "heads.1.in_features", "heads.1.out_features",
                             "heads.1.weight", "heads.1.bias"]
        assert got["heads.1"] is block.heads[1] and got["heads.1.weight"] is block.heads[1].weight

        rec = fxlower.lift(_leaf_graph_module(block)).graph.find_nodes(op="call_module")[0].meta["lowering"]
        assert rec.attrs["gain"] == 3.0 and type(rec.attrs["gain"]) is float  # widened: declared float
        assert rec.attrs["proj"] is nn.Linear and rec.attrs["heads.0"] is nn.Linear

        rebuilt = rule.rebuild(dict(rec.attrs))
        x = torch.randn(2, 4)
        assert all(torch.equal(a, b) for a, b in zip(rebuilt(x), block(x)))
        assert type(rebuilt.heads) is nn.ModuleList and len(rebuilt.heads) == 2
    finally:
        unregister_module(Block)


def test_register_module_with_a_declared_sequential_container():
    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(nn.ReLU(), nn.Tanh())

        def forward(self, x):
            return self.blocks(x)

    register_module(Tower, attrs={"blocks.*": "module"}, containers={"blocks": nn.Sequential})
    try:
        tower = Tower()
        rebuilt = find_rule(Tower).rebuild({"blocks.0": nn.ReLU, "blocks.0.inplace": False, "blocks.1": nn.Tanh})
        assert type(rebuilt.blocks) is nn.Sequential
        x = torch.randn(3)
        assert torch.equal(rebuilt(x), tower(x))
    finally:
        unregister_module(Tower)


def test_an_attribute_without_a_type_is_refused_with_the_typed_form_to_write():
    with pytest.raises(RegistrationError) as info:
        register_module(_Fresh, attrs=["weight", "eps"])
    msg = str(info.value)
    assert f"{type_name(_Fresh)}: attribute 'weight' has no type; write it as ('weight', '<type>')" in msg
    assert "attrs={'weight': '<type>'}" in msg and "'tensor|none'" in msg
    assert find_rule(_Fresh) is None


def test_unregister_a_class_without_a_rule():
    class Nothing(nn.Module):
        pass

    with pytest.raises(RegistrationError, match=r"Nothing has no lowering rule to unregister"):
        unregister_module(Nothing)


class _Fresh(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("kwargs, message", [
    ({"attrs": {"w": "tensor"}, "version": 0}, "version must be a positive int, got 0"),
    ({"attrs": {"w": "tensor"}, "version": True}, "version must be a positive int, got True"),
    ({"attrs": {"w": "tensor"}, "module_version": -1}, "module_version must be a positive int, got -1"),
    ({"attrs": [("w", "tensor"), ("b", "tensor"), ("w", "int")]}, "attribute 'w' is listed twice"),
    ({"attrs": {"": "int"}}, "attribute name '' is not a (dotted) identifier"),
    ({"attrs": {"a..b": "int"}}, "attribute name 'a..b' is not a (dotted) identifier"),
    ({"attrs": {"__class__": "int"}}, "attribute name '__class__' is not a (dotted) identifier"),
    ({"attrs": [(3, "int")]}, "attribute name 3 is not a (dotted) identifier"),
    ({"attrs": "weight"}, "got the string 'weight'; write attrs={'weight': '<type>'}"),
    ({"attrs": [("w",)]}, "each attribute is a (name, type) or (name, type, doc) tuple, got ('w',)"),
    ({"attrs": {"w": "float32"}}, "attribute 'w' has an invalid type: 'float32' in the type 'float32' is not a type"),
    ({"attrs": {"w": "int[x]"}}, "the count in 'int[x]' (type 'int[x]') is not a decimal number"),
    ({"attrs": {"w": "enum(a b)"}}, "'a b' in 'enum(a b)' is not one"),
    ({"attrs": {"w": "tensor[2]"}}, "'tensor' in 'tensor[2]' is not"),
    ({"attrs": {"w": "int | none"}}, "'int ' in the type 'int | none' is not a type"),
    ({"attrs": {"w": ""}}, "a type is a non-empty string"),
    ({"attrs": [("w", "int", "two\nlines")]}, "the doc of attribute 'w' must be one line of text"),
    ({"attrs": {"w": "int"}, "containers": {"w": list}}, "containers maps a path to nn.ModuleList"),
    ({"attrs": {"w": "int"}, "finish": 3}, "finish must be a callable taking the module, got 3"),
], ids=["version-0", "version-bool", "module-version-negative", "duplicate", "empty", "empty-part", "dunder",
        "not-a-string", "bare-string", "one-tuple", "unknown-type", "bad-count", "bad-enum-word", "tensor-tuple",
        "spaces", "empty-type", "two-line-doc", "bad-container", "bad-finish"])
def test_bad_registration_arguments(kwargs, message):
    with pytest.raises(RegistrationError) as info:
        register_module(_Fresh, **kwargs)
    assert message in str(info.value)
    assert type_name(_Fresh) in str(info.value)
    assert find_rule(_Fresh) is None


def test_registering_a_non_module_class():
    with pytest.raises(RegistrationError, match=r"register_module expects an nn.Module subclass, got <class 'int'>"):
        register_module(int, attrs={"real": "int"})


def test_two_classes_with_one_type_name_need_replace():
    def make():
        class Twin(nn.Module):
            def forward(self, x):
                return x
        return Twin

    first, second = make(), make()
    register_module(first, attrs={})
    try:
        with pytest.raises(RegistrationError) as info:
            register_module(second, attrs={})
        assert f"{type_name(first)} is already the type name of another registered class" in str(info.value)
        assert "pass replace=True" in str(info.value)
        assert rule_named(type_name(first)).module_type is first
        register_module(second, attrs={"training": "bool"}, replace=True)  # e.g. a re-run notebook cell
        assert find_rule(first) is None and rule_named(type_name(second)) is find_rule(second)
    finally:
        for cls in (first, second):
            if find_rule(cls) is not None:
                unregister_module(cls)


def test_rules_are_sorted_by_type_name():
    names = [r.type_name for r in rules()]
    assert names == sorted(names)
    assert {find_rule(c) for c in BUILTIN_TYPES} <= set(rules())
