// Tokenizer from a Hugging Face folder: tokenizer.json (model, normalizer, pre-tokenizer, decoder,
// added tokens) and tokenizer_config.json (BOS/EOS, add_bos_token, chat template).
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"
#include "util/error.h"

namespace pensieve {

namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

// "bos_token": "<s>" or {"content": "<s>", ...} or null.
std::string token_field(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

void load_normalizer(const json& j, Vocab& v, const std::string& path) {
  if (j.is_null()) return;
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : j.at("normalizers")) load_normalizer(sub, v, path);
  } else if (type == "NFC") {
    v.normalizers.push_back({Normalizer::Kind::Nfc, "", ""});
  } else if (type == "Prepend") {
    v.normalizers.push_back({Normalizer::Kind::Prepend, j.at("prepend").get<std::string>(), ""});
  } else if (type == "Replace") {
    const json& pat = j.at("pattern");
    if (!pat.contains("String"))
      throw Error(path + ": normalizer Replace with a regex pattern is not supported");
    v.normalizers.push_back({Normalizer::Kind::Replace, pat.at("String").get<std::string>(),
                             j.at("content").get<std::string>()});
  } else if (type == "Lowercase") {
    v.normalizers.push_back({Normalizer::Kind::Lowercase, "", ""});
  } else if (type == "Strip") {
    Normalizer n{Normalizer::Kind::Strip, "", ""};
    n.strip_left = j.value("strip_left", false);
    n.strip_right = j.value("strip_right", false);
    v.normalizers.push_back(n);
  } else {
    throw Error(path + ": unsupported normalizer type '" + type + "'");
  }
}

// Reads the decoder chain: byte-level, or SentencePiece style (Metaspace, or Replace ▁ + ByteFallback
// + Fuse + Strip), and whether one leading space is dropped.
void load_decoder(const json& j, Vocab& v) {
  if (j.is_null()) return;
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : j.at("decoders")) load_decoder(sub, v);
  } else if (type == "ByteLevel") {
    v.decoding = Vocab::Decoding::ByteLevel;
  } else if (type == "Metaspace") {
    v.decoding = Vocab::Decoding::Metaspace;
    const std::string scheme = j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    v.strip_leading_space = scheme != "never";
  } else if (type == "Replace") {
    const json& pat = j.value("pattern", json::object());
    if (pat.value("String", "") == "\xE2\x96\x81") v.decoding = Vocab::Decoding::Metaspace;
  } else if (type == "Strip") {
    if (j.value("content", "") == " " && j.value("start", 0) >= 1) v.strip_leading_space = true;
  }
  // ByteFallback and Fuse need nothing: byte tokens decode to their byte, pieces are concatenated.
}

void load_model(const json& m, Vocab& v, const std::string& path) {
  const std::string type = m.value("type", "BPE");
  if (type != "BPE") throw Error(path + ": model type '" + type + "' is not supported (only BPE)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && m[k].is_string() && !m[k].get<std::string>().empty())
      throw Error(path + ": BPE " + k + " is not supported");
  const json& vocab = m.at("vocab");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > 10'000'000) throw Error(path + ": vocab id " + std::to_string(id) + " out of range");
    if (size_t(id) >= v.tokens.size()) v.tokens.resize(id + 1);
    v.tokens[id] = it.key();
  }
  v.byte_fallback = m.value("byte_fallback", false);
  v.ignore_merges = m.value("ignore_merges", false);
  v.fuse_unk = m.value("fuse_unk", false);
}

void load_merges(const json& m, Vocab& v) {
  const json& merges = m.at("merges");
  v.merges.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& e : merges) {
    if (e.is_array() && e.size() == 2) {
      v.add_merge(e[0].get<std::string>(), e[1].get<std::string>(), rank);
    } else {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos)
        throw Error(v.source + ": merge #" + std::to_string(rank) + " '" + s + "' is not two tokens");
      v.add_merge(std::string_view(s).substr(0, sp), std::string_view(s).substr(sp + 1), rank);
    }
    ++rank;
  }
}

void load_added_tokens(const json& list, Vocab& v) {
  for (const auto& a : list) {
    AddedToken t;
    t.id = a.at("id").get<int32_t>();
    t.text = a.at("content").get<std::string>();
    t.special = a.value("special", false);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    if (t.id < 0 || t.id > 10'000'000) throw Error(v.source + ": added token id out of range");
    if (size_t(t.id) >= v.tokens.size()) v.tokens.resize(t.id + 1);
    v.tokens[t.id] = t.text;
    v.added.push_back(std::move(t));
  }
}

