// fxlower reference runtime: kernels shared between the operator families, and the loop helpers they use.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "parallel.hpp"
#include "value.hpp"

namespace fxlower::rt {

// ------------------------------------------------------------------------------------------------ dispatch

// Calls f(T{}) with T the physical element type of p: float, double, int64_t or uint8_t.
template <class F>
decltype(auto) dispatch(PType p, F&& f) {
  switch (p) {
    case PType::F32: return f(float{});
    case PType::F64: return f(double{});
    case PType::I64: return f(int64_t{});
    default: return f(uint8_t{});
  }
}

// Calls f(T{}) for a floating physical type (float or double); an Error otherwise.
template <class F>
decltype(auto) dispatch_float(PType p, F&& f) {
  if (p == PType::F64) return f(double{});
  if (p != PType::F32) fail("expected a floating point tensor");
  return f(float{});
}

template <class T>
inline bool isnan_t(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  else return false;
}

// The same data seen with another dtype of the same physical type (shared), or converted (copied).
Tensor as_dtype(const Tensor& t, DType dt);
// Floating input for float kernels: integer and bool tensors become F32 (a copy), floats are returned as is.
Tensor as_float(const Tensor& t);

constexpr int64_t kGrain = 16384;  // elements per thread below which loops stay serial

// ------------------------------------------------------------------------------------------------ broadcasting

Shape broadcast_shapes(const Shape& a, const Shape& b);

// Iterates an output shape over up to three broadcast inputs. body(out_offset, in_offsets, n, in_inner_strides)
// handles one run of n consecutive output elements; each input advances by its inner stride (0 or 1) per element.
class Bcast {
 public:
  Bcast(const Shape& out, std::initializer_list<const Shape*> inputs);
  template <class F>
  void run(F&& body) const;
  int64_t numel() const { return numel_; }

 private:
  int nin_ = 0;
  int64_t numel_ = 1;
  std::vector<int64_t> dims_;                  // coalesced sizes, outermost first
  std::vector<std::array<int64_t, 3>> st_;     // per dim: each input's stride
};

template <class F>
void Bcast::run(F&& body) const {
  if (numel_ == 0) return;
  const size_t nd = dims_.size();
  const int64_t inner = dims_[nd - 1];
  const int64_t rows = numel_ / inner;
  std::array<int64_t, 3> inner_st{};
  for (int k = 0; k < nin_; ++k) inner_st[size_t(k)] = st_[nd - 1][size_t(k)];
  // Split long rows so that a single row can still use every thread.
  const int64_t nsplit = rows >= 8 ? 1 : std::max<int64_t>(1, std::min<int64_t>(inner / 8192, 64));
  const int64_t ic = (inner + nsplit - 1) / nsplit;
  const int64_t items = rows * nsplit;
  const int64_t grain = std::max<int64_t>(1, kGrain / std::min(ic, inner));
  parallel_for(items, grain, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t r = it / nsplit, s = it % nsplit;
      std::array<int64_t, 3> off{};
      int64_t rem = r;
      for (size_t d = nd - 1; d-- > 0;) {
        int64_t idx = rem % dims_[d];
        rem /= dims_[d];
        for (int k = 0; k < nin_; ++k) off[size_t(k)] += idx * st_[d][size_t(k)];
      }
      int64_t j0 = s * ic, j1 = std::min(inner, j0 + ic);
      if (j0 >= j1) continue;
      for (int k = 0; k < nin_; ++k) off[size_t(k)] += j0 * inner_st[size_t(k)];
      body(r * inner + j0, off, j1 - j0, inner_st);
    }
  });
}

// ------------------------------------------------------------------------------------------------ elementwise

enum class BinOp {
  Add, Sub, Mul, Div, FloorDiv, Mod, FMod, Pow, Maximum, Minimum, Atan2,
  Eq, Ne, Lt, Le, Gt, Ge, BitAnd, BitOr, BitXor, LogicalAnd, LogicalOr, LogicalXor, LShift, RShift
};

