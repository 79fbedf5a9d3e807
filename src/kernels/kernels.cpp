// Run-time dispatch of the kernels in kernels/kernels.h: the AVX2/FMA versions when the CPU has them
// (and PENSIEVE_NO_SIMD is not set), else the scalar references. matmul also owns the split of
// the work: activations are prepared once per call, then threads take contiguous row ranges.
#include "kernels/kernels.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "kernels/kernels_avx2.h"
#include "kernels/kernels_ref.h"
#include "util/cpu.h"
#include "util/error.h"

namespace pensieve::kernels {

namespace {

bool simd() { return cpu_features().use_avx2(); }

// Rows are handed to threads in multiples of this (the SIMD kernels work on up to 4 rows at once).
constexpr int64_t kRowGroup = 16;

void check_matmul(const Tensor& W) {
  const auto tr = type_traits(W.type);
  if (!tr || W.type == GgmlType::Q8_1)
    throw Error("matmul: tensor '" + W.name + "' has unsupported type " + std::string(type_name(W.type)));
  if (W.cols() % tr->block_elems != 0)
    throw Error("matmul: tensor '" + W.name + "' rows of " + std::to_string(W.cols()) +
                " elements are not whole " + std::string(tr->name) + " blocks");
}

}  // namespace

void matmul(const Tensor& W, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
            ThreadPool& pool) {
  check_matmul(W);
  if (n_tok <= 0 || W.rows() <= 0) return;
  const bool use_simd = simd();
  const int64_t cols = W.cols();
  MatmulArgs a{W.type, cols, static_cast<const uint8_t*>(W.data), W.row_bytes(), nullptr, 0, n_tok, y, ldy};
  // Float weights read the activations in place; quantized ones get them quantized per token.
  thread_local std::vector<uint8_t> act;
  if (act_format(W.type) == ActFormat::F32) {
    a.act = reinterpret_cast<const uint8_t*>(x);
    a.act_stride = size_t(ldx) * sizeof(float);
  } else {
    a.act_stride = act_row_bytes(W.type, cols);
    act.resize(a.act_stride * size_t(n_tok));
    uint8_t* out = act.data();
    pool.parallel_for(n_tok, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        if (use_simd) avx2::quantize_act(W.type, x + t * ldx, cols, out + size_t(t) * a.act_stride);
        else ref::quantize_act(W.type, x + t * ldx, cols, out + size_t(t) * a.act_stride);
      }
    });
    a.act = act.data();
  }
  const int64_t rows = W.rows();
  auto run_rows = [&](int64_t r0, int64_t r1) {
    if (use_simd) avx2::matmul_rows(a, r0, r1);
    else ref::matmul_rows(a, r0, r1);
  };
  if (pool.size() == 1 || rows <= kRowGroup) {
    run_rows(0, rows);
    return;
  }
  // Threads take chunks of rows from a shared counter rather than fixed halves: a thread that is
  // slowed (by memory, or by the OS giving its core away) no longer leaves the other one waiting
  // at the end of every matmul. About 8 chunks per thread; each row is still computed by exactly
  // one thread in the same way, so results do not depend on the thread count.
  const int64_t per = rows / (int64_t(pool.size()) * 8);
  const int64_t chunk = std::max<int64_t>(kRowGroup, per / kRowGroup * kRowGroup);
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    for (;;) {
      const int64_t r0 = next.fetch_add(chunk, std::memory_order_relaxed);
      if (r0 >= rows) return;
      run_rows(r0, std::min(rows, r0 + chunk));
    }
  });
}

void get_row(const Tensor& W, int64_t r, float* out) {
  if (r < 0 || r >= W.rows())
    throw Error("get_row: row " + std::to_string(r) + " is outside tensor '" + W.name + "' " +
                W.shape_string());
  dequantize_row(W.type, W.row(r), out, W.cols());
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  ref::dequantize_row(t, src, dst, n);  // off the hot path: embeddings rows, conversion
}

size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
  return ref::quantize_row(t, src, dst, n);
}

void rmsnorm(const float* x, const float* weight, float* y, int n, float eps) {
  simd() ? avx2::rmsnorm(x, weight, y, n, eps) : ref::rmsnorm(x, weight, y, n, eps);
}
float dot(const float* a, const float* b, int n) { return simd() ? avx2::dot(a, b, n) : ref::dot(a, b, n); }
float dot_f16(const uint16_t* a, const float* b, int n) {
  return simd() ? avx2::dot_f16(a, b, n) : ref::dot_f16(a, b, n);
}
float dot_i8(const int8_t* a, const float* b, int n) { return simd() ? avx2::dot_i8(a, b, n) : ref::dot_i8(a, b, n); }
void axpy(float a, const float* x, float* y, int n) { simd() ? avx2::axpy(a, x, y, n) : ref::axpy(a, x, y, n); }
void axpy_f16(float a, const uint16_t* x, float* y, int n) {
  simd() ? avx2::axpy_f16(a, x, y, n) : ref::axpy_f16(a, x, y, n);
}
void axpy_i8(float a, const int8_t* x, float* y, int n) {
  simd() ? avx2::axpy_i8(a, x, y, n) : ref::axpy_i8(a, x, y, n);
}
void softmax(float* x, int n) { simd() ? avx2::softmax(x, n) : ref::softmax(x, n); }
void silu_mul(float* gate, const float* up, int n) {
  simd() ? avx2::silu_mul(gate, up, n) : ref::silu_mul(gate, up, n);
}
void f32_to_f16_row(const float* x, uint16_t* y, int n) {
  simd() ? avx2::f32_to_f16_row(x, y, n) : ref::f32_to_f16_row(x, y, n);
}

}  // namespace pensieve::kernels
