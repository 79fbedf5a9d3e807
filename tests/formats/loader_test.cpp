// load_model on every model in testdata: GGUF files, safetensors folders and the MLX folder.
#include "formats/model_loader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/hf_config.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "formats/model_export.h"
#include "formats/mlx.h"
#include "formats/safetensors.h"
#include "reference.h"
#include "testdata.h"
#include "util/error.h"
#include "util/fp16.h"

namespace fs = std::filesystem;
using namespace pensieve;

namespace {

std::string model_dir(const std::string& name) {
  return (test::testdata_dir() / "models" / name).string();
}

float q4_1_value(const Tensor& t, int64_t r, int64_t c) {
  const auto* b = reinterpret_cast<const block_q4_1*>(t.row(r)) + c / QK;
  const int i = int(c % QK);
  const int q = i < 16 ? (b->qs[i] & 0xF) : (b->qs[i - 16] >> 4);
  return f16_to_f32(b->d) * float(q) + f16_to_f32(b->m);
}

bool inside(const void* p, const MappedFile& f) {
  auto* u = static_cast<const uint8_t*>(p);
  return u >= f.data() && u < f.data() + f.size();
}

}  // namespace

TEST(Loader, LlamaFolder) {
  PENSIEVE_REQUIRE_TESTDATA();
  LoadedModel m = load_model(model_dir("tiny-llama-dev"));
  const ModelConfig& c = m.config;
  EXPECT_EQ(m.format, "safetensors");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.name, "tiny-llama-dev");
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_EQ(c.dim, 128);
  EXPECT_EQ(c.n_layers, 3);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.ff_dim, 352);
  EXPECT_EQ(c.ctx_train, 256);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.rope.style, RopeStyle::RotateHalf);
  EXPECT_EQ(c.rope.n_rot, 32);
  EXPECT_EQ(c.rope.scaling, RopeScaling::None);
  EXPECT_FLOAT_EQ(c.rope.theta, 10000.0f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(c.stop_ids, std::vector<int>{2});
  const Tensor& q = m.weights.require("blk.1.attn_k.weight", {128, 64});
  EXPECT_EQ(q.type, GgmlType::F32);
  // Used in place: the bytes are the file's own.
  SafetensorsFile st = SafetensorsFile::open(model_dir("tiny-llama-dev") + "/model.safetensors");
  const SafetensorsTensor* src = st.find("model.layers.1.self_attn.k_proj.weight");
  ASSERT_NE(src, nullptr);
  ASSERT_EQ(src->nbytes, q.nbytes);
  EXPECT_EQ(std::memcmp(src->data, q.data, q.nbytes), 0);
}

TEST(Loader, Phi3LongRopeFolder) {
  PENSIEVE_REQUIRE_TESTDATA();
  LoadedModel m = load_model(model_dir("tiny-phi3-longrope-dev"));
  const ModelConfig& c = m.config;
  EXPECT_EQ(c.arch, Arch::Phi3);
  EXPECT_EQ(c.rope.scaling, RopeScaling::LongRope);
  EXPECT_EQ(c.rope.original_ctx, 16);
  EXPECT_EQ(c.ctx_train, 512);
  ASSERT_EQ(c.rope.short_factor.size(), 16u);
  ASSERT_EQ(c.rope.long_factor.size(), 16u);
  EXPECT_FLOAT_EQ(c.rope.short_factor[0], 1.192f);
  EXPECT_FLOAT_EQ(c.rope.long_factor[15], 4.489f);
  EXPECT_NEAR(c.rope.attn_factor, 1.5f, 1e-6);  // sqrt(1 + ln 32 / ln 16)
  EXPECT_EQ(c.sliding_window, 0);
  m.weights.require("blk.2.attn_qkv.weight", {128, 384});
  m.weights.require("blk.2.ffn_up.weight", {128, 704});
  EXPECT_EQ(m.weights.find("blk.0.ffn_gate.weight"), nullptr);
}

