// Measured memory read bandwidth: the physical limit that decode speed is judged against (a decode
// step reads every weight once). Reported by `pensieve bench` and the micro-benchmarks.
#pragma once
#include <cstddef>
#include <cstdint>

#include "util/thread_pool.h"

namespace pensieve {

// Sums `bytes` bytes at p with wide loads and returns the sum (so the reads cannot be dropped).
uint64_t read_sum(const uint8_t* p, size_t bytes);

// Read bandwidth in GB/s (1e9 bytes/s) with every thread of `pool` reading its share of a buffer
// of `bytes` (far larger than the caches): the best of `reps` passes after one warm-up pass.
double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes = size_t(512) << 20, int reps = 5);

}  // namespace pensieve
