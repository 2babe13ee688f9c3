// fxlower.hpp: header-only C++17 reader of fxlower artifacts (format 1.1 and 1.0, docs/format.md).
//
//   #include <fxlower/fxlower.hpp>
//   fxlower::Artifact a = fxlower::load("model.fxl");          // validates everything, maps the tensors
//   for (const fxlower::Node& n : a.root().nodes) { ... }       // graphs()[0] is the root graph
//   if (auto t = a.tensor("conv1.weight")) t->element_double(0);
//   a.verify_all();                                             // SHA-256 of every tensor (code tensor.hash)
//
// Dependencies: the C++17 standard library, POSIX (open/openat/fstat/mmap/readdir), msgpack-cxx (the parser
// only, with a visitor) and nlohmann-json (its SAX parser). No Python, no libtorch.
//
// Errors: every rejection throws fxlower::Error; code() is the stable code of docs/format.md section 11 (the
// same the Python loader reports), what() is "[code] file: field: message". Define FXLOWER_NOEXCEPTION to
// print that line to stderr and abort() instead of throwing. Codes outside the format (misuse of the API,
// I/O failures): "api.not_found", "api.kind", "api.range", "io.error".
//
// Validation follows docs/format.md section 10, in that order; docs/cpp.md lists the order within each step.
// Memory: the manifest is read into memory (<= 1 GiB, checked before reading) and parsed in two passes: the
// first validates and counts the objects, the second builds a compact tree of exactly that many 16-byte
// nodes. No allocation is ever sized from a length field read from a file. Tensor files are memory-mapped
// (LoadOptions::map_tensors) and their data is never read at load; a tensor file truncated by someone else
// while mapped makes a later data access raise SIGBUS: load with map_tensors = false to copy the files into
// owned memory instead.
#ifndef FXLOWER_FXLOWER_HPP
#define FXLOWER_FXLOWER_HPP

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "core_aten_ops.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <msgpack/unpack.hpp>  // defines what msgpack/parse.hpp needs
#include <msgpack/parse.hpp>
#include <nlohmann/json.hpp>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define FXLOWER_HAS_EXCEPTIONS 1
#else
#define FXLOWER_HAS_EXCEPTIONS 0
#endif

namespace fxlower {

// ================================================================================================ constants

/// The format version this reader implements: it accepts major 1, minor <= 3.
inline constexpr std::int64_t kFormatMajor = 1;
inline constexpr std::int64_t kFormatMinor = 3;
inline constexpr const char* kFormatId = "fxlower";
inline constexpr const char* kManifestFile = "manifest.msgpack";

/// Caps of docs/format.md (fxlower/format/constants.py).
namespace limits {
inline constexpr std::uint64_t kMaxManifestBytes = std::uint64_t{1} << 30;
inline constexpr int kMaxMsgpackDepth = 1024;  // containers open at once, empty ones included
inline constexpr std::int64_t kMaxMeshDevices = 65536;  // 1.3: prod(placement.mesh)
inline constexpr int kMaxValueDepth = 64;      // Values and Meta
inline constexpr std::size_t kMaxNameBytes = 1024;
inline constexpr std::size_t kMaxRank = 64;
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100000000;
inline constexpr int kMaxJsonDepth = 128;
inline constexpr std::size_t kMaxPathBytes = 255;
}  // namespace limits

// ================================================================================================ errors

/// The one exception type. code() is stable (docs/format.md section 11, or api.* / io.error).
class Error : public std::runtime_error {
 public:
  Error(std::string code, std::string where, std::string message)
      : std::runtime_error(compose(code, where, message)),
        code_(std::move(code)),
        where_(std::move(where)),
        message_(std::move(message)) {}
  /// The stable code, e.g. "manifest.duplicate_key".
  const std::string& code() const noexcept { return code_; }
  /// The file and field, node or tensor at fault, e.g. "manifest.msgpack: graphs[0].nodes[3].target".
  const std::string& where() const noexcept { return where_; }
  /// What was found and what was expected.
  const std::string& message() const noexcept { return message_; }

 private:
  static std::string compose(const std::string& code, const std::string& where, const std::string& message) {
    std::string s = "[" + code + "] ";
    if (!where.empty()) s += where + ": ";
    return s + message;
  }
  std::string code_, where_, message_;
};

namespace detail {
/// Throws fxlower::Error, or prints it and aborts under FXLOWER_NOEXCEPTION.
[[noreturn]] inline void raise(std::string code, std::string where, std::string message) {
#if defined(FXLOWER_NOEXCEPTION) || !FXLOWER_HAS_EXCEPTIONS
  Error e(std::move(code), std::move(where), std::move(message));
  std::fprintf(stderr, "fxlower: %s\n", e.what());
  std::abort();
#else
  throw Error(std::move(code), std::move(where), std::move(message));
#endif
}
}  // namespace detail

// ================================================================================================ optional_ref

/// What find-style lookups return: an optional reference (empty when absent). value() is checked.
template <class T>
class optional_ref {
 public:
  optional_ref() noexcept = default;
  optional_ref(std::nullopt_t) noexcept {}
  optional_ref(T& ref) noexcept : p_(&ref) {}
  bool has_value() const noexcept { return p_ != nullptr; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  T& operator*() const noexcept { return *p_; }
  T* operator->() const noexcept { return p_; }
  T& value() const {
    if (!p_) detail::raise("api.not_found", "", "optional_ref::value() on an empty result");
    return *p_;
  }

 private:
  T* p_ = nullptr;
};

// ================================================================================================ dtypes

/// Dtype codes (docs/format.md section 4). C64/C128 appear only in dtype Values and metadata.
enum class DType : std::uint8_t {
  F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, C64, C128
};

namespace detail {
struct DTypeInfo {
  const char* name;
  DType dtype;
  unsigned itemsize;
  bool storage;
  bool floating;
};
inline constexpr DTypeInfo kDTypes[] = {
    {"F64", DType::F64, 8, true, true},       {"F32", DType::F32, 4, true, true},
    {"F16", DType::F16, 2, true, true},       {"BF16", DType::BF16, 2, true, true},
    {"F8_E4M3", DType::F8_E4M3, 1, true, true}, {"F8_E5M2", DType::F8_E5M2, 1, true, true},
    {"I64", DType::I64, 8, true, false},      {"I32", DType::I32, 4, true, false},
    {"I16", DType::I16, 2, true, false},      {"I8", DType::I8, 1, true, false},
    {"U64", DType::U64, 8, true, false},      {"U32", DType::U32, 4, true, false},
    {"U16", DType::U16, 2, true, false},      {"U8", DType::U8, 1, true, false},
    {"BOOL", DType::BOOL, 1, true, false},    {"C64", DType::C64, 8, false, true},
    {"C128", DType::C128, 16, false, true},
};
inline const DTypeInfo& dtype_info(DType d) { return kDTypes[static_cast<std::size_t>(d)]; }
}  // namespace detail

/// The code, e.g. "F32".
inline std::string_view dtype_name(DType d) { return detail::dtype_info(d).name; }
/// The dtype of a code (storage or value-only), or nullopt.
inline std::optional<DType> dtype_from_name(std::string_view s) {
  for (const auto& i : detail::kDTypes)
    if (s == i.name) return i.dtype;
  return std::nullopt;
}
/// Bytes per element.
inline std::size_t dtype_itemsize(DType d) { return detail::dtype_info(d).itemsize; }
/// True for the codes a tensor may be stored as (all but C64, C128).
inline bool is_storage_dtype(DType d) { return detail::dtype_info(d).storage; }
/// True for floating and complex dtypes.
inline bool is_floating_dtype(DType d) { return detail::dtype_info(d).floating; }

// ================================================================================================ numeric conversion

/// IEEE binary16 bits -> float (exact; NaN payloads kept).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // infinity, NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else {
    const float v = static_cast<float>(mant) * 0x1p-24f;  // zero, subnormal: exact
    return sign ? -v : v;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
/// bfloat16 bits -> float (exact).
inline float bfloat16_to_float(std::uint16_t b) {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
/// float8_e4m3fn bits -> float (exact): bias 7, no infinities, 0x7f/0xff are NaN, max 448.
inline float float8_e4m3fn_to_float(std::uint8_t b) {
  const bool neg = (b & 0x80u) != 0;
  const int exp = (b >> 3) & 0xf;
  const int mant = b & 0x7;
  float v;
  if (exp == 15 && mant == 7)
    v = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0)
    v = std::ldexp(static_cast<float>(mant), -9);
  else
    v = std::ldexp(static_cast<float>(8 + mant), exp - 10);
  return neg ? -v : v;
}
/// float8_e5m2 bits -> float (exact): bias 15, IEEE-like infinities and NaNs, max 57344.
inline float float8_e5m2_to_float(std::uint8_t b) {
  const bool neg = (b & 0x80u) != 0;
  const int exp = (b >> 2) & 0x1f;
  const int mant = b & 0x3;
  float v;
  if (exp == 31)
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else if (exp == 0)
    v = std::ldexp(static_cast<float>(mant), -16);
  else
    v = std::ldexp(static_cast<float>(4 + mant), exp - 17);
  return neg ? -v : v;
}

/// float -> IEEE binary16 bits, rounding to nearest even (overflow to infinity; NaN stays a quiet NaN).
inline std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x47800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65536: infinity (or inf itself)
  if (a < 0x38800000u) {  // below 2^-14: a subnormal half (or zero); value = a_float * 2^24 rounded
    if (a < 0x33000000u) return sign;  // below 2^-25: rounds to zero (2^-25 itself ties to even zero)
    const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(a >> 23);  // 14..24
    const std::uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    const std::uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    return static_cast<std::uint16_t>(sign | r);
  }
  // normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits; a carry rolls into the
  // exponent, and past 65504 into infinity.
  const std::uint32_t base = a - (112u << 23);
  const std::uint32_t q = base >> 13, rem = base & 0x1fffu;
  const std::uint32_t r = q + ((rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ? 1u : 0u);
  return static_cast<std::uint16_t>(sign | (r >= 0x7c00u ? 0x7c00u : r));
}
/// float -> bfloat16 bits, rounding to nearest even (NaN stays a quiet NaN).
inline std::uint16_t float_to_bfloat16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

// ================================================================================================ SHA-256

/// SHA-256 (FIPS 180-4), incremental.
class Sha256 {
 public:
  Sha256() { reset(); }
  void reset() {
    static constexpr std::uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::memcpy(h_, init, sizeof h_);
    len_ = 0;
    fill_ = 0;
  }
  void update(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    len_ += n;
    if (fill_) {
      const std::size_t take = std::min<std::size_t>(64 - fill_, n);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ < 64) return;
      block(buf_);
      fill_ = 0;
    }
    for (; n >= 64; p += 64, n -= 64) block(p);
    if (n) {
      std::memcpy(buf_, p, n);
      fill_ = n;
    }
  }
  std::array<std::uint8_t, 32> finish() {
    const std::uint64_t bits = len_ * 8;
    const unsigned char pad = 0x80;
    update(&pad, 1);
    const unsigned char zero[64] = {};
    update(zero, (fill_ <= 56) ? 56 - fill_ : 120 - fill_);
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; ++i) lenbuf[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(lenbuf, 8);
    std::array<std::uint8_t, 32> out{};
    for (int i = 0; i < 8; ++i)
      for (int k = 0; k < 4; ++k) out[static_cast<std::size_t>(4 * i + k)] = static_cast<std::uint8_t>(h_[i] >> (24 - 8 * k));
    reset();
    return out;
  }
  std::string finish_hex() {
    static const char* digits = "0123456789abcdef";
    const auto d = finish();
    std::string s(64, '0');
    for (std::size_t i = 0; i < 32; ++i) {
      s[2 * i] = digits[d[i] >> 4];
      s[2 * i + 1] = digits[d[i] & 15];
    }
    return s;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const unsigned char* p) {
    static constexpr std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (std::uint32_t{p[4 * i]} << 24) | (std::uint32_t{p[4 * i + 1]} << 16) |
             (std::uint32_t{p[4 * i + 2]} << 8) | std::uint32_t{p[4 * i + 3]};
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const std::uint32_t ch = (e & f) ^ (~e & g);
      const std::uint32_t t1 = h + S1 + ch + k[i] + w[i];
      const std::uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      const std::uint32_t t2 = S0 + maj;
      h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
  }
  std::uint32_t h_[8];
  std::uint64_t len_;
  unsigned char buf_[64];
  std::size_t fill_;
};

/// SHA-256 of a byte range as 64 lowercase hex digits.
inline std::string sha256_hex(const void* data, std::size_t n) {
  Sha256 s;
  s.update(data, n);
  return s.finish_hex();
}

// ================================================================================================ rendering helpers

/// A float as Python's repr(float) writes it: shortest round-trip digits, scientific notation when the
/// decimal exponent is < -4 or >= 16 ("1e-05", "1e+16"), ".0" on integral values, "nan", "inf", "-inf", "-0.0".
inline std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view s(buf, static_cast<std::size_t>(r.ptr - buf));
  std::string out;
  if (!s.empty() && s[0] == '-') {
    out = "-";
    s.remove_prefix(1);
  }
  const std::size_t epos = s.find('e');
  std::string digits;
  for (char c : s.substr(0, epos))
    if (c != '.') digits += c;
  std::string_view es = s.substr(epos + 1);
  bool eneg = false;
  if (!es.empty() && (es[0] == '+' || es[0] == '-')) {
    eneg = es[0] == '-';
    es.remove_prefix(1);
  }
  int exp = 0;
  for (char c : es) exp = exp * 10 + (c - '0');
  if (eneg) exp = -exp;
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (digits == "0") return out + "0.0";
  const int n = static_cast<int>(digits.size());
  const int decpt = exp + 1;
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (n > 1) {
      out += '.';
      out.append(digits, 1, std::string::npos);
    }
    out += 'e';
    out += exp < 0 ? '-' : '+';
    const int a = exp < 0 ? -exp : exp;
    if (a < 10) out += '0';
    out += std::to_string(a);
  } else if (decpt <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-decpt), '0');
    out += digits;
  } else if (decpt >= n) {
    out += digits;
    out.append(static_cast<std::size_t>(decpt - n), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<std::size_t>(decpt));
    out += '.';
    out.append(digits, static_cast<std::size_t>(decpt), std::string::npos);
  }
  return out;
}

/// A string as Python's json.dumps(s, ensure_ascii=False) writes it: double quotes; \" \\ \n \r \t \b \f;
/// other characters below U+0020 as \u00xx (lowercase hex); everything else (U+007F and non-ASCII too) as is.
inline std::string quote_str(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          static const char* hex = "0123456789abcdef";
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

// ================================================================================================ Values

/// Node op kinds: the closed set of torch.fx.
enum class Op : std::uint8_t { placeholder, get_attr, call_function, call_method, call_module, output };
inline std::string_view op_name(Op op) {
  static constexpr const char* names[] = {"placeholder", "get_attr", "call_function",
                                          "call_method", "call_module", "output"};
  return names[static_cast<std::size_t>(op)];
}
inline std::optional<Op> op_from_name(std::string_view s) {
  for (int i = 0; i < 6; ++i)
    if (s == op_name(static_cast<Op>(i))) return static_cast<Op>(i);
  return std::nullopt;
}

enum class MemoryFormat : std::uint8_t { contiguous_format, channels_last, channels_last_3d, preserve_format };
inline std::string_view memory_format_name(MemoryFormat m) {
  static constexpr const char* names[] = {"contiguous_format", "channels_last", "channels_last_3d",
                                          "preserve_format"};
  return names[static_cast<std::size_t>(m)];
}
inline std::optional<MemoryFormat> memory_format_from_name(std::string_view s) {
  for (int i = 0; i < 4; ++i)
    if (s == memory_format_name(static_cast<MemoryFormat>(i))) return static_cast<MemoryFormat>(i);
  return std::nullopt;
}

enum class Layout : std::uint8_t { strided, sparse_coo, sparse_csr, sparse_csc, sparse_bsr, sparse_bsc, jagged };
inline std::string_view layout_name(Layout l) {
  static constexpr const char* names[] = {"strided",    "sparse_coo", "sparse_csr", "sparse_csc",
                                          "sparse_bsr", "sparse_bsc", "jagged"};
  return names[static_cast<std::size_t>(l)];
}
inline std::optional<Layout> layout_from_name(std::string_view s) {
  for (int i = 0; i < 7; ++i)
    if (s == layout_name(static_cast<Layout>(i))) return static_cast<Layout>(i);
  return std::nullopt;
}

/// The kinds of a Value; the order is the order of Value::Storage's alternatives.
enum class ValueKind : std::uint8_t {
  nil, boolean, integer, floating, string, node, tensor, list, tuple, dict, slice, ellipsis, complex, dtype,
  device, memory_format, layout, function, module, graph
};
inline std::string_view value_kind_name(ValueKind k) {
  static constexpr const char* names[] = {"nil",   "bool",  "int",   "float",    "str",     "node",
                                          "tensor", "list", "tuple", "dict",     "slice",   "ellipsis",
                                          "complex", "dtype", "device", "memory_format", "layout",
                                          "function", "module", "graph"};
  return names[static_cast<std::size_t>(k)];
}

class Value;
struct Nil {};
struct NodeRef { std::string name; };
struct TensorRef { std::string name; };
struct List { std::vector<Value> items; };
struct Tuple { std::vector<Value> items; };
/// A dict key: an int or a str.
using DictKey = std::variant<std::int64_t, std::string>;
/// A dict, in file order; keys are unique.
struct Dict {
  std::vector<std::pair<DictKey, Value>> items;
  optional_ref<const Value> find(const DictKey& key) const;
};
/// slice(start, stop, step): exactly three Values.
struct Slice {
  std::vector<Value> parts;
  const Value& start() const;
  const Value& stop() const;
  const Value& step() const;
};
struct Ellipsis {};
/// A function object (format 1.1): its canonical name (docs/format.md section 3.1), e.g. "torch.nn.functional.relu".
struct FunctionRef { std::string name; };
/// "A child module of this type" in a lowering record (format 1.1): a module type name, e.g. "torch.nn.Linear".
struct ModuleTypeRef { std::string name; };
/// A graph of the core view (format 1.2): the index of a control-flow branch or body in CoreView::graphs.
struct GraphRef { std::size_t index = 0; };
struct Complex {
  double re = 0;
  double im = 0;
};
/// A torch.device string matching [a-z_]+(:[0-9]{1,6})?.
struct Device {
  std::string str;
  std::string_view type() const { return std::string_view(str).substr(0, str.find(':')); }
  std::optional<int> index() const {
    const auto c = str.find(':');
    if (c == std::string::npos) return std::nullopt;
    return std::atoi(str.c_str() + c + 1);
  }
};

/// A node argument, lowering attribute or golden value (docs/format.md 6.1).
class Value {
 public:
  using Storage = std::variant<Nil, bool, std::int64_t, double, std::string, NodeRef, TensorRef, List, Tuple, Dict,
                               Slice, Ellipsis, Complex, DType, Device, MemoryFormat, Layout, FunctionRef,
                               ModuleTypeRef, GraphRef>;

  Value() = default;  // nil
  static Value nil() { return Value(); }
  static Value boolean(bool b) { return make<bool>(b); }
  static Value integer(std::int64_t i) { return make<std::int64_t>(i); }
  static Value floating(double d) { return make<double>(d); }
  static Value string(std::string s) { return make<std::string>(std::move(s)); }
  static Value node(std::string name) { return make<NodeRef>(NodeRef{std::move(name)}); }
  static Value tensor(std::string name) { return make<TensorRef>(TensorRef{std::move(name)}); }
  static Value list(std::vector<Value> items) { return make<List>(List{std::move(items)}); }
  static Value tuple(std::vector<Value> items) { return make<Tuple>(Tuple{std::move(items)}); }
  static Value dict(std::vector<std::pair<DictKey, Value>> items) { return make<Dict>(Dict{std::move(items)}); }
  static Value slice(Value start, Value stop, Value step) {
    std::vector<Value> parts;
    parts.reserve(3);
    parts.push_back(std::move(start));
    parts.push_back(std::move(stop));
    parts.push_back(std::move(step));
    return make<Slice>(Slice{std::move(parts)});
  }
  static Value ellipsis() { return make<Ellipsis>(Ellipsis{}); }
  static Value complex(double re, double im) { return make<Complex>(Complex{re, im}); }
  static Value dtype(DType d) { return make<DType>(d); }
  static Value device(std::string s) { return make<Device>(Device{std::move(s)}); }
  static Value memory_format(MemoryFormat m) { return make<MemoryFormat>(m); }
  static Value layout(Layout l) { return make<Layout>(l); }
  static Value function(std::string name) { return make<FunctionRef>(FunctionRef{std::move(name)}); }
  static Value module(std::string type) { return make<ModuleTypeRef>(ModuleTypeRef{std::move(type)}); }
  static Value graph(std::size_t index) { return make<GraphRef>(GraphRef{index}); }

  ValueKind kind() const noexcept { return static_cast<ValueKind>(v_.index()); }
  bool is_nil() const noexcept { return kind() == ValueKind::nil; }
  const Storage& storage() const noexcept { return v_; }
  template <class T>
  const T* get_if() const noexcept { return std::get_if<T>(&v_); }

  // Checked accessors: "api.kind" on another kind.
  bool as_bool() const { return get<bool>(ValueKind::boolean); }
  std::int64_t as_int() const { return get<std::int64_t>(ValueKind::integer); }
  double as_float() const { return get<double>(ValueKind::floating); }
  /// An int or a float as a double.
  double as_number() const {
    if (kind() == ValueKind::integer) return static_cast<double>(std::get<std::int64_t>(v_));
    return get<double>(ValueKind::floating);
  }
  const std::string& as_str() const { return get<std::string>(ValueKind::string); }
  const std::string& node_name() const { return get<NodeRef>(ValueKind::node).name; }
  const std::string& tensor_name() const { return get<TensorRef>(ValueKind::tensor).name; }
  /// The items of a list or a tuple.
  const std::vector<Value>& items() const {
    if (const auto* l = std::get_if<List>(&v_)) return l->items;
    if (const auto* t = std::get_if<Tuple>(&v_)) return t->items;
    wrong("a list or a tuple");
  }
  /// A list or tuple of ints (e.g. a stride), or a single int repeated n times when n > 0.
  std::vector<std::int64_t> int_list(std::size_t n = 0) const {
    if (kind() == ValueKind::integer && n > 0) return std::vector<std::int64_t>(n, as_int());
    std::vector<std::int64_t> out;
    for (const Value& v : items()) out.push_back(v.as_int());
    return out;
  }
  const Dict& as_dict() const { return get<Dict>(ValueKind::dict); }
  const Slice& as_slice() const { return get<Slice>(ValueKind::slice); }
  Complex as_complex() const { return get<Complex>(ValueKind::complex); }
  DType as_dtype() const { return get<DType>(ValueKind::dtype); }
  const Device& as_device() const { return get<Device>(ValueKind::device); }
  MemoryFormat as_memory_format() const { return get<MemoryFormat>(ValueKind::memory_format); }
  Layout as_layout() const { return get<Layout>(ValueKind::layout); }
  /// The canonical name of a function Value.
  const std::string& function_name() const { return get<FunctionRef>(ValueKind::function).name; }
  /// The type name of a module Value (a child module of that type).
  const std::string& module_type() const { return get<ModuleTypeRef>(ValueKind::module).name; }
  /// The CoreView::graphs index of a graph Value (format 1.2).
  std::size_t graph_index() const { return get<GraphRef>(ValueKind::graph).index; }

  /// The canonical rendering of cpp/DUMP.md (e.g. "[%x, (1, 2), {\"k\": None}]").
  std::string repr() const {
    std::string out;
    render(out);
    return out;
  }
  void render(std::string& out) const;

  /// Structural equality; floats compare by bits (so NaN equals the same NaN, -0.0 differs from 0.0) and an
  /// int never equals a float or a bool.
  friend bool operator==(const Value& a, const Value& b);
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  template <class T, class A>
  static Value make(A&& a) {
    Value v;
    v.v_.template emplace<T>(std::forward<A>(a));
    return v;
  }
  [[noreturn]] void wrong(const char* expected) const {
    detail::raise("api.kind", "", std::string("the Value is a ") + std::string(value_kind_name(kind())) +
                                      ", not " + expected);
  }
  template <class T>
  const T& get(ValueKind k) const {
    if (const T* p = std::get_if<T>(&v_)) return *p;
    std::string what = std::string("a ") + std::string(value_kind_name(k));
    wrong(what.c_str());
  }
  Storage v_;
};

inline optional_ref<const Value> Dict::find(const DictKey& key) const {
  for (const auto& kv : items)
    if (kv.first == key) return kv.second;
  return std::nullopt;
}
inline const Value& Slice::start() const { return parts.at(0); }
inline const Value& Slice::stop() const { return parts.at(1); }
inline const Value& Slice::step() const { return parts.at(2); }

inline std::string dict_key_repr(const DictKey& k) {
  if (const auto* i = std::get_if<std::int64_t>(&k)) return std::to_string(*i);
  return quote_str(std::get<std::string>(k));
}

inline void Value::render(std::string& out) const {
  auto seq = [&out](const std::vector<Value>& items, const char* open, const char* close, bool tuple) {
    out += open;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i) out += ", ";
      items[i].render(out);
    }
    if (tuple && items.size() == 1) out += ',';
    out += close;
  };
  switch (kind()) {
    case ValueKind::nil: out += "None"; break;
    case ValueKind::boolean: out += std::get<bool>(v_) ? "True" : "False"; break;
    case ValueKind::integer: out += std::to_string(std::get<std::int64_t>(v_)); break;
    case ValueKind::floating: out += python_float_repr(std::get<double>(v_)); break;
    case ValueKind::string: out += quote_str(std::get<std::string>(v_)); break;
    case ValueKind::node: out += '%'; out += std::get<NodeRef>(v_).name; break;
    case ValueKind::tensor: out += '$'; out += std::get<TensorRef>(v_).name; break;
    case ValueKind::list: seq(std::get<List>(v_).items, "[", "]", false); break;
    case ValueKind::tuple: seq(std::get<Tuple>(v_).items, "(", ")", true); break;
    case ValueKind::dict: {
      out += '{';
      const auto& items = std::get<Dict>(v_).items;
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ", ";
        out += dict_key_repr(items[i].first);
        out += ": ";
        items[i].second.render(out);
      }
      out += '}';
      break;
    }
    case ValueKind::slice: seq(std::get<Slice>(v_).parts, "slice(", ")", false); break;
    case ValueKind::ellipsis: out += "..."; break;
    case ValueKind::complex: {
      const auto& c = std::get<Complex>(v_);
      out += "complex(" + python_float_repr(c.re) + ", " + python_float_repr(c.im) + ")";
      break;
    }
    case ValueKind::dtype: out += "dtype(" + std::string(dtype_name(std::get<DType>(v_))) + ")"; break;
    case ValueKind::device: out += "device(" + std::get<Device>(v_).str + ")"; break;
    case ValueKind::memory_format:
      out += "memory_format(" + std::string(memory_format_name(std::get<MemoryFormat>(v_))) + ")";
      break;
    case ValueKind::layout: out += "layout(" + std::string(layout_name(std::get<Layout>(v_))) + ")"; break;
    case ValueKind::function: out += "function(" + std::get<FunctionRef>(v_).name + ")"; break;
    case ValueKind::module: out += "module(" + std::get<ModuleTypeRef>(v_).name + ")"; break;
    case ValueKind::graph: out += "graph(" + std::to_string(std::get<GraphRef>(v_).index) + ")"; break;
  }
}

