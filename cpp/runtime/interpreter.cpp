// fxlower reference runtime: the interpreter, golden comparison and safetensors I/O.
#include "interpreter.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "kernels.hpp"

namespace fxlower::rt {

namespace {

std::string op_text(fxlower::Op op) { return std::string(fxlower::op_name(op)); }

bool map_dtype(fxlower::DType d, DType& out) { return rt_dtype(d, out); }

// A runtime tensor over checked little-endian bytes (an artifact's table entry or a safetensors file's entry):
// F32, F64, I64 and BOOL are borrowed when aligned (kept alive by `keep`), the rest converted with the header's
// element accessors. BOOL bytes are read as nonzero = true.
Tensor tensor_from_bytes(const std::string& name, fxlower::DType fd, const std::vector<int64_t>& dims,
                         const std::byte* p, const std::shared_ptr<void>& keep) {
  DType dt;
  if (!map_dtype(fd, dt))
    fail("tensor '" + name + "' has dtype " + std::string(fxlower::dtype_name(fd)) +
         ", which the runtime does not compute with");
  Shape shape(dims.begin(), dims.end());
  const int64_t n = shape_numel(shape);
  auto aligned = [&](size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  if (fd == fxlower::DType::F32 || fd == fxlower::DType::F64 || fd == fxlower::DType::I64)
    if (aligned(storage_itemsize(dt)))
      return Tensor::borrowed(dt, shape, const_cast<std::byte*>(p), keep, false);
  Tensor r = Tensor::empty(dt, shape);
  using fxlower::detail::load_le;
  switch (fd) {
    case fxlower::DType::F32: std::memcpy(r.raw(), p, size_t(n) * 4); break;
    case fxlower::DType::F64: std::memcpy(r.raw(), p, size_t(n) * 8); break;
    case fxlower::DType::I64: std::memcpy(r.raw(), p, size_t(n) * 8); break;
    case fxlower::DType::BOOL: {
      uint8_t* d = r.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) d[i] = std::to_integer<uint8_t>(p[i]) != 0;
      break;
    }
    case fxlower::DType::F16: case fxlower::DType::BF16: {
      float* d = r.data<float>();
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = load_le<uint16_t>(p + 2 * i);
        d[i] = fd == fxlower::DType::F16 ? fxlower::half_to_float(h) : fxlower::bfloat16_to_float(h);
      }
      break;
    }
    case fxlower::DType::I32: for (int64_t i = 0; i < n; ++i) r.data<int64_t>()[i] = int32_t(load_le<uint32_t>(p + 4 * i)); break;
    case fxlower::DType::I16: for (int64_t i = 0; i < n; ++i) r.data<int64_t>()[i] = int16_t(load_le<uint16_t>(p + 2 * i)); break;
    case fxlower::DType::I8: for (int64_t i = 0; i < n; ++i) r.data<int64_t>()[i] = int8_t(load_le<uint8_t>(p + i)); break;
    case fxlower::DType::U8: for (int64_t i = 0; i < n; ++i) r.data<int64_t>()[i] = load_le<uint8_t>(p + i); break;
    default: fail("tensor '" + name + "' has dtype " + std::string(fxlower::dtype_name(fd)) + ", which the runtime does not compute with");
  }
  return r;
}

Tensor load_table_tensor(const fxlower::Tensor& t, const std::shared_ptr<fxlower::Artifact>& keep) {
  return tensor_from_bytes(t.name, t.dtype, t.shape, t.data(), std::static_pointer_cast<void>(keep));
}

Val materialize(const Val& t, const std::vector<Val>& env) {
  switch (t.k) {
    case Val::K::NodeRef: return env[size_t(t.i)];
    case Val::K::List: case Val::K::Tuple: case Val::K::Slice: {
      bool any = false;
      for (const auto& x : *t.items)
        if (x.k == Val::K::NodeRef || x.items || x.dict) { any = true; break; }
      if (!any) return t;
      std::vector<Val> items;
      items.reserve(t.items->size());
      for (const auto& x : *t.items) items.push_back(materialize(x, env));
      return Val::seq_(t.k, std::move(items));
    }
    case Val::K::Dict: {
      Val r = t;
      r.dict = std::make_shared<std::vector<std::pair<Val, Val>>>();
      for (const auto& kv : *t.dict) r.dict->emplace_back(kv.first, materialize(kv.second, env));
      return r;
    }
    default: return t;
  }
}

void collect_refs(const Val& t, std::vector<int64_t>& out) {
  if (t.k == Val::K::NodeRef) out.push_back(t.i);
  if (t.items) for (const auto& x : *t.items) collect_refs(x, out);
  if (t.dict) for (const auto& kv : *t.dict) collect_refs(kv.second, out);
}

bool truthy_kwarg(const std::vector<std::pair<std::string, Val>>& kw, const char* name) {
  for (const auto& kv : kw)
    if (kv.first == name && kv.second.k == Val::K::Bool) return kv.second.b;
  return false;
}

// operator.iadd and friends (x += y on a tensor mutates x).
bool inplace_operator(const std::string& t) {
  static const std::set<std::string> names = {
      "operator.iadd", "operator.isub", "operator.imul", "operator.itruediv", "operator.ifloordiv", "operator.imod",
      "operator.ipow", "operator.iand", "operator.ior", "operator.ixor", "operator.ilshift", "operator.irshift",
      "operator.imatmul"};
  return names.count(t) != 0;
}

// Writes an in-place op's result into its first argument's storage, as torch would have mutated it.
Val write_back(const Val& arg0, Val result) {
  if (!arg0.is_tensor() || !result.is_tensor()) return result;
  Tensor dst = arg0.t;
  const Tensor& src = result.t;
  if (dst.shares_storage(src) && dst.shape == src.shape) return arg0;
  if (!dst.writable() || dst.shape != src.shape) return result;
  Tensor conv = src.to(dst.dtype);
  std::memcpy(dst.raw(), conv.raw(), dst.nbytes());
  return arg0;
}

}  // namespace

