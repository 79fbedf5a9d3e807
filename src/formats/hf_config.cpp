#include "formats/hf_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "util/error.h"

namespace pensieve {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

namespace {

// Typed field access with errors naming the file and field.
struct Fields {
  const json& j;
  const std::string& source;

  bool has(const char* k) const { return j.is_object() && j.contains(k) && !j.at(k).is_null(); }
  [[noreturn]] void bad(const std::string& k, const char* want) const {
    throw Error(source + ": field '" + k + "' must be " + want);
  }
  int get_int(const char* k, int def) const {
    if (!has(k)) return def;
    const json& v = j.at(k);
    if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN || v.get<int64_t>() > INT32_MAX)
      bad(k, "an integer");
    return v.get<int>();
  }
  int require_int(const char* k) const {
    if (!has(k)) throw Error(source + ": missing field '" + std::string(k) + "'");
    return get_int(k, 0);
  }
  double get_float(const char* k, double def) const {
    if (!has(k)) return def;
    if (!j.at(k).is_number()) bad(k, "a number");
    return j.at(k).get<double>();
  }
  bool get_bool(const char* k, bool def) const {
    if (!has(k)) return def;
    if (!j.at(k).is_boolean()) bad(k, "true or false");
    return j.at(k).get<bool>();
  }
  std::string get_string(const char* k, const std::string& def) const {
    if (!has(k)) return def;
    if (!j.at(k).is_string()) bad(k, "a string");
    return j.at(k).get<std::string>();
  }
  std::vector<float> get_floats(const char* k) const {
    if (!has(k)) return {};
    const json& v = j.at(k);
    if (!v.is_array()) bad(k, "an array of numbers");
    std::vector<float> out;
    for (const auto& x : v) {
      if (!x.is_number()) bad(k, "an array of numbers");
      out.push_back(x.get<float>());
    }
    return out;
  }
  // An id or a list of ids (eos_token_id may be either).
  std::vector<int> get_ids(const char* k) const {
    if (!has(k)) return {};
    const json& v = j.at(k);
    std::vector<int> out;
    if (v.is_number_integer()) {
      out.push_back(v.get<int>());
    } else if (v.is_array()) {
      for (const auto& x : v) {
        if (!x.is_number_integer()) bad(k, "an integer or a list of integers");
        out.push_back(x.get<int>());
      }
    } else {
      bad(k, "an integer or a list of integers");
    }
    return out;
  }
};

Arch arch_from_config(const Fields& f) {
  std::string type = f.get_string("model_type", "");
  if (type.empty() && f.has("architectures") && f.j.at("architectures").is_array() &&
      !f.j.at("architectures").empty() && f.j.at("architectures")[0].is_string())
    type = f.j.at("architectures")[0].get<std::string>();
  if (type == "llama" || type == "LlamaForCausalLM" || type == "mistral" ||
      type == "MistralForCausalLM")
    return Arch::Llama;
  if (type == "phi3" || type == "Phi3ForCausalLM") return Arch::Phi3;
  if (type == "qwen2" || type == "Qwen2ForCausalLM") return Arch::Qwen2;
  throw Error(f.source + ": unsupported architecture '" + type +
              "' (model_type; supported: llama, mistral, phi3, qwen2)");
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5): the same fields either way.
void read_rope(const Fields& top, ModelConfig& c) {
  const json* rp = nullptr;
  for (const char* k : {"rope_parameters", "rope_scaling"})
    if (top.has(k)) {
      if (!top.j.at(k).is_object()) top.bad(k, "an object");
      rp = &top.j.at(k);
      break;
    }
  static const json empty = json::object();
  const Fields r{rp ? *rp : empty, top.source};
  RopeConfig& rope = c.rope;
  rope.theta = float(r.get_float("rope_theta", top.get_float("rope_theta", 10000.0)));
  const double partial =
      r.get_float("partial_rotary_factor", top.get_float("partial_rotary_factor", 1.0));
  if (!(partial > 0 && partial <= 1)) top.bad("partial_rotary_factor", "in (0, 1]");
  rope.n_rot = int(std::lround(c.head_dim * partial));
  rope.original_ctx = r.get_int("original_max_position_embeddings",
                                top.get_int("original_max_position_embeddings", 0));

  std::string type = r.get_string("rope_type", r.get_string("type", "default"));
  if (type == "default" || type.empty()) {
    rope.scaling = RopeScaling::None;
  } else if (type == "linear") {
    rope.scaling = RopeScaling::Linear;
    rope.factor = float(r.get_float("factor", 1.0));
  } else if (type == "llama3") {
    rope.scaling = RopeScaling::Llama3;
    rope.factor = float(r.get_float("factor", 8.0));
    rope.low_freq_factor = float(r.get_float("low_freq_factor", 1.0));
    rope.high_freq_factor = float(r.get_float("high_freq_factor", 4.0));
  } else if (type == "longrope" || type == "su") {
    rope.scaling = RopeScaling::LongRope;
    rope.short_factor = r.get_floats("short_factor");
    rope.long_factor = r.get_floats("long_factor");
    if (rope.original_ctx <= 0) rope.original_ctx = c.ctx_train;
    if (r.has("attention_factor")) {
      rope.attn_factor = float(r.get_float("attention_factor", 1.0));
    } else {
      // As transformers: sqrt(1 + ln(s) / ln(orig)) with s = max / original positions, when s > 1.
      const double s = double(c.ctx_train) / double(rope.original_ctx);
      rope.attn_factor =
          s <= 1.0 ? 1.0f : float(std::sqrt(1.0 + std::log(s) / std::log(double(rope.original_ctx))));
    }
  } else {
    throw Error(top.source + ": unsupported rope scaling type '" + type +
                "' (supported: default, linear, llama3, longrope, su)");
  }
}

}  // namespace

