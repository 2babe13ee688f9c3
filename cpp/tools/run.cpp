// fxlower-run: the reference runtime. Executes an fxlower artifact on its golden inputs (or on inputs from a
// safetensors file), writes the outputs, checks them against the golden outputs, and times executions.
//
//   fxlower-run DIR [--inputs FILE] [--out FILE] [--check] [--threads N] [--repeat N] [--warmup N] [--time]
//               [--profile] [--quiet] [--non-strict]
//   fxlower-run --list-ops
//
// Exit status: 0 success; 1 a --check mismatch; 2 a usage, load or runtime error (an unsupported operation
// names its node and target).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/interpreter.hpp"
#include "../runtime/parallel.hpp"

namespace rt = fxlower::rt;

namespace {

const char* kUsage =
    "usage: fxlower-run DIR [options]\n"
    "       fxlower-run --list-ops\n"
    "\n"
    "Runs the root graph of the fxlower artifact DIR on its golden inputs.\n"
    "\n"
    "options:\n"
    "  --inputs FILE   take the inputs from a safetensors file (keys 0, 1, ... in positional order)\n"
    "  --out FILE      write the output tensors to a safetensors file (keys 0, 1, ... in output order)\n"
    "  --view V        the view to execute: module (default) or core (format 1.2: Core ATen ops; a core-only\n"
    "                  artifact runs its core view by default)\n"
    "  --check         compare with the golden outputs (and, for golden=\"nodes\", name the first node\n"
    "                  that diverges); exit 1 on a mismatch\n"
    "  --threads N     threads for kernels and OpenBLAS (default: hardware concurrency)\n"
    "  --repeat N      execute N times and print timings (excluding load); implies --time\n"
    "  --warmup N      untimed executions before the timed ones (default 1 with --time, else 0)\n"
    "  --time          print the execution time\n"
    "  --profile       print the time spent per operation (summed over the runs)\n"
    "  -q, --quiet     print only errors and the check verdict\n"
    "  --non-strict    ignore directory entries the manifest does not list (they are never opened)\n"
    "  --list-ops      print every supported module type, function and method, then exit\n"
    "  -h, --help      print this help and exit\n"
    "\n"
    "FILE (--inputs) is read and checked by the reader's own safetensors code (a repeated key, a gap or trailing\n"
    "bytes are errors). exit status: 0 success; 1 a --check mismatch; 2 a usage, load or runtime error\n";

struct Leaf {
  std::string path;
  const rt::Val* val;
};

// The leaves of a result (tensors and scalars) in order, with Python-like paths.
void flatten(const rt::Val& v, const std::string& path, std::vector<Leaf>& out) {
  switch (v.k) {
    case rt::Val::K::List: case rt::Val::K::Tuple:
      for (size_t i = 0; i < v.items->size(); ++i) flatten((*v.items)[i], path + "[" + std::to_string(i) + "]", out);
      break;
    case rt::Val::K::Dict:
      for (const auto& kv : *v.dict)
        flatten(kv.second, path + "[" + (kv.first.k == rt::Val::K::Str ? "'" + kv.first.s + "'" : kv.first.repr()) + "]", out);
      break;
    default:
      out.push_back({path.empty() ? "output" : path, &v});
  }
}

std::string fmt(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.3e", v);
  return b;
}

struct Checker {
  const rt::Program& prog;
  const fxlower::Golden& golden;
  bool quiet;
  int failures = 0;

  rt::TensorDiff diff(const rt::Tensor& a, const rt::Tensor& e, double& atol, double& rtol) const {
    atol = rtol = 0;
    fxlower::DType fd = *fxlower::dtype_from_name(rt::dtype_code(e.dtype));
    if (auto t = golden.tolerance(fd)) {
      atol = t->atol;
      rtol = t->rtol;
    }
    return rt::compare_tensors(a, e, atol, rtol);
  }

