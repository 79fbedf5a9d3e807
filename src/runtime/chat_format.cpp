#include "runtime/chat_format.h"

#include <ctime>
#include <map>

#include "text/chat_template.h"
#include "util/error.h"

namespace pensieve {

using json = nlohmann::ordered_json;

namespace {

// Markers that no real conversation contains; a probe passes when its marker is in the output.
constexpr const char* kSysProbe = "PSV-SYSTEM-PROBE-7c1e";
constexpr const char* kUserProbe = "PSV-USER-PROBE-7c1e";
constexpr const char* kToolProbe = "psv_probe_tool_7c1e";
constexpr const char* kCallProbe = "psv_probe_call_7c1e";
constexpr const char* kArgProbe = "psv_probe_arg_7c1e";
constexpr const char* kResultProbe = "PSV-RESULT-PROBE-7c1e";

// Mistral's template insists on tool call ids of exactly nine letters or digits.
std::string nine_char_id(const std::string& id) {
  static const char* alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
  std::string out;
  for (int i = 0; i < 9; ++i, h /= 62) out += alnum[h % 62];
  return out;
}

json probe_tools() {
  json params = {{"type", "object"},
                 {"properties", {{kArgProbe, {{"type", "string"}, {"description", "a value"}}}}},
                 {"required", {kArgProbe}}};
  json fn = {{"name", kToolProbe}, {"description", "A probe."}, {"parameters", params}};
  return json::array({{{"type", "function"}, {"function", fn}}});
}

// Tools as every template can read them: some templates print each tool's and each parameter's
// description and walk `parameters.properties` / `.required` without checking that they exist.
json normalized_tools(const json& tools) {
  json out = tools;
  for (auto& t : out) {
    if (!t.is_object()) continue;
    json& fn = t.contains("function") && t["function"].is_object() ? t["function"] : t;
    if (!fn.contains("description")) fn["description"] = "";
    if (!fn.contains("parameters") || !fn["parameters"].is_object()) fn["parameters"] = {{"type", "object"}};
    json& params = fn["parameters"];
    if (!params.contains("properties") || !params["properties"].is_object()) params["properties"] = json::object();
    if (!params.contains("required") || !params["required"].is_array()) params["required"] = json::array();
    for (auto& [name, prop] : params["properties"].items())
      if (prop.is_object() && !prop.contains("description")) prop["description"] = "";
  }
  return out;
}

// Today's date, for templates that print it from a `datetime` variable (FireFunction).
std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%d %b %Y", &tm);
  return buf;
}

// FireFunction's template reads the tools from `functions`, as JSON text.
std::string functions_text(const json& tools) {
  if (!tools.is_array()) return "";
  json list = json::array();
  for (const auto& t : tools) list.push_back(t.contains("function") ? t["function"] : t);
  return list.dump(2);
}

}  // namespace

ChatFormatter::ChatFormatter(std::string source, std::string bos_token, std::string eos_token)
    : template_(std::make_unique<ChatTemplate>(std::move(source))),
      bos_(std::move(bos_token)),
      eos_(std::move(eos_token)) {
  probe();
}

ChatFormatter::~ChatFormatter() = default;
ChatFormatter::ChatFormatter(ChatFormatter&&) noexcept = default;
ChatFormatter& ChatFormatter::operator=(ChatFormatter&&) noexcept = default;

std::string ChatFormatter::try_render(const json& ctx, bool& ok) const {
  try {
    ok = true;
    return template_->render(ctx);
  } catch (const Error&) {
    ok = false;
    return {};
  }
}

void ChatFormatter::probe() {
  const std::string src = template_->source();
  auto base = [&](json messages) {
    json ctx;
    ctx["messages"] = std::move(messages);
    ctx["add_generation_prompt"] = true;
    ctx["bos_token"] = bos_;
    ctx["eos_token"] = eos_;
    ctx["functions"] = "";
    ctx["datetime"] = today();
    return ctx;
  };
  auto has = [](const std::string& out, const char* marker) { return out.find(marker) != std::string::npos; };
  bool ok = false;
  const json user = {{"role", "user"}, {"content", kUserProbe}};

  std::string out = try_render(base(json::array({{{"role", "system"}, {"content", kSysProbe}}, user})), ok);
  caps_.system_role = ok && has(out, kSysProbe) && has(out, kUserProbe);

  json with_tools = base(json::array({user}));
  with_tools["tools"] = normalized_tools(probe_tools());
  with_tools["functions"] = functions_text(probe_tools());
  out = try_render(with_tools, ok);
  caps_.tools = ok && has(out, kToolProbe);

  auto call_turn = [&](bool string_args) {
    json args = {{kArgProbe, "x"}};
    json fn = {{"name", kCallProbe}, {"arguments", string_args ? json(args.dump()) : args}};
    return json{{"role", "assistant"},
                {"content", ""},
                {"tool_calls", json::array({{{"id", "a1b2c3d4e"}, {"type", "function"}, {"function", fn}}})}};
  };
  for (bool string_args : {false, true}) {
    json ctx = base(json::array({user, call_turn(string_args)}));
    if (caps_.tools) ctx["tools"] = probe_tools();
    out = try_render(ctx, ok);
    if (ok && has(out, kCallProbe) && has(out, kArgProbe)) {
      caps_.tool_calls = true;
      caps_.string_arguments = string_args;
      break;
    }
  }

  json calls = caps_.tool_calls ? call_turn(caps_.string_arguments)
                                : json{{"role", "assistant"}, {"content", "calling"}};
  json result = {{"role", "tool"}, {"tool_call_id", "a1b2c3d4e"}, {"name", kCallProbe}, {"content", kResultProbe}};
  json ctx = base(json::array({user, calls, result}));
  if (caps_.tools) ctx["tools"] = probe_tools();
  out = try_render(ctx, ok);
  caps_.tool_responses = ok && has(out, kResultProbe);

  format_ = detect_tool_call_format(src);
}

