#include <fxlower/fxlower.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const fxlower::Artifact a = fxlower::load(argv[1]);
  std::printf("%zu nodes, %zu tensors\n", a.root().nodes.size(), a.tensors().size());
  return 0;
}
