#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <spdlog/spdlog.h>

#include "kernels/kernels.h"
#include "model/rope.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve {

namespace {

constexpr int kMaxChunk = 512;  // tokens per prefill pass; bounds the scratch memory

std::vector<float> to_floats(const Tensor& t) {
  ready(t);
  std::vector<float> out(size_t(t.elements()));
  for (int64_t r = 0; r < t.rows(); ++r)
    kernels::dequantize_row(t.type, t.row(r), out.data() + r * t.cols(), t.cols());
  return out;
}

std::string blk(int l, const char* name) { return "blk." + std::to_string(l) + "." + name; }

}  // namespace

// ---------------------------------------------------------------------------------------------
SequenceState::SequenceState(const ModelConfig& cfg, int capacity, KvType kv_type) {
  const int bs = KvPool::kDefaultBlockSize;
  const int n = std::max(1, (capacity + bs - 1) / bs);
  own_pool = std::make_unique<KvPool>(cfg, n, bs, kv_type);
  pool = own_pool.get();
  for (int b = 0; b < n; ++b) blocks.push_back(b);
}

// ---------------------------------------------------------------------------------------------
Model::Model(LoadedModel loaded, const std::string& device)
    : loaded_(std::move(loaded)), cfg_(loaded_.config) {
  size_t total = 0;
  for (const auto& [name, t] : loaded_.weights.tensors()) total += t.nbytes;
  backend_ = make_backend(device, cfg_, total);
  // Conversions the loader deferred are the CPU backend's to run (in the background); any other
  // backend gets the weights whole.
  if (backend_->name() != "cpu") loaded_.weights.ready_all();
  try {
    bind_weights();
    backend_->finish_load();
    if (backend_->name() != "cpu") spdlog::info("{}: {}", backend_->name(), backend_->memory_report());
  } catch (const Error& e) {
    if (device != "auto" || backend_->name() == "cpu") throw;
    spdlog::warn("device auto: {}; running on the CPU", e.what());
    backend_ = make_cpu_backend(cfg_);
    layers_.clear();
    bind_weights();
    backend_->finish_load();
  }
}

std::shared_ptr<const Model> Model::load(const std::string& path, const std::string& device) {
  return std::make_shared<const Model>(load_model(path, /*defer_conversion=*/true), device);
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

  Backend& be = *backend_;
  auto add = [&](const Tensor* t) { return t ? be.add_weight(*t, WeightUse::Matmul) : -1; };
  tok_embd_ = &w.require("token_embd.weight", {dim, cfg_.n_vocab});
  id_out_norm_ = be.add_vector(to_floats(w.require("output_norm.weight", {dim})));
  output_ = w.find("output.weight") ? &w.require("output.weight", {dim, cfg_.n_vocab}) : tok_embd_;
  id_tok_embd_ = be.add_weight(*tok_embd_, output_ == tok_embd_ ? WeightUse::Both : WeightUse::Rows);

  auto bias = [&](int l, const char* name, int64_t n) {
    const Tensor* t = w.find(blk(l, name));
    return t ? be.add_vector(to_floats(w.require(blk(l, name), {n}))) : -1;
  };
  layers_.resize(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    Layer& L = layers_[l];
    L.attn_norm = be.add_vector(to_floats(w.require(blk(l, "attn_norm.weight"), {dim})));
    L.ffn_norm = be.add_vector(to_floats(w.require(blk(l, "ffn_norm.weight"), {dim})));
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
    // Separate q, k, v (and gate, up) as one matrix where the backend can stack them (the GPU,
    // which uploads the weights anyway: one GEMV for the three, and the fusions after it).
    const Tensor* const qkv_parts[] = {L.wq, L.wk, L.wv};
    L.id_qkv = L.wqkv ? add(L.wqkv) : L.wq ? be.add_stacked(qkv_parts, WeightUse::Matmul) : -1;
    if (L.id_qkv < 0) {
      L.id_q = add(L.wq);
      L.id_k = add(L.wk);
      L.id_v = add(L.wv);
    }
    L.id_o = add(L.wo);
    const Tensor* const ffn_parts[] = {L.w_gate, L.w_up};
    const int gate_up = L.w_gate ? be.add_stacked(ffn_parts, WeightUse::Matmul) : -1;
    L.id_gate = gate_up >= 0 ? -1 : add(L.w_gate);
    L.id_up = gate_up >= 0 ? gate_up : add(L.w_up);  // gate rows then up rows, as a fused ffn_up
    L.id_down = add(L.w_down);
  }
  // Last, as a pass reaches it (the CPU backend prepares weights in the order they are added).
  id_output_ = output_ == tok_embd_ ? id_tok_embd_ : add(output_);
}

