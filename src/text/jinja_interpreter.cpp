#include "text/jinja_interpreter.h"

#include <algorithm>

#include "text/jinja_error.h"
#include "text/jinja_filters.h"
#include "text/jinja_globals.h"
#include "text/jinja_objects.h"

namespace pensieve::jinja {

const Value* Scope::find(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent_.get())
    for (const auto& [k, v] : s->vars_)
      if (k == name) return &v;
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  for (auto& [k, v] : vars_)
    if (k == name) {
      v = std::move(value);
      return;
    }
  vars_.emplace_back(name, std::move(value));
}

namespace {

// Whether any expression in `body` names `name` (macros only accept extra arguments, as
// `varargs`/`kwargs`, when their body uses them; the same holds for `caller`).
bool expr_references(const Expr* e, const std::string& name) {
  if (!e) return false;
  if (e->kind == Expr::Kind::Name && e->name == name) return true;
  for (const auto& a : e->args)
    if (expr_references(a.get(), name)) return true;
  for (const auto& kw : e->kwargs)
    if (expr_references(kw.second.get(), name)) return true;
  return false;
}

bool body_references(const Body& body, const std::string& name) {
  for (const auto& s : body) {
    if (expr_references(s->expr.get(), name) || expr_references(s->cond.get(), name) ||
        body_references(s->body, name) || body_references(s->else_body, name))
      return true;
    for (const auto& [cond, b] : s->branches)
      if (expr_references(cond.get(), name) || body_references(b, name)) return true;
    for (const auto& f : s->filters)
      if (expr_references(f.get(), name)) return true;
    for (const auto& d : s->params.defaults)
      if (expr_references(d.get(), name)) return true;
    for (const auto& a : s->assignments)
      if (expr_references(a.second.get(), name)) return true;
  }
  return false;
}

class Macro : public Callable {
 public:
  Macro(Interpreter& interp, std::string name, const MacroParams& params, const Body& body,
        ScopePtr closure)
      : interp_(interp), name_(std::move(name)), params_(params), body_(body),
        closure_(std::move(closure)),
        uses_varargs_(body_references(body, "varargs")),
        uses_kwargs_(body_references(body, "kwargs")),
        uses_caller_(body_references(body, "caller")) {}

  Value call(CallArgs& args) override {
    Interpreter::CallFrame frame(interp_);
    if (!closure_) fail("TemplateRuntimeError", "macro '" + name_ + "' called after its render ended");
    auto scope = std::make_shared<Scope>(closure_);
    const auto& names = params_.names;
    std::vector<bool> bound(names.size(), false);
    std::vector<Value> varargs;
    for (size_t i = 0; i < args.positional.size(); ++i) {
      if (i < names.size()) {
        scope->set(names[i], args.positional[i]);
        bound[i] = true;
      } else if (uses_varargs_) {
        varargs.push_back(args.positional[i]);
      } else {
        type_error("macro '" + name_ + "' takes not more than " + std::to_string(names.size()) +
                   " argument(s)");
      }
    }
    auto kwargs = std::make_shared<Dict>();
    bool caller_bound = false;
    for (auto& [key, value] : args.keyword) {
      auto it = std::find(names.begin(), names.end(), key);
      if (it != names.end()) {
        size_t i = it - names.begin();
        if (bound[i]) type_error("macro '" + name_ + "' got multiple values for argument '" + key + "'");
        scope->set(key, value);
        bound[i] = true;
      } else if (key == "caller" && uses_caller_) {
        scope->set("caller", value);
        caller_bound = true;
      } else if (uses_kwargs_) {
        kwargs->set(Value(key), value);
      } else {
        type_error("macro '" + name_ + "' takes no keyword argument '" + key + "'");
      }
    }
    for (size_t i = 0; i < names.size(); ++i) {
      if (bound[i]) continue;
      if (params_.defaults[i]) scope->set(names[i], interp_.eval(*params_.defaults[i], scope));
      else scope->set(names[i], Value::undefined("parameter '" + names[i] + "' was not provided"));
    }
    if (uses_caller_ && !caller_bound)
      scope->set("caller", Value::undefined("No caller defined"));
    if (uses_varargs_) scope->set("varargs", Value::tuple(std::move(varargs)));
    if (uses_kwargs_) scope->set("kwargs", Value::dict(kwargs));
    std::string out;
    interp_.exec(body_, scope, out);
    return Value(std::move(out));
  }
  std::string repr() const override { return "<Macro '" + name_ + "'>"; }
  void release_closure() { closure_.reset(); }
  std::string type_name() const override { return "Macro"; }

