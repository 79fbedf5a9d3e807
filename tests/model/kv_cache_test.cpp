// The paged KV cache: block addressing, the block manager's allocate/share/release/evict rules,
// the prefix hashes, and no leaked or double-held block under long random operation sequences.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <cstring>
#include <set>

#include "util/error.h"

namespace pensieve {
namespace {

std::vector<int32_t> seq(int from, int n) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(from + i);
  return v;
}

TEST(KvPool, BlocksAndRowsDoNotOverlap) {
  ModelConfig cfg;
  cfg.n_layers = 3;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 4;
  KvPool pool(cfg, 5, 4, KvType::F32);
  EXPECT_EQ(pool.bytes(), size_t(5) * KvPool::block_bytes(cfg, 4, KvType::F32));
  EXPECT_EQ(KvPool::block_bytes(cfg, 4, KvType::F32), size_t(3 * 2 * 4 * 8 * 4));
  // Q8: a row is 8 int8 values and 2 float scales; f16 rows half the float ones.
  EXPECT_EQ(KvPool::block_bytes(cfg, 4, KvType::Q8), size_t(3 * 2 * 4 * (8 + 2 * 4)));
  EXPECT_EQ(KvPool(cfg, 5, 4, KvType::Q8).bytes_per_row(), size_t(16));
  EXPECT_EQ(KvPool::block_bytes(cfg, 4, KvType::F16), size_t(3 * 2 * 4 * 8 * 2));
  std::set<const void*> rows;
  for (int b = 0; b < 5; ++b)
    for (int l = 0; l < 3; ++l)
      for (int off = 0; off < 4; ++off) {
        float* k = static_cast<float*>(pool.key(b, l, off));
        float* v = static_cast<float*>(pool.value(b, l, off));
        EXPECT_TRUE(rows.insert(k).second);
        EXPECT_TRUE(rows.insert(v).second);
        for (int i = 0; i < 8; ++i) k[i] = float(b * 1000 + l * 100 + off * 10 + i), v[i] = -k[i];
      }
  // Every row still holds what was written to it: no two rows share bytes.
  for (int b = 0; b < 5; ++b)
    for (int l = 0; l < 3; ++l)
      for (int off = 0; off < 4; ++off)
        for (int i = 0; i < 8; ++i) {
          ASSERT_EQ(static_cast<float*>(pool.key(b, l, off))[i], float(b * 1000 + l * 100 + off * 10 + i));
          ASSERT_EQ(static_cast<float*>(pool.value(b, l, off))[i], -float(b * 1000 + l * 100 + off * 10 + i));
        }
  EXPECT_THROW(KvPool(cfg, 0, 4, KvType::F16), Error);
}

TEST(KvPool, TypesParseAndQ8RowsRoundPerHead) {
  for (KvType t : {KvType::F16, KvType::F32, KvType::Q8}) EXPECT_EQ(parse_kv_type(kv_type_name(t)), t);
  EXPECT_THROW(parse_kv_type("q4"), Error);
  // Two heads of 4: each head's int8 values are x * 127 / max|x| rounded, its scale max|x| / 127.
  const float x[8] = {1.0f, -0.5f, 0.25f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  uint8_t row[8 + 2 * 4];
  kv_store_q8(x, 2, 4, row);
  const int8_t want[8] = {64, -32, 16, 127, 0, 0, 0, 0};  // 63.5 and 15.875 round to even and up
  for (int i = 0; i < 8; ++i) EXPECT_EQ(int8_t(row[i]), want[i]) << i;
  float d[2];
  std::memcpy(d, row + 8, sizeof d);
  EXPECT_FLOAT_EQ(d[0], 2.0f / 127.0f);
  EXPECT_EQ(d[1], 0.0f);
}

TEST(KvBlockHash, CoversParentAndEveryToken) {
  const auto a = seq(1, 16);
  auto b = a;
  b[15] = 99;
  EXPECT_EQ(kv_block_hash(7, a), kv_block_hash(7, a));
  EXPECT_NE(kv_block_hash(7, a), kv_block_hash(8, a));
  EXPECT_NE(kv_block_hash(7, a), kv_block_hash(7, b));
  // Order matters.
  auto c = a;
  std::swap(c[0], c[1]);
  EXPECT_NE(kv_block_hash(7, a), kv_block_hash(7, c));
}

TEST(BlockManager, AllocateReleaseShareAndEvictLeastRecentlyUsed) {
  BlockManager m(3);
  EXPECT_EQ(m.available(), 3);
  const int a = m.allocate(), b = m.allocate(), c = m.allocate();
  EXPECT_EQ(std::set<int>({a, b, c}).size(), 3u);
  EXPECT_EQ(m.allocate(), -1);
  EXPECT_EQ(m.in_use(), 3);
  const auto ta = seq(0, 4), tb = seq(4, 4);
  const uint64_t ha = kv_block_hash(1, ta), hb = kv_block_hash(ha, tb);
  m.publish(a, ha, 1, ta);
  m.publish(b, hb, ha, tb);
  // A second sequence shares block a.
  EXPECT_EQ(m.lookup(ha, 1, ta), a);
  m.release(a);
  EXPECT_EQ(m.in_use(), 3);  // still held by its first owner
  m.release(a);
  m.release(b);
  m.release(c);  // never named: plain free
  EXPECT_EQ(m.in_use(), 0);
  EXPECT_EQ(m.cached(), 2);
  EXPECT_EQ(m.available(), 3);
  // Free blocks go first, then the least recently released cached one (a).
  EXPECT_EQ(m.allocate(), c);
  EXPECT_EQ(m.allocate(), a);
  EXPECT_EQ(m.lookup(ha, 1, ta), -1);  // evicted: its name is gone
  EXPECT_EQ(m.lookup(hb, ha, tb), b);  // b survives and is taken back from the cache
  EXPECT_EQ(m.cached(), 0);
  EXPECT_EQ(m.allocate(), -1);
  EXPECT_THROW({
    m.release(c);
    m.release(c);
  }, Error);
}

TEST(BlockManager, LookupComparesTokensNotOnlyTheHash) {
  BlockManager m(2);
  const int a = m.allocate();
  const auto t = seq(10, 4);
  m.publish(a, 42, 1, t);
  EXPECT_EQ(m.lookup(42, 1, seq(11, 4)), -1);  // same hash, other tokens: a collision
  EXPECT_EQ(m.lookup(42, 2, t), -1);           // other parent
  EXPECT_EQ(m.lookup(42, 1, t), a);
  // A second block with an already published hash is not named (the first keeps the name).
  const int b = m.allocate();
  m.publish(b, 42, 1, t);
  m.release(a);
  m.release(a);
  m.release(b);
  EXPECT_EQ(m.cached(), 1);
}

// Random sequences of the scheduler's operations against a simple model of who holds what: the
// counts always add up, no block is handed out twice, and releasing everything frees everything.
TEST(BlockManager, RandomOperationsNeverLeakOrDoubleAllocate) {
  std::mt19937 rng(1234);
  BlockManager m(24);
  std::map<int, std::vector<int>> held;  // sequence -> its blocks (with repeats across sequences)
  std::map<int, int> refs;               // block -> references we hold
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> names;  // published (hash, tokens)
  int next_seq = 0;
  for (int op = 0; op < 20000; ++op) {
    const int kind = int(rng() % 5);
    if (kind <= 1) {  // a sequence grows by one block
      const int s = held.empty() || rng() % 3 == 0 ? next_seq++ : std::next(held.begin(), long(rng() % held.size()))->first;
      const int b = m.allocate();
      if (b < 0) {
        ASSERT_EQ(m.available(), 0);
        continue;
      }
      ASSERT_EQ(refs[b], 0) << "block " << b << " handed out while held";
      refs[b] = 1;
      held[s].push_back(b);
      if (rng() % 2) {  // and names it
        std::vector<int32_t> toks = seq(int(rng() % 1000), 4);
        const uint64_t h = kv_block_hash(0, toks);
        m.publish(b, h, 0, toks);
        names.push_back({h, toks});
      }
    } else if (kind == 2 && !names.empty()) {  // a new sequence finds a cached block
      const auto& [h, toks] = names[rng() % names.size()];
      const int b = m.lookup(h, 0, toks);
      if (b >= 0) {
        ++refs[b];
        held[next_seq++].push_back(b);
      }
    } else if (kind == 3 && !held.empty()) {  // a sequence ends (or is preempted)
      auto it = std::next(held.begin(), long(rng() % held.size()));
      for (int b : it->second) {
        m.release(b);
        --refs[b];
      }
      held.erase(it);
    }
    int in_use = 0;
    for (const auto& [b, n] : refs) in_use += n > 0;
    ASSERT_EQ(m.in_use(), in_use);
    ASSERT_EQ(m.in_use() + m.available(), m.total());
    ASSERT_LE(m.cached(), m.available());
  }
  for (auto& [s, bs] : held)
    for (int b : bs) m.release(b);
  EXPECT_EQ(m.in_use(), 0);
  EXPECT_EQ(m.available(), 24);
}

}  // namespace
}  // namespace pensieve
