// fxlower-dump DIR: a canonical text dump of an artifact, to compare the C++ reader with the Python loader
// (fxlower/tools/dump.py writes the same bytes). The grammar is also in cpp/DUMP.md; keep the two in sync.
//
// Output: UTF-8 lines, each ended by "\n", fields separated by one space, the whole output sorted by the bytes
// of each line (Python: sorted() of the str lines, code point order = UTF-8 byte order). One line per fact:
//
//   format <major>.<minor>
//   producer <str name> <str version> <str torch>
//   digest <digest>                                              the manifest's digest field, as written
//   file <path> <role>                                           per files[] entry
//   graph <gi> <str name> <node count> training=<bool>           per graph; gi = index in graphs
//   node <gi> <i> <name> <op> <target> args=<list> kwargs=<dict> meta=<meta> overload=<int or None>
//                                                                per node; i = index in its graph; args is the
//                                                                list of Values rendered as a list Value, kwargs
//                                                                as a dict Value with str keys
//   lowering <gi> <name> <module_type> <version> <module_version> training=<bool> attrs=<dict>
//                                                                per node with a lowering record
//   subgraph <gi> <name> <graph index>                           per node with a non-nil graph field
//   signature inputs=<list of str> output=<value>
//   golden <mode> <file> inputs=<list> outputs=<value>           only when golden is not nil
//   golden_node <name> <value>                                   per golden.nodes entry
//   tolerance <dtype> <float rtol> <float atol>                  per golden.tolerances entry
//   tensor <name> <dtype> <shape> <file> <key> <sha256> kind=<str> requires_grad=<bool> persistent=<bool>
//                                                                per tensor table entry; sha256 is recomputed
//                                                                from the stored bytes (lowercase hex)
//   module <type> version=<int> attrs=<count> forward=<count>   per modules entry (1.1)
//   module_attr <type> <i> <name> <attr type> <str doc>          per AttrDecl
//   module_param <type> <j> <name> <kind> required=<bool> default=<value>
//                                                                per forward Param
//   core graphs=<count> inputs=<count> outputs=<count> ops=<count> symbols=<count>   artifact with a core view (1.2)
//   core_graph <gi> <str name> <node count> training=<bool>     per core graph; gi = index in core.graphs
//   core_node <gi> <i> <name> <op> <target> args=<list> kwargs=<dict> meta=<meta> origin=<graph>:<node> | None
//   core_input <i> <name> <kind> <target>                       per core.inputs entry
//   core_output <i> <str name> <kind> <str target>              per core.outputs entry
//   op <key> <str name> <str overload> arguments=<count> returns=<count>   per core.ops entry
//   op_arg <key> <arguments|returns> <j> <str name> <str type> kwarg_only=<bool> required=<bool> mutates=<bool>
//          default=<value>                                       per OpArg
//   symbol <name> min=<int> max=<int or None> input=<int> dim=<int>        per core.symbols entry
//   golden_core_node <name> <value>                              per golden.core_nodes entry
//   overload <function|method> <name> <i> params=<count> returns=<str>
//                                                                per Overload of functions / methods (1.1)
//   overload_param <function|method> <name> <i> <j> <name> <kind> required=<bool> default=<value>
//                                                                per Param of an Overload
//
// Names, targets, op, module_type, paths, roles, mode and dtype codes are written as they are (not quoted);
// <str x> is a str Value rendering. Ints are decimal. <shape> is "[d0,d1]" (no spaces; "[]" for 0-d).
//
// Values:   nil None | bool True, False | int decimal (-5) | float Python repr(float): shortest round-trip,
//           scientific when the exponent is < -4 or >= 16 (1e-05, 1e+16, 0.0001, 2.0, -0.0, inf, -inf, nan)
//           | str json.dumps(s, ensure_ascii=False) | node %name | tensor $name | list [a, b] | tuple (a, b),
//           (a,), () | dict {k: v, k2: v2} with keys rendered as Values | slice slice(a, b, c) | ellipsis ...
//           | complex complex(re, im) with float reprs | dtype dtype(F32) | device device(cuda:0)
//           | memory_format memory_format(channels_last) | layout layout(strided)
//           | function function(torch.nn.functional.relu) | module module(torch.nn.Linear)
// Meta:     nil None | tensor(F32,[1,3]) | tuple(m1, m2) | list(m1, m2) | dict(k: m, k2: m2) | int | float |
//           bool | str | none | other | device | dtype | memory_format | layout
//           (a msgpack float32 renders as the double it widens to)
//
// Exit status: 0 ok, 1 the artifact is invalid ("error: [code] message" on stderr), 2 usage.
#include <fxlower/fxlower.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

