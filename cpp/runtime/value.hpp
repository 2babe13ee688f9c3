// fxlower reference runtime: the values that flow through the interpreter.
//
// A Val is what a node produces or consumes: None, a bool, an int, a float, a str, a tensor, a list/tuple (also
// torch.Size), a dict, a slice, an ellipsis, a dtype, a device, a memory format, a layout, a complex number, a
// function (its canonical name) or a module type (a child module of that type, in lowering attributes).
// Node references (NodeRef) appear only in the argument templates the interpreter builds at load time.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor.hpp"

namespace fxlower::rt {

struct Val {
  enum class K : uint8_t {
    None, Bool, Int, Float, Str, Tensor, List, Tuple, Dict, Slice, Ellipsis,
    DType, Device, MemFormat, Layout, Complex, NodeRef, Function, ModuleType, Graph
  };
  K k = K::None;
  bool b = false;
  int64_t i = 0;   // Int; NodeRef: the node's index in its graph
  double f = 0;    // Float; Complex: real part
  double im = 0;   // Complex: imaginary part
  DType dt = DType::F32;
  std::string s;   // Str, Device, MemFormat, Layout; Function: canonical name; ModuleType: type name
  Tensor t;
  std::shared_ptr<std::vector<Val>> items;                 // List, Tuple; Slice: [start, stop, step]
  std::shared_ptr<std::vector<std::pair<Val, Val>>> dict;  // Dict, in order

  static Val none() { return Val(); }
  static Val boolean(bool v) { Val x; x.k = K::Bool; x.b = v; return x; }
  static Val integer(int64_t v) { Val x; x.k = K::Int; x.i = v; return x; }
  static Val real(double v) { Val x; x.k = K::Float; x.f = v; return x; }
  static Val str(std::string v) { Val x; x.k = K::Str; x.s = std::move(v); return x; }
  static Val tensor(Tensor v) { Val x; x.k = K::Tensor; x.t = std::move(v); return x; }
  static Val dtype(DType d) { Val x; x.k = K::DType; x.dt = d; return x; }
  static Val device(std::string v) { Val x; x.k = K::Device; x.s = std::move(v); return x; }
  static Val function(std::string v) { Val x; x.k = K::Function; x.s = std::move(v); return x; }
  static Val module_type(std::string v) { Val x; x.k = K::ModuleType; x.s = std::move(v); return x; }
  static Val list(std::vector<Val> v) { return seq_(K::List, std::move(v)); }
  static Val tuple(std::vector<Val> v) { return seq_(K::Tuple, std::move(v)); }
  static Val ints(const std::vector<int64_t>& v, bool as_tuple = true);
  static Val tensors(std::vector<Tensor> v);  // a tuple of tensors
  static Val slice(Val start, Val stop, Val step) {
    return seq_(K::Slice, std::vector<Val>{std::move(start), std::move(stop), std::move(step)});
  }
  static Val ellipsis() { Val x; x.k = K::Ellipsis; return x; }
  static Val node_ref(int64_t index) { Val x; x.k = K::NodeRef; x.i = index; return x; }
  static Val seq_(K kind, std::vector<Val> v) {
    Val x; x.k = kind; x.items = std::make_shared<std::vector<Val>>(std::move(v)); return x;
  }

  bool is_none() const { return k == K::None; }
  bool is_tensor() const { return k == K::Tensor; }
  bool is_seq() const { return k == K::List || k == K::Tuple; }
  bool is_number() const { return k == K::Bool || k == K::Int || k == K::Float; }
  bool is_int_like() const { return k == K::Bool || k == K::Int; }

  const std::vector<Val>& seq() const;        // List or Tuple, else an Error
  double as_double() const;                   // Bool, Int, Float or a one-element tensor
  int64_t as_int() const;                     // Bool, Int, an integral Float or a one-element integer tensor
  bool as_bool() const;
  const Tensor& as_tensor() const;            // Tensor, else an Error
  std::vector<int64_t> as_ints() const;       // an int, or a list/tuple of ints
  std::string kind_name() const;              // for messages: "int", "tensor F32[2, 3]", ...
  std::string repr() const;                   // short Python-like text, for messages
};

// Calls fn(tensor) for every tensor inside v, depth first.
template <class F>
void for_each_tensor(Val& v, F&& fn) {
  if (v.k == Val::K::Tensor) fn(v.t);
  else if (v.k == Val::K::List || v.k == Val::K::Tuple || v.k == Val::K::Slice) {
    for (auto& x : *v.items) for_each_tensor(x, fn);
  } else if (v.k == Val::K::Dict) {
    for (auto& kv : *v.dict) for_each_tensor(kv.second, fn);
  }
}

}  // namespace fxlower::rt
