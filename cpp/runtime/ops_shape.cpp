// fxlower reference runtime: shapes, views, indexing, concatenation, padding, factories and casts.
#include <cmath>
#include <numeric>

#include "kernels.hpp"
#include "ops.hpp"

namespace fxlower::rt {

namespace {

Val TV(Tensor t) { return Val::tensor(std::move(t)); }

// out[i] = x[offset + sum_d idx_d * strides[d]] over out_shape: the one copy kernel behind permute, slicing and
// expand. Returns a view sharing x's storage when the selection is already contiguous.
Tensor strided_copy(const Tensor& x, const Shape& out_shape, const std::vector<int64_t>& strides, int64_t offset) {
  // contiguous selection: share
  {
    bool contig = true;
    int64_t expect = 1;
    for (size_t d = out_shape.size(); d-- > 0;) {
      if (out_shape[d] == 1) continue;
      if (strides[d] != expect) { contig = false; break; }
      expect *= out_shape[d];
    }
    if (contig) {
      char* base = static_cast<char*>(const_cast<void*>(x.raw())) + offset * int64_t(psize(x.ptype()));
      return Tensor::borrowed(x.dtype, out_shape, base, x.owner(), x.writable());
    }
  }
  Tensor out = Tensor::empty(x.dtype, out_shape);
  const int64_t n = out.numel();
  if (n == 0) return out;
  // coalesce
  std::vector<int64_t> dims, st;
  for (size_t d = 0; d < out_shape.size(); ++d) {
    if (out_shape[d] == 1) continue;
    if (!dims.empty() && st.back() == strides[d] * out_shape[d]) {
      dims.back() *= out_shape[d];
      st.back() = strides[d];
      continue;
    }
    dims.push_back(out_shape[d]);
    st.push_back(strides[d]);
  }
  if (dims.empty()) { dims.push_back(1); st.push_back(0); }
  const size_t nd = dims.size();
  const int64_t inner = dims[nd - 1], ist = st[nd - 1];
  const int64_t rows = n / inner;
  auto run = [&](auto tag) {
    using E = decltype(tag);
    const E* src = static_cast<const E*>(x.raw()) + offset;
    E* dst = static_cast<E*>(out.raw());
    parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        int64_t rem = r, off = 0;
        for (size_t d = nd - 1; d-- > 0;) {
          off += (rem % dims[d]) * st[d];
          rem /= dims[d];
        }
        const E* s = src + off;
        E* o = dst + r * inner;
        if (ist == 1) {
          std::memcpy(o, s, size_t(inner) * sizeof(E));
        } else {
          for (int64_t j = 0; j < inner; ++j) o[j] = s[j * ist];
        }
      }
    });
  };
  switch (psize(x.ptype())) {
    case 8: run(uint64_t{}); break;
    case 4: run(uint32_t{}); break;
    default: run(uint8_t{}); break;
  }
  return out;
}

// A description of a strided selection of a contiguous tensor.
struct ViewDesc {
  Shape shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
  explicit ViewDesc(const Tensor& x) : shape(x.shape), strides(contiguous_strides(x.shape)) {}
  Tensor take(const Tensor& x) const { return strided_copy(x, shape, strides, offset); }
};

void norm_slice(int64_t n, const Val& sv, int64_t& start, int64_t& stop, int64_t& step) {
  const auto& it = *sv.items;
  step = it[2].is_none() ? 1 : it[2].as_int();
  if (step <= 0) fail("slice step must be positive");
  start = it[0].is_none() ? 0 : it[0].as_int();
  stop = it[1].is_none() ? n : it[1].as_int();
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  start = std::clamp<int64_t>(start, 0, n);
  stop = std::clamp<int64_t>(stop, start, n);
}

int64_t count_slices(int64_t start, int64_t stop, int64_t step) {
  return stop > start ? (stop - start + step - 1) / step : 0;
}

Tensor index_select_impl(const Tensor& x, int64_t dim, const Tensor& idx0) {
  dim = norm_dim(dim, x.dim());
  Tensor idx = idx0;
  if (idx.dtype == DType::BOOL) fail("internal: bool index in index_select");
  int64_t n = x.shape[size_t(dim)];
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= x.shape[size_t(i)];
  for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= x.shape[size_t(i)];
  Shape os;
  for (int64_t i = 0; i < dim; ++i) os.push_back(x.shape[size_t(i)]);
  for (int64_t d : idx.shape) os.push_back(d);
  for (int64_t i = dim + 1; i < x.dim(); ++i) os.push_back(x.shape[size_t(i)]);
  const int64_t m = idx.numel();
  std::vector<int64_t> ix(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) {
    int64_t v = idx.item_int(j);
    if (v < 0) v += n;
    if (v < 0 || v >= n) fail("index " + std::to_string(idx.item_int(j)) + " is out of bounds for size " + std::to_string(n));
    ix[size_t(j)] = v;
  }
  Tensor out = Tensor::empty(x.dtype, os);
  const size_t es = psize(x.ptype());
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(out.raw());
  parallel_for(outer * m, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t o = r / m, j = r % m;
      std::memcpy(dst + size_t(r * inner) * es, src + size_t((o * n + ix[size_t(j)]) * inner) * es, size_t(inner) * es);
    }
  });
  return out;
}

// Indices of the true elements of a 1-D bool tensor.
Tensor nonzero_1d(const Tensor& m) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < m.numel(); ++i)
    if (m.data<uint8_t>()[i]) idx.push_back(i);
  Tensor t = Tensor::empty(DType::I64, {int64_t(idx.size())});
  if (!idx.empty()) std::memcpy(t.raw(), idx.data(), idx.size() * 8);
  return t;
}

// A basic-indexing selection of a contiguous tensor (shape, strides and offset into x's storage), plus at most
// one advanced index (an integer tensor on dim adv_pos, or a bool mask over adv.dim() dims from adv_pos).
struct Selection {
  Shape shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
  int adv_pos = -1;
  Tensor adv;
};

Selection resolve_index(const Tensor& x, const Val& index) {
  std::vector<Val> items;
  if (index.k == Val::K::Tuple) items = index.seq();
  else items.push_back(index);
  int64_t consuming = 0;
  for (const auto& it : items) {
    if (it.k == Val::K::Int || it.k == Val::K::Slice) ++consuming;
    else if (it.is_tensor()) consuming += it.t.dtype == DType::BOOL ? it.t.dim() : 1;
    else if (it.k == Val::K::List) ++consuming;
  }
  if (consuming > x.dim()) fail("too many indices for a tensor of rank " + std::to_string(x.dim()));
  ViewDesc v(x);
  Shape shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
  int64_t src = 0;  // next dim of x
  int adv_pos = -1;
  Tensor adv;
  bool ellipsis_seen = false;
  auto push_full = [&](int64_t d) {
    shape.push_back(v.shape[size_t(d)]);
    strides.push_back(v.strides[size_t(d)]);
  };
  for (const auto& it : items) {
    switch (it.k) {
      case Val::K::None:
        shape.push_back(1);
        strides.push_back(0);
        break;
      case Val::K::Ellipsis: {
        if (ellipsis_seen) fail("an index can only have a single ellipsis");
        ellipsis_seen = true;
        int64_t skip = x.dim() - consuming;
        for (int64_t k = 0; k < skip; ++k) push_full(src++);
        break;
      }
      case Val::K::Int: case Val::K::Bool: {
        if (it.k == Val::K::Bool) fail("indexing with a Python bool is not supported");
        int64_t n = v.shape[size_t(src)], i = it.i;
        if (i < 0) i += n;
        if (i < 0 || i >= n) fail("index " + std::to_string(it.i) + " is out of range for dimension of size " + std::to_string(n));
        offset += i * v.strides[size_t(src)];
        ++src;
        break;
      }
      case Val::K::Slice: {
        int64_t n = v.shape[size_t(src)], a, b, s;
        norm_slice(n, it, a, b, s);
        offset += a * v.strides[size_t(src)];
        shape.push_back(count_slices(a, b, s));
        strides.push_back(v.strides[size_t(src)] * s);
        ++src;
        break;
      }
      case Val::K::Tensor: case Val::K::List: {
        if (adv_pos >= 0) fail("indexing with more than one tensor is not supported");
        Tensor t;
        if (it.k == Val::K::List) {
          std::vector<int64_t> iv = it.as_ints();
          t = Tensor::empty(DType::I64, {int64_t(iv.size())});
          if (!iv.empty()) std::memcpy(t.raw(), iv.data(), iv.size() * 8);
        } else {
          t = it.t;
        }
        if (t.dtype == DType::BOOL) {
          // a mask over t.dim() dims: flatten those dims of the selection, then index by the true positions
          int64_t k = t.dim();
          if (k == 0) fail("indexing with a 0-dim bool tensor is not supported");
          for (int64_t j = 0; j < k; ++j)
            if (v.shape[size_t(src + j)] != t.shape[size_t(j)])
              fail("mask of shape " + shape_str(t.shape) + " does not match the indexed dims");
          adv_pos = int(shape.size());
          for (int64_t j = 0; j < k; ++j) push_full(src + j);
          src += k;
          adv = t;
        } else {
          if (!is_integral(t.dtype)) fail("tensors used as indices must be integer or bool tensors");
          adv_pos = int(shape.size());
          push_full(src++);
          adv = t;
        }
        break;
      }
      default:
        fail("unsupported index " + it.kind_name());
    }
  }
  while (src < x.dim()) push_full(src++);
  Selection sel;
  sel.shape = std::move(shape);
  sel.strides = std::move(strides);
  sel.offset = offset;
  sel.adv_pos = adv_pos;
  sel.adv = adv;
  return sel;
}