json ChatFormatter::context(const ChatPrompt& prompt) const {
  // The system prompt: every system message, in order, plus (when the template cannot show the
  // tools) their description.
  std::string system;
  auto add_system = [&](const std::string& text) {
    if (text.empty()) return;
    if (!system.empty()) system += "\n\n";
    system += text;
  };
  for (const auto& m : prompt.messages)
    if (m.role == "system") add_system(m.content);
  const bool has_tools = prompt.tools.is_array() && !prompt.tools.empty();
  if (has_tools && !caps_.tools) add_system(tools_prompt(prompt.tools, format_));

  const bool mistral_ids = format_ == ToolCallFormat::Mistral;
  auto call_id = [&](const std::string& id) { return mistral_ids ? nine_char_id(id) : id; };
  std::map<std::string, std::string> call_names;  // id -> tool name, for tool results

  json messages = json::array();
  if (!system.empty() && caps_.system_role) messages.push_back({{"role", "system"}, {"content", system}});
  bool folded = system.empty() || caps_.system_role;
  for (const auto& m : prompt.messages) {
    if (m.role == "system") continue;
    if (m.role == "assistant") {
      std::string text = m.content;
      json turn = {{"role", "assistant"}};
      for (const auto& c : m.tool_calls) call_names[c.id] = c.name;
      if (!m.tool_calls.empty() && caps_.tool_calls) {
        json calls = json::array();
        for (const auto& c : m.tool_calls) {
          json fn = {{"name", c.name},
                     {"arguments", caps_.string_arguments ? json(c.arguments.dump()) : c.arguments}};
          calls.push_back({{"id", call_id(c.id)}, {"type", "function"}, {"function", fn}});
        }
        turn["content"] = text;
        turn["tool_calls"] = std::move(calls);
      } else {
        if (!m.tool_calls.empty()) {
          if (!text.empty()) text += "\n";
          text += format_tool_calls(format_, m.tool_calls);
        }
        turn["content"] = text;
      }
      messages.push_back(std::move(turn));
      continue;
    }
    // A user turn: its tool results first (as the model's tool turns, or as text), then its text.
    std::string text;
    for (const auto& r : m.tool_results) {
      const auto name = call_names.find(r.tool_call_id);
      const std::string content = r.is_error ? "Error: " + r.content : r.content;
      if (caps_.tool_responses) {
        json t = {{"role", "tool"}, {"tool_call_id", call_id(r.tool_call_id)}};
        if (name != call_names.end()) t["name"] = name->second;
        t["content"] = content;
        messages.push_back(std::move(t));
      } else {
        if (!text.empty()) text += "\n";
        text += "<tool_response>\n" + content + "\n</tool_response>";
      }
    }
    if (!m.content.empty()) {
      if (!text.empty()) text += "\n\n";
      text += m.content;
    }
    if (!text.empty() || m.tool_results.empty() || !caps_.tool_responses) {
      if (!folded) {
        text = system + "\n\n" + text;
        folded = true;
      }
      messages.push_back({{"role", m.role}, {"content", text}});
    }
  }
  if (!folded) {
    // No user turn to carry it: the system prompt becomes the first one.
    messages.insert(messages.begin(), json{{"role", "user"}, {"content", system}});
  }
  if (messages.empty()) messages.push_back({{"role", "user"}, {"content", ""}});

  json ctx;
  ctx["messages"] = std::move(messages);
  ctx["add_generation_prompt"] = prompt.add_generation_prompt;
  ctx["bos_token"] = bos_;
  ctx["eos_token"] = eos_;
  if (has_tools && caps_.tools) {
    ctx["tools"] = normalized_tools(prompt.tools);
    ctx["functions"] = functions_text(prompt.tools);
  } else {
    ctx["functions"] = "";
  }
  ctx["datetime"] = today();
  return ctx;
}

std::string ChatFormatter::render(const ChatPrompt& prompt) const { return template_->render(context(prompt)); }

}  // namespace pensieve
