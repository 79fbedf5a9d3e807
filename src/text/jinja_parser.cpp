#include "text/jinja_parser.h"

#include <initializer_list>

#include "text/jinja_error.h"

namespace pensieve::jinja {
namespace {

constexpr int kMaxNesting = 256;  // untrusted templates must not overflow the stack

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_all() {
    Body body = parse_body({});
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t n = 1) const {
    return toks_[std::min(pos_ + n, toks_.size() - 1)];
  }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::Op && cur().text == op; }
  bool is_name(const char* name) const {
    return cur().type == TokenType::Name && cur().text == name;
  }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool accept_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  [[noreturn]] void error(const std::string& message) const {
    fail("TemplateSyntaxError", message + " (line " + std::to_string(cur().line) + ")");
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::End: return "end of template";
      case TokenType::BlockEnd: return "end of statement block";
      case TokenType::VarEnd: return "end of print statement";
      case TokenType::String: return "string";
      case TokenType::Int: return "integer";
      case TokenType::Float: return "float";
      default: return t.text;
    }
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) error(std::string("expected token '") + op + "', got '" + describe(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().type != TokenType::Name) error("expected name, got '" + describe(cur()) + "'");
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().type != TokenType::BlockEnd)
      error("expected token 'end of statement block', got '" + describe(cur()) + "'");
    advance();
  }
  ExprPtr make(Expr::Kind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = cur().line;
    return e;
  }
  StmtPtr make_stmt(Stmt::Kind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  // ---- statements ----

  // Parses until a block whose first name is in `end_tags`; leaves the cursor on that name.
  Body parse_body(std::initializer_list<const char*> end_tags) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::End) {
        if (end_tags.size() == 0) return body;
        std::string want;
        for (const char* tag : end_tags) want += (want.empty() ? "'" : " or '") + std::string(tag) + "'";
        error("Unexpected end of template. Jinja was looking for the following tags: " + want +
              ". The innermost block that needs to be closed is '" + open_blocks_.back() + "'.");
      }
      if (t.type == TokenType::Text) {
        auto s = make_stmt(Stmt::Kind::Text, t.line);
        s->text = t.text;
        body.push_back(std::move(s));
        advance();
      } else if (t.type == TokenType::VarBegin) {
        auto s = make_stmt(Stmt::Kind::Print, t.line);
        advance();
        s->expr = parse_tuple(false);
        if (cur().type != TokenType::VarEnd)
          error("expected token 'end of print statement', got '" + describe(cur()) + "'");
        advance();
        body.push_back(std::move(s));
      } else if (t.type == TokenType::BlockBegin) {
        advance();
        if (cur().type != TokenType::Name) error("tag name expected");
        for (const char* tag : end_tags)
          if (cur().text == tag) return body;
        body.push_back(parse_statement());
      } else {
        error("unexpected '" + describe(t) + "'");
      }
    }
  }

  // Consumes `{% name %}` closing tags reached by parse_body.
  void end_tag(const char* name) {
    if (!accept_name(name)) error(std::string("expected '") + name + "'");
    expect_block_end();
  }

  StmtPtr parse_statement() {
    if (++nesting_ > kMaxNesting) error("template nesting too deep");
    std::string tag = cur().text;
    int line = cur().line;
    advance();
    open_blocks_.push_back(tag);
    StmtPtr s;
    if (tag == "if") s = parse_if(line);
    else if (tag == "for") s = parse_for(line);
    else if (tag == "set") s = parse_set(line);
    else if (tag == "macro") s = parse_macro(line);
    else if (tag == "call") s = parse_call_block(line);
    else if (tag == "filter") s = parse_filter_block(line);
    else if (tag == "with") s = parse_with(line);
    else if (tag == "generation") s = parse_generation(line);
    else if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) error("'" + tag + "' outside of a loop");
      s = make_stmt(tag == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue, line);
      expect_block_end();
    } else {
      --pos_;
      error("Encountered unknown tag '" + tag + "'.");
    }
    --nesting_;
    open_blocks_.pop_back();
    return s;
  }

  StmtPtr parse_if(int line) {
    auto s = make_stmt(Stmt::Kind::If, line);
    ExprPtr cond = parse_tuple(false);
    expect_block_end();
    while (true) {
      Body body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (accept_name("elif")) {
        cond = parse_tuple(false);
        expect_block_end();
        continue;
      }
      if (accept_name("else")) {
        expect_block_end();
        s->else_body = parse_body({"endif"});
      }
      end_tag("endif");
      return s;
    }
  }

  Target parse_target(bool allow_attr) {
    Target t;
    bool parens = accept_op("(");
    t.names.push_back(expect_name());
    if (allow_attr && is_op(".")) {
      advance();
      t.attr = expect_name();
      return t;
    }
    while (accept_op(",")) {
      t.is_tuple = true;
      if (cur().type != TokenType::Name) break;
      t.names.push_back(expect_name());
    }
    if (parens) {
      expect_op(")");
      t.is_tuple = t.is_tuple || t.names.size() > 1;
    }
    return t;
  }

  StmtPtr parse_for(int line) {
    auto s = make_stmt(Stmt::Kind::For, line);
    s->target = parse_target(false);
    if (!accept_name("in")) error("expected token 'in', got '" + describe(cur()) + "'");
    s->expr = parse_tuple(false, /*with_condexpr=*/false);
    if (accept_name("if")) s->cond = parse_expression();
    if (is_name("recursive")) error("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (accept_name("else")) {
      expect_block_end();
      s->else_body = parse_body({"endfor"});
    }
    end_tag("endfor");
    return s;
  }

  StmtPtr parse_set(int line) {
    Target target = parse_target(true);
    if (accept_op("=")) {
      auto s = make_stmt(Stmt::Kind::Set, line);
      s->target = std::move(target);
      s->expr = parse_tuple(false);
      expect_block_end();
      return s;
    }
    auto s = make_stmt(Stmt::Kind::SetBlock, line);
    s->target = std::move(target);
    while (accept_op("|")) s->filters.push_back(parse_filter(nullptr));
    expect_block_end();
    s->body = parse_body({"endset"});
    end_tag("endset");
    return s;
  }

  void parse_params(MacroParams& params) {
    expect_op("(");
    while (!is_op(")")) {
      if (!params.names.empty()) expect_op(",");
      if (is_op(")")) break;
      params.names.push_back(expect_name());
      if (accept_op("=")) params.defaults.push_back(parse_expression());
      else if (!params.defaults.empty() && params.defaults.back())
        error("non-default argument follows default argument");
      else params.defaults.push_back(nullptr);
    }
    advance();
  }

  StmtPtr parse_macro(int line) {
    auto s = make_stmt(Stmt::Kind::Macro, line);
    s->text = expect_name();
    parse_params(s->params);
    expect_block_end();
    int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"});
    loop_depth_ = saved;
    end_tag("endmacro");
    return s;
  }

  StmtPtr parse_call_block(int line) {
    auto s = make_stmt(Stmt::Kind::CallBlock, line);
    if (is_op("(")) parse_params(s->params);
    s->expr = parse_expression();
    if (s->expr->kind != Expr::Kind::Call) error("expected call");
    expect_block_end();
    s->body = parse_body({"endcall"});
    end_tag("endcall");
    return s;
  }

  StmtPtr parse_filter_block(int line) {
    auto s = make_stmt(Stmt::Kind::FilterBlock, line);
    s->filters.push_back(parse_filter(nullptr));
    while (accept_op("|")) s->filters.push_back(parse_filter(nullptr));
    expect_block_end();
    s->body = parse_body({"endfilter"});
    end_tag("endfilter");
    return s;
  }

  StmtPtr parse_with(int line) {
    auto s = make_stmt(Stmt::Kind::With, line);
    while (cur().type != TokenType::BlockEnd) {
      if (!s->assignments.empty()) expect_op(",");
      Target t = parse_target(false);
      expect_op("=");
      s->assignments.emplace_back(std::move(t), parse_expression());
    }
    expect_block_end();
    s->body = parse_body({"endwith"});
    end_tag("endwith");
    return s;
  }

  // transformers' {% generation %} marks assistant text for masks; it renders its body as is.
  StmtPtr parse_generation(int line) {
    auto s = make_stmt(Stmt::Kind::With, line);
    expect_block_end();
    s->body = parse_body({"endgeneration"});
    end_tag("endgeneration");
    return s;
  }

  // ---- expressions ----
  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.expr_depth_ > kMaxNesting) p.error("expression nesting too deep");
    }
    ~DepthGuard() { --p.expr_depth_; }
  };

  ExprPtr parse_expression(bool with_condexpr = true) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  // A comma-separated list becomes a tuple; a single expression stays itself.
  ExprPtr parse_tuple(bool explicit_parens, bool with_condexpr = true) {
    auto tuple = make(Expr::Kind::Tuple);
    bool saw_comma = false;
    while (true) {
      if (!tuple->args.empty()) {
        if (!accept_op(",")) break;
        saw_comma = true;
      }
      if (cur().type == TokenType::BlockEnd || cur().type == TokenType::VarEnd || is_op(")") ||
          (!tuple->args.empty() && cur().type == TokenType::Name &&
           (cur().text == "if" || cur().text == "in" || cur().text == "recursive")))
        break;
      tuple->args.push_back(parse_expression(with_condexpr));
    }
    if (!saw_comma) {
      if (tuple->args.size() == 1) return std::move(tuple->args[0]);
      if (!explicit_parens) error("Expected an expression, got '" + describe(cur()) + "'");
    }
    return tuple;
  }

  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      auto c = make(Expr::Kind::Cond);
      advance();
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (accept_name("else")) other = parse_condexpr();
      c->args.push_back(std::move(expr));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(other));
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr binary(const std::string& op, ExprPtr left, ExprPtr right) {
    auto b = make(Expr::Kind::Binary);
    b->name = op;
    b->args.push_back(std::move(left));
    b->args.push_back(std::move(right));
    return b;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (accept_name("or")) left = binary("or", std::move(left), parse_and());
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (accept_name("and")) left = binary("and", std::move(left), parse_not());
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto u = make(Expr::Kind::Unary);
      advance();
      u->name = "not";
      u->args.push_back(parse_not());
      return u;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    auto cmp = make(Expr::Kind::Compare);
    cmp->args.push_back(std::move(first));
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::Op &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" ||
           t.text == ">=")) {
        cmp->ops.push_back(t.text);
        advance();
      } else if (is_name("in")) {
        cmp->ops.push_back("in");
        advance();
      } else if (is_name("not") && peek().type == TokenType::Name && peek().text == "in") {
        cmp->ops.push_back("notin");
        advance();
        advance();
      } else {
        break;
      }
      cmp->args.push_back(parse_math1());
    }
    if (cmp->ops.empty()) return std::move(cmp->args[0]);
    return cmp;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      advance();
      left = binary(op, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (accept_op("~")) left = binary("~", std::move(left), parse_math2());
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      advance();
      left = binary(op, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (accept_op("**")) left = binary("**", std::move(left), parse_unary(true));
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto u = make(Expr::Kind::Unary);
      u->name = cur().text;
      advance();
      u->args.push_back(parse_unary(false));
      node = std::move(u);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr literal(Value v) {
    auto e = make(Expr::Kind::Literal);
    e->literal = std::move(v);
    advance();
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case TokenType::Name: {
        if (t.text == "true" || t.text == "True") return literal(Value(true));
        if (t.text == "false" || t.text == "False") return literal(Value(false));
        if (t.text == "none" || t.text == "None") return literal(Value::none());
        auto e = make(Expr::Kind::Name);
        e->name = t.text;
        advance();
        return e;
      }
      case TokenType::String: {
        auto e = make(Expr::Kind::Literal);
        std::string s;
        while (cur().type == TokenType::String) {
          s += cur().text;
          advance();
        }
        e->literal = Value(std::move(s));
        return e;
      }
      case TokenType::Int: return literal(Value(t.int_value));
      case TokenType::Float: return literal(Value(t.float_value));
      case TokenType::Op:
        if (t.text == "(") {
          advance();
          ExprPtr e = parse_tuple(true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default: break;
    }
    error("unexpected '" + describe(t) + "'");
  }

  ExprPtr parse_list() {
    auto e = make(Expr::Kind::List);
    expect_op("[");
    while (!is_op("]")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("]")) break;
      e->args.push_back(parse_expression());
    }
    expect_op("]");
    return e;
  }

  ExprPtr parse_dict() {
    auto e = make(Expr::Kind::Dict);
    expect_op("{");
    while (!is_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("}")) break;
      e->args.push_back(parse_expression());
      expect_op(":");
      e->args.push_back(parse_expression());
    }
    expect_op("}");
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        advance();
        if (cur().type == TokenType::Int) {
          auto item = make(Expr::Kind::Item);
          item->args.push_back(std::move(node));
          item->args.push_back(literal(Value(cur().int_value)));
          node = std::move(item);
          continue;
        }
        auto attr = make(Expr::Kind::Attr);
        attr->name = expect_name();
        attr->args.push_back(std::move(node));
        node = std::move(attr);
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    expect_op("[");
    std::vector<ExprPtr> keys;
    bool is_slice = false;
    ExprPtr parts[3];
    int part = 0;
    while (!is_op("]")) {
      if (is_op(":")) {
        advance();
        is_slice = true;
        if (++part > 2) error("invalid slice");
        continue;
      }
      if (is_op(",") && !is_slice) {
        advance();
        continue;
      }
      ExprPtr e = parse_expression();
      if (is_slice || is_op(":")) {
        if (parts[part]) error("invalid slice");
        parts[part] = std::move(e);
      } else {
        keys.push_back(std::move(e));
      }
    }
    expect_op("]");
    if (is_slice) {
      if (!keys.empty()) parts[0] = std::move(keys[0]);
      auto s = make(Expr::Kind::Slice);
      s->args.push_back(std::move(node));
      for (auto& p : parts) s->args.push_back(std::move(p));
      return s;
    }
    if (keys.empty()) error("expected subscript expression");
    auto item = make(Expr::Kind::Item);
    item->args.push_back(std::move(node));
    if (keys.size() == 1) {
      item->args.push_back(std::move(keys[0]));
    } else {
      auto t = make(Expr::Kind::Tuple);
      t->args = std::move(keys);
      item->args.push_back(std::move(t));
    }
    return item;
  }

  void parse_call_args(Expr& call) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) error("*args and **kwargs in calls are not supported");
      if (cur().type == TokenType::Name && peek().type == TokenType::Op && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        call.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!call.kwargs.empty()) error("positional argument follows keyword argument");
        call.args.push_back(parse_expression());
      }
    }
    advance();
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto call = make(Expr::Kind::Call);
    call->args.push_back(std::move(callee));
    parse_call_args(*call);
    return call;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek().type == TokenType::Name) {
      advance();
      name += "." + expect_name();
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr operand) {
    auto f = make(Expr::Kind::Filter);
    f->name = dotted_name();
    f->args.push_back(std::move(operand));
    if (is_op("(")) parse_call_args(*f);
    return f;
  }

  ExprPtr parse_test(ExprPtr operand) {
    auto t = make(Expr::Kind::Test);
    advance();  // 'is'
    t->negated = accept_name("not");
    t->name = dotted_name();
    t->args.push_back(std::move(operand));
    if (is_op("(")) {
      parse_call_args(*t);
    } else {
      const Token& c = cur();
      bool arg_start = c.type == TokenType::Name || c.type == TokenType::String ||
                       c.type == TokenType::Int || c.type == TokenType::Float ||
                       (c.type == TokenType::Op && (c.text == "(" || c.text == "[" || c.text == "{"));
      if (arg_start && !(c.type == TokenType::Name &&
                         (c.text == "else" || c.text == "or" || c.text == "and"))) {
        if (is_name("is")) error("You cannot chain multiple tests with is");
        ExprPtr arg = parse_primary();
        t->args.push_back(parse_postfix(std::move(arg)));
      }
    }
    return t;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (accept_op("|")) node = parse_filter(std::move(node));
      else if (is_name("is")) node = parse_test(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  int nesting_ = 0;
  int expr_depth_ = 0;
  std::vector<std::string> open_blocks_;
};

}  // namespace

Body parse_template(std::string_view source, const LexerOptions& options) {
  return Parser(tokenize(source, options)).parse_all();
}

}  // namespace pensieve::jinja