/// 1.3: " placement=[mesh]:dim,dim[:name,name]" (a dim is shard(d) or replicate), "" when not placed.
std::string placement_str(const std::optional<fxlower::Placement>& p) {
  if (!p) return "";
  std::string out = " placement=[";
  for (std::size_t i = 0; i < p->mesh.size(); ++i) out += (i ? "," : "") + std::to_string(p->mesh[i]);
  out += "]:";
  for (std::size_t i = 0; i < p->dims.size(); ++i)
    out += std::string(i ? "," : "") +
           (p->dims[i].kind == fxlower::MeshDim::Kind::shard ? "shard(" + std::to_string(p->dims[i].dim) + ")" : "replicate");
  if (!p->mesh_dim_names.empty()) {
    out += ":";
    for (std::size_t i = 0; i < p->mesh_dim_names.size(); ++i) out += (i ? "," : "") + p->mesh_dim_names[i];
  }
  return out;
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string kv_dict(const fxlower::Kwargs& kv) {
  std::vector<std::pair<fxlower::DictKey, fxlower::Value>> items;
  for (const auto& p : kv) items.emplace_back(fxlower::DictKey(p.first), p.second);
  return fxlower::Value::dict(std::move(items)).repr();
}

std::string str_list(const std::vector<std::string>& v) {
  std::vector<fxlower::Value> items;
  for (const auto& s : v) items.push_back(fxlower::Value::string(s));
  return fxlower::Value::list(std::move(items)).repr();
}

const char* py_bool(bool b) { return b ? "True" : "False"; }

void param_lines(std::vector<std::string>& lines, const std::string& prefix, const std::vector<fxlower::Param>& ps) {
  for (std::size_t j = 0; j < ps.size(); ++j)
    lines.push_back(prefix + " " + std::to_string(j) + " " + ps[j].name + " " +
                    std::string(fxlower::param_kind_name(ps[j].kind)) + " required=" + py_bool(ps[j].required) +
                    " default=" + ps[j].default_value.repr());
}

std::vector<std::string> dump_lines(const fxlower::Artifact& a) {
  using fxlower::quote_str;
  std::vector<std::string> lines;
  lines.push_back("format " + std::to_string(a.format_major()) + "." + std::to_string(a.format_minor()));
  lines.push_back("producer " + quote_str(a.producer().name) + " " + quote_str(a.producer().version) + " " +
                  quote_str(a.producer().torch));
  lines.push_back("digest " + a.digest());
  for (const auto& f : a.files()) lines.push_back("file " + f.path + " " + std::string(fxlower::file_role_name(f.role)));
  for (const auto& g : a.graphs()) {
    const std::string gi = std::to_string(g.index);
    lines.push_back("graph " + gi + " " + quote_str(g.name) + " " + std::to_string(g.nodes.size()) + " training=" +
                    py_bool(g.training));
    for (const auto& n : g.nodes) {
      lines.push_back("node " + gi + " " + std::to_string(n.index) + " " + n.name + " " +
                      std::string(fxlower::op_name(n.op)) + " " + n.target + " args=" +
                      fxlower::Value::list(n.args).repr() + " kwargs=" + kv_dict(n.kwargs) +
                      " meta=" + (n.meta ? n.meta->repr() : std::string("None")) +
                      " overload=" + (n.overload ? std::to_string(*n.overload) : std::string("None")));
      if (n.lowering)
        lines.push_back("lowering " + gi + " " + n.name + " " + n.lowering->module_type + " " +
                        std::to_string(n.lowering->version) + " " + std::to_string(n.lowering->module_version) +
                        " training=" + py_bool(n.lowering->training) + " attrs=" + kv_dict(n.lowering->attrs));
      if (n.graph) lines.push_back("subgraph " + gi + " " + n.name + " " + std::to_string(*n.graph));
    }
  }
  if (const auto& core = a.core()) {
    lines.push_back("core graphs=" + std::to_string(core->graphs.size()) + " inputs=" + std::to_string(core->inputs.size()) +
                    " outputs=" + std::to_string(core->outputs.size()) + " ops=" + std::to_string(core->ops.size()) +
                    " symbols=" + std::to_string(core->symbols.size()));
    for (const auto& g : core->graphs) {
      const std::string gi = std::to_string(g.index);
      lines.push_back("core_graph " + gi + " " + quote_str(g.name) + " " + std::to_string(g.nodes.size()) +
                      " training=" + py_bool(g.training));
      for (const auto& n : g.nodes)
        lines.push_back("core_node " + gi + " " + std::to_string(n.index) + " " + n.name + " " +
                        std::string(fxlower::op_name(n.op)) + " " + n.target + " args=" +
                        fxlower::Value::list(n.args).repr() + " kwargs=" + kv_dict(n.kwargs) +
                        " meta=" + (n.meta ? n.meta->repr() : std::string("None")) + " origin=" +
                        (n.origin ? std::to_string(n.origin->graph) + ":" + n.origin->node : std::string("None")));
    }
    for (std::size_t i = 0; i < core->inputs.size(); ++i) {
      const auto& in = core->inputs[i];
      lines.push_back("core_input " + std::to_string(i) + " " + in.name + " " +
                      std::string(fxlower::core_input_kind_name(in.kind)) + " " + in.target);
    }
    for (std::size_t i = 0; i < core->outputs.size(); ++i) {
      const auto& o = core->outputs[i];
      lines.push_back("core_output " + std::to_string(i) + " " + quote_str(o.name) + " " +
                      std::string(fxlower::core_output_kind_name(o.kind)) + " " + quote_str(o.target));
    }
    for (const auto& [key, op] : core->ops) {
      lines.push_back("op " + key + " " + quote_str(op.name) + " " + quote_str(op.overload) + " arguments=" +
                      std::to_string(op.arguments.size()) + " returns=" + std::to_string(op.returns.size()));
      for (int which = 0; which < 2; ++which) {
        const auto& args = which == 0 ? op.arguments : op.returns;
        for (std::size_t j = 0; j < args.size(); ++j)
          lines.push_back("op_arg " + key + (which == 0 ? " arguments " : " returns ") + std::to_string(j) + " " +
                          quote_str(args[j].name) + " " + quote_str(args[j].type) + " kwarg_only=" + py_bool(args[j].kwarg_only) +
                          " required=" + py_bool(args[j].required) + " mutates=" + py_bool(args[j].mutates) +
                          " default=" + args[j].default_value.repr());
      }
    }
    for (const auto& [name, s] : core->symbols)
      lines.push_back("symbol " + name + " min=" + std::to_string(s.min) + " max=" +
                      (s.max ? std::to_string(*s.max) : std::string("None")) + " input=" + std::to_string(s.input) +
                      " dim=" + std::to_string(s.dim));
  }
  lines.push_back("signature inputs=" + str_list(a.signature().inputs) + " output=" + a.signature().output.repr());
  if (const auto& g = a.golden()) {
    lines.push_back("golden " + std::string(g->mode == fxlower::GoldenMode::nodes ? "nodes" : "outputs") + " " +
                    g->file + " inputs=" + fxlower::Value::list(g->inputs).repr() + " outputs=" + g->outputs.repr());
    for (const auto& kv : g->nodes) lines.push_back("golden_node " + kv.first + " " + kv.second.repr());
    for (const auto& kv : g->core_nodes) lines.push_back("golden_core_node " + kv.first + " " + kv.second.repr());
    for (const auto& t : g->tolerances)
      lines.push_back("tolerance " + std::string(fxlower::dtype_name(t.first)) + " " +
                      fxlower::python_float_repr(t.second.rtol) + " " + fxlower::python_float_repr(t.second.atol));
  }
  for (const auto& t : a.tensors())
    lines.push_back("tensor " + t.name + " " + std::string(fxlower::dtype_name(t.dtype)) + " " + shape_str(t.shape) +
                    " " + t.file + " " + t.key + " " + t.compute_sha256() + " kind=" +
                    quote_str(fxlower::tensor_kind_name(t.kind)) + " requires_grad=" + py_bool(t.requires_grad) +
                    " persistent=" + py_bool(t.persistent) + placement_str(t.placement));
  for (const auto& [type, d] : a.modules()) {
    lines.push_back("module " + type + " version=" + std::to_string(d.version) + " attrs=" + std::to_string(d.attrs.size()) +
                    " forward=" + std::to_string(d.forward.size()));
    for (std::size_t i = 0; i < d.attrs.size(); ++i)
      lines.push_back("module_attr " + type + " " + std::to_string(i) + " " + d.attrs[i].name + " " + d.attrs[i].type +
                      " " + quote_str(d.attrs[i].doc));
    param_lines(lines, "module_param " + type, d.forward);
  }
  for (int which = 0; which < 2; ++which) {
    const std::string what = which == 0 ? "function" : "method";
    for (const auto& [name, list] : which == 0 ? a.functions() : a.methods())
      for (std::size_t i = 0; i < list.size(); ++i) {
        lines.push_back("overload " + what + " " + name + " " + std::to_string(i) + " params=" +
                        std::to_string(list[i].params.size()) + " returns=" + quote_str(list[i].returns));
        param_lines(lines, "overload_param " + what + " " + name + " " + std::to_string(i), list[i].params);
      }
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

}  // namespace

const char* const kHelp =
    "usage: fxlower-dump [--non-strict] DIR\n"
    "\n"
    "Loads the artifact in DIR with the C++ reader and prints its canonical dump: one line per fact (format,\n"
    "producer, files, graphs, nodes, lowering records, signature, golden data, tensors with the SHA-256 of their\n"
    "stored bytes, module declarations and overloads), sorted by bytes. fxlower/tools/dump.py prints the same bytes from\n"
    "the Python loader; cpp/DUMP.md is the grammar.\n"
    "\n"
    "options:\n"
    "  --non-strict  ignore directory entries the manifest does not list (they are never opened)\n"
    "  -h, --help    print this help and exit\n"
    "\n"
    "exit status: 0 dumped, 1 the artifact is invalid (\"error: [code] where: message\" on stderr), 2 usage\n";

int main(int argc, char** argv) {
  fxlower::LoadOptions opts;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (arg == "--non-strict") opts.strict = false;
    else if ((arg.empty() || arg[0] != '-') && dir.empty()) dir = arg;
    else {
      std::fprintf(stderr, "fxlower-dump: unexpected argument %s\n%s", arg.c_str(), kHelp);
      return 2;
    }
  }
  if (dir.empty()) {
    std::fputs(kHelp, stderr);
    return 2;
  }
  try {
    const fxlower::Artifact a = fxlower::load(dir, opts);
    std::string out;
    for (const std::string& line : dump_lines(a)) out += line + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const fxlower::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
