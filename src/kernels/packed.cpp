// The packed weight layout (packed.h): allocation, packing, the matmul entry point and the scalar
// twin of the VNNI kernel.
#include "kernels/packed.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/kernels_avx2.h"
#include "kernels/kernels_ref.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/mapped_file.h"

namespace pensieve::kernels {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;

// Byte o of a row's own block, in the chunked form at `base`: lane r of chunk o / 4.
inline uint8_t lane_byte(const uint8_t* base, int r, int o) { return base[(o / 4) * 64 + 4 * r + o % 4]; }

// Copies n bytes (a multiple of 4) of row r's block into lane r of n / 4 chunks at `base`.
void put_chunks(uint8_t* base, int r, const uint8_t* src, int n) {
  for (int k = 0; k < n / 4; ++k) std::memcpy(base + 64 * k + 4 * r, src + 4 * k, 4);
}

using namespace packed_at;

// The unsigned level of element e of lane r in a packed super-block.
int level(GgmlType t, const uint8_t* sb, int r, int e) {
  switch (t) {
    case GgmlType::Q4_0: {
      const uint8_t b = lane_byte(sb + 32, r, e % 16);
      return e < 16 ? (b & 0xF) : (b >> 4);
    }
    case GgmlType::Q8_0: return lane_byte(sb + 32, r, e);
    case GgmlType::Q4_A: {
      const uint8_t b = lane_byte(sb + kQ4ANib, r, 16 * (e / 32) + e % 16);
      return e % 32 < 16 ? (b & 0xF) : (b >> 4);
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const uint8_t b = lane_byte(sb + kQ4KNib, r, (e / 64) * 32 + e % 32);
      const int lo = (e % 64) < 32 ? (b & 0xF) : (b >> 4);
      if (t == GgmlType::Q4_K) return lo;
      return lo | (((lane_byte(sb + kQ5KHigh, r, e % 32) >> (e / 32)) & 1) << 4);
    }
    case GgmlType::Q6_K: {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      const uint8_t b = lane_byte(sb + kQ6KLow, r, 64 * h + l + 32 * (k & 1));
      const int lo = k < 2 ? (b & 0xF) : (b >> 4);
      return lo | (((lane_byte(sb + kQ6KHigh, r, 32 * h + l) >> (2 * k)) & 3) << 4);
    }
    default: return 0;
  }
}

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

}  // namespace

bool packable(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0:
    case GgmlType::Q8_0:
    case GgmlType::Q4_A:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return true;
    default: return false;
  }
}

int PackedMatrix::sb_elems() const {
  return type_ == GgmlType::Q4_0 || type_ == GgmlType::Q8_0 ? QK : type_ == GgmlType::Q4_A ? QK_A : QK_K;
}

size_t PackedMatrix::sb_bytes() const {
  switch (type_) {
    case GgmlType::Q4_0: return 288;
    case GgmlType::Q8_0: return 544;
    case GgmlType::Q4_A: return 576;
    case GgmlType::Q4_K: return 2368;
    case GgmlType::Q5_K: return 2880;
    default: return 3360;  // Q6_K
  }
}