 private:
  Interpreter& interp_;
  std::string name_;
  const MacroParams& params_;
  const Body& body_;
  ScopePtr closure_;
  bool uses_varargs_, uses_kwargs_, uses_caller_;
};

// jinja2's `loop` variable.
class LoopContext : public Object, public std::enable_shared_from_this<LoopContext> {
 public:
  explicit LoopContext(std::vector<Value> items) : items_(std::move(items)) {}
  size_t index = 0;

  std::string type_name() const override { return "LoopContext"; }
  std::string repr() const override {
    return "<LoopContext " + std::to_string(index + 1) + "/" + std::to_string(items_.size()) + ">";
  }
  Value get_attr(const std::string& name) const override {
    int64_t i = static_cast<int64_t>(index), n = static_cast<int64_t>(items_.size());
    if (name == "index") return Value(i + 1);
    if (name == "index0") return Value(i);
    if (name == "revindex") return Value(n - i);
    if (name == "revindex0") return Value(n - i - 1);
    if (name == "first") return Value(i == 0);
    if (name == "last") return Value(i == n - 1);
    if (name == "length") return Value(n);
    if (name == "depth") return Value(1);
    if (name == "depth0") return Value(0);
    if (name == "previtem")
      return i > 0 ? items_[i - 1] : Value::undefined("there is no previous item");
    if (name == "nextitem")
      return i + 1 < n ? items_[i + 1] : Value::undefined("there is no next item");
    auto self = std::const_pointer_cast<LoopContext>(shared_from_this());
    if (name == "cycle")
      return BuiltinFunction::make("cycle", [self](CallArgs& a) {
        if (a.positional.empty()) type_error("no items for cycling given");
        return a.positional[self->index % a.positional.size()];
      });
    if (name == "changed")
      return BuiltinFunction::make("changed", [self](CallArgs& a) {
        Value current = Value::list(a.positional);
        if (self->has_last_ && equals(self->last_changed_, current)) return Value(false);
        self->last_changed_ = current;
        self->has_last_ = true;
        return Value(true);
      });
    return Value::undefined("'LoopContext object' has no attribute " + string_repr(name));
  }

 private:
  std::vector<Value> items_;
  Value last_changed_;
  bool has_last_ = false;
};

}  // namespace

Interpreter::~Interpreter() {
  for (auto& release : release_closures_) release();
}

Value Interpreter::make_macro(const std::string& name, const Stmt& s, const ScopePtr& scope) {
  auto macro = std::make_shared<Macro>(*this, name, s.params, s.body, scope);
  std::weak_ptr<Macro> weak = macro;
  release_closures_.push_back([weak] {
    if (auto m = weak.lock()) m->release_closure();
  });
  return Value::callable(std::move(macro));
}

Interpreter::CallFrame::CallFrame(Interpreter& i) : interp(i) {
  if (++interp.call_depth_ > interp.options_.max_call_depth) {
    --interp.call_depth_;
    fail("RecursionError", "maximum recursion depth exceeded");
  }
}

void Interpreter::step() {
  if (++steps_ > options_.max_steps)
    fail("TemplateError", "template rendering exceeded its step budget (runaway loop?)");
}

std::string Interpreter::render(const Body& body, const Value& context) {
  auto globals = std::make_shared<Scope>();
  install_globals(*globals, options_);
  auto scope = std::make_shared<Scope>(globals);
  if (context.kind() == Kind::Dict)
    for (const auto& [k, v] : context.dict_ref().entries)
      if (k.is_string()) scope->set(k.str(), v);
  std::string out;
  exec(body, scope, out);
  return out;
}

