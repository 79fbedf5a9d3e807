// Synthetic models: real shapes and tokenizer, weights at the intended scale, recipes applied,
// deterministic output whatever the thread count.
#include "formats/synth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "formats/gguf_export.h"
#include "formats/hf_config.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "formats/model_export.h"
#include "formats/model_loader.h"
#include "formats/model_tensors.h"
#include "reference.h"
#include "testdata.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace pensieve;

namespace {

fs::path temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("pensieve_synth_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

std::string phi3_vocab() { return (test::testdata_dir() / "vocab" / "ggml-vocab-phi-3.gguf").string(); }

// Mean and standard deviation of a whole tensor, dequantized.
std::pair<double, double> stats(const Tensor& t) {
  std::vector<float> row(size_t(t.cols()));
  double sum = 0, sq = 0;
  for (int64_t r = 0; r < t.rows(); ++r) {
    kernels::dequantize_row(t.type, t.row(r), row.data(), t.cols());
    for (float x : row) {
      sum += x;
      sq += double(x) * x;
    }
  }
  const double n = double(t.elements());
  const double mean = sum / n;
  return {mean, std::sqrt(sq / n - mean * mean)};
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(Synth, TinyCarriesTheVocabularyAndRealisticWeights) {
  PENSIEVE_REQUIRE_TESTDATA();
  for (const char* type : {"f16", "q8_0", "q4_0", "q4_k_m"}) {
    SCOPED_TRACE(type);
    const fs::path out = temp_path(std::string("tiny_") + type + ".gguf");
    SynthOptions o;
    o.config = synth_preset("tiny");
    o.type = type;
    o.vocab_path = phi3_vocab();
    write_synthetic_model(o, out.string());
    LoadedModel m = load_model(out.string());
    EXPECT_EQ(m.config.arch, Arch::Phi3);
    EXPECT_EQ(m.config.n_vocab, 32064);
    EXPECT_EQ(m.config.dim, 64);
    EXPECT_EQ(m.config.n_layers, 2);
    EXPECT_EQ(m.config.bos_id, 1);
    EXPECT_EQ(m.config.eos_id, 32000);
    GgufFile vocab = GgufFile::open(phi3_vocab());
    EXPECT_EQ(m.gguf->get_string("tokenizer.chat_template"), vocab.get_string("tokenizer.chat_template"));
    EXPECT_EQ(m.gguf->find("tokenizer.ggml.tokens")->as_string_array(),
              vocab.find("tokenizer.ggml.tokens")->as_string_array());
    const auto [norm_mean, norm_sd] = stats(m.weights.require("blk.1.ffn_norm.weight"));
    EXPECT_EQ(norm_mean, 1.0);
    EXPECT_EQ(norm_sd, 0.0);
    for (const char* name : {"token_embd.weight", "blk.0.attn_qkv.weight", "blk.1.ffn_down.weight"}) {
      const auto [mean, sd] = stats(m.weights.require(name));
      EXPECT_NEAR(mean, 0.0, 0.002) << name;
      EXPECT_NEAR(sd, 0.02, 0.003) << name;
    }
    fs::remove(out);
  }
}

TEST(Synth, OutputDoesNotDependOnThreads) {
  SynthOptions o;
  o.config = synth_custom("llama", 2, 256, 512, 4, 2, 1024);
  o.config.n_vocab = 300;
  o.type = "q4_k_m";
  const fs::path a = temp_path("t1.gguf"), b = temp_path("t3.gguf"), c = temp_path("seed.gguf");
  o.threads = 1;
  write_synthetic_model(o, a.string());
  o.threads = 3;
  write_synthetic_model(o, b.string());
  o.seed = 2;
  write_synthetic_model(o, c.string());
  const std::string sa = slurp(a), sb = slurp(b), sc = slurp(c);
  EXPECT_GT(sa.size(), 100000u);
  EXPECT_TRUE(sa == sb);
  EXPECT_EQ(sa.size(), sc.size());
  EXPECT_FALSE(sa == sc);
  fs::remove(a);
  fs::remove(b);
  fs::remove(c);
}

TEST(Synth, KQuantMixFollowsTheUsualRecipe) {
  SynthOptions o;
  o.config = synth_custom("llama", 8, 256, 512, 4, 2, 1024);
  o.config.n_vocab = 300;
  o.type = "q4_k_m";
  const fs::path out = temp_path("mix.gguf");
  write_synthetic_model(o, out.string());
  LoadedModel m = load_model(out.string());
  EXPECT_EQ(m.config.rope.style, RopeStyle::Interleaved);
  EXPECT_EQ(m.weights.require("output.weight").type, GgmlType::Q6_K);
  EXPECT_EQ(m.weights.require("token_embd.weight").type, GgmlType::Q4_K);
  EXPECT_EQ(m.weights.require("output_norm.weight").type, GgmlType::F32);
  const std::set<int> more_bits = {0, 3, 6, 7};  // first/last eighth and every third between
  for (int l = 0; l < 8; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const GgmlType hi = more_bits.count(l) ? GgmlType::Q6_K : GgmlType::Q4_K;
    EXPECT_EQ(m.weights.require(p + "attn_v.weight").type, hi) << l;
    EXPECT_EQ(m.weights.require(p + "ffn_down.weight").type, hi) << l;
    EXPECT_EQ(m.weights.require(p + "attn_q.weight").type, GgmlType::Q4_K) << l;
  }
  EXPECT_EQ(m.gguf->get_int("general.file_type", -1), 15);
  fs::remove(out);
}

TEST(Synth, LongRopeFactorsRoundTrip) {
  ModelConfig c = synth_preset("phi3-mini-128k");
  EXPECT_EQ(c.ctx_train, 131072);
  EXPECT_EQ(c.rope.original_ctx, 4096);
  ASSERT_EQ(c.rope.long_factor.size(), 48u);
  EXPECT_NEAR(c.rope.attn_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)), 1e-6);
  // The same rope with a small body (head_dim 96 kept so the factor count is real).
  c.n_layers = 1;
  c.dim = 192;
  c.n_heads = c.n_kv_heads = 2;
  c.ff_dim = 256;
  c.n_vocab = 200;
  SynthOptions o;
  o.config = c;
  o.type = "q8_0";
  const fs::path out = temp_path("longrope.gguf");
  write_synthetic_model(o, out.string());
  LoadedModel m = load_model(out.string());
  EXPECT_EQ(m.config.rope.scaling, RopeScaling::LongRope);
  EXPECT_EQ(m.config.rope.long_factor, c.rope.long_factor);
  EXPECT_EQ(m.config.rope.short_factor, c.rope.short_factor);
  EXPECT_FLOAT_EQ(m.config.rope.attn_factor, c.rope.attn_factor);
  EXPECT_EQ(m.config.rope.original_ctx, 4096);
  EXPECT_EQ(m.config.sliding_window, 262144);
  fs::remove(out);
}

TEST(Synth, PresetsAreCoherent) {
  for (const auto& name : synth_preset_names()) {
    ModelConfig c = synth_preset(name);
    EXPECT_NO_THROW(check_model_config(c, name)) << name;
  }
  const ModelConfig p = synth_preset("phi3-mini");
  EXPECT_EQ(p.n_layers, 32);
  EXPECT_EQ(p.dim, 3072);
  EXPECT_EQ(p.ff_dim, 8192);
  EXPECT_EQ(p.n_heads, 32);
  EXPECT_EQ(p.ctx_train, 4096);
  EXPECT_THROW(synth_preset("gpt-7"), Error);
  EXPECT_THROW(synth_custom("bert", 2, 64, 128, 4, 4, 128), Error);
  EXPECT_THROW(synth_custom("llama", 2, 65, 128, 4, 4, 128), Error);
}

TEST(Synth, Command) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path out = temp_path("cli_tiny.gguf");
  const std::string bin = test::pensieve_binary();
  const std::string ok = bin + " synth --preset tiny --type q4_0 --vocab " + phi3_vocab() +
                         " --out " + out.string() + " 2>/dev/null";
  ASSERT_EQ(std::system(ok.c_str()), 0);
  EXPECT_EQ(load_model(out.string()).weights.require("blk.0.attn_output.weight").type, GgmlType::Q4_0);
  const std::string bad = bin + " synth --preset nope --out " + out.string() + " 2>/dev/null";
  EXPECT_NE(std::system(bad.c_str()), 0);
  const std::string bad_type = bin + " synth --preset tiny --type q9 --out " + out.string() + " 2>/dev/null";
  EXPECT_NE(std::system(bad_type.c_str()), 0);
  fs::remove(out);
}

