// fxlower reference runtime: attention, transformer layers and recurrent networks.
#include <cmath>
#include <limits>
#include <memory>

#include "kernels.hpp"
#include "ops.hpp"

namespace fxlower::rt {

namespace {

Val TV(Tensor t) { return Val::tensor(std::move(t)); }

// A float additive mask from a bool (True = masked out when `true_masks`, else True = keep) or float mask.
Tensor additive_mask(const Tensor& m, DType dt, bool true_masks) {
  if (m.dtype != DType::BOOL) return as_dtype(m, dt);
  Tensor r = Tensor::empty(dt, m.shape);
  const uint8_t* pm = m.data<uint8_t>();
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    T* pr = r.data<T>();
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < m.numel(); ++i) pr[i] = (pm[i] != 0) == true_masks ? ninf : T(0);
  });
  return r;
}

}  // namespace

// ================================================================================================ attention

Tensor sdpa(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& mask0, bool causal, double scale,
            bool has_scale, Tensor* weights_out) {
  DType dt = promote_types(promote_types(q0.dtype, k0.dtype), v0.dtype);
  if (!is_floating(dt)) fail("scaled_dot_product_attention expects floating point inputs");
  Tensor q = as_dtype(q0, dt), k = as_dtype(k0, dt), v = as_dtype(v0, dt);
  if (q.dim() < 2 || k.dim() < 2 || v.dim() < 2) fail("attention inputs need at least 2 dims");
  const int64_t L = q.shape[size_t(q.dim() - 2)], E = q.shape[size_t(q.dim() - 1)];
  const int64_t S = k.shape[size_t(k.dim() - 2)], Ev = v.shape[size_t(v.dim() - 1)];
  if (k.shape.back() != E) fail("attention: query and key embedding sizes differ");
  if (v.shape[size_t(v.dim() - 2)] != S) fail("attention: key and value lengths differ");
  Shape bq(q.shape.begin(), q.shape.end() - 2), bk(k.shape.begin(), k.shape.end() - 2), bv(v.shape.begin(), v.shape.end() - 2);
  Shape batch = broadcast_shapes(broadcast_shapes(bq, bk), bv);
  auto full = [&](const Tensor& t, int64_t a, int64_t b) {
    Shape s = batch;
    s.push_back(a);
    s.push_back(b);
    return expand(t, s);
  };
  q = full(q, L, E);
  k = full(k, S, E);
  v = full(v, S, Ev);
  const int64_t nb = shape_numel(batch);
  Tensor mask;
  if (mask0.defined()) {
    Shape ms = batch;
    ms.push_back(L);
    ms.push_back(S);
    mask = expand(additive_mask(mask0, dt, false), ms);
  }
  const double sc = has_scale ? scale : 1.0 / std::sqrt(double(E));
  Shape os = batch;
  os.push_back(L);
  os.push_back(Ev);
  Tensor out = Tensor::empty(dt, os);
  Tensor w;
  if (weights_out) {
    Shape ws = batch;
    ws.push_back(L);
    ws.push_back(S);
    w = Tensor::empty(dt, ws);
  }
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    // one (batch, head) entry per task when there are several: its products and softmax run serially
    // Causal attention (top-left aligned: key j <= query i) only computes the key columns a block of queries
    // can see: blocks of 64 query rows, each against keys [0, last row of the block].
    const int64_t block = causal && !weights_out ? 64 : L;
    auto one = [&](int64_t b, T* scores) {
      const T* pq = q.data<T>() + b * L * E;
      const T* pk = k.data<T>() + b * S * E;
      const T* pv = v.data<T>() + b * S * Ev;
      const T* pm = mask.defined() ? mask.data<T>() + b * L * S : nullptr;
      T* po = out.data<T>() + b * L * Ev;
      for (int64_t r0 = 0; r0 < L; r0 += block) {
        const int64_t r1 = std::min(L, r0 + block), rows = r1 - r0;
        const int64_t cols = causal ? std::min(S, r1) : S;
        T* sc_p = weights_out ? w.data<T>() + b * L * S + r0 * S : scores;  // row stride S either way
        if (cols > 0) gemm(false, true, rows, cols, E, T(sc), pq + r0 * E, E, pk, E, T(0), sc_p, S);
        parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)), [&](int64_t i0, int64_t i1) {
          for (int64_t ii = i0; ii < i1; ++ii) {
            const int64_t i = r0 + ii;
            T* row = sc_p + ii * S;
            if (pm)
              for (int64_t j = 0; j < cols; ++j) row[j] += pm[i * S + j];
            if (causal)
              for (int64_t j = i + 1; j < cols; ++j) row[j] = -std::numeric_limits<T>::infinity();
            T mx = row_max(row, cols);
            if (cols == 0 || mx == -std::numeric_limits<T>::infinity()) {
              for (int64_t j = 0; j < cols; ++j) row[j] = std::numeric_limits<T>::quiet_NaN();
              continue;
            }
            if constexpr (std::is_same_v<T, float>) {
              for (int64_t j = 0; j < cols; ++j) row[j] = fast_exp(row[j] - mx);
            } else {
              for (int64_t j = 0; j < cols; ++j) row[j] = std::exp(row[j] - mx);
            }
            T inv = T(1) / row_sum(row, cols);
            for (int64_t j = 0; j < cols; ++j) row[j] *= inv;
            if (weights_out)
              for (int64_t j = cols; j < S; ++j) row[j] = 0;
          }
        });
        if (cols > 0) gemm(false, false, rows, Ev, cols, T(1), sc_p, S, pv, Ev, T(0), po + r0 * Ev, Ev);
        else
          for (int64_t x = 0; x < rows * Ev; ++x) po[r0 * Ev + x] = std::numeric_limits<T>::quiet_NaN();
      }
    };
    if (nb >= 2 && num_threads() > 1) {
      parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
        std::unique_ptr<T[]> scores(new T[size_t(block * S)]);
        for (int64_t b = b0; b < b1; ++b) one(b, scores.get());
      });
    } else {
      std::unique_ptr<T[]> scores(new T[size_t(block * S)]);
      for (int64_t b = 0; b < nb; ++b) one(b, scores.get());
    }
  });
  if (weights_out) *weights_out = w;
  return out;
}

