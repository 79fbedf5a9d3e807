// attend_group (model/attention.h) against attention computed in double precision, for half, float
// and Q8 cache rows, and the batch invariance the batched forward pass relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "model/attention.h"
#include "util/cpu.h"
#include "util/fp16.h"

namespace pensieve {
namespace {

namespace K = kernels;

// Random rows of `positions` positions in a cache of the given type; kf and vf hold the values the
// cache rows stand for (rounded to half, or Q8's int8 times its scale).
struct Cache {
  int kv_dim;
  KvType type;
  std::vector<std::vector<float>> kf, vf;         // what the rows hold, as float
  std::vector<std::vector<uint8_t>> kr, vr;       // the rows as stored (half, float or Q8 bytes)
  std::vector<const void*> keys, values;
  Cache(int positions, int kv_dim_, int heads, KvType type_, uint32_t seed) : kv_dim(kv_dim_), type(type_) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(0.0f, 1.0f);
    const int hd = kv_dim / heads;
    auto store = [&](std::vector<float>& x) {
      std::vector<uint8_t> row;
      if (type == KvType::F32) {
        row.resize(x.size() * 4);
        std::memcpy(row.data(), x.data(), row.size());
      } else if (type == KvType::F16) {
        row.resize(x.size() * 2);
        for (size_t i = 0; i < x.size(); ++i) {
          const uint16_t h = f32_to_f16(x[i]);
          std::memcpy(row.data() + 2 * i, &h, 2);
          x[i] = f16_to_f32(h);
        }
      } else {
        row.resize(x.size() + size_t(heads) * 4);
        kv_store_q8(x.data(), heads, hd, row.data());
        for (size_t i = 0; i < x.size(); ++i) {
          float d;
          std::memcpy(&d, row.data() + x.size() + (i / size_t(hd)) * 4, 4);
          x[i] = d * float(int8_t(row[i]));
        }
      }
      return row;
    };
    for (int p = 0; p < positions; ++p) {
      std::vector<float> k(static_cast<size_t>(kv_dim)), v(static_cast<size_t>(kv_dim));
      for (auto& x : k) x = g(rng);
      for (auto& x : v) x = g(rng);
      kr.push_back(store(k)), vr.push_back(store(v));
      kf.push_back(k), vf.push_back(v);
    }
    for (int p = 0; p < positions; ++p) keys.push_back(kr[size_t(p)].data()), values.push_back(vr[size_t(p)].data());
  }
  K::AttnRows rows(int first, int64_t off, int hd) const {
    return {keys.data() + first, values.data() + first, first, type, off, int64_t(kv_dim) + off / hd * 4};
  }
};

std::vector<double> reference(const Cache& c, const float* q, int lo, int hi, int64_t off, int hd, float scale) {
  std::vector<double> s;
  for (int p = lo; p <= hi; ++p) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(c.kf[size_t(p)][size_t(off + i)]) * q[i];
    s.push_back(d * scale);
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (auto& x : s) sum += (x = std::exp(x - mx));
  std::vector<double> o(size_t(hd), 0.0);
  for (int p = lo; p <= hi; ++p)
    for (int i = 0; i < hd; ++i) o[size_t(i)] += s[size_t(p - lo)] / sum * c.vf[size_t(p)][size_t(off + i)];
  return o;
}

TEST(Attention, GroupsMatchDoublePrecisionAndDoNotDependOnTheGroup) {
  if (!K::attend_group_available(96)) GTEST_SKIP() << "no AVX-512 (or PENSIEVE_NO_VNNI set)";
  EXPECT_FALSE(K::attend_group_available(72));
  uint32_t seed = 10;
  for (KvType type : {KvType::F16, KvType::F32, KvType::Q8})
    for (int hd : {16, 64, 96, 128, 256}) {
      const int positions = 77, heads = 2, kv_dim = heads * hd;
      Cache c(positions, kv_dim, heads, type, ++seed);
      std::mt19937 rng(++seed);
      std::normal_distribution<float> g(0.0f, 1.0f);
      const float scale = 1.0f / std::sqrt(float(hd));
      // Four consecutive queries ending at position 76, without and with a sliding window of 30.
      for (int window : {0, 30}) {
        std::vector<float> q(static_cast<size_t>(4 * hd));
        for (auto& x : q) x = g(rng);
        std::vector<float> together(static_cast<size_t>(4 * hd)), alone(static_cast<size_t>(hd));
        K::AttnQuery qs[4];
        int first = positions;
        for (int i = 0; i < 4; ++i) {
          const int pos = positions - 4 + i;
          qs[i] = {q.data() + i * hd, together.data() + i * hd, window ? std::max(0, pos - window + 1) : 0, pos};
          first = std::min(first, qs[i].lo);
        }
        const K::AttnRows rows = c.rows(first, hd, hd);
        std::vector<float> scratch;
        K::attend_group(qs, 4, rows, hd, scale, scratch);
        for (int i = 0; i < 4; ++i) {
          const auto want = reference(c, qs[i].q, qs[i].lo, qs[i].hi, hd, hd, scale);
          for (int d = 0; d < hd; ++d)
            ASSERT_NEAR(together[size_t(i * hd + d)], want[size_t(d)], 2e-5 * (std::fabs(want[size_t(d)]) + 1.0))
                << kv_type_name(type) << " hd " << hd << " window " << window << " query " << i << " dim " << d;
          K::AttnQuery one = qs[i];
          one.out = alone.data();
          const K::AttnRows own = c.rows(one.lo, hd, hd);
          K::attend_group(&one, 1, own, hd, scale, scratch);
          for (int d = 0; d < hd; ++d)
            ASSERT_EQ(alone[size_t(d)], together[size_t(i * hd + d)])
                << kv_type_name(type) << " hd " << hd << " query " << i << ": its group changed its result";
        }
      }
    }
}

}  // namespace
}  // namespace pensieve