void assign_kinds(Vocab& v) {
  v.kinds.assign(v.tokens.size(), TokenKind::Normal);
  static const std::regex byte_token("<0x[0-9A-F]{2}>");
  if (v.byte_fallback)
    for (size_t i = 0; i < v.tokens.size(); ++i)
      if (v.tokens[i].size() == 6 && std::regex_match(v.tokens[i], byte_token)) v.kinds[i] = TokenKind::Byte;
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.tokens[i].empty()) v.kinds[i] = TokenKind::Unused;
  for (const auto& a : v.added) v.kinds[a.id] = a.special ? TokenKind::Control : TokenKind::UserDefined;
}

std::string chat_template_of(const json& cfg) {
  if (!cfg.contains("chat_template")) return "";
  const json& t = cfg["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const auto& e : t)
      if (e.is_object() && e.value("name", "") == "default") return e.value("template", "");
  return "";
}

// Whether BOS is prepended: tokenizer_config's add_bos_token, else the post-processor template,
// else the known default of Llama 3 style vocabularies.
bool add_bos_of(const json& tok, const json& cfg, const Vocab& v) {
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) return cfg["add_bos_token"].get<bool>();
  if (v.bos_id < 0) return false;
  const json& pp = tok.value("post_processor", json());
  auto template_starts_with_bos = [&](const json& p) {
    if (!p.is_object() || p.value("type", "") != "TemplateProcessing") return false;
    const json& single = p.value("single", json::array());
    return !single.empty() && single[0].contains("SpecialToken") &&
           single[0]["SpecialToken"].value("id", "") == v.tokens[v.bos_id];
  };
  if (template_starts_with_bos(pp)) return true;
  if (pp.is_object() && pp.value("type", "") == "Sequence")
    for (const auto& p : pp.value("processors", json::array()))
      if (template_starts_with_bos(p)) return true;
  return v.tokens[v.bos_id] == "<|begin_of_text|>";
}

// The settings tokenizer_config.json and generation_config.json hold: special ids, BOS policy, the
// chat template, extra stop ids.
void load_configs(const json& tok, const json& cfg, const json& gen, Vocab& v) {
  auto id_of = [&](const std::string& text) { return text.empty() ? -1 : v.find(text); };
  v.bos_id = id_of(token_field(cfg, "bos_token"));
  v.eos_id = id_of(token_field(cfg, "eos_token"));
  v.pad_id = id_of(token_field(cfg, "pad_token"));
  v.add_bos = add_bos_of(tok, cfg, v);
  v.chat_template = chat_template_of(cfg);
  // eos_token_id may be one id or a list of them.
  const json eos = gen.is_object() ? gen.value("eos_token_id", json()) : json();
  for (const json& e : eos.is_array() ? eos : json::array({eos}))
    if (e.is_number_integer() && e.get<int64_t>() >= 0 && e.get<int64_t>() < int64_t(v.tokens.size()))
      v.extra_stop_ids.push_back(int32_t(e.get<int64_t>()));
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string tok_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  const json tok = read_json(tok_path);
  const json cfg = fs::exists(cfg_path) ? read_json(cfg_path) : json::object();
  const json gen = fs::exists(gen_path) ? read_json(gen_path) : json::object();
  if (!tok.is_object()) throw Error(tok_path + ": expected a JSON object");
  if (!cfg.is_object()) throw Error(cfg_path + ": expected a JSON object");
  Vocab v;
  v.source = tok_path;
  try {
    const json& model = tok.at("model");
    load_model(model, v, tok_path);
    load_added_tokens(tok.value("added_tokens", json::array()), v);
    assign_kinds(v);
    v.build_index();
    load_merges(model, v);
    load_normalizer(tok.value("normalizer", json()), v, tok_path);
    v.pre = PreTokenizer::from_hf_json(tok.value("pre_tokenizer", json()));
    v.decoding = Vocab::Decoding::Plain;
    load_decoder(tok.value("decoder", json()), v);
    v.map_bytes = v.decoding == Vocab::Decoding::ByteLevel;
    if (model.contains("unk_token") && model["unk_token"].is_string())
      v.unk_id = v.find(model["unk_token"].get<std::string>());
  } catch (const json::exception& e) {
    throw Error(tok_path + ": unexpected structure: " + e.what());
  }
  try {
    load_configs(tok, cfg, gen, v);
  } catch (const json::exception& e) {
    throw Error(dir + ": unexpected structure in tokenizer_config.json or generation_config.json: " + e.what());
  }
  return std::make_unique<Tokenizer>(std::move(v));
}

}  // namespace pensieve
