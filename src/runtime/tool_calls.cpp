#include "runtime/tool_calls.h"

#include <algorithm>
#include <functional>

#include "runtime/grammar.h"
#include "util/error.h"

namespace pensieve {

using json = nlohmann::ordered_json;

namespace {

// DeepSeek R1's markers use U+FF5C (fullwidth vertical line) and U+2581 (lower one eighth block).
const std::string kDsCallsBegin = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "calls\xE2\x96\x81" "begin\xEF\xBD\x9C>";
const std::string kDsCallsEnd = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "calls\xE2\x96\x81" "end\xEF\xBD\x9C>";
const std::string kDsCallBegin = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "call\xE2\x96\x81" "begin\xEF\xBD\x9C>";
const std::string kDsCallEnd = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "call\xE2\x96\x81" "end\xEF\xBD\x9C>";
const std::string kDsSep = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "sep\xEF\xBD\x9C>";

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

bool all_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(), is_space);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::optional<json> parse_json(std::string_view text) {
  json v = json::parse(text.begin(), text.end(), nullptr, false);
  if (v.is_discarded()) return std::nullopt;
  return v;
}

// A ```json fence around a body, as Command R and DeepSeek write it.
std::string_view strip_fence(std::string_view s) {
  s = trim(s);
  if (s.rfind("```", 0) == 0) {
    const size_t nl = s.find('\n');
    s = nl == std::string_view::npos ? std::string_view() : s.substr(nl + 1);
    s = trim(s);
    if (s.size() >= 3 && s.substr(s.size() - 3) == "```") s.remove_suffix(3);
  }
  return trim(s);
}

// Arguments must end as an object; a JSON string holding an object is accepted (OpenAI style).
std::optional<json> arguments_object(const json& v) {
  if (v.is_object()) return v;
  if (v.is_string()) {
    auto inner = parse_json(v.get_ref<const std::string&>());
    if (inner && inner->is_object()) return inner;
  }
  return std::nullopt;
}

// {"name": …, ARGS: {…}} with ARGS the first of `arg_keys` present (absent: no arguments).
std::optional<ToolCall> call_from_object(const json& v, const char* name_key,
                                         std::initializer_list<const char*> arg_keys, const char* id_key = nullptr) {
  if (!v.is_object()) return std::nullopt;
  auto n = v.find(name_key);
  if (n == v.end() || !n->is_string() || n->get_ref<const std::string&>().empty()) return std::nullopt;
  ToolCall call;
  call.name = n->get<std::string>();
  for (const char* key : arg_keys) {
    auto a = v.find(key);
    if (a == v.end()) continue;
    auto args = arguments_object(*a);
    if (!args) return std::nullopt;
    call.arguments = std::move(*args);
    break;
  }
  if (id_key) {
    auto id = v.find(id_key);
    if (id != v.end() && id->is_string()) call.id = id->get<std::string>();
  }
  return call;
}

using Pieces = std::vector<OutputPiece>;

OutputPiece call_piece(ToolCall c) {
  OutputPiece p;
  p.kind = OutputPiece::Kind::Call;
  p.call = std::move(c);
  return p;
}

// One JSON object (or a list of them) of calls.
std::optional<Pieces> parse_calls_json(std::string_view body, const char* name_key,
                                       std::initializer_list<const char*> arg_keys, const char* id_key,
                                       bool list) {
  auto v = parse_json(trim(body));
  if (!v) return std::nullopt;
  Pieces out;
  if (list && v->is_array()) {
    if (v->empty()) return std::nullopt;
    for (const auto& item : *v) {
      auto c = call_from_object(item, name_key, arg_keys, id_key);
      if (!c) return std::nullopt;
      out.push_back(call_piece(std::move(*c)));
    }
    return out;
  }
  auto c = call_from_object(*v, name_key, arg_keys, id_key);
  if (!c) return std::nullopt;
  out.push_back(call_piece(std::move(*c)));
  return out;
}

std::optional<Pieces> parse_hermes(std::string_view body) {
  return parse_calls_json(body, "name", {"arguments", "parameters"}, nullptr, false);
}

std::optional<Pieces> parse_llama(std::string_view body) {
  return parse_calls_json(body, "name", {"parameters", "arguments"}, nullptr, false);
}

std::optional<Pieces> parse_mistral(std::string_view body) {
  return parse_calls_json(body, "name", {"arguments", "parameters"}, "id", true);
}

std::optional<Pieces> parse_command_r(std::string_view body) {
  return parse_calls_json(strip_fence(body), "tool_name", {"parameters", "arguments"}, "tool_call_id", true);
}

// NAME>{…}
std::optional<Pieces> parse_functionary_v31(std::string_view body) {
  const size_t gt = body.find('>');
  if (gt == std::string_view::npos || gt == 0) return std::nullopt;
  auto args = parse_json(trim(body.substr(gt + 1)));
  if (!args) return std::nullopt;
  auto obj = arguments_object(*args);
  if (!obj) return std::nullopt;
  ToolCall c;
  c.name = std::string(trim(body.substr(0, gt)));
  c.arguments = std::move(*obj);
  return Pieces{call_piece(std::move(c))};
}

// NAME\n{…}, or all\nTEXT (text for the user).
std::optional<Pieces> parse_functionary_v32(std::string_view body) {
  const size_t nl = body.find('\n');
  const std::string_view name = trim(body.substr(0, nl));
  const std::string_view rest = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
  if (name == "all") {
    OutputPiece p;
    p.text = std::string(rest);
    return Pieces{p};
  }
  if (name.empty() || nl == std::string_view::npos) return std::nullopt;
  auto args = parse_json(trim(rest));
  if (!args) return std::nullopt;
  auto obj = arguments_object(*args);
  if (!obj) return std::nullopt;
  ToolCall c;
  c.name = std::string(name);
  c.arguments = std::move(*obj);
  return Pieces{call_piece(std::move(c))};
}

// <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{…}\n```<｜tool▁call▁end｜>, repeated.
std::optional<Pieces> parse_deepseek(std::string_view body) {
  Pieces out;
  std::string_view rest = trim(body);
  while (!rest.empty()) {
    if (rest.rfind(kDsCallBegin, 0) != 0) return std::nullopt;
    rest.remove_prefix(kDsCallBegin.size());
    const size_t sep = rest.find(kDsSep);
    const size_t end = rest.find(kDsCallEnd);
    if (sep == std::string_view::npos || end == std::string_view::npos || sep > end) return std::nullopt;
    std::string_view call = rest.substr(sep + kDsSep.size(), end - sep - kDsSep.size());
    const size_t nl = call.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    auto args = parse_json(strip_fence(call.substr(nl + 1)));
    if (!args) return std::nullopt;
    auto obj = arguments_object(*args);
    if (!obj) return std::nullopt;
    ToolCall c;
    c.name = std::string(trim(call.substr(0, nl)));
    if (c.name.empty()) return std::nullopt;
    c.arguments = std::move(*obj);
    out.push_back(call_piece(std::move(c)));
    rest = trim(rest.substr(end + kDsCallEnd.size()));
  }
  if (out.empty()) return std::nullopt;
  return out;
}

}  // namespace

