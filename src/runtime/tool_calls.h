// Tool calls in model output. Each model family writes a call in its own syntax (the one its chat
// template teaches); the format is chosen once per chat template, and an incremental parser turns
// the generated text into text pieces and complete tool calls as it streams, holding back text
// that may start a call marker so that the syntax never leaks out as text (as StopMatcher does for
// stop strings). A call whose JSON does not parse is returned as text, never an error.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/generator.h"

namespace pensieve {

enum class ToolCallFormat {
  Generic,         // no tool syntax in the template: <tool_call>{"name","arguments"}</tool_call>, taught in the system prompt
  Hermes,          // Hermes 2 Pro / 3, Qwen 2.5–3: <tool_call>{"name","arguments"}</tool_call>
  Llama3,          // Llama 3.1–3.3: {"name","parameters"} as the whole answer, or after <|python_tag|>
  Mistral,         // Mistral / Nemo: [TOOL_CALLS][{"name","arguments","id"}…]
  FunctionaryV31,  // <function=NAME>{…}</function>
  FunctionaryV32,  // >>>NAME\n{…} (the prompt ends with ">>>"; ">>>all\n" is text)
  CommandR,        // Command R+: Action: ```json [{"tool_name","parameters"}…] ```
  CommandR7B,      // Command R7B: <|START_ACTION|>[{"tool_call_id","tool_name","parameters"}…]<|END_ACTION|>
  DeepSeekR1,      // <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{…}\n```<｜tool▁call▁end｜>…
  FireFunction,    // firefunction v2: functools[{"name","arguments"}…]
};

const char* tool_call_format_name(ToolCallFormat f);

// The family's call syntax, read from the chat template's source.
ToolCallFormat detect_tool_call_format(std::string_view template_source);

// The calls written in the family's syntax, exactly as the model would write them (used to show
// earlier calls to a template that cannot render `tool_calls` itself).
std::string format_tool_calls(ToolCallFormat f, const std::vector<ToolCall>& calls);

// For a template that does not render tools: a system-prompt section that lists them (OpenAI
// function form) and shows how to call one in the family's syntax (Generic for most such models).
std::string tools_prompt(const nlohmann::ordered_json& tools, ToolCallFormat format);

// A forced call: the grammar of an answer made only of tool calls in the family's syntax (the
// markers as literals, `name` one of the allowed tools, the arguments valid for that tool's
// `parameters` schema). `only`: the one tool allowed ("" = any of `tools`); `parallel`: several
// calls allowed (one otherwise; Llama 3 writes one per answer). SchemaError when a tool's schema
// uses what the compiler does not support.
GrammarPtr tool_call_grammar(ToolCallFormat format, const nlohmann::ordered_json& tools, const std::string& only,
                             bool parallel);

// One piece of parsed output: text, or a complete tool call.
struct OutputPiece {
  enum class Kind { Text, Call } kind = Kind::Text;
  std::string text;  // Text
  ToolCall call;     // Call (id as the model wrote it, often empty)
};

class ToolCallParser {
 public:
  explicit ToolCallParser(ToolCallFormat format);
  ~ToolCallParser();
  ToolCallParser(ToolCallParser&&) noexcept;
  ToolCallParser& operator=(ToolCallParser&&) noexcept;

  // Appends generated text; returns what is decided: text that cannot begin a call, and calls
  // whose end has been seen.
  std::vector<OutputPiece> push(std::string_view text);
  // End of generation: a call left open is parsed as it stands (its text if it does not parse),
  // and held-back text is released.
  std::vector<OutputPiece> finish();

  int calls() const { return calls_; }  // calls returned so far

 private:
  struct Syntax;
  void emit_text(std::string text, std::vector<OutputPiece>& out);
  void close_call(const std::string& body, bool complete, std::vector<OutputPiece>& out);
  bool body_complete() const;
  void step(std::vector<OutputPiece>& out, bool at_end);

  ToolCallFormat format_;
  std::vector<Syntax> syntaxes_;
  std::string pending_;       // undecided text
  int open_ = -1;             // the syntax of the call being read, or -1
  bool seen_output_ = false;  // any non-space text or call returned (for syntaxes that only open an answer)
  int calls_ = 0;
  bool after_call_ = false;   // the last piece returned was a call
  std::string held_space_;    // whitespace after a call, dropped unless text follows
};

}  // namespace pensieve
