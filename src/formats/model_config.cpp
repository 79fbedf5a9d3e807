#include "formats/model_config.h"

namespace pensieve {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Phi3: return "phi3";
    case Arch::Qwen2: return "qwen2";
  }
  return "unknown";
}

}  // namespace pensieve