// The storage offsets of every element x[index] designates, in the result's row-major order, and its shape.
std::vector<int64_t> selection_offsets(const Selection& s, Shape& shape) {
  struct Dim {
    int64_t len, stride;
    bool positional;
  };
  std::vector<int64_t> positions;  // the advanced index's storage offsets (its dims flattened)
  std::vector<Dim> dims;
  shape.clear();
  size_t d = 0;
  while (d < s.shape.size()) {
    if (int(d) == s.adv_pos) {
      if (s.adv.dtype == DType::BOOL) {
        const size_t k = size_t(s.adv.dim());
        const int64_t st = s.strides[d + k - 1];
        for (int64_t i = 0; i < s.adv.numel(); ++i)
          if (s.adv.data<uint8_t>()[i]) positions.push_back(i * st);
        shape.push_back(int64_t(positions.size()));
        d += k;
      } else {
        const int64_t n = s.shape[d];
        for (int64_t i = 0; i < s.adv.numel(); ++i) {
          int64_t v = s.adv.item_int(i);
          if (v < 0) v += n;
          if (v < 0 || v >= n)
            fail("index " + std::to_string(s.adv.item_int(i)) + " is out of bounds for size " + std::to_string(n));
          positions.push_back(v * s.strides[d]);
        }
        shape.insert(shape.end(), s.adv.shape.begin(), s.adv.shape.end());
        d += 1;
      }
      dims.push_back({int64_t(positions.size()), 0, true});
      continue;
    }
    shape.push_back(s.shape[d]);
    dims.push_back({s.shape[d], s.strides[d], false});
    ++d;
  }
  int64_t total = 1;
  for (const auto& dm : dims) total *= dm.len;
  std::vector<int64_t> offs(static_cast<size_t>(total));
  std::vector<int64_t> ctr(dims.size(), 0);
  for (int64_t i = 0; i < total; ++i) {
    int64_t o = s.offset;
    for (size_t j = 0; j < dims.size(); ++j)
      o += dims[j].positional ? positions[size_t(ctr[j])] : ctr[j] * dims[j].stride;
    offs[size_t(i)] = o;
    for (size_t j = dims.size(); j-- > 0;) {
      if (++ctr[j] < dims[j].len) break;
      ctr[j] = 0;
    }
  }
  return offs;
}

// x[index] = value, in place (operator.setitem).
void setitem_tensor(const Tensor& x, const Val& index, const Val& value) {
  if (!x.writable()) fail("setitem on a read-only tensor (a weight or constant of the artifact)");
  Selection sel = resolve_index(x, index);
  Shape shape;
  std::vector<int64_t> offs = selection_offsets(sel, shape);
  Tensor v;
  if (value.is_tensor()) v = expand(value.t.to(x.dtype), shape);
  else if (value.is_number()) v = expand(Tensor::scalar(x.dtype, value.as_double()), shape);
  else fail("setitem value must be a tensor or a number, got " + value.kind_name());
  const size_t es = psize(x.ptype());
  char* base = static_cast<char*>(const_cast<void*>(x.raw()));
  const char* src = static_cast<const char*>(v.raw());
  for (size_t i = 0; i < offs.size(); ++i) std::memcpy(base + size_t(offs[i]) * es, src + i * es, es);
}

Val getitem_tensor(const Tensor& x, const Val& index) {
  Selection sel = resolve_index(x, index);
  const int adv_pos = sel.adv_pos;
  const Tensor& adv = sel.adv;
  Tensor r = strided_copy(x, sel.shape, sel.strides, sel.offset);
  if (adv_pos >= 0) {
    if (adv.dtype == DType::BOOL) {
      int64_t k = adv.dim();
      Shape s2;
      for (int j = 0; j < adv_pos; ++j) s2.push_back(r.shape[size_t(j)]);
      s2.push_back(adv.numel());
      for (size_t j = size_t(adv_pos + k); j < r.shape.size(); ++j) s2.push_back(r.shape[j]);
      r = r.reshaped(s2);
      return TV(index_select_impl(r, adv_pos, nonzero_1d(adv.reshaped({adv.numel()}))));
    }
    return TV(index_select_impl(r, adv_pos, adv));
  }
  return TV(r);
}

Val getitem(const Val& obj, const Val& index) {
  if (obj.is_tensor()) return getitem_tensor(obj.t, index);
  if (obj.is_seq()) {
    const auto& s = obj.seq();
    int64_t n = int64_t(s.size());
    if (index.k == Val::K::Slice) {
      int64_t a, b, st;
      const auto& it = *index.items;
      st = it[2].is_none() ? 1 : it[2].as_int();
      if (st == 0) fail("slice step cannot be zero");
      std::vector<Val> r;
      if (st > 0) {
        a = it[0].is_none() ? 0 : it[0].as_int();
        b = it[1].is_none() ? n : it[1].as_int();
        if (a < 0) a += n;
        if (b < 0) b += n;
        a = std::clamp<int64_t>(a, 0, n);
        b = std::clamp<int64_t>(b, 0, n);
        for (int64_t i = a; i < b; i += st) r.push_back(s[size_t(i)]);
      } else {
        a = it[0].is_none() ? n - 1 : it[0].as_int();
        b = it[1].is_none() ? -n - 1 : it[1].as_int();
        if (a < 0) a += n;
        if (b < 0) b += n;
        a = std::clamp<int64_t>(a, -1, n - 1);
        b = std::clamp<int64_t>(b, -1, n - 1);
        for (int64_t i = a; i > b; i += st) r.push_back(s[size_t(i)]);
      }
      return obj.k == Val::K::List ? Val::list(std::move(r)) : Val::tuple(std::move(r));
    }
    int64_t i = index.as_int();
    if (i < 0) i += n;
    if (i < 0 || i >= n) fail("index " + std::to_string(index.as_int()) + " out of range for a sequence of length " + std::to_string(n));
    return s[size_t(i)];
  }
  if (obj.k == Val::K::Dict) {
    for (const auto& kv : *obj.dict) {
      if (kv.first.k == index.k && ((index.k == Val::K::Str && kv.first.s == index.s) ||
                                    (index.k == Val::K::Int && kv.first.i == index.i)))
        return kv.second;
    }
    fail("key " + index.repr() + " not in dict");
  }
  fail("cannot index " + obj.kind_name());
}

// Shape arguments given as varargs (x.view(2, 3)) or as one sequence (x.view((2, 3))).
std::vector<int64_t> shape_args(const Call& c, size_t first) {
  std::vector<int64_t> s;
  if (c.args.size() == first + 1 && (c.args[first].is_seq() || c.args[first].is_tensor())) return c.args[first].as_ints();
  for (size_t i = first; i < c.args.size(); ++i) s.push_back(c.args[i].as_int());
  return s;
}
std::vector<int64_t> shape_kw(const Call& c, size_t first, const char* kw) {
  if (c.args.size() > first) return shape_args(c, first);
  const Val* v = c.kwarg(kw);
  if (!v) fail(std::string("missing argument '") + kw + "'");
  return v->as_ints();
}

Shape infer_shape(const std::vector<int64_t>& want, int64_t numel) {
  Shape s(want.begin(), want.end());
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (neg >= 0) fail("only one dimension can be inferred");
      neg = int64_t(i);
    } else {
      if (s[i] < 0) fail("invalid shape dimension " + std::to_string(s[i]));
      known *= s[i];
    }
  }
  if (neg >= 0) {
    if (known == 0 || numel % known) fail("shape " + shape_str(s) + " is invalid for input of size " + std::to_string(numel));
    s[size_t(neg)] = numel / known;
  }
  if (shape_numel(s) != numel) fail("shape " + shape_str(s) + " is invalid for input of size " + std::to_string(numel));
  return s;
}

