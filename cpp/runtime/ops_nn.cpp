// fxlower reference runtime: linear algebra, convolution, pooling, normalisation, resampling and embeddings.
#include <cblas.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <numeric>

#include "kernels.hpp"
#include "ops.hpp"

namespace fxlower::rt {

namespace {
Val TV(Tensor t) { return Val::tensor(std::move(t)); }
}  // namespace

// ================================================================================================ gemm

namespace {

void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(M), blasint(N),
              blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
}
void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(M), blasint(N),
              blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
}

// Single-threaded OpenBLAS calls on blocks of C (the larger of M and N split), one block per pool thread.
template <class T>
void gemm_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0 ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const int nt = num_threads();
  const double work = double(M) * double(N) * double(K);
  if (nt < 2 || in_parallel_region() || work < 1.5e6 || (M < 32 && N < 32)) {
    blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool split_n = N >= M;
  const int64_t len = split_n ? N : M;
  const int64_t parts = std::min<int64_t>(nt, std::max<int64_t>(1, len / 16));
  auto edge = [&](int64_t p) { return p >= parts ? len : (len * p / parts) / 16 * 16; };
  parallel_for(parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t s0 = edge(p), s1 = edge(p + 1);
      if (s1 <= s0) continue;
      if (split_n)
        blas(ta, tb, M, s1 - s0, K, alpha, A, lda, tb ? B + s0 * ldb : B + s0, ldb, beta, C + s0, ldc);
      else
        blas(ta, tb, s1 - s0, N, K, alpha, ta ? A + s0 : A + s0 * lda, lda, B, ldb, beta, C + s0 * ldc, ldc);
    }
  });
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_impl<float>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_impl<double>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {

// Float inputs of one computation dtype (the promoted one), for kernels that take several tensors.
DType float_common(std::initializer_list<const Tensor*> ts) {
  DType d = DType::BOOL;
  bool any = false;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    d = any ? promote_types(d, t->dtype) : t->dtype;
    any = true;
  }
  if (!is_floating(d)) d = DType::F32;
  return d;
}

// Fill each of `rows` rows of length n with the bias b[n] (or zeros).
template <class T>
void fill_rows(T* out, int64_t rows, int64_t n, const Tensor& b) {
  if (b.defined()) {
    const T* pb = b.data<T>();
    for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * n, pb, size_t(n) * sizeof(T));
  } else {
    std::memset(out, 0, size_t(rows * n) * sizeof(T));
  }
}

}  // namespace

Tensor linear(const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  DType dt = float_common({&x0, &w0, &b0});
  Tensor x = as_dtype(x0, dt), w = as_dtype(w0, dt);
  Tensor b = b0.defined() ? as_dtype(b0, dt) : Tensor();
  if (w.dim() != 2) fail("linear: weight must be 2-D, got " + shape_str(w.shape));
  int64_t in = w.shape[1], out = w.shape[0];
  if (x.dim() == 0 || x.shape.back() != in)
    fail("linear: input " + shape_str(x.shape) + " does not match weight " + shape_str(w.shape));
  if (b.defined() && b.numel() != out) fail("linear: bias size mismatch");
  int64_t M = x.numel() / std::max<int64_t>(in, 1);
  if (in == 0) M = shape_numel(Shape(x.shape.begin(), x.shape.end() - 1));
  Shape os(x.shape.begin(), x.shape.end() - 1);
  os.push_back(out);
  Tensor y = Tensor::empty(dt, os);
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    fill_rows<T>(y.data<T>(), M, out, b);
    gemm(false, true, M, out, in, T(1), x.data<T>(), in, w.data<T>(), in, T(1), y.data<T>(), out);
  });
  return y;
}

Tensor matmul(const Tensor& a0, const Tensor& b0) {
  DType dt = promote_types(a0.dtype, b0.dtype);
  if (!is_floating(dt)) {
    // integer matmul: compute in double, exact for moderate values
    Tensor r = matmul(a0.to(DType::F64), b0.to(DType::F64));
    return r.to(dt);
  }
  Tensor a = as_dtype(a0, dt), b = as_dtype(b0, dt);
  if (a.dim() == 0 || b.dim() == 0) fail("matmul: both arguments need at least one dimension");
  bool va = a.dim() == 1, vb = b.dim() == 1;
  if (va) a = a.reshaped({1, a.shape[0]});
  if (vb) b = b.reshaped({b.shape[0], 1});
  int64_t M = a.shape[size_t(a.dim() - 2)], K = a.shape[size_t(a.dim() - 1)];
  int64_t K2 = b.shape[size_t(b.dim() - 2)], N = b.shape[size_t(b.dim() - 1)];
  if (K != K2) fail("matmul: shapes " + shape_str(a0.shape) + " and " + shape_str(b0.shape) + " cannot be multiplied");
  Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch = broadcast_shapes(ba, bb);
  Shape os = batch;
  if (!va) os.push_back(M);
  if (!vb) os.push_back(N);
  Tensor y = Tensor::empty(dt, os);
  int64_t nb = shape_numel(batch);
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    T* py = y.data<T>();
    if (bb.empty() || shape_numel(bb) == 1) {
      // b is one matrix: fold a's batch into M when a is one contiguous block
      if (shape_numel(ba) == nb) {
        gemm(false, false, nb * M, N, K, T(1), a.data<T>(), K, b.data<T>(), N, T(0), py, N);
        return;
      }
    }
    Tensor ae = ba == batch ? a : expand(a, [&] { Shape s = batch; s.push_back(M); s.push_back(K); return s; }());
    Tensor be = bb == batch ? b : expand(b, [&] { Shape s = batch; s.push_back(K); s.push_back(N); return s; }());
    const T* pa = ae.data<T>();
    const T* pb = be.data<T>();
    for (int64_t i = 0; i < nb; ++i)
      gemm(false, false, M, N, K, T(1), pa + i * M * K, K, pb + i * K * N, N, T(0), py + i * M * N, N);
  });
  return y;
}

// ================================================================================================ einsum

namespace {

Tensor einsum(const std::string& eq0, std::vector<Tensor> ops) {
  std::string eq;
  for (char ch : eq0)
    if (ch != ' ') eq += ch;
  std::string lhs = eq, rhs;
  bool explicit_out = false;
  size_t arrow = eq.find("->");
  if (arrow != std::string::npos) {
    lhs = eq.substr(0, arrow);
    rhs = eq.substr(arrow + 2);
    explicit_out = true;
  }
  std::vector<std::string> terms;
  {
    size_t p = 0;
    for (;;) {
      size_t q = lhs.find(',', p);
      terms.push_back(lhs.substr(p, q == std::string::npos ? std::string::npos : q - p));
      if (q == std::string::npos) break;
      p = q + 1;
    }
  }
  if (terms.size() != ops.size()) fail("einsum: the equation names " + std::to_string(terms.size()) + " operands, got " + std::to_string(ops.size()));
  if (ops.size() > 2 || ops.empty()) fail("einsum with " + std::to_string(ops.size()) + " operands is not supported");
  // expand '...' into capital letters
  int64_t ell_rank = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    size_t e = terms[i].find("...");
    if (e == std::string::npos) continue;
    int64_t named = int64_t(terms[i].size()) - 3;
    ell_rank = std::max(ell_rank, ops[i].dim() - named);
  }
  auto expand_ell = [&](std::string t, int64_t rank) {
    size_t e = t.find("...");
    if (e == std::string::npos) return t;
    int64_t k = rank - (int64_t(t.size()) - 3);
    std::string ins;
    for (int64_t j = ell_rank - k; j < ell_rank; ++j) ins += char('A' + j);
    return t.substr(0, e) + ins + t.substr(e + 3);
  };
  for (size_t i = 0; i < terms.size(); ++i) terms[i] = expand_ell(terms[i], ops[i].dim());
  if (explicit_out) {
    if (rhs.find("...") != std::string::npos) {
      std::string ins;
      for (int64_t j = 0; j < ell_rank; ++j) ins += char('A' + j);
      size_t e = rhs.find("...");
      rhs = rhs.substr(0, e) + ins + rhs.substr(e + 3);
    }
  } else {
    std::map<char, int> count;
    for (auto& t : terms) for (char ch : t) count[ch]++;
    for (int64_t j = 0; j < ell_rank; ++j) rhs += char('A' + j);
    for (auto& kv : count)
      if (kv.second == 1 && !(kv.first >= 'A' && kv.first < 'A' + ell_rank)) rhs += kv.first;
  }
  std::map<char, int64_t> size;
  for (size_t i = 0; i < terms.size(); ++i) {
    if (int64_t(terms[i].size()) != ops[i].dim()) fail("einsum: subscripts '" + terms[i] + "' do not match operand rank " + std::to_string(ops[i].dim()));
    // repeated index within a term (diagonal) is not supported
    for (size_t a = 0; a < terms[i].size(); ++a)
      for (size_t b = a + 1; b < terms[i].size(); ++b)
        if (terms[i][a] == terms[i][b]) fail("einsum: repeated subscripts within an operand are not supported");
    for (size_t a = 0; a < terms[i].size(); ++a) {
      char ch = terms[i][a];
      int64_t s = ops[i].shape[a];
      auto it = size.find(ch);
      if (it == size.end() || it->second == 1) size[ch] = s;
      else if (s != 1 && s != it->second) fail("einsum: size mismatch for subscript '" + std::string(1, ch) + "'");
    }
  }
  // sum out indices that appear in only one operand and not in the output
  auto reduce_private = [&](size_t i) {
    std::vector<int64_t> dims;
    std::string kept;
    for (size_t a = 0; a < terms[i].size(); ++a) {
      char ch = terms[i][a];
      bool elsewhere = rhs.find(ch) != std::string::npos;
      for (size_t j = 0; j < terms.size(); ++j)
        if (j != i && terms[j].find(ch) != std::string::npos) elsewhere = true;
      if (!elsewhere) dims.push_back(int64_t(a));
      else kept += ch;
    }
    if (!dims.empty()) {
      ops[i] = reduce_sum(ops[i], dims, false, false);
      terms[i] = kept;
    }
  };
  for (size_t i = 0; i < terms.size(); ++i) reduce_private(i);
  if (ops.size() == 1) {
    std::vector<int64_t> perm;
    for (char ch : rhs) {
      size_t p = terms[0].find(ch);
      if (p == std::string::npos) fail("einsum: output subscript '" + std::string(1, ch) + "' not in the inputs");
      perm.push_back(int64_t(p));
    }
    return permute(ops[0], perm);
  }
  const std::string &ta = terms[0], &tb = terms[1];
  std::string batch, left, right, contr;
  for (char ch : ta) {
    bool inb = tb.find(ch) != std::string::npos, ino = rhs.find(ch) != std::string::npos;
    if (inb && ino) batch += ch;
    else if (inb) contr += ch;
    else left += ch;
  }
  for (char ch : tb)
    if (ta.find(ch) == std::string::npos) right += ch;
  auto arrange = [&](const Tensor& t, const std::string& term, const std::string& order, Shape& sizes) {
    std::vector<int64_t> perm;
    Shape full;
    for (char ch : order) {
      perm.push_back(int64_t(term.find(ch)));
      full.push_back(size[ch]);
    }
    Tensor p = permute(t, perm);
    if (p.shape != full) p = expand(p, full);  // broadcast size-1 subscripts
    sizes = full;
    return p;
  };
  Shape sa, sb;
  Tensor A = arrange(ops[0], ta, batch + left + contr, sa);
  Tensor B = arrange(ops[1], tb, batch + contr + right, sb);
  auto prod = [&](const std::string& s) { int64_t p = 1; for (char ch : s) p *= size[ch]; return p; };
  int64_t nb = prod(batch), M = prod(left), K = prod(contr), N = prod(right);
  Tensor C = matmul(A.reshaped({nb, M, K}), B.reshaped({nb, K, N}));
  Shape cs;
  std::string cterm = batch + left + right;
  for (char ch : cterm) cs.push_back(size[ch]);
  C = C.reshaped(cs);
  std::vector<int64_t> perm;
  for (char ch : rhs) {
    size_t p = cterm.find(ch);
    if (p == std::string::npos) fail("einsum: output subscript '" + std::string(1, ch) + "' not in the inputs");
    perm.push_back(int64_t(p));
  }
  return permute(C, perm);
}

}  // namespace

// ================================================================================================ convolution

