#include "formats/model_export.h"

#include <cstring>

#include "kernels/kernels.h"
#include "formats/model_tensors.h"
#include "util/error.h"

namespace pensieve {

int64_t permute_qk_row(int64_t r, int64_t hd) {
  const int64_t h = r / hd, i = (r % hd) / 2, j = r % 2;
  return h * hd + j * (hd / 2) + i;
}

namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

ExportTensor constant_tensor(const std::string& name, std::vector<float> values) {
  ExportTensor t;
  t.name = name;
  t.ne = {int64_t(values.size())};
  t.type = GgmlType::F32;
  t.fill = [values = std::move(values)](int64_t, int64_t, float* dst) {
    std::copy(values.begin(), values.end(), dst);
  };
  return t;
}

}  // namespace

std::vector<ExportTensor> model_export_tensors(const LoadedModel& m, const QuantRecipe& r) {
  const ModelConfig& c = m.config;
  // Files of the `llama` architecture hold Q/K with each head's rotary pairs interleaved.
  const bool permute = c.arch == Arch::Llama && c.rope.style == RopeStyle::RotateHalf;
  std::vector<ExportTensor> out;
  for (const TensorSpec& spec : model_tensor_specs(c)) {
    if (spec.name.rfind("rope_factors_", 0) == 0) continue;  // written from the config below
    const Tensor* src = m.weights.find(spec.name);
    if (!src) {
      if (spec.optional) continue;
      m.weights.require(spec.name);  // throws the missing-tensor error
    }
    ExportTensor t;
    t.name = spec.name;
    t.ne = spec.ne;
    t.type = tensor_type_for(r, spec.name, spec.ne, c.n_layers);
    const bool qk = permute && (spec.name.find(".attn_q.") != std::string::npos ||
                                spec.name.find(".attn_k.") != std::string::npos);
    if (!qk && src->type == t.type) {
      t.raw = src->data;
      out.push_back(std::move(t));
      continue;
    }
    const int64_t cols = src->cols();
    const int64_t hd = c.head_dim;
    if (qk && ends_with(spec.name, ".bias")) {
      t.fill = [src, cols, hd](int64_t, int64_t, float* dst) {
        std::vector<float> row(static_cast<size_t>(cols));
        kernels::dequantize_row(src->type, src->data, row.data(), cols);
        for (int64_t e = 0; e < cols; ++e) dst[e] = row[size_t(permute_qk_row(e, hd))];
      };
    } else {
      t.fill = [src, cols, hd, qk](int64_t r0, int64_t r1, float* dst) {
        for (int64_t row = r0; row < r1; ++row)
          kernels::dequantize_row(src->type, src->row(qk ? permute_qk_row(row, hd) : row),
                                  dst + (row - r0) * cols, cols);
      };
    }
    out.push_back(std::move(t));
  }
  if (c.arch == Arch::Phi3 && c.rope.scaling == RopeScaling::LongRope) {
    out.push_back(constant_tensor("rope_factors_long.weight", c.rope.long_factor));
    out.push_back(constant_tensor("rope_factors_short.weight", c.rope.short_factor));
  } else if (c.arch == Arch::Llama && c.rope.scaling == RopeScaling::Llama3) {
    out.push_back(constant_tensor("rope_freqs.weight", llama3_rope_freqs(c.rope)));
  } else if (c.arch == Arch::Llama && c.rope.scaling == RopeScaling::LongRope) {
    out.push_back(constant_tensor("rope_freqs.weight", c.rope.long_factor));
  } else if (c.rope.scaling == RopeScaling::LongRope || c.rope.scaling == RopeScaling::Llama3) {
    throw Error(m.path + ": this rope scaling cannot be written for architecture " +
                std::string(arch_name(c.arch)));
  }
  return out;
}

void write_model_gguf(const LoadedModel& m, const QuantRecipe& r, const std::string& out_path,
                      const std::function<void(GgufWriter&)>& extra_metadata, int threads) {
  std::vector<ExportTensor> tensors = model_export_tensors(m, r);
  GgufWriter w(out_path);
  set_model_metadata(w, m.config, r);
  // Token ids the engine reads even without a tokenizer (a raw model stays stoppable); a tokenizer
  // written by extra_metadata replaces them with its own.
  const ModelConfig& c = m.config;
  auto u32 = [](int64_t v) { return GgufValue::of(uint64_t(v), GgufType::UINT32); };
  if (c.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", u32(c.bos_id));
  if (c.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", u32(c.eos_id));
  for (int id : c.stop_ids)
    if (id != c.eos_id) w.set("tokenizer.ggml.eot_token_id", u32(id));
  if (extra_metadata) extra_metadata(w);
  write_tensors_streaming(w, tensors, threads);
}

}  // namespace pensieve
