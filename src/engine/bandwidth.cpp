#include "engine/bandwidth.h"

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
  uint64_t s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32)
    for (int k = 0; k < 4; ++k) {
      uint64_t v;
      std::memcpy(&v, p + i + 8 * k, 8);
      s[k] += v;
    }
  for (; i < bytes; ++i) s[0] += p[i];
  return s[0] + s[1] + s[2] + s[3];
}

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes, int reps) {
  struct Free {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<uint8_t[], Free> buf(new (std::align_val_t(64)) uint8_t[bytes]);
  std::vector<uint64_t> sink(size_t(pool.size()));
  // Each thread touches its own share first, so pages are local to the thread that reads them.
  pool.run([&](int t, int n) {
    const size_t b = bytes / size_t(n) * size_t(t), e = t + 1 == n ? bytes : bytes / size_t(n) * size_t(t + 1);
    std::memset(buf.get() + b, t + 1, e - b);
  });
  double best = 0.0;
  for (int rep = 0; rep <= reps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    pool.run([&](int t, int n) {
      const size_t b = bytes / size_t(n) * size_t(t), e = t + 1 == n ? bytes : bytes / size_t(n) * size_t(t + 1);
      sink[size_t(t)] += read_sum(buf.get() + b, e - b);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep > 0) best = std::max(best, double(bytes) / s / 1e9);  // pass 0 warms up
  }
  volatile uint64_t keep = sink[0];
  (void)keep;
  return best;
}

}  // namespace pensieve