ModelConfig parse_hf_config(const json& config, const json* generation_config,
                            const std::string& source) {
  if (!config.is_object()) throw Error(source + ": expected a JSON object");
  const Fields f{config, source};
  ModelConfig c;
  c.arch = arch_from_config(f);
  c.dim = f.require_int("hidden_size");
  c.n_layers = f.require_int("num_hidden_layers");
  c.n_heads = f.require_int("num_attention_heads");
  c.n_kv_heads = f.get_int("num_key_value_heads", c.n_heads);
  c.ff_dim = f.require_int("intermediate_size");
  c.n_vocab = f.require_int("vocab_size");
  if (c.n_heads <= 0) f.bad("num_attention_heads", "positive");
  c.head_dim = f.get_int("head_dim", c.dim / c.n_heads);
  c.ctx_train = f.get_int("max_position_embeddings", 4096);
  c.norm_eps = float(f.get_float("rms_norm_eps", 1e-6));
  c.rope.style = RopeStyle::RotateHalf;
  read_rope(f, c);
  c.sliding_window = f.get_int("sliding_window", 0);
  if (c.arch == Arch::Qwen2 && !f.get_bool("use_sliding_window", false)) c.sliding_window = 0;
  if (c.sliding_window < 0) f.bad("sliding_window", "non-negative");
  c.tied_embeddings = f.get_bool("tie_word_embeddings", false);

  auto bos = f.get_ids("bos_token_id");
  auto eos = f.get_ids("eos_token_id");
  if (generation_config && generation_config->is_object()) {
    const Fields g{*generation_config, source};
    if (g.has("bos_token_id")) bos = g.get_ids("bos_token_id");
    for (int id : g.get_ids("eos_token_id"))
      if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  c.bos_id = bos.empty() ? -1 : bos[0];
  c.eos_id = eos.empty() ? -1 : eos[0];
  c.stop_ids = eos;
  return c;
}

ModelConfig read_hf_config(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const json cfg = read_json_file(cfg_path);
  json gen;
  const fs::path gen_path = fs::path(dir) / "generation_config.json";
  const bool has_gen = fs::exists(gen_path);
  if (has_gen) gen = read_json_file(gen_path.string());
  ModelConfig c = parse_hf_config(cfg, has_gen ? &gen : nullptr, cfg_path);
  c.name = fs::path(dir).filename().string();
  if (c.name.empty()) c.name = fs::path(dir).parent_path().filename().string();
  return c;
}

namespace {
const std::map<std::string, std::string> kTopNames = {
    {"model.embed_tokens", "token_embd"}, {"lm_head", "output"}, {"model.norm", "output_norm"}};
const std::map<std::string, std::string> kLayerNames = {
    {"input_layernorm", "attn_norm"},     {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_proj", "attn_q"},       {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},       {"self_attn.o_proj", "attn_output"},
    {"self_attn.qkv_proj", "attn_qkv"},   {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},            {"mlp.down_proj", "ffn_down"},
    {"mlp.gate_up_proj", "ffn_up"}};
}  // namespace

std::optional<std::string> hf_tensor_name(const std::string& canonical, Arch arch) {
  const size_t dot = canonical.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string module = canonical.substr(0, dot), suffix = canonical.substr(dot);
  for (const auto& [hf, name] : kTopNames)
    if (name == module) return hf + suffix;
  if (module.rfind("blk.", 0) != 0) return std::nullopt;
  const size_t num_end = module.find('.', 4);
  if (num_end == std::string::npos) return std::nullopt;
  const std::string part = module.substr(num_end + 1);
  const std::string prefix = "model.layers." + module.substr(4, num_end - 4) + ".";
  if (part == "ffn_up") return prefix + (arch == Arch::Phi3 ? "mlp.gate_up_proj" : "mlp.up_proj") + suffix;
  for (const auto& [hf, name] : kLayerNames)
    if (name == part) return prefix + hf + suffix;
  return std::nullopt;
}

json hf_config_json(const ModelConfig& c) {
  static const std::map<Arch, std::pair<const char*, const char*>> kArch = {
      {Arch::Llama, {"llama", "LlamaForCausalLM"}},
      {Arch::Phi3, {"phi3", "Phi3ForCausalLM"}},
      {Arch::Qwen2, {"qwen2", "Qwen2ForCausalLM"}}};
  const auto& [type, cls] = kArch.at(c.arch);
  json j = {{"architectures", {cls}},
            {"model_type", type},
            {"hidden_act", "silu"},
            {"hidden_size", c.dim},
            {"intermediate_size", c.ff_dim},
            {"num_hidden_layers", c.n_layers},
            {"num_attention_heads", c.n_heads},
            {"num_key_value_heads", c.n_kv_heads},
            {"head_dim", c.head_dim},
            {"max_position_embeddings", c.ctx_train},
            {"rms_norm_eps", c.norm_eps},
            {"vocab_size", c.n_vocab},
            {"rope_theta", c.rope.theta},
            {"tie_word_embeddings", c.tied_embeddings}};
  if (c.rope.n_rot != c.head_dim) j["partial_rotary_factor"] = double(c.rope.n_rot) / c.head_dim;
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  std::vector<int> eos;
  if (c.eos_id >= 0) eos.push_back(c.eos_id);
  for (int id : c.stop_ids)
    if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  if (eos.size() == 1) j["eos_token_id"] = eos[0];
  else if (!eos.empty()) j["eos_token_id"] = eos;
  if (c.sliding_window > 0) {
    j["sliding_window"] = c.sliding_window;
    if (c.arch == Arch::Qwen2) j["use_sliding_window"] = true;
  }
  const RopeConfig& r = c.rope;
  if (r.original_ctx > 0) j["original_max_position_embeddings"] = r.original_ctx;
  switch (r.scaling) {
    case RopeScaling::None: break;
    case RopeScaling::Linear: j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", r.factor}}; break;
    case RopeScaling::Llama3:
      j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", r.factor}, {"low_freq_factor", r.low_freq_factor},
                           {"high_freq_factor", r.high_freq_factor}, {"original_max_position_embeddings", r.original_ctx}};
      break;
    case RopeScaling::LongRope:
      j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", r.short_factor}, {"long_factor", r.long_factor},
                           {"attention_factor", r.attn_factor}};
      break;
  }
  return j;
}

std::optional<std::string> canonical_tensor_name(const std::string& hf) {
  const auto& top = kTopNames;
  const auto& layer = kLayerNames;
  const size_t dot = hf.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string module = hf.substr(0, dot), suffix = hf.substr(dot);  // ".weight" / ".bias"
  if (auto it = top.find(module); it != top.end()) return it->second + suffix;
  static const std::string prefix = "model.layers.";
  if (module.rfind(prefix, 0) != 0) return std::nullopt;
  const size_t num_end = module.find('.', prefix.size());
  if (num_end == std::string::npos || num_end == prefix.size()) return std::nullopt;
  const std::string num = module.substr(prefix.size(), num_end - prefix.size());
  if (num.find_first_not_of("0123456789") != std::string::npos || num.size() > 6)
    return std::nullopt;
  auto it = layer.find(module.substr(num_end + 1));
  if (it == layer.end()) return std::nullopt;
  return "blk." + std::to_string(std::stoi(num)) + "." + it->second + suffix;
}

}  // namespace pensieve
