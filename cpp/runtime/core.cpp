// fxlower reference runtime: tensors, values, threads, the registry and argument binding.
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <thread>

#include <cblas.h>

#include "ops.hpp"
#include "parallel.hpp"

namespace fxlower::rt {

// ================================================================================================ shapes

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

int64_t norm_dim(int64_t d, int64_t rank) {
  int64_t r = rank == 0 ? 1 : rank;
  if (d < -r || d >= r) fail("dimension " + std::to_string(d) + " out of range for a tensor of rank " +
                             std::to_string(rank));
  return d < 0 ? d + r : d;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

// ================================================================================================ tensor

namespace {
std::shared_ptr<void> alloc_bytes(size_t n) {
  size_t sz = (n + 63) / 64 * 64;
  if (sz == 0) sz = 64;
  void* p = std::aligned_alloc(64, sz);
  if (!p) fail("out of memory allocating " + std::to_string(n) + " bytes");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}
}  // namespace

Tensor Tensor::empty(DType dt, Shape shape) {
  for (int64_t d : shape)
    if (d < 0) fail("negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.owner_ = alloc_bytes(t.nbytes());
  t.data_ = t.owner_.get();
  t.writable_ = true;
  return t;
}

Tensor Tensor::zeros(DType dt, Shape shape) {
  Tensor t = empty(dt, std::move(shape));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::borrowed(DType dt, Shape shape, void* data, std::shared_ptr<void> keep, bool writable) {
  Tensor t;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.owner_ = std::move(keep);
  t.data_ = data;
  t.writable_ = writable;
  if (!t.data_) {  // zero-size tensors still need a non-null pointer
    t.owner_ = alloc_bytes(0);
    t.data_ = t.owner_.get();
  }
  return t;
}

Tensor Tensor::scalar(DType dt, double v) {
  Tensor t = empty(dt, {});
  switch (t.ptype()) {
    case PType::F32: *t.data<float>() = float(v); break;
    case PType::F64: *t.data<double>() = v; break;
    case PType::I64: *t.data<int64_t>() = int64_t(v); break;
    case PType::B8: *t.data<uint8_t>() = v != 0; break;
  }
  round_to_dtype(t);
  return t;
}

Tensor Tensor::scalar_int(DType dt, int64_t v) {
  Tensor t = empty(dt, {});
  switch (t.ptype()) {
    case PType::F32: *t.data<float>() = float(v); break;
    case PType::F64: *t.data<double>() = double(v); break;
    case PType::I64: *t.data<int64_t>() = v; break;
    case PType::B8: *t.data<uint8_t>() = v != 0; break;
  }
  round_to_dtype(t);
  return t;
}

Tensor Tensor::reshaped(Shape s) const {
  if (shape_numel(s) != numel())
    fail("cannot view a tensor of shape " + shape_str(shape) + " as " + shape_str(s));
  Tensor t = *this;
  t.shape = std::move(s);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype, shape);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

void convert_elements(const void* src, PType sp, void* dst, PType dp, int64_t n) {
  auto run = [&](auto* s) {
    switch (dp) {
      case PType::F32: { auto* d = static_cast<float*>(dst); for (int64_t i = 0; i < n; ++i) d[i] = float(s[i]); break; }
      case PType::F64: { auto* d = static_cast<double*>(dst); for (int64_t i = 0; i < n; ++i) d[i] = double(s[i]); break; }
      case PType::I64: {
        auto* d = static_cast<int64_t*>(dst);
        for (int64_t i = 0; i < n; ++i) {
          double v = double(s[i]);  // float -> int truncates toward zero, like torch
          d[i] = std::isfinite(v) ? int64_t(s[i]) : int64_t(0);
        }
        break;
      }
      case PType::B8: { auto* d = static_cast<uint8_t*>(dst); for (int64_t i = 0; i < n; ++i) d[i] = s[i] != 0; break; }
    }
  };
  switch (sp) {
    case PType::F32: run(static_cast<const float*>(src)); break;
    case PType::F64: run(static_cast<const double*>(src)); break;
    case PType::I64: run(static_cast<const int64_t*>(src)); break;
    case PType::B8: run(static_cast<const uint8_t*>(src)); break;
  }
}

namespace {
int64_t wrap_int(int64_t v, DType d) {
  switch (d) {
    case DType::I32: return int64_t(int32_t(uint32_t(uint64_t(v))));
    case DType::I16: return int64_t(int16_t(uint16_t(uint64_t(v))));
    case DType::I8: return int64_t(int8_t(uint8_t(uint64_t(v))));
    case DType::U8: return int64_t(uint8_t(uint64_t(v)));
    default: return v;
  }
}
}  // namespace

Tensor Tensor::to(DType dt) const {
  if (dt == dtype) return *this;
  Tensor t = empty(dt, shape);
  convert_elements(data_, ptype(), t.data_, t.ptype(), numel());
  if (t.ptype() == PType::I64 && dt != DType::I64) {
    int64_t* p = t.data<int64_t>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = wrap_int(p[i], dt);
  }
  round_to_dtype(t);
  return t;
}

double Tensor::item_double(int64_t i) const {
  switch (ptype()) {
    case PType::F32: return data<float>()[i];
    case PType::F64: return data<double>()[i];
    case PType::I64: return double(data<int64_t>()[i]);
    case PType::B8: return data<uint8_t>()[i];
  }
  return 0;
}

int64_t Tensor::item_int(int64_t i) const {
  switch (ptype()) {
    case PType::F32: return int64_t(data<float>()[i]);
    case PType::F64: return int64_t(data<double>()[i]);
    case PType::I64: return data<int64_t>()[i];
    case PType::B8: return data<uint8_t>()[i];
  }
  return 0;
}

void round_to_dtype(Tensor& t) {
  if (!is_half(t.dtype) || t.numel() == 0) return;
  float* p = t.data<float>();
  const int64_t n = t.numel();
  if (t.dtype == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) p[i] = round_bf16(p[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) p[i] = round_f16(p[i]);
  }
}

// ================================================================================================ values

Val Val::ints(const std::vector<int64_t>& v, bool as_tuple) {
  std::vector<Val> items;
  items.reserve(v.size());
  for (int64_t x : v) items.push_back(integer(x));
  return as_tuple ? tuple(std::move(items)) : list(std::move(items));
}

Val Val::tensors(std::vector<Tensor> v) {
  std::vector<Val> items;
  items.reserve(v.size());
  for (auto& x : v) items.push_back(tensor(std::move(x)));
  return tuple(std::move(items));
}

const std::vector<Val>& Val::seq() const {
  if (!is_seq()) fail("expected a list or tuple, got " + kind_name());
  return *items;
}

double Val::as_double() const {
  switch (k) {
    case K::Bool: return b ? 1.0 : 0.0;
    case K::Int: return double(i);
    case K::Float: return f;
    case K::Tensor:
      if (t.numel() == 1) return t.item_double(0);
      break;
    default: break;
  }
  fail("expected a number, got " + kind_name());
}

int64_t Val::as_int() const {
  switch (k) {
    case K::Bool: return b ? 1 : 0;
    case K::Int: return i;
    case K::Float:
      if (f == std::floor(f) && std::isfinite(f)) return int64_t(f);
      break;
    case K::Tensor:
      if (t.numel() == 1 && !is_floating(t.dtype)) return t.item_int(0);
      break;
    default: break;
  }
  fail("expected an int, got " + kind_name());
}

bool Val::as_bool() const {
  switch (k) {
    case K::Bool: return b;
    case K::Int: return i != 0;
    case K::Float: return f != 0;
    case K::Tensor:
      if (t.numel() == 1) return t.item_double(0) != 0;
      break;
    default: break;
  }
  fail("expected a bool, got " + kind_name());
}

const Tensor& Val::as_tensor() const {
  if (k != K::Tensor) fail("expected a tensor, got " + kind_name());
  return t;
}

std::vector<int64_t> Val::as_ints() const {
  if (k == K::Int || k == K::Bool) return {as_int()};
  if (is_seq()) {
    std::vector<int64_t> r;
    for (const auto& x : *items) r.push_back(x.as_int());
    return r;
  }
  if (k == K::Tensor && !is_floating(t.dtype) && t.dim() <= 1) {
    std::vector<int64_t> r;
    for (int64_t j = 0; j < t.numel(); ++j) r.push_back(t.item_int(j));
    return r;
  }
  fail("expected an int or a sequence of ints, got " + kind_name());
}

std::string Val::kind_name() const {
  switch (k) {
    case K::None: return "None";
    case K::Bool: return "bool";
    case K::Int: return "int";
    case K::Float: return "float";
    case K::Str: return "str";
    case K::Tensor: return std::string("tensor ") + dtype_code(t.dtype) + shape_str(t.shape);
    case K::List: return "list";
    case K::Tuple: return "tuple";
    case K::Dict: return "dict";
    case K::Slice: return "slice";
    case K::Ellipsis: return "Ellipsis";
    case K::DType: return "dtype";
    case K::Device: return "device";
    case K::MemFormat: return "memory_format";
    case K::Layout: return "layout";
    case K::Complex: return "complex";
    case K::NodeRef: return "node reference";
    case K::Function: return "function";
    case K::ModuleType: return "module";
    case K::Graph: return "graph";
  }
  return "?";
}

std::string Val::repr() const {
  std::ostringstream o;
  switch (k) {
    case K::None: return "None";
    case K::Bool: return b ? "True" : "False";
    case K::Int: return std::to_string(i);
    case K::Float: o << f; return o.str();
    case K::Str: return "'" + s + "'";
    case K::List: case K::Tuple: {
      o << (k == K::List ? "[" : "(");
      for (size_t j = 0; j < items->size(); ++j) o << (j ? ", " : "") << (*items)[j].repr();
      o << (k == K::List ? "]" : ")");
      return o.str();
    }
    case K::DType: return std::string("dtype ") + dtype_code(dt);
    case K::Device: case K::MemFormat: case K::Layout: return s;
    case K::Function: return "function " + s;
    case K::ModuleType: return "module " + s;
    default: return kind_name();
  }
}

// ================================================================================================ threads

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

class Pool {
 public:
  ~Pool() { resize(1); }

  int size() const { return nthreads_; }

  void resize(int n) {
    if (n < 1) n = 1;
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_start_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_ = false;
    nthreads_ = n;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
  }

  static bool nested() { return in_parallel_; }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    int64_t parts = std::min<int64_t>(nthreads_, grain > 0 ? n / grain : n);
    if (parts < 2 || in_parallel_) {
      if (n > 0) fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> run_lock(run_m_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      n_ = n;
      parts_ = int(parts);
      pending_.store(int(parts) - 1);
      error_ = nullptr;
      ++generation_;
      generation_atomic_.store(generation_, std::memory_order_release);
    }
    cv_start_.notify_all();
    in_parallel_ = true;
    try {
      chunk(0);
    } catch (...) {
      std::lock_guard<std::mutex> lk(m_);
      if (!error_) error_ = std::current_exception();
    }
    in_parallel_ = false;
    for (int spin = 0; spin < 40000 && pending_.load(std::memory_order_acquire) != 0; ++spin) cpu_relax();
    {
      std::unique_lock<std::mutex> lk(m_);
      cv_done_.wait(lk, [&] { return pending_.load() == 0; });
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void chunk(int part) {
    int64_t b = n_ * part / parts_, e = n_ * (part + 1) / parts_;
    if (b < e) (*fn_)(b, e);
  }

  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      // spin a little before sleeping: kernels issue parallel loops back to back
      for (int spin = 0; spin < 4000 && generation_atomic_.load(std::memory_order_acquire) == seen; ++spin)
        cpu_relax();
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_start_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (id >= parts_) continue;
      }
      in_parallel_ = true;
      try {
        chunk(id);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
      }
      in_parallel_ = false;
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lk(m_);
        cv_done_.notify_all();
      }
    }
  }

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex m_, run_m_;
  std::condition_variable cv_start_, cv_done_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> generation_atomic_{0};
  bool stop_ = false;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0;
  std::atomic<int> pending_{0};
  std::exception_ptr error_;
  static thread_local bool in_parallel_;
};

thread_local bool Pool::in_parallel_ = false;

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) n = 1;
  pool().resize(n);
  openblas_set_num_threads(1);
}

