// The batched GEMMs of the CUDA backend (included by cuda_backend.cu, after cuda_gemv.cuh): the
// k-split partial sums, and the Q4_0 GEMM that dequantizes in registers for the tensor cores
// (mma.sync, and wgmma with cluster-summed splits on Hopper).
#pragma once

namespace pensieve::cuda {

// ---------------------------------------------------------------------------------------------
// Batched GEMMs (below): up to kGemmToks tokens a block, batches of up to kGemmMaxTokens tokens,
// partial sums of k-split blocks within kGemmPartMax bytes.
constexpr int kGemmToks = 64, kGemmMaxTokens = 128;
constexpr size_t kGemmPartMax = size_t(32) << 20;

// y[t * ldy + r] = sum over s < ks, in order, of part[(s * nt + t) * rows + r]. The partial sums
// are read through L2 (ld.global.cg): the GEMM that writes them may still run under PDL, and a
// plain load of a const __restrict__ pointer may be scheduled before pdl_wait().
__global__ void sum_parts_kernel(const float* __restrict__ part, int ks, int nt, int rows, float* __restrict__ y,
                                 int64_t ldy) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (rows % 4 == 0 && ldy % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0) {  // four outputs a thread
    const int r4 = rows / 4;
    if (i >= int64_t(nt) * r4) return;
    const int64_t t = i / r4, r = (i % r4) * 4;
    float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int k = 0; k < ks; ++k) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(part + (int64_t(k) * nt + t) * rows + r));
      s.x += v.x;
      s.y += v.y;
      s.z += v.z;
      s.w += v.w;
    }
    *reinterpret_cast<float4*>(y + t * ldy + r) = s;
    return;
  }
  if (i >= int64_t(nt) * rows) return;
  const int64_t t = i / rows, r = i % rows;
  float s = 0.0f;
  for (int k = 0; k < ks; ++k) s += __ldcg(part + (int64_t(k) * nt + t) * rows + r);
  y[t * ldy + r] = s;
}

// Launches sum_parts_kernel: y (nt rows of `rows`, ldy apart) = the ks partial sums in `part`.
static void sum_parts(const float* part, int ks, int nt, int rows, float* y, int64_t ldy, cudaStream_t st) {
  const bool vec = rows % 4 == 0 && ldy % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  const int64_t n = int64_t(nt) * (vec ? rows / 4 : rows);
  launch_pdl(sum_parts_kernel, dim3(unsigned((n + 255) / 256)), dim3(256), 0, st, part, ks, nt, rows, y, ldy);
  check_launch("GEMM partial sums");
}

