// Expressions: literals, Python printing (repr, floats), operators, precedence, undefined values.
// Expected renders were produced by Python jinja2 3.1 configured as transformers configures it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "text/chat_template.h"

namespace pensieve {
namespace {

// Renders `source` with the JSON `context`; an error renders as "ERROR: <kind>: <message>".
std::string render(const std::string& source, const std::string& context = "{}") {
  try {
    ChatTemplate tmpl(source);
    tmpl.set_clock([] {
      std::tm tm{};
      tm.tm_year = 2024 - 1900;
      tm.tm_mon = 6;
      tm.tm_mday = 26;
      tm.tm_hour = 12;
      tm.tm_isdst = -1;
      return std::chrono::system_clock::from_time_t(std::mktime(&tm));
    });
    return tmpl.render(nlohmann::ordered_json::parse(context));
  } catch (const TemplateError& e) {
    return "ERROR: " + e.kind() + ": " + e.what();
  }
}

}  // namespace

TEST(JinjaExpressions, NumbersPrintLikePython) {
  EXPECT_EQ(render(R"J({{ 1.0 }} {{ 1e-5 }} {{ 1e16 }} {{ 123456789.123 }} {{ 0.1+0.2 }} {{ 3/2 }} {{ 4/2 }})J"),
            R"J(1.0 1e-05 1e+16 123456789.123 0.30000000000000004 1.5 2.0)J");
  EXPECT_EQ(render(R"J({{ 10000000000000000 }} {{ -0.0 }} {{ 1e22 }} {{ 0.0001 }} {{ 0.00001 }} {{ 12345678901234567.0 }} {{ 1_000 }})J"),
            R"J(10000000000000000 -0.0 1e+22 0.0001 1e-05 1.2345678901234568e+16 1000)J");
  EXPECT_EQ(render(R"J({{ i }} {{ f }} {{ big }})J", R"J({"i": 18, "f": 18.0, "big": 1.5e+300})J"),
            R"J(18 18.0 1.5e+300)J");
}

TEST(JinjaExpressions, ArithmeticFollowsPython) {
  EXPECT_EQ(render(R"J({{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2**10 }} {{ 2**-1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }})J"),
            R"J(3 -4 2 -2 1024 0.5 3.0 0.5)J");
  EXPECT_EQ(render(R"J({{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ true + 1 }})J"),
            R"J(7 9 64 4 5 2)J");
  EXPECT_EQ(render(R"J({{ 'x' * 3 }} {{ 3 * 'ab' }} {{ [1] * 2 }} {{ 'ab' * -1 }}| {{ [1] + [2] }} {{ (1,) + (2,) }})J"),
            R"J(xxx ababab [1, 1] | [1, 2] (1, 2))J");
  EXPECT_EQ(render(R"J({{ '%s-%d' % ('a', 3) }} {{ '%05.1f|%x|%r' % (3.14159, 255, 'q') }} {{ '%(a)s' % {'a': 1} }} {{ '100%%' % () }})J"),
            R"J(a-3 003.1|ff|'q' 1 100%)J");
}

TEST(JinjaExpressions, StringsAndEscapes) {
  EXPECT_EQ(render(R"J({{ 'a\nb' ~ "\x41\u00e9\t|" }})J"),
            R"J(a
bAé	|)J");
  EXPECT_EQ(render(R"J({{ 'it\'s' }} {{ "say \"hi\"" }} {{ 'a' 'b' }} {{ '\d\q' }})J"),
            R"J(it's say "hi" ab \d\q)J");
  EXPECT_EQ(render(R"J({{ 'héllo'[1:3] }} {{ 'héllo' | length }} {{ 'héllo'[-1] }} {{ '日本語'[1] }})J"),
            R"J(él 5 o 本)J");
}

