#include "formats/gguf_export.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <exception>
#include <thread>

#include "kernels/kernels.h"
#include "util/error.h"

namespace pensieve {

namespace {
struct RecipeRow {
  const char* name;
  GgmlType base;
  int ftype;
  bool k_mix;
};
// general.file_type values are llama.cpp's LLAMA_FTYPE_* numbers.
constexpr RecipeRow kRecipes[] = {
    {"f32", GgmlType::F32, 0, false},    {"f16", GgmlType::F16, 1, false},
    {"bf16", GgmlType::BF16, 32, false}, {"q8_0", GgmlType::Q8_0, 7, false},
    {"q4_0", GgmlType::Q4_0, 2, false},  {"q4_1", GgmlType::Q4_1, 3, false},
    {"q5_0", GgmlType::Q5_0, 8, false},  {"q5_1", GgmlType::Q5_1, 9, false},
    {"q2_k", GgmlType::Q2_K, 10, false}, {"q3_k", GgmlType::Q3_K, 12, false},
    {"q4_k", GgmlType::Q4_K, 14, false}, {"q5_k", GgmlType::Q5_K, 16, false},
    {"q6_k", GgmlType::Q6_K, 18, false}, {"q4_k_m", GgmlType::Q4_K, 15, true},
    {"q5_k_m", GgmlType::Q5_K, 17, true},
};

bool is_quantized(GgmlType t) {
  return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16;
}

// llama.cpp's choice of layers that get more bits in the K mixes: the first and last eighth and
// every third layer between.
bool use_more_bits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t end = name.find('.', 4);
  try {
    return std::stoi(name.substr(4, end - 4));
  } catch (const std::exception&) {
    return -1;
  }
}

bool has(const std::string& name, const char* part) { return name.find(part) != std::string::npos; }

GgmlType fallback_32(GgmlType t) {
  switch (t) {
    case GgmlType::Q2_K: case GgmlType::Q3_K: return GgmlType::Q4_0;
    case GgmlType::Q4_K: return GgmlType::Q5_0;
    case GgmlType::Q5_K: return GgmlType::Q5_1;
    case GgmlType::Q6_K: return GgmlType::Q8_0;
    default: return t;
  }
}
}  // namespace