namespace detail {
inline bool same_bits(double a, double b) {
  std::uint64_t x, y;
  std::memcpy(&x, &a, 8);
  std::memcpy(&y, &b, 8);
  return x == y;
}
inline bool seq_equal(const std::vector<Value>& a, const std::vector<Value>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}
}  // namespace detail

inline bool operator==(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::nil: case ValueKind::ellipsis: return true;
    case ValueKind::boolean: return a.as_bool() == b.as_bool();
    case ValueKind::integer: return a.as_int() == b.as_int();
    case ValueKind::floating: return detail::same_bits(a.as_float(), b.as_float());
    case ValueKind::string: return a.as_str() == b.as_str();
    case ValueKind::node: return a.node_name() == b.node_name();
    case ValueKind::tensor: return a.tensor_name() == b.tensor_name();
    case ValueKind::list: case ValueKind::tuple: return detail::seq_equal(a.items(), b.items());
    case ValueKind::dict: {
      const auto& x = a.as_dict().items;
      const auto& y = b.as_dict().items;
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (x[i].first != y[i].first || !(x[i].second == y[i].second)) return false;
      return true;
    }
    case ValueKind::slice: return detail::seq_equal(a.as_slice().parts, b.as_slice().parts);
    case ValueKind::complex:
      return detail::same_bits(a.as_complex().re, b.as_complex().re) &&
             detail::same_bits(a.as_complex().im, b.as_complex().im);
    case ValueKind::dtype: return a.as_dtype() == b.as_dtype();
    case ValueKind::device: return a.as_device().str == b.as_device().str;
    case ValueKind::memory_format: return a.as_memory_format() == b.as_memory_format();
    case ValueKind::layout: return a.as_layout() == b.as_layout();
    case ValueKind::function: return a.function_name() == b.function_name();
    case ValueKind::module: return a.module_type() == b.module_type();
    case ValueKind::graph: return a.graph_index() == b.graph_index();
  }
  return false;
}

// ================================================================================================ Meta

/// Meta kinds; device, dtype, memory_format and layout (runtime values of those types) are format 1.1.
enum class MetaKind : std::uint8_t {
  tensor, tuple, list, dict, integer, floating, boolean, string, none, other, device, dtype, memory_format, layout,
  symint
};
inline std::string_view meta_kind_name(MetaKind k) {
  static constexpr const char* names[] = {"tensor", "tuple", "list",  "dict",   "int",    "float",         "bool",
                                          "str",    "none",  "other", "device", "dtype",  "memory_format", "layout",
                                          "symint"};
  return names[static_cast<std::size_t>(k)];
}

/// What a node produces (docs/format.md section 6).
struct Meta {
  MetaKind kind = MetaKind::other;
  DType dtype = DType::F32;           // tensor
  std::vector<std::int64_t> shape;    // tensor; -1 where the dimension is symbolic (sym)
  /// Format 1.2 core graphs: per dimension, its symbol expression ("s0*2"), or "" for a concrete one; empty when
  /// every dimension is concrete. symint: the expression of the SymInt value.
  std::vector<std::string> sym;
  std::string expr;                   // symint
  std::vector<Meta> items;            // tuple, list, dict (values)
  std::vector<DictKey> keys;          // dict, parallel to items

  /// "tensor(F32,[1,3])", "tuple(m, m)", "list(...)", "dict(k: m, ...)" or the leaf kind name.
  std::string repr() const {
    std::string out;
    render(out);
    return out;
  }
  void render(std::string& out) const {
    switch (kind) {
      case MetaKind::tensor: {
        out += "tensor(" + std::string(dtype_name(dtype)) + ",[";
        for (std::size_t i = 0; i < shape.size(); ++i) {
          if (i) out += ',';
          if (!sym.empty() && !sym[i].empty()) out += sym[i];
          else out += std::to_string(shape[i]);
        }
        out += "])";
        break;
      }
      case MetaKind::symint: out += "symint(" + expr + ")"; break;
      case MetaKind::tuple: case MetaKind::list: case MetaKind::dict:
        out += meta_kind_name(kind);
        out += '(';
        for (std::size_t i = 0; i < items.size(); ++i) {
          if (i) out += ", ";
          if (kind == MetaKind::dict) out += dict_key_repr(keys[i]) + ": ";
          items[i].render(out);
        }
        out += ')';
        break;
      default: out += meta_kind_name(kind);
    }
  }
};

// ================================================================================================ records

/// Who wrote the file (informative).
struct Producer {
  std::string name, version, torch;
};

enum class FileRole : std::uint8_t { weights, golden };
inline std::string_view file_role_name(FileRole r) { return r == FileRole::weights ? "weights" : "golden"; }

struct FileEntry {
  std::string path;
  FileRole role = FileRole::weights;
};

using Kwargs = std::vector<std::pair<std::string, Value>>;

namespace detail {
inline optional_ref<const Value> find_pair(const Kwargs& kv, std::string_view name) {
  for (const auto& p : kv)
    if (p.first == name) return p.second;
  return std::nullopt;
}
}  // namespace detail

/// The lifted record of a leaf module (node.meta["lowering"] on the Python side).
struct Lowering {
  std::string module_type;
  std::int64_t version = 0;
  std::int64_t module_version = 0;
  Kwargs attrs;  // attribute name -> Value, in file order
  bool training = false;  // 1.1: the module's training flag at export (informative; computation is eval-mode)
  optional_ref<const Value> find_attr(std::string_view name) const { return detail::find_pair(attrs, name); }
  const Value& attr_at(std::string_view name) const {
    if (auto v = find_attr(name)) return *v;
    detail::raise("api.not_found", module_type, "no lowering attribute '" + std::string(name) + "'");
  }
};

/// A core node's module-view node (format 1.2): Manifest.graphs index and node name.
struct NodeLink {
  std::size_t graph = 0;
  std::string node;
};

struct Node {
  std::size_t index = 0;  // position in its graph
  std::string name;
  Op op = Op::placeholder;
  std::string target;
  std::vector<Value> args;
  Kwargs kwargs;
  std::vector<std::string> inputs;
  std::vector<std::string> users;
  std::optional<Meta> meta;
  std::optional<Lowering> lowering;
  std::optional<std::size_t> graph;  // called graph, for a call_module of a graph module
  /// 1.1: call_function/call_method nodes: the index of the overload (Artifact::functions()/methods()) that
  /// args and kwargs bind to; nullopt on other ops and in 1.0 files.
  std::optional<std::size_t> overload;
  /// 1.2: on a core-view node, the module-view node it came from (nullopt for glue and on module-view nodes).
  std::optional<NodeLink> origin;

  optional_ref<const Value> find_kwarg(std::string_view key) const { return detail::find_pair(kwargs, key); }
  const Value& kwarg_at(std::string_view key) const {
    if (auto v = find_kwarg(key)) return *v;
    detail::raise("api.not_found", "node " + name, "no keyword argument '" + std::string(key) + "'");
  }
};

namespace detail { class Loader; }

struct Graph {
  std::size_t index = 0;
  std::string name;  // "" for the root
  std::vector<Node> nodes;
  bool training = false;  // 1.1: the graph module's own training flag at export (informative)

  optional_ref<const Node> find_node(std::string_view node_name) const {
    const auto it = by_name_.find(node_name);
    if (it == by_name_.end()) return std::nullopt;
    return nodes[it->second];
  }
  const Node& node_at(std::string_view node_name) const {
    if (auto n = find_node(node_name)) return *n;
    detail::raise("api.not_found", "graph " + std::to_string(index), "no node '" + std::string(node_name) + "'");
  }
  /// The output node (always the last one of a loaded graph).
  const Node& output_node() const { return nodes.back(); }

 private:
  friend class detail::Loader;
  std::map<std::string, std::size_t, std::less<>> by_name_;
};

struct Signature {
  std::vector<std::string> inputs;
  Value output;
};

struct Tolerance {
  double rtol = 0;
  double atol = 0;
  /// |actual - expected| <= atol + rtol * |expected|, NaN matching NaN.
  bool matches(double actual, double expected) const {
    if (std::isnan(actual) || std::isnan(expected)) return std::isnan(actual) && std::isnan(expected);
    if (actual == expected) return true;  // equal infinities
    return std::fabs(actual - expected) <= atol + rtol * std::fabs(expected);
  }
};

enum class GoldenMode : std::uint8_t { outputs, nodes };

struct Golden {
  GoldenMode mode = GoldenMode::outputs;
  std::string file;
  std::vector<Value> inputs;
  Value outputs;
  Kwargs nodes;  // root node name -> result
  Kwargs core_nodes;  // 1.2: core root node name -> result
  std::vector<std::pair<DType, Tolerance>> tolerances;
  optional_ref<const Value> find_node(std::string_view node) const { return detail::find_pair(nodes, node); }
  std::optional<Tolerance> tolerance(DType d) const {
    for (const auto& t : tolerances)
      if (t.first == d) return t.second;
    return std::nullopt;
  }
};

// ================================================================================================ core view (1.2)

namespace detail { class SymParser; }

/// A symbol expression of a core-view shape (docs/format.md, format 1.2): integers, symbols s<digits>, + - * //
/// % (Python floor semantics), unary -, max(a, b), min(a, b), parentheses.
class SymExpr {
 public:
  /// Parses `text`; nullopt with the reason in *why on a syntax error.
  static std::optional<SymExpr> parse(std::string_view text, std::string* why = nullptr);
  /// The value under `bindings` (symbol name -> value). Throws Error "core.symbol" for an unbound symbol and
  /// for a division or modulo by zero, "api.overflow"-free: int64 arithmetic wraps are reported as core.symbol.
  std::int64_t eval(const std::map<std::string, std::int64_t, std::less<>>& bindings) const;
  /// The distinct symbols it uses, in order of first appearance.
  const std::vector<std::string>& symbols() const { return symbols_; }
  const std::string& text() const { return text_; }

 private:
  enum class K : std::uint8_t { num, sym, add, sub, mul, floordiv, mod, neg, max, min };
  struct N {
    K k = K::num;
    std::int64_t v = 0;   // num; sym: index into symbols_
    std::int32_t a = -1, b = -1;
  };
  std::int64_t eval_node(std::int32_t i, const std::vector<std::int64_t>& vals) const;
  friend class detail::SymParser;
  std::vector<N> nodes_;
  std::int32_t root_ = -1;
  std::vector<std::string> symbols_;
  std::string text_;
};

enum class CoreInputKind : std::uint8_t { user_input, parameter, buffer, constant };
inline std::string_view core_input_kind_name(CoreInputKind k) {
  static constexpr const char* names[] = {"user_input", "parameter", "buffer", "constant"};
  return names[static_cast<std::size_t>(k)];
}
enum class CoreOutputKind : std::uint8_t { user_output, buffer_mutation };
inline std::string_view core_output_kind_name(CoreOutputKind k) {
  return k == CoreOutputKind::user_output ? "user_output" : "buffer_mutation";
}

/// A placeholder of the core root graph.
struct CoreInput {
  std::string name;    // the placeholder node's name
  CoreInputKind kind = CoreInputKind::user_input;
  std::string target;  // user_input: the signature input it binds to; otherwise the tensor table name
};
/// An element of the core root output node's args[0].
struct CoreOutput {
  std::string name;  // the node returned, "" for a constant or None
  CoreOutputKind kind = CoreOutputKind::user_output;
  std::string target;  // buffer_mutation: the tensor table name of the buffer; otherwise ""
};
/// An argument or return of an operator schema (torch.FunctionSchema).
struct OpArg {
  std::string name;
  std::string type;  // the schema's type text: Tensor, Tensor?, SymInt[], Scalar, ...
  bool kwarg_only = false;
  Value default_value;  // nil when there is none (see required) or when it is None
  bool required = false;
  bool mutates = false;
};
/// The schema of a call_function target of the core view.
struct OpSchema {
  std::string name;      // "aten::convolution"
  std::string overload;  // "default"
  std::vector<OpArg> arguments;
  std::vector<OpArg> returns;
};
/// A shape symbol, defined by dimension `dim` of user input `input` (a CoreView::inputs index).
struct Symbol {
  std::int64_t min = 0;
  std::optional<std::int64_t> max;  // nullopt: unbounded
  std::size_t input = 0;
  std::size_t dim = 0;
};

/// The core view (format 1.2): the program as Core ATen ops, linked to the module view by Node::origin.
struct CoreView {
  std::vector<Graph> graphs;  // graphs[0] the root; then control-flow branches and bodies
  std::vector<CoreInput> inputs;
  std::vector<CoreOutput> outputs;
  std::vector<std::pair<std::string, OpSchema>> ops;  // target -> schema, in file order
  std::vector<std::pair<std::string, Symbol>> symbols;  // in file order
  /// Parsed symbol expressions of Meta shapes and symints, by their text.
  std::map<std::string, SymExpr, std::less<>> exprs;

  const Graph& root() const { return graphs.at(0); }
  optional_ref<const OpSchema> find_op(std::string_view target) const {
    for (const auto& p : ops)
      if (p.first == target) return p.second;
    return std::nullopt;
  }
  optional_ref<const Symbol> find_symbol(std::string_view name) const {
    for (const auto& p : symbols)
      if (p.first == name) return p.second;
    return std::nullopt;
  }
  /// The parsed expression of a validated shape entry or symint (api.not_found for other texts).
  const SymExpr& expr(std::string_view text) const {
    const auto it = exprs.find(text);
    if (it == exprs.end()) detail::raise("api.not_found", "core", "no symbol expression " + std::string(text));
    return it->second;
  }
};

/// What a tensor is to the module (TensorEntry.kind, format 1.1). `unspecified` is the "" of 1.0 files.
enum class TensorKind : std::uint8_t { unspecified, parameter, buffer, constant, golden };
/// "parameter", "buffer", "constant", "golden", or "" for unspecified.
inline std::string_view tensor_kind_name(TensorKind k) {
  static constexpr const char* names[] = {"", "parameter", "buffer", "constant", "golden"};
  return names[static_cast<std::size_t>(k)];
}
inline std::optional<TensorKind> tensor_kind_from_name(std::string_view s) {
  for (int i = 0; i < 5; ++i)
    if (s == tensor_kind_name(static_cast<TensorKind>(i))) return static_cast<TensorKind>(i);
  return std::nullopt;
}

/// Format 1.3: one mesh dimension of a placement: split tensor dimension `dim` (torch.chunk's rule) or replicate.
struct MeshDim {
  enum class Kind : std::uint8_t { shard, replicate };
  Kind kind = Kind::replicate;
  std::int64_t dim = -1;  // shard: the tensor dimension; replicate: -1
};

/// Format 1.3: how a multi-device program lays a tensor out over a device mesh (docs/format.md section 5.2). The
/// stored tensor is always whole; ranks are the row-major indices of mesh coordinates.
struct Placement {
  std::vector<std::int64_t> mesh;
  std::vector<MeshDim> dims;                // one per mesh dimension, applied in order
  std::vector<std::string> mesh_dim_names;  // empty, or one identifier per mesh dimension
  /// prod(mesh): the number of ranks (at most 65536 in a loaded artifact; saturates at INT64_MAX, and is 0 when a
  /// size is below 1, for a placement built by hand).
  std::int64_t world() const {
    std::int64_t w = 1;
    for (std::int64_t m : mesh) {
      if (m < 1) return 0;
      if (w > std::numeric_limits<std::int64_t>::max() / m) return std::numeric_limits<std::int64_t>::max();
      w *= m;
    }
    return w;
  }
};

/// The part of a tensor one rank holds (Artifact::read_shard): `ranges[k]` = [begin, end) of tensor dimension k,
/// `shape[k]` = end - begin, and the slice's elements row-major, little-endian, in owned memory.
struct TensorSlice {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  std::vector<std::byte> bytes;
};

/// One entry of the tensor table, with a zero-copy view of its bytes.
struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::string file;
  std::string key;
  std::string sha256;
  TensorKind kind = TensorKind::unspecified;  // as written; unspecified only in 1.0 files
  bool requires_grad = false;                 // parameters only
  bool persistent = true;                     // buffers only: in state_dict()
  std::optional<Placement> placement;         // 1.3: nullopt when not placed

  /// The kind, with the 1.0 rule for unspecified entries: a tensor of the golden file is golden, a floating one
  /// a (frozen) parameter, any other a buffer.
  TensorKind effective_kind(bool in_golden_file) const {
    if (kind != TensorKind::unspecified) return kind;
    if (in_golden_file) return TensorKind::golden;
    return is_floating_dtype(dtype) ? TensorKind::parameter : TensorKind::buffer;
  }

  std::size_t itemsize() const { return dtype_itemsize(dtype); }
  std::int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return nbytes_; }
  /// Row-major (C-contiguous) strides, in elements.
  std::vector<std::int64_t> strides() const {
    std::vector<std::int64_t> s(shape.size());
    std::int64_t acc = 1;
    for (std::size_t i = shape.size(); i-- > 0;) {
      s[i] = acc;
      acc *= shape[i];
    }
    return s;
  }
  /// The first byte inside the mapping (aligned to itemsize); nbytes() bytes, little-endian elements.
  const std::byte* data() const noexcept { return data_; }
  /// Element i (row-major) of any storage dtype as a double (integers converted, BOOL as 0/1).
  double element_double(std::size_t i) const;
  /// Element i of an integer or BOOL tensor ("api.kind" for floats, "api.range" for a U64 above INT64_MAX).
  std::int64_t element_int64(std::size_t i) const;
  /// SHA-256 of the bytes, recomputed.
  std::string compute_sha256() const { return sha256_hex(data_, nbytes_); }

 private:
  friend class detail::Loader;
  const std::byte* data_ = nullptr;
  std::int64_t numel_ = 0;
  std::size_t nbytes_ = 0;
  const std::byte* element(std::size_t i) const {
    if (i >= static_cast<std::size_t>(numel_))
      detail::raise("api.range", "tensor " + name,
                    "element " + std::to_string(i) + " of " + std::to_string(numel_));
    return data_ + i * itemsize();
  }
};

namespace detail {
template <class U>
inline U load_le(const std::byte* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v = static_cast<U>(v | (static_cast<U>(std::to_integer<std::uint8_t>(p[i])) << (8 * i)));
  return v;
}
}  // namespace detail

inline double Tensor::element_double(std::size_t i) const {
  const std::byte* p = element(i);
  using detail::load_le;
  switch (dtype) {
    case DType::F64: {
      const std::uint64_t b = load_le<std::uint64_t>(p);
      double d;
      std::memcpy(&d, &b, 8);
      return d;
    }
    case DType::F32: {
      const std::uint32_t b = load_le<std::uint32_t>(p);
      float f;
      std::memcpy(&f, &b, 4);
      return f;
    }
    case DType::F16: return half_to_float(load_le<std::uint16_t>(p));
    case DType::BF16: return bfloat16_to_float(load_le<std::uint16_t>(p));
    case DType::F8_E4M3: return float8_e4m3fn_to_float(load_le<std::uint8_t>(p));
    case DType::F8_E5M2: return float8_e5m2_to_float(load_le<std::uint8_t>(p));
    case DType::I64: return static_cast<double>(static_cast<std::int64_t>(load_le<std::uint64_t>(p)));
    case DType::I32: return static_cast<std::int32_t>(load_le<std::uint32_t>(p));
    case DType::I16: return static_cast<std::int16_t>(load_le<std::uint16_t>(p));
    case DType::I8: return static_cast<std::int8_t>(load_le<std::uint8_t>(p));
    case DType::U64: return static_cast<double>(load_le<std::uint64_t>(p));
    case DType::U32: return load_le<std::uint32_t>(p);
    case DType::U16: return load_le<std::uint16_t>(p);
    case DType::U8: return load_le<std::uint8_t>(p);
    case DType::BOOL: return load_le<std::uint8_t>(p) != 0 ? 1.0 : 0.0;
    default: break;
  }
  detail::raise("api.kind", "tensor " + name, "dtype " + std::string(dtype_name(dtype)) + " is not a storage dtype");
}

inline std::int64_t Tensor::element_int64(std::size_t i) const {
  const std::byte* p = element(i);
  using detail::load_le;
  switch (dtype) {
    case DType::I64: return static_cast<std::int64_t>(load_le<std::uint64_t>(p));
    case DType::I32: return static_cast<std::int32_t>(load_le<std::uint32_t>(p));
    case DType::I16: return static_cast<std::int16_t>(load_le<std::uint16_t>(p));
    case DType::I8: return static_cast<std::int8_t>(load_le<std::uint8_t>(p));
    case DType::U64: {
      const std::uint64_t u = load_le<std::uint64_t>(p);
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        detail::raise("api.range", "tensor " + name, "element " + std::to_string(i) + " is " + std::to_string(u) +
                                                         ", above INT64_MAX");
      return static_cast<std::int64_t>(u);
    }
    case DType::U32: return load_le<std::uint32_t>(p);
    case DType::U16: return load_le<std::uint16_t>(p);
    case DType::U8: return load_le<std::uint8_t>(p);
    case DType::BOOL: return load_le<std::uint8_t>(p) != 0 ? 1 : 0;
    default: break;
  }
  detail::raise("api.kind", "tensor " + name,
                "element_int64 needs an integer or BOOL tensor, this one is " + std::string(dtype_name(dtype)));
}

// ================================================================================================ declarations (1.1)

/// How a parameter binds (Python's inspect.Parameter kinds).
enum class ParamKind : std::uint8_t { positional_only, positional_or_keyword, var_positional, keyword_only, var_keyword };
inline std::string_view param_kind_name(ParamKind k) {
  static constexpr const char* names[] = {"positional_only", "positional_or_keyword", "var_positional", "keyword_only",
                                          "var_keyword"};
  return names[static_cast<std::size_t>(k)];
}
inline std::optional<ParamKind> param_kind_from_name(std::string_view s) {
  for (int i = 0; i < 5; ++i)
    if (s == param_kind_name(static_cast<ParamKind>(i))) return static_cast<ParamKind>(i);
  return std::nullopt;
}

/// A parameter of a module's forward or of a function overload.
struct Param {
  std::string name;
  ParamKind kind = ParamKind::positional_or_keyword;
  Value default_value;    // nil when there is none (see required) or when the default is None
  bool required = false;  // true when the parameter has no default
};

/// One signature of a function or method (for methods the first param is self).
struct Overload {
  std::vector<Param> params;
  std::string returns;  // the return annotation as text (informative)
};

/// A parsed attribute type of the grammar of docs/format.md (ModuleDecl): alternatives separated by '|'.
class AttrType {
 public:
  enum class Base : std::uint8_t { tensor, integer, floating, boolean, string, none, function, module, dtype, device,
                                   enumeration, tuple };
  struct Alt {
    Base base = Base::tensor;
    std::vector<Base> elems;                // tuple: the element's alternatives (int, float, bool, str, none)
    std::optional<std::size_t> count;       // tuple: exactly this many elements; nullopt: any number
    std::vector<std::string> words;         // enumeration: the accepted strs
  };
  /// Parses `text`; nullopt (and the reason in *why) when it breaks the grammar.
  static std::optional<AttrType> parse(std::string_view text, std::string* why = nullptr);
  const std::vector<Alt>& alternatives() const { return alts_; }
  /// Whether the Value has one of the alternatives' kinds (a module Value's type is not looked up here).
  bool accepts(const Value& v) const;
  bool allows_module() const {
    for (const Alt& a : alts_)
      if (a.base == Base::module) return true;
    return false;
  }

 private:
  std::vector<Alt> alts_;
};

/// One attribute a module's lowering rule may record.
struct AttrDecl {
  std::string name;  // dotted; each "*" stands for one decimal index (whole component or part of one)
  std::string type;  // the type grammar's text
  std::string doc;   // one line of meaning
  AttrType parsed;   // `type`, parsed
};

/// The declaration of a module type (Manifest.modules, format 1.1).
struct ModuleDecl {
  std::int64_t version = 0;
  std::vector<AttrDecl> attrs;  // in record order
  std::vector<Param> forward;   // how a call_module node's args and kwargs bind
  /// The declaration whose name matches `attr` ("*" matching one component of decimal digits), or empty.
  optional_ref<const AttrDecl> find_attr(std::string_view attr) const;
};

// ================================================================================================ Artifact

struct LoadOptions {
  /// Reject directory entries that the manifest does not list (artifact.extra_file). Non-strict mode ignores
  /// them and never opens them.
  bool strict = true;
  /// Memory-map the tensor files (default). false: read them into owned memory, which costs a read of every
  /// byte but makes the artifact immune to files truncated behind its back (SIGBUS on a mapping).
  bool map_tensors = true;
};

namespace detail {

/// Bytes of a tensor file: a read-only mapping or an owned copy.
class Bytes {
 public:
  Bytes() = default;
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() {
    if (mapped_ && size_) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  void set_mapped(const std::byte* p, std::size_t n) {
    data_ = p;
    size_ = n;
    mapped_ = true;
  }
  std::vector<std::byte>& owned() { return owned_; }
  void set_owned() {
    data_ = owned_.data();
    size_ = owned_.size();
    mapped_ = false;
  }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
  std::vector<std::byte> owned_;
};

struct ArtifactData {
  std::string directory;
  std::int64_t format_major = 0, format_minor = 0;
  Producer producer;
  std::vector<FileEntry> files;
  std::vector<Tensor> tensors;
  std::map<std::string, std::size_t, std::less<>> tensor_index;
  std::vector<Graph> graphs;
  Signature signature;
  std::optional<Golden> golden;
  std::string digest;
  std::vector<std::pair<std::string, ModuleDecl>> modules;               // 1.1, in file order
  std::vector<std::pair<std::string, std::vector<Overload>>> functions;  // 1.1
  std::vector<std::pair<std::string, std::vector<Overload>>> methods;    // 1.1
  std::optional<CoreView> core;                                         // 1.2
  std::map<std::pair<std::size_t, std::string>, std::vector<NodeLink>> core_links;  // module node -> core nodes
  std::string manifest;  // the manifest's bytes, as read
  std::vector<std::unique_ptr<Bytes>> buffers;
};

}  // namespace detail

/// A loaded, validated artifact. Cheap to copy (shared, immutable); references and data() pointers handed out
/// stay valid while any copy lives.
class Artifact {
 public:
  Artifact() = default;
  const std::string& directory() const { return d().directory; }
  std::int64_t format_major() const { return d().format_major; }
  std::int64_t format_minor() const { return d().format_minor; }
  const Producer& producer() const { return d().producer; }
  const std::vector<FileEntry>& files() const { return d().files; }
  const std::string& digest() const { return d().digest; }

  const std::vector<Graph>& graphs() const { return d().graphs; }
  const Graph& root() const { return d().graphs.at(0); }
  const Graph& graph_at(std::size_t i) const {
    if (i >= d().graphs.size())
      detail::raise("api.not_found", "", "no graph " + std::to_string(i) + " (the artifact has " +
                                             std::to_string(d().graphs.size()) + ")");
    return d().graphs[i];
  }
  const Signature& signature() const { return d().signature; }
  const std::optional<Golden>& golden() const { return d().golden; }

