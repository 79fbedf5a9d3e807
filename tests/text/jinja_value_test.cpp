// The value model's Python conversions, tested directly: float repr, string repr, json.dumps,
// equality and ordering across int/float/bool, and the sandbox policy switch.
#include <gtest/gtest.h>

#include "text/jinja_error.h"
#include "text/jinja_interpreter.h"
#include "text/jinja_lexer.h"
#include "text/jinja_parser.h"
#include "text/jinja_value.h"

namespace pensieve::jinja {
namespace {

TEST(JinjaValue, FloatReprMatchesPython) {
  EXPECT_EQ(float_repr(1.0), "1.0");
  EXPECT_EQ(float_repr(0.1), "0.1");
  EXPECT_EQ(float_repr(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(float_repr(1e16), "1e+16");
  EXPECT_EQ(float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(float_repr(1e-5), "1e-05");
  EXPECT_EQ(float_repr(0.0001), "0.0001");
  EXPECT_EQ(float_repr(-2.5e-7), "-2.5e-07");
  EXPECT_EQ(float_repr(1.5e300), "1.5e+300");
  EXPECT_EQ(float_repr(-0.0), "-0.0");
  EXPECT_EQ(float_repr(123456789.125), "123456789.125");
}

TEST(JinjaValue, StringReprPicksQuotesAndEscapes) {
  EXPECT_EQ(string_repr("abc"), "'abc'");
  EXPECT_EQ(string_repr("it's"), "\"it's\"");
  EXPECT_EQ(string_repr("a'b\"c"), "'a\\'b\"c'");
  EXPECT_EQ(string_repr("tab\there\nnl\\"), "'tab\\there\\nnl\\\\'");
  EXPECT_EQ(string_repr("\x01\x7f"), "'\\x01\\x7f'");
  EXPECT_EQ(string_repr("h\xc3\xa9 \xe2\x80\xa8"), "'h\xc3\xa9 \\u2028'");
}

TEST(JinjaValue, JsonDumpsLikePython) {
  auto v = from_json(nlohmann::ordered_json::parse(
      R"({"z": [1, 2.0, "x\u0001\"", null, true], "a": {}, "b": []})"));
  EXPECT_EQ(to_json(v, {}), R"({"z": [1, 2.0, "x\u0001\"", null, true], "a": {}, "b": []})");
  JsonOptions indented;
  indented.has_indent = true;
  indented.indent = "  ";
  indented.item_separator = ",";
  EXPECT_EQ(to_json(v, indented),
            "{\n  \"z\": [\n    1,\n    2.0,\n    \"x\\u0001\\\"\",\n    null,\n    true\n  ],\n"
            "  \"a\": {},\n  \"b\": []\n}");
  EXPECT_EQ(to_json(Value("\xc3\xa9<>&'"), {}), "\"\xc3\xa9<>&'\"");  // no ASCII or HTML escaping
  try {
    to_json(Value(), {});
    FAIL() << "Undefined must not serialise";
  } catch (const TemplateError& e) {
    EXPECT_EQ(e.kind(), "TypeError");
    EXPECT_STREQ(e.what(), "Object of type Undefined is not JSON serializable");
  }
}

TEST(JinjaValue, EqualityAndOrderingFollowPython) {
  EXPECT_TRUE(equals(Value(1), Value(1.0)));
  EXPECT_TRUE(equals(Value(true), Value(1)));
  EXPECT_FALSE(equals(Value("1"), Value(1)));
  EXPECT_FALSE(equals(Value::list({Value(1)}), Value::tuple({Value(1)})));
  EXPECT_TRUE(equals(Value(), Value()));
  EXPECT_FALSE(equals(Value::none(), Value()));
  EXPECT_TRUE(less_than(Value(1), Value(1.5)));
  EXPECT_TRUE(less_than(Value("B"), Value("a")));
  EXPECT_TRUE(less_than(Value::list({Value(1), Value(2)}), Value::list({Value(1), Value(3)})));
  EXPECT_THROW(less_than(Value("a"), Value(1)), TemplateError);
}

TEST(JinjaValue, TruthinessFollowsPython) {
  EXPECT_FALSE(Value().truthy());
  EXPECT_FALSE(Value::none().truthy());
  EXPECT_FALSE(Value(0.0).truthy());
  EXPECT_FALSE(Value("").truthy());
  EXPECT_FALSE(Value::list().truthy());
  EXPECT_FALSE(Value::dict().truthy());
  EXPECT_TRUE(Value("0").truthy());
  EXPECT_TRUE(Value::iterator({}, "generator").truthy());  // a generator is always true
}

TEST(JinjaValue, MutableSandboxAllowsListAndDictMethods) {
  RenderOptions options;
  options.sandbox.immutable = false;
  Body body = parse_template(
      "{% set l = [] %}{% set d = {} %}{{ l.append(1) }}{{ l.extend([2, 3]) }}{{ l.pop(0) }}"
      "{{ d.update({'a': 1}) }}{{ d.setdefault('b', 2) }}|{{ l }} {{ d }}");
  Interpreter interpreter(options);
  EXPECT_EQ(interpreter.render(body, Value::dict()), "NoneNone1None2|[2, 3] {'a': 1, 'b': 2}");
}

TEST(JinjaLexer, TokensCarryValuesAndLines) {
  std::vector<Token> t = tokenize("a\n{{ x.y + 1.5 * 'q\\n' }}\n{% if z %}");
  ASSERT_GE(t.size(), 12u);
  EXPECT_EQ(t[0].type, TokenType::Text);
  EXPECT_EQ(t[0].text, "a\n");
  EXPECT_EQ(t[1].type, TokenType::VarBegin);
  EXPECT_EQ(t[1].line, 2);
  EXPECT_EQ(t[2].text, "x");
  EXPECT_EQ(t[3].text, ".");
  EXPECT_EQ(t[6].type, TokenType::Float);
  EXPECT_DOUBLE_EQ(t[6].float_value, 1.5);
  EXPECT_EQ(t[8].type, TokenType::String);
  EXPECT_EQ(t[8].text, "q\n");
  EXPECT_EQ(t[9].type, TokenType::VarEnd);
  EXPECT_EQ(t[10].type, TokenType::Text);  // the newline after }} stays: trim_blocks is for blocks
  EXPECT_EQ(t[11].type, TokenType::BlockBegin);
  EXPECT_EQ(t[11].line, 3);
}

}  // namespace
}  // namespace pensieve::jinja
