// `pensieve convert`: a Hugging Face (or MLX) folder to a GGUF file with the standard tensor names,
// metadata keys and layouts, the tokenizer included when the folder has tokenizer.json.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/command.h"
#include "formats/model_export.h"
#include "text/tokenizer.h"
#include "util/cpu.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The pre-tokenizer regex of tokenizer.json, if it has one (a Split inside a Sequence, or alone).
std::string split_regex(const json& pre) {
  if (!pre.is_object()) return "";
  if (pre.value("type", "") == "Split" && pre.contains("pattern") && pre["pattern"].is_object())
    return pre["pattern"].value("Regex", "");
  if (pre.value("type", "") == "Sequence" && pre.contains("pretokenizers"))
    for (const auto& p : pre["pretokenizers"]) {
      std::string r = split_regex(p);
      if (!r.empty()) return r;
    }
  return "";
}

// tokenizer.ggml.pre names the pre-tokenizer by the model family that introduced its regex.
std::string guess_pre(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "tokenizer.json", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  json tok;
  try {
    tok = json::parse(ss.str());
  } catch (const json::exception&) {
    return "default";
  }
  const std::string re = split_regex(tok.value("pre_tokenizer", json()));
  static const std::map<std::string, std::string> known = {
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "llama-bpe"},
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "qwen2"},
  };
  if (auto it = known.find(re); it != known.end()) return it->second;
  return "default";
}

// The tokenizer as GGUF tokenizer.* metadata: tokens padded to the model's vocabulary size.
void set_tokenizer_metadata(GgufWriter& w, const Tokenizer& tok, const std::string& pre,
                            int n_vocab, const std::string& dir) {
  const Vocab& v = tok.vocab();
  if (int(v.tokens.size()) > n_vocab)
    throw Error(dir + ": tokenizer has " + std::to_string(v.tokens.size()) +
                " tokens, more than the model's vocabulary of " + std::to_string(n_vocab));
  const bool spm = v.decoding == Vocab::Decoding::Metaspace || v.byte_fallback;
  std::vector<std::string> tokens = v.tokens;
  std::vector<int32_t> types;
  for (auto k : v.kinds) types.push_back(int32_t(k));
  // SentencePiece-style files merge by the merged token's score: give each token minus the rank
  // of the merge that first makes it, so that the order of merges is kept.
  std::vector<float> scores(tokens.size(), 0.0f);
  std::vector<std::pair<int32_t, uint64_t>> ranked;  // (rank, pair key)
  for (const auto& [key, rank_id] : v.merges) ranked.push_back({rank_id.first, key});
  std::sort(ranked.begin(), ranked.end());
  std::vector<bool> scored(tokens.size(), false);
  for (const auto& [key, rank_id] : v.merges) {
    const auto id = size_t(rank_id.second);
    if (id < scores.size() && (!scored[id] || -float(rank_id.first) > scores[id])) {
      scores[id] = -float(rank_id.first);
      scored[id] = true;
    }
  }
  for (size_t i = 0; i < tokens.size(); ++i)
    if (v.kinds[i] == TokenKind::Control || v.kinds[i] == TokenKind::UserDefined) scores[i] = -1000.0f;
  std::vector<std::string> merges;
  merges.reserve(ranked.size());
  for (const auto& [rank, key] : ranked)
    merges.push_back(v.tokens[size_t(key >> 32)] + " " + v.tokens[size_t(key & 0xffffffffu)]);
  for (int i = int(tokens.size()); i < n_vocab; ++i) {
    tokens.push_back("[PAD" + std::to_string(i) + "]");
    types.push_back(int32_t(TokenKind::Unused));
    scores.push_back(-1000.0f);
  }
  auto u32 = [](int64_t x) { return GgufValue::of(uint64_t(x), GgufType::UINT32); };
  w.set("tokenizer.ggml.model", GgufValue::of(std::string(spm ? "llama" : "gpt2")));
  w.set("tokenizer.ggml.pre", GgufValue::of(spm ? std::string("default") : pre));
  w.set("tokenizer.ggml.tokens", GgufValue::of(std::move(tokens)));
  w.set("tokenizer.ggml.token_type", GgufValue::of(types));
  w.set("tokenizer.ggml.scores", GgufValue::of(scores));
  if (!merges.empty()) w.set("tokenizer.ggml.merges", GgufValue::of(std::move(merges)));
  if (v.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", u32(v.bos_id));
  if (v.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", u32(v.eos_id));
  if (v.unk_id >= 0) w.set("tokenizer.ggml.unknown_token_id", u32(v.unk_id));
  if (v.pad_id >= 0) w.set("tokenizer.ggml.padding_token_id", u32(v.pad_id));
  for (const char* eot : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"})
    if (int32_t id = v.find(eot); id >= 0 && id != v.eos_id) {
      w.set("tokenizer.ggml.eot_token_id", u32(id));
      break;
    }
  w.set("tokenizer.ggml.add_bos_token", GgufValue::of(v.add_bos));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::of(false));
  if (spm) w.set("tokenizer.ggml.add_space_prefix", GgufValue::of(v.strip_leading_space));
  if (!v.chat_template.empty()) w.set("tokenizer.chat_template", GgufValue::of(v.chat_template));
}

struct ConvertArgs {
  std::string from, out, type = "f16";
  int threads = 0;
};

int run_convert(const ConvertArgs& a) {
  const auto recipe = quant_recipe(a.type);
  if (!recipe) throw Error("--type: unknown type '" + a.type + "' (known: " + quant_recipe_names() + ")");
  const auto t0 = std::chrono::steady_clock::now();
  const LoadedModel m = load_model(a.from);
  std::function<void(GgufWriter&)> tokenizer_meta;
  std::unique_ptr<Tokenizer> tok;
  if (m.gguf) {
    tokenizer_meta = [&](GgufWriter& w) {
      for (const auto& [key, value] : m.gguf->metadata())
        if (key.rfind("tokenizer.", 0) == 0) w.set(key, value);
    };
  } else if (fs::exists(fs::path(m.dir) / "tokenizer.json")) {
    tok = Tokenizer::from_hf_dir(m.dir);
    const std::string pre = guess_pre(m.dir);
    // `pre` lives only in this block: the writer calls the function later, so it holds a copy.
    tokenizer_meta = [&, pre](GgufWriter& w) { set_tokenizer_metadata(w, *tok, pre, m.config.n_vocab, m.dir); };
  } else {
    std::fprintf(stderr, "note: %s has no tokenizer.json; the GGUF will have no tokenizer\n", a.from.c_str());
  }
  write_model_gguf(m, *recipe, a.out, tokenizer_meta, a.threads > 0 ? a.threads : physical_core_count());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote %s (%s, %s, %.1f MB) in %.2f s\n", a.out.c_str(), m.format.c_str(),
               recipe->name.c_str(), double(fs::file_size(a.out)) / 1e6, secs);
  return 0;
}

const CommandRegistrar convert_command(
    "convert", "Convert a Hugging Face or MLX model folder to GGUF",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<ConvertArgs>();
      sub.add_option("--from", a->from, "Model folder (safetensors or MLX) or .gguf file")->required();
      sub.add_option("--out", a->out, "Output .gguf file")->required();
      sub.add_option("--type", a->type, "Weight type: " + quant_recipe_names())->capture_default_str();
      sub.add_option("--threads", a->threads, "Threads (default: physical cores)");
      return [a] { return run_convert(*a); };
    });

}  // namespace
}  // namespace pensieve::cli
