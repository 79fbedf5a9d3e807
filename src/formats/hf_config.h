// Hugging Face model folders: config.json (+ generation_config.json) to ModelConfig, and the
// mapping from transformers tensor names to the canonical GGUF names the engine uses.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "formats/model_config.h"

namespace pensieve {

// Reads and parses a JSON file; Error naming the file on I/O or syntax errors.
nlohmann::json read_json_file(const std::string& path);

// Everything but n_vocab's cross-check against the tensors. `dir` names the folder in errors;
// generation_config.json is read from it when present. Throws Error naming the file and field.
ModelConfig read_hf_config(const std::string& dir);
ModelConfig parse_hf_config(const nlohmann::json& config, const nlohmann::json* generation_config,
                            const std::string& source);

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; nullopt for names the engine
// does not use (e.g. rotary_emb.inv_freq).
std::optional<std::string> canonical_tensor_name(const std::string& hf_name);

// The inverse, for writing folders: "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"
// (phi3's fused ffn_up is mlp.gate_up_proj); nullopt for names with no transformers tensor.
std::optional<std::string> hf_tensor_name(const std::string& canonical, Arch arch);

// config.json for `c` as transformers writes it: parse_hf_config(hf_config_json(c)) gives back c's
// shape, rope, token ids and tying (the rope style is a GGUF matter and is not written).
nlohmann::json hf_config_json(const ModelConfig& c);

}  // namespace pensieve