namespace {

// Spatial geometry of an N-d convolution or pooling, as 3-D (unused leading dims have size 1).
struct Geo {
  int nd = 2;
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, p[3] = {0, 0, 0}, d[3] = {1, 1, 1};
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
};

// Expands an int-or-sequence argument to nd values.
std::vector<int64_t> nd_ints(const Val& v, int nd, const char* what) {
  std::vector<int64_t> r = v.as_ints();
  if (r.size() == 1) r = std::vector<int64_t>(size_t(nd), r[0]);
  if (int(r.size()) != nd) fail(std::string(what) + " must have " + std::to_string(nd) + " values");
  return r;
}

void set3(int64_t (&dst)[3], const std::vector<int64_t>& v, int nd) {
  for (int i = 0; i < nd; ++i) dst[3 - nd + i] = v[size_t(i)];
}

// im2col for one image of C channels: col[(c, kd, kh, kw), (od, oh, ow)].
template <class T>
void im2col(const T* x, int64_t C, const Geo& g, T* col) {
  const int64_t K = g.k_size(), P = g.out_size();
  parallel_for(C * K, std::max<int64_t>(1, kGrain / std::max<int64_t>(P, 1)), [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      int64_t c = row / K, kk = row % K;
      int64_t kd = kk / (g.k[1] * g.k[2]), kh = (kk / g.k[2]) % g.k[1], kw = kk % g.k[2];
      T* dst = col + row * P;
      const T* src = x + c * g.in_size();
      for (int64_t od = 0; od < g.out[0]; ++od) {
        int64_t id = od * g.s[0] - g.p[0] + kd * g.d[0];
        for (int64_t oh = 0; oh < g.out[1]; ++oh) {
          int64_t ih = oh * g.s[1] - g.p[1] + kh * g.d[1];
          T* o = dst + (od * g.out[1] + oh) * g.out[2];
          if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
            std::memset(o, 0, size_t(g.out[2]) * sizeof(T));
            continue;
          }
          const T* srow = src + (id * g.in[1] + ih) * g.in[2];
          int64_t off = kw * g.d[2] - g.p[2];
          // valid ow: 0 <= ow*s + off < W
          int64_t lo = off >= 0 ? 0 : (-off + g.s[2] - 1) / g.s[2];
          int64_t hi = g.in[2] - 1 - off < 0 ? -1 : (g.in[2] - 1 - off) / g.s[2];
          hi = std::min(hi, g.out[2] - 1);
          lo = std::min(lo, g.out[2]);
          for (int64_t ow = 0; ow < lo; ++ow) o[ow] = 0;
          if (g.s[2] == 1) {
            if (hi >= lo) std::memcpy(o + lo, srow + lo + off, size_t(hi - lo + 1) * sizeof(T));
          } else {
            for (int64_t ow = lo; ow <= hi; ++ow) o[ow] = srow[ow * g.s[2] + off];
          }
          for (int64_t ow = std::max(hi + 1, lo); ow < g.out[2]; ++ow) o[ow] = 0;
        }
      }
    }
  });
}

// im2col restricted to the output positions [p0, p1): col[(c, kd, kh, kw), p - p0], row length p1 - p0.
template <class T>
void im2col_cols(const T* x, int64_t C, const Geo& g, int64_t p0, int64_t p1, T* col) {
  const int64_t K = g.k_size(), W = p1 - p0, OW = g.out[2], OHW = g.out[1] * g.out[2];
  for (int64_t row = 0; row < C * K; ++row) {
    const int64_t c = row / K, kk = row % K;
    const int64_t kd = kk / (g.k[1] * g.k[2]), kh = (kk / g.k[2]) % g.k[1], kw = kk % g.k[2];
    const T* src = x + c * g.in_size();
    T* dst = col + row * W;
    const int64_t off = kw * g.d[2] - g.p[2];
    int64_t vlo = off >= 0 ? 0 : (-off + g.s[2] - 1) / g.s[2];  // valid ow: 0 <= ow*s + off < in
    int64_t vhi = g.in[2] - 1 - off < 0 ? -1 : (g.in[2] - 1 - off) / g.s[2];
    for (int64_t p = p0; p < p1;) {
      const int64_t od = p / OHW, rem = p % OHW, oh = rem / OW, ow0 = rem % OW;
      const int64_t ow1 = std::min(OW, ow0 + (p1 - p));
      T* o = dst + (p - p0) - ow0;  // indexed by ow
      const int64_t id = od * g.s[0] - g.p[0] + kd * g.d[0], ih = oh * g.s[1] - g.p[1] + kh * g.d[1];
      if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
        for (int64_t ow = ow0; ow < ow1; ++ow) o[ow] = 0;
      } else {
        const T* srow = src + (id * g.in[1] + ih) * g.in[2] + off;
        const int64_t lo = std::max(vlo, ow0), hi = std::min(vhi, ow1 - 1);
        for (int64_t ow = ow0; ow < std::min(lo, ow1); ++ow) o[ow] = 0;
        if (g.s[2] == 1) {
          if (hi >= lo) std::memcpy(o + lo, srow + lo, size_t(hi - lo + 1) * sizeof(T));
        } else {
          const int64_t st = g.s[2];
          for (int64_t ow = lo; ow <= hi; ++ow) o[ow] = srow[ow * st];
        }
        for (int64_t ow = std::max(hi + 1, ow0); ow < ow1; ++ow) o[ow] = 0;
      }
      p += ow1 - ow0;
    }
  }
}

// col2im: the adjoint of im2col, accumulating into x (C channels, zeroed by the caller).
template <class T>
void col2im(const T* col, int64_t C, const Geo& g, T* x) {
  const int64_t K = g.k_size(), P = g.out_size();
  parallel_for(C, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      T* dst = x + c * g.in_size();
      for (int64_t kk = 0; kk < K; ++kk) {
        int64_t kd = kk / (g.k[1] * g.k[2]), kh = (kk / g.k[2]) % g.k[1], kw = kk % g.k[2];
        const T* src = col + (c * K + kk) * P;
        for (int64_t od = 0; od < g.out[0]; ++od) {
          int64_t id = od * g.s[0] - g.p[0] + kd * g.d[0];
          if (id < 0 || id >= g.in[0]) continue;
          for (int64_t oh = 0; oh < g.out[1]; ++oh) {
            int64_t ih = oh * g.s[1] - g.p[1] + kh * g.d[1];
            if (ih < 0 || ih >= g.in[1]) continue;
            const T* s = src + (od * g.out[1] + oh) * g.out[2];
            T* drow = dst + (id * g.in[1] + ih) * g.in[2];
            for (int64_t ow = 0; ow < g.out[2]; ++ow) {
              int64_t iw = ow * g.s[2] - g.p[2] + kw * g.d[2];
              if (iw >= 0 && iw < g.in[2]) drow[iw] += s[ow];
            }
          }
        }
      }
    }
  });
}

// Direct convolution for one input channel per group (depthwise).
template <class T>
void conv_direct(const T* x, const T* w, const T* bias, T* y, int64_t N, int64_t Cin, int64_t Cout, int64_t groups,
                 const Geo& g) {
  const int64_t cout_g = Cout / groups, K = g.k_size();
  parallel_for(N * Cout, 1, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      int64_t n = nc / Cout, oc = nc % Cout, ic = oc / cout_g;
      const T* src = x + (n * Cin + ic) * g.in_size();
      const T* wk = w + oc * K;
      T* dst = y + nc * g.out_size();
      T bv = bias ? bias[oc] : T(0);
      for (int64_t i = 0; i < g.out_size(); ++i) dst[i] = bv;
      for (int64_t kd = 0; kd < g.k[0]; ++kd)
        for (int64_t kh = 0; kh < g.k[1]; ++kh)
          for (int64_t kw = 0; kw < g.k[2]; ++kw) {
            T wv = wk[(kd * g.k[1] + kh) * g.k[2] + kw];
            int64_t off = kw * g.d[2] - g.p[2];
            int64_t lo = off >= 0 ? 0 : (-off + g.s[2] - 1) / g.s[2];
            int64_t hi = g.in[2] - 1 - off < 0 ? -1 : (g.in[2] - 1 - off) / g.s[2];
            hi = std::min(hi, g.out[2] - 1);
            for (int64_t od = 0; od < g.out[0]; ++od) {
              int64_t id = od * g.s[0] - g.p[0] + kd * g.d[0];
              if (id < 0 || id >= g.in[0]) continue;
              for (int64_t oh = 0; oh < g.out[1]; ++oh) {
                int64_t ih = oh * g.s[1] - g.p[1] + kh * g.d[1];
                if (ih < 0 || ih >= g.in[1]) continue;
                const T* srow = src + (id * g.in[1] + ih) * g.in[2] + off;
                T* orow = dst + (od * g.out[1] + oh) * g.out[2];
                if (g.s[2] == 1) {
                  for (int64_t ow = lo; ow <= hi; ++ow) orow[ow] += wv * srow[ow];
                } else {
                  const int64_t st = g.s[2];
                  for (int64_t ow = lo; ow <= hi; ++ow) orow[ow] += wv * srow[ow * st];
                }
              }
            }
          }
    }
  });
}

struct ConvOpts {
  std::vector<int64_t> stride, padding, dilation, output_padding;
  std::string padding_str;  // "same" / "valid" / ""
  int64_t groups = 1;
  std::string padding_mode = "zeros";
  bool transposed = false;
};

Tensor conv_nd(const Tensor& x0, const Tensor& w0, const Tensor& b0, int nd, ConvOpts o) {
  DType dt = float_common({&x0, &w0, &b0});
  Tensor x = as_dtype(x0, dt), w = as_dtype(w0, dt);
  Tensor b = b0.defined() ? as_dtype(b0, dt) : Tensor();
  bool unbatched = x.dim() == nd + 1;
  if (unbatched) {
    Shape s = x.shape;
    s.insert(s.begin(), 1);
    x = x.reshaped(s);
  }
  if (x.dim() != nd + 2) fail("conv: expected a " + std::to_string(nd + 2) + "-D input, got " + shape_str(x0.shape));
  if (w.dim() != nd + 2) fail("conv: weight of shape " + shape_str(w.shape));
  const int64_t N = x.shape[0], Cin = x.shape[1], G = o.groups;
  int64_t Cout;
  if (Cin % G) fail("conv: input channels not divisible by groups");
  if (!o.transposed) {
    Cout = w.shape[0];
    if (w.shape[1] * G != Cin) fail("conv: weight " + shape_str(w.shape) + " does not match input channels " + std::to_string(Cin));
  } else {
    if (w.shape[0] != Cin) fail("conv_transpose: weight " + shape_str(w.shape) + " does not match input channels " + std::to_string(Cin));
    Cout = w.shape[1] * G;
  }
  if (Cout % G) fail("conv: output channels not divisible by groups");
  Geo g;
  g.nd = nd;
  std::vector<int64_t> ks(w.shape.begin() + 2, w.shape.end());
  set3(g.k, ks, nd);
  set3(g.s, o.stride, nd);
  set3(g.d, o.dilation, nd);
  // padding: 'same' / 'valid' / numbers; non-zero padding modes pad the input explicitly
  std::vector<int64_t> pad_lo(size_t(nd), 0), pad_hi(size_t(nd), 0);
  if (o.padding_str == "same") {
    for (int i = 0; i < nd; ++i) {
      if (o.stride[size_t(i)] != 1) fail("padding='same' requires stride 1");
      int64_t total = o.dilation[size_t(i)] * (ks[size_t(i)] - 1);
      pad_lo[size_t(i)] = total / 2;
      pad_hi[size_t(i)] = total - total / 2;
    }
  } else if (o.padding_str == "valid" || o.padding_str.empty()) {
    if (o.padding_str.empty())
      for (int i = 0; i < nd; ++i) pad_lo[size_t(i)] = pad_hi[size_t(i)] = o.padding[size_t(i)];
  } else {
    fail("conv: unknown padding '" + o.padding_str + "'");
  }
  bool asym = false;
  for (int i = 0; i < nd; ++i) asym = asym || pad_lo[size_t(i)] != pad_hi[size_t(i)];
  if (!o.transposed && (o.padding_mode != "zeros" || asym)) {
    std::vector<int64_t> pads;
    for (int i = nd - 1; i >= 0; --i) {
      pads.push_back(pad_lo[size_t(i)]);
      pads.push_back(pad_hi[size_t(i)]);
    }
    std::string mode = o.padding_mode == "zeros" ? "constant" : o.padding_mode;
    x = pad(x, pads, mode, 0.0);
    std::fill(pad_lo.begin(), pad_lo.end(), 0);
  } else if (o.transposed && o.padding_mode != "zeros") {
    fail("conv_transpose only supports padding_mode='zeros'");
  }
  set3(g.p, pad_lo, nd);
  std::vector<int64_t> sp(x.shape.begin() + 2, x.shape.end());
  Tensor y;
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    if (!o.transposed) {
      set3(g.in, sp, nd);
      for (int i = 0; i < 3; ++i) {
        g.out[i] = (g.in[i] + 2 * g.p[i] - g.d[i] * (g.k[i] - 1) - 1) / g.s[i] + 1;
        if (g.out[i] <= 0) fail("conv: input " + shape_str(x0.shape) + " is too small for the kernel");
      }
      Shape os = {N, Cout};
      for (int i = 3 - nd; i < 3; ++i) os.push_back(g.out[i]);
      y = Tensor::empty(dt, os);
      const int64_t cin_g = Cin / G, cout_g = Cout / G, K = cin_g * g.k_size(), P = g.out_size();
      const T* px = x.data<T>();
      const T* pw = w.data<T>();
      T* py = y.data<T>();
      if (cin_g == 1 && G > 1) {
        conv_direct<T>(px, pw, b.defined() ? b.data<T>() : nullptr, py, N, Cin, Cout, G, g);
        return;
      }
      bool pointwise = g.k_size() == 1 && g.s[0] == 1 && g.s[1] == 1 && g.s[2] == 1 && g.p[0] == 0 && g.p[1] == 0 &&
                       g.p[2] == 0;
      // Column tiles of the im2col matrix small enough for the cache, one gemm each, spread over the threads
      // (no barrier between unfolding and multiplying); a few big tiles fall back to one im2col and a split gemm.
      const int64_t tile = std::min(P, std::max<int64_t>(64, (131072 / std::max<int64_t>(K, 1)) / 16 * 16));
      const int64_t tiles = (P + tile - 1) / tile;
      if (!pointwise && tiles >= 2 * std::max(2, num_threads())) {
        for (int64_t n = 0; n < N; ++n)
          for (int64_t gi = 0; gi < G; ++gi) {
            const T* xin = px + (n * Cin + gi * cin_g) * g.in_size();
            const T* wg = pw + gi * cout_g * K;
            const T* pb = b.defined() ? b.data<T>() + gi * cout_g : nullptr;
            T* yo = py + (n * Cout + gi * cout_g) * P;
            parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
              std::unique_ptr<T[]> buf(new T[size_t(K * tile)]);
              for (int64_t t = t0; t < t1; ++t) {
                const int64_t p0 = t * tile, p1 = std::min(P, p0 + tile), w = p1 - p0;
                im2col_cols<T>(xin, cin_g, g, p0, p1, buf.get());
                if (pb)
                  for (int64_t oc = 0; oc < cout_g; ++oc) std::fill(yo + oc * P + p0, yo + oc * P + p1, pb[oc]);
                gemm(false, false, cout_g, w, K, T(1), wg, K, buf.get(), w, pb ? T(1) : T(0), yo + p0, P);
              }
            });
          }
        return;
      }
      std::unique_ptr<T[]> col(pointwise ? nullptr : new T[size_t(K * P)]);  // uninitialised
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t gi = 0; gi < G; ++gi) {
          const T* xin = px + (n * Cin + gi * cin_g) * g.in_size();
          const T* cm = xin;
          if (!pointwise) {
            im2col<T>(xin, cin_g, g, col.get());
            cm = col.get();
          }
          T* yo = py + (n * Cout + gi * cout_g) * P;
          if (b.defined()) {
            const T* pb = b.data<T>() + gi * cout_g;
            parallel_for(cout_g, std::max<int64_t>(1, kGrain / P), [&](int64_t s0, int64_t s1) {
              for (int64_t oc = s0; oc < s1; ++oc) std::fill(yo + oc * P, yo + (oc + 1) * P, pb[oc]);
            });
          }
          gemm(false, false, cout_g, P, K, T(1), pw + gi * cout_g * K, K, cm, P, b.defined() ? T(1) : T(0), yo, P);
        }
      }
    } else {
      // transposed: y = col2im(W^T x)
      set3(g.out, sp, nd);  // the forward conv's output is our input
      std::vector<int64_t> op = o.output_padding;
      for (int i = 0; i < 3; ++i) {
        int64_t opad = i >= 3 - nd ? op[size_t(i - (3 - nd))] : 0;
        g.in[i] = (g.out[i] - 1) * g.s[i] - 2 * g.p[i] + g.d[i] * (g.k[i] - 1) + opad + 1;
        if (g.in[i] <= 0) fail("conv_transpose: non-positive output size");
      }
      Shape os = {N, Cout};
      for (int i = 3 - nd; i < 3; ++i) os.push_back(g.in[i]);
      y = Tensor::zeros(dt, os);
      const int64_t cin_g = Cin / G, cout_g = Cout / G, Kc = cout_g * g.k_size(), P = g.out_size();
      std::unique_ptr<T[]> col(new T[size_t(Kc * P)]);  // uninitialised
      const T* px = x.data<T>();
      const T* pw = w.data<T>();
      T* py = y.data<T>();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t gi = 0; gi < G; ++gi) {
          // col[Kc, P] = W_g^T [Kc, cin_g] * x_g [cin_g, P]
          gemm(true, false, Kc, P, cin_g, T(1), pw + gi * cin_g * Kc, Kc, px + (n * Cin + gi * cin_g) * P, P, T(0),
               col.get(), P);
          col2im<T>(col.get(), cout_g, g, py + (n * Cout + gi * cout_g) * g.in_size());
        }
      if (b.defined()) {
        const T* pb = b.data<T>();
        int64_t S = g.in_size();
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < Cout; ++c) {
            T* p = py + (n * Cout + c) * S;
            for (int64_t i = 0; i < S; ++i) p[i] += pb[c];
          }
      }
    }
  });
  if (unbatched) {
    Shape s(y.shape.begin() + 1, y.shape.end());
    y = y.reshaped(s);
  }
  return y;
}