std::string PNode::describe() const {
  std::string s = "node '" + name + "' (" + op_text(op) + " " + target;
  if (!module_type.empty()) s += ": " + module_type;
  return s + ")";
}

// ================================================================================================ program

Tensor Program::tensor(const std::string& name) const {
  auto it = tensor_cache_.find(name);
  if (it != tensor_cache_.end()) return it->second;
  auto t = artifact_->tensor(name);
  if (!t) fail("tensor '" + name + "' is not in the tensor table");
  Tensor r = load_table_tensor(*t, artifact_);
  tensor_cache_.emplace(name, r);
  return r;
}

Val Program::convert(const fxlower::Value& v, const fxlower::Graph* g, const std::string& where) const {
  using VK = fxlower::ValueKind;
  switch (v.kind()) {
    case VK::nil: return Val::none();
    case VK::boolean: return Val::boolean(v.as_bool());
    case VK::integer: return Val::integer(v.as_int());
    case VK::floating: return Val::real(v.as_float());
    case VK::string: return Val::str(v.as_str());
    case VK::node: {
      if (!g) fail(where + ": a node reference outside a graph");
      auto n = g->find_node(v.node_name());
      if (!n) fail(where + ": unknown node '" + v.node_name() + "'");
      return Val::node_ref(int64_t(n->index));
    }
    case VK::tensor: return Val::tensor(tensor(v.tensor_name()));
    case VK::list: case VK::tuple: {
      std::vector<Val> items;
      for (const auto& x : v.items()) items.push_back(convert(x, g, where));
      return v.kind() == VK::list ? Val::list(std::move(items)) : Val::tuple(std::move(items));
    }
    case VK::dict: {
      Val r;
      r.k = Val::K::Dict;
      r.dict = std::make_shared<std::vector<std::pair<Val, Val>>>();
      for (const auto& kv : v.as_dict().items) {
        Val key = std::holds_alternative<std::int64_t>(kv.first) ? Val::integer(std::get<std::int64_t>(kv.first))
                                                                 : Val::str(std::get<std::string>(kv.first));
        r.dict->emplace_back(key, convert(kv.second, g, where));
      }
      return r;
    }
    case VK::slice: {
      const auto& s = v.as_slice();
      return Val::slice(convert(s.start(), g, where), convert(s.stop(), g, where), convert(s.step(), g, where));
    }
    case VK::ellipsis: return Val::ellipsis();
    case VK::complex: {
      Val r;
      r.k = Val::K::Complex;
      r.f = v.as_complex().re;
      r.im = v.as_complex().im;
      return r;
    }
    case VK::dtype: {
      DType d;
      if (!map_dtype(v.as_dtype(), d))
        fail(where + ": dtype " + std::string(fxlower::dtype_name(v.as_dtype())) + " is not supported by the runtime");
      return Val::dtype(d);
    }
    case VK::device: return Val::device(v.as_device().str);
    case VK::function: return Val::function(v.function_name());
    case VK::module: return Val::module_type(v.module_type());
    case VK::memory_format: {
      Val r;
      r.k = Val::K::MemFormat;
      r.s = std::string(fxlower::memory_format_name(v.as_memory_format()));
      return r;
    }
    case VK::layout: {
      Val r;
      r.k = Val::K::Layout;
      r.s = std::string(fxlower::layout_name(v.as_layout()));
      return r;
    }
    case VK::graph: {
      Val r;
      r.k = Val::K::Graph;
      r.i = int64_t(v.graph_index());
      return r;
    }
  }
  fail(where + ": unsupported value");
}