  /// Format 1.1 declarations (empty in 1.0 files): module types, function and method signatures, in file order.
  const std::vector<std::pair<std::string, ModuleDecl>>& modules() const { return d().modules; }
  const std::vector<std::pair<std::string, std::vector<Overload>>>& functions() const { return d().functions; }
  const std::vector<std::pair<std::string, std::vector<Overload>>>& methods() const { return d().methods; }
  optional_ref<const ModuleDecl> find_module(std::string_view type) const { return find_in(d().modules, type); }
  optional_ref<const std::vector<Overload>> find_function(std::string_view name) const {
    return find_in(d().functions, name);
  }
  optional_ref<const std::vector<Overload>> find_method(std::string_view name) const { return find_in(d().methods, name); }
  /// The overload a call_function/call_method node binds to (1.1 files), or empty.
  optional_ref<const Overload> overload_of(const Node& n) const {
    if (!n.overload) return std::nullopt;
    const auto list = n.op == Op::call_function ? find_function(n.target)
                      : n.op == Op::call_method ? find_method(n.target) : optional_ref<const std::vector<Overload>>();
    if (!list || *n.overload >= list->size()) return std::nullopt;
    return (*list)[*n.overload];
  }

  /// Format 1.2: the core view, or nullopt (1.0/1.1 files, and 1.2 files written without one).
  const std::optional<CoreView>& core() const { return d().core; }
  /// The module-view node a core-view node came from (its origin), or empty (glue, or not a core node).
  optional_ref<const Node> origin_of(const Node& core_node) const {
    if (!core_node.origin || core_node.origin->graph >= d().graphs.size()) return std::nullopt;
    return d().graphs[core_node.origin->graph].find_node(core_node.origin->node);
  }
  /// The inverse links: the core nodes (CoreView::graphs index and node name, in graph order) whose origin is
  /// node `node` of module-view graph `graph`; empty when none.
  const std::vector<NodeLink>& core_nodes_of(std::size_t graph, std::string_view node) const {
    static const std::vector<NodeLink> none;
    const auto it = d().core_links.find({graph, std::string(node)});
    return it == d().core_links.end() ? none : it->second;
  }

  /// The tensor table, sorted by name as written.
  const std::vector<Tensor>& tensors() const { return d().tensors; }
  /// The tensor named `name`, or empty.
  optional_ref<const Tensor> tensor(std::string_view name) const {
    const auto it = d().tensor_index.find(name);
    if (it == d().tensor_index.end()) return std::nullopt;
    return d().tensors[it->second];
  }
  /// The tensor named `name` ("api.not_found" otherwise).
  const Tensor& tensor_at(std::string_view name) const {
    if (auto t = tensor(name)) return *t;
    detail::raise("api.not_found", "", "no tensor '" + std::string(name) + "' in the tensor table");
  }
  /// Recompute the tensor's SHA-256 and compare it with the table ("tensor.hash" on mismatch).
  void verify_tensor(std::string_view name) const {
    const Tensor& t = tensor_at(name);
    const std::string got = t.compute_sha256();
    if (got != t.sha256)
      detail::raise("tensor.hash", t.file + ": tensor " + t.name,
                    "stored bytes hash to " + got + ", the manifest says " + t.sha256);
  }
  /// verify_tensor() on every entry, in table order.
  void verify_all() const {
    for (const Tensor& t : d().tensors) verify_tensor(t.name);
  }
  /// Format 1.3: the slice of tensor `name` that rank `rank` of `world` holds under its placement (docs/format.md
  /// section 5.2), copied from only that slice's bytes. A tensor without a placement is whole on every rank.
  /// "api.range" when `world` differs from the placement's prod(mesh) (both named) or `rank` is outside
  /// [0, world); "api.not_found" for an unknown name.
  TensorSlice read_shard(std::string_view name, std::int64_t rank, std::int64_t world) const;
  /// The manifest's bytes as read.
  const std::string& manifest_bytes() const { return d().manifest; }
  /// The digest recomputed from the manifest (docs/format.md section 7); compare with digest().
  std::string compute_digest() const;
  /// The manifest as JSON (floats as numbers, non-finite floats as "nan"/"inf"/"-inf", bin as base64).
  nlohmann::ordered_json manifest_json() const;

 private:
  friend class detail::Loader;
  const detail::ArtifactData& d() const {
    if (!d_) detail::raise("api.not_found", "", "empty Artifact (default-constructed)");
    return *d_;
  }
  template <class T>
  static optional_ref<const T> find_in(const std::vector<std::pair<std::string, T>>& v, std::string_view k) {
    for (const auto& p : v)
      if (p.first == k) return p.second;
    return std::nullopt;
  }
  std::shared_ptr<const detail::ArtifactData> d_;
};

/// Load and validate the artifact in directory `dir` (docs/format.md). Throws fxlower::Error.
Artifact load(const std::string& dir, const LoadOptions& options = {});

/// Format 1.3 (docs/format.md section 5.2): the index range [begin, end) of every dimension of a tensor of `shape`
/// that rank `rank` holds under `placement` (rank = row-major index of the mesh coordinate). "api.range" when rank
/// is outside [0, prod(mesh)).
inline std::vector<std::pair<std::int64_t, std::int64_t>> shard_ranges(const std::vector<std::int64_t>& shape,
                                                                     const Placement& placement, std::int64_t rank) {
  for (std::int64_t m : placement.mesh)  // a loaded placement is valid; one built by hand may not be
    if (m < 1 || m > limits::kMaxMeshDevices)
      detail::raise("api.range", "", "mesh size " + std::to_string(m) + " is outside [1, " +
                                         std::to_string(limits::kMaxMeshDevices) + "]");
  if (placement.mesh.empty() || placement.world() > limits::kMaxMeshDevices)
    detail::raise("api.range", "", "a mesh has 1 to " + std::to_string(limits::kMaxMeshDevices) + " devices");
  const std::int64_t world = placement.world();
  if (rank < 0 || rank >= world)
    detail::raise("api.range", "", "rank " + std::to_string(rank) + " is outside [0, " + std::to_string(world) + ")");
  if (placement.dims.size() != placement.mesh.size())
    detail::raise("api.range", "", std::to_string(placement.dims.size()) + " placement dims for a mesh of " +
                                       std::to_string(placement.mesh.size()) + " dimensions");
  for (const MeshDim& md : placement.dims)
    if (md.kind == MeshDim::Kind::shard && (md.dim < 0 || static_cast<std::size_t>(md.dim) >= shape.size()))
      detail::raise("api.range", "", "shard dim " + std::to_string(md.dim) + " is outside [0, " +
                                         std::to_string(shape.size()) + ") for a tensor of rank " +
                                         std::to_string(shape.size()));
  std::vector<std::int64_t> coord(placement.mesh.size());
  std::int64_t r = rank;
  for (std::size_t i = placement.mesh.size(); i-- > 0;) {
    coord[i] = r % placement.mesh[i];
    r /= placement.mesh[i];
  }
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  for (std::int64_t n : shape) ranges.emplace_back(0, n);
  for (std::size_t i = 0; i < placement.dims.size(); ++i) {
    const MeshDim& md = placement.dims[i];
    if (md.kind != MeshDim::Kind::shard) continue;
    auto& range = ranges[static_cast<std::size_t>(md.dim)];
    const std::int64_t len = range.second - range.first;
    const std::int64_t m = placement.mesh[i];
    const std::int64_t size = len / m + (len % m != 0 ? 1 : 0);  // ceil, without overflow
    const std::int64_t a = range.first;
    // coord * size <= (m - 1) * ceil(len / m) never exceeds len + m; (coord + 1) * size can pass INT64_MAX when len
    // is near it (a dimension of 2^63 - 1 in a tensor with a 0 dimension is valid), so the end is lo + size capped.
    const std::int64_t lo = std::min(coord[i] * size, len);
    range = {a + lo, a + (len - lo <= size ? len : lo + size)};
  }
  return ranges;
}

/// A standalone safetensors file (e.g. inputs given to a runtime), read into owned memory and checked exactly as
/// the loader checks an artifact's tensor files (docs/format.md section 5: header, names, dtypes, shapes, tiling,
/// alignment; a repeated key is safetensors.header).
class SafetensorsFile {
 public:
  struct Entry {
    std::string name;
    DType dtype = DType::F32;
    std::vector<std::int64_t> shape;
    const std::byte* data = nullptr;  // nbytes little-endian bytes, aligned to the item size
    std::size_t nbytes = 0;
  };
  /// The tensors in header order.
  const std::vector<Entry>& entries() const { return entries_; }
  optional_ref<const Entry> find(std::string_view name) const {
    for (const Entry& e : entries_)
      if (e.name == name) return e;
    return std::nullopt;
  }

 private:
  friend SafetensorsFile read_safetensors(const std::string& path);
  std::shared_ptr<std::vector<std::uint64_t>> bytes_;  // 8-byte aligned storage
  std::vector<Entry> entries_;
};

/// Reads and checks the safetensors file at `path` (a regular file; codes as for an artifact's tensor files, plus
/// artifact.missing / artifact.not_regular / io.error for the file itself).
SafetensorsFile read_safetensors(const std::string& path);

// ================================================================================================ implementation

namespace detail {

// ------------------------------------------------------------------------------------------------ UTF-8, names

/// Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing above U+10FFFF.
inline bool utf8_valid(const char* data, std::size_t n) {
  const auto* s = reinterpret_cast<const unsigned char*>(data);
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return false;
    if (n - i < len) return false;
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

/// Section 3: 1 to 1024 bytes, no control character (U+0000-U+001F, U+007F). UTF-8 is checked by the caller's
/// decoder. Returns an empty string when valid, else the reason.
inline std::string name_problem(std::string_view s) {
  if (s.empty()) return "a name is 1 to 1024 bytes, found an empty string";
  if (s.size() > limits::kMaxNameBytes)
    return "a name is 1 to 1024 bytes, found " + std::to_string(s.size()) + " bytes";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return "a name has no control character, found U+00" +
                                      std::string(1, "0123456789ABCDEF"[c >> 4]) + std::string(1, "0123456789ABCDEF"[c & 15]);
  }
  return {};
}

inline std::string short_repr(std::string_view s) {
  std::string q = quote_str(s.substr(0, 80));
  if (s.size() > 80) q += "...";
  return q;
}

/// Python's keyword.kwlist (a placeholder target or keyword argument name must not be one).
inline bool is_python_keyword(std::string_view s) {
  static constexpr const char* kw[] = {"False", "None", "True", "and", "as", "assert", "async", "await", "break",
                                       "class", "continue", "def", "del", "elif", "else", "except", "finally",
                                       "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
                                       "not", "or", "pass", "raise", "return", "try", "while", "with", "yield"};
  for (const char* k : kw)
    if (s == k) return true;
  return false;
}

/// [A-Za-z_][A-Za-z0-9_]* (ASCII identifiers, as fxlower/format/names.py).
inline bool is_ident(std::string_view s) {
  if (s.empty()) return false;
  const auto c0 = static_cast<unsigned char>(s[0]);
  if (!((c0 < 0x80 && std::isalpha(c0)) || c0 == '_')) return false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (!(c < 0x80 && (std::isalnum(c) || c == '_'))) return false;
  }
  return true;
}

inline std::vector<std::string_view> split_dots(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

/// get_attr / call_module targets and graph names (section 3): dotted paths whose components are 1+ bytes of
/// UTF-8 (checked by the decoder) without '.', '"', '\\' or a control character, none starting with "__".
inline bool is_attr_path(std::string_view s) {
  for (std::string_view c : split_dots(s)) {
    if (c.empty() || (c.size() >= 2 && c[0] == '_' && c[1] == '_')) return false;
    for (char ch : c) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x20 || u == 0x7f || ch == '"' || ch == '\\') return false;
    }
  }
  return true;
}

/// One component of decimal digits without leading zeros: 0|[1-9][0-9]*.
inline bool is_decimal_index(std::string_view c) {
  if (c.empty() || (c.size() > 1 && c[0] == '0')) return false;
  for (char ch : c)
    if (ch < '0' || ch > '9') return false;
  return true;
}

/// An AttrDecl name matches a record attribute name: the same components, "*" matching a decimal index.
/// Whether `name` is an instance of the declared attribute name `pattern`, in which each '*' stands for one decimal
/// index (0 or [1-9][0-9]*) and never for a '.' (docs/format.md, ModuleDecl: declared names).
inline bool attr_name_matches(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) return name.empty();
  if (pattern[0] != '*') return !name.empty() && name[0] == pattern[0] && attr_name_matches(pattern.substr(1), name.substr(1));
  if (name.empty() || name[0] < '0' || name[0] > '9') return false;
  if (name[0] == '0') return attr_name_matches(pattern.substr(1), name.substr(1));
  std::size_t k = 1;  // try every length of the index, longest digits run first
  while (k < name.size() && name[k] >= '0' && name[k] <= '9') ++k;
  for (std::size_t len = k; len >= 1; --len)
    if (attr_name_matches(pattern.substr(1), name.substr(len))) return true;
  return false;
}

/// call_method targets: [A-Za-z][A-Za-z0-9_]*.
inline bool is_method_name(std::string_view s) { return !s.empty() && s[0] != '_' && is_ident(s); }

/// call_function targets: a dotted path of identifiers with at least one dot (module.name).
inline bool is_function_name(std::string_view s) {
  if (s.find('.') == std::string_view::npos) return false;
  for (std::string_view c : split_dots(s))
    if (!is_ident(c)) return false;
  return true;
}

/// placeholder targets: an identifier, not a keyword, optionally prefixed by * or ** (variadic inputs).
inline bool is_placeholder_target(std::string_view s) {
  std::size_t stars = 0;
  while (stars < s.size() && stars < 2 && s[stars] == '*') ++stars;
  const std::string_view id = s.substr(stars);
  return is_ident(id) && !is_python_keyword(id);
}

inline bool is_lower_hex(std::string_view s, std::size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// ------------------------------------------------------------------------------------------------ msgpack

/// Node types of the compact msgpack tree.
enum MpType : std::uint8_t { kNil, kBool, kUint, kNint, kF32, kF64, kStr, kBin, kArray, kMap };

/// One msgpack object: 16 bytes. str/bin: n = length, u = byte offset. array/map: n = items/pairs, u = index
/// past the subtree (children follow the node in pre-order; a map's children alternate key, value). Scalars:
/// u = the value's bits (kF32 holds the float widened to double).
struct MpNode {
  std::uint8_t type;
  std::uint32_t n;
  std::uint64_t u;
};

struct MpDoc {
  std::string_view buf;
  std::vector<MpNode> nodes;

  std::uint8_t type(std::uint32_t i) const { return nodes[i].type; }
  std::uint32_t next(std::uint32_t i) const {
    const MpNode& x = nodes[i];
    return (x.type == kArray || x.type == kMap) ? static_cast<std::uint32_t>(x.u) : i + 1;
  }
  std::uint32_t count(std::uint32_t i) const { return nodes[i].n; }
  std::string_view str(std::uint32_t i) const { return buf.substr(nodes[i].u, nodes[i].n); }
  double f(std::uint32_t i) const {
    double d;
    std::memcpy(&d, &nodes[i].u, 8);
    return d;
  }
  bool is_int(std::uint32_t i) const {
    return type(i) == kNint ||
           (type(i) == kUint && nodes[i].u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
  }
  std::int64_t i64(std::uint32_t i) const { return static_cast<std::int64_t>(nodes[i].u); }
  /// Children of an array (or the keys and values of a map, interleaved).
  std::vector<std::uint32_t> kids(std::uint32_t i) const {
    std::vector<std::uint32_t> out;
    const std::uint64_t n = nodes[i].type == kMap ? 2 * std::uint64_t{nodes[i].n} : nodes[i].n;
    out.reserve(static_cast<std::size_t>(n));  // n objects exist: the tree holds them
    std::uint32_t c = i + 1;
    for (std::uint64_t k = 0; k < n; ++k) {
      out.push_back(c);
      c = next(c);
    }
    return out;
  }
  /// The value of key `k` in map i, or UINT32_MAX.
  std::uint32_t get(std::uint32_t i, std::string_view k) const {
    std::uint32_t c = i + 1;
    for (std::uint32_t p = 0; p < nodes[i].n; ++p) {
      const std::uint32_t v = next(c);
      if (type(c) == kStr && str(c) == k) return v;
      c = next(v);
    }
    return UINT32_MAX;
  }
};

/// Python-style article + kind, as fxlower.format.values._kind: "nil", "a bool", "an int", ...
inline std::string mp_kind(const MpDoc& d, std::uint32_t i) {
  switch (d.type(i)) {
    case kNil: return "nil";
    case kBool: return "a bool";
    case kUint: return d.is_int(i) ? "an int" : "an int above INT64_MAX";
    case kNint: return "an int";
    case kF32: case kF64: return "a float";
    case kStr: return "a str";
    case kBin: return "bin";
    case kArray: return "an array";
    default: return "a map";
  }
}

/// First pass: validates everything section 2 asks of the bytes and counts the objects. Allocates only the
/// keys of the maps being parsed (never from a length field).
struct MpCheckVisitor {
  const char* base = nullptr;
  std::size_t size = 0;
  std::size_t count = 0;
  int depth = 0;
  bool failed = false;
  const char* code = "manifest.decode";
  std::string msg;
  bool expect_key = false;
  struct Key {
    std::uint8_t type;
    std::size_t off;
    std::uint32_t len;
  };
  std::vector<Key> keys;
  std::vector<std::size_t> frames;

  bool fail(const char* c, std::string m) {
    if (!failed) {
      failed = true;
      code = c;
      msg = std::move(m);
    }
    return false;
  }
  void note(std::uint8_t t, const char* p = nullptr, std::uint32_t len = 0) {
    ++count;
    if (expect_key) {
      expect_key = false;
      keys.push_back(Key{t, p ? static_cast<std::size_t>(p - base) : 0, len});
    }
  }
  bool visit_nil() { note(kNil); return true; }
  bool visit_boolean(bool) { note(kBool); return true; }
  bool visit_positive_integer(std::uint64_t) { note(kUint); return true; }
  bool visit_negative_integer(std::int64_t) { note(kNint); return true; }
  bool visit_float32(float) { note(kF32); return true; }
  bool visit_float64(double) { note(kF64); return true; }
  bool visit_str(const char* p, std::uint32_t n) {
    if (!utf8_valid(p, n))
      return fail("manifest.decode", "invalid UTF-8 in the string at byte " + std::to_string(p - base));
    note(kStr, p, n);
    return true;
  }
  bool visit_bin(const char* p, std::uint32_t n) { note(kBin, p, n); return true; }
  bool visit_ext(const char* p, std::uint32_t) {
    return fail("manifest.decode", "extension type (ext, fixext or timestamp) near byte " + std::to_string(p - base) +
                                       "; format 1 has none");
  }
  bool open(std::uint8_t t, std::uint32_t n) {
    note(t);
    if (++depth > limits::kMaxMsgpackDepth)
      return fail("manifest.decode", "containers nest deeper than 1024");
    if (n > size)
      return fail("manifest.decode", "a container claims " + std::to_string(n) + " items, more than the " +
                                         std::to_string(size) + " bytes of the file");
    return true;
  }
  bool start_array(std::uint32_t n) { return open(kArray, n); }
  bool start_array_item() { return true; }
  bool end_array_item() { return true; }
  bool end_array() { --depth; return true; }
  bool start_map(std::uint32_t n) {
    if (!open(kMap, n)) return false;
    frames.push_back(keys.size());
    return true;
  }
  bool start_map_key() { expect_key = true; return true; }
  bool end_map_key() { return true; }
  bool start_map_value() { return true; }
  bool end_map_value() { return true; }
  bool end_map() {
    --depth;
    const std::size_t b = frames.back();
    frames.pop_back();
    std::unordered_set<std::string_view> seen;
    for (std::size_t i = b; i < keys.size(); ++i) {
      const Key& k = keys[i];
      if (k.type != kStr) {
        static const char* names[] = {"nil", "a bool", "an int", "an int", "a float", "a float", "a str", "bin",
                                      "an array", "a map"};
        return fail("manifest.key_type", std::string("a map key is ") + names[k.type] + ", not a str");
      }
      const std::string_view s(base + k.off, k.len);
      if (!seen.insert(s).second)
        return fail("manifest.duplicate_key", "the key " + short_repr(s) + " appears twice in one map (byte " +
                                                  std::to_string(k.off) + ")");
    }
    keys.resize(b);
    return true;
  }
  void parse_error(std::size_t, std::size_t error_offset) {
    fail("manifest.decode", "invalid byte at offset " + std::to_string(error_offset) + " (e.g. 0xc1)");
  }
  void insufficient_bytes(std::size_t, std::size_t) {
    fail("manifest.decode", "truncated: the data ends inside an object");
  }
  bool referenced() const { return false; }
  void set_referenced(bool) {}
};

/// Second pass: builds the tree into a vector reserved to the count of the first pass.
struct MpBuildVisitor {
  const char* base = nullptr;
  MpDoc* doc = nullptr;
  std::vector<std::uint32_t> open;

  void push(std::uint8_t t, std::uint32_t n, std::uint64_t u) { doc->nodes.push_back(MpNode{t, n, u}); }
  static std::uint64_t bits(double d) {
    std::uint64_t u;
    std::memcpy(&u, &d, 8);
    return u;
  }
  bool visit_nil() { push(kNil, 0, 0); return true; }
  bool visit_boolean(bool b) { push(kBool, 0, b ? 1 : 0); return true; }
  bool visit_positive_integer(std::uint64_t v) { push(kUint, 0, v); return true; }
  bool visit_negative_integer(std::int64_t v) { push(kNint, 0, static_cast<std::uint64_t>(v)); return true; }
  bool visit_float32(float v) { push(kF32, 0, bits(static_cast<double>(v))); return true; }
  bool visit_float64(double v) { push(kF64, 0, bits(v)); return true; }
  bool visit_str(const char* p, std::uint32_t n) { push(kStr, n, static_cast<std::uint64_t>(p - base)); return true; }
  bool visit_bin(const char* p, std::uint32_t n) { push(kBin, n, static_cast<std::uint64_t>(p - base)); return true; }
  bool visit_ext(const char*, std::uint32_t) { return false; }
  bool start_array(std::uint32_t n) {
    open.push_back(static_cast<std::uint32_t>(doc->nodes.size()));
    push(kArray, n, 0);
    return true;
  }
  bool start_array_item() { return true; }
  bool end_array_item() { return true; }
  bool end_array() { return close(); }
  bool start_map(std::uint32_t n) {
    open.push_back(static_cast<std::uint32_t>(doc->nodes.size()));
    push(kMap, n, 0);
    return true;
  }
  bool start_map_key() { return true; }
  bool end_map_key() { return true; }
  bool start_map_value() { return true; }
  bool end_map_value() { return true; }
  bool end_map() { return close(); }
  bool close() {
    doc->nodes[open.back()].u = doc->nodes.size();
    open.pop_back();
    return true;
  }
  void parse_error(std::size_t, std::size_t) {}
  void insufficient_bytes(std::size_t, std::size_t) {}
  bool referenced() const { return false; }
  void set_referenced(bool) {}
};

/// Parse one msgpack object under docs/format.md section 2 (manifest.decode, manifest.key_type,
/// manifest.duplicate_key). `file` names the source in errors.
inline MpDoc parse_msgpack(std::string_view buf, const std::string& file = kManifestFile) {
  if (buf.empty()) raise("manifest.decode", file, "the file is empty");
  if (buf.size() >= UINT32_MAX) raise("manifest.size", file, "the data exceeds 4 GiB");
  MpCheckVisitor cv;
  cv.base = buf.data();
  cv.size = buf.size();
  std::size_t off = 0;
  msgpack::parse_return ret = msgpack::PARSE_PARSE_ERROR;
#if FXLOWER_HAS_EXCEPTIONS
  try {
    ret = msgpack::v3::detail::parse_imp(buf.data(), buf.size(), off, cv);
  } catch (const std::exception& e) {
    cv.fail("manifest.decode", std::string("malformed MessagePack (") + e.what() + ")");
  }
#else
  ret = msgpack::v3::detail::parse_imp(buf.data(), buf.size(), off, cv);
#endif
  if (cv.failed) raise(cv.code, file, cv.msg);
  if (ret == msgpack::PARSE_EXTRA_BYTES)
    raise("manifest.decode", file, "trailing bytes after the object, from byte " + std::to_string(off) + " of " +
                                       std::to_string(buf.size()));
  if (ret != msgpack::PARSE_SUCCESS) raise("manifest.decode", file, "malformed MessagePack");
  MpDoc doc;
  doc.buf = buf;
  doc.nodes.reserve(cv.count);
  MpBuildVisitor bv;
  bv.base = buf.data();
  bv.doc = &doc;
  off = 0;
  msgpack::v3::detail::parse_imp(buf.data(), buf.size(), off, bv);
  return doc;
}

/// Encode the subtree at i as writers do (section 2): shortest forms, floats as float64.
inline void mp_encode(const MpDoc& d, std::uint32_t i, std::string& out) {
  auto be = [&out](std::uint64_t v, int bytes) {
    for (int k = bytes - 1; k >= 0; --k) out += static_cast<char>((v >> (8 * k)) & 0xff);
  };
  auto header = [&](std::uint64_t n, unsigned fix, unsigned fixmax, unsigned c16, unsigned c32, unsigned c8 = 0) {
    if (n <= fixmax) out += static_cast<char>(fix | n);
    else if (c8 && n <= 0xff) { out += static_cast<char>(c8); be(n, 1); }
    else if (n <= 0xffff) { out += static_cast<char>(c16); be(n, 2); }
    else { out += static_cast<char>(c32); be(n, 4); }
  };
  const MpNode& x = d.nodes[i];
  switch (x.type) {
    case kNil: out += '\xc0'; break;
    case kBool: out += x.u ? '\xc3' : '\xc2'; break;
    case kUint: case kNint: {
      const auto v = static_cast<std::int64_t>(x.u);
      if (x.type == kUint || v >= 0) {
        const std::uint64_t u = x.u;
        if (u <= 0x7f) out += static_cast<char>(u);
        else if (u <= 0xff) { out += '\xcc'; be(u, 1); }
        else if (u <= 0xffff) { out += '\xcd'; be(u, 2); }
        else if (u <= 0xffffffffu) { out += '\xce'; be(u, 4); }
        else { out += '\xcf'; be(u, 8); }
      } else if (v >= -32) {
        out += static_cast<char>(static_cast<std::uint8_t>(v));
      } else if (v >= -128) { out += '\xd0'; be(static_cast<std::uint64_t>(v), 1); }
      else if (v >= -32768) { out += '\xd1'; be(static_cast<std::uint64_t>(v), 2); }
      else if (v >= -2147483648LL) { out += '\xd2'; be(static_cast<std::uint64_t>(v), 4); }
      else { out += '\xd3'; be(static_cast<std::uint64_t>(v), 8); }
      break;
    }
    case kF32: case kF64: out += '\xcb'; be(x.u, 8); break;
    case kStr: header(x.n, 0xa0, 31, 0xda, 0xdb, 0xd9); out.append(d.str(i)); break;
    case kBin:
      if (x.n <= 0xff) { out += '\xc4'; be(x.n, 1); }
      else if (x.n <= 0xffff) { out += '\xc5'; be(x.n, 2); }
      else { out += '\xc6'; be(x.n, 4); }
      out.append(d.str(i));
      break;
    case kArray:
      header(x.n, 0x90, 15, 0xdc, 0xdd);
      for (std::uint32_t c : d.kids(i)) mp_encode(d, c, out);
      break;
    case kMap:
      header(x.n, 0x80, 15, 0xde, 0xdf);
      for (std::uint32_t c : d.kids(i)) mp_encode(d, c, out);
      break;
  }
}

inline std::string base64(std::string_view s) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(s[i])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(s[i + 1])} << 8) |
                            std::uint32_t{static_cast<unsigned char>(s[i + 2])};
    out += tbl[v >> 18]; out += tbl[(v >> 12) & 63]; out += tbl[(v >> 6) & 63]; out += tbl[v & 63];
  }
  if (i + 1 == s.size()) {
    const std::uint32_t v = std::uint32_t{static_cast<unsigned char>(s[i])} << 16;
    out += tbl[v >> 18]; out += tbl[(v >> 12) & 63]; out += "==";
  } else if (i + 2 == s.size()) {
    const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(s[i])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(s[i + 1])} << 8);
    out += tbl[v >> 18]; out += tbl[(v >> 12) & 63]; out += tbl[(v >> 6) & 63]; out += '=';
  }
  return out;
}

