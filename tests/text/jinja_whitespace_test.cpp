// Whitespace rules: trim_blocks, lstrip_blocks, the -/+ tag modifiers, comments, raw blocks.
// Expected renders were produced by Python jinja2 3.1 configured as transformers configures it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "jinja_render.h"

namespace pensieve {
using test::render;

TEST(JinjaWhitespace, TrimBlocksDropsOneNewlineAfterBlockTags) {
  EXPECT_EQ(render(R"J(a
{% if true %}
b
{% endif %}
c)J"),
            R"J(a
b
c)J");
  EXPECT_EQ(render(R"J({% set x = 1 %}

x)J"),
            R"J(
x)J");
  EXPECT_EQ(render(R"J({{ 1 }}
2)J"),
            R"J(1
2)J");
  EXPECT_EQ(render(R"J({# c #}
x)J"),
            R"J(x)J");
}

TEST(JinjaWhitespace, LstripBlocksDropsIndentBeforeBlockTags) {
  EXPECT_EQ(render(R"J(a
  {% if true %}
  b
  {% endif %}
c
)J"),
            R"J(a
  b
c)J");
  EXPECT_EQ(render(R"J(  {% if true %}x{% endif %})J"),
            R"J(x)J");
  EXPECT_EQ(render(R"J(x  {% if true %}y{% endif %})J"),
            R"J(x  y)J");
  EXPECT_EQ(render(R"J(a
    {{ 1 }}
)J"),
            R"J(a
    1)J");
  EXPECT_EQ(render(R"J(  {# comment #}
x)J"),
            R"J(x)J");
  EXPECT_EQ(render(R"J(	 {% set a = 1 %}
b)J"),
            R"J(b)J");
}

TEST(JinjaWhitespace, MinusStripsAllWhitespace) {
  EXPECT_EQ(render(R"J(a  {%- if true -%}  b  {%- endif -%}  c)J"),
            R"J(abc)J");
  EXPECT_EQ(render(R"J(a

  {{- 1 -}}

  b)J"),
            R"J(a1b)J");
  EXPECT_EQ(render(R"J(x {#- c -#}   y)J"),
            R"J(xy)J");
  EXPECT_EQ(render(R"J({%- if true %}
  a
{%- endif %})J"),
            R"J(  a)J");
  EXPECT_EQ(render(R"J(a {{- ' ' -}} b)J"),
            R"J(a b)J");
}

TEST(JinjaWhitespace, PlusDisablesStripping) {
  EXPECT_EQ(render(R"J(a
  {%+ if true %}b{% endif %}
)J"),
            R"J(a
  b)J");
  EXPECT_EQ(render(R"J({% if true +%}
b{% endif %})J"),
            R"J(
b)J");
}

TEST(JinjaWhitespace, TrailingNewlineOfTemplateIsDropped) {
  EXPECT_EQ(render(R"J(a
)J"),
            R"J(a)J");
  EXPECT_EQ(render(R"J(a

)J"),
            R"J(a
)J");
  EXPECT_EQ(render(R"J(a
b
)J"),
            R"J(a
b)J");
  EXPECT_EQ(render(R"J(a
b)J"),
            R"J(a
b)J");
}

TEST(JinjaWhitespace, RawBlocksAreLiteral) {
  EXPECT_EQ(render(R"J({% raw %}{{ x }}{% if %}{% endraw %})J"),
            R"J({{ x }}{% if %})J");
  EXPECT_EQ(render(R"J(a
  {% raw %}
 {{ y }}
  {% endraw %}
b)J"),
            R"J(a

 {{ y }}
b)J");
  EXPECT_EQ(render(R"J({%- raw -%}  {{ z }}  {%- endraw -%}  !)J"),
            R"J({{ z }}!)J");
}

TEST(JinjaWhitespace, MixedTagsAndLineEndings) {
  EXPECT_EQ(render(R"J(a
  {%- if true %}
    b
  {% endif -%}
  c)J"),
            R"J(a    b
c)J");
  EXPECT_EQ(render(R"J(  {% if true %}  x  {% endif %}  
)J"),
            R"J(  x    )J");
  EXPECT_EQ(render(R"J({% if true %}  
x{% endif %})J"),
            R"J(  
x)J");
  EXPECT_EQ(render(R"J(a {% if true %}
  {{ 'b' }}
{% endif %} c)J"),
            R"J(a   b
 c)J");
  EXPECT_EQ(render(R"J({%- for i in [1,2] %}
  {{ i }}
{%- endfor %}
)J"),
            R"J(  1  2)J");
  EXPECT_EQ(render(R"J({% for i in [1,2] -%}
  {{ i }}
{% endfor -%}
end)J"),
            R"J(1
2
end)J");
  EXPECT_EQ(render(R"J(x
{#- comment #}
  y)J"),
            R"J(x  y)J");
  EXPECT_EQ(render(R"J(x
  {#+ c #}
y)J"),
            R"J(x
  y)J");
  EXPECT_EQ(render(R"J(line1
	{% set a = 1 %}	
line2)J"),
            R"J(line1
	
line2)J");
  EXPECT_EQ(render(R"J({{ 'a' }}
  {% if true %}b{% endif %})J"),
            R"J(a
b)J");
  EXPECT_EQ(render(R"J({% if true %}a{% endif %}

{% if true %}b{% endif %}
)J"),
            R"J(a
b)J");
  EXPECT_EQ(render(R"J({{- '  x  ' -}})J"),
            R"J(  x  )J");
  EXPECT_EQ(render(R"J(   {{- 'x' }})J"),
            R"J(x)J");
  EXPECT_EQ(render(R"J({% raw -%}
  a  
{%- endraw %})J"),
            R"J(a)J");
  EXPECT_EQ(render(R"J({% raw %}
  a
  {% endraw %}
b)J"),
            R"J(
  a
b)J");
  EXPECT_EQ(render(R"J(a
  {% if true %}
b
  {% endif %}
c)J"),
            R"J(a
b
c)J");
  EXPECT_EQ(render(R"J({{ "multi
line" }})J"),
            R"J(multi
line)J");
}

TEST(JinjaWhitespace, CommentsAreDropped) {
  EXPECT_EQ(render(R"J(a{# {{ x }} {% if %} #}b)J"),
            R"J(ab)J");
  EXPECT_EQ(render(R"J({#
 multi
 line
#}
z)J"),
            R"J(z)J");
}

}  // namespace pensieve