namespace {

// One formal parameter of an operator: its name, whether it is keyword-only, and its default (or none).
struct Formal {
  std::string name;
  bool kwarg_only = false;
  bool has_default = false;
  const fxlower::Value* dflt = nullptr;  // nil Value = None
};

// Binds a node's args and kwargs to the formal parameters, as torch binds an OpOverload call: positionally, then
// by name, then defaults (a required parameter without a value, an extra positional or an unknown keyword are
// errors). The result is the complete positional argument list.
std::vector<Val> bind_formals(const std::vector<Formal>& formals, std::vector<Val> args,
                              std::vector<std::pair<std::string, Val>> kwargs,
                              const std::function<Val(const fxlower::Value&)>& conv, const std::string& op) {
  std::vector<Val> out(formals.size());
  std::vector<bool> have(formals.size(), false);
  size_t positional = 0;
  for (const Formal& f : formals) positional += f.kwarg_only ? 0 : 1;
  if (args.size() > positional)
    fail(op + " takes " + std::to_string(positional) + " positional argument(s), got " + std::to_string(args.size()));
  for (size_t i = 0; i < args.size(); ++i) {
    out[i] = std::move(args[i]);
    have[i] = true;
  }
  for (auto& kv : kwargs) {
    size_t j = 0;
    while (j < formals.size() && formals[j].name != kv.first) ++j;
    if (j == formals.size()) fail(op + " has no argument '" + kv.first + "'");
    if (have[j]) fail(op + " got argument '" + kv.first + "' twice");
    out[j] = std::move(kv.second);
    have[j] = true;
  }
  for (size_t j = 0; j < formals.size(); ++j)
    if (!have[j]) {
      if (!formals[j].has_default) fail(op + " is missing its required argument '" + formals[j].name + "'");
      out[j] = formals[j].dflt ? conv(*formals[j].dflt) : Val::none();
    }
  return out;
}

bool is_aten(const std::string& t) { return t.rfind("aten.", 0) == 0; }

const std::string kCond = "higher_order.cond";
const std::string kWhile = "higher_order.while_loop";

// The operands of a control-flow op as a list of values.
std::vector<Val> operand_list(const Val& v) {
  if (v.is_seq()) return v.seq();
  return {v};
}

}  // namespace

