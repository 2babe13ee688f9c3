// fxlower-inspect [--nodes] [--verify [--progress]] [--json] [--non-strict] DIR
//
// Loads (and so validates) an artifact and prints a summary: format version, producer, digest, signature,
// node counts per op and per target, the module types with their rule versions, the tensor table entries by
// dtype and by kind, and (format 1.1) the declared module types, functions and methods.
//   --nodes       also print every node: "[graph:index] name = op target(args, kwargs) -> meta"
//   --verify      check every tensor's SHA-256 (tensor.hash on a mismatch); the tensor files (several in a sharded
//                 1.3 artifact) are hashed in parallel, one thread per file up to the hardware's thread count
//   --progress    with --verify, report progress on stderr: "verify: T/N tensors, B/TOTAL bytes (P%)", rewritten in
//                 place ("\r") on a terminal, else one line per second or per 10% of the bytes; always a final line
//   --json        print the manifest as JSON instead of the summary: the msgpack object converted as is,
//                 maps in file order, floats as JSON numbers (non-finite ones as the strings "nan", "inf",
//                 "-inf"), ints above INT64_MAX as unsigned numbers, bin as a base64 string
//   --non-strict  ignore directory entries the manifest does not list (never opened)
// Exit status: 0 ok, 1 the artifact is invalid ("error: [code] file: field: message" on stderr), 2 usage.
#include <fxlower/fxlower.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

const char* const kHelp =
    "usage: fxlower-inspect [--nodes] [--verify [--progress]] [--json] [--non-strict] DIR\n"
    "\n"
    "Loads (and so validates) the fxlower artifact in DIR with the C++ reader and prints a summary: format\n"
    "version, producer, digest, signature, files, golden data, node counts per op and per target, module types\n"
    "with their rule and module versions, the tensor table (entries, aliases included, and bytes) by dtype and\n"
    "by kind, and the format 1.1 declarations.\n"
    "\n"
    "options:\n"
    "  --nodes       also print every node: \"[graph:index] name = op target(args, kwargs) -> meta\", then its\n"
    "                lowering attributes\n"
    "  --verify      recompute every tensor's SHA-256 (error tensor.hash on a mismatch)\n"
    "  --progress    with --verify, print progress on stderr: \"verify: T/N tensors, B/TOTAL bytes (P%)\" over\n"
    "                every table entry (an alias is hashed again), rewritten in place on a terminal, otherwise\n"
    "                one line per second or per 10% of the bytes, and always a final line\n"
    "  --json        print the manifest as JSON instead of the summary: maps in file order, floats as numbers\n"
    "                (non-finite ones as the strings \"nan\", \"inf\", \"-inf\"), ints above INT64_MAX as\n"
    "                unsigned numbers, bin as base64 strings\n"
    "  --non-strict  ignore directory entries the manifest does not list (they are never opened)\n"
    "  -h, --help    print this help and exit\n"
    "\n"
    "exit status: 0 valid, 1 the artifact is invalid (\"error: [code] where: message\" on stderr), 2 usage\n";

// verify_all(), one tensor at a time, reporting progress on stderr (--progress).
/// Progress of --verify --progress on stderr; tensor_done() may be called from any hashing thread.
class VerifyProgress {
 public:
  explicit VerifyProgress(const fxlower::Artifact& a)
      : n_(a.tensors().size()), tty_(isatty(fileno(stderr)) == 1), shown_at_(clock::now()) {
    for (const auto& t : a.tensors()) total_ += t.nbytes();
    report(false);
  }

  void tensor_done(std::uint64_t nbytes) {
    const std::lock_guard<std::mutex> lock(mu_);
    done_ += nbytes;
    if (++count_ == n_) return;  // the final line comes from finish()
    const std::uint64_t tenths = total_ == 0 ? 0 : done_ * 10 / total_;
    const auto since = clock::now() - shown_at_;
    if (tty_ ? since >= std::chrono::milliseconds(100) : (since >= std::chrono::seconds(1) || tenths > shown_tenths_)) {
      shown_tenths_ = tenths;
      report(false);
    }
  }

  void finish() {
    const std::lock_guard<std::mutex> lock(mu_);
    report(true);
  }

 private:
  using clock = std::chrono::steady_clock;