TEST(Loader, Qwen2Folder) {
  PENSIEVE_REQUIRE_TESTDATA();
  LoadedModel m = load_model(model_dir("tiny-qwen2-dev"));
  EXPECT_EQ(m.config.arch, Arch::Qwen2);
  EXPECT_FLOAT_EQ(m.config.rope.theta, 1e6f);
  EXPECT_EQ(m.config.bos_id, -1);
  EXPECT_TRUE(m.config.stop_ids.empty());
  m.weights.require("blk.0.attn_q.bias", {128});
  m.weights.require("blk.0.attn_k.bias", {64});
}

TEST(Loader, MlxFolderRepacksExactly) {
  PENSIEVE_REQUIRE_TESTDATA();
  const std::string dir = model_dir("tiny-phi3-mlx4-dev");
  LoadedModel m = load_model(dir);
  EXPECT_EQ(m.format, "mlx");
  EXPECT_EQ(m.config.arch, Arch::Phi3);
  EXPECT_EQ(m.weights.require("output_norm.weight").type, GgmlType::F16);
  SafetensorsFile st = SafetensorsFile::open(dir + "/model.safetensors");
  for (const char* module : {"model.layers.1.mlp.down_proj", "model.embed_tokens", "lm_head"}) {
    SCOPED_TRACE(module);
    const std::string canonical = *canonical_tensor_name(std::string(module) + ".weight");
    const Tensor& t = m.weights.require(canonical);
    ASSERT_EQ(t.type, GgmlType::Q4_1);
    const SafetensorsTensor* W = st.find(std::string(module) + ".weight");
    const SafetensorsTensor* S = st.find(std::string(module) + ".scales");
    const SafetensorsTensor* B = st.find(std::string(module) + ".biases");
    ASSERT_TRUE(W && S && B);
    const int64_t rows = W->shape[0], cols = W->shape[1] * 8, groups = S->shape[1];
    EXPECT_EQ(t.ne[0], cols);
    EXPECT_EQ(t.ne[1], rows);
    for (int64_t r = 0; r < rows; r += 7)
      for (int64_t col = 0; col < cols; col += 3) {
        uint32_t word;
        uint16_t s, b;
        std::memcpy(&word, W->data + (r * W->shape[1] + col / 8) * 4, 4);
        std::memcpy(&s, S->data + (r * groups + col / 32) * 2, 2);
        std::memcpy(&b, B->data + (r * groups + col / 32) * 2, 2);
        const float q = float((word >> (4 * (col % 8))) & 0xF);
        const float expect = f16_to_f32(s) * q + f16_to_f32(b);
        ASSERT_NEAR(q4_1_value(t, r, col), expect, 1e-6f * (1 + std::fabs(expect)));
      }
  }
}

TEST(Loader, DeferredMlxConversionWritesTheSameWeights) {
  // With defer_conversion the quantized modules are converted on first need (ready), to the bytes
  // the eager load writes; the rest are views as before.
  PENSIEVE_REQUIRE_TESTDATA();
  const std::string dir = model_dir("tiny-phi3-mlx4-dev");
  const LoadedModel eager = load_model(dir), lazy = load_model(dir, true);
  ASSERT_EQ(eager.weights.tensors().size(), lazy.weights.tensors().size());
  int deferred = 0;
  for (const auto& [name, e] : eager.weights.tensors()) {
    SCOPED_TRACE(name);
    const Tensor& l = lazy.weights.require(name);
    EXPECT_EQ(e.fill, nullptr);
    ASSERT_EQ(l.type, e.type);
    ASSERT_EQ(l.nbytes, e.nbytes);
    EXPECT_EQ(l.fill != nullptr, e.type == GgmlType::Q4_1);  // the tiny model's groups are of 32
    deferred += l.fill != nullptr;
    ready(l);
    EXPECT_EQ(std::memcmp(l.data, e.data, e.nbytes), 0);
  }
  EXPECT_GT(deferred, 0);
}

