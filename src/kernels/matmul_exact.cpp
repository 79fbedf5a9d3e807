#include <vector>

#include "kernels/kernels.h"

namespace pensieve::kernels {

void matmul_exact(const Tensor& W, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                  ThreadPool& pool) {
  if (W.type == GgmlType::F32 || W.type == GgmlType::F16 || W.type == GgmlType::BF16) {
    matmul(W, x, ldx, n_tok, y, ldy, pool);  // already float32 arithmetic
    return;
  }
  const int64_t cols = W.cols();
  pool.parallel_for(W.rows(), 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row(W.type, W.row(r), row.data(), cols);
      for (int t = 0; t < n_tok; ++t) y[t * ldy + r] = dot(row.data(), x + t * ldx, int(cols));
    }
  });
}

}  // namespace pensieve::kernels