  void report(bool last) {
    const unsigned pct = total_ == 0 ? 100u : static_cast<unsigned>(done_ * 100 / total_);
    std::fprintf(stderr, "%sverify: %zu/%zu tensors, %llu/%llu bytes (%u%%)%s", tty_ ? "\r" : "", count_, n_,
                 static_cast<unsigned long long>(done_), static_cast<unsigned long long>(total_), pct,
                 tty_ && !last ? "" : "\n");
    std::fflush(stderr);
    shown_at_ = clock::now();
  }

  std::mutex mu_;
  std::size_t n_, count_ = 0;
  std::uint64_t total_ = 0, done_ = 0, shown_tenths_ = 0;  // shown_tenths_: tenths already reported (pipes)
  bool tty_;
  clock::time_point shown_at_;
};

int usage(const std::string& why) {
  std::fprintf(stderr, "fxlower-inspect: %s\n%s", why.c_str(), kHelp);
  return 2;
}

std::string call_str(const fxlower::Node& n) {
  std::string s = n.target + "(";
  bool first = true;
  for (const auto& a : n.args) {
    if (!first) s += ", ";
    first = false;
    s += a.repr();
  }
  for (const auto& kv : n.kwargs) {
    if (!first) s += ", ";
    first = false;
    s += kv.first + "=" + kv.second.repr();
  }
  return s + ")";
}

void summary(const fxlower::Artifact& a, bool nodes) {
  std::printf("format      %lld.%lld\n", static_cast<long long>(a.format_major()), static_cast<long long>(a.format_minor()));
  std::printf("producer    %s %s (torch %s)\n", a.producer().name.c_str(), a.producer().version.c_str(),
              a.producer().torch.c_str());
  std::printf("digest      %s\n", a.digest().c_str());
  std::string ins;
  for (const auto& i : a.signature().inputs) ins += (ins.empty() ? "" : ", ") + i;
  std::printf("signature   (%s) -> %s\n", ins.c_str(), a.signature().output.repr().c_str());
  for (const auto& f : a.files())
    std::printf("file        %s (%s)\n", f.path.c_str(), std::string(fxlower::file_role_name(f.role)).c_str());
  if (a.golden())
    std::printf("golden      mode %s, %zu inputs, %zu node results, %zu tolerances\n",
                a.golden()->mode == fxlower::GoldenMode::nodes ? "nodes" : "outputs", a.golden()->inputs.size(),
                a.golden()->nodes.size(), a.golden()->tolerances.size());

  std::map<std::string, std::size_t> per_op, per_target;
  std::map<std::string, std::map<std::pair<std::int64_t, std::int64_t>, std::size_t>> modules;
  std::size_t total = 0;
  for (const auto& g : a.graphs())
    for (const auto& n : g.nodes) {
      ++total;
      ++per_op[std::string(fxlower::op_name(n.op))];
      if (n.op == fxlower::Op::call_function || n.op == fxlower::Op::call_method)
        ++per_target[std::string(fxlower::op_name(n.op)) + " " + n.target];
      if (n.lowering) ++modules[n.lowering->module_type][{n.lowering->version, n.lowering->module_version}];
    }
  std::printf("\ngraphs      %zu (%zu nodes)\n", a.graphs().size(), total);
  for (const auto& g : a.graphs())
    std::printf("  [%zu] %-20s %zu nodes\n", g.index, g.name.empty() ? "(root)" : g.name.c_str(), g.nodes.size());
  std::printf("\nnodes by op\n");
  for (const auto& kv : per_op) std::printf("  %-16s %zu\n", kv.first.c_str(), kv.second);
  if (!per_target.empty()) {
    std::printf("\nnodes by target\n");
    for (const auto& kv : per_target) std::printf("  %-48s %zu\n", kv.first.c_str(), kv.second);
  }
  if (!modules.empty()) {
    std::printf("\nmodule types (rule version, module version: nodes)\n");
    for (const auto& kv : modules)
      for (const auto& v : kv.second)
        std::printf("  %-40s v%lld, module v%lld: %zu\n", kv.first.c_str(), static_cast<long long>(v.first.first),
                    static_cast<long long>(v.first.second), v.second);
  }
  if (!a.modules().empty() || !a.functions().empty() || !a.methods().empty())
    std::printf("\ndeclared     %zu module types, %zu functions, %zu methods\n", a.modules().size(),
                a.functions().size(), a.methods().size());

  std::map<std::string, std::pair<std::size_t, std::uint64_t>> by_dtype;
  std::uint64_t bytes = 0;
  for (const auto& t : a.tensors()) {
    auto& e = by_dtype[std::string(fxlower::dtype_name(t.dtype))];
    ++e.first;
    e.second += t.nbytes();
    bytes += t.nbytes();
  }
  // Table entries, aliases included: the count fxlower's ExportSummary.tensors reports.
  std::printf("\ntensors     %zu table entries, %llu bytes (an alias counts as an entry and its bytes again)\n",
              a.tensors().size(), static_cast<unsigned long long>(bytes));
  for (const auto& kv : by_dtype)
    std::printf("  %-8s %6zu tensors %14llu bytes\n", kv.first.c_str(), kv.second.first,
                static_cast<unsigned long long>(kv.second.second));
  std::map<std::string, std::size_t> by_kind;
  for (const auto& t : a.tensors())
    if (t.kind != fxlower::TensorKind::unspecified) ++by_kind[std::string(fxlower::tensor_kind_name(t.kind))];
  for (const auto& kv : by_kind) std::printf("  %-10s %4zu tensors\n", kv.first.c_str(), kv.second);

  if (nodes) {
    std::printf("\nnodes\n");
    for (const auto& g : a.graphs())
      for (const auto& n : g.nodes) {
        std::printf("  [%zu:%zu] %s = %s %s -> %s\n", g.index, n.index, n.name.c_str(),
                    std::string(fxlower::op_name(n.op)).c_str(), call_str(n).c_str(),
                    n.meta ? n.meta->repr().c_str() : "?");
        if (n.lowering)
          for (const auto& kv : n.lowering->attrs)
            std::printf("        %s.%s = %s\n", n.lowering->module_type.c_str(), kv.first.c_str(), kv.second.repr().c_str());
        if (n.graph) std::printf("        calls graph %zu\n", *n.graph);
      }
  }
}

