// The grammar and the JSON-Schema compiler: combinators, a schema corpus checked against the
// validator (runtime/json_schema.h), prefix validity, whitespace bounds, and SchemaError naming the
// keyword.
#include "runtime/grammar.h"

#include <gtest/gtest.h>

#include "runtime/json_schema.h"

namespace pensieve {
namespace {

using ojson = nlohmann::ordered_json;

TEST(Grammar, Combinators) {
  auto ab = grammar_sequence({grammar_literal("a"), grammar_choice({grammar_literal("b"), grammar_literal("cd")})});
  EXPECT_TRUE(ab->accepts("ab"));
  EXPECT_TRUE(ab->accepts("acd"));
  EXPECT_FALSE(ab->accepts("ac"));
  EXPECT_TRUE(ab->accepts_prefix("ac"));
  EXPECT_FALSE(ab->accepts_prefix("ad"));
  EXPECT_FALSE(ab->accepts("abx"));

  auto list = grammar_repeat(grammar_literal("x"), 2, 4, grammar_literal(","));
  EXPECT_FALSE(list->accepts("x"));
  EXPECT_TRUE(list->accepts("x,x"));
  EXPECT_TRUE(list->accepts("x,x,x,x"));
  EXPECT_FALSE(list->accepts("x,x,x,x,x"));
  EXPECT_FALSE(list->accepts("xx"));
  EXPECT_FALSE(list->accepts_prefix("x,x,x,x,"));

  auto any = grammar_repeat(grammar_literal("ab"), 0, -1);
  EXPECT_TRUE(any->accepts(""));
  EXPECT_TRUE(any->accepts("ababab"));
  EXPECT_FALSE(any->accepts("aba"));
  // A repeated item that can match nothing must not loop.
  auto empty_star = grammar_repeat(grammar_choice({grammar_literal(""), grammar_literal("z")}), 0, -1);
  EXPECT_TRUE(empty_star->accepts("zzz"));
}

TEST(Grammar, MatcherFinishes) {
  GrammarMatcher m(grammar_literal("{}"));
  EXPECT_FALSE(m.complete());
  EXPECT_TRUE(m.advance("{"));
  EXPECT_FALSE(m.advance("x"));
  EXPECT_TRUE(m.advance("}"));
  EXPECT_TRUE(m.finished());
  GrammarMatcher r(grammar_repeat(grammar_literal("a"), 1, -1));
  EXPECT_TRUE(r.advance("aaa"));
  EXPECT_TRUE(r.complete());
  EXPECT_FALSE(r.finished());
}

// Each case: a schema, instances that validate and instances that do not. Instance objects are
// written in `properties` order, the order the grammar emits.
const char* kCorpus = R"JSON([
 {"schema": {"type": "string"}, "valid": ["", "hello", "quote \" and \\ and \n and é ✓ 😀"], "invalid": [1, null, true, {}, []]},
 {"schema": {"type": "integer"}, "valid": [0, 7, -12, 123456789], "invalid": [1.5, "1", null, []]},
 {"schema": {"type": "number"}, "valid": [0, -1.25, 3.5e10, 1e-7, 42], "invalid": ["3", true, {}]},
 {"schema": {"type": "boolean"}, "valid": [true, false], "invalid": [0, "true", null]},
 {"schema": {"type": "null"}, "valid": [null], "invalid": [0, false, "null"]},
 {"schema": {"type": ["string", "null"]}, "valid": ["x", null], "invalid": [1, false]},
 {"schema": {"type": "string", "nullable": true}, "valid": ["x", null], "invalid": [1]},
 {"schema": {"enum": ["red", "green", 3, null, {"a": [1, 2]}]}, "valid": ["red", "green", 3, null, {"a": [1, 2]}], "invalid": ["blue", 4, {"a": [1]}]},
 {"schema": {"const": {"x": 1, "y": "two"}}, "valid": [{"x": 1, "y": "two"}], "invalid": [{"x": 1}, {"x": 2, "y": "two"}]},
 {"schema": {"type": "string", "minLength": 2, "maxLength": 4}, "valid": ["ab", "abcd", "é✓x"], "invalid": ["a", "abcde", ""]},
 {"schema": {"type": "string", "pattern": "^[a-z]+-[0-9]{3}$"}, "valid": ["ab-123", "z-000"], "invalid": ["AB-123", "ab-12", "ab-1234", "-123"]},
 {"schema": {"type": "string", "pattern": "^(cat|dog)s?$"}, "valid": ["cat", "dogs"], "invalid": ["cats!", "bird"]},
 {"schema": {"type": "string", "pattern": "\\d\\d"}, "valid": ["a12b", "99"], "invalid": ["a1b2"]},
 {"schema": {"type": "string", "pattern": "^[^\"]*\"[^\"]*$"}, "valid": ["say \"", "\""], "invalid": ["none", "\"\""]},
 {"schema": {"type": "string", "pattern": "^\\w+@\\w+\\.com$"}, "valid": ["me@host.com"], "invalid": ["me@host.org", "@host.com"]},
 {"schema": {"type": "string", "pattern": "^.{2,3}$"}, "valid": ["ab", "a✓c"], "invalid": ["a", "abcd"]},
 {"schema": {"type": "string", "format": "date"}, "valid": ["2024-02-29", "1999-12-31"], "invalid": [5]},
 {"schema": {"type": "string", "format": "uuid"}, "valid": ["123e4567-e89b-12d3-a456-426614174000"], "invalid": [null]},
 {"schema": {"type": "string", "format": "date-time"}, "valid": ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123+02:00"], "invalid": [1]},
 {"schema": {"type": "integer", "minimum": 0}, "valid": [0, 5, 1000], "invalid": [-1, -100]},
 {"schema": {"type": "integer", "exclusiveMinimum": 0}, "valid": [1, 77], "invalid": [0, -3]},
 {"schema": {"type": "integer", "maximum": -1}, "valid": [-1, -50], "invalid": [0, 3]},
 {"schema": {"type": "integer", "minimum": 1, "maximum": 12}, "valid": [1, 7, 12], "invalid": [0, 13, -1, 100]},
 {"schema": {"type": "integer", "minimum": -3, "maximum": 3}, "valid": [-3, 0, 3], "invalid": [-4, 4]},
 {"schema": {"type": "number", "minimum": 0}, "valid": [0, 0.5, 12.75], "invalid": [-0.5, -2]},
 {"schema": {"type": "number", "maximum": 0}, "valid": [0, -0.5, -3], "invalid": [0.5, 2]},
 {"schema": {"type": "array", "items": {"type": "integer"}}, "valid": [[], [1], [1, 2, 3]], "invalid": [[1, "2"], [1.5], {}]},
 {"schema": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}, "valid": [["a"], ["a", "b", "c"]], "invalid": [[], ["a", "b", "c", "d"], [1]]},
 {"schema": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}, "valid": [[], ["a"], ["a", 1]], "invalid": [[1], ["a", 1, 2], ["a", "b"]]},
 {"schema": {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "boolean"}, "minItems": 2}, "valid": [["a", true], ["a", false, true]], "invalid": [["a"], ["a", 1], [true, true]]},
 {"schema": {"type": "array", "minItems": 2, "maxItems": 2}, "valid": [[1, "x"], [null, {"a": []}]], "invalid": [[1], [1, 2, 3]]},
 {"schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]},
  "valid": [{"name": "Ann", "age": 3}], "invalid": [{"name": "Ann"}, {"age": 3}, {"name": 1, "age": 3}, {}]},
 {"schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}, "required": ["b"]},
  "valid": [{"b": 1}, {"a": 0, "b": 1}, {"b": 1, "c": 2}, {"a": 0, "b": 1, "c": 2}], "invalid": [{}, {"a": 0}, {"a": 0, "c": 2}, {"b": "x"}]},
 {"schema": {"type": "object", "properties": {"x": {"type": "boolean"}, "y": {"type": "null"}}},
  "valid": [{}, {"x": true}, {"y": null}, {"x": false, "y": null}], "invalid": [{"x": 1}, {"y": 0}]},
 {"schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false},
  "valid": [{"x": 1}], "invalid": [{"x": 1, "z": 2}, {}]},
 {"schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
  "valid": [{"x": 1, "k": "v"}, {"k": "v", "l": "w"}, {}], "invalid": [{"x": 1, "k": 2}]},
 {"schema": {"type": "object", "additionalProperties": {"type": "integer"}}, "valid": [{}, {"a": 1, "b": 2}], "invalid": [{"a": "1"}]},
 {"schema": {"type": "object"}, "valid": [{}, {"a": [1, {"b": null}], "c": "d"}], "invalid": [[], "x", 1]},
 {"schema": {"type": "object", "properties": {"p": {"type": "object", "properties": {"q": {"type": "array", "items": {"type": "object", "properties": {"r": {"enum": [1, 2]}}, "required": ["r"]}}}, "required": ["q"]}}, "required": ["p"]},
  "valid": [{"p": {"q": []}}, {"p": {"q": [{"r": 1}, {"r": 2}]}}], "invalid": [{"p": {"q": [{"r": 3}]}}, {"p": {}}, {"p": {"q": [{}]}}]},
 {"schema": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}, "valid": ["s", 4], "invalid": [-4, null, 1.5]},
 {"schema": {"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind", "x"], "additionalProperties": false},
                       {"type": "object", "properties": {"kind": {"const": "b"}, "y": {"type": "string"}}, "required": ["kind", "y"], "additionalProperties": false}]},
  "valid": [{"kind": "a", "x": 1}, {"kind": "b", "y": "z"}], "invalid": [{"kind": "a", "y": "z"}, {"kind": "c", "x": 1}]},
 {"schema": {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"], "additionalProperties": false, "anyOf": [{"properties": {"v": {"minimum": 0}}}, {"properties": {"v": {"maximum": -10}}}]},
  "valid": [{"v": 0}, {"v": 5}, {"v": -10}], "invalid": [{"v": "x"}]},
 {"schema": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
  "valid": [{"a": "x", "b": 1}], "invalid": [{"a": "x"}, {"b": 1}, {"a": "x", "b": "y"}]},
 {"schema": {"$defs": {"pos": {"type": "integer", "minimum": 1}}, "type": "object", "properties": {"n": {"$ref": "#/$defs/pos"}}, "required": ["n"], "additionalProperties": false},
  "valid": [{"n": 1}, {"n": 99}], "invalid": [{"n": 0}, {"n": -1}, {}]},
 {"schema": {"definitions": {"node": {"type": "object", "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/definitions/node"}, "maxItems": 2}}, "required": ["value"], "additionalProperties": false}}, "$ref": "#/definitions/node"},
  "valid": [{"value": 1}, {"value": 1, "children": [{"value": 2}, {"value": 3, "children": [{"value": 4}]}]}], "invalid": [{"value": 1, "children": [{"value": "x"}]}, {"children": []}, {"value": 1, "children": [{"value": 1}, {"value": 2}, {"value": 3}]}]},
 {"schema": {"type": "object", "properties": {"list": {"$ref": "#"}, "v": {"type": "integer"}}, "additionalProperties": false},
  "valid": [{}, {"list": {"v": 1}}, {"list": {"list": {}}, "v": 2}], "invalid": [{"list": 1}, {"w": 1}]},
 {"schema": {"type": "object", "properties": {"name": {"type": "string", "description": "who", "title": "Name", "examples": ["x"], "default": "y"}}, "$schema": "https://json-schema.org/draft/2020-12/schema", "required": ["name"], "additionalProperties": false},
  "valid": [{"name": "a"}], "invalid": [{}, {"name": 3}]},
 {"schema": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}, "location": {"type": "string"}}, "required": ["location", "unit"], "additionalProperties": false},
  "valid": [{"unit": "celsius", "location": "Paris"}], "invalid": [{"unit": "kelvin", "location": "Paris"}, {"location": "Paris"}]},
 {"schema": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3}}, "score": {"type": "number"}}, "required": ["tags", "score"], "additionalProperties": false},
  "valid": [{"tags": [], "score": 0.5}, {"tags": ["a", "bcd"], "score": -2}], "invalid": [{"tags": ["abcd"], "score": 1}, {"tags": [1], "score": 1}]},
 {"schema": true, "valid": [1, "x", null, [1, {"a": []}], {"k": {"l": [true]}}], "invalid": []},
 {"schema": {}, "valid": [1.5, "x", [], {}], "invalid": []},
 {"schema": {"type": "array", "items": {"type": ["integer", "array"], "items": {"type": "integer"}}}, "valid": [[1, [2, 3], []]], "invalid": [[1, ["x"]], ["s"]]},
 {"schema": {"type": "object", "properties": {"k": {"type": "string", "pattern": "^a\\.b\\/c\\\\d$"}}, "required": ["k"]}, "valid": [{"k": "a.b/c\\d"}], "invalid": [{"k": "aXb/c\\d"}]},
 {"schema": {"type": "string", "pattern": "^[\u00e9\u00e8]x$"}, "valid": ["éx", "èx"], "invalid": ["ex"]},
 {"schema": {"type": "string", "enum": ["a\"b", "c\\d", "e\nf", "ü"]}, "valid": ["a\"b", "c\\d", "e\nf", "ü"], "invalid": ["ab"]}
])JSON";