TEST(JinjaExpressions, ReprOfContainers) {
  EXPECT_EQ(render(R"J({{ [1, 'a', none, true, 1.5, {'k': "it's"}] }})J"),
            R"J([1, 'a', None, True, 1.5, {'k': "it's"}])J");
  EXPECT_EQ(render(R"J({{ ('a',) }} {{ () }} {{ (1,2) }})J"),
            R"J(('a',) () (1, 2))J");
  EXPECT_EQ(render(R"J({{ [1,[2,{'a':'b"c'}]] | string }} {{ "it's" | string }} {{ ['it\'s', 'a"b', 'x\'y"z'] }})J"),
            R"J([1, [2, {'a': 'b"c'}]] it's ["it's", 'a"b', 'x\'y"z'])J");
  EXPECT_EQ(render(R"J({{ ['\u2028', '\xa0', '\x7f', '\x01', 'é', '\n\t\\'] }})J"),
            R"J(['\u2028', '\xa0', '\x7f', '\x01', 'é', '\n\t\\'])J");
  EXPECT_EQ(render(R"J({{ {1: 2, 'a': none, none: [], 1.5: (1,)} }})J"),
            R"J({1: 2, 'a': None, None: [], 1.5: (1,)})J");
  EXPECT_EQ(render(R"J({{ messages }})J", R"J({"messages": [{"role": "user", "content": "Hi"}]})J"),
            R"J([{'role': 'user', 'content': 'Hi'}])J");
}