/// The subtree at i as JSON (see Artifact::manifest_json). Recursion is bounded by the 1024 depth cap.
inline nlohmann::ordered_json mp_to_json(const MpDoc& d, std::uint32_t i) {
  switch (d.type(i)) {
    case kNil: return nullptr;
    case kBool: return d.nodes[i].u != 0;
    case kUint: return d.nodes[i].u;
    case kNint: return d.i64(i);
    case kF32: case kF64: {
      const double v = d.f(i);
      if (std::isnan(v)) return "nan";
      if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
      return v;
    }
    case kStr: return std::string(d.str(i));
    case kBin: return base64(d.str(i));
    case kArray: {
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (std::uint32_t c : d.kids(i)) a.push_back(mp_to_json(d, c));
      return a;
    }
    default: {
      nlohmann::ordered_json o = nlohmann::ordered_json::object();
      const auto k = d.kids(i);
      for (std::size_t p = 0; p + 1 < k.size(); p += 2) o[std::string(d.str(k[p]))] = mp_to_json(d, k[p + 1]);
      return o;
    }
  }
}

// ------------------------------------------------------------------------------------------------ paths

/// A field path built on the stack, rendered only when an error is raised.
struct Path {
  enum Kind : std::uint8_t { kRoot, kField, kIndex, kStrKey, kIntKey };
  const Path* parent = nullptr;
  Kind kind = kRoot;
  std::string_view name;
  std::int64_t index = 0;

  Path field(std::string_view f) const { return Path{this, kField, f, 0}; }
  Path item(std::size_t i) const { return Path{this, kIndex, {}, static_cast<std::int64_t>(i)}; }
  Path key(std::string_view k) const { return Path{this, kStrKey, k, 0}; }
  Path int_key(std::int64_t k) const { return Path{this, kIntKey, {}, k}; }
  std::string render() const {
    std::string out;
    render_into(out);
    return out;
  }
  void render_into(std::string& out) const {
    if (kind == kRoot) return;
    parent->render_into(out);
    switch (kind) {
      case kField:
        if (!out.empty()) out += '.';
        out += name;
        break;
      case kIndex: out += '[' + std::to_string(index) + ']'; break;
      case kStrKey: out += "['" + std::string(name) + "']"; break;
      case kIntKey: out += '[' + std::to_string(index) + ']'; break;
      default: break;
    }
  }
};

inline std::string where_of(const Path& p) {
  std::string r = p.render();
  return r.empty() ? std::string(kManifestFile) : std::string(kManifestFile) + ": " + r;
}
[[noreturn]] inline void fail(const char* code, const Path& p, std::string msg) {
  raise(code, where_of(p), std::move(msg));
}

// ------------------------------------------------------------------------------------------------ files

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

inline std::string errno_text(int e) { return std::string(std::strerror(e)); }

/// Open the artifact directory itself: it must exist and be a directory, not a symlink to one.
inline Fd open_directory(const std::string& dir) {
  std::string p = dir;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.empty()) raise("artifact.missing", dir, "empty directory path");
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) raise("artifact.missing", dir, "the artifact directory does not exist");
    raise("io.error", dir, "cannot stat the artifact directory: " + errno_text(e));
  }
  if (S_ISLNK(st.st_mode)) raise("artifact.not_regular", dir, "the artifact directory is a symbolic link");
  if (!S_ISDIR(st.st_mode)) raise("artifact.not_regular", dir, "the artifact path is not a directory");
  Fd fd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) {
    const int e = errno;
    if (e == ENOENT) raise("artifact.missing", dir, "the artifact directory does not exist");
    if (e == ELOOP || e == ENOTDIR) raise("artifact.not_regular", dir, "the artifact directory is not a directory");
    raise("io.error", dir, "cannot open the artifact directory: " + errno_text(e));
  }
  struct stat st2 {};
  if (::fstat(fd.get(), &st2) != 0 || !S_ISDIR(st2.st_mode) || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev)
    raise("artifact.not_regular", dir, "the artifact directory changed while being opened");
  return fd;
}

/// Open a member: it must be a regular file (no symlink, directory, FIFO, socket, device). Never blocks on a
/// FIFO: the type is checked with fstatat before opening, and O_NONBLOCK covers a race.
inline Fd open_member(int dirfd, const std::string& name, struct stat& out) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    const int e = errno;
    if (e == ENOENT) raise("artifact.missing", name, "the file does not exist in the artifact directory");
    raise("io.error", name, "cannot stat: " + errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) {
    const char* what = S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISDIR(st.st_mode) ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISSOCK(st.st_mode) ? "a socket" : "a device";
    raise("artifact.not_regular", name, std::string("is ") + what + ", not a regular file");
  }
  Fd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) {
    const int e = errno;
    if (e == ENOENT) raise("artifact.missing", name, "the file does not exist in the artifact directory");
    if (e == ELOOP) raise("artifact.not_regular", name, "is a symbolic link, not a regular file");
    raise("io.error", name, "cannot open: " + errno_text(e));
  }
  if (::fstat(fd.get(), &out) != 0 || !S_ISREG(out.st_mode) || out.st_ino != st.st_ino || out.st_dev != st.st_dev)
    raise("artifact.not_regular", name, "changed while being opened");
  return fd;
}

inline void read_exact(int fd, char* dst, std::size_t n, const std::string& name) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, dst + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      raise("io.error", name, "read failed: " + errno_text(errno));
    }
    if (r == 0) raise("io.error", name, "the file shrank while being read");
    got += static_cast<std::size_t>(r);
  }
}

/// Names of the directory's entries (not "." and "..").
inline std::vector<std::string> list_directory(int dirfd, const std::string& dir) {
  const int dup = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) raise("io.error", dir, "cannot list the directory: " + errno_text(errno));
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    raise("io.error", dir, "cannot list the directory: " + errno_text(errno));
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// ------------------------------------------------------------------------------------------------ safetensors

/// Nesting depth of a JSON text, outside strings.
inline int json_depth(std::string_view s) {
  int depth = 0, maxd = 0;
  bool in_str = false, esc = false;
  for (char c : s) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '{' || c == '[') {
      maxd = std::max(maxd, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return maxd;
}

/// A JSON number where an int is expected: is it an integer, is it in [0, INT64_MAX], and its value.
struct JsonInt {
  bool is_int = false;
  bool in_range = false;  // 0 <= v <= INT64_MAX
  std::uint64_t v = 0;
};

/// What the SAX pass records of one top-level key of a safetensors header: just enough to run the checks of
/// fxlower/io/tensorfile.py in its order, whatever JSON the value holds. Memory grows with the entries present.
struct StRaw {
  std::string key;
  bool is_object = false;   // the value is a JSON object
  bool meta_ok = true;      // __metadata__: every value is a string
  std::uint8_t fields = 0;  // keys seen: dtype 1, shape 2, data_offsets 4, anything else 8
  bool dtype_is_str = false;
  std::string dtype;
  bool shape_is_array = false;
  std::size_t rank = 0;
  std::vector<JsonInt> dims;  // the first 65
  bool offs_is_array = false;
  std::size_t noffs = 0;
  JsonInt offs[2];
};

/// SAX pass over a safetensors header: rejects what Python's json.loads with a duplicate-key hook rejects
/// (syntax, duplicate keys in any object, NaN/Infinity) and records each top-level entry (StRaw).
class StSax {
 public:
  using json = nlohmann::json;
  std::vector<StRaw> entries;
  std::string error;

  bool null() { return scalar(JsonInt{}, false, nullptr); }
  bool boolean(bool) { return scalar(JsonInt{}, false, nullptr); }
  bool number_integer(json::number_integer_t v) {
    JsonInt n;
    n.is_int = true;
    n.in_range = v >= 0;
    n.v = v >= 0 ? static_cast<std::uint64_t>(v) : 0;
    return scalar(n, false, nullptr);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    JsonInt n;
    n.is_int = true;
    n.in_range = v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    n.v = v;
    return scalar(n, false, nullptr);
  }
  bool number_float(json::number_float_t, const json::string_t& s) {
    // Integer syntax beyond 64 bits is still an int to Python's json (out of range here).
    JsonInt n;
    n.is_int = s.find_first_of(".eE") == std::string::npos;
    return scalar(n, false, nullptr);
  }
  bool string(json::string_t& s) { return scalar(JsonInt{}, true, &s); }
  bool binary(json::binary_t&) { return fail("unexpected binary value"); }
  bool start_object(std::size_t) {
    value_event(kObject);
    keys_.emplace_back();
    kinds_.push_back(kObject);
    return true;
  }
  bool end_object() {
    keys_.pop_back();
    return close();
  }
  bool start_array(std::size_t) {
    value_event(kArray);
    kinds_.push_back(kArray);
    return true;
  }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    if (!keys_.back().insert(k).second) return fail("the header has the key " + short_repr(k) + " twice");
    if (kinds_.size() == 1) {
      entries.emplace_back();
      entries.back().key = k;
    } else if (kinds_.size() == 2 && entries.back().is_object) {
      field_ = k == "dtype" ? 1 : k == "shape" ? 2 : k == "data_offsets" ? 4 : 8;
      entries.back().fields |= field_;
    }
    return true;
  }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& e) {
    return fail("the header is not one valid UTF-8 JSON object followed by spaces (byte " + std::to_string(pos) +
                ": " + e.what() + ")");
  }

 private:
  enum Kind : std::uint8_t { kObject, kArray, kScalar };
  bool fail(std::string m) {
    if (error.empty()) error = std::move(m);
    return false;
  }
  bool close() {
    kinds_.pop_back();
    if (kinds_.size() == 2) array_field_ = 0;
    return true;
  }
  bool scalar(const JsonInt& n, bool is_str, const std::string* s) {
    value_event(kScalar, n, is_str, s);
    return true;
  }
  /// A value starts (a scalar, or a container about to open) at the current depth.
  void value_event(Kind kind, const JsonInt& n = {}, bool is_str = false, const std::string* s = nullptr) {
    const std::size_t depth = kinds_.size();
    if (depth == 1) {  // the value of a top-level key
      StRaw& e = entries.back();
      e.is_object = kind == kObject;
      if (kind != kObject) e.meta_ok = false;
    } else if (depth == 2 && kinds_[1] == kObject) {  // the value of a field of an entry (or of __metadata__)
      StRaw& e = entries.back();
      if (!is_str) e.meta_ok = false;
      if (field_ == 1) {
        e.dtype_is_str = is_str;
        if (is_str) e.dtype = *s;
      } else if (field_ == 2) {
        e.shape_is_array = kind == kArray;
        if (kind == kArray) array_field_ = 2;
      } else if (field_ == 4) {
        e.offs_is_array = kind == kArray;
        if (kind == kArray) array_field_ = 4;
      }
    } else if (depth == 3 && array_field_ != 0) {  // an element of shape or data_offsets
      StRaw& e = entries.back();
      if (array_field_ == 2) {
        if (e.rank++ <= limits::kMaxRank) e.dims.push_back(kind == kScalar ? n : JsonInt{});
      } else {
        if (e.noffs < 2) e.offs[e.noffs] = kind == kScalar ? n : JsonInt{};
        ++e.noffs;
      }
    }
  }
  std::vector<std::unordered_set<std::string>> keys_;
  std::vector<Kind> kinds_;
  std::uint8_t field_ = 0;
  std::uint8_t array_field_ = 0;
};

/// One tensor of a safetensors file, as checked.
struct StEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // relative to the data section
};

struct StFile {
  std::uint64_t header_len = 0;
  std::vector<StEntry> entries;  // header order
};

/// Checks a tensor shape as fxlower.format.values.check_shape: rank <= 64, dims in [0, INT64_MAX], and
/// elements * itemsize <= INT64_MAX, with checked arithmetic ("tensor.shape"). Returns the element count.
inline std::int64_t check_shape_dims(const std::vector<std::int64_t>& shape, std::size_t itemsize,
                                     const std::function<void(const std::string&)>& bad) {
  if (shape.size() > limits::kMaxRank) bad("rank " + std::to_string(shape.size()) + " exceeds the maximum 64");
  bool zero = false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0)
      bad("dimension " + std::to_string(i) + " is " + std::to_string(shape[i]) + "; dimensions are non-negative int64s");
    zero |= shape[i] == 0;
  }
  if (zero) return 0;
  const std::int64_t cap = std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(itemsize);
  std::int64_t count = 1;
  for (std::int64_t d : shape) {
    if (count > cap / d) bad("the shape has more elements than a 64-bit byte size can hold");
    count *= d;
  }
  return count;
}

/// Checks a safetensors file (docs/format.md section 5) in the order of fxlower/io/tensorfile.py read_header:
/// the header bytes and JSON (safetensors.header), the data section's alignment (safetensors.layout), then each
/// entry in header order: __metadata__ (header), the key as a name (schema.name), exactly dtype/shape/
/// data_offsets (header), dtype (tensor.dtype), shape (tensor.shape), offsets (header), byte size (layout);
/// then the tiling of the data section sorted by (begin, end) (layout).
inline StFile check_safetensors(const std::byte* data, std::uint64_t size, const std::string& file) {
  const auto header = [&file](const std::string& m) { raise("safetensors.header", file, m); };
  const auto layout = [&file](const std::string& m) { raise("safetensors.layout", file, m); };
  if (size < 8) header("the file has " + std::to_string(size) + " bytes, fewer than the 8 of the header length");
  const std::uint64_t n = load_le<std::uint64_t>(data);
  if (n > limits::kMaxSafetensorsHeader || n > size - 8)
    header("the header length " + std::to_string(n) + " exceeds 100,000,000 or the " + std::to_string(size - 8) +
           " bytes after it");
  const std::string_view h(reinterpret_cast<const char*>(data) + 8, static_cast<std::size_t>(n));
  if (h.empty() || h[0] != '{') header("the header does not start with '{' (leading whitespace or not a JSON object)");
  std::size_t last = h.size();
  while (last > 0 && h[last - 1] == ' ') --last;
  const std::string_view body = h.substr(0, last);
  if (json_depth(body) > limits::kMaxJsonDepth) header("the header's JSON nests deeper than 128");
  // Spaces are the only padding after the object (section 5); JSON whitespace inside it is fine.
  if (body.back() != '}') header("the header is not one JSON object followed only by spaces");
  StSax sax;
  const bool ok = nlohmann::json::sax_parse(body.data(), body.data() + body.size(), &sax,
                                            nlohmann::json::input_format_t::json, true, false);
  if (!ok || !sax.error.empty()) header(sax.error.empty() ? std::string("invalid JSON header") : sax.error);

  StFile out;
  out.header_len = n;
  const std::uint64_t start = 8 + n;
  if (start % 8 != 0) layout("the data section starts at byte " + std::to_string(start) + ", not a multiple of 8");
  const std::uint64_t max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  for (const StRaw& r : sax.entries) {
    const std::string t = "tensor " + short_repr(r.key);
    if (r.key == "__metadata__") {
      if (!r.is_object || !r.meta_ok) header("__metadata__ is not a map of str to str");
      continue;
    }
    const std::string why = name_problem(r.key);
    if (!why.empty()) raise("schema.name", file + ": key", why);
    if (!r.is_object || r.fields != 7) header(t + " must have exactly dtype, shape and data_offsets");
    const auto code = r.dtype_is_str ? dtype_from_name(r.dtype) : std::nullopt;
    if (!code || !is_storage_dtype(*code))
      raise("tensor.dtype", file, t + " has unknown dtype " + (r.dtype_is_str ? short_repr(r.dtype) : "(not a str)"));
    const auto shape_bad = [&](const std::string& m) { raise("tensor.shape", file + ": " + t, m); };
    if (!r.shape_is_array) shape_bad("a shape is an array of ints");
    if (r.rank > limits::kMaxRank) shape_bad("rank " + std::to_string(r.rank) + " exceeds the maximum 64");
    StEntry e;
    e.name = r.key;
    e.dtype = *code;
    for (std::size_t i = 0; i < r.dims.size(); ++i) {
      if (!r.dims[i].is_int || !r.dims[i].in_range)
        shape_bad("dimension " + std::to_string(i) + " is not an int in [0, INT64_MAX]");
      e.shape.push_back(static_cast<std::int64_t>(r.dims[i].v));
    }
    const std::uint64_t item = dtype_itemsize(e.dtype);
    const std::int64_t count = check_shape_dims(e.shape, item, shape_bad);
    if (!r.offs_is_array || r.noffs != 2 || !r.offs[0].is_int || !r.offs[1].is_int || !r.offs[0].in_range ||
        !r.offs[1].in_range || r.offs[0].v > r.offs[1].v || r.offs[1].v > max)
      header(t + " data_offsets is not [begin, end] with 0 <= begin <= end");
    e.begin = r.offs[0].v;
    e.end = r.offs[1].v;
    const std::uint64_t bytes = static_cast<std::uint64_t>(count) * item;  // <= INT64_MAX: checked above
    if (e.end - e.begin != bytes)
      layout(t + " spans " + std::to_string(e.end - e.begin) + " bytes but its dtype and shape need " + std::to_string(bytes));
    out.entries.push_back(std::move(e));
  }
  std::vector<std::size_t> order(out.entries.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const StEntry &x = out.entries[a], &y = out.entries[b];
    return x.begin != y.begin ? x.begin < y.begin : (x.end != y.end ? x.end < y.end : a < b);
  });
  std::uint64_t pos = 0;  // relative to the data section
  for (std::size_t i : order) {
    const StEntry& e = out.entries[i];
    const std::string t = "tensor " + short_repr(e.name);
    if (e.begin != pos)
      layout(t + " starts at data offset " + std::to_string(e.begin) + ", expected " + std::to_string(pos) +
             " (tensors tile the data section with no gap or overlap)");
    const std::uint64_t item = dtype_itemsize(e.dtype);
    if ((start + e.begin) % item != 0)
      layout(t + " starts at file offset " + std::to_string(start + e.begin) + ", not a multiple of its item size " +
             std::to_string(item));
    pos = e.end;
  }
  if (pos != size - start)
    layout("the tensors end at byte " + std::to_string(start + pos) + " but the file has " + std::to_string(size) +
           " bytes (truncated or trailing data)");
  return out;
}

// ------------------------------------------------------------------------------------------------ the loader

/// The fields of one schema object, checked like fxlower.format.schema.from_obj: a map, no unknown key (but x-*);
/// get(i) raises schema.missing_field when the i-th declared field is absent.
class Fields {
 public:
  Fields(const MpDoc& d, std::uint32_t i, const Path& p, const char* cls, std::initializer_list<const char*> names)
      : path_(p), cls_(cls), names_(names), idx_(names.size(), UINT32_MAX) {
    if (d.type(i) != kMap) fail("schema.type", p, std::string("expected a map (") + cls + "), found " + mp_kind(d, i));
    const auto k = d.kids(i);
    for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
      const std::string_view key = d.str(k[a]);
      bool known = false;
      for (std::size_t f = 0; f < names_.size(); ++f)
        if (key == names_[f]) {
          idx_[f] = k[a + 1];
          known = true;
        }
      if (!known && key.substr(0, 2) != "x-") {
        std::vector<std::string> sorted(names_.begin(), names_.end());
        std::sort(sorted.begin(), sorted.end());
        std::string list;
        for (const auto& s : sorted) list += (list.empty() ? "" : ", ") + s;
        fail("schema.unknown_field", p, "unknown field " + short_repr(key) + " in " + cls + "; expected [" + list +
                                            "] (extension fields start with 'x-')");
      }
    }
  }
  /// The field's node, or UINT32_MAX when absent.
  std::uint32_t find(std::size_t f) const { return idx_[f]; }
  std::uint32_t get(std::size_t f) const {
    if (idx_[f] == UINT32_MAX)
      fail("schema.missing_field", path_, std::string(cls_) + " requires the field '" + names_[f] + "'");
    return idx_[f];
  }

 private:
  const Path& path_;
  const char* cls_;
  std::vector<const char*> names_;
  std::vector<std::uint32_t> idx_;
};

/// Loads an artifact. The steps and their order follow docs/format.md section 10 as the Python loader
/// (fxlower/io/loading.py) implements it, so that both report the same first failure; docs/cpp.md lists them.
class Loader {
 public:
  Loader(std::string dir, LoadOptions opts) : opts_(opts), a_(std::make_shared<ArtifactData>()) {
    a_->directory = std::move(dir);
  }

  Artifact run() {
    // The directory and the manifest member.
    dirfd_ = open_directory(a_->directory);
    struct stat st {};
    Fd mf = open_member(dirfd_.get(), kManifestFile, st);
    // The manifest's size, then its bytes.
    if (static_cast<std::uint64_t>(st.st_size) > limits::kMaxManifestBytes)
      raise("manifest.size", kManifestFile, "the manifest has " + std::to_string(st.st_size) + " bytes, more than 1 GiB");
    a_->manifest.resize(static_cast<std::size_t>(st.st_size));
    read_exact(mf.get(), a_->manifest.data(), a_->manifest.size(), kManifestFile);
    mf.reset();
    doc_ = parse_msgpack(a_->manifest);
    check_format();
    schema();
    file_list();
    tensor_table();
    for (std::size_t i = 0; i < a_->tensors.size(); ++i) tensors_by_file_[a_->tensors[i].file].push_back(i);
    for (std::size_t f = 0; f < a_->files.size(); ++f) tensor_file(f);
    graphs();
    if (!a_->graphs.empty()) signature();
    core_view();
    golden();
    digest();
    Artifact art;
    art.d_ = a_;
    return art;
  }

 private:
  struct NodeRaw {
    std::uint32_t op = 0, args = 0, kwargs = 0, meta = 0, attrs = UINT32_MAX, graph = 0, overload = UINT32_MAX;
    std::int64_t origin_graph = 0;  // origin.graph as written (checked at the core step)
  };

  // ---------------------------------------------------------------------------------------------- format
  void check_format() {
    if (doc_.type(0) != kMap)
      raise("format.identifier", kManifestFile, "the manifest is " + mp_kind(doc_, 0) + ", not a map: not an fxlower artifact");
    const std::uint32_t f = doc_.get(0, "format");
    if (f == UINT32_MAX) raise("format.identifier", kManifestFile, "no 'format' field: not an fxlower artifact");
    if (doc_.type(f) != kStr || doc_.str(f) != kFormatId)
      raise("format.identifier", std::string(kManifestFile) + ": format",
            "expected \"fxlower\", found " + (doc_.type(f) == kStr ? short_repr(doc_.str(f)) : mp_kind(doc_, f)));
    const std::uint32_t v = doc_.get(0, "format_version");
    const std::string here = std::string(kManifestFile) + ": format_version";
    const std::string mine = std::to_string(kFormatMajor) + "." + std::to_string(kFormatMinor);
    if (v == UINT32_MAX) raise("format.version", kManifestFile, "no 'format_version' field; this reader supports " + mine);
    if (doc_.type(v) != kArray || doc_.count(v) != 2 || !doc_.is_int(v + 1) || !doc_.is_int(doc_.next(v + 1)) ||
        doc_.i64(v + 1) < 0 || doc_.i64(doc_.next(v + 1)) < 0)
      raise("format.version", here, "expected [major, minor], two non-negative ints; this reader supports " + mine);
    const std::int64_t major = doc_.i64(v + 1), minor = doc_.i64(doc_.next(v + 1));
    const std::string theirs = std::to_string(major) + "." + std::to_string(minor);
    if (major != kFormatMajor)
      raise("format.version", here, "the file has format version " + theirs + "; this reader supports " + mine +
                                        " (major " + std::to_string(kFormatMajor) + " only)");
    if (minor > kFormatMinor)
      raise("format.version", here, "the file has format version " + theirs + ", newer than this reader's " + mine +
                                        "; use a reader of " + theirs);
    a_->format_major = major;
    a_->format_minor = minor;
  }