Program::Program(const fxlower::Artifact& artifact, View view)
    : view_(view), artifact_(std::make_shared<fxlower::Artifact>(artifact)) {
  const Registry& reg = registry();
  std::vector<std::string> unsupported;
  const fxlower::CoreView* core = nullptr;
  if (view == View::core) {
    if (!artifact_->core()) fail("the artifact has no core view (format 1.2 core=True); run the module view");
    core = &*artifact_->core();
  } else if (artifact_->graphs().empty()) {
    fail("the artifact has no module view (graphs is empty); run it with --view core");
  }
  const std::vector<fxlower::Graph>& all = core ? core->graphs : artifact_->graphs();
  for (const fxlower::Graph& g : all) {
    PGraph pg;
    pg.name = g.name;
    std::vector<int64_t> last_use(g.nodes.size(), -1);
    for (const fxlower::Node& n : g.nodes) {
      PNode p;
      p.name = n.name;
      p.op = n.op;
      p.target = n.target;
      std::string where = "graph '" + g.name + "' node '" + n.name + "'";
      try {
        for (const auto& a : n.args) p.args.push_back(convert(a, &g, where));
        for (const auto& kv : n.kwargs) p.kwargs.emplace_back(kv.first, convert(kv.second, &g, where));
        switch (n.op) {
          case fxlower::Op::placeholder:
            if (core && &g == &all[0]) {
              const auto& in = core->inputs.at(pg.placeholders.size() + pg.state_inputs);
              if (in.kind != fxlower::CoreInputKind::user_input) {
                p.tensor = tensor(in.target);  // parameters, buffers and constants come from the table
                ++pg.state_inputs;
                p.op = fxlower::Op::get_attr;
                break;
              }
            }
            pg.placeholders.push_back(int64_t(n.index));
            break;
          case fxlower::Op::get_attr:
            p.tensor = tensor(g.name.empty() ? n.target : g.name + "." + n.target);
            break;
          case fxlower::Op::call_function:
            p.handler = reg.find(OpKind::Function, n.target);
            if (core && (n.target == kCond || n.target == kWhile)) break;  // control flow: run by exec_graph
            if (!p.handler) {
              unsupported.push_back(p.describe() + ": unsupported " + (core || is_aten(n.target) ? "operator '" : "function '") +
                                    n.target + "'");
            } else {
              // Operators bind to their schema: the core view's OpSchema, or a module view's declared overload.
              std::vector<Formal> formals;
              bool have = false;
              if (core) {
                if (auto sch = core->find_op(n.target)) {
                  have = true;
                  for (const auto& a : sch->arguments)
                    formals.push_back({a.name, a.kwarg_only, !a.required, a.required ? nullptr : &a.default_value});
                }
              } else if (is_aten(n.target)) {
                if (auto ov = artifact_->overload_of(n)) {
                  have = true;
                  for (const auto& a : ov->params)
                    formals.push_back({a.name, a.kind == fxlower::ParamKind::keyword_only, !a.required,
                                       a.required ? nullptr : &a.default_value});
                }
              }
              if (have) {
                auto conv = [&](const fxlower::Value& v) { return convert(v, nullptr, where); };
                p.args = bind_formals(formals, std::move(p.args), std::move(p.kwargs), conv, n.target);
                p.kwargs.clear();
                p.bound = true;
              }
            }
            p.inplace = truthy_kwarg(p.kwargs, "inplace") ||
                        (n.target.rfind("torch.", 0) == 0 && n.target.back() == '_' &&
                         n.target[n.target.size() - 2] != '_') ||
                        inplace_operator(n.target);
            break;
          case fxlower::Op::call_method: {
            p.handler = reg.find(OpKind::Method, n.target);
            bool trailing = n.target.size() > 1 && n.target.back() == '_' && n.target[n.target.size() - 2] != '_';
            if (!p.handler && trailing) p.handler = reg.find(OpKind::Method, n.target.substr(0, n.target.size() - 1));
            if (!p.handler) unsupported.push_back(p.describe() + ": unsupported method '" + n.target + "'");
            p.inplace = trailing;
            break;
          }
          case fxlower::Op::call_module:
            if (n.graph) {
              p.graph = int64_t(*n.graph);
            } else {
              const fxlower::Lowering& lw = *n.lowering;
              p.module_type = lw.module_type;
              for (const auto& kv : lw.attrs) {
                Val v = convert(kv.second, nullptr, where + " attribute '" + kv.first + "'");
                // Format 1.0's legacy rule (docs/format.md 6.1): there a str attribute naming a module type this
                // runtime knows is a child module of that type, and a dotted str naming a function it knows is
                // that function. 1.1 files say so with module/function Values; their strs stay strs.
                if (artifact_->format_minor() == 0 && v.k == Val::K::Str) {
                  if (reg.find(OpKind::Module, v.s)) v = Val::module_type(v.s);
                  else if (v.s.find('.') != std::string::npos && reg.find(OpKind::Function, v.s)) v = Val::function(v.s);
                }
                p.attrs.emplace(kv.first, std::move(v));
              }
              p.handler = reg.find(OpKind::Module, lw.module_type);
              if (!p.handler) unsupported.push_back(p.describe() + ": unsupported module type '" + lw.module_type + "'");
              auto ip = p.attrs.find("inplace");
              p.inplace = ip != p.attrs.end() && ip->second.k == Val::K::Bool && ip->second.b;
            }
            break;
          case fxlower::Op::output:
            break;
        }
      } catch (const Error& e) {
        unsupported.push_back(p.describe() + ": " + e.what());
      }
      std::vector<int64_t> refs;
      for (const auto& a : p.args) collect_refs(a, refs);
      for (const auto& kv : p.kwargs) collect_refs(kv.second, refs);
      for (int64_t r : refs) last_use[size_t(r)] = std::max<int64_t>(last_use[size_t(r)], int64_t(n.index));
      pg.nodes.push_back(std::move(p));
    }
    for (size_t i = 0; i < last_use.size(); ++i)
      if (last_use[i] >= 0 && pg.nodes[size_t(last_use[i])].op != fxlower::Op::output)
        pg.nodes[size_t(last_use[i])].release.push_back(int64_t(i));
    graphs_.push_back(std::move(pg));
  }
  if (!unsupported.empty()) {
    std::string msg = std::to_string(unsupported.size()) + " unsupported operation(s):";
    for (const auto& u : unsupported) msg += "\n  " + u;
    fail(msg);
  }
  if (core) fold_constants();
}