PackedMatrix::PackedMatrix(GgmlType type, int64_t rows, int64_t cols) : type_(type), rows_(rows), cols_(cols) {
  if (!packable(type)) throw Error("packed matmul: no packed layout for " + std::string(type_name(type)));
  if (cols % sb_elems() != 0)
    throw Error("packed matmul: rows of " + std::to_string(cols) + " are not whole " +
                std::string(type_name(type)) + " blocks");
  // Starts on a 2 MB boundary so that the whole 2 MB stretches can be huge pages (fewer page faults
  // while packing, fewer TLB misses while streaming the weights; a no-op where transparent huge
  // pages are off); the tail stays in small pages, so no matrix holds up to 2 MB it does not use.
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  mapped_ = std::max<size_t>(page, (bytes() + page - 1) / page * page);
  void* p = mmap(nullptr, mapped_ + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (raw + kHugePage - 1) / kHugePage * kHugePage;
  if (start > raw) munmap(p, start - raw);
  if (raw + kHugePage > start) munmap(reinterpret_cast<void*>(start + mapped_), raw + kHugePage - start);
  data_ = reinterpret_cast<uint8_t*>(start);
  if (mapped_ >= kHugePage) madvise(data_, mapped_ / kHugePage * kHugePage, MADV_HUGEPAGE);
}

PackedMatrix::~PackedMatrix() {
  if (data_) munmap(data_, mapped_);
}

void pack_tiles(const Tensor& W, PackedMatrix& P, int64_t t0, int64_t t1) {
  const int64_t nsb = P.sbs();
  const size_t sbb = P.sb_bytes();
  const size_t src_bytes = row_size(P.type(), P.sb_elems());
  for (int64_t t = t0; t < t1; ++t) {
    uint8_t* out = P.tile(t);
    std::memset(out, 0, P.tile_bytes());
    for (int r = 0; r < kPackRows; ++r) {
      const int64_t row = t * kPackRows + r;
      if (row >= P.rows()) break;
      const uint8_t* src = W.row(row);
      for (int64_t b = 0; b < nsb; ++b, src += src_bytes) {
        uint8_t* sb = out + size_t(b) * sbb;
        switch (P.type()) {
          case GgmlType::Q4_0: {
            const auto& x = *reinterpret_cast<const block_q4_0*>(src);
            std::memcpy(sb + 2 * r, &x.d, 2);
            put_chunks(sb + 32, r, x.qs, QK / 2);
            break;
          }
          case GgmlType::Q8_0: {
            const auto& x = *reinterpret_cast<const block_q8_0*>(src);
            std::memcpy(sb + 2 * r, &x.d, 2);
            uint8_t q[QK];
            for (int i = 0; i < QK; ++i) q[i] = uint8_t(x.qs[i]) ^ 0x80;
            put_chunks(sb + 32, r, q, QK);
            break;
          }
          case GgmlType::Q4_A: {
            const auto& x = *reinterpret_cast<const block_q4_a*>(src);
            std::memcpy(sb + 2 * r, &x.d, 2);
            std::memcpy(sb + 32 + 2 * r, &x.m, 2);
            put_chunks(sb + kQ4ANib, r, x.qs, QK_A / 2);
            break;
          }
          case GgmlType::Q4_K:
          case GgmlType::Q5_K: {
            // Both start with d, dmin and the 12 scale bytes; Q5_K then has qh before qs.
            const auto& x = *reinterpret_cast<const block_q4_K*>(src);
            std::memcpy(sb + 2 * r, &x.d, 2);
            std::memcpy(sb + 32 + 2 * r, &x.dmin, 2);
            for (int g = 0; g < 8; ++g) k4_scale_min(x.scales, g, &sb[kQ4KScale + 16 * g + r], &sb[kQ4KMin + 16 * g + r]);
            if (P.type() == GgmlType::Q4_K) {
              put_chunks(sb + kQ4KNib, r, x.qs, QK_K / 2);
            } else {
              const auto& y = *reinterpret_cast<const block_q5_K*>(src);
              put_chunks(sb + kQ4KNib, r, y.qs, QK_K / 2);
              put_chunks(sb + kQ5KHigh, r, y.qh, QK_K / 8);
            }
            break;
          }
          default: {  // Q6_K
            const auto& x = *reinterpret_cast<const block_q6_K*>(src);
            std::memcpy(sb + 2 * r, &x.d, 2);
            for (int i = 0; i < QK_K / 16; ++i) sb[kQ6KScale + 16 * i + r] = uint8_t(x.scales[i]);
            put_chunks(sb + kQ6KLow, r, x.ql, QK_K / 2);
            put_chunks(sb + kQ6KHigh, r, x.qh, QK_K / 4);
            break;
          }
        }
      }
    }
  }
}

std::unique_ptr<PackedMatrix> pack_matrix(const Tensor& W, ThreadPool& pool) {
  auto P = std::make_unique<PackedMatrix>(W.type, W.rows(), W.cols());
  populate_pages(W.data, W.nbytes);
  const bool fast = cpu_features().use_vnni();
  pool.parallel_for(P->tiles(), 1, [&](int64_t t0, int64_t t1) {
    if (fast) vnni::pack_tiles(W, *P, t0, t1);
    else pack_tiles(W, *P, t0, t1);
  });
  return P;
}

void packed_row(const PackedMatrix& P, int64_t row, float* out) {
  if (row < 0 || row >= P.rows()) throw Error("packed_row: row " + std::to_string(row) + " is outside the matrix");
  const GgmlType t = P.type();
  const int r = int(row % kPackRows);
  const uint8_t* tile = P.tile(row / kPackRows);
  const int n = P.sb_elems();
  for (int64_t b = 0; b < P.sbs(); ++b) {
    const uint8_t* sb = tile + size_t(b) * P.sb_bytes();
    const float d = f16_at(sb + 2 * r);
    for (int e = 0; e < n; ++e) {
      const int q = level(t, sb, r, e);
      float w;
      switch (t) {
        case GgmlType::Q4_0: w = d * float(q - 8); break;
        case GgmlType::Q8_0: w = d * float(q - 128); break;
        case GgmlType::Q4_A: w = d * float(q) + f16_at(sb + 32 + 2 * r); break;
        case GgmlType::Q4_K:
        case GgmlType::Q5_K: {
          const int g = e / QK;
          w = d * float(sb[kQ4KScale + 16 * g + r]) * float(q) - f16_at(sb + 32 + 2 * r) * float(sb[kQ4KMin + 16 * g + r]);
          break;
        }
        default: w = d * float(int8_t(sb[kQ6KScale + 16 * (e / 16) + r])) * float(q - 32); break;  // Q6_K
      }
      out[b * n + e] = w;
    }
  }
}

void matmul_exact_packed(const PackedMatrix& P, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                         ThreadPool& pool) {
  pool.parallel_for(P.rows(), kPackRows, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(P.cols()));
    for (int64_t r = r0; r < r1; ++r) {
      packed_row(P, r, row.data());
      for (int t = 0; t < n_tok; ++t) y[size_t(t) * size_t(ldy) + size_t(r)] = dot(row.data(), x + t * ldx, int(P.cols()));
    }
  });
}

