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

#include <fxlower/fxlower.hpp>

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

// The header's dtype of a runtime dtype: codes, item sizes and conversions come from fxlower.hpp (one table).
inline fxlower::DType fx_dtype(DType d) {
  switch (d) {
    case DType::F32: return fxlower::DType::F32;
    case DType::F64: return fxlower::DType::F64;
    case DType::F16: return fxlower::DType::F16;
    case DType::BF16: return fxlower::DType::BF16;
    case DType::I64: return fxlower::DType::I64;
    case DType::I32: return fxlower::DType::I32;
    case DType::I16: return fxlower::DType::I16;
    case DType::I8: return fxlower::DType::I8;
    case DType::U8: return fxlower::DType::U8;
    case DType::BOOL: return fxlower::DType::BOOL;
  }
  return fxlower::DType::F32;
}
// The runtime dtype of a header dtype; false for dtypes the runtime does not compute with.
inline bool rt_dtype(fxlower::DType d, DType& out) {
  static constexpr DType all[] = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64,
                                  DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};
  for (DType r : all)
    if (fx_dtype(r) == d) { out = r; return true; }
  return false;
}
// The code of docs/format.md section 4 ("F32").
inline const char* dtype_code(DType d) { return fxlower::dtype_name(fx_dtype(d)).data(); }
// Parses a dtype code of docs/format.md section 4; false for codes the runtime cannot compute with.
inline bool parse_dtype(const std::string& s, DType& out) {
  const auto d = fxlower::dtype_from_name(s);
  return d && rt_dtype(*d, out);
}
// Bytes per element of the dtype as stored in a safetensors file.
inline size_t storage_itemsize(DType d) { return fxlower::dtype_itemsize(fx_dtype(d)); }

// ------------------------------------------------------------------------------------------------ half types

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// The header's exact conversions (round to nearest even towards the half types).
inline float bf16_to_f32(uint16_t h) { return fxlower::bfloat16_to_float(h); }
inline uint16_t f32_to_bf16(float f) { return fxlower::float_to_bfloat16(f); }
inline float f16_to_f32(uint16_t h) { return fxlower::half_to_float(h); }
inline uint16_t f32_to_f16(float f) { return fxlower::float_to_half(f); }
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
