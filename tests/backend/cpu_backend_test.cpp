// The CPU backend's weight preparation: on CPUs with AVX-512 VNNI the matrices a pass multiplies by
// are repacked by a background thread started when the load finishes, or by the first matmul that
// gets there first; tables of rows (embeddings) are left as loaded.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../kernels/random_weights.h"
#include "backend/backend.h"
#include "formats/model_config.h"
#include "util/cpu.h"
#include "util/thread_pool.h"

namespace pensieve {
namespace {

ModelConfig config() {
  ModelConfig c;
  c.n_vocab = 64;
  c.dim = 256;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.head_dim = 64;
  c.ff_dim = 512;
  c.rope.n_rot = 64;
  return c;
}

bool packing() {
  const char* off = std::getenv("PENSIEVE_NO_PACK");
  return cpu_features().use_vnni() && !(off && *off && std::string(off) != "0");
}

TEST(CpuBackend, PreparesEveryMatrixButNotRowTables) {
  if (!packing()) GTEST_SKIP() << "no packed layout here (no AVX-512 VNNI, or PENSIEVE_NO_VNNI/NO_PACK set)";
  test::Weights embd(GgmlType::Q4_0, 64, 256, 1), a(GgmlType::Q4_0, 96, 256, 2), b(GgmlType::Q6_K, 80, 256, 3),
      f32(GgmlType::F32, 16, 256, 4);
  auto be = make_cpu_backend(config());
  const int id_embd = be->add_weight(embd.t, WeightUse::Rows);
  const int id_a = be->add_weight(a.t, WeightUse::Matmul);
  const int id_b = be->add_weight(b.t, WeightUse::Both);
  const int id_f32 = be->add_weight(f32.t, WeightUse::Matmul);
  be->finish_load();
  be->wait_prepared();
  EXPECT_TRUE(be->weight_region(id_embd).empty());
  EXPECT_TRUE(be->weight_region(id_f32).empty());  // no packed layout for F32
  for (int id : {id_a, id_b}) {
    const auto r = be->weight_region(id);
    ASSERT_FALSE(r.empty()) << "weight " << id;
    // Packed tiles of 16 rows: at least the source's bytes (96 and 80 rows pad to 96 and 80).
    EXPECT_GE(r.size(), id == id_a ? a.t.nbytes : b.t.nbytes);
  }
}

TEST(CpuBackend, PassesDuringPreparationMatchPassesAfterIt) {
  // Two backends over the same weights: one multiplied right after finish_load (racing the
  // background thread for each matrix), one after wait_prepared. The products must be equal bit
  // for bit: whoever packs a matrix, it is packed the same way.
  std::vector<test::Weights> w;
  for (uint32_t i = 0; i < 12; ++i) w.emplace_back(i % 2 ? GgmlType::Q4_K : GgmlType::Q8_0, 256, 512, 10 + i);
  const auto x = test::randn(512 * 3, 99);
  ThreadPool pool(2);
  auto products = [&](bool wait) {
    auto be = make_cpu_backend(config());
    std::vector<int> ids;
    for (const auto& m : w) ids.push_back(be->add_weight(m.t, WeightUse::Matmul));
    be->finish_load();
    if (wait) be->wait_prepared();
    std::vector<float> y(ids.size() * 256 * 3);
    auto pass = be->begin_pass({}, pool);
    for (size_t i = ids.size(); i-- > 0;)  // the background thread starts at the first
      pass->matmul(ids[i], x.data(), 512, 3, y.data() + i * 256 * 3, 256, false);
    return y;
  };
  // The sources' pages are dropped once packed (heap pages read back as zeros), so each backend
  // gets fresh copies of the weights.
  const auto racing = products(false);
  for (uint32_t i = 0; i < 12; ++i) w[i] = test::Weights(i % 2 ? GgmlType::Q4_K : GgmlType::Q8_0, 256, 512, 10 + i);
  const auto prepared = products(true);
  EXPECT_EQ(racing, prepared);
}

}  // namespace
}  // namespace pensieve