size_t packed_act_bytes(const PackedMatrix& P) {
  const size_t nb = size_t(P.cols() / QK);
  return nb * sizeof(block_q8_x) + (P.type() == GgmlType::Q6_K ? 2 * nb * sizeof(float) : 0);
}

namespace {

// s16 after the blocks: d times the sum of each half block (Q6_K's sub-blocks of 16).
void add_s16(const PackedMatrix& P, uint8_t* out) {
  if (P.type() != GgmlType::Q6_K) return;
  const int64_t nb = P.cols() / QK;
  const auto* x = reinterpret_cast<const block_q8_x*>(out);
  auto* s16 = reinterpret_cast<float*>(out + size_t(nb) * sizeof(block_q8_x));
  for (int64_t b = 0; b < nb; ++b)
    for (int h = 0; h < 2; ++h) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += x[b].qs[16 * h + i];
      s16[2 * b + h] = x[b].d * float(sum);
    }
}

}  // namespace

void packed_act_ref(const PackedMatrix& P, const float* x, uint8_t* out) {
  ref::quantize_act(GgmlType::Q4_0, x, P.cols(), out);  // block_q8_x, whatever P's type
  add_s16(P, out);
}

namespace ref {

void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  const PackedMatrix& P = *a.P;
  const GgmlType type = P.type();
  const int64_t nsb = P.sbs();
  const int groups = P.sb_elems() / QK;
  const size_t sbb = P.sb_bytes();
  const int64_t nb = P.cols() / QK;
  for (int64_t ti = t0; ti < t1; ++ti) {
    const uint8_t* tile = P.tile(ti);
    for (int t = 0; t < a.n_tok; ++t) {
      const uint8_t* act = a.act + size_t(t) * a.act_stride;
      const auto* x = reinterpret_cast<const block_q8_x*>(act);
      const auto* s16 = reinterpret_cast<const float*>(act + size_t(nb) * sizeof(block_q8_x));
      for (int r = 0; r < kPackRows; ++r) {
        const int64_t row = ti * kPackRows + r;
        if (row >= P.rows()) break;
        float acc = 0.0f;
        for (int64_t b = 0; b < nsb; ++b) {
          const uint8_t* sb = tile + size_t(b) * sbb;
          for (int g = 0; g < groups; ++g) {
            const block_q8_x& xg = x[b * groups + g];
            int32_t isum[2] = {0, 0};  // the two halves of 16
            for (int e = 0; e < QK; ++e) isum[e / 16] += level(type, sb, r, QK * g + e) * xg.qs[e];
            switch (type) {
              case GgmlType::Q4_0:
              case GgmlType::Q8_0: {
                const float off = type == GgmlType::Q4_0 ? 8.0f : 128.0f;
                const float f = std::fma(float(isum[0] + isum[1]), xg.d, -(off * xg.ds));
                acc = std::fma(f16_at(sb + 2 * r), f, acc);
                break;
              }
              case GgmlType::Q4_A: {  // w = d q + m: the scale-and-min form with min -m
                const float M = -f16_at(sb + 32 + 2 * r);
                acc = std::fma(f16_at(sb + 2 * r), float(isum[0] + isum[1]) * xg.d, acc);
                acc = std::fma(-M, xg.ds, acc);
                break;
              }
              case GgmlType::Q4_K:
              case GgmlType::Q5_K: {
                const float S = f16_at(sb + 2 * r) * float(sb[kQ4KScale + 16 * g + r]);
                const float M = f16_at(sb + 32 + 2 * r) * float(sb[kQ4KMin + 16 * g + r]);
                acc = std::fma(S, float(isum[0] + isum[1]) * xg.d, acc);
                acc = std::fma(-M, xg.ds, acc);
                break;
              }
              default:  // Q6_K
                for (int h = 0; h < 2; ++h) {
                  const float S = f16_at(sb + 2 * r) * float(int8_t(sb[kQ6KScale + 16 * (2 * g + h) + r]));
                  const float f = std::fma(float(isum[h]), xg.d, -(32.0f * s16[2 * (b * groups + g) + h]));
                  acc = std::fma(S, f, acc);
                }
                break;
            }
          }
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
  const size_t stride = packed_act_bytes(P);
  thread_local std::vector<uint8_t> act;
  act.resize(stride * size_t(n_tok));
  uint8_t* out = act.data();
  const bool simd = cpu_features().use_avx2();
  pool.parallel_for(n_tok, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      uint8_t* o = out + size_t(t) * stride;
      if (simd) avx2::quantize_act(GgmlType::Q4_0, x + t * ldx, cols, o);
      else ref::quantize_act(GgmlType::Q4_0, x + t * ldx, cols, o);
      add_s16(P, o);
    }
  });
  // Work items are (token chunk, run of tiles): both threads go through the same chunk's
  // activations (kept in L2: three quarters of it, so that a tile streams past them) before the
  // next, and a slowed thread takes fewer runs. Each chunk streams the weights once more, so the
  // chunks are as large as L2 allows (768 KB rather than 256 KB on a 1 MB L2: Q8_0 pp256 +1-7% in
  // 6 of 6 interleaved pairs).
  static const size_t chunk_bytes = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return l2 >= (512 << 10) ? size_t(l2) / 4 * 3 : size_t(256) << 10;
  }();
  const int tok_chunk = std::max<int>(8, int(chunk_bytes / stride) / 8 * 8);
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
