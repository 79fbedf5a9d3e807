// Tokenizer from GGUF metadata (tokenizer.ggml.*), with the defaults llama.cpp's converter assumes
// when a key is absent.
#include <algorithm>
#include <cctype>

#include "text/tokenizer.h"
#include "util/error.h"

namespace pensieve {

namespace {

std::vector<std::string> required_strings(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  if (!v) throw Error(g.path() + ": missing " + key);
  return v->as_string_array();
}

int32_t token_id(const GgufFile& g, const std::string& key, int32_t def, size_t n_vocab) {
  const int64_t id = g.get_int(key, def);
  if (id < -1 || id >= int64_t(n_vocab))
    throw Error(g.path() + ": " + key + " = " + std::to_string(id) + " is outside the vocabulary of " +
                std::to_string(n_vocab) + " tokens");
  return int32_t(id);
}

void load_token_table(const GgufFile& g, Vocab& v) {
  v.tokens = required_strings(g, "tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  if (n == 0) throw Error(g.path() + ": tokenizer.ggml.tokens is empty");
  if (const GgufValue* s = g.find("tokenizer.ggml.scores")) {
    v.scores = s->as_float_array();
    if (v.scores.size() != n)
      throw Error(g.path() + ": tokenizer.ggml.scores has " + std::to_string(v.scores.size()) +
                  " entries, expected " + std::to_string(n));
  } else {
    v.scores.assign(n, 0.0f);
  }
  v.kinds.assign(n, TokenKind::Normal);
  if (const GgufValue* t = g.find("tokenizer.ggml.token_type")) {
    const auto types = t->as_int_array();
    if (types.size() != n)
      throw Error(g.path() + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                  " entries, expected " + std::to_string(n));
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 1 || types[i] > 6)
        throw Error(g.path() + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] = " +
                    std::to_string(types[i]) + " is not a known token type");
      v.kinds[i] = TokenKind(types[i]);
    }
  }
  v.build_index();
}

// The tokens matched verbatim in text, with llama.cpp's whitespace rules for Phi-3 (its HF
// tokenizer strips whitespace after its chat tokens; GGUF does not record that, the name does).
void collect_added_tokens(const GgufFile& g, Vocab& v) {
  std::string name = g.get_string("general.name", "");
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  // "Phi 3.5 Mini Instruct" as well as "Phi3" / "phi-3-mini": the 3.5 models share the tokenizer.
  const bool phi3 = name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos ||
                    name.find("phi 3") != std::string::npos;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const TokenKind k = v.kinds[i];
    if (k != TokenKind::Control && k != TokenKind::UserDefined && k != TokenKind::Unknown) continue;
    AddedToken a;
    a.id = int32_t(i);
    a.text = v.tokens[i];
    a.special = k != TokenKind::UserDefined;
    if (phi3) a.rstrip = a.special || a.text == "</s>";
    if (phi3 && (a.text == "<unk>" || a.text == "<s>" || a.text == "<|endoftext|>")) a.rstrip = false;
    v.added.push_back(std::move(a));
  }
}

void configure_spm(const GgufFile& g, Vocab& v) {
  v.merging = Vocab::Merging::ByScore;
  v.decoding = Vocab::Decoding::Metaspace;
  v.byte_fallback = true;
  const bool prefix = g.get_bool("tokenizer.ggml.add_space_prefix", true);
  if (prefix) v.normalizers.push_back({Normalizer::Kind::Prepend, "\xE2\x96\x81", ""});
  v.normalizers.push_back({Normalizer::Kind::Replace, " ", "\xE2\x96\x81"});
  v.strip_leading_space = prefix;
  v.unk_id = token_id(g, "tokenizer.ggml.unknown_token_id", 0, v.tokens.size());
  v.bos_id = token_id(g, "tokenizer.ggml.bos_token_id", 1, v.tokens.size());
  v.eos_id = token_id(g, "tokenizer.ggml.eos_token_id", 2, v.tokens.size());
  v.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", true);
}

void configure_byte_level(const GgufFile& g, Vocab& v) {
  v.merging = Vocab::Merging::ByRank;
  v.decoding = Vocab::Decoding::ByteLevel;
  v.map_bytes = true;
  const std::string pre = g.get_string("tokenizer.ggml.pre", "default");
  v.pre = PreTokenizer::for_gguf_pre(pre);
  v.ignore_merges = pre == "llama-bpe" || pre == "llama3";
  const auto merges = required_strings(g, "tokenizer.ggml.merges");
  v.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos)
      throw Error(g.path() + ": tokenizer.ggml.merges[" + std::to_string(r) + "] '" + m +
                  "' is not two tokens separated by a space");
    v.add_merge(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1), int32_t(r));
  }
  v.unk_id = token_id(g, "tokenizer.ggml.unknown_token_id", -1, v.tokens.size());
  v.bos_id = token_id(g, "tokenizer.ggml.bos_token_id", -1, v.tokens.size());
  v.eos_id = token_id(g, "tokenizer.ggml.eos_token_id", -1, v.tokens.size());
  v.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", false);
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& g) {
  Vocab v;
  v.source = g.path();
  const std::string model = g.get_string("tokenizer.ggml.model", "");
  if (model.empty()) throw Error(g.path() + ": missing tokenizer.ggml.model (no tokenizer in this file)");
  load_token_table(g, v);
  if (model == "llama")
    configure_spm(g, v);
  else if (model == "gpt2")
    configure_byte_level(g, v);
  else
    throw Error(g.path() + ": tokenizer.ggml.model '" + model +
                "' is not supported (supported: llama, gpt2)");
  v.eot_id = token_id(g, "tokenizer.ggml.eot_token_id", -1, v.tokens.size());
  v.pad_id = token_id(g, "tokenizer.ggml.padding_token_id", -1, v.tokens.size());
  v.chat_template = g.get_string("tokenizer.chat_template", "");
  collect_added_tokens(g, v);
  return std::make_unique<Tokenizer>(std::move(v));
}

}  // namespace pensieve