ConvOpts conv_opts_from_attrs(const Attrs& a, int nd) {
  ConvOpts o;
  o.stride = nd_ints(a.get("stride"), nd, "stride");
  o.dilation = nd_ints(a.get("dilation"), nd, "dilation");
  const Val& p = a.get("padding");
  if (p.k == Val::K::Str) {
    o.padding_str = p.s;
    o.padding = std::vector<int64_t>(size_t(nd), 0);
  } else {
    o.padding = nd_ints(p, nd, "padding");
  }
  o.output_padding = a.has("output_padding") ? nd_ints(a.get("output_padding"), nd, "output_padding")
                                             : std::vector<int64_t>(size_t(nd), 0);
  o.groups = a.integer("groups");
  o.padding_mode = a.has("padding_mode") ? a.str("padding_mode") : "zeros";
  o.transposed = a.has("transposed") && a.flag("transposed");
  return o;
}

// ================================================================================================ pooling

struct PoolOpts {
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode = false, count_include_pad = true, return_indices = false;
  int64_t divisor = 0;  // divisor_override (0: none)
};

int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  int64_t num = in + 2 * p - d * (k - 1) - 1;
  int64_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  if (num < 0) out = ceil_mode ? -((-num) / s) + 1 : -((-num + s - 1) / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// max (indices optional) or average pooling over the trailing nd dims.
Val pool_nd(const Tensor& x0, int nd, const PoolOpts& o, bool is_max) {
  Tensor x = as_float(x0);
  if (x.dim() < nd + 1) fail("pool: input of rank " + std::to_string(x.dim()) + " for a " + std::to_string(nd) + "-D pool");
  Geo g;
  set3(g.k, o.kernel, nd);
  set3(g.s, o.stride.empty() ? o.kernel : o.stride, nd);
  set3(g.p, o.padding, nd);
  set3(g.d, o.dilation.empty() ? std::vector<int64_t>(size_t(nd), 1) : o.dilation, nd);
  std::vector<int64_t> sp(x.shape.end() - nd, x.shape.end());
  set3(g.in, sp, nd);
  for (int i = 0; i < 3; ++i) {
    if (g.p[i] * 2 > g.k[i] && i >= 3 - nd) fail("pool: padding should be at most half the kernel size");
    g.out[i] = pool_out(g.in[i], g.k[i], g.s[i], g.p[i], g.d[i], o.ceil_mode);
    if (g.out[i] <= 0) fail("pool: output size would be non-positive");
  }
  Shape os(x.shape.begin(), x.shape.end() - nd);
  for (int i = 3 - nd; i < 3; ++i) os.push_back(g.out[i]);
  Tensor y = Tensor::empty(x.dtype, os);
  Tensor idx = is_max && o.return_indices ? Tensor::empty(DType::I64, os) : Tensor();
  const int64_t planes = x.numel() / std::max<int64_t>(g.in_size(), 1);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t* pi = idx.defined() ? idx.data<int64_t>() : nullptr;
    if (!is_max) {
      // whole output rows: window sums, then each position's divisor
      parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(g.out_size() * g.k_size(), 1)), [&](int64_t b, int64_t e) {
        for (int64_t pl = b; pl < e; ++pl) {
          const T* src = px + pl * g.in_size();
          T* dst = py + pl * g.out_size();
          for (int64_t od = 0; od < g.out[0]; ++od)
            for (int64_t oh = 0; oh < g.out[1]; ++oh) {
              T* orow = dst + (od * g.out[1] + oh) * g.out[2];
              for (int64_t ow = 0; ow < g.out[2]; ++ow) orow[ow] = 0;
              const int64_t d0 = od * g.s[0] - g.p[0], h0 = oh * g.s[1] - g.p[1];
              const int64_t dend = std::min(d0 + g.k[0], g.in[0] + g.p[0]), hend = std::min(h0 + g.k[1], g.in[1] + g.p[1]);
              const int64_t ds = std::max<int64_t>(d0, 0), hs = std::max<int64_t>(h0, 0);
              const int64_t de = std::min(dend, g.in[0]), he = std::min(hend, g.in[1]);
              for (int64_t id = ds; id < de; ++id)
                for (int64_t ih = hs; ih < he; ++ih) {
                  const T* irow = src + (id * g.in[1] + ih) * g.in[2];
                  for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                    const int64_t off = kw - g.p[2], st = g.s[2];
                    int64_t lo = off >= 0 ? 0 : (-off + st - 1) / st;
                    int64_t hi = g.in[2] - 1 - off < 0 ? -1 : (g.in[2] - 1 - off) / st;
                    hi = std::min(hi, g.out[2] - 1);
                    const T* ip = irow + off;
                    for (int64_t ow = lo; ow <= hi; ++ow) orow[ow] += ip[ow * st];
                  }
                }
              for (int64_t ow = 0; ow < g.out[2]; ++ow) {
                const int64_t w0 = ow * g.s[2] - g.p[2];
                const int64_t wend = std::min(w0 + g.k[2], g.in[2] + g.p[2]);
                const int64_t pool_size = (dend - d0) * (hend - h0) * (wend - w0);
                const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(wend, g.in[2]);
                const int64_t div = o.divisor ? o.divisor
                                              : (o.count_include_pad ? pool_size : (de - ds) * (he - hs) * (we - ws));
                orow[ow] = div > 0 ? T(orow[ow] / T(div)) : T(0);
              }
            }
        }
      });
      return;
    }
    if (is_max && !pi && g.d[0] == 1 && g.d[1] == 1 && g.d[2] == 1) {
      // no dilation, no indices: whole output rows at a time, branch-free (NaN propagates through v != v)
      parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(g.out_size() * g.k_size(), 1)), [&](int64_t b, int64_t e) {
        for (int64_t pl = b; pl < e; ++pl) {
          const T* src = px + pl * g.in_size();
          T* dst = py + pl * g.out_size();
          for (int64_t od = 0; od < g.out[0]; ++od)
            for (int64_t oh = 0; oh < g.out[1]; ++oh) {
              T* orow = dst + (od * g.out[1] + oh) * g.out[2];
              for (int64_t ow = 0; ow < g.out[2]; ++ow) orow[ow] = -std::numeric_limits<T>::infinity();
              for (int64_t kd = 0; kd < g.k[0]; ++kd) {
                int64_t id = od * g.s[0] - g.p[0] + kd;
                if (id < 0 || id >= g.in[0]) continue;
                for (int64_t kh = 0; kh < g.k[1]; ++kh) {
                  int64_t ih = oh * g.s[1] - g.p[1] + kh;
                  if (ih < 0 || ih >= g.in[1]) continue;
                  const T* irow = src + (id * g.in[1] + ih) * g.in[2];
                  for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                    const int64_t off = kw - g.p[2], st = g.s[2];
                    int64_t lo = off >= 0 ? 0 : (-off + st - 1) / st;
                    int64_t hi = g.in[2] - 1 - off < 0 ? -1 : (g.in[2] - 1 - off) / st;
                    hi = std::min(hi, g.out[2] - 1);
                    const T* ip = irow + off;
                    for (int64_t ow = lo; ow <= hi; ++ow) {
                      const T v = ip[ow * st];
                      const T bv = orow[ow];
                      orow[ow] = (v > bv || v != v) ? v : bv;
                    }
                  }
                }
              }
            }
        }
      });
      return;
    }
    parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(g.out_size() * g.k_size(), 1)), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const T* src = px + pl * g.in_size();
        T* dst = py + pl * g.out_size();
        for (int64_t od = 0; od < g.out[0]; ++od)
          for (int64_t oh = 0; oh < g.out[1]; ++oh)
            for (int64_t ow = 0; ow < g.out[2]; ++ow) {
              int64_t o_idx = (od * g.out[1] + oh) * g.out[2] + ow;
              int64_t d0 = od * g.s[0] - g.p[0], h0 = oh * g.s[1] - g.p[1], w0 = ow * g.s[2] - g.p[2];
              if (is_max) {
                T best = -std::numeric_limits<T>::infinity();
                int64_t bi = -1;
                for (int64_t kd = 0; kd < g.k[0]; ++kd) {
                  int64_t id = d0 + kd * g.d[0];
                  if (id < 0 || id >= g.in[0]) continue;
                  for (int64_t kh = 0; kh < g.k[1]; ++kh) {
                    int64_t ih = h0 + kh * g.d[1];
                    if (ih < 0 || ih >= g.in[1]) continue;
                    for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                      int64_t iw = w0 + kw * g.d[2];
                      if (iw < 0 || iw >= g.in[2]) continue;
                      int64_t li = (id * g.in[1] + ih) * g.in[2] + iw;
                      T v = src[li];
                      if (v > best || std::isnan(v) || bi < 0) {
                        if (!(bi >= 0 && std::isnan(best))) { best = v; bi = li; }
                      }
                    }
                  }
                }
                dst[o_idx] = best;
                if (pi) pi[pl * g.out_size() + o_idx] = bi;
              } else {
                int64_t dend = std::min(d0 + g.k[0], g.in[0] + g.p[0]);
                int64_t hend = std::min(h0 + g.k[1], g.in[1] + g.p[1]);
                int64_t wend = std::min(w0 + g.k[2], g.in[2] + g.p[2]);
                int64_t pool_size = (dend - d0) * (hend - h0) * (wend - w0);
                int64_t ds = std::max<int64_t>(d0, 0), hs = std::max<int64_t>(h0, 0), ws = std::max<int64_t>(w0, 0);
                dend = std::min(dend, g.in[0]);
                hend = std::min(hend, g.in[1]);
                wend = std::min(wend, g.in[2]);
                double sum = 0;
                for (int64_t id = ds; id < dend; ++id)
                  for (int64_t ih = hs; ih < hend; ++ih)
                    for (int64_t iw = ws; iw < wend; ++iw) sum += double(src[(id * g.in[1] + ih) * g.in[2] + iw]);
                int64_t div = o.divisor ? o.divisor
                                        : (o.count_include_pad ? pool_size : (dend - ds) * (hend - hs) * (wend - ws));
                dst[o_idx] = div > 0 ? T(sum / double(div)) : T(0);
              }
            }
      }
    });
  });
  if (idx.defined()) return Val::tuple({TV(y), TV(idx)});
  return TV(y);
}