TEST(Loader, MlxEightBitRowIsExact) {
  // 64 inputs, one group of 64: w = s*q + b must survive the int8 shift exactly (to float rounding).
  std::vector<uint32_t> words(16);
  for (int i = 0; i < 16; ++i) words[i] = 0x01020304u * uint32_t(i + 1) ^ 0x80ff00u;
  const uint16_t scale = f32_to_f16(0.0123f), bias = f32_to_f16(-1.5f);
  block_q8_a blocks[2];
  mlx_repack_row(words.data(), &scale, &bias, 64, MlxQuant{64, 8}, blocks);
  for (int e = 0; e < 64; ++e) {
    const uint32_t q = (words[e / 4] >> (8 * (e % 4))) & 0xFF;
    const float expect = f16_to_f32(scale) * float(q) + f16_to_f32(bias);
    const block_q8_a& b = blocks[e / 32];
    EXPECT_NEAR(b.d * float(b.qs[e % 32]) + b.m, expect, 1e-6f) << e;
  }
}

TEST(Loader, EveryGgufFileMatchesItsConfig) {
  PENSIEVE_REQUIRE_TESTDATA();
  int n = 0;
  for (const auto& e : fs::directory_iterator(test::testdata_dir() / "gguf")) {
    const fs::path p = e.path() / "model.gguf";
    if (!fs::exists(p)) continue;
    SCOPED_TRACE(p.string());
    LoadedModel m = load_model(p.string());
    // tiny-llama-dev.F32 came from the tiny-llama-dev folder; the others carry their config.json.
    const bool has_config = fs::exists(e.path() / "config.json");
    ModelConfig ref = read_hf_config(has_config ? e.path().string() : model_dir("tiny-llama-dev"));
    const ModelConfig& c = m.config;
    EXPECT_EQ(m.format, "gguf");
    ASSERT_TRUE(m.gguf.has_value());
    EXPECT_EQ(c.arch, ref.arch);
    EXPECT_EQ(c.n_vocab, ref.n_vocab);
    EXPECT_EQ(c.dim, ref.dim);
    EXPECT_EQ(c.n_layers, ref.n_layers);
    EXPECT_EQ(c.n_heads, ref.n_heads);
    EXPECT_EQ(c.n_kv_heads, ref.n_kv_heads);
    EXPECT_EQ(c.head_dim, ref.head_dim);
    EXPECT_EQ(c.ff_dim, ref.ff_dim);
    EXPECT_EQ(c.ctx_train, ref.ctx_train);
    EXPECT_FLOAT_EQ(c.rope.theta, ref.rope.theta);
    EXPECT_EQ(c.rope.n_rot, ref.rope.n_rot);
    EXPECT_EQ(c.rope.style, c.arch == Arch::Llama ? RopeStyle::Interleaved : RopeStyle::RotateHalf);
    EXPECT_EQ(c.rope.scaling, ref.rope.scaling);
    EXPECT_EQ(c.rope.original_ctx, ref.rope.original_ctx);
    EXPECT_EQ(c.tied_embeddings, ref.tied_embeddings);
    EXPECT_EQ(c.bos_id, 1);
    EXPECT_EQ(c.stop_ids, std::vector<int>{2});
    if (c.arch == Arch::Phi3) {
      EXPECT_EQ(c.sliding_window, 2047);
      EXPECT_EQ(c.rope.short_factor, ref.rope.short_factor);
      EXPECT_EQ(c.rope.long_factor, ref.rope.long_factor);
      EXPECT_NEAR(c.rope.attn_factor, ref.rope.attn_factor, 1e-6);
    }
    ++n;
  }
  EXPECT_EQ(n, 16);
}

TEST(Loader, GgufLlamaIsThePermutedFolder) {
  PENSIEVE_REQUIRE_TESTDATA();
  LoadedModel g = load_model((test::testdata_dir() / "gguf/tiny-llama-dev.F32/model.gguf").string());
  LoadedModel f = load_model(model_dir("tiny-llama-dev"));
  EXPECT_TRUE(inside(g.weights.require("token_embd.weight").data, *g.gguf->mapping()));
  for (const char* name : {"token_embd.weight", "blk.0.attn_v.weight", "blk.2.ffn_down.weight"}) {
    const Tensor& a = g.weights.require(name);
    const Tensor& b = f.weights.require(name);
    ASSERT_EQ(a.nbytes, b.nbytes) << name;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << name;
  }
  // Q/K rows: GGUF row (h, 2i + j) is Hugging Face row (h, j * hd/2 + i).
  const Tensor& gk = g.weights.require("blk.1.attn_k.weight");
  const Tensor& fk = f.weights.require("blk.1.attn_k.weight");
  const int hd = 32;
  for (int64_t r = 0; r < gk.rows(); ++r) {
    const int64_t h = r / hd, i = (r % hd) / 2, j = r % 2;
    const int64_t src = h * hd + j * (hd / 2) + i;
    ASSERT_EQ(std::memcmp(gk.row(r), fk.row(src), gk.row_bytes()), 0) << r;
  }
}

