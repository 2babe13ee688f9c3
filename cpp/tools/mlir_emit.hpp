// The torch-dialect MLIR emitter of fxlower-mlir (cpp/tools/mlir.cpp): the core view of an artifact (docs/format.md
// section 2.6) as one func.func whose ops are the Core ATen operators by name (torch.aten.convolution, ...), with
// every parameter, buffer and lifted constant a util.global bound to a named parameter of the artifact's own
// safetensors files (#stream.parameter.named<"SCOPE"::"KEY">). IREE compiles it with --iree-input-type=torch and
// reads the weights from those files at run time (docs/iree.md).
//
// Ops are emitted from the schemas the manifest records (CoreView::ops): a node's args and kwargs bind to the
// schema's arguments as torch binds them, unbound ones take their defaults, and each argument is materialised by
// its schema type (Tensor, int[], Scalar, ScalarType?, ...). The only per-target cases are where the torch dialect
// differs from ATen; each says why (special_target()). Whatever cannot be expressed is collected, named by node and
// target, and reported before any text is produced (EmitError).
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fxlower/fxlower.hpp"

namespace fxlower::mlir {

struct EmitOptions {
  std::string scope = "model";    // the parameter scope: iree-run-module --parameters=SCOPE=FILE
  std::string function = "main";  // the func.func's name
};

/// Everything the emitter could not express, one line per node ("node 'x' (call_function t): why").
class EmitError : public std::runtime_error {
 public:
  explicit EmitError(std::vector<std::string> problems)
      : std::runtime_error(compose(problems)), problems_(std::move(problems)) {}
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  static std::string compose(const std::vector<std::string>& p) {
    std::string m = std::to_string(p.size()) + " unsupported operation(s):";
    for (const auto& s : p) m += "\n  " + s;
    return m;
  }
  std::vector<std::string> problems_;
};

struct EmitResult {
  std::string text;
  std::vector<std::string> parameter_files;  // the weights files the globals name, in manifest order
  std::size_t globals = 0, ops = 0;
};

namespace detail_mlir {

/// An MLIR string literal: printable bytes as themselves (UTF-8 included), '"', '\\' and control bytes as \XX.
inline std::string quote(std::string_view s) {
  std::string o = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f) {
      char b[4];
      std::snprintf(b, sizeof b, "\\%02X", c);
      o += b;
    } else {
      o += ch;
    }
  }
  return o + "\"";
}

