#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "util/cpu.h"

namespace pensieve {

namespace avx2 {
uint64_t read_sum(const uint8_t* p, size_t bytes);
}

uint64_t read_sum(const uint8_t* p, size_t bytes) {
  if (cpu_features().use_avx2()) return avx2::read_sum(p, bytes);
  const size_t q = bytes / 4 / 64 * 64;  // four streams of q bytes, then the rest (as the AVX2 loop)
  uint64_t s[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < q; i += 8)
    for (int k = 0; k < 4; ++k) {
      uint64_t v;
      std::memcpy(&v, p + size_t(k) * q + i, 8);
      s[k] += v;
    }
  for (size_t i = 4 * q; i < bytes; ++i) s[0] += p[i];
  return s[0] + s[1] + s[2] + s[3];
}

namespace {

// [begin, end) of thread t's share of n bytes among `threads`.
std::pair<size_t, size_t> share(size_t n, int t, int threads) {
  return {n / size_t(threads) * size_t(t), t + 1 == threads ? n : n / size_t(threads) * size_t(t + 1)};
}

}  // namespace

double measure_read_bandwidth_gbs(ThreadPool& pool, std::span<const std::span<const uint8_t>> regions,
                                  int reps) {
  size_t total = 0;
  for (const auto& r : regions) total += r.size();
  if (total == 0) return 0.0;
  std::vector<uint64_t> sink(size_t(pool.size()));
  double best = 0.0;
  for (int rep = 0; rep <= reps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    for (const auto& r : regions)
      pool.run([&](int t, int n) {
        const auto [b, e] = share(r.size(), t, n);
        sink[size_t(t)] += read_sum(r.data() + b, e - b);
      });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep > 0) best = std::max(best, double(total) / s / 1e9);  // pass 0 warms up
  }
  volatile uint64_t keep = sink[0];
  (void)keep;
  return best;
}

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes, int reps) {
  struct Free {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<uint8_t[], Free> buf(new (std::align_val_t(64)) uint8_t[bytes]);
  pool.run([&](int t, int n) {
    const auto [b, e] = share(bytes, t, n);
    std::memset(buf.get() + b, t + 1, e - b);
  });
  const std::span<const uint8_t> region(buf.get(), bytes);
  return measure_read_bandwidth_gbs(pool, std::span(&region, 1), reps);
}

}  // namespace pensieve