// ---- MLX folders of other bit widths and group sizes, made from the float32 phi3 model ----------

namespace {

struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

void write_safetensors(const fs::path& path, const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  header["__metadata__"] = {{"format", "mlx"}};
  const std::string h = header.dump();  // deliberately unpadded: offsets need not be aligned
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h;
  for (const auto& t : tensors) out << t.bytes;
}

template <typename T>
std::string as_bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Affine-quantizes every 2-D weight the way mlx.nn.quantize does (per group: scale = (max - min)
// / (2^bits - 1), bias = min), packs it, and writes the folder.
fs::path make_mlx_folder(const std::string& name, int bits, int group) {
  const fs::path src = test::testdata_dir() / "models" / "tiny-phi3-longrope-dev";
  const fs::path dir = fs::temp_directory_path() / ("pensieve_loader_test_" + std::to_string(::getpid())) / name;
  fs::create_directories(dir);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src / "config.json"));
  cfg["quantization"] = {{"group_size", group}, {"bits", bits}};
  std::ofstream(dir / "config.json") << cfg.dump();
  SafetensorsFile st = SafetensorsFile::open((src / "model.safetensors").string());
  std::vector<RawTensor> out;
  const uint32_t qmax = (1u << bits) - 1;
  for (const auto& t : st.tensors()) {
    std::vector<float> w(t.elements());
    std::memcpy(w.data(), t.data, t.nbytes);
    const std::string module = t.name.substr(0, t.name.rfind('.'));
    if (t.shape.size() != 2 || t.shape[1] % group != 0) {  // as MLX: such inputs stay float16
      std::vector<uint16_t> h;
      for (float x : w) h.push_back(f32_to_f16(x));
      out.push_back({t.name, "F16", t.shape, as_bytes(h)});
      continue;
    }
    const int64_t rows = t.shape[0], cols = t.shape[1], groups = cols / group;
    std::vector<uint16_t> scales, biases;
    std::vector<uint32_t> packed(size_t(rows * cols * bits / 32), 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const float* x = w.data() + r * cols + g * group;
        const float lo = *std::min_element(x, x + group), hi = *std::max_element(x, x + group);
        const uint16_t s = f32_to_f16((hi - lo) / float(qmax)), b = f32_to_f16(lo);
        scales.push_back(s);
        biases.push_back(b);
        for (int j = 0; j < group; ++j) {
          const float sv = f16_to_f32(s);
          const float qf = sv > 0 ? std::round((x[j] - f16_to_f32(b)) / sv) : 0.0f;
          const uint32_t q = uint32_t(std::clamp(qf, 0.0f, float(qmax)));
          const int64_t e = r * cols + g * group + j;
          packed[size_t(e * bits / 32)] |= q << (bits * (e % (32 / bits)));
        }
      }
    out.push_back({module + ".weight", "U32", {rows, cols * bits / 32}, as_bytes(packed)});
    out.push_back({module + ".scales", "F16", {rows, groups}, as_bytes(scales)});
    out.push_back({module + ".biases", "F16", {rows, groups}, as_bytes(biases)});
  }
  write_safetensors(dir / "model.safetensors", out);
  return dir;
}

}  // namespace

