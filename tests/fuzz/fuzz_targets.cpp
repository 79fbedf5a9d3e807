#include "fuzz_targets.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "formats/model_loader.h"
#include "formats/safetensors.h"
#include "server/anthropic_api.h"
#include "server/json_fields.h"
#include "server/openai_api.h"
#include "server/prompt_builder.h"
#include "server/request_reader.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace pensieve::fuzz {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A folder of this process for the targets whose parsers read files.
const fs::path& scratch_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("pensieve-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

fs::path write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  fs::path p = scratch_dir() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p;
}

// A GGUF file as `pensieve serve --model` opens it: its tokenizer and a round trip through it, and
// the model (config, tensor table, weights in place).
void gguf(const uint8_t* data, size_t size) {
  const fs::path p = write_scratch("model.gguf", data, size);
  try {
    GgufFile file = GgufFile::open(p.string());
    auto tok = Tokenizer::from_gguf(file);
    auto ids = tok->encode("Hello, wörld! <|end|>\n\t  12345", true);
    tok->decode(ids);
  } catch (const Error&) {
  }
  try {
    load_model(p.string());
  } catch (const Error&) {
  }
}

// A safetensors file: its JSON header, and every tensor's offsets checked against the file.
void safetensors(const uint8_t* data, size_t size) {
  const fs::path p = write_scratch("model.safetensors", data, size);
  try {
    SafetensorsFile f = SafetensorsFile::open(p.string());
    for (const auto& t : f.tensors()) safetensors_dtype_size(t.dtype);
  } catch (const Error&) {
  }
}

// A Hugging Face config.json to a ModelConfig.
void hf_config(const uint8_t* data, size_t size) {
  json config = json::parse(text_of(data, size), nullptr, false);
  if (config.is_discarded()) return;
  try {
    parse_hf_config(config, nullptr, "config.json");
  } catch (const Error&) {
  }
}

// A tokenizer.json folder to a Tokenizer, then a round trip through it.
void tokenizer_json(const uint8_t* data, size_t size) {
  write_scratch("tokenizer.json", data, size);
  try {
    auto tok = Tokenizer::from_hf_dir(scratch_dir().string());
    auto ids = tok->encode("Hello, wörld! <|end|>\n\t  12345", true);
    tok->decode(ids);
  } catch (const Error&) {
  }
}

ojson sample_context() {
  return ojson::parse(R"({"messages": [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi <b>there</b>"}, {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": "Again"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
}

// A chat template: the Jinja lexer and parser, then the renderer over a chat with tools.
void jinja(const uint8_t* data, size_t size) {
  static const ojson context = sample_context();
  try {
    ChatTemplate t{std::string(text_of(data, size))};
    t.render(context);
  } catch (const Error&) {
  }
}

// A request body the way the chat routes read it (then rendered with a template that prints every
// message and the tools with tojson, as tool-use templates do).
void chat_request(const uint8_t* data, size_t size, bool openai) {
  static const ChatTemplate tmpl(
      "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
      "{% if tools %}{{ tools | tojson }}{% endif %}");
  try {
    ojson body = server::fields::parse_json_text(text_of(data, size));
    server::ChatRequest req = openai ? server::parse_openai_request(body) : server::parse_anthropic_request(body);
    ChatPrompt prompt = server::to_chat_prompt(req, true);
    ojson messages = ojson::array();
    for (const auto& m : prompt.messages) messages.push_back({{"role", m.role}, {"content", m.content}});
    ojson context = {{"messages", messages}, {"tools", prompt.tools}};
    tmpl.render(context);
  } catch (const Error&) {
  }
}
void anthropic_request(const uint8_t* data, size_t size) { chat_request(data, size, false); }
void openai_request(const uint8_t* data, size_t size) { chat_request(data, size, true); }

// Bytes off a connection through the server's request reader, in pieces of the sizes the first
// byte picks, with keep-alive: every request the bytes hold is parsed in turn.
void http_request(const uint8_t* data, size_t size) {
  if (size == 0) return;
  server::ServerConfig config;
  config.max_body_bytes = 1 << 16;
  config.max_header_bytes = 1 << 20;  // past Beast's 16-bit field limits
  const size_t piece = 1 + data[0] % 64;
  boost::beast::flat_buffer buffer;
  size_t at = 1;
  for (int requests = 0; requests < 64; ++requests) {
    server::RequestParser parser;
    server::apply_limits(parser, config);
    server::ReadEnd end = server::parse_buffered(parser, buffer, config);  // pipelined bytes first
    while (end.kind == server::ReadEnd::NeedMore && at < size) {
      const size_t n = std::min(piece, size - at);
      auto dst = buffer.prepare(n);
      std::memcpy(dst.data(), data + at, n);
      buffer.commit(n);
      at += n;
      end = server::parse_buffered(parser, buffer, config);
    }
    if (end.kind != server::ReadEnd::Complete || !parser.get().keep_alive()) return;
  }
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"gguf", gguf},
      {"safetensors", safetensors},
      {"hf_config", hf_config},
      {"tokenizer_json", tokenizer_json},
      {"jinja", jinja},
      {"anthropic_request", anthropic_request},
      {"openai_request", openai_request},
      {"http_request", http_request},
  };
  return all;
}

const Target* find_target(std::string_view name) {
  for (const auto& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace pensieve::fuzz
