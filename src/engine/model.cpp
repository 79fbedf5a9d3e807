#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/kernels.h"
#include "engine/rope.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve {

namespace {

constexpr int kMaxChunk = 512;  // tokens per prefill pass; bounds the scratch memory

std::vector<float> to_floats(const Tensor& t) {
  std::vector<float> out(size_t(t.elements()));
  for (int64_t r = 0; r < t.rows(); ++r)
    kernels::dequantize_row(t.type, t.row(r), out.data() + r * t.cols(), t.cols());
  return out;
}

std::string blk(int l, const char* name) { return "blk." + std::to_string(l) + "." + name; }

}  // namespace

// ---------------------------------------------------------------------------------------------
KvCache::KvCache(const ModelConfig& cfg, int capacity, bool f32)
    : capacity_(capacity), kv_dim_(cfg.n_kv_heads * cfg.head_dim), f32_(f32), elem_(f32 ? 4 : 2) {
  data_.resize(size_t(cfg.n_layers) * 2 * size_t(capacity) * size_t(kv_dim_) * elem_);
}

void* KvCache::row(int layer, int pos, int which) {
  const size_t per_layer = 2 * size_t(capacity_) * size_t(kv_dim_) * elem_;
  const size_t off = size_t(layer) * per_layer +
                     (size_t(which) * size_t(capacity_) + size_t(pos)) * size_t(kv_dim_) * elem_;
  return data_.data() + off;
}

// ---------------------------------------------------------------------------------------------
Model::Model(LoadedModel loaded) : loaded_(std::move(loaded)), cfg_(loaded_.config) {
  bind_weights();
}

std::shared_ptr<const Model> Model::load(const std::string& path) {
  return std::make_shared<const Model>(load_model(path));
}

void Model::bind_weights() {
  const WeightStore& w = loaded_.weights;
  const int64_t dim = cfg_.dim, hd = cfg_.head_dim, ff = cfg_.ff_dim;
  const int64_t q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  if (dim <= 0 || hd <= 0 || cfg_.n_heads <= 0 || cfg_.n_kv_heads <= 0 || cfg_.n_layers <= 0 ||
      cfg_.n_vocab <= 0 || ff <= 0 || cfg_.n_heads % cfg_.n_kv_heads != 0)
    throw Error(w.source() + ": inconsistent model hyper-parameters");
  if (cfg_.rope.n_rot <= 0 || cfg_.rope.n_rot > hd || cfg_.rope.n_rot % 2 || cfg_.rope.n_rot > 1024)
    throw Error(w.source() + ": bad rotary dimension count " + std::to_string(cfg_.rope.n_rot));

  tok_embd_ = &w.require("token_embd.weight", {dim, cfg_.n_vocab});
  out_norm_ = to_floats(w.require("output_norm.weight", {dim}));
  output_ = w.find("output.weight") ? &w.require("output.weight", {dim, cfg_.n_vocab}) : tok_embd_;

  auto bias = [&](int l, const char* name, int64_t n) {
    const Tensor* t = w.find(blk(l, name));
    return t ? to_floats(w.require(blk(l, name), {n})) : std::vector<float>{};
  };
  layers_.resize(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    Layer& L = layers_[l];
    L.attn_norm = to_floats(w.require(blk(l, "attn_norm.weight"), {dim}));
    L.ffn_norm = to_floats(w.require(blk(l, "ffn_norm.weight"), {dim}));
    if (w.find(blk(l, "attn_qkv.weight"))) {
      L.wqkv = &w.require(blk(l, "attn_qkv.weight"), {dim, q_dim + 2 * kv_dim});
    } else {
      L.wq = &w.require(blk(l, "attn_q.weight"), {dim, q_dim});
      L.wk = &w.require(blk(l, "attn_k.weight"), {dim, kv_dim});
      L.wv = &w.require(blk(l, "attn_v.weight"), {dim, kv_dim});
    }
    L.bq = bias(l, "attn_q.bias", q_dim);
    L.bk = bias(l, "attn_k.bias", kv_dim);
    L.bv = bias(l, "attn_v.bias", kv_dim);
    L.wo = &w.require(blk(l, "attn_output.weight"), {q_dim, dim});
    if (w.find(blk(l, "ffn_gate.weight"))) {
      L.w_gate = &w.require(blk(l, "ffn_gate.weight"), {dim, ff});
      L.w_up = &w.require(blk(l, "ffn_up.weight"), {dim, ff});
    } else {
      L.w_up = &w.require(blk(l, "ffn_up.weight"), {dim, 2 * ff});  // fused gate and up
    }
    L.w_down = &w.require(blk(l, "ffn_down.weight"), {ff, dim});
  }
}

