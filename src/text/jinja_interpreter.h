// Renders a parsed template: walks the statement tree with jinja2's scoping (a for loop, macro
// or with block opens a scope; if does not), loop controls, macros with defaults and caller(),
// and the jinja2 Undefined rules. One Interpreter serves one render; the parsed tree is shared.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_ast.h"
#include "text/jinja_operators.h"
#include "text/jinja_value.h"

namespace pensieve::jinja {

struct RenderOptions {
  // The clock behind strftime_now(); injectable so that tests can pin the date.
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
  SandboxPolicy sandbox;
  size_t max_output_bytes = 256u << 20;
  uint64_t max_steps = 50'000'000;  // statements + expressions (~5 s), against runaway loops
  int max_call_depth = 200;          // macro recursion
};

class Scope {
 public:
  explicit Scope(std::shared_ptr<Scope> parent = nullptr) : parent_(std::move(parent)) {}
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value value);

 private:
  std::shared_ptr<Scope> parent_;
  std::vector<std::pair<std::string, Value>> vars_;
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& options) : options_(options) {}
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders `body` with the globals (range, namespace, raise_exception...) and `context`'s
  // entries (a Dict value) as variables.
  std::string render(const Body& body, const Value& context);

  enum class Flow { Normal, Break, Continue };
  Flow exec(const Body& body, const ScopePtr& scope, std::string& out);
  Value eval(const Expr& e, const ScopePtr& scope);
  const RenderOptions& options() const { return options_; }

  // Called by macros.
  struct CallFrame {
    Interpreter& interp;
    explicit CallFrame(Interpreter& i);
    ~CallFrame() { --interp.call_depth_; }
  };

 private:
  Flow exec_stmt(const Stmt& s, const ScopePtr& scope, std::string& out);
  Flow exec_for(const Stmt& s, const ScopePtr& scope, std::string& out);
  void assign(const Target& t, Value value, const ScopePtr& scope);
  Value eval_compare(const Expr& e, const ScopePtr& scope);
  Value eval_call(const Expr& e, const ScopePtr& scope, const Value* caller = nullptr);
  CallArgs eval_args(const Expr& e, const ScopePtr& scope, size_t first);
  Value make_macro(const std::string& name, const Stmt& s, const ScopePtr& scope);
  Value apply_filters(const std::vector<ExprPtr>& filters, Value v, const ScopePtr& scope);
  void step();

  const RenderOptions& options_;
  // A macro holds the scope it was defined in, and that scope holds the macro: the cycle is
  // broken when the render ends, or every render of a template with macros would leak its context.
  std::vector<std::function<void()>> release_closures_;
  uint64_t steps_ = 0;
  int call_depth_ = 0;
};

}  // namespace pensieve::jinja