  // Compares one value tree; reports each tensor leaf when `report`.
  bool compare(const rt::Val& actual, const rt::Val& expected, const std::string& path, bool report,
               double* worst_abs = nullptr) {
    using K = rt::Val::K;
    auto bad = [&](const std::string& why) {
      if (report) std::printf("%s: MISMATCH: %s\n", path.c_str(), why.c_str());
      return false;
    };
    if (expected.k == K::Tensor) {
      if (actual.k != K::Tensor) return bad("expected a tensor, got " + actual.kind_name());
      double atol, rtol;
      rt::TensorDiff d = diff(actual.t, expected.t, atol, rtol);
      if (worst_abs) *worst_abs = std::max(*worst_abs, d.max_abs);
      std::string desc = std::string(rt::dtype_code(expected.t.dtype)) + rt::shape_str(expected.t.shape);
      if (!d.shape_ok) return bad("shape " + rt::shape_str(actual.t.shape) + ", expected " + rt::shape_str(expected.t.shape));
      if (report) {
        std::printf("%s %s: max_abs_err %s max_rel_err %s (atol %g, rtol %g): %s", path.c_str(), desc.c_str(),
                    fmt(d.max_abs).c_str(), fmt(d.max_rel).c_str(), atol, rtol, d.ok ? "ok" : "MISMATCH");
        if (!d.dtype_ok) std::printf(" (dtype %s, expected %s)", rt::dtype_code(actual.t.dtype), rt::dtype_code(expected.t.dtype));
        else if (d.mismatches) std::printf(" (%lld of %lld elements)", (long long)d.mismatches, (long long)d.numel);
        std::printf("\n");
      }
      return d.ok;
    }
    if (expected.k == K::List || expected.k == K::Tuple) {
      if (!actual.is_seq() || actual.items->size() != expected.items->size())
        return bad("expected a sequence of " + std::to_string(expected.items->size()) + ", got " + actual.kind_name());
      bool ok = true;
      for (size_t i = 0; i < expected.items->size(); ++i)
        ok = compare((*actual.items)[i], (*expected.items)[i], path + "[" + std::to_string(i) + "]", report, worst_abs) && ok;
      return ok;
    }
    if (expected.k == K::Dict) {
      if (actual.k != K::Dict || actual.dict->size() != expected.dict->size()) return bad("expected a dict");
      bool ok = true;
      for (size_t i = 0; i < expected.dict->size(); ++i) {
        const auto& ek = (*expected.dict)[i].first;
        const auto& ak = (*actual.dict)[i].first;
        if (ek.repr() != ak.repr()) return bad("dict keys differ");
        std::string key = ek.k == K::Str ? "'" + ek.s + "'" : ek.repr();
        ok = compare((*actual.dict)[i].second, (*expected.dict)[i].second, path + "[" + key + "]", report, worst_abs) && ok;
      }
      return ok;
    }
    if (expected.k == K::Float) {
      // docs/format.md section 8: a float leaf meets the F64 tolerance (exact without one), NaN matching NaN
      if (!actual.is_number()) return bad("expected a float, got " + actual.kind_name());
      double a = actual.as_double(), e = expected.f;
      double atol = 0, rtol = 0;
      if (auto t = golden.tolerance(fxlower::DType::F64)) {
        atol = t->atol;
        rtol = t->rtol;
      }
      bool ok = (std::isnan(a) && std::isnan(e)) || a == e || std::fabs(a - e) <= atol + rtol * std::fabs(e);
      if (report) std::printf("%s float: %s vs %s: %s\n", path.c_str(), fmt(a).c_str(), fmt(e).c_str(), ok ? "ok" : "MISMATCH");
      return ok;
    }
    if (expected.k == K::Int || expected.k == K::Bool) {
      if (!actual.is_number() || actual.as_double() != expected.as_double())
        return bad("expected " + expected.repr() + ", got " + actual.repr());
      if (report) std::printf("%s %s: %s: ok\n", path.c_str(), expected.kind_name().c_str(), expected.repr().c_str());
      return true;
    }
    if (expected.k == K::None) return actual.is_none() ? true : bad("expected None, got " + actual.kind_name());
    if (actual.repr() != expected.repr()) return bad("expected " + expected.repr() + ", got " + actual.repr());
    return true;
  }
};

int run_main(int argc, char** argv) {
  std::string dir, inputs_path, out_path, view_name;
  bool check = false, timing = false, quiet = false, list_ops = false, profiling = false;
  fxlower::LoadOptions load_options;
  int threads = int(std::thread::hardware_concurrency());
  int repeat = 1, warmup = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw rt::Error("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--inputs") inputs_path = next();
    else if (a == "--view") view_name = next();
    else if (a == "--out") out_path = next();
    else if (a == "--check") check = true;
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--repeat") { repeat = std::atoi(next().c_str()); timing = true; }
    else if (a == "--time") timing = true;
    else if (a == "--warmup") warmup = std::atoi(next().c_str());
    else if (a == "--profile") profiling = true;
    else if (a == "--quiet" || a == "-q") quiet = true;
    else if (a == "--list-ops") list_ops = true;
    else if (a == "--non-strict") load_options.strict = false;
    else if (a == "-h" || a == "--help") { std::fputs(kUsage, stdout); return 0; }
    else if (!a.empty() && a[0] == '-') throw rt::Error("unknown option " + a + "\n" + kUsage);
    else if (dir.empty()) dir = a;
    else throw rt::Error("more than one artifact given\n" + std::string(kUsage));
  }
  if (list_ops) {
    const rt::Registry& r = rt::registry();
    for (auto [kind, label] : {std::pair{rt::OpKind::Module, "module"}, std::pair{rt::OpKind::Function, "function"},
                               std::pair{rt::OpKind::Method, "method"}})
      for (const auto& kv : r.of(kind)) std::printf("%s %s\n", label, kv.first.c_str());
    return 0;
  }
  if (dir.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (threads < 1) threads = 1;
  if (repeat < 1) repeat = 1;
  rt::set_num_threads(threads);

  fxlower::Artifact art = fxlower::load(dir, load_options);
  if (!view_name.empty() && view_name != "module" && view_name != "core")
    throw rt::Error("--view takes module or core, not '" + view_name + "'");
  const bool core_view = view_name == "core" || (view_name.empty() && art.graphs().empty());
  rt::Program prog(art, core_view ? rt::View::core : rt::View::module);
  const auto& golden = art.golden();

  // inputs: from the file (keys "0", "1", ...), else the golden inputs
  std::vector<rt::Val> inputs;
  if (!inputs_path.empty()) {
    auto ts = rt::read_safetensors(inputs_path);
    std::vector<rt::Val> gold = golden ? prog.golden_inputs() : std::vector<rt::Val>{};
    size_t n = 0;
    for (const auto& kv : ts) {
      char* end = nullptr;
      long idx = std::strtol(kv.first.c_str(), &end, 10);
      if (!end || *end || idx < 0) throw rt::Error(inputs_path + ": key '" + kv.first + "' is not a position (0, 1, ...)");
      n = std::max(n, size_t(idx) + 1);
    }
    inputs.resize(n);
    std::vector<bool> have(n, false);
    for (auto& kv : ts) {
      size_t idx = size_t(std::strtol(kv.first.c_str(), nullptr, 10));
      inputs[idx] = rt::Val::tensor(kv.second);
      have[idx] = true;
    }
    for (size_t i = 0; i < n; ++i)
      if (!have[i]) {
        if (i < gold.size() && !gold[i].is_tensor()) inputs[i] = gold[i];
        else throw rt::Error(inputs_path + ": no tensor for input " + std::to_string(i));
      }
  } else {
    if (!golden) throw rt::Error("the artifact has no golden inputs; pass --inputs FILE");
    inputs = prog.golden_inputs();
  }
  if (check && !golden) throw rt::Error("--check needs an artifact exported with golden data");

  // node checks (golden="nodes"): the first divergent root node, in graph order
  std::unique_ptr<Checker> checker;
  if (check) checker = std::make_unique<Checker>(Checker{prog, *golden, quiet});
  std::string first_bad;
  int bad_nodes = 0, checked_nodes = 0;
  rt::NodeHook hook;
  if (check && golden->mode == fxlower::GoldenMode::nodes) {
    hook = [&](const rt::PNode& n, const rt::Val& v) {
      auto e = core_view ? fxlower::detail::find_pair(golden->core_nodes, n.name) : golden->find_node(n.name);
      if (!e) return;
      ++checked_nodes;
      rt::Val expected = prog.value(*e);
      double worst = 0;
      if (!checker->compare(v, expected, n.name, false, &worst)) {
        ++bad_nodes;
        if (first_bad.empty()) {
          first_bad = n.describe();
          std::printf("first divergent node: %s\n", first_bad.c_str());
          checker->compare(v, expected, "  " + n.name, true);
        }
      }
    };
  }

  rt::Val result;
  std::vector<double> ms;
  rt::Profile profile;
  if (warmup < 0) warmup = timing ? 1 : 0;
  for (int w = 0; w < warmup; ++w) prog.run(inputs);
  for (int r = 0; r < repeat; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    result = prog.run(inputs, r == repeat - 1 ? hook : rt::NodeHook(), profiling ? &profile : nullptr);
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  if (timing) {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    double mean = 0;
    for (double v : s) mean += v;
    mean /= double(s.size());
    double median = s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
    std::printf("time: %d run(s), %d thread(s): median %.3f ms, min %.3f ms, mean %.3f ms\n", repeat, threads,
                median, s.front(), mean);
  }

  if (profiling) {
    std::vector<std::pair<std::string, rt::Profile::Entry>> rows(profile.ops.begin(), profile.ops.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    double total = 0;
    for (const auto& r : rows) total += r.second.ms;
    std::printf("profile (%d run(s), ms summed over runs):\n", repeat);
    for (const auto& r : rows)
      std::printf("  %10.3f ms %5.1f%% %6lld calls  %s\n", r.second.ms, total > 0 ? 100.0 * r.second.ms / total : 0.0,
                  (long long)r.second.calls, r.first.c_str());
  }

  std::vector<Leaf> leaves;
  flatten(result, "", leaves);
  if (!out_path.empty()) {
    std::vector<std::pair<std::string, rt::Tensor>> ts;
    int k = 0;
    for (const auto& l : leaves)
      if (l.val->is_tensor()) ts.emplace_back(std::to_string(k++), l.val->t);
    rt::write_safetensors(out_path, ts);
    if (!quiet) std::printf("wrote %d output tensor(s) to %s\n", k, out_path.c_str());
  }
  if (!check) {
    if (!quiet)
      for (const auto& l : leaves) {
        if (l.val->is_tensor())
          std::printf("%s: %s%s\n", l.path.c_str(), rt::dtype_code(l.val->t.dtype), rt::shape_str(l.val->t.shape).c_str());
        else
          std::printf("%s: %s\n", l.path.c_str(), l.val->repr().c_str());
      }
    return 0;
  }
  rt::Val expected = prog.value(golden->outputs);
  if (core_view) {  // the core view returns its user outputs flattened, in order
    std::vector<Leaf> gl;
    flatten(expected, "", gl);
    std::vector<rt::Val> items;
    for (const auto& l : gl) items.push_back(*l.val);
    expected = rt::Val::tuple(std::move(items));
  }
  bool ok = checker->compare(result, expected, "output", !quiet);
  if (golden->mode == fxlower::GoldenMode::nodes) {
    if (bad_nodes) std::printf("nodes: %d of %d golden node results diverge; first: %s\n", bad_nodes, checked_nodes, first_bad.c_str());
    else std::printf("nodes: all %d golden node results match\n", checked_nodes);
  }
  ok = ok && bad_nodes == 0;
  std::printf("check: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Keep freed tensor memory in the heap: fresh mmap'd blocks for every large tensor cost page faults.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  try {
    return run_main(argc, argv);
  } catch (const fxlower::Error& e) {
    std::fprintf(stderr, "fxlower-run: %s\n", e.what());
  } catch (const rt::Error& e) {
    std::fprintf(stderr, "fxlower-run: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fxlower-run: error: %s\n", e.what());
  }
  return 2;
}