Tensor flatten(const Tensor& x, int64_t start, int64_t end) {
  if (x.dim() == 0) return x.reshaped({1});
  start = norm_dim(start, x.dim());
  end = norm_dim(end, x.dim());
  if (start > end) fail("flatten: start_dim after end_dim");
  Shape s;
  for (int64_t i = 0; i < start; ++i) s.push_back(x.shape[size_t(i)]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= x.shape[size_t(i)];
  s.push_back(m);
  for (int64_t i = end + 1; i < x.dim(); ++i) s.push_back(x.shape[size_t(i)]);
  return x.reshaped(s);
}

Tensor unflatten(const Tensor& x, int64_t dim, const std::vector<int64_t>& sizes) {
  dim = norm_dim(dim, x.dim());
  Shape s;
  for (int64_t i = 0; i < dim; ++i) s.push_back(x.shape[size_t(i)]);
  Shape part = infer_shape(sizes, x.shape[size_t(dim)]);
  s.insert(s.end(), part.begin(), part.end());
  for (int64_t i = dim + 1; i < x.dim(); ++i) s.push_back(x.shape[size_t(i)]);
  return x.reshaped(s);
}

Tensor squeeze(const Tensor& x, const Val* dim) {
  std::vector<bool> drop(size_t(x.dim()), false);
  if (!dim || dim->is_none()) {
    for (int64_t d = 0; d < x.dim(); ++d) drop[size_t(d)] = x.shape[size_t(d)] == 1;
  } else {
    for (int64_t d : dim->as_ints()) {
      if (x.dim() == 0) continue;
      int64_t n = norm_dim(d, x.dim());
      drop[size_t(n)] = x.shape[size_t(n)] == 1;
    }
  }
  Shape s;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!drop[size_t(d)]) s.push_back(x.shape[size_t(d)]);
  return x.reshaped(s);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  int64_t d = norm_dim(dim, x.dim() + 1);
  Shape s = x.shape;
  s.insert(s.begin() + d, 1);
  return x.reshaped(s);
}

std::vector<Tensor> split_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = norm_dim(dim, x.dim());
  std::vector<Tensor> r;
  int64_t pos = 0;
  for (int64_t s : sizes) {
    r.push_back(narrow(x, dim, pos, s));
    pos += s;
  }
  if (pos != x.shape[size_t(dim)]) fail("split sizes do not add up to the dimension's size");
  return r;
}

std::vector<Tensor> split_size(const Tensor& x, int64_t size, int64_t dim) {
  dim = norm_dim(dim, x.dim());
  int64_t n = x.shape[size_t(dim)];
  if (size <= 0) fail("split size must be positive");
  std::vector<int64_t> sizes;
  for (int64_t p = 0; p < n; p += size) sizes.push_back(std::min(size, n - p));
  if (sizes.empty()) sizes.push_back(0);
  return split_sizes(x, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  dim = norm_dim(dim, x.dim());
  int64_t n = x.shape[size_t(dim)];
  if (chunks <= 0) fail("chunk expects a positive number of chunks");
  int64_t size = (n + chunks - 1) / chunks;
  if (size == 0) size = 1;
  return split_size(x, size, dim);
}

std::vector<Tensor> tensor_list(const Val& v) {
  std::vector<Tensor> r;
  for (const auto& x : v.seq()) r.push_back(x.as_tensor());
  return r;
}

DType infer_dtype(const Val& v) {
  if (v.k == Val::K::Bool) return DType::BOOL;
  if (v.k == Val::K::Int) return DType::I64;
  if (v.is_seq()) {
    DType d = DType::BOOL;
    bool any = false;
    for (const auto& x : v.seq()) {
      DType e = infer_dtype(x);
      d = any ? promote_types(d, e) : e;
      any = true;
    }
    return any ? d : DType::F32;
  }
  if (v.is_tensor()) return v.t.dtype;
  return DType::F32;
}

void flatten_values(const Val& v, std::vector<double>& out, Shape& shape, size_t depth) {
  if (v.is_seq()) {
    if (shape.size() <= depth) shape.push_back(int64_t(v.seq().size()));
    else if (shape[depth] != int64_t(v.seq().size())) fail("torch.tensor: ragged nested sequence");
    for (const auto& x : v.seq()) flatten_values(x, out, shape, depth + 1);
  } else {
    out.push_back(v.as_double());
  }
}

DType dtype_arg(const Args& a, size_t i, DType dflt) {
  if (!a.has(i)) return dflt;
  if (a[i].k != Val::K::DType) fail("expected a dtype, got " + a[i].kind_name());
  return a[i].dt;
}

Tensor full(const Shape& s, DType dt, const Val& value) {
  Tensor t = Tensor::empty(dt, s);
  int64_t n = t.numel();
  dispatch(t.ptype(), [&](auto tag) {
    using E = decltype(tag);
    E v;
    if constexpr (std::is_same_v<E, int64_t>) v = value.k == Val::K::Float ? int64_t(value.f) : value.as_int();
    else if constexpr (std::is_same_v<E, uint8_t>) v = value.as_double() != 0;
    else v = E(value.as_double());
    E* p = t.data<E>();
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
  round_to_dtype(t);
  return t;
}

// to(...) / type(...): the target dtype among the arguments (nullptr: no dtype change).
bool cast_target(const Call& c, size_t first, DType& out) {
  bool found = false;
  for (size_t i = first; i < c.args.size(); ++i) {
    const Val& v = c.args[i];
    if (v.k == Val::K::DType) { out = v.dt; found = true; }
    else if (v.is_tensor()) { out = v.t.dtype; found = true; }
    else if (v.k == Val::K::Device || v.k == Val::K::Str || v.is_none() || v.k == Val::K::Bool) continue;
    else fail("unsupported argument to to(): " + v.kind_name());
  }
  for (const auto& kv : c.kwargs) {
    if (kv.first == "dtype" && !kv.second.is_none()) { out = kv.second.dt; found = true; }
    else if (kv.first == "dtype" || kv.first == "device" || kv.first == "non_blocking" || kv.first == "copy" ||
             kv.first == "memory_format") continue;
    else fail("unsupported keyword argument '" + kv.first + "'");
  }
  return found;
}

Tensor tri(const Tensor& x, int64_t k, bool lower) {
  if (x.dim() < 2) fail("tril/triu expect a tensor of rank >= 2");
  Tensor o = x.clone();
  int64_t R = x.shape[size_t(x.dim() - 2)], C = x.shape[size_t(x.dim() - 1)];
  int64_t batches = x.numel() / std::max<int64_t>(R * C, 1);
  size_t es = psize(x.ptype());
  char* p = static_cast<char*>(o.raw());
  for (int64_t b = 0; b < batches; ++b)
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) {
        bool keep = lower ? (j - i <= k) : (j - i >= k);
        if (!keep) std::memset(p + size_t((b * R + i) * C + j) * es, 0, es);
      }
  return o;
}

Tensor pixel_shuffle(const Tensor& x, int64_t r) {
  int64_t nd = x.dim();
  if (nd < 3) fail("pixel_shuffle expects rank >= 3");
  int64_t C = x.shape[size_t(nd - 3)], H = x.shape[size_t(nd - 2)], W = x.shape[size_t(nd - 1)];
  if (C % (r * r)) fail("pixel_shuffle: channels not divisible by upscale_factor^2");
  Shape lead(x.shape.begin(), x.shape.end() - 3);
  int64_t oc = C / (r * r);
  Shape s6 = lead;
  for (int64_t v : {oc, r, r, H, W}) s6.push_back(v);
  Tensor y = x.reshaped(s6);
  std::vector<int64_t> perm;
  int64_t L = int64_t(lead.size());
  for (int64_t i = 0; i < L; ++i) perm.push_back(i);
  for (int64_t v : {L + 0, L + 3, L + 1, L + 4, L + 2}) perm.push_back(v);
  Tensor z = permute(y, perm);
  Shape o = lead;
  for (int64_t v : {oc, H * r, W * r}) o.push_back(v);
  return z.reshaped(o);
}

Tensor pixel_unshuffle(const Tensor& x, int64_t r) {
  int64_t nd = x.dim();
  if (nd < 3) fail("pixel_unshuffle expects rank >= 3");
  int64_t C = x.shape[size_t(nd - 3)], H = x.shape[size_t(nd - 2)], W = x.shape[size_t(nd - 1)];
  if (H % r || W % r) fail("pixel_unshuffle: spatial size not divisible by downscale_factor");
  Shape lead(x.shape.begin(), x.shape.end() - 3);
  Shape s6 = lead;
  for (int64_t v : {C, H / r, r, W / r, r}) s6.push_back(v);
  Tensor y = x.reshaped(s6);
  std::vector<int64_t> perm;
  int64_t L = int64_t(lead.size());
  for (int64_t i = 0; i < L; ++i) perm.push_back(i);
  for (int64_t v : {L + 0, L + 2, L + 4, L + 1, L + 3}) perm.push_back(v);
  Tensor z = permute(y, perm);
  Shape o = lead;
  for (int64_t v : {C * r * r, H / r, W / r}) o.push_back(v);
  return z.reshaped(o);
}

Tensor channel_shuffle(const Tensor& x, int64_t g) {
  if (x.dim() < 3) fail("channel_shuffle expects rank >= 3");
  int64_t C = x.shape[1];
  if (C % g) fail("channel_shuffle: channels not divisible by groups");
  Shape s = {x.shape[0], g, C / g};
  int64_t rest = 1;
  for (int64_t i = 2; i < x.dim(); ++i) rest *= x.shape[size_t(i)];
  s.push_back(rest);
  return permute(x.reshaped(s), {0, 2, 1, 3}).reshaped(x.shape);
}

Tensor repeat(const Tensor& x, const std::vector<int64_t>& reps) {
  if (reps.size() < size_t(x.dim())) fail("repeat: fewer repeats than dimensions");
  Shape xs(reps.size() - size_t(x.dim()), 1);
  xs.insert(xs.end(), x.shape.begin(), x.shape.end());
  // expand to [r0, s0, r1, s1, ...] then reshape to [r0*s0, ...]
  Shape es, xs2;
  std::vector<int64_t> st;
  Shape cs = contiguous_strides(xs);
  Shape os;
  for (size_t i = 0; i < reps.size(); ++i) {
    es.push_back(reps[i]);
    st.push_back(0);
    es.push_back(xs[i]);
    st.push_back(xs[i] == 1 ? 0 : cs[i]);
    os.push_back(reps[i] * xs[i]);
  }
  Tensor xr = x.reshaped(xs);
  return strided_copy(xr, es, st, 0).reshaped(os);
}

Tensor flip(const Tensor& x, const std::vector<int64_t>& dims) {
  Shape cs = contiguous_strides(x.shape);
  std::vector<int64_t> st(cs.begin(), cs.end());
  int64_t off = 0;
  for (int64_t d0 : dims) {
    int64_t d = norm_dim(d0, x.dim());
    off += (x.shape[size_t(d)] - 1) * st[size_t(d)];
    st[size_t(d)] = -st[size_t(d)];
  }
  if (x.numel() == 0) return x;
  return strided_copy(x, x.shape, st, off);
}

Tensor roll(const Tensor& x, const std::vector<int64_t>& shifts, const std::vector<int64_t>& dims) {
  if (dims.empty()) {
    if (shifts.size() != 1) fail("roll without dims takes one shift");
    return roll(x.reshaped({x.numel()}), shifts, {0}).reshaped(x.shape);
  }
  if (shifts.size() != dims.size()) fail("roll: shifts and dims differ in length");
  Tensor r = x;
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = norm_dim(dims[i], r.dim());
    int64_t n = r.shape[size_t(d)];
    if (n == 0) continue;
    int64_t s = ((shifts[i] % n) + n) % n;
    if (s == 0) continue;
    r = cat({narrow(r, d, n - s, s), narrow(r, d, 0, n - s)}, d);
  }
  return r;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx) {
  dim = norm_dim(dim, x.dim());
  if (idx.dim() != x.dim()) fail("gather: index rank differs from input rank");
  Tensor out = Tensor::empty(x.dtype, idx.shape);
  Shape xs = contiguous_strides(x.shape), is = contiguous_strides(idx.shape);
  size_t es = psize(x.ptype());
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t i = 0; i < idx.numel(); ++i) {
    int64_t rem = i, off = 0;
    for (int64_t d = 0; d < idx.dim(); ++d) {
      int64_t c = rem / is[size_t(d)];
      rem %= is[size_t(d)];
      if (d == dim) {
        c = idx.item_int(i);
        if (c < 0) c += x.shape[size_t(d)];
        if (c < 0 || c >= x.shape[size_t(d)]) fail("gather index out of range");
      }
      off += c * xs[size_t(d)];
    }
    std::memcpy(dst + size_t(i) * es, src + size_t(off) * es, es);
  }
  return out;
}

}  // namespace