Val adaptive_pool_nd(const Tensor& x0, int nd, const std::vector<int64_t>& osize0, bool is_max, bool return_indices) {
  Tensor x = as_float(x0);
  if (x.dim() < nd + 1) fail("adaptive pool: input of rank " + std::to_string(x.dim()));
  Geo g;
  std::vector<int64_t> sp(x.shape.end() - nd, x.shape.end());
  set3(g.in, sp, nd);
  std::vector<int64_t> osize = osize0;
  for (int i = 0; i < nd; ++i)
    if (osize[size_t(i)] < 0) osize[size_t(i)] = sp[size_t(i)];  // None keeps the input size
  set3(g.out, osize, nd);
  Shape os(x.shape.begin(), x.shape.end() - nd);
  for (int i = 3 - nd; i < 3; ++i) os.push_back(g.out[i]);
  Tensor y = Tensor::empty(x.dtype, os);
  Tensor idx = is_max && return_indices ? Tensor::empty(DType::I64, os) : Tensor();
  const int64_t planes = x.numel() / std::max<int64_t>(g.in_size(), 1);
  auto start = [](int64_t o, int64_t in, int64_t out) { return (o * in) / out; };
  auto end = [](int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; };
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t* pi = idx.defined() ? idx.data<int64_t>() : nullptr;
    parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(g.in_size(), 1)), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const T* src = px + pl * g.in_size();
        T* dst = py + pl * g.out_size();
        for (int64_t od = 0; od < g.out[0]; ++od) {
          int64_t d0 = start(od, g.in[0], g.out[0]), d1 = end(od, g.in[0], g.out[0]);
          for (int64_t oh = 0; oh < g.out[1]; ++oh) {
            int64_t h0 = start(oh, g.in[1], g.out[1]), h1 = end(oh, g.in[1], g.out[1]);
            for (int64_t ow = 0; ow < g.out[2]; ++ow) {
              int64_t w0 = start(ow, g.in[2], g.out[2]), w1 = end(ow, g.in[2], g.out[2]);
              int64_t o_idx = (od * g.out[1] + oh) * g.out[2] + ow;
              if (is_max) {
                T best = -std::numeric_limits<T>::infinity();
                int64_t bi = -1;
                for (int64_t id = d0; id < d1; ++id)
                  for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) {
                      int64_t li = (id * g.in[1] + ih) * g.in[2] + iw;
                      if (bi < 0 || src[li] > best || std::isnan(src[li])) {
                        if (!(bi >= 0 && std::isnan(best))) { best = src[li]; bi = li; }
                      }
                    }
                dst[o_idx] = best;
                if (pi) pi[pl * g.out_size() + o_idx] = bi;
              } else {
                double sum = 0;
                for (int64_t id = d0; id < d1; ++id)
                  for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) sum += double(src[(id * g.in[1] + ih) * g.in[2] + iw]);
                dst[o_idx] = T(sum / double((d1 - d0) * (h1 - h0) * (w1 - w0)));
              }
            }
          }
        }
      }
    });
  });
  if (idx.defined()) return Val::tuple({TV(y), TV(idx)});
  return TV(y);
}

std::vector<int64_t> adaptive_size(const Val& v, int nd) {
  std::vector<int64_t> r;
  if (v.is_seq()) {
    for (const auto& e : v.seq()) r.push_back(e.is_none() ? -1 : e.as_int());
  } else {
    r.push_back(v.as_int());
  }
  if (r.size() == 1) r = std::vector<int64_t>(size_t(nd), r[0]);
  if (int(r.size()) != nd) fail("adaptive pool: output_size must have " + std::to_string(nd) + " values");
  return r;
}

Tensor lp_pool(const Tensor& x0, int nd, double p, const std::vector<int64_t>& k, const std::vector<int64_t>& s,
               bool ceil_mode) {
  Tensor x = as_float(x0);
  Tensor xp = binary(BinOp::Pow, x, Tensor::scalar(x.dtype, p));
  PoolOpts o;
  o.kernel = k;
  o.stride = s;
  o.padding = std::vector<int64_t>(size_t(nd), 0);
  o.ceil_mode = ceil_mode;
  Tensor avg = pool_nd(xp, nd, o, false).t;
  int64_t kprod = 1;
  for (int64_t v : k) kprod *= v;
  Tensor r = Tensor::empty(avg.dtype, avg.shape);
  dispatch_float(avg.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* a = avg.data<T>();
    T* o2 = r.data<T>();
    for (int64_t i = 0; i < avg.numel(); ++i) {
      T v = a[i];
      T sgn = T((v > 0) - (v < 0));
      T m = sgn * std::max(std::fabs(v), T(0)) * T(kprod);
      o2[i] = std::pow(m, T(1.0 / p));
    }
  });
  return r;
}

// max_unpool: scatter each input value to its index in the output plane (zeros elsewhere).
Tensor max_unpool(const Tensor& x0, const Tensor& idx, int nd, const std::vector<int64_t>& k,
                  const std::vector<int64_t>& s, const std::vector<int64_t>& p, const Val& output_size) {
  Tensor x = as_float(x0);
  if (x.shape != idx.shape) fail("max_unpool: indices must have the input's shape");
  if (x.dim() < nd + 1) fail("max_unpool: input of rank " + std::to_string(x.dim()));
  std::vector<int64_t> os;
  for (int i = 0; i < nd; ++i) {
    int64_t in = x.shape[size_t(x.dim() - nd + i)];
    os.push_back((in - 1) * s[size_t(i)] - 2 * p[size_t(i)] + k[size_t(i)]);
  }
  if (!output_size.is_none()) {
    std::vector<int64_t> want = output_size.as_ints();
    os.assign(want.end() - nd, want.end());
  }
  Shape shape(x.shape.begin(), x.shape.end() - nd);
  int64_t plane_out = 1, plane_in = 1;
  for (int i = 0; i < nd; ++i) {
    shape.push_back(os[size_t(i)]);
    plane_out *= os[size_t(i)];
    plane_in *= x.shape[size_t(x.dim() - nd + i)];
  }
  Tensor y = Tensor::zeros(x.dtype, shape);
  int64_t planes = x.numel() / std::max<int64_t>(plane_in, 1);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t pl = 0; pl < planes; ++pl)
      for (int64_t i = 0; i < plane_in; ++i) {
        int64_t j = idx.item_int(pl * plane_in + i);
        if (j < 0 || j >= plane_out) fail("max_unpool: index " + std::to_string(j) + " out of range");
        py[pl * plane_out + j] = px[pl * plane_in + i];
      }
  });
  return y;
}

// nn.CrossMapLRN2d, following torch/nn/_functions.py (including its window arithmetic).
Tensor cross_map_lrn2d(const Tensor& x0, int64_t size, double alpha, double beta, double k) {
  Tensor x = as_float(x0);
  if (x.dim() != 4) fail("CrossMapLRN2d expects a 4-D input");
  const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2] * x.shape[3];
  Tensor y = Tensor::empty(x.dtype, x.shape);
  const int64_t pre_pad = (size - 1) / 2 + 1, crop = std::min(pre_pad, C);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    std::vector<T> scale(static_cast<size_t>(C * S));
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = px + n * C * S;
      auto sq = [&](int64_t c, int64_t i) { return xn[c * S + i] * xn[c * S + i]; };
      for (int64_t i = 0; i < S; ++i) {
        T acc = 0;
        for (int64_t c = 0; c < crop; ++c) acc += sq(c, i);
        scale[size_t(i)] = acc;
      }
      for (int64_t c = 1; c < C; ++c)
        for (int64_t i = 0; i < S; ++i) {
          T v = scale[size_t((c - 1) * S + i)];
          if (c < C - pre_pad + 1) v += sq(c + pre_pad - 1, i);
          if (c > pre_pad) v -= sq(c - pre_pad, i);
          scale[size_t(c * S + i)] = v;
        }
      for (int64_t j = 0; j < C * S; ++j)
        py[n * C * S + j] = xn[j] * T(std::pow(double(scale[size_t(j)]) * (alpha / double(size)) + k, -beta));
    }
  });
  return y;
}

// nn.FractionalMaxPool2d/3d with fixed samples (_random_samples, [N, C, nd]).
Val fractional_max_pool(const Tensor& x0, int nd, const std::vector<int64_t>& k, const Val& out_size,
                        const Val& out_ratio, const Tensor& samples, bool return_indices) {
  Tensor x = as_float(x0);
  bool unbatched = x.dim() == nd + 1;
  if (unbatched) {
    Shape s = x.shape;
    s.insert(s.begin(), 1);
    x = x.reshaped(s);
  }
  if (x.dim() != nd + 2) fail("fractional_max_pool: bad input rank");
  if (!samples.defined()) fail("fractional max pooling draws random samples; only modules with _random_samples are supported");
  const int64_t N = x.shape[0], C = x.shape[1];
  std::vector<int64_t> in(x.shape.begin() + 2, x.shape.end());
  std::vector<int64_t> out(static_cast<size_t>(nd));
  if (!out_size.is_none()) {
    out = out_size.as_ints();
    if (out.size() == 1) out = std::vector<int64_t>(size_t(nd), out[0]);
  } else {
    std::vector<double> r;
    if (out_ratio.is_seq()) for (const auto& e : out_ratio.seq()) r.push_back(e.as_double());
    else r.push_back(out_ratio.as_double());
    if (r.size() == 1) r = std::vector<double>(size_t(nd), r[0]);
    for (int i = 0; i < nd; ++i) out[size_t(i)] = int64_t(double(in[size_t(i)]) * r[size_t(i)]);
  }
  Tensor smp = as_dtype(samples, x.dtype);
  Shape os = {N, C};
  for (int64_t v : out) os.push_back(v);
  Tensor y = Tensor::empty(x.dtype, os);
  Tensor id = Tensor::empty(DType::I64, os);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    auto intervals = [&](T sample, int64_t insz, int64_t outsz, int64_t pool) {
      std::vector<int64_t> seq(static_cast<size_t>(outsz));
      if (outsz > 1) {
        T a = T(insz - pool) / T(outsz - 1);
        for (int64_t i = 0; i < outsz - 1; ++i) seq[size_t(i)] = int64_t((T(i) + sample) * a) - int64_t(sample * a);
      }
      seq[size_t(outsz - 1)] = insz - pool;
      return seq;
    };
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t* pi = id.data<int64_t>();
    int64_t I[3] = {1, 1, 1}, O[3] = {1, 1, 1}, K[3] = {1, 1, 1};
    for (int i = 0; i < nd; ++i) {
      I[3 - nd + i] = in[size_t(i)];
      O[3 - nd + i] = out[size_t(i)];
      K[3 - nd + i] = k[size_t(i)];
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const T* smpl = smp.data<T>() + (n * C + c) * nd;
        // samples are ordered (w, h) for 2-D but (t, h, w) for 3-D, as in ATen
        std::vector<int64_t> seq[3];
        for (int i = 0; i < 3; ++i) {
          int j = i - (3 - nd);  // spatial dim index
          if (j < 0) { seq[i] = {0}; continue; }
          seq[i] = intervals(smpl[nd == 2 ? 1 - j : j], I[i], O[i], K[i]);
        }
        const T* src = px + (n * C + c) * I[0] * I[1] * I[2];
        int64_t base = (n * C + c) * O[0] * O[1] * O[2];
        for (int64_t a = 0; a < O[0]; ++a)
          for (int64_t b = 0; b < O[1]; ++b)
            for (int64_t e = 0; e < O[2]; ++e) {
              T best = -std::numeric_limits<T>::infinity();
              int64_t bi = -1;
              for (int64_t u = seq[0][size_t(a)]; u < seq[0][size_t(a)] + K[0]; ++u)
                for (int64_t v = seq[1][size_t(b)]; v < seq[1][size_t(b)] + K[1]; ++v)
                  for (int64_t w = seq[2][size_t(e)]; w < seq[2][size_t(e)] + K[2]; ++w) {
                    int64_t li = (u * I[1] + v) * I[2] + w;
                    if (bi < 0 || src[li] > best || std::isnan(src[li])) { best = src[li]; bi = li; }
                  }
              int64_t o = base + (a * O[1] + b) * O[2] + e;
              py[o] = best;
              pi[o] = bi;
            }
      }
  });
  if (unbatched) {
    Shape s(y.shape.begin() + 1, y.shape.end());
    y = y.reshaped(s);
    id = id.reshaped(s);
  }
  if (return_indices) return Val::tuple({TV(y), TV(id)});
  return TV(y);
}

// ================================================================================================ normalisation

