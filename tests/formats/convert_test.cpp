// Conversion to GGUF: every testdata model folder to every type, loaded back with the same config
// and shapes and weights within each type's error bound; llama.cpp's own F32 file reproduced.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/kernels.h"
#include "model/model.h"
#include "formats/model_export.h"
#include "formats/model_loader.h"
#include "reference.h"
#include "testdata.h"
#include "text/tokenizer_golden.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace pensieve;

namespace {

fs::path temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("pensieve_convert_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

// Relative RMS error per tensor that each stored type may add. Worst measured on the testdata
// models: F16 2.1e-4, BF16 1.7e-3, Q8_0 5.4e-3, Q5_0 4.1e-2, Q5_1 3.5e-2, Q4_0 8.2e-2 (a b-bit
// uniform quantizer of near-Gaussian blocks gives about 2^-b * 1.3); the bounds leave 1.5-3x.
double error_bound(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 1e-7;
    case GgmlType::F16: return 6e-4;
    case GgmlType::BF16: return 4e-3;
    case GgmlType::Q8_0: return 8e-3;
    case GgmlType::Q6_K: return 2e-2;
    case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q5_K: return 6e-2;
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q4_K: return 1.2e-1;
    default: return 0;
  }
}

std::vector<float> dequantized_row(const Tensor& t, int64_t r) {
  std::vector<float> out(static_cast<size_t>(t.cols()));
  kernels::dequantize_row(t.type, t.row(r), out.data(), t.cols());
  return out;
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.ff_dim, b.ff_dim);
  EXPECT_EQ(a.ctx_train, b.ctx_train);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_FLOAT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_FLOAT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.n_rot, b.rope.n_rot);
  EXPECT_EQ(a.rope.scaling, b.rope.scaling);
  EXPECT_EQ(a.rope.original_ctx, b.rope.original_ctx);
  EXPECT_EQ(a.rope.short_factor, b.rope.short_factor);
  EXPECT_EQ(a.rope.long_factor, b.rope.long_factor);
  EXPECT_FLOAT_EQ(a.rope.attn_factor, b.rope.attn_factor);
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.stop_ids, b.stop_ids);
  EXPECT_EQ(a.rope.style, a.arch == Arch::Llama ? RopeStyle::Interleaved : RopeStyle::RotateHalf);
}

// Every source tensor is in the GGUF with its shape and within the bound of its stored type.
void expect_weights_close(const LoadedModel& src, const LoadedModel& gguf) {
  const bool permuted = src.config.arch == Arch::Llama;
  for (const auto& [name, s] : src.weights.tensors()) {
    SCOPED_TRACE(name);
    const Tensor& g = gguf.weights.require(name);
    ASSERT_EQ(g.shape_string(), s.shape_string());
    const bool qk = permuted && (name.find(".attn_q.") != std::string::npos ||
                                 name.find(".attn_k.") != std::string::npos);
    double err = 0, norm = 0;
    for (int64_t r = 0; r < s.rows(); ++r) {
      const auto gr = dequantized_row(g, r);
      const auto sr = dequantized_row(s, qk && s.n_dims == 2 ? permute_qk_row(r, src.config.head_dim) : r);
      for (size_t i = 0; i < sr.size(); ++i) {
        const size_t si = qk && s.n_dims == 1 ? size_t(permute_qk_row(int64_t(i), src.config.head_dim)) : i;
        err += (gr[i] - sr[si]) * double(gr[i] - sr[si]);
        norm += double(sr[si]) * sr[si];
      }
    }
    const double rel = std::sqrt(err / std::max(norm, 1e-30));
    EXPECT_LE(rel, error_bound(g.type)) << type_name(g.type);
  }
}

const char* kTypes[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"};

}  // namespace

TEST(Convert, EveryModelFolderToEveryType) {
  PENSIEVE_REQUIRE_TESTDATA();
  for (const auto& e : fs::directory_iterator(test::testdata_dir() / "models")) {
    const LoadedModel src = load_model(e.path().string());
    for (const char* type : kTypes) {
      SCOPED_TRACE(e.path().filename().string() + " -> " + type);
      const fs::path out = temp_path(e.path().filename().string() + "." + type + ".gguf");
      write_model_gguf(src, *quant_recipe(type), out.string(), {}, 2);
      const LoadedModel back = load_model(out.string());
      expect_same_config(back.config, src.config);
      EXPECT_EQ(back.gguf->get_int("general.file_type", -1), quant_recipe(type)->llama_ftype);
      expect_weights_close(src, back);
      fs::remove(out);
    }
  }
}

