// Builds the statement tree of a template from its tokens, following jinja2's grammar and
// operator precedence (conditional < or < and < not < comparison < + - < ~ < * / // % < ** <
// unary < filters/tests < postfix).
#pragma once
#include <string_view>

#include "text/jinja_ast.h"
#include "text/jinja_lexer.h"

namespace pensieve::jinja {

// Throws TemplateError (kind TemplateSyntaxError) with jinja2's message and the line.
Body parse_template(std::string_view source, const LexerOptions& options = {});

}  // namespace pensieve::jinja
