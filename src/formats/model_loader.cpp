// load_model: a .gguf file, a Hugging Face safetensors folder, or an MLX folder, to a ModelConfig
// and weights under canonical names, checked against the architecture's tensor table.
#include "formats/model_loader.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "formats/hf_config.h"
#include "formats/mlx.h"
#include "formats/model_tensors.h"
#include "formats/safetensors.h"
#include "util/error.h"

namespace pensieve {

namespace fs = std::filesystem;

namespace {

int require_meta_int(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  if (!v) throw Error(g.path() + ": missing metadata key '" + key + "'");
  const int64_t x = g.get_int(key, 0);
  if (x < 0 || x > INT32_MAX)
    throw Error(g.path() + ": metadata key '" + key + "' is out of range: " + std::to_string(x));
  return int(x);
}

int meta_int(const GgufFile& g, const std::string& key, int def) {
  if (!g.find(key)) return def;
  return require_meta_int(g, key);
}

std::vector<float> factors_tensor(const GgufFile& g, const Tensor& t) {
  if (t.type != GgmlType::F32 || t.n_dims != 1)
    throw Error(g.path() + ": tensor '" + t.name + "' must be a 1-D F32 tensor, is " +
                std::string(type_name(t.type)) + " " + t.shape_string());
  std::vector<float> out(size_t(t.ne[0]));
  std::memcpy(out.data(), t.data, out.size() * sizeof(float));
  return out;
}

void read_gguf_rope(const GgufFile& g, const std::string& a, ModelConfig& c) {
  RopeConfig& r = c.rope;
  r.theta = float(g.get_float(a + "rope.freq_base", 10000.0));
  r.n_rot = meta_int(g, a + "rope.dimension_count", c.head_dim);
  r.style = c.arch == Arch::Llama ? RopeStyle::Interleaved : RopeStyle::RotateHalf;
  const std::string type = g.get_string(a + "rope.scaling.type", "none");
  r.original_ctx = meta_int(g, a + "rope.scaling.original_context_length", 0);
  if (type == "linear") {
    r.scaling = RopeScaling::Linear;
    r.factor = float(g.get_float(a + "rope.scaling.factor", 1.0));
  } else if (type != "none") {
    throw Error(g.path() + ": unsupported rope scaling type '" + type + "' (" + a +
                "rope.scaling.type; supported: none, linear)");
  }
  const Tensor* lf = g.find_tensor("rope_factors_long.weight");
  const Tensor* sf = g.find_tensor("rope_factors_short.weight");
  const Tensor* freqs = g.find_tensor("rope_freqs.weight");
  if (lf || sf) {  // phi3 LongRoPE
    if (!lf || !sf)
      throw Error(g.path() + ": LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight");
    r.scaling = RopeScaling::LongRope;
    r.long_factor = factors_tensor(g, *lf);
    r.short_factor = factors_tensor(g, *sf);
    if (r.original_ctx <= 0)
      throw Error(g.path() + ": LongRoPE needs " + a + "rope.scaling.original_context_length");
    if (g.find(a + "rope.scaling.attn_factor")) {
      r.attn_factor = float(g.get_float(a + "rope.scaling.attn_factor", 1.0));
    } else {
      const double s = double(c.ctx_train) / r.original_ctx;
      r.attn_factor = s <= 1 ? 1.0f : float(std::sqrt(1 + std::log(s) / std::log(double(r.original_ctx))));
    }
  } else if (freqs) {
    // Llama 3.1-style files carry the per-frequency divisors precomputed; they act like LongRoPE
    // factors that are the same at every length.
    r.scaling = RopeScaling::LongRope;
    r.long_factor = r.short_factor = factors_tensor(g, *freqs);
    r.original_ctx = c.ctx_train;
    r.attn_factor = 1.0f;
  }
}

ModelConfig read_gguf_config(const GgufFile& g) {
  ModelConfig c;
  const std::string arch = g.get_string("general.architecture");
  if (arch == "llama") c.arch = Arch::Llama;
  else if (arch == "phi3") c.arch = Arch::Phi3;
  else if (arch == "qwen2") c.arch = Arch::Qwen2;
  else
    throw Error(g.path() + ": unsupported architecture '" + arch +
                "' (general.architecture; supported: llama, phi3, qwen2)");
  const std::string a = arch + ".";
  c.name = g.get_string("general.name", fs::path(g.path()).stem().string());
  c.ctx_train = require_meta_int(g, a + "context_length");
  c.dim = require_meta_int(g, a + "embedding_length");
  c.n_layers = require_meta_int(g, a + "block_count");
  c.ff_dim = require_meta_int(g, a + "feed_forward_length");
  c.n_heads = require_meta_int(g, a + "attention.head_count");
  c.n_kv_heads = meta_int(g, a + "attention.head_count_kv", c.n_heads);
  if (c.n_heads <= 0) throw Error(g.path() + ": " + a + "attention.head_count must be positive");
  c.head_dim = meta_int(g, a + "attention.key_length", c.dim / c.n_heads);
  c.norm_eps = float(g.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
  c.sliding_window = meta_int(g, a + "attention.sliding_window", 0);
  read_gguf_rope(g, a, c);

  const Tensor* emb = g.find_tensor("token_embd.weight");
  if (!emb) throw Error(g.path() + ": missing tensor 'token_embd.weight'");
  if (emb->ne[1] > INT32_MAX) throw Error(g.path() + ": token_embd.weight has too many rows");
  c.n_vocab = int(emb->ne[1]);
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;

  c.bos_id = int(g.get_int("tokenizer.ggml.bos_token_id", -1));
  c.eos_id = int(g.get_int("tokenizer.ggml.eos_token_id", -1));
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                        "tokenizer.ggml.eom_token_id"}) {
    const int id = int(g.get_int(k, -1));
    if (id >= 0 && std::find(c.stop_ids.begin(), c.stop_ids.end(), id) == c.stop_ids.end())
      c.stop_ids.push_back(id);
  }
  return c;
}

LoadedModel load_gguf(const std::string& path) {
  GgufFile g = GgufFile::open(path);
  LoadedModel m;
  m.format = "gguf";
  m.path = path;
  m.config = read_gguf_config(g);
  m.weights = WeightStore(path);
  m.weights.keep_alive(g.mapping());
  for (const Tensor& t : g.tensors()) {
    if (t.type == GgmlType::Q8_1 || t.type == GgmlType::Q8_K)
      throw Error(path + ": tensor '" + t.name + "' has type " + std::string(type_name(t.type)) +
                  ", which is not a weight type");
    // A file with a small general.alignment can leave data at an odd address; kernels read
    // floats and halves directly, so such a tensor is copied to an aligned buffer.
    const size_t need = t.type == GgmlType::F32 ? 4 : 2;
    if (reinterpret_cast<uintptr_t>(t.data) % need != 0) {
      std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
      std::memcpy(m.weights.add_owned(t.name, t.type, ne), t.data, t.nbytes);
      continue;
    }
    m.weights.add(t);
  }
  m.gguf = std::move(g);
  return m;
}

LoadedModel load_folder(const std::string& dir, bool defer) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  if (!fs::exists(cfg_path))
    throw Error(dir + ": not a model folder (no config.json) and not a .gguf file");
  const nlohmann::json cfg = read_json_file(cfg_path.string());
  LoadedModel m;
  m.path = dir;
  m.dir = dir;
  m.config = read_hf_config(dir);
  m.weights = WeightStore(dir);
  const auto files = open_safetensors_folder(dir);
  if (cfg.contains("quantization") && !cfg["quantization"].is_null()) {
    m.format = "mlx";
    load_mlx_weights(files, cfg["quantization"], cfg_path.string(), m.weights, defer);
  } else {
    m.format = "safetensors";
    for (const auto& f : files)
      for (const auto& t : f.tensors())
        if (auto canonical = canonical_tensor_name(t.name))
          add_safetensors_weight(f, t, *canonical, m.weights);
  }
  // transformers ties the output projection to the embeddings unless told otherwise; a folder
  // without lm_head and without an explicit "tie_word_embeddings": false is tied.
  if (!m.weights.find("output.weight") &&
      !(cfg.contains("tie_word_embeddings") && cfg["tie_word_embeddings"] == false))
    m.config.tied_embeddings = true;
  return m;
}

}  // namespace

LoadedModel load_model(const std::string& path, bool defer_conversion) {
  if (!fs::exists(path)) throw Error(path + ": no such file or folder");
  LoadedModel m = fs::is_directory(path) ? load_folder(path, defer_conversion) : load_gguf(path);
  check_model_config(m.config, path);
  check_model_tensors(m.config, m.weights);
  return m;
}

}  // namespace pensieve