bool in_parallel_region() { return Pool::nested(); }

int num_threads() { return pool().size(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  pool().run(n, grain, fn);
}

// ================================================================================================ attributes

const Val* Attrs::find(const std::string& key) const {
  if (!map) return nullptr;
  auto it = map->find(prefix + key);
  return it == map->end() ? nullptr : &it->second;
}

const Val& Attrs::get(const std::string& key) const {
  const Val* v = find(key);
  if (!v) fail("the lowering record has no attribute '" + prefix + key + "'");
  return *v;
}

Tensor Attrs::tensor(const std::string& key) const {
  const Val& v = get(key);
  if (!v.is_tensor()) fail("attribute '" + prefix + key + "' is " + v.kind_name() + ", expected a tensor");
  return v.t;
}

Tensor Attrs::tensor_opt(const std::string& key) const {
  const Val* v = find(key);
  if (!v || v->is_none()) return Tensor();
  if (!v->is_tensor()) fail("attribute '" + prefix + key + "' is " + v->kind_name() + ", expected a tensor");
  return v->t;
}

int64_t Attrs::integer(const std::string& key) const { return get(key).as_int(); }
double Attrs::dbl(const std::string& key) const { return get(key).as_double(); }
bool Attrs::flag(const std::string& key) const { return get(key).as_bool(); }

std::string Attrs::str(const std::string& key) const {
  const Val& v = get(key);
  if (v.k != Val::K::Str) fail("attribute '" + prefix + key + "' is " + v.kind_name() + ", expected a str");
  return v.s;
}

std::vector<int64_t> Attrs::ints(const std::string& key) const { return get(key).as_ints(); }

// ================================================================================================ calls

const Val* Call::kwarg(const std::string& name) const {
  for (const auto& kv : kwargs)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

namespace {
bool ignorable_kwarg(const std::string& k) {
  static const char* names[] = {"_stacklevel", "device", "layout", "pin_memory", "requires_grad",
                                "memory_format", "non_blocking", "copy", "generator"};
  for (const char* n : names)
    if (k == n) return true;
  return false;
}
}  // namespace

Args::Args(const Call& call, std::initializer_list<const char*> names) : names_(names), slots_(names.size()) {
  if (call.args.size() > names_.size())
    fail("too many positional arguments (" + std::to_string(call.args.size()) + ", at most " +
         std::to_string(names_.size()) + ")");
  for (size_t i = 0; i < call.args.size(); ++i) slots_[i] = &call.args[i];
  for (const auto& kv : call.kwargs) {
    size_t j = 0;
    while (j < names_.size() && kv.first != names_[j]) ++j;
    if (j == names_.size()) {
      if (kv.first == "out" && kv.second.is_none()) continue;
      if (ignorable_kwarg(kv.first)) continue;
      fail("unsupported keyword argument '" + kv.first + "'");
    }
    if (slots_[j]) fail("argument '" + kv.first + "' given twice");
    slots_[j] = &kv.second;
  }
}

const Val& Args::operator[](size_t i) const {
  if (!slots_[i]) fail(std::string("missing argument '") + names_[i] + "'");
  return *slots_[i];
}

Tensor Args::tensor(size_t i) const {
  const Val& v = (*this)[i];
  if (!v.is_tensor()) fail(std::string("argument '") + names_[i] + "' is " + v.kind_name() + ", expected a tensor");
  return v.t;
}

Tensor Args::tensor_opt(size_t i) const { return has(i) ? tensor(i) : Tensor(); }
double Args::dbl(size_t i, double dflt) const { return has(i) ? slots_[i]->as_double() : dflt; }
int64_t Args::integer(size_t i, int64_t dflt) const { return has(i) ? slots_[i]->as_int() : dflt; }
bool Args::flag(size_t i, bool dflt) const { return has(i) ? slots_[i]->as_bool() : dflt; }

std::string Args::str(size_t i, const std::string& dflt) const {
  if (!has(i)) return dflt;
  if (slots_[i]->k != Val::K::Str)
    fail(std::string("argument '") + names_[i] + "' is " + slots_[i]->kind_name() + ", expected a str");
  return slots_[i]->s;
}

std::vector<int64_t> Args::ints(size_t i) const { return (*this)[i].as_ints(); }

// ================================================================================================ registry

void Registry::add(OpKind kind, const std::string& name, Handler fn) {
  auto& m = kind == OpKind::Module ? modules_ : kind == OpKind::Function ? functions_ : methods_;
  m[name] = std::move(fn);
}

void Registry::add(OpKind kind, std::initializer_list<const char*> names, const Handler& fn) {
  for (const char* n : names) add(kind, n, fn);
}

const Handler* Registry::find(OpKind kind, const std::string& name) const {
  const auto& m = of(kind);
  auto it = m.find(name);
  return it == m.end() ? nullptr : &it->second;
}

const std::map<std::string, Handler>& Registry::of(OpKind kind) const {
  return kind == OpKind::Module ? modules_ : kind == OpKind::Function ? functions_ : methods_;
}

const Registry& registry() {
  static const Registry r = [] {
    Registry x;
    register_elementwise(x);
    register_shape(x);
    register_nn(x);
    register_sequence(x);
    register_aten(x);
    return x;
  }();
  return r;
}

}  // namespace fxlower::rt