struct ToolCallParser::Syntax {
  std::string start;
  std::string end;                 // "": the call runs to the end of the output (or to complete JSON)
  bool json_end = false;           // the call ends once its body is one complete JSON value
  bool answer_start_only = false;  // the marker counts only as the first thing in the answer
  bool keep_start = false;         // the marker is part of the body (Llama's bare "{")
  bool reopen = false;             // the end marker also opens the next call
  std::function<std::optional<Pieces>(std::string_view)> parse;
};

const char* tool_call_format_name(ToolCallFormat f) {
  switch (f) {
    case ToolCallFormat::Generic: return "generic";
    case ToolCallFormat::Hermes: return "hermes";
    case ToolCallFormat::Llama3: return "llama3";
    case ToolCallFormat::Mistral: return "mistral";
    case ToolCallFormat::FunctionaryV31: return "functionary-v3.1";
    case ToolCallFormat::FunctionaryV32: return "functionary-v3.2";
    case ToolCallFormat::CommandR: return "command-r";
    case ToolCallFormat::CommandR7B: return "command-r7b";
    case ToolCallFormat::DeepSeekR1: return "deepseek-r1";
    case ToolCallFormat::FireFunction: return "firefunction";
  }
  return "?";
}

ToolCallFormat detect_tool_call_format(std::string_view src) {
  auto has = [&](std::string_view s) { return src.find(s) != std::string_view::npos; };
  if (has(kDsCallsBegin)) return ToolCallFormat::DeepSeekR1;
  if (has("[TOOL_CALLS]")) return ToolCallFormat::Mistral;
  if (has("<function=")) return ToolCallFormat::FunctionaryV31;
  if (has(">>>all") || (has(">>>") && has("recipient"))) return ToolCallFormat::FunctionaryV32;
  if (has("<|START_ACTION|>")) return ToolCallFormat::CommandR7B;
  if (has("Action:") && has("```json")) return ToolCallFormat::CommandR;
  if (has("functools")) return ToolCallFormat::FireFunction;
  if (has("<tool_call>")) return ToolCallFormat::Hermes;
  if (has("<|python_tag|>") || (has("ipython") && has("<|start_header_id|>"))) return ToolCallFormat::Llama3;
  return ToolCallFormat::Generic;
}

