// Tool-call parsing per model family: well-formed calls, several calls, text before a call,
// malformed JSON returned as text; streamed token by token the result is the same, and no part of
// the call syntax leaks out as text.
#include <gtest/gtest.h>

#include "runtime/tool_calls.h"
#include "runtime/grammar.h"

namespace pensieve {
namespace {

using json = nlohmann::ordered_json;

// A compact rendering of parsed output: text as itself, calls as [call NAME ARGS].
std::string show(const std::vector<OutputPiece>& pieces) {
  std::string out;
  for (const auto& p : pieces) {
    if (p.kind == OutputPiece::Kind::Text) out += p.text;
    else out += "[call " + p.call.name + " " + p.call.arguments.dump() + "]";
  }
  return out;
}

std::vector<OutputPiece> parse_whole(ToolCallFormat f, const std::string& text) {
  ToolCallParser p(f);
  auto out = p.push(text);
  for (auto& x : p.finish()) out.push_back(std::move(x));
  return out;
}

// Feeds the text in pieces of `step` bytes. Whatever the cut, the result must equal the whole
// parse: a marker that leaked out as text while still undecided would show up in it.
std::vector<OutputPiece> parse_streamed(ToolCallFormat f, const std::string& text, size_t step) {
  ToolCallParser p(f);
  std::vector<OutputPiece> out;
  for (size_t at = 0; at < text.size(); at += step)
    for (auto& x : p.push(text.substr(at, step))) out.push_back(std::move(x));
  for (auto& x : p.finish()) out.push_back(std::move(x));
  return out;
}

struct Golden {
  const char* name;
  ToolCallFormat format;
  std::string output;    // what the model wrote
  std::string expected;  // show() of the parse
  int calls;
};

class ToolCallGoldens : public ::testing::TestWithParam<Golden> {};

TEST_P(ToolCallGoldens, ParsesWholeAndStreamed) {
  const Golden& g = GetParam();
  const auto whole = parse_whole(g.format, g.output);
  EXPECT_EQ(show(whole), g.expected);
  int calls = 0;
  for (const auto& p : whole) calls += p.kind == OutputPiece::Kind::Call;
  EXPECT_EQ(calls, g.calls);
  for (size_t step : {1, 2, 3, 7}) {
    const auto streamed = parse_streamed(g.format, g.output, step);
    EXPECT_EQ(show(streamed), g.expected) << "in pieces of " << step;
  }
}

const std::string kDsBegin = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "calls\xE2\x96\x81" "begin\xEF\xBD\x9C>";
const std::string kDsEnd = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "calls\xE2\x96\x81" "end\xEF\xBD\x9C>";
const std::string kDsCall = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "call\xE2\x96\x81" "begin\xEF\xBD\x9C>";
const std::string kDsCallEnd = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "call\xE2\x96\x81" "end\xEF\xBD\x9C>";
const std::string kDsSep = "<\xEF\xBD\x9Ctool\xE2\x96\x81" "sep\xEF\xBD\x9C>";

const Golden kGoldens[] = {
    // Hermes / Qwen
    {"hermes_one", ToolCallFormat::Hermes,
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
     "[call get_weather {\"city\":\"Paris\"}]", 1},
    {"hermes_two", ToolCallFormat::Hermes,
     "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", "
     "\"arguments\": {}}\n</tool_call>",
     "[call a {\"x\":1}][call b {}]", 2},
    {"hermes_text_before", ToolCallFormat::Hermes,
     "Let me look that up.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"<tool>\"}}\n</tool_call>",
     "Let me look that up.\n[call search {\"q\":\"<tool>\"}]", 1},
    {"hermes_malformed", ToolCallFormat::Hermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": }\n</tool_call>",
     "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": }\n</tool_call>", 0},
    {"hermes_unclosed", ToolCallFormat::Hermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 2}}",
     "[call a {\"x\":2}]", 1},
    {"hermes_cut_off", ToolCallFormat::Hermes, "Sure <tool_call>\n{\"name\": \"a\", \"argu",
     "Sure <tool_call>\n{\"name\": \"a\", \"argu", 0},
    {"hermes_plain_text", ToolCallFormat::Hermes, "a < b and <tool is not a call", "a < b and <tool is not a call", 0},
    {"hermes_string_arguments", ToolCallFormat::Hermes,
     "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": [1, 2]}\"}</tool_call>", "[call a {\"k\":[1,2]}]", 1},
    {"generic_one", ToolCallFormat::Generic, "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"é\"}}</tool_call>",
     "[call f {\"s\":\"é\"}]", 1},
    // Llama 3.x
    {"llama_json", ToolCallFormat::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
     "[call get_weather {\"city\":\"Oslo\"}]", 1},
    {"llama_python_tag", ToolCallFormat::Llama3,
     "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
     "[call get_weather {\"city\":\"Oslo\"}]", 1},
    {"llama_text", ToolCallFormat::Llama3, "The weather is {probably} fine.", "The weather is {probably} fine.", 0},
    {"llama_json_not_a_call", ToolCallFormat::Llama3, "{\"answer\": 42}", "{\"answer\": 42}", 0},
    {"llama_malformed", ToolCallFormat::Llama3, "{\"name\": \"f\", \"parameters\": {\"a\": tru",
     "{\"name\": \"f\", \"parameters\": {\"a\": tru", 0},
    // Mistral / Nemo
    {"mistral_two", ToolCallFormat::Mistral,
     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}, \"id\": \"abcdefghi\"}, {\"name\": \"b\", "
     "\"arguments\": {}}]",
     "[call a {\"x\":1}][call b {}]", 2},
    {"mistral_text_before", ToolCallFormat::Mistral, "Checking. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]",
     "Checking. [call a {}]", 1},
    {"mistral_malformed", ToolCallFormat::Mistral, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {]",
     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {]", 0},
    // Functionary v3.1
    {"functionary31_two", ToolCallFormat::FunctionaryV31,
     "<function=get_weather>{\"city\": \"Rome\"}</function><function=time>{}</function>",
     "[call get_weather {\"city\":\"Rome\"}][call time {}]", 2},
    {"functionary31_text_before", ToolCallFormat::FunctionaryV31, "One moment.<function=f>{\"a\": 1}</function>",
     "One moment.[call f {\"a\":1}]", 1},
    {"functionary31_malformed", ToolCallFormat::FunctionaryV31, "<function=f>{\"a\": </function>",
     "<function=f>{\"a\": </function>", 0},
    // Functionary v3.2 (the prompt ends with ">>>")
    {"functionary32_call", ToolCallFormat::FunctionaryV32, "get_weather\n{\"city\": \"Lima\"}",
     "[call get_weather {\"city\":\"Lima\"}]", 1},
    {"functionary32_text_then_calls", ToolCallFormat::FunctionaryV32,
     "all\nLet me check.>>>a\n{\"x\": 1}>>>b\n{}", "Let me check.[call a {\"x\":1}][call b {}]", 2},
    {"functionary32_text", ToolCallFormat::FunctionaryV32, "all\nHello there.", "Hello there.", 0},
    {"functionary32_malformed", ToolCallFormat::FunctionaryV32, "f\n{\"x\": ", "f\n{\"x\": ", 0},
    // Command R+
    {"command_r_two", ToolCallFormat::CommandR,
     "Action: ```json\n[\n    {\n        \"tool_name\": \"search\",\n        \"parameters\": {\"q\": \"a\"}\n    },\n"
     "    {\"tool_name\": \"directly_answer\", \"parameters\": {}}\n]\n```",
     "[call search {\"q\":\"a\"}][call directly_answer {}]", 2},
    {"command_r_malformed", ToolCallFormat::CommandR, "Action: ```json\n[{\"tool_name\": ]\n```",
     "Action: ```json\n[{\"tool_name\": ]\n```", 0},
    // Command R7B
    {"command_r7b", ToolCallFormat::CommandR7B,
     "I will search.<|START_ACTION|>[{\"tool_call_id\": \"0\", \"tool_name\": \"search\", \"parameters\": "
     "{\"q\": \"x\"}}]<|END_ACTION|>",
     "I will search.[call search {\"q\":\"x\"}]", 1},
    // DeepSeek R1
    {"deepseek_two", ToolCallFormat::DeepSeekR1,
     "<think>\nok\n</think>\n\n" + kDsBegin + kDsCall + "function" + kDsSep + "a\n```json\n{\"x\": 1}\n```" +
         kDsCallEnd + kDsCall + "function" + kDsSep + "b\n```json\n{}\n```" + kDsCallEnd + kDsEnd,
     "<think>\nok\n</think>\n\n[call a {\"x\":1}][call b {}]", 2},
    {"deepseek_malformed", ToolCallFormat::DeepSeekR1,
     kDsBegin + kDsCall + "function" + kDsSep + "a\n```json\n{\"x\": \n```" + kDsCallEnd + kDsEnd,
     kDsBegin + kDsCall + "function" + kDsSep + "a\n```json\n{\"x\": \n```" + kDsCallEnd + kDsEnd, 0},
    // FireFunction v2
    {"firefunction", ToolCallFormat::FireFunction, " functools[{\"name\": \"f\", \"arguments\": {\"a\": \"b\"}}]",
     "[call f {\"a\":\"b\"}]", 1},
};

