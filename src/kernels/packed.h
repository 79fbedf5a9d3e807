// Weight matrices repacked for the AVX-512 VNNI kernels (matmul_packed_vnni.cpp): sixteen rows
// interleaved, so that one 512-bit vpdpbusd multiplies four weights of each of 16 rows by the same
// four activation bytes (broadcast) and every 32-bit lane ends up holding one row's block sum. No
// horizontal adds and no per-row activation loads: one activation broadcast feeds 16 rows, and one
// unpacked weight vector feeds up to 8 tokens. The same kernel serves decode (one token) and
// prefill (many), so a token's result never depends on what else shares the batch.
//
// A tile is 16 rows (the last one padded with zero rows) and is stored super-block after
// super-block (32 weights for Q4_0/Q8_0, 64 for Q4_A, 256 for the K-quants). Within one, the weights are 64-byte
// chunks whose lane r (4 bytes) holds row r's bytes at the same place of its own block, so each
// chunk is one load and lane r unpacks to four weights of row r; per-row scales are stored as 16
// values side by side. Byte offsets inside a super-block of 16 rows:
//   Q4_0: [0,32) d f16 | [32,288) 4 chunks of nibbles (qs bytes 4c..4c+3)
//   Q8_0: [0,32) d f16 | [32,544) 8 chunks of q + 128 (unsigned, for vpdpbusd)
//   Q4_A: [0,32) d | [32,64) m | [64,576) 8 chunks of nibbles (group h: chunks 4h..4h+3)
//   Q4_K: [0,32) d | [32,64) dmin | [64,192) scale[g][r] | [192,320) min[g][r] (6-bit, unpacked)
//         | [320,2368) 32 chunks of qs (chunk 8p + c: bytes 32p + 4c..; group g in nibble g & 1)
//   Q5_K: Q4_K's | [2368,2880) 8 chunks of qh (bit g = fifth bit of group g)
//   Q6_K: [0,32) d | [32,288) scale[i][r] (int8, per 16) | [288,2336) 32 chunks of ql
//         | [2336,3360) 16 chunks of qh
// Each row's result, per group g of 32 weights against that group's activations (block_q8_x: d,
// ds = d * sum, qs), accumulated group by group in fused multiply-adds, the scalar twin doing
// exactly the same, so the two agree bit for bit:
//   Q4_0/Q8_0: acc += d_w * (isum * d_x - off * ds_x)         (off = 8, 128)
//   Q4_K/Q5_K: acc += (d * sc_g) * (isum * d_x);  acc -= (dmin * m_g) * ds_x
//   Q4_A (MLX, w = d q + m): the same with scale d and min -m for both groups of its 64
//   Q6_K, per half h of 16 weights: acc += (d * sc) * (isum_h * d_x - 32 * s16_h)
// where s16 is d_x times the sum of those 16 activations (kept after the token's blocks).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/quant.h"
#include "kernels/tensor.h"
#include "util/thread_pool.h"

namespace pensieve::kernels {

constexpr int kPackRows = 16;

// Where the parts of a packed super-block of 16 rows start (the byte offsets in the table above),
// shared by the scalar twin and the VNNI kernel.
namespace packed_at {
constexpr int kQ4KScale = 64, kQ4KMin = 192, kQ4KNib = 320, kQ5KHigh = 2368;
constexpr int kQ6KScale = 32, kQ6KLow = 288, kQ6KHigh = 2336;
constexpr int kQ4ANib = 64;
}  // namespace packed_at

// True when `type` has a packed layout and kernel (Q4_0, Q8_0, Q4_A, Q4_K, Q5_K, Q6_K).
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
  int sb_elems() const;        // weights per super-block: 32, 64 or 256
  size_t sb_bytes() const;     // one super-block of 16 rows
  int64_t sbs() const { return cols_ / sb_elems(); }
  size_t tile_bytes() const { return sb_bytes() * size_t(sbs()); }
  const uint8_t* tile(int64_t i) const { return data_ + size_t(i) * tile_bytes(); }
  uint8_t* tile(int64_t i) { return data_ + size_t(i) * tile_bytes(); }
  size_t bytes() const { return tile_bytes() * size_t(tiles()); }

 private:
  GgmlType type_;
  int64_t rows_, cols_;
  uint8_t* data_ = nullptr;
  size_t mapped_ = 0;
};

// Packs tiles [t0, t1) of W (rows of W's type, which must be packable) into P; the scalar
// definition of the layout.
void pack_tiles(const Tensor& W, PackedMatrix& P, int64_t t0, int64_t t1);
// The whole matrix, on the pool's threads (vnni::pack_tiles where the CPU has it).
std::unique_ptr<PackedMatrix> pack_matrix(const Tensor& W, ThreadPool& pool);

// Row r of P dequantized to float32 (what the source row dequantizes to, exactly).
void packed_row(const PackedMatrix& P, int64_t r, float* out);
// matmul_exact (float32 activations) from the packed copy: rows dequantized, then float dots; a
// token's result does not depend on the batch.
void matmul_exact_packed(const PackedMatrix& P, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                         ThreadPool& pool);

// Bytes of one token's prepared activations for P: cols/32 block_q8_x, then (Q6_K) cols/16 floats
// of s16.
size_t packed_act_bytes(const PackedMatrix& P);
// Prepares one token's activations (the scalar reference of the quantization, bit-identical to
// the AVX2 one that matmul_packed uses).
void packed_act_ref(const PackedMatrix& P, const float* x, uint8_t* out);

// y[t * ldy + r] = sum_c W[r, c] x[t * ldx + c], as kernels::matmul but from the packed copy:
// activations quantized per token, then (token chunk, run of tiles) items handed to the threads.
// Runs the VNNI kernel where the CPU has it, else the scalar twin.
void matmul_packed(const PackedMatrix& P, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                   ThreadPool& pool);

// One call over tiles [t0, t1) and tokens [0, n_tok): act holds n_tok prepared rows, act_stride
// bytes apart.
struct PackedArgs {
  const PackedMatrix* P;
  const uint8_t* act;
  size_t act_stride;
  int n_tok;
  float* y;
  int64_t ldy;
};

namespace vnni {
void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1);
// pack_tiles with AVX-512 gathers; the same bytes.
void pack_tiles(const Tensor& W, PackedMatrix& P, int64_t t0, int64_t t1);
}
namespace ref {
void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1);
}

}  // namespace pensieve::kernels