TEST(JinjaExpressions, ComparisonsAndLogic) {
  EXPECT_EQ(render(R"J({{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1,2] == [1,2] }} {{ {'a':1} == {'a':1} }} {{ 2 >= 2 }} {{ 'b' > 'a' }})J"),
            R"J(True False True True True True True True)J");
  EXPECT_EQ(render(R"J({{ not true }} {{ true and 'x' }} {{ false or 'y' }} {{ 0 or [] }} {{ none and 1 }} {{ not none }} {{ not '' }})J"),
            R"J(False x y [] None True True)J");
  EXPECT_EQ(render(R"J({{ 'a' in 'abc' }} {{ 'z' not in ['a'] }} {{ 1 in {1:2} }} {{ 'k' in {'k': 0} }} {{ 2 in (1, 2) }} {{ x in [1] }})J"),
            R"J(True True True True True False)J");
  EXPECT_EQ(render(R"J({{ 1 if true else 2 }} {{ 1 if false }}| {{ 'a' if x is defined else 'b' }} {{ 1 if 0 else 2 if 0 else 3 }})J"),
            R"J(1 | b 3)J");
  EXPECT_EQ(render(R"J({{ 'a' ~ 1 ~ none ~ x ~ 1.0 ~ [1] }})J"),
            R"J(a1None1.0[1])J");
  EXPECT_EQ(render(R"J({{ -x|default(3) }} {{ - 3|abs }} {{ not 1 is odd }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
}

TEST(JinjaExpressions, SubscriptsAttributesSlices) {
  EXPECT_EQ(render(R"J({{ 'abc'[1] }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ [1,2,3,4][-2:] }} {{ [1,2,3][::2] }} {{ [1,2,3][5:] }} {{ (1,2,3)[1:] }})J"),
            R"J(b bcd fedcba [3, 4] [1, 3] [] (2, 3))J");
  EXPECT_EQ(render(R"J({{ {'a': 1}['a'] }} {{ {'a': 1}.a }} {{ [1,2].0 }} {{ {'a': [1,2]}.a[1] }} {{ {'items': 5}['items'] }} {{ {'items': 5}.items() | list }})J"),
            R"J(1 1 1 2 5 [('items', 5)])J");
  EXPECT_EQ(render(R"J({{ m.role }} {{ m['content'] }} {{ m.content[:2] }} {{ msgs[-1].role }} {{ msgs[0]['role'] }})J", R"J({"m": {"role": "user", "content": "Hello"}, "msgs": [{"role": "a"}, {"role": "b"}]})J"),
            R"J(user Hello He b a)J");
}

TEST(JinjaExpressions, UndefinedBehavesLikeJinja) {
  EXPECT_EQ(render(R"J({{ x }}|{{ x is defined }}|{{ x is undefined }}|{{ x | length }}|{{ x | default('d') }}|{{ x ~ 'a' }}|{% for i in x %}{{ i }}{% endfor %}|{{ x == x }}|{{ x is none }}|{{ not x }})J"),
            R"J(|False|True|0|d|a||True|False|True)J");
  EXPECT_EQ(render(R"J({{ d.missing }}|{{ d.missing is defined }}|{{ d['missing'] is defined }}|{{ l[9] is defined }}|{{ d.missing | trim }})J", R"J({"d": {}, "l": []})J"),
            R"J(|False|False|False|)J");
  EXPECT_EQ(render(R"J({{ d.k + 'x' }})J", R"J({"d": {}})J"),
            R"J(ERROR: UndefinedError: 'dict object' has no attribute 'k')J");
  EXPECT_EQ(render(R"J({{ 'x' + d.k }})J", R"J({"d": {}})J"),
            R"J(ERROR: UndefinedError: 'dict object' has no attribute 'k')J");
  EXPECT_EQ(render(R"J({{ l[5] + 'x' }})J", R"J({"l": [1]})J"),
            R"J(ERROR: UndefinedError: list object has no element 5)J");
  EXPECT_EQ(render(R"J({{ x.y }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
  EXPECT_EQ(render(R"J({{ x.y.z }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
  EXPECT_EQ(render(R"J({{ x + 1 }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
  EXPECT_EQ(render(R"J({{ x < 1 }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
  EXPECT_EQ(render(R"J({{ x() }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
  EXPECT_EQ(render(R"J({{ x['a'] }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
  EXPECT_EQ(render(R"J({{ x | tojson }})J"),
            R"J(ERROR: TypeError: Object of type Undefined is not JSON serializable)J");
  EXPECT_EQ(render(R"J({{ none.a }})J"),
            R"J()J");
  EXPECT_EQ(render(R"J({{ s.nope + '' }})J", R"J({"s": "str"})J"),
            R"J(ERROR: UndefinedError: 'str object' has no attribute 'nope')J");
  EXPECT_EQ(render(R"J({{ (1 if false) + 1 }})J"),
            R"J(ERROR: UndefinedError: the inline if-expression on line 1 evaluated to false and no else section was defined.)J");
  EXPECT_EQ(render(R"J({{ [][0] + 1 }})J"),
            R"J(ERROR: UndefinedError: list object has no element 0)J");
  EXPECT_EQ(render(R"J({{ loop.index }})J"),
            R"J(ERROR: UndefinedError: 'loop' is undefined)J");
}

TEST(JinjaExpressions, TypeErrorsHavePythonMessages) {
  EXPECT_EQ(render(R"J({{ 'x' + 1 }})J"),
            R"J(ERROR: TypeError: can only concatenate str (not "int") to str)J");
  EXPECT_EQ(render(R"J({{ 1 + 'x' }})J"),
            R"J(ERROR: TypeError: unsupported operand type(s) for +: 'int' and 'str')J");
  EXPECT_EQ(render(R"J({{ [1] + 'x' }})J"),
            R"J(ERROR: TypeError: can only concatenate list (not "str") to list)J");
  EXPECT_EQ(render(R"J({{ 'a' + none }})J"),
            R"J(ERROR: TypeError: can only concatenate str (not "NoneType") to str)J");
  EXPECT_EQ(render(R"J({{ '1' < 1 }})J"),
            R"J(ERROR: TypeError: '<' not supported between instances of 'str' and 'int')J");
  EXPECT_EQ(render(R"J({{ -'a' }})J"),
            R"J(ERROR: TypeError: bad operand type for unary -: 'str')J");
  EXPECT_EQ(render(R"J({{ 1 / 0 }})J"),
            R"J(ERROR: ZeroDivisionError: division by zero)J");
  EXPECT_EQ(render(R"J({{ 5 // 0 }})J"),
            R"J(ERROR: ZeroDivisionError: integer division or modulo by zero)J");
  EXPECT_EQ(render(R"J({{ 5 % 0 }})J"),
            R"J(ERROR: ZeroDivisionError: integer modulo by zero)J");
  EXPECT_EQ(render(R"J({{ 'abc'() }})J"),
            R"J(ERROR: TypeError: 'str' object is not callable)J");
  EXPECT_EQ(render(R"J({{ 1 in 'abc' }})J"),
            R"J(ERROR: TypeError: 'in <string>' requires string as left operand, not int)J");
  EXPECT_EQ(render(R"J({{ 1 in 2 }})J"),
            R"J(ERROR: TypeError: argument of type 'int' is not iterable)J");
  EXPECT_EQ(render(R"J({% for x in none %}{% endfor %})J"),
            R"J(ERROR: TypeError: 'NoneType' object is not iterable)J");
  EXPECT_EQ(render(R"J({% for x in 5 %}{% endfor %})J"),
            R"J(ERROR: TypeError: 'int' object is not iterable)J");
  EXPECT_EQ(render(R"J({{ {[1]: 2} }})J"),
            R"J(ERROR: TypeError: unhashable type: 'list')J");
  EXPECT_EQ(render(R"J({% set a, b = [1] %})J"),
            R"J(ERROR: ValueError: not enough values to unpack (expected 2, got 1))J");
  EXPECT_EQ(render(R"J({% set a, b = [1, 2, 3] %})J"),
            R"J(ERROR: ValueError: too many values to unpack (expected 2))J");
}

}  // namespace pensieve