std::string format_tool_calls(ToolCallFormat f, const std::vector<ToolCall>& calls) {
  std::string out;
  auto list = [&](const char* name_key, const char* args_key) {
    json l = json::array();
    for (const auto& c : calls) l.push_back({{name_key, c.name}, {args_key, c.arguments}});
    return l.dump();
  };
  switch (f) {
    case ToolCallFormat::Generic:
    case ToolCallFormat::Hermes:
      for (const auto& c : calls) {
        if (!out.empty()) out += "\n";
        out += "<tool_call>\n" + json{{"name", c.name}, {"arguments", c.arguments}}.dump() + "\n</tool_call>";
      }
      return out;
    case ToolCallFormat::Llama3:
      for (const auto& c : calls) {
        if (!out.empty()) out += "\n";
        out += json{{"name", c.name}, {"parameters", c.arguments}}.dump();
      }
      return out;
    case ToolCallFormat::Mistral: return "[TOOL_CALLS]" + list("name", "arguments");
    case ToolCallFormat::FunctionaryV31:
      for (const auto& c : calls) out += "<function=" + c.name + ">" + c.arguments.dump() + "</function>";
      return out;
    case ToolCallFormat::FunctionaryV32:
      for (const auto& c : calls) out += (out.empty() ? "" : ">>>") + c.name + "\n" + c.arguments.dump();
      return out;
    case ToolCallFormat::CommandR: return "Action: ```json\n" + list("tool_name", "parameters") + "\n```";
    case ToolCallFormat::CommandR7B: return "<|START_ACTION|>" + list("tool_name", "parameters") + "<|END_ACTION|>";
    case ToolCallFormat::DeepSeekR1:
      out = kDsCallsBegin;
      for (const auto& c : calls)
        out += kDsCallBegin + "function" + kDsSep + c.name + "\n```json\n" + c.arguments.dump() + "\n```" + kDsCallEnd;
      return out + kDsCallsEnd;
    case ToolCallFormat::FireFunction: return "functools" + list("name", "arguments");
  }
  return out;
}