DType promote_types(DType a, DType b);
// torch.result_type over tensors (dimensioned ones first, then 0-dim ones) and Python numbers.
DType result_type(std::initializer_list<const Val*> operands);
// A binary operation with broadcasting and type promotion; numbers (and sequences, for + and *) follow Python.
Val binary(BinOp op, const Val& a, const Val& b);
Tensor binary(BinOp op, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Val& a, const Val& b);

// An activation by name: relu, gelu, gelu_tanh, tanh, sigmoid, silu, identity.
Tensor activation(const std::string& name, const Tensor& x);
Tensor softmax(const Tensor& x, int64_t dim, bool log);
// Sum / mean over the given dims (all when empty).
Tensor reduce_sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim, bool mean);

// Vectorisable float approximations (about 2 ulp); fast_exp is 0 below -87.3 (where expf is denormal or 0).
inline float fast_exp(float x0) {
  float x = x0 < -87.3f ? -87.3f : x0;
  x = x > 88.72f ? 88.72f : x;
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round to nearest via the 1.5 * 2^23 trick
  const float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as two factors, so that |n| up to 128 stays inside the exponent range
  const int32_t ni = int32_t(n);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const float e = p * f32_from_bits(uint32_t(n1 + 127) << 23) * f32_from_bits(uint32_t(n2 + 127) << 23);
  return x0 < -87.3f ? 0.0f : e;
}

inline float fast_tanh(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  const float small = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z +
                        1.33314422036E-1f) * z - 3.33332819422E-1f) * z * x + x;
  const float e = fast_exp(2.0f * (ax < 9.5f ? ax : 9.5f));
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = x < 0 ? -big : big;
  return ax < 0.625f ? small : big;
}

// Max and sum of n values with eight independent lanes (vectorisable without reassociation flags).
template <class T>
inline T row_max(const T* p, int64_t n) {
  T m[8];
  for (int k = 0; k < 8; ++k) m[k] = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) m[k] = p[j + k] > m[k] ? p[j + k] : m[k];
  for (; j < n; ++j) m[0] = p[j] > m[0] ? p[j] : m[0];
  T r = m[0];
  for (int k = 1; k < 8; ++k) r = m[k] > r ? m[k] : r;
  return r;
}
template <class T>
inline T row_sum(const T* p, int64_t n) {
  T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) s[k] += p[j + k];
  for (; j < n; ++j) s[0] += p[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// Sum of n values and sum of squared deviations from `mean`, accumulated in double over eight lanes.
template <class T>
inline double sum_d(const T* p, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) s[k] += double(p[j + k]);
  for (; j < n; ++j) s[0] += double(p[j]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
template <class T>
inline double sumsq_d(const T* p, int64_t n, double mean) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) {
      const double d = double(p[j + k]) - mean;
      s[k] += d * d;
    }
  for (; j < n; ++j) s[0] += (double(p[j]) - mean) * (double(p[j]) - mean);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// ------------------------------------------------------------------------------------------------ shapes

Tensor permute(const Tensor& x, const std::vector<int64_t>& perm);  // a contiguous copy
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t stop, int64_t step);
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor expand(const Tensor& x, const Shape& shape);  // a contiguous copy
// torch.nn.functional.pad: pads = (last_lo, last_hi, prev_lo, prev_hi, ...); mode constant, reflect,
// replicate or circular.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, const std::string& mode, double value);

// ------------------------------------------------------------------------------------------------ linear algebra

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// x[..., in] @ w[out, in]^T + b[out]
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
Tensor matmul(const Tensor& a, const Tensor& b);
// Normalises over the last `nd` dims.
Tensor layer_norm(const Tensor& x, int64_t nd, const Tensor& w, const Tensor& b, double eps);
// torch.nn.functional.scaled_dot_product_attention on [..., L, E] / [..., S, E] / [..., S, Ev].
Tensor sdpa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal, double scale,
            bool has_scale, Tensor* weights_out = nullptr);

}  // namespace fxlower::rt
