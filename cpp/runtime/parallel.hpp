// fxlower reference runtime: threads. One small pool (N-1 workers plus the calling thread) for the kernels'
// parallel loops; OpenBLAS runs its own threads for matrix products, set to the same count.
#pragma once

#include <cstdint>
#include <functional>

namespace fxlower::rt {

// Sets the runtime's thread count (>= 1). The runtime's own pool runs every parallel loop, matrix products
// included: OpenBLAS is kept single-threaded and called from the pool's threads (its idle threads would
// otherwise spin against the pool's).
void set_num_threads(int n);
int num_threads();
// True inside a parallel_for body (nested loops run serially).
bool in_parallel_region();

// Runs fn(begin, end) over [0, n) in up to num_threads() contiguous chunks of at least `grain` items; runs
// serially when n < 2 * grain, with one thread, or when called from inside another parallel_for.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fxlower::rt
