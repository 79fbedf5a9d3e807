// The global functions a template can call: jinja2's range, dict, namespace, cycler, joiner
// and the two transformers adds, raise_exception(msg) and strftime_now(format).
#pragma once
#include "text/jinja_interpreter.h"

namespace pensieve::jinja {

void install_globals(Scope& scope, const RenderOptions& options);

}  // namespace pensieve::jinja