TEST(Convert, LlamaF32MatchesTheLlamaCppConverter) {
  PENSIEVE_REQUIRE_TESTDATA();
  const LoadedModel src = load_model((test::testdata_dir() / "models" / "tiny-llama-dev").string());
  const fs::path out = temp_path("llama.f32.gguf");
  write_model_gguf(src, *quant_recipe("f32"), out.string(), {}, 2);
  const LoadedModel ours = load_model(out.string());
  const LoadedModel theirs =
      load_model((test::testdata_dir() / "gguf" / "tiny-llama-dev.F32" / "model.gguf").string());
  ASSERT_EQ(ours.weights.tensors().size(), theirs.weights.tensors().size());
  for (const auto& [name, t] : theirs.weights.tensors()) {
    const Tensor& o = ours.weights.require(name);
    ASSERT_EQ(o.shape_string(), t.shape_string()) << name;
    ASSERT_EQ(o.nbytes, t.nbytes) << name;
    EXPECT_EQ(std::memcmp(o.data, t.data, t.nbytes), 0) << name;
  }
  for (const char* key : {"llama.context_length", "llama.embedding_length", "llama.block_count",
                          "llama.feed_forward_length", "llama.attention.head_count",
                          "llama.attention.head_count_kv", "llama.rope.dimension_count"})
    EXPECT_EQ(ours.gguf->get_int(key, -1), theirs.gguf->get_int(key, -2)) << key;
  fs::remove(out);
}

TEST(Convert, RequantizeLlamaCppFiles) {
  PENSIEVE_REQUIRE_TESTDATA();
  for (const char* model : {"np-llama-256-dev", "np-phi3-256-dev", "np-qwen2-256-dev"}) {
    SCOPED_TRACE(model);
    const fs::path in = test::testdata_dir() / "gguf" / (std::string(model) + ".Q8_0") / "model.gguf";
    const fs::path out = temp_path(std::string(model) + ".q4_k_m.gguf");
    const std::string cmd = test::pensieve_binary() + " quantize " + in.string() + " " +
                            out.string() + " q4_k_m 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    const LoadedModel src = load_model(in.string());
    const LoadedModel back = load_model(out.string());
    expect_same_config(back.config, src.config);
    EXPECT_EQ(back.weights.require("output.weight").type, GgmlType::Q6_K);
    EXPECT_EQ(back.weights.require("blk.0.ffn_up.weight").type, GgmlType::Q4_K);
    EXPECT_EQ(back.weights.require("blk.1.ffn_down.weight").type, GgmlType::Q6_K);
    // Q/K of a llama GGUF are already interleaved: nothing is permuted twice.
    for (const auto& [name, s] : src.weights.tensors()) {
      const Tensor& g = back.weights.require(name);
      const auto a = dequantized_row(g, s.rows() - 1), b = dequantized_row(s, s.rows() - 1);
      double err = 0, norm = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        err += (a[i] - b[i]) * double(a[i] - b[i]);
        norm += double(b[i]) * b[i];
      }
      EXPECT_LE(std::sqrt(err / std::max(norm, 1e-30)), 1.5 * error_bound(g.type)) << name;
    }
    EXPECT_EQ(back.gguf->find("tokenizer.ggml.tokens")->as_string_array(),
              src.gguf->find("tokenizer.ggml.tokens")->as_string_array());
    fs::remove(out);
  }
}

