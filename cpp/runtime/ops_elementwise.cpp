// fxlower reference runtime: elementwise operations, activations, softmax, reductions, comparisons and casts.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels.hpp"
#include "ops.hpp"

namespace fxlower::rt {

// ================================================================================================ helpers

Tensor as_dtype(const Tensor& t, DType dt) {
  if (t.dtype == dt) return t;
  if (ptype(t.dtype) == ptype(dt) && !is_half(dt) && !(is_integral(dt) && dt != DType::I64)) {
    Tensor r = t;  // same storage type and no narrowing: relabel
    r.dtype = dt;
    return r;
  }
  return t.to(dt);
}

Tensor as_float(const Tensor& t) { return is_floating(t.dtype) ? t : t.to(DType::F32); }

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast together");
    r[i] = da == 1 ? db : da;
  }
  return r;
}

Bcast::Bcast(const Shape& out, std::initializer_list<const Shape*> inputs) : nin_(int(inputs.size())) {
  const size_t nd = out.size();
  std::vector<std::array<int64_t, 3>> st(nd);
  int k = 0;
  for (const Shape* s : inputs) {
    if (s->size() > nd) fail("internal: broadcast input of higher rank than the output");
    Shape cs = contiguous_strides(*s);
    for (size_t d = 0; d < nd; ++d) {
      size_t off = nd - s->size();
      int64_t v = 0;
      if (d >= off) {
        int64_t sz = (*s)[d - off];
        if (sz != out[d] && sz != 1) fail("internal: bad broadcast of " + shape_str(*s) + " to " + shape_str(out));
        v = sz == 1 ? 0 : cs[d - off];
      }
      st[d][size_t(k)] = v;
    }
    ++k;
  }
  numel_ = shape_numel(out);
  for (size_t d = 0; d < nd; ++d) {
    if (out[d] == 1) continue;
    if (!dims_.empty()) {
      bool merge = true;
      for (int j = 0; j < nin_; ++j)
        if (st_.back()[size_t(j)] != st[d][size_t(j)] * out[d]) merge = false;
      if (merge) {
        dims_.back() *= out[d];
        st_.back() = st[d];
        continue;
      }
    }
    dims_.push_back(out[d]);
    st_.push_back(st[d]);
  }
  if (dims_.empty()) {
    dims_.push_back(1);
    st_.push_back({0, 0, 0});
  }
}

namespace {

DType default_float() { return DType::F32; }

int int_rank(DType d) {
  switch (d) {
    case DType::U8: return 1;
    case DType::I8: return 1;
    case DType::I16: return 2;
    case DType::I32: return 3;
    default: return 4;
  }
}

}  // namespace

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if (a == DType::BOOL) return b;
  if (b == DType::BOOL) return a;
  bool fa = is_floating(a), fb = is_floating(b);
  if (fa && fb) {
    if (a == DType::F64 || b == DType::F64) return DType::F64;
    return DType::F32;  // F32 with a half type, or F16 with BF16
  }
  if (fa) return a;
  if (fb) return b;
  // both integral
  if ((a == DType::U8 && b == DType::I8) || (a == DType::I8 && b == DType::U8)) return DType::I16;
  if (a == DType::U8) return int_rank(b) > 1 ? b : DType::I16;
  if (b == DType::U8) return int_rank(a) > 1 ? a : DType::I16;
  return int_rank(a) >= int_rank(b) ? a : b;
}

DType result_type(std::initializer_list<const Val*> operands) {
  // Three tiers, as torch's ResultTypeState: tensors with dims, 0-dim tensors, Python numbers.
  bool have[3] = {false, false, false};
  DType res[3] = {DType::BOOL, DType::BOOL, DType::BOOL};
  for (const Val* v : operands) {
    if (!v) continue;
    int tier;
    DType d;
    if (v->is_tensor()) {
      tier = v->t.dim() > 0 ? 0 : 1;
      d = v->t.dtype;
    } else if (v->k == Val::K::Bool) {
      tier = 2; d = DType::BOOL;
    } else if (v->k == Val::K::Int) {
      tier = 2; d = DType::I64;
    } else if (v->k == Val::K::Float) {
      tier = 2; d = default_float();
    } else {
      continue;
    }
    res[tier] = have[tier] ? promote_types(res[tier], d) : d;
    have[tier] = true;
  }
  auto combine = [](bool hh, DType higher, bool hl, DType lower, bool& out_has) -> DType {
    out_has = hh || hl;
    if (!hh) return lower;
    if (!hl) return higher;
    if (is_floating(higher)) return higher;
    if (higher == DType::BOOL || is_floating(lower)) return promote_types(higher, lower);
    return higher;
  };
  bool h12;
  DType r12 = combine(have[1], res[1], have[2], res[2], h12);
  bool h;
  DType r = combine(have[0], res[0], h12, r12, h);
  if (!h) fail("internal: result_type of no operands");
  return r;
}

// ================================================================================================ binary

namespace {

bool is_compare(BinOp op) {
  return op == BinOp::Eq || op == BinOp::Ne || op == BinOp::Lt || op == BinOp::Le || op == BinOp::Gt ||
         op == BinOp::Ge;
}
bool is_logical(BinOp op) {
  return op == BinOp::LogicalAnd || op == BinOp::LogicalOr || op == BinOp::LogicalXor;
}
bool is_bitwise(BinOp op) {
  return op == BinOp::BitAnd || op == BinOp::BitOr || op == BinOp::BitXor || op == BinOp::LShift ||
         op == BinOp::RShift;
}

const char* binop_name(BinOp op) {
  switch (op) {
    case BinOp::Add: return "add";
    case BinOp::Sub: return "sub";
    case BinOp::Mul: return "mul";
    case BinOp::Div: return "div";
    case BinOp::FloorDiv: return "floor_divide";
    case BinOp::Mod: return "remainder";
    case BinOp::FMod: return "fmod";
    case BinOp::Pow: return "pow";
    case BinOp::Maximum: return "maximum";
    case BinOp::Minimum: return "minimum";
    case BinOp::Atan2: return "atan2";
    case BinOp::Eq: return "eq";
    case BinOp::Ne: return "ne";
    case BinOp::Lt: return "lt";
    case BinOp::Le: return "le";
    case BinOp::Gt: return "gt";
    case BinOp::Ge: return "ge";
    case BinOp::BitAnd: return "bitwise_and";
    case BinOp::BitOr: return "bitwise_or";
    case BinOp::BitXor: return "bitwise_xor";
    case BinOp::LogicalAnd: return "logical_and";
    case BinOp::LogicalOr: return "logical_or";
    case BinOp::LogicalXor: return "logical_xor";
    case BinOp::LShift: return "lshift";
    case BinOp::RShift: return "rshift";
  }
  return "?";
}

template <class T>
T floordiv_f(T a, T b) {
  if (b == 0) return a / b;
  T mod = std::fmod(a, b);
  T div = (a - mod) / b;
  if (mod != 0 && ((b < 0) != (mod < 0))) div -= T(1);
  T fd;
  if (div != 0) {
    fd = std::floor(div);
    if (div - fd > T(0.5)) fd += T(1);
  } else {
    fd = std::copysign(T(0), a / b);
  }
  return fd;
}
template <class T>
T mod_f(T a, T b) {
  T m = std::fmod(a, b);
  if (m != 0 && ((b < 0) != (m < 0))) m += b;
  return m;
}
int64_t floordiv_i(int64_t a, int64_t b) {
  if (b == 0) fail("integer division by zero");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t mod_i(int64_t a, int64_t b) {
  if (b == 0) fail("integer modulo by zero");
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
int64_t pow_i(int64_t a, int64_t b) {
  if (b < 0) {
    if (a == 1) return 1;
    if (a == -1) return (b % 2) ? -1 : 1;
    fail("integers to negative integer powers are not allowed");
  }
  int64_t r = 1;
  while (b) {
    if (b & 1) r *= a;
    a *= a;
    b >>= 1;
  }
  return r;
}

// The scalar function of op on compute type T (arithmetic result in T; comparisons return bool).
template <class T>
struct Arith {
  static T apply(BinOp op, T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      switch (op) {
        case BinOp::Add: return a + b;
        case BinOp::Sub: return a - b;
        case BinOp::Mul: return a * b;
        case BinOp::Div: return a / b;
        case BinOp::FloorDiv: return floordiv_f(a, b);
        case BinOp::Mod: return mod_f(a, b);
        case BinOp::FMod: return std::fmod(a, b);
        case BinOp::Pow: return std::pow(a, b);
        case BinOp::Maximum: return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : std::max(a, b);
        case BinOp::Minimum: return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : std::min(a, b);
        case BinOp::Atan2: return std::atan2(a, b);
        default: break;
      }
    } else if constexpr (std::is_same_v<T, int64_t>) {
      switch (op) {
        case BinOp::Add: return int64_t(uint64_t(a) + uint64_t(b));
        case BinOp::Sub: return int64_t(uint64_t(a) - uint64_t(b));
        case BinOp::Mul: return int64_t(uint64_t(a) * uint64_t(b));
        case BinOp::FloorDiv: return floordiv_i(a, b);
        case BinOp::Mod: return mod_i(a, b);
        case BinOp::FMod: if (b == 0) fail("integer modulo by zero"); return a % b;
        case BinOp::Pow: return pow_i(a, b);
        case BinOp::Maximum: return std::max(a, b);
        case BinOp::Minimum: return std::min(a, b);
        case BinOp::BitAnd: return a & b;
        case BinOp::BitOr: return a | b;
        case BinOp::BitXor: return a ^ b;
        case BinOp::LShift: return b >= 64 || b < 0 ? 0 : int64_t(uint64_t(a) << b);
        case BinOp::RShift: return b >= 64 || b < 0 ? (a < 0 ? -1 : 0) : (a >> b);
        default: break;
      }
    } else {  // bool
      switch (op) {
        case BinOp::Add: case BinOp::BitOr: case BinOp::Maximum: return T(a | b);
        case BinOp::Mul: case BinOp::BitAnd: case BinOp::Minimum: return T(a & b);
        case BinOp::BitXor: return T(a ^ b);
        default: break;
      }
    }
    fail(std::string("operation ") + binop_name(op) + " is not defined for this dtype");
  }
};

template <class T>
bool compare(BinOp op, T a, T b) {
  switch (op) {
    case BinOp::Eq: return a == b;
    case BinOp::Ne: return a != b;
    case BinOp::Lt: return a < b;
    case BinOp::Le: return a <= b;
    case BinOp::Gt: return a > b;
    case BinOp::Ge: return a >= b;
    case BinOp::LogicalAnd: return (a != 0) && (b != 0);
    case BinOp::LogicalOr: return (a != 0) || (b != 0);
    case BinOp::LogicalXor: return (a != 0) != (b != 0);
    default: break;
  }
  return false;
}

// Loop with the op hoisted out of the element loop for the common arithmetic ops (so they vectorise).
template <class T, class F>
void bin_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  using O = decltype(f(T{}, T{}));
  O* po = out.data<O>();
  Bcast it(out.shape, {&a.shape, &b.shape});
  it.run([&](int64_t o, const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
    const T* x = pa + off[0];
    const T* y = pb + off[1];
    O* z = po + o;
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t j = 0; j < n; ++j) z[j] = f(x[j], y[j]);
    } else if (st[0] == 1) {
      const T yv = *y;
      for (int64_t j = 0; j < n; ++j) z[j] = f(x[j], yv);
    } else if (st[1] == 1) {
      const T xv = *x;
      for (int64_t j = 0; j < n; ++j) z[j] = f(xv, y[j]);
    } else {
      const O v = f(*x, *y);
      for (int64_t j = 0; j < n; ++j) z[j] = v;
    }
  });
}