std::vector<std::span<const uint8_t>> Model::weights_read_per_token() const {
  std::vector<std::span<const uint8_t>> v;
  // As the backend holds them where it repacked them, else as loaded.
  auto add = [&](const Tensor* t, int id) {
    if (!t) return;
    const std::span<const uint8_t> held = id >= 0 ? backend_->weight_region(id) : std::span<const uint8_t>();
    v.push_back(held.empty() ? std::span<const uint8_t>(static_cast<const uint8_t*>(ready(*t).data), t->nbytes) : held);
  };
  for (const Layer& L : layers_) {
    add(L.wqkv, L.id_qkv), add(L.wq, L.id_q), add(L.wk, L.id_k), add(L.wv, L.id_v), add(L.wo, L.id_o);
    const bool ffn_stacked = L.w_gate && L.id_gate < 0;  // id_up is gate and up together
    add(L.w_gate, L.id_gate), add(L.w_up, ffn_stacked ? -1 : L.id_up), add(L.w_down, L.id_down);
  }
  add(output_, id_output_);
  return v;
}

size_t Model::weight_bytes_per_token() const {
  size_t n = 0;
  for (const auto& w : weights_read_per_token()) n += w.size();
  return n;
}

void Model::forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
                    std::vector<float>& logits, ThreadPool& pool) const {
  logits.resize(all_logits ? tokens.size() * size_t(cfg_.n_vocab) : size_t(cfg_.n_vocab));
  forward(st, tokens, all_logits, logits.data(), pool);
}

void Model::forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits, float* logits,
                    ThreadPool& pool) const {
  const size_t n = tokens.size();
  if (n == 0) throw Error("forward: no tokens");
  const size_t vocab = size_t(cfg_.n_vocab);
  const int horizon = st.rope_horizon;
  st.rope_horizon = std::max(horizon, st.n_past + int(n));  // the whole call is one pass for RoPE
  try {
    for (size_t begin = 0; begin < n; begin += kMaxChunk) {
      const size_t len = std::min<size_t>(kMaxChunk, n - begin);
      const bool last_chunk = begin + len == n;
      BatchItem item{&st, tokens.subspan(begin, len),
                     all_logits ? BatchItem::Logits::All
                                : (last_chunk ? BatchItem::Logits::Last : BatchItem::Logits::None)};
      forward_batch(std::span<const BatchItem>(&item, 1), all_logits ? logits + begin * vocab : logits, pool);
    }
  } catch (...) {
    st.rope_horizon = horizon;
    throw;
  }
  st.rope_horizon = horizon;
}