// ================================================================================================ shared kernels

Tensor permute(const Tensor& x, const std::vector<int64_t>& perm) {
  if (int64_t(perm.size()) != x.dim()) fail("permute: " + std::to_string(perm.size()) + " dims for a tensor of rank " + std::to_string(x.dim()));
  Shape cs = contiguous_strides(x.shape);
  Shape s;
  std::vector<int64_t> st;
  std::vector<bool> seen(perm.size(), false);
  for (int64_t p0 : perm) {
    int64_t p = norm_dim(p0, x.dim());
    if (seen[size_t(p)]) fail("permute: repeated dim");
    seen[size_t(p)] = true;
    s.push_back(x.shape[size_t(p)]);
    st.push_back(cs[size_t(p)]);
  }
  return strided_copy(x, s, st, 0);
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  if (x.dim() < 2 && x.dim() == 0) return x;
  d0 = norm_dim(d0, x.dim());
  d1 = norm_dim(d1, x.dim());
  std::vector<int64_t> perm(size_t(x.dim()));
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[size_t(d0)], perm[size_t(d1)]);
  return permute(x, perm);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  dim = norm_dim(dim, x.dim());
  int64_t n = x.shape[size_t(dim)];
  if (start < 0) start += n;
  if (start < 0 || length < 0 || start + length > n) fail("narrow: range out of bounds");
  Shape cs = contiguous_strides(x.shape);
  Shape s = x.shape;
  s[size_t(dim)] = length;
  return strided_copy(x, s, cs, start * cs[size_t(dim)]);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t stop, int64_t step) {
  dim = norm_dim(dim, x.dim());
  int64_t n = x.shape[size_t(dim)];
  Val sv = Val::slice(Val::integer(start), Val::integer(stop), Val::integer(step));
  int64_t a, b, s;
  norm_slice(n, sv, a, b, s);
  Shape cs = contiguous_strides(x.shape);
  Shape sh = x.shape;
  sh[size_t(dim)] = count_slices(a, b, s);
  std::vector<int64_t> st(cs.begin(), cs.end());
  st[size_t(dim)] *= s;
  return strided_copy(x, sh, st, a * cs[size_t(dim)]);
}