template <class T>
void bin_dispatch(BinOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (is_compare(op) || is_logical(op)) {
    switch (op) {
      case BinOp::Eq: bin_loop<T>(a, b, out, [](T x, T y) -> uint8_t { return x == y; }); return;
      case BinOp::Ne: bin_loop<T>(a, b, out, [](T x, T y) -> uint8_t { return x != y; }); return;
      case BinOp::Lt: bin_loop<T>(a, b, out, [](T x, T y) -> uint8_t { return x < y; }); return;
      case BinOp::Le: bin_loop<T>(a, b, out, [](T x, T y) -> uint8_t { return x <= y; }); return;
      case BinOp::Gt: bin_loop<T>(a, b, out, [](T x, T y) -> uint8_t { return x > y; }); return;
      case BinOp::Ge: bin_loop<T>(a, b, out, [](T x, T y) -> uint8_t { return x >= y; }); return;
      default: bin_loop<T>(a, b, out, [op](T x, T y) -> uint8_t { return compare(op, x, y); }); return;
    }
  }
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case BinOp::Add: bin_loop<T>(a, b, out, [](T x, T y) { return x + y; }); return;
      case BinOp::Sub: bin_loop<T>(a, b, out, [](T x, T y) { return x - y; }); return;
      case BinOp::Mul: bin_loop<T>(a, b, out, [](T x, T y) { return x * y; }); return;
      case BinOp::Div: bin_loop<T>(a, b, out, [](T x, T y) { return x / y; }); return;
      default: break;
    }
  }
  if constexpr (std::is_same_v<T, int64_t>) {
    switch (op) {
      case BinOp::Add: bin_loop<T>(a, b, out, [](T x, T y) { return T(uint64_t(x) + uint64_t(y)); }); return;
      case BinOp::Mul: bin_loop<T>(a, b, out, [](T x, T y) { return T(uint64_t(x) * uint64_t(y)); }); return;
      default: break;
    }
  }
  Arith<T>::apply(op, T{}, T{1});  // validates op for T (throws when undefined) before the parallel loop
  bin_loop<T>(a, b, out, [op](T x, T y) { return Arith<T>::apply(op, x, y); });
}

// The Python semantics of op on two numbers.
Val scalar_binary(BinOp op, const Val& a, const Val& b) {
  bool fl = a.k == Val::K::Float || b.k == Val::K::Float;
  if (is_compare(op)) {
    bool r;
    if (fl) r = compare(op, a.as_double(), b.as_double());
    else r = compare(op, a.as_int(), b.as_int());
    return Val::boolean(r);
  }
  if (is_logical(op)) return Val::boolean(compare(op, a.as_double(), b.as_double()));
  if (a.k == Val::K::Bool && b.k == Val::K::Bool &&
      (op == BinOp::BitAnd || op == BinOp::BitOr || op == BinOp::BitXor)) {
    bool r = op == BinOp::BitAnd ? (a.b && b.b) : op == BinOp::BitOr ? (a.b || b.b) : (a.b != b.b);
    return Val::boolean(r);
  }
  if (op == BinOp::Div) return Val::real(a.as_double() / b.as_double());
  if (fl) {
    if (is_bitwise(op)) fail(std::string("unsupported operand types for ") + binop_name(op) + ": float");
    double x = a.as_double(), y = b.as_double();
    if ((op == BinOp::FloorDiv || op == BinOp::Mod) && y == 0) fail("float division by zero");
    if (op == BinOp::FloorDiv) return Val::real(std::floor(x / y));
    return Val::real(Arith<double>::apply(op, x, y));
  }
  int64_t x = a.as_int(), y = b.as_int();
  if (op == BinOp::Pow && y < 0) return Val::real(std::pow(double(x), double(y)));
  return Val::integer(Arith<int64_t>::apply(op, x, y));
}

Val seq_binary(BinOp op, const Val& a, const Val& b) {
  if (op == BinOp::Add && a.is_seq() && b.is_seq()) {
    std::vector<Val> r = a.seq();
    r.insert(r.end(), b.seq().begin(), b.seq().end());
    return a.k == Val::K::List ? Val::list(std::move(r)) : Val::tuple(std::move(r));
  }
  if (op == BinOp::Mul && (a.is_seq() || b.is_seq())) {
    const Val& s = a.is_seq() ? a : b;
    int64_t n = (a.is_seq() ? b : a).as_int();
    std::vector<Val> r;
    for (int64_t i = 0; i < n; ++i) r.insert(r.end(), s.seq().begin(), s.seq().end());
    return s.k == Val::K::List ? Val::list(std::move(r)) : Val::tuple(std::move(r));
  }
  if ((op == BinOp::Eq || op == BinOp::Ne) && a.is_seq() && b.is_seq()) {
    bool eq = a.seq().size() == b.seq().size();
    for (size_t i = 0; eq && i < a.seq().size(); ++i) {
      const Val &x = a.seq()[i], &y = b.seq()[i];
      eq = x.is_number() && y.is_number() ? x.as_double() == y.as_double() : x.repr() == y.repr();
    }
    return Val::boolean(op == BinOp::Eq ? eq : !eq);
  }
  fail(std::string("unsupported operand types for ") + binop_name(op) + ": " + a.kind_name() + " and " +
       b.kind_name());
}

// A tensor operand of compute dtype `dt` for a Python number.
Tensor number_tensor(const Val& v, DType dt) {
  if (v.k == Val::K::Float) return Tensor::scalar(dt, v.f);
  if (v.k == Val::K::Int) return Tensor::scalar_int(dt, v.i);
  if (v.k == Val::K::Bool) return Tensor::scalar_int(dt, v.b ? 1 : 0);
  fail("expected a tensor or a number, got " + v.kind_name());
}

}  // namespace

Val binary(BinOp op, const Val& a, const Val& b) {
  if (!a.is_tensor() && !b.is_tensor()) {
    if (a.is_number() && b.is_number()) return scalar_binary(op, a, b);
    return seq_binary(op, a, b);
  }
  DType rt = result_type({&a, &b});
  DType ct = rt;  // compute dtype
  DType out;
  if (is_compare(op) || is_logical(op)) {
    out = DType::BOOL;
    if (is_logical(op)) ct = promote_types(ct, DType::BOOL);
  } else if (op == BinOp::Div || op == BinOp::Atan2) {
    if (!is_floating(ct)) ct = default_float();
    out = ct;
  } else if (is_bitwise(op)) {
    if (is_floating(ct)) fail(std::string(binop_name(op)) + " is not defined for floating point tensors");
    out = ct;
  } else {
    if (ct == DType::BOOL && (op == BinOp::Sub)) fail("subtraction of bool tensors is not supported");
    if (ct == DType::BOOL && (op == BinOp::Pow || op == BinOp::FloorDiv || op == BinOp::Mod ||
                              op == BinOp::FMod))
      ct = DType::I64;
    out = ct;
  }
  // Compute in the physical type: halves in float.
  DType cdt = is_half(ct) ? DType::F32 : (is_integral(ct) ? DType::I64 : ct);
  Tensor ta = a.is_tensor() ? as_dtype(a.t, cdt) : number_tensor(a, cdt);
  Tensor tb = b.is_tensor() ? as_dtype(b.t, cdt) : number_tensor(b, cdt);
  Shape shape = broadcast_shapes(ta.shape, tb.shape);
  Tensor r = Tensor::empty(is_compare(op) || is_logical(op) ? DType::BOOL : cdt, shape);
  dispatch(ptype(cdt), [&](auto tag) { bin_dispatch<decltype(tag)>(op, ta, tb, r); });
  if (r.dtype != out) r = as_dtype(r, out);
  return Val::tensor(std::move(r));
}

Tensor binary(BinOp op, const Tensor& a, const Tensor& b) {
  return binary(op, Val::tensor(a), Val::tensor(b)).t;
}

Tensor where(const Tensor& cond, const Val& a, const Val& b) {
  DType dt = result_type({&a, &b});
  DType cdt = is_half(dt) ? DType::F32 : (is_integral(dt) ? DType::I64 : dt);
  Tensor ta = a.is_tensor() ? as_dtype(a.t, cdt) : number_tensor(a, cdt);
  Tensor tb = b.is_tensor() ? as_dtype(b.t, cdt) : number_tensor(b, cdt);
  Tensor c = cond.dtype == DType::BOOL ? cond : cond.to(DType::BOOL);
  Shape shape = broadcast_shapes(broadcast_shapes(c.shape, ta.shape), tb.shape);
  Tensor r = Tensor::empty(cdt, shape);
  dispatch(ptype(cdt), [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* pc = c.data<uint8_t>();
    const T* px = ta.data<T>();
    const T* py = tb.data<T>();
    T* po = r.data<T>();
    Bcast it(shape, {&c.shape, &ta.shape, &tb.shape});
    it.run([&](int64_t o, const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
      for (int64_t j = 0; j < n; ++j)
        po[o + j] = pc[off[0] + j * st[0]] ? px[off[1] + j * st[1]] : py[off[2] + j * st[2]];
    });
  });
  return as_dtype(r, dt);
}