std::string tools_prompt(const json& tools, ToolCallFormat format) {
  std::string out =
      "# Tools\n\nYou may call one or more of these tools to answer the user. Their JSON descriptions:\n";
  for (const auto& t : tools) {
    const json& fn = t.contains("function") ? t["function"] : t;
    out += fn.dump() + "\n";
  }
  ToolCall example;
  example.name = "TOOL_NAME";
  example.arguments = {{"ARGUMENT", "VALUE"}};
  std::string syntax = format_tool_calls(format, {example});
  if (format == ToolCallFormat::FunctionaryV32) syntax = ">>>" + syntax;
  out += "\nTo call a tool, write only this (once per call) and wait for its result:\n" + syntax +
         "\nWhen no tool is needed, answer the user directly.";
  return out;
}

ToolCallParser::ToolCallParser(ToolCallFormat format) : format_(format) {
  auto add = [&](Syntax s) { syntaxes_.push_back(std::move(s)); };
  switch (format) {
    case ToolCallFormat::Generic:
    case ToolCallFormat::Hermes:
      add({"<tool_call>", "</tool_call>", false, false, false, false, parse_hermes});
      break;
    case ToolCallFormat::Llama3:
      add({"<|python_tag|>", "", true, false, false, false, parse_llama});
      add({"{", "", true, true, true, false, parse_llama});
      break;
    case ToolCallFormat::Mistral:
      add({"[TOOL_CALLS]", "", true, false, false, false, parse_mistral});
      break;
    case ToolCallFormat::FunctionaryV31:
      add({"<function=", "</function>", false, false, false, false, parse_functionary_v31});
      break;
    case ToolCallFormat::FunctionaryV32:
      add({">>>", ">>>", false, false, false, true, parse_functionary_v32});
      open_ = 0;  // the generation prompt ends with ">>>": the answer starts inside a block
      break;
    case ToolCallFormat::CommandR:
      add({"Action:", "", false, false, false, false, parse_command_r});
      break;
    case ToolCallFormat::CommandR7B:
      add({"<|START_ACTION|>", "<|END_ACTION|>", false, false, false, false, parse_command_r});
      break;
    case ToolCallFormat::DeepSeekR1:
      add({kDsCallsBegin, kDsCallsEnd, false, false, false, false, parse_deepseek});
      break;
    case ToolCallFormat::FireFunction:
      add({"functools", "", true, false, false, false, parse_mistral});
      break;
  }
}

ToolCallParser::~ToolCallParser() = default;
ToolCallParser::ToolCallParser(ToolCallParser&&) noexcept = default;
ToolCallParser& ToolCallParser::operator=(ToolCallParser&&) noexcept = default;

void ToolCallParser::emit_text(std::string text, std::vector<OutputPiece>& out) {
  if (text.empty()) return;
  if (all_space(text) && (calls_ > 0 || !seen_output_)) {
    // Whitespace between or after calls is not a text block of its own; nor is leading space
    // before the answer has begun (it may still open with a call).
    held_space_ += text;
    return;
  }
  if (calls_ == 0) text = held_space_ + text;  // leading space of an answer that is text after all
  else if (after_call_) text.erase(0, text.find_first_not_of(" \n\t\r"));  // text after a call starts at its first word
  held_space_.clear();
  after_call_ = false;
  seen_output_ = true;
  if (!out.empty() && out.back().kind == OutputPiece::Kind::Text) out.back().text += text;
  else out.push_back({OutputPiece::Kind::Text, std::move(text), {}});
}

bool ToolCallParser::body_complete() const {
  const std::string_view body = trim(pending_);
  if (body.empty() || (body.back() != '}' && body.back() != ']')) return false;
  return json::accept(body.begin(), body.end());
}