// The current device's multiprocessor count (132 where it cannot be read).
static int sm_count() {
  int dev = 0, n = 132;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    n = 132;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Batched GEMM on packed Q4_0 for kGemvMaxTokensDefault + 1 .. kGemmMaxTokens tokens (a batched
// decode step): the weights dequantized in registers to fp16 (q - 8) * d, exactly the values of
// the fp16 cache, and multiplied on tensor cores (mma.m16n8k16, fp16 in, float32 accumulate) with
// the activations in fp16; 0.56 bytes a weight read instead of the cache's 2, and no scaling after
// the MMA. A dot product may take its terms in any order, so an MMA's 16 k-slots need not be 16
// consecutive columns: thread (g, t) of a warp loads whole blocks of 32 (16 bytes: 4 words of
// 8 nibbles) of rows g, g + 8, g + 16, g + 24 at block kb + t, and each word gives the A fragments
// of two MMAs (its low and its high nibbles); the B fragments are the matching activations of
// block kb + t, 8 consecutive fp16 values, one 16-byte shared-memory load for two MMAs.
// A block: kQ4Warps warps of 32 rows (two MMA row tiles each) over 64 tokens (zeros past the last;
// blockIdx.z: the next 64), in steps of 4 blocks of 32 (128 columns). Every warp of the block uses
// the same activations, staged in shared memory three steps deep (cp.async), so that the
// activations read from L2 per weight byte fall with the rows a block takes (64 tokens: 2 bytes a
// column a token against 0.56 a column a row); each warp's weights of the next step are loaded into
// registers during this step's MMAs. blockIdx.y splits the steps into `ks` ranges whose partial
// sums sum_parts_kernel adds in order. Per MMA: a byte permute and three half-precision ops a
// weight pair amortised over the 8 token tiles, a quarter of a 16-byte shared load.
constexpr int kQ4Step = 4, kQ4Stages = 3;  // blocks of 32 a step; steps of activations in flight
// A token's 4 blocks of 64 bytes each 80 apart, tokens 320 apart (16 words mod 32), so that the
// 16-byte loads of 8 lanes (2 tokens x 4 blocks) hit 32 different banks.
constexpr int kQ4BlkStride = 80, kQ4TokStride = 320;
constexpr int kQ4StageBytes = kGemmToks * kQ4TokStride;

// c += a b on tensor cores: a 16 x 16 fp16 A fragment, a 16 x 8 fp16 B fragment, float32 c (also
// the attention tiles' MMA, cuda_attention.cuh).
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool in) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(in ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Nibbles 0-3 of bytes 0 and 1 of w (after the byte swap below: bytes 0 and 2) as fp16 (q - 8) * d.
__device__ __forceinline__ uint32_t q4_pair(uint32_t w, __half2 d2) {
  uint32_t h;  // (w & 0x000F000F) | 0x64006400 in one instruction: 1024 + q, exactly
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(h) : "r"(w), "r"(0x000F000Fu), "r"(0x64006400u));
  constexpr uint32_t k1032 = 0x64086408u;                 // 1032 in both halves
  const __half2 v = __hsub2(*reinterpret_cast<const __half2*>(&h), *reinterpret_cast<const __half2*>(&k1032));
  const __half2 r = __hmul2(v, d2);
  return *reinterpret_cast<const uint32_t*>(&r);
}

// 8 warps of 32 rows (2 MMA row tiles) each, one block a multiprocessor: up to 255 registers a
// thread (176 used; with 128, two blocks a multiprocessor, the kernel spills and runs ~15% slower).
constexpr int kQ4Warps = 8, kQ4Tiles = 2;
__global__ void __launch_bounds__(32 * kQ4Warps, 1)
    gemm_q4_f16_kernel(const uint8_t* __restrict__ Q, const __half* __restrict__ S, int rows, int cols,
                       const __half* __restrict__ xh, int nt, int ks, float* __restrict__ y, int64_t ldy,
                       float* __restrict__ part) {
  extern __shared__ __align__(16) uint8_t q4sm[];
  pdl_trigger();
  const int nb = cols / 32, n_steps = (nb + kQ4Step - 1) / kQ4Step;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int r0 = blockIdx.x * (16 * kQ4Tiles * kQ4Warps) + warp * 16 * kQ4Tiles;
  const int t0 = blockIdx.z * kGemmToks, n_tok = min(kGemmToks, nt - t0), n_tiles = (n_tok + 7) / 8;
  const int s0 = int(int64_t(n_steps) * blockIdx.y / ks), s1 = int(int64_t(n_steps) * (blockIdx.y + 1) / ks);
  constexpr int R = 2 * kQ4Tiles;  // rows a thread: g, g + 8, g + 16, ...
  int ri[R];  // the rows' first blocks (a matrix of < 2^31 blocks); rows past the last read the last
#pragma unroll
  for (int i = 0; i < R; ++i) ri[i] = min(r0 + g + 8 * i, rows - 1) * nb;
  uint4 qn[R];
  __half dn[R];
  auto load_a = [&](int s) {
    const int kb = s * kQ4Step + tq;
    const bool in = kb < nb;
    const int kc = in ? kb : nb - 1;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      qn[i] = __ldcs(reinterpret_cast<const uint4*>(Q) + ri[i] + kc);
      dn[i] = in ? S[ri[i] + kc] : __float2half(0.0f);  // a block past the last counts 0
    }
  };
  // A step's activations: 64 tokens x 4 blocks x 4 parts of 16 bytes (zeros past the
  // last token or block), as one cp.async group. This thread's parts are part xp of block xb of
  // tokens xt, xt + 2 kQ4Warps, ... (the block size a multiple of 16 threads).
  const int xp = threadIdx.x % 4, xb = (threadIdx.x / 4) % kQ4Step, xt = threadIdx.x / (4 * kQ4Step);
  const __half* xsrc = xh + size_t(t0 + xt) * cols + xb * 32 + 8 * xp;
  const int xdst = xt * kQ4TokStride + xb * kQ4BlkStride + 16 * xp;
  auto load_x = [&](int s) {
    uint8_t* base = q4sm + ((s - s0) % kQ4Stages) * kQ4StageBytes + xdst;
    const bool kin = s * kQ4Step + xb < nb;
    const __half* src = xsrc + size_t(s) * (kQ4Step * 32);
    for (int tok = xt; tok < kGemmToks; tok += 2 * kQ4Warps) {
      const bool in = kin && tok < n_tok;
      cp_async16(base, in ? src : xh, in);
      base += 2 * kQ4Warps * kQ4TokStride;
      src += size_t(2 * kQ4Warps) * cols;
    }
  };
  load_a(s0);  // the weights depend on no kernel before
  pdl_wait();
#pragma unroll
  for (int k = 0; k < kQ4Stages - 1; ++k) {
    if (s0 + k < s1) load_x(s0 + k);
    cp_async_commit();
  }
  float acc[kQ4Tiles][8][4];
#pragma unroll
  for (int m = 0; m < kQ4Tiles; ++m)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][j][i] = 0.0f;
  for (int s = s0; s < s1; ++s) {
    uint32_t w[R][4];  // rows g, g + 8, g + 16, ...; words with bytes 1 and 2 swapped
    __half2 d2[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const uint32_t* q = reinterpret_cast<const uint32_t*>(&qn[i]);
#pragma unroll
      for (int k = 0; k < 4; ++k) w[i][k] = __byte_perm(q[k], 0, 0x3120);
      d2[i] = __half2half2(dn[i]);
    }
    if (s + 1 < s1) load_a(s + 1);
    cp_async_wait<kQ4Stages - 2>();  // this step's activations have landed (this thread's part)
    __syncthreads();                 // everyone's part, and the stage written next is no longer read
    if (s + kQ4Stages - 1 < s1) load_x(s + kQ4Stages - 1);
    cp_async_commit();
    const uint8_t* xs = q4sm + ((s - s0) % kQ4Stages) * kQ4StageBytes + g * kQ4TokStride + tq * kQ4BlkStride;
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      // Part p: words 2 (p % 2) and 2 (p % 2) + 1, low nibbles (p < 2) or high.
      uint32_t a[kQ4Tiles][2][4];  // [row tile][word][fragment]
#pragma unroll
      for (int m = 0; m < kQ4Tiles; ++m)
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const int wi = 2 * (p % 2) + k, sh = p < 2 ? 0 : 4;
          const uint32_t lo = w[2 * m][wi] >> sh, hi = w[2 * m + 1][wi] >> sh;
          a[m][k][0] = q4_pair(lo, d2[2 * m]);
          a[m][k][1] = q4_pair(hi, d2[2 * m + 1]);
          a[m][k][2] = q4_pair(lo >> 8, d2[2 * m]);
          a[m][k][3] = q4_pair(hi >> 8, d2[2 * m + 1]);
        }