// ---- MLX folders ---------------------------------------------------------------------------------

// config.json written for every preset reads back as the same model.
TEST(SynthMlx, HfConfigRoundTrips) {
  for (const auto& name : synth_preset_names()) {
    SCOPED_TRACE(name);
    const ModelConfig c = synth_preset(name);
    const ModelConfig b = parse_hf_config(hf_config_json(c), nullptr, "test");
    EXPECT_EQ(b.arch, c.arch);
    EXPECT_EQ(b.dim, c.dim);
    EXPECT_EQ(b.n_layers, c.n_layers);
    EXPECT_EQ(b.n_heads, c.n_heads);
    EXPECT_EQ(b.n_kv_heads, c.n_kv_heads);
    EXPECT_EQ(b.head_dim, c.head_dim);
    EXPECT_EQ(b.ff_dim, c.ff_dim);
    EXPECT_EQ(b.n_vocab, c.n_vocab);
    EXPECT_EQ(b.ctx_train, c.ctx_train);
    EXPECT_EQ(b.sliding_window, c.sliding_window);
    EXPECT_FLOAT_EQ(b.norm_eps, c.norm_eps);
    EXPECT_FLOAT_EQ(b.rope.theta, c.rope.theta);
    EXPECT_EQ(b.rope.n_rot, c.rope.n_rot);
    EXPECT_EQ(b.rope.scaling, c.rope.scaling);
    EXPECT_EQ(b.rope.short_factor, c.rope.short_factor);
    EXPECT_EQ(b.rope.long_factor, c.rope.long_factor);
    EXPECT_FLOAT_EQ(b.rope.attn_factor, c.rope.attn_factor);
    EXPECT_EQ(b.tied_embeddings, c.tied_embeddings);
    EXPECT_EQ(b.bos_id, c.bos_id);
    EXPECT_EQ(b.eos_id, c.eos_id);
    EXPECT_EQ(b.stop_ids, c.stop_ids);
    for (const TensorSpec& spec : model_tensor_specs(c)) {
      if (spec.optional) continue;
      const auto hf = hf_tensor_name(spec.name, c.arch);
      ASSERT_TRUE(hf) << spec.name;
      EXPECT_EQ(canonical_tensor_name(*hf), spec.name);
    }
  }
}

