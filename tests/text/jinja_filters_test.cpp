// Filters, tests and the str/dict/list methods that templates call.
// Expected renders were produced by Python jinja2 3.1 configured as transformers configures it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "jinja_render.h"

namespace pensieve {
using test::render;

TEST(JinjaFilters, StringFilters) {
  EXPECT_EQ(render(R"J({{ '  ab  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ 'hello wORLD-x (y' | title }}|{{ 'hELLO' | capitalize }}|{{ 'a b, c' | wordcount }})J"),
            R"J(ab|a|ABC|abc|Hello World-X (Y|Hello|3)J");
  EXPECT_EQ(render(R"J({{ 'aXbX' | replace('X', '-') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'x' | center(5) }}| {{ 'hello world foo bar' | truncate(9) }}|{{ 'hello world foo bar' | truncate(9, true) }}|{{ 'short' | truncate(9) }})J"),
            R"J(a-b- bba   x  | hello...|hello ...|short)J");
  EXPECT_EQ(render(R"J({{ 'text
more

last' | indent(2) }}|{{ 'text
more' | indent(2, true) }}|{{ 'a

b' | indent(2, blank=true) }}|{{ 'a
b' | indent('> ') }})J"),
            R"J(text
  more

  last|  text
  more|a
  
  b|a
> b)J");
  EXPECT_EQ(render(R"J({{ 1 | string }} {{ none | string }} {{ [1, 'a'] | string }} {{ '%s=%s' | format('a', 1) }} {{ '<a href="x">&\'' | e }} {{ '<b>' | safe }})J"),
            R"J(1 None [1, 'a'] a=1 &lt;a href=&#34;x&#34;&gt;&amp;&#39; <b>)J");
  EXPECT_EQ(render(R"J({{ 'abc' | safe + '<b>' }} {{ '<b>' + ('x' | safe) }} {{ 'abc' | reverse }} {{ 'abc' | list }} {{ 'abc' | first }} {{ 'abc' | last }})J"),
            R"J(abc&lt;b&gt; &lt;b&gt;x cba ['a', 'b', 'c'] a c)J");
}

TEST(JinjaFilters, ToJson) {
  EXPECT_EQ(render(R"J({{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ d | tojson(sort_keys=true) }}|{{ d | tojson(indent='\t') }})J", R"J({"d": {"b": [1, 2.5, "é<>&'"], "a": null, "c": {}, "e": []}})J"),
            R"J({"b": [1, 2.5, "é<>&'"], "a": null, "c": {}, "e": []}|{
  "b": [
    1,
    2.5,
    "é<>&'"
  ],
  "a": null,
  "c": {},
  "e": []
}|{"a": null, "b": [1, 2.5, "é<>&'"], "c": {}, "e": []}|{
	"b": [
		1,
		2.5,
		"é<>&'"
	],
	"a": null,
	"c": {},
	"e": []
})J");
  EXPECT_EQ(render(R"J({{ '\u2028x\ty\x01"\\' | tojson }} {{ [1, 2] | tojson }} {{ (1, 2) | tojson }} {{ 'x' | tojson }} {{ 1.0 | tojson }} {{ true | tojson }} {{ none | tojson }})J"),
            R"J(" x\ty\u0001\"\\" [1, 2] [1, 2] "x" 1.0 true null)J");
  EXPECT_EQ(render(R"J({{ {1: 'a', true: 'b', none: 'c'} | tojson }} {{ {'a': 1} | tojson(separators=(',', ':')) }} {{ [1] | tojson(indent=0) }})J"),
            R"J({"1": "b", "null": "c"} {"a":1} [
1
])J");
  EXPECT_EQ(render(R"J({{ [3,1] | map('string') | tojson }})J"),
            R"J(ERROR: TypeError: Object of type generator is not JSON serializable)J");
  EXPECT_EQ(render(R"J({{ {'a': 1} | items | tojson }})J"),
            R"J(ERROR: TypeError: Object of type generator is not JSON serializable)J");
  EXPECT_EQ(render(R"J({{ namespace() | tojson }})J"),
            R"J(ERROR: TypeError: Object of type Namespace is not JSON serializable)J");
  EXPECT_EQ(render(R"J({{ tools | tojson(indent=4) }})J", R"J({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]})J"),
            R"J([
    {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {}
            }
        }
    }
])J");
}

