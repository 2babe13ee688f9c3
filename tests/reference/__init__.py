"""A NumPy-only reference implementation of the composite leaves and of the convolution, pooling, padding,
normalisation and upsampling families, written from ``docs/semantics.md`` alone.

Every entry takes a lowering record's ``attrs`` (a dict: names as the rule records them, tensors as NumPy
arrays, function-valued attributes as canonical function names, module-valued ones as module type names) and the
module forward's inputs (NumPy arrays, or None/bool/int where the forward takes those), and returns NumPy arrays in
the output structure docs/semantics.md gives. Everything is computed in float64.

This package must never import torch: it is the second, independent implementation the semantics are checked
against (tests/test_reference.py).

Use :func:`forward` with the module type name, or the functions of the submodules directly.
"""

from __future__ import annotations

from typing import Any

from . import attention, conv, linear, norm, padding, pool, recurrent, sparse, transformer, upsample
from .common import MODULES, ReferenceError

__all__ = ["forward", "MODULES", "ReferenceError"]


def forward(module_type: str, attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Run the module type ``module_type`` (e.g. ``"torch.nn.LSTM"``) with lowering attributes ``attrs`` on the
    forward's arguments.

    Raises:
        ReferenceError: no reference implementation for ``module_type``.
    """
    fn = MODULES.get(module_type)
    if fn is None:
        raise ReferenceError(f"no reference implementation for module type {module_type!r}; known: "
                             f"{', '.join(sorted(MODULES))}")
    return fn(attrs, *args, **kwargs)


# The submodules register themselves into MODULES on import.
_ = (attention, conv, linear, norm, padding, pool, recurrent, sparse, transformer, upsample)