// y = (x - mean) * inv * w + b per channel over [N, C, S] with per-channel mean/inv.
template <class T>
void affine_channels(const T* x, T* y, int64_t N, int64_t C, int64_t S, const std::vector<double>& scale,
                     const std::vector<double>& shift) {
  parallel_for(N * C, std::max<int64_t>(1, kGrain / std::max<int64_t>(S, 1)), [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      int64_t c = nc % C;
      const T sc = T(scale[size_t(c)]), sh = T(shift[size_t(c)]);
      const T* px = x + nc * S;
      T* py = y + nc * S;
      for (int64_t i = 0; i < S; ++i) py[i] = px[i] * sc + sh;
    }
  });
}

Tensor batch_norm(const Tensor& x0, const Tensor& rm, const Tensor& rv, const Tensor& w, const Tensor& b, bool use_batch_stats,
                  double eps) {
  Tensor x = as_float(x0);
  if (x.dim() < 2) fail("batch_norm: expected at least a 2-D input");
  int64_t N = x.shape[0], C = x.shape[1], S = x.numel() / std::max<int64_t>(N * C, 1);
  std::vector<double> mean(static_cast<size_t>(C)), var(static_cast<size_t>(C));
  if (use_batch_stats || !rm.defined()) {
    dispatch_float(x.ptype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      for (int64_t c = 0; c < C; ++c) {
        double s = 0, s2 = 0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < S; ++i) s += double(px[(n * C + c) * S + i]);
        double m = s / double(N * S);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < S; ++i) {
            double d = double(px[(n * C + c) * S + i]) - m;
            s2 += d * d;
          }
        mean[size_t(c)] = m;
        var[size_t(c)] = s2 / double(N * S);
      }
    });
  } else {
    for (int64_t c = 0; c < C; ++c) {
      mean[size_t(c)] = rm.item_double(c);
      var[size_t(c)] = rv.item_double(c);
    }
  }
  std::vector<double> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    // torch (CPU, eval) folds to y = x * alpha + beta with alpha = w / sqrt(var + eps) computed in the input dtype
    double inv = 1.0 / std::sqrt(var[size_t(c)] + eps);
    double wv = w.defined() ? w.item_double(c) : 1.0, bv = b.defined() ? b.item_double(c) : 0.0;
    scale[size_t(c)] = wv * inv;
    shift[size_t(c)] = bv - mean[size_t(c)] * wv * inv;
  }
  Tensor y = Tensor::empty(x.dtype, x.shape);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    affine_channels<T>(x.data<T>(), y.data<T>(), N, C, S, scale, shift);
  });
  return y;
}

// Group statistics: x viewed as [N, G, C/G * S]; normalise each (n, g) row, then per-channel affine.
Tensor group_norm(const Tensor& x0, int64_t G, const Tensor& w, const Tensor& b, double eps) {
  Tensor x = as_float(x0);
  if (x.dim() < 2) fail("group_norm: expected at least a 2-D input");
  int64_t N = x.shape[0], C = x.shape[1], S = x.numel() / std::max<int64_t>(N * C, 1);
  if (C % G) fail("group_norm: channels not divisible by groups");
  int64_t cg = C / G, L = cg * S;
  Tensor y = Tensor::empty(x.dtype, x.shape);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(N * G, std::max<int64_t>(1, kGrain / std::max<int64_t>(L, 1)), [&](int64_t bb, int64_t e) {
      for (int64_t ng = bb; ng < e; ++ng) {
        const T* src = px + ng * L;
        T* dst = py + ng * L;
        const double m = sum_d(src, L) / double(L);
        const double s2 = sumsq_d(src, L, m);
        double inv = 1.0 / std::sqrt(s2 / double(L) + eps);
        int64_t g = ng % G;
        for (int64_t ci = 0; ci < cg; ++ci) {
          int64_t c = g * cg + ci;
          double wv = w.defined() ? w.item_double(c) : 1.0, bv = b.defined() ? b.item_double(c) : 0.0;
          T sc = T(inv * wv), sh = T(bv - m * inv * wv);
          for (int64_t i = 0; i < S; ++i) dst[ci * S + i] = src[ci * S + i] * sc + sh;
        }
      }
    });
  });
  return y;
}

double finfo_eps(DType d) {
  switch (d) {
    case DType::F64: return std::numeric_limits<double>::epsilon();
    case DType::F16: return 0.0009765625;
    case DType::BF16: return 0.0078125;
    default: return double(std::numeric_limits<float>::epsilon());
  }
}

Tensor rms_norm(const Tensor& x0, int64_t nd, const Tensor& w, double eps) {
  Tensor x = as_float(x0);
  int64_t L = 1;
  for (int64_t i = x.dim() - nd; i < x.dim(); ++i) L *= x.shape[size_t(i)];
  int64_t rows = x.numel() / std::max<int64_t>(L, 1);
  Tensor y = Tensor::empty(x.dtype, x.shape);
  Tensor wf = w.defined() ? as_dtype(w, x.dtype) : Tensor();
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pw = wf.defined() ? wf.data<T>() : nullptr;
    T* py = y.data<T>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(L, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* s = px + r * L;
        T* d = py + r * L;
        const double ss = sumsq_d(s, L, 0.0);
        T inv = T(1.0 / std::sqrt(ss / double(L) + eps));
        for (int64_t i = 0; i < L; ++i) d[i] = s[i] * inv * (pw ? pw[i] : T(1));
      }
    });
  });
  return y;
}

Tensor local_response_norm(const Tensor& x0, int64_t size, double alpha, double beta, double k) {
  Tensor x = as_float(x0);
  if (x.dim() < 3) fail("local_response_norm: expected at least a 3-D input");
  int64_t N = x.shape[0], C = x.shape[1], S = x.numel() / std::max<int64_t>(N * C, 1);
  Tensor y = Tensor::empty(x.dtype, x.shape);
  int64_t lo = size / 2, hi = (size - 1) / 2;
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(N * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t nc = b; nc < e; ++nc) {
        int64_t n = nc / C, c = nc % C;
        for (int64_t i = 0; i < S; ++i) {
          double s = 0;
          for (int64_t cc = c - lo; cc <= c + hi; ++cc) {
            if (cc < 0 || cc >= C) continue;
            double v = double(px[(n * C + cc) * S + i]);
            s += v * v;
          }
          double div = std::pow(s / double(size) * alpha + k, beta);
          py[nc * S + i] = T(double(px[nc * S + i]) / div);
        }
      }
    });
  });
  return y;
}

// ================================================================================================ interpolation

struct Interp {
  std::vector<int64_t> i0, i1;
  std::vector<double> w1;
};

Interp interp_table(int64_t in, int64_t out, const std::string& mode, bool align_corners, double scale_factor) {
  Interp t;
  t.i0.resize(size_t(out));
  t.i1.resize(size_t(out));
  t.w1.assign(size_t(out), 0.0);
  // torch's area_pixel_compute_scale
  double scale;
  if (align_corners) scale = out > 1 ? double(in - 1) / double(out - 1) : 0.0;
  else scale = scale_factor > 0 ? 1.0 / scale_factor : double(in) / double(out);
  for (int64_t o = 0; o < out; ++o) {
    if (mode == "nearest" || mode == "nearest-exact") {
      double s = scale_factor > 0 ? 1.0 / scale_factor : double(in) / double(out);
      float fs = float(s);
      int64_t src = mode == "nearest" ? int64_t(std::floor(float(o) * fs)) : int64_t(std::floor((float(o) + 0.5f) * fs));
      src = std::min(src, in - 1);
      t.i0[size_t(o)] = t.i1[size_t(o)] = src;
      continue;
    }
    double src;
    if (align_corners) src = scale * double(o);
    else {
      src = scale * (double(o) + 0.5) - 0.5;
      if (src < 0) src = 0;
    }
    int64_t i0 = std::min<int64_t>(int64_t(src), in - 1);
    int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
    t.i0[size_t(o)] = i0;
    t.i1[size_t(o)] = i1;
    t.w1[size_t(o)] = src - double(i0);
  }
  return t;
}

Tensor interpolate(const Tensor& x0, const Val& size, const Val& scale, std::string mode, const Val& align_v,
                   const Val& recompute) {
  Tensor x = as_float(x0);
  int nd = int(x.dim()) - 2;
  if (nd < 1 || nd > 3) fail("interpolate: expected a 3-D, 4-D or 5-D input");
  if (mode == "linear" || mode == "bilinear" || mode == "trilinear") mode = "linear";
  else if (mode != "nearest" && mode != "nearest-exact")
    fail("interpolate: mode '" + mode + "' is not supported");
  bool align = !align_v.is_none() && align_v.as_bool();
  std::vector<int64_t> in(x.shape.end() - nd, x.shape.end()), out(static_cast<size_t>(nd));
  std::vector<double> sf(size_t(nd), 0.0);
  if (!size.is_none()) {
    std::vector<int64_t> s = size.as_ints();
    if (s.size() == 1) s = std::vector<int64_t>(size_t(nd), s[0]);
    if (int(s.size()) != nd) fail("interpolate: size has the wrong length");
    out = s;
  } else if (!scale.is_none()) {
    std::vector<double> f;
    if (scale.is_seq()) for (const auto& e : scale.seq()) f.push_back(e.as_double());
    else f.push_back(scale.as_double());
    if (f.size() == 1) f = std::vector<double>(size_t(nd), f[0]);
    if (int(f.size()) != nd) fail("interpolate: scale_factor has the wrong length");
    for (int i = 0; i < nd; ++i) {
      out[size_t(i)] = int64_t(std::floor(double(in[size_t(i)]) * f[size_t(i)]));
      bool rc = !recompute.is_none() && recompute.as_bool();
      sf[size_t(i)] = rc ? 0.0 : f[size_t(i)];
    }
  } else {
    fail("interpolate: either size or scale_factor must be given");
  }
  std::vector<Interp> tabs;
  for (int i = 0; i < nd; ++i) tabs.push_back(interp_table(in[size_t(i)], out[size_t(i)], mode, align, sf[size_t(i)]));
  // pad to 3 dims
  int64_t I[3] = {1, 1, 1}, O[3] = {1, 1, 1};
  std::vector<Interp> t3(3);
  for (int i = 0; i < 3; ++i) {
    int j = i - (3 - nd);
    if (j >= 0) {
      I[i] = in[size_t(j)];
      O[i] = out[size_t(j)];
      t3[size_t(i)] = tabs[size_t(j)];
    } else {
      t3[size_t(i)] = Interp{{0}, {0}, {0.0}};
    }
  }
  Shape os(x.shape.begin(), x.shape.begin() + 2);
  for (int64_t v : out) os.push_back(v);
  Tensor y = Tensor::empty(x.dtype, os);
  int64_t planes = x.shape[0] * x.shape[1];
  int64_t isz = I[0] * I[1] * I[2], osz = O[0] * O[1] * O[2];
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(planes, std::max<int64_t>(1, kGrain / std::max<int64_t>(osz, 1)), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const T* src = px + pl * isz;
        T* dst = py + pl * osz;
        for (int64_t od = 0; od < O[0]; ++od) {
          const Interp& a = t3[0];
          int64_t d0 = a.i0[size_t(od)], d1 = a.i1[size_t(od)];
          T wd1 = T(a.w1[size_t(od)]), wd0 = T(1) - wd1;
          for (int64_t oh = 0; oh < O[1]; ++oh) {
            const Interp& bb = t3[1];
            int64_t h0 = bb.i0[size_t(oh)], h1 = bb.i1[size_t(oh)];
            T wh1 = T(bb.w1[size_t(oh)]), wh0 = T(1) - wh1;
            for (int64_t ow = 0; ow < O[2]; ++ow) {
              const Interp& c = t3[2];
              int64_t w0 = c.i0[size_t(ow)], w1 = c.i1[size_t(ow)];
              T ww1 = T(c.w1[size_t(ow)]), ww0 = T(1) - ww1;
              auto at = [&](int64_t dd, int64_t hh, int64_t wwi) { return src[(dd * I[1] + hh) * I[2] + wwi]; };
              T v0 = wh0 * (ww0 * at(d0, h0, w0) + ww1 * at(d0, h0, w1)) + wh1 * (ww0 * at(d0, h1, w0) + ww1 * at(d0, h1, w1));
              T v = v0;
              if (nd == 3) {
                T v1 = wh0 * (ww0 * at(d1, h0, w0) + ww1 * at(d1, h0, w1)) + wh1 * (ww0 * at(d1, h1, w0) + ww1 * at(d1, h1, w1));
                v = wd0 * v0 + wd1 * v1;
              }
              dst[(od * O[1] + oh) * O[2] + ow] = v;
            }
          }
        }
      }
    });
  });
  return y;
}

// ================================================================================================ embeddings