// ================================================================================================ unary

namespace {

// out[i] = f(x[i]) over a float tensor (integers become F32 first); the output keeps the input dtype.
template <class F>
Tensor map_float(const Tensor& x0, F f) {
  Tensor x = as_float(x0);
  Tensor r = Tensor::empty(x.dtype, x.shape);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = r.data<T>();
    parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) po[i] = f(px[i]);
    });
  });
  return r;
}

// For every numeric dtype (integers stay integers): abs, neg, sign, relu, ...
template <class F>
Tensor map_any(const Tensor& x, F f) {
  if (x.dtype == DType::BOOL) fail("this operation is not defined for bool tensors");
  Tensor r = Tensor::empty(x.dtype, x.shape);
  dispatch(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, uint8_t>) {
      const T* px = x.data<T>();
      T* po = r.data<T>();
      parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) po[i] = f(px[i]);
      });
    }
  });
  return r;
}

template <class T> T sigmoid_t(T v) {
  if constexpr (std::is_same_v<T, float>) return 1.0f / (1.0f + fast_exp(-v));
  else return T(1) / (T(1) + std::exp(-v));
}
template <class T> T tanh_t(T v) {
  if constexpr (std::is_same_v<T, float>) return fast_tanh(v);
  else return std::tanh(v);
}
template <class T> T erf_t(T v) {
  if constexpr (std::is_same_v<T, float>) {
    // Abramowitz & Stegun 7.1.26 refined: |error| < 1.5e-7
    const float a = std::fabs(v);
    const float t = 1.0f / (1.0f + 0.3275911f * a);
    float y = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    y = 1.0f - y * fast_exp(-a * a);
    return v < 0 ? -y : y;
  } else {
    return std::erf(v);
  }
}
template <class T> T softplus_t(T v, T beta, T threshold) {
  T bx = v * beta;
  return bx > threshold ? v : std::log1p(std::exp(bx)) / beta;
}
template <class T> T gelu_t(T v) { return T(0.5) * v * (T(1) + erf_t(v * T(0.70710678118654752440))); }
template <class T> T gelu_tanh_t(T v) {
  const T k = T(0.79788456080286535588);  // sqrt(2/pi)
  return T(0.5) * v * (T(1) + tanh_t(k * (v + T(0.044715) * v * v * v)));
}

}  // namespace

Tensor activation(const std::string& name, const Tensor& x) {
  if (name == "identity") return x;
  if (name == "relu") return map_any(x, [](auto v) { return v > 0 ? v : decltype(v)(0); });
  if (name == "gelu") return map_float(x, [](auto v) { return gelu_t(v); });
  if (name == "gelu_tanh") return map_float(x, [](auto v) { return gelu_tanh_t(v); });
  if (name == "tanh") return map_float(x, [](auto v) { return tanh_t(v); });
  if (name == "sigmoid") return map_float(x, [](auto v) { return sigmoid_t(v); });
  if (name == "silu") return map_float(x, [](auto v) { return v * sigmoid_t(v); });
  fail("unknown activation '" + name + "'");
}

// ================================================================================================ softmax

Tensor softmax(const Tensor& x0, int64_t dim, bool log) {
  Tensor x = as_float(x0);
  if (x.dim() == 0) x = x.reshaped({1});
  int64_t d = norm_dim(dim, x.dim());
  int64_t outer = 1, inner = 1, n = x.shape[size_t(d)];
  for (int64_t i = 0; i < d; ++i) outer *= x.shape[size_t(i)];
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.shape[size_t(i)];
  Tensor r = Tensor::empty(x.dtype, x.shape);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = r.data<T>();
    const int64_t lines = outer * inner;
    parallel_for(lines, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      std::vector<T> buf(size_t(inner == 1 ? 0 : n));
      for (int64_t l = b; l < e; ++l) {
        int64_t o = l / inner, in = l % inner;
        const T* src = px + o * n * inner + in;
        T* dst = po + o * n * inner + in;
        // gather the line (contiguous when inner == 1)
        const T* line = src;
        T* out = dst;
        if (inner != 1) {
          for (int64_t j = 0; j < n; ++j) buf[size_t(j)] = src[j * inner];
          line = buf.data();
          out = buf.data();
        }
        T mx = row_max(line, n);
        if (mx == -std::numeric_limits<T>::infinity()) mx = 0;  // an all -inf line gives NaN like torch
        if (!log) {
          double sum = 0;
          if constexpr (std::is_same_v<T, float>) {
            for (int64_t j = 0; j < n; ++j) out[j] = fast_exp(line[j] - mx);
            sum = row_sum(out, n);
          } else {
            for (int64_t j = 0; j < n; ++j) {
              T v = std::exp(line[j] - mx);
              out[j] = v;
              sum += v;
            }
          }
          T inv = T(1.0 / sum);
          for (int64_t j = 0; j < n; ++j) out[j] *= inv;
        } else {
          double sum = 0;
          for (int64_t j = 0; j < n; ++j) sum += std::exp(double(line[j] - mx));
          T lse = T(std::log(sum)) + mx;
          for (int64_t j = 0; j < n; ++j) out[j] = line[j] - lse;
        }
        if (inner != 1)
          for (int64_t j = 0; j < n; ++j) dst[j * inner] = buf[size_t(j)];
      }
    });
  });
  if (x0.dim() == 0) r = r.reshaped({});
  return r;
}

// ================================================================================================ reductions

namespace {

enum class Red { Sum, Mean, Prod, Max, Min, ArgMax, ArgMin, All, Any, Var, Std, LogSumExp, Norm };

std::vector<int64_t> reduce_dims(const Tensor& x, const Val* dim) {
  std::vector<int64_t> dims;
  if (dim && !dim->is_none()) {
    for (int64_t d : dim->as_ints()) dims.push_back(norm_dim(d, x.dim()));
  }
  if (dims.empty()) {
    if (dim && dim->is_seq() && x.dim() > 0) return {};  // dim=() or [] reduces everything
    for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
  }
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  return dims;
}

// Moves the reduced dims last (a copy when needed): returns the [outer, red] view and the output shape.
Tensor to_rows(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, int64_t& outer, int64_t& red,
               Shape& out_shape) {
  std::vector<int64_t> keep, perm;
  std::vector<bool> is_red(size_t(x.dim()), false);
  for (int64_t d : dims) is_red[size_t(d)] = true;
  outer = 1;
  red = 1;
  out_shape.clear();
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (is_red[size_t(d)]) {
      red *= x.shape[size_t(d)];
      if (keepdim) out_shape.push_back(1);
    } else {
      keep.push_back(d);
      outer *= x.shape[size_t(d)];
      out_shape.push_back(x.shape[size_t(d)]);
    }
  }
  perm = keep;
  perm.insert(perm.end(), dims.begin(), dims.end());
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i)
    if (perm[i] != int64_t(i)) identity = false;
  return identity ? x : permute(x, perm);
}

Tensor reduce(const Tensor& x0, Red kind, const std::vector<int64_t>& dims, bool keepdim, DType out_dt,
              double extra = 0) {
  int64_t outer, red;
  Shape oshape;
  Tensor x = to_rows(x0, dims, keepdim, outer, red, oshape);
  Tensor r = Tensor::empty(out_dt, oshape);
  if ((kind == Red::Max || kind == Red::Min || kind == Red::ArgMax || kind == Red::ArgMin) && red == 0)
    fail("max/min of an empty dimension");
  dispatch(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    dispatch(r.ptype(), [&](auto otag) {
      using O = decltype(otag);
      O* po = r.data<O>();
      parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(red, 1)), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          const T* p = px + o * red;
          double acc = 0;
          switch (kind) {
            case Red::Sum: case Red::Mean: {
              acc = sum_d(p, red);
              if (kind == Red::Mean) acc /= double(red);
              if constexpr (std::is_same_v<O, int64_t>) {
                int64_t s = 0;
                for (int64_t j = 0; j < red; ++j) s += int64_t(p[j]);
                po[o] = s;
                continue;
              }
              break;
            }
            case Red::Prod: {
              acc = 1;
              for (int64_t j = 0; j < red; ++j) acc *= double(p[j]);
              break;
            }
            case Red::Max: case Red::Min: {
              T m = p[0];
              bool nan = false;
              for (int64_t j = 0; j < red; ++j) {
                if (isnan_t(p[j])) nan = true;
                m = kind == Red::Max ? std::max(m, p[j]) : std::min(m, p[j]);
              }
              po[o] = nan ? O(NAN) : O(m);
              continue;
            }
            case Red::ArgMax: case Red::ArgMin: {
              int64_t bi = 0;
              for (int64_t j = 1; j < red; ++j) {
                if (isnan_t(p[bi])) break;
                if (isnan_t(p[j]) || (kind == Red::ArgMax ? p[j] > p[bi] : p[j] < p[bi])) bi = j;
              }
              po[o] = O(bi);
              continue;
            }
            case Red::All: {
              bool v = true;
              for (int64_t j = 0; j < red; ++j) v = v && p[j] != 0;
              po[o] = O(v);
              continue;
            }
            case Red::Any: {
              bool v = false;
              for (int64_t j = 0; j < red; ++j) v = v || p[j] != 0;
              po[o] = O(v);
              continue;
            }
            case Red::Var: case Red::Std: {
              double mean = 0;
              for (int64_t j = 0; j < red; ++j) mean += double(p[j]);
              mean /= double(red);
              for (int64_t j = 0; j < red; ++j) acc += (double(p[j]) - mean) * (double(p[j]) - mean);
              double denom = double(red) - extra;  // extra = correction
              acc = denom > 0 ? acc / denom : NAN;
              if (kind == Red::Std) acc = std::sqrt(acc);
              break;
            }
            case Red::LogSumExp: {
              double m = -INFINITY;
              for (int64_t j = 0; j < red; ++j) m = std::max(m, double(p[j]));
              if (std::isinf(m)) { acc = m; break; }
              for (int64_t j = 0; j < red; ++j) acc += std::exp(double(p[j]) - m);
              acc = std::log(acc) + m;
              break;
            }
            case Red::Norm: {
              double pn = extra;
              if (std::isinf(pn)) {
                for (int64_t j = 0; j < red; ++j) acc = std::max(acc, std::fabs(double(p[j])));
              } else if (pn == 2) {
                for (int64_t j = 0; j < red; ++j) acc += double(p[j]) * double(p[j]);
                acc = std::sqrt(acc);
              } else if (pn == 1) {
                for (int64_t j = 0; j < red; ++j) acc += std::fabs(double(p[j]));
              } else {
                for (int64_t j = 0; j < red; ++j) acc += std::pow(std::fabs(double(p[j])), pn);
                acc = std::pow(acc, 1.0 / pn);
              }
              break;
            }
          }
          po[o] = O(acc);
        }
      });
    });
  });
  round_to_dtype(r);
  return r;
}

