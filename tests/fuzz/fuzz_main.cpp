// One libFuzzer binary per target: PENSIEVE_FUZZ_TARGET names which (see CMakeLists.txt).
#include <cstdio>
#include <cstdlib>

#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const pensieve::fuzz::Target* target = [] {
    const auto* t = pensieve::fuzz::find_target(PENSIEVE_FUZZ_TARGET);
    if (!t) {
      std::fprintf(stderr, "no fuzz target named %s\n", PENSIEVE_FUZZ_TARGET);
      std::abort();
    }
    return t;
  }();
  target->run(data, size);
  return 0;
}
