#include "cli/model_facts.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "util/error.h"

namespace pensieve::cli {

namespace fs = std::filesystem;

namespace {

std::string family_of(const std::string& tmpl) {
  if (tmpl.empty()) return "none";
  if (tmpl.find("<|im_start|>") != std::string::npos) return "chatml";
  if (tmpl.find("<|start_header_id|>") != std::string::npos) return "llama3";
  if (tmpl.find("<|assistant|>") != std::string::npos) return "phi3";
  if (tmpl.find("[INST]") != std::string::npos) return "llama2";
  return "other";
}

// The element count of every tensor in a safetensors header (8-byte length, then JSON).
uint64_t safetensors_parameters(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t len = 0;
  if (!in.read(reinterpret_cast<char*>(&len), 8) || len > (100u << 20))
    throw Error(file.string() + ": not a safetensors file (bad header length)");
  std::string header(len, '\0');
  if (!in.read(header.data(), std::streamsize(len))) throw Error(file.string() + ": truncated safetensors header");
  uint64_t n = 0;
  try {
    const nlohmann::json tensors = nlohmann::json::parse(header);
    for (const auto& [name, t] : tensors.items()) {
      if (name == "__metadata__" || !t.contains("shape")) continue;
      uint64_t e = 1;
      for (const auto& d : t["shape"]) e *= d.get<uint64_t>();
      n += e;
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + ": malformed safetensors header: " + e.what());
  }
  return n;
}

}  // namespace

ModelFacts read_model_facts(const std::string& path) {
  ModelFacts f;
  if (fs::is_directory(path)) {
    const nlohmann::json cfg = read_json_file((fs::path(path) / "config.json").string());
    f.architecture = cfg.value("model_type", "");
    f.context = cfg.value("max_position_embeddings", 0);
    if (cfg.contains("quantization")) f.architecture += " (MLX " + std::to_string(cfg["quantization"].value("bits", 0)) + "-bit)";
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".safetensors") f.parameters += safetensors_parameters(e.path());
    std::string tmpl;
    const fs::path tc = fs::path(path) / "tokenizer_config.json";
    if (fs::exists(tc)) {
      const nlohmann::json t = read_json_file(tc.string());
      if (t.contains("chat_template") && t["chat_template"].is_string()) tmpl = t["chat_template"].get<std::string>();
    }
    f.template_family = family_of(tmpl);
    if (fs::exists(fs::path(path) / "chat_template.jinja")) {
      std::ifstream in(fs::path(path) / "chat_template.jinja");
      f.template_family = family_of(std::string(std::istreambuf_iterator<char>(in), {}));
    }
    return f;
  }
  const GgufFile g = GgufFile::open(path);
  f.architecture = g.get_string("general.architecture");
  f.context = int(g.get_int(f.architecture + ".context_length", 0));
  f.license = g.get_string("general.license");
  for (const auto& t : g.tensors()) f.parameters += uint64_t(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
  f.template_family = family_of(g.get_string("tokenizer.chat_template"));
  return f;
}

}  // namespace pensieve::cli