// Core view: operators whose arguments are all constants (weights, literals, or results of such operators) are
// computed once here and their nodes become constants: the transposed weight of a linear layer before addmm, a
// causal mask built from arange/full/comparisons, a cast of a weight. The module view never pays for them either.
// Every Core ATen handler is a pure function of its arguments (no randomness, no state, no mutation: the core
// view of an eval-mode model); results above 16M elements stay computed at run time.
void Program::fold_constants() {
  auto foldable = [](const std::string& t) {
    return (t.rfind("aten.", 0) == 0 && t != "aten.sym_size.int" && t.find("assert") == std::string::npos) ||
           t == "operator.getitem";
  };
  for (PGraph& g : graphs_) {
    std::vector<Val> env(g.nodes.size());
    std::vector<bool> known(g.nodes.size(), false);
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      PNode& n = g.nodes[i];
      if (n.op == fxlower::Op::get_attr) {
        env[i] = Val::tensor(n.tensor);
        known[i] = true;
        continue;
      }
      if (n.op != fxlower::Op::call_function || !n.handler || !foldable(n.target)) continue;
      if (!n.bound && n.target != "operator.getitem") continue;
      std::vector<int64_t> refs;
      for (const auto& a : n.args) collect_refs(a, refs);
      for (const auto& kv : n.kwargs) collect_refs(kv.second, refs);
      bool all = true;
      for (int64_t r : refs) all = all && known[size_t(r)];
      if (!all) continue;
      Call c;
      c.node = &n.name;
      c.target = &n.target;
      for (const auto& x : n.args) c.args.push_back(materialize(x, env));
      for (const auto& kv : n.kwargs) c.kwargs.emplace_back(kv.first, materialize(kv.second, env));
      Val v;
      try {
        v = (*n.handler)(c);
      } catch (const std::exception&) {
        continue;  // left to run time, where the error names the node
      }
      for_each_tensor(v, [](Tensor& t) {
        if (is_half(t.dtype) && t.writable()) round_to_dtype(t);
      });
      env[i] = v;
      known[i] = true;
      if (!v.is_tensor() || v.t.numel() > (int64_t(1) << 24)) continue;  // tuples stay for their getitem users
      n.op = fxlower::Op::get_attr;
      n.tensor = v.t;
      n.handler = nullptr;
    }
  }
}

