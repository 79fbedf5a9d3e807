// jinja2's builtin filters (`x | name(args)`) and tests (`x is name args`), with transformers'
// tojson (json.dumps, ensure_ascii=False, no HTML escaping).
#pragma once
#include <string>

#include "text/jinja_operators.h"
#include "text/jinja_value.h"

namespace pensieve::jinja {

// Throws TemplateError (TemplateAssertionError "No filter named 'x'.") for an unknown filter.
Value apply_filter(const std::string& name, const Value& value, CallArgs& args,
                   const SandboxPolicy& policy);
// Throws TemplateError (TemplateAssertionError "No test named 'x'.") for an unknown test.
bool apply_test(const std::string& name, const Value& value, CallArgs& args,
                const SandboxPolicy& policy);

// jinja2's attribute path lookup used by map/selectattr/sort/groupby...: "a.b.0" walks items
// first (environment.getitem), converting all-digit parts to ints.
Value lookup_attribute_path(const Value& value, const std::string& path,
                            const SandboxPolicy& policy);

}  // namespace pensieve::jinja