std::vector<std::string> serializations(const ojson& v) {
  std::vector<std::string> out{v.dump(), v.dump(2)};
  if (!v.is_structured()) out.resize(1);
  return out;
}

TEST(Grammar, SchemaCorpus) {
  const ojson corpus = ojson::parse(kCorpus);
  ASSERT_GE(corpus.size(), 50u);
  int n_valid = 0, n_invalid = 0;
  for (size_t c = 0; c < corpus.size(); ++c) {
    const ojson& schema = corpus[c]["schema"];
    const nlohmann::json plain = nlohmann::json::parse(schema.dump());
    SCOPED_TRACE("case " + std::to_string(c) + ": " + schema.dump());
    GrammarPtr g;
    ASSERT_NO_THROW(g = grammar_json_schema(schema));
    for (const ojson& v : corpus[c]["valid"]) {
      ASSERT_EQ(json_schema_check(plain, nlohmann::json::parse(v.dump())), "") << v.dump();
      for (const std::string& text : serializations(v)) {
        EXPECT_TRUE(g->accepts(text)) << text;
        for (size_t i = 0; i <= text.size(); ++i)
          ASSERT_TRUE(g->accepts_prefix(text.substr(0, i))) << text << " prefix " << i;
      }
      ++n_valid;
    }
    for (const ojson& v : corpus[c]["invalid"]) {
      ASSERT_NE(json_schema_check(plain, nlohmann::json::parse(v.dump())), "") << v.dump();
      for (const std::string& text : serializations(v)) EXPECT_FALSE(g->accepts(text)) << text;
      ++n_invalid;
    }
  }
  EXPECT_GE(n_valid, 100);
  EXPECT_GE(n_invalid, 90);
}

