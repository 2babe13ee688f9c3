"""Tests of the book of lowering rules: coverage of torch.nn, the built-in attribute lists, subclass lookup,
versions and registration."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

import fxlower
from fxlower import RegistrationError, UnsupportedModuleError
from fxlower.book import (LoweringRule, find_rule, register_module, rule_for, rules, type_name,
                          unregister_module)
from fxlower._builtin_rules import BUILTIN_TYPES

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


@pytest.mark.parametrize("cls", BUILTIN_TYPES, ids=lambda c: c.__name__)
def test_builtin_rule_metadata(cls):
    rule = find_rule(cls)
    assert isinstance(rule, LoweringRule)
    assert rule.module_type is cls
    assert rule.type_name == f"torch.nn.{cls.__name__}"
    assert rule.version == 1
    assert rule.module_version == cls._version


def test_module_versions_default_to_the_class_version():
    assert find_rule(nn.BatchNorm2d).module_version == 2
    assert find_rule(nn.InstanceNorm1d).module_version == 2
    assert find_rule(nn.Conv2d).module_version == 1


@pytest.mark.parametrize("cls, make", _cases())
def test_rules_cover_constants_params_and_buffers(cls, make):
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

    subtree = dict(module.named_parameters(remove_duplicate=False))
    subtree.update(module.named_buffers(remove_duplicate=False))
    if rule.subtree_tensors:
        missing = [k for k in subtree if k not in names]
        assert not missing, f"{rule.type_name} rule lacks subtree tensors {missing}"
    else:
        assert list(module.children()) == [], f"{rule.type_name} has children but no subtree_tensors"
    for key, tensor in subtree.items():
        assert fetched[key] is tensor, key


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
    assert got["out_proj.weight"] is mha.out_proj.weight and got["bias_k"] is None

    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True)
    got = rule_for(rnn).fetch(rnn)
    assert got["mode"] == "RNN_RELU" and got["nonlinearity"] == "relu" and got["batch_first"] is True
    assert got["weight_hh_l1"] is rnn.weight_hh_l1


def test_transformer_encoder_fetches_every_layer_and_its_norm():
    enc = _build(lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 3,
                                               norm=nn.LayerNorm(8, eps=1e-3)))
    rule = rule_for(enc)
    names = rule.attr_names(enc)
    for i in range(3):
        for suffix in ("norm_first", "activation", "self_attn.num_heads", "self_attn.batch_first", "norm1.eps",
                       "norm2.normalized_shape", "linear1.in_features", "dropout.p",
                       "self_attn.out_proj.weight"):
            assert f"layers.{i}.{suffix}" in names
    assert "layers.3.norm_first" not in names
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


def test_transformer_layer_with_module_activation_fetches_its_attributes():
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
    register_module(rule.module_type, attrs=rule.attrs, version=rule.version, module_version=rule.module_version,
                    match=rule.match, subtree_tensors=rule.subtree_tensors, instance_attrs=rule.instance_attrs,
                    replace=True)


def test_registering_a_registered_class_needs_replace():
    original = find_rule(nn.ReLU)
    with pytest.raises(RegistrationError) as info:
        register_module(nn.ReLU, attrs=["inplace"])
    msg = str(info.value)
    assert "torch.nn.ReLU already has a lowering rule (version 1)" in msg and "replace=True" in msg
    assert find_rule(nn.ReLU) is original


def test_replace_true_replaces_the_rule():
    original = find_rule(nn.ReLU)
    try:
        assert register_module(nn.ReLU, attrs=["inplace", "training"], version=2, replace=True) is nn.ReLU
        rule = rule_for(nn.ReLU())
        assert rule is not original and rule.version == 2 and rule.attrs == ("inplace", "training")
        assert rule.fetch(nn.ReLU(inplace=True)) == {"inplace": True, "training": True}
    finally:
        _restore(original)
    assert find_rule(nn.ReLU) == original


def test_register_module_as_a_decorator():
    @fxlower.register_module(attrs=["weight", "scale"], version=3)
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
        assert rule.type_name == f"{__name__}.test_register_module_as_a_decorator.<locals>.Scale"
        got = rule.fetch(module)
        assert got["weight"] is module.weight and got["scale"] == 2.0
    finally:
        unregister_module(Scale)
    assert find_rule(Scale) is None


def test_register_module_as_a_call_with_dotted_names_and_instance_attrs():
    class Block(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.heads = nn.ModuleList(nn.Linear(4, 2) for _ in range(n))

        def forward(self, x):
            return [h(self.proj(x)) for h in self.heads]

    assert register_module(Block, attrs=["proj.in_features"], subtree_tensors=True,
                           instance_attrs=lambda m: [f"heads.{i}.out_features" for i in range(len(m.heads))]) \
        is Block
    try:
        block = Block(2)
        got = rule_for(block).fetch(block)
        # Declared attrs, per-instance attrs, every descendant module (by path), then every subtree tensor.
        assert list(got) == ["proj.in_features", "heads.0.out_features", "heads.1.out_features",
                             "proj", "heads", "heads.0", "heads.1",
                             "proj.weight", "proj.bias", "heads.0.weight", "heads.0.bias", "heads.1.weight",
                             "heads.1.bias"]
        assert got["heads"] is block.heads
        assert got["heads.1.weight"] is block.heads[1].weight
    finally:
        unregister_module(Block)


def test_unregister_a_class_without_a_rule():
    class Nothing(nn.Module):
        pass

    with pytest.raises(RegistrationError, match=r"Nothing has no lowering rule to unregister"):
        unregister_module(Nothing)


class _Fresh(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("kwargs, message", [
    ({"attrs": ["w"], "version": 0}, "version must be a positive int, got 0"),
    ({"attrs": ["w"], "version": True}, "version must be a positive int, got True"),
    ({"attrs": ["w"], "module_version": -1}, "module_version must be a positive int, got -1"),
    ({"attrs": ["w", "b", "w"]}, "attribute 'w' is listed twice"),
    ({"attrs": [""]}, "attribute name '' is not a (dotted) identifier"),
    ({"attrs": ["a..b"]}, "attribute name 'a..b' is not a (dotted) identifier"),
    ({"attrs": [3]}, "attribute name 3 is not a (dotted) identifier"),
    ({"attrs": "weight"}, "attrs must be a list of attribute names, got the string 'weight'"),
], ids=["version-0", "version-bool", "module-version-negative", "duplicate", "empty", "empty-part",
        "not-a-string", "bare-string"])
def test_bad_registration_arguments(kwargs, message):
    with pytest.raises(RegistrationError) as info:
        register_module(_Fresh, **kwargs)
    assert message in str(info.value)
    assert type_name(_Fresh) in str(info.value)
    assert find_rule(_Fresh) is None


def test_registering_a_non_module_class():
    with pytest.raises(RegistrationError, match=r"register_module expects an nn.Module subclass, got <class 'int'>"):
        register_module(int, attrs=["real"])


def test_rules_are_sorted_by_type_name():
    names = [r.type_name for r in rules()]
    assert names == sorted(names)
    assert {find_rule(c) for c in BUILTIN_TYPES} <= set(rules())