Val Program::exec_graph(size_t gi, std::vector<Val> inputs, const std::vector<std::pair<std::string, Val>>& kwargs,
                        const NodeHook* hook, Profile* profile, int depth) const {
  const PGraph& g = graphs_.at(gi);
  std::vector<Val> env(g.nodes.size());
  // bind placeholders
  if (inputs.size() > g.placeholders.size())
    fail("graph '" + g.name + "' takes " + std::to_string(g.placeholders.size()) + " inputs, got " +
         std::to_string(inputs.size()));
  for (size_t k = 0; k < g.placeholders.size(); ++k) {
    const PNode& p = g.nodes[size_t(g.placeholders[k])];
    const Val* v = k < inputs.size() ? &inputs[k] : nullptr;
    for (const auto& kv : kwargs)
      if (kv.first == p.target) v = &kv.second;
    if (v) env[size_t(g.placeholders[k])] = *v;
    else if (!p.args.empty()) env[size_t(g.placeholders[k])] = p.args[0];
    else fail("missing input '" + p.target + "'" + (g.name.empty() ? "" : " of graph '" + g.name + "'"));
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const PNode& n = g.nodes[i];
    Val result;
    try {
      switch (n.op) {
        case fxlower::Op::placeholder:
          result = env[i];
          break;
        case fxlower::Op::get_attr:
          result = Val::tensor(n.tensor);
          break;
        case fxlower::Op::output:
          return materialize(n.args.at(0), env);
        case fxlower::Op::call_module:
          if (n.graph >= 0) {
            std::vector<Val> a;
            for (const auto& x : n.args) a.push_back(materialize(x, env));
            std::vector<std::pair<std::string, Val>> kw;
            for (const auto& kv : n.kwargs) kw.emplace_back(kv.first, materialize(kv.second, env));
            result = exec_graph(size_t(n.graph), std::move(a), kw, nullptr, profile, depth + 1);
            break;
          }
          [[fallthrough]];
        case fxlower::Op::call_function:
          if (!n.handler && (n.target == kCond || n.target == kWhile)) {
            // cond(pred, true_graph, false_graph, operands); while_loop(cond_graph, body_graph, carried, additional)
            std::vector<Val> a;
            for (const auto& x : n.args) a.push_back(materialize(x, env));
            if (n.target == kCond) {
              if (a.size() < 4 || a[1].k != Val::K::Graph || a[2].k != Val::K::Graph)
                fail("cond takes (pred, true graph, false graph, operands)");
              const Val& g = a[0].as_bool() ? a[1] : a[2];
              result = exec_graph(size_t(g.i), operand_list(a[3]), {}, nullptr, profile, depth + 1);
            } else {
              if (a.size() < 3 || a[0].k != Val::K::Graph || a[1].k != Val::K::Graph)
                fail("while_loop takes (cond graph, body graph, carried, additional)");
              std::vector<Val> carried = operand_list(a[2]);
              const std::vector<Val> extra = a.size() > 3 ? operand_list(a[3]) : std::vector<Val>{};
              for (int64_t it = 0;; ++it) {
                std::vector<Val> in = carried;
                in.insert(in.end(), extra.begin(), extra.end());
                Val p = exec_graph(size_t(a[0].i), in, {}, nullptr, profile, depth + 1);
                if (p.is_seq()) p = p.seq().at(0);
                if (!p.as_bool()) break;
                if (it >= (int64_t(1) << 31)) fail("while_loop ran 2^31 iterations");
                carried = operand_list(exec_graph(size_t(a[1].i), in, {}, nullptr, profile, depth + 1));
              }
              result = Val::tuple(carried);
            }
            break;
          }
          [[fallthrough]];
        case fxlower::Op::call_method: {
          Call c;
          c.node = &n.name;
          c.target = n.module_type.empty() ? &n.target : &n.module_type;
          c.args.reserve(n.args.size());
          for (const auto& x : n.args) c.args.push_back(materialize(x, env));
          for (const auto& kv : n.kwargs) c.kwargs.emplace_back(kv.first, materialize(kv.second, env));
          if (!n.module_type.empty()) c.attrs = Attrs{&n.attrs, ""};
          if (profile) {
            auto t0 = std::chrono::steady_clock::now();
            result = (*n.handler)(c);
            auto& e = profile->ops[op_text(n.op) + " " + *c.target];
            e.calls++;
            e.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          } else {
            result = (*n.handler)(c);
          }
          if (n.inplace && !c.args.empty()) result = write_back(c.args[0], std::move(result));
          break;
        }
      }
      // half results are rounded to their precision, as torch stores them
      for_each_tensor(result, [](Tensor& t) {
        if (is_half(t.dtype) && t.writable()) round_to_dtype(t);
      });
    } catch (const fxlower::Error& e) {
      throw Error(n.describe() + ": " + e.what());
    } catch (const Error& e) {
      std::string msg = e.what();
      if (msg.rfind("node '", 0) == 0) throw Error(n.describe() + " > " + msg);
      throw Error(n.describe() + ": " + msg);
    } catch (const std::exception& e) {
      throw Error(n.describe() + ": " + e.what());
    }
    env[i] = std::move(result);
    if (hook && depth == 0 && *hook) (*hook)(n, env[i]);
    for (int64_t r : n.release) env[size_t(r)] = Val();
  }
  fail("graph '" + g.name + "' has no output node");
}

