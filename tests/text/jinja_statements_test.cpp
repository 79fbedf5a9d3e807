// Statements: if, for with loop.*, loop filters and else, break/continue, set and scoping, namespace, macros, call, filter and with blocks.
// Expected renders were produced by Python jinja2 3.1 configured as transformers configures it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "jinja_render.h"

namespace pensieve {
using test::render;

TEST(JinjaStatements, IfElifElse) {
  EXPECT_EQ(render(R"J({% if x %}a{% elif y %}b{% else %}c{% endif %})J"),
            R"J(c)J");
  EXPECT_EQ(render(R"J({% if x %}a{% elif y %}b{% else %}c{% endif %})J", R"J({"y": 1})J"),
            R"J(b)J");
  EXPECT_EQ(render(R"J({% if x > 1 and (y or z) %}yes{% endif %})J", R"J({"x": 2, "z": true})J"),
            R"J(yes)J");
  EXPECT_EQ(render(R"J({% if [] %}a{% elif {} %}b{% elif '0' %}c{% endif %})J"),
            R"J(c)J");
}

TEST(JinjaStatements, LoopVariable) {
  EXPECT_EQ(render(R"J({% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.cycle('a','b') }}|{% endfor %})J"),
            R"J(1032TrueFalse3a|2121FalseFalse3b|3210FalseTrue3a|)J");
  EXPECT_EQ(render(R"J({% for x in [1,2,3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {{ loop.depth }}{{ loop.depth0 }}|{% endfor %})J"),
            R"J(<1>2 10|1<2>3 10|2<3> 10|)J");
  EXPECT_EQ(render(R"J({% for x in [1,1,2] %}{{ loop.changed(x) }}{% endfor %})J"),
            R"J(TrueFalseTrue)J");
  EXPECT_EQ(render(R"J({% for a in [[1,2],[3,4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }};{% endfor %})J"),
            R"J(11221;13242;)J");
}

TEST(JinjaStatements, LoopFilterElseAndControls) {
  EXPECT_EQ(render(R"J({% for x in [1,2,3] if x > 1 %}{{ loop.index }}:{{ x }}/{{ loop.length }} {% else %}none{% endfor %})J"),
            R"J(1:2/2 2:3/2 )J");
  EXPECT_EQ(render(R"J({% for x in [] %}a{% else %}empty{% endfor %})J"),
            R"J(empty)J");
  EXPECT_EQ(render(R"J({% for x in [1] if x > 5 %}a{% else %}filtered{% endfor %})J"),
            R"J(filtered)J");
  EXPECT_EQ(render(R"J({% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %})J"),
            R"J(13)J");
  EXPECT_EQ(render(R"J({% for x in 'ab' %}{{ x }}{% endfor %}{% for k in {'a':1,'b':2} %}{{ k }}{% endfor %}{% for k, v in {'x': 1}.items() %}{{ k }}={{ v }}{% endfor %})J"),
            R"J(ababx=1)J");
  EXPECT_EQ(render(R"J({% for a, b in [(1, 2), [3, 4]] %}{{ a + b }}{% endfor %}{% for (a, b) in [(5, 6)] %}{{ a * b }}{% endfor %})J"),
            R"J(3730)J");
  EXPECT_EQ(render(R"J({% for m in messages if m.role != 'system' %}{{ m.content }}{% if not loop.last %}, {% endif %}{% endfor %})J", R"J({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})J"),
            R"J(u, a)J");
}

TEST(JinjaStatements, SetAndScoping) {
  EXPECT_EQ(render(R"J({% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }})J"),
            R"J(231)J");
  EXPECT_EQ(render(R"J({% for i in [1,2] %}{% if i == 1 %}{% set y = 5 %}{% endif %}[{{ y }}]{% endfor %})J"),
            R"J([5][])J");
  EXPECT_EQ(render(R"J({% for i in [1,2] %}{% set z = i %}{% endfor %}[{{ z }}])J"),
            R"J([])J");
  EXPECT_EQ(render(R"J({% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }})J"),
            R"J(2)J");
  EXPECT_EQ(render(R"J({% set x = 'o' %}{% for x in [1,2] %}{{ x }}{% endfor %}{{ x }})J"),
            R"J(12o)J");
  EXPECT_EQ(render(R"J({% set a, b = [1, 2] %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }})J"),
            R"J(12(1, 2))J");
  EXPECT_EQ(render(R"J({% set x %}  block {{ 1 }} {% endset %}[{{ x }}])J"),
            R"J([  block 1 ])J");
  EXPECT_EQ(render(R"J({% set x | trim | upper %}  block  {% endset %}[{{ x }}])J"),
            R"J([BLOCK])J");
  EXPECT_EQ(render(R"J({% set x = [1,2] %}{% set y = x %}{{ y is sameas x }})J"),
            R"J(True)J");
  EXPECT_EQ(render(R"J({% set messages = messages[1:] %}{{ messages | length }})J", R"J({"messages": [1, 2, 3]})J"),
            R"J(2)J");
}

TEST(JinjaStatements, NamespaceCarriesStateOutOfLoops) {
  EXPECT_EQ(render(R"J({% set ns = namespace(a=1, b='x') %}{% for i in [1,2] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }} {{ ns.b }} {{ ns }})J"),
            R"J(4 x <Namespace {'a': 4, 'b': 'x'}>)J");
  EXPECT_EQ(render(R"J({% set ns = namespace() %}{% set ns.found = false %}{% for i in [1,2,3] %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }})J"),
            R"J(True)J");
  EXPECT_EQ(render(R"J({% set ns = namespace(items=[]) %}{% for i in [1,2] %}{% set ns.items = ns.items + [i * 10] %}{% endfor %}{{ ns.items }})J"),
            R"J([10, 20])J");
  EXPECT_EQ(render(R"J({% set x = 1 %}{% set x.a = 2 %})J"),
            R"J(ERROR: TemplateRuntimeError: cannot assign attribute on non-namespace object)J");
  EXPECT_EQ(render(R"J({{ namespace(a=1).b }})J"),
            R"J()J");
  EXPECT_EQ(render(R"J({{ namespace({'k': 3}, j=4).k }})J"),
            R"J(3)J");
}

TEST(JinjaStatements, Macros) {
  EXPECT_EQ(render(R"J({% macro m(a, b=2, c='x') %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, c='z') }} {{ m(1,3,4) }} {{ m() }}|)J"),
            R"J(12x 12z 134 2x|)J");
  EXPECT_EQ(render(R"J({% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }})J"),
            R"J(1(2,){'k': 3})J");
  EXPECT_EQ(render(R"J({% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }})J"),
            R"J(ERROR: TypeError: macro 'm' takes not more than 1 argument(s))J");
  EXPECT_EQ(render(R"J({% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }})J"),
            R"J(ERROR: TypeError: macro 'm' takes no keyword argument 'b')J");
  EXPECT_EQ(render(R"J({% macro m() %}{{ x }}{% endmacro %}{% set x = 1 %}{{ m() }}{% set x = 2 %}{{ m() }})J"),
            R"J(12)J");
  EXPECT_EQ(render(R"J({% set x = 1 %}{% macro m() %}{% set x = 5 %}{{ x }}{% endmacro %}{{ m() }}{{ x }})J"),
            R"J(51)J");
  EXPECT_EQ(render(R"J({% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }})J"),
            R"J(321)J");
  EXPECT_EQ(render(R"J({% macro m(a, b=a * 2) %}{{ b }}{% endmacro %}{{ m(4) }})J"),
            R"J(8)J");
  EXPECT_EQ(render(R"J({% macro m() %}x{% endmacro %}{{ m() ~ m() | upper }} {{ m }})J"),
            R"J(xX <Macro 'm'>)J");
  EXPECT_EQ(render(R"J({% macro m(a) %}[{{ caller(a) }}]{% endmacro %}{% call(v) m(1) %}inner{{ v }}{% endcall %})J"),
            R"J([inner1])J");
}

TEST(JinjaStatements, RealTemplateIdioms) {
  EXPECT_EQ(render(R"J({%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}{%- if ns.multi_step_tool and message.role == 'user' and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}{{ ns.last_query_index }})J", R"J({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "<tool_response>x</tool_response>"}]})J"),
            R"J(0)J");
  EXPECT_EQ(render(R"J({%- set content = message.content.split('</think>')[-1].lstrip('\n') %}{%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}[{{ reasoning_content }}][{{ content }}])J", R"J({"message": {"content": "<think>\nhmm\n</think>\n\nanswer"}})J"),
            R"J([hmm][answer])J");
  EXPECT_EQ(render(R"J({%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}<img>{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%})J", R"J({"message": {"content": [{"type": "image"}, {"type": "text", "text": " hi "}]}})J"),
            R"J(<img>hi)J");
  EXPECT_EQ(render(R"J({%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}{{ first_user_prefix }})J", R"J({"messages": [{"content": [{"text": "sys"}]}]})J"),
            R"J(sys

)J");
  EXPECT_EQ(render(R"J({%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %})J", R"J({"tools": [{"type": "function", "function": {"name": "f", "description": "é \"q\"", "parameters": {"a": [1, 2.5, true, null]}}}]})J"),
            R"J(
{"type": "function", "function": {"name": "f", "description": "é \"q\"", "parameters": {"a": [1, 2.5, true, null]}}})J");
  EXPECT_EQ(render(R"J({{- '<|im_start|>' + message.role + '\n' + message.content | trim + '<|im_end|>' + '\n' }})J", R"J({"message": {"role": "user", "content": "  x  "}})J"),
            R"J(<|im_start|>user
x<|im_end|>
)J");
  EXPECT_EQ(render(R"J({% if tool_call.function is defined %}{% set tool_call = tool_call.function %}{% endif %}{{ tool_call.name }} {{ tool_call.arguments | tojson if tool_call.arguments is not string else tool_call.arguments }})J", R"J({"tool_call": {"function": {"name": "f", "arguments": {"x": 1}}}})J"),
            R"J(f {"x": 1})J");
  EXPECT_EQ(render(R"J({%- set loop_messages = messages %}{%- for message in loop_messages %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}{{ message['role'] }}{%- endfor %})J", R"J({"messages": [{"role": "user"}, {"role": "assistant"}]})J"),
            R"J(userassistant)J");
  EXPECT_EQ(render(R"J({{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %})J", R"J({"bos_token": "<s>", "eos_token": "</s>", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})J"),
            R"J(<s>[INST] q [/INST]a</s>)J");
  EXPECT_EQ(render(R"J({%- if tools is iterable and tools | length > 0 %}T{% endif %}{%- if tools is not none and tools %}U{% endif %})J", R"J({"tools": [1]})J"),
            R"J(TU)J");
  EXPECT_EQ(render(R"J({{ (messages | selectattr('role', 'equalto', 'system') | list | first).content }})J", R"J({"messages": [{"role": "system", "content": "S"}]})J"),
            R"J(S)J");
  EXPECT_EQ(render(R"J({% set tool_names = tools | map(attribute='function.name') | list %}{{ tool_names }})J", R"J({"tools": [{"function": {"name": "a"}}, {"function": {"name": "b"}}]})J"),
            R"J(['a', 'b'])J");
  EXPECT_EQ(render(R"J({{ messages | map(attribute='content') | map('length') | sum }})J", R"J({"messages": [{"content": "ab"}, {"content": "cde"}]})J"),
            R"J(5)J");
  EXPECT_EQ(render(R"J({%- for message in messages %}{%- if message.role == 'assistant' and message.tool_calls %}{%- for tc in message.tool_calls %}{{ tc.function.arguments | tojson(ensure_ascii=False) }}{% endfor %}{% endif %}{% endfor %})J", R"J({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {"city": "Zürich"}}}]}]})J"),
            R"J({"city": "Zürich"})J");
}

