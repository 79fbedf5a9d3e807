// Where the built-in demo model is found when no --model is given.
#pragma once
#include <string>

namespace pensieve {

// PENSIEVE_DEMO_MODEL if set, else models/pensieve-demo.gguf beside the source tree the binary was
// built from (build/pensieve → models/), else /usr/local/share/pensieve/pensieve-demo.gguf.
// Throws Error listing the places looked at when none exists.
std::string demo_model_path();

}  // namespace pensieve