#pragma unroll
      for (int j = 0; j < 8; ++j) {  // all 64 tokens (zeros past the last): no branch in the loop
        const uint4 b = *reinterpret_cast<const uint4*>(xs + 8 * j * kQ4TokStride + 16 * p);
#pragma unroll
        for (int m = 0; m < kQ4Tiles; ++m) {
          mma16816(acc[m][j], a[m][0], b.x, b.y);
          mma16816(acc[m][j], a[m][1], b.z, b.w);
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kQ4Tiles; ++m)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (j >= n_tiles) break;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int t = t0 + 8 * j + 2 * tq + (i & 1), r = r0 + 16 * m + g + (i >= 2 ? 8 : 0);
        if (t >= nt || r >= rows) continue;
        if (ks == 1) y[size_t(t) * ldy + r] = acc[m][j][i];
        else part[(size_t(blockIdx.y) * nt + t) * rows + r] = acc[m][j][i];
      }
    }
}

constexpr int kQ4RowsABlock = 16 * kQ4Tiles * kQ4Warps;

// ---------------------------------------------------------------------------------------------
// The same GEMM on Hopper's asynchronous tensor cores (wgmma, sm_90a): the weights dequantized in
// registers to fp16 exactly as above are the A operand (a warpgroup's 4 warps hold 16 rows each of
// a 64-row tile, in mma.m16n8k16's A fragment layout), the activations the B operand, read by the
// tensor cores from shared memory, all 64 tokens in one m64n64k16 instruction: a warp issues 2 of
// them for 32 columns where gemm_q4_f16_kernel issues 32 mma.sync, and builds the fragments of the
// next 32 while they run. The k-slot order is gemm_q4_f16_kernel's (lane quad tq's slots 2tq,
// 2tq + 1 and 2tq + 8, 2tq + 9 from its own block kb + tq), so the activations are stored into the
// operand layout 4 bytes at a time from registers loaded a step ahead: per 16 slots a tile of 8 x 2
// "core matrices" of 8 tokens x 8 slots (16 contiguous bytes a token), no swizzle. The weights and
// their scales stream through a shared-memory ring kWgStages steps deep (cp.async, each thread
// reading back only what it copied). Same grid as gemm_q4_f16_kernel; its k splits are summed
// within a cluster (below), so the output is always y.
constexpr int kWgStages = 4;
constexpr int kWgThreads = 512;                            // four warpgroups
constexpr int kWgWStage = kQ4RowsABlock * 4 * 16;          // a step's weights: 256 rows x 4 blocks
constexpr int kWgSStage = kQ4RowsABlock * 4 * 4;           // their scales, each in its aligned pair
constexpr int kWgPart = 2 * 8 * 128;                       // a 16-slot part: 8 token groups x 2 halves
constexpr int kWgBStage = 8 * kWgPart;                     // a step's 128 columns
constexpr int kWgSmem = kWgStages * (kWgWStage + kWgSStage) + 3 * kWgBStage;
constexpr int kWgRedStride = kQ4RowsABlock + 4;            // the cluster reduction's token stride (floats)
static_assert(kGemmToks * kWgRedStride * 4 <= kWgSmem, "the reduction fits the GEMM's shared memory");