  // ---------------------------------------------------------------------------------------------- schema
  std::string get_str(std::uint32_t i, const Path& p) const {
    if (doc_.type(i) != kStr) fail("schema.type", p, "expected a str, found " + mp_kind(doc_, i));
    return std::string(doc_.str(i));
  }
  std::int64_t get_int(std::uint32_t i, const Path& p) const {
    if (!doc_.is_int(i)) fail("schema.type", p, "expected an int64, found " + mp_kind(doc_, i));
    return doc_.i64(i);
  }
  double get_float(std::uint32_t i, const Path& p) const {
    if (doc_.type(i) != kF32 && doc_.type(i) != kF64) fail("schema.type", p, "expected a float, found " + mp_kind(doc_, i));
    return doc_.f(i);
  }
  std::vector<std::uint32_t> get_array(std::uint32_t i, const Path& p) const {
    if (doc_.type(i) != kArray) fail("schema.type", p, "expected an array, found " + mp_kind(doc_, i));
    return doc_.kids(i);
  }
  void need_map(std::uint32_t i, const Path& p) const {
    if (doc_.type(i) != kMap) fail("schema.type", p, "expected a map, found " + mp_kind(doc_, i));
  }
  /// Each element of the array at `i` as an object of class `cls`: fn(its Fields, its path), in order.
  template <class F>
  void each_object(std::uint32_t i, const Path& p, const char* cls, std::initializer_list<const char*> names,
                   F&& fn) const {
    const auto k = get_array(i, p);
    for (std::size_t j = 0; j < k.size(); ++j) {
      const Path q = p.item(j);
      Fields f(doc_, k[j], q, cls, names);
      fn(f, q);
    }
  }
  /// Each entry of the map at `i`, in stored order: fn(its key, its value's node, the value's path).
  template <class F>
  void each_entry(std::uint32_t i, const Path& p, F&& fn) const {
    need_map(i, p);
    const auto k = doc_.kids(i);
    for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
      const std::string_view key = doc_.str(k[a]);
      fn(key, k[a + 1], p.field(key));
    }
  }
  /// Every value of a map of raw Values (golden nodes, core_nodes), checked by raw_value.
  void raw_value_map(std::uint32_t i, const Path& p) const {
    each_entry(i, p, [&](std::string_view, std::uint32_t v, const Path& q) { raw_value(v, q); });
  }
  std::vector<std::string> get_str_list(std::uint32_t i, const Path& p) const {
    std::vector<std::string> out;
    const auto k = get_array(i, p);
    for (std::size_t j = 0; j < k.size(); ++j) out.push_back(get_str(k[j], p.item(j)));
    return out;
  }
  std::vector<std::int64_t> get_int_list(std::uint32_t i, const Path& p) const {
    std::vector<std::int64_t> out;
    const auto k = get_array(i, p);
    for (std::size_t j = 0; j < k.size(); ++j) out.push_back(get_int(k[j], p.item(j)));
    return out;
  }
  bool get_bool(std::uint32_t i, const Path& p) const {
    if (doc_.type(i) != kBool) fail("schema.type", p, "expected a bool, found " + mp_kind(doc_, i));
    return doc_.nodes[i].u != 0;
  }
  /// A Value or Meta field, kept raw until its context is known (step 8), but every int in it must fit int64:
  /// checked here, at step 4, depth first (docs/format.md section 10: "every int > INT64_MAX -> schema.type").
  std::uint32_t raw_value(std::uint32_t i, const Path& p) const {
    const std::uint32_t end = doc_.next(i);
    for (std::uint32_t j = i; j < end; ++j)
      if (doc_.type(j) == kUint && !doc_.is_int(j))
        fail("schema.type", p, "the int " + std::to_string(doc_.nodes[j].u) + " is outside int64");
    return i;
  }
  /// An optional field of an object: its node, or UINT32_MAX when absent (the default applies).
  static std::uint32_t opt(const Fields& f, std::size_t k) { return f.find(k); }

  /// Param (docs/format.md, format 1.1).
  Param param(std::uint32_t i, const Path& p, std::vector<std::uint32_t>& defaults) const {
    Fields f(doc_, i, p, "Param", {"name", "kind", "default", "required"});
    Param r;
    r.name = get_str(f.get(0), p.field("name"));
    param_kinds_.push_back(get_str(f.get(1), p.field("kind")));
    defaults.push_back(raw_value(f.get(2), p.field("default")));
    r.required = get_bool(f.get(3), p.field("required"));
    return r;
  }
  std::vector<Param> params(std::uint32_t i, const Path& p, std::vector<std::uint32_t>& defaults) const {
    std::vector<Param> out;
    const auto k = get_array(i, p);
    for (std::size_t j = 0; j < k.size(); ++j) out.push_back(param(k[j], p.item(j), defaults));
    return out;
  }
  /// {str: [Overload]} (Manifest.functions / methods).
  std::vector<std::pair<std::string, std::vector<Overload>>> overload_map(std::uint32_t i, const Path& p,
                                                                         std::vector<std::uint32_t>& defaults) const {
    need_map(i, p);
    std::vector<std::pair<std::string, std::vector<Overload>>> out;
    const auto k = doc_.kids(i);
    for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
      const Path q = p.field(doc_.str(k[a]));
      std::vector<Overload> list;
      const auto ok = get_array(k[a + 1], q);
      for (std::size_t j = 0; j < ok.size(); ++j) {
        const Path r = q.item(j);
        Fields f(doc_, ok[j], r, "Overload", {"params", "returns"});
        Overload o;
        o.params = params(f.get(0), r.field("params"), defaults);
        o.returns = get_str(f.get(1), r.field("returns"));
        list.push_back(std::move(o));
      }
      out.emplace_back(std::string(doc_.str(k[a])), std::move(list));
    }
    return out;
  }

  void parse_graphs(std::uint32_t arr, const Path& p, std::vector<Graph>& out, std::vector<std::vector<NodeRaw>>& rawout) const {
    {
      const auto k = get_array(arr, p);
      for (std::size_t g = 0; g < k.size(); ++g) {
        const Path q = p.item(g);
        Fields f(doc_, k[g], q, "Graph", {"name", "nodes", "training"});
        Graph graph;
        graph.index = g;
        graph.name = get_str(f.get(0), q.field("name"));
        const Path np = q.field("nodes");
        const auto nk = get_array(f.get(1), np);
        std::vector<NodeRaw> raws;
        for (std::size_t j = 0; j < nk.size(); ++j) {
          const Path r = np.item(j);
          Fields nf(doc_, nk[j], r, "Node",
                    {"name", "op", "target", "args", "kwargs", "inputs", "users", "meta", "lowering", "graph", "overload",
                     "origin"});
          Node node;
          NodeRaw raw;
          node.index = j;
          node.name = get_str(nf.get(0), r.field("name"));
          raw.op = nf.get(1);
          get_str(raw.op, r.field("op"));
          node.target = get_str(nf.get(2), r.field("target"));
          raw.args = nf.get(3);
          {
            const Path ap = r.field("args");
            const auto ak = get_array(raw.args, ap);
            for (std::size_t a = 0; a < ak.size(); ++a) raw_value(ak[a], ap.item(a));
          }
          raw.kwargs = nf.get(4);
          {
            const Path kp = r.field("kwargs");
            need_map(raw.kwargs, kp);
            const auto kk = doc_.kids(raw.kwargs);
            for (std::size_t a = 0; a + 1 < kk.size(); a += 2) raw_value(kk[a + 1], kp.field(doc_.str(kk[a])));
          }
          node.inputs = get_str_list(nf.get(5), r.field("inputs"));
          node.users = get_str_list(nf.get(6), r.field("users"));
          raw.meta = raw_value(nf.get(7), r.field("meta"));
          const std::uint32_t low = nf.get(8);
          if (doc_.type(low) != kNil) {
            const Path lp = r.field("lowering");
            Fields lf(doc_, low, lp, "Lowering", {"module_type", "version", "module_version", "attrs", "training"});
            Lowering l;
            l.module_type = get_str(lf.get(0), lp.field("module_type"));
            l.version = get_int(lf.get(1), lp.field("version"));
            l.module_version = get_int(lf.get(2), lp.field("module_version"));
            raw.attrs = lf.get(3);
            const Path ap = lp.field("attrs");
            need_map(raw.attrs, ap);
            const auto ak = doc_.kids(raw.attrs);
            for (std::size_t a = 0; a + 1 < ak.size(); a += 2) raw_value(ak[a + 1], ap.field(doc_.str(ak[a])));
            if (opt(lf, 4) != UINT32_MAX) l.training = get_bool(lf.get(4), lp.field("training"));
            node.lowering = std::move(l);
          }
          raw.graph = nf.get(9);
          if (doc_.type(raw.graph) != kNil) get_int(raw.graph, r.field("graph"));
          raw.overload = opt(nf, 10);
          if (raw.overload != UINT32_MAX && doc_.type(raw.overload) != kNil) get_int(raw.overload, r.field("overload"));
          const std::uint32_t org = opt(nf, 11);
          if (org != UINT32_MAX && doc_.type(org) != kNil) {
            const Path op = r.field("origin");
            Fields of(doc_, org, op, "NodeLink", {"graph", "node"});
            NodeLink link;
            const std::int64_t lg = get_int(of.get(0), op.field("graph"));
            link.node = get_str(of.get(1), op.field("node"));
            raw.origin_graph = lg;
            node.origin = std::move(link);
          }
          graph.nodes.push_back(std::move(node));
          raws.push_back(raw);
        }
        if (opt(f, 2) != UINT32_MAX) graph.training = get_bool(f.get(2), q.field("training"));
        out.push_back(std::move(graph));
        rawout.push_back(std::move(raws));
      }
    }
  }

  /// The schema (section 2.1) as fxlower.format.schema.from_obj checks it: per object, its type, its unknown keys,
  /// then each field in declared order (missing, then its type, recursively). Values and Meta stay raw.
  void schema() {
    const Path& root = root_;
    Fields m(doc_, 0, root, "Manifest",
             {"format", "format_version", "producer", "files", "tensors", "graphs", "signature", "golden", "digest",
              "modules", "functions", "methods", "core"});
    get_str(m.get(0), root.field("format"));
    get_int_list(m.get(1), root.field("format_version"));
    {
      const Path p = root.field("producer");
      Fields f(doc_, m.get(2), p, "Producer", {"name", "version", "torch"});
      a_->producer.name = get_str(f.get(0), p.field("name"));
      a_->producer.version = get_str(f.get(1), p.field("version"));
      a_->producer.torch = get_str(f.get(2), p.field("torch"));
    }
    {
      const Path p = root.field("files");
      const auto k = get_array(m.get(3), p);
      for (std::size_t j = 0; j < k.size(); ++j) {
        const Path q = p.item(j);
        Fields f(doc_, k[j], q, "FileEntry", {"path", "role"});
        file_paths_.push_back(get_str(f.get(0), q.field("path")));
        file_roles_.push_back(get_str(f.get(1), q.field("role")));
      }
    }
    {
      const Path p = root.field("tensors");
      const auto k = get_array(m.get(4), p);
      for (std::size_t j = 0; j < k.size(); ++j) {
        const Path q = p.item(j);
        Fields f(doc_, k[j], q, "TensorEntry",
                 {"name", "dtype", "shape", "file", "key", "sha256", "kind", "requires_grad", "persistent",
                  "placement"});
        Tensor t;
        t.name = get_str(f.get(0), q.field("name"));
        tensor_dtypes_.push_back(get_str(f.get(1), q.field("dtype")));
        t.shape = get_int_list(f.get(2), q.field("shape"));
        t.file = get_str(f.get(3), q.field("file"));
        t.key = get_str(f.get(4), q.field("key"));
        t.sha256 = get_str(f.get(5), q.field("sha256"));
        tensor_kinds_.push_back(opt(f, 6) == UINT32_MAX ? std::string() : get_str(f.get(6), q.field("kind")));
        if (opt(f, 7) != UINT32_MAX) t.requires_grad = get_bool(f.get(7), q.field("requires_grad"));
        if (opt(f, 8) != UINT32_MAX) t.persistent = get_bool(f.get(8), q.field("persistent"));
        std::vector<std::string> kinds;
        const std::uint32_t pl = opt(f, 9);
        if (pl != UINT32_MAX && doc_.type(pl) != kNil) {  // 1.3 Placement: objects and types here, rules at step 6
          const Path pp = q.field("placement");
          Fields pf(doc_, pl, pp, "Placement", {"mesh", "dims", "mesh_dim_names"});
          Placement placement;
          placement.mesh = get_int_list(pf.get(0), pp.field("mesh"));
          each_object(pf.get(1), pp.field("dims"), "MeshDim", {"kind", "dim"}, [&](const Fields& mf, const Path& mp) {
            kinds.push_back(get_str(mf.get(0), mp.field("kind")));
            MeshDim md;
            md.dim = get_int(mf.get(1), mp.field("dim"));
            placement.dims.push_back(md);
          });
          if (opt(pf, 2) != UINT32_MAX) placement.mesh_dim_names = get_str_list(pf.get(2), pp.field("mesh_dim_names"));
          t.placement = std::move(placement);
        }
        tensor_mesh_kinds_.push_back(std::move(kinds));
        a_->tensors.push_back(std::move(t));
      }
    }
    parse_graphs(m.get(5), root.field("graphs"), a_->graphs, raw_);
    {
      const Path p = root.field("signature");
      Fields f(doc_, m.get(6), p, "Signature", {"inputs", "output"});
      a_->signature.inputs = get_str_list(f.get(0), p.field("inputs"));
      sig_output_ = raw_value(f.get(1), p.field("output"));
    }
    {
      const std::uint32_t gi = m.get(7);
      if (doc_.type(gi) != kNil) {
        const Path p = root.field("golden");
        Fields f(doc_, gi, p, "Golden", {"mode", "file", "inputs", "outputs", "nodes", "tolerances", "core_nodes"});
        golden_mode_ = get_str(f.get(0), p.field("mode"));
        Golden g;
        g.file = get_str(f.get(1), p.field("file"));
        golden_inputs_ = f.get(2);
        {
          const Path ip = p.field("inputs");
          const auto ik = get_array(golden_inputs_, ip);
          for (std::size_t j = 0; j < ik.size(); ++j) raw_value(ik[j], ip.item(j));
        }
        golden_outputs_ = raw_value(f.get(3), p.field("outputs"));
        golden_nodes_ = f.get(4);
        raw_value_map(golden_nodes_, p.field("nodes"));
        each_entry(f.get(5), p.field("tolerances"), [&](std::string_view key, std::uint32_t v, const Path& q) {
          Fields tf(doc_, v, q, "Tolerance", {"rtol", "atol"});
          Tolerance t;
          t.rtol = get_float(tf.get(0), q.field("rtol"));
          t.atol = get_float(tf.get(1), q.field("atol"));
          tolerance_raw_.emplace_back(std::string(key), t);
        });
        golden_core_nodes_ = opt(f, 6);
        if (golden_core_nodes_ != UINT32_MAX) raw_value_map(golden_core_nodes_, p.field("core_nodes"));
        a_->golden = std::move(g);
      }
    }
    a_->digest = get_str(m.get(8), root.field("digest"));
    // 1.1 declarations (absent: empty).
    if (opt(m, 9) != UINT32_MAX) {
      each_entry(m.get(9), root.field("modules"), [&](std::string_view key, std::uint32_t v, const Path& q) {
        Fields f(doc_, v, q, "ModuleDecl", {"version", "attrs", "forward"});
        ModuleDecl d;
        d.version = get_int(f.get(0), q.field("version"));
        each_object(f.get(1), q.field("attrs"), "AttrDecl", {"name", "type", "doc"},
                    [&](const Fields& af, const Path& r) {
          AttrDecl ad;
          ad.name = get_str(af.get(0), r.field("name"));
          ad.type = get_str(af.get(1), r.field("type"));
          ad.doc = get_str(af.get(2), r.field("doc"));
          d.attrs.push_back(std::move(ad));
        });
        d.forward = params(f.get(2), q.field("forward"), module_defaults_);
        a_->modules.emplace_back(std::string(key), std::move(d));
      });
    }
    if (opt(m, 10) != UINT32_MAX) a_->functions = overload_map(m.get(10), root.field("functions"), function_defaults_);
    if (opt(m, 11) != UINT32_MAX) a_->methods = overload_map(m.get(11), root.field("methods"), method_defaults_);
    if (opt(m, 12) != UINT32_MAX && doc_.type(m.get(12)) != kNil) core_schema(m.get(12), root.field("core"));
  }

  /// CoreView (format 1.2) at step 4: its fields in declared order (graphs, inputs, outputs, ops, symbols).
  OpArg op_arg(std::uint32_t i, const Path& p, std::vector<std::uint32_t>& defaults) const {
    Fields f(doc_, i, p, "OpArg", {"name", "type", "kwarg_only", "default", "required", "mutates"});
    OpArg a;
    a.name = get_str(f.get(0), p.field("name"));
    a.type = get_str(f.get(1), p.field("type"));
    a.kwarg_only = get_bool(f.get(2), p.field("kwarg_only"));
    defaults.push_back(raw_value(f.get(3), p.field("default")));
    a.required = get_bool(f.get(4), p.field("required"));
    a.mutates = get_bool(f.get(5), p.field("mutates"));
    return a;
  }
  /// CoreInput or CoreOutput entries ({name, kind, target}); the kinds are kept as strings for step 6.
  template <class End>
  void core_ends(std::uint32_t i, const Path& p, const char* cls, std::vector<std::string>& kinds,
                 std::vector<End>& ends) {
    each_object(i, p, cls, {"name", "kind", "target"}, [&](const Fields& g, const Path& q) {
      End e;
      e.name = get_str(g.get(0), q.field("name"));
      kinds.push_back(get_str(g.get(1), q.field("kind")));
      e.target = get_str(g.get(2), q.field("target"));
      ends.push_back(std::move(e));
    });
  }
  void core_schema(std::uint32_t ci, const Path& p) {
    Fields f(doc_, ci, p, "CoreView", {"graphs", "inputs", "outputs", "ops", "symbols"});
    CoreView cv;
    parse_graphs(f.get(0), p.field("graphs"), cv.graphs, core_raw_);
    core_ends(f.get(1), p.field("inputs"), "CoreInput", core_input_kinds_, cv.inputs);
    core_ends(f.get(2), p.field("outputs"), "CoreOutput", core_output_kinds_, cv.outputs);
    each_entry(f.get(3), p.field("ops"), [&](std::string_view key, std::uint32_t v, const Path& q) {
      Fields g(doc_, v, q, "OpSchema", {"name", "overload", "arguments", "returns"});
      OpSchema s;
      s.name = get_str(g.get(0), q.field("name"));
      s.overload = get_str(g.get(1), q.field("overload"));
      for (int which = 0; which < 2; ++which) {
        const Path ap = q.field(which == 0 ? "arguments" : "returns");
        const auto ak = get_array(g.get(2 + static_cast<std::size_t>(which)), ap);
        for (std::size_t j = 0; j < ak.size(); ++j)
          (which == 0 ? s.arguments : s.returns).push_back(op_arg(ak[j], ap.item(j), op_defaults_));
      }
      cv.ops.emplace_back(std::string(key), std::move(s));
    });
    each_entry(f.get(4), p.field("symbols"), [&](std::string_view key, std::uint32_t v, const Path& q) {
      Fields g(doc_, v, q, "Symbol", {"min", "max", "input", "dim"});
      Symbol sym;
      sym.min = get_int(g.get(0), q.field("min"));
      const std::uint32_t mx = g.get(1);
      if (doc_.type(mx) != kNil) sym.max = get_int(mx, q.field("max"));
      symbol_input_.push_back(get_int(g.get(2), q.field("input")));
      symbol_dim_.push_back(get_int(g.get(3), q.field("dim")));
      cv.symbols.emplace_back(std::string(key), sym);
    });
    a_->core = std::move(cv);
  }

  // ---------------------------------------------------------------------------------------------- files
  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  static bool path_ok(const std::string& s) {
    if (s.empty() || s.size() > limits::kMaxPathBytes || s == "." || s == ".." || s == kManifestFile) return false;
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (!(u < 0x80 && (std::isalnum(u) || c == '.' || c == '_' || c == '-'))) return false;
    }
    if (s.back() == '.') return false;  // Windows strips a trailing dot: "a." and "a" would collide
    // Windows reserved device names, with or without an extension, in any case (section 1).
    const std::string stem = lower(s.substr(0, s.find('.')));
    static const char* const kReserved[] = {"con", "prn", "aux", "nul"};
    for (const char* r : kReserved)
      if (stem == r) return false;
    if (stem.size() == 4 && (stem.compare(0, 3, "com") == 0 || stem.compare(0, 3, "lpt") == 0) && stem[3] >= '1' &&
        stem[3] <= '9')
      return false;
    return true;
  }

  /// Paths and roles, then each listed file exists, then (strict) no unlisted entry. Whether a member is a
  /// regular file is checked when it is opened (tensor_file), as the Python loader does.
  void file_list() {
    const Path fp = root_.field("files");
    std::unordered_set<std::string> folded;
    bool role_seen[2] = {false, false};
    for (std::size_t i = 0; i < file_paths_.size(); ++i) {
      const Path q = fp.item(i);
      if (!path_ok(file_paths_[i]))
        fail("path.invalid", q.field("path"), short_repr(file_paths_[i]) + " is not a valid member path: one component of "
                                              "[A-Za-z0-9._-], 1 to 255 bytes, not '.', '..' or 'manifest.msgpack'");
      if (!folded.insert(lower(file_paths_[i])).second)
        fail("path.invalid", q, short_repr(file_paths_[i]) + " is listed twice (compared case-insensitively)");
      FileRole role;
      if (file_roles_[i] == "weights") role = FileRole::weights;
      else if (file_roles_[i] == "golden") role = FileRole::golden;
      else fail("schema.type", q, "role " + short_repr(file_roles_[i]) + " is not one of weights, golden");
      if (role_seen[static_cast<int>(role)] && !(role == FileRole::weights && a_->format_minor >= 3))
        fail("schema.type", q, "a second file of role " + file_roles_[i] +
                                   (role == FileRole::weights ? " (several weights files, a sharded artifact, need format 1.3; this file is 1." +
                                                                    std::to_string(a_->format_minor) + ")"
                                                              : std::string()));
      role_seen[static_cast<int>(role)] = true;
      a_->files.push_back(FileEntry{file_paths_[i], role});
    }
    for (const FileEntry& f : a_->files) {
      struct stat st {};
      if (::fstatat(dirfd_.get(), f.path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) raise("artifact.missing", f.path, "a listed file does not exist");
        raise("io.error", f.path, "cannot stat: " + errno_text(errno));
      }
    }
    if (opts_.strict) {
      for (const std::string& name : list_directory(dirfd_.get(), a_->directory)) {
        if (name == kManifestFile) continue;
        if (file_named(name) == nullptr)
          raise("artifact.extra_file", name, "the directory holds an entry the manifest does not list; remove it (or load "
                                             "with strict = false, which never opens it)");
      }
    }
  }

  /// The listed file `path`, or nullptr. Indexed on first use (files are final after step 4): a linear scan per
  /// tensor entry and tensor reference would cost files x tensors with thousands of shards.
  const FileEntry* file_named(const std::string& path) const {
    if (file_index_.size() != a_->files.size()) {
      file_index_.clear();
      for (const FileEntry& f : a_->files) file_index_.emplace(f.path, &f);
    }
    const auto it = file_index_.find(path);
    return it == file_index_.end() ? nullptr : it->second;
  }
  mutable std::unordered_map<std::string, const FileEntry*> file_index_;

  // ---------------------------------------------------------------------------------------------- tensor table
  void tensor_table() {
    const Path tp = root_.field("tensors");
    const std::string* prev = nullptr;
    for (std::size_t i = 0; i < a_->tensors.size(); ++i) {
      Tensor& t = a_->tensors[i];
      const Path q = tp.item(i);
      std::string why = name_problem(t.name);
      if (!why.empty()) fail("schema.name", q.field("name"), why);
      if (!a_->tensor_index.emplace(t.name, i).second)
        fail("schema.name", q, "the tensor name " + short_repr(t.name) + " appears twice");
      if (prev && t.name < *prev)
        fail("schema.type", q, "the tensor table is not sorted by name (" + short_repr(t.name) + " after " + short_repr(*prev) + ")");
      prev = &t.name;
      const auto d = dtype_from_name(tensor_dtypes_[i]);
      if (!d || !is_storage_dtype(*d)) fail("tensor.dtype", q.field("dtype"), "unknown storage dtype " + short_repr(tensor_dtypes_[i]));
      t.dtype = *d;
      const Path sp = q.field("shape");
      t.numel_ = check_shape_dims(t.shape, t.itemsize(), [&sp](const std::string& m) { fail("tensor.shape", sp, m); });
      t.nbytes_ = static_cast<std::size_t>(t.numel_) * t.itemsize();
      if (!file_named(t.file)) fail("tensor.reference", q.field("file"), "file " + short_repr(t.file) + " is not listed in files");
      why = name_problem(t.key);
      if (!why.empty()) fail("schema.name", q.field("key"), why);
      if (!is_lower_hex(t.sha256, 64)) fail("schema.type", q.field("sha256"), "sha256 is not 64 lowercase hex digits");
      // 1.1 tensor state: kind ("" only in 1.0 files), then requires_grad (parameters only), persistent (buffers).
      const std::string& kind = tensor_kinds_[i];
      const auto k = tensor_kind_from_name(kind);
      if (!k || (*k == TensorKind::unspecified && a_->format_minor >= 1))
        fail("schema.type", q.field("kind"), "kind " + short_repr(kind) + " is not one of parameter, buffer, constant, golden" +
                                                 (k ? " (\"\" is for 1.0 files only)" : ""));
      t.kind = *k;
      if (*k != TensorKind::unspecified) {  // "golden" exactly for the entries of the golden file (section 2.1)
        const FileEntry* tf = file_named(t.file);
        if ((*k == TensorKind::golden) != (tf->role == FileRole::golden))
          fail("schema.type", q.field("kind"), "a tensor of kind " + kind + " in a " +
                                                   (tf->role == FileRole::golden ? "golden" : "weights") +
                                                   " file; golden tensors and only they have kind golden");
      }
      if (t.requires_grad && t.kind != TensorKind::parameter)
        fail("schema.type", q.field("requires_grad"), "requires_grad is true on a " + std::string(kind.empty() ? "tensor without kind" : kind) +
                                                          "; only parameters may require grad");
      if (!t.persistent && t.kind != TensorKind::buffer)
        fail("schema.type", q.field("persistent"), "persistent is false on a " + std::string(kind.empty() ? "tensor without kind" : kind) +
                                                       "; only buffers may be non-persistent");
      if (t.placement) placement(t, i, q.field("placement"));
    }
    std::map<std::pair<std::string, std::string>, std::size_t> first;
    for (std::size_t i = 0; i < a_->tensors.size(); ++i) {
      const Tensor& t = a_->tensors[i];
      const auto it = first.emplace(std::make_pair(t.file, t.key), i).first;
      const Tensor& o = a_->tensors[it->second];
      if (o.dtype != t.dtype || o.shape != t.shape || o.sha256 != t.sha256)
        raise("tensor.mismatch", kManifestFile, "aliases " + short_repr(o.name) + " and " + short_repr(t.name) + " of key " +
                                                    short_repr(t.key) + " differ in dtype, shape or sha256");
    }
  }

  /// 1.3 placement (docs/format.md section 2.1, step 6): a 1.3 field (schema.unknown_field in older files), on a
  /// weights tensor only and with known mesh-dimension kinds (schema.type), then its rules (tensor.placement).
  void placement(Tensor& t, std::size_t i, const Path& pp) {
    Placement& p = *t.placement;
    if (a_->format_minor < 3)
      fail("schema.unknown_field", pp, "the field 'placement' is new in format 1.3; this file is 1." + std::to_string(a_->format_minor));
    const FileEntry* f = file_named(t.file);
    if (f == nullptr || f->role != FileRole::weights)
      fail("schema.type", pp, "a tensor of a golden file has a placement; only tensors of weights files are placed (write nil)");
    const Path dp = pp.field("dims");
    for (std::size_t x = 0; x < p.dims.size(); ++x) {
      const std::string& kind = tensor_mesh_kinds_[i][x];
      if (kind == "shard") p.dims[x].kind = MeshDim::Kind::shard;
      else if (kind == "replicate") p.dims[x].kind = MeshDim::Kind::replicate;
      else fail("schema.type", dp.item(x).field("kind"), "kind " + short_repr(kind) + " is not one of shard, replicate");
    }
    const Path mp = pp.field("mesh");
    if (p.mesh.empty()) fail("tensor.placement", mp, "mesh is empty; a placement has at least one mesh dimension");
    std::int64_t devices = 1;
    for (std::size_t x = 0; x < p.mesh.size(); ++x) {
      if (p.mesh[x] < 1)
        fail("tensor.placement", mp, "mesh dimension " + std::to_string(x) + " has size " + std::to_string(p.mesh[x]) +
                                         "; sizes are at least 1");
      if (p.mesh[x] > limits::kMaxMeshDevices / devices)  // no overflow: devices <= 65536 here
        fail("tensor.placement", mp, "the mesh has more than " + std::to_string(limits::kMaxMeshDevices) + " devices");
      devices *= p.mesh[x];
      if (devices > limits::kMaxMeshDevices)
        fail("tensor.placement", mp, "the mesh has more than " + std::to_string(limits::kMaxMeshDevices) + " devices");
    }
    if (p.dims.size() != p.mesh.size())
      fail("tensor.placement", dp, "dims has " + std::to_string(p.dims.size()) + " entries for a mesh of " +
                                       std::to_string(p.mesh.size()) + " dimensions; give one per mesh dimension");
    const auto rank = static_cast<std::int64_t>(t.shape.size());
    for (std::size_t x = 0; x < p.dims.size(); ++x) {
      const MeshDim& md = p.dims[x];
      if (md.kind == MeshDim::Kind::shard && (md.dim < 0 || md.dim >= rank))
        fail("tensor.placement", dp.item(x).field("dim"), "shard dim " + std::to_string(md.dim) + " is outside [0, " +
                                                              std::to_string(rank) + ") for the tensor's rank");
      if (md.kind == MeshDim::Kind::replicate && md.dim != -1)
        fail("tensor.placement", dp.item(x).field("dim"), "a replicate mesh dimension has dim " + std::to_string(md.dim) + "; it must be -1");
    }
    const auto& names = p.mesh_dim_names;
    const Path np = pp.field("mesh_dim_names");
    if (!names.empty()) {
      if (names.size() != p.mesh.size())
        fail("tensor.placement", np, "mesh_dim_names has " + std::to_string(names.size()) + " names for a mesh of " +
                                         std::to_string(p.mesh.size()) + " dimensions; give one per dimension or none");
      std::unordered_set<std::string_view> seen;  // a mesh of many size-1 dimensions has as many names: linear
      for (std::size_t x = 0; x < names.size(); ++x) {
        const std::string& n = names[x];
        bool ok = !n.empty() && !(n[0] >= '0' && n[0] <= '9');
        for (char c : n) ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
        if (!ok) fail("tensor.placement", np.item(x), "mesh dimension name " + short_repr(n) + " is not an identifier ([A-Za-z_][A-Za-z0-9_]*)");
        if (!seen.insert(n).second)
          fail("tensor.placement", np.item(x), "mesh dimension name " + short_repr(n) + " appears twice");
      }
    }
  }

  // ---------------------------------------------------------------------------------------------- tensor files
  std::unordered_map<std::string, std::vector<std::size_t>> tensors_by_file_;  // file -> table indices
  void tensor_file(std::size_t fi) {
    const FileEntry& f = a_->files[fi];
    struct stat st {};
    Fd fd = open_member(dirfd_.get(), f.path, st);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    auto bytes = std::make_unique<Bytes>();
    if (size > 0) {
      if (opts_.map_tensors) {
        void* p = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
        if (p == MAP_FAILED) raise("io.error", f.path, "mmap failed: " + errno_text(errno));
        bytes->set_mapped(static_cast<const std::byte*>(p), static_cast<std::size_t>(size));
      } else {
        bytes->owned().resize(static_cast<std::size_t>(size));
        read_exact(fd.get(), reinterpret_cast<char*>(bytes->owned().data()), static_cast<std::size_t>(size), f.path);
        bytes->set_owned();
      }
    }
    fd.reset();
    const StFile sf = check_safetensors(bytes->data(), size, f.path);
    std::unordered_map<std::string, const StEntry*> by_key;
    for (const StEntry& e : sf.entries) by_key.emplace(e.name, &e);
    std::unordered_set<std::string> used;
    for (std::size_t ti : tensors_by_file_[f.path]) {  // this file's entries in table order, grouped once
      Tensor& t = a_->tensors[ti];
      const auto it = by_key.find(t.key);
      if (it == by_key.end())
        raise("tensor.missing", f.path, "tensor " + short_repr(t.name) + " has key " + short_repr(t.key) + ", which the file does not hold");
      const StEntry& e = *it->second;
      if (e.dtype != t.dtype || e.shape != t.shape)
        raise("tensor.mismatch", f.path, "tensor " + short_repr(t.name) + " has another dtype or shape in the manifest than in the file");
      t.data_ = bytes->data() + 8 + sf.header_len + e.begin;
      used.insert(t.key);
    }
    for (const StEntry& e : sf.entries)
      if (!used.count(e.name))
        raise("safetensors.unreferenced", f.path, "key " + short_repr(e.name) + " is not used by any tensor of the manifest");
    a_->buffers.push_back(std::move(bytes));
  }

  // ---------------------------------------------------------------------------------------------- values
  struct Scope {
    const Graph* graph = nullptr;  // node references resolve here; nullptr: not allowed
    std::size_t limit = 0;         // ... to nodes before this index
    bool tensors = false;          // tensor references allowed
    FileRole role = FileRole::weights;  // ... to tensors stored in the file of this role
    std::vector<std::string>* refs = nullptr;  // collects node references, distinct, in order
    std::size_t core_graphs = 0;  // graph Values allowed (core view graphs): indices 1..core_graphs-1
    std::vector<std::size_t>* graph_refs = nullptr;  // collects the graph Values' indices
  };

  /// The Python callables torch.export leaves in core graphs, and the control-flow operators (docs/format.md, the
  /// core view's table): their schemas in core.ops are written by hand, named "a::b" with overload "".
  static bool core_py_target(std::string_view t) {
    static constexpr std::string_view kTargets[] = {
        "operator.getitem", "operator.add", "operator.sub", "operator.mul", "operator.floordiv", "operator.mod",
        "operator.neg", "operator.eq", "operator.ne", "operator.lt", "operator.le", "operator.gt", "operator.ge",
        "operator.truediv", "operator.pow", "operator.and_", "operator.or_", "operator.not_",
        "higher_order.cond", "higher_order.while_loop"};
    for (std::string_view k : kTargets)
      if (t == k) return true;
    return false;
  }
  /// A core target "aten.name.overload" must be a Core ATen operator of the supported torch (docs/core-ops.md) or one
  /// of the few non-core operators torch.export still emits (listed there too).
  static bool core_aten_target(std::string_view t) {
    return std::binary_search(std::begin(kCoreAtenOps), std::end(kCoreAtenOps), t);
  }

  Value decode_value(std::uint32_t i, const Path& p, const Scope& s, int depth) const {
    if (depth > limits::kMaxValueDepth) fail("schema.depth", p, "value nests deeper than 64 levels");
    switch (doc_.type(i)) {
      case kNil: return Value();
      case kBool: return Value::boolean(doc_.nodes[i].u != 0);
      case kF32: case kF64: return Value::floating(doc_.f(i));
      case kStr: return Value::string(std::string(doc_.str(i)));
      case kUint: case kNint:
        if (!doc_.is_int(i)) fail("schema.type", p, "the int " + std::to_string(doc_.nodes[i].u) + " is outside int64");
        return Value::integer(doc_.i64(i));
      case kMap: break;
      default: fail("schema.type", p, "expected a Value, found " + mp_kind(doc_, i));
    }
    const std::uint32_t t = doc_.get(i, "t"), v = doc_.get(i, "v");
    if (doc_.count(i) != 2 || t == UINT32_MAX || v == UINT32_MAX)
      fail("schema.type", p, "a tagged Value has exactly the keys 't' and 'v'");
    static const char* kinds[] = {"node", "tensor", "list", "tuple", "dict", "slice", "ellipsis", "complex",
                                  "dtype", "device", "memory_format", "layout", "function", "module", "graph"};
    int kind = -1;
    if (doc_.type(t) == kStr)
      for (int k = 0; k < 15; ++k)
        if (doc_.str(t) == kinds[k]) kind = k;
    if (kind == 14) {  // graph (1.2): core view graphs only
      // like node and tensor references (section 6.1): outside its scope graph.reference; not an int schema.type
      if (!s.core_graphs) fail("graph.reference", p, "a graph Value appears only in core view graphs");
      if (!doc_.is_int(v)) fail("schema.type", p, "a graph reference holds an index, found " + mp_kind(doc_, v));
      if (doc_.i64(v) < 1 || static_cast<std::uint64_t>(doc_.i64(v)) >= s.core_graphs)
        fail("core.structure", p, "a graph Value indexes a control-flow graph of core.graphs (1.." +
                                      std::to_string(s.core_graphs - 1) + "), found " +
                                      (doc_.is_int(v) ? std::to_string(doc_.i64(v)) : mp_kind(doc_, v)));
      const auto gi = static_cast<std::size_t>(doc_.i64(v));
      if (s.graph_refs) s.graph_refs->push_back(gi);
      return Value::graph(gi);
    }
    if (kind < 0)
      fail("schema.type", p, "unknown Value kind " + (doc_.type(t) == kStr ? short_repr(doc_.str(t)) : mp_kind(doc_, t)));
    const std::string_view kname = kinds[kind];
    const int d = depth + 1;
    switch (kind) {
      case 0: case 1: {  // node, tensor
        if (doc_.type(v) != kStr) fail("schema.type", p, "a " + std::string(kname) + " reference holds a name, found " + mp_kind(doc_, v));
        std::string name(doc_.str(v));
        if (kind == 0) {
          resolve_node(name, p, s);
          return Value::node(std::move(name));
        }
        resolve_tensor(name, p, s);
        return Value::tensor(std::move(name));
      }
      case 2: case 3: {  // list, tuple
        if (doc_.type(v) != kArray) fail("schema.type", p, "expected an array, found " + mp_kind(doc_, v));
        std::vector<Value> items;
        const auto k = doc_.kids(v);
        for (std::size_t j = 0; j < k.size(); ++j) items.push_back(decode_value(k[j], p.item(j), s, d));
        return kind == 2 ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      case 4: {  // dict
        if (doc_.type(v) != kArray) fail("schema.type", p, "expected an array, found " + mp_kind(doc_, v));
        std::vector<std::pair<DictKey, Value>> items;
        std::unordered_set<std::string> seen_s;
        std::unordered_set<std::int64_t> seen_i;
        const auto k = doc_.kids(v);
        for (std::size_t j = 0; j < k.size(); ++j) {
          const Path q = p.item(j);
          if (doc_.type(k[j]) != kArray || doc_.count(k[j]) != 2) fail("schema.type", q, "a dict entry is a [key, Value] pair");
          const std::uint32_t key = k[j] + 1, val = doc_.next(key);
          if (doc_.type(key) == kStr) {
            std::string ks(doc_.str(key));
            if (!seen_s.insert(ks).second) fail("manifest.duplicate_key", q, "dict key " + short_repr(ks) + " appears twice");
            const Path vp = p.key(doc_.str(key));
            items.emplace_back(DictKey(std::move(ks)), decode_value(val, vp, s, d));
          } else if (doc_.is_int(key)) {
            const std::int64_t ki = doc_.i64(key);
            if (!seen_i.insert(ki).second) fail("manifest.duplicate_key", q, "dict key " + std::to_string(ki) + " appears twice");
            const Path vp = p.int_key(ki);
            items.emplace_back(DictKey(ki), decode_value(val, vp, s, d));
          } else {
            fail("schema.type", q, "a dict key is a str or an int64, found " + mp_kind(doc_, key));
          }
        }
        return Value::dict(std::move(items));
      }
      case 5: {  // slice
        if (doc_.type(v) != kArray) fail("schema.type", p, "expected an array, found " + mp_kind(doc_, v));
        if (doc_.count(v) != 3) fail("schema.type", p, "a slice is [start, stop, step], found " + std::to_string(doc_.count(v)) + " items");
        const auto k = doc_.kids(v);
        Value a = decode_value(k[0], p.item(0), s, d);
        Value b = decode_value(k[1], p.item(1), s, d);
        Value c = decode_value(k[2], p.item(2), s, d);
        return Value::slice(std::move(a), std::move(b), std::move(c));
      }
      case 6:  // ellipsis
        if (doc_.type(v) != kNil) fail("schema.type", p, "an ellipsis has a nil payload");
        return Value::ellipsis();
      case 7: {  // complex
        if (doc_.type(v) != kArray) fail("schema.type", p, "expected an array, found " + mp_kind(doc_, v));
        const auto k = doc_.kids(v);
        bool ok = k.size() == 2;
        for (std::uint32_t x : k) ok = ok && (doc_.type(x) == kF32 || doc_.type(x) == kF64);
        if (!ok) fail("schema.type", p, "a complex is [re, im], two floats");
        return Value::complex(doc_.f(k[0]), doc_.f(k[1]));
      }
      default: break;
    }
    if (doc_.type(v) != kStr) fail("schema.type", p, "a " + std::string(kname) + " is written as a string, found " + mp_kind(doc_, v));
    const std::string_view pv = doc_.str(v);
    if (kind == 8) {
      const auto dt = dtype_from_name(pv);
      if (!dt) fail("tensor.dtype", p, "unknown dtype code " + short_repr(pv));
      return Value::dtype(*dt);
    }
    if (kind == 9) {
      if (!device_ok(pv)) fail("schema.type", p, short_repr(pv) + " is not a device string: a type of section 6.1 (cpu, cuda, ...) and optionally ':' and an index such as 'cuda:0'");
      return Value::device(std::string(pv));
    }
    if (kind == 12) {
      if (!is_function_name(pv))
        fail("schema.type", p, short_repr(pv) + " is not a canonical function name (a dotted path of identifiers, "
                               "like 'torch.nn.functional.relu')");
      return Value::function(std::string(pv));
    }
    if (kind == 13) {
      const std::string why = name_problem(pv);
      if (!why.empty()) fail("schema.type", p, "a module Value holds a module type name: " + why);
      return Value::module(std::string(pv));
    }
    if (kind == 10) {
      const auto mf = memory_format_from_name(pv);
      if (!mf) fail("schema.type", p, "unknown memory format " + short_repr(pv));
      return Value::memory_format(*mf);
    }
    const auto lay = layout_from_name(pv);
    if (!lay) fail("schema.type", p, "unknown layout " + short_repr(pv));
    return Value::layout(*lay);
  }

  /// A device type of section 6.1, optionally ':' and an index without leading zeros (0 to 999999).
  static bool device_ok(std::string_view s) {
    static constexpr std::string_view kTypes[] = {"cpu", "cuda", "hip", "mps",  "xpu", "xla",
                                                  "meta", "hpu", "mtia", "maia", "ipu", "privateuseone"};
    const std::size_t colon = s.find(':');
    const std::string_view type = s.substr(0, colon);
    bool known = false;
    for (std::string_view t : kTypes) known = known || t == type;
    if (!known) return false;
    if (colon == std::string_view::npos) return true;
    const std::string_view index = s.substr(colon + 1);
    if (index.empty() || index.size() > 6 || (index.size() > 1 && index[0] == '0')) return false;
    for (char c : index)
      if (c < '0' || c > '9') return false;
    return true;
  }

  void resolve_node(const std::string& name, const Path& p, const Scope& s) const {
    if (!s.graph) fail("graph.reference", p, "a node reference (%" + name + ") is not allowed here");
    const auto it = s.graph->by_name_.find(name);
    if (it == s.graph->by_name_.end() || it->second >= s.limit)
      fail("graph.reference", p, short_repr(name) + " is not an earlier node of graph " + std::to_string(s.graph->index));
    if (s.refs && std::find(s.refs->begin(), s.refs->end(), name) == s.refs->end()) s.refs->push_back(name);
  }

  void resolve_tensor(const std::string& name, const Path& p, const Scope& s) const {
    if (!s.tensors) fail("tensor.reference", p, "a tensor reference ($" + name + ") is not allowed here");
    const auto it = a_->tensor_index.find(name);
    const FileEntry* f = it == a_->tensor_index.end() ? nullptr : file_named(a_->tensors[it->second].file);
    if (!f || f->role != s.role)
      fail("tensor.reference", p, "tensor " + short_repr(name) + " is not in the tensor table (in a " +
                                      std::string(file_role_name(s.role)) + " file)");
  }

  /// Output metadata as fxlower.format.values.check_meta.
  Meta decode_meta(std::uint32_t i, const Path& p, int depth, bool sym = false) const {
    if (depth > limits::kMaxValueDepth) fail("schema.depth", p, "metadata nests deeper than 64 levels");
    const std::uint32_t t = doc_.type(i) == kMap ? doc_.get(i, "t") : UINT32_MAX;
    if (t == UINT32_MAX || doc_.type(t) != kStr)
      fail("schema.type", p, "output metadata is a map with a 't' kind, found " + mp_kind(doc_, i));
    const std::string_view kind = doc_.str(t);
    Meta m;
    if (kind == "tensor") {
      const std::uint32_t dt = doc_.get(i, "dtype"), sh = doc_.get(i, "shape");
      if (doc_.count(i) != 3 || dt == UINT32_MAX || sh == UINT32_MAX)
        fail("schema.type", p, "tensor metadata has exactly the keys t, dtype, shape");
      if (doc_.type(dt) != kStr) fail("schema.type", p, "a dtype code is a str, found " + mp_kind(doc_, dt));
      const auto code = dtype_from_name(doc_.str(dt));
      if (!code) fail("tensor.dtype", p, "unknown dtype code " + short_repr(doc_.str(dt)));
      m.kind = MetaKind::tensor;
      m.dtype = *code;
      if (doc_.type(sh) != kArray) fail("tensor.shape", p, "a shape is an array of ints, found " + mp_kind(doc_, sh));
      const auto k = doc_.kids(sh);
      if (k.size() > limits::kMaxRank) fail("tensor.shape", p, "rank " + std::to_string(k.size()) + " exceeds the maximum 64");
      for (std::size_t j = 0; j < k.size(); ++j) {
        if (sym && doc_.type(k[j]) == kStr) {  // 1.2 core graphs: a symbol expression
          m.sym.resize(k.size());
          m.sym[j] = std::string(doc_.str(k[j]));
          check_sym_expr(m.sym[j], p);
          m.shape.push_back(-1);
          continue;
        }
        if (!doc_.is_int(k[j]) || doc_.i64(k[j]) < 0)
          fail("tensor.shape", p, "dimension " + std::to_string(j) + " is " + mp_kind(doc_, k[j]) +
                                      (sym ? "; dimensions are non-negative int64s or symbol expressions"
                                           : "; dimensions are non-negative int64s"));
        m.shape.push_back(doc_.i64(k[j]));
      }
      if (m.sym.empty())
        check_shape_dims(m.shape, dtype_itemsize(m.dtype), [&p](const std::string& msg) { fail("tensor.shape", p, msg); });
      return m;
    }
    if (sym && kind == "symint") {
      const std::uint32_t v = doc_.get(i, "v");
      if (doc_.count(i) != 2 || v == UINT32_MAX || doc_.type(v) != kStr)
        fail("schema.type", p, "symint metadata has exactly the keys t, v (a symbol expression)");
      m.kind = MetaKind::symint;
      m.expr = std::string(doc_.str(v));
      check_sym_expr(m.expr, p);
      return m;
    }
    if (kind == "tuple" || kind == "list" || kind == "dict") {
      const std::uint32_t v = doc_.get(i, "v");
      if (doc_.count(i) != 2 || v == UINT32_MAX) fail("schema.type", p, std::string(kind) + " metadata has exactly the keys t, v");
      if (doc_.type(v) != kArray) fail("schema.type", p, "expected an array, found " + mp_kind(doc_, v));
      m.kind = kind == "tuple" ? MetaKind::tuple : kind == "list" ? MetaKind::list : MetaKind::dict;
      const auto k = doc_.kids(v);
      for (std::size_t j = 0; j < k.size(); ++j) {
        const Path q = p.item(j);
        std::uint32_t item = k[j];
        if (m.kind == MetaKind::dict) {
          const bool pair = doc_.type(item) == kArray && doc_.count(item) == 2;
          const std::uint32_t key = item + 1;
          if (!pair || (doc_.type(key) != kStr && !doc_.is_int(key)))
            fail("schema.type", q, "a dict metadata entry is a [str or int key, Meta] pair");
          if (doc_.type(key) == kStr) m.keys.emplace_back(std::string(doc_.str(key)));
          else m.keys.emplace_back(doc_.i64(key));
          item = doc_.next(key);
        }
        m.items.push_back(decode_meta(item, q, depth + 1, sym));
      }
      return m;
    }
    static const std::pair<const char*, MetaKind> leaves[] = {
        {"int", MetaKind::integer}, {"float", MetaKind::floating}, {"bool", MetaKind::boolean},
        {"str", MetaKind::string},  {"none", MetaKind::none},      {"other", MetaKind::other},
        {"device", MetaKind::device}, {"dtype", MetaKind::dtype},  {"memory_format", MetaKind::memory_format},
        {"layout", MetaKind::layout}};
    for (const auto& l : leaves)
      if (kind == l.first) {
        if (doc_.count(i) != 1) fail("schema.type", p, std::string(kind) + " metadata has only the key t");
        m.kind = l.second;
        return m;
      }
    fail("schema.type", p, "unknown metadata kind " + short_repr(kind));
  }

  /// A symbol expression of a core graph (grammar of docs/format.md 1.2): it parses and every symbol it uses is
  /// declared in core.symbols ("core.symbol").
  void check_sym_expr(const std::string& text, const Path& p) const {
    sym_pending_.push_back({sym_node_.first, sym_node_.second, text, where_of(p)});
  }
  /// The shape expressions recorded for core node (g, j), in file order.
  void check_sym_exprs(std::size_t g, std::size_t j) const {
    CoreView& cv = *a_->core;
    // recorded in the same graph-then-node order as the callers walk them: a cursor, not a search
    for (; sym_cursor_ < sym_pending_.size() && sym_pending_[sym_cursor_].graph == g &&
           sym_pending_[sym_cursor_].node == j; ++sym_cursor_) {
      const SymPending& sp = sym_pending_[sym_cursor_];
      const std::string& text = sp.text;
      const std::string& where = sp.where;
      if (cv.exprs.count(text)) continue;
      std::string why;
      auto e = SymExpr::parse(text, &why);
      if (!e) raise("core.symbol", where, "shape entry " + short_repr(text) + " is not a symbol expression: " + why);
      for (const std::string& name : e->symbols())
        if (!cv.find_symbol(name))
          raise("core.symbol", where, "shape entry " + short_repr(text) + " uses symbol " + name +
                                          ", which core.symbols does not declare");
      cv.exprs.emplace(text, std::move(*e));
    }
  }

  // ---------------------------------------------------------------------------------------------- graphs
  /// Targets by op (section 2.1), as fxlower/io/loading.py _target.
  void check_target(const Graph& g, const Node& n, const Path& r) const {
    const Path tp = r.field("target");
    const std::string& t = n.target;
    switch (n.op) {
      case Op::placeholder:
        if (!is_placeholder_target(t)) fail("graph.target", tp, "placeholder target " + short_repr(t) + " is not an identifier");
        break;
      case Op::get_attr: case Op::call_module: {
        if (!is_attr_path(t))
          fail("graph.target", tp, short_repr(t) + " is not a dotted attribute path (components of 1+ bytes without '.', "
                                   "'\"', '\\' or control characters, none starting with '__')");
        if (n.op == Op::call_module) break;
        const std::string tensor = g.name.empty() ? t : g.name + "." + t;
        const auto it = a_->tensor_index.find(tensor);
        if (it == a_->tensor_index.end())
          fail("tensor.reference", tp, "get_attr names " + short_repr(tensor) + ", which is not in the tensor table");
        const FileEntry* f = file_named(a_->tensors[it->second].file);
        if (!f || f->role != FileRole::weights) fail("tensor.reference", tp, "get_attr names a golden tensor");
        break;
      }
      case Op::call_method:
        if (!is_method_name(t)) fail("graph.target", tp, short_repr(t) + " is not a public method name");
        break;
      case Op::call_function:
        if (!is_function_name(t)) fail("graph.target", tp, short_repr(t) + " is not a dotted function name like 'torch.add'");
        break;
      case Op::output:
        if (t != "output") fail("graph.target", tp, "the output node's target is 'output', found " + short_repr(t));
        break;
    }
  }

  void graphs() {
    if (a_->graphs.empty() && !a_->core)
      raise("graph.structure", kManifestFile, "graphs is empty; the root graph is graphs[0] (a 1.2 file may leave it "
                                              "empty only when it has a core view)");
    declarations();
    check_graphs(a_->graphs, raw_, root_.field("graphs"), false);
  }

  /// Node rules of section 8 for the module view (core = false) or the core view's graphs (core = true: ops
  /// placeholder/call_function/get_attr/output only, every call_function target in CoreView.ops unless it is one
  /// of the Python callables of kCorePyTargets, symbolic Meta shapes, graph Values, no lowering/graph/overload).
  void check_graphs(std::vector<Graph>& gs, const std::vector<std::vector<NodeRaw>>& raws, const Path& gp, bool core) {
    const std::size_t G = gs.size();
    if (core && G == 0) raise("core.structure", where_of(gp), "core.graphs is empty; the core root graph is graphs[0]");
    const bool v11 = a_->format_minor >= 1 && !core;
    std::vector<std::vector<std::size_t>> calls(G);
    for (std::size_t g = 0; g < G; ++g) {
      Graph& graph = gs[g];
      const Path q = gp.item(g);
      if (g == 0 && !graph.name.empty()) fail("schema.name", q.field("name"), "the root graph's name is \"\"");
      if (g > 0) {
        const std::string why = name_problem(graph.name);
        if (!why.empty()) fail("schema.name", q.field("name"), why);
        if (!is_attr_path(graph.name))
          fail("schema.name", q.field("name"), short_repr(graph.name) + " is not a dotted module path (components without "
                                               "'.', '\"', '\\' or control characters, none starting with '__')");
      }
      const Path np = q.field("nodes");
      std::size_t outputs = 0;
      for (std::size_t j = 0; j < graph.nodes.size(); ++j) {
        Node& n = graph.nodes[j];
        const NodeRaw& raw = raws[g][j];
        const Path r = np.item(j);
        sym_node_ = {g, j};  // the node whose shape expressions check_sym_expr records
        const std::string why = name_problem(n.name);
        if (!why.empty()) fail("schema.name", r.field("name"), why);
        if (!graph.by_name_.emplace(n.name, j).second)
          fail("schema.name", r, "node name " + short_repr(n.name) + " appears twice in the graph");
        const std::string_view ops = doc_.str(raw.op);
        const auto op = op_from_name(ops);
        if (!op) fail("graph.op", r.field("op"), "op " + short_repr(ops) + " is not one of placeholder, get_attr, call_function, "
                                                  "call_method, call_module, output");
        n.op = *op;
        if (core && (n.op == Op::call_module || n.op == Op::call_method))
          fail("graph.op", r.field("op"), "op " + short_repr(ops) + " does not appear in core view graphs (placeholder, "
                                          "call_function, get_attr, output)");
        if (outputs) fail("graph.output", r, "a node follows the output node");
        check_target(graph, n, r);
        if (core && n.op == Op::call_function && !core_py_target(n.target) && !core_aten_target(n.target))
          fail("core.op", r.field("target"), "operator " + short_repr(n.target) + " is not a Core ATen operator of the "
                                             "supported torch (docs/core-ops.md lists them); export with run_decompositions()");
        if (core && n.op == Op::call_function && !a_->core->find_op(n.target))
          fail("core.op", r.field("target"), "operator " + short_repr(n.target) + " has no schema in core.ops (a core "
                                             "view declares the schema of every call_function target)");
        if (v11 && n.op == Op::call_function && !find_decl(a_->functions, n.target))
          fail("graph.target", r.field("target"), "function " + short_repr(n.target) + " has no entry in the manifest's "
                                                  "functions (format 1.1 declares every call_function target)");
        if (v11 && n.op == Op::call_method && !find_decl(a_->methods, n.target))
          fail("graph.target", r.field("target"), "method " + short_repr(n.target) + " has no entry in the manifest's "
                                                  "methods (format 1.1 declares every call_method name)");
        const auto kw = doc_.kids(raw.kwargs);
        for (std::size_t a = 0; a + 1 < kw.size(); a += 2) {
          const std::string_view k = doc_.str(kw[a]);
          if (!is_ident(k) || is_python_keyword(k))
            fail("schema.name", r.field("kwargs"), "keyword " + short_repr(k) + " is not an identifier");
          if (v11 && k[0] == '_')
            fail("schema.name", r.field("kwargs"), "keyword " + short_repr(k) + " starts with '_'; writers drop private "
                                                   "keyword arguments (format 1.1)");
        }
        std::vector<std::string> refs;
        Scope s;
        s.graph = &graph;
        s.limit = j;
        s.refs = &refs;
        s.core_graphs = core ? G : 0;
        s.graph_refs = core ? &calls[g] : nullptr;
        {
          const Path ap = r.field("args");
          const auto k = doc_.kids(raw.args);
          for (std::size_t a = 0; a < k.size(); ++a) n.args.push_back(decode_value(k[a], ap.item(a), s, 0));
        }
        {
          const Path kp = r.field("kwargs");
          for (std::size_t a = 0; a + 1 < kw.size(); a += 2) {
            const Path vp = kp.field(doc_.str(kw[a]));
            n.kwargs.emplace_back(std::string(doc_.str(kw[a])), decode_value(kw[a + 1], vp, s, 0));
          }
        }
        // Argument rules by op (fxlower/io/loading.py _op_args).
        if (n.op == Op::placeholder && n.args.size() > 1)
          fail("graph.structure", r, "a placeholder has at most one arg (its default)");
        if (n.op == Op::output && n.args.size() != 1)
          fail("graph.output", r, "the output node has " + std::to_string(n.args.size()) + " args; expected 1");
        if (n.op == Op::call_function && n.target == "builtins.getattr" &&
            (n.args.size() < 2 || n.args[1].kind() != ValueKind::string || n.args[1].as_str().substr(0, 1) == "_"))
          fail("graph.target", r, "builtins.getattr needs a public attribute name (a str not starting with '_') as args[1]");
        if (n.op == Op::call_method && n.args.empty())
          fail("graph.structure", r, "a call_method node needs the object as args[0]");
        if (refs != n.inputs)
          fail("graph.structure", r.field("inputs"), "inputs are the distinct nodes referenced by args then kwargs, in order");
        if (doc_.type(raw.meta) != kNil) n.meta = decode_meta(raw.meta, r.field("meta"), 0, core);
        if (!core && n.origin) fail("graph.structure", r.field("origin"), "only core view nodes have an origin; it is nil here");
        if (core && (n.lowering || doc_.type(raw.graph) != kNil))
          fail("graph.structure", r, "core view nodes have neither 'lowering' nor 'graph'");
        const bool has_graph = doc_.type(raw.graph) != kNil;
        if (core) {
          // the rules below are for module view nodes
        } else if (n.op == Op::call_module && !has_graph) {
          if (!n.lowering) fail("graph.structure", r, "a call_module node without 'graph' needs 'lowering'");
          const Path lp = r.field("lowering");
          const std::string mwhy = name_problem(n.lowering->module_type);
          if (!mwhy.empty()) fail("schema.name", lp.field("module_type"), mwhy);
          Scope ls;
          ls.tensors = true;
          ls.role = FileRole::weights;
          const Path ap = lp.field("attrs");
          const auto k = doc_.kids(raw.attrs);
          for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
            const std::string_view name = doc_.str(k[a]);
            const std::string awhy = name_problem(name);
            if (!awhy.empty()) fail("schema.name", ap, "attribute " + short_repr(name) + ": " + awhy);
            const Path vp = ap.field(name);
            n.lowering->attrs.emplace_back(std::string(name), decode_value(k[a + 1], vp, ls, 0));
          }
          if (v11) check_attrs(*n.lowering, lp);
        } else if (n.lowering) {
          fail("graph.structure", r, "'lowering' is only for call_module nodes of leaf modules");
        }
        if (has_graph && !core) {
          const std::int64_t sub = doc_.i64(raw.graph);
          if (n.op != Op::call_module || sub < 1 || static_cast<std::uint64_t>(sub) >= G)
            fail("graph.structure", r.field("graph"), "'graph' " + std::to_string(sub) + " must index a nested graph (1.." +
                                                          std::to_string(G - 1) + ") from a call_module node");
          n.graph = static_cast<std::size_t>(sub);
          calls[g].push_back(*n.graph);
        }
        if (v11) {
          const bool has_overload = raw.overload != UINT32_MAX && doc_.type(raw.overload) != kNil;
          const Path op = r.field("overload");
          if (n.op == Op::call_function || n.op == Op::call_method) {
            const auto& list = *find_decl(n.op == Op::call_function ? a_->functions : a_->methods, n.target);
            if (!has_overload)
              fail("graph.structure", op, "a call_function/call_method node of a 1.1 file names its overload (an index)");
            const std::int64_t ov = doc_.i64(raw.overload);
            if (ov < 0 || static_cast<std::uint64_t>(ov) >= list.size())
              fail("graph.structure", op, "overload " + std::to_string(ov) + " is not an index of the " +
                                              std::to_string(list.size()) + " overloads of " + short_repr(n.target));
            n.overload = static_cast<std::size_t>(ov);
          } else if (has_overload) {  // (module view)
            fail("graph.structure", op, "only call_function and call_method nodes have an overload; it is nil here");
          }
        }
        if (core && raw.overload != UINT32_MAX && doc_.type(raw.overload) != kNil)
          fail("graph.structure", r.field("overload"), "core view nodes have no overload; it is nil here");
        if (n.op == Op::output) ++outputs;
      }
      if (outputs != 1) fail("graph.output", q, "the graph has no output node");
      std::map<std::string, std::vector<std::string>, std::less<>> users;
      for (const Node& n : graph.nodes)
        for (const std::string& in : n.inputs) users[in].push_back(n.name);
      for (std::size_t j = 0; j < graph.nodes.size(); ++j) {
        const Node& n = graph.nodes[j];
        const auto it = users.find(n.name);
        const std::vector<std::string> want = it == users.end() ? std::vector<std::string>{} : it->second;
        if (n.users != want)
          fail("graph.structure", np.item(j).field("users"), "users are the nodes whose inputs contain this node, in graph order");
      }
    }
    // No cycle among graph calls (iterative DFS, like the Python loader).
    std::vector<int> state(G, 0);
    for (std::size_t start = 0; start < G; ++start) {
      if (state[start]) continue;
      std::vector<std::pair<std::size_t, std::size_t>> stack{{start, 0}};
      state[start] = 1;
      while (!stack.empty()) {
        auto& [gi, next] = stack.back();
        if (next == calls[gi].size()) {
          state[gi] = 2;
          stack.pop_back();
          continue;
        }
        const std::size_t callee = calls[gi][next++];
        if (state[callee] == 1)
          raise(core ? "core.structure" : "graph.structure", kManifestFile, "graph " + std::to_string(gi) + " calls graph " + std::to_string(callee) +
                                                      ", which is already being called: the graphs form a cycle");
        if (state[callee] == 0) {
          state[callee] = 1;
          stack.emplace_back(callee, 0);
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------------- declarations
  template <class T>
  static const T* find_decl(const std::vector<std::pair<std::string, T>>& v, std::string_view k) {
    for (const auto& p : v)
      if (p.first == k) return &p.second;
    return nullptr;
  }

  /// Params of a declaration: name (an identifier, schema.name), kind (schema.type), default (a Value without
  /// node or tensor references), a required param's default is nil (schema.type).
  void check_params(std::vector<Param>& ps, const Path& p, const std::vector<std::uint32_t>& defaults,
                    std::size_t& next_default, std::size_t& next_kind) {
    for (std::size_t j = 0; j < ps.size(); ++j) {
      Param& x = ps[j];
      const Path q = p.item(j);
      if (!is_ident(x.name)) fail("schema.name", q.field("name"), "parameter name " + short_repr(x.name) + " is not an identifier");
      const std::string& kind = param_kinds_[next_kind++];
      const auto k = param_kind_from_name(kind);
      if (!k) fail("schema.type", q.field("kind"), "kind " + short_repr(kind) + " is not one of positional_only, "
                                                   "positional_or_keyword, var_positional, keyword_only, var_keyword");
      x.kind = *k;
      x.default_value = decode_value(defaults[next_default++], q.field("default"), Scope{}, 0);
      if (x.required && !x.default_value.is_nil())
        fail("schema.type", q.field("default"), "a required parameter (no default) has a nil default");
    }
  }

  /// Step 8 begins with the 1.1 declarations, in manifest order: modules (key a name, each AttrDecl's name and
  /// type, forward params), then functions, then methods (key a name, each overload's params).
  void declarations() {
    std::size_t next_kind = 0;
    const Path mp = root_.field("modules");
    std::size_t nd = 0;
    for (auto& [type, d] : a_->modules) {
      const Path q = mp.field(type);
      const std::string why = name_problem(type);
      if (!why.empty()) fail("schema.name", mp, "module type " + short_repr(type) + ": " + why);
      const Path ap = q.field("attrs");
      for (std::size_t j = 0; j < d.attrs.size(); ++j) {
        AttrDecl& ad = d.attrs[j];
        const Path r = ap.item(j);
        const std::string awhy = name_problem(ad.name);
        if (!awhy.empty()) fail("schema.name", r.field("name"), awhy);
        for (std::string_view c : split_dots(ad.name))
          if (c.empty()) fail("schema.name", r.field("name"), short_repr(ad.name) + " has an empty component");
        std::string twhy;
        auto parsed = AttrType::parse(ad.type, &twhy);
        if (!parsed) fail("schema.type", r.field("type"), "not an attribute type of the grammar (docs/format.md): " + twhy);
        ad.parsed = std::move(*parsed);
      }
      check_params(d.forward, q.field("forward"), module_defaults_, nd, next_kind);
    }
    for (int which = 0; which < 2; ++which) {
      auto& map = which == 0 ? a_->functions : a_->methods;
      const auto& defaults = which == 0 ? function_defaults_ : method_defaults_;
      const Path fp = root_.field(which == 0 ? "functions" : "methods");
      std::size_t next_default = 0;
      for (auto& [name, list] : map) {
        const Path q = fp.field(name);
        const std::string why = name_problem(name);
        if (!why.empty()) fail("schema.name", fp, short_repr(name) + ": " + why);
        for (std::size_t j = 0; j < list.size(); ++j)
          check_params(list[j].params, q.item(j).field("params"), defaults, next_default, next_kind);
      }
    }
  }

  /// Section E: each attribute of a 1.1 record against its module type's declaration ("lowering.attr"). The
  /// record's module_type must be declared; then, in record order, an attribute either matches a declared name
  /// ("*" = a decimal index) and has its type, or is "P.rest" where P is a declared attribute allowing `module`
  /// whose value in the record is a module Value of type M, and rest is checked against modules[M]. Every module
  /// Value names a declared type.
  void check_attrs(const Lowering& l, const Path& lp) const {
    const ModuleDecl* d = find_decl(a_->modules, l.module_type);
    if (!d)
      fail("lowering.attr", lp.field("module_type"), "module type " + short_repr(l.module_type) + " has no declaration in "
                                                     "the manifest's modules");
    const Path ap = lp.field("attrs");
    for (const auto& [name, value] : l.attrs) check_attr(l, *d, l.module_type, "", name, value, ap.field(name));
  }

  void check_attr(const Lowering& l, const ModuleDecl& d, const std::string& type, const std::string& prefix,
                  std::string_view rest, const Value& value, const Path& p) const {
    if (auto ad = d.find_attr(rest)) {
      if (!ad->parsed.accepts(value))
        fail("lowering.attr", p, "attribute " + short_repr(prefix + std::string(rest)) + " of " + short_repr(l.module_type) +
                                     " is " + value.repr().substr(0, 80) + ", not of the declared type " + ad->type +
                                     " (of " + type + "." + ad->name + ")");
      if (value.kind() == ValueKind::module && !find_decl(a_->modules, value.module_type()))
        fail("lowering.attr", p, "module type " + short_repr(value.module_type()) + " has no declaration in the "
                                 "manifest's modules");
      return;
    }
    const auto parts = split_dots(rest);
    std::size_t len = 0;
    for (std::size_t k = 0; k + 1 < parts.size(); ++k) {
      len += parts[k].size() + (k ? 1 : 0);
      const std::string_view head = rest.substr(0, len);
      const auto ad = d.find_attr(head);
      if (!ad || !ad->parsed.allows_module()) continue;
      const std::string child = prefix + std::string(head);
      const auto cv = l.find_attr(child);
      if (!cv || cv->kind() != ValueKind::module) continue;
      const ModuleDecl* cd = find_decl(a_->modules, cv->module_type());
      if (!cd)
        fail("lowering.attr", p, "module type " + short_repr(cv->module_type()) + " (of " + short_repr(child) +
                                     ") has no declaration in the manifest's modules");
      check_attr(l, *cd, cv->module_type(), child + ".", rest.substr(len + 1), value, p);
      return;
    }
    fail("lowering.attr", p, "attribute " + short_repr(prefix + std::string(rest)) + " is not declared by " + short_repr(type) +
                                 " (modules[" + short_repr(type) + "].attrs), nor by the declaration of a child module");
  }

  // ---------------------------------------------------------------------------------------------- core view
  /// Step 9b (format 1.2), after the signature and before golden, in this order: (1) core.ops (each key is
  /// name.overload of its schema with '::' as '.', core.op; argument defaults without references; a required
  /// argument's default is nil, schema.type); (2) the core graphs, node by node as for graphs (ops restricted,
  /// core.op for a target without schema); (3) when graphs is empty: the signature against the core root;
  /// (4) core.inputs against the root placeholders; (5) core.outputs against the output node's args[0];
  /// (6) origin links (graph.reference); (7) the symbol expressions of Meta shapes, in file order (core.symbol);
  /// (8) each symbol: its name, min <= max, input a user_input, dim < that input's rank (core.symbol).
  void core_view() {
    if (!a_->core) return;
    CoreView& cv = *a_->core;
    const Path cp = root_.field("core");
    {
      const Path op = cp.field("ops");
      std::size_t next_default = 0;
      for (auto& [key, sch] : cv.ops) {
        const Path q = op.field(key);
        std::string want = sch.name;
        const auto colons = want.find("::");
        if (colons != std::string::npos) want.replace(colons, 2, ".");
        if (!sch.overload.empty() || !core_py_target(key)) want += "." + sch.overload;
        if (key != want)
          fail("core.op", q, "the key " + short_repr(key) + " is not the schema's qualified name " + short_repr(want));
        for (int which = 0; which < 2; ++which) {
          auto& args = which == 0 ? sch.arguments : sch.returns;
          const Path ap = q.field(which == 0 ? "arguments" : "returns");
          for (std::size_t j = 0; j < args.size(); ++j) {
            args[j].default_value = decode_value(op_defaults_[next_default++], ap.item(j).field("default"), Scope{}, 0);
            if (args[j].required && !args[j].default_value.is_nil())
              fail("schema.type", ap.item(j).field("default"), "a required argument (no default) has a nil default");
          }
        }
      }
    }
    check_graphs(cv.graphs, core_raw_, cp.field("graphs"), true);
    const Graph& root = cv.graphs[0];
    {  // node by node: its shape expressions, then its origin (section 10, step 10)
      const Path gp = cp.field("graphs");
      for (std::size_t g = 0; g < cv.graphs.size(); ++g)
        for (std::size_t j = 0; j < cv.graphs[g].nodes.size(); ++j) {
          const Node& n = cv.graphs[g].nodes[j];
          check_sym_exprs(g, j);
          if (!n.origin) continue;
          const std::int64_t lg = core_raw_[g][j].origin_graph;
          const Path q = gp.item(g).field("nodes").item(j).field("origin");
          if (lg < 0 || static_cast<std::uint64_t>(lg) >= a_->graphs.size() ||
              !a_->graphs[static_cast<std::size_t>(lg)].find_node(n.origin->node))
            fail("graph.reference", q, "origin (graph " + std::to_string(lg) + ", node " + short_repr(n.origin->node) +
                                           ") is not a node of the module view");
          const_cast<Node&>(n).origin->graph = static_cast<std::size_t>(lg);
          a_->core_links[{static_cast<std::size_t>(lg), n.origin->node}].push_back(NodeLink{g, n.name});
        }
    }
    if (a_->graphs.empty()) signature_of(root, true);
    {
      const Path ip = cp.field("inputs");
      std::vector<const Node*> placeholders;
      for (const Node& n : root.nodes)
        if (n.op == Op::placeholder) placeholders.push_back(&n);
      if (cv.inputs.size() != placeholders.size())
        fail("core.structure", ip, "core.inputs has " + std::to_string(cv.inputs.size()) + " entries; the core root "
                                   "graph has " + std::to_string(placeholders.size()) + " placeholders");
      std::size_t users = 0;
      for (std::size_t j = 0; j < cv.inputs.size(); ++j) {
        CoreInput& in = cv.inputs[j];
        const Path q = ip.item(j);
        if (in.name != placeholders[j]->name)
          fail("core.structure", q.field("name"), short_repr(in.name) + " is not the core root graph's placeholder " +
                                                      std::to_string(j) + " (" + short_repr(placeholders[j]->name) + ")");
        const std::string& kind = core_input_kinds_[j];
        bool known = false;
        for (int k = 0; k < 4; ++k)
          if (kind == core_input_kind_name(static_cast<CoreInputKind>(k))) {
            in.kind = static_cast<CoreInputKind>(k);
            known = true;
          }
        if (!known) fail("core.structure", q.field("kind"), "kind " + short_repr(kind) + " is not one of user_input, "
                                                            "parameter, buffer, constant");
        if (in.kind == CoreInputKind::user_input) {
          const auto& sig = a_->signature.inputs;
          if (users >= sig.size() || sig[users] != in.target)
            fail("core.structure", q.field("target"), "user input " + std::to_string(users) + " binds to " +
                                                          short_repr(in.target) + "; expected signature.inputs[" +
                                                          std::to_string(users) + "]" +
                                                          (users < sig.size() ? " (" + short_repr(sig[users]) + ")" : " (absent)"));
          ++users;
        } else {
          const auto it = a_->tensor_index.find(in.target);
          const FileEntry* f = it == a_->tensor_index.end() ? nullptr : file_named(a_->tensors[it->second].file);
          if (!f || f->role != FileRole::weights)
            fail("tensor.reference", q.field("target"), std::string(core_input_kind_name(in.kind)) + " " +
                                                            short_repr(in.target) + " is not in the tensor table");
        }
      }
      if (users != a_->signature.inputs.size())
        fail("core.structure", ip, "core.inputs has " + std::to_string(users) + " user inputs; the signature has " +
                                       std::to_string(a_->signature.inputs.size()));
    }
    {
      const Path op = cp.field("outputs");
      const Value& out = root.output_node().args.at(0);
      std::vector<Value> elems;
      if (out.kind() == ValueKind::tuple || out.kind() == ValueKind::list) elems = out.items();
      else elems.push_back(out);
      if (cv.outputs.size() != elems.size())
        fail("core.structure", op, "core.outputs has " + std::to_string(cv.outputs.size()) + " entries; the core root "
                                   "output node returns " + std::to_string(elems.size()));
      for (std::size_t j = 0; j < cv.outputs.size(); ++j) {
        CoreOutput& o = cv.outputs[j];
        const Path q = op.item(j);
        const std::string want = elems[j].kind() == ValueKind::node ? elems[j].node_name() : std::string();
        if (o.name != want)
          fail("core.structure", q.field("name"), short_repr(o.name) + " is not element " + std::to_string(j) +
                                                      " of the output node's args[0] (" + short_repr(want) + ")");
        const std::string& kind = core_output_kinds_[j];
        if (kind == "user_output") o.kind = CoreOutputKind::user_output;
        else if (kind == "buffer_mutation") o.kind = CoreOutputKind::buffer_mutation;
        else fail("core.structure", q.field("kind"), "kind " + short_repr(kind) + " is not one of user_output, buffer_mutation");
        if (o.kind == CoreOutputKind::user_output && !o.target.empty())
          fail("core.structure", q.field("target"), "a user_output's target is \"\"");
        if (o.kind == CoreOutputKind::buffer_mutation) {
          const auto t = a_->tensor_index.find(o.target);
          if (t == a_->tensor_index.end())
            fail("tensor.reference", q.field("target"), "buffer " + short_repr(o.target) + " is not in the tensor table");
          if (a_->tensors[t->second].kind != TensorKind::buffer)
            fail("core.structure", q.field("target"), "a buffer_mutation updates a buffer; " + short_repr(o.target) +
                                                          " is not of kind buffer");
        }
      }
    }
    {
      const Path sp = cp.field("symbols");
      for (std::size_t j = 0; j < cv.symbols.size(); ++j) {
        const auto& [name, sym] = cv.symbols[j];
        const Path q = sp.field(name);
        bool ok = name.size() >= 2 && name[0] == 's';
        for (std::size_t c = 1; ok && c < name.size(); ++c) ok = name[c] >= '0' && name[c] <= '9';
        if (!ok) fail("core.symbol", sp, "symbol name " + short_repr(name) + " is not 's' and digits");
        if (sym.min < 0 || (sym.max && *sym.max < sym.min))
          fail("core.symbol", q, "range [" + std::to_string(sym.min) + ", " +
                                     (sym.max ? std::to_string(*sym.max) : std::string("inf")) +
                                     "] is not 0 <= min <= max");
        const std::int64_t in = symbol_input_[j], dim = symbol_dim_[j];
        if (in < 0 || static_cast<std::uint64_t>(in) >= cv.inputs.size() ||
            cv.inputs[static_cast<std::size_t>(in)].kind != CoreInputKind::user_input)
          fail("core.symbol", q.field("input"), "input " + std::to_string(in) + " is not the index of a user_input "
                                                "of core.inputs");
        const Node& ph = root.node_at(cv.inputs[static_cast<std::size_t>(in)].name);
        const std::size_t rank = ph.meta && ph.meta->kind == MetaKind::tensor ? ph.meta->shape.size() : 0;
        if (dim < 0 || static_cast<std::uint64_t>(dim) >= rank)
          fail("core.symbol", q.field("dim"), "dim " + std::to_string(dim) + " is not a dimension of input " +
                                                  short_repr(ph.name) + " (rank " + std::to_string(rank) + ")");
        cv.symbols[j].second.input = static_cast<std::size_t>(in);
        cv.symbols[j].second.dim = static_cast<std::size_t>(dim);
      }
    }
  }

  /// The node references of a Value, depth first (lists, tuples, dict values; slices' parts).
  static void collect_node_refs(const Value& v, std::vector<std::string>& out) {
    switch (v.kind()) {
      case ValueKind::node: out.push_back(v.node_name()); break;
      case ValueKind::list: case ValueKind::tuple:
        for (const Value& x : v.items()) collect_node_refs(x, out);
        break;
      case ValueKind::dict:
        for (const auto& kv : v.as_dict().items) collect_node_refs(kv.second, out);
        break;
      case ValueKind::slice:
        collect_node_refs(v.as_slice().start(), out);
        collect_node_refs(v.as_slice().stop(), out);
        collect_node_refs(v.as_slice().step(), out);
        break;
      default: break;
    }
  }

  // ---------------------------------------------------------------------------------------------- signature
  void signature() { signature_of(a_->graphs[0], false); }
  /// The signature against a root graph: the module view's, or the core view's when graphs is empty (1.2; then
  /// signature.inputs are the core root's user-input placeholders).
  void signature_of(const Graph& root, bool core) {
    const Path sp = root_.field("signature");
    std::vector<std::string> placeholders;
    for (const Node& n : root.nodes)
      if (n.op == Op::placeholder) placeholders.push_back(n.name);
    if (core) {
      placeholders.clear();
      const auto& ins = a_->core->inputs;
      for (std::size_t j = 0; j < ins.size(); ++j)
        if (core_input_kinds_[j] == "user_input") placeholders.push_back(ins[j].name);
    }
    if (a_->signature.inputs != placeholders)
      fail("graph.structure", sp.field("inputs"), "signature inputs differ from the root placeholders");
    Scope s;
    s.graph = &root;
    s.limit = root.nodes.size();
    s.core_graphs = core ? a_->core->graphs.size() : 0;
    a_->signature.output = decode_value(sig_output_, sp.field("output"), s, 0);
    if (!core) {
      if (!(a_->signature.output == root.nodes.back().args.at(0)))
        fail("graph.output", sp.field("output"), "signature output differs from the output node's args[0]");
      return;
    }
    // core view only: the program's result structure, whose node references (depth first) are the user outputs
    std::vector<std::string> refs, users;
    collect_node_refs(a_->signature.output, refs);
    const auto& outs = a_->core->outputs;
    for (std::size_t j = 0; j < outs.size(); ++j)
      if (core_output_kinds_[j] == "user_output") users.push_back(outs[j].name);
    if (refs != users)
      fail("graph.output", sp.field("output"), "signature output's node references are not the core view's user "
                                               "outputs in order");
  }

  // ---------------------------------------------------------------------------------------------- golden
  void golden() {
    if (!a_->golden) return;
    Golden& g = *a_->golden;
    const Path gp = root_.field("golden");
    if (golden_mode_ == "outputs") g.mode = GoldenMode::outputs;
    else if (golden_mode_ == "nodes") g.mode = GoldenMode::nodes;
    else fail("schema.type", gp.field("mode"), "mode " + short_repr(golden_mode_) + " is not one of outputs, nodes");
    const FileEntry* f = file_named(g.file);
    if (!f || f->role != FileRole::golden)
      fail("tensor.reference", gp.field("file"), "golden file " + short_repr(g.file) + " is not a listed golden file");
    Scope s;
    s.tensors = true;
    s.role = FileRole::golden;
    {
      const Path ip = gp.field("inputs");
      const auto k = doc_.kids(golden_inputs_);
      for (std::size_t j = 0; j < k.size(); ++j) g.inputs.push_back(decode_value(k[j], ip.item(j), s, 0));
    }
    g.outputs = decode_value(golden_outputs_, gp.field("outputs"), s, 0);
    {
      const Path np = gp.field("nodes");
      const auto k = doc_.kids(golden_nodes_);
      for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
        const std::string name(doc_.str(k[a]));
        if (a_->graphs.empty() || !a_->graphs[0].find_node(name)) fail("graph.reference", np, "golden node " + short_repr(name) + " is not a root node");
        const Path vp = np.field(doc_.str(k[a]));
        g.nodes.emplace_back(name, decode_value(k[a + 1], vp, s, 0));
      }
    }
    if (golden_core_nodes_ != UINT32_MAX) {
      const Path np = gp.field("core_nodes");
      const auto k = doc_.kids(golden_core_nodes_);
      for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
        const std::string name(doc_.str(k[a]));
        if (!a_->core || !a_->core->root().find_node(name))
          fail("graph.reference", np, "golden core node " + short_repr(name) + " is not a core root node");
        const Path vp = np.field(doc_.str(k[a]));
        g.core_nodes.emplace_back(name, decode_value(k[a + 1], vp, s, 0));
      }
    }
    const Path tp = gp.field("tolerances");
    for (const auto& kv : tolerance_raw_) {
      const auto d = dtype_from_name(kv.first);
      if (!d || !is_storage_dtype(*d)) fail("tensor.dtype", tp, "tolerance for unknown dtype " + short_repr(kv.first));
      const Tolerance& t = kv.second;
      if (!std::isfinite(t.rtol) || t.rtol < 0 || !std::isfinite(t.atol) || t.atol < 0)
        fail("schema.type", tp, "tolerance for " + kv.first + " must be finite and >= 0");
      g.tolerances.emplace_back(*d, t);
    }
  }

  void digest() const {
    const std::string& d = a_->digest;
    if (d.size() != 71 || d.compare(0, 7, "sha256:") != 0 || !is_lower_hex(std::string_view(d).substr(7), 64))
      fail("schema.type", root_.field("digest"), "digest is not 'sha256:' and 64 lowercase hex digits");
  }

  const Path root_{};
  LoadOptions opts_;
  std::shared_ptr<ArtifactData> a_;
  Fd dirfd_;
  MpDoc doc_;
  std::vector<std::string> file_paths_, file_roles_, tensor_dtypes_, tensor_kinds_;
  std::vector<std::vector<std::string>> tensor_mesh_kinds_;  // 1.3: each entry's MeshDim kinds as written
  mutable std::vector<std::string> param_kinds_;  // every Param's kind, in schema order
  std::vector<std::uint32_t> module_defaults_, function_defaults_, method_defaults_;  // Param defaults, raw
  std::vector<std::vector<NodeRaw>> raw_, core_raw_;
  std::vector<std::string> core_input_kinds_, core_output_kinds_;
  std::vector<std::uint32_t> op_defaults_;
  std::vector<std::int64_t> symbol_input_, symbol_dim_;
  std::uint32_t golden_core_nodes_ = UINT32_MAX;
  struct SymPending {
    std::size_t graph, node;
    std::string text, where;
  };
  mutable std::vector<SymPending> sym_pending_;  // core nodes' shape expressions, in file order
  mutable std::pair<std::size_t, std::size_t> sym_node_{0, 0};
  mutable std::size_t sym_cursor_ = 0;
  std::uint32_t sig_output_ = 0, golden_inputs_ = 0, golden_outputs_ = 0, golden_nodes_ = 0;
  std::string golden_mode_;
  std::vector<std::pair<std::string, Tolerance>> tolerance_raw_;
};

}  // namespace detail