// A synthesized MLX folder loads as the repacked block type, carries the GGUF synthesizer's weight
// statistics, and computes the logits of its own weights dequantized to float32 (a GGUF F32 export
// of the loaded model): to float summation order with float activations, and within the 8-bit
// activation rounding through the quantized kernels.
TEST(SynthMlx, FolderComputesItsDequantizedWeights) {
  struct Case { int bits, group; GgmlType type; };
  for (const Case cs : {Case{4, 64, GgmlType::Q4_A}, Case{4, 128, GgmlType::Q4_A}, Case{4, 32, GgmlType::Q4_1},
                        Case{8, 64, GgmlType::Q8_A}}) {
    SCOPED_TRACE(std::to_string(cs.bits) + "-bit, group " + std::to_string(cs.group));
    SynthOptions o;
    o.config = synth_custom("phi3", 2, 256, 704, 4, 4, 512);
    o.threads = 2;
    const fs::path dir = temp_path("mlx" + std::to_string(cs.bits) + "_" + std::to_string(cs.group));
    write_synthetic_mlx_folder(o, SynthMlx{cs.bits, cs.group}, dir.string());
    const LoadedModel m = load_model(dir.string());
    EXPECT_EQ(m.format, "mlx");
    EXPECT_EQ(m.config.dim, 256);
    EXPECT_EQ(m.config.ff_dim, 704);
    for (const char* name : {"token_embd.weight", "output.weight", "blk.0.attn_qkv.weight", "blk.1.ffn_up.weight"}) {
      const Tensor& t = m.weights.require(name);
      EXPECT_EQ(t.type, cs.type) << name;
      const auto [mean, sd] = stats(t);
      EXPECT_NEAR(mean, 0.0, 0.002) << name;
      EXPECT_NEAR(sd, 0.02, 0.003) << name;
    }
    // ffn_down's 704 inputs are not a whole number of 128-groups: MLX keeps such a matrix in f16.
    EXPECT_EQ(m.weights.require("blk.0.ffn_down.weight").type, cs.group == 128 ? GgmlType::F16 : cs.type);

    const fs::path f32 = temp_path("mlx_deq.gguf");
    write_model_gguf(m, *quant_recipe("f32"), f32.string(), {}, 2);
    const auto ref = Model::load(f32.string());
    const auto mlx = Model::load(dir.string());
    ThreadPool pool(2);
    const std::vector<int32_t> ids = {1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889};
    auto run = [&](const Model& model, bool exact) {
      SequenceState st(model.config(), int(ids.size()), KvType::F32);
      st.exact_activations = exact;
      std::vector<float> logits;
      model.forward(st, ids, true, logits, pool);
      return logits;
    };
    const auto want = run(*ref, true);
    const auto same = test::compare_logits(run(*mlx, true), want, size_t(m.config.n_vocab));
    const auto q8 = test::compare_logits(run(*mlx, false), want, size_t(m.config.n_vocab));
    std::printf("[ mlx %d-bit g%d ] float activations: rel L2 %.3g; 8-bit activations: rel L2 %.3g, argmax %d/%d\n",
                cs.bits, cs.group, same.rel_l2, q8.rel_l2, q8.argmax_mismatches, q8.positions);
    EXPECT_LE(same.rel_l2, 1e-5);
    EXPECT_EQ(same.argmax_mismatches, 0);
    EXPECT_LE(q8.rel_l2, 2e-2);
    fs::remove(f32);
    fs::remove_all(dir);
  }
}

TEST(SynthMlx, BadOptionsAreErrors) {
  SynthOptions o;
  o.config = synth_preset("tiny");
  const std::string dir = temp_path("mlx_bad").string();
  EXPECT_THROW(write_synthetic_mlx_folder(o, SynthMlx{3, 64}, dir), Error);
  EXPECT_THROW(write_synthetic_mlx_folder(o, SynthMlx{4, 48}, dir), Error);
  o.vocab_path = "/nonexistent/vocab.gguf";
  EXPECT_THROW(write_synthetic_mlx_folder(o, SynthMlx{4, 64}, dir), Error);
}