Val Program::run(const std::vector<Val>& inputs, const NodeHook& hook, Profile* profile) const {
  // inputs are copied so that in-place operations never write into caller (or mapped) memory
  std::vector<Val> in;
  for (const auto& v : inputs) {
    Val c = v;
    for_each_tensor(c, [](Tensor& t) { t = t.clone(); });
    in.push_back(std::move(c));
  }
  if (view_ == View::module) return exec_graph(0, std::move(in), {}, hook ? &hook : nullptr, profile, 0);
  bind_symbols(in);
  Val out = exec_graph(0, std::move(in), {}, hook ? &hook : nullptr, profile, 0);
  // The user outputs, in order (buffer mutations dropped: the runtime keeps no state between runs).
  const auto& outs = artifact_->core()->outputs;
  std::vector<Val> all = out.is_seq() ? out.seq() : std::vector<Val>{out};
  std::vector<Val> user;
  for (size_t j = 0; j < outs.size() && j < all.size(); ++j)
    if (outs[j].kind == fxlower::CoreOutputKind::user_output) user.push_back(all[j]);
  return Val::tuple(std::move(user));
}

void Program::bind_symbols(const std::vector<Val>& inputs) const {
  const fxlower::CoreView& cv = *artifact_->core();
  // user input k of core.inputs is positional input k
  std::vector<size_t> user_index(cv.inputs.size(), SIZE_MAX);
  size_t k = 0;
  for (size_t j = 0; j < cv.inputs.size(); ++j)
    if (cv.inputs[j].kind == fxlower::CoreInputKind::user_input) user_index[j] = k++;
  for (const auto& [name, sym] : cv.symbols) {
    const size_t u = user_index.at(sym.input);
    if (u >= inputs.size() || !inputs[u].is_tensor())
      fail("symbol " + name + " is defined by input " + std::to_string(u) + ", which is missing or not a tensor");
    const Tensor& t = inputs[u].t;
    if (int64_t(sym.dim) >= t.dim())
      fail("symbol " + name + " is dimension " + std::to_string(sym.dim) + " of input " + std::to_string(u) +
           ", which has rank " + std::to_string(t.dim()));
    const int64_t v = t.shape[sym.dim];
    const std::string range = "[" + std::to_string(sym.min) + ", " + (sym.max ? std::to_string(*sym.max) : std::string("inf")) + "]";
    if (v < sym.min || (sym.max && v > *sym.max))
      fail("symbol " + name + " = " + std::to_string(v) + " (dimension " + std::to_string(sym.dim) + " of input " +
           std::to_string(u) + ", '" + cv.inputs[sym.input].target + "') is outside its range " + range);
  }
}

std::vector<Val> Program::golden_inputs() const {
  const auto& g = artifact_->golden();
  if (!g) fail("the artifact has no golden data");
  std::vector<Val> r;
  for (const auto& v : g->inputs) r.push_back(value(v));
  return r;
}

Val Program::value(const fxlower::Value& v) const { return convert(v, nullptr, "golden data"); }

// ================================================================================================ comparison

