"""Normalisations: LayerNorm, RMSNorm, GroupNorm, BatchNorm*, InstanceNorm* (docs/semantics.md, Normalisation)."""

from __future__ import annotations

import numpy as np

from .common import ReferenceError, f64, register

#: torch.finfo(dtype).eps by dtype name, for RMSNorm with eps None.
FINFO_EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920928955078125e-07,
             "float16": 0.0009765625, "bfloat16": 0.0078125}


@register("torch.nn.LayerNorm")
def layer_norm(attrs, input):
    x = f64(input)
    axes = tuple(range(-len(attrs["normalized_shape"]), 0))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + attrs["eps"])
    if attrs.get("weight") is not None:
        y = y * f64(attrs["weight"])
    if attrs.get("bias") is not None:
        y = y + f64(attrs["bias"])
    return y


@register("torch.nn.RMSNorm")
def rms_norm(attrs, input, *, input_dtype="float32"):
    """``input_dtype``: the dtype the input has in the artifact, which decides eps when ``eps`` is None."""
    x = f64(input)
    eps = attrs["eps"] if attrs["eps"] is not None else FINFO_EPS[input_dtype]
    axes = tuple(range(-len(attrs["normalized_shape"]), 0))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    if attrs.get("weight") is not None:
        y = y * f64(attrs["weight"])
    return y


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


@register("torch.nn.GroupNorm")
def group_norm(attrs, input):
    x = f64(input)
    n, c = x.shape[0], x.shape[1]
    g = attrs["num_groups"]
    xg = x.reshape(n, g, -1)
    mean = xg.mean(axis=2, keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=2, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + attrs["eps"])).reshape(x.shape)
    if attrs.get("weight") is not None:
        y = y * f64(attrs["weight"]).reshape(_channel_shape(x))
    if attrs.get("bias") is not None:
        y = y + f64(attrs["bias"]).reshape(_channel_shape(x))
    return y


def _affine(y, attrs, shape):
    if attrs.get("weight") is not None:
        y = y * f64(attrs["weight"]).reshape(shape)
    if attrs.get("bias") is not None:
        y = y + f64(attrs["bias"]).reshape(shape)
    return y


@register("torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.SyncBatchNorm")
def batch_norm(attrs, input):
    x = f64(input)
    shape = _channel_shape(x)
    if attrs.get("running_mean") is not None:
        mean = f64(attrs["running_mean"]).reshape(shape)
        var = f64(attrs["running_var"]).reshape(shape)
    else:  # track_running_stats=False: batch statistics, also in eval mode
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return _affine((x - mean) / np.sqrt(var + attrs["eps"]), attrs, shape)


_INSTANCE_RANK = {"torch.nn.InstanceNorm1d": 1, "torch.nn.InstanceNorm2d": 2, "torch.nn.InstanceNorm3d": 3}


def _instance_norm(attrs, input, spatial):
    x = f64(input)
    unbatched = x.ndim == spatial + 1
    if unbatched:
        x = x[None]
    if x.ndim != spatial + 2:
        raise ReferenceError(f"InstanceNorm{spatial}d expects rank {spatial + 1} or {spatial + 2}, got {x.ndim}")
    shape = _channel_shape(x)
    if attrs["track_running_stats"]:
        mean = f64(attrs["running_mean"]).reshape(shape)
        var = f64(attrs["running_var"]).reshape(shape)
    else:
        axes = tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = _affine((x - mean) / np.sqrt(var + attrs["eps"]), attrs, shape)
    return y[0] if unbatched else y


@register("torch.nn.InstanceNorm1d")
def instance_norm1d(attrs, input):
    return _instance_norm(attrs, input, 1)


@register("torch.nn.InstanceNorm2d")
def instance_norm2d(attrs, input):
    return _instance_norm(attrs, input, 2)


@register("torch.nn.InstanceNorm3d")
def instance_norm3d(attrs, input):
    return _instance_norm(attrs, input, 3)
