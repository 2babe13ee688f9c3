// fxlower-shard DIR NAME RANK WORLD OUT: writes the slice of tensor NAME that rank RANK of WORLD holds under its
// format 1.3 placement (Artifact::read_shard) to the file OUT (raw bytes, row-major, little-endian) and prints
// "DTYPE [d0, d1, ...] ranges [b0, e0) [b1, e1) ..." on stdout. Used by tests/test_shards.py to compare the C++
// slices with torch.chunk. Exit status: 0 ok, 1 an fxlower::Error ("error: [code] ..." on stderr), 2 usage.
#include <fxlower/fxlower.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fputs("usage: fxlower-shard DIR NAME RANK WORLD OUT\n", stderr);
    return 2;
  }
  try {
    const fxlower::Artifact a = fxlower::load(argv[1]);
    const fxlower::TensorSlice s = a.read_shard(argv[2], std::strtoll(argv[3], nullptr, 10), std::strtoll(argv[4], nullptr, 10));
    std::FILE* f = std::fopen(argv[5], "wb");
    if (!f || (!s.bytes.empty() && std::fwrite(s.bytes.data(), 1, s.bytes.size(), f) != s.bytes.size()) || std::fclose(f) != 0) {
      std::fprintf(stderr, "cannot write %s\n", argv[5]);
      return 1;
    }
    std::string line(fxlower::dtype_name(s.dtype));
    line += " [";
    for (std::size_t i = 0; i < s.shape.size(); ++i) line += (i ? ", " : "") + std::to_string(s.shape[i]);
    line += "] ranges";
    for (const auto& r : s.ranges) line += " [" + std::to_string(r.first) + ", " + std::to_string(r.second) + ")";
    std::printf("%s\n", line.c_str());
    return 0;
  } catch (const fxlower::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