TensorDiff compare_tensors(const Tensor& a, const Tensor& e, double atol, double rtol) {
  TensorDiff d;
  d.numel = e.numel();
  if (a.shape != e.shape) {
    d.ok = d.shape_ok = false;
    return d;
  }
  if (a.dtype != e.dtype) {
    d.ok = d.dtype_ok = false;
  }
  bool exact = !is_floating(e.dtype);
  for (int64_t i = 0; i < e.numel(); ++i) {
    double x = a.item_double(i), y = e.item_double(i);
    bool good;
    double diff = 0;
    if (std::isnan(x) || std::isnan(y)) {
      good = std::isnan(x) && std::isnan(y);
      diff = good ? 0 : INFINITY;
    } else if (x == y) {
      good = true;
    } else {
      diff = std::fabs(x - y);
      good = exact ? false : diff <= atol + rtol * std::fabs(y);
    }
    if (!good) ++d.mismatches;
    d.max_abs = std::max(d.max_abs, diff);
    if (diff > 0) d.max_rel = std::max(d.max_rel, y != 0 ? diff / std::fabs(y) : INFINITY);
  }
  if (d.mismatches) d.ok = false;
  return d;
}

// ================================================================================================ safetensors

namespace {

const char* st_code(DType d) { return dtype_code(d); }

}  // namespace

std::vector<std::pair<std::string, Tensor>> read_safetensors(const std::string& path) {
  // The header's strict reader: the same checks as an artifact's tensor files (a repeated key, a gap or trailing
  // bytes are errors, not guesses).
  auto file = std::make_shared<fxlower::SafetensorsFile>(fxlower::read_safetensors(path));
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& e : file->entries())
    out.emplace_back(e.name, tensor_from_bytes(e.name, e.dtype, e.shape, e.data, std::static_pointer_cast<void>(file)));
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  // largest item size first, then by key (the fxlower writers' order), so every tensor is aligned
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t ia = storage_itemsize(tensors[a].second.dtype), ib = storage_itemsize(tensors[b].second.dtype);
    if (ia != ib) return ia > ib;
    return tensors[a].first < tensors[b].first;
  });
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  std::string data;
  for (size_t i : order) {
    const auto& [key, t] = tensors[i];
    const size_t isz = storage_itemsize(t.dtype);
    size_t begin = data.size();
    std::string buf(size_t(t.numel()) * isz, '\0');
    for (int64_t j = 0; j < t.numel(); ++j) {
      char* q = buf.data() + size_t(j) * isz;
      switch (t.dtype) {
        case DType::F32: std::memcpy(q, t.data<float>() + j, 4); break;
        case DType::F64: std::memcpy(q, t.data<double>() + j, 8); break;
        case DType::F16: { uint16_t v = f32_to_f16(t.data<float>()[j]); std::memcpy(q, &v, 2); break; }
        case DType::BF16: { uint16_t v = f32_to_bf16(t.data<float>()[j]); std::memcpy(q, &v, 2); break; }
        case DType::I64: std::memcpy(q, t.data<int64_t>() + j, 8); break;
        case DType::I32: { int32_t v = int32_t(t.data<int64_t>()[j]); std::memcpy(q, &v, 4); break; }
        case DType::I16: { int16_t v = int16_t(t.data<int64_t>()[j]); std::memcpy(q, &v, 2); break; }
        case DType::I8: { int8_t v = int8_t(t.data<int64_t>()[j]); std::memcpy(q, &v, 1); break; }
        case DType::U8: { uint8_t v = uint8_t(t.data<int64_t>()[j]); std::memcpy(q, &v, 1); break; }
        case DType::BOOL: *q = char(t.data<uint8_t>()[j] ? 1 : 0); break;
      }
    }
    data += buf;
    h[key] = {{"dtype", st_code(t.dtype)}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string header = h.dump();
  while ((8 + header.size()) % 8) header += ' ';
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail("cannot write " + path);
  uint64_t n = header.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = char((n >> (8 * i)) & 0xff);
  f.write(len, 8);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(data.data(), std::streamsize(data.size()));
  if (!f) fail("write to " + path + " failed");
}

}  // namespace fxlower::rt
