#!/usr/bin/env python3
"""Render docs/core-ops.md: the Core ATen operators of the installed torch, each with a one-line meaning.

    python3 scripts/gen_core_ops.py           # write docs/core-ops.md
    python3 scripts/gen_core_ops.py --check   # exit 1 if docs/core-ops.md is stale or a meaning is missing

The operators are every OpOverload of ``torch.ops.aten`` that carries ``torch.Tag.core`` (docs/format.md section
2.6 accepts exactly these as aten targets of a core graph). The schemas come from torch; the meanings are written
here, in MEANINGS, one line per overload. A torch that adds a Core ATen operator fails ``--check`` (and
tests/test_docs.py) until its meaning is written; one that drops one fails too (a meaning without an operator).
"""

from __future__ import annotations

import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = ROOT / "docs" / "core-ops.md"
#: The same list for the C++ reader, which accepts exactly these aten targets in core graphs.
HEADER = ROOT / "cpp" / "include" / "fxlower" / "core_aten_ops.hpp"

from fxlower.lowering.targets import CORE_EXTRA_OPS  # noqa: E402  (the non-core operators readers also accept)

#: name.overload -> one line of meaning. "self" and the other names are the schema's argument names.
MEANINGS = {
    "_adaptive_avg_pool2d.default": "2-D adaptive average pooling of `self` to `output_size` (each output cell averages its input window)",
    "_adaptive_avg_pool2d_backward.default": "gradient of `_adaptive_avg_pool2d` with respect to its input",
    "_adaptive_avg_pool3d.default": "3-D adaptive average pooling of `self` to `output_size`",
    "_cdist_forward.default": "pairwise p-norm distances between the rows of `x1` and of `x2`",
    "_embedding_bag.default": "sums, means or maxima of embedding rows over bags given by `indices` and `offsets`",
    "_fft_c2r.default": "inverse real FFT over `dim`: complex input to a real output of last size `last_dim_size`",
    "_fft_r2c.default": "real-to-complex FFT over `dim` (one-sided when `onesided`)",
    "_local_scalar_dense.default": "the value of a one-element tensor as a Python scalar",
    "_log_softmax.default": "log of softmax along `dim`",
    "_native_batch_norm_legit.default": "batch normalization with running statistics updated in training mode; returns (output, saved mean, saved inverse std)",
    "_native_batch_norm_legit.no_stats": "batch normalization with batch statistics and no running statistics",
    "_native_batch_norm_legit_no_training.default": "inference batch normalization with the running mean and variance; returns (output, empty, empty)",
    "_pdist_forward.default": "p-norm distances between every pair of rows of `self` (upper triangle, flattened)",
    "_softmax.default": "softmax along `dim`",
    "_to_copy.default": "a copy of `self` with another dtype, layout, device or memory format",
    "abs.default": "elementwise absolute value",
    "acos.default": "elementwise arc cosine",
    "acosh.default": "elementwise inverse hyperbolic cosine",
    "add.Scalar": "`self + alpha * other` with a scalar `other`",
    "add.Tensor": "`self + alpha * other`, elementwise with broadcasting",
    "addmm.default": "`beta * self + alpha * (mat1 @ mat2)` (a matrix product plus a broadcast bias)",
    "alias.default": "a view of `self` sharing its storage (same shape and strides)",
    "amax.default": "maximum over the dimensions `dim` (keeping them when `keepdim`)",
    "amin.default": "minimum over the dimensions `dim` (keeping them when `keepdim`)",
    "any.default": "whether any element is nonzero (a bool scalar tensor)",
    "any.dim": "whether any element along `dim` is nonzero",
    "any.dims": "whether any element along the dimensions `dim` is nonzero",
    "arange.start_step": "the 1-D tensor `start, start + step, ...` below `end`",
    "argmax.default": "index of the maximum, along `dim` or over the flattened tensor",
    "argmin.default": "index of the minimum, along `dim` or over the flattened tensor",
    "as_strided.default": "a view of `self`'s storage with the given size, stride and storage offset",
    "asin.default": "elementwise arc sine",
    "asinh.default": "elementwise inverse hyperbolic sine",
    "atan.default": "elementwise arc tangent",
    "atan2.default": "elementwise arc tangent of `self / other` using both signs for the quadrant",
    "atan2.out": "`atan2` written into `out`",
    "atanh.default": "elementwise inverse hyperbolic tangent",
    "adaptive_avg_pool1d.default": "1-D adaptive average pooling to `output_size` (start/end index formulas of semantics.md)",
    "avg_pool1d.default": "1-D average pooling with kernel, stride, padding, ceil mode and count_include_pad",
    "avg_pool2d.default": "2-D average pooling with kernel, stride, padding, ceil mode and divisor options",
    "avg_pool2d_backward.default": "gradient of `avg_pool2d` with respect to its input",
    "avg_pool3d.default": "3-D average pooling",
    "bitwise_and.Scalar": "elementwise bitwise (or logical, for bool) and with a scalar",
    "bitwise_and.Tensor": "elementwise bitwise (or logical, for bool) and",
    "bitwise_not.default": "elementwise bitwise (or logical, for bool) not",
    "bitwise_or.Scalar": "elementwise bitwise or with a scalar",
    "bitwise_or.Tensor": "elementwise bitwise or",
    "bitwise_xor.Scalar": "elementwise bitwise exclusive or with a scalar",
    "bitwise_xor.Tensor": "elementwise bitwise exclusive or",
    "bmm.default": "batched matrix product of two 3-D tensors",
    "cat.default": "concatenation of `tensors` along `dim`",
    "ceil.default": "elementwise ceiling",
    "clamp.Tensor": "elementwise clamp between the tensors `min` and `max` (either may be None)",
    "clamp.default": "elementwise clamp between the scalars `min` and `max` (either may be None)",
    "clone.default": "a copy of `self` (optionally in another memory format)",
    "col2im.default": "sums sliding-window columns back into an image (the inverse layout of unfold)",
    "constant_pad_nd.default": "pads the last dimensions by `pad` (pairs from the last dimension) with `value`",
    "convolution.default": "N-d convolution or transposed convolution with stride, padding, dilation, output padding and groups",
    "convolution_backward.default": "gradients of `convolution` with respect to input, weight and bias",
    "copy.default": "`src` broadcast and converted to `self`'s shape and dtype (a functional copy_)",
    "cos.default": "elementwise cosine",
    "cosh.default": "elementwise hyperbolic cosine",
    "cumsum.default": "cumulative sum along `dim`",
    "diagonal.default": "a view of the diagonal with `offset` over dimensions `dim1` and `dim2`",
    "div.Scalar": "elementwise true division by a scalar",
    "div.Scalar_mode": "division by a scalar with `rounding_mode` None, `trunc` or `floor`",
    "div.Tensor": "elementwise true division with broadcasting",
    "div.Tensor_mode": "elementwise division with `rounding_mode` None, `trunc` or `floor`",
    "elu.default": "exponential linear unit with `alpha`, `scale` and `input_scale`",
    "embedding.default": "rows of `weight` selected by the integer `indices`",
    "embedding_dense_backward.default": "gradient of `embedding` with respect to its weight",
    "empty.memory_format": "an uninitialised tensor of `size` (contents unspecified)",
    "empty_strided.default": "an uninitialised tensor with the given size and strides",
    "eq.Scalar": "elementwise `self == other` with a scalar (bool result)",
    "eq.Tensor": "elementwise `self == other` (bool result)",
    "erf.default": "elementwise error function",
    "exp.default": "elementwise exponential",
    "expand.default": "a broadcast view of `self` to `size` (-1 keeps a dimension)",
    "expm1.default": "elementwise `exp(x) - 1`",
    "fill.Scalar": "a tensor like `self` filled with `value`",
    "flip.default": "reverses the order of elements along the dimensions `dims`",
    "floor.default": "elementwise floor",
    "fmod.Scalar": "elementwise C-style remainder (sign of the dividend) by a scalar",
    "fmod.Tensor": "elementwise C-style remainder (sign of the dividend)",
    "full.default": "a tensor of `size` filled with `fill_value`",
    "full_like.default": "a tensor shaped like `self` filled with `fill_value`",
    "gather.default": "values of `self` along `dim` at the positions given by `index`",
    "ge.Scalar": "elementwise `self >= other` with a scalar",
    "ge.Tensor": "elementwise `self >= other`",
    "gelu.default": "Gaussian error linear unit (`approximate` none or tanh)",
    "grid_sampler_2d.default": "samples `input` at the normalised 2-D coordinates of `grid` (bilinear, nearest or bicubic)",
    "gt.Scalar": "elementwise `self > other` with a scalar",
    "gt.Tensor": "elementwise `self > other`",
    "hardtanh.default": "elementwise clamp to [`min_val`, `max_val`]",
    "index.Tensor": "advanced indexing of `self` by a list of optional index tensors",
    "index_put.default": "`self` with the positions given by `indices` set to (or, with `accumulate`, increased by) `values`",
    "index_select.default": "the slices of `self` along `dim` at the integer positions `index`",
    "isinf.default": "elementwise test for positive or negative infinity",
    "isnan.default": "elementwise test for NaN",
    "le.Scalar": "elementwise `self <= other` with a scalar",
    "le.Tensor": "elementwise `self <= other`",
    "leaky_relu.default": "elementwise `x` for positive `x`, else `negative_slope * x`",
    "log.default": "elementwise natural logarithm",
    "log10.default": "elementwise base-10 logarithm",
    "log1p.default": "elementwise `log(1 + x)`",
    "log2.default": "elementwise base-2 logarithm",
    "logical_and.default": "elementwise logical and (nonzero is true)",
    "logical_not.default": "elementwise logical not",
    "logical_or.default": "elementwise logical or",
    "logical_xor.default": "elementwise logical exclusive or",
    "lt.Scalar": "elementwise `self < other` with a scalar",
    "lt.Tensor": "elementwise `self < other`",
    "masked_scatter.default": "`self` with the positions where `mask` is true filled, in order, from `source`",
    "max.dim": "maximum values and their indices along `dim`",
    "max_pool2d_with_indices.default": "2-D max pooling; returns the maxima and their flat indices",
    "max_pool2d_with_indices_backward.default": "gradient of `max_pool2d_with_indices` with respect to its input",
    "max_pool3d_with_indices.default": "3-D max pooling; returns the maxima and their indices",
    "maximum.default": "elementwise maximum of two tensors (NaN propagates)",
    "mean.default": "mean of all elements",
    "mean.dim": "mean over the dimensions `dim` (keeping them when `keepdim`)",
    "min.dim": "minimum values and their indices along `dim`",
    "minimum.default": "elementwise minimum of two tensors (NaN propagates)",
    "mm.default": "matrix product of two 2-D tensors",
    "mul.Scalar": "elementwise product with a scalar",
    "mul.Tensor": "elementwise product with broadcasting",
    "native_dropout.default": "dropout with probability `p` when `train`; returns (output, keep mask)",
    "native_group_norm.default": "group normalization over `group` channel groups with affine weight and bias; returns (output, mean, rstd)",
    "native_group_norm_backward.default": "gradients of `native_group_norm`",
    "native_layer_norm.default": "layer normalization over the trailing `normalized_shape` with weight and bias; returns (output, mean, rstd)",
    "native_layer_norm_backward.default": "gradients of `native_layer_norm`",
    "ne.Scalar": "elementwise `self != other` with a scalar",
    "ne.Tensor": "elementwise `self != other`",
    "neg.default": "elementwise negation",
    "nonzero.default": "the indices of the nonzero elements, one row per element (data-dependent shape)",
    "permute.default": "a view with the dimensions reordered by `dims`",
    "pow.Scalar": "a scalar base raised elementwise to the tensor `exponent`",
    "pow.Tensor_Scalar": "elementwise power with a scalar exponent",
    "pow.Tensor_Tensor": "elementwise power with a tensor exponent",
    "prod.default": "product of all elements",
    "prod.dim_int": "product along `dim`",
    "rand.default": "a tensor of `size` with uniform random values in [0, 1)",
    "randn.default": "a tensor of `size` with standard normal random values",
    "randperm.default": "a random permutation of `0 .. n-1`",
    "reciprocal.default": "elementwise `1 / x`",
    "reflection_pad1d.default": "pads the last dimension by reflection",
    "reflection_pad2d.default": "pads the last two dimensions by reflection",
    "reflection_pad3d.default": "pads the last three dimensions by reflection",
    "relu.default": "elementwise `max(x, 0)`",
    "remainder.Scalar": "elementwise Python-style remainder (sign of the divisor) by a scalar",
    "remainder.Tensor": "elementwise Python-style remainder (sign of the divisor)",
    "repeat.default": "`self` tiled `repeats` times along each dimension",
    "replication_pad2d.default": "pads the last two dimensions by repeating the edge values",
    "replication_pad3d.default": "pads the last three dimensions by repeating the edge values",
    "round.default": "elementwise rounding to the nearest integer, ties to even",
    "rsqrt.default": "elementwise `1 / sqrt(x)`",
    "scalar_tensor.default": "a 0-d tensor holding the scalar `s`",
    "scatter.src": "`self` with the values of `src` written along `dim` at the positions `index`",
    "scatter.value": "`self` with `value` written along `dim` at the positions `index`",
    "scatter_add.default": "`self` plus the values of `src` added along `dim` at the positions `index`",
    "scatter_reduce.two": "`self` with `src` reduced (sum, prod, mean, amax, amin) along `dim` at the positions `index`",
    "select.int": "the slice at position `index` of dimension `dim`, which is removed (a view)",
    "select_scatter.default": "`self` with the slice at `index` of `dim` replaced by `src`",
    "sigmoid.default": "elementwise logistic function `1 / (1 + exp(-x))`",
    "sign.default": "elementwise sign (-1, 0 or 1)",
    "sin.default": "elementwise sine",
    "sinh.default": "elementwise hyperbolic sine",
    "slice.Tensor": "a view of `start:end:step` along `dim`",
    "slice_scatter.default": "`self` with the slice `start:end:step` of `dim` replaced by `src`",
    "sort.default": "values sorted along `dim` (descending when `descending`) and their original indices",
    "split_with_sizes.default": "views of consecutive pieces of the given sizes along `dim`",
    "sqrt.default": "elementwise square root",
    "squeeze.dim": "a view without dimension `dim` if its size is 1",
    "squeeze.dims": "a view without those of the dimensions `dim` whose size is 1",
    "sub.Scalar": "`self - alpha * other` with a scalar `other`",
    "sub.Tensor": "`self - alpha * other`, elementwise with broadcasting",
    "sum.dim_IntList": "sum over the dimensions `dim` (all when empty or None), optionally in `dtype`",
    "sym_numel.default": "the number of elements of `self`, as a SymInt",
    "sym_size.int": "the size of dimension `dim` of `self`, as a SymInt",
    "sym_is_contiguous.default": "whether `self` is contiguous in `memory_format`, as a SymBool",
    "resize_.default": "resizes `self` in place to `size` (contents of new elements unspecified); returns `self`",
    "sym_storage_offset.default": "the storage offset of `self`, as a SymInt",
    "sym_stride.int": "the stride of dimension `dim` of `self`, as a SymInt",
    "tan.default": "elementwise tangent",
    "tanh.default": "elementwise hyperbolic tangent",
    "topk.default": "the `k` largest (or smallest) values along `dim` and their indices",
    "trunc.default": "elementwise rounding towards zero",
    "unsqueeze.default": "a view with a dimension of size 1 inserted at `dim`",
    "upsample_bilinear2d.vec": "bilinear resize of the last two dimensions to `output_size` or by `scale_factors`",
    "upsample_nearest2d.vec": "nearest-neighbour resize of the last two dimensions to `output_size` or by `scale_factors`",
    "var.correction": "variance over `dim` with `correction` degrees of freedom subtracted",
    "var.dim": "variance over `dim`, unbiased or not",
    "view.default": "a view of `self` with shape `size` (one -1 inferred)",
    "where.self": "elementwise `self` where `condition` is true, else `other`",
}