std::optional<QuantRecipe> quant_recipe(std::string_view name) {
  std::string lower(name);
  for (auto& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  for (const auto& r : kRecipes)
    if (lower == r.name) return QuantRecipe{r.name, r.base, r.ftype, r.k_mix};
  return std::nullopt;
}

std::string quant_recipe_names() {
  std::string s;
  for (const auto& r : kRecipes) s += (s.empty() ? "" : ", ") + std::string(r.name);
  return s;
}

GgmlType tensor_type_for(const QuantRecipe& r, const std::string& name,
                         const std::vector<int64_t>& ne, int n_layers) {
  if (ne.size() < 2) return GgmlType::F32;
  GgmlType t = r.base;
  if (is_quantized(r.base)) {
    const int layer = layer_of(name);
    if (name == "output.weight") {
      if (r.base != GgmlType::Q8_0) t = GgmlType::Q6_K;
    } else if (r.k_mix && has(name, "attn_v.weight") && use_more_bits(layer, n_layers)) {
      t = GgmlType::Q6_K;
    } else if (r.k_mix && has(name, "ffn_down.weight") && use_more_bits(layer, n_layers)) {
      t = GgmlType::Q6_K;
    } else if (r.k_mix && has(name, "attn_qkv.weight")) {
      t = r.base == GgmlType::Q4_K ? GgmlType::Q5_K : GgmlType::Q6_K;
    }
  }
  const auto tr = type_traits(t);
  if (ne[0] % tr->block_elems != 0) t = fallback_32(t);
  if (ne[0] % type_traits(t)->block_elems != 0) t = GgmlType::F16;
  return t;
}

std::vector<float> llama3_rope_freqs(const RopeConfig& rope) {
  std::vector<float> out;
  const double pi = 3.14159265358979323846;
  const double low_wavelen = rope.original_ctx / rope.low_freq_factor;
  const double high_wavelen = rope.original_ctx / rope.high_freq_factor;
  for (int i = 0; i < rope.n_rot / 2; ++i) {
    const double freq = std::pow(double(rope.theta), -2.0 * i / rope.n_rot);
    const double wavelen = 2 * pi / freq;
    double divisor = 1.0;
    if (wavelen > low_wavelen) {
      divisor = rope.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (rope.original_ctx / wavelen - rope.low_freq_factor) /
                            (rope.high_freq_factor - rope.low_freq_factor);
      divisor = 1.0 / ((1 - smooth) / rope.factor + smooth);
    }
    out.push_back(float(divisor));
  }
  return out;
}

void set_model_metadata(GgufWriter& w, const ModelConfig& c, const QuantRecipe& r) {
  const std::string a = std::string(arch_name(c.arch)) + ".";
  auto u32 = [](int64_t v) { return GgufValue::of(uint64_t(v), GgufType::UINT32); };
  auto f32 = [](double v) { return GgufValue::of(v, GgufType::FLOAT32); };
  w.set("general.architecture", GgufValue::of(std::string(arch_name(c.arch))));
  w.set("general.name", GgufValue::of(c.name));
  w.set("general.file_type", u32(r.llama_ftype));
  if (is_quantized(r.base)) w.set("general.quantization_version", u32(2));
  w.set(a + "context_length", u32(c.ctx_train));
  w.set(a + "embedding_length", u32(c.dim));
  w.set(a + "feed_forward_length", u32(c.ff_dim));
  w.set(a + "block_count", u32(c.n_layers));
  w.set(a + "attention.head_count", u32(c.n_heads));
  w.set(a + "attention.head_count_kv", u32(c.n_kv_heads));
  w.set(a + "attention.layer_norm_rms_epsilon", f32(c.norm_eps));
  w.set(a + "rope.freq_base", f32(c.rope.theta));
  w.set(a + "rope.dimension_count", u32(c.rope.n_rot));
  if (c.n_heads > 0 && c.head_dim != c.dim / c.n_heads) {
    w.set(a + "attention.key_length", u32(c.head_dim));
    w.set(a + "attention.value_length", u32(c.head_dim));
  }
  if (c.sliding_window > 0) w.set(a + "attention.sliding_window", u32(c.sliding_window));
  switch (c.rope.scaling) {
    case RopeScaling::None: break;
    case RopeScaling::Linear:
      w.set(a + "rope.scaling.type", GgufValue::of(std::string("linear")));
      w.set(a + "rope.scaling.factor", f32(c.rope.factor));
      break;
    case RopeScaling::Llama3: break;  // carried by the rope_freqs.weight tensor
    case RopeScaling::LongRope:  // phi3; a llama file carries its factors as rope_freqs.weight
      if (c.arch != Arch::Phi3) break;
      w.set(a + "rope.scaling.original_context_length", u32(c.rope.original_ctx));
      w.set(a + "rope.scaling.attn_factor", f32(c.rope.attn_factor));
      break;
  }
}

void write_tensors_streaming(GgufWriter& w, const std::vector<ExportTensor>& tensors, int threads) {
  threads = std::max(1, threads);
  for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.ne);
  w.write_header();
  constexpr size_t kSliceFloats = size_t(8) << 20;  // 32 MB of float32 per slice
  std::vector<float> f32;
  std::vector<uint8_t> out;
  for (const auto& t : tensors) {
    int64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    const int64_t cols = t.ne[0];
    const size_t row_bytes = row_size(t.type, cols);
    if (t.raw) {
      w.write_tensor_data(t.raw, row_bytes * size_t(rows));
      continue;
    }
    const int64_t slice_rows = std::max<int64_t>(1, int64_t(kSliceFloats / size_t(cols)));
    for (int64_t r0 = 0; r0 < rows; r0 += slice_rows) {
      const int64_t r1 = std::min(rows, r0 + slice_rows), n = r1 - r0;
      if (!t.fill_raw) f32.resize(size_t(n * cols));
      out.resize(size_t(n) * row_bytes);
      const int nt = int(std::min<int64_t>(threads, n));
      std::vector<std::exception_ptr> errors(static_cast<size_t>(nt));
      auto work = [&](int k) {
        try {
          const int64_t a = r0 + n * k / nt, b = r0 + n * (k + 1) / nt;
          if (t.fill_raw) {
            t.fill_raw(a, b, out.data() + size_t(a - r0) * row_bytes);
            return;
          }
          float* src = f32.data() + size_t((a - r0) * cols);
          t.fill(a, b, src);
          for (int64_t r = a; r < b; ++r)
            kernels::quantize_row(t.type, src + size_t((r - a) * cols),
                                  out.data() + size_t(r - r0) * row_bytes, cols);
        } catch (...) {
          errors[size_t(k)] = std::current_exception();
        }
      };
      std::vector<std::thread> pool;
      for (int k = 1; k < nt; ++k) pool.emplace_back(work, k);
      work(0);
      for (auto& th : pool) th.join();
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      w.append_tensor_data(out.data(), out.size());
    }
  }
  w.finish();
}

}  // namespace pensieve
