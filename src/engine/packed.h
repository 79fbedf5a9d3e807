// Weight matrices repacked at load for the AVX-512 VNNI kernels (matmul_packed_vnni.cpp): sixteen
// rows interleaved, so that one 512-bit vpdpbusd multiplies four weights of each of 16 rows by the
// same four activation bytes (broadcast) and every 32-bit lane ends up holding one row's block sum.
// No horizontal adds, no per-row activation loads: one activation broadcast feeds 16 rows, one
// unpacked weight vector feeds up to 8 tokens. The same kernel serves decode (one token) and
// prefill (many), so a token's result never depends on what else shares the batch.
//
// Layout, per tile of 16 rows (the last tile padded with zero rows), per 32-weight block b:
//   16 f16 scales (lane r = row r's d), then the weights as 64-byte chunks, lane r (4 bytes) of
//   chunk c holding row r's bytes 4c..4c+3 of the block:
//   Q4_0: 4 chunks of the original nibble bytes (low nibble = element 4c+i, high = 16+4c+i);
//   Q8_0: 8 chunks of the int8 weights with the sign bit flipped (q + 128, unsigned for vpdpbusd).
// Each row's result is sum_b d_w * (isum_b * d_x - off * ds_x) (off = 8 or 128: the level offset),
// accumulated block by block with fused multiply-adds; the scalar twin does exactly the same, so the
// two agree bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/quant.h"
#include "engine/tensor.h"
#include "util/thread_pool.h"

namespace pensieve::kernels {

constexpr int kPackRows = 16;

// True when `type` has a packed layout and kernel (Q4_0, Q8_0).
bool packable(GgmlType type);

// A packed copy of a weight matrix in anonymous memory (2 MB pages where the kernel gives them).
class PackedMatrix {
 public:
  PackedMatrix(GgmlType type, int64_t rows, int64_t cols);
  ~PackedMatrix();
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix& operator=(const PackedMatrix&) = delete;

  GgmlType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t tiles() const { return (rows_ + kPackRows - 1) / kPackRows; }
  size_t block_bytes() const;  // one 32-weight block of 16 rows
  size_t tile_bytes() const { return block_bytes() * size_t(cols_ / QK); }
  const uint8_t* tile(int64_t i) const { return data_ + size_t(i) * tile_bytes(); }
  uint8_t* tile(int64_t i) { return data_ + size_t(i) * tile_bytes(); }
  size_t bytes() const { return tile_bytes() * size_t(tiles()); }

 private:
  GgmlType type_;
  int64_t rows_, cols_;
  uint8_t* data_ = nullptr;
  size_t mapped_ = 0;
};

// Packs tiles [t0, t1) of W (rows of W's type, which must be packable) into P.
void pack_tiles(const Tensor& W, PackedMatrix& P, int64_t t0, int64_t t1);
// The whole matrix, on the pool's threads.
std::unique_ptr<PackedMatrix> pack_matrix(const Tensor& W, ThreadPool& pool);

// y[t * ldy + r] = sum_c W[r, c] x[t * ldx + c], as kernels::matmul but from the packed copy: the
// activations are quantized per token exactly as matmul does (block_q8_x), then tiles are handed to
// the threads. Runs the VNNI kernel where the CPU has it, else the scalar twin.
void matmul_packed(const PackedMatrix& P, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                   ThreadPool& pool);

// One call over tiles [t0, t1) and tokens [0, n_tok): act is n_tok rows of block_q8_x, act_stride
// bytes apart.
struct PackedArgs {
  const PackedMatrix* P;
  const uint8_t* act;
  size_t act_stride;
  int n_tok;
  float* y;
  int64_t ldy;
};

namespace ref {
void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1);
}
namespace vnni {
void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1);
}

}  // namespace pensieve::kernels
