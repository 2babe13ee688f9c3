// fxlower reference runtime: the interpreter over a loaded artifact, golden checks and safetensors I/O.
//
//   fxlower::Artifact a = fxlower::load(dir);
//   fxlower::rt::Program p(a);                 // resolves every node's handler; unsupported ops throw here
//   fxlower::rt::Val out = p.run(p.golden_inputs());
#pragma once

#include <fxlower/fxlower.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ops.hpp"

namespace fxlower::rt {

// A node of a graph, prepared for execution.
struct PNode {
  std::string name;
  fxlower::Op op = fxlower::Op::placeholder;
  std::string target;
  std::string module_type;                  // leaf call_module nodes
  std::vector<Val> args;                    // templates: NodeRef(index) for node references
  std::vector<std::pair<std::string, Val>> kwargs;
  const Handler* handler = nullptr;         // call_function / call_method / leaf call_module
  AttrMap attrs;                            // leaf call_module: lowering attributes (tensors resolved)
  int64_t graph = -1;                       // call_module of a nested graph
  bool bound = false;                       // args bound to the operator schema: positional, complete
  Tensor tensor;                            // get_attr
  bool inplace = false;                     // the op mutates args[0] (inplace=True, x.add_(...), operator.iadd)
  std::vector<int64_t> release;             // nodes whose value is dead after this one
  std::string describe() const;             // "node 'conv1' (call_module conv1: torch.nn.Conv2d)"
};

struct PGraph {
  std::string name;
  std::vector<PNode> nodes;
  std::vector<int64_t> placeholders;
  size_t state_inputs = 0;  // core root: placeholders fed from the tensor table (parameters, buffers, constants)
};

// Called after each node of the root graph with its result.
using NodeHook = std::function<void(const PNode&, const Val&)>;

// Time spent per operation (module type, function or method name), accumulated over runs.
struct Profile {
  struct Entry {
    int64_t calls = 0;
    double ms = 0;
  };
  std::map<std::string, Entry> ops;
};

// Which view of the artifact a Program executes: the module view (Manifest.graphs) or the core view (1.2).
enum class View { module, core };

class Program {
 public:
  // Prepares every graph of the view. Throws Error listing every node whose operation is unsupported.
  explicit Program(const fxlower::Artifact& artifact, View view = View::module);
  View view() const { return view_; }

  // Runs the root graph on positional inputs (missing trailing inputs take the placeholders' defaults).
  Val run(const std::vector<Val>& inputs, const NodeHook& hook = nullptr, Profile* profile = nullptr) const;

  const fxlower::Artifact& artifact() const { return *artifact_; }
  const PGraph& root() const { return graphs_.at(0); }
  // The golden inputs as values (an Error when the artifact has none).
  std::vector<Val> golden_inputs() const;
  // A Value of the artifact (golden data) as a runtime value, tensors loaded.
  Val value(const fxlower::Value& v) const;
  // A tensor of the artifact's table as a runtime tensor (F32/F64/I64/BOOL borrowed from the mapping).
  Tensor tensor(const std::string& name) const;

 private:
  Val convert(const fxlower::Value& v, const fxlower::Graph* g, const std::string& where) const;
  Val exec_graph(size_t gi, std::vector<Val> inputs, const std::vector<std::pair<std::string, Val>>& kwargs,
                 const NodeHook* hook, Profile* profile, int depth) const;

  // Core view: binds each symbol from its input's dimension and checks its range (an Error naming the symbol).
  void bind_symbols(const std::vector<Val>& inputs) const;
  // Core view: weight-only layout operators computed once (their nodes become constants).
  void fold_constants();

  View view_ = View::module;
  std::shared_ptr<fxlower::Artifact> artifact_;
  std::vector<PGraph> graphs_;
  mutable std::unordered_map<std::string, Tensor> tensor_cache_;
};

// ------------------------------------------------------------------------------------------------ checks

struct TensorDiff {
  bool ok = true;
  bool shape_ok = true, dtype_ok = true;
  double max_abs = 0, max_rel = 0;
  int64_t mismatches = 0, numel = 0;
};

// Compares actual with expected under a tolerance (exact for integer and bool dtypes).
TensorDiff compare_tensors(const Tensor& actual, const Tensor& expected, double atol, double rtol);

// ------------------------------------------------------------------------------------------------ safetensors

// Reads every tensor of a safetensors file (converted to runtime tensors), in key order of the header.
std::vector<std::pair<std::string, Tensor>> read_safetensors(const std::string& path);
// Writes tensors (in their dtypes) to a safetensors file.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace fxlower::rt