__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A shared-memory operand descriptor: K-major, no swizzle, core matrices of 8 rows x 16 bytes,
// the next 8 slots 128 bytes on (leading byte offset), the next 8 tokens 256 (stride byte offset).
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr) {
  return uint64_t((saddr & 0x3FFFFu) >> 4) | (uint64_t(128 >> 4) << 16) | (uint64_t(256 >> 4) << 32);
}
// d (64 rows x 64 tokens, float32) += a (registers) * the descriptor's 16 x 64 fp16 tile.
__device__ __forceinline__ void wgmma_64x64x16(float* d, const uint32_t* a, uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from touching the accumulators before the wait that completes them.
__device__ __forceinline__ void wg_hold(float& r) { asm volatile("" : "+f"(r)::"memory"); }
#endif

// Four warpgroups of one 64-row tile each (512 threads, 103 registers; two warpgroups of two tiles
// held 200 and ran 1-2% slower). With ks > 1 the grid's k splits of a row tile form one thread-block
// cluster (launch_q4_gemm): each block puts its sums in its shared memory, and after a cluster
// barrier each adds a slice of all of them in split order (as sum_parts_kernel does) through
// distributed shared memory and stores it; no partial sums go through global memory.
__global__ void __launch_bounds__(kWgThreads, 1)
    gemm_q4_wgmma_kernel(const uint8_t* __restrict__ Q, const __half* __restrict__ S, int rows, int cols,
                         const __half* xh, int nt, int ks, float* __restrict__ y, int64_t ldy) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) uint8_t wgsm[];
  uint8_t* const wring = wgsm;
  uint8_t* const sring = wgsm + kWgStages * kWgWStage;
  uint8_t* const bbuf = sring + kWgStages * kWgSStage;
  pdl_trigger();
  const int nb = cols / 32, n_steps = (nb + kQ4Step - 1) / kQ4Step;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tq = lane % 4;
  // This thread's rows: r0 (fragment rows g) and r0 + 8 (g + 8) of its warp's 16.
  const int rloc = warp * 16 + g, r0 = blockIdx.x * kQ4RowsABlock + rloc;
  const int t0 = blockIdx.z * kGemmToks, n_tok = min(kGemmToks, nt - t0);
  const int s0 = int(int64_t(n_steps) * blockIdx.y / ks), s1 = int(int64_t(n_steps) * (blockIdx.y + 1) / ks);
  int ri[2];  // the rows' first blocks (rows past the last read the last)