namespace {

// torch.nn.functional.multi_head_attention_forward for batch-first [N, L, E] inputs.
struct MhaResult {
  Tensor out;      // [N, L, E]
  Tensor weights;  // [N, L, S] or [N, H, L, S] or undefined
};

MhaResult mha_forward(const Attrs& at, Tensor q_in, Tensor k_in, Tensor v_in, const Tensor& key_padding_mask,
                      const Tensor& attn_mask0, bool need_weights, bool average_weights, bool is_causal) {
  const int64_t E = at.integer("embed_dim"), H = at.integer("num_heads");
  const int64_t hd = E / H;
  const int64_t N = q_in.shape[0], L = q_in.shape[1];
  Tensor wq, wk, wv, bq, bk, bv;
  Tensor in_b = at.tensor_opt("in_proj_bias");
  if (at.flag("_qkv_same_embed_dim")) {
    Tensor w = at.tensor("in_proj_weight");
    wq = narrow(w, 0, 0, E);
    wk = narrow(w, 0, E, E);
    wv = narrow(w, 0, 2 * E, E);
  } else {
    wq = at.tensor("q_proj_weight");
    wk = at.tensor("k_proj_weight");
    wv = at.tensor("v_proj_weight");
  }
  if (in_b.defined()) {
    bq = narrow(in_b, 0, 0, E);
    bk = narrow(in_b, 0, E, E);
    bv = narrow(in_b, 0, 2 * E, E);
  }
  Tensor q, k, v;
  if (q_in.shares_storage(k_in) && k_in.shares_storage(v_in) && q_in.shape == k_in.shape && k_in.shape == v_in.shape &&
      at.flag("_qkv_same_embed_dim")) {
    // self-attention: one projection
    Tensor qkv = linear(q_in, at.tensor("in_proj_weight"), in_b);
    q = narrow(qkv, 2, 0, E);
    k = narrow(qkv, 2, E, E);
    v = narrow(qkv, 2, 2 * E, E);
  } else {
    q = linear(q_in, wq, bq);
    k = linear(k_in, wk, bk);
    v = linear(v_in, wv, bv);
  }
  DType dt = q.dtype;
  Tensor attn_mask = attn_mask0.defined() ? additive_mask(attn_mask0, dt, true) : Tensor();
  Tensor kpm = key_padding_mask.defined() ? additive_mask(key_padding_mask, dt, true) : Tensor();
  if (!attn_mask.defined() && is_causal) {
    int64_t S0 = k.shape[1];
    attn_mask = Tensor::zeros(dt, {L, S0});
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = i + 1; j < S0; ++j) {
        if (dt == DType::F64) attn_mask.data<double>()[i * S0 + j] = -INFINITY;
        else attn_mask.data<float>()[i * S0 + j] = -INFINITY;
      }
  }
  auto pad_col = [&](Tensor& m) {
    if (!m.defined()) return;
    std::vector<int64_t> p = {0, 1};
    m = pad(m, p, "constant", 0.0);
  };
  Tensor bias_k = at.tensor_opt("bias_k"), bias_v = at.tensor_opt("bias_v");
  if (bias_k.defined() && bias_v.defined()) {
    k = cat({k, expand(as_dtype(bias_k, dt).reshaped({1, 1, E}), {N, 1, E})}, 1);
    v = cat({v, expand(as_dtype(bias_v, dt).reshaped({1, 1, E}), {N, 1, E})}, 1);
    pad_col(attn_mask);
    pad_col(kpm);
  }
  if (at.flag("add_zero_attn")) {
    k = cat({k, Tensor::zeros(dt, {N, 1, E})}, 1);
    v = cat({v, Tensor::zeros(dt, {N, 1, E})}, 1);
    pad_col(attn_mask);
    pad_col(kpm);
  }
  const int64_t S = k.shape[1];
  // [N, L, E] -> [N, H, L, hd]
  Tensor qh = permute(q.reshaped({N, L, H, hd}), {0, 2, 1, 3});
  Tensor kh = permute(k.reshaped({N, S, H, hd}), {0, 2, 1, 3});
  Tensor vh = permute(v.reshaped({N, S, H, hd}), {0, 2, 1, 3});
  // merged additive mask [N, H, L, S]
  Tensor mask;
  if (attn_mask.defined()) {
    if (attn_mask.dim() == 2) mask = attn_mask.reshaped({1, 1, L, S});
    else if (attn_mask.dim() == 3) mask = attn_mask.reshaped({N, H, L, S});
    else fail("MultiheadAttention: attn_mask must be 2-D or 3-D");
  }
  if (kpm.defined()) {
    Tensor km = kpm.reshaped({N, 1, 1, S});
    mask = mask.defined() ? binary(BinOp::Add, mask, km) : km;
  }
  Tensor weights;
  Tensor o = sdpa(qh, kh, vh, mask, false, 0, false, need_weights ? &weights : nullptr);
  Tensor merged = permute(o, {0, 2, 1, 3}).reshaped({N, L, E});
  MhaResult r;
  r.out = linear(merged, at.tensor("out_proj.weight"), at.tensor_opt("out_proj.bias"));
  if (need_weights) {
    r.weights = average_weights ? reduce_sum(weights, {1}, false, true) : weights;
  }
  return r;
}

