// The parsed form of a template: expressions and statements as plain tagged structs. The parser
// builds them once per template; the interpreter walks them for every render without changing
// them, so one parsed template can render concurrently from several threads.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace pensieve::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Expr {
  enum class Kind {
    Literal,   // literal
    Name,      // name
    Attr,      // args[0].name
    Item,      // args[0][args[1]]
    Slice,     // args[0][args[1]:args[2]:args[3]] (null parts omitted)
    Call,      // args[0](args[1..], kwargs)
    Filter,    // args[0] | name(args[1..], kwargs); args[0] null inside {% filter %}
    Test,      // args[0] is [not] name(args[1..], kwargs)
    Unary,     // name ("-", "+", "not") args[0]
    Binary,    // args[0] name args[1]: + - * / // % ** ~ and or
    Compare,   // args[0] ops[0] args[1] ops[1] args[2] ... (chained)
    Cond,      // args[0] if args[1] else args[2] (args[2] may be null)
    List,      // [args...]
    Tuple,     // (args...)
    Dict,      // {args[0]: args[1], args[2]: args[3], ...}
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<std::string> ops;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // Test: `is not`
};

// Where a `set`/`for`/`with` stores values: one or more names (tuple unpacking), or one
// namespace attribute (`ns.attr`).
struct Target {
  std::vector<std::string> names;
  std::string attr;  // non-empty: names[0].attr
  bool is_tuple = false;
};

struct MacroParams {
  std::vector<std::string> names;
  std::vector<ExprPtr> defaults;  // same length as names; null where there is none
};

struct Stmt {
  enum class Kind {
    Text,         // text
    Print,        // {{ expr }}
    If,           // branches (cond, body)...; else_body
    For,          // target in expr [if cond]; body; else_body
    Set,          // target = expr
    SetBlock,     // {% set target [| filters] %}body{% endset %}; filters in `filters`
    Macro,        // name(params) body
    CallBlock,    // {% call(params) expr %}body{% endcall %}
    FilterBlock,  // {% filter filters %}body{% endfilter %}
    With,         // {% with targets = exprs %}body{% endwith %}
    Break,
    Continue,
  };
  Kind kind;
  int line = 0;
  std::string text;  // Text; Macro name
  ExprPtr expr;
  ExprPtr cond;
  Target target;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  MacroParams params;
  std::vector<ExprPtr> filters;  // Filter expressions with a null operand, applied in order
  std::vector<std::pair<Target, ExprPtr>> assignments;  // With
};

}  // namespace pensieve::jinja