INSTANTIATE_TEST_SUITE_P(Families, ToolCallGoldens, ::testing::ValuesIn(kGoldens),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ToolCalls, TextAfterACallIsItsOwnPiece) {
  const auto out = parse_whole(ToolCallFormat::Hermes,
                               "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n\nDone.");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].kind, OutputPiece::Kind::Call);
  EXPECT_EQ(out[1].text, "Done.");
}

TEST(ToolCalls, HoldsBackOnlyWhatMayStartAMarker) {
  ToolCallParser p(ToolCallFormat::Hermes);
  EXPECT_EQ(show(p.push("Hello <to")), "Hello ");
  EXPECT_EQ(show(p.push("p")), "<top");
  EXPECT_EQ(show(p.push(" <tool_c")), " ");
  EXPECT_EQ(show(p.push("all>{\"name\":\"x\"}")), "");
  EXPECT_EQ(show(p.push("</tool_call>")), "[call x {}]");
  EXPECT_EQ(p.calls(), 1);
}

TEST(ToolCalls, DetectsTheFamilyFromTheTemplate) {
  EXPECT_EQ(detect_tool_call_format("{{ '<tool_call>' }}"), ToolCallFormat::Hermes);
  EXPECT_EQ(detect_tool_call_format("[TOOL_CALLS]"), ToolCallFormat::Mistral);
  EXPECT_EQ(detect_tool_call_format("<|start_header_id|>ipython"), ToolCallFormat::Llama3);
  EXPECT_EQ(detect_tool_call_format("<|user|>{{ m }}"), ToolCallFormat::Generic);
}

