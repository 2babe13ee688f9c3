"""Bilinear (docs/semantics.md, Bilinear); Linear is in common."""

from __future__ import annotations

import numpy as np

from .common import f64, register


@register("torch.nn.Bilinear")
def bilinear(attrs, input1, input2):
    """y[..., o] = sum_ij x1[..., i] * weight[o, i, j] * x2[..., j] + bias[o]."""
    y = np.einsum("...i,oij,...j->...o", f64(input1), f64(attrs["weight"]), f64(input2))
    if attrs.get("bias") is not None:
        y = y + f64(attrs["bias"])
    return y