TEST(JinjaFilters, SequenceFilters) {
  EXPECT_EQ(render(R"J({{ [3,1,2] | sort }} {{ [3,1,2] | sort(reverse=true) }} {{ ['b','A','c'] | sort }} {{ ['b','A','c'] | sort(case_sensitive=true) }})J"),
            R"J([1, 2, 3] [3, 2, 1] ['A', 'b', 'c'] ['A', 'b', 'c'])J");
  EXPECT_EQ(render(R"J({{ [1,2,2,3,1] | unique | list }} {{ ['a','A','b'] | unique | list }} {{ [1,2] | reverse | list }} {{ [1,2,3] | first }} {{ [1,2,3] | last }} {{ [] | first }}|{{ [] | last }}|)J"),
            R"J([1, 2, 3] ['a', 'b'] [2, 1] 1 3 ||)J");
  EXPECT_EQ(render(R"J({{ [1,2,3] | length }} {{ 'abc' | count }} {{ {'a': 1} | length }} {{ [1,2,3] | sum }} {{ [1.5, 2] | sum(start=1) }} {{ [1,5,3] | max }} {{ [4,2,8] | min }} {{ [] | max }}|)J"),
            R"J(3 3 1 6 4.5 5 2 |)J");
  EXPECT_EQ(render(R"J({{ [1,2,3] | join(', ') }} {{ [1, none, 'a'] | join }} {{ [{'a':1},{'a':2}] | map(attribute='a') | join }} {{ ['1','2'] | map('int') | list }} {{ [{'a':1},{}] | map(attribute='a', default='z') | list }})J"),
            R"J(1, 2, 3 1Nonea 12 [1, 2] [1, 'z'])J");
  EXPECT_EQ(render(R"J({{ [{'a':1,'t':'x'},{'a':2,'t':'y'}] | selectattr('t','equalto','x') | list }} {{ [{'a':1},{'b':2}] | selectattr('a','defined') | list }} {{ [{'a':1},{'a':0}] | rejectattr('a') | list }})J"),
            R"J([{'a': 1, 't': 'x'}] [{'a': 1}] [{'a': 0}])J");
  EXPECT_EQ(render(R"J({{ [1,2,3,4] | select('odd') | list }} {{ [1,2,3,4] | reject('even') | list }} {{ [0,1,'',2] | select | list }} {{ [1,5,9] | select('gt', 4) | list }} {{ none | select | list }} {{ none | map('upper') | list }})J"),
            R"J([1, 3] [1, 3] [1, 2] [5, 9] [] [])J");
  EXPECT_EQ(render(R"J({{ [1,2,3,4,5] | batch(2) | list }} {{ [1,2,3] | batch(2, 'x') | list }} {{ [1,2,3,4,5] | slice(2) | list }})J"),
            R"J([[1, 2], [3, 4], [5]] [[1, 2], [3, 'x']] [[1, 2, 3], [4, 5]])J");
  EXPECT_EQ(render(R"J({{ [{'n':'b'},{'n':'a'}] | sort(attribute='n') | map(attribute='n') | join }} {{ [{'g':1,'v':'a'},{'g':2,'v':'b'},{'g':1,'v':'c'}] | groupby('g') }})J"),
            R"J(ab [(1, [{'g': 1, 'v': 'a'}, {'g': 1, 'v': 'c'}]), (2, [{'g': 2, 'v': 'b'}])])J");
  EXPECT_EQ(render(R"J({{ {'b':1,'a':2} | dictsort }} {{ {'b':1,'a':2} | dictsort(by='value', reverse=true) }} {{ {'b':1,'a':2} | items | list }} {{ x | items | list }})J"),
            R"J([('a', 2), ('b', 1)] [('a', 2), ('b', 1)] [('b', 1), ('a', 2)] [])J");
  EXPECT_EQ(render(R"J({{ [1] | map('upper') | first }})J"),
            R"J(1)J");
  EXPECT_EQ(render(R"J({{ (1, 2) | list }} {{ {'a': 1} | list }} {{ x | list }})J"),
            R"J([1, 2] ['a'] [])J");
  EXPECT_EQ(render(R"J({{ [[1, 2], [3]] | map('length') | list }} {{ [{'a': {'b': 7}}] | map(attribute='a.b') | list }})J"),
            R"J([2, 1] [7])J");
  EXPECT_EQ(render(R"J({{ [1,2] | map(attribute='x') | list }})J"),
            R"J([Undefined, Undefined])J");
  EXPECT_EQ(render(R"J({{ ['x', 'y'] | join(attribute=0) }})J"),
            R"J(xy)J");
  EXPECT_EQ(render(R"J({{ 5 | length }})J"),
            R"J(ERROR: TypeError: object of type 'int' has no len())J");
  EXPECT_EQ(render(R"J({{ [1] | map('nope') | list }})J"),
            R"J(ERROR: TemplateRuntimeError: No filter named 'nope'.)J");
}

