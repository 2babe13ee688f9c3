// fxlower reference runtime: the operator registry and what a handler sees.
//
// Every supported operation is a handler in the registry under its kind and name: a leaf module by its lowering
// record's module_type (torch.nn.Conv2d), a call_function target by its canonical name (torch.flatten,
// operator.add), a call_method target by the method name (view). `fxlower-run --list-ops` prints the registry,
// and docs/ops.md is rendered from that list.
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "value.hpp"

namespace fxlower::rt {

// ------------------------------------------------------------------------------------------------ attributes

using AttrMap = std::unordered_map<std::string, Val>;

// A leaf module's lowering attributes, seen through an optional dotted prefix (for children: "self_attn.").
struct Attrs {
  const AttrMap* map = nullptr;
  std::string prefix;

  const Val* find(const std::string& key) const;       // nullptr when absent
  const Val& get(const std::string& key) const;        // an Error when absent
  bool has(const std::string& key) const { return find(key) != nullptr; }
  Tensor tensor(const std::string& key) const;         // an Error when absent or not a tensor
  Tensor tensor_opt(const std::string& key) const;     // undefined when absent or None
  int64_t integer(const std::string& key) const;
  double dbl(const std::string& key) const;
  bool flag(const std::string& key) const;
  std::string str(const std::string& key) const;
  std::vector<int64_t> ints(const std::string& key) const;  // an int or a sequence of ints
  Attrs sub(const std::string& child) const { return Attrs{map, prefix + child + "."}; }
};

// ------------------------------------------------------------------------------------------------ a call

struct Call {
  const std::string* node = nullptr;    // the node's name
  const std::string* target = nullptr;  // its target (module_type for leaf modules)
  std::vector<Val> args;
  std::vector<std::pair<std::string, Val>> kwargs;
  Attrs attrs;                          // leaf modules only

  const Val* kwarg(const std::string& name) const;
};

// Binds a call's positional and keyword arguments to a parameter list, as Python would. Keyword arguments
// outside the list are an Error, except a few that never change the result on CPU (device, layout, ...).
class Args {
 public:
  Args(const Call& call, std::initializer_list<const char*> names);
  size_t size() const { return slots_.size(); }
  bool given(size_t i) const { return slots_[i] != nullptr; }             // present, maybe None
  bool has(size_t i) const { return given(i) && !slots_[i]->is_none(); }  // present and not None
  const Val& operator[](size_t i) const;                                 // an Error when absent
  Tensor tensor(size_t i) const;
  Tensor tensor_opt(size_t i) const;  // undefined when absent or None
  double dbl(size_t i, double dflt) const;
  int64_t integer(size_t i, int64_t dflt) const;
  bool flag(size_t i, bool dflt) const;
  std::string str(size_t i, const std::string& dflt) const;
  std::vector<int64_t> ints(size_t i) const;
  const char* name(size_t i) const { return names_[i]; }

 private:
  std::vector<const char*> names_;
  std::vector<const Val*> slots_;
};

// ------------------------------------------------------------------------------------------------ registry

enum class OpKind { Module, Function, Method };
using Handler = std::function<Val(Call&)>;

class Registry {
 public:
  void add(OpKind kind, const std::string& name, Handler fn);
  // The same handler under several names of one kind.
  void add(OpKind kind, std::initializer_list<const char*> names, const Handler& fn);
  const Handler* find(OpKind kind, const std::string& name) const;
  const std::map<std::string, Handler>& of(OpKind kind) const;

 private:
  std::map<std::string, Handler> modules_, functions_, methods_;
};

const Registry& registry();

// Registration, one per family (called once by registry()).
void register_elementwise(Registry& r);
void register_shape(Registry& r);
void register_nn(Registry& r);
void register_sequence(Registry& r);
void register_aten(Registry& r);  // Core ATen operators (aten.<name>.<overload>), format 1.2

}  // namespace fxlower::rt