// nn.MultiheadAttention.forward with its own layout rules; returns (attn_output, weights or None).
Val mha_module(const Attrs& at, const Val& query, const Val& key, const Val& value, const Tensor& kpm, bool need_weights,
               const Tensor& attn_mask, bool average, bool is_causal) {
  Tensor q = query.as_tensor(), k = key.as_tensor(), v = value.as_tensor();
  bool batched = q.dim() == 3;
  bool bf = at.flag("batch_first");
  auto to_nle = [&](const Tensor& t) -> Tensor {
    if (!batched) return t.reshaped({1, t.shape[0], t.shape[1]});
    return bf ? t : transpose(t, 0, 1);
  };
  bool same = query.t.shares_storage(key.t) && key.t.shares_storage(value.t);
  Tensor qn = to_nle(q);
  Tensor kn = same ? qn : to_nle(k), vn = same ? qn : to_nle(v);
  Tensor kp = kpm;
  if (kp.defined() && !batched) kp = kp.reshaped({1, kp.numel()});
  Tensor am = attn_mask;
  MhaResult r = mha_forward(at, qn, kn, vn, kp, am, need_weights, average, is_causal);
  Tensor out = r.out;
  if (!batched) out = out.reshaped({out.shape[1], out.shape[2]});
  else if (!bf) out = transpose(out, 0, 1);
  Val w = Val::none();
  if (need_weights) {
    Tensor wt = r.weights;
    if (!batched) wt = wt.reshaped(Shape(wt.shape.begin() + 1, wt.shape.end()));
    w = TV(wt);
  }
  return Val::tuple({TV(out), w});
}

// ================================================================================================ transformer layers

// A layer's `activation`: a function Value (F.relu) or a module Value (a child nn.GELU with its own attributes);
// 1.0 artifacts' strs were converted to those kinds on load (Program::convert, the legacy rule).
Tensor act_by_attr(const Attrs& at, const Tensor& x) {
  const Val* a = at.find("activation");
  if (!a) fail("transformer layer without 'activation'");
  const std::string& n = a->s;
  if (a->k == Val::K::Function) {
    if (n == "torch.nn.functional.relu" || n == "torch.relu") return activation("relu", x);
    if (n == "torch.nn.functional.gelu") return activation("gelu", x);
    if (n == "torch.nn.functional.silu") return activation("silu", x);
    if (n == "torch.tanh" || n == "torch.nn.functional.tanh") return activation("tanh", x);
    if (n == "torch.sigmoid" || n == "torch.nn.functional.sigmoid") return activation("sigmoid", x);
    fail("unsupported transformer activation function '" + n + "'");
  }
  if (a->k == Val::K::ModuleType) {
    if (n == "torch.nn.ReLU") return activation("relu", x);
    if (n == "torch.nn.GELU") {
      const Val* ap = at.find("activation.approximate");
      return activation(ap && ap->k == Val::K::Str && ap->s == "tanh" ? "gelu_tanh" : "gelu", x);
    }
    if (n == "torch.nn.SiLU") return activation("silu", x);
    if (n == "torch.nn.Tanh") return activation("tanh", x);
    if (n == "torch.nn.Sigmoid") return activation("sigmoid", x);
    fail("unsupported transformer activation module '" + n + "'");
  }
  fail("transformer activation is " + a->kind_name() + ", expected a function or a module");
}

