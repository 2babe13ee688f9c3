// fxlower reference runtime: Core ATen operators (the core view of format 1.2, and aten.* targets of a derived
// module view), registered as functions under their qualified names (aten.convolution.default).
//
// The interpreter binds a node's arguments to the operator's schema before the call, so a handler here sees the
// complete positional argument list in schema order (defaults filled in). Every handler forwards to an existing
// handler of the registry (torch.nn.functional.conv2d, torch.add, method view, ...) or calls a shared kernel of
// kernels.hpp: no kernel is duplicated.
#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "kernels.hpp"
#include "ops.hpp"

namespace fxlower::rt {

namespace {

Val TV(Tensor t) { return Val::tensor(std::move(t)); }

using KW = std::vector<std::pair<std::string, Val>>;

// Calls the registry's handler `name` of `kind` with the given arguments, on behalf of call `c`.
Val fwd(OpKind kind, const std::string& name, const Call& c, std::vector<Val> args, KW kwargs = {}) {
  // handlers found once per thread (the registry is immutable once built)
  thread_local std::unordered_map<std::string, const Handler*> cache[3];
  auto& slot = cache[int(kind)][name];
  if (!slot) slot = registry().find(kind, name);
  const Handler* h = slot;
  if (!h) fail("no handler '" + name + "' to forward to");
  Call d;
  d.node = c.node;
  d.target = &name;
  d.args = std::move(args);
  d.kwargs = std::move(kwargs);
  return (*h)(d);
}
Val fn(const std::string& name, const Call& c, std::vector<Val> args, KW kwargs = {}) {
  return fwd(OpKind::Function, name, c, std::move(args), std::move(kwargs));
}
Val method(const std::string& name, const Call& c, std::vector<Val> args, KW kwargs = {}) {
  return fwd(OpKind::Method, name, c, std::move(args), std::move(kwargs));
}

const Val& arg(const Call& c, size_t i) {
  if (i >= c.args.size()) fail("operator argument " + std::to_string(i) + " is missing (schema binding)");
  return c.args[i];
}
const Tensor& targ(const Call& c, size_t i) { return arg(c, i).as_tensor(); }

// The spatial rank of a convolution or pooling from its weight or input.
std::string nd(int64_t spatial) { return std::to_string(spatial) + "d"; }

// A tuple (out, None, ...) for operators that return statistics or indices the core graphs never read.
Val with_unused(Val out, size_t extra) {
  std::vector<Val> v{std::move(out)};
  for (size_t i = 0; i < extra; ++i) v.push_back(Val::none());
  return Val::tuple(std::move(v));
}

Val dtype_kw(const Val& d) { return d.is_none() ? Val::none() : d; }

// Advanced indexing x[i0, i1, ...] with index tensors (int64) or None (a full slice) per leading dimension, as
// aten.index.Tensor and aten.index_put define it: the index tensors broadcast together to B; the result's shape
// is B in place of the indexed dimensions when they are adjacent, else B first, then the other dimensions. Returns
// the storage offset in x of every result element, in row-major order.
std::vector<int64_t> advanced_offsets(const Tensor& x, const std::vector<Val>& idx, Shape& out_shape) {
  const int64_t r = x.dim();
  if (int64_t(idx.size()) > r) fail("too many indices (" + std::to_string(idx.size()) + ") for a tensor of rank " + std::to_string(r));
  std::vector<Tensor> ts(static_cast<size_t>(r));
  std::vector<int64_t> pos;
  Shape b;
  for (size_t d = 0; d < idx.size(); ++d) {
    if (idx[d].is_none()) continue;
    const Tensor& t = idx[d].as_tensor();
    if (!is_integral(t.dtype)) fail("index tensors must be integers (boolean masks are not supported here)");
    b = pos.empty() ? t.shape : broadcast_shapes(b, t.shape);
    pos.push_back(int64_t(d));
  }
  if (pos.empty()) fail("no index tensor");
  for (int64_t d : pos) ts[size_t(d)] = expand(idx[size_t(d)].as_tensor(), b);
  bool adjacent = true;
  for (size_t k = 1; k < pos.size(); ++k) adjacent = adjacent && pos[k] == pos[k - 1] + 1;
  // result layout: the list of (kind, dim): kind 0 = an x dimension, 1 = the block B
  std::vector<int64_t> rest;
  for (int64_t d = 0; d < r; ++d)
    if (std::find(pos.begin(), pos.end(), d) == pos.end()) rest.push_back(d);
  const int64_t insert_at = adjacent ? int64_t(std::count_if(rest.begin(), rest.end(), [&](int64_t d) { return d < pos[0]; })) : 0;
  out_shape.clear();
  for (size_t k = 0; k <= rest.size(); ++k) {
    if (int64_t(k) == insert_at) out_shape.insert(out_shape.end(), b.begin(), b.end());
    if (k < rest.size()) out_shape.push_back(x.shape[size_t(rest[k])]);
  }
  const Shape xs = contiguous_strides(x.shape);
  const int64_t nb = shape_numel(b), n = shape_numel(out_shape);
  std::vector<int64_t> off(static_cast<size_t>(n));
  const size_t nr = rest.size();
  std::vector<int64_t> ctr(out_shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    // the B-block flat index and the rest dims from the counter
    int64_t bi = 0, o = 0;
    size_t c = 0;
    for (size_t k = 0; k <= nr; ++k) {
      if (int64_t(k) == insert_at)
        for (size_t j = 0; j < b.size(); ++j) bi = bi * b[j] + ctr[c++];
      if (k < nr) o += ctr[c++] * xs[size_t(rest[k])];
    }
    (void)nb;
    for (int64_t d : pos) {
      int64_t v = ts[size_t(d)].data<int64_t>()[bi];
      const int64_t size = x.shape[size_t(d)];
      if (v < -size || v >= size) fail("index " + std::to_string(v) + " is out of bounds for dimension " + std::to_string(d) + " of size " + std::to_string(size));
      if (v < 0) v += size;
      o += v * xs[size_t(d)];
    }
    off[size_t(i)] = o;
    for (size_t k = out_shape.size(); k-- > 0;) {
      if (++ctr[k] < out_shape[k]) break;
      ctr[k] = 0;
    }
  }
  return off;
}

}  // namespace

void register_aten(Registry& r) {
  using K = OpKind;
  // ---------------------------------------------------------------- convolution, linear algebra
  r.add(K::Function, "aten.convolution.default", [](Call& c) -> Val {
    // (input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    const Tensor& w = targ(c, 1);
    const std::string n = nd(w.dim() - 2);
    if (!arg(c, 6).as_bool())
      return fn("torch.nn.functional.conv" + n, c, {arg(c, 0), arg(c, 1), arg(c, 2), arg(c, 3), arg(c, 4), arg(c, 5), arg(c, 8)});
    return fn("torch.nn.functional.conv_transpose" + n, c,
              {arg(c, 0), arg(c, 1), arg(c, 2), arg(c, 3), arg(c, 4), arg(c, 7), arg(c, 8), arg(c, 5)});
  });
  r.add(K::Function, "aten.addmm.default", [](Call& c) -> Val {
    return fn("torch.addmm", c, {arg(c, 0), arg(c, 1), arg(c, 2)}, {{"beta", arg(c, 3)}, {"alpha", arg(c, 4)}});
  });
  r.add(K::Function, "aten.mm.default", [](Call& c) -> Val { return fn("torch.mm", c, {arg(c, 0), arg(c, 1)}); });
  r.add(K::Function, "aten.bmm.default", [](Call& c) -> Val { return fn("torch.bmm", c, {arg(c, 0), arg(c, 1)}); });

  // ---------------------------------------------------------------- elementwise
  for (const char* op : {"add", "sub"})
    for (const char* ov : {"Tensor", "Scalar"}) {
      const std::string target = std::string("torch.") + op;
      const BinOp bop = op[0] == 'a' ? BinOp::Add : BinOp::Sub;
      r.add(K::Function, std::string("aten.") + op + "." + ov, [target, bop](Call& c) -> Val {
        // alpha 1 (the default): the shared binary kernel; otherwise torch.add/torch.sub with alpha
        const Val& alpha = arg(c, 2);
        if (alpha.is_int_like() && alpha.as_int() == 1 && alpha.k != Val::K::Bool) return binary(bop, arg(c, 0), arg(c, 1));
        return fn(target, c, {arg(c, 0), arg(c, 1)}, {{"alpha", alpha}});
      });
    }
  // Binary operators of the shared kernel (broadcasting and type promotion as torch).
  const std::pair<const char*, BinOp> kernel_binaries[] = {
      {"aten.mul.Tensor", BinOp::Mul}, {"aten.mul.Scalar", BinOp::Mul}, {"aten.div.Tensor", BinOp::Div},
      {"aten.div.Scalar", BinOp::Div}, {"aten.maximum.default", BinOp::Maximum}, {"aten.minimum.default", BinOp::Minimum}};
  for (const auto& [name, bop] : kernel_binaries) {
    const BinOp o = bop;
    r.add(K::Function, name, [o](Call& c) -> Val { return binary(o, arg(c, 0), arg(c, 1)); });
  }
  // Activations of the shared kernel.
  for (const char* name : {"relu", "sigmoid", "tanh"}) {
    const std::string a = name;
    r.add(K::Function, "aten." + a + ".default", [a](Call& c) -> Val { return TV(activation(a, targ(c, 0))); });
  }
  const std::pair<const char*, const char*> binaries[] = {
      {"aten.pow.Tensor_Scalar", "torch.pow"}, {"aten.pow.Tensor_Tensor", "torch.pow"},
      {"aten.logical_and.default", "torch.logical_and"}, {"aten.logical_or.default", "torch.logical_or"},
      {"aten.eq.Scalar", "torch.eq"}, {"aten.eq.Tensor", "torch.eq"}, {"aten.ne.Scalar", "torch.ne"},
      {"aten.ne.Tensor", "torch.ne"}, {"aten.lt.Scalar", "torch.lt"}, {"aten.lt.Tensor", "torch.lt"},
      {"aten.le.Scalar", "torch.le"}, {"aten.le.Tensor", "torch.le"}, {"aten.gt.Scalar", "torch.gt"},
      {"aten.gt.Tensor", "torch.gt"}, {"aten.ge.Scalar", "torch.ge"}, {"aten.ge.Tensor", "torch.ge"}};
  for (const auto& [name, target] : binaries) {
    const std::string t = target;
    r.add(K::Function, name, [t](Call& c) -> Val { return fn(t, c, {arg(c, 0), arg(c, 1)}); });
  }
  // Unary operators: the methods of the same name.
  for (const char* name : {"abs", "neg", "exp", "expm1", "log", "log1p", "rsqrt", "sqrt",
                           "sign", "logical_not", "sin", "cos", "reciprocal", "floor", "ceil", "erf"}) {
    const std::string m = name;
    r.add(K::Function, "aten." + m + ".default", [m](Call& c) -> Val { return method(m, c, {arg(c, 0)}); });
  }
  r.add(K::Function, {"aten.clamp.default", "aten.clamp.Tensor"}, [](Call& c) -> Val {
    return fn("torch.clamp", c, {arg(c, 0), arg(c, 1), arg(c, 2)});
  });
  r.add(K::Function, "aten.where.self", [](Call& c) -> Val { return fn("torch.where", c, {arg(c, 0), arg(c, 1), arg(c, 2)}); });
  r.add(K::Function, "aten.gelu.default", [](Call& c) -> Val {
    return fn("torch.nn.functional.gelu", c, {arg(c, 0)}, {{"approximate", arg(c, 1)}});
  });
  r.add(K::Function, "aten.elu.default", [](Call& c) -> Val {
    // (self, alpha, scale, input_scale): x > 0 ? scale * x : scale * alpha * (exp(input_scale * x) - 1), i.e.
    // scale * where(x > 0, x, elu(input_scale * x, alpha)); SELU and CELU decompose to it.
    const double scale = arg(c, 2).as_double(), input_scale = arg(c, 3).as_double();
    if (scale == 1.0 && input_scale == 1.0) return fn("torch.nn.functional.elu", c, {arg(c, 0), arg(c, 1)});
    const Tensor& x = targ(c, 0);
    const Val xs = input_scale == 1.0 ? arg(c, 0) : binary(BinOp::Mul, arg(c, 0), Val::real(input_scale));
    const Val neg = fn("torch.nn.functional.elu", c, {xs, arg(c, 1)});
    const Tensor pos = binary(BinOp::Gt, arg(c, 0), Val::real(0.0)).as_tensor();
    return binary(BinOp::Mul, TV(where(pos, TV(x), neg)), Val::real(scale));
  });
  r.add(K::Function, "aten.hardtanh.default", [](Call& c) -> Val {
    return fn("torch.nn.functional.hardtanh", c, {arg(c, 0), arg(c, 1), arg(c, 2)});
  });
  r.add(K::Function, "aten.leaky_relu.default", [](Call& c) -> Val {
    return fn("torch.nn.functional.leaky_relu", c, {arg(c, 0), arg(c, 1)});
  });
  r.add(K::Function, "aten._softmax.default", [](Call& c) -> Val { return TV(softmax(targ(c, 0), arg(c, 1).as_int(), false)); });
  r.add(K::Function, "aten._log_softmax.default", [](Call& c) -> Val { return TV(softmax(targ(c, 0), arg(c, 1).as_int(), true)); });

  // ---------------------------------------------------------------- reductions
  r.add(K::Function, "aten.mean.dim", [](Call& c) -> Val {
    std::vector<int64_t> dims = arg(c, 1).is_none() ? std::vector<int64_t>{} : arg(c, 1).as_ints();
    return TV(reduce_sum(targ(c, 0), dims, arg(c, 2).as_bool(), true));
  });
  r.add(K::Function, "aten.sum.dim_IntList", [](Call& c) -> Val {
    std::vector<int64_t> dims = arg(c, 1).is_none() ? std::vector<int64_t>{} : arg(c, 1).as_ints();
    return TV(reduce_sum(targ(c, 0), dims, arg(c, 2).as_bool(), false));
  });
  r.add(K::Function, "aten.amax.default", [](Call& c) -> Val {
    return method("amax", c, {arg(c, 0), arg(c, 1)}, {{"keepdim", arg(c, 2)}});
  });
  r.add(K::Function, "aten.any.dim", [](Call& c) -> Val { return method("any", c, {arg(c, 0), arg(c, 1), arg(c, 2)}); });
  r.add(K::Function, "aten.linalg_vector_norm.default", [](Call& c) -> Val {
    return fn("torch.linalg.vector_norm", c, {arg(c, 0), arg(c, 1), arg(c, 2), arg(c, 3)});
  });

  // ---------------------------------------------------------------- normalisation
  r.add(K::Function, "aten._native_batch_norm_legit_no_training.default", [](Call& c) -> Val {
    // (input, weight, bias, running_mean, running_var, momentum, eps) -> (out, save_mean, save_invstd)
    return with_unused(fn("torch.nn.functional.batch_norm", c,
                          {arg(c, 0), arg(c, 3), arg(c, 4), arg(c, 1), arg(c, 2), Val::boolean(false), arg(c, 5), arg(c, 6)}), 2);
  });
  r.add(K::Function, "aten._native_batch_norm_legit.no_stats", [](Call& c) -> Val {
    // (input, weight, bias, training, momentum, eps): normalised by the batch's statistics
    return with_unused(fn("torch.nn.functional.batch_norm", c,
                          {arg(c, 0), Val::none(), Val::none(), arg(c, 1), arg(c, 2), Val::boolean(true), arg(c, 4), arg(c, 5)}), 2);
  });
  r.add(K::Function, "aten.native_layer_norm.default", [](Call& c) -> Val {
    // (input, normalized_shape, weight, bias, eps) -> (out, mean, rstd)
    const int64_t n = int64_t(arg(c, 1).as_ints().size());
    Tensor w = arg(c, 2).is_none() ? Tensor() : targ(c, 2), b = arg(c, 3).is_none() ? Tensor() : targ(c, 3);
    return with_unused(TV(layer_norm(targ(c, 0), n, w, b, arg(c, 4).as_double())), 2);
  });
  r.add(K::Function, "aten.native_group_norm.default", [](Call& c) -> Val {
    // (input, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd)
    return with_unused(fn("torch.nn.functional.group_norm", c, {arg(c, 0), arg(c, 6), arg(c, 1), arg(c, 2), arg(c, 7)}), 2);
  });

  // ---------------------------------------------------------------- pooling, padding, interpolation
  for (int d : {1, 2, 3}) {
    const std::string n = nd(d);
    r.add(K::Function, "aten.max_pool" + n + "_with_indices.default", [n](Call& c) -> Val {
      // (self, kernel_size, stride, padding, dilation, ceil_mode) -> (out, indices)
      Val stride = arg(c, 2).is_seq() && arg(c, 2).seq().empty() ? arg(c, 1) : arg(c, 2);
      return with_unused(fn("torch.nn.functional.max_pool" + n, c, {arg(c, 0), arg(c, 1), stride, arg(c, 3), arg(c, 4), arg(c, 5)}), 1);
    });
    r.add(K::Function, "aten.avg_pool" + n + ".default", [n](Call& c) -> Val {
      // (self, kernel_size, stride, padding, ceil_mode, count_include_pad[, divisor_override])
      Val stride = arg(c, 2).is_seq() && arg(c, 2).seq().empty() ? arg(c, 1) : arg(c, 2);
      std::vector<Val> a{arg(c, 0), arg(c, 1), stride, arg(c, 3), arg(c, 4), arg(c, 5)};
      if (c.args.size() > 6 && n != "1d") a.push_back(arg(c, 6));
      return fn("torch.nn.functional.avg_pool" + n, c, std::move(a));
    });
    r.add(K::Function, {("aten._adaptive_avg_pool" + n + ".default").c_str(), ("aten.adaptive_avg_pool" + n + ".default").c_str()},
          [n](Call& c) -> Val { return fn("torch.nn.functional.adaptive_avg_pool" + n, c, {arg(c, 0), arg(c, 1)}); });
    r.add(K::Function, "aten.adaptive_max_pool" + n + ".default", [n](Call& c) -> Val {
      return with_unused(fn("torch.nn.functional.adaptive_max_pool" + n, c, {arg(c, 0), arg(c, 1)}), 1);
    });
  }
  r.add(K::Function, "aten.constant_pad_nd.default", [](Call& c) -> Val {
    return TV(pad(targ(c, 0), arg(c, 1).as_ints(), "constant", arg(c, 2).as_double()));
  });
  r.add(K::Function, "aten.upsample_nearest2d.vec", [](Call& c) -> Val {
    // (input, output_size, scale_factors)
    return fn("torch.nn.functional.interpolate", c, {arg(c, 0)},
              {{"size", arg(c, 1)}, {"scale_factor", arg(c, 2)}, {"mode", Val::str("nearest")}});
  });
  r.add(K::Function, "aten.upsample_bilinear2d.vec", [](Call& c) -> Val {
    // (input, output_size, align_corners, scale_factors)
    return fn("torch.nn.functional.interpolate", c, {arg(c, 0)},
              {{"size", arg(c, 1)}, {"scale_factor", arg(c, 3)}, {"mode", Val::str("bilinear")}, {"align_corners", arg(c, 2)}});
  });

  // ---------------------------------------------------------------- shapes and indexing
  r.add(K::Function, {"aten.view.default", "aten._unsafe_view.default", "aten.reshape.default"}, [](Call& c) -> Val {
    // runtime tensors are contiguous: a view is the same storage with another shape (one -1 inferred)
    const Tensor& x = targ(c, 0);
    Shape shape = arg(c, 1).as_ints();
    int64_t known = 1, infer = -1;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] == -1 && infer < 0) infer = int64_t(d);
      else if (shape[d] < 0) fail("view: invalid size " + std::to_string(shape[d]));
      else known *= shape[d];
    }
    if (infer >= 0) {
      if (known == 0 || x.numel() % known) fail("view: shape " + shape_str(shape) + " is invalid for " + std::to_string(x.numel()) + " elements");
      shape[size_t(infer)] = x.numel() / known;
    }
    if (shape_numel(shape) != x.numel())
      fail("view: shape " + shape_str(shape) + " is invalid for an input of " + std::to_string(x.numel()) + " elements");
    return TV(Tensor::borrowed(x.dtype, std::move(shape), const_cast<void*>(x.raw()), x.owner(), x.writable()));
  });
  r.add(K::Function, "aten.permute.default", [](Call& c) -> Val { return TV(permute(targ(c, 0), arg(c, 1).as_ints())); });
  r.add(K::Function, "aten.expand.default", [](Call& c) -> Val { return method("expand", c, {arg(c, 0), arg(c, 1)}); });
  r.add(K::Function, "aten.repeat.default", [](Call& c) -> Val { return method("repeat", c, {arg(c, 0), arg(c, 1)}); });
  r.add(K::Function, "aten.flip.default", [](Call& c) -> Val { return fn("torch.flip", c, {arg(c, 0), arg(c, 1)}); });
  r.add(K::Function, "aten.unsqueeze.default", [](Call& c) -> Val { return fn("torch.unsqueeze", c, {arg(c, 0), arg(c, 1)}); });
  r.add(K::Function, "aten.squeeze.dims", [](Call& c) -> Val {
    const Tensor& x = targ(c, 0);
    std::vector<bool> drop(size_t(x.dim()), false);
    for (int64_t d : arg(c, 1).as_ints()) {
      const int64_t k = norm_dim(d, x.dim());
      if (x.dim() > 0 && x.shape[size_t(k)] == 1) drop[size_t(k)] = true;
    }
    std::vector<int64_t> shape;
    for (size_t k = 0; k < drop.size(); ++k)
      if (!drop[k]) shape.push_back(x.shape[k]);
    return method("reshape", c, {arg(c, 0), Val::ints(shape)});
  });
  r.add(K::Function, "aten.select.int", [](Call& c) -> Val { return fn("torch.select", c, {arg(c, 0), arg(c, 1), arg(c, 2)}); });
  r.add(K::Function, "aten.slice.Tensor", [](Call& c) -> Val {
    // (self, dim, start, end, step), with Python's clamping of start and end
    const Tensor& x = targ(c, 0);
    const int64_t dim = norm_dim(arg(c, 1).as_int(), x.dim());
    const int64_t n = x.shape[size_t(dim)];
    auto clampi = [n](const Val& v, int64_t dflt) {
      if (v.is_none()) return dflt;
      int64_t i = v.as_int();
      if (i < 0) i += n;
      return std::min(std::max<int64_t>(i, 0), n);
    };
    const int64_t start = clampi(arg(c, 2), 0), stop = std::max(start, clampi(arg(c, 3), n));
    return TV(slice(x, dim, start, stop, arg(c, 4).as_int()));
  });
  r.add(K::Function, "aten.cat.default", [](Call& c) -> Val { return fn("torch.cat", c, {arg(c, 0), arg(c, 1)}); });
  r.add(K::Function, "aten.split_with_sizes.default", [](Call& c) -> Val {
    Val parts = fn("torch.split", c, {arg(c, 0), arg(c, 1), arg(c, 2)});
    return Val::list(parts.seq());
  });
  r.add(K::Function, "aten.index.Tensor", [](Call& c) -> Val {
    // (self, indices: Tensor?[]): advanced indexing, None a full slice
    const Tensor& x = targ(c, 0);
    Shape shape;
    const std::vector<int64_t> off = advanced_offsets(x, arg(c, 1).seq(), shape);
    Tensor out = Tensor::empty(x.dtype, shape);
    dispatch(x.ptype(), [&](auto t) {
      using T = decltype(t);
      const T* src = x.data<T>();
      T* dst = out.data<T>();
      for (size_t i = 0; i < off.size(); ++i) dst[i] = src[off[i]];
    });
    return TV(out);
  });
  r.add(K::Function, "aten.slice_scatter.default", [](Call& c) -> Val {
    // (self, src, dim, start, end, step): a copy of self with self[..., start:end:step, ...] = src
    const Tensor& x = targ(c, 0);
    const int64_t dim = norm_dim(arg(c, 2).as_int(), x.dim());
    std::vector<Val> idx(size_t(dim), Val::slice(Val::none(), Val::none(), Val::none()));
    idx.push_back(Val::slice(arg(c, 3), arg(c, 4), arg(c, 5)));
    Val out = TV(x.clone());
    fn("operator.setitem", c, {out, Val::tuple(std::move(idx)), arg(c, 1)});
    return out;
  });
  r.add(K::Function, "aten.index_put.default", [](Call& c) -> Val {
    // (self, indices: Tensor?[], values, accumulate): a copy of self with self[indices] = values (or +=, in
    // index order, when accumulate)
    const Tensor& x = targ(c, 0);
    Shape shape;
    const std::vector<int64_t> off = advanced_offsets(x, arg(c, 1).seq(), shape);
    const Tensor v = expand(arg(c, 2).is_tensor() ? targ(c, 2) : Tensor::scalar(x.dtype, arg(c, 2).as_double()), shape).to(x.dtype);
    Tensor out = x.clone();
    const bool acc = arg(c, 3).as_bool();
    dispatch(x.ptype(), [&](auto t) {
      using T = decltype(t);
      const T* src = v.data<T>();
      T* dst = out.data<T>();
      for (size_t i = 0; i < off.size(); ++i) dst[off[i]] = acc ? T(dst[off[i]] + src[i]) : src[i];
    });
    return TV(out);
  });
  r.add(K::Function, "aten._trilinear.default", [](Call& c) -> Val {
    // (i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim): each input gets size-1 dimensions at its
    // expand positions, the three are multiplied with broadcasting and summed over sumdim (torch.bilinear).
    std::vector<Val> parts;
    for (int k = 0; k < 3; ++k) {
      const Tensor& t = targ(c, size_t(k));
      std::vector<int64_t> exp = arg(c, size_t(3 + k)).as_ints();
      std::sort(exp.begin(), exp.end());
      std::vector<int64_t> shape(t.shape.begin(), t.shape.end());
      for (int64_t d : exp) shape.insert(shape.begin() + d, 1);
      parts.push_back(method("reshape", c, {arg(c, size_t(k)), Val::ints(shape)}));
    }
    const Val prod = binary(BinOp::Mul, binary(BinOp::Mul, parts[0], parts[1]), parts[2]);
    return TV(reduce_sum(prod.as_tensor(), arg(c, 6).as_ints(), false, false));
  });
  r.add(K::Function, "aten._embedding_bag.default", [](Call& c) -> Val {
    // (weight, indices, offsets, scale_grad_by_freq, mode, sparse, per_sample_weights, include_last_offset,
    //  padding_idx) -> (out, offset2bag, bag_size, max_indices); mode 0 sum, 1 mean, 2 max; padding_idx < 0: none
    static const char* modes[] = {"sum", "mean", "max"};
    const int64_t mode = arg(c, 4).as_int();
    if (mode < 0 || mode > 2) fail("aten._embedding_bag mode " + std::to_string(mode) + " is not 0, 1 or 2");
    const Val pad = arg(c, 8).is_none() || arg(c, 8).as_int() < 0 ? Val::none() : arg(c, 8);
    return with_unused(fn("torch.nn.functional.embedding_bag", c, {arg(c, 1), arg(c, 0), arg(c, 2)},
                          {{"mode", Val::str(modes[mode])}, {"per_sample_weights", arg(c, 6)},
                           {"include_last_offset", arg(c, 7)}, {"padding_idx", pad}}), 3);
  });
  r.add(K::Function, "aten.embedding.default", [](Call& c) -> Val {
    // (weight, indices, padding_idx, scale_grad_by_freq, sparse)
    return fn("torch.nn.functional.embedding", c, {arg(c, 1), arg(c, 0)});
  });
  r.add(K::Function, "aten.sym_size.int", [](Call& c) -> Val { return Val::integer(targ(c, 0).size(arg(c, 1).as_int())); });

  // ---------------------------------------------------------------- copies, casts, factories
  r.add(K::Function, {"aten.clone.default", "aten.alias.default", "aten.lift_fresh_copy.default"},
        [](Call& c) -> Val { return TV(targ(c, 0).clone()); });
  r.add(K::Function, "aten._to_copy.default", [](Call& c) -> Val {
    // (self, dtype, layout, device, pin_memory, non_blocking, memory_format)
    const Tensor& x = targ(c, 0);
    return TV(arg(c, 1).is_none() ? x.clone() : x.to(arg(c, 1).dt).clone());
  });
  r.add(K::Function, "aten.copy.default", [](Call& c) -> Val {
    // (self, src, non_blocking): src broadcast to self's shape, in self's dtype
    const Tensor& self = targ(c, 0);
    return TV(expand(targ(c, 1), self.shape).to(self.dtype).clone());
  });
  r.add(K::Function, "aten._assert_tensor_metadata.default", [](Call&) -> Val { return Val::none(); });
  r.add(K::Function, "aten.arange.start_step", [](Call& c) -> Val {
    return fn("torch.arange", c, {arg(c, 0), arg(c, 1), arg(c, 2)}, {{"dtype", dtype_kw(arg(c, 3))}});
  });
  r.add(K::Function, "aten.full.default", [](Call& c) -> Val {
    return fn("torch.full", c, {arg(c, 0), arg(c, 1)}, {{"dtype", dtype_kw(arg(c, 2))}});
  });
  r.add(K::Function, "aten.full_like.default", [](Call& c) -> Val {
    return fn("torch.full_like", c, {arg(c, 0), arg(c, 1)}, {{"dtype", dtype_kw(arg(c, 2))}});
  });
  r.add(K::Function, "aten.scalar_tensor.default", [](Call& c) -> Val {
    const DType dt = arg(c, 1).is_none() ? DType::F32 : arg(c, 1).dt;
    return TV(Tensor::scalar(dt, arg(c, 0).as_double()));
  });
  r.add(K::Function, {"aten.empty.memory_format", "aten.zeros.default"}, [](Call& c) -> Val {
    return fn("torch.zeros", c, {arg(c, 0)}, {{"dtype", dtype_kw(arg(c, 1))}});
  });
}

}  // namespace fxlower::rt
