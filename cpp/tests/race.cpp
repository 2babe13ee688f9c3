// fxlower-race ARTIFACTS: the reader maps (or copies) the tensor files when it loads, so replacing or deleting the
// artifact directory afterwards does not change what a loaded Artifact reads (issue 13).
//
// For each way of replacing it (another artifact renamed over the path; the directory deleted), with the tensor
// files mapped and copied: load a copy of valid/conv_relu, record every tensor's bytes through a second load of
// an untouched copy, replace the loaded one, then read every tensor of the loaded Artifact: its bytes equal the
// original ones and hash to the table's sha256.
#include <fxlower/fxlower.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/stat.h>

namespace {

int g_failed = 0, g_passed = 0;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

bool sh(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

void one(const std::string& arts, const std::string& how, bool mapped) {
  const std::string work = arts + "/race-" + how + (mapped ? "-mapped" : "-owned");
  const std::string path = work + "/model.fxl";
  if (!sh("rm -rf '" + work + "' && mkdir -p '" + work + "' && cp -r '" + arts + "/valid/conv_relu' '" + path +
          "' && cp -r '" + arts + "/valid/conv_relu' '" + work + "/reference' && cp -r '" + arts +
          "/valid/everything' '" + work + "/other'")) {
    check(false, "preparing " + work);
    return;
  }
  fxlower::LoadOptions opts;
  opts.map_tensors = mapped;
  const fxlower::Artifact loaded = fxlower::load(path, opts);
  const fxlower::Artifact reference = fxlower::load(work + "/reference");
  const std::string label = how + (mapped ? " (mapped)" : " (owned)");
  if (how == "renamed_over") {
    // rename(2) cannot replace a non-empty directory: move the old one aside, rename the new one into place,
    // delete the old one (what an exporter's overwrite does).
    check(std::rename(path.c_str(), (work + "/old").c_str()) == 0, label + ": rename old away");
    check(std::rename((work + "/other").c_str(), path.c_str()) == 0, label + ": rename other into place");
    check(sh("rm -rf '" + work + "/old'"), label + ": delete old");
  } else {
    check(sh("rm -rf '" + path + "'"), label + ": delete the directory");
  }
  struct stat st {};
  check(::stat((path + "/weights.safetensors").c_str(), &st) != 0 || how == "renamed_over",
        label + ": the directory is gone");
  std::size_t tensors = 0;
  for (const fxlower::Tensor& t : loaded.tensors()) {
    const fxlower::Tensor& r = reference.tensor_at(t.name);
    check(t.nbytes() == r.nbytes() && std::memcmp(t.data(), r.data(), t.nbytes()) == 0,
          label + ": tensor " + t.name + " reads its original bytes");
    check(t.compute_sha256() == t.sha256, label + ": tensor " + t.name + " hashes to the table's sha256");
    ++tensors;
  }
  check(tensors == 4, label + ": conv_relu has 4 tensors, read " + std::to_string(tensors));
  check(loaded.tensor_at("conv.bias").element_double(3) == 1.0, label + ": conv.bias[3] is 1.0");
  // The path now holds the other artifact (or nothing): a fresh load sees that, not the old one.
  if (how == "renamed_over") check(fxlower::load(path).tensors().size() == 23, label + ": the path is the other artifact now");
  sh("rm -rf '" + work + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fxlower-race ARTIFACTS (the output directory of cpp/tests/make_artifacts.py)\n");
    return 2;
  }
  try {
    for (const char* how : {"renamed_over", "deleted"})
      for (bool mapped : {true, false}) one(argv[1], how, mapped);
  } catch (const fxlower::Error& e) {
    check(false, std::string("unexpected error: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