Tensor ln_attr(const Attrs& at, const Tensor& x) {
  int64_t nd = int64_t(at.ints("normalized_shape").size());
  return layer_norm(x, nd, at.tensor_opt("weight"), at.tensor_opt("bias"), at.dbl("eps"));
}

Tensor ff_block(const Attrs& at, const Tensor& x) {
  Attrs l1 = at.sub("linear1"), l2 = at.sub("linear2");
  Tensor h = act_by_attr(at, linear(x, l1.tensor("weight"), l1.tensor_opt("bias")));
  return linear(h, l2.tensor("weight"), l2.tensor_opt("bias"));
}

// Self/cross attention of a layer on [N, L, E] (batch first) tensors.
Tensor attn_block(const Attrs& mha, const Tensor& x, const Tensor& mem, const Tensor& mask, const Tensor& kpm, bool causal) {
  return mha_forward(mha, x, mem, mem, kpm, mask, false, true, causal).out;
}

// Encoder layer on batch-first data.
Tensor encoder_layer(const Attrs& at, Tensor x, const Tensor& mask, const Tensor& kpm, bool causal) {
  Attrs sa = at.sub("self_attn");
  Attrs n1 = at.sub("norm1"), n2 = at.sub("norm2");
  if (at.flag("norm_first")) {
    Tensor h = ln_attr(n1, x);
    x = binary(BinOp::Add, x, attn_block(sa, h, h, mask, kpm, causal));
    x = binary(BinOp::Add, x, ff_block(at, ln_attr(n2, x)));
  } else {
    x = ln_attr(n1, binary(BinOp::Add, x, attn_block(sa, x, x, mask, kpm, causal)));
    x = ln_attr(n2, binary(BinOp::Add, x, ff_block(at, x)));
  }
  return x;
}

Tensor decoder_layer(const Attrs& at, Tensor x, const Tensor& mem, const Tensor& tmask, const Tensor& mmask,
                     const Tensor& tkpm, const Tensor& mkpm, bool tcausal, bool mcausal) {
  Attrs sa = at.sub("self_attn"), ca = at.sub("multihead_attn");
  Attrs n1 = at.sub("norm1"), n2 = at.sub("norm2"), n3 = at.sub("norm3");
  if (at.flag("norm_first")) {
    Tensor h = ln_attr(n1, x);
    x = binary(BinOp::Add, x, attn_block(sa, h, h, tmask, tkpm, tcausal));
    x = binary(BinOp::Add, x, attn_block(ca, ln_attr(n2, x), mem, mmask, mkpm, mcausal));
    x = binary(BinOp::Add, x, ff_block(at, ln_attr(n3, x)));
  } else {
    x = ln_attr(n1, binary(BinOp::Add, x, attn_block(sa, x, x, tmask, tkpm, tcausal)));
    x = ln_attr(n2, binary(BinOp::Add, x, attn_block(ca, x, mem, mmask, mkpm, mcausal)));
    x = ln_attr(n3, binary(BinOp::Add, x, ff_block(at, x)));
  }
  return x;
}

bool layer_batch_first(const Attrs& layer) { return layer.sub("self_attn").flag("batch_first"); }

// [L, N, E] <-> [N, L, E] as a layer needs; unbatched [L, E] becomes [1, L, E].
Tensor to_bf(const Tensor& x, bool bf) {
  if (x.dim() == 2) return x.reshaped({1, x.shape[0], x.shape[1]});
  return bf ? x : transpose(x, 0, 1);
}
Tensor from_bf(const Tensor& x, bool bf, bool batched) {
  if (!batched) return x.reshaped({x.shape[1], x.shape[2]});
  return bf ? x : transpose(x, 0, 1);
}
Tensor kpm_bf(const Tensor& m) { return m.defined() && m.dim() == 1 ? m.reshaped({1, m.numel()}) : m; }