DType sum_dtype(DType d, const Args& a, size_t dtype_slot) {
  if (a.has(dtype_slot)) return a[dtype_slot].dt;
  if (is_integral(d) || d == DType::BOOL) return DType::I64;
  return d;
}

}  // namespace

Tensor reduce_sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim, bool mean) {
  if (dims.empty())
    for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
  for (auto& d : dims) d = norm_dim(d, x.dim());
  std::sort(dims.begin(), dims.end());
  DType od = mean ? (is_floating(x.dtype) ? x.dtype : DType::F32) : (is_floating(x.dtype) ? x.dtype : DType::I64);
  return reduce(x, mean ? Red::Mean : Red::Sum, dims, keepdim, od);
}

// ================================================================================================ registration

namespace {

Val TV(Tensor t) { return Val::tensor(std::move(t)); }

// A float activation with parameters, as function / module / method.
using FloatFn = std::function<Tensor(const Tensor&)>;

void add_binary(Registry& r, BinOp op, std::initializer_list<const char*> fns, std::initializer_list<const char*> methods,
                bool has_alpha = false) {
  Handler h = [op, has_alpha](Call& c) -> Val {
    if (has_alpha) {
      Args a(c, {"input", "other", "alpha"});
      if (a.has(2)) {
        Val scaled = binary(BinOp::Mul, a[1], a[2]);
        return binary(op, a[0], scaled);
      }
      return binary(op, a[0], a[1]);
    }
    Args a(c, {"input", "other"});
    return binary(op, a[0], a[1]);
  };
  r.add(OpKind::Function, fns, h);
  r.add(OpKind::Method, methods, h);
}

Val apply_unary_number(const Val& v, double (*f)(double)) { return Val::real(f(v.as_double())); }

}  // namespace