Tensor cat(const std::vector<Tensor>& xs0, int64_t dim) {
  if (xs0.empty()) fail("cat of no tensors");
  // legacy: 1-D empty tensors are skipped
  std::vector<Tensor> xs;
  DType dt = DType::BOOL;
  bool first = true;
  for (const auto& t : xs0) {
    dt = first ? t.dtype : promote_types(dt, t.dtype);
    first = false;
    if (t.dim() == 1 && t.numel() == 0) continue;
    xs.push_back(t);
  }
  if (xs.empty()) return Tensor::empty(dt, {0});
  const Tensor& ref = xs[0];
  int64_t d = norm_dim(dim, ref.dim());
  Shape os = ref.shape;
  os[size_t(d)] = 0;
  for (auto& t : xs) {
    if (t.dim() != ref.dim()) fail("cat: tensors of different rank");
    for (int64_t i = 0; i < t.dim(); ++i)
      if (i != d && t.shape[size_t(i)] != ref.shape[size_t(i)])
        fail("cat: sizes differ outside the cat dimension: " + shape_str(t.shape) + " vs " + shape_str(ref.shape));
    os[size_t(d)] += t.shape[size_t(d)];
    t = t.to(dt);
  }
  Tensor out = Tensor::empty(dt, os);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= os[size_t(i)];
  for (int64_t i = d + 1; i < int64_t(os.size()); ++i) inner *= os[size_t(i)];
  size_t es = psize(out.ptype());
  char* dst = static_cast<char*>(out.raw());
  int64_t orow = os[size_t(d)] * inner;
  int64_t pos = 0;
  for (const auto& t : xs) {
    int64_t trow = t.shape[size_t(d)] * inner;
    const char* src = static_cast<const char*>(t.raw());
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(trow, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o)
        std::memcpy(dst + size_t(o * orow + pos) * es, src + size_t(o * trow) * es, size_t(trow) * es);
    });
    pos += trow;
  }
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape0) {
  if (shape0.size() < size_t(x.dim())) fail("expand: the number of sizes is smaller than the rank");
  size_t off = shape0.size() - size_t(x.dim());
  Shape cs = contiguous_strides(x.shape);
  Shape s(shape0.size());
  std::vector<int64_t> st(shape0.size(), 0);
  for (size_t i = 0; i < shape0.size(); ++i) {
    if (i < off) {
      if (shape0[i] < 0) fail("expand: -1 is not allowed for a new leading dimension");
      s[i] = shape0[i];
      continue;
    }
    int64_t xd = x.shape[i - off];
    int64_t want = shape0[i] == -1 ? xd : shape0[i];
    if (xd != want && xd != 1) fail("expand: cannot expand " + shape_str(x.shape) + " to " + shape_str(shape0));
    s[i] = want;
    st[i] = xd == 1 ? 0 : cs[i - off];
  }
  if (s == x.shape) return x;
  return strided_copy(x, s, st, 0);
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, const std::string& mode, double value) {
  if (pads.size() % 2) fail("pad: padding length must be even");
  int64_t np = int64_t(pads.size()) / 2;
  if (np > x.dim()) fail("pad: padding longer than the rank");
  Shape os = x.shape;
  std::vector<std::vector<int64_t>> maps(size_t(x.dim()));
  for (int64_t i = 0; i < np; ++i) {
    int64_t d = x.dim() - 1 - i;
    int64_t lo = pads[size_t(2 * i)], hi = pads[size_t(2 * i + 1)];
    int64_t n = x.shape[size_t(d)];
    int64_t on = n + lo + hi;
    if (on < 0) fail("pad: negative output size");
    os[size_t(d)] = on;
    std::vector<int64_t>& m = maps[size_t(d)];
    m.resize(size_t(on));
    for (int64_t j = 0; j < on; ++j) {
      int64_t s = j - lo;
      if (s >= 0 && s < n) { m[size_t(j)] = s; continue; }
      if (mode == "constant") { m[size_t(j)] = -1; continue; }
      if (n == 0) fail("pad: cannot pad an empty dimension in mode " + mode);
      if (mode == "reflect") {
        if (lo >= n || hi >= n) fail("pad: reflect padding must be smaller than the dimension");
        int64_t p = 2 * (n - 1);
        if (p == 0) { m[size_t(j)] = 0; continue; }
        s = ((s % p) + p) % p;
        m[size_t(j)] = s < n ? s : p - s;
      } else if (mode == "replicate") {
        m[size_t(j)] = std::clamp<int64_t>(s, 0, n - 1);
      } else if (mode == "circular") {
        if (lo > n || hi > n) fail("pad: circular padding larger than the dimension");
        m[size_t(j)] = ((s % n) + n) % n;
      } else {
        fail("pad: unknown mode '" + mode + "'");
      }
    }
  }
  Tensor out = Tensor::empty(x.dtype, os);
  if (out.numel() == 0) return out;
  Shape xs = contiguous_strides(x.shape);
  const int64_t nd = x.dim();
  const int64_t inner = nd ? os[size_t(nd - 1)] : 1;
  const int64_t rows = out.numel() / inner;
  dispatch(x.ptype(), [&](auto tag) {
    using E = decltype(tag);
    const E* src = x.data<E>();
    E* dst = out.data<E>();
    const E fill = E(value);
    parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        int64_t rem = r, off = 0;
        bool outside = false;
        for (int64_t d = nd - 2; d >= 0; --d) {
          int64_t idx = rem % os[size_t(d)];
          rem /= os[size_t(d)];
          if (!maps[size_t(d)].empty()) {
            idx = maps[size_t(d)][size_t(idx)];
            if (idx < 0) { outside = true; break; }
          }
          off += idx * xs[size_t(d)];
        }
        E* o = dst + r * inner;
        if (outside) {
          for (int64_t j = 0; j < inner; ++j) o[j] = fill;
          continue;
        }
        const E* s = src + off;
        const auto& lm = maps[size_t(nd - 1)];
        if (lm.empty()) {
          std::memcpy(o, s, size_t(inner) * sizeof(E));
        } else {
          for (int64_t j = 0; j < inner; ++j) {
            int64_t k = lm[size_t(j)];
            o[j] = k < 0 ? fill : s[k];
          }
        }
      }
    });
  });
  round_to_dtype(out);
  return out;
}

// ================================================================================================ registration