TEST(Loader, MlxFoldersOfOtherWidthsAndGroups) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path ref_dir = test::testdata_dir() / "models" / "tiny-phi3-longrope-dev";
  const LoadedModel f32 = load_model(ref_dir.string());
  struct Case { int bits, group; GgmlType type; double max_weight_err; };
  for (const Case c : {Case{4, 64, GgmlType::Q4_A, 0.12}, Case{4, 128, GgmlType::Q4_A, 0.14},
                       Case{4, 32, GgmlType::Q4_1, 0.12}, Case{8, 32, GgmlType::Q8_A, 8e-3},
                       Case{8, 128, GgmlType::Q8_A, 8e-3}}) {
    SCOPED_TRACE(std::to_string(c.bits) + "-bit, group " + std::to_string(c.group));
    const fs::path dir = make_mlx_folder("mlx" + std::to_string(c.bits) + "_" + std::to_string(c.group), c.bits, c.group);
    const LoadedModel m = load_model(dir.string());
    EXPECT_EQ(m.format, "mlx");
    // Exact repack: every weight is scale * q + bias of its file, and close to the float original.
    SafetensorsFile st = SafetensorsFile::open((dir / "model.safetensors").string());
    // down_proj (352 inputs) is a whole number of groups only for group 32.
    EXPECT_EQ(m.weights.require("blk.1.ffn_down.weight").type, c.group == 32 ? c.type : GgmlType::F16);
    for (const char* module : {"model.layers.0.self_attn.qkv_proj", "model.layers.2.mlp.gate_up_proj", "lm_head"}) {
      const Tensor& t = m.weights.require(*canonical_tensor_name(std::string(module) + ".weight"));
      ASSERT_EQ(t.type, c.type) << module;
      const SafetensorsTensor* W = st.find(std::string(module) + ".weight");
      const SafetensorsTensor* S = st.find(std::string(module) + ".scales");
      const SafetensorsTensor* B = st.find(std::string(module) + ".biases");
      const Tensor& orig = f32.weights.require(t.name);
      std::vector<float> row(size_t(t.cols())), o(size_t(t.cols()));
      double err = 0, norm = 0;
      for (int64_t r = 0; r < t.rows(); ++r) {
        kernels::dequantize_row(t.type, t.row(r), row.data(), t.cols());
        kernels::dequantize_row(orig.type, orig.row(r), o.data(), t.cols());
        for (int64_t col = 0; col < t.cols(); ++col) {
          const int64_t e = r * t.cols() + col, g = r * S->shape[1] + col / c.group;
          uint32_t word;
          uint16_t s, b;
          std::memcpy(&word, W->data + (e * c.bits / 32) * 4, 4);
          std::memcpy(&s, S->data + g * 2, 2);
          std::memcpy(&b, B->data + g * 2, 2);
          const uint32_t q = (word >> (c.bits * (e % (32 / c.bits)))) & ((1u << c.bits) - 1);
          const float want = f16_to_f32(s) * float(q) + f16_to_f32(b);
          ASSERT_NEAR(row[size_t(col)], want, 2e-6f * (1 + std::fabs(want))) << module << " " << r << "," << col;
          err += (row[size_t(col)] - o[size_t(col)]) * double(row[size_t(col)] - o[size_t(col)]);
          norm += double(o[size_t(col)]) * o[size_t(col)];
        }
      }
      EXPECT_LE(std::sqrt(err / norm), c.max_weight_err) << module;
    }
  }
}

// An 8-bit MLX folder computes the float model's logits up to its 8-bit weight rounding: measured
// relative L2 1.9e-2 (len7) and 4.0e-2 with 2/40 argmax flips at near-ties (len40), the same as a
// Q8_0 conversion of this random model (see convert_test.cpp for why it amplifies weight noise).
TEST(Loader, MlxEightBitFolderComputesTheFloatModel) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path ref_dir = test::testdata_dir() / "models" / "tiny-phi3-longrope-dev";
  const auto model = Model::load(make_mlx_folder("mlx8_64_forward", 8, 64).string());
  ThreadPool pool(2);
  for (const auto& ref : test::read_references(ref_dir)) {
    SCOPED_TRACE(ref.name);
    SequenceState st(model->config(), int(ref.input_ids.size()), KvType::F32);
    st.exact_activations = true;
    std::vector<float> logits;
    model->forward(st, ref.input_ids, true, logits, pool);
    const auto c = test::compare_logits(logits, ref.logits, size_t(model->config().n_vocab));
    std::printf("[ mlx 8-bit g64 %s ] relative L2 %.3g, argmax mismatches %d/%d\n", ref.name.c_str(),
                c.rel_l2, c.argmax_mismatches, c.positions);
    EXPECT_LE(c.rel_l2, 6e-2);
    EXPECT_LE(c.argmax_mismatches * 100, c.positions * 15);
  }
}