def core_ops() -> list[torch._ops.OpOverload]:
    """Every aten OpOverload tagged core in the installed torch, sorted by name.overload (enumerated from torch's
    registry of operator schemas: ``dir(torch.ops.aten)`` lists only the packets already touched)."""
    ops = {}
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, packet_name = schema.name.partition("::")
        if namespace != "aten":
            continue
        try:
            op = getattr(getattr(torch.ops.aten, packet_name), schema.overload_name or "default")
        except (AttributeError, RuntimeError):  # TorchScript-only builtins have no OpOverload
            continue
        if isinstance(op, torch._ops.OpOverload) and torch.Tag.core in op.tags:
            ops[f"{op._opname}.{op._overloadname}"] = op
    return [ops[k] for k in sorted(ops)]


def key(op: torch._ops.OpOverload) -> str:
    return f"{op._opname}.{op._overloadname}"


def problems(ops: list) -> list[str]:
    names = {key(op) for op in ops}
    return ([f"no meaning for aten.{n} (add it to MEANINGS)" for n in sorted(names - set(MEANINGS))]
            + [f"a meaning for aten.{n}, which torch {torch.__version__} does not tag core (remove it)"
               for n in sorted(set(MEANINGS) - names)])


def render(ops: list) -> str:
    version = torch.__version__.split("+")[0]
    lines = [
        f"# Core ATen operators (torch {version})",
        "",
        "Generated by `scripts/gen_core_ops.py` from the installed torch; do not edit. These are the aten",
        "operators a core graph may call (docs/format.md section 2.6): every OpOverload of `torch.ops.aten` tagged",
        f"`torch.Tag.core`, {len(ops)} in all. A node's target is the first column; its arguments bind to the schema",
        "(second column) as section 2.6 says; the last column gives the meaning in one line. The exact semantics are",
        "PyTorch's.",
        "",
        "| target | schema | meaning |",
        "| --- | --- | --- |",
    ]
    for op in ops:
        schema = str(op._schema).replace("|", "\\|")
        lines.append(f"| `aten.{key(op)}` | `{schema}` | {MEANINGS[key(op)]} |")
    lines += ["", "## Also accepted", "",
              "Operators outside `torch.Tag.core` that torch.export + `run_decompositions()` still emits for real",
              "models; readers accept them in core graphs too: checks that compute nothing, and operators this torch",
              "cannot decompose (their meaning is PyTorch's operator of that name).", "",
              "| target | why it appears |", "| --- | --- |"]
    lines += [f"| `{name}` | {why} |" for name, why in sorted(CORE_EXTRA_OPS.items())]
    return "\n".join(lines) + "\n"


def render_header(ops: list) -> str:
    names = sorted([f"aten.{key(op)}" for op in ops] + list(CORE_EXTRA_OPS))
    version = torch.__version__.split("+")[0]
    body = "\n".join(f'    "{n}",' for n in names)
    return (f"// Generated by scripts/gen_core_ops.py from torch {version}; do not edit.\n"
            "// The aten targets a core graph may call (docs/core-ops.md): the Core ATen operators and the few non-core\n"
            "// ones torch.export still emits, sorted for binary search.\n"
            "#pragma once\n#include <string_view>\n\nnamespace fxlower {\n\n"
            f"inline constexpr std::string_view kCoreAtenOps[] = {{\n{body}\n}};\n\n}}  // namespace fxlower\n")


def main(argv: list[str]) -> int:
    ops = core_ops()
    bad = problems(ops)
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 1
    outputs = {TARGET: render(ops), HEADER: render_header(ops)}
    if "--check" in argv:
        for path, text in outputs.items():
            if not path.exists() or path.read_text() != text:
                print(f"{path.relative_to(ROOT)} is stale: run python3 scripts/gen_core_ops.py", file=sys.stderr)
                return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