Tensor encoder_stack(const Attrs& at, Tensor x, const Tensor& mask, const Tensor& kpm, bool causal) {
  int64_t n = at.integer("num_layers");
  for (int64_t i = 0; i < n; ++i) x = encoder_layer(at.sub("layers." + std::to_string(i)), x, mask, kpm, causal);
  const Val* norm = at.find("norm");
  if (norm && !norm->is_none()) {
    if (norm->k != Val::K::ModuleType || norm->s != "torch.nn.LayerNorm") fail("unsupported encoder norm " + norm->repr());
    x = ln_attr(at.sub("norm"), x);
  }
  return x;
}

Tensor decoder_stack(const Attrs& at, Tensor x, const Tensor& mem, const Tensor& tmask, const Tensor& mmask,
                     const Tensor& tkpm, const Tensor& mkpm, bool tcausal, bool mcausal) {
  int64_t n = at.integer("num_layers");
  for (int64_t i = 0; i < n; ++i)
    x = decoder_layer(at.sub("layers." + std::to_string(i)), x, mem, tmask, mmask, tkpm, mkpm, tcausal, mcausal);
  const Val* norm = at.find("norm");
  if (norm && !norm->is_none()) {
    if (norm->k != Val::K::ModuleType || norm->s != "torch.nn.LayerNorm") fail("unsupported decoder norm " + norm->repr());
    x = ln_attr(at.sub("norm"), x);
  }
  return x;
}

// ================================================================================================ recurrent networks

enum class Cell { LSTM, GRU, RNN_TANH, RNN_RELU };

template <class T>
T sig(T v) {
  if constexpr (std::is_same_v<T, float>) return 1.0f / (1.0f + fast_exp(-v));
  else return T(1) / (T(1) + std::exp(-v));
}
template <class T>
T tanh_(T v) {
  if constexpr (std::is_same_v<T, float>) return fast_tanh(v);
  else return std::tanh(v);
}

// One direction of one layer over [L, N, in] (time major). h0/c0: [N, Hout]/[N, H]. Writes y [L, N, Hout].
template <class T>
void rnn_direction(Cell cell, const T* x, int64_t L, int64_t N, int64_t in, int64_t H, int64_t P, const Tensor& wih,
                   const Tensor& whh, const Tensor& bih, const Tensor& bhh, const Tensor& whr, bool reverse, T* h,
                   T* c, T* y, int64_t y_stride, int64_t y_off) {
  const int64_t G = cell == Cell::LSTM ? 4 : cell == Cell::GRU ? 3 : 1;
  const int64_t Hout = P > 0 ? P : H;
  std::vector<T> gx(static_cast<size_t>(L * N * G * H)), gh(static_cast<size_t>(N * G * H));
  // input projections for all steps: gx = x W_ih^T + b_ih (+ b_hh except GRU)
  for (int64_t r = 0; r < L * N; ++r)
    for (int64_t j = 0; j < G * H; ++j) {
      T b = bih.defined() ? bih.data<T>()[j] : T(0);
      if (cell != Cell::GRU && bhh.defined()) b += bhh.data<T>()[j];
      gx[size_t(r * G * H + j)] = b;
    }
  gemm(false, true, L * N, G * H, in, T(1), x, in, wih.data<T>(), in, T(1), gx.data(), G * H);
  std::vector<T> hp(static_cast<size_t>(N * H));
  for (int64_t s = 0; s < L; ++s) {
    int64_t t = reverse ? L - 1 - s : s;
    // gh = h W_hh^T (+ b_hh for GRU)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < G * H; ++j)
        gh[size_t(n * G * H + j)] = cell == Cell::GRU && bhh.defined() ? bhh.data<T>()[j] : T(0);
    gemm(false, true, N, G * H, Hout, T(1), h, Hout, whh.data<T>(), Hout, T(1), gh.data(), G * H);
    const T* gxt = gx.data() + t * N * G * H;
    for (int64_t n = 0; n < N; ++n) {
      const T* a = gxt + n * G * H;
      const T* b = gh.data() + n * G * H;
      if (cell == Cell::LSTM) {
        for (int64_t j = 0; j < H; ++j) {
          T ig = sig(a[j] + b[j]);
          T fg = sig(a[H + j] + b[H + j]);
          T gg = tanh_(a[2 * H + j] + b[2 * H + j]);
          T og = sig(a[3 * H + j] + b[3 * H + j]);
          T cn = fg * c[n * H + j] + ig * gg;
          c[n * H + j] = cn;
          hp[size_t(n * H + j)] = og * tanh_(cn);
        }
      } else if (cell == Cell::GRU) {
        for (int64_t j = 0; j < H; ++j) {
          T rg = sig(a[j] + b[j]);
          T zg = sig(a[H + j] + b[H + j]);
          T ng = tanh_(a[2 * H + j] + rg * b[2 * H + j]);
          hp[size_t(n * H + j)] = (T(1) - zg) * ng + zg * h[n * Hout + j];
        }
      } else {
        for (int64_t j = 0; j < H; ++j) {
          T v = a[j] + b[j];
          hp[size_t(n * H + j)] = cell == Cell::RNN_TANH ? tanh_(v) : std::max(v, T(0));
        }
      }
    }
    if (P > 0) {
      gemm(false, true, N, P, H, T(1), hp.data(), H, whr.data<T>(), H, T(0), h, P);
    } else {
      std::memcpy(h, hp.data(), size_t(N * H) * sizeof(T));
    }
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(y + (t * N + n) * y_stride + y_off, h + n * Hout, size_t(Hout) * sizeof(T));
  }
}

