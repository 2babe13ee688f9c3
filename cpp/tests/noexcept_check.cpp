// Built with FXLOWER_NOEXCEPTION: a load error must print "fxlower: [code] ..." to stderr and abort().
// The CTest entry runs it on a missing directory and expects that message (and a non-zero exit status).
#define FXLOWER_NOEXCEPTION 1
#include <fxlower/fxlower.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  fxlower::load(argv[1]);
  std::printf("loaded without error\n");
  return 0;
}