TEST(Grammar, PropertiesInSchemaOrder) {
  const ojson s = ojson::parse(R"({"type":"object","properties":{"z":{"type":"integer"},"a":{"type":"integer"}},
                                   "required":["z","a"],"additionalProperties":false})");
  auto g = grammar_json_schema(s);
  EXPECT_TRUE(g->accepts(R"({"z":1,"a":2})"));
  EXPECT_FALSE(g->accepts(R"({"a":2,"z":1})"));
}

TEST(Grammar, WhitespaceIsBounded) {
  auto g = grammar_json_value();
  EXPECT_TRUE(g->accepts("{ \"a\" : [ 1 , 2 ] }"));
  EXPECT_TRUE(g->accepts("{\n    \"a\": 1\n}"));
  EXPECT_FALSE(g->accepts_prefix("{  "));
  EXPECT_FALSE(g->accepts_prefix("[1 ,  "));
  EXPECT_FALSE(g->accepts_prefix("{\n \n"));
  EXPECT_FALSE(g->accepts_prefix("{\n" + std::string(33, ' ')));
  // No whitespace outside the value: the output ends with it.
  EXPECT_FALSE(g->accepts(" 1"));
  GrammarMatcher m(grammar_json_object());
  EXPECT_FALSE(m.advance("1"));
  EXPECT_TRUE(m.advance("{}"));
  EXPECT_TRUE(m.finished());
}

