// fxlower-unit [ARTIFACTS]: unit tests of fxlower.hpp.
//
// Without arguments: SHA-256, dtype conversions, rendering, the msgpack layer (edge cases built in memory).
// With ARTIFACTS (the output of cpp/tests/make_artifacts.py): also the typed API on those artifacts and the dump
// renderer against the Python reference dumps in ARTIFACTS/dumps/.
// Prints one line per failed check and "N passed, N failed"; exit status 1 on any failure.
#include <fxlower/fxlower.hpp>

#include <sys/resource.h>
#include <unistd.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const std::string& what, int line) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL line %d: %s\n", line, what.c_str());
  }
}
#define CHECK(cond) check((cond), #cond, __LINE__)
#define CHECK_EQ(a, b)                                                                \
  do {                                                                                \
    const auto got_ = (a);                                                            \
    check(got_ == (b), std::string(#a " == " #b "  (got: ") + to_s(got_) + ")", __LINE__); \
  } while (0)

std::string to_s(const std::string& s) { return s; }
template <class T>
std::string to_s(const T& v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

/// The code of the fxlower::Error that fn throws, "" when it does not throw.
template <class F>
std::string code_of(F&& fn) {
  try {
    fn();
  } catch (const fxlower::Error& e) {
    return e.code();
  }
  return "";
}

std::string parse_code(const std::string& bytes) {
  return code_of([&] { fxlower::detail::parse_msgpack(bytes); });
}

/// A std::string of a literal's bytes (embedded NULs included, the terminator excluded).
#define B(lit) std::string(lit, sizeof(lit) - 1)

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// ------------------------------------------------------------------------------------------------ SHA-256

void test_sha256() {
  CHECK_EQ(fxlower::sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK_EQ(fxlower::sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK_EQ(fxlower::sha256_hex(two_blocks.data(), two_blocks.size()),
           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK_EQ(fxlower::sha256_hex(million.data(), million.size()),
           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Incremental updates of every split give the one-shot digest (block and padding boundaries: 55, 56, 64).
  const std::string msg(130, 'x');
  const std::string whole = fxlower::sha256_hex(msg.data(), msg.size());
  bool all = true;
  for (std::size_t cut = 0; cut <= msg.size(); ++cut) {
    fxlower::Sha256 h;
    h.update(msg.data(), cut);
    h.update(msg.data() + cut, msg.size() - cut);
    all = all && h.finish_hex() == whole;
  }
  CHECK(all);
  for (std::size_t n : {55u, 56u, 63u, 64u, 65u}) {
    const std::string m(n, 'q');
    fxlower::Sha256 a;
    for (char c : m) a.update(&c, 1);
    CHECK_EQ(a.finish_hex(), fxlower::sha256_hex(m.data(), m.size()));
  }
}

// ------------------------------------------------------------------------------------------------ conversions

void test_conversions() {
  // Exhaustively checked against torch once (all codes); these are the landmarks.
  CHECK(fxlower::half_to_float(0x3c00) == 1.0f);
  CHECK(fxlower::half_to_float(0xc000) == -2.0f);
  CHECK(fxlower::half_to_float(0x7bff) == 65504.0f);
  CHECK(fxlower::half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(fxlower::half_to_float(0x0400) == std::ldexp(1.0f, -14));
  CHECK(fxlower::half_to_float(0x3555) == 0.333251953125f);
  CHECK(std::isinf(fxlower::half_to_float(0x7c00)) && fxlower::half_to_float(0x7c00) > 0);
  CHECK(std::isinf(fxlower::half_to_float(0xfc00)) && fxlower::half_to_float(0xfc00) < 0);
  CHECK(std::isnan(fxlower::half_to_float(0x7e00)));
  CHECK(std::signbit(fxlower::half_to_float(0x8000)) && fxlower::half_to_float(0x8000) == 0.0f);
  CHECK(fxlower::bfloat16_to_float(0x3f80) == 1.0f);
  CHECK(fxlower::bfloat16_to_float(0xc000) == -2.0f);
  CHECK(fxlower::bfloat16_to_float(0x4049) == 3.140625f);
  CHECK(fxlower::bfloat16_to_float(0x0001) == std::ldexp(1.0f, -133));
  CHECK(std::isinf(fxlower::bfloat16_to_float(0x7f80)));
  CHECK(std::isnan(fxlower::bfloat16_to_float(0x7fc0)));
  CHECK(fxlower::float8_e4m3fn_to_float(0x38) == 1.0f);
  CHECK(fxlower::float8_e4m3fn_to_float(0xb8) == -1.0f);
  CHECK(fxlower::float8_e4m3fn_to_float(0x7e) == 448.0f);
  CHECK(fxlower::float8_e4m3fn_to_float(0x01) == 0.001953125f);
  CHECK(fxlower::float8_e4m3fn_to_float(0x08) == 0.015625f);
  CHECK(fxlower::float8_e4m3fn_to_float(0x3c) == 1.5f);
  CHECK(std::isnan(fxlower::float8_e4m3fn_to_float(0x7f)) && std::isnan(fxlower::float8_e4m3fn_to_float(0xff)));
  CHECK(!std::isinf(fxlower::float8_e4m3fn_to_float(0x78)));  // no infinities: 0x78 is 256
  CHECK(fxlower::float8_e4m3fn_to_float(0x78) == 256.0f);
  CHECK(std::signbit(fxlower::float8_e4m3fn_to_float(0x80)));
  CHECK(fxlower::float8_e5m2_to_float(0x3c) == 1.0f);
  CHECK(fxlower::float8_e5m2_to_float(0x7b) == 57344.0f);
  CHECK(fxlower::float8_e5m2_to_float(0x01) == std::ldexp(1.0f, -16));
  CHECK(fxlower::float8_e5m2_to_float(0x42) == 3.0f);
  CHECK(std::isinf(fxlower::float8_e5m2_to_float(0x7c)) && std::isinf(fxlower::float8_e5m2_to_float(0xfc)));
  CHECK(fxlower::float8_e5m2_to_float(0xfc) < 0);
  CHECK(std::isnan(fxlower::float8_e5m2_to_float(0x7d)) && std::isnan(fxlower::float8_e5m2_to_float(0xff)));
  // float -> half / bfloat16, round to nearest even (values worked out by hand from the IEEE layouts).
  CHECK_EQ(fxlower::float_to_half(1.0f), 0x3c00);
  CHECK_EQ(fxlower::float_to_half(-2.0f), 0xc000);
  CHECK_EQ(fxlower::float_to_half(65504.0f), 0x7bff);
  CHECK_EQ(fxlower::float_to_half(65519.0f), 0x7bff);  // below the midpoint 65520
  CHECK_EQ(fxlower::float_to_half(65520.0f), 0x7c00);  // the midpoint ties to the even (infinite) neighbour
  CHECK_EQ(fxlower::float_to_half(1e10f), 0x7c00);
  CHECK_EQ(fxlower::float_to_half(-std::numeric_limits<float>::infinity()), 0xfc00);
  CHECK_EQ(fxlower::float_to_half(1.0f / 3.0f), 0x3555);
  CHECK_EQ(fxlower::float_to_half(std::ldexp(1.0f, -24)), 0x0001);
  CHECK_EQ(fxlower::float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // half the smallest subnormal: ties to even 0
  CHECK_EQ(fxlower::float_to_half(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 of it rounds up
  CHECK_EQ(fxlower::float_to_half(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ties to even 2
  CHECK_EQ(fxlower::float_to_half(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the smallest normal
  CHECK_EQ(fxlower::float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: even mantissa 0
  CHECK_EQ(fxlower::float_to_half(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: even mantissa 2
  CHECK_EQ(fxlower::float_to_half(-0.0f), 0x8000);
  CHECK(std::isnan(fxlower::half_to_float(fxlower::float_to_half(std::nanf("")))));
  CHECK_EQ(fxlower::float_to_bfloat16(1.0f), 0x3f80);
  CHECK_EQ(fxlower::float_to_bfloat16(3.14159265f), 0x4049);
  CHECK_EQ(fxlower::float_to_bfloat16(1.00390625f), 0x3f80);  // tie: even
  CHECK_EQ(fxlower::float_to_bfloat16(1.01171875f), 0x3f82);  // tie: even
  CHECK(std::isnan(fxlower::bfloat16_to_float(fxlower::float_to_bfloat16(std::nanf("")))));
  // Every half and bfloat16 code survives the round trip (NaNs stay NaNs).
  int half_bad = 0, bf_bad = 0;
  for (std::uint32_t c = 0; c < 0x10000; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    const float f = fxlower::half_to_float(h), b = fxlower::bfloat16_to_float(h);
    half_bad += std::isnan(f) ? !std::isnan(fxlower::half_to_float(fxlower::float_to_half(f))) : fxlower::float_to_half(f) != h;
    bf_bad += std::isnan(b) ? !std::isnan(fxlower::bfloat16_to_float(fxlower::float_to_bfloat16(b))) : fxlower::float_to_bfloat16(b) != h;
  }
  CHECK_EQ(half_bad, 0);
  CHECK_EQ(bf_bad, 0);
  // dtype table
  CHECK_EQ(fxlower::dtype_itemsize(fxlower::DType::BF16), 2u);
  CHECK_EQ(fxlower::dtype_itemsize(fxlower::DType::C128), 16u);
  CHECK(!fxlower::is_storage_dtype(fxlower::DType::C64));
  CHECK(fxlower::dtype_from_name("F8_E5M2") == fxlower::DType::F8_E5M2);
  CHECK(!fxlower::dtype_from_name("F12"));
  CHECK_EQ(std::string(fxlower::dtype_name(fxlower::DType::U16)), "U16");
}

// ------------------------------------------------------------------------------------------------ rendering

void test_float_repr() {
  const std::pair<double, const char*> cases[] = {
      {std::strtod("0x0.0p+0", nullptr), "0.0"},
      {std::strtod("-0x0.0p+0", nullptr), "-0.0"},
      {std::strtod("0x1.0000000000000p+0", nullptr), "1.0"},
      {std::strtod("0x1.0000000000000p+1", nullptr), "2.0"},
      {std::strtod("-0x1.4000000000000p+1", nullptr), "-2.5"},
      {std::strtod("0x1.999999999999ap-4", nullptr), "0.1"},
      {std::strtod("0x1.3333333333334p-2", nullptr), "0.30000000000000004"},
      {std::strtod("0x1.4f8b588e368f1p-17", nullptr), "1e-05"},
      {std::strtod("0x1.a36e2eb1c432dp-14", nullptr), "0.0001"},
      {std::strtod("0x1.02e4b6ce5dc68p-13", nullptr), "0.00012345"},
      {std::strtod("0x1.1c37937e08000p+53", nullptr), "1e+16"},
      {std::strtod("0x1.c6bf526340000p+49", nullptr), "1000000000000000.0"},
      {std::strtod("0x1.1c37937e07fffp+53", nullptr), "9999999999999998.0"},
      {std::strtod("0x1.aa535d3d0c000p+53", nullptr), "1.5e+16"},
      {std::strtod("0x1.b69b4ba630f35p+56", nullptr), "1.2345678901234568e+17"},
      {std::strtod("0x1.0f0cf064dd592p+73", nullptr), "1e+22"},
      {std::strtod("0x1.249ad2594c37dp+332", nullptr), "1e+100"},
      {std::strtod("0x1.bff2ee48e0530p-333", nullptr), "1e-100"},
      {std::strtod("0x0.0000000000001p-1022", nullptr), "5e-324"},
      {std::strtod("0x1.0000000000000p-1022", nullptr), "2.2250738585072014e-308"},
      {std::strtod("0x1.fffffffffffffp+1023", nullptr), "1.7976931348623157e+308"},
      {std::strtod("0x1.921f9f01b866ep+1", nullptr), "3.14159"},
      {std::strtod("0x1.9000000000000p+6", nullptr), "100.0"},
      {std::strtod("0x1.34a456d5cfaadp+10", nullptr), "1234.5678"},
      {std::strtod("0x1.0c6f7a0b5ed8dp-22", nullptr), "2.5e-07"},
      {std::strtod("0x1.0000000000000p-1", nullptr), "0.5"},
      {std::strtod("0x1.5555555555555p-2", nullptr), "0.3333333333333333"},
      {std::strtod("0x1.0000000000000p+53", nullptr), "9007199254740992.0"},
      {std::strtod("0x1.0000000000001p+53", nullptr), "9007199254740994.0"},
      {std::strtod("0x1.f75104d551d6ap-16", nullptr), "3.0000000000000004e-05"},
      {std::strtod("0x1.ffc0000000000p+15", nullptr), "65504.0"},
      {std::strtod("0x1.99999a0000000p-4", nullptr), "0.10000000149011612"},
      {std::strtod("-0x1.ad7f29abcaf48p-24", nullptr), "-1e-07"},
      {std::strtod("0x1.5ee2a2eb5a5c4p+53", nullptr), "1.2345678901234568e+16"},
      {std::strtod("0x1.3a92a30553262p-13", nullptr), "0.00015000000000000001"},
      {std::strtod("0x1.0624dd2f1a9fcp-10", nullptr), "0.001"},
  };
  for (const auto& c : cases) check(fxlower::python_float_repr(c.first) == c.second,
                                    std::string("repr ") + c.second + " got " + fxlower::python_float_repr(c.first), __LINE__);
  CHECK_EQ(fxlower::python_float_repr(std::numeric_limits<double>::infinity()), "inf");
  CHECK_EQ(fxlower::python_float_repr(-std::numeric_limits<double>::infinity()), "-inf");
  CHECK_EQ(fxlower::python_float_repr(std::numeric_limits<double>::quiet_NaN()), "nan");
  CHECK_EQ(fxlower::python_float_repr(-std::numeric_limits<double>::quiet_NaN()), "nan");
}

void test_value_rendering() {
  using V = fxlower::Value;
  CHECK_EQ(fxlower::quote_str("a\"b\\c\n\t\x01\x7f\xc3\xa9"), "\"a\\\"b\\\\c\\n\\t\\u0001\x7f\xc3\xa9\"");
  CHECK_EQ(fxlower::quote_str(B("\0\b\f\r\x1f")), "\"\\u0000\\b\\f\\r\\u001f\"");
  std::vector<std::pair<fxlower::DictKey, V>> d;
  d.emplace_back(fxlower::DictKey(std::string("k")), V::list({V::integer(1), V::floating(2.0)}));
  d.emplace_back(fxlower::DictKey(std::int64_t{-3}), V());
  const V v = V::tuple({V::node("x"), V::tensor("w.b"), V::tuple({V::boolean(true)}), V::tuple({}),
                        V::dict(std::move(d)), V::slice(V(), V::integer(5), V()), V::ellipsis(),
                        V::complex(1.0, -0.0), V::dtype(fxlower::DType::C64), V::device("cuda:0"),
                        V::memory_format(fxlower::MemoryFormat::channels_last), V::layout(fxlower::Layout::strided),
                        V::string("s"), V::floating(1e-5), V::boolean(false)});
  CHECK_EQ(v.repr(),
           "(%x, $w.b, (True,), (), {\"k\": [1, 2.0], -3: None}, slice(None, 5, None), ..., complex(1.0, -0.0), "
           "dtype(C64), device(cuda:0), memory_format(channels_last), layout(strided), \"s\", 1e-05, False)");
  CHECK(v == v);
  CHECK(V::floating(0.0) != V::floating(-0.0));
  CHECK(V::floating(std::nan("")) == V::floating(std::nan("")));
  CHECK(V::integer(1) != V::floating(1.0));
  CHECK(V::integer(1) != V::boolean(true));
  CHECK_EQ(code_of([&] { v.as_int(); }), "api.kind");
  CHECK_EQ(V::tuple({V::integer(2), V::integer(3)}).int_list().size(), 2u);
  CHECK_EQ(V::integer(4).int_list(2)[1], 4);
  CHECK(V::dict({{fxlower::DictKey(std::int64_t{7}), V::string("seven")}}).as_dict().find(std::int64_t{7}).has_value());
  fxlower::Meta m;
  m.kind = fxlower::MetaKind::dict;
  fxlower::Meta t;
  t.kind = fxlower::MetaKind::tensor;
  t.dtype = fxlower::DType::BF16;
  t.shape = {1, 3};
  fxlower::Meta leaf;
  leaf.kind = fxlower::MetaKind::none;
  m.items = {t, leaf};
  m.keys = {fxlower::DictKey(std::string("a")), fxlower::DictKey(std::int64_t{2})};
  CHECK_EQ(m.repr(), "dict(\"a\": tensor(BF16,[1,3]), 2: none)");
  fxlower::Tolerance tol{1e-3, 1e-4};
  CHECK(tol.matches(1.0005, 1.0));
  CHECK(!tol.matches(1.01, 1.0));
  CHECK(tol.matches(std::nan(""), std::nan("")));
}

// ------------------------------------------------------------------------------------------------ msgpack

std::string nested(std::size_t levels, const std::string& inner) { return std::string(levels, '\x91') + inner; }

void test_msgpack() {
  using std::string;
  CHECK_EQ(parse_code(B("\x82\xa1" "a\x01\xa1" "b\x02")), "");
  CHECK_EQ(parse_code(B("\x82\xa1" "a\x01\xa1" "a\x02")), "manifest.duplicate_key");
  CHECK_EQ(parse_code(B("\x81\x05\x01")), "manifest.key_type");
  CHECK_EQ(parse_code(B("\x81\xc4\x01k\x01")), "manifest.key_type");
  CHECK_EQ(parse_code(B("\x81\xc0\x01")), "manifest.key_type");
  CHECK_EQ(parse_code(B("\x81\x91\xa1k\x01")), "manifest.key_type");
  CHECK_EQ(parse_code(B("\xd4\x05\x00")), "manifest.decode");                  // fixext1
  CHECK_EQ(parse_code(B("\x91\xd6\xff\x00\x00\x00\x00")), "manifest.decode");  // timestamp32
  CHECK_EQ(parse_code(B("\xc7\x01\x05\x00")), "manifest.decode");              // ext8
  CHECK_EQ(parse_code(B("\xc1")), "manifest.decode");
  CHECK_EQ(parse_code(B("\x92\x01\xc1")), "manifest.decode");
  CHECK_EQ(parse_code(B("\xc0\xc0")), "manifest.decode");                      // trailing
  CHECK_EQ(parse_code(B("\x92\x01")), "manifest.decode");                      // truncated
  CHECK_EQ(parse_code(B("\xa5" "abc")), "manifest.decode");
  CHECK_EQ(parse_code(""), "manifest.decode");
  // The two codes in one map: key type first (file order), as the Python hook sees the pairs.
  CHECK_EQ(parse_code(B("\x83\x05\x01\xa1" "a\x01\xa1" "a\x02")), "manifest.key_type");
  CHECK_EQ(parse_code(B("\x83\xa1" "a\x01\xa1" "a\x02\x05\x01")), "manifest.duplicate_key");
  // A fault inside a map is found before that map's duplicate keys (they are checked when it closes).
  CHECK_EQ(parse_code(B("\x82\xa1" "a\x01\xa1" "a\xc1")), "manifest.decode");
  // An array32 header claiming 2^32-1 elements in a 5-byte file fails at once, allocating nothing.
  {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_EQ(parse_code(B("\xdd\xff\xff\xff\xff")), "manifest.decode");
    CHECK_EQ(parse_code(B("\xdf\xff\xff\xff\xff")), "manifest.decode");
    CHECK_EQ(parse_code(B("\xdb\xff\xff\xff\xff")), "manifest.decode");
    CHECK_EQ(parse_code(B("\xc6\xff\xff\xff\xff")), "manifest.decode");
    CHECK_EQ(parse_code(B("\xc9\xff\xff\xff\xff\x01")), "manifest.decode");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  }
  // Depth: 1024 containers (an empty one counts) accepted, 1025 rejected, as msgpack-python.
  CHECK_EQ(parse_code(nested(1024, "\xc0")), "");
  CHECK_EQ(parse_code(nested(1023, "\x90")), "");
  CHECK_EQ(parse_code(nested(1023, "\x80")), "");
  CHECK_EQ(parse_code(nested(1025, "\xc0")), "manifest.decode");
  CHECK_EQ(parse_code(nested(1024, "\x90")), "manifest.decode");
  CHECK_EQ(parse_code(nested(100000, "\xc0")), "manifest.decode");
  // UTF-8: overlong, surrogate, above U+10FFFF, truncated, lone continuation are invalid; 4-byte is fine.
  CHECK_EQ(parse_code(B("\xa2\xc0\x80")), "manifest.decode");
  CHECK_EQ(parse_code(B("\xa3\xed\xa0\x80")), "manifest.decode");
  CHECK_EQ(parse_code(B("\xa4\xf4\x90\x80\x80")), "manifest.decode");
  CHECK_EQ(parse_code(B("\xa2\xe2\x82")), "manifest.decode");
  CHECK_EQ(parse_code(B("\xa1\x80")), "manifest.decode");
  CHECK_EQ(parse_code(B("\xa4\xf0\x9f\x98\x80")), "");
  CHECK_EQ(parse_code(B("\x81\xa2\xff\xfe\x01")), "manifest.decode");  // invalid key
  // Parsing keeps types: uint64 above INT64_MAX is parsed (the schema rejects it where an int is expected),
  // float32 widens to the double the bits denote.
  {
    const auto doc = fxlower::detail::parse_msgpack(B("\x93\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xca\x3d\xcc\xcc\xcd\xd3\x80\x00\x00\x00\x00\x00\x00\x00"));
    CHECK_EQ(doc.nodes.size(), 4u);
    CHECK(!doc.is_int(1));
    CHECK(doc.type(2) == fxlower::detail::kF32 && same_bits(doc.f(2), static_cast<double>(0.1f)));
    CHECK(doc.is_int(3) && doc.i64(3) == std::numeric_limits<std::int64_t>::min());
  }
  // Re-encoding is the shortest form (the digest's encoding).
  {
    const string in = B("\x85\xa1" "a\xcc\x05\xa1" "b\xd1\xff\xff\xa1" "c\xca\x3f\x80\x00\x00\xa1" "d\xdc\x00\x01\xc0\xa1" "e\xd9\x01x");
    const auto doc = fxlower::detail::parse_msgpack(in);
    string out;
    fxlower::detail::mp_encode(doc, 0, out);
    CHECK(out == B("\x85\xa1" "a\x05\xa1" "b\xff\xa1" "c\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\xa1" "d\x91\xc0\xa1" "e\xa1x"));
  }
}

/// Nested array32 headers, each claiming a million elements, fill a 1 MiB buffer: parsing must fail fast and
/// stay far below a 512 MiB address-space cap (msgpack::unpack would reserve 24 bytes per claimed element).
void test_msgpack_memory_cap() {
#if defined(__SANITIZE_ADDRESS__)
  std::printf("skip memory-cap test under AddressSanitizer\n");
#else
  std::string buf;
  while (buf.size() + 5 <= (1u << 20) - 1) buf += B("\xdd\x00\x0f\x42\x40");
  buf += '\xc0';
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct rlimit lim {};
    lim.rlim_cur = lim.rlim_max = 512ull << 20;
    ::setrlimit(RLIMIT_AS, &lim);
    const std::string code = parse_code(buf);
    ::_exit(code == "manifest.decode" ? 0 : 3);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "nested array32 claims under RLIMIT_AS: status " + std::to_string(status), __LINE__);
#endif
}

// ------------------------------------------------------------------------------------------------ 1.1 types

void test_attr_types() {
  using fxlower::AttrType;
  using fxlower::Value;
  std::string why;
  const auto t = AttrType::parse("int[2]|enum(same,valid)", &why);
  CHECK(t.has_value());
  CHECK_EQ(t->alternatives().size(), 2u);
  CHECK(t->accepts(Value::tuple({Value::integer(1), Value::integer(2)})));
  CHECK(!t->accepts(Value::tuple({Value::integer(1)})));
  CHECK(!t->accepts(Value::list({Value::integer(1), Value::integer(2)})));
  CHECK(!t->accepts(Value::tuple({Value::integer(1), Value::floating(2.0)})));
  CHECK(t->accepts(Value::string("same")) && !t->accepts(Value::string("full")));
  CHECK(!t->accepts(Value::integer(1)));
  const auto any = AttrType::parse("str[]|none");
  CHECK(any && any->accepts(Value::tuple({})) && any->accepts(Value::nil()) && !any->accepts(Value::tuple({Value::integer(1)})));
  const auto fm = AttrType::parse("function|module");
  CHECK(fm && fm->allows_module() && fm->accepts(Value::function("torch.relu")) && fm->accepts(Value::module("torch.nn.ReLU")));
  CHECK(!fm->accepts(Value::string("torch.relu")));  // a str is never a function
  const auto f = AttrType::parse("float");
  CHECK(f && f->accepts(Value::floating(1.0)) && !f->accepts(Value::integer(1)) && !f->accepts(Value::boolean(true)));
  const auto i = AttrType::parse("int");
  CHECK(i && !i->accepts(Value::boolean(true)));
  const auto dd = AttrType::parse("dtype|device|tensor|bool");
  CHECK(dd && dd->accepts(Value::dtype(fxlower::DType::F16)) && dd->accepts(Value::device("cpu")) &&
        dd->accepts(Value::tensor("w")) && dd->accepts(Value::boolean(false)));
  for (const char* bad : {"", "int[2", "integer", "int|", "|int", "enum()", "enum(a,)", "enum(a b)", "tensor[2]",
                          "int[02]", "Int", "int [2]", "enum(a", "int[2]x", "function[]"}) {
    why.clear();
    check(!AttrType::parse(bad, &why) && !why.empty(), std::string("type ") + bad + " is rejected with a reason", __LINE__);
  }
  CHECK(fxlower::detail::attr_name_matches("layers.*", "layers.0"));
  CHECK(fxlower::detail::attr_name_matches("layers.*", "layers.10"));
  CHECK(!fxlower::detail::attr_name_matches("layers.*", "layers.01"));
  CHECK(!fxlower::detail::attr_name_matches("layers.*", "layers.x"));
  CHECK(!fxlower::detail::attr_name_matches("layers.*", "layers.0.weight"));
  CHECK(fxlower::detail::is_attr_path("block1-0.layer 1.\xc3\xbc"));
  CHECK(!fxlower::detail::is_attr_path("a.__dict__") && !fxlower::detail::is_attr_path("a\"b") &&
        !fxlower::detail::is_attr_path("a\\b") && !fxlower::detail::is_attr_path("a..b") &&
        !fxlower::detail::is_attr_path("a\tb") && !fxlower::detail::is_attr_path(""));
}

// ------------------------------------------------------------------------------------------------ artifacts

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// shard_ranges on placements built by hand (a loaded one is validated): torch.chunk's rule, and api.range for a
/// placement the loader would have refused, as Python's fxlower.io.mapping.shard_ranges raises ValueError.
void test_shard_ranges_by_hand() {
  using fxlower::MeshDim;
  fxlower::Placement p;
  p.mesh = {4};
  p.dims = {MeshDim{MeshDim::Kind::shard, 0}};
  // torch.chunk of 10 rows into 4: ceil(10 / 4) = 3 -> [0,3) [3,6) [6,9) [9,10) (docs/format.md section 5.2)
  const std::vector<std::pair<std::int64_t, std::int64_t>> rows[] = {{{0, 3}, {0, 4}}, {{3, 6}, {0, 4}},
                                                                    {{6, 9}, {0, 4}}, {{9, 10}, {0, 4}}};
  for (std::int64_t r = 0; r < 4; ++r) CHECK_EQ(fxlower::shard_ranges({10, 4}, p, r) == rows[r], true);
  p.dims = {MeshDim{MeshDim::Kind::shard, 2}};
  CHECK_EQ(code_of([&] { fxlower::shard_ranges({10, 4}, p, 0); }), "api.range");
  p.dims = {MeshDim{MeshDim::Kind::shard, -1}};
  CHECK_EQ(code_of([&] { fxlower::shard_ranges({10, 4}, p, 0); }), "api.range");
  p.dims = {};
  CHECK_EQ(code_of([&] { fxlower::shard_ranges({10, 4}, p, 0); }), "api.range");
  p.dims = {MeshDim{MeshDim::Kind::replicate, -1}};
  const std::vector<std::pair<std::int64_t, std::int64_t>> whole = {{0, 10}, {0, 4}};
  CHECK_EQ(fxlower::shard_ranges({10, 4}, p, 3) == whole, true);
}

void test_everything(const std::string& dir) {
  const fxlower::Artifact a = fxlower::load(dir + "/valid/everything");
  CHECK_EQ(a.format_major(), 1);
  CHECK_EQ(a.format_minor(), 0);
  CHECK_EQ(a.producer().name, "fxlower");
  CHECK_EQ(a.graphs().size(), 2u);
  CHECK_EQ(a.compute_digest(), a.digest());
  a.verify_all();
  const fxlower::Graph& root = a.root();
  CHECK(root.name.empty());
  CHECK(root.output_node().op == fxlower::Op::output);
  const auto conv = root.find_node("conv");
  CHECK(conv.has_value());
  CHECK(!root.find_node("nope"));
  CHECK_EQ(code_of([&] { root.node_at("nope"); }), "api.not_found");
  CHECK(conv->op == fxlower::Op::call_module);
  CHECK_EQ(conv->lowering->module_type, "torch.nn.Conv2d");
  CHECK(conv->lowering->attr_at("stride").int_list() == std::vector<std::int64_t>({1, 1}));
  CHECK_EQ(conv->lowering->attr_at("weight").tensor_name(), "conv.weight");
  CHECK(!conv->lowering->find_attr("nope"));
  CHECK_EQ(conv->meta->repr(), "tensor(F32,[1,4,2,2])");
  CHECK(conv->inputs == std::vector<std::string>({"x"}));
  CHECK(conv->users == std::vector<std::string>({"sub"}));
  const fxlower::Node& sub = root.node_at("sub");
  CHECK(sub.graph && *sub.graph == 1 && !sub.lowering);
  CHECK_EQ(a.graph_at(1).name, "sub");
  CHECK_EQ(code_of([&] { a.graph_at(9); }), "api.not_found");
  const fxlower::Node& relu = root.node_at("relu");
  CHECK(relu.find_kwarg("inplace")->as_bool() == false);
  CHECK_EQ(code_of([&] { relu.kwarg_at("dim"); }), "api.not_found");
  const fxlower::Node& every = root.node_at("every");
  CHECK(every.args.front().is_nil());
  CHECK(every.kwarg_at("dt").as_dtype() == fxlower::DType::I64);
  CHECK_EQ(every.kwarg_at("y").node_name(), "y");
  CHECK(every.meta->kind == fxlower::MetaKind::tuple && every.meta->items.size() == 7);
  CHECK(root.node_at("y").args.at(0).as_float() == 2.5);
  CHECK(a.signature().inputs == std::vector<std::string>({"x", "y"}));
  CHECK(a.signature().output == root.output_node().args.at(0));
  // Tensors: zero-copy views with aligned data pointers.
  const auto w = a.tensor("conv.weight");
  CHECK(w.has_value());
  CHECK(!a.tensor("nope"));
  CHECK_EQ(code_of([&] { a.tensor_at("nope"); }), "api.not_found");
  CHECK_EQ(w->numel(), 108);
  CHECK_EQ(w->nbytes(), 432u);
  CHECK(w->strides() == std::vector<std::int64_t>({27, 9, 3, 1}));
  CHECK(reinterpret_cast<std::uintptr_t>(w->data()) % 4 == 0);
  CHECK(w->element_double(0) == -0.75 && w->element_double(4) == 0.25);
  CHECK_EQ(code_of([&] { w->element_double(108); }), "api.range");
  CHECK_EQ(code_of([&] { w->element_int64(0); }), "api.kind");
  CHECK(a.tensor_at("conv.weight_tied").data() == w->data());
  CHECK(a.tensor_at("sub.scale").shape.empty() && a.tensor_at("sub.scale").element_double(0) == 0.75);
  CHECK(a.tensor_at("empty").numel() == 0 && a.tensor_at("empty").nbytes() == 0);
  const auto& f16 = a.tensor_at("dtypes.F16");
  CHECK(f16.element_double(1) == -2.0 && f16.element_double(2) == 65504.0);
  CHECK(a.tensor_at("dtypes.BF16").element_double(2) == 3.0);
  CHECK(a.tensor_at("dtypes.F8_E4M3").element_double(2) == 448.0);
  CHECK(std::isinf(a.tensor_at("dtypes.F8_E5M2").element_double(3)));
  CHECK(a.tensor_at("dtypes.F64").element_double(2) == 1e300);
  CHECK(a.tensor_at("dtypes.I64").element_int64(0) == std::numeric_limits<std::int64_t>::min());
  CHECK(a.tensor_at("dtypes.I8").element_int64(0) == -128);
  CHECK(a.tensor_at("dtypes.U64").element_int64(2) == std::numeric_limits<std::int64_t>::max());
  CHECK_EQ(code_of([&] { a.tensor_at("dtypes.U64").element_int64(3); }), "api.range");
  CHECK(a.tensor_at("dtypes.U64").element_double(3) == 18446744073709551615.0);
  CHECK(a.tensor_at("dtypes.U32").element_int64(3) == 4294967295LL);
  CHECK(a.tensor_at("dtypes.BOOL").element_int64(1) == 1 && a.tensor_at("dtypes.BOOL").element_double(0) == 0.0);
  CHECK(a.tensor_at("dtypes.I16").element_double(0) == -32768.0);
  // Golden data.
  const auto& g = a.golden();
  CHECK(g.has_value() && g->mode == fxlower::GoldenMode::nodes);
  CHECK(g->tolerance(fxlower::DType::F32)->rtol == 1e-3);
  CHECK(!g->tolerance(fxlower::DType::BF16));
  CHECK_EQ(g->find_node("conv")->tensor_name(), "golden/nodes/conv/0");
  CHECK_EQ(g->outputs.repr(), "($golden/outputs/0, 7)");
  // JSON view of the manifest.
  const auto j = a.manifest_json();
  CHECK(j["format"] == "fxlower");
  CHECK(j["x-generator"] == "cpp/tests/make_artifacts.py");
  // Owned copies instead of mappings give the same bytes.
  fxlower::LoadOptions copy;
  copy.map_tensors = false;
  const fxlower::Artifact b = fxlower::load(dir + "/valid/everything", copy);
  b.verify_all();
  CHECK(std::memcmp(b.tensor_at("conv.weight").data(), w->data(), w->nbytes()) == 0);
  // Copies of an Artifact share it; views stay valid after the original is gone.
  const fxlower::Tensor* kept = nullptr;
  fxlower::Artifact c;
  {
    fxlower::Artifact tmp = fxlower::load(dir + "/valid/everything");
    c = tmp;
    kept = &tmp.tensor_at("conv.bias");
  }
  CHECK(kept->element_double(3) == 4.0);
  CHECK_EQ(code_of([] { fxlower::Artifact().root(); }), "api.not_found");
}

void test_format_1_1(const std::string& dir) {
  const fxlower::Artifact a = fxlower::load(dir + "/valid/format_1_1");
  CHECK_EQ(a.format_minor(), 1);
  CHECK_EQ(a.compute_digest(), a.digest());
  CHECK(a.root().training);
  // Tensor state.
  const auto& w = a.tensor_at("enc.layers.0.self_attn.out_proj.weight");
  CHECK(w.kind == fxlower::TensorKind::parameter && w.requires_grad && w.persistent);
  const auto& nbt = a.tensor_at("bn.num_batches_tracked");
  CHECK(nbt.kind == fxlower::TensorKind::buffer && !nbt.requires_grad && !nbt.persistent);
  CHECK(a.tensor_at("block1-0.layer 1.\xc3\xbc").kind == fxlower::TensorKind::constant);
  CHECK(a.tensor_at("golden/inputs/0").kind == fxlower::TensorKind::golden);
  CHECK_EQ(std::string(fxlower::tensor_kind_name(nbt.kind)), "buffer");
  // Lowering records: module and function Values, training.
  const fxlower::Node& enc = a.root().node_at("enc");
  CHECK(enc.lowering->training);
  CHECK(!enc.overload);
  CHECK_EQ(enc.lowering->attr_at("layers.0").module_type(), "torch.nn.TransformerEncoderLayer");
  CHECK(enc.lowering->attr_at("layers.0").kind() == fxlower::ValueKind::module);
  CHECK_EQ(enc.lowering->attr_at("layers.0.activation").function_name(), "torch.nn.functional.relu");
  CHECK_EQ(enc.lowering->attr_at("layers.0.activation").repr(), "function(torch.nn.functional.relu)");
  CHECK_EQ(enc.lowering->attr_at("layers.1.activation").repr(), "module(torch.nn.GELU)");
  CHECK_EQ(code_of([&] { enc.lowering->attr_at("num_layers").function_name(); }), "api.kind");
  CHECK(a.root().node_at("scaled").target == "block1-0.layer 1");
  // Overloads.
  const fxlower::Node& add = a.root().node_at("add");
  CHECK(add.overload && *add.overload == 0);
  const auto ov = a.overload_of(add);
  CHECK(ov.has_value() && ov->params.size() == 3 && ov->params[2].name == "alpha");
  CHECK(ov->params[2].kind == fxlower::ParamKind::keyword_only && !ov->params[2].required &&
        ov->params[2].default_value.as_int() == 1);
  const fxlower::Node& view = a.root().node_at("view");
  CHECK(view.overload && *view.overload == 1);
  CHECK(a.overload_of(view)->params[1].kind == fxlower::ParamKind::var_positional);
  CHECK(!a.overload_of(enc));
  CHECK(!a.find_function("torch.mul"));
  CHECK_EQ(a.find_method("size")->at(0).returns, "int | torch.Size");
  // Module declarations.
  const auto te = a.find_module("torch.nn.TransformerEncoder");
  CHECK(te.has_value() && te->version == 1 && te->forward.size() == 2);
  CHECK_EQ(te->find_attr("layers.3")->name, "layers.*");
  CHECK(!te->find_attr("layers.03") && !te->find_attr("layers"));
  CHECK(te->find_attr("norm")->parsed.allows_module());
  const auto sc = a.find_module("fxlower_tests.Scaled");
  CHECK(sc && sc->version == 3 && sc->attrs.size() == 6);
  CHECK_EQ(a.modules().size(), 7u);
  CHECK(!a.find_module("torch.nn.Conv2d"));
  // New Meta kinds.
  CHECK(a.root().node_at("dev").meta->kind == fxlower::MetaKind::device);
  CHECK(a.root().node_at("dt").meta->kind == fxlower::MetaKind::dtype);
  CHECK_EQ(a.root().node_at("lay").meta->repr(), "layout");
  // 1.0 files: empty declarations, kinds unspecified, the 1.0 rule through effective_kind.
  const fxlower::Artifact old = fxlower::load(dir + "/valid/everything");
  CHECK(old.modules().empty() && old.functions().empty() && old.methods().empty());
  CHECK(old.tensor_at("conv.weight").kind == fxlower::TensorKind::unspecified);
  CHECK(old.tensor_at("conv.weight").effective_kind(false) == fxlower::TensorKind::parameter);
  CHECK(old.tensor_at("dtypes.I64").effective_kind(false) == fxlower::TensorKind::buffer);
  CHECK(old.tensor_at("golden/inputs/0").effective_kind(true) == fxlower::TensorKind::golden);
  CHECK(!old.root().node_at("relu").overload);
  // Error messages name the attribute, the found value and the declared type.
  try {
    fxlower::load(dir + "/invalid/v11_attr_tuple_wrong_length");
    CHECK(false);
  } catch (const fxlower::Error& e) {
    CHECK_EQ(e.code(), "lowering.attr");
    CHECK_EQ(e.where(), "manifest.msgpack: graphs[0].nodes[1].lowering.attrs.stride");
    CHECK(std::string(e.message()).find("(2, 2, 2), not of the declared type int[2]") != std::string::npos);
  }
  // A standalone safetensors file through the reader's strict code.
  const fxlower::SafetensorsFile st = fxlower::read_safetensors(dir + "/valid/conv_relu/weights.safetensors");
  CHECK_EQ(st.entries().size(), 2u);
  CHECK(st.find("conv.bias") && st.find("conv.bias")->nbytes == 16 && st.find("conv.bias")->shape == std::vector<std::int64_t>{4});
  float b3;
  std::memcpy(&b3, st.find("conv.bias")->data + 12, 4);
  CHECK(b3 == 1.0f);
  CHECK_EQ(code_of([&] { fxlower::read_safetensors(dir + "/invalid/header_duplicate_key/weights.safetensors"); }),
           "safetensors.header");
  CHECK_EQ(code_of([&] { fxlower::read_safetensors(dir + "/invalid/layout_trailing_bytes/weights.safetensors"); }),
           "safetensors.layout");
  CHECK_EQ(code_of([&] { fxlower::read_safetensors(dir + "/no-such.safetensors"); }), "artifact.missing");
  CHECK_EQ(code_of([&] { fxlower::read_safetensors(dir + "/valid"); }), "artifact.not_regular");
}

void test_load_errors(const std::string& dir) {
  const auto load_code = [](const std::string& p, fxlower::LoadOptions o = {}) {
    return code_of([&] { fxlower::load(p, o).verify_all(); });
  };
  // Messages name the file and the field.
  try {
    fxlower::load(dir + "/invalid/target_is_int");
    CHECK(false);
  } catch (const fxlower::Error& e) {
    CHECK_EQ(std::string(e.what()),
             "[schema.type] manifest.msgpack: graphs[0].nodes[3].target: expected a str, found an int");
    CHECK_EQ(e.where(), "manifest.msgpack: graphs[0].nodes[3].target");
  }
  // Non-strict mode ignores unlisted entries (and never opens them).
  fxlower::LoadOptions lax;
  lax.strict = false;
  CHECK_EQ(load_code(dir + "/invalid/extra_file", lax), "");
  CHECK_EQ(load_code(dir + "/invalid/extra_file"), "artifact.extra_file");
  CHECK_EQ(load_code(dir + "/does-not-exist"), "artifact.missing");
  CHECK_EQ(load_code(dir + "/EXPECTED"), "artifact.not_regular");
  CHECK_EQ(load_code(dir + "/valid/minimal/"), "");
  // The artifact directory itself as a symlink.
  const std::string link = dir + "/link-to-minimal";
  ::unlink(link.c_str());
  if (::symlink("valid/minimal", link.c_str()) == 0) {
    CHECK_EQ(load_code(link), "artifact.not_regular");
    ::unlink(link.c_str());
  }
}

/// A tensor file truncated after loading: with map_tensors = false the artifact owns copies of the bytes and
/// keeps working (a mapping would raise SIGBUS on access, as documented).
void test_truncated_after_load(const std::string& dir) {
  const std::string copy = dir + "/truncated-copy";
  const std::string cmd = "rm -rf '" + copy + "' && cp -r '" + dir + "/valid/conv_relu' '" + copy + "'";
  if (std::system(cmd.c_str()) != 0) {
    check(false, "copying conv_relu", __LINE__);
    return;
  }
  fxlower::LoadOptions owned;
  owned.map_tensors = false;
  const fxlower::Artifact a = fxlower::load(copy, owned);
  CHECK_EQ(::truncate((copy + "/weights.safetensors").c_str(), 0), 0);
  CHECK_EQ(code_of([&] { a.verify_all(); }), "");
  CHECK(a.tensor_at("conv.bias").element_double(0) == 0.5);
  CHECK_EQ(code_of([&] { fxlower::load(copy); }), "safetensors.header");
  const std::string rm = "rm -rf '" + copy + "'";
  CHECK_EQ(std::system(rm.c_str()), 0);
}

void write_file(const std::string& p, const std::string& data) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

/// Every byte of the manifest and of the weights header replaced by a few values, and the manifest cut at every
/// length: the load either succeeds or throws fxlower::Error; nothing else escapes (no crash under ASan/UBSan).
void test_mutations(const std::string& dir) {
  const std::string copy = dir + "/mutation-copy";
  const std::string cmd = "rm -rf '" + copy + "' && cp -r '" + dir + "/valid/conv_relu' '" + copy + "'";
  if (std::system(cmd.c_str()) != 0) {
    check(false, "copying conv_relu", __LINE__);
    return;
  }
  std::size_t loads = 0, rejected = 0, other = 0;
  const auto attempt = [&] {
    ++loads;
    try {
      fxlower::load(copy).verify_all();
    } catch (const fxlower::Error&) {
      ++rejected;
    } catch (...) {
      ++other;
    }
  };
  for (const char* file : {"manifest.msgpack", "weights.safetensors"}) {
    const std::string path = copy + "/" + file;
    const std::string orig = read_file(path);
    std::size_t limit = orig.size();
    if (std::string(file) == "weights.safetensors") limit = 8 + fxlower::detail::load_le<std::uint64_t>(reinterpret_cast<const std::byte*>(orig.data()));
    for (std::size_t i = 0; i < limit; ++i)
      for (unsigned char v : {std::uint8_t{0x00}, std::uint8_t{0xc1}, std::uint8_t{0xff}, std::uint8_t{0x7f},
                              static_cast<std::uint8_t>(orig[i] + 1)}) {
        std::string m = orig;
        m[i] = static_cast<char>(v);
        write_file(path, m);
        attempt();
      }
    if (std::string(file) == "manifest.msgpack")
      for (std::size_t n = 0; n < orig.size(); ++n) {
        write_file(path, orig.substr(0, n));
        attempt();
      }
    write_file(path, orig);
  }
  check(other == 0, "mutations: " + std::to_string(other) + " loads threw something else than fxlower::Error", __LINE__);
  check(rejected > loads / 2, "mutations: " + std::to_string(rejected) + " of " + std::to_string(loads) + " rejected", __LINE__);
  const std::string rm = "rm -rf '" + copy + "'";
  CHECK_EQ(std::system(rm.c_str()), 0);
}

void test_dumps(const std::string& dir, const std::string& dump_tool) {
  // The C++ dump tool against the Python reference renderer of make_artifacts.py.
  for (const char* name : {"conv_relu", "minimal", "everything", "empty_golden_tensors", "devices", "leniencies",
                           "conv11", "format_1_1", "names_1_0"}) {
    const std::string out = dir + "/dumps/" + name + ".cpp.txt";
    const std::string cmd = "'" + dump_tool + "' '" + dir + "/valid/" + name + "' > '" + out + "'";
    const int rc = std::system(cmd.c_str());
    const bool same = rc == 0 && read_file(out) == read_file(dir + "/dumps/" + name + ".txt");
    check(same, std::string("fxlower-dump of ") + name + " equals the Python reference rendering", __LINE__);
  }
}

}  // namespace

// Format 1.2 symbol expressions: values worked out by hand with Python's integer semantics.
void test_sym_expr() {
  using fxlower::SymExpr;
  const std::map<std::string, std::int64_t, std::less<>> b{{"s0", 7}, {"s1", -3}, {"s12", 4}};
  auto ev = [&](const char* t) { return SymExpr::parse(t)->eval(b); };
  CHECK_EQ(ev("s0*2+1"), 15);
  CHECK_EQ(ev("s0-s12-1"), 2);            // left associative
  CHECK_EQ(ev("2+3*s12"), 14);            // * binds tighter than +
  CHECK_EQ(ev("(2+3)*s12"), 20);
  CHECK_EQ(ev("s0//2"), 3);
  CHECK_EQ(ev("s1//2"), -2);              // floor division: -3 // 2 == -2
  CHECK_EQ(ev("s1%2"), 1);                // -3 % 2 == 1 (sign of the divisor)
  CHECK_EQ(ev("s0%-2"), -1);              // 7 % -2 == -1
  CHECK_EQ(ev("-s0"), -7);
  CHECK_EQ(ev("--s0"), 7);
  CHECK_EQ(ev("max(s0,s12*2)"), 8);
  CHECK_EQ(ev("min(s0,s12*2)-1"), 6);
  CHECK_EQ(ev("max(min(s0,3),s1)"), 3);
  CHECK_EQ(ev("9223372036854775807"), INT64_MAX);
  auto e = SymExpr::parse("s12*s0+s12");
  CHECK(e.has_value());
  CHECK_EQ(e->symbols().size(), std::size_t{2});
  CHECK_EQ(e->symbols()[0], std::string("s12"));
  CHECK_EQ(e->symbols()[1], std::string("s0"));
  // syntax errors, with the reason
  for (const char* bad : {"", "s", "s0 + 1", "s0+", "(s0", "s0)", "x1", "max(s0)", "max(s0,1", "1/2", "9223372036854775808",
                          "S0", "s0**2"}) {
    std::string why;
    CHECK(!SymExpr::parse(bad, &why).has_value());
    CHECK(!why.empty());
  }
  // evaluation errors: unbound symbol, division by zero, overflow (core.symbol)
  CHECK_EQ(code_of([&] { SymExpr::parse("s5+1")->eval(b); }), std::string("core.symbol"));
  CHECK_EQ(code_of([&] { SymExpr::parse("s0//(s12-4)")->eval(b); }), std::string("core.symbol"));
  CHECK_EQ(code_of([&] { SymExpr::parse("s0%0")->eval(b); }), std::string("core.symbol"));
  CHECK_EQ(code_of([&] { SymExpr::parse("9223372036854775807+s0")->eval(b); }), std::string("core.symbol"));
}

// The crafted 1.2 artifacts of make_artifacts.py (core12, core_only): the core view as the reader exposes it.
void test_core_view(const std::string& dir) {
  const fxlower::Artifact a = fxlower::load(dir + "/valid/core12");
  CHECK_EQ(a.format_minor(), std::int64_t{2});
  CHECK(a.core().has_value());
  const fxlower::CoreView& cv = *a.core();
  CHECK_EQ(cv.graphs.size(), std::size_t{1});
  CHECK_EQ(cv.root().nodes.size(), std::size_t{8});
  CHECK_EQ(cv.inputs.size(), std::size_t{3});
  CHECK(cv.inputs[0].kind == fxlower::CoreInputKind::parameter);
  CHECK_EQ(cv.inputs[0].target, std::string("conv.weight"));
  CHECK(cv.inputs[2].kind == fxlower::CoreInputKind::user_input);
  CHECK_EQ(cv.outputs.size(), std::size_t{1});
  CHECK_EQ(cv.outputs[0].name, std::string("relu"));
  CHECK(cv.outputs[0].kind == fxlower::CoreOutputKind::user_output);
  // op schemas, with the keyword-only default of aten.add.Tensor
  const auto add = cv.find_op("aten.add.Tensor");
  CHECK(add.has_value());
  CHECK_EQ(add->name, std::string("aten::add"));
  CHECK_EQ(add->arguments.size(), std::size_t{3});
  CHECK(add->arguments[2].kwarg_only && !add->arguments[2].required);
  CHECK(add->arguments[2].default_value == fxlower::Value::integer(1));
  CHECK(!cv.find_op("aten.sigmoid.default").has_value());
  // the symbol, its range and the shape expressions
  const auto s0 = cv.find_symbol("s0");
  CHECK(s0.has_value());
  CHECK_EQ(s0->min, std::int64_t{1});
  CHECK(s0->max == std::optional<std::int64_t>(4));
  CHECK_EQ(s0->input, std::size_t{2});
  CHECK_EQ(s0->dim, std::size_t{0});
  const fxlower::Node& x = cv.root().node_at("x");
  CHECK_EQ(x.meta->sym.size(), std::size_t{4});
  CHECK_EQ(x.meta->sym[0], std::string("s0"));
  CHECK_EQ(x.meta->shape[0], std::int64_t{-1});
  CHECK_EQ(x.meta->shape[1], std::int64_t{3});
  CHECK_EQ(x.meta->repr(), std::string("tensor(F32,[s0,3,5,5])"));
  const fxlower::Node& sz = cv.root().node_at("sym_size_int");
  CHECK(sz.meta->kind == fxlower::MetaKind::symint);
  CHECK_EQ(cv.expr(sz.meta->expr).eval({{"s0", 3}}), std::int64_t{48});
  // origin links and their inverse
  const fxlower::Node& conv = cv.root().node_at("convolution");
  CHECK(conv.origin.has_value());
  CHECK_EQ(a.origin_of(conv)->name, std::string("conv"));
  CHECK(!a.origin_of(cv.root().node_at("add")).has_value());
  const auto& back = a.core_nodes_of(0, "act");
  CHECK_EQ(back.size(), std::size_t{1});
  CHECK_EQ(back[0].node, std::string("relu"));
  CHECK(a.core_nodes_of(0, "add").empty());
  CHECK_EQ(a.golden()->core_nodes.size(), std::size_t{1});
  CHECK_EQ(a.compute_digest(), a.digest());
  // graphs empty: the signature describes the core root
  const fxlower::Artifact c = fxlower::load(dir + "/valid/core_only");
  CHECK(c.graphs().empty());
  CHECK(c.core().has_value());
  CHECK_EQ(c.signature().inputs.size(), std::size_t{1});
  CHECK_EQ(c.signature().output.repr(), std::string("(%relu,)"));
  CHECK_EQ(c.compute_digest(), c.digest());
  // 1.1 files have no core view
  CHECK(!fxlower::load(dir + "/valid/conv11").core().has_value());
}

int main(int argc, char** argv) {
  test_sym_expr();
  test_sha256();
  test_conversions();
  test_float_repr();
  test_value_rendering();
  test_msgpack();
  test_msgpack_memory_cap();
  test_attr_types();
  test_shard_ranges_by_hand();
  if (argc >= 2) {
    try {
      test_everything(argv[1]);
      test_format_1_1(argv[1]);
      test_core_view(argv[1]);
      test_load_errors(argv[1]);
      test_truncated_after_load(argv[1]);
      test_mutations(argv[1]);
      if (argc >= 3) test_dumps(argv[1], argv[2]);
    } catch (const fxlower::Error& e) {
      check(false, std::string("unexpected error: ") + e.what(), __LINE__);
    }
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