TEST(ToolCalls, FormattedCallsParseBack) {
  const std::vector<ToolCall> calls = {{"", "first", json{{"a", 1}}}, {"", "second", json{{"b", {1, 2}}}}};
  for (auto f : {ToolCallFormat::Generic, ToolCallFormat::Hermes, ToolCallFormat::Mistral,
                 ToolCallFormat::FunctionaryV31, ToolCallFormat::FunctionaryV32, ToolCallFormat::CommandR,
                 ToolCallFormat::CommandR7B, ToolCallFormat::DeepSeekR1, ToolCallFormat::FireFunction}) {
    const auto out = parse_whole(f, format_tool_calls(f, calls));
    EXPECT_EQ(show(out), "[call first {\"a\":1}][call second {\"b\":[1,2]}]") << tool_call_format_name(f);
  }
}

}  // namespace
}  // namespace pensieve

// ---- forced calls: the grammar of each family's call syntax ----

namespace pensieve {
namespace {

json forced_tools() {
  json weather = {{"type", "object"},
                  {"properties", {{"city", {{"type", "string"}}}, {"unit", {{"enum", {"c", "f"}}}}}},
                  {"required", {"city"}},
                  {"additionalProperties", false}};
  json time = {{"type", "object"}, {"properties", {{"zone", {{"type", "string"}}}}}, {"required", {"zone"}}};
  return json::array({{{"type", "function"}, {"function", {{"name", "get_weather"}, {"parameters", weather}}}},
                      {{"type", "function"}, {"function", {{"name", "get_time"}, {"parameters", time}}}}});
}

TEST(ToolCallGrammar, HermesAcceptsOnlyValidCallsOfTheAllowedTools) {
  const std::string paris = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  const std::string utc = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>";
  GrammarPtr any = tool_call_grammar(ToolCallFormat::Hermes, forced_tools(), "", true);
  EXPECT_TRUE(any->accepts(paris));
  EXPECT_TRUE(any->accepts(utc));
  EXPECT_TRUE(any->accepts(paris + "\n" + utc));
  EXPECT_FALSE(any->accepts(""));  // a call is required
  EXPECT_FALSE(any->accepts("Sure! " + paris));
  EXPECT_FALSE(any->accepts("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>"));
  EXPECT_FALSE(any->accepts("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"P\", \"unit\": \"k\"}}\n</tool_call>"));
  EXPECT_FALSE(any->accepts("<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>"));
  GrammarPtr named = tool_call_grammar(ToolCallFormat::Hermes, forced_tools(), "get_time", true);
  EXPECT_TRUE(named->accepts(utc));
  EXPECT_FALSE(named->accepts(paris));
  GrammarPtr single = tool_call_grammar(ToolCallFormat::Hermes, forced_tools(), "", false);
  EXPECT_TRUE(single->accepts(paris));
  EXPECT_FALSE(single->accepts(paris + "\n" + utc));
  // What the grammar accepts, the parser reads back as the call.
  EXPECT_EQ(show(parse_whole(ToolCallFormat::Hermes, paris + "\n" + utc)),
            "[call get_weather {\"city\":\"Paris\"}][call get_time {\"zone\":\"UTC\"}]");
}

TEST(ToolCallGrammar, EachFamilysSyntaxParsesBack) {
  struct Case {
    ToolCallFormat f;
    std::string text;
  };
  const std::string ds_call = kDsCall + "function" + kDsSep + "get_time\n```json\n{\"zone\": \"UTC\"}\n```" + kDsCallEnd;
  const Case cases[] = {
      {ToolCallFormat::Llama3, "{\"name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}"},
      {ToolCallFormat::Mistral, "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]"},
      {ToolCallFormat::FunctionaryV31, "<function=get_time>{\"zone\": \"UTC\"}</function>"},
      {ToolCallFormat::FunctionaryV32, "get_time\n{\"zone\": \"UTC\"}"},
      {ToolCallFormat::CommandR, "Action: ```json\n[{\"tool_name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}]\n```"},
      {ToolCallFormat::CommandR7B,
       "<|START_ACTION|>[{\"tool_name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}]<|END_ACTION|>"},
      {ToolCallFormat::DeepSeekR1, kDsBegin + ds_call + kDsEnd},
      {ToolCallFormat::FireFunction, " functools[{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(tool_call_format_name(c.f));
    GrammarPtr g = tool_call_grammar(c.f, forced_tools(), "get_time", true);
    EXPECT_TRUE(g->accepts(c.text)) << c.text;
    EXPECT_FALSE(g->accepts("text first " + c.text));
    EXPECT_EQ(show(parse_whole(c.f, c.text)), "[call get_time {\"zone\":\"UTC\"}]");
  }
}

TEST(ToolCallGrammar, UnsupportedSchemaKeywordIsNamed) {
  json tools = forced_tools();
  tools[0]["function"]["parameters"]["properties"]["city"]["not"] = {{"type", "null"}};
  try {
    tool_call_grammar(ToolCallFormat::Hermes, tools, "", true);
    ADD_FAILURE() << "accepted 'not'";
  } catch (const SchemaError& e) {
    EXPECT_EQ(e.keyword, "not");
  }
}

}  // namespace
}  // namespace pensieve
