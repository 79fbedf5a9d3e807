// The packed weight layout (packed.h): allocation, packing, the matmul entry point and the scalar
// twin of the VNNI kernel.
#include "engine/packed.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "engine/kernels_avx2.h"
#include "engine/kernels_ref.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve::kernels {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr int kScaleBytes = kPackRows * 2;

int chunks(GgmlType t) { return t == GgmlType::Q4_0 ? 4 : 8; }
int level_offset(GgmlType t) { return t == GgmlType::Q4_0 ? 8 : 128; }

}  // namespace

bool packable(GgmlType type) { return type == GgmlType::Q4_0 || type == GgmlType::Q8_0; }

size_t PackedMatrix::block_bytes() const { return kScaleBytes + size_t(chunks(type_)) * 64; }

PackedMatrix::PackedMatrix(GgmlType type, int64_t rows, int64_t cols) : type_(type), rows_(rows), cols_(cols) {
  if (!packable(type)) throw Error("packed matmul: no packed layout for " + std::string(type_name(type)));
  if (cols % QK != 0) throw Error("packed matmul: rows of " + std::to_string(cols) + " are not whole blocks");
  mapped_ = std::max<size_t>(1, (bytes() + kHugePage - 1) / kHugePage * kHugePage);
  void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Fewer page faults while packing and fewer TLB misses while streaming the weights; a no-op where
  // transparent huge pages are off.
  madvise(p, mapped_, MADV_HUGEPAGE);
  data_ = static_cast<uint8_t*>(p);
}

PackedMatrix::~PackedMatrix() {
  if (data_) munmap(data_, mapped_);
}

void pack_tiles(const Tensor& W, PackedMatrix& P, int64_t t0, int64_t t1) {
  const int64_t nb = P.cols() / QK;
  const size_t bb = P.block_bytes();
  const int nc = chunks(P.type());
  const size_t src_block = P.type() == GgmlType::Q4_0 ? sizeof(block_q4_0) : sizeof(block_q8_0);
  for (int64_t t = t0; t < t1; ++t) {
    uint8_t* out = P.tile(t);
    std::memset(out, 0, P.tile_bytes());
    for (int r = 0; r < kPackRows; ++r) {
      const int64_t row = t * kPackRows + r;
      if (row >= P.rows()) break;
      const uint8_t* src = W.row(row);
      for (int64_t b = 0; b < nb; ++b, src += src_block) {
        uint8_t* blk = out + size_t(b) * bb;
        std::memcpy(blk + 2 * r, src, 2);  // the f16 scale d, first field of both block types
        const uint8_t* qs = src + 2;
        for (int c = 0; c < nc; ++c) {
          uint8_t* lane = blk + kScaleBytes + 64 * c + 4 * r;
          std::memcpy(lane, qs + 4 * c, 4);
          if (P.type() == GgmlType::Q8_0)
            for (int i = 0; i < 4; ++i) lane[i] ^= 0x80;
        }
      }
    }
  }
}

std::unique_ptr<PackedMatrix> pack_matrix(const Tensor& W, ThreadPool& pool) {
  auto P = std::make_unique<PackedMatrix>(W.type, W.rows(), W.cols());
  pool.parallel_for(P->tiles(), 1, [&](int64_t t0, int64_t t1) { pack_tiles(W, *P, t0, t1); });
  return P;
}

namespace ref {

void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  const PackedMatrix& P = *a.P;
  const int64_t nb = P.cols() / QK;
  const size_t bb = P.block_bytes();
  const bool q4 = P.type() == GgmlType::Q4_0;
  const float off = float(level_offset(P.type()));
  for (int64_t ti = t0; ti < t1; ++ti) {
    const uint8_t* tile = P.tile(ti);
    for (int t = 0; t < a.n_tok; ++t) {
      const auto* x = reinterpret_cast<const block_q8_x*>(a.act + size_t(t) * a.act_stride);
      for (int r = 0; r < kPackRows; ++r) {
        const int64_t row = ti * kPackRows + r;
        if (row >= P.rows()) break;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = tile + size_t(b) * bb;
          uint16_t dh;
          std::memcpy(&dh, blk + 2 * r, 2);
          int32_t isum = 0;
          for (int j = 0; j < 8; ++j)
            for (int i = 0; i < 4; ++i) {
              int level;
              if (q4) {
                const uint8_t byte = blk[kScaleBytes + 64 * (j % 4) + 4 * r + i];
                level = j < 4 ? (byte & 0xF) : (byte >> 4);
              } else {
                level = blk[kScaleBytes + 64 * j + 4 * r + i];
              }
              isum += level * x[b].qs[4 * j + i];
            }
          const float f = std::fma(float(isum), x[b].d, -(off * x[b].ds));
          acc = std::fma(f16_to_f32(dh), f, acc);
        }
        a.y[size_t(t) * size_t(a.ldy) + size_t(row)] = acc;
      }
    }
  }
}

}  // namespace ref

void matmul_packed(const PackedMatrix& P, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                   ThreadPool& pool) {
  if (n_tok <= 0 || P.rows() <= 0) return;
  const bool fast = cpu_features().use_vnni();
  const int64_t cols = P.cols();
  const size_t stride = act_row_bytes(P.type(), cols);
  thread_local std::vector<uint8_t> act;
  act.resize(stride * size_t(n_tok));
  uint8_t* out = act.data();
  const bool simd = cpu_features().use_avx2();
  pool.parallel_for(n_tok, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      if (simd) avx2::quantize_act(P.type(), x + t * ldx, cols, out + size_t(t) * stride);
      else ref::quantize_act(P.type(), x + t * ldx, cols, out + size_t(t) * stride);
    }
  });
  // Work items are (token chunk, run of tiles): both threads go through the same chunk's
  // activations (kept in L2) before the next, and a slowed thread takes fewer runs.
  const int tok_chunk = std::max<int>(8, int((256 << 10) / stride) / 8 * 8);
  const int64_t n_chunks = (n_tok + tok_chunk - 1) / tok_chunk;
  const int64_t tiles = P.tiles();
  const int64_t run = std::max<int64_t>(1, tiles / (int64_t(pool.size()) * 8));
  const int64_t runs = (tiles + run - 1) / run;
  auto item = [&](int64_t i) {
    const int64_t c = i / runs, r = i % runs;
    const int t0 = int(c * tok_chunk);
    PackedArgs a{&P, out + size_t(t0) * stride, stride, std::min(n_tok - t0, tok_chunk),
                 y + size_t(t0) * size_t(ldy), ldy};
    const int64_t k0 = r * run, k1 = std::min(tiles, k0 + run);
    if (fast) vnni::matmul_packed_tiles(a, k0, k1);
    else ref::matmul_packed_tiles(a, k0, k1);
  };
  const int64_t items = n_chunks * runs;
  if (pool.size() == 1 || items == 1) {
    for (int64_t i = 0; i < items; ++i) item(i);
    return;
  }
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items;) item(i);
  });
}

}  // namespace pensieve::kernels