TEST(JinjaStatements, FilterAndWithBlocks) {
  EXPECT_EQ(render(R"J({% filter upper %}abc{{ 'd' }}{% endfilter %})J"),
            R"J(ABCD)J");
  EXPECT_EQ(render(R"J({% filter trim | replace('a', 'b') %}  aa  {% endfilter %})J"),
            R"J(bb)J");
  EXPECT_EQ(render(R"J({% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}])J"),
            R"J(3[])J");
}

TEST(JinjaStatements, Globals) {
  EXPECT_EQ(render(R"J({{ range(3) | list }} {{ range(1, 6, 2) | list }} {{ range(5, 0, -2) | list }} {{ dict(a=1) }} {{ dict([('b', 2)]) }})J"),
            R"J([0, 1, 2] [1, 3, 5] [5, 3, 1] {'a': 1} {'b': 2})J");
  EXPECT_EQ(render(R"J({% set j = joiner('|') %}{% for i in [1,2,3] %}{{ j() }}{{ i }}{% endfor %})J"),
            R"J(1|2|3)J");
  EXPECT_EQ(render(R"J({% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{{ c.current }})J"),
            R"J(abab)J");
  EXPECT_EQ(render(R"J({{ raise_exception('boom') }})J"),
            R"J(ERROR: TemplateError: boom)J");
  EXPECT_EQ(render(R"J({{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }})J"),
            R"J(ERROR: TemplateError: Conversation roles must alternate user/assistant/user/assistant/...)J");
  EXPECT_EQ(render(R"J({{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d') }})J"),
            R"J(26 Jul 2024 2024-07-26)J");
  EXPECT_EQ(render(R"J({{ range(1000000) | length }})J"),
            R"J(ERROR: OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).)J");
}

}  // namespace pensieve