Interpreter::Flow Interpreter::exec(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const auto& s : body) {
    Flow f = exec_stmt(*s, scope, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

void Interpreter::assign(const Target& t, Value value, const ScopePtr& scope) {
  if (!t.attr.empty()) {
    const Value* ns = scope->find(t.names[0]);
    if (!ns || ns->kind() != Kind::Object || !ns->obj().set_attr(t.attr, std::move(value)))
      fail("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
    return;
  }
  if (!t.is_tuple) {
    scope->set(t.names[0], std::move(value));
    return;
  }
  std::vector<Value> parts = iterate(value);
  if (parts.size() < t.names.size())
    fail("ValueError", "not enough values to unpack (expected " + std::to_string(t.names.size()) +
                           ", got " + std::to_string(parts.size()) + ")");
  if (parts.size() > t.names.size())
    fail("ValueError", "too many values to unpack (expected " + std::to_string(t.names.size()) + ")");
  for (size_t i = 0; i < parts.size(); ++i) scope->set(t.names[i], parts[i]);
}

Value Interpreter::apply_filters(const std::vector<ExprPtr>& filters, Value v,
                                 const ScopePtr& scope) {
  for (const auto& f : filters) {
    CallArgs args = eval_args(*f, scope, 1);
    v = apply_filter(f->name, v, args, options_.sandbox);
  }
  return v;
}

Interpreter::Flow Interpreter::exec_stmt(const Stmt& s, const ScopePtr& scope, std::string& out) {
  step();
  switch (s.kind) {
    case Stmt::Kind::Text: out += s.text; break;
    case Stmt::Kind::Print: out += to_str(eval(*s.expr, scope)); break;
    case Stmt::Kind::If:
      for (const auto& [cond, body] : s.branches)
        if (eval(*cond, scope).truthy()) return exec(body, scope, out);
      return exec(s.else_body, scope, out);
    case Stmt::Kind::For: return exec_for(s, scope, out);
    case Stmt::Kind::Set: assign(s.target, eval(*s.expr, scope), scope); break;
    case Stmt::Kind::SetBlock: {
      std::string text;
      exec(s.body, std::make_shared<Scope>(scope), text);
      assign(s.target, apply_filters(s.filters, Value(std::move(text)), scope), scope);
      break;
    }
    case Stmt::Kind::Macro:
      scope->set(s.text, make_macro(s.text, s, scope));
      break;
    case Stmt::Kind::CallBlock: {
      Value caller = make_macro("caller", s, scope);
      out += to_str(eval_call(*s.expr, scope, &caller));
      break;
    }
    case Stmt::Kind::FilterBlock: {
      std::string text;
      exec(s.body, std::make_shared<Scope>(scope), text);
      out += to_str(apply_filters(s.filters, Value(std::move(text)), scope));
      break;
    }
    case Stmt::Kind::With: {
      auto inner = std::make_shared<Scope>(scope);
      for (const auto& [target, expr] : s.assignments) assign(target, eval(*expr, scope), inner);
      Flow f = exec(s.body, inner, out);
      if (f != Flow::Normal) return f;
      break;
    }
    case Stmt::Kind::Break: return Flow::Break;
    case Stmt::Kind::Continue: return Flow::Continue;
  }
  if (out.size() > options_.max_output_bytes)
    fail("TemplateError", "rendered output exceeds " + std::to_string(options_.max_output_bytes) + " bytes");
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
  std::vector<Value> items = iterate(eval(*s.expr, scope));
  if (s.cond) {
    std::vector<Value> kept;
    auto probe = std::make_shared<Scope>(scope);
    for (Value& item : items) {
      assign(s.target, item, probe);
      if (eval(*s.cond, probe).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    // A break here leaves an enclosing loop, so the flow propagates.
    return exec(s.else_body, std::make_shared<Scope>(scope), out);
  }
  auto ctx = std::make_shared<LoopContext>(items);
  Value loop = Value::object(ctx);
  for (size_t i = 0; i < items.size(); ++i) {
    // jinja2 gives every iteration fresh locals: a `set` in one iteration is not seen by the next.
    step();
    auto iteration = std::make_shared<Scope>(scope);
    ctx->index = i;
    iteration->set("loop", loop);
    assign(s.target, items[i], iteration);
    if (exec(s.body, iteration, out) == Flow::Break) break;
  }
  return Flow::Normal;
}

CallArgs Interpreter::eval_args(const Expr& e, const ScopePtr& scope, size_t first) {
  CallArgs args;
  for (size_t i = first; i < e.args.size(); ++i) args.positional.push_back(eval(*e.args[i], scope));
  for (const auto& [key, expr] : e.kwargs) args.keyword.emplace_back(key, eval(*expr, scope));
  return args;
}

Value Interpreter::eval_call(const Expr& e, const ScopePtr& scope, const Value* caller) {
  Value callee = eval(*e.args[0], scope);
  CallArgs args = eval_args(e, scope, 1);
  if (caller) args.keyword.emplace_back("caller", *caller);
  check_defined(callee);
  if (callee.kind() != Kind::Callable) type_error("'" + callee.type_name() + "' object is not callable");
  return callee.fn().call(args);
}

Value Interpreter::eval_compare(const Expr& e, const ScopePtr& scope) {
  Value left = eval(*e.args[0], scope);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.args[i + 1], scope);
    const std::string& op = e.ops[i];
    bool ok;
    if (op == "==") ok = equals(left, right);
    else if (op == "!=") ok = !equals(left, right);
    else if (op == "in") ok = contains(right, left);
    else if (op == "notin") ok = !contains(right, left);
    else {
      check_defined(left);
      check_defined(right);
      if (op == "<") ok = less_than(left, right, "<");
      else if (op == ">") ok = less_than(right, left, ">");
      else if (op == "<=") ok = !less_than(right, left, "<=");
      else ok = !less_than(left, right, ">=");
    }
    if (!ok) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  step();
  switch (e.kind) {
    case Expr::Kind::Literal: return e.literal;
    case Expr::Kind::Name: {
      if (const Value* v = scope->find(e.name)) return *v;
      return Value::undefined("'" + e.name + "' is undefined");
    }
    case Expr::Kind::Attr: return get_attr(eval(*e.args[0], scope), e.name, options_.sandbox);
    case Expr::Kind::Item: {
      Value obj = eval(*e.args[0], scope);
      return get_item(obj, eval(*e.args[1], scope), options_.sandbox);
    }
    case Expr::Kind::Slice: {
      Value obj = eval(*e.args[0], scope);
      Value parts[3];
      for (int i = 0; i < 3; ++i)
        parts[i] = e.args[i + 1] ? eval(*e.args[i + 1], scope) : Value::none();
      return slice(obj, parts[0], parts[1], parts[2]);
    }
    case Expr::Kind::Call: return eval_call(e, scope);
    case Expr::Kind::Filter: {
      Value v = eval(*e.args[0], scope);
      CallArgs args = eval_args(e, scope, 1);
      return apply_filter(e.name, v, args, options_.sandbox);
    }
    case Expr::Kind::Test: {
      Value v = eval(*e.args[0], scope);
      CallArgs args = eval_args(e, scope, 1);
      return Value(apply_test(e.name, v, args, options_.sandbox) != e.negated);
    }
    case Expr::Kind::Unary: {
      Value v = eval(*e.args[0], scope);
      if (e.name == "not") return Value(!v.truthy());
      return e.name == "-" ? unary_minus(v) : unary_plus(v);
    }
    case Expr::Kind::Binary: {
      Value left = eval(*e.args[0], scope);
      if (e.name == "and") return left.truthy() ? eval(*e.args[1], scope) : left;
      if (e.name == "or") return left.truthy() ? left : eval(*e.args[1], scope);
      Value right = eval(*e.args[1], scope);
      if (e.name == "~") return Value(to_str(left) + to_str(right));
      return binary_op(e.name, left, right);
    }
    case Expr::Kind::Compare: return eval_compare(e, scope);
    case Expr::Kind::Cond:
      if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
      if (e.args[2]) return eval(*e.args[2], scope);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
    case Expr::Kind::List:
    case Expr::Kind::Tuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const auto& a : e.args) items.push_back(eval(*a, scope));
      return e.kind == Expr::Kind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case Expr::Kind::Dict: {
      auto d = std::make_shared<Dict>();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value key = eval(*e.args[i], scope);
        if (key.kind() == Kind::List || key.kind() == Kind::Dict)
          type_error("unhashable type: '" + key.type_name() + "'");
        d->set(key, eval(*e.args[i + 1], scope));
      }
      return Value::dict(std::move(d));
    }
  }
  return Value();
}

}  // namespace pensieve::jinja
