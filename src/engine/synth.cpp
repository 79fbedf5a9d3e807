#include "engine/synth.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <thread>

#include "engine/gguf.h"
#include "engine/gguf_export.h"
#include "engine/kernels.h"
#include "engine/model_tensors.h"
#include "util/error.h"

namespace pensieve {

namespace {

ModelConfig base(Arch arch, const char* name, int layers, int dim, int ff, int heads, int kv,
                 int ctx, int vocab) {
  ModelConfig c;
  c.arch = arch;
  c.name = name;
  c.n_layers = layers;
  c.dim = dim;
  c.ff_dim = ff;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.head_dim = heads > 0 ? dim / heads : 0;
  c.ctx_train = ctx;
  c.n_vocab = vocab;
  c.norm_eps = 1e-5f;
  c.rope.n_rot = c.head_dim;
  c.rope.style = arch == Arch::Llama ? RopeStyle::Interleaved : RopeStyle::RotateHalf;
  c.bos_id = 1;
  c.eos_id = 2;
  c.stop_ids = {2};
  return c;
}

// Smooth stand-ins for Phi-3-128k's published LongRoPE factors: close to 1 for the fast (short
// wavelength) frequencies, growing to tens for the slow ones, as the real ones do.
void set_longrope(ModelConfig& c, int original_ctx) {
  const int half = c.rope.n_rot / 2;
  c.rope.scaling = RopeScaling::LongRope;
  c.rope.original_ctx = original_ctx;
  c.rope.short_factor.clear();
  c.rope.long_factor.clear();
  for (int i = 0; i < half; ++i) {
    const double x = double(i) / std::max(1, half - 1);
    c.rope.short_factor.push_back(float(1.0 + 0.1 * x));
    c.rope.long_factor.push_back(float(1.0 + 60.0 * x * x));
  }
  const double s = double(c.ctx_train) / original_ctx;
  c.rope.attn_factor = s <= 1 ? 1.0f : float(std::sqrt(1 + std::log(s) / std::log(double(original_ctx))));
}

// splitmix64: a tiny, fast generator; one stream per (seed, tensor, row) so the weights do not
// depend on how the rows were split across threads.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

// Approximately normal: the sum of four uniform 16-bit draws, centred and scaled to unit variance
// (Irwin-Hall), which costs one 64-bit draw per value.
void fill_normal(uint64_t seed, float stddev, float* dst, int64_t n) {
  SplitMix rng{seed};
  const float scale = stddev * std::sqrt(3.0f) / 65536.0f;  // var of 4 U(0,1) is 1/3
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = rng.next();
    const int64_t sum = int64_t(r & 0xffff) + int64_t((r >> 16) & 0xffff) +
                        int64_t((r >> 32) & 0xffff) + int64_t(r >> 48);
    dst[i] = float(sum - 2 * 65536 + 2) * scale;
  }
}

// Quantizing billions of random values with the careful (scale-searching) quantizers would take
// minutes, so quantized tensors are assembled from a pool of blocks quantized once from the same
// distribution: every block of the file is a random draw from 2^20 values' worth of real blocks,
// which keeps rows distinct and the weights' statistics those of the float draw.
class BlockPool {
 public:
  BlockPool(GgmlType type, uint64_t seed, float stddev) : type_(type) {
    const auto tr = type_traits(type);
    block_bytes_ = tr->block_bytes;
    block_elems_ = tr->block_elems;
    const int64_t n = int64_t(1) << 20;
    std::vector<float> f(static_cast<size_t>(n));
    fill_normal(seed, stddev, f.data(), n);
    blocks_.resize(size_t(n / block_elems_) * block_bytes_);
    const int64_t row = 4096;  // a multiple of every block size
    for (int64_t i = 0; i < n; i += row)
      kernels::quantize_row(type, f.data() + i, blocks_.data() + size_t(i / block_elems_) * block_bytes_, row);
    n_blocks_ = uint64_t(n / block_elems_);
  }
  void fill_rows(uint64_t seed, int64_t r0, int64_t r1, int64_t cols, uint8_t* dst) const {
    const int64_t per_row = cols / block_elems_;
    for (int64_t r = r0; r < r1; ++r) {
      SplitMix rng{seed + uint64_t(r) * 0xd1342543de82ef95ull};
      for (int64_t b = 0; b < per_row; ++b) {
        std::memcpy(dst, blocks_.data() + size_t(rng.next() % n_blocks_) * block_bytes_, block_bytes_);
        dst += block_bytes_;
      }
    }
  }