TEST(Convert, CommandLine) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path out = temp_path("cli.gguf");
  const std::string bin = test::pensieve_binary();
  const std::string dir = (test::testdata_dir() / "models" / "tiny-phi3-mlx4-dev").string();
  ASSERT_EQ(std::system((bin + " convert --from " + dir + " --out " + out.string() +
                         " --type q4_0 2>/dev/null").c_str()), 0);
  const LoadedModel back = load_model(out.string());
  EXPECT_EQ(back.config.rope.scaling, RopeScaling::LongRope);
  EXPECT_EQ(back.weights.require("blk.0.attn_output.weight").type, GgmlType::Q4_0);
  EXPECT_NE(std::system((bin + " convert --from " + dir + " --out " + out.string() +
                         " --type q3_xs 2>/dev/null").c_str()), 0);
  EXPECT_NE(std::system((bin + " quantize " + out.string() + " " + out.string() +
                         " q8_0 2>/dev/null").c_str()), 0);
  fs::remove(out);
}

// ---- tokenizer.json -> GGUF ------------------------------------------------------------------

namespace {

// A minimal safetensors writer: F16 tensors of the given shapes, filled with small values.
void write_f16_safetensors(const fs::path& path,
                           const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 2;
    for (int64_t d : shape) n *= uint64_t(d);
    header[name] = {{"dtype", "F16"}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string h = header.dump();
  h.resize((h.size() + 7) / 8 * 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), std::streamsize(h.size()));
  const uint16_t small = 0x2000;  // ~0.0078 in half precision
  std::vector<uint16_t> data(size_t(offset / 2), small);
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(offset));
}

// A one-layer llama folder whose vocabulary is that of a real tokenizer.json.
fs::path make_folder_with_tokenizer(const std::string& name, const fs::path& tokenizer_dir, int vocab) {
  const fs::path dir = temp_path(name);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << nlohmann::json{
      {"model_type", "llama"}, {"hidden_size", 64}, {"num_hidden_layers", 1},
      {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"intermediate_size", 64},
      {"vocab_size", vocab}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5},
      {"tie_word_embeddings", true}}.dump();
  const std::string p = "model.layers.0.";
  write_f16_safetensors(dir / "model.safetensors",
                        {{"model.embed_tokens.weight", {vocab, 64}}, {"model.norm.weight", {64}},
                         {p + "input_layernorm.weight", {64}}, {p + "post_attention_layernorm.weight", {64}},
                         {p + "self_attn.q_proj.weight", {64, 64}}, {p + "self_attn.k_proj.weight", {64, 64}},
                         {p + "self_attn.v_proj.weight", {64, 64}}, {p + "self_attn.o_proj.weight", {64, 64}},
                         {p + "mlp.gate_proj.weight", {64, 64}}, {p + "mlp.up_proj.weight", {64, 64}},
                         {p + "mlp.down_proj.weight", {64, 64}}});
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (fs::exists(tokenizer_dir / f)) fs::create_symlink(tokenizer_dir / f, dir / f);
  return dir;
}

}  // namespace

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

class ConvertTokenizer : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

