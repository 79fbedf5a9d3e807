#include "runtime/demo_model.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "util/error.h"

namespace pensieve {

std::string demo_model_path() {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("PENSIEVE_DEMO_MODEL")) candidates.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / ".." / "models" / "pensieve-demo.gguf");
    candidates.push_back(exe.parent_path() / "models" / "pensieve-demo.gguf");
  }
  candidates.emplace_back("/usr/local/share/pensieve/pensieve-demo.gguf");
  std::string looked;
  for (const auto& c : candidates) {
    if (fs::exists(c)) return fs::weakly_canonical(c).string();
    looked += "\n  " + c.string();
  }
  throw Error("no --model given and the built-in demo model was not found; looked at:" + looked);
}

}  // namespace pensieve