TEST(JinjaFilters, NumberFilters) {
  EXPECT_EQ(render(R"J({{ '3' | int + 1 }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} {{ ' 12 ' | int }} {{ '0x1A' | int(0, 16) }} {{ 3.9 | int }} {{ true | int }} {{ none | int }})J"),
            R"J(4 3 0 5 12 26 3 1 0)J");
  EXPECT_EQ(render(R"J({{ '2.5' | float }} {{ 'x' | float }} {{ 3 | float }} {{ '1e3' | float }})J"),
            R"J(2.5 0.0 3.0 1000.0)J");
  EXPECT_EQ(render(R"J({{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 7 | round }} {{ 2.1 | round(0, 'ceil') }} {{ 2.9 | round(method='floor') }} {{ -3 | abs }} {{ -2.5 | abs }})J"),
            R"J(2.57 2.0 4.0 7 3.0 2.0 3 2.5)J");
  EXPECT_EQ(render(R"J({{ x | int }})J"),
            R"J(ERROR: UndefinedError: 'x' is undefined)J");
}

TEST(JinjaFilters, Tests) {
  EXPECT_EQ(render(R"J({{ x is none }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }} {{ {} is mapping }} {{ [] is mapping }})J"),
            R"J(False True True True True True False True True False)J");
  EXPECT_EQ(render(R"J({{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ x is iterable }} {{ none is iterable }} {{ {} is iterable }} {{ [] is sequence }} {{ {} is sequence }} {{ 1 is sequence }})J"),
            R"J(True True False True False True True True False)J");
  EXPECT_EQ(render(R"J({{ true is sameas true }} {{ 1 is sameas true }} {{ 4 is divisibleby 2 }} {{ 2 is even }} {{ 3 is odd }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ true is boolean }} {{ 1 is boolean }})J"),
            R"J(True False True True True True True True False)J");
  EXPECT_EQ(render(R"J({{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 2 is ge 2 }} {{ 3 is gt(2) }} {{ 'a' is in 'abc' }} {{ 1 is in [2] }} {{ x is not defined }} {{ 1 is not none }})J"),
            R"J(True False True True True True True False True True)J");
  EXPECT_EQ(render(R"J({{ true is true }} {{ 1 is true }} {{ false is false }} {{ range is callable }} {{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ 'x' | safe is escaped }})J"),
            R"J(True False True True True False True True)J");
  EXPECT_EQ(render(R"J({{ x is nope }})J"),
            R"J(ERROR: TemplateAssertionError: No test named 'nope'.)J");
}