// ================================================================================================ SymExpr

namespace detail {
class SymParser {
 public:
  SymParser(std::string_view t, SymExpr& e) : t_(t), e_(e) {}
  bool run(std::string* why) {
    try {
      e_.root_ = expr(0);
      if (p_ != t_.size()) err("unexpected " + short_char() + " at offset " + std::to_string(p_));
      return true;
    } catch (const std::string& w) {
      if (why) *why = w;
      return false;
    }
  }

 private:
  [[noreturn]] void err(const std::string& w) { throw w; }
  std::string short_char() const { return p_ < t_.size() ? "'" + std::string(1, t_[p_]) + "'" : "end of text"; }
  bool eat(std::string_view tok) {
    if (t_.substr(p_, tok.size()) != tok) return false;
    p_ += tok.size();
    return true;
  }
  std::int32_t add(SymExpr::K k, std::int64_t v, std::int32_t a, std::int32_t b) {
    e_.nodes_.push_back({k, v, a, b});
    return static_cast<std::int32_t>(e_.nodes_.size() - 1);
  }
  std::int32_t expr(int depth) {
    if (depth > 64) err("nests deeper than 64 levels");
    std::int32_t l = term(depth);
    for (;;) {
      if (eat("+")) l = add(SymExpr::K::add, 0, l, term(depth));
      else if (eat("-")) l = add(SymExpr::K::sub, 0, l, term(depth));
      else return l;
    }
  }
  std::int32_t term(int depth) {
    std::int32_t l = factor(depth);
    for (;;) {
      if (eat("*")) l = add(SymExpr::K::mul, 0, l, factor(depth));
      else if (eat("//")) l = add(SymExpr::K::floordiv, 0, l, factor(depth));
      else if (eat("%")) l = add(SymExpr::K::mod, 0, l, factor(depth));
      else return l;
    }
  }
  std::int32_t factor(int depth) {
    if (depth > 64) err("nests deeper than 64 levels");
    if (p_ >= t_.size()) err("expected a factor, found end of text");
    const char c = t_[p_];
    if (c >= '0' && c <= '9') {
      std::int64_t v = 0;
      const std::size_t start = p_;
      while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') {
        const int dgt = t_[p_++] - '0';
        if (v > (INT64_MAX - dgt) / 10) err("the integer at offset " + std::to_string(start) + " is outside int64");
        v = v * 10 + dgt;
      }
      return add(SymExpr::K::num, v, -1, -1);
    }
    if (c == 's' && p_ + 1 < t_.size() && t_[p_ + 1] >= '0' && t_[p_ + 1] <= '9') {
      const std::size_t start = p_++;
      while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
      const std::string name(t_.substr(start, p_ - start));
      auto& syms = e_.symbols_;
      auto it = std::find(syms.begin(), syms.end(), name);
      if (it == syms.end()) it = syms.insert(syms.end(), name);
      return add(SymExpr::K::sym, it - syms.begin(), -1, -1);
    }
    if (eat("(")) {
      const std::int32_t e = expr(depth + 1);
      if (!eat(")")) err("expected ')', found " + short_char() + " at offset " + std::to_string(p_));
      return e;
    }
    if (eat("-")) return add(SymExpr::K::neg, 0, factor(depth + 1), -1);
    const bool mx = eat("max("), mn = !mx && eat("min(");
    if (mx || mn) {
      const std::int32_t a = expr(depth + 1);
      if (!eat(",")) err("expected ',', found " + short_char() + " at offset " + std::to_string(p_));
      const std::int32_t b = expr(depth + 1);
      if (!eat(")")) err("expected ')', found " + short_char() + " at offset " + std::to_string(p_));
      return add(mx ? SymExpr::K::max : SymExpr::K::min, 0, a, b);
    }
    err("expected an int, a symbol s<digits>, '(', '-', max( or min(, found " + short_char() + " at offset " +
        std::to_string(p_));
  }