TEST(Grammar, NumbersAreBounded) {
  auto g = grammar_json_schema(nlohmann::json{{"type", "number"}});
  EXPECT_TRUE(g->accepts("1" + std::string(19, '0')));
  EXPECT_FALSE(g->accepts_prefix("1" + std::string(20, '0')));
  EXPECT_FALSE(g->accepts("01"));
  EXPECT_FALSE(g->accepts("1."));
  EXPECT_TRUE(g->accepts("1.5E+10"));
}

TEST(Grammar, DeepSchemasAreErrors) {
  nlohmann::json s = {{"type", "string"}};
  for (int i = 0; i < 1000; ++i) s = {{"type", "array"}, {"items", std::move(s)}};
  EXPECT_THROW(grammar_json_schema(s), SchemaError);
  const std::string deep_group = std::string(5000, '(') + "a" + std::string(5000, ')');
  EXPECT_THROW(grammar_json_schema(nlohmann::json{{"type", "string"}, {"pattern", deep_group}}), SchemaError);
}

TEST(Grammar, UnsupportedSchemasNameTheKeyword) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"type":"object","patternProperties":{"^a":{}}})", "patternProperties"},
      {R"({"type":"array","uniqueItems":true})", "uniqueItems"},
      {R"({"not":{"type":"string"}})", "not"},
      {R"({"type":"string","pattern":"(?=a)b"})", "pattern"},
      {R"({"type":"string","pattern":"(a)\\1"})", "pattern"},
      {R"({"type":"string","pattern":"\\bword"})", "pattern"},
      {R"({"type":"string","pattern":"[a-z"})", "pattern"},
      {R"({"type":"number","multipleOf":0.5})", "multipleOf"},
      {R"({"$ref":"#/$defs/missing"})", "$ref"},
      {R"({"$ref":"http://example.com/s.json"})", "$ref"},
      {R"({"type":"fish"})", "type"},
      {R"({"if":{"type":"string"},"then":{"minLength":1}})", "if"},
      {R"({"type":"object","properties":{"a":{"type":"string","minProperties":1}}})", "minProperties"},
      {R"({"type":"string","minLength":5,"maxLength":2})", "maxLength"},
      {R"({"type":"integer","minimum":5,"maximum":2})", "maximum"},
      {R"({"allOf":[{"type":"string"},{"type":"integer"}]})", "allOf"},
      {R"({"enum":[]})", "enum"},
      {R"(false)", "false"},
      // Self-reference that makes no progress, and deep nesting: errors, not a stack overflow.
      {R"({"$defs":{"a":{"allOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"})", "$ref"},
      {R"({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"}],"type":"object"}},"$ref":"#/$defs/a"})", "$ref"},
  };
  for (const auto& [schema, kw] : cases) {
    try {
      grammar_json_schema(nlohmann::json::parse(schema));
      ADD_FAILURE() << schema << " compiled";
    } catch (const SchemaError& e) {
      EXPECT_EQ(e.keyword, kw) << schema << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(kw), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace pensieve