void Model::forward_batch(std::span<const BatchItem> items, float* logits, ThreadPool& pool) const {
  if (items.empty()) throw Error("forward: empty batch");
  const bool exact = items[0].seq->exact_activations;
  int T = 0;
  for (const BatchItem& it : items) {
    const SequenceState& st = *it.seq;
    const size_t n = it.tokens.size();
    if (n == 0) throw Error("forward: no tokens");
    if (st.exact_activations != exact) throw Error("forward: a batch mixes exact and quantized activations");
    if (st.n_past + n > size_t(st.capacity()))
      throw Error("context full: " + std::to_string(st.n_past) + " + " + std::to_string(n) +
                  " tokens exceed the cache of " + std::to_string(st.capacity()));
    for (int32_t id : it.tokens)
      if (id < 0 || id >= cfg_.n_vocab)
        throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(cfg_.n_vocab));
    T += int(n);
  }
  const int dim = cfg_.dim, hd = cfg_.head_dim, ff = cfg_.ff_dim;
  const int q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  const int qkv_dim = q_dim + 2 * kv_dim;

  // LongRoPE picks its factor set per sequence, by how far its pass reaches.
  std::vector<PassSlot> slots;
  slots.reserve(size_t(T));
  std::vector<int32_t> ids;
  ids.reserve(size_t(T));
  for (const BatchItem& it : items) {
    SequenceState& st = *it.seq;
    const int reach = std::max(st.n_past + int(it.tokens.size()), st.rope_horizon);
    const bool long_ctx = cfg_.rope.scaling == RopeScaling::LongRope && reach > cfg_.rope.original_ctx;
    for (size_t i = 0; i < it.tokens.size(); ++i) {
      slots.push_back({&st, st.n_past + int(i), long_ctx, it.tokens[i]});
      ids.push_back(it.tokens[i]);
    }
  }

  const std::unique_ptr<BackendPass> pass = backend_->begin_pass(slots, pool);
  BackendPass& be = *pass;
  float* x = be.buffer(Act::X, size_t(T) * dim);
  float* xn = be.buffer(Act::XN, size_t(T) * dim);
  float* tmp = be.buffer(Act::Tmp, size_t(T) * dim);
  float* qkv = be.buffer(Act::QKV, size_t(T) * qkv_dim);
  float* att = be.buffer(Act::Att, size_t(T) * q_dim);
  float* ffb = be.buffer(Act::FFB, size_t(T) * 2 * ff);
  const size_t n_act = size_t(T) * dim;
  auto mm = [&](int w, const float* in, int64_t ldx, int n, float* out, int64_t ldy) {
    be.matmul(w, in, ldx, n, out, ldy, exact);
  };
  be.embed(id_tok_embd_, ids, x);

  for (int l = 0; l < cfg_.n_layers; ++l) {
    const Layer& L = layers_[l];
    be.rmsnorm(x, L.attn_norm, xn, T, dim, cfg_.norm_eps);
    if (L.id_qkv >= 0) {
      mm(L.id_qkv, xn, dim, T, qkv, qkv_dim);
    } else {
      mm(L.id_q, xn, dim, T, qkv, qkv_dim);
      mm(L.id_k, xn, dim, T, qkv + q_dim, qkv_dim);
      mm(L.id_v, xn, dim, T, qkv + q_dim + kv_dim, qkv_dim);
    }
    if (L.bq >= 0) be.add_bias(qkv, qkv_dim, T, L.bq);
    if (L.bk >= 0) be.add_bias(qkv + q_dim, qkv_dim, T, L.bk);
    if (L.bv >= 0) be.add_bias(qkv + q_dim + kv_dim, qkv_dim, T, L.bv);
    be.rope_and_store_kv(l, qkv);
    be.attention(l, qkv, att);
    mm(L.id_o, att, q_dim, T, tmp, dim);
    be.add(x, tmp, n_act);

    be.rmsnorm(x, L.ffn_norm, xn, T, dim, cfg_.norm_eps);
    if (L.id_gate >= 0) {
      mm(L.id_gate, xn, dim, T, ffb, 2 * ff);
      mm(L.id_up, xn, dim, T, ffb + ff, 2 * ff);
    } else {
      mm(L.id_up, xn, dim, T, ffb, 2 * ff);
    }
    be.silu_mul(ffb, T, ff);
    mm(L.id_down, ffb, 2 * ff, T, tmp, dim);
    be.add(x, tmp, n_act);
  }

  // The rows whose logits are wanted, normalised into consecutive rows of xn.
  int n_out = 0, t0 = 0;
  for (const BatchItem& it : items) {
    const int n = int(it.tokens.size());
    const int first = it.logits == BatchItem::Logits::All ? 0 : it.logits == BatchItem::Logits::Last ? n - 1 : n;
    if (n > first)
      be.rmsnorm(x + size_t(t0 + first) * dim, id_out_norm_, xn + size_t(n_out) * dim, n - first, dim,
                 cfg_.norm_eps);
    n_out += n - first;
    t0 += n;
  }
  if (n_out > 0) {
    const size_t n_logits = size_t(n_out) * size_t(cfg_.n_vocab);
    float* out = be.buffer(Act::Logits, n_logits);
    mm(id_output_, xn, dim, n_out, out, cfg_.n_vocab);
    be.read(out, logits, n_logits);
  }
  for (const BatchItem& it : items) it.seq->n_past += int(it.tokens.size());
}

}  // namespace pensieve
