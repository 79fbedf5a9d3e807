// Dispatch of attend_group (attention.h): the AVX-512 kernel where the CPU has it.
#include "model/attention.h"

#include "util/cpu.h"

namespace pensieve::kernels {

bool attend_group_available(int head_dim) { return cpu_features().use_vnni() && head_dim % 16 == 0 && head_dim > 0; }

void attend_group(const AttnQuery* qs, int n, const AttnRows& rows, int head_dim, float scale,
                  std::vector<float>& scores) {
  vnni::attend_group(qs, n, rows, head_dim, scale, scores);
}

}  // namespace pensieve::kernels