void register_elementwise(Registry& r) {
  using K = OpKind;
  // ---- binary arithmetic and comparisons
  add_binary(r, BinOp::Add, {"operator.add", "operator.iadd", "torch.add"}, {"add", "__add__", "__radd__"}, true);
  add_binary(r, BinOp::Sub, {"operator.sub", "operator.isub", "torch.sub", "torch.subtract"}, {"sub", "subtract"}, true);
  add_binary(r, BinOp::Mul, {"operator.mul", "operator.imul", "torch.mul", "torch.multiply"}, {"mul", "multiply"});
  add_binary(r, BinOp::FloorDiv, {"operator.floordiv", "torch.floor_divide"}, {"floor_divide"});
  add_binary(r, BinOp::Mod, {"operator.mod", "torch.remainder"}, {"remainder"});
  add_binary(r, BinOp::FMod, {"torch.fmod"}, {"fmod"});
  add_binary(r, BinOp::Pow, {"operator.pow", "torch.pow", "torch.float_power"}, {"pow"});
  add_binary(r, BinOp::Maximum, {"torch.maximum", "torch.fmax"}, {"maximum"});
  add_binary(r, BinOp::Minimum, {"torch.minimum", "torch.fmin"}, {"minimum"});
  add_binary(r, BinOp::Atan2, {"torch.atan2", "torch.arctan2"}, {"atan2"});
  add_binary(r, BinOp::Eq, {"operator.eq", "torch.eq"}, {"eq"});
  add_binary(r, BinOp::Ne, {"operator.ne", "torch.ne", "torch.not_equal"}, {"ne"});
  add_binary(r, BinOp::Lt, {"operator.lt", "torch.lt", "torch.less"}, {"lt"});
  add_binary(r, BinOp::Le, {"operator.le", "torch.le", "torch.less_equal"}, {"le"});
  add_binary(r, BinOp::Gt, {"operator.gt", "torch.gt", "torch.greater"}, {"gt"});
  add_binary(r, BinOp::Ge, {"operator.ge", "torch.ge", "torch.greater_equal"}, {"ge"});
  add_binary(r, BinOp::BitAnd, {"operator.and_", "torch.bitwise_and"}, {"bitwise_and"});
  add_binary(r, BinOp::BitOr, {"operator.or_", "torch.bitwise_or"}, {"bitwise_or"});
  add_binary(r, BinOp::BitXor, {"operator.xor", "torch.bitwise_xor"}, {"bitwise_xor"});
  add_binary(r, BinOp::LShift, {"operator.lshift", "torch.bitwise_left_shift"}, {"bitwise_left_shift"});
  add_binary(r, BinOp::RShift, {"operator.rshift", "torch.bitwise_right_shift"}, {"bitwise_right_shift"});
  add_binary(r, BinOp::LogicalAnd, {"torch.logical_and"}, {"logical_and"});
  add_binary(r, BinOp::LogicalOr, {"torch.logical_or"}, {"logical_or"});
  add_binary(r, BinOp::LogicalXor, {"torch.logical_xor"}, {"logical_xor"});
  // true division with rounding_mode
  {
    Handler h = [](Call& c) -> Val {
      Args a(c, {"input", "other", "rounding_mode"});
      std::string mode = a.str(2, "");
      if (mode.empty()) return binary(BinOp::Div, a[0], a[1]);
      if (mode == "floor") return binary(BinOp::FloorDiv, a[0], a[1]);
      if (mode == "trunc") {
        Val q = binary(BinOp::Div, a[0], a[1]);
        if (!q.is_tensor()) return Val::real(std::trunc(q.as_double()));
        Tensor t = map_float(q.t, [](auto v) { return std::trunc(v); });
        DType want = result_type({&a[0], &a[1]});
        return TV(as_dtype(t, want));
      }
      fail("unknown rounding_mode '" + mode + "'");
    };
    r.add(K::Function, {"operator.truediv", "operator.itruediv", "torch.div", "torch.divide", "torch.true_divide"}, h);
    r.add(K::Method, {"div", "divide", "true_divide"}, h);
  }
  // reversed operand forms of methods
  r.add(K::Method, "rsub", [](Call& c) -> Val {
    Args a(c, {"input", "other", "alpha"});
    Val x = a.has(2) ? binary(BinOp::Mul, a[0], a[2]) : a[0];
    return binary(BinOp::Sub, a[1], x);
  });
  r.add(K::Function, "torch.rsub", *r.find(K::Method, "rsub"));

  // ---- unary operators on numbers or tensors
  r.add(K::Function, {"operator.neg", "torch.neg", "torch.negative"}, [](Call& c) -> Val {
    Args a(c, {"input"});
    const Val& x = a[0];
    if (x.k == Val::K::Int || x.k == Val::K::Bool) return Val::integer(-x.as_int());
    if (x.k == Val::K::Float) return Val::real(-x.f);
    return TV(map_any(x.as_tensor(), [](auto v) { return decltype(v)(-v); }));
  });
  r.add(K::Method, {"neg", "negative", "__neg__"}, *r.find(K::Function, "operator.neg"));
  r.add(K::Function, "operator.pos", [](Call& c) -> Val { Args a(c, {"input"}); return a[0]; });
  r.add(K::Function, {"operator.abs", "builtins.abs", "torch.abs", "torch.absolute"}, [](Call& c) -> Val {
    Args a(c, {"input"});
    const Val& x = a[0];
    if (x.k == Val::K::Int || x.k == Val::K::Bool) return Val::integer(std::llabs(x.as_int()));
    if (x.k == Val::K::Float) return Val::real(std::fabs(x.f));
    return TV(map_any(x.as_tensor(), [](auto v) { return v < 0 ? decltype(v)(-v) : v; }));
  });
  r.add(K::Method, {"abs", "absolute"}, *r.find(K::Function, "torch.abs"));
  r.add(K::Function, {"operator.invert", "torch.bitwise_not"}, [](Call& c) -> Val {
    Args a(c, {"input"});
    const Val& x = a[0];
    if (x.k == Val::K::Bool) return Val::integer(~int64_t(x.b));
    if (x.k == Val::K::Int) return Val::integer(~x.i);
    const Tensor& t = x.as_tensor();
    if (t.dtype == DType::BOOL) {
      Tensor o = Tensor::empty(DType::BOOL, t.shape);
      for (int64_t i = 0; i < t.numel(); ++i) o.data<uint8_t>()[i] = !t.data<uint8_t>()[i];
      return TV(o);
    }
    if (!is_integral(t.dtype)) fail("bitwise_not is only defined for integer and bool tensors");
    return TV(map_any(t, [](auto v) {
      if constexpr (std::is_integral_v<decltype(v)>) return decltype(v)(~v);
      else return v;
    }));
  });
  r.add(K::Method, {"bitwise_not", "__invert__"}, *r.find(K::Function, "operator.invert"));
  r.add(K::Function, {"operator.not_", "torch.logical_not"}, [](Call& c) -> Val {
    Args a(c, {"input"});
    const Val& x = a[0];
    if (!x.is_tensor()) return Val::boolean(!x.as_bool());
    const Tensor& t = x.t;
    Tensor o = Tensor::empty(DType::BOOL, t.shape);
    for (int64_t i = 0; i < t.numel(); ++i) o.data<uint8_t>()[i] = t.item_double(i) == 0;
    return TV(o);
  });
  r.add(K::Method, "logical_not", *r.find(K::Function, "torch.logical_not"));
  r.add(K::Function, {"operator.truth", "builtins.bool"}, [](Call& c) -> Val {
    Args a(c, {"input"});
    return Val::boolean(a[0].as_bool());
  });
  r.add(K::Function, "builtins.int", [](Call& c) -> Val {
    Args a(c, {"input"});
    const Val& x = a[0];
    if (x.k == Val::K::Float) return Val::integer(int64_t(std::trunc(x.f)));
    if (x.is_tensor()) return Val::integer(int64_t(std::trunc(x.as_double())));
    return Val::integer(x.as_int());
  });
  r.add(K::Function, "builtins.float", [](Call& c) -> Val {
    Args a(c, {"input"});
    return Val::real(a[0].as_double());
  });
  r.add(K::Method, "item", [](Call& c) -> Val {
    Args a(c, {"input"});
    const Tensor& t = a.tensor(0);
    if (t.numel() != 1) fail("item() of a tensor with " + std::to_string(t.numel()) + " elements");
    if (is_floating(t.dtype)) return Val::real(t.item_double(0));
    if (t.dtype == DType::BOOL) return Val::boolean(t.item_int(0) != 0);
    return Val::integer(t.item_int(0));
  });

  // ---- math.* on numbers
  struct MathFn { const char* name; double (*f)(double); };
  static const MathFn math_fns[] = {
      {"math.sqrt", [](double v) { return std::sqrt(v); }}, {"math.exp", [](double v) { return std::exp(v); }},
      {"math.log", [](double v) { return std::log(v); }},   {"math.log2", [](double v) { return std::log2(v); }},
      {"math.log10", [](double v) { return std::log10(v); }}, {"math.sin", [](double v) { return std::sin(v); }},
      {"math.cos", [](double v) { return std::cos(v); }},   {"math.tan", [](double v) { return std::tan(v); }},
      {"math.tanh", [](double v) { return std::tanh(v); }}, {"math.erf", [](double v) { return std::erf(v); }},
      {"math.fabs", [](double v) { return std::fabs(v); }}};
  for (const auto& m : math_fns) {
    auto f = m.f;
    r.add(K::Function, m.name, [f](Call& c) -> Val {
      Args a(c, {"x"});
      return apply_unary_number(a[0], f);
    });
  }
  r.add(K::Function, {"math.floor", "math.ceil", "math.trunc"}, [](Call& c) -> Val {
    Args a(c, {"x"});
    double v = a[0].as_double();
    const std::string& t = *c.target;
    double o = t == "math.floor" ? std::floor(v) : t == "math.ceil" ? std::ceil(v) : std::trunc(v);
    return Val::integer(int64_t(o));
  });
  r.add(K::Function, "math.pow", [](Call& c) -> Val {
    Args a(c, {"x", "y"});
    return Val::real(std::pow(a[0].as_double(), a[1].as_double()));
  });
  r.add(K::Function, {"builtins.max", "builtins.min"}, [](Call& c) -> Val {
    std::vector<Val> xs = c.args.size() == 1 ? c.args[0].seq() : c.args;
    if (xs.empty()) fail("max()/min() of nothing");
    bool mx = *c.target == "builtins.max";
    Val best = xs[0];
    for (const auto& v : xs) {
      bool better = mx ? v.as_double() > best.as_double() : v.as_double() < best.as_double();
      if (better) best = v;
    }
    return best;
  });

  // ---- unary float functions (torch.X, Tensor.X)
  struct UFn { const char* name; std::function<Tensor(const Tensor&)> f; };
  auto fl = [](auto g) { return [g](const Tensor& x) { return map_float(x, g); }; };
  std::vector<UFn> ufns = {
      {"exp", fl([](auto v) { return std::exp(v); })},
      {"exp2", fl([](auto v) { return std::exp2(v); })},
      {"expm1", fl([](auto v) { return std::expm1(v); })},
      {"log", fl([](auto v) { return std::log(v); })},
      {"log2", fl([](auto v) { return std::log2(v); })},
      {"log10", fl([](auto v) { return std::log10(v); })},
      {"log1p", fl([](auto v) { return std::log1p(v); })},
      {"sqrt", fl([](auto v) { return std::sqrt(v); })},
      {"rsqrt", fl([](auto v) { return decltype(v)(1) / std::sqrt(v); })},
      {"reciprocal", fl([](auto v) { return decltype(v)(1) / v; })},
      {"sin", fl([](auto v) { return std::sin(v); })},
      {"cos", fl([](auto v) { return std::cos(v); })},
      {"tan", fl([](auto v) { return std::tan(v); })},
      {"asin", fl([](auto v) { return std::asin(v); })},
      {"acos", fl([](auto v) { return std::acos(v); })},
      {"atan", fl([](auto v) { return std::atan(v); })},
      {"sinh", fl([](auto v) { return std::sinh(v); })},
      {"cosh", fl([](auto v) { return std::cosh(v); })},
      {"tanh", fl([](auto v) { return tanh_t(v); })},
      {"asinh", fl([](auto v) { return std::asinh(v); })},
      {"acosh", fl([](auto v) { return std::acosh(v); })},
      {"atanh", fl([](auto v) { return std::atanh(v); })},
      {"sigmoid", fl([](auto v) { return sigmoid_t(v); })},
      {"erf", fl([](auto v) { return erf_t(v); })},
      {"erfc", fl([](auto v) { return std::erfc(v); })},
      {"square", [](const Tensor& x) { return map_any(x, [](auto v) { return decltype(v)(v * v); }); }},
      {"sign", [](const Tensor& x) {
         return map_any(x, [](auto v) { return decltype(v)((v > 0) - (v < 0)); });
       }},
      {"floor", [](const Tensor& x) { return is_floating(x.dtype) ? map_float(x, [](auto v) { return std::floor(v); }) : x; }},
      {"ceil", [](const Tensor& x) { return is_floating(x.dtype) ? map_float(x, [](auto v) { return std::ceil(v); }) : x; }},
      {"trunc", [](const Tensor& x) { return is_floating(x.dtype) ? map_float(x, [](auto v) { return std::trunc(v); }) : x; }},
      {"frac", fl([](auto v) { return v - std::trunc(v); })},
      {"relu", [](const Tensor& x) { return activation("relu", x); }},
  };
  for (auto& u : ufns) {
    auto f = u.f;
    std::string n = u.name;
    Handler h = [f](Call& c) -> Val {
      Args a(c, {"input"});
      return TV(f(a.tensor(0)));
    };
    r.add(K::Function, "torch." + n, h);
    r.add(K::Method, n, h);
    if (n == "sigmoid") r.add(K::Function, "torch.special.expit", h);
    if (n == "erf" || n == "erfc" || n == "expm1" || n == "exp2" || n == "log1p")
      r.add(K::Function, "torch.special." + n, h);
  }
  r.add(K::Function, {"torch.round"}, [](Call& c) -> Val {
    Args a(c, {"input", "decimals"});
    Tensor x = a.tensor(0);
    if (!is_floating(x.dtype)) return TV(x);
    double scale = std::pow(10.0, double(a.integer(1, 0)));
    return TV(map_float(x, [scale](auto v) {
      using U = decltype(v);
      return U(std::nearbyint(double(v) * scale) / scale);
    }));
  });
  r.add(K::Method, "round", *r.find(K::Function, "torch.round"));
  r.add(K::Function, {"torch.isnan", "torch.isinf", "torch.isfinite"}, [](Call& c) -> Val {
    Args a(c, {"input"});
    Tensor x = a.tensor(0);
    Tensor o = Tensor::empty(DType::BOOL, x.shape);
    const std::string& t = *c.target;
    for (int64_t i = 0; i < x.numel(); ++i) {
      double v = x.item_double(i);
      o.data<uint8_t>()[i] = t == "torch.isnan" ? std::isnan(v) : t == "torch.isinf" ? std::isinf(v) : std::isfinite(v);
    }
    return TV(o);
  });
  for (const char* m : {"isnan", "isinf", "isfinite"}) {
    std::string fn = std::string("torch.") + m;
    r.add(K::Method, m, [fn](Call& c) -> Val {
      std::string t = fn;
      Call c2 = c;
      c2.target = &t;
      return (*registry().find(OpKind::Function, fn))(c2);
    });
  }

  // ---- activations: functional forms
  auto act_fn = [&r](std::initializer_list<const char*> fn_names, std::initializer_list<const char*> methods,
                     std::initializer_list<const char*> params, std::function<Tensor(const Tensor&, const Args&)> f) {
    std::vector<const char*> names = {"input"};
    names.insert(names.end(), params.begin(), params.end());
    Handler h = [f, names](Call& c) -> Val {
      // Args needs an initializer_list; bind by hand for the variable parameter list.
      std::vector<const char*> ns = names;
      Args a = [&]() {
        switch (ns.size()) {
          case 1: return Args(c, {ns[0]});
          case 2: return Args(c, {ns[0], ns[1]});
          case 3: return Args(c, {ns[0], ns[1], ns[2]});
          case 4: return Args(c, {ns[0], ns[1], ns[2], ns[3]});
          default: return Args(c, {ns[0], ns[1], ns[2], ns[3], ns[4]});
        }
      }();
      return TV(f(a.tensor(0), a));
    };
    r.add(K::Function, fn_names, h);
    r.add(K::Method, methods, h);
  };
  act_fn({"torch.nn.functional.relu", "torch.relu", "torch.nn.functional.relu_", "torch.relu_"}, {"relu_"},
         {"inplace"}, [](const Tensor& x, const Args&) { return activation("relu", x); });
  act_fn({"torch.nn.functional.relu6"}, {}, {"inplace"}, [](const Tensor& x, const Args&) {
    return map_any(x, [](auto v) { using U = decltype(v); return std::min(std::max(v, U(0)), U(6)); });
  });
  act_fn({"torch.nn.functional.leaky_relu", "torch.nn.functional.leaky_relu_"}, {}, {"negative_slope", "inplace"},
         [](const Tensor& x, const Args& a) {
           double s = a.dbl(1, 0.01);
           return map_float(x, [s](auto v) { using U = decltype(v); return v > 0 ? v : v * U(s); });
         });
  act_fn({"torch.nn.functional.elu", "torch.nn.functional.elu_"}, {}, {"alpha", "inplace"},
         [](const Tensor& x, const Args& a) {
           double al = a.dbl(1, 1.0);
           return map_float(x, [al](auto v) { using U = decltype(v); return v > 0 ? v : U(al) * std::expm1(v); });
         });
  act_fn({"torch.nn.functional.celu", "torch.celu"}, {}, {"alpha", "inplace"}, [](const Tensor& x, const Args& a) {
    double al = a.dbl(1, 1.0);
    return map_float(x, [al](auto v) {
      using U = decltype(v);
      return std::max(U(0), v) + std::min(U(0), U(al) * std::expm1(v / U(al)));
    });
  });
  act_fn({"torch.nn.functional.selu", "torch.selu"}, {}, {"inplace"}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) {
      using U = decltype(v);
      const U alpha = U(1.6732632423543772848170429916717), scale = U(1.0507009873554804934193349852946);
      return scale * (v > 0 ? v : alpha * std::expm1(v));
    });
  });
  act_fn({"torch.nn.functional.gelu"}, {"gelu"}, {"approximate"}, [](const Tensor& x, const Args& a) {
    std::string ap = a.str(1, "none");
    if (ap != "none" && ap != "tanh") fail("unknown GELU approximation '" + ap + "'");
    return activation(ap == "tanh" ? "gelu_tanh" : "gelu", x);
  });
  act_fn({"torch.nn.functional.silu"}, {"silu"}, {"inplace"}, [](const Tensor& x, const Args&) {
    return activation("silu", x);
  });
  act_fn({"torch.nn.functional.mish"}, {"mish"}, {"inplace"}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) { return v * tanh_t(softplus_t(v, decltype(v)(1), decltype(v)(20))); });
  });
  act_fn({"torch.nn.functional.hardswish"}, {}, {"inplace"}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) {
      using U = decltype(v);
      return v * std::min(std::max(v + U(3), U(0)), U(6)) / U(6);
    });
  });
  act_fn({"torch.nn.functional.hardsigmoid"}, {}, {"inplace"}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) { using U = decltype(v); return std::min(std::max(v + U(3), U(0)), U(6)) / U(6); });
  });
  act_fn({"torch.nn.functional.hardtanh", "torch.nn.functional.hardtanh_"}, {}, {"min_val", "max_val", "inplace"},
         [](const Tensor& x, const Args& a) {
           double lo = a.dbl(1, -1.0), hi = a.dbl(2, 1.0);
           return map_any(x, [lo, hi](auto v) {
             using U = decltype(v);
             return std::min(std::max(v, U(lo)), U(hi));
           });
         });
  act_fn({"torch.nn.functional.sigmoid"}, {}, {}, [](const Tensor& x, const Args&) { return activation("sigmoid", x); });
  act_fn({"torch.nn.functional.tanh"}, {}, {}, [](const Tensor& x, const Args&) { return activation("tanh", x); });
  act_fn({"torch.nn.functional.softplus"}, {}, {"beta", "threshold"}, [](const Tensor& x, const Args& a) {
    double beta = a.dbl(1, 1.0), th = a.dbl(2, 20.0);
    return map_float(x, [beta, th](auto v) { using U = decltype(v); return softplus_t(v, U(beta), U(th)); });
  });
  act_fn({"torch.nn.functional.softsign"}, {}, {}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) { return v / (decltype(v)(1) + std::fabs(v)); });
  });
  act_fn({"torch.nn.functional.softshrink"}, {}, {"lambd"}, [](const Tensor& x, const Args& a) {
    double l = a.dbl(1, 0.5);
    return map_float(x, [l](auto v) {
      using U = decltype(v);
      return v > U(l) ? v - U(l) : (v < -U(l) ? v + U(l) : U(0));
    });
  });
  act_fn({"torch.nn.functional.hardshrink", "torch.hardshrink"}, {"hardshrink"}, {"lambd"}, [](const Tensor& x, const Args& a) {
    double l = a.dbl(1, 0.5);
    return map_float(x, [l](auto v) { using U = decltype(v); return (v > U(l) || v < -U(l)) ? v : U(0); });
  });
  act_fn({"torch.nn.functional.tanhshrink"}, {}, {}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) { return v - tanh_t(v); });
  });
  act_fn({"torch.nn.functional.threshold", "torch.threshold", "torch.nn.functional.threshold_", "torch.threshold_"}, {},
         {"threshold", "value", "inplace"}, [](const Tensor& x, const Args& a) {
           double th = a.dbl(1, 0), val = a.dbl(2, 0);
           return map_any(x, [th, val](auto v) { using U = decltype(v); return double(v) > th ? v : U(val); });
         });
  act_fn({"torch.nn.functional.logsigmoid"}, {}, {}, [](const Tensor& x, const Args&) {
    return map_float(x, [](auto v) {
      using U = decltype(v);
      return std::min(v, U(0)) - std::log1p(std::exp(-std::fabs(v)));
    });
  });

  // ---- activation modules
  auto act_mod = [&r](const char* type, std::function<Tensor(const Tensor&, const Attrs&)> f) {
    r.add(K::Module, type, [f](Call& c) -> Val {
      if (c.args.size() != 1 || !c.kwargs.empty()) fail("expected one input tensor");
      return TV(f(c.args[0].as_tensor(), c.attrs));
    });
  };
  act_mod("torch.nn.ReLU", [](const Tensor& x, const Attrs&) { return activation("relu", x); });
  act_mod("torch.nn.ReLU6", [](const Tensor& x, const Attrs&) {
    return map_any(x, [](auto v) { using U = decltype(v); return std::min(std::max(v, U(0)), U(6)); });
  });
  act_mod("torch.nn.LeakyReLU", [](const Tensor& x, const Attrs& at) {
    double s = at.dbl("negative_slope");
    return map_float(x, [s](auto v) { using U = decltype(v); return v > 0 ? v : v * U(s); });
  });
  act_mod("torch.nn.PReLU", [](const Tensor& x0, const Attrs& at) {
    Tensor x = as_float(x0);
    Tensor w = as_dtype(at.tensor("weight"), x.dtype);
    int64_t np = w.numel();
    if (np == 1) {
      double a = w.item_double(0);
      return map_float(x, [a](auto v) { using U = decltype(v); return v > 0 ? v : U(a) * v; });
    }
    if (x.dim() < 2 || x.shape[1] != np) fail("PReLU with " + std::to_string(np) + " parameters on " + shape_str(x.shape));
    Shape ws(size_t(x.dim()), 1);
    ws[1] = np;
    Tensor wb = w.reshaped(ws);
    Tensor pos = map_any(x, [](auto v) { return v > 0 ? v : decltype(v)(0); });
    Tensor neg = map_any(x, [](auto v) { return v < 0 ? v : decltype(v)(0); });
    return binary(BinOp::Add, pos, binary(BinOp::Mul, neg, wb));
  });
  act_mod("torch.nn.ELU", [](const Tensor& x, const Attrs& at) {
    double al = at.dbl("alpha");
    return map_float(x, [al](auto v) { using U = decltype(v); return v > 0 ? v : U(al) * std::expm1(v); });
  });
  act_mod("torch.nn.CELU", [](const Tensor& x, const Attrs& at) {
    double al = at.dbl("alpha");
    return map_float(x, [al](auto v) {
      using U = decltype(v);
      return std::max(U(0), v) + std::min(U(0), U(al) * std::expm1(v / U(al)));
    });
  });
  act_mod("torch.nn.SELU", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) {
      using U = decltype(v);
      const U alpha = U(1.6732632423543772848170429916717), scale = U(1.0507009873554804934193349852946);
      return scale * (v > 0 ? v : alpha * std::expm1(v));
    });
  });
  act_mod("torch.nn.GELU", [](const Tensor& x, const Attrs& at) {
    std::string ap = at.str("approximate");
    if (ap != "none" && ap != "tanh") fail("unknown GELU approximation '" + ap + "'");
    return activation(ap == "tanh" ? "gelu_tanh" : "gelu", x);
  });
  act_mod("torch.nn.SiLU", [](const Tensor& x, const Attrs&) { return activation("silu", x); });
  act_mod("torch.nn.Mish", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) { return v * tanh_t(softplus_t(v, decltype(v)(1), decltype(v)(20))); });
  });
  act_mod("torch.nn.Hardswish", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) {
      using U = decltype(v);
      return v * std::min(std::max(v + U(3), U(0)), U(6)) / U(6);
    });
  });
  act_mod("torch.nn.Hardsigmoid", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) { using U = decltype(v); return std::min(std::max(v + U(3), U(0)), U(6)) / U(6); });
  });
  act_mod("torch.nn.Hardtanh", [](const Tensor& x, const Attrs& at) {
    double lo = at.dbl("min_val"), hi = at.dbl("max_val");
    return map_any(x, [lo, hi](auto v) { using U = decltype(v); return std::min(std::max(v, U(lo)), U(hi)); });
  });
  act_mod("torch.nn.Sigmoid", [](const Tensor& x, const Attrs&) { return activation("sigmoid", x); });
  act_mod("torch.nn.Tanh", [](const Tensor& x, const Attrs&) { return activation("tanh", x); });
  act_mod("torch.nn.Softplus", [](const Tensor& x, const Attrs& at) {
    double beta = at.dbl("beta"), th = at.dbl("threshold");
    return map_float(x, [beta, th](auto v) { using U = decltype(v); return softplus_t(v, U(beta), U(th)); });
  });
  act_mod("torch.nn.Softsign", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) { return v / (decltype(v)(1) + std::fabs(v)); });
  });
  act_mod("torch.nn.Softshrink", [](const Tensor& x, const Attrs& at) {
    double l = at.dbl("lambd");
    return map_float(x, [l](auto v) {
      using U = decltype(v);
      return v > U(l) ? v - U(l) : (v < -U(l) ? v + U(l) : U(0));
    });
  });
  act_mod("torch.nn.Hardshrink", [](const Tensor& x, const Attrs& at) {
    double l = at.dbl("lambd");
    return map_float(x, [l](auto v) { using U = decltype(v); return (v > U(l) || v < -U(l)) ? v : U(0); });
  });
  act_mod("torch.nn.Tanhshrink", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) { return v - tanh_t(v); });
  });
  act_mod("torch.nn.Threshold", [](const Tensor& x, const Attrs& at) {
    double th = at.dbl("threshold"), val = at.dbl("value");
    return map_any(x, [th, val](auto v) { using U = decltype(v); return double(v) > th ? v : U(val); });
  });
  act_mod("torch.nn.LogSigmoid", [](const Tensor& x, const Attrs&) {
    return map_float(x, [](auto v) {
      using U = decltype(v);
      return std::min(v, U(0)) - std::log1p(std::exp(-std::fabs(v)));
    });
  });
  act_mod("torch.nn.RReLU", [](const Tensor& x, const Attrs& at) {  // inference: fixed slope (lower+upper)/2
    double s = (at.dbl("lower") + at.dbl("upper")) / 2;
    return map_float(x, [s](auto v) { using U = decltype(v); return v >= 0 ? v : v * U(s); });
  });
  act_mod("torch.nn.Identity", [](const Tensor& x, const Attrs&) { return x; });
  for (const char* d : {"torch.nn.Dropout", "torch.nn.Dropout1d", "torch.nn.Dropout2d", "torch.nn.Dropout3d",
                        "torch.nn.AlphaDropout", "torch.nn.FeatureAlphaDropout"})
    act_mod(d, [](const Tensor& x, const Attrs&) { return x; });
  // Identity accepts anything
  r.add(K::Module, "torch.nn.Identity", [](Call& c) -> Val {
    if (c.args.empty()) fail("Identity needs an input");
    return c.args[0];
  });
  r.add(K::Function, {"torch.nn.functional.dropout", "torch.nn.functional.dropout1d", "torch.nn.functional.dropout2d",
                      "torch.nn.functional.dropout3d", "torch.nn.functional.alpha_dropout",
                      "torch.nn.functional.feature_alpha_dropout", "torch.dropout"},
        [](Call& c) -> Val {
          Args a(c, {"input", "p", "training", "inplace"});
          bool training = a.flag(2, *c.target != "torch.dropout");
          if (training && a.dbl(1, 0.5) > 0)
            fail("dropout with training=True is random; the runtime only runs inference");
          return a[0];
        });

  // ---- softmax family
  auto softmax_fn = [](bool log, bool neg) {
    return [log, neg](Call& c) -> Val {
      Args a(c, {"input", "dim", "_stacklevel", "dtype"});
      Tensor x = a.tensor(0);
      if (a.has(3)) x = x.to(a[3].dt);
      if (!a.has(1)) {  // legacy implicit dim
        int64_t nd = x.dim();
        int64_t d = (nd == 0 || nd == 1 || nd == 3) ? 0 : 1;
        return TV(softmax(neg ? map_any(x, [](auto v) { return decltype(v)(-v); }) : x, d, log));
      }
      if (neg) x = map_any(x, [](auto v) { return decltype(v)(-v); });
      return TV(softmax(x, a.integer(1, -1), log));
    };
  };
  r.add(K::Function, {"torch.nn.functional.softmax", "torch.softmax", "torch.special.softmax"}, softmax_fn(false, false));
  r.add(K::Method, "softmax", softmax_fn(false, false));
  r.add(K::Function, {"torch.nn.functional.log_softmax", "torch.log_softmax", "torch.special.log_softmax"},
        softmax_fn(true, false));
  r.add(K::Method, "log_softmax", softmax_fn(true, false));
  r.add(K::Function, "torch.nn.functional.softmin", softmax_fn(false, true));
  auto softmax_mod = [](bool log, bool neg) {
    return [log, neg](Call& c) -> Val {
      Tensor x = c.args.at(0).as_tensor();
      const Val& dv = c.attrs.get("dim");
      int64_t d;
      if (dv.is_none()) {
        int64_t nd = x.dim();
        d = (nd == 0 || nd == 1 || nd == 3) ? 0 : 1;
      } else {
        d = dv.as_int();
      }
      if (neg) x = map_any(x, [](auto v) { return decltype(v)(-v); });
      return TV(softmax(x, d, log));
    };
  };
  r.add(K::Module, "torch.nn.Softmax", softmax_mod(false, false));
  r.add(K::Module, "torch.nn.LogSoftmax", softmax_mod(true, false));
  r.add(K::Module, "torch.nn.Softmin", softmax_mod(false, true));
  r.add(K::Module, "torch.nn.Softmax2d", [](Call& c) -> Val {
    Tensor x = c.args.at(0).as_tensor();
    if (x.dim() != 3 && x.dim() != 4) fail("Softmax2d expects a 3-D or 4-D input");
    return TV(softmax(x, -3, false));
  });
  r.add(K::Module, "torch.nn.GLU", [](Call& c) -> Val {
    Tensor x = c.args.at(0).as_tensor();
    int64_t d = norm_dim(c.attrs.integer("dim"), x.dim());
    int64_t n = x.shape[size_t(d)];
    if (n % 2) fail("GLU needs an even size along dim");
    return TV(binary(BinOp::Mul, narrow(x, d, 0, n / 2), activation("sigmoid", narrow(x, d, n / 2, n / 2))));
  });
  r.add(K::Function, "torch.nn.functional.glu", [](Call& c) -> Val {
    Args a(c, {"input", "dim"});
    Tensor x = a.tensor(0);
    int64_t d = norm_dim(a.integer(1, -1), x.dim());
    int64_t n = x.shape[size_t(d)];
    if (n % 2) fail("GLU needs an even size along dim");
    return TV(binary(BinOp::Mul, narrow(x, d, 0, n / 2), activation("sigmoid", narrow(x, d, n / 2, n / 2))));
  });

  // ---- clamp / where / masked_fill / lerp
  Handler clamp = [](Call& c) -> Val {
    Args a(c, {"input", "min", "max"});
    Val x = a[0];
    const std::string& t = *c.target;
    bool only_min = t == "clamp_min", only_max = t == "clamp_max";
    const Val* lo = nullptr;
    const Val* hi = nullptr;
    if (only_min) lo = &a[1];
    else if (only_max) hi = &a[1];
    else {
      if (a.has(1)) lo = &a[1];
      if (a.has(2)) hi = &a[2];
    }
    if (lo && lo->is_none()) lo = nullptr;
    if (hi && hi->is_none()) hi = nullptr;
    if (!lo && !hi) fail("clamp needs min or max");
    if (lo) x = binary(BinOp::Maximum, x, *lo);
    if (hi) x = binary(BinOp::Minimum, x, *hi);
    // keep the input dtype for Python-number bounds (torch.clamp does not promote int to float by a scalar)
    DType want = result_type({&a[0], lo, hi});
    return TV(as_dtype(x.t, want));
  };
  r.add(K::Function, {"torch.clamp", "torch.clip"}, clamp);
  r.add(K::Method, {"clamp", "clip", "clamp_min", "clamp_max"}, clamp);
  r.add(K::Function, {"torch.clamp_min", "torch.clamp_max"}, [clamp](Call& c) -> Val {
    std::string t = c.target->substr(6);
    Call c2 = c;
    c2.target = &t;
    return clamp(c2);
  });
  Handler where_h = [](Call& c) -> Val {
    Args a(c, {"condition", "input", "other"});
    if (!a.given(1)) fail("torch.where(condition) (nonzero) is not supported");
    return TV(where(a.tensor(0), a[1], a[2]));
  };
  r.add(K::Function, "torch.where", where_h);
  r.add(K::Method, "where", [](Call& c) -> Val {  // x.where(cond, y)
    Args a(c, {"input", "condition", "other"});
    return TV(where(a.tensor(1), a[0], a[2]));
  });
  Handler masked_fill = [](Call& c) -> Val {
    Args a(c, {"input", "mask", "value"});
    Tensor x = a.tensor(0);
    Tensor m = a.tensor(1);
    if (m.dtype != DType::BOOL) fail("masked_fill expects a bool mask");
    Val v = a[2];
    if (v.is_tensor()) v = Val::real(v.as_double());
    Tensor r = where(m, v, Val::tensor(x));
    if (r.shape != x.shape) fail("masked_fill mask of shape " + shape_str(m.shape) + " does not broadcast to " + shape_str(x.shape));
    return TV(as_dtype(r, x.dtype));
  };
  r.add(K::Function, "torch.masked_fill", masked_fill);
  r.add(K::Method, "masked_fill", masked_fill);
  r.add(K::Function, "torch.lerp", [](Call& c) -> Val {
    Args a(c, {"input", "end", "weight"});
    Val d = binary(BinOp::Sub, a[1], a[0]);
    return binary(BinOp::Add, a[0], binary(BinOp::Mul, d, a[2]));
  });
  r.add(K::Method, "lerp", *r.find(K::Function, "torch.lerp"));
  r.add(K::Function, {"torch.addcmul", "torch.addcdiv"}, [](Call& c) -> Val {
    Args a(c, {"input", "tensor1", "tensor2", "value"});
    Val p = binary(*c.target == "torch.addcmul" ? BinOp::Mul : BinOp::Div, a[1], a[2]);
    if (a.has(3)) p = binary(BinOp::Mul, p, a[3]);
    return binary(BinOp::Add, a[0], p);
  });

  // ---- reductions
  auto red_handler = [](Red kind) {
    return [kind](Call& c) -> Val {
      bool is_var = kind == Red::Var || kind == Red::Std;
      Args a = is_var ? Args(c, {"input", "dim", "unbiased", "keepdim", "correction"})
                      : Args(c, {"input", "dim", "keepdim", "dtype"});
      Tensor x = a.tensor(0);
      const Val* dv = a.given(1) ? &a[1] : nullptr;
      bool keepdim = a.flag(is_var ? 3 : 2, false);
      if (is_var && a.given(1) && a[1].k == Val::K::Bool) {  // var(x, unbiased)
        dv = nullptr;
      }
      std::vector<int64_t> dims = reduce_dims(x, dv);
      if (dv && dv->is_seq() && dv->seq().empty())
        for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
      switch (kind) {
        case Red::Sum: case Red::Prod: {
          DType od = sum_dtype(x.dtype, a, 3);
          Tensor xi = x;
          if (is_floating(od) && !is_floating(x.dtype)) xi = x.to(od);
          return TV(reduce(xi, kind, dims, keepdim, od));
        }
        case Red::Mean: {
          DType od = a.has(3) ? a[3].dt : x.dtype;
          if (!is_floating(od)) fail("mean of a non-floating tensor needs a floating dtype");
          return TV(reduce(x, kind, dims, keepdim, od));
        }
        case Red::Var: case Red::Std: {
          double corr = 1;
          if (a.has(4)) corr = a.dbl(4, 1);
          else if (a.given(1) && a[1].k == Val::K::Bool) corr = a[1].b ? 1 : 0;
          else if (a.has(2)) corr = a.flag(2, true) ? 1 : 0;
          return TV(reduce(as_float(x), kind, dims, keepdim, as_float(x).dtype, corr));
        }
        case Red::All: case Red::Any:
          return TV(reduce(x, kind, dims, keepdim, DType::BOOL));
        case Red::LogSumExp:
          return TV(reduce(as_float(x), kind, dims, keepdim, as_float(x).dtype));
        default:
          return TV(reduce(x, kind, dims, keepdim, x.dtype));
      }
    };
  };
  struct RedName { const char* name; Red kind; };
  for (auto rn : {RedName{"sum", Red::Sum}, RedName{"mean", Red::Mean}, RedName{"prod", Red::Prod},
                  RedName{"amax", Red::Max}, RedName{"amin", Red::Min}, RedName{"all", Red::All},
                  RedName{"any", Red::Any}, RedName{"var", Red::Var}, RedName{"std", Red::Std},
                  RedName{"logsumexp", Red::LogSumExp}, RedName{"nansum", Red::Sum}}) {
    Handler h = red_handler(rn.kind);
    r.add(K::Function, std::string("torch.") + rn.name, h);
    r.add(K::Method, rn.name, h);
  }
  // max / min: full reduction, elementwise with another tensor, or (values, indices) along a dim
  auto maxmin = [](bool is_max) {
    return [is_max](Call& c) -> Val {
      Args a(c, {"input", "dim", "keepdim"});
      Tensor x = a.tensor(0);
      if (a.given(1) && a[1].is_tensor()) return binary(is_max ? BinOp::Maximum : BinOp::Minimum, a[0], a[1]);
      if (!a.has(1)) return TV(reduce(x, is_max ? Red::Max : Red::Min, reduce_dims(x, nullptr), false, x.dtype));
      int64_t d = norm_dim(a.integer(1, 0), x.dim());
      bool keep = a.flag(2, false);
      Tensor v = reduce(x, is_max ? Red::Max : Red::Min, {d}, keep, x.dtype);
      Tensor i = reduce(x, is_max ? Red::ArgMax : Red::ArgMin, {d}, keep, DType::I64);
      return Val::tuple({TV(v), TV(i)});
    };
  };
  r.add(K::Function, "torch.max", maxmin(true));
  r.add(K::Method, "max", maxmin(true));
  r.add(K::Function, "torch.min", maxmin(false));
  r.add(K::Method, "min", maxmin(false));
  auto argm = [](bool is_max) {
    return [is_max](Call& c) -> Val {
      Args a(c, {"input", "dim", "keepdim"});
      Tensor x = a.tensor(0);
      if (!a.has(1)) {
        Tensor flat = x.reshaped({x.numel()});
        Tensor i = reduce(flat, is_max ? Red::ArgMax : Red::ArgMin, {0}, false, DType::I64);
        if (a.flag(2, false)) i = i.reshaped(Shape(size_t(x.dim()), 1));
        return TV(i);
      }
      int64_t d = norm_dim(a.integer(1, 0), x.dim());
      return TV(reduce(x, is_max ? Red::ArgMax : Red::ArgMin, {d}, a.flag(2, false), DType::I64));
    };
  };
  r.add(K::Function, "torch.argmax", argm(true));
  r.add(K::Method, "argmax", argm(true));
  r.add(K::Function, "torch.argmin", argm(false));
  r.add(K::Method, "argmin", argm(false));
  Handler norm_h = [](Call& c) -> Val {
    Args a(c, {"input", "p", "dim", "keepdim", "dtype"});
    Tensor x = as_float(a.tensor(0));
    double p = 2;
    if (a.has(1)) {
      if (a[1].k == Val::K::Str) {
        if (a[1].s != "fro") fail("norm p='" + a[1].s + "' is not supported");
      } else {
        p = a.dbl(1, 2);
      }
    }
    const Val* dv = a.given(2) ? &a[2] : nullptr;
    return TV(reduce(x, Red::Norm, reduce_dims(x, dv), a.flag(3, false), x.dtype, p));
  };
  r.add(K::Function, "torch.norm", norm_h);
  r.add(K::Method, "norm", norm_h);
  r.add(K::Function, "torch.linalg.vector_norm", [](Call& c) -> Val {
    Args a(c, {"x", "ord", "dim", "keepdim", "dtype"});
    Tensor x = as_float(a.tensor(0));
    const Val* dv = a.given(2) ? &a[2] : nullptr;
    return TV(reduce(x, Red::Norm, reduce_dims(x, dv), a.flag(3, false), x.dtype, a.dbl(1, 2)));
  });
  Handler cumsum = [](Call& c) -> Val {
    Args a(c, {"input", "dim", "dtype"});
    Tensor x = a.tensor(0);
    DType od = a.has(2) ? a[2].dt : (is_floating(x.dtype) ? x.dtype : DType::I64);
    x = x.to(od);
    int64_t d = norm_dim(a.integer(1, 0), x.dim());
    int64_t outer = 1, inner = 1, n = x.dim() ? x.shape[size_t(d)] : 1;
    for (int64_t i = 0; i < d; ++i) outer *= x.shape[size_t(i)];
    for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.shape[size_t(i)];
    Tensor o = x.clone();
    bool prod = *c.target == "torch.cumprod" || *c.target == "cumprod";
    dispatch(o.ptype(), [&](auto tag) {
      using U = decltype(tag);
      U* p = o.data<U>();
      for (int64_t a0 = 0; a0 < outer; ++a0)
        for (int64_t k = 1; k < n; ++k)
          for (int64_t j = 0; j < inner; ++j) {
            U& cur = p[(a0 * n + k) * inner + j];
            U prev = p[(a0 * n + k - 1) * inner + j];
            cur = prod ? U(cur * prev) : U(cur + prev);
          }
    });
    round_to_dtype(o);
    return TV(o);
  };
  r.add(K::Function, {"torch.cumsum", "torch.cumprod"}, cumsum);
  // ---- sorting: sort / argsort / topk along a dim (NaN sorts as the largest value, like torch)
  auto sort_dim = [](const Tensor& x, int64_t dim, bool descending, int64_t k, Tensor& values, Tensor& indices) {
    int64_t d = norm_dim(dim, std::max<int64_t>(x.dim(), 1));
    Tensor xx = x.dim() == 0 ? x.reshaped({1}) : x;
    int64_t n = xx.shape[size_t(d)], outer = 1, inner = 1;
    for (int64_t i = 0; i < d; ++i) outer *= xx.shape[size_t(i)];
    for (int64_t i = d + 1; i < xx.dim(); ++i) inner *= xx.shape[size_t(i)];
    if (k < 0 || k > n) fail("selected index k out of range");
    Shape os = xx.shape;
    os[size_t(d)] = k;
    values = Tensor::empty(xx.dtype, os);
    indices = Tensor::empty(DType::I64, os);
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::vector<double> key(static_cast<size_t>(n));
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t in = 0; in < inner; ++in) {
        for (int64_t j = 0; j < n; ++j) {
          order[size_t(j)] = j;
          key[size_t(j)] = xx.item_double((o * n + j) * inner + in);
        }
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
          double va = key[size_t(a)], vb = key[size_t(b)];
          bool na = std::isnan(va), nb = std::isnan(vb);
          if (na || nb) return descending ? (na && !nb) : (!na && nb);
          return descending ? va > vb : va < vb;
        });
        for (int64_t j = 0; j < k; ++j) {
          int64_t src = (o * n + order[size_t(j)]) * inner + in, dst = (o * k + j) * inner + in;
          dispatch(xx.ptype(), [&](auto tag) {
            using U = decltype(tag);
            values.data<U>()[dst] = xx.data<U>()[src];
          });
          indices.data<int64_t>()[dst] = order[size_t(j)];
        }
      }
    if (x.dim() == 0) {
      values = values.reshaped({});
      indices = indices.reshaped({});
    }
  };
  Handler sort_h = [sort_dim](Call& c) -> Val {
    Args a(c, {"input", "dim", "descending", "stable"});
    Tensor x = a.tensor(0), v, i;
    int64_t d = a.integer(1, -1);
    int64_t n = x.dim() ? x.shape[size_t(norm_dim(d, x.dim()))] : 1;
    sort_dim(x, d, a.flag(2, false), n, v, i);
    return Val::tuple({TV(v), TV(i)});
  };
  r.add(K::Function, "torch.sort", sort_h);
  r.add(K::Method, "sort", sort_h);
  Handler argsort_h = [sort_dim](Call& c) -> Val {
    Args a(c, {"input", "dim", "descending", "stable"});
    Tensor x = a.tensor(0), v, i;
    int64_t d = a.integer(1, -1);
    int64_t n = x.dim() ? x.shape[size_t(norm_dim(d, x.dim()))] : 1;
    sort_dim(x, d, a.flag(2, false), n, v, i);
    return TV(i);
  };
  r.add(K::Function, "torch.argsort", argsort_h);
  r.add(K::Method, "argsort", argsort_h);
  Handler topk_h = [sort_dim](Call& c) -> Val {
    Args a(c, {"input", "k", "dim", "largest", "sorted"});
    Tensor x = a.tensor(0), v, i;
    sort_dim(x, a.integer(2, -1), a.flag(3, true), a.integer(1, 1), v, i);
    return Val::tuple({TV(v), TV(i)});
  };
  r.add(K::Function, "torch.topk", topk_h);
  r.add(K::Method, "topk", topk_h);

  r.add(K::Method, {"cumsum", "cumprod"}, cumsum);
}

}  // namespace fxlower::rt