#pragma unroll
  for (int h = 0; h < 2; ++h) ri[h] = min(r0 + 8 * h, rows - 1) * nb;
  auto load_w = [&](int s) {
    const int st = (s - s0) % kWgStages, kb = s * kQ4Step + tq, kc = kb < nb ? kb : nb - 1;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      cp_async16(wring + st * kWgWStage + (h * kWgThreads + tid) * 16, Q + (size_t(ri[h]) + kc) * 16, true);
      cp_async4(sring + st * kWgSStage + (h * kWgThreads + tid) * 4, S + ((ri[h] + kc) & ~1));
    }
  };
  // Activations: 512 pieces of 32 bytes a step (2 halves of a block x 8 token groups x 8 tokens x
  // 4 blocks, the last two fastest so that a warp's 4-byte stores hit 32 banks), one a thread.
  const int xb = tid % 4, xn = (tid / 32) % 8 * 8 + (tid / 4) % 8, xh2 = tid / 256;
  uint4 xv[2];
  auto load_x = [&](int s) {
    const int kb = s * kQ4Step + xb;
    if (xn < n_tok && kb < nb) {
      const uint4* src = reinterpret_cast<const uint4*>(xh + size_t(t0 + xn) * cols + kb * 32 + 16 * xh2);
      xv[0] = __ldcg(src);
      xv[1] = __ldcg(src + 1);
    } else {
      xv[0] = xv[1] = make_uint4(0, 0, 0, 0);
    }
  };
  // Values 8i + 4k + {0, 1} of block b go to part 2i + k, first 8 slots, slot pair b; + {2, 3} to
  // its second 8 slots (the A fragments' k-slot order, above).
  auto store_x = [&](uint8_t* B) {
    uint8_t* base = B + (xn / 8) * 256 + (xn % 8) * 16 + xb * 4;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int i = 2 * xh2 + e;
      const uint4 u = xv[e];
      *reinterpret_cast<uint32_t*>(base + (2 * i) * kWgPart) = u.x;
      *reinterpret_cast<uint32_t*>(base + (2 * i) * kWgPart + 128) = u.y;
      *reinterpret_cast<uint32_t*>(base + (2 * i + 1) * kWgPart) = u.z;
      *reinterpret_cast<uint32_t*>(base + (2 * i + 1) * kWgPart + 128) = u.w;
    }
  };