  std::string_view t_;
  SymExpr& e_;
  std::size_t p_ = 0;
};
}  // namespace detail

inline std::optional<SymExpr> SymExpr::parse(std::string_view text, std::string* why) {
  SymExpr e;
  e.text_ = std::string(text);
  if (text.empty()) {
    if (why) *why = "empty expression";
    return std::nullopt;
  }
  detail::SymParser p(text, e);
  if (!p.run(why)) return std::nullopt;
  return e;
}

inline std::int64_t SymExpr::eval_node(std::int32_t i, const std::vector<std::int64_t>& vals) const {
  const N& n = nodes_[static_cast<std::size_t>(i)];
  auto bad = [this](const std::string& m) -> std::int64_t { detail::raise("core.symbol", text_, m); };
  std::int64_t a = 0, b = 0, r = 0;
  if (n.a >= 0) a = eval_node(n.a, vals);
  if (n.b >= 0) b = eval_node(n.b, vals);
  switch (n.k) {
    case K::num: return n.v;
    case K::sym: return vals[static_cast<std::size_t>(n.v)];
    case K::add: if (__builtin_add_overflow(a, b, &r)) return bad("int64 overflow"); return r;
    case K::sub: if (__builtin_sub_overflow(a, b, &r)) return bad("int64 overflow"); return r;
    case K::mul: if (__builtin_mul_overflow(a, b, &r)) return bad("int64 overflow"); return r;
    case K::neg: if (__builtin_sub_overflow(std::int64_t{0}, a, &r)) return bad("int64 overflow"); return r;
    case K::floordiv: case K::mod: {
      if (b == 0) return bad("division by zero");
      if (a == INT64_MIN && b == -1) return bad("int64 overflow");
      std::int64_t q = a / b, m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) {  // Python: floor division, the remainder takes the divisor's sign
        q -= 1;
        m += b;
      }
      return n.k == K::floordiv ? q : m;
    }
    case K::max: return a > b ? a : b;
    case K::min: return a < b ? a : b;
  }
  return 0;
}