/// A float literal that reads back to the same double: the shortest %.Ne form (MLIR float literals need a '.'),
/// or the IEEE bits in hex for infinities and NaN.
inline std::string float_literal(double v) {
  if (!std::isfinite(v)) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, 8);
    char b[32];
    std::snprintf(b, sizeof b, "0x%016llX", static_cast<unsigned long long>(bits));
    return b;
  }
  char b[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(b, sizeof b, "%.*e", p, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

/// torch's ScalarType numbering (c10/core/ScalarType.h), which torch-dialect dtype arguments use.
inline std::optional<int> scalar_type(DType d) {
  switch (d) {
    case DType::U8: return 0;
    case DType::I8: return 1;
    case DType::I16: return 2;
    case DType::I32: return 3;
    case DType::I64: return 4;
    case DType::F16: return 5;
    case DType::F32: return 6;
    case DType::F64: return 7;
    case DType::C64: return 9;
    case DType::C128: return 10;
    case DType::BOOL: return 11;
    case DType::BF16: return 15;
    case DType::F8_E5M2: return 23;
    case DType::F8_E4M3: return 24;
    case DType::U16: return 27;
    case DType::U32: return 28;
    case DType::U64: return 29;
  }
  return std::nullopt;
}

/// The element type of a !torch.vtensor (signed integers are si*, bool is i1).
inline const char* torch_elem(DType d) {
  switch (d) {
    case DType::F64: return "f64";
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F8_E4M3: return "f8E4M3FN";
    case DType::F8_E5M2: return "f8E5M2";
    case DType::I64: return "si64";
    case DType::I32: return "si32";
    case DType::I16: return "si16";
    case DType::I8: return "si8";
    case DType::U64: return "ui64";
    case DType::U32: return "ui32";
    case DType::U16: return "ui16";
    case DType::U8: return "ui8";
    case DType::BOOL: return "i1";
    case DType::C64: return "complex<f32>";
    case DType::C128: return "complex<f64>";
  }
  return "?";
}

/// The element type of the builtin tensor a global holds: torch_c.from_builtin_tensor wants signless integers.
inline const char* builtin_elem(DType d) {
  switch (d) {
    case DType::I64: case DType::U64: return "i64";
    case DType::I32: case DType::U32: return "i32";
    case DType::I16: case DType::U16: return "i16";
    case DType::I8: case DType::U8: return "i8";
    default: return torch_elem(d);
  }
}

inline std::string vtensor(const std::vector<std::string>& dims, DType d) {
  std::string s = "!torch.vtensor<[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + dims[i];
  return s + "]," + torch_elem(d) + ">";
}

inline std::string vtensor_of(const Meta& m) {
  std::vector<std::string> dims;
  for (std::size_t i = 0; i < m.shape.size(); ++i)
    dims.push_back(!m.sym.empty() && !m.sym[i].empty() ? "?" : std::to_string(m.shape[i]));
  return vtensor(dims, m.dtype);
}

inline bool is_bare_symbol(std::string_view s) {  // s0, s12: a symbol name (docs/format.md's grammar)
  if (s.size() < 2 || s[0] != 's') return false;
  for (std::size_t i = 1; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

/// A parsed schema type: "int[2]?" is base "int", list, fixed 2, optional.
struct ArgType {
  std::string base;  // Tensor, Tensor?, int, SymInt, float, bool, Scalar, str, ScalarType, Layout, Device, ...
  bool list = false, optional = false;
  std::size_t fixed = 0;  // N of "int[N]" (0: any length)
};
inline ArgType parse_type(std::string t) {
  ArgType a;
  if (!t.empty() && t.back() == '?') {
    a.optional = true;
    t.pop_back();
  }
  const auto lb = t.find('[');
  if (lb != std::string::npos && t.back() == ']') {
    a.list = true;
    const std::string n = t.substr(lb + 1, t.size() - lb - 2);
    if (!n.empty()) a.fixed = static_cast<std::size_t>(std::strtoull(n.c_str(), nullptr, 10));
    t = t.substr(0, lb);
  }
  a.base = t;
  return a;
}

struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A node whose input already failed: reported once, at the first failure, not again for each user.
struct Cascade {};

/// An SSA value and its type.
struct Ssa {
  std::string name, type;
};

class Emitter {
 public:
  Emitter(const Artifact& a, const EmitOptions& o) : a_(a), o_(o), cv_(*a.core()) {}

  EmitResult run() {
    const Graph& g = cv_.root();
    // Placeholders in order: user inputs are the function's arguments (typed from their Meta); parameters, buffers
    // and constants are loads of their globals, at the top of the body.
    std::vector<std::string> args;
    std::size_t in = 0;
    for (const Node& n : g.nodes) {
      if (n.op != Op::placeholder) continue;
      const CoreInput& ci = cv_.inputs.at(in++);
      try {
        if (ci.kind == CoreInputKind::user_input) {
          Ssa v{unique(n.name), value_type(n)};
          args.push_back(v.name + ": " + v.type);
          vals_[n.name] = {v};
          user_inputs_.push_back({&n, v});
        } else {
          state_placeholder(n, ci);
        }
      } catch (const Unsupported& e) {
        problem(n, e.what());
      } catch (const Error& e) {
        problem(n, e.what());
      }
    }
    symbols();
    for (const Node& n : g.nodes) {
      if (n.op != Op::call_function) continue;
      try {
        call(n);
      } catch (const Cascade&) {
        failed_.insert(n.name);
      } catch (const Unsupported& e) {
        problem(n, e.what());
      } catch (const Error& e) {
        problem(n, e.what());
      }
    }
    std::vector<Ssa> results;
    const Node& out = g.output_node();
    try {
      for (const CoreOutput& co : cv_.outputs)
        if (co.kind == CoreOutputKind::buffer_mutation)
          throw Unsupported("the program writes buffer '" + co.target + "' (a buffer_mutation output): the emitted "
                            "function has no mutable state; export the model in eval mode without in-place buffer "
                            "updates");
      const auto& items = out.args.at(0).items();
      for (const Value& v : items) {
        if (v.kind() != ValueKind::node)
          throw Unsupported("output element " + v.repr() + " is not a node result (a constant or None output)");
        results.push_back(node_value(v.node_name()));
      }
    } catch (const Cascade&) {
    } catch (const Unsupported& e) {
      problem(out, e.what());
    }
    if (!problems_.empty()) throw EmitError(problems_);

    EmitResult r;
    std::string& t = r.text;
    t += "module {\n";
    t += globals_text_;
    t += "  func.func @" + symbol_name(o_.function) + "(";
    for (std::size_t i = 0; i < args.size(); ++i) t += (i ? ", " : "") + args[i];
    t += ") -> ";
    if (results.size() != 1) t += "(";
    for (std::size_t i = 0; i < results.size(); ++i) t += (i ? ", " : "") + results[i].type;
    if (results.size() != 1) t += ")";
    t += " {\n" + body_;
    t += "    return";
    for (std::size_t i = 0; i < results.size(); ++i) t += (i ? ", " : " ") + results[i].name;
    if (!results.empty()) t += " :";
    for (std::size_t i = 0; i < results.size(); ++i) t += (i ? ", " : " ") + results[i].type;
    t += "\n  }\n}\n";
    for (const auto& f : a_.files())  // manifest order (a sharded artifact: the shards in order)
      if (std::find(files_.begin(), files_.end(), f.path) != files_.end()) r.parameter_files.push_back(f.path);
    r.globals = globals_;
    r.ops = ops_;
    return r;
  }

 private:
  // ---------------------------------------------------------------- names
  static bool bare_ok(std::string_view s) {  // an MLIR bare-id (symbol names): [A-Za-z_][A-Za-z0-9_$.]*
    if (s.empty()) return false;
    for (char c : s)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || c == '.')) return false;
    return !std::isdigit(static_cast<unsigned char>(s[0])) && s[0] != '$' && s[0] != '.';
  }
  /// A fresh SSA name derived from `base` (characters outside MLIR's identifiers become '_').
  std::string unique(const std::string& base) {
    std::string s;
    for (char c : base)
      s += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || c == '.' || c == '-') ? c : '_';
    if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) s = "v" + s;
    std::string name = s;
    for (int k = 0; used_.count(name); ++k) name = s + "_" + std::to_string(k);
    used_.insert(name);
    return "%" + name;
  }
  static std::string symbol_name(const std::string& s) { return bare_ok(s) ? s : quote(s); }

  void problem(const Node& n, const std::string& why) {
    failed_.insert(n.name);
    problems_.push_back("node '" + n.name + "' (" + std::string(op_name(n.op)) +
                        (n.op == Op::call_function ? " " + n.target : std::string()) + "): " + why);
  }

  // ---------------------------------------------------------------- types
  std::string value_type(const Node& n) {
    if (!n.meta) throw Unsupported("the node has no Meta, so its type is unknown");
    return meta_type(*n.meta);
  }
  static std::string meta_type(const Meta& m) {
    switch (m.kind) {
      case MetaKind::tensor: return vtensor_of(m);
      case MetaKind::integer: case MetaKind::symint: return "!torch.int";
      case MetaKind::floating: return "!torch.float";
      case MetaKind::boolean: return "!torch.bool";
      default: throw Unsupported("a value of kind " + std::string(meta_kind_name(m.kind)) + " has no torch-dialect type here");
    }
  }

  // ---------------------------------------------------------------- weights
  void state_placeholder(const Node& n, const CoreInput& ci) {
    const Tensor& t = a_.tensor_at(ci.target);
    std::string file_key = t.file + '\0' + t.key;
    std::string gname;
    auto it = global_of_.find(file_key);
    if (it != global_of_.end()) {
      gname = it->second;  // a tied weight: one global, loaded again
    } else {
      if (const auto k = key_file_.find(t.key); k != key_file_.end() && k->second != t.file)
        throw Unsupported("safetensors key '" + t.key + "' is in both " + k->second + " and " + t.file +
                          ": named parameters of one scope need unique keys");
      key_file_[t.key] = t.file;
      if (std::find(files_.begin(), files_.end(), t.file) == files_.end()) files_.push_back(t.file);
      std::string base = "__param." + t.key;
      gname = symbol_name(base);
      for (int k = 0; global_names_.count(gname); ++k) gname = symbol_name(base + "_" + std::to_string(k));
      global_names_.insert(gname);
      global_of_[file_key] = gname;
      globals_text_ += "  util.global private @" + gname + " = #stream.parameter.named<" + quote(o_.scope) +
                       "::" + quote(t.key) + "> : " + builtin(t) + "\n";
      ++globals_;
    }
    std::vector<std::string> dims;
    for (auto d : t.shape) dims.push_back(std::to_string(d));
    const Ssa raw{unique(n.name + "_raw"), builtin(t)};
    const Ssa v{unique(n.name), vtensor(dims, t.dtype)};
    body_ += "    " + raw.name + " = util.global.load @" + gname + " : " + raw.type + "\n";
    body_ += "    " + v.name + " = torch_c.from_builtin_tensor " + raw.name + " : " + raw.type + " -> " + v.type + "\n";
    vals_[n.name] = {v};
  }
  static std::string builtin(const Tensor& t) {
    std::string s = "tensor<";
    for (auto d : t.shape) s += std::to_string(d) + "x";
    return s + builtin_elem(t.dtype) + ">";
  }

  // ---------------------------------------------------------------- symbols
  /// torch.symbolic_int per symbol, and torch.bind_symbolic_shape on each user input whose dims are ints or
  /// bare symbols (what torch-mlir's importer writes, and what IREE reads the ranges from).
  void symbols() {
    if (cv_.symbols.empty()) return;
    std::map<std::string, std::string> sym_ssa;
    for (const auto& [name, s] : cv_.symbols) {
      const std::string v = unique(name);
      sym_ssa[name] = v;
      body_ += "    " + v + " = torch.symbolic_int " + quote(name) + " {min_val = " + std::to_string(s.min) +
               ", max_val = " + std::to_string(s.max ? *s.max : std::numeric_limits<std::int64_t>::max()) +
               "} : !torch.int\n";
    }
    for (const auto& [node, v] : user_inputs_) {
      if (!node->meta || node->meta->kind != MetaKind::tensor || node->meta->sym.empty()) continue;
      const Meta& m = *node->meta;
      std::vector<std::string> used, exprs;
      bool affine = true;
      for (std::size_t i = 0; i < m.shape.size(); ++i) {
        if (m.sym[i].empty()) {
          exprs.push_back(std::to_string(m.shape[i]));
        } else if (is_bare_symbol(m.sym[i]) && sym_ssa.count(m.sym[i])) {
          if (std::find(used.begin(), used.end(), m.sym[i]) == used.end()) used.push_back(m.sym[i]);
          exprs.push_back(m.sym[i]);
        } else {
          affine = false;  // a derived size (2*s0, ...): the symbols' own bindings carry the ranges
        }
      }
      if (!affine) continue;
      std::string ops, syms, map;
      for (std::size_t i = 0; i < used.size(); ++i) {
        ops += (i ? ", " : "") + sym_ssa[used[i]];
        syms += (i ? ", " : "") + used[i];
      }
      for (std::size_t i = 0; i < exprs.size(); ++i) map += (i ? ", " : "") + exprs[i];
      body_ += "    torch.bind_symbolic_shape " + v.name + ", [" + ops + "], affine_map<()[" + syms + "] -> (" + map +
               ")> : " + v.type + "\n";
    }
  }

  // ---------------------------------------------------------------- constants
  Ssa constant(const std::string& key, const std::string& base, const std::string& op, const std::string& type) {
    auto it = consts_.find(key);
    if (it != consts_.end()) return it->second;
    Ssa v{unique(base), type};
    body_ += "    " + v.name + " = " + op + "\n";
    return consts_[key] = v;
  }
  Ssa const_int(std::int64_t i) {
    const std::string s = std::to_string(i);
    return constant("i" + s, i < 0 ? "int_" + s.substr(1) : "int" + s, "torch.constant.int " + s, "!torch.int");
  }
  Ssa const_float(double d) {
    const std::string s = float_literal(d);
    return constant("f" + s, "float", "torch.constant.float " + s, "!torch.float");
  }
  Ssa const_bool(bool b) {
    return constant(b ? "btrue" : "bfalse", b ? "true" : "false", std::string("torch.constant.bool ") + (b ? "true" : "false"),
                    "!torch.bool");
  }
  Ssa const_none() { return constant("none", "none", "torch.constant.none", "!torch.none"); }
  Ssa const_str(const std::string& s) { return constant("s" + s, "str", "torch.constant.str " + quote(s), "!torch.str"); }

  // ---------------------------------------------------------------- values
  const std::vector<Ssa>& node_values(const std::string& name) {
    if (failed_.count(name)) throw Cascade{};
    auto it = vals_.find(name);
    if (it == vals_.end()) throw Unsupported("argument %" + name + " has no emitted value (its node failed)");
    return it->second;
  }
  Ssa node_value(const std::string& name) {
    const auto& v = node_values(name);
    if (v.size() != 1)
      throw Unsupported("%" + name + " has " + std::to_string(v.size()) + " results and is used without getitem");
    return v[0];
  }

  /// One argument of schema type `type`.
  Ssa operand(const Value& v, const ArgType& t, const std::string& arg) {
    if (v.is_nil()) {
      if (t.optional || t.base == "Tensor?") return const_none();
      throw Unsupported("argument '" + arg + "' is None but its type is not optional");
    }
    if (t.list) return list(v, t, arg);
    return scalar(v, t.base, arg);
  }
  Ssa scalar(const Value& v, const std::string& base, const std::string& arg) {
    const std::string what = "argument '" + arg + "' (" + base + ")";
    switch (v.kind()) {
      case ValueKind::node: return node_value(v.node_name());
      case ValueKind::nil:
        if (base == "Tensor?") return const_none();
        break;
      case ValueKind::integer:
        if (base == "Tensor" || base == "Tensor?") return wrapped_number(const_int(v.as_int()), "si64");
        if (base == "float") return const_float(static_cast<double>(v.as_int()));
        if (base == "int" || base == "SymInt" || base == "Scalar" || base == "ScalarType" || base == "Layout" ||
            base == "MemoryFormat")
          return const_int(v.as_int());  // the enums are ints in the torch dialect
        break;
      case ValueKind::floating:
        if (base == "Tensor" || base == "Tensor?") return wrapped_number(const_float(v.as_float()), "f64");
        if (base == "float" || base == "Scalar") return const_float(v.as_float());
        break;
      case ValueKind::boolean:
        if (base == "bool") return const_bool(v.as_bool());
        // The torch dialect's Scalar is a number (int or float), never a bool: True is the Scalar 1.
        if (base == "Scalar") return const_int(v.as_bool() ? 1 : 0);
        break;
      case ValueKind::string:
        if (base == "str") return const_str(v.as_str());
        break;
      case ValueKind::dtype:
        if (base == "ScalarType" || base == "int") {
          if (auto st = scalar_type(v.as_dtype())) return const_int(*st);
        }
        break;
      case ValueKind::memory_format:
        if (base == "MemoryFormat" || base == "int") {
          static constexpr int code[] = {0, 2, 3, 1};  // contiguous, channels_last, channels_last_3d, preserve
          return const_int(code[static_cast<int>(v.as_memory_format())]);
        }
        break;
      case ValueKind::layout:
        if (base == "Layout" || base == "int") {
          // c10::Layout: Strided 0, Sparse 1, SparseCsr 2, Mkldnn 3, SparseCsc 4, SparseBsr 5, SparseBsc 6, Jagged 7
          static constexpr int code[] = {0, 1, 2, 4, 5, 6, 7};  // in fxlower's order: strided, sparse_coo, ...
          return const_int(code[static_cast<int>(v.as_layout())]);
        }
        break;
      case ValueKind::device:
        if (base == "Device") return constant("d" + v.as_device().str, "device", "torch.constant.device " +
                                              quote(v.as_device().str), "!torch.Device");
        break;
      default: break;
    }
    throw Unsupported(what + " is a " + std::string(value_kind_name(v.kind())) + " (" + v.repr() +
                      "), which the emitter cannot express as that type");
  }
  /// A Python number where the schema has a Tensor (torch.export keeps aten.add.Tensor(x, 3)): ATen wraps it as a
  /// 0-d tensor; the torch dialect's form of that is torch.prim.NumToTensor.Scalar (a wrapped number, which does
  /// not promote the other operand's dtype).
  Ssa wrapped_number(const Ssa& num, const char* elem) {
    Ssa r{unique("scalar"), std::string("!torch.vtensor<[],") + elem + ">"};
    body_ += "    " + r.name + " = torch.prim.NumToTensor.Scalar " + num.name + " : " + num.type + " -> " + r.type + "\n";
    return r;
  }
  Ssa list(const Value& v, const ArgType& t, const std::string& arg) {
    std::vector<Ssa> elems;
    if (v.kind() == ValueKind::list || v.kind() == ValueKind::tuple) {
      for (const Value& e : v.items()) elems.push_back(scalar(e, t.base, arg));
    } else if (t.fixed > 0 && v.kind() == ValueKind::integer) {
      for (std::size_t i = 0; i < t.fixed; ++i) elems.push_back(scalar(v, t.base, arg));  // int[2] given one int
    } else {
      throw Unsupported("argument '" + arg + "' (" + t.base + "[]) is a " + std::string(value_kind_name(v.kind())) +
                        ", not a list");
    }
    std::string elem;
    if (t.base == "Tensor") elem = "vtensor";
    else if (t.base == "Tensor?") elem = "optional<vtensor>";
    else if (t.base == "int" || t.base == "SymInt") elem = "int";
    else if (t.base == "float") elem = "float";
    else if (t.base == "bool") elem = "bool";
    else throw Unsupported("argument '" + arg + "': lists of " + t.base + " are not emitted");
    return list_of(elems, elem, arg);
  }
  Ssa list_of(const std::vector<Ssa>& elems, const std::string& elem, const std::string& arg) {
    Ssa r{unique(arg.empty() ? "list" : arg), "!torch.list<" + elem + ">"};
    std::string names, types;
    for (std::size_t i = 0; i < elems.size(); ++i) {
      names += (i ? ", " : " ") + elems[i].name;
      types += (i ? ", " : "") + elems[i].type;
    }
    body_ += "    " + r.name + " = torch.prim.ListConstruct" + names + " : (" + types + ") -> " + r.type + "\n";
    return r;
  }

  // ---------------------------------------------------------------- calls
  /// The torch-dialect name of a target where it is not torch.aten.NAME[.OVERLOAD], or "" (the generic rule).
  static std::string special_target(const std::string& target) {
    // Python arithmetic on sizes (docs/format.md's operator.* targets) is TorchScript's int arithmetic in the
    // torch dialect; Python's % is remainder.int.
    static const std::map<std::string, std::string> py = {
        {"operator.add", "torch.aten.add.int"},   {"operator.sub", "torch.aten.sub.int"},
        {"operator.mul", "torch.aten.mul.int"},   {"operator.floordiv", "torch.aten.floordiv.int"},
        {"operator.mod", "torch.aten.remainder.int"}, {"operator.neg", "torch.aten.neg.int"},
        {"operator.eq", "torch.aten.eq.int"},     {"operator.ne", "torch.aten.ne.int"},
        {"operator.lt", "torch.aten.lt.int"},     {"operator.le", "torch.aten.le.int"},
        {"operator.gt", "torch.aten.gt.int"},     {"operator.ge", "torch.aten.ge.int"},
        // The size queries are SymInt-valued in ATen; the torch dialect has only their int forms.
        {"aten.sym_size.int", "torch.aten.size.int"}, {"aten.sym_numel.default", "torch.aten.numel"}};
    const auto it = py.find(target);
    return it == py.end() ? std::string() : it->second;
  }

  void call(const Node& n) {
    if (n.target == "operator.getitem") return getitem(n);
    if (n.target == "higher_order.cond" || n.target == "higher_order.while_loop")
      throw Unsupported("control flow (" + n.target + ") is not emitted: the torch dialect's torch.prim.If/Loop "
                        "over subgraphs is not implemented in fxlower-mlir");
    const auto schema = cv_.find_op(n.target);
    if (!schema) throw Unsupported("no schema for the target in CoreView.ops");
    std::string opname = special_target(n.target);
    const bool python_op = n.target.rfind("operator.", 0) == 0;
    if (opname.empty()) {
      if (schema->name.rfind("aten::", 0) != 0)
        throw Unsupported("operator '" + n.target + "' has no torch-dialect form");
      if (n.target == "aten.sym_stride.int" || n.target == "aten.sym_storage_offset.default")
        throw Unsupported("operator '" + n.target + "' has no torch-dialect form (value tensors have no strides)");
      opname = "torch.aten." + schema->name.substr(6) + (schema->overload == "default" ? "" : "." + schema->overload);
    }
    // Bind args by position to the non-kwarg_only arguments, kwargs by name; the rest take their defaults.
    std::vector<const Value*> bound(schema->arguments.size(), nullptr);
    std::size_t pos = 0;
    for (std::size_t i = 0; i < n.args.size(); ++i) {
      while (pos < schema->arguments.size() && schema->arguments[pos].kwarg_only) ++pos;
      if (pos >= schema->arguments.size())
        throw Unsupported(std::to_string(n.args.size()) + " positional arguments for a schema with fewer");
      bound[pos++] = &n.args[i];
    }
    for (const auto& [k, v] : n.kwargs) {
      std::size_t j = 0;
      while (j < schema->arguments.size() && schema->arguments[j].name != k) ++j;
      if (j == schema->arguments.size()) throw Unsupported("keyword argument '" + k + "' is not in the schema");
      bound[j] = &v;
    }
    std::vector<Ssa> operands;
    for (std::size_t j = 0; j < schema->arguments.size(); ++j) {
      const OpArg& a = schema->arguments[j];
      if (a.mutates)
        throw Unsupported("argument '" + a.name + "' is written in place (" + a.type + "!): value tensors are immutable");
      if (!bound[j] && a.required) throw Unsupported("required argument '" + a.name + "' is not bound");
      const Value& v = bound[j] ? *bound[j] : a.default_value;
      ArgType t = parse_type(a.type);
      if (python_op) t.base = "int";  // Python arithmetic on sizes: SymInt operands
      if (python_op && v.kind() == ValueKind::floating)
        throw Unsupported("float arithmetic on Python scalars is not emitted (only SymInt arithmetic)");
      if (t.base == "Any" || t.base == "Graph") throw Unsupported("argument '" + a.name + "' of type " + a.type);
      operands.push_back(operand(v, t, a.name));
    }
    if (n.target == "aten._assert_tensor_metadata.default") {
      // A trace-time check of a tensor's dtype/device/shape, with no result: the MLIR types already fix what it
      // asserts, and the torch dialect has no such op. Its arguments were checked above; nothing is emitted.
      vals_[n.name] = {};
      return;
    }
    // Results: one per schema return, typed from the node's Meta.
    if (!n.meta) throw Unsupported("the node has no Meta, so its result types are unknown");
    std::vector<std::string> rtypes;
    const Meta& m = *n.meta;
    bool list_result = false;
    std::vector<std::string> unpacked;
    if (schema->returns.size() == 1) {
      const std::string& rt = schema->returns[0].type;
      if (rt == "Tensor[]") {
        if (m.kind != MetaKind::list && m.kind != MetaKind::tuple) throw Unsupported("a Tensor[] result without a list Meta");
        list_result = true;
        rtypes.push_back("!torch.list<vtensor>");
        for (const Meta& e : m.items) unpacked.push_back(meta_type(e));
      } else {
        rtypes.push_back(meta_type(m));
      }
    } else {
      if (m.kind != MetaKind::tuple || m.items.size() != schema->returns.size())
        throw Unsupported("the Meta does not describe the schema's " + std::to_string(schema->returns.size()) +
                          " results");
      for (const Meta& e : m.items) rtypes.push_back(meta_type(e));
    }
    if (n.target == "aten._native_batch_norm_legit.no_stats") {
      // Not in the torch dialect either: native_batch_norm without running statistics (instance norm's form).
      opname = "torch.aten.native_batch_norm";
      if (operands.size() != 6) throw Unsupported("expected the 6 arguments of its schema");
      const Ssa none = const_none();
      operands.insert(operands.begin() + 3, {none, none});
    }
    if (n.target == "aten.upsample_bilinear2d.vec") {
      // IREE's torch input does not lower upsample_bilinear2d (either form); __interpolate (F.interpolate's op)
      // with mode "bilinear" takes exactly .vec's arguments: (input, output_size, scale_factors, mode,
      // align_corners, recompute_scale_factor=None, antialias=False), and computes the same sizes and scales.
      opname = "torch.aten.__interpolate.size_list_scale_list";
      if (operands.size() != 4) throw Unsupported("expected the 4 arguments of its schema");
      operands = {operands[0], operands[1], operands[3], const_str("bilinear"), operands[2], const_none(),
                  const_bool(false)};
    }
    if (n.target == "aten.upsample_nearest2d.vec" && m.kind == MetaKind::tensor && m.shape.size() == 4 &&
        m.sym.empty()) {
      // The .vec form's float scale list is left unlowered; the fixed-size form takes the output size (the Meta's:
      // what ATen computed from the scales) and the scales themselves (ATen indexes the input with them).
      const Value& sv = n.args.size() > 2 ? n.args[2] : Value();
      std::vector<Ssa> ops{operands[0]};
      ops.push_back(list_of({const_int(m.shape[2]), const_int(m.shape[3])}, "int", "output_size"));
      if (sv.kind() == ValueKind::list || sv.kind() == ValueKind::tuple) {
        if (sv.items().size() != 2) throw Unsupported("scale_factors of length " + std::to_string(sv.items().size()));
        ops.push_back(const_float(sv.items()[0].as_number()));
        ops.push_back(const_float(sv.items()[1].as_number()));
      } else {
        ops.push_back(const_none());
        ops.push_back(const_none());
      }
      operands = ops;
      opname = "torch.aten.upsample_nearest2d";
    }
    if (n.target == "aten.squeeze.dims") return squeeze_dims(n, operands, rtypes);
    if (n.target == "aten._native_batch_norm_legit_no_training.default") {
      // The torch dialect has no _native_batch_norm_legit_no_training; it is native_batch_norm with training=False
      // inserted before momentum (ATen defines it so), which torch-mlir decomposes.
      opname = "torch.aten.native_batch_norm";
      if (operands.size() != 7) throw Unsupported("expected the 7 arguments of its schema");
      operands.insert(operands.begin() + 5, const_bool(false));
      // ATen's eval-mode saved statistics are empty ([0]); torch-mlir's lowering makes them [C]: leave the size open.
      for (std::size_t i = 1; i < rtypes.size(); ++i)
        if (m.items[i].kind == MetaKind::tensor && m.items[i].shape.size() == 1)
          rtypes[i] = vtensor({"?"}, m.items[i].dtype);
    }
    const std::string res = unique(n.name);
    std::string line = "    " + res + (rtypes.size() > 1 ? ":" + std::to_string(rtypes.size()) : "") + " = " + opname;
    for (std::size_t i = 0; i < operands.size(); ++i) line += (i ? ", " : " ") + operands[i].name;
    line += " :";
    for (std::size_t i = 0; i < operands.size(); ++i) line += (i ? ", " : " ") + operands[i].type;
    line += " ->";
    for (std::size_t i = 0; i < rtypes.size(); ++i) line += (i ? ", " : " ") + rtypes[i];
    body_ += line + "\n";
    ++ops_;
    std::vector<Ssa> out;
    if (list_result) {
      // A Tensor[] result is a !torch.list; getitem reads its elements, which torch-mlir needs unpacked into SSA
      // values (torch.prim.ListUnpack) to lower the op (split_with_sizes, ...).
      const std::string up = unique(n.name + "_items");
      std::string l = "    " + up + (unpacked.size() > 1 ? ":" + std::to_string(unpacked.size()) : "") +
                      " = torch.prim.ListUnpack " + res + " : !torch.list<vtensor> ->";
      for (std::size_t i = 0; i < unpacked.size(); ++i) l += (i ? ", " : " ") + unpacked[i];
      body_ += l + "\n";
      for (std::size_t i = 0; i < unpacked.size(); ++i)
        out.push_back({unpacked.size() > 1 ? up + "#" + std::to_string(i) : up, unpacked[i]});
      vals_[n.name] = out;
      return;
    }
    for (std::size_t i = 0; i < rtypes.size(); ++i)
      out.push_back({rtypes.size() > 1 ? res + "#" + std::to_string(i) : res, rtypes[i]});
    vals_[n.name] = out;
  }

  /// The dims of a !torch.vtensor<[d0,d1,...],T> type ("?" for a dynamic one).
  static std::vector<std::string> dims_of(const std::string& type) {
    std::vector<std::string> d;
    const auto a = type.find('['), b = type.find(']');
    if (a == std::string::npos || b == std::string::npos || b == a + 1) return d;
    std::string cur;
    for (std::size_t i = a + 1; i < b; ++i) {
      if (type[i] == ',') {
        d.push_back(cur);
        cur.clear();
      } else {
        cur += type[i];
      }
    }
    d.push_back(cur);
    return d;
  }
  /// aten.squeeze.dims (several dims at once) is not in the torch dialect, whose squeeze.dim takes one: one
  /// squeeze.dim per listed dim, from the last to the first so that the indices stay valid.
  void squeeze_dims(const Node& n, const std::vector<Ssa>& operands, const std::vector<std::string>& rtypes) {
    const Value& dv = n.args.size() > 1 ? n.args[1] : n.kwarg_at("dim");
    std::vector<std::string> dims = dims_of(operands.at(0).type);
    const auto rank = static_cast<std::int64_t>(dims.size());
    std::vector<std::int64_t> ds;
    for (std::int64_t d : dv.int_list()) {
      if (rank == 0 ? (d < -1 || d > 0) : (d < -rank || d >= rank))
        throw Unsupported("dim " + std::to_string(d) + " is out of range for rank " + std::to_string(rank));
      const std::int64_t k = rank == 0 ? 0 : (d < 0 ? d + rank : d);
      if (std::find(ds.begin(), ds.end(), k) == ds.end()) ds.push_back(k);
    }
    std::sort(ds.rbegin(), ds.rend());
    const std::string elem = operands[0].type.substr(operands[0].type.find(']') + 2);
    Ssa cur = operands[0];
    for (std::size_t i = 0; i < ds.size(); ++i) {
      if (rank > 0 && dims[static_cast<std::size_t>(ds[i])] == "1") dims.erase(dims.begin() + ds[i]);
      const bool last = i + 1 == ds.size();
      Ssa next{unique(last ? n.name : n.name + "_part"), last ? rtypes.at(0) : vtensor_text(dims, elem)};
      const Ssa k = const_int(ds[i]);
      body_ += "    " + next.name + " = torch.aten.squeeze.dim " + cur.name + ", " + k.name + " : " + cur.type +
               ", !torch.int -> " + next.type + "\n";
      ++ops_;
      cur = next;
    }
    vals_[n.name] = {cur};
  }
  static std::string vtensor_text(const std::vector<std::string>& dims, const std::string& elem_and_close) {
    std::string s = "!torch.vtensor<[";
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + dims[i];
    return s + "]," + elem_and_close;
  }

  /// operator.getitem(node, i) on a multi-result op or an unpacked list: result i itself (no op).
  void getitem(const Node& n) {
    if (n.args.size() != 2 || n.args[0].kind() != ValueKind::node || n.args[1].kind() != ValueKind::integer)
      throw Unsupported("getitem is emitted only as (node, int)");
    const auto& src = node_values(n.args[0].node_name());
    std::int64_t i = n.args[1].as_int();
    if (i < 0) i += static_cast<std::int64_t>(src.size());
    if (i < 0 || i >= static_cast<std::int64_t>(src.size()))
      throw Unsupported("index " + std::to_string(n.args[1].as_int()) + " of %" + n.args[0].node_name() + ", which has " +
                        std::to_string(src.size()) + " results");
    vals_[n.name] = {src[static_cast<std::size_t>(i)]};
  }

  const Artifact& a_;
  const EmitOptions& o_;
  const CoreView& cv_;
  std::set<std::string> used_, global_names_, failed_;
  std::map<std::string, std::vector<Ssa>> vals_;
  std::map<std::string, Ssa> consts_;
  std::map<std::string, std::string> global_of_, key_file_;
  std::vector<std::pair<const Node*, Ssa>> user_inputs_;
  std::vector<std::string> files_, problems_;
  std::string globals_text_, body_;
  std::size_t globals_ = 0, ops_ = 0;
};

}  // namespace detail_mlir

/// The torch-dialect module of the artifact's core view. Throws EmitError (everything not expressible, by node) or
/// fxlower::Error ("api.not_found" when the artifact has no core view).
inline EmitResult emit(const Artifact& a, const EmitOptions& o = {}) {
  if (!a.core()) detail::raise("api.not_found", a.directory(), "the artifact has no core view (export with core=True)");
  return detail_mlir::Emitter(a, o).run();
}

}  // namespace fxlower::mlir