Val rnn_module(const Attrs& at, Call& c) {
  std::string mode = at.str("mode");
  Cell cell;
  if (mode == "LSTM") cell = Cell::LSTM;
  else if (mode == "GRU") cell = Cell::GRU;
  else if (mode == "RNN_TANH") cell = Cell::RNN_TANH;
  else if (mode == "RNN_RELU") cell = Cell::RNN_RELU;
  else fail("unknown recurrent mode '" + mode + "'");
  Args a(c, {"input", "hx"});
  Tensor x = a.tensor(0);
  const int64_t H = at.integer("hidden_size"), NL = at.integer("num_layers");
  const int64_t P = at.has("proj_size") ? at.integer("proj_size") : 0;
  const int64_t Hout = P > 0 ? P : H;
  const bool bf = at.flag("batch_first"), bidir = at.flag("bidirectional"), has_bias = at.flag("bias");
  const int64_t D = bidir ? 2 : 1;
  DType dt = as_float(x).dtype;
  x = as_float(x);
  bool batched = x.dim() == 3;
  if (!batched) x = x.reshaped({x.shape[0], 1, x.shape[1]});
  else if (bf) x = transpose(x, 0, 1);  // [L, N, in]
  const int64_t L = x.shape[0], N = x.shape[1];
  // initial states [D*NL, N, Hout] / [D*NL, N, H]
  Tensor h0, c0;
  if (a.has(1)) {
    const Val& hx = a[1];
    if (cell == Cell::LSTM) {
      if (!hx.is_seq() || hx.seq().size() != 2) fail("LSTM hx must be a tuple (h_0, c_0)");
      h0 = as_dtype(hx.seq()[0].as_tensor(), dt);
      c0 = as_dtype(hx.seq()[1].as_tensor(), dt);
    } else {
      h0 = as_dtype(hx.as_tensor(), dt);
    }
    if (!batched) {
      h0 = h0.reshaped({h0.shape[0], 1, h0.shape[1]});
      if (c0.defined()) c0 = c0.reshaped({c0.shape[0], 1, c0.shape[1]});
    }
  }
  Tensor hn = h0.defined() ? h0.clone() : Tensor::zeros(dt, {D * NL, N, Hout});
  Tensor cn = cell == Cell::LSTM ? (c0.defined() ? c0.clone() : Tensor::zeros(dt, {D * NL, N, H})) : Tensor();
  Tensor layer_in = x;
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    for (int64_t l = 0; l < NL; ++l) {
      int64_t in = layer_in.shape[2];
      Tensor out = Tensor::empty(dt, {L, N, D * Hout});
      // the two directions are independent: one per thread when there are two
      auto direction = [&](int64_t d) {
        std::string sfx = "_l" + std::to_string(l) + (d == 1 ? "_reverse" : "");
        Tensor wih = as_dtype(at.tensor("weight_ih" + sfx), dt), whh = as_dtype(at.tensor("weight_hh" + sfx), dt);
        Tensor bih = has_bias ? as_dtype(at.tensor("bias_ih" + sfx), dt) : Tensor();
        Tensor bhh = has_bias ? as_dtype(at.tensor("bias_hh" + sfx), dt) : Tensor();
        Tensor whr = P > 0 ? as_dtype(at.tensor("weight_hr" + sfx), dt) : Tensor();
        int64_t idx = l * D + d;
        T* h = hn.data<T>() + idx * N * Hout;
        T* cc = cn.defined() ? cn.data<T>() + idx * N * H : nullptr;
        rnn_direction<T>(cell, layer_in.data<T>(), L, N, in, H, P, wih, whh, bih, bhh, whr, d == 1, h, cc,
                         out.data<T>(), D * Hout, d * Hout);
      };
      if (D == 2 && num_threads() > 1) {
        parallel_for(2, 1, [&](int64_t b, int64_t e) {
          for (int64_t d = b; d < e; ++d) direction(d);
        });
      } else {
        for (int64_t d = 0; d < D; ++d) direction(d);
      }
      layer_in = out;
    }
  });
  Tensor y = layer_in;
  if (!batched) {
    y = y.reshaped({L, D * Hout});
    hn = hn.reshaped({D * NL, Hout});
    if (cn.defined()) cn = cn.reshaped({D * NL, H});
  } else if (bf) {
    y = transpose(y, 0, 1);
  }
  if (cell == Cell::LSTM) return Val::tuple({TV(y), Val::tuple({TV(hn), TV(cn)})});
  return Val::tuple({TV(y), TV(hn)});
}

