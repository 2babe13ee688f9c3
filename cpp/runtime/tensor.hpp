// fxlower reference runtime: the tensor type.
//
// A Tensor is a dense, contiguous (row-major) array with a logical dtype. Storage is one of four physical element
// types: float (F32, F16, BF16), double (F64), int64_t (every integer dtype) and uint8_t (BOOL). Half types are
// computed in float and rounded back to their precision (round_to_dtype) where PyTorch would round. Storage is
// either owned (64-byte aligned heap memory) or borrowed (e.g. a mapped weight file, kept alive by `owner`).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fxlower::rt {

// ------------------------------------------------------------------------------------------------ errors

// Every runtime failure is an Error; the interpreter prefixes it with the node and target.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& msg) { throw Error(msg); }

// ------------------------------------------------------------------------------------------------ dtypes

enum class DType : uint8_t { F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL };
enum class PType : uint8_t { F32, F64, I64, B8 };  // physical storage

inline PType ptype(DType d) {
  switch (d) {
    case DType::F32: case DType::F16: case DType::BF16: return PType::F32;
    case DType::F64: return PType::F64;
    case DType::BOOL: return PType::B8;
    default: return PType::I64;
  }
}
inline size_t psize(PType p) {
  switch (p) {
    case PType::F32: return 4;
    case PType::F64: return 8;
    case PType::I64: return 8;
    default: return 1;
  }
}
inline bool is_floating(DType d) { PType p = ptype(d); return p == PType::F32 || p == PType::F64; }
inline bool is_integral(DType d) { return ptype(d) == PType::I64; }
inline bool is_bool(DType d) { return d == DType::BOOL; }
inline bool is_half(DType d) { return d == DType::F16 || d == DType::BF16; }

inline const char* dtype_code(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}
// Parses a dtype code of docs/format.md section 4; false for codes the runtime cannot compute with.
inline bool parse_dtype(const std::string& s, DType& out) {
  static const struct { const char* c; DType d; } table[] = {
      {"F32", DType::F32}, {"F64", DType::F64}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (const auto& e : table)
    if (s == e.c) { out = e.d; return true; }
  return false;
}
// Bytes per element of the dtype as stored in a safetensors file.
inline size_t storage_itemsize(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    default: return 1;
  }
}

// ------------------------------------------------------------------------------------------------ half types

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float f16_to_f32(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t r = sign | (two_w < (1u << 27) ? f32_bits(denormalized) : f32_bits(normalized));
  return f32_from_bits(r);
}
inline uint16_t f32_to_f16(float f) {  // round to nearest even, overflow to inf
  float base = (std::abs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
inline float round_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

// ------------------------------------------------------------------------------------------------ shapes

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
std::string shape_str(const Shape& s);
// Normalises a possibly negative dimension index against rank `rank` (rank 0 accepts -1 and 0).
int64_t norm_dim(int64_t d, int64_t rank);
Shape contiguous_strides(const Shape& s);

// ------------------------------------------------------------------------------------------------ tensor

class Tensor {
 public:
  DType dtype = DType::F32;
  Shape shape;

  Tensor() = default;
  // Uninitialised owned storage.
  static Tensor empty(DType dt, Shape shape);
  static Tensor zeros(DType dt, Shape shape);
  // Storage owned by someone else; `keep` keeps it alive. Read-only unless `writable`.
  static Tensor borrowed(DType dt, Shape shape, void* data, std::shared_ptr<void> keep, bool writable);
  // A 0-dim tensor holding one value.
  static Tensor scalar(DType dt, double v);
  static Tensor scalar_int(DType dt, int64_t v);

  bool defined() const { return data_ != nullptr || (owner_ != nullptr); }
  int64_t numel() const { return shape_numel(shape); }
  int64_t dim() const { return int64_t(shape.size()); }
  int64_t size(int64_t d) const { return shape[size_t(norm_dim(d, dim()))]; }
  PType ptype() const { return rt::ptype(dtype); }
  bool writable() const { return writable_; }
  const std::shared_ptr<void>& owner() const { return owner_; }
  bool shares_storage(const Tensor& o) const { return data_ == o.data_; }

  template <class T> T* data() { return static_cast<T*>(data_); }
  template <class T> const T* data() const { return static_cast<const T*>(data_); }
  void* raw() { return data_; }
  const void* raw() const { return data_; }
  size_t nbytes() const { return size_t(numel()) * psize(ptype()); }

  // A tensor of another shape over the same storage (same numel).
  Tensor reshaped(Shape s) const;
  // A deep copy, owned and writable.
  Tensor clone() const;
  // Converted to dtype `dt` (a copy unless the physical type and dtype already match: then shared).
  Tensor to(DType dt) const;
  // Element i converted to double / int64 (any dtype).
  double item_double(int64_t i = 0) const;
  int64_t item_int(int64_t i = 0) const;

 private:
  std::shared_ptr<void> owner_;
  void* data_ = nullptr;
  bool writable_ = true;
};

// Rounds every element of a F16/BF16 tensor to its precision, in place (no-op otherwise).
void round_to_dtype(Tensor& t);

// Copies elements between physical types: dst[i] = (Dst)src[i].
void convert_elements(const void* src, PType sp, void* dst, PType dp, int64_t n);

}  // namespace fxlower::rt
