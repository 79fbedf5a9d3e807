// `pensieve tokenize` (UTF-8 text on stdin -> JSON array of ids) and `pensieve detokenize` (JSON
// ids on stdin -> text). --model is a .gguf (a vocabulary-only one will do) or a folder holding
// tokenizer.json, so the tokenizer can be checked against other implementations without a model.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

struct TokenizeOptions {
  std::string model;
  bool no_bos = false;
  bool no_special = false;
  bool stats = false;
};

int run_tokenize(const TokenizeOptions& o) {
  auto tok = Tokenizer::from_path(o.model);
  const std::string text = read_stdin();
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text, !o.no_bos && tok->add_bos_default(), !o.no_special);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (o.stats)
    std::fprintf(stderr, "%zu bytes -> %zu tokens in %.3f s (%.2f MB/s, %.0f tokens/s)\n", text.size(),
                 ids.size(), secs, text.size() / 1e6 / secs, ids.size() / secs);
  return 0;
}

std::vector<int32_t> parse_id_array(const std::string& s) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(s);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("stdin: expected a JSON array of token ids: ") + e.what());
  }
  if (!j.is_array()) throw Error("stdin: expected a JSON array of token ids");
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer() || j[i].get<int64_t>() < 0 || j[i].get<int64_t>() > INT32_MAX)
      throw Error("stdin: element " + std::to_string(i) + " (" + j[i].dump() + ") is not a token id");
    ids.push_back(int32_t(j[i].get<int64_t>()));
  }
  return ids;
}

struct DetokenizeOptions {
  std::string model;
  bool skip_special = false;
};

int run_detokenize(const DetokenizeOptions& o) {
  auto tok = Tokenizer::from_path(o.model);
  const auto ids = parse_id_array(read_stdin());
  const std::string text = tok->decode(ids, o.skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

const CommandRegistrar tokenize_command(
    "tokenize", "Tokenize UTF-8 text from stdin; prints a JSON array of token ids",
    [](CLI::App& app) {
      auto o = std::make_shared<TokenizeOptions>();
      app.add_option("--model", o->model, "A .gguf file (vocabulary-only is fine) or a folder with tokenizer.json")
          ->required();
      app.add_flag("--no-bos", o->no_bos, "Do not prepend BOS (by default it is, when the model says so)");
      app.add_flag("--no-special", o->no_special, "Tokenize special-token text such as <|im_start|> as plain text");
      app.add_flag("--stats", o->stats, "Print size, token count and speed to stderr");
      return [o] { return run_tokenize(*o); };
    });

const CommandRegistrar detokenize_command(
    "detokenize", "Turn a JSON array of token ids from stdin back into text",
    [](CLI::App& app) {
      auto o = std::make_shared<DetokenizeOptions>();
      app.add_option("--model", o->model, "A .gguf file (vocabulary-only is fine) or a folder with tokenizer.json")
          ->required();
      app.add_flag("--skip-special", o->skip_special, "Leave out control tokens such as <s> or <|im_end|>");
      return [o] { return run_detokenize(*o); };
    });

}  // namespace
}  // namespace pensieve::cli