Val rnn_cell_module(const Attrs& at, Call& c, Cell cell) {
  Args a(c, {"input", "hx"});
  Tensor x = as_float(a.tensor(0));
  DType dt = x.dtype;
  bool batched = x.dim() == 2;
  if (!batched) x = x.reshaped({1, x.shape[0]});
  const int64_t N = x.shape[0], in = x.shape[1], H = at.integer("hidden_size");
  if (cell == Cell::RNN_TANH && at.has("nonlinearity") && at.str("nonlinearity") == "relu") cell = Cell::RNN_RELU;
  Tensor h, cc;
  if (a.has(1)) {
    if (cell == Cell::LSTM) {
      const auto& s = a[1].seq();
      h = as_dtype(s.at(0).as_tensor(), dt).clone();
      cc = as_dtype(s.at(1).as_tensor(), dt).clone();
    } else {
      h = as_dtype(a[1].as_tensor(), dt).clone();
    }
    h = h.reshaped({N, H});
    if (cc.defined()) cc = cc.reshaped({N, H});
  } else {
    h = Tensor::zeros(dt, {N, H});
    if (cell == Cell::LSTM) cc = Tensor::zeros(dt, {N, H});
  }
  Tensor wih = as_dtype(at.tensor("weight_ih"), dt), whh = as_dtype(at.tensor("weight_hh"), dt);
  bool has_bias = at.flag("bias");
  Tensor bih = has_bias ? as_dtype(at.tensor("bias_ih"), dt) : Tensor();
  Tensor bhh = has_bias ? as_dtype(at.tensor("bias_hh"), dt) : Tensor();
  Tensor y = Tensor::empty(dt, {N, H});
  dispatch_float(ptype(dt), [&](auto tag) {
    using T = decltype(tag);
    rnn_direction<T>(cell, x.data<T>(), 1, N, in, H, 0, wih, whh, bih, bhh, Tensor(), false, h.data<T>(),
                     cc.defined() ? cc.data<T>() : nullptr, y.data<T>(), H, 0);
  });
  if (!batched) {
    h = h.reshaped({H});
    if (cc.defined()) cc = cc.reshaped({H});
  }
  if (cell == Cell::LSTM) return Val::tuple({TV(h), TV(cc)});
  return TV(h);
}

}  // namespace

// ================================================================================================ registration