#pragma unroll
  for (int k = 0; k < kWgStages - 1; ++k) {
    if (s0 + k < s1) load_w(s0 + k);  // the weights depend on no kernel before
    cp_async_commit();
  }
  pdl_wait();
  if (s0 < s1) load_x(s0);
  float acc[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
  for (int s = s0; s < s1; ++s) {
    // Three activation buffers: the one written here was last read by step s - 3, whose tensor
    // core work every warpgroup waited for (wait_group 1 in step s - 2) before the barrier of s - 1.
    uint8_t* B = bbuf + ((s - s0) % 3) * kWgBStage;
    store_x(B);
    if (s + 1 < s1) load_x(s + 1);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the stores, to the tensor cores
    cp_async_wait<kWgStages - 2>();  // this step's weights have landed (this thread's copies)
    __syncthreads();                 // everyone's activations; the ring stage refilled next is read
    if (s + kWgStages - 1 < s1) load_w(s + kWgStages - 1);
    cp_async_commit();
    const int st = (s - s0) % kWgStages;
    const bool kin = s * kQ4Step + tq < nb;
    uint32_t w[2][4];  // words with bytes 1 and 2 swapped
    __half2 d2[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4 q = *reinterpret_cast<const uint4*>(wring + st * kWgWStage + (h * kWgThreads + tid) * 16);
      w[h][0] = __byte_perm(q.x, 0, 0x3120);
      w[h][1] = __byte_perm(q.y, 0, 0x3120);
      w[h][2] = __byte_perm(q.z, 0, 0x3120);
      w[h][3] = __byte_perm(q.w, 0, 0x3120);
      const __half2 sp = *reinterpret_cast<const __half2*>(sring + st * kWgSStage + (h * kWgThreads + tid) * 4);
      const __half d = ((ri[h] + min(s * kQ4Step + tq, nb - 1)) & 1) ? __high2half(sp) : __low2half(sp);
      d2[h] = kin ? __half2half2(d) : __float2half2_rn(0.0f);  // a block past the last counts 0
    }
    const uint32_t bs = unsigned(__cvta_generic_to_shared(B));
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      uint32_t a[2][4];  // [part's half k][fragment]
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int wi = 2 * (p % 2) + k, sh = p < 2 ? 0 : 4;
        const uint32_t lo = w[0][wi] >> sh, hi = w[1][wi] >> sh;
        a[k][0] = q4_pair(lo, d2[0]);
        a[k][1] = q4_pair(hi, d2[1]);
        a[k][2] = q4_pair(lo >> 8, d2[0]);
        a[k][3] = q4_pair(hi >> 8, d2[1]);
      }
      wg_fence();
      wgmma_64x64x16(acc, a[0], wg_desc(bs + (2 * p) * kWgPart));
      wgmma_64x64x16(acc, a[1], wg_desc(bs + (2 * p + 1) * kWgPart));
      wg_commit();
      wg_wait<1>();  // the part before has finished with its fragments
    }
  }
  wg_wait<0>();
#pragma unroll
  for (int i = 0; i < 32; ++i) wg_hold(acc[i]);
  cp_async_wait<0>();
  // acc[i]: row r0 (+ 8 for i & 2), token t0 + 8 (i / 4) + 2 tq + (i & 1).
  if (ks == 1) {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int t = t0 + 8 * (i / 4) + 2 * tq + (i & 1), r = r0 + ((i & 2) ? 8 : 0);
      if (t < nt && r < rows) y[size_t(t) * ldy + r] = acc[i];
    }
    return;
  }
  // The cluster's reduction: sums [token][row], rows kWgRedStride apart so that a warp's stores
  // (8 rows x 4 tokens) hit 32 banks.
  float* red = reinterpret_cast<float*>(wgsm);
  __syncthreads();  // every warpgroup is done with the shared memory the sums overwrite