// The GGUF tokenizer written from tokenizer.json tokenizes every golden string of that tokenizer
// exactly as the tokenizer.json itself does (whose ids the text tests check against Hugging Face).
// The engine tests do not link the text layer, so both go through `pensieve tokenize`.
TEST_P(ConvertTokenizer, TokenizesLikeTheTokenizerJson) {
  PENSIEVE_REQUIRE_TESTDATA();
  const auto [golden, package] = GetParam();
  PENSIEVE_REQUIRE_NPM_TOKENIZER(package);
  const fs::path tok_dir = test::npm_fixture_dir(package);
  const nlohmann::json tj = nlohmann::json::parse(test::read_whole_file(tok_dir / "tokenizer.json"));
  int n_tokens = int(tj["model"]["vocab"].size());
  for (const auto& a : tj["added_tokens"]) n_tokens = std::max(n_tokens, a["id"].get<int>() + 1);
  const int vocab = (n_tokens + 127) / 128 * 128;  // padded like real checkpoints
  const fs::path dir = make_folder_with_tokenizer(std::string("tok_") + golden, tok_dir, vocab);
  const fs::path out = temp_path(std::string("tok_") + golden + ".gguf");
  const std::string bin = test::pensieve_binary();
  ASSERT_EQ(std::system((bin + " convert --from " + dir.string() + " --out " + out.string() +
                         " --type q8_0 2>/dev/null").c_str()), 0);
  const GgufFile g = GgufFile::open(out.string());
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g.get_string("tokenizer.ggml.pre"), std::string(golden) == "llama-bpe" ? "llama-bpe" : "qwen2");
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->as_array().items.size(), size_t(vocab));
  EXPECT_FALSE(g.get_string("tokenizer.chat_template").empty());
  const LoadedModel m = load_model(out.string());
  EXPECT_EQ(m.config.n_vocab, vocab);
  EXPECT_TRUE(m.config.tied_embeddings);

  const fs::path text = test::testdata_dir() / "vocab" / ("ggml-vocab-" + std::string(golden) + ".gguf.inp");
  const std::string from_gguf = run_capture(bin + " tokenize --no-bos --model " + out.string() + " < " + text.string());
  const std::string from_json = run_capture(bin + " tokenize --no-bos --model " + tok_dir.string() + " < " + text.string());
  EXPECT_GT(from_json.size(), 1000u);
  EXPECT_TRUE(from_gguf == from_json) << "GGUF: " << from_gguf.substr(0, 300) << "\njson: " << from_json.substr(0, 300);
  // And the first golden case on its own, against the Hugging Face ids.
  const auto cases = test::read_golden(golden);
  ASSERT_FALSE(cases.empty());
  const fs::path one = temp_path("one.txt");
  std::ofstream(one, std::ios::binary) << cases[5].text;
  std::string want = "[";
  for (size_t i = 0; i < cases[5].ids.size(); ++i) want += (i ? ", " : "") + std::to_string(cases[5].ids[i]);
  want += "]";
  std::string got = run_capture(bin + " tokenize --no-bos --model " + out.string() + " < " + one.string());
  while (!got.empty() && (got.back() == '\n' || got.back() == ' ')) got.pop_back();
  EXPECT_EQ(got, want) << "[" << cases[5].text << "]";
  fs::remove_all(dir);
  fs::remove(out);
}

INSTANTIATE_TEST_SUITE_P(Npm, ConvertTokenizer,
                         ::testing::Values(std::make_pair("llama-bpe", "tokenizer-llama3"),
                                           std::make_pair("qwen2", "tokenizer-qwen3")),
                         [](const auto& info) {
                           return std::string(info.param.first) == "qwen2" ? "qwen2" : "llama_bpe";
                         });

// ---- converted models against the reference logits ---------------------------------------------