std::vector<std::span<const uint8_t>> Model::weights_read_per_token() const {
  std::vector<std::span<const uint8_t>> v;
  auto add = [&](const Tensor* t) {
    if (t) v.emplace_back(static_cast<const uint8_t*>(t->data), t->nbytes);
  };
  for (const Layer& L : layers_)
    for (const Tensor* t : {L.wqkv, L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down}) add(t);
  add(output_);
  return v;
}

size_t Model::weight_bytes_per_token() const {
  size_t n = 0;
  for (const auto& w : weights_read_per_token()) n += w.size();
  return n;
}

void Model::forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
                    std::vector<float>& logits, ThreadPool& pool) const {
  const size_t n = tokens.size();
  if (n == 0) throw Error("forward: no tokens");
  if (st.n_past + n > size_t(st.kv.capacity()))
    throw Error("context full: " + std::to_string(st.n_past) + " + " + std::to_string(n) +
                " tokens exceed the cache of " + std::to_string(st.kv.capacity()));
  for (int32_t id : tokens)
    if (id < 0 || id >= cfg_.n_vocab)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " +
                  std::to_string(cfg_.n_vocab));
  const size_t vocab = size_t(cfg_.n_vocab);
  logits.resize(all_logits ? n * vocab : vocab);
  for (size_t begin = 0; begin < n; begin += kMaxChunk) {
    const size_t len = std::min<size_t>(kMaxChunk, n - begin);
    const bool last_chunk = begin + len == n;
    float* out = all_logits ? logits.data() + begin * vocab : (last_chunk ? logits.data() : nullptr);
    forward_chunk(st, tokens.subspan(begin, len), all_logits, out, pool);
  }
}

