#include "formats/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "formats/gguf.h"
#include "formats/gguf_export.h"
#include "formats/hf_config.h"
#include "kernels/kernels.h"
#include "formats/model_tensors.h"
#include "util/error.h"
#include "util/fp16.h"

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

// MLX groups of a float draw, quantized as mlx.nn.quantize does (scale = (max - min) / (2^bits - 1),
// bias = min, q = round((w - bias) / scale)); like BlockPool, rows are random draws of pool groups.
class MlxGroupPool {
 public:
  MlxGroupPool(const SynthMlx& q, uint64_t seed, float stddev) : q_(q), words_(q.group_size * q.bits / 32) {
    const int64_t n = int64_t(1) << 20;
    std::vector<float> f(static_cast<size_t>(n));
    fill_normal(seed, stddev, f.data(), n);
    n_groups_ = uint64_t(n / q.group_size);
    packed_.assign(size_t(n_groups_) * size_t(words_), 0);
    scales_.resize(size_t(n_groups_));
    biases_.resize(size_t(n_groups_));
    const uint32_t qmax = (1u << q.bits) - 1;
    for (uint64_t g = 0; g < n_groups_; ++g) {
      const float* x = f.data() + g * uint64_t(q.group_size);
      const float lo = *std::min_element(x, x + q.group_size), hi = *std::max_element(x, x + q.group_size);
      scales_[g] = f32_to_f16((hi - lo) / float(qmax));
      biases_[g] = f32_to_f16(lo);
      const float s = f16_to_f32(scales_[g]), b = f16_to_f32(biases_[g]);
      uint32_t* w = packed_.data() + g * uint64_t(words_);
      for (int j = 0; j < q.group_size; ++j) {
        const float v = s > 0 ? std::nearbyint((x[j] - b) / s) : 0.0f;
        const uint32_t level = uint32_t(std::clamp(v, 0.0f, float(qmax)));
        w[j * q.bits / 32] |= level << (q.bits * (j % (32 / q.bits)));
      }
    }
  }
  // Rows [r0, r1) of a matrix of `cols` inputs into its weight words, scales and biases.
  void fill_rows(uint64_t seed, int64_t r0, int64_t r1, int64_t cols, uint32_t* words, uint16_t* scales,
                 uint16_t* biases) const {
    const int64_t groups = cols / q_.group_size;
    for (int64_t r = r0; r < r1; ++r) {
      SplitMix rng{seed + uint64_t(r) * 0xd1342543de82ef95ull};
      for (int64_t g = 0; g < groups; ++g) {
        const uint64_t k = rng.next() % n_groups_;
        std::memcpy(words + (r * groups + g) * words_, packed_.data() + k * uint64_t(words_), size_t(words_) * 4);
        scales[r * groups + g] = scales_[k];
        biases[r * groups + g] = biases_[k];
      }
    }
  }

 private:
  SynthMlx q_;
  int64_t words_;  // uint32 words per group
  uint64_t n_groups_ = 0;
  std::vector<uint32_t> packed_;
  std::vector<uint16_t> scales_, biases_;
};

// Runs fn(r0, r1) over [0, rows) split across `threads` threads.
template <class Fn>
void parallel_rows(int64_t rows, int threads, Fn fn) {
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, rows / 16));
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < n; ++k) pool.emplace_back(fn, rows * k / n, rows * (k + 1) / n);
  fn(int64_t(0), rows / n);
  for (auto& t : pool) t.join();
}

// The Hugging Face tokenizer files named by --vocab, copied into `dir`.
void copy_hf_tokenizer(const std::string& vocab, const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::path src = vocab;
  if (src.extension() == ".gguf")
    throw Error(vocab + ": an MLX folder takes a Hugging Face tokenizer (tokenizer.json or its folder), "
                        "not a GGUF vocabulary");
  if (!fs::is_directory(src)) src = src.parent_path();
  if (!fs::exists(src / "tokenizer.json")) throw Error(vocab + ": no tokenizer.json there");
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(src / name)) fs::copy_file(src / name, dir / name, fs::copy_options::overwrite_existing);
}

}  // namespace

