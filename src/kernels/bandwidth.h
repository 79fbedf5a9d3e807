// Measured memory read bandwidth: the physical limit that decode speed is judged against (a decode
// step reads every weight once). Reported by `pensieve bench` and the micro-benchmarks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include "util/thread_pool.h"

namespace pensieve {

// Sums `bytes` bytes at p with wide loads and returns the sum (so the reads cannot be dropped).
// The range is read as four interleaved sequential streams, which keeps more reads in flight per
// core than one stream does.
uint64_t read_sum(const uint8_t* p, size_t bytes);

// Read bandwidth in GB/s (1e9 bytes/s) of reading every region once, one after another, each split
// into one contiguous share per thread of `pool` (as a decode step reads its weight matrices): the
// best of `reps` passes after one warm-up pass.
double measure_read_bandwidth_gbs(ThreadPool& pool, std::span<const std::span<const uint8_t>> regions,
                                  int reps = 5);

// The same over a fresh buffer of `bytes` (far larger than the caches), first touched by the
// thread that reads each share.
double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes = size_t(512) << 20, int reps = 5);

}  // namespace pensieve