void ToolCallParser::close_call(const std::string& body, bool complete, std::vector<OutputPiece>& out) {
  const Syntax& s = syntaxes_[open_];
  auto parsed = s.parse(body);
  if (parsed) {
    for (auto& p : *parsed) {
      if (p.kind == OutputPiece::Kind::Call) {
        held_space_.clear();
        seen_output_ = true;
        after_call_ = true;
        ++calls_;
        out.push_back(std::move(p));
      } else {
        emit_text(std::move(p.text), out);
      }
    }
  } else {
    // Not a call after all: the model's words, markers included, are its answer.
    std::string raw = (s.keep_start ? "" : s.start) + body + (complete && !s.reopen ? s.end : "");
    if (format_ == ToolCallFormat::FunctionaryV32 && calls_ == 0 && !seen_output_ && raw.rfind(">>>", 0) == 0)
      raw.erase(0, 3);  // the ">>>" that opens the answer came from the prompt
    held_space_.clear();
    seen_output_ = true;
    if (!out.empty() && out.back().kind == OutputPiece::Kind::Text) out.back().text += raw;
    else out.push_back({OutputPiece::Kind::Text, std::move(raw), {}});
  }
}

void ToolCallParser::step(std::vector<OutputPiece>& out, bool at_end) {
  for (;;) {
    if (open_ < 0) {
      // Find the earliest marker that opens a call.
      size_t best = std::string::npos;
      int which = -1;
      const size_t first_char = pending_.find_first_not_of(" \n\t\r");
      for (size_t i = 0; i < syntaxes_.size(); ++i) {
        const Syntax& s = syntaxes_[i];
        size_t at;
        if (s.answer_start_only) {
          if (seen_output_ || first_char == std::string::npos) continue;
          at = pending_.compare(first_char, s.start.size(), s.start) == 0 ? first_char : std::string::npos;
        } else {
          at = pending_.find(s.start);
        }
        if (at < best) best = at, which = int(i);
      }
      if (which >= 0) {
        const Syntax& s = syntaxes_[which];
        emit_text(pending_.substr(0, best), out);
        pending_.erase(0, best + (s.keep_start ? 0 : s.start.size()));
        open_ = which;
        continue;
      }
      // Hold back a tail that may still become a marker.
      size_t hold = 0;
      if (!at_end) {
        for (const Syntax& s : syntaxes_) {
          if (s.answer_start_only) {
            if (!seen_output_ && first_char == std::string::npos) hold = std::max(hold, pending_.size());
            continue;
          }
          for (size_t n = std::min(s.start.size() - 1, pending_.size()); n > hold; --n)
            if (pending_.compare(pending_.size() - n, n, s.start, 0, n) == 0) {
              hold = n;
              break;
            }
        }
      }
      emit_text(pending_.substr(0, pending_.size() - hold), out);
      pending_.erase(0, pending_.size() - hold);
      return;
    }
    const Syntax& s = syntaxes_[open_];
    if (!s.end.empty()) {
      const size_t at = pending_.find(s.end);
      if (at != std::string::npos) {
        const std::string body = pending_.substr(0, at);
        pending_.erase(0, at + s.end.size());
        const int was = open_;
        close_call(body, true, out);
        open_ = s.reopen ? was : -1;
        continue;
      }
    } else if (s.json_end && body_complete()) {
      const std::string body = std::exchange(pending_, {});
      close_call(body, true, out);
      open_ = -1;
      continue;
    }
    if (at_end) {
      const std::string body = std::exchange(pending_, {});
      if (!(s.reopen && all_space(body) && calls_ > 0)) close_call(body, false, out);
      open_ = -1;
      held_space_.clear();
    }
    return;
  }
}

std::vector<OutputPiece> ToolCallParser::push(std::string_view text) {
  std::vector<OutputPiece> out;
  pending_ += text;
  step(out, false);
  return out;
}

std::vector<OutputPiece> ToolCallParser::finish() {
  std::vector<OutputPiece> out;
  step(out, true);
  if (!held_space_.empty() && calls_ == 0) {
    std::string space = std::exchange(held_space_, {});
    out.push_back({OutputPiece::Kind::Text, std::move(space), {}});
  }
  held_space_.clear();
  return out;
}

// ---- forced calls ----

// A JSON string literal of the name, as the model must write it.
static std::string quoted(const std::string& name) { return nlohmann::json(name).dump(); }

