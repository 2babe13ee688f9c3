// fxlower-mlir: the core view of an fxlower artifact as torch-dialect MLIR, for MLIR compilers such as IREE
// (docs/iree.md). The weights stay in the artifact's safetensors files: every parameter, buffer and constant is a
// util.global bound to #stream.parameter.named<"SCOPE"::"KEY">, and the compiled module reads them at run time
// (iree-run-module --parameters=SCOPE=DIR/weights.safetensors; a sharded artifact takes one such flag per shard,
// printed in manifest order).
//
//   fxlower-mlir DIR -o OUT.mlir [--scope model] [--function main] [--non-strict]
//
// Exit status: 0 written; 2 a usage or load error, or something the emitter cannot express (each named by node
// and target; nothing is written then).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "mlir_emit.hpp"

namespace {

const char* kUsage =
    "usage: fxlower-mlir DIR -o OUT.mlir [options]\n"
    "\n"
    "Writes the core view of the fxlower artifact DIR (format 1.2, exported with core=True) as one torch-dialect\n"
    "func.func, which IREE compiles with --iree-input-type=torch. The weights are not copied: each parameter,\n"
    "buffer and constant is a util.global bound to the named parameter SCOPE::KEY, KEY being its key in the\n"
    "artifact's safetensors file; run with iree-run-module --parameters=SCOPE=DIR/FILE, one per weights file.\n"
    "\n"
    "options:\n"
    "  -o, --out OUT     the .mlir file to write ('-' for standard output); required\n"
    "  --scope NAME      the parameter scope of the globals (default: model)\n"
    "  --function NAME   the function's name (default: main)\n"
    "  --non-strict      ignore directory entries the manifest does not list (they are never opened)\n"
    "  -h, --help        print this help and exit\n"
    "\n"
    "Ops are emitted from the operator schemas recorded in the manifest. An operation the emitter cannot express\n"
    "(control flow, a buffer mutation, an in-place op, ...) is named with its node and target, and nothing is\n"
    "written. exit status: 0 written; 2 a usage or load error, or an unsupported operation\n";

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "fxlower-mlir: %s\n%s", msg.c_str(), kUsage);
  return 2;
}

int run_main(int argc, char** argv) {
  std::string dir, out;
  fxlower::mlir::EmitOptions opt;
  fxlower::LoadOptions lo;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(std::string(name) + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "-o" || a == "--out") {
      out = value("-o");
    } else if (a == "--scope") {
      opt.scope = value("--scope");
    } else if (a == "--function") {
      opt.function = value("--function");
    } else if (a == "--non-strict") {
      lo.strict = false;
    } else if (a.size() > 1 && a[0] == '-') {
      return usage_error("unknown option " + a);
    } else if (dir.empty()) {
      dir = a;
    } else {
      return usage_error("one artifact directory only (got '" + dir + "' and '" + a + "')");
    }
  }
  if (dir.empty()) return usage_error("no artifact directory given");
  if (out.empty()) return usage_error("no output file given (-o OUT.mlir)");
  if (opt.scope.empty() || opt.function.empty()) return usage_error("--scope and --function take non-empty names");

  const fxlower::Artifact art = fxlower::load(dir, lo);
  fxlower::mlir::EmitResult r;
  try {
    r = fxlower::mlir::emit(art, opt);
  } catch (const fxlower::mlir::EmitError& e) {
    std::fprintf(stderr, "fxlower-mlir: %s\n", e.what());
    return 2;
  }
  if (out == "-") {
    std::fwrite(r.text.data(), 1, r.text.size(), stdout);
    return 0;
  }
  // Write beside the target, then rename: a failed write never leaves a partial OUT.
  const std::string tmp = out + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(r.text.data(), static_cast<std::streamsize>(r.text.size()));
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      std::fprintf(stderr, "fxlower-mlir: cannot write %s: %s\n", out.c_str(), std::strerror(errno));
      return 2;
    }
  }
  if (std::rename(tmp.c_str(), out.c_str()) != 0) {
    std::fprintf(stderr, "fxlower-mlir: cannot write %s: %s\n", out.c_str(), std::strerror(errno));
    std::remove(tmp.c_str());
    return 2;
  }
  std::printf("wrote %s: func.func @%s, %zu ops, %zu parameter globals\n", out.c_str(), opt.function.c_str(), r.ops,
              r.globals);
  for (const auto& f : r.parameter_files)
    std::printf("parameters: --parameters=%s=%s/%s\n", opt.scope.c_str(), dir.c_str(), f.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const fxlower::Error& e) {
    std::fprintf(stderr, "fxlower-mlir: %s\n", e.what());
  } catch (const std::invalid_argument& e) {
    return usage_error(e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fxlower-mlir: error: %s\n", e.what());
  }
  return 2;
}