TEST(JinjaFilters, StringMethods) {
  EXPECT_EQ(render(R"J({{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'a b  c'.rsplit(none, 1) }} {{ 'l1\nl2\r\nl3'.splitlines() }})J"),
            R"J(['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a,b', 'c'] ['a b', 'c'] ['l1', 'l2', 'l3'])J");
  EXPECT_EQ(render(R"J({{ 'abc'.startswith('a') }} {{ 'abc'.endswith(('x','c')) }} {{ 'xxaxx'.strip('x') }} {{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}| {{ '\u3000a\xa0'.strip() }}|)J"),
            R"J(True True a a | a| a|)J");
  EXPECT_EQ(render(R"J({{ 'hello {}!'.format('w') }} {{ '{0}-{1}-{0}'.format(1,2) }} {{ '{a}{{x}}'.format(a=3) }} {{ 'abc'.replace('b','X') }} {{ 'ab'.replace('', '-') }} {{ 'abc'.find('c') }} {{ 'abc'.find('z') }} {{ 'aXa'.count('a') }})J"),
            R"J(hello w! 1-2-1 3{x} aXc -a-b- 2 -1 2)J");
  EXPECT_EQ(render(R"J({{ 'abc'.upper() }} {{ 'Hello World'.lower() }} {{ 'hello wORLD'.title() }} {{ 'hELLO'.capitalize() }} {{ 'Ab'.swapcase() }} {{ 'x'.center(4, '*') }} {{ 'x'.ljust(3) }}|{{ 'x'.rjust(3) }} {{ '7'.zfill(3) }})J"),
            R"J(ABC hello world Hello World Hello aB *x** x  |  x 007)J");
  EXPECT_EQ(render(R"J({{ '12'.isdigit() }} {{ 'ab'.isalpha() }} {{ 'a1'.isalnum() }} {{ '  '.isspace() }} {{ 'AB'.isupper() }} {{ 'ab'.islower() }} {{ ''.isdigit() }})J"),
            R"J(True True True True True True False)J");
  EXPECT_EQ(render(R"J({{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ ', '.join(['a', 'b']) }} {{ 'abc'.index('c') }})J"),
            R"J(('a', '=', 'b=c') ('a=b', '=', 'c') x a, b 2)J");
  EXPECT_EQ(render(R"J({{ ', '.join([1]) }})J"),
            R"J(ERROR: TypeError: sequence item 0: expected str instance, int found)J");
  EXPECT_EQ(render(R"J({{ 'a'.split('') }})J"),
            R"J(ERROR: ValueError: empty separator)J");
  EXPECT_EQ(render(R"J({{ 'abc'.index('z') }})J"),
            R"J(ERROR: ValueError: substring not found)J");
  EXPECT_EQ(render(R"J({{ 'x'.nope() }})J"),
            R"J(ERROR: UndefinedError: 'str object' has no attribute 'nope')J");
}

TEST(JinjaFilters, DictAndListMethods) {
  EXPECT_EQ(render(R"J({{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('b') }} {{ d.get('zz', 3) }} {{ d.get('zz') }} {{ d.items() | length }})J", R"J({"d": {"b": 1, "a": 2}})J"),
            R"J([('b', 1), ('a', 2)] ['b', 'a'] [1, 2] 1 3 None 2)J");
  EXPECT_EQ(render(R"J({{ {'a': 1}.items() }} {{ {'a': 1}.keys() }} {{ [1, 2, 1].count(1) }} {{ [1, 2].index(2) }} {{ (1, 2).count(2) }} {{ [1, 2].copy() }} {{ {'a': 1}.copy() }})J"),
            R"J(dict_items([('a', 1)]) dict_keys(['a']) 2 1 1 [1, 2] {'a': 1})J");
  EXPECT_EQ(render(R"J({{ [].append(1) }})J"),
            R"J(ERROR: SecurityError: access to attribute 'append' of 'list' object is unsafe.)J");
  EXPECT_EQ(render(R"J({{ [] | first }}|{{ {}.update({'a': 1}) }})J"),
            R"J(ERROR: SecurityError: access to attribute 'update' of 'dict' object is unsafe.)J");
  EXPECT_EQ(render(R"J({% set l = [] %}{% set _ = l.append(1) %}{{ l }})J"),
            R"J(ERROR: SecurityError: access to attribute 'append' of 'list' object is unsafe.)J");
  EXPECT_EQ(render(R"J({{ [1].pop() }})J"),
            R"J(ERROR: SecurityError: access to attribute 'pop' of 'list' object is unsafe.)J");
}

}  // namespace pensieve