// ---- config.json variants, sharded folders, Llama 3 rope through conversion ---------------------

TEST(HfConfig, RopeVariantsAndTokenIds) {
  using nlohmann::json;
  const json base = {{"model_type", "llama"}, {"hidden_size", 256}, {"num_hidden_layers", 2},
                     {"num_attention_heads", 4}, {"intermediate_size", 512}, {"vocab_size", 1000},
                     {"max_position_embeddings", 131072}, {"rope_theta", 500000.0}};
  json llama3 = base;
  llama3["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  llama3["eos_token_id"] = {128001, 128008, 128009};
  const json gen = {{"eos_token_id", {128001, 128009, 7}}, {"bos_token_id", 128000}};
  ModelConfig c = parse_hf_config(llama3, &gen, "cfg");
  EXPECT_EQ(c.rope.scaling, RopeScaling::Llama3);
  EXPECT_FLOAT_EQ(c.rope.factor, 8.0f);
  EXPECT_EQ(c.rope.original_ctx, 8192);
  EXPECT_FLOAT_EQ(c.rope.theta, 500000.0f);
  EXPECT_EQ(c.bos_id, 128000);
  EXPECT_EQ(c.eos_id, 128001);
  EXPECT_EQ(c.stop_ids, (std::vector<int>{128001, 128008, 128009, 7}));
  EXPECT_EQ(c.n_kv_heads, 4);   // defaults to the head count
  EXPECT_EQ(c.head_dim, 64);

  json su = base;  // older Phi-3 checkpoints: "su" under rope_scaling, partial rotary at top level
  su["model_type"] = "phi3";
  su["original_max_position_embeddings"] = 4096;
  su["partial_rotary_factor"] = 0.5;
  su["rope_scaling"] = {{"type", "su"}, {"short_factor", std::vector<double>(16, 1.0)},
                        {"long_factor", std::vector<double>(16, 2.0)}};
  c = parse_hf_config(su, nullptr, "cfg");
  EXPECT_EQ(c.rope.scaling, RopeScaling::LongRope);
  EXPECT_EQ(c.rope.n_rot, 32);
  EXPECT_EQ(c.rope.original_ctx, 4096);
  EXPECT_NEAR(c.rope.attn_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)), 1e-6);

  json linear = base;
  linear["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
  linear["head_dim"] = 128;
  linear["num_key_value_heads"] = 2;
  c = parse_hf_config(linear, nullptr, "cfg");
  EXPECT_EQ(c.rope.scaling, RopeScaling::Linear);
  EXPECT_FLOAT_EQ(c.rope.factor, 4.0f);
  EXPECT_FLOAT_EQ(c.rope.theta, 10000.0f);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope.n_rot, 128);

  json qwen = base;
  qwen["model_type"] = "qwen2";
  qwen["sliding_window"] = 4096;
  qwen["use_sliding_window"] = false;
  EXPECT_EQ(parse_hf_config(qwen, nullptr, "cfg").sliding_window, 0);
  json bad = base;
  bad["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_THROW(parse_hf_config(bad, nullptr, "cfg"), Error);
  bad = base;
  bad.erase("hidden_size");
  EXPECT_THROW(parse_hf_config(bad, nullptr, "cfg"), Error);

  EXPECT_EQ(canonical_tensor_name("model.layers.12.mlp.gate_up_proj.weight"), "blk.12.ffn_up.weight");
  EXPECT_EQ(canonical_tensor_name("model.layers.3.self_attn.rotary_emb.inv_freq"), std::nullopt);
  EXPECT_EQ(canonical_tensor_name("model.layers.x.mlp.up_proj.weight"), std::nullopt);
}

