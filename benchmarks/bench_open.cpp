// Times fxlower::load(dir) in-process: N opens, prints the median in microseconds.
// Built and driven by benchmarks/bench_open.py.
#include <fxlower/fxlower.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: bench_open DIR N\n");
    return 2;
  }
  const int n = std::atoi(argv[2]);
  std::vector<double> us;
  std::size_t tensors = 0;
  for (int i = 0; i < n; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fxlower::Artifact a = fxlower::load(argv[1]);
    const auto t1 = std::chrono::steady_clock::now();
    tensors = a.tensors().size();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::printf("%.1f %zu\n", us[us.size() / 2], tensors);
  return 0;
}