void register_shape(Registry& r) {
  using K = OpKind;
  // ---- indexing and attributes
  r.add(K::Function, "operator.getitem", [](Call& c) -> Val {
    if (c.args.size() != 2) fail("getitem takes two arguments");
    return getitem(c.args[0], c.args[1]);
  });
  r.add(K::Method, "__getitem__", *r.find(K::Function, "operator.getitem"));
  r.add(K::Function, "operator.setitem", [](Call& c) -> Val {
    if (c.args.size() != 3) fail("setitem takes three arguments");
    const Val& obj = c.args[0];
    if (!obj.is_tensor()) fail("setitem on " + obj.kind_name() + " is not supported");
    setitem_tensor(obj.t, c.args[1], c.args[2]);
    return Val::none();
  });
  r.add(K::Function, "builtins.getattr", [](Call& c) -> Val {
    if (c.args.size() < 2 || c.args[1].k != Val::K::Str) fail("getattr takes an object and an attribute name");
    const Val& o = c.args[0];
    const std::string& a = c.args[1].s;
    if (o.is_tensor()) {
      const Tensor& t = o.t;
      if (a == "shape") return Val::ints(t.shape);
      if (a == "dtype") return Val::dtype(t.dtype);
      if (a == "device") return Val::device("cpu");
      if (a == "ndim") return Val::integer(t.dim());
      if (a == "is_cuda" || a == "requires_grad" || a == "is_sparse" || a == "is_quantized") return Val::boolean(false);
      if (a == "data" || a == "real") return o;
      if (a == "T") {
        std::vector<int64_t> p;
        for (int64_t d = t.dim() - 1; d >= 0; --d) p.push_back(d);
        return TV(permute(t, p));
      }
      if (a == "mT") return TV(transpose(t, -2, -1));
      if (a == "is_floating_point") return Val::boolean(is_floating(t.dtype));
    }
    if (o.k == Val::K::Tuple && o.items->size() == 2) {  // (values, indices) results of max/min/sort/topk
      if (a == "values") return (*o.items)[0];
      if (a == "indices") return (*o.items)[1];
    }
    if (o.k == Val::K::DType && a == "is_floating_point") return Val::boolean(is_floating(o.dt));
    if (c.args.size() == 3) return c.args[2];  // getattr(o, name, default)
    fail("unsupported attribute '" + a + "' of " + o.kind_name());
  });
  r.add(K::Method, "size", [](Call& c) -> Val {
    Args a(c, {"input", "dim"});
    const Tensor& t = a.tensor(0);
    if (a.has(1)) return Val::integer(t.shape[size_t(norm_dim(a.integer(1, 0), t.dim()))]);
    return Val::ints(t.shape);
  });
  r.add(K::Method, {"dim", "ndimension"}, [](Call& c) -> Val { Args a(c, {"input"}); return Val::integer(a.tensor(0).dim()); });
  r.add(K::Method, {"numel", "nelement"}, [](Call& c) -> Val { Args a(c, {"input"}); return Val::integer(a.tensor(0).numel()); });
  r.add(K::Function, "torch.numel", *r.find(K::Method, "numel"));
  r.add(K::Method, "element_size", [](Call& c) -> Val {
    Args a(c, {"input"});
    return Val::integer(int64_t(storage_itemsize(a.tensor(0).dtype)));
  });
  r.add(K::Method, "is_floating_point", [](Call& c) -> Val { Args a(c, {"input"}); return Val::boolean(is_floating(a.tensor(0).dtype)); });
  r.add(K::Function, "torch.is_floating_point", *r.find(K::Method, "is_floating_point"));
  r.add(K::Method, "is_contiguous", [](Call&) -> Val { return Val::boolean(true); });
  r.add(K::Function, "builtins.len", [](Call& c) -> Val {
    if (c.args.size() != 1) fail("len takes one argument");
    const Val& v = c.args[0];
    if (v.is_tensor()) {
      if (v.t.dim() == 0) fail("len() of a 0-d tensor");
      return Val::integer(v.t.shape[0]);
    }
    if (v.is_seq()) return Val::integer(int64_t(v.seq().size()));
    if (v.k == Val::K::Dict) return Val::integer(int64_t(v.dict->size()));
    if (v.k == Val::K::Str) return Val::integer(int64_t(v.s.size()));
    fail("len() of " + v.kind_name());
  });
  r.add(K::Method, "__len__", *r.find(K::Function, "builtins.len"));
  r.add(K::Function, "torch._assert", [](Call& c) -> Val {
    Args a(c, {"condition", "message"});
    if (!a[0].as_bool()) fail("assertion failed: " + (a.has(1) && a[1].k == Val::K::Str ? a[1].s : std::string("")));
    return Val::none();
  });
  r.add(K::Function, {"builtins.tuple", "builtins.list"}, [](Call& c) -> Val {
    if (c.args.size() != 1) fail("tuple()/list() takes one argument");
    std::vector<Val> items;
    const Val& v = c.args[0];
    if (v.is_seq()) items = v.seq();
    else if (v.is_tensor()) {
      for (int64_t i = 0; i < (v.t.dim() ? v.t.shape[0] : 0); ++i) items.push_back(getitem_tensor(v.t, Val::integer(i)));
    } else fail("cannot iterate " + v.kind_name());
    return *c.target == "builtins.list" ? Val::list(std::move(items)) : Val::tuple(std::move(items));
  });

  // ---- views
  Handler view = [](Call& c) -> Val {
    if (c.args.empty()) fail("view/reshape need a tensor");
    const Tensor& x = c.args[0].as_tensor();
    if (c.args.size() == 2 && c.args[1].k == Val::K::DType) fail("view(dtype) is not supported");
    return TV(x.reshaped(infer_shape(shape_kw(c, 1, "shape"), x.numel())));
  };
  r.add(K::Method, {"view", "reshape"}, view);
  r.add(K::Function, "torch.reshape", view);
  r.add(K::Method, {"view_as", "reshape_as"}, [](Call& c) -> Val {
    Args a(c, {"input", "other"});
    return TV(a.tensor(0).reshaped(a.tensor(1).shape));
  });
  Handler flat = [](Call& c) -> Val {
    Args a(c, {"input", "start_dim", "end_dim"});
    return TV(flatten(a.tensor(0), a.integer(1, 0), a.integer(2, -1)));
  };
  r.add(K::Function, "torch.flatten", flat);
  r.add(K::Method, "flatten", flat);
  r.add(K::Function, "torch.ravel", [](Call& c) -> Val { Args a(c, {"input"}); return TV(flatten(a.tensor(0), 0, -1)); });
  r.add(K::Method, "ravel", *r.find(K::Function, "torch.ravel"));
  r.add(K::Module, "torch.nn.Flatten", [](Call& c) -> Val {
    return TV(flatten(c.args.at(0).as_tensor(), c.attrs.integer("start_dim"), c.attrs.integer("end_dim")));
  });
  Handler unflat = [](Call& c) -> Val {
    Args a(c, {"input", "dim", "sizes"});
    return TV(unflatten(a.tensor(0), a.integer(1, 0), a.ints(2)));
  };
  r.add(K::Function, "torch.unflatten", unflat);
  r.add(K::Method, "unflatten", unflat);
  r.add(K::Module, "torch.nn.Unflatten", [](Call& c) -> Val {
    return TV(unflatten(c.args.at(0).as_tensor(), c.attrs.integer("dim"), c.attrs.ints("unflattened_size")));
  });
  Handler sq = [](Call& c) -> Val {
    Args a(c, {"input", "dim"});
    return TV(squeeze(a.tensor(0), a.given(1) ? &a[1] : nullptr));
  };
  r.add(K::Function, "torch.squeeze", sq);
  r.add(K::Method, "squeeze", sq);
  Handler usq = [](Call& c) -> Val {
    Args a(c, {"input", "dim"});
    return TV(unsqueeze(a.tensor(0), a.integer(1, 0)));
  };
  r.add(K::Function, "torch.unsqueeze", usq);
  r.add(K::Method, "unsqueeze", usq);
  Handler ident = [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    for (const auto& kv : c.kwargs)
      if (kv.first != "memory_format" && kv.first != "non_blocking") fail("unsupported keyword argument '" + kv.first + "'");
    return c.args[0];
  };
  r.add(K::Method, {"contiguous", "detach", "cpu", "requires_grad_", "detach_"}, ident);
  r.add(K::Function, "torch.detach", ident);
  Handler clone = [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    return TV(c.args[0].as_tensor().clone());
  };
  r.add(K::Method, "clone", clone);
  r.add(K::Function, "torch.clone", clone);

  // ---- permutations
  Handler perm = [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    return TV(permute(c.args[0].as_tensor(), shape_kw(c, 1, "dims")));
  };
  r.add(K::Method, "permute", perm);
  r.add(K::Function, "torch.permute", perm);
  Handler tr = [](Call& c) -> Val {
    Args a(c, {"input", "dim0", "dim1"});
    return TV(transpose(a.tensor(0), a.integer(1, 0), a.integer(2, 1)));
  };
  r.add(K::Function, {"torch.transpose", "torch.swapaxes", "torch.swapdims"}, tr);
  r.add(K::Method, {"transpose", "swapaxes", "swapdims"}, tr);
  Handler t2 = [](Call& c) -> Val {
    Args a(c, {"input"});
    const Tensor& x = a.tensor(0);
    if (x.dim() > 2) fail("t() expects a tensor of rank <= 2");
    return TV(x.dim() < 2 ? x : transpose(x, 0, 1));
  };
  r.add(K::Function, "torch.t", t2);
  r.add(K::Method, "t", t2);
  Handler movedim = [](Call& c) -> Val {
    Args a(c, {"input", "source", "destination"});
    const Tensor& x = a.tensor(0);
    std::vector<int64_t> src = a.ints(1), dst = a.ints(2);
    if (src.size() != dst.size()) fail("movedim: source and destination differ in length");
    int64_t n = x.dim();
    std::vector<int64_t> perm(size_t(n), -1);
    std::vector<bool> used(size_t(n), false);
    for (size_t i = 0; i < src.size(); ++i) {
      int64_t s = norm_dim(src[i], n), d = norm_dim(dst[i], n);
      perm[size_t(d)] = s;
      used[size_t(s)] = true;
    }
    int64_t k = 0;
    for (int64_t d = 0; d < n; ++d) {
      if (perm[size_t(d)] >= 0) continue;
      while (used[size_t(k)]) ++k;
      perm[size_t(d)] = k++;
    }
    return TV(permute(x, perm));
  };
  r.add(K::Function, {"torch.movedim", "torch.moveaxis"}, movedim);
  r.add(K::Method, {"movedim", "moveaxis"}, movedim);

  // ---- joining and splitting
  Handler catf = [](Call& c) -> Val {
    Args a(c, {"tensors", "dim"});
    return TV(cat(tensor_list(a[0]), a.integer(1, 0)));
  };
  r.add(K::Function, {"torch.cat", "torch.concat", "torch.concatenate"}, catf);
  Handler stack = [](Call& c) -> Val {
    Args a(c, {"tensors", "dim"});
    std::vector<Tensor> xs = tensor_list(a[0]);
    if (xs.empty()) fail("stack of no tensors");
    int64_t d = norm_dim(a.integer(1, 0), xs[0].dim() + 1);
    const Shape first = xs[0].shape;
    for (auto& t : xs) {
      if (t.shape != first) fail("stack expects tensors of equal shape, got " + shape_str(t.shape) + " and " + shape_str(first));
      t = unsqueeze(t, d);
    }
    return TV(cat(xs, d));
  };
  r.add(K::Function, "torch.stack", stack);
  r.add(K::Function, {"torch.hstack", "torch.vstack"}, [](Call& c) -> Val {
    Args a(c, {"tensors"});
    std::vector<Tensor> xs = tensor_list(a[0]);
    bool h = *c.target == "torch.hstack";
    for (auto& t : xs) {
      if (t.dim() == 0) t = t.reshaped({1});
      if (!h && t.dim() == 1) t = t.reshaped({1, t.shape[0]});
    }
    return TV(cat(xs, h && xs[0].dim() == 1 ? 0 : (h ? 1 : 0)));
  });
  Handler split = [](Call& c) -> Val {
    Args a(c, {"tensor", "split_size_or_sections", "dim"});
    const Tensor& x = a.tensor(0);
    int64_t d = a.integer(2, 0);
    if (a[1].is_seq()) return Val::tensors(split_sizes(x, a[1].as_ints(), d));
    return Val::tensors(split_size(x, a[1].as_int(), d));
  };
  r.add(K::Function, "torch.split", split);
  r.add(K::Method, "split", split);
  r.add(K::Method, "split_with_sizes", split);
  Handler chk = [](Call& c) -> Val {
    Args a(c, {"input", "chunks", "dim"});
    return Val::tensors(chunk(a.tensor(0), a.integer(1, 1), a.integer(2, 0)));
  };
  r.add(K::Function, "torch.chunk", chk);
  r.add(K::Method, "chunk", chk);
  Handler tsplit = [](Call& c) -> Val {
    Args a(c, {"input", "indices_or_sections", "dim"});
    const Tensor& x = a.tensor(0);
    int64_t d = norm_dim(a.integer(2, 0), x.dim());
    int64_t n = x.shape[size_t(d)];
    std::vector<int64_t> sizes;
    if (a[1].is_seq()) {
      int64_t prev = 0;
      for (int64_t i : a[1].as_ints()) {
        i = std::clamp<int64_t>(i, prev, n);
        sizes.push_back(i - prev);
        prev = i;
      }
      sizes.push_back(n - prev);
    } else {
      int64_t k = a[1].as_int();
      for (int64_t i = 0; i < k; ++i) sizes.push_back(n / k + (i < n % k ? 1 : 0));
    }
    return Val::tensors(split_sizes(x, sizes, d));
  };
  r.add(K::Function, "torch.tensor_split", tsplit);
  r.add(K::Method, "tensor_split", tsplit);
  Handler unbind = [](Call& c) -> Val {
    Args a(c, {"input", "dim"});
    const Tensor& x = a.tensor(0);
    int64_t d = norm_dim(a.integer(1, 0), x.dim());
    Shape s = x.shape;
    s.erase(s.begin() + d);
    std::vector<Tensor> parts;
    for (int64_t i = 0; i < x.shape[size_t(d)]; ++i) parts.push_back(narrow(x, d, i, 1).reshaped(s));
    return Val::tensors(parts);
  };
  r.add(K::Function, "torch.unbind", unbind);
  r.add(K::Method, "unbind", unbind);
  Handler nar = [](Call& c) -> Val {
    Args a(c, {"input", "dim", "start", "length"});
    return TV(narrow(a.tensor(0), a.integer(1, 0), a.integer(2, 0), a.integer(3, 0)));
  };
  r.add(K::Function, "torch.narrow", nar);
  r.add(K::Method, "narrow", nar);
  Handler sel = [](Call& c) -> Val {
    Args a(c, {"input", "dim", "index"});
    const Tensor& x = a.tensor(0);
    int64_t d = norm_dim(a.integer(1, 0), x.dim());
    int64_t i = a.integer(2, 0);
    if (i < 0) i += x.shape[size_t(d)];
    Tensor n = narrow(x, d, i, 1);
    Shape s = x.shape;
    s.erase(s.begin() + d);
    return TV(n.reshaped(s));
  };
  r.add(K::Function, "torch.select", sel);
  r.add(K::Method, "select", sel);

  // ---- expansion and repetition
  Handler exp = [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    return TV(expand(c.args[0].as_tensor(), shape_kw(c, 1, "size")));
  };
  r.add(K::Method, "expand", exp);
  r.add(K::Method, "expand_as", [](Call& c) -> Val {
    Args a(c, {"input", "other"});
    return TV(expand(a.tensor(0), a.tensor(1).shape));
  });
  r.add(K::Function, "torch.broadcast_to", [](Call& c) -> Val {
    Args a(c, {"input", "size"});
    return TV(expand(a.tensor(0), a.ints(1)));
  });
  r.add(K::Method, "broadcast_to", *r.find(K::Function, "torch.broadcast_to"));
  r.add(K::Method, "repeat", [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    return TV(repeat(c.args[0].as_tensor(), shape_kw(c, 1, "repeats")));
  });
  Handler tile = [](Call& c) -> Val {
    Args a(c, {"input", "dims"});
    const Tensor& x = a.tensor(0);
    std::vector<int64_t> reps = a.ints(1);
    while (reps.size() < size_t(x.dim())) reps.insert(reps.begin(), 1);
    return TV(repeat(x, reps));
  };
  r.add(K::Function, "torch.tile", tile);
  r.add(K::Method, "tile", tile);
  Handler rint = [](Call& c) -> Val {
    Args a(c, {"input", "repeats", "dim", "output_size"});
    Tensor x = a.tensor(0);
    if (a[1].is_tensor() && a[1].t.numel() != 1) fail("repeat_interleave with a tensor of repeats is not supported");
    int64_t rep = a[1].as_int();
    int64_t d;
    if (!a.has(2)) { x = x.reshaped({x.numel()}); d = 0; }
    else d = norm_dim(a.integer(2, 0), x.dim());
    Tensor u = unsqueeze(x, d + 1);
    Shape es = u.shape;
    es[size_t(d + 1)] = rep;
    Shape os = x.shape;
    os[size_t(d)] *= rep;
    return TV(expand(u, es).reshaped(os));
  };
  r.add(K::Function, "torch.repeat_interleave", rint);
  r.add(K::Method, "repeat_interleave", rint);
  Handler flp = [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    return TV(flip(c.args[0].as_tensor(), shape_kw(c, 1, "dims")));
  };
  r.add(K::Function, "torch.flip", flp);
  r.add(K::Method, "flip", flp);
  Handler rll = [](Call& c) -> Val {
    Args a(c, {"input", "shifts", "dims"});
    std::vector<int64_t> dims = a.has(2) ? a.ints(2) : std::vector<int64_t>{};
    return TV(roll(a.tensor(0), a.ints(1), dims));
  };
  r.add(K::Function, "torch.roll", rll);
  r.add(K::Method, "roll", rll);

  // ---- gathering
  Handler isel = [](Call& c) -> Val {
    Args a(c, {"input", "dim", "index"});
    Tensor idx = a.tensor(2);
    Tensor x = a.tensor(0);
    int64_t d = a.integer(1, 0);
    if (idx.dim() > 1) fail("index_select expects a 1-D index");
    return TV(index_select_impl(x, d, idx.reshaped({idx.numel()})));
  };
  r.add(K::Function, "torch.index_select", isel);
  r.add(K::Method, "index_select", isel);
  Handler gth = [](Call& c) -> Val {
    Args a(c, {"input", "dim", "index", "sparse_grad"});
    return TV(gather(a.tensor(0), a.integer(1, 0), a.tensor(2)));
  };
  r.add(K::Function, "torch.gather", gth);
  r.add(K::Method, "gather", gth);
  Handler tad = [](Call& c) -> Val {
    Args a(c, {"input", "indices", "dim"});
    return TV(gather(a.tensor(0), a.integer(2, 0), a.tensor(1)));
  };
  r.add(K::Function, "torch.take_along_dim", tad);
  r.add(K::Method, "take_along_dim", tad);
  Handler trl = [](Call& c) -> Val {
    Args a(c, {"input", "diagonal"});
    bool lower = c.target->find("tril") != std::string::npos;
    return TV(tri(a.tensor(0), a.integer(1, 0), lower));
  };
  r.add(K::Function, {"torch.tril", "torch.triu"}, trl);
  r.add(K::Method, {"tril", "triu"}, trl);
  r.add(K::Function, "torch.nn.functional.one_hot", [](Call& c) -> Val {
    Args a(c, {"tensor", "num_classes"});
    Tensor x = a.tensor(0);
    int64_t nc = a.integer(1, -1);
    if (nc < 0) {
      nc = 0;
      for (int64_t i = 0; i < x.numel(); ++i) nc = std::max(nc, x.item_int(i) + 1);
    }
    Shape s = x.shape;
    s.push_back(nc);
    Tensor o = Tensor::zeros(DType::I64, s);
    for (int64_t i = 0; i < x.numel(); ++i) {
      int64_t v = x.item_int(i);
      if (v < 0 || v >= nc) fail("one_hot: class values must be in [0, num_classes)");
      o.data<int64_t>()[i * nc + v] = 1;
    }
    return TV(o);
  });

  // ---- padding and shuffles
  r.add(K::Function, "torch.nn.functional.pad", [](Call& c) -> Val {
    Args a(c, {"input", "pad", "mode", "value"});
    std::string mode = a.str(2, "constant");
    return TV(pad(a.tensor(0), a.ints(1), mode, a.dbl(3, 0.0)));
  });
  struct PadMod { const char* type; const char* mode; int nd; };
  for (auto pm : {PadMod{"torch.nn.ZeroPad1d", "constant", 1}, PadMod{"torch.nn.ZeroPad2d", "constant", 2},
                  PadMod{"torch.nn.ZeroPad3d", "constant", 3}, PadMod{"torch.nn.ConstantPad1d", "constant", 1},
                  PadMod{"torch.nn.ConstantPad2d", "constant", 2}, PadMod{"torch.nn.ConstantPad3d", "constant", 3},
                  PadMod{"torch.nn.ReflectionPad1d", "reflect", 1}, PadMod{"torch.nn.ReflectionPad2d", "reflect", 2},
                  PadMod{"torch.nn.ReflectionPad3d", "reflect", 3}, PadMod{"torch.nn.ReplicationPad1d", "replicate", 1},
                  PadMod{"torch.nn.ReplicationPad2d", "replicate", 2}, PadMod{"torch.nn.ReplicationPad3d", "replicate", 3},
                  PadMod{"torch.nn.CircularPad1d", "circular", 1}, PadMod{"torch.nn.CircularPad2d", "circular", 2},
                  PadMod{"torch.nn.CircularPad3d", "circular", 3}}) {
    std::string mode = pm.mode;
    int nd = pm.nd;
    r.add(K::Module, pm.type, [mode, nd](Call& c) -> Val {
      std::vector<int64_t> p = c.attrs.ints("padding");
      if (p.size() == 1) p = std::vector<int64_t>(size_t(2 * nd), p[0]);
      double v = mode == "constant" && c.attrs.has("value") ? c.attrs.dbl("value") : 0.0;
      return TV(pad(c.args.at(0).as_tensor(), p, mode, v));
    });
  }
  r.add(K::Module, "torch.nn.PixelShuffle", [](Call& c) -> Val {
    return TV(pixel_shuffle(c.args.at(0).as_tensor(), c.attrs.integer("upscale_factor")));
  });
  r.add(K::Module, "torch.nn.PixelUnshuffle", [](Call& c) -> Val {
    return TV(pixel_unshuffle(c.args.at(0).as_tensor(), c.attrs.integer("downscale_factor")));
  });
  r.add(K::Module, "torch.nn.ChannelShuffle", [](Call& c) -> Val {
    return TV(channel_shuffle(c.args.at(0).as_tensor(), c.attrs.integer("groups")));
  });
  r.add(K::Function, {"torch.nn.functional.pixel_shuffle", "torch.pixel_shuffle"}, [](Call& c) -> Val {
    Args a(c, {"input", "upscale_factor"});
    return TV(pixel_shuffle(a.tensor(0), a.integer(1, 1)));
  });
  r.add(K::Function, {"torch.nn.functional.pixel_unshuffle", "torch.pixel_unshuffle"}, [](Call& c) -> Val {
    Args a(c, {"input", "downscale_factor"});
    return TV(pixel_unshuffle(a.tensor(0), a.integer(1, 1)));
  });
  r.add(K::Function, {"torch.nn.functional.channel_shuffle", "torch.channel_shuffle"}, [](Call& c) -> Val {
    Args a(c, {"input", "groups"});
    return TV(channel_shuffle(a.tensor(0), a.integer(1, 1)));
  });

  // ---- factories
  r.add(K::Function, "torch.arange", [](Call& c) -> Val {
    Args a(c, {"start", "end", "step", "dtype"});
    double start = 0, end, step = a.dbl(2, 1);
    bool all_int = true;
    for (size_t i = 0; i < 3; ++i)
      if (a.has(i) && (a[i].k == Val::K::Float || (a[i].is_tensor() && is_floating(a[i].t.dtype)))) all_int = false;
    if (a.has(1)) { start = a.dbl(0, 0); end = a.dbl(1, 0); }
    else end = a.dbl(0, 0);
    if (step == 0) fail("arange step must be nonzero");
    DType dt = dtype_arg(a, 3, all_int ? DType::I64 : DType::F32);
    int64_t n = int64_t(std::ceil((end - start) / step));
    if (n < 0) n = 0;
    Tensor t = Tensor::empty(dt, {n});
    dispatch(t.ptype(), [&](auto tag) {
      using E = decltype(tag);
      E* p = t.data<E>();
      if constexpr (std::is_same_v<E, int64_t>) {
        int64_t s0 = int64_t(start), st = int64_t(step);
        for (int64_t i = 0; i < n; ++i) p[i] = all_int ? s0 + i * st : int64_t(start + double(i) * step);
      } else {
        for (int64_t i = 0; i < n; ++i) p[i] = E(start + double(i) * step);
      }
    });
    round_to_dtype(t);
    return TV(t);
  });
  auto factory = [](const char* fill) {
    std::string f = fill;
    return [f](Call& c) -> Val {
      std::vector<int64_t> shape;
      size_t nshape = 0;
      if (f == "full") {
        if (c.args.empty()) fail("missing size");
        shape = c.args[0].as_ints();
        nshape = 1;
      } else {
        while (nshape < c.args.size() && c.args[nshape].is_int_like()) ++nshape;
        if (nshape == 0 && !c.args.empty()) { shape = c.args[0].as_ints(); nshape = 1; }
        else for (size_t i = 0; i < nshape; ++i) shape.push_back(c.args[i].as_int());
        if (c.args.empty()) {
          const Val* s = c.kwarg("size");
          if (!s) fail("missing size");
          shape = s->as_ints();
        }
      }
      Val value = f == "ones" ? Val::integer(1) : Val::integer(0);
      if (f == "full") {
        if (c.args.size() > 1) value = c.args[1];
        else if (const Val* v = c.kwarg("fill_value")) value = *v;
        else fail("missing fill_value");
        nshape = 2;
      }
      DType dt = f == "full" ? (value.k == Val::K::Bool ? DType::BOOL : value.k == Val::K::Int ? DType::I64 : DType::F32)
                             : DType::F32;
      for (const auto& kv : c.kwargs) {
        if (kv.first == "dtype") { if (!kv.second.is_none()) dt = kv.second.dt; }
        else if (kv.first == "size" || kv.first == "fill_value" || kv.first == "device" || kv.first == "layout" ||
                 kv.first == "requires_grad" || kv.first == "pin_memory" || kv.first == "memory_format") continue;
        else fail("unsupported keyword argument '" + kv.first + "'");
      }
      if (nshape < c.args.size()) fail("unsupported positional arguments");
      return TV(full(shape, dt, value));
    };
  };
  r.add(K::Function, "torch.zeros", factory("zeros"));
  r.add(K::Function, "torch.ones", factory("ones"));
  r.add(K::Function, "torch.empty", factory("zeros"));
  r.add(K::Function, "torch.full", factory("full"));
  auto like = [](const char* fill) {
    std::string f = fill;
    return [f](Call& c) -> Val {
      Args a = f == "full" ? Args(c, {"input", "fill_value", "dtype"}) : Args(c, {"input", "dtype"});
      const Tensor& x = a.tensor(0);
      DType dt = dtype_arg(a, f == "full" ? 2 : 1, x.dtype);
      Val v = f == "full" ? a[1] : Val::integer(f == "ones" ? 1 : 0);
      return TV(full(x.shape, dt, v));
    };
  };
  r.add(K::Function, "torch.zeros_like", like("zeros"));
  r.add(K::Function, "torch.ones_like", like("ones"));
  r.add(K::Function, "torch.empty_like", like("zeros"));
  r.add(K::Function, "torch.full_like", like("full"));
  auto new_fill = [](const char* fill) {
    std::string f = fill;
    return [f](Call& c) -> Val {
      Args a = f == "full" ? Args(c, {"input", "size", "fill_value", "dtype"}) : Args(c, {"input", "size", "dtype"});
      const Tensor& x = a.tensor(0);
      DType dt = dtype_arg(a, f == "full" ? 3 : 2, x.dtype);
      Val v = f == "full" ? a[2] : Val::integer(f == "ones" ? 1 : 0);
      return TV(full(a.ints(1), dt, v));
    };
  };
  r.add(K::Method, "new_zeros", new_fill("zeros"));
  r.add(K::Method, "new_ones", new_fill("ones"));
  r.add(K::Method, "new_empty", new_fill("zeros"));
  r.add(K::Method, "new_full", new_fill("full"));
  Handler tensor_f = [](Call& c) -> Val {
    Args a(c, {"data", "dtype"});
    const Val& d = a[0];
    if (d.is_tensor()) return TV(a.has(1) ? d.t.to(a[1].dt) : d.t.clone());
    DType dt = dtype_arg(a, 1, infer_dtype(d));
    std::vector<double> vals;
    Shape shape;
    flatten_values(d, vals, shape, 0);
    Tensor t = Tensor::empty(dt, shape);
    for (size_t i = 0; i < vals.size(); ++i) {
      dispatch(t.ptype(), [&](auto tag) {
        using E = decltype(tag);
        t.data<E>()[i] = E(vals[i]);
      });
    }
    round_to_dtype(t);
    return TV(t);
  };
  r.add(K::Function, {"torch.tensor", "torch.as_tensor"}, tensor_f);
  r.add(K::Method, "new_tensor", [tensor_f](Call& c) -> Val {
    Call c2 = c;
    c2.args.erase(c2.args.begin());
    return tensor_f(c2);
  });

  // ---- casts
  r.add(K::Method, "to", [](Call& c) -> Val {
    if (c.args.empty()) fail("missing input");
    const Tensor& x = c.args[0].as_tensor();
    DType dt;
    if (!cast_target(c, 1, dt)) return c.args[0];
    return TV(x.to(dt));
  });
  r.add(K::Method, "type", [](Call& c) -> Val {
    Args a(c, {"input", "dtype", "non_blocking"});
    if (!a.has(1)) fail("type() without a dtype (returning a type name) is not supported");
    if (a[1].k != Val::K::DType) fail("type() with a string type name is not supported");
    return TV(a.tensor(0).to(a[1].dt));
  });
  r.add(K::Method, "type_as", [](Call& c) -> Val {
    Args a(c, {"input", "other"});
    return TV(a.tensor(0).to(a.tensor(1).dtype));
  });
  struct CastM { const char* name; DType dt; };
  for (auto cm : {CastM{"float", DType::F32}, CastM{"double", DType::F64}, CastM{"half", DType::F16},
                  CastM{"bfloat16", DType::BF16}, CastM{"int", DType::I32}, CastM{"long", DType::I64},
                  CastM{"short", DType::I16}, CastM{"char", DType::I8}, CastM{"byte", DType::U8},
                  CastM{"bool", DType::BOOL}}) {
    DType dt = cm.dt;
    r.add(K::Method, cm.name, [dt](Call& c) -> Val {
      Args a(c, {"input", "memory_format"});
      return TV(a.tensor(0).to(dt));
    });
  }
}

}  // namespace fxlower::rt