namespace {

struct ConvertedCase {
  const char* model;
  const char* type;
  double max_rel_l2;       // relative L2 of all logits against the reference
  int max_mismatch_pct;    // argmax disagreements allowed, percent of positions
};

std::string case_name(const ConvertedCase& c) {
  std::string s = std::string(c.model) + "_" + c.type;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

}  // namespace

class ConvertedReference : public ::testing::TestWithParam<ConvertedCase> {};

// A converted file computes what the folder does, up to the rounding its weight type adds: exact
// float32 activations and KV cache, so the only error left is the weights' own. F32 files are the
// folder's weights bit for bit (MLX's 4-bit values dequantize exactly), so they hold the float32
// bound (measured ~1e-6) and reproduce the greedy tokens. For the others the bounds are what these
// random-weight models give (worst measured: F16 1.6e-3 with 1/40 argmax flips, BF16 1.2e-2, Q8_0
// 3.9e-2 with 4/40, Q4_K_M 0.26 with 13/40, Q4_0 0.51 with 24/40) with some headroom: the per-tensor
// weight errors (EveryModelFolderToEveryType) are small, but these untrained models have nearly
// tied logits and amplify weight noise through every layer, so argmax flips are frequent at 4 bits.
// A wrong layout gives uncorrelated logits (relative L2 ~1.4, argmax ~100% off), far outside.
TEST_P(ConvertedReference, LogitsWithinTheTypeBound) {
  PENSIEVE_REQUIRE_TESTDATA();
  const ConvertedCase& cc = GetParam();
  const fs::path dir = test::testdata_dir() / "models" / cc.model;
  const fs::path out = temp_path(case_name(cc) + ".gguf");
  write_model_gguf(load_model(dir.string()), *quant_recipe(cc.type), out.string(), {}, 2);
  const auto model = Model::load(out.string());
  ThreadPool pool(2);
  for (const auto& ref : test::read_references(dir)) {
    SCOPED_TRACE(ref.name);
    SequenceState st(model->config(), int(ref.input_ids.size() + ref.greedy_next16.size()), KvType::F32);
    st.exact_activations = true;
    std::vector<float> logits;
    model->forward(st, ref.input_ids, true, logits, pool);
    const auto c = test::compare_logits(logits, ref.logits, size_t(model->config().n_vocab));
    std::printf("[ converted %s %s %s ] relative L2 %.3g, argmax mismatches %d/%d\n", cc.model,
                cc.type, ref.name.c_str(), c.rel_l2, c.argmax_mismatches, c.positions);
    EXPECT_LE(c.rel_l2, cc.max_rel_l2);
    EXPECT_LE(c.argmax_mismatches * 100, c.positions * cc.max_mismatch_pct);
    if (std::string(cc.type) == "f32" && !ref.greedy_next16.empty()) {
      std::vector<float> last(logits.end() - model->config().n_vocab, logits.end());
      std::vector<int32_t> greedy;
      for (size_t i = 0; i < ref.greedy_next16.size(); ++i) {
        const int32_t next = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
        greedy.push_back(next);
        if (i + 1 < ref.greedy_next16.size())
          model->forward(st, std::span<const int32_t>(&next, 1), false, last, pool);
      }
      EXPECT_EQ(greedy, ref.greedy_next16);
    }
  }
  fs::remove(out);
}

INSTANTIATE_TEST_SUITE_P(
    TestData, ConvertedReference,
    ::testing::ValuesIn(std::vector<ConvertedCase>{
        {"tiny-llama-dev", "f32", 1e-4, 0},            {"tiny-phi3-longrope-dev", "f32", 1e-4, 0},
        {"tiny-qwen2-dev", "f32", 1e-4, 0},            {"tiny-phi3-mlx4-dev", "f32", 1e-4, 0},
        {"tiny-llama-dev", "f16", 3e-3, 5},            {"tiny-phi3-longrope-dev", "f16", 3e-3, 5},
        {"tiny-qwen2-dev", "f16", 3e-3, 5},            {"tiny-llama-dev", "bf16", 2.5e-2, 5},
        {"tiny-phi3-longrope-dev", "bf16", 2.5e-2, 5}, {"tiny-qwen2-dev", "bf16", 2.5e-2, 5},
        {"tiny-llama-dev", "q8_0", 6e-2, 15},          {"tiny-phi3-longrope-dev", "q8_0", 6e-2, 15},
        {"tiny-qwen2-dev", "q8_0", 6e-2, 15},          {"tiny-phi3-mlx4-dev", "q8_0", 6e-2, 15},
        {"tiny-llama-dev", "q4_k_m", 0.4, 45},         {"tiny-phi3-longrope-dev", "q4_k_m", 0.4, 45},
        {"tiny-qwen2-dev", "q4_k_m", 0.4, 45},         {"tiny-llama-dev", "q4_0", 0.7, 70},
        {"tiny-phi3-longrope-dev", "q4_0", 0.7, 70},   {"tiny-qwen2-dev", "q4_0", 0.7, 70},
    }),
    [](const auto& info) { return case_name(info.param); });

// Our recipes choose, tensor by tensor, the types llama.cpp's llama-quantize chose for these files.
TEST(Convert, RecipesMatchLlamaQuantize) {
  PENSIEVE_REQUIRE_TESTDATA();
  int checked = 0;
  for (const auto& e : fs::directory_iterator(test::testdata_dir() / "gguf")) {
    const std::string name = e.path().filename().string();
    const std::string type = name.substr(name.rfind('.') + 1);
    const auto recipe = quant_recipe(type);
    if (!recipe || name.rfind("np-", 0) != 0) continue;
    SCOPED_TRACE(name);
    const LoadedModel m = load_model((e.path() / "model.gguf").string());
    for (const auto& [tname, t] : m.weights.tensors()) {
      std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
      EXPECT_EQ(type_name(tensor_type_for(*recipe, tname, ne, m.config.n_layers)), type_name(t.type)) << tname;
      ++checked;
    }
  }
  EXPECT_GT(checked, 200);
}