Tensor embedding(const Tensor& idx, const Tensor& w, const Val& max_norm, double norm_type) {
  if (!is_integral(idx.dtype)) fail("embedding: indices must be an integer tensor");
  if (w.dim() != 2) fail("embedding: weight must be 2-D");
  int64_t V = w.shape[0], D = w.shape[1];
  Shape os = idx.shape;
  os.push_back(D);
  Tensor y = Tensor::empty(w.dtype, os);
  size_t es = psize(w.ptype());
  const char* src = static_cast<const char*>(w.raw());
  char* dst = static_cast<char*>(y.raw());
  for (int64_t i = 0; i < idx.numel(); ++i) {
    int64_t v = idx.item_int(i);
    if (v < 0 || v >= V) fail("embedding: index " + std::to_string(v) + " out of range for " + std::to_string(V) + " rows");
    std::memcpy(dst + size_t(i * D) * es, src + size_t(v * D) * es, size_t(D) * es);
  }
  if (!max_norm.is_none()) {
    double mn = max_norm.as_double();
    dispatch_float(y.ptype(), [&](auto tag) {
      using T = decltype(tag);
      T* p = y.data<T>();
      for (int64_t i = 0; i < idx.numel(); ++i) {
        double n = 0;
        for (int64_t j = 0; j < D; ++j) n += std::pow(std::fabs(double(p[i * D + j])), norm_type);
        n = std::pow(n, 1.0 / norm_type);
        if (n > mn) {
          T sc = T(mn / (n + 1e-7));
          for (int64_t j = 0; j < D; ++j) p[i * D + j] *= sc;
        }
      }
    });
  }
  return y;
}

Tensor embedding_bag(const Tensor& idx0, const Tensor& offsets0, const Tensor& w, const std::string& mode,
                     const Tensor& psw, bool include_last, int64_t padding_idx) {
  Tensor idx = idx0;
  std::vector<int64_t> starts;
  int64_t total;
  if (idx.dim() == 2) {
    if (offsets0.defined()) fail("embedding_bag: offsets must be None for a 2-D input");
    int64_t B = idx.shape[0], L = idx.shape[1];
    for (int64_t b = 0; b < B; ++b) starts.push_back(b * L);
    total = B * L;
    idx = idx.reshaped({total});
  } else if (idx.dim() == 1) {
    if (!offsets0.defined()) fail("embedding_bag: offsets are required for a 1-D input");
    for (int64_t i = 0; i < offsets0.numel(); ++i) starts.push_back(offsets0.item_int(i));
    total = idx.numel();
    if (include_last && !starts.empty()) starts.pop_back();
  } else {
    fail("embedding_bag: input must be 1-D or 2-D");
  }
  int64_t B = int64_t(starts.size()), D = w.shape[1], V = w.shape[0];
  if (psw.defined() && mode != "sum") fail("embedding_bag: per_sample_weights only with mode='sum'");
  Tensor y = Tensor::zeros(w.dtype, {B, D});
  dispatch_float(w.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pw = w.data<T>();
    T* py = y.data<T>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t s = starts[size_t(b)];
      int64_t e = b + 1 < B ? starts[size_t(b + 1)] : (include_last ? offsets0.item_int(offsets0.numel() - 1) : total);
      e = std::min(e, total);
      int64_t cnt = 0;
      std::vector<double> acc(size_t(D), mode == "max" ? -INFINITY : 0.0);
      for (int64_t i = s; i < e; ++i) {
        int64_t v = idx.item_int(i);
        if (v < 0 || v >= V) fail("embedding_bag: index out of range");
        if (v == padding_idx) continue;
        ++cnt;
        double sw = psw.defined() ? psw.item_double(i) : 1.0;
        for (int64_t j = 0; j < D; ++j) {
          double x = double(pw[v * D + j]);
          if (mode == "max") acc[size_t(j)] = std::max(acc[size_t(j)], x);
          else acc[size_t(j)] += x * sw;
        }
      }
      if (cnt == 0) continue;
      for (int64_t j = 0; j < D; ++j)
        py[b * D + j] = T(mode == "mean" ? acc[size_t(j)] / double(cnt) : acc[size_t(j)]);
    }
  });
  return y;
}

// ================================================================================================ fold / unfold

Tensor unfold(const Tensor& x0, const std::vector<int64_t>& k, const std::vector<int64_t>& d,
              const std::vector<int64_t>& p, const std::vector<int64_t>& s) {
  Tensor x = as_float(x0);
  bool unbatched = x.dim() == 3;
  if (unbatched) x = x.reshaped({1, x.shape[0], x.shape[1], x.shape[2]});
  if (x.dim() != 4) fail("unfold: expected a 3-D or 4-D input");
  Geo g;
  g.nd = 2;
  set3(g.k, k, 2);
  set3(g.d, d, 2);
  set3(g.p, p, 2);
  set3(g.s, s, 2);
  int64_t N = x.shape[0], C = x.shape[1];
  g.in[1] = x.shape[2];
  g.in[2] = x.shape[3];
  for (int i = 1; i < 3; ++i) g.out[i] = (g.in[i] + 2 * g.p[i] - g.d[i] * (g.k[i] - 1) - 1) / g.s[i] + 1;
  int64_t K = C * g.k_size(), L = g.out_size();
  Tensor y = Tensor::empty(x.dtype, {N, K, L});
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    for (int64_t n = 0; n < N; ++n) im2col<T>(x.data<T>() + n * C * g.in_size(), C, g, y.data<T>() + n * K * L);
  });
  if (unbatched) y = y.reshaped({K, L});
  return y;
}

Tensor fold(const Tensor& x0, const std::vector<int64_t>& osz, const std::vector<int64_t>& k,
            const std::vector<int64_t>& d, const std::vector<int64_t>& p, const std::vector<int64_t>& s) {
  Tensor x = as_float(x0);
  bool unbatched = x.dim() == 2;
  if (unbatched) x = x.reshaped({1, x.shape[0], x.shape[1]});
  if (x.dim() != 3) fail("fold: expected a 2-D or 3-D input");
  Geo g;
  g.nd = 2;
  set3(g.k, k, 2);
  set3(g.d, d, 2);
  set3(g.p, p, 2);
  set3(g.s, s, 2);
  g.in[1] = osz[0];
  g.in[2] = osz[1];
  for (int i = 1; i < 3; ++i) g.out[i] = (g.in[i] + 2 * g.p[i] - g.d[i] * (g.k[i] - 1) - 1) / g.s[i] + 1;
  int64_t N = x.shape[0], K = x.shape[1], L = x.shape[2];
  if (K % g.k_size()) fail("fold: input channels not divisible by the kernel size");
  if (L != g.out_size()) fail("fold: input blocks do not match the output size");
  int64_t C = K / g.k_size();
  Tensor y = Tensor::zeros(x.dtype, {N, C, osz[0], osz[1]});
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    for (int64_t n = 0; n < N; ++n) col2im<T>(x.data<T>() + n * K * L, C, g, y.data<T>() + n * C * g.in_size());
  });
  if (unbatched) y = y.reshaped({C, osz[0], osz[1]});
  return y;
}

// ================================================================================================ similarity

Tensor cosine_similarity(const Tensor& a0, const Tensor& b0, int64_t dim, double eps) {
  DType dt = float_common({&a0, &b0});
  Shape s = broadcast_shapes(a0.shape, b0.shape);
  Tensor a = expand(as_dtype(a0, dt), s), b = expand(as_dtype(b0, dt), s);
  int64_t d = norm_dim(dim, int64_t(s.size()));
  int64_t outer = 1, inner = 1, n = s[size_t(d)];
  for (int64_t i = 0; i < d; ++i) outer *= s[size_t(i)];
  for (int64_t i = d + 1; i < int64_t(s.size()); ++i) inner *= s[size_t(i)];
  Shape os = s;
  os.erase(os.begin() + d);
  Tensor y = Tensor::empty(dt, os);
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* py = y.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        double na = 0, nb = 0;
        for (int64_t j = 0; j < n; ++j) {
          double x = pa[(o * n + j) * inner + i], z = pb[(o * n + j) * inner + i];
          na += x * x;
          nb += z * z;
        }
        na = std::max(std::sqrt(na), eps);
        nb = std::max(std::sqrt(nb), eps);
        double dot = 0;
        for (int64_t j = 0; j < n; ++j)
          dot += (double(pa[(o * n + j) * inner + i]) / na) * (double(pb[(o * n + j) * inner + i]) / nb);
        py[o * inner + i] = T(dot);
      }
  });
  return y;
}

Tensor pairwise_distance(const Tensor& a, const Tensor& b, double p, double eps, bool keepdim) {
  Tensor diff = binary(BinOp::Add, binary(BinOp::Sub, a, b), Tensor::scalar(float_common({&a, &b}), eps));
  Tensor x = as_float(diff);
  int64_t n = x.dim() ? x.shape.back() : 1;
  int64_t rows = x.numel() / std::max<int64_t>(n, 1);
  Shape os(x.shape.begin(), x.shape.end() - (x.dim() ? 1 : 0));
  if (keepdim) os.push_back(1);
  Tensor y = Tensor::empty(x.dtype, os);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t j = 0; j < n; ++j) {
      double v = std::fabs(x.item_double(r * n + j));
      if (std::isinf(p)) acc = std::max(acc, v);
      else if (p == 0) acc += v != 0;
      else acc += std::pow(v, p);
    }
    if (!std::isinf(p) && p != 0) acc = std::pow(acc, 1.0 / p);
    if (y.ptype() == PType::F32) y.data<float>()[r] = float(acc);
    else y.data<double>()[r] = acc;
  }
  return y;
}

Tensor bilinear(const Tensor& x1_0, const Tensor& x2_0, const Tensor& w0, const Tensor& b0) {
  DType dt = float_common({&x1_0, &x2_0, &w0, &b0});
  Tensor x1 = as_dtype(x1_0, dt), x2 = as_dtype(x2_0, dt), w = as_dtype(w0, dt);
  int64_t O = w.shape[0], I1 = w.shape[1], I2 = w.shape[2];
  int64_t N = x1.numel() / I1;
  if (x2.numel() / I2 != N) fail("bilinear: inputs disagree on the batch size");
  // tmp[n, o, j] = sum_i x1[n, i] * W[o, i, j]   (W permuted to [i, o, j])
  Tensor wp = permute(w, {1, 0, 2});
  Tensor tmp = matmul(x1.reshaped({N, I1}), wp.reshaped({I1, O * I2}));
  Shape os(x1.shape.begin(), x1.shape.end() - 1);
  os.push_back(O);
  Tensor y = Tensor::empty(dt, os);
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    const T* pt = tmp.data<T>();
    const T* p2 = x2.data<T>();
    T* py = y.data<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) {
        T s = b0.defined() ? T(b0.item_double(o)) : T(0);
        for (int64_t j = 0; j < I2; ++j) s += pt[(n * O + o) * I2 + j] * p2[n * I2 + j];
        py[n * O + o] = s;
      }
  });
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x0, int64_t nd, const Tensor& w0, const Tensor& b0, double eps) {
  Tensor x = as_float(x0);
  if (nd > x.dim()) fail("layer_norm: normalized_shape longer than the input rank");
  int64_t L = 1;
  for (int64_t i = x.dim() - nd; i < x.dim(); ++i) L *= x.shape[size_t(i)];
  int64_t rows = x.numel() / std::max<int64_t>(L, 1);
  Tensor w = w0.defined() ? as_dtype(w0, x.dtype) : Tensor();
  Tensor b = b0.defined() ? as_dtype(b0, x.dtype) : Tensor();
  if ((w.defined() && w.numel() != L) || (b.defined() && b.numel() != L)) fail("layer_norm: weight/bias size mismatch");
  Tensor y = Tensor::empty(x.dtype, x.shape);
  dispatch_float(x.ptype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pw = w.defined() ? w.data<T>() : nullptr;
    const T* pb = b.defined() ? b.data<T>() : nullptr;
    T* py = y.data<T>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(L, 1)), [&](int64_t bb, int64_t e) {
      for (int64_t r = bb; r < e; ++r) {
        const T* s = px + r * L;
        T* d = py + r * L;
        const double m = sum_d(s, L) / double(L);
        const double s2 = sumsq_d(s, L, m);
        T inv = T(1.0 / std::sqrt(s2 / double(L) + eps));
        T mt = T(m);
        for (int64_t i = 0; i < L; ++i) {
          T v = (s[i] - mt) * inv;
          if (pw) v *= pw[i];
          if (pb) v += pb[i];
          d[i] = v;
        }
      }
    });
  });
  return y;
}

// ================================================================================================ registration

namespace {

int conv_nd_of(const std::string& name) {
  char c = name[name.size() - 2];
  return c - '0';
}

}  // namespace