ModelConfig write_synthetic_mlx_folder(const SynthOptions& o, const SynthMlx& q, const std::string& out_dir) {
  namespace fs = std::filesystem;
  if (q.bits != 4 && q.bits != 8) throw Error("--bits: MLX synth writes 4 or 8 bits, not " + std::to_string(q.bits));
  if (q.group_size <= 0 || q.group_size % 32 != 0)
    throw Error("--group-size: " + std::to_string(q.group_size) + " is not a multiple of 32");
  const ModelConfig c = o.config;
  check_model_config(c, out_dir);
  fs::create_directories(out_dir);
  const fs::path dir(out_dir);
  if (!o.vocab_path.empty()) copy_hf_tokenizer(o.vocab_path, dir);
  nlohmann::json cfg = hf_config_json(c);
  cfg["quantization"] = {{"group_size", q.group_size}, {"bits", q.bits}};
  cfg["torch_dtype"] = "float16";
  {
    std::ofstream out(dir / "config.json");
    out << cfg.dump(2) << "\n";
    if (!out) throw Error((dir / "config.json").string() + ": write failed");
  }

  // The tensors in file order: what each is and how many bytes it takes.
  struct Entry {
    std::string name, dtype;
    std::vector<int64_t> shape;  // safetensors order (rows first)
    size_t bytes;
    std::function<void(uint8_t*)> fill;
  };
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  const float stddev = 0.02f;
  auto pool = std::make_shared<MlxGroupPool>(q, o.seed + 77, stddev);
  std::vector<Entry> entries;
  for (const TensorSpec& spec : model_tensor_specs(c)) {
    if (spec.optional) continue;  // rope factors live in config.json; llama has no biases
    const auto hf = hf_tensor_name(spec.name, c.arch);
    if (!hf) throw Error("synth: tensor '" + spec.name + "' has no Hugging Face name");
    const uint64_t seed = o.seed * 0x9e3779b97f4a7c15ull ^ hash_name(spec.name);
    const int64_t cols = spec.ne[0], rows = spec.ne.size() > 1 ? spec.ne[1] : 1;
    if (spec.ne.size() == 2 && cols % q.group_size == 0) {
      const std::string module = hf->substr(0, hf->rfind('.'));
      const int64_t wpr = cols * q.bits / 32, groups = cols / q.group_size;
      // The three parts are filled together (one draw per group); the words' fill writes all three.
      auto scales = std::make_shared<std::vector<uint16_t>>(), biases = std::make_shared<std::vector<uint16_t>>();
      entries.push_back({*hf, "U32", {rows, wpr}, size_t(rows * wpr) * 4,
                         [=](uint8_t* dst) {
                           scales->resize(size_t(rows * groups));
                           biases->resize(size_t(rows * groups));
                           parallel_rows(rows, threads, [&](int64_t r0, int64_t r1) {
                             pool->fill_rows(seed, r0, r1, cols, reinterpret_cast<uint32_t*>(dst),
                                             scales->data(), biases->data());
                           });
                         }});
      entries.push_back({module + ".scales", "F16", {rows, groups}, size_t(rows * groups) * 2,
                         [=](uint8_t* dst) { std::memcpy(dst, scales->data(), scales->size() * 2); }});
      entries.push_back({module + ".biases", "F16", {rows, groups}, size_t(rows * groups) * 2,
                         [=](uint8_t* dst) {
                           std::memcpy(dst, biases->data(), biases->size() * 2);
                           scales->clear(), scales->shrink_to_fit(), biases->clear(), biases->shrink_to_fit();
                         }});
      continue;
    }
    std::vector<int64_t> shape = spec.ne.size() == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
    const bool norm = spec.is_norm;
    entries.push_back({*hf, "F16", shape, size_t(rows * cols) * 2, [=](uint8_t* dst) {
                         auto* h = reinterpret_cast<uint16_t*>(dst);
                         parallel_rows(rows, threads, [&](int64_t r0, int64_t r1) {
                           std::vector<float> f(static_cast<size_t>(cols));
                           for (int64_t r = r0; r < r1; ++r) {
                             if (norm) std::fill(f.begin(), f.end(), 1.0f);
                             else fill_normal(seed + uint64_t(r) * 0xd1342543de82ef95ull, stddev, f.data(), cols);
                             for (int64_t i = 0; i < cols; ++i) h[r * cols + i] = f32_to_f16(f[size_t(i)]);
                           }
                         });
                       }});
  }

  nlohmann::json header = {{"__metadata__", {{"format", "mlx"}}}};
  size_t offset = 0;
  for (const Entry& e : entries) {
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes}}};
    offset += e.bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const fs::path path = dir / "model.safetensors";
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), std::streamsize(h.size()));
  std::vector<uint8_t> buf;
  for (const Entry& e : entries) {
    buf.resize(e.bytes);
    e.fill(buf.data());
    out.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
  }
  out.close();
  if (!out) throw Error(path.string() + ": write failed");
  return c;
}

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