/// --verify: every tensor's SHA-256, the files hashed in parallel (one thread per file, at most the hardware's
/// thread count). The error is the one verify_all() gives: the first mismatching tensor in table order.
void verify_parallel(const fxlower::Artifact& a, bool progress) {
  std::unique_ptr<VerifyProgress> bar;
  if (progress) bar = std::make_unique<VerifyProgress>(a);
  const auto& files = a.files();
  std::vector<char> bad(a.tensors().size(), 0);
  std::atomic<std::size_t> next{0};
  const auto work = [&]() {
    for (std::size_t fi = next++; fi < files.size(); fi = next++)
      for (std::size_t ti = 0; ti < a.tensors().size(); ++ti) {
        const fxlower::Tensor& t = a.tensors()[ti];
        if (t.file != files[fi].path) continue;
        if (t.compute_sha256() != t.sha256) bad[ti] = 1;
        if (bar) bar->tensor_done(t.nbytes());
      }
  };
  const std::size_t n = std::min<std::size_t>(std::max(1u, std::thread::hardware_concurrency()), files.size());
  std::vector<std::thread> pool;
  for (std::size_t i = 1; i < n; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (bar) bar->finish();
  for (std::size_t ti = 0; ti < bad.size(); ++ti)
    if (bad[ti]) a.verify_tensor(a.tensors()[ti].name);  // rehashes this one tensor and throws its tensor.hash
}

}  // namespace

int main(int argc, char** argv) {
  bool nodes = false, verify = false, json = false, progress = false;
  fxlower::LoadOptions opts;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nodes") nodes = true;
    else if (a == "--verify") verify = true;
    else if (a == "--progress") progress = true;
    else if (a == "--json") json = true;
    else if (a == "--non-strict") opts.strict = false;
    else if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    else if (!a.empty() && a[0] == '-') return usage("unknown option " + a);
    else if (dir.empty()) dir = a;
    else return usage("more than one artifact given");
  }
  if (dir.empty()) return usage("no artifact given");
  try {
    const fxlower::Artifact a = fxlower::load(dir, opts);
    if (verify) verify_parallel(a, progress);
    if (json) {
      std::printf("%s\n", a.manifest_json().dump(2).c_str());
      return 0;
    }
    summary(a, nodes);
    if (verify) std::printf("\nverify      %zu tensors: all SHA-256 match\n", a.tensors().size());
    return 0;
  } catch (const fxlower::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