void register_nn(Registry& r) {
  using K = OpKind;
  // ---- linear algebra
  r.add(K::Module, "torch.nn.Linear", [](Call& c) -> Val {
    return TV(linear(c.args.at(0).as_tensor(), c.attrs.tensor("weight"), c.attrs.tensor_opt("bias")));
  });
  r.add(K::Function, "torch.nn.functional.linear", [](Call& c) -> Val {
    Args a(c, {"input", "weight", "bias"});
    return TV(linear(a.tensor(0), a.tensor(1), a.tensor_opt(2)));
  });
  r.add(K::Module, "torch.nn.Bilinear", [](Call& c) -> Val {
    if (c.args.size() != 2) fail("Bilinear takes two inputs");
    return TV(bilinear(c.args[0].as_tensor(), c.args[1].as_tensor(), c.attrs.tensor("weight"), c.attrs.tensor_opt("bias")));
  });
  r.add(K::Function, {"torch.nn.functional.bilinear", "torch.bilinear"}, [](Call& c) -> Val {
    Args a(c, {"input1", "input2", "weight", "bias"});
    return TV(bilinear(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor_opt(3)));
  });
  Handler mm = [](Call& c) -> Val {
    Args a(c, {"input", "other"});
    return TV(matmul(a.tensor(0), a.tensor(1)));
  };
  r.add(K::Function, {"operator.matmul", "torch.matmul", "torch.mm", "torch.bmm", "torch.mv", "torch.dot", "torch.inner"}, mm);
  r.add(K::Method, {"matmul", "mm", "bmm", "mv", "dot", "__matmul__"}, mm);
  Handler addmm = [](Call& c) -> Val {
    Args a(c, {"input", "mat1", "mat2", "beta", "alpha"});
    Val p = TV(matmul(a.tensor(1), a.tensor(2)));
    if (a.has(4)) p = binary(BinOp::Mul, p, a[4]);
    Val in = a[0];
    if (a.has(3)) in = binary(BinOp::Mul, in, a[3]);
    return binary(BinOp::Add, in, p);
  };
  r.add(K::Function, {"torch.addmm", "torch.baddbmm", "torch.addbmm"}, addmm);
  r.add(K::Method, {"addmm", "baddbmm"}, addmm);
  r.add(K::Function, "torch.outer", [](Call& c) -> Val {
    Args a(c, {"input", "vec2"});
    Tensor x = a.tensor(0), y = a.tensor(1);
    return TV(matmul(x.reshaped({x.numel(), 1}), y.reshaped({1, y.numel()})));
  });
  r.add(K::Function, "torch.einsum", [](Call& c) -> Val {
    if (c.args.empty() || c.args[0].k != Val::K::Str) fail("einsum expects an equation string first");
    std::vector<Tensor> ops;
    if (c.args.size() == 2 && c.args[1].is_seq()) {
      for (const auto& v : c.args[1].seq()) ops.push_back(v.as_tensor());
    } else {
      for (size_t i = 1; i < c.args.size(); ++i) ops.push_back(c.args[i].as_tensor());
    }
    return TV(einsum(c.args[0].s, ops));
  });

  // ---- convolution
  for (const char* name : {"torch.nn.Conv1d", "torch.nn.Conv2d", "torch.nn.Conv3d", "torch.nn.ConvTranspose1d",
                           "torch.nn.ConvTranspose2d", "torch.nn.ConvTranspose3d"}) {
    int nd = conv_nd_of(name);
    r.add(K::Module, name, [nd](Call& c) -> Val {
      if (c.args.empty()) fail("missing input");
      ConvOpts o = conv_opts_from_attrs(c.attrs, nd);
      Tensor x = c.args[0].as_tensor();
      if (o.transposed) {
        const Val* os = c.args.size() > 1 ? &c.args[1] : c.kwarg("output_size");
        if (os && !os->is_none()) {
          // choose output_padding so that the output has the requested size
          std::vector<int64_t> want = os->as_ints();
          want = std::vector<int64_t>(want.end() - nd, want.end());
          std::vector<int64_t> ks = nd_ints(c.attrs.get("kernel_size"), nd, "kernel_size");
          for (int i = 0; i < nd; ++i) {
            int64_t in = x.shape[size_t(x.dim() - nd + i)];
            int64_t base = (in - 1) * o.stride[size_t(i)] - 2 * o.padding[size_t(i)] +
                           o.dilation[size_t(i)] * (ks[size_t(i)] - 1) + 1;
            o.output_padding[size_t(i)] = want[size_t(i)] - base;
          }
        }
      }
      return TV(conv_nd(x, c.attrs.tensor("weight"), c.attrs.tensor_opt("bias"), nd, o));
    });
  }
  for (int nd = 1; nd <= 3; ++nd) {
    r.add(K::Function, "torch.nn.functional.conv" + std::to_string(nd) + "d", [nd](Call& c) -> Val {
      Args a(c, {"input", "weight", "bias", "stride", "padding", "dilation", "groups"});
      ConvOpts o;
      o.stride = a.has(3) ? nd_ints(a[3], nd, "stride") : std::vector<int64_t>(size_t(nd), 1);
      o.dilation = a.has(5) ? nd_ints(a[5], nd, "dilation") : std::vector<int64_t>(size_t(nd), 1);
      o.padding = std::vector<int64_t>(size_t(nd), 0);
      if (a.has(4)) {
        if (a[4].k == Val::K::Str) o.padding_str = a[4].s;
        else o.padding = nd_ints(a[4], nd, "padding");
      }
      o.groups = a.integer(6, 1);
      return TV(conv_nd(a.tensor(0), a.tensor(1), a.tensor_opt(2), nd, o));
    });
    r.add(K::Function, "torch.conv" + std::to_string(nd) + "d", *r.find(K::Function, "torch.nn.functional.conv" + std::to_string(nd) + "d"));
    r.add(K::Function, "torch.nn.functional.conv_transpose" + std::to_string(nd) + "d", [nd](Call& c) -> Val {
      Args a(c, {"input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"});
      ConvOpts o;
      o.transposed = true;
      o.stride = a.has(3) ? nd_ints(a[3], nd, "stride") : std::vector<int64_t>(size_t(nd), 1);
      o.padding = a.has(4) ? nd_ints(a[4], nd, "padding") : std::vector<int64_t>(size_t(nd), 0);
      o.output_padding = a.has(5) ? nd_ints(a[5], nd, "output_padding") : std::vector<int64_t>(size_t(nd), 0);
      o.groups = a.integer(6, 1);
      o.dilation = a.has(7) ? nd_ints(a[7], nd, "dilation") : std::vector<int64_t>(size_t(nd), 1);
      return TV(conv_nd(a.tensor(0), a.tensor(1), a.tensor_opt(2), nd, o));
    });
    r.add(K::Function, "torch.conv_transpose" + std::to_string(nd) + "d",
          *r.find(K::Function, "torch.nn.functional.conv_transpose" + std::to_string(nd) + "d"));
  }

  // ---- pooling
  for (int nd = 1; nd <= 3; ++nd) {
    std::string sfx = std::to_string(nd) + "d";
    r.add(K::Module, "torch.nn.MaxPool" + sfx, [nd](Call& c) -> Val {
      const Attrs& at = c.attrs;
      PoolOpts o;
      o.kernel = nd_ints(at.get("kernel_size"), nd, "kernel_size");
      o.stride = at.get("stride").is_none() ? o.kernel : nd_ints(at.get("stride"), nd, "stride");
      o.padding = nd_ints(at.get("padding"), nd, "padding");
      o.dilation = nd_ints(at.get("dilation"), nd, "dilation");
      o.ceil_mode = at.flag("ceil_mode");
      o.return_indices = at.flag("return_indices");
      return pool_nd(c.args.at(0).as_tensor(), nd, o, true);
    });
    r.add(K::Module, "torch.nn.AvgPool" + sfx, [nd](Call& c) -> Val {
      const Attrs& at = c.attrs;
      PoolOpts o;
      o.kernel = nd_ints(at.get("kernel_size"), nd, "kernel_size");
      o.stride = at.get("stride").is_none() ? o.kernel : nd_ints(at.get("stride"), nd, "stride");
      o.padding = nd_ints(at.get("padding"), nd, "padding");
      o.ceil_mode = at.flag("ceil_mode");
      o.count_include_pad = at.flag("count_include_pad");
      if (at.has("divisor_override") && !at.get("divisor_override").is_none()) o.divisor = at.integer("divisor_override");
      return pool_nd(c.args.at(0).as_tensor(), nd, o, false);
    });
    r.add(K::Module, "torch.nn.LPPool" + sfx, [nd](Call& c) -> Val {
      const Attrs& at = c.attrs;
      std::vector<int64_t> k = nd_ints(at.get("kernel_size"), nd, "kernel_size");
      std::vector<int64_t> s = at.get("stride").is_none() ? k : nd_ints(at.get("stride"), nd, "stride");
      return TV(lp_pool(c.args.at(0).as_tensor(), nd, at.dbl("norm_type"), k, s, at.flag("ceil_mode")));
    });
    r.add(K::Module, "torch.nn.AdaptiveAvgPool" + sfx, [nd](Call& c) -> Val {
      return adaptive_pool_nd(c.args.at(0).as_tensor(), nd, adaptive_size(c.attrs.get("output_size"), nd), false, false);
    });
    r.add(K::Module, "torch.nn.AdaptiveMaxPool" + sfx, [nd](Call& c) -> Val {
      return adaptive_pool_nd(c.args.at(0).as_tensor(), nd, adaptive_size(c.attrs.get("output_size"), nd), true,
                              c.attrs.flag("return_indices"));
    });
    Handler maxf = [nd](Call& c) -> Val {
      Args a(c, {"input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"});
      PoolOpts o;
      o.kernel = nd_ints(a[1], nd, "kernel_size");
      o.stride = a.has(2) && !(a[2].is_seq() && a[2].seq().empty()) ? nd_ints(a[2], nd, "stride") : o.kernel;
      o.padding = a.has(3) ? nd_ints(a[3], nd, "padding") : std::vector<int64_t>(size_t(nd), 0);
      o.dilation = a.has(4) ? nd_ints(a[4], nd, "dilation") : std::vector<int64_t>(size_t(nd), 1);
      o.ceil_mode = a.flag(5, false);
      o.return_indices = a.flag(6, false) || c.target->find("with_indices") != std::string::npos;
      return pool_nd(a.tensor(0), nd, o, true);
    };
    r.add(K::Function, "torch.nn.functional.max_pool" + sfx, maxf);
    r.add(K::Function, "torch.nn.functional.max_pool" + sfx + "_with_indices", maxf);
    r.add(K::Function, "torch.max_pool" + sfx, maxf);
    Handler avgf = [nd](Call& c) -> Val {
      Args a(c, {"input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"});
      PoolOpts o;
      o.kernel = nd_ints(a[1], nd, "kernel_size");
      o.stride = a.has(2) && !(a[2].is_seq() && a[2].seq().empty()) ? nd_ints(a[2], nd, "stride") : o.kernel;
      o.padding = a.has(3) ? nd_ints(a[3], nd, "padding") : std::vector<int64_t>(size_t(nd), 0);
      o.ceil_mode = a.flag(4, false);
      o.count_include_pad = a.flag(5, true);
      o.divisor = a.integer(6, 0);
      return pool_nd(a.tensor(0), nd, o, false);
    };
    r.add(K::Function, "torch.nn.functional.avg_pool" + sfx, avgf);
    if (nd == 1) r.add(K::Function, "torch.avg_pool1d", avgf);
    r.add(K::Function, "torch.nn.functional.adaptive_avg_pool" + sfx, [nd](Call& c) -> Val {
      Args a(c, {"input", "output_size"});
      return adaptive_pool_nd(a.tensor(0), nd, adaptive_size(a[1], nd), false, false);
    });
    if (nd == 1) r.add(K::Function, "torch.adaptive_avg_pool1d", *r.find(K::Function, "torch.nn.functional.adaptive_avg_pool1d"));
    Handler amaxf = [nd](Call& c) -> Val {
      Args a(c, {"input", "output_size", "return_indices"});
      bool ri = a.flag(2, false) || c.target->find("with_indices") != std::string::npos;
      return adaptive_pool_nd(a.tensor(0), nd, adaptive_size(a[1], nd), true, ri);
    };
    r.add(K::Function, "torch.nn.functional.adaptive_max_pool" + sfx, amaxf);
    r.add(K::Function, "torch.nn.functional.adaptive_max_pool" + sfx + "_with_indices", amaxf);
    r.add(K::Function, "torch.nn.functional.lp_pool" + sfx, [nd](Call& c) -> Val {
      Args a(c, {"input", "norm_type", "kernel_size", "stride", "ceil_mode"});
      std::vector<int64_t> k = nd_ints(a[2], nd, "kernel_size");
      std::vector<int64_t> s = a.has(3) ? nd_ints(a[3], nd, "stride") : k;
      return TV(lp_pool(a.tensor(0), nd, a.dbl(1, 2), k, s, a.flag(4, false)));
    });
    r.add(K::Module, "torch.nn.MaxUnpool" + sfx, [nd](Call& c) -> Val {
      Args a(c, {"input", "indices", "output_size"});
      const Attrs& at = c.attrs;
      std::vector<int64_t> k = nd_ints(at.get("kernel_size"), nd, "kernel_size");
      std::vector<int64_t> s = at.get("stride").is_none() ? k : nd_ints(at.get("stride"), nd, "stride");
      Val none = Val::none();
      return TV(max_unpool(a.tensor(0), a.tensor(1), nd, k, s, nd_ints(at.get("padding"), nd, "padding"),
                           a.given(2) ? a[2] : none));
    });
    r.add(K::Function, "torch.nn.functional.max_unpool" + sfx, [nd](Call& c) -> Val {
      Args a(c, {"input", "indices", "kernel_size", "stride", "padding", "output_size"});
      std::vector<int64_t> k = nd_ints(a[2], nd, "kernel_size");
      std::vector<int64_t> s = a.has(3) ? nd_ints(a[3], nd, "stride") : k;
      std::vector<int64_t> p = a.has(4) ? nd_ints(a[4], nd, "padding") : std::vector<int64_t>(size_t(nd), 0);
      Val none = Val::none();
      return TV(max_unpool(a.tensor(0), a.tensor(1), nd, k, s, p, a.given(5) ? a[5] : none));
    });
    if (nd >= 2) {
      r.add(K::Module, "torch.nn.FractionalMaxPool" + sfx, [nd](Call& c) -> Val {
        const Attrs& at = c.attrs;
        return fractional_max_pool(c.args.at(0).as_tensor(), nd, nd_ints(at.get("kernel_size"), nd, "kernel_size"),
                                   at.get("output_size"), at.get("output_ratio"), at.tensor_opt("_random_samples"),
                                   at.flag("return_indices"));
      });
    }
  }

  // ---- normalisation
  for (const char* name : {"torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.SyncBatchNorm"}) {
    r.add(K::Module, name, [](Call& c) -> Val {
      const Attrs& at = c.attrs;
      Tensor rm = at.tensor_opt("running_mean"), rv = at.tensor_opt("running_var");
      bool batch_stats = !at.flag("track_running_stats") || !rm.defined();
      return TV(batch_norm(c.args.at(0).as_tensor(), rm, rv, at.tensor_opt("weight"), at.tensor_opt("bias"), batch_stats,
                           at.dbl("eps")));
    });
  }
  for (const char* name : {"torch.nn.InstanceNorm1d", "torch.nn.InstanceNorm2d", "torch.nn.InstanceNorm3d"}) {
    int nd = conv_nd_of(name);
    r.add(K::Module, name, [nd](Call& c) -> Val {
      const Attrs& at = c.attrs;
      Tensor x = c.args.at(0).as_tensor();
      bool unbatched = x.dim() == nd + 1;
      if (unbatched) {
        Shape s = x.shape;
        s.insert(s.begin(), 1);
        x = x.reshaped(s);
      }
      Tensor rm = at.tensor_opt("running_mean"), rv = at.tensor_opt("running_var");
      Tensor w = at.tensor_opt("weight"), b = at.tensor_opt("bias");
      Tensor y;
      if (at.flag("track_running_stats") && rm.defined()) {
        y = batch_norm(x, rm, rv, w, b, false, at.dbl("eps"));
      } else {
        // per-instance statistics: a group norm with one channel per group
        y = group_norm(x, x.shape[1], w, b, at.dbl("eps"));
      }
      if (unbatched) y = y.reshaped(Shape(y.shape.begin() + 1, y.shape.end()));
      return TV(y);
    });
  }
  r.add(K::Module, "torch.nn.LayerNorm", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    int64_t nd = int64_t(at.ints("normalized_shape").size());
    return TV(layer_norm(c.args.at(0).as_tensor(), nd, at.tensor_opt("weight"), at.tensor_opt("bias"), at.dbl("eps")));
  });
  r.add(K::Module, "torch.nn.GroupNorm", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    return TV(group_norm(c.args.at(0).as_tensor(), at.integer("num_groups"), at.tensor_opt("weight"), at.tensor_opt("bias"),
                         at.dbl("eps")));
  });
  r.add(K::Module, "torch.nn.RMSNorm", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    Tensor x = c.args.at(0).as_tensor();
    int64_t nd = int64_t(at.ints("normalized_shape").size());
    double eps = at.get("eps").is_none() ? finfo_eps(x.dtype) : at.dbl("eps");
    return TV(rms_norm(x, nd, at.tensor_opt("weight"), eps));
  });
  r.add(K::Module, "torch.nn.CrossMapLRN2d", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    return TV(cross_map_lrn2d(c.args.at(0).as_tensor(), at.integer("size"), at.dbl("alpha"), at.dbl("beta"), at.dbl("k")));
  });
  r.add(K::Module, "torch.nn.LocalResponseNorm", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    return TV(local_response_norm(c.args.at(0).as_tensor(), at.integer("size"), at.dbl("alpha"), at.dbl("beta"), at.dbl("k")));
  });
  r.add(K::Function, "torch.nn.functional.layer_norm", [](Call& c) -> Val {
    Args a(c, {"input", "normalized_shape", "weight", "bias", "eps"});
    return TV(layer_norm(a.tensor(0), int64_t(a.ints(1).size()), a.tensor_opt(2), a.tensor_opt(3), a.dbl(4, 1e-5)));
  });
  r.add(K::Function, "torch.nn.functional.rms_norm", [](Call& c) -> Val {
    Args a(c, {"input", "normalized_shape", "weight", "eps"});
    Tensor x = a.tensor(0);
    return TV(rms_norm(x, int64_t(a.ints(1).size()), a.tensor_opt(2), a.has(3) ? a.dbl(3, 0) : finfo_eps(x.dtype)));
  });
  r.add(K::Function, "torch.nn.functional.group_norm", [](Call& c) -> Val {
    Args a(c, {"input", "num_groups", "weight", "bias", "eps"});
    return TV(group_norm(a.tensor(0), a.integer(1, 1), a.tensor_opt(2), a.tensor_opt(3), a.dbl(4, 1e-5)));
  });
  r.add(K::Function, "torch.nn.functional.batch_norm", [](Call& c) -> Val {
    Args a(c, {"input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"});
    bool training = a.flag(5, false);
    return TV(batch_norm(a.tensor(0), a.tensor_opt(1), a.tensor_opt(2), a.tensor_opt(3), a.tensor_opt(4),
                         training || !a.has(1), a.dbl(7, 1e-5)));
  });
  r.add(K::Function, "torch.nn.functional.instance_norm", [](Call& c) -> Val {
    Args a(c, {"input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps"});
    Tensor x = a.tensor(0);
    if (!a.flag(5, true) && a.has(1))
      return TV(batch_norm(x, a.tensor(1), a.tensor(2), a.tensor_opt(3), a.tensor_opt(4), false, a.dbl(7, 1e-5)));
    return TV(group_norm(x, x.shape.at(1), a.tensor_opt(3), a.tensor_opt(4), a.dbl(7, 1e-5)));
  });
  r.add(K::Function, "torch.nn.functional.local_response_norm", [](Call& c) -> Val {
    Args a(c, {"input", "size", "alpha", "beta", "k"});
    return TV(local_response_norm(a.tensor(0), a.integer(1, 1), a.dbl(2, 1e-4), a.dbl(3, 0.75), a.dbl(4, 1.0)));
  });
  r.add(K::Function, "torch.nn.functional.normalize", [](Call& c) -> Val {
    Args a(c, {"input", "p", "dim", "eps", "out"});
    Tensor x = as_float(a.tensor(0));
    double p = a.dbl(1, 2.0), eps = a.dbl(3, 1e-12);
    int64_t d = norm_dim(a.integer(2, 1), x.dim());
    Tensor ax = binary(BinOp::Maximum, x, binary(BinOp::Mul, x, Tensor::scalar(x.dtype, -1.0)));
    Tensor sp = reduce_sum(binary(BinOp::Pow, ax, Tensor::scalar(x.dtype, p)), {d}, true, false);
    Tensor n = binary(BinOp::Pow, sp, Tensor::scalar(x.dtype, 1.0 / p));
    Tensor den = binary(BinOp::Maximum, n, Tensor::scalar(x.dtype, eps));
    return TV(binary(BinOp::Div, x, den));
  });

  // ---- resampling
  for (const char* name : {"torch.nn.Upsample", "torch.nn.UpsamplingNearest2d", "torch.nn.UpsamplingBilinear2d"}) {
    std::string n = name;
    r.add(K::Module, name, [n](Call& c) -> Val {
      const Attrs& at = c.attrs;
      Val align = at.get("align_corners");
      std::string mode = at.str("mode");
      if (n == "torch.nn.UpsamplingBilinear2d") align = Val::boolean(true);
      Val rc = at.has("recompute_scale_factor") ? at.get("recompute_scale_factor") : Val::none();
      return TV(interpolate(c.args.at(0).as_tensor(), at.get("size"), at.get("scale_factor"), mode, align, rc));
    });
  }
  r.add(K::Function, {"torch.nn.functional.interpolate", "torch.nn.functional.upsample"}, [](Call& c) -> Val {
    Args a(c, {"input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"});
    if (a.flag(6, false)) fail("interpolate: antialias=True is not supported");
    Val none = Val::none();
    return TV(interpolate(a.tensor(0), a.given(1) ? a[1] : none, a.given(2) ? a[2] : none, a.str(3, "nearest"),
                          a.given(4) ? a[4] : none, a.given(5) ? a[5] : none));
  });
  r.add(K::Function, {"torch.nn.functional.upsample_nearest", "torch.nn.functional.upsample_bilinear"}, [](Call& c) -> Val {
    Args a(c, {"input", "size", "scale_factor"});
    bool bil = c.target->find("bilinear") != std::string::npos;
    Val none = Val::none();
    return TV(interpolate(a.tensor(0), a.given(1) ? a[1] : none, a.given(2) ? a[2] : none, bil ? "bilinear" : "nearest",
                          bil ? Val::boolean(true) : none, none));
  });

  // ---- embeddings
  r.add(K::Module, "torch.nn.Embedding", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    return TV(embedding(c.args.at(0).as_tensor(), at.tensor("weight"), at.get("max_norm"), at.dbl("norm_type")));
  });
  r.add(K::Function, "torch.nn.functional.embedding", [](Call& c) -> Val {
    Args a(c, {"input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"});
    Val none = Val::none();
    return TV(embedding(a.tensor(0), a.tensor(1), a.given(3) ? a[3] : none, a.dbl(4, 2.0)));
  });
  r.add(K::Module, "torch.nn.EmbeddingBag", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    if (!at.get("max_norm").is_none()) fail("EmbeddingBag with max_norm is not supported");
    Args a(c, {"input", "offsets", "per_sample_weights"});
    int64_t pidx = at.get("padding_idx").is_none() ? std::numeric_limits<int64_t>::min() : at.integer("padding_idx");
    return TV(embedding_bag(a.tensor(0), a.tensor_opt(1), at.tensor("weight"), at.str("mode"), a.tensor_opt(2),
                            at.flag("include_last_offset"), pidx));
  });
  r.add(K::Function, "torch.nn.functional.embedding_bag", [](Call& c) -> Val {
    Args a(c, {"input", "weight", "offsets", "max_norm", "norm_type", "scale_grad_by_freq", "mode", "sparse",
               "per_sample_weights", "include_last_offset", "padding_idx"});
    if (a.has(3)) fail("embedding_bag with max_norm is not supported");
    int64_t pidx = a.has(10) ? a.integer(10, 0) : std::numeric_limits<int64_t>::min();
    return TV(embedding_bag(a.tensor(0), a.tensor_opt(2), a.tensor(1), a.str(6, "mean"), a.tensor_opt(8), a.flag(9, false), pidx));
  });

  // ---- fold / unfold
  r.add(K::Module, "torch.nn.Unfold", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    return TV(unfold(c.args.at(0).as_tensor(), nd_ints(at.get("kernel_size"), 2, "kernel_size"),
                     nd_ints(at.get("dilation"), 2, "dilation"), nd_ints(at.get("padding"), 2, "padding"),
                     nd_ints(at.get("stride"), 2, "stride")));
  });
  r.add(K::Module, "torch.nn.Fold", [](Call& c) -> Val {
    const Attrs& at = c.attrs;
    return TV(fold(c.args.at(0).as_tensor(), nd_ints(at.get("output_size"), 2, "output_size"),
                   nd_ints(at.get("kernel_size"), 2, "kernel_size"), nd_ints(at.get("dilation"), 2, "dilation"),
                   nd_ints(at.get("padding"), 2, "padding"), nd_ints(at.get("stride"), 2, "stride")));
  });
  r.add(K::Function, "torch.nn.functional.unfold", [](Call& c) -> Val {
    Args a(c, {"input", "kernel_size", "dilation", "padding", "stride"});
    auto get = [&](size_t i, int64_t d) { return a.has(i) ? nd_ints(a[i], 2, a.name(i)) : std::vector<int64_t>{d, d}; };
    return TV(unfold(a.tensor(0), get(1, 1), get(2, 1), get(3, 0), get(4, 1)));
  });
  r.add(K::Function, "torch.nn.functional.fold", [](Call& c) -> Val {
    Args a(c, {"input", "output_size", "kernel_size", "dilation", "padding", "stride"});
    auto get = [&](size_t i, int64_t d) { return a.has(i) ? nd_ints(a[i], 2, a.name(i)) : std::vector<int64_t>{d, d}; };
    return TV(fold(a.tensor(0), get(1, 1), get(2, 1), get(3, 1), get(4, 0), get(5, 1)));
  });

  // ---- similarity and distances
  r.add(K::Module, "torch.nn.CosineSimilarity", [](Call& c) -> Val {
    if (c.args.size() != 2) fail("CosineSimilarity takes two inputs");
    return TV(cosine_similarity(c.args[0].as_tensor(), c.args[1].as_tensor(), c.attrs.integer("dim"), c.attrs.dbl("eps")));
  });
  r.add(K::Function, {"torch.nn.functional.cosine_similarity", "torch.cosine_similarity"}, [](Call& c) -> Val {
    Args a(c, {"x1", "x2", "dim", "eps"});
    return TV(cosine_similarity(a.tensor(0), a.tensor(1), a.integer(2, 1), a.dbl(3, 1e-8)));
  });
  r.add(K::Module, "torch.nn.PairwiseDistance", [](Call& c) -> Val {
    if (c.args.size() != 2) fail("PairwiseDistance takes two inputs");
    return TV(pairwise_distance(c.args[0].as_tensor(), c.args[1].as_tensor(), c.attrs.dbl("norm"), c.attrs.dbl("eps"),
                                c.attrs.flag("keepdim")));
  });
  r.add(K::Function, {"torch.nn.functional.pairwise_distance", "torch.pairwise_distance"}, [](Call& c) -> Val {
    Args a(c, {"x1", "x2", "p", "eps", "keepdim"});
    return TV(pairwise_distance(a.tensor(0), a.tensor(1), a.dbl(2, 2.0), a.dbl(3, 1e-6), a.flag(4, false)));
  });
}

}  // namespace fxlower::rt