#pragma unroll
  for (int i = 0; i < 32; ++i)
    red[(8 * (i / 4) + 2 * tq + (i & 1)) * kWgRedStride + rloc + ((i & 2) ? 8 : 0)] = acc[i];
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  cluster.sync();
  const int rank = int(cluster.block_rank()), n4 = n_tok * (kQ4RowsABlock / 4);
  for (int e = rank * n4 / ks + tid; e < (rank + 1) * n4 / ks; e += kWgThreads) {
    const int t = e / (kQ4RowsABlock / 4), r = 4 * (e % (kQ4RowsABlock / 4));
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int k = 0; k < ks; ++k) {
      const float4 v = *reinterpret_cast<const float4*>(cluster.map_shared_rank(red, k) + t * kWgRedStride + r);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    const int rg = blockIdx.x * kQ4RowsABlock + r;
    float* yo = y + size_t(t0 + t) * ldy + rg;
    if (rg < rows) yo[0] = sum.x;
    if (rg + 1 < rows) yo[1] = sum.y;
    if (rg + 2 < rows) yo[2] = sum.z;
    if (rg + 3 < rows) yo[3] = sum.w;
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
#else
  __trap();  // launched only where the sm_90a code is present (wgmma_on())
#endif
}
// The Q4_0 GEMM's splits of k for nt tokens: as many as fill the GPU once (a block a
// multiprocessor), a step each at least, the partial sums within part_bytes; for the wgmma kernel,
// whose splits add their sums in a cluster, at most a portable cluster's 8 blocks.
constexpr int kWgMaxCluster = 8;
static int q4_gemm_splits(const DeviceWeight& w, int nt, size_t part_bytes) {
  static const int n_sm = sm_count();
  const int n_steps = (w.cols / 32 + kQ4Step - 1) / kQ4Step;
  const int row_blocks = (w.rows + kQ4RowsABlock - 1) / kQ4RowsABlock, tok_groups = (nt + kGemmToks - 1) / kGemmToks;
  int ks = std::clamp(n_sm / (row_blocks * tok_groups), 1, std::min(16, n_steps));
  if (wgmma_on()) return std::min(ks, kWgMaxCluster);  // summed in a cluster, not in part
  while (ks > 1 && size_t(ks) * size_t(nt) * size_t(w.rows) * sizeof(float) > part_bytes) --ks;
  return ks;
}

// y = the GEMM, or with ks > 1 and !sum only its partial sums in `part` (for the next op to add;
// the wgmma kernel never leaves partial sums: q4_gemm_partials).
static void launch_q4_gemm(const DeviceWeight& w, const __half* xh, int nt, float* y, int64_t ldy, float* part,
                           size_t part_bytes, cudaStream_t st, bool sum = true) {
  constexpr int smem = kQ4Stages * kQ4StageBytes;
  static const bool sized = [] {
    check(cudaFuncSetAttribute(gemm_q4_f16_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "Q4_0 GEMM");
    if (wgmma_on())
      check(cudaFuncSetAttribute(gemm_q4_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmem),
            "Q4_0 GEMM");
    return true;
  }();
  (void)sized;
  const int ks = q4_gemm_splits(w, nt, part_bytes);
  const int row_blocks = (w.rows + kQ4RowsABlock - 1) / kQ4RowsABlock, tok_groups = (nt + kGemmToks - 1) / kGemmToks;
  const dim3 grid{unsigned(row_blocks), unsigned(ks), unsigned(tok_groups)};
  if (wgmma_on()) {
    launch_pdl_cluster(gemm_q4_wgmma_kernel, grid, dim3(kWgThreads), size_t(kWgSmem), st, dim3(1, unsigned(ks), 1),
                       w.data, reinterpret_cast<const __half*>(w.scales), w.rows, w.cols, xh, nt, ks, y, ldy);
    check_launch("Q4_0 GEMM");
    return;
  }
  launch_pdl(gemm_q4_f16_kernel, grid, dim3(32 * kQ4Warps), size_t(smem), st, w.data,
             reinterpret_cast<const __half*>(w.scales), w.rows, w.cols, xh, nt, ks, y, ldy, part);
  check_launch("Q4_0 GEMM");
  if (ks > 1 && sum) sum_parts(part, ks, nt, w.rows, y, ldy, st);
}

// Whether a Q4_0 GEMM in ks splits leaves partial sums for a later op to add.
static bool q4_gemm_partials(int ks) { return ks > 1 && !wgmma_on(); }

}  // namespace pensieve::cuda