 private:
  GgmlType type_;
  size_t block_bytes_ = 0;
  int64_t block_elems_ = 1;
  uint64_t n_blocks_ = 0;
  std::vector<uint8_t> blocks_;
};

bool is_float_type(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

}  // namespace

std::vector<std::string> synth_preset_names() {
  return {"phi3-mini", "phi3-mini-128k", "llama3-8b", "qwen2.5-0.5b", "tiny"};
}

ModelConfig synth_preset(const std::string& name) {
  if (name == "phi3-mini" || name == "phi3-mini-128k") {
    const bool long_ctx = name == "phi3-mini-128k";
    ModelConfig c = base(Arch::Phi3, long_ctx ? "Phi-3-mini-128k (synthetic)" : "Phi-3-mini (synthetic)",
                         32, 3072, 8192, 32, 32, long_ctx ? 131072 : 4096, 32064);
    c.sliding_window = long_ctx ? 262144 : 2047;
    c.eos_id = 32000;
    c.stop_ids = {32000, 32007};
    if (long_ctx) set_longrope(c, 4096);
    return c;
  }
  if (name == "llama3-8b") {
    ModelConfig c = base(Arch::Llama, "Llama-3-8B (synthetic)", 32, 4096, 14336, 32, 8, 8192, 128256);
    c.rope.theta = 500000.0f;
    c.bos_id = 128000;
    c.eos_id = 128001;
    c.stop_ids = {128001, 128009};
    return c;
  }
  if (name == "qwen2.5-0.5b") {
    ModelConfig c = base(Arch::Qwen2, "Qwen2.5-0.5B (synthetic)", 24, 896, 4864, 14, 2, 32768, 151936);
    c.rope.theta = 1000000.0f;
    c.norm_eps = 1e-6f;
    c.tied_embeddings = true;
    c.bos_id = -1;
    c.eos_id = 151645;
    c.stop_ids = {151645, 151643};
    return c;
  }
  if (name == "tiny") {
    ModelConfig c = base(Arch::Phi3, "tiny (synthetic)", 2, 64, 128, 4, 4, 4096, 32064);
    c.sliding_window = 2047;
    c.eos_id = 32000;
    c.stop_ids = {32000, 32007};
    return c;
  }
  std::string names;
  for (const auto& n : synth_preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error("unknown preset '" + name + "' (known: " + names + ")");
}

ModelConfig synth_custom(const std::string& arch, int layers, int dim, int ff, int heads,
                         int kv_heads, int ctx) {
  Arch a;
  if (arch == "llama") a = Arch::Llama;
  else if (arch == "phi3") a = Arch::Phi3;
  else if (arch == "qwen2") a = Arch::Qwen2;
  else throw Error("--arch: unknown architecture '" + arch + "' (known: llama, phi3, qwen2)");
  if (heads <= 0 || dim % heads != 0)
    throw Error("--dim " + std::to_string(dim) + " is not a multiple of --heads " + std::to_string(heads));
  ModelConfig c = base(a, "custom (synthetic)", layers, dim, ff, heads, kv_heads > 0 ? kv_heads : heads,
                       ctx, 32064);
  if (a == Arch::Qwen2) c.rope.theta = 1000000.0f;
  return c;
}

ModelConfig write_synthetic_model(const SynthOptions& o, const std::string& out_path) {
  const auto recipe = quant_recipe(o.type);
  if (!recipe) throw Error("--type: unknown type '" + o.type + "' (known: " + quant_recipe_names() + ")");
  ModelConfig c = o.config;
  GgufWriter w(out_path);
  set_model_metadata(w, c, *recipe);  // placeholder values are replaced below once n_vocab is final
  if (!o.vocab_path.empty()) {
    const GgufFile vocab = GgufFile::open(o.vocab_path);
    const GgufValue* tokens = vocab.find("tokenizer.ggml.tokens");
    if (!tokens) throw Error(o.vocab_path + ": no tokenizer.ggml.tokens (not a vocabulary GGUF)");
    c.n_vocab = int(tokens->as_array().items.size());
    c.bos_id = int(vocab.get_int("tokenizer.ggml.bos_token_id", -1));
    c.eos_id = int(vocab.get_int("tokenizer.ggml.eos_token_id", -1));
    c.stop_ids.clear();
    for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
      const int id = int(vocab.get_int(k, -1));
      if (id >= 0 && std::find(c.stop_ids.begin(), c.stop_ids.end(), id) == c.stop_ids.end())
        c.stop_ids.push_back(id);
    }
    for (const auto& [key, value] : vocab.metadata())
      if (key.rfind("tokenizer.", 0) == 0) w.set(key, value);
  }
  check_model_config(c, out_path);
  set_model_metadata(w, c, *recipe);

  std::vector<ExportTensor> tensors;
  const float stddev = 0.02f;
  std::map<GgmlType, std::shared_ptr<const BlockPool>> pools;
  for (const TensorSpec& spec : model_tensor_specs(c)) {
    ExportTensor t;
    t.name = spec.name;
    t.ne = spec.ne;
    t.type = tensor_type_for(*recipe, spec.name, spec.ne, c.n_layers);
    const int64_t cols = spec.ne[0];
    if (spec.name == "rope_factors_long.weight" || spec.name == "rope_factors_short.weight") {
      const auto factors = spec.name == "rope_factors_long.weight" ? c.rope.long_factor : c.rope.short_factor;
      t.fill = [factors](int64_t, int64_t, float* dst) { std::copy(factors.begin(), factors.end(), dst); };
    } else if (spec.is_norm) {
      t.fill = [cols](int64_t r0, int64_t r1, float* dst) { std::fill(dst, dst + (r1 - r0) * cols, 1.0f); };
    } else if (!is_float_type(t.type)) {
      auto& pool = pools[t.type];
      if (!pool) pool = std::make_shared<BlockPool>(t.type, o.seed + uint64_t(t.type), stddev);
      const uint64_t tensor_seed = o.seed * 0x9e3779b97f4a7c15ull ^ hash_name(spec.name);
      t.fill_raw = [pool, tensor_seed, cols](int64_t r0, int64_t r1, uint8_t* dst) {
        pool->fill_rows(tensor_seed, r0, r1, cols, dst);
      };
    } else {
      const uint64_t tensor_seed = o.seed * 0x9e3779b97f4a7c15ull ^ hash_name(spec.name);
      t.fill = [tensor_seed, cols, stddev](int64_t r0, int64_t r1, float* dst) {
        for (int64_t r = r0; r < r1; ++r)
          fill_normal(tensor_seed + uint64_t(r) * 0xd1342543de82ef95ull, stddev,
                      dst + (r - r0) * cols, cols);
      };
    }
    tensors.push_back(std::move(t));
  }
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  write_tensors_streaming(w, tensors, threads);
  return c;
}

}  // namespace pensieve