void Model::forward_chunk(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
                          float* logits, ThreadPool& pool) const {
  const int T = int(tokens.size());
  const int dim = cfg_.dim, hd = cfg_.head_dim, ff = cfg_.ff_dim;
  const int q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  const int qkv_dim = q_dim + 2 * kv_dim;
  const int pos0 = st.n_past;
  auto mm = st.exact_activations ? kernels::matmul_exact : kernels::matmul;

  std::vector<float> x(size_t(T) * dim), xn(size_t(T) * dim), tmp(size_t(T) * dim);
  std::vector<float> qkv(size_t(T) * qkv_dim), att(size_t(T) * q_dim), ffb(size_t(T) * 2 * ff);
  for (int t = 0; t < T; ++t) kernels::get_row(*tok_embd_, tokens[t], x.data() + size_t(t) * dim);

  // LongRoPE picks its factor set per pass, by how far this pass reaches.
  const bool long_ctx = cfg_.rope.scaling == RopeScaling::LongRope &&
                        pos0 + T > cfg_.rope.original_ctx;
  const RopeTable rope(cfg_.rope, long_ctx);

  auto add_bias = [&](const std::vector<float>& b, int offset) {
    if (b.empty()) return;
    for (int t = 0; t < T; ++t)
      for (size_t i = 0; i < b.size(); ++i) qkv[size_t(t) * qkv_dim + offset + i] += b[i];
  };

  for (int l = 0; l < cfg_.n_layers; ++l) {
    const Layer& L = layers_[l];
    for (int t = 0; t < T; ++t)
      kernels::rmsnorm(x.data() + size_t(t) * dim, L.attn_norm.data(), xn.data() + size_t(t) * dim,
                       dim, cfg_.norm_eps);
    if (L.wqkv) {
      mm(*L.wqkv, xn.data(), dim, T, qkv.data(), qkv_dim, pool);
    } else {
      mm(*L.wq, xn.data(), dim, T, qkv.data(), qkv_dim, pool);
      mm(*L.wk, xn.data(), dim, T, qkv.data() + q_dim, qkv_dim, pool);
      mm(*L.wv, xn.data(), dim, T, qkv.data() + q_dim + kv_dim, qkv_dim, pool);
    }
    add_bias(L.bq, 0);
    add_bias(L.bk, q_dim);
    add_bias(L.bv, q_dim + kv_dim);
    for (int t = 0; t < T; ++t) {
      float* row = qkv.data() + size_t(t) * qkv_dim;
      rope.apply(row, cfg_.n_heads, hd, pos0 + t);
      rope.apply(row + q_dim, cfg_.n_kv_heads, hd, pos0 + t);
      const float* k = row + q_dim;
      const float* v = row + q_dim + kv_dim;
      if (st.kv.is_f32()) {
        std::memcpy(st.kv.key(l, pos0 + t), k, sizeof(float) * kv_dim);
        std::memcpy(st.kv.value(l, pos0 + t), v, sizeof(float) * kv_dim);
      } else {
        kernels::f32_to_f16_row(k, static_cast<uint16_t*>(st.kv.key(l, pos0 + t)), kv_dim);
        kernels::f32_to_f16_row(v, static_cast<uint16_t*>(st.kv.value(l, pos0 + t)), kv_dim);
      }
    }
    attention(st, l, pos0, T, qkv.data(), att.data(), pool);
    mm(*L.wo, att.data(), q_dim, T, tmp.data(), dim, pool);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];

    for (int t = 0; t < T; ++t)
      kernels::rmsnorm(x.data() + size_t(t) * dim, L.ffn_norm.data(), xn.data() + size_t(t) * dim,
                       dim, cfg_.norm_eps);
    if (L.w_gate) {
      mm(*L.w_gate, xn.data(), dim, T, ffb.data(), 2 * ff, pool);
      mm(*L.w_up, xn.data(), dim, T, ffb.data() + ff, 2 * ff, pool);
    } else {
      mm(*L.w_up, xn.data(), dim, T, ffb.data(), 2 * ff, pool);
    }
    for (int t = 0; t < T; ++t) {
      float* row = ffb.data() + size_t(t) * 2 * ff;
      kernels::silu_mul(row, row + ff, ff);
    }
    mm(*L.w_down, ffb.data(), 2 * ff, T, tmp.data(), dim, pool);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
  }
  st.n_past += T;

  if (!logits) return;
  const int first = all_logits ? 0 : T - 1;
  const int n_out = T - first;
  for (int t = first; t < T; ++t)
    kernels::rmsnorm(x.data() + size_t(t) * dim, out_norm_.data(), xn.data() + size_t(t - first) * dim,
                     dim, cfg_.norm_eps);
  mm(*output_, xn.data(), dim, n_out, logits, cfg_.n_vocab, pool);
}

// Causal attention of T new queries over the cache; tasks are (token, head) pairs.
void Model::attention(const SequenceState& st, int layer, int pos0, int T, const float* qkv,
                      float* out, ThreadPool& pool) const {
  const int hd = cfg_.head_dim, nh = cfg_.n_heads;
  const int group = cfg_.n_heads / cfg_.n_kv_heads;
  const int q_dim = nh * hd, qkv_dim = q_dim + 2 * cfg_.n_kv_heads * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  const bool f32 = st.kv.is_f32();
  const int window = cfg_.sliding_window;
  pool.parallel_for(int64_t(T) * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(size_t(pos0 + T));
    for (int64_t task = begin; task < end; ++task) {
      const int t = int(task / nh), h = int(task % nh);
      const int pos = pos0 + t;
      const int start = window > 0 ? std::max(0, pos - window + 1) : 0;
      const float* q = qkv + size_t(t) * qkv_dim + size_t(h) * hd;
      const size_t koff = size_t(h / group) * hd;
      const int n = pos - start + 1;
      for (int j = 0; j < n; ++j) {
        const void* k = st.kv.key(layer, start + j);
        scores[j] = scale * (f32 ? kernels::dot(static_cast<const float*>(k) + koff, q, hd)
                                 : kernels::dot_f16(static_cast<const uint16_t*>(k) + koff, q, hd));
      }
      kernels::softmax(scores.data(), n);
      float* o = out + size_t(t) * q_dim + size_t(h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = 0; j < n; ++j) {
        const void* v = st.kv.value(layer, start + j);
        if (f32) kernels::axpy(scores[j], static_cast<const float*>(v) + koff, o, hd);
        else kernels::axpy_f16(scores[j], static_cast<const uint16_t*>(v) + koff, o, hd);
      }
    }
  });
}

}  // namespace pensieve
