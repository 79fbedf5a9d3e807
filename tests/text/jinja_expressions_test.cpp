// Expressions: literals, Python printing (repr, floats), operators, precedence, undefined values.
// Expected renders were produced by Python jinja2 3.1 configured as transformers configures it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "jinja_render.h"

namespace pensieve {
using test::render;

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

TEST(JinjaExpressions, MoreEdgeCases) {
  EXPECT_EQ(render(R"J({{ {'a': {'b': 1}} }})J"),
            R"J({'a': {'b': 1}})J");
  EXPECT_EQ(render(R"J({{ {'a': 1}}})J"),
            R"J({'a': 1})J");
  EXPECT_EQ(render(R"J({% set d = {'x': {'y': 2}} %}{{ d.x.y }}{{ d['x']['y'] }})J"),
            R"J(22)J");
  EXPECT_EQ(render(R"J({{ [1, 2, 3,] }} {{ {'a': 1,} }} {{ (1, 2,) }})J"),
            R"J([1, 2, 3] {'a': 1} (1, 2))J");
  EXPECT_EQ(render(R"J({{ 1 if 2 > 1 else 0 }} {{ (1, 2) if true }})J"),
            R"J(1 (1, 2))J");
  EXPECT_EQ(render(R"J({{ 'abc' | upper | lower | capitalize }})J"),
            R"J(Abc)J");
  EXPECT_EQ(render(R"J({{ -1 | abs }} {{ (-1) | abs }})J"),
            R"J(1 1)J");
  EXPECT_EQ(render(R"J({{ 'x' ~ 1 + 2 }})J"),
            R"J(ERROR: TypeError: can only concatenate str (not "int") to str)J");
  EXPECT_EQ(render(R"J({{ 1 + 2 ~ 'x' }})J"),
            R"J(ERROR: TypeError: unsupported operand type(s) for +: 'int' and 'str')J");
  EXPECT_EQ(render(R"J({{ not 1 == 2 }} {{ not 1 in [1] }} {{ 1 not in [1] and true }})J"),
            R"J(True False False)J");
  EXPECT_EQ(render(R"J({{ true and false or true }} {{ false or false and true }})J"),
            R"J(True False)J");
  EXPECT_EQ(render(R"J({{ 'a' < 'b' and 2 >= 1 }})J"),
            R"J(True)J");
  EXPECT_EQ(render(R"J({{ [1,2,3] | select('>', 1) | list }} {{ [1,2,3] | select('in', [1,3]) | list }})J"),
            R"J([2, 3] [1, 3])J");
  EXPECT_EQ(render(R"J({{ 1.5 | int }} {{ -1.5 | int }} {{ '-3' | int }} {{ '1_000' | int }} {{ '+5' | int }} {{ '' | int }})J"),
            R"J(1 -1 -3 1000 5 0)J");
  EXPECT_EQ(render(R"J({{ 1e3 }} {{ 1.5e-7 }} {{ 2.5e+20 }} {{ 100.0 }} {{ 1.23456789012345678 }} {{ 3.0 * 1.1 }})J"),
            R"J(1000.0 1.5e-07 2.5e+20 100.0 1.2345678901234567 3.3000000000000003)J");
  EXPECT_EQ(render(R"J({{ 10 / 3 }} {{ 2 ** 0.5 }} {{ 1 / 3 * 3 }} {{ 9007199254740993 }} {{ 0.1 * 3 }})J"),
            R"J(3.3333333333333335 1.4142135623730951 1.0 9007199254740993 0.30000000000000004)J");
  EXPECT_EQ(render(R"J({% for x in [1,2,3] %}{{ loop.index }}{% if loop.index == 2 %}{% break %}{% endif %}{% else %}E{% endfor %})J"),
            R"J(12)J");
  EXPECT_EQ(render(R"J({% for x in [1] %}{% for y in [] %}{% else %}{{ loop.index }}{% endfor %}{% endfor %})J"),
            R"J(1)J");
  EXPECT_EQ(render(R"J({% for x in [3,1,2] | sort %}{{ x }}{% endfor %})J"),
            R"J(123)J");
  EXPECT_EQ(render(R"J({% for k, v in {'b': 1, 'a': 2} | dictsort %}{{ k }}{{ v }}{% endfor %})J"),
            R"J(a2b1)J");
  EXPECT_EQ(render(R"J({% for k, v in {'b': 1, 'a': 2} | items %}{{ k }}{{ v }}{% endfor %})J"),
            R"J(b1a2)J");
  EXPECT_EQ(render(R"J({% set x = none %}{{ x is none }} {{ x is defined }} {{ x | default('d') }} {{ x | default('d', true) }})J"),
            R"J(True True None d)J");
  EXPECT_EQ(render(R"J({{ none ~ '' }} {{ none | string }} {{ none | tojson }} {{ none | length }})J"),
            R"J(ERROR: TypeError: object of type 'NoneType' has no len())J");
  EXPECT_EQ(render(R"J({{ '' | length }} {{ '' is string }} {{ '' is none }})J"),
            R"J(0 True False)J");
  EXPECT_EQ(render(R"J({% macro m(x) -%}
  [{{ x }}]
{%- endmacro %}
{{ m(1) }}
{{ m(2) }})J"),
            R"J([1]
[2])J");
  EXPECT_EQ(render(R"J({% macro m() %}{{ caller() }}{% endmacro %}{{ m() }})J"),
            R"J(ERROR: UndefinedError: No caller defined)J");
  EXPECT_EQ(render(R"J({{ [] | join(', ') }}|{{ [1] | join(', ') }}|{{ {'a': 1, 'b': 2} | join(',') }})J"),
            R"J(|1|a,b)J");
  EXPECT_EQ(render(R"J({{ {'a': 1} | first }} {{ {'a': 1, 'b': 2} | last }})J"),
            R"J(a b)J");
  EXPECT_EQ(render(R"J({{ [1, 2] | first | string | length }})J"),
            R"J(1)J");
  EXPECT_EQ(render(R"J({{ 'x' in none }})J"),
            R"J(ERROR: TypeError: argument of type 'NoneType' is not iterable)J");
  EXPECT_EQ(render(R"J({{ messages[0] }})J"),
            R"J(ERROR: UndefinedError: 'messages' is undefined)J");
  EXPECT_EQ(render(R"J({% set x = [1, 2] %}{{ x[1:] }}{{ x[:-1] }}{{ x[5:] }}{{ x[-5:] }}{{ x[::-1] }})J"),
            R"J([2][1][][1, 2][2, 1])J");
  EXPECT_EQ(render(R"J({{ 'abc'[-5:] }}|{{ 'abc'[1:-1] }}|{{ 'abc'[10:] }})J"),
            R"J(abc|b|)J");
  EXPECT_EQ(render(R"J({% set a = 'x' %}{% set b = a ~ 'y' %}{{ b }}{{ a }})J"),
            R"J(xyx)J");
  EXPECT_EQ(render(R"J({{ {'a': 1}.items() | list | first }})J"),
            R"J(('a', 1))J");
  EXPECT_EQ(render(R"J({{ 'A' ~ 'é' | upper }} {{ 'ÉCOLE' | lower }} {{ 'straße' | upper }})J"),
            R"J(AÉ école STRASSE)J");
  EXPECT_EQ(render(R"J({{ 'ab cd' | title }} {{ "they're bill's" | title }} {{ "they're bill's".title() }})J"),
            R"J(Ab Cd They're Bill's They'Re Bill'S)J");
  EXPECT_EQ(render(R"J({{ '  multiple   spaces  ' | wordcount }} {{ 'a-b_c' | wordcount }})J"),
            R"J(2 2)J");
  EXPECT_EQ(render(R"J({{ 'hello' | replace('l', 'L', 1) }})J"),
            R"J(heLlo)J");
  EXPECT_EQ(render(R"J({{ '%s' % none }} {{ '%s %s' % (1, [2]) }})J"),
            R"J(None 1 [2])J");
  EXPECT_EQ(render(R"J({{ 'x' is lower }} {{ '1' is lower }} {{ 1 is lower }})J"),
            R"J(True False False)J");
  EXPECT_EQ(render(R"J({{ 3 is divisibleby(3) }} {{ 7 is divisibleby 2 }})J"),
            R"J(True False)J");
  EXPECT_EQ(render(R"J({% set ns = namespace(a=[]) %}{% set ns.a = ns.a + [1] %}{{ ns.a | length }})J"),
            R"J(1)J");
  EXPECT_EQ(render(R"J({% if 'k' in {'k': none} %}yes{% endif %})J"),
            R"J(yes)J");
  EXPECT_EQ(render(R"J({{ {'a': 1}.get('a', 2) }} {{ {'a': none}.get('a', 2) }})J"),
            R"J(1 None)J");
  EXPECT_EQ(render(R"J({{ [1,2,3][1] }} {{ [1,2,3][-1] }} {{ [1,2,3][true] }})J"),
            R"J(2 3 2)J");
  EXPECT_EQ(render(R"J({{ 'abc'.split('b') | join('|') }})J"),
            R"J(a|c)J");
  EXPECT_EQ(render(R"J({% for line in 'a\nb'.split('\n') %}[{{ line }}]{% endfor %})J"),
            R"J([a][b])J");
  EXPECT_EQ(render(R"J({{ '\\n' }} {{ '\\' }} {{ 'a\\b' | length }})J"),
            R"J(\n \ 3)J");
  EXPECT_EQ(render(R"J({{ '\'' }} {{ "\"" }})J"),
            R"J(' ")J");
  EXPECT_EQ(render(R"J({{ "{'a': 1}" }})J"),
            R"J({'a': 1})J");
  EXPECT_EQ(render(R"J({{ 'tab\there' | tojson }} {{ 'ctrl\x1fchar' | tojson }} {{ 'emoji 😀' | tojson }} {{ 'emoji 😀' | length }})J"),
            R"J("tab\there" "ctrl\u001fchar" "emoji 😀" 7)J");
  EXPECT_EQ(render(R"J({{ [1.0, 2.50, -0.0, 1e100] | tojson }})J"),
            R"J([1.0, 2.5, -0.0, 1e+100])J");
  EXPECT_EQ(render(R"J({{ {'x': [1, {'y': []}]} | tojson(indent=2) }})J"),
            R"J({
  "x": [
    1,
    {
      "y": []
    }
  ]
})J");
  EXPECT_EQ(render(R"J({{ 5 | string + 'a' }})J"),
            R"J(5a)J");
  EXPECT_EQ(render(R"J({% set x = 1 %}{% set x = x + 1 %}{{ x }})J"),
            R"J(2)J");
  EXPECT_EQ(render(R"J({{ x | default(none) is none }})J"),
            R"J(True)J");
  EXPECT_EQ(render(R"J({% if x is not defined or x is none %}A{% endif %})J"),
            R"J(A)J");
  EXPECT_EQ(render(R"J({{ 'abc' if 'b' in 'abc' }})J"),
            R"J(abc)J");
  EXPECT_EQ(render(R"J({{ [0, '', none, [], {}, 'a'] | select | list }})J"),
            R"J(['a'])J");
  EXPECT_EQ(render(R"J({{ [{'r': 'a'}, {'r': 'b'}] | selectattr('r', 'in', ['a']) | map(attribute='r') | list }})J"),
            R"J(['a'])J");
  EXPECT_EQ(render(R"J({{ [{'r': 'a'}, {'x': 'b'}] | rejectattr('r', 'defined') | list }})J"),
            R"J([{'x': 'b'}])J");
  EXPECT_EQ(render(R"J({{ [{'r': 'a'}, {'x': 'b'}] | selectattr('r', 'undefined') | list }})J"),
            R"J([{'x': 'b'}])J");
  EXPECT_EQ(render(R"J({{ ['a', 'b'] | select('equalto', 'a') | list | length }})J"),
            R"J(1)J");
  EXPECT_EQ(render(R"J({{ [3, 1] | max(attribute='x') }})J"),
            R"J(ERROR: UndefinedError: 'int object' has no attribute 'x')J");
  EXPECT_EQ(render(R"J({{ 'x' | trim('') }}|{{ 'xyx' | trim('x') }})J"),
            R"J(x|y)J");
  EXPECT_EQ(render(R"J({{ [1, 2, 3] | sum(attribute='x') }})J"),
            R"J(ERROR: UndefinedError: 'int object' has no attribute 'x')J");
  EXPECT_EQ(render(R"J({{ [[1], [2]] | sum(start=[]) }})J"),
            R"J([1, 2])J");
  EXPECT_EQ(render(R"J({{ 'a' | first }} {{ '' | first }}|)J"),
            R"J(a |)J");
  EXPECT_EQ(render(R"J({{ none | first }})J"),
            R"J(ERROR: TypeError: 'NoneType' object is not iterable)J");
}

}  // namespace pensieve