TEST(Loader, ShardedFolderEqualsTheSingleFile) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path src = test::testdata_dir() / "models" / "tiny-qwen2-dev";
  const fs::path dir = fs::temp_directory_path() / ("pensieve_loader_test_" + std::to_string(::getpid())) / "sharded";
  fs::create_directories(dir);
  fs::copy_file(src / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  SafetensorsFile st = SafetensorsFile::open((src / "model.safetensors").string());
  std::vector<RawTensor> shard[2];
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (size_t i = 0; i < st.tensors().size(); ++i) {
    const auto& t = st.tensors()[i];
    shard[i % 2].push_back({t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
    index["weight_map"][t.name] = "model-0000" + std::to_string(i % 2 + 1) + "-of-00002.safetensors";
  }
  write_safetensors(dir / "model-00001-of-00002.safetensors", shard[0]);
  write_safetensors(dir / "model-00002-of-00002.safetensors", shard[1]);
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  const LoadedModel a = load_model(src.string()), b = load_model(dir.string());
  ASSERT_EQ(a.weights.tensors().size(), b.weights.tensors().size());
  for (const auto& [name, t] : a.weights.tensors()) {
    const Tensor& u = b.weights.require(name);
    ASSERT_EQ(u.shape_string(), t.shape_string()) << name;
    EXPECT_EQ(std::memcmp(u.data, t.data, t.nbytes), 0) << name;
  }
  // A shard named by the index but missing is an error naming it.
  fs::remove(dir / "model-00002-of-00002.safetensors");
  try {
    load_model(dir.string());
    ADD_FAILURE() << "loaded without its second shard";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors"), std::string::npos) << e.what();
  }
}

// Llama 3 rope scaling in config.json becomes rope_freqs.weight in GGUF (as llama.cpp writes it);
// both compute the same logits.
TEST(Loader, Llama3RopeSurvivesConversion) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path src = test::testdata_dir() / "models" / "tiny-llama-dev";
  const fs::path dir = fs::temp_directory_path() / ("pensieve_loader_test_" + std::to_string(::getpid())) / "llama3";
  fs::create_directories(dir);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src / "config.json"));
  cfg["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 10000.0}, {"factor", 8.0},
                            {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 16}};
  std::ofstream(dir / "config.json") << cfg.dump();
  if (!fs::exists(dir / "model.safetensors")) fs::create_symlink(src / "model.safetensors", dir / "model.safetensors");
  const fs::path gguf = dir.parent_path() / "llama3.gguf";
  const LoadedModel folder = load_model(dir.string());
  ASSERT_EQ(folder.config.rope.scaling, RopeScaling::Llama3);
  write_model_gguf(folder, *quant_recipe("f32"), gguf.string(), {}, 1);
  const auto a = Model::load(dir.string());
  const auto b = Model::load(gguf.string());
  ASSERT_NE(b->files().weights.find("rope_freqs.weight"), nullptr);
  ThreadPool pool(2);
  const std::vector<int32_t> ids = {5, 17, 300, 42, 9, 101, 77, 250, 3, 64, 128, 200, 11, 400, 8, 90,
                                    33, 7, 150, 260};
  std::vector<float> la, lb;
  SequenceState sa(a->config(), int(ids.size()), KvType::F32), sb(b->config(), int(ids.size()), KvType::F32);
  sa.exact_activations = sb.exact_activations = true;
  a->forward(sa, ids, true, la, pool);
  b->forward(sb, ids, true, lb, pool);
  const auto c = test::compare_logits(lb, la, size_t(a->config().n_vocab));
  EXPECT_LE(c.rel_l2, 1e-5);
  EXPECT_EQ(c.argmax_mismatches, 0);
  // And the scaling matters at these positions: without it the logits differ.
  cfg["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  std::ofstream(dir / "config.json") << cfg.dump();
  const auto plain = Model::load(dir.string());
  SequenceState sp(plain->config(), int(ids.size()), KvType::F32);
  sp.exact_activations = true;
  std::vector<float> lp;
  plain->forward(sp, ids, true, lp, pool);
  EXPECT_GT(test::compare_logits(lp, la, size_t(a->config().n_vocab)).rel_l2, 1e-3);
}
