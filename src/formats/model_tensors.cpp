#include "formats/model_tensors.h"

#include "util/error.h"

namespace pensieve {

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c) {
  const int64_t dim = c.dim, vocab = c.n_vocab, ff = c.ff_dim;
  const int64_t q_out = int64_t(c.n_heads) * c.head_dim;
  const int64_t kv_out = int64_t(c.n_kv_heads) * c.head_dim;
  std::vector<TensorSpec> s;
  s.push_back({"token_embd.weight", {dim, vocab}});
  s.push_back({"output_norm.weight", {dim}, false, true});
  if (!c.tied_embeddings) s.push_back({"output.weight", {dim, vocab}});
  if (c.arch == Arch::Phi3 && c.rope.scaling == RopeScaling::LongRope) {
    // Only GGUF files carry these; a folder's factors live in config.json (RopeConfig).
    s.push_back({"rope_factors_long.weight", {c.rope.n_rot / 2}, true});
    s.push_back({"rope_factors_short.weight", {c.rope.n_rot / 2}, true});
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    s.push_back({p + "attn_norm.weight", {dim}, false, true});
    if (c.arch == Arch::Phi3) {
      s.push_back({p + "attn_qkv.weight", {dim, q_out + 2 * kv_out}});
    } else {
      const bool bias_optional = c.arch != Arch::Qwen2;
      s.push_back({p + "attn_q.weight", {dim, q_out}});
      s.push_back({p + "attn_k.weight", {dim, kv_out}});
      s.push_back({p + "attn_v.weight", {dim, kv_out}});
      s.push_back({p + "attn_q.bias", {q_out}, bias_optional});
      s.push_back({p + "attn_k.bias", {kv_out}, bias_optional});
      s.push_back({p + "attn_v.bias", {kv_out}, bias_optional});
    }
    s.push_back({p + "attn_output.weight", {q_out, dim}});
    s.push_back({p + "ffn_norm.weight", {dim}, false, true});
    if (c.arch == Arch::Phi3) {
      s.push_back({p + "ffn_up.weight", {dim, 2 * ff}});  // fused gate_up, gate rows first
    } else {
      s.push_back({p + "ffn_gate.weight", {dim, ff}});
      s.push_back({p + "ffn_up.weight", {dim, ff}});
    }
    s.push_back({p + "ffn_down.weight", {ff, dim}});
  }
  return s;
}

namespace {
void require_positive(const std::string& source, const char* field, int v) {
  if (v <= 0) throw Error(source + ": " + field + " is " + std::to_string(v) + ", expected > 0");
}
}  // namespace

void check_model_config(const ModelConfig& c, const std::string& source) {
  require_positive(source, "vocabulary size", c.n_vocab);
  require_positive(source, "embedding length (hidden_size)", c.dim);
  require_positive(source, "block count (num_hidden_layers)", c.n_layers);
  require_positive(source, "attention head count", c.n_heads);
  require_positive(source, "attention KV head count", c.n_kv_heads);
  require_positive(source, "head dimension", c.head_dim);
  require_positive(source, "feed-forward length (intermediate_size)", c.ff_dim);
  // No real model has heads wider than 256; the limit keeps per-head scratch buffers bounded
  // whatever an untrusted file claims.
  if (c.head_dim > 1024)
    throw Error(source + ": head dimension " + std::to_string(c.head_dim) + " is over the limit of 1024");
  if (c.n_heads % c.n_kv_heads != 0)
    throw Error(source + ": head count " + std::to_string(c.n_heads) +
                " is not a multiple of the KV head count " + std::to_string(c.n_kv_heads));
  if (c.rope.n_rot <= 0 || c.rope.n_rot > c.head_dim || c.rope.n_rot % 2 != 0)
    throw Error(source + ": rotary dimension count " + std::to_string(c.rope.n_rot) +
                " must be even and within the head dimension " + std::to_string(c.head_dim));
  if (!(c.rope.theta > 0)) throw Error(source + ": rope theta must be positive");
  if (!(c.norm_eps > 0)) throw Error(source + ": RMS norm epsilon must be positive");
  if (c.rope.scaling == RopeScaling::LongRope) {
    const size_t half = size_t(c.rope.n_rot / 2);
    if (c.rope.short_factor.size() != half || c.rope.long_factor.size() != half)
      throw Error(source + ": LongRoPE needs " + std::to_string(half) +
                  " short and long factors, found " + std::to_string(c.rope.short_factor.size()) +
                  " and " + std::to_string(c.rope.long_factor.size()));
    if (c.rope.original_ctx <= 0)
      throw Error(source + ": LongRoPE needs original_max_position_embeddings");
  }
  if (c.rope.scaling == RopeScaling::Llama3 && c.rope.original_ctx <= 0)
    throw Error(source + ": llama3 rope scaling needs original_max_position_embeddings");
}

void check_model_tensors(const ModelConfig& c, const WeightStore& w) {
  for (const TensorSpec& spec : model_tensor_specs(c)) {
    if (spec.optional && !w.find(spec.name)) continue;
    const Tensor& t = w.require(spec.name);
    bool ok = t.n_dims == int(spec.ne.size());
    for (size_t d = 0; d < spec.ne.size() && ok; ++d) ok = t.ne[d] == spec.ne[d];
    if (!ok) {
      Tensor expected;
      expected.n_dims = int(spec.ne.size());
      for (size_t d = 0; d < spec.ne.size(); ++d) expected.ne[d] = spec.ne[d];
      throw Error(w.source() + ": tensor '" + spec.name + "' has shape " + t.shape_string() +
                  ", expected " + expected.shape_string());
    }
  }
}

}  // namespace pensieve