inline std::int64_t SymExpr::eval(const std::map<std::string, std::int64_t, std::less<>>& bindings) const {
  std::vector<std::int64_t> vals;
  for (const std::string& s : symbols_) {
    const auto it = bindings.find(s);
    if (it == bindings.end()) detail::raise("core.symbol", text_, "symbol " + s + " is not bound");
    vals.push_back(it->second);
  }
  if (root_ < 0) detail::raise("core.symbol", text_, "empty expression");
  return eval_node(root_, vals);
}

inline Artifact load(const std::string& dir, const LoadOptions& options) {
  return detail::Loader(dir, options).run();
}

inline SafetensorsFile read_safetensors(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) detail::raise("artifact.missing", path, "the file does not exist");
    detail::raise("io.error", path, "cannot stat: " + detail::errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) detail::raise("artifact.not_regular", path, "not a regular file");
  detail::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) detail::raise("io.error", path, "cannot open: " + detail::errno_text(errno));
  struct stat st2 {};
  if (::fstat(fd.get(), &st2) != 0 || !S_ISREG(st2.st_mode) || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev)
    detail::raise("artifact.not_regular", path, "changed while being opened");
  const auto size = static_cast<std::uint64_t>(st2.st_size);
  SafetensorsFile out;
  out.bytes_ = std::make_shared<std::vector<std::uint64_t>>(static_cast<std::size_t>((size + 7) / 8));
  auto* base = reinterpret_cast<std::byte*>(out.bytes_->data());
  detail::read_exact(fd.get(), reinterpret_cast<char*>(base), static_cast<std::size_t>(size), path);
  const detail::StFile sf = detail::check_safetensors(base, size, path);
  for (const detail::StEntry& e : sf.entries) {
    SafetensorsFile::Entry x;
    x.name = e.name;
    x.dtype = e.dtype;
    x.shape = e.shape;
    x.data = base + 8 + sf.header_len + e.begin;
    x.nbytes = static_cast<std::size_t>(e.end - e.begin);
    out.entries_.push_back(std::move(x));
  }
  return out;
}

inline std::optional<AttrType> AttrType::parse(std::string_view text, std::string* why) {
  const auto bad = [why, text](const std::string& m) -> std::optional<AttrType> {
    if (why) *why = detail::short_repr(text) + ": " + m;
    return std::nullopt;
  };
  static const std::pair<const char*, Base> kBases[] = {
      {"tensor", Base::tensor}, {"int", Base::integer}, {"float", Base::floating}, {"bool", Base::boolean},
      {"str", Base::string},    {"none", Base::none},   {"function", Base::function}, {"module", Base::module},
      {"dtype", Base::dtype},   {"device", Base::device}};
  const auto word_char = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  };
  AttrType t;
  std::size_t i = 0;
  if (text.empty()) return bad("an empty type");
  while (true) {
    std::size_t j = i;
    while (j < text.size() && text[j] >= 'a' && text[j] <= 'z') ++j;
    const std::string_view head = text.substr(i, j - i);
    Alt alt;
    if (head.empty() && i < text.size() && text[i] == '(') {  // "(" scalar { "|" scalar } ")" "[" [count] "]"
      static const std::pair<const char*, Base> kScalars[] = {
          {"int", Base::integer}, {"float", Base::floating}, {"bool", Base::boolean}, {"str", Base::string},
          {"none", Base::none}};
      alt.base = Base::tuple;
      i += 1;
      while (true) {
        std::size_t k = i;
        while (k < text.size() && text[k] >= 'a' && text[k] <= 'z') ++k;
        const std::string_view sc = text.substr(i, k - i);
        bool known = false;
        for (const auto& b : kScalars)
          if (sc == b.first) { alt.elems.push_back(b.second); known = true; }
        if (!known) return bad("a parenthesised tuple element is int, float, bool, str or none, found " + detail::short_repr(sc));
        if (k < text.size() && text[k] == '|') { i = k + 1; continue; }
        if (k < text.size() && text[k] == ')') { i = k + 1; break; }
        return bad("'(' is not closed by ')'");
      }
      if (i >= text.size() || text[i] != '[') return bad("a parenthesised element union is followed by '[' [count] ']'");
    } else if (head == "enum" && j < text.size() && text[j] == '(') {
      alt.base = Base::enumeration;
      i = j + 1;
      while (true) {
        std::size_t k = i;
        while (k < text.size() && word_char(text[k])) ++k;
        if (k == i) return bad("enum( needs words of [A-Za-z0-9_] separated by ','");
        alt.words.emplace_back(text.substr(i, k - i));
        if (k < text.size() && text[k] == ',') { i = k + 1; continue; }
        if (k < text.size() && text[k] == ')') { i = k + 1; break; }
        return bad("enum( is not closed by ')'");
      }
    } else {
      bool known = false;
      for (const auto& b : kBases)
        if (head == b.first) { alt.base = b.second; known = true; }
      if (!known) return bad("unknown type " + detail::short_repr(head) + " at byte " + std::to_string(i));
      i = j;
      if (i < text.size() && text[i] == '[') {
        if (alt.base != Base::integer && alt.base != Base::floating && alt.base != Base::boolean && alt.base != Base::string)
          return bad("only int, float, bool and str form tuples (X[N])");
        alt.elems = {alt.base};
        alt.base = Base::tuple;
      }
    }
    if (alt.base == Base::tuple) {
      std::size_t k = i + 1;
      while (k < text.size() && text[k] >= '0' && text[k] <= '9') ++k;
      const std::string_view digits = text.substr(i + 1, k - i - 1);
      if (k >= text.size() || text[k] != ']') return bad("a tuple count is '[' digits ']' or '[]'");
      if (!digits.empty()) {
        if (!detail::is_decimal_index(digits) || digits.size() > 9) return bad("bad tuple count " + detail::short_repr(digits));
        alt.count = static_cast<std::size_t>(std::stoul(std::string(digits)));
      }
      i = k + 1;
    }
    t.alts_.push_back(std::move(alt));
    if (i == text.size()) break;
    if (text[i] != '|') return bad("expected '|' at byte " + std::to_string(i));
    ++i;
  }
  return t;
}

inline bool AttrType::accepts(const Value& v) const {
  const auto elem_ok = [](const std::vector<Base>& elems, const Value& x) {
    for (Base e : elems) {
      switch (e) {
        case Base::integer: if (x.kind() == ValueKind::integer) return true; break;
        case Base::floating: if (x.kind() == ValueKind::floating) return true; break;
        case Base::boolean: if (x.kind() == ValueKind::boolean) return true; break;
        case Base::none: if (x.is_nil()) return true; break;
        default: if (x.kind() == ValueKind::string) return true; break;
      }
    }
    return false;
  };
  for (const Alt& a : alts_) {
    switch (a.base) {
      case Base::tensor: if (v.kind() == ValueKind::tensor) return true; break;
      case Base::integer: case Base::floating: case Base::boolean: case Base::string:
        if (elem_ok({a.base}, v)) return true;
        break;
      case Base::none: if (v.is_nil()) return true; break;
      case Base::function: if (v.kind() == ValueKind::function) return true; break;
      case Base::module: if (v.kind() == ValueKind::module) return true; break;
      case Base::dtype: if (v.kind() == ValueKind::dtype) return true; break;
      case Base::device: if (v.kind() == ValueKind::device) return true; break;
      case Base::enumeration:
        if (v.kind() == ValueKind::string)
          for (const std::string& w : a.words)
            if (v.as_str() == w) return true;
        break;
      case Base::tuple: {
        if (v.kind() != ValueKind::tuple) break;
        const auto& items = v.items();
        if (a.count && items.size() != *a.count) break;
        bool ok = true;
        for (const Value& x : items) ok = ok && elem_ok(a.elems, x);
        if (ok) return true;
        break;
      }
    }
  }
  return false;
}

inline optional_ref<const AttrDecl> ModuleDecl::find_attr(std::string_view attr) const {
  for (const AttrDecl& d : attrs)
    if (detail::attr_name_matches(d.name, attr)) return d;
  return std::nullopt;
}

namespace detail {

/// Writers' shortest array/map header (section 2).
inline void mp_header(std::string& out, std::size_t n, bool map) {
  if (n <= 15) out += static_cast<char>((map ? 0x80 : 0x90) | n);
  else if (n <= 0xffff) { out += map ? '\xde' : '\xdc'; out += static_cast<char>(n >> 8); out += static_cast<char>(n & 0xff); }
  else { out += map ? '\xdf' : '\xdd'; for (int k = 3; k >= 0; --k) out += static_cast<char>((n >> (8 * k)) & 0xff); }
}
inline void mp_str(std::string& out, std::string_view s) {
  const std::size_t n = s.size();
  if (n <= 31) out += static_cast<char>(0xa0 | n);
  else if (n <= 0xff) { out += '\xd9'; out += static_cast<char>(n); }
  else if (n <= 0xffff) { out += '\xda'; out += static_cast<char>(n >> 8); out += static_cast<char>(n & 0xff); }
  else { out += '\xdb'; for (int k = 3; k >= 0; --k) out += static_cast<char>((n >> (8 * k)) & 0xff); }
  out.append(s);
}

/// The schema objects of the digest (section 7): their fields in order, the encoding of each field's default
/// ("" when it has none), whether it came with format 1.1, and the object kind of its value.
enum class DigestObj : std::uint8_t {
  none, graph, node, lowering, tensor, signature, nodes, core, graphs, core_io, core_io_list, op_schema, op_map, op_arg,
  op_args, symbol, symbol_map, placement, mesh_dims, mesh_dim
};
struct DigestField {
  const char* name;
  const char* dflt;
  int minor;  // the minor version that added the field
  DigestObj obj;
};
inline const std::vector<DigestField>& digest_fields(DigestObj o) {
  static const std::vector<DigestField> graph = {
      {"name", "", false, DigestObj::none}, {"nodes", "", false, DigestObj::nodes}, {"training", "\xc2", true, DigestObj::none}};
  static const std::vector<DigestField> node = {
      {"name", "", false, DigestObj::none},   {"op", "", false, DigestObj::none},     {"target", "", false, DigestObj::none},
      {"args", "", false, DigestObj::none},   {"kwargs", "", false, DigestObj::none}, {"inputs", "", false, DigestObj::none},
      {"users", "", false, DigestObj::none},  {"meta", "", false, DigestObj::none},   {"lowering", "", false, DigestObj::lowering},
      {"graph", "", false, DigestObj::none},  {"overload", "\xc0", true, DigestObj::none},
      {"origin", "\xc0", 2, DigestObj::none}};
  static const std::vector<DigestField> lowering = {
      {"module_type", "", false, DigestObj::none}, {"version", "", false, DigestObj::none},
      {"module_version", "", false, DigestObj::none}, {"attrs", "", false, DigestObj::none},
      {"training", "\xc2", true, DigestObj::none}};
  static const std::vector<DigestField> tensor = {
      {"name", "", false, DigestObj::none}, {"dtype", "", false, DigestObj::none}, {"shape", "", false, DigestObj::none},
      {"file", "", false, DigestObj::none}, {"key", "", false, DigestObj::none},   {"sha256", "", false, DigestObj::none},
      {"kind", "\xa0", true, DigestObj::none}, {"requires_grad", "\xc2", true, DigestObj::none},
      {"persistent", "\xc3", true, DigestObj::none}, {"placement", "\xc0", 3, DigestObj::placement}};
  static const std::vector<DigestField> placement = {
      {"mesh", "", 3, DigestObj::none}, {"dims", "", 3, DigestObj::mesh_dims}, {"mesh_dim_names", "\x90", 3, DigestObj::none}};
  static const std::vector<DigestField> mesh_dim = {{"kind", "", 3, DigestObj::none}, {"dim", "", 3, DigestObj::none}};
  static const std::vector<DigestField> signature = {{"inputs", "", false, DigestObj::none},
                                                     {"output", "", false, DigestObj::none}};
  static const std::vector<DigestField> core = {
      {"graphs", "", 2, DigestObj::graphs}, {"inputs", "", 2, DigestObj::core_io_list},
      {"outputs", "", 2, DigestObj::core_io_list}, {"ops", "", 2, DigestObj::op_map},
      {"symbols", "", 2, DigestObj::symbol_map}};
  static const std::vector<DigestField> core_io = {
      {"name", "", 2, DigestObj::none}, {"kind", "", 2, DigestObj::none}, {"target", "", 2, DigestObj::none}};
  static const std::vector<DigestField> op_schema = {
      {"name", "", 2, DigestObj::none}, {"overload", "", 2, DigestObj::none}, {"arguments", "", 2, DigestObj::op_args},
      {"returns", "", 2, DigestObj::op_args}};
  static const std::vector<DigestField> op_arg = {
      {"name", "", 2, DigestObj::none},    {"type", "", 2, DigestObj::none},     {"kwarg_only", "", 2, DigestObj::none},
      {"default", "", 2, DigestObj::none}, {"required", "", 2, DigestObj::none}, {"mutates", "", 2, DigestObj::none}};
  static const std::vector<DigestField> symbol = {
      {"min", "", 2, DigestObj::none}, {"max", "", 2, DigestObj::none}, {"input", "", 2, DigestObj::none},
      {"dim", "", 2, DigestObj::none}};
  static const std::vector<DigestField> empty;
  switch (o) {
    case DigestObj::core: return core;
    case DigestObj::core_io: return core_io;
    case DigestObj::op_schema: return op_schema;
    case DigestObj::op_arg: return op_arg;
    case DigestObj::symbol: return symbol;
    case DigestObj::graph: return graph;
    case DigestObj::node: return node;
    case DigestObj::lowering: return lowering;
    case DigestObj::tensor: return tensor;
    case DigestObj::placement: return placement;
    case DigestObj::mesh_dim: return mesh_dim;
    case DigestObj::signature: return signature;
    default: return empty;
  }
}

/// Re-encodes a validated schema object as a writer would: declared fields only (x- fields dropped), in declared
/// order, absent defaulted fields written with their default; Values and Meta in the writers' shortest forms.
inline void digest_encode(const MpDoc& d, std::uint32_t i, DigestObj o, int minor, std::string& out) {
  if (o == DigestObj::none || d.type(i) == kNil) {
    mp_encode(d, i, out);
    return;
  }
  const auto list_of = [&](DigestObj item) {
    const auto k = d.kids(i);
    mp_header(out, k.size(), false);
    for (std::uint32_t c : k) digest_encode(d, c, item, minor, out);
  };
  const auto map_of = [&](DigestObj item) {
    const auto k = d.kids(i);
    mp_header(out, k.size() / 2, true);
    for (std::size_t a = 0; a + 1 < k.size(); a += 2) {
      mp_str(out, d.str(k[a]));
      digest_encode(d, k[a + 1], item, minor, out);
    }
  };
  switch (o) {
    case DigestObj::nodes: list_of(DigestObj::node); return;
    case DigestObj::graphs: list_of(DigestObj::graph); return;
    case DigestObj::core_io_list: list_of(DigestObj::core_io); return;
    case DigestObj::op_args: list_of(DigestObj::op_arg); return;
    case DigestObj::op_map: map_of(DigestObj::op_schema); return;
    case DigestObj::symbol_map: map_of(DigestObj::symbol); return;
    case DigestObj::mesh_dims: list_of(DigestObj::mesh_dim); return;
    default: break;
  }
  const auto& fields = digest_fields(o);
  std::size_t n = 0;
  for (const auto& f : fields) n += f.minor <= minor ? 1 : 0;
  mp_header(out, n, true);
  for (const auto& f : fields) {
    if (f.minor > minor) continue;
    mp_str(out, f.name);
    const std::uint32_t v = d.get(i, f.name);
    if (v == UINT32_MAX) out.append(f.dflt);  // an absent field: its default
    else digest_encode(d, v, f.obj, minor, out);
  }
}

}  // namespace detail

/// Section 7: SHA-256 of the writers' encoding of [graphs, weight tensors, signature], re-encoded from the
/// validated manifest without x- fields and with every field of the file's minor version (a 1.0 file's digest
/// covers the 1.0 fields only, so that it stays what its writer computed).
inline std::string Artifact::compute_digest() const {
  const detail::MpDoc doc = detail::parse_msgpack(d().manifest);
  const int v11 = static_cast<int>(d().format_minor);
  const bool with_core = d().format_minor >= 2 && d().core.has_value();
  std::string enc;
  enc += with_core ? '\x94' : '\x93';
  const std::uint32_t graphs = doc.get(0, "graphs");
  const auto gk = doc.kids(graphs);
  detail::mp_header(enc, gk.size(), false);
  for (std::uint32_t g : gk) detail::digest_encode(doc, g, detail::DigestObj::graph, v11, enc);
  std::vector<std::uint32_t> weights;
  const std::uint32_t tensors = doc.get(0, "tensors");
  for (std::uint32_t e : doc.kids(tensors)) {
    const std::uint32_t f = doc.get(e, "file");
    for (const FileEntry& fe : d().files)
      if (fe.role == FileRole::weights && doc.str(f) == fe.path) weights.push_back(e);
  }
  detail::mp_header(enc, weights.size(), false);
  for (std::uint32_t e : weights) detail::digest_encode(doc, e, detail::DigestObj::tensor, v11, enc);
  detail::digest_encode(doc, doc.get(0, "signature"), detail::DigestObj::signature, v11, enc);
  if (with_core) detail::digest_encode(doc, doc.get(0, "core"), detail::DigestObj::core, v11, enc);
  return "sha256:" + sha256_hex(enc.data(), enc.size());
}

inline TensorSlice Artifact::read_shard(std::string_view name, std::int64_t rank, std::int64_t world) const {
  const Tensor& t = tensor_at(name);
  if (world < 1 || rank < 0 || rank >= world)
    detail::raise("api.range", "tensor " + t.name, "shard (rank " + std::to_string(rank) + ", world " + std::to_string(world) +
                                                      "): rank must be in [0, world) and world at least 1");
  TensorSlice out;
  out.dtype = t.dtype;
  if (!t.placement) {  // replicated: the whole tensor on every rank
    for (std::int64_t n : t.shape) out.ranges.emplace_back(0, n);
    out.shape = t.shape;
    out.bytes.assign(t.data(), t.data() + t.nbytes());
    return out;
  }
  const std::int64_t devices = t.placement->world();
  if (world != devices)
    detail::raise("api.range", "tensor " + t.name, "shard (rank " + std::to_string(rank) + ", world " + std::to_string(world) +
                                                      ") for a placement over " + std::to_string(devices) +
                                                      " devices; world must be " + std::to_string(devices));
  out.ranges = shard_ranges(t.shape, *t.placement, rank);
  std::size_t count = 1;
  for (const auto& r : out.ranges) {
    out.shape.push_back(r.second - r.first);
    count *= static_cast<std::size_t>(r.second - r.first);
  }
  const std::size_t item = t.itemsize();
  out.bytes.resize(count * item);
  if (count == 0) return out;
  // The innermost dimensions the slice covers whole merge with the first one it does not into one contiguous run.
  const std::size_t rank_n = t.shape.size();
  if (rank_n == 0) {
    std::memcpy(out.bytes.data(), t.data(), item);
    return out;
  }
  std::size_t k = rank_n - 1;
  while (k > 0 && out.ranges[k].first == 0 && out.ranges[k].second == t.shape[k]) --k;
  const std::vector<std::int64_t> strides = t.strides();
  const std::size_t run = static_cast<std::size_t>(out.ranges[k].second - out.ranges[k].first) *
                          static_cast<std::size_t>(strides[k]) * item;
  std::vector<std::int64_t> index(k);
  for (std::size_t j = 0; j < k; ++j) index[j] = out.ranges[j].first;
  std::size_t done = 0;
  while (true) {
    std::int64_t start = out.ranges[k].first * strides[k];
    for (std::size_t j = 0; j < k; ++j) start += index[j] * strides[j];
    std::memcpy(out.bytes.data() + done, t.data() + static_cast<std::size_t>(start) * item, run);
    done += run;
    std::size_t j = k;
    while (j-- > 0) {  // the next index of the outer dimensions, row-major
      if (++index[j] < out.ranges[j].second) break;
      index[j] = out.ranges[j].first;
    }
    if (j == static_cast<std::size_t>(-1)) return out;
  }
}

inline nlohmann::ordered_json Artifact::manifest_json() const {
  const detail::MpDoc doc = detail::parse_msgpack(d().manifest);
  return detail::mp_to_json(doc, 0);
}

}  // namespace fxlower

#endif  // FXLOWER_FXLOWER_HPP