// One call of one tool in the family's syntax: the arguments follow the tool's schema.
static GrammarPtr one_call(ToolCallFormat f, const std::string& name, const GrammarPtr& args) {
  auto lit = [](const std::string& s) { return grammar_literal(s); };
  switch (f) {
    case ToolCallFormat::Generic:
    case ToolCallFormat::Hermes:
      return grammar_sequence({lit("<tool_call>\n{\"name\": " + quoted(name) + ", \"arguments\": "), args, lit("}\n</tool_call>")});
    case ToolCallFormat::Llama3:
      return grammar_sequence({lit("{\"name\": " + quoted(name) + ", \"parameters\": "), args, lit("}")});
    case ToolCallFormat::Mistral:
    case ToolCallFormat::FireFunction:
      return grammar_sequence({lit("{\"name\": " + quoted(name) + ", \"arguments\": "), args, lit("}")});
    case ToolCallFormat::FunctionaryV31:
      return grammar_sequence({lit("<function=" + name + ">"), args, lit("</function>")});
    case ToolCallFormat::FunctionaryV32:
      return grammar_sequence({lit(name + "\n"), args});
    case ToolCallFormat::CommandR:
    case ToolCallFormat::CommandR7B:
      return grammar_sequence({lit("{\"tool_name\": " + quoted(name) + ", \"parameters\": "), args, lit("}")});
    case ToolCallFormat::DeepSeekR1:
      return grammar_sequence({lit(kDsCallBegin + "function" + kDsSep + name + "\n```json\n"), args, lit("\n```" + kDsCallEnd)});
  }
  throw Error("unknown tool-call format");
}

GrammarPtr tool_call_grammar(ToolCallFormat f, const json& tools, const std::string& only, bool parallel) {
  std::vector<GrammarPtr> options;
  for (const auto& t : tools) {
    const json& fn = t.contains("function") ? t["function"] : t;
    const std::string name = fn.value("name", "");
    if (name.empty() || (!only.empty() && name != only)) continue;
    const nlohmann::json schema =
        fn.contains("parameters") ? nlohmann::json::parse(fn["parameters"].dump()) : nlohmann::json{{"type", "object"}};
    options.push_back(one_call(f, name, grammar_json_schema(schema)));
  }
  if (options.empty()) throw Error("tool_call_grammar: no tool named '" + only + "'");
  GrammarPtr call = options.size() == 1 ? options[0] : grammar_choice(options);
  const int most = parallel ? -1 : 1;
  auto lit = [](const std::string& s) { return grammar_literal(s); };
  switch (f) {
    case ToolCallFormat::Generic:
    case ToolCallFormat::Hermes:
      return grammar_repeat(call, 1, most, lit("\n"));
    case ToolCallFormat::Llama3:
      return call;  // one call per answer
    case ToolCallFormat::Mistral:
      return grammar_sequence({lit("[TOOL_CALLS]["), grammar_repeat(call, 1, most, lit(", ")), lit("]")});
    case ToolCallFormat::FireFunction:
      return grammar_sequence({lit(" functools["), grammar_repeat(call, 1, most, lit(", ")), lit("]")});
    case ToolCallFormat::FunctionaryV31:
      return grammar_repeat(call, 1, most);
    case ToolCallFormat::FunctionaryV32:
      return grammar_repeat(call, 1, most, lit(">>>"));
    case ToolCallFormat::CommandR:
      return grammar_sequence({lit("Action: ```json\n["), grammar_repeat(call, 1, most, lit(",\n")), lit("]\n```")});
    case ToolCallFormat::CommandR7B:
      return grammar_sequence({lit("<|START_ACTION|>["), grammar_repeat(call, 1, most, lit(", ")), lit("]<|END_ACTION|>")});
    case ToolCallFormat::DeepSeekR1:
      return grammar_sequence({lit(kDsCallsBegin), grammar_repeat(call, 1, most), lit(kDsCallsEnd)});
  }
  throw Error("unknown tool-call format");
}

}  // namespace pensieve