void register_sequence(Registry& r) {
  using K = OpKind;
  r.add(K::Function, "torch.nn.functional.scaled_dot_product_attention", [](Call& c) -> Val {
    Args a(c, {"query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"});
    if (a.dbl(4, 0.0) != 0.0) fail("scaled_dot_product_attention with dropout_p > 0 is random; not supported");
    Tensor q = a.tensor(0), k = a.tensor(1), v = a.tensor(2);
    if (a.flag(7, false) && q.dim() >= 3 && k.shape[size_t(k.dim() - 3)] != q.shape[size_t(q.dim() - 3)]) {
      int64_t rep = q.shape[size_t(q.dim() - 3)] / k.shape[size_t(k.dim() - 3)];
      auto rep_heads = [rep](const Tensor& t) {
        int64_t d = t.dim() - 3;
        Shape s = t.shape;
        s.insert(s.begin() + d + 1, rep);
        Tensor u = t.reshaped([&] { Shape u0 = t.shape; u0.insert(u0.begin() + d + 1, 1); return u0; }());
        Tensor e = expand(u, s);
        Shape o = t.shape;
        o[size_t(d)] *= rep;
        return e.reshaped(o);
      };
      k = rep_heads(k);
      v = rep_heads(v);
    }
    bool has_scale = a.has(6);
    return TV(sdpa(q, k, v, a.tensor_opt(3), a.flag(5, false), a.dbl(6, 0.0), has_scale));
  });
  r.add(K::Module, "torch.nn.MultiheadAttention", [](Call& c) -> Val {
    Args a(c, {"query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal"});
    return mha_module(c.attrs, a[0], a[1], a[2], a.tensor_opt(3), a.flag(4, true), a.tensor_opt(5), a.flag(6, true),
                      a.flag(7, false));
  });
  r.add(K::Module, "torch.nn.TransformerEncoderLayer", [](Call& c) -> Val {
    Args a(c, {"src", "src_mask", "src_key_padding_mask", "is_causal"});
    Tensor x = a.tensor(0);
    bool bf = layer_batch_first(c.attrs), batched = x.dim() == 3;
    Tensor y = encoder_layer(c.attrs, to_bf(x, bf), a.tensor_opt(1), kpm_bf(a.tensor_opt(2)), a.flag(3, false));
    return TV(from_bf(y, bf, batched));
  });
  r.add(K::Module, "torch.nn.TransformerEncoder", [](Call& c) -> Val {
    Args a(c, {"src", "mask", "src_key_padding_mask", "is_causal"});
    Tensor x = a.tensor(0);
    bool bf = layer_batch_first(c.attrs.sub("layers.0")), batched = x.dim() == 3;
    Tensor y = encoder_stack(c.attrs, to_bf(x, bf), a.tensor_opt(1), kpm_bf(a.tensor_opt(2)), a.flag(3, false));
    return TV(from_bf(y, bf, batched));
  });
  r.add(K::Module, "torch.nn.TransformerDecoderLayer", [](Call& c) -> Val {
    Args a(c, {"tgt", "memory", "tgt_mask", "memory_mask", "tgt_key_padding_mask", "memory_key_padding_mask",
               "tgt_is_causal", "memory_is_causal"});
    Tensor x = a.tensor(0);
    bool bf = layer_batch_first(c.attrs), batched = x.dim() == 3;
    Tensor y = decoder_layer(c.attrs, to_bf(x, bf), to_bf(a.tensor(1), bf), a.tensor_opt(2), a.tensor_opt(3),
                             kpm_bf(a.tensor_opt(4)), kpm_bf(a.tensor_opt(5)), a.flag(6, false), a.flag(7, false));
    return TV(from_bf(y, bf, batched));
  });
  r.add(K::Module, "torch.nn.TransformerDecoder", [](Call& c) -> Val {
    Args a(c, {"tgt", "memory", "tgt_mask", "memory_mask", "tgt_key_padding_mask", "memory_key_padding_mask",
               "tgt_is_causal", "memory_is_causal"});
    Tensor x = a.tensor(0);
    bool bf = layer_batch_first(c.attrs.sub("layers.0")), batched = x.dim() == 3;
    Tensor y = decoder_stack(c.attrs, to_bf(x, bf), to_bf(a.tensor(1), bf), a.tensor_opt(2), a.tensor_opt(3),
                             kpm_bf(a.tensor_opt(4)), kpm_bf(a.tensor_opt(5)), a.flag(6, false), a.flag(7, false));
    return TV(from_bf(y, bf, batched));
  });
  r.add(K::Module, "torch.nn.Transformer", [](Call& c) -> Val {
    Args a(c, {"src", "tgt", "src_mask", "tgt_mask", "memory_mask", "src_key_padding_mask", "tgt_key_padding_mask",
               "memory_key_padding_mask", "src_is_causal", "tgt_is_causal", "memory_is_causal"});
    const Attrs& at = c.attrs;
    bool bf = at.flag("batch_first");
    Tensor src = a.tensor(0), tgt = a.tensor(1);
    bool batched = tgt.dim() == 3;
    Tensor mem = encoder_stack(at.sub("encoder"), to_bf(src, bf), a.tensor_opt(2), kpm_bf(a.tensor_opt(5)), a.flag(8, false));
    Tensor y = decoder_stack(at.sub("decoder"), to_bf(tgt, bf), mem, a.tensor_opt(3), a.tensor_opt(4),
                             kpm_bf(a.tensor_opt(6)), kpm_bf(a.tensor_opt(7)), a.flag(9, false), a.flag(10, false));
    return TV(from_bf(y, bf, batched));
  });
  for (const char* name : {"torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNN"})
    r.add(K::Module, name, [](Call& c) -> Val { return rnn_module(c.attrs, c); });
  r.add(K::Module, "torch.nn.LSTMCell", [](Call& c) -> Val { return rnn_cell_module(c.attrs, c, Cell::LSTM); });
  r.add(K::Module, "torch.nn.GRUCell", [](Call& c) -> Val { return rnn_cell_module(c.attrs, c, Cell::GRU); });
  r.add(K::Module, "torch.nn.RNNCell", [](Call& c) -> Val { return rnn_cell_module(c.attrs, c, Cell::RNN_TANH); });
}

}  // namespace fxlower::rt
