// The int8 GEMVs of the CUDA backend (included by cuda_backend.cu, after its float GEMVs): packed
// Q4_0 / Q8_0 (and their exact float32 path), the activations' int8 rounding, the RoPE + KV store a
// one-token qkv GEMV does in its store, and the repacked Q6_K, Q4_K and Q5_K copies with their
// block policies for gemv_i8_smem_kernel.
#pragma once

namespace pensieve::cuda {

// ---------------------------------------------------------------------------------------------
// Packed Q4_0 / Q8_0 GEMV. A warp takes R rows; lane l takes blocks l, l + 32, ..., kPackUnroll of
// them at a time, issuing every weight load (16 bytes of quants a block for Q4_0, 32 for Q8_0, plus
// the scale) before using the first, so that many loads are in flight per warp. With int8
// activations (XQ) the dot product of a block is 8 dp4a; otherwise the block is dequantized to
// float32 and multiplied by x (the exact path). Each token's sum is formed in the same order
// whatever nt is.

// Warps (rows) a block of the int8 GEMVs: 8, with the one-token instantiations for Q4_0 and Q8_0
// too. On the H100 against 4 warps (and the 8-token Q4_0 kernel, the faster one at 4): a decode
// token's graph 1,436-1,442 -> 1,404-1,409 us (Q4_0), 1,978 -> 1,956 (Q8_0), 1,496 -> 1,473-1,478
// (Q4_K_M); a step of 4 tokens 3,326 -> 2,684 us, of 8 tokens 5,413 -> 4,520. On an H200 Q4_0
// 1,327 -> 1,278-1,284 us; 2 warps a block 1,603-1,609.
constexpr int kPackWarps = 8, kPackUnroll = 4;

template <GgmlType T>
struct Pack;
template <>
struct Pack<GgmlType::Q4_0> {
  static constexpr int kQBytes = 16, kWords = 1;
};
template <>
struct Pack<GgmlType::Q8_0> {
  static constexpr int kQBytes = 32, kWords = 2;
};

// x rounded to int8 per 32-value block: xq[t * cols + c], and per block {d, sum(q)} (the sum exact).
__global__ void quantize_x_kernel(const float* x, int64_t ldx, int cols, int nt,
                                  int8_t* __restrict__ xq, float2* __restrict__ xds) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32, nb = cols / 32;
  if (gw >= int64_t(nt) * nb) return;
  const int t = int(gw / nb), b = int(gw % nb);
  warp_round_int8(x[t * ldx + b * 32 + lane], xq + int64_t(t) * cols + b * 32 + lane, xds + int64_t(t) * nb + b);
}

template <GgmlType T, bool XQ, int R>
__global__ void __launch_bounds__(32 * kPackWarps)
    gemv_packed_kernel(const uint8_t* __restrict__ Q, const __half* __restrict__ S, int rows, int cols,
                       const float* __restrict__ x, int64_t ldx, const int8_t* __restrict__ xq,
                       const float2* __restrict__ xds, float* __restrict__ y, int64_t ldy, int nt) {
  using P = Pack<T>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = (blockIdx.x * kPackWarps + warp) * R;
  if (r0 >= rows) return;
  const int nb = cols / 32;
  const uint4* qrow[R];
  const __half* srow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const size_t rr = size_t(min(r0 + r, rows - 1));
    qrow[r] = reinterpret_cast<const uint4*>(Q + rr * size_t(nb) * P::kQBytes);
    srow[r] = S + rr * size_t(nb);
  }
  float acc[R][kGemvTokens];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < kGemvTokens; ++t) acc[r][t] = 0.0f;
  for (int b0 = lane; b0 < nb; b0 += 32 * kPackUnroll) {
    uint4 q[kPackUnroll][R][P::kWords];
    float d[kPackUnroll][R];
    // The first token's int8 activations are loaded with the weights (decode has only that one).
    uint4 x0[kPackUnroll][2];
    float2 x0s[kPackUnroll];
#pragma unroll
    for (int u = 0; u < kPackUnroll; ++u) {
      const int b = b0 + 32 * u;
      if (b < nb) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int k = 0; k < P::kWords; ++k) q[u][r][k] = __ldcs(&qrow[r][size_t(b) * P::kWords + k]);
          d[u][r] = __half2float(srow[r][b]);
        }
        if constexpr (XQ) {
          const uint4* xp = reinterpret_cast<const uint4*>(xq + b * 32);
          x0[u][0] = xp[0];
          x0[u][1] = xp[1];
          x0s[u] = xds[b];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kPackUnroll; ++u) {
      const int b = b0 + 32 * u;
      if (b >= nb) break;
#pragma unroll
      for (int t = 0; t < kGemvTokens; ++t) {
        if (t >= nt) break;
        if constexpr (XQ) {
          const uint4* xp = reinterpret_cast<const uint4*>(xq + int64_t(t) * cols + b * 32);
          const uint4 xa = t == 0 ? x0[u][0] : xp[0], xb = t == 0 ? x0[u][1] : xp[1];
          const float2 ds = t == 0 ? x0s[u] : xds[int64_t(t) * nb + b];
          const int xw[8] = {int(xa.x), int(xa.y), int(xa.z), int(xa.w), int(xb.x), int(xb.y), int(xb.z), int(xb.w)};
#pragma unroll
          for (int r = 0; r < R; ++r) {
            int dot = 0;
            if constexpr (T == GgmlType::Q4_0) {
              const uint32_t w[4] = {q[u][r][0].x, q[u][r][0].y, q[u][r][0].z, q[u][r][0].w};
#pragma unroll
              for (int i = 0; i < 4; ++i) {
                dot = __dp4a(int(w[i] & 0x0F0F0F0Fu), xw[i], dot);
                dot = __dp4a(int((w[i] >> 4) & 0x0F0F0F0Fu), xw[4 + i], dot);
              }
              acc[r][t] = fmaf(d[u][r] * ds.x, float(dot - 8 * int(ds.y)), acc[r][t]);
            } else {
              const uint32_t w[8] = {q[u][r][0].x, q[u][r][0].y, q[u][r][0].z, q[u][r][0].w,
                                     q[u][r][1].x, q[u][r][1].y, q[u][r][1].z, q[u][r][1].w};
#pragma unroll
              for (int i = 0; i < 8; ++i) dot = __dp4a(int(w[i]), xw[i], dot);
              acc[r][t] = fmaf(d[u][r] * ds.x, float(dot), acc[r][t]);
            }
          }
        } else {
          const float4* xp = reinterpret_cast<const float4*>(x + t * ldx + b * 32);
          float xv[32];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const float4 a = xp[i];
            xv[4 * i] = a.x; xv[4 * i + 1] = a.y; xv[4 * i + 2] = a.z; xv[4 * i + 3] = a.w;
          }
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float s = 0.0f;
            if constexpr (T == GgmlType::Q4_0) {
              const uint32_t w[4] = {q[u][r][0].x, q[u][r][0].y, q[u][r][0].z, q[u][r][0].w};
#pragma unroll
              for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                  s = fmaf(float(int((w[i] >> (8 * k)) & 0xF) - 8), xv[4 * i + k], s);
                  s = fmaf(float(int((w[i] >> (8 * k + 4)) & 0xF) - 8), xv[16 + 4 * i + k], s);
                }
            } else {
              const uint32_t w[8] = {q[u][r][0].x, q[u][r][0].y, q[u][r][0].z, q[u][r][0].w,
                                     q[u][r][1].x, q[u][r][1].y, q[u][r][1].z, q[u][r][1].w};
#pragma unroll
              for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int k = 0; k < 4; ++k) s = fmaf(float(int8_t(w[i] >> (8 * k))), xv[4 * i + k], s);
            }
            acc[r][t] = fmaf(d[u][r], s, acc[r][t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r0 + r >= rows) break;
    store_row_sums(acc[r], nt, y, ldy, r0 + r, lane);
  }
}

// Rows per warp of the packed GEMV: 1, 2 or 4 (PENSIEVE_CUDA_PACK_ROWS; default 1).
static int pack_rows() {
  static const int r = env_pick("PENSIEVE_CUDA_PACK_ROWS", 1, 1, 4, 2);
  return r;
}

template <GgmlType T, bool XQ>
static void launch_packed(const DeviceWeight& w, const float* x, int64_t ldx, const int8_t* xq,
                          const float2* xds, float* y, int64_t ldy, int nt, cudaStream_t stream) {
  const int R = pack_rows();
  const unsigned grid = unsigned((w.rows + kPackWarps * R - 1) / (kPackWarps * R));
  const dim3 block(32 * kPackWarps);
  const __half* S = reinterpret_cast<const __half*>(w.scales);
  if (R == 1)
    gemv_packed_kernel<T, XQ, 1><<<grid, block, 0, stream>>>(w.data, S, w.rows, w.cols, x, ldx, xq, xds, y, ldy, nt);
  else if (R == 4)
    gemv_packed_kernel<T, XQ, 4><<<grid, block, 0, stream>>>(w.data, S, w.rows, w.cols, x, ldx, xq, xds, y, ldy, nt);
  else
    gemv_packed_kernel<T, XQ, 2><<<grid, block, 0, stream>>>(w.data, S, w.rows, w.cols, x, ldx, xq, xds, y, ldy, nt);
}

// The int8 GEMVs' staging of a launch's activations in shared memory: nt tokens of `cols` int8
// values at sx, then their per-32-value {d, sum(q)}, whose start it returns; the block waits for it.
__device__ __forceinline__ const float2* stage_x_i8(uint4* sx, const int8_t* xq, const float2* xds, int nt,
                                                    int cols) {
  const int n16 = nt * cols / 16, nds = nt * (cols / 32);
  float2* sds = reinterpret_cast<float2*>(sx + n16);
  for (int i = threadIdx.x; i < n16; i += blockDim.x) sx[i] = reinterpret_cast<const uint4*>(xq)[i];
  for (int i = threadIdx.x; i < nds; i += blockDim.x) sds[i] = xds[i];
  __syncthreads();
  return sds;
}
// The KV cache on the GPU (its own layout; the CPU's rows are position-major): a block holds, for
// each layer, its keys and then its values (block_size * row_bytes bytes further on), each as
// n_kv_heads runs of block_size head rows (hdb bytes: head_dim elements), so that the keys of one
// head at a block's positions are contiguous for the attention kernels. kv_key: the key row of kv
// head h at offset `off` of `block`.
__device__ __forceinline__ uint8_t* kv_key(const SlotMeta& s, int block, int layer, int off, int h, int hdb) {
  return static_cast<uint8_t*>(s.kv_base) + size_t(block) * s.block_bytes +
         size_t(layer * 2) * size_t(s.block_size) * s.row_bytes + (size_t(h) * s.block_size + off) * size_t(hdb);
}
// A Q8 cache (s.q8): the rows are head_dim int8 values (kv_key with hdb = head_dim), and a layer's
// keys (or values) end with the float scales of their head rows, in the same order. kv_q8_scale:
// the scale of the key row kv_key(s, block, layer, off, h, head_dim); its value's is
// block_size * row_bytes further on, as the row's.
__device__ __forceinline__ float* kv_q8_scale(const SlotMeta& s, int block, int layer, int off, int h, int head_dim,
                                              int n_kv_heads) {
  return reinterpret_cast<float*>(static_cast<uint8_t*>(s.kv_base) + size_t(block) * s.block_bytes +
                                  size_t(layer * 2) * size_t(s.block_size) * s.row_bytes +
                                  size_t(s.block_size) * size_t(n_kv_heads) * size_t(head_dim) +
                                  (size_t(h) * s.block_size + off) * sizeof(float));
}
// Element i (of the kv_dim) of the key (which 0) or value (1) of slot s's own position (f16 or
// f32 caches).
__device__ __forceinline__ void kv_put(const SlotMeta& s, int layer, int which, int i, int head_dim, float v) {
  uint8_t* row = kv_key(s, s.block, layer, s.off, i / head_dim, head_dim * (s.f32 ? 4 : 2)) +
                 (which ? size_t(s.block_size) * s.row_bytes : 0);
  if (s.f32) reinterpret_cast<float*>(row)[i % head_dim] = v;
  else reinterpret_cast<__half*>(row)[i % head_dim] = __float2half_rn(v);
}

// A warp rounds head row x (hd floats) to a Q8 cache row: q[d] = round(x[d] * 127 / max|x|) and
// *d = max|x| / 127, as the CPU's kv_store_q8.
__device__ __forceinline__ void warp_round_q8(const float* x, int hd, int8_t* q, float* d) {
  const int lane = threadIdx.x % 32;
  float amax = 0.0f;
  for (int i = lane; i < hd; i += 32) amax = fmaxf(amax, fabsf(x[i]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int i = lane; i < hd; i += 32) q[i] = int8_t(__float2int_rn(x[i] * id));
  if (lane == 0) *d = amax / 127.0f;
}

// The keys and values of kv heads [h0, h1) of slot s's own position (k and v: the token's kv_dim
// floats each) into its cache rows; every thread of the block calls it. Q8 rows get a warp each
// (warp_round_q8).
__device__ __forceinline__ void kv_put_heads(const SlotMeta& s, int layer, const float* k, const float* v, int h0, int h1,
                                             int head_dim, int n_kv_heads) {
  if (!s.q8) {
    for (int i = h0 * head_dim + int(threadIdx.x); i < h1 * head_dim; i += blockDim.x) {
      kv_put(s, layer, 0, i, head_dim, k[i]);
      kv_put(s, layer, 1, i, head_dim, v[i]);
    }
    return;
  }
  const int warp = threadIdx.x / 32, nw = blockDim.x / 32;
  const size_t other = size_t(s.block_size) * s.row_bytes;
  for (int item = warp; item < 2 * (h1 - h0); item += nw) {
    const int h = h0 + item / 2, which = item % 2;
    int8_t* row = reinterpret_cast<int8_t*>(kv_key(s, s.block, layer, s.off, h, head_dim) + (which ? other : 0));
    uint8_t* d = reinterpret_cast<uint8_t*>(kv_q8_scale(s, s.block, layer, s.off, h, head_dim, n_kv_heads));
    warp_round_q8((which ? v : k) + size_t(h) * head_dim, head_dim, row, reinterpret_cast<float*>(d + (which ? other : 0)));
  }
}

// RoPE and the KV store of a one-token qkv GEMV done in its store (the ROPE instantiations of
// gemv_i8_smem_kernel and gemv_k_i8_kernel):
// the block's kPackWarps warps take rotation pairs of a q or k head (RotateHalf: rows k and k + n_rot / 2
// of the head, in the order of the pairs; interleaved: rows 2 k and 2 k + 1), so each pair is
// rotated where it is summed, with rope_store_kernel's arithmetic (the same bits), and the token's
// k and v rows go to its KV rows there. One launch a layer less in a decode step.
struct RopeArgs {
  bool on = false;
  const SlotMeta* slot = nullptr;
  int layer = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, n_rot = 0, style_half = 0;
  const float* inv_short = nullptr;
  const float* inv_long = nullptr;
  float mscale = 1.0f;
  // The q, k and v biases added before the rotation (null: none), as add_bias_kernel adds them.
  const float* bias[3] = {nullptr, nullptr, nullptr};
};
__device__ __forceinline__ void rope_cos_sin(int pos, float inv, float mscale, float* c, float* sn);
// The weight row whose sum warp-row v of the fused kernel computes.
__device__ __forceinline__ int rope_row(const RopeArgs& a, int v) {
  const int hd = a.head_dim;
  if (v >= (a.n_heads + a.n_kv_heads) * hd) return v;  // v rows
  const int h = v / hd, d = v % hd;
  if (d >= a.n_rot || !a.style_half) return v;
  return h * hd + (d % 2 ? d / 2 + a.n_rot / 2 : d / 2);
}

// What the store of a one-token qkv GEMV that does the RoPE and KV store needs, fetched by
// rope_prepare before its wait for x (none of it depends on the kernels before): the token's slot
// and each warp-row's cos and sin, in shared memory, so that the store starts no memory round trip
// and the loop holds no registers for them.
struct RopeShared {
  SlotMeta slot;
  float2 cs[kPackWarps];
  float bias[kPackWarps];  // each warp-row's bias (0: none)
};
__device__ __forceinline__ RopeShared& rope_shared() {
  __shared__ RopeShared s;
  return s;
}
// Every thread of the block calls it; v: the warp's row.
__device__ __forceinline__ void rope_prepare(const RopeArgs& a, int v) {
  static_assert(sizeof(SlotMeta) % 4 == 0, "copied a word a thread");
  RopeShared& s = rope_shared();
  if (threadIdx.x < sizeof(SlotMeta) / 4)
    reinterpret_cast<int*>(&s.slot)[threadIdx.x] = reinterpret_cast<const int*>(a.slot)[threadIdx.x];
  const int hd = a.head_dim, d = v % hd;
  if (threadIdx.x % 32 == 0) {  // the bias of the warp's output row (a weight: before the wait)
    const int r = rope_row(a, v), q_dim = a.n_heads * hd, kv_dim = a.n_kv_heads * hd;
    // (selects, not an index into the argument: that would copy the arguments to local memory)
    const float* b = r < q_dim ? a.bias[0] : r < q_dim + kv_dim ? a.bias[1] : a.bias[2];
    const int at = r < q_dim ? 0 : r < q_dim + kv_dim ? q_dim : q_dim + kv_dim;
    s.bias[threadIdx.x / 32] = b ? b[r - at] : 0.0f;
  }
  if (threadIdx.x % 32 == 0 && v < (a.n_heads + a.n_kv_heads) * hd && d < a.n_rot) {
    float c, sn;  // the pair's frequency: d / 2
    rope_cos_sin(a.slot->pos, (a.slot->long_rope ? a.inv_long : a.inv_short)[d / 2], a.mscale, &c, &sn);
    s.cs[threadIdx.x / 32] = make_float2(c, sn);
  }
}

// The store of a one-token qkv GEMV that does the RoPE and KV store (the int8 GEMVs' ROPE
// instantiations, which called rope_prepare): warp-row v of the block holds the sum acc0 of weight
// row r = rope_row(v). Every thread of the block calls it.
__device__ __forceinline__ void rope_store_rows(float acc0, int v, int r, const RopeArgs& rope, float* __restrict__ y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __shared__ float sum[kPackWarps];
  const RopeShared& rs = rope_shared();
  const float sv = warp_sum(acc0) + rs.bias[warp];  // (+ 0 without a bias: the same bits)
  if (lane == 0) sum[warp] = sv;
  __syncthreads();
  if (lane != 0) return;
  const int hd = rope.head_dim, q_dim = rope.n_heads * hd, kv_dim = rope.n_kv_heads * hd;
  const int d = v % hd;
  float out = sv;
  const SlotMeta& sm = rs.slot;
  if (v < q_dim + kv_dim && d < rope.n_rot) {
    const float c = rs.cs[warp].x, sn = rs.cs[warp].y;
    const float a = sum[warp & ~1], b = sum[warp | 1];  // the pair's first and second element
    out = d % 2 == 0 ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn)) : __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn));
  }
  y[r] = out;
  if (r >= q_dim && !sm.q8) {  // a Q8 cache's rows: stored by the decode attention (attention_split_kernel)
    const bool key = r < q_dim + kv_dim;
    kv_put(sm, rope.layer, key ? 0 : 1, key ? r - q_dim : r - q_dim - kv_dim, hd, out);
  }
}

// The add + rmsnorm between a one-token o (or down) GEMV and the GEMV that reads the norm, done
// without a kernel of its own. The o GEMV's blocks take 32 rows each (a whole int8 group of the
// norm's output) and, in their store (NormEpi), add their sums into the residual x, round x w (w:
// the norm's gain) to int8 per 32 values as the norm kernel rounds x w r (the factor r does not
// change the rounding), and leave each group's sum of x^2; the next GEMV (NormIn) adds those up
// into r and multiplies its sums by it. The o GEMV's own output is not written (only the add read
// it). Not bit-identical to the norm kernel (the sum of squares is added in another order, and r
// scales sums rather than activations).
//
// The same store serves a one-token gate + up GEMV followed by silu_mul and an int8 GEMV (ff set,
// x null): its blocks take gate rows 32 b .. 32 b + 31 and the up rows ff further on, and their
// store rounds silu(g) u to int8 as silu_quant_kernel does (the same bits: the sums are added in
// the same order); g is not written (only the down GEMV read it).
struct NormEpi {
  float* x = nullptr;        // the residual, rows floats; null: no add + rmsnorm
  const float* w = nullptr;  // the norm's gain
  int8_t* q = nullptr;       // the next GEMV's int8 activations
  float2* ds = nullptr;      // and their scales, a 32-value group each
  float* ss = nullptr;       // each group's sum of x^2
  int ff = 0;                // > 0: the silu_mul store instead (rows = 2 ff)
  int prefetch = 0;          // silu_mul store: its later rounds' rows asked into L2 before the wait
  __host__ __device__ bool on() const { return x || ff > 0; }
};
struct NormIn {
  const float* ss = nullptr;  // NormEpi::ss; null: none
  int groups = 0, dim = 0;
  float eps = 0.0f;
};

// The int8 GEMV with its activations staged in shared memory (nt * (cols + cols / 32 * 8) bytes):
// one read of x per block instead of one per warp, and no registers held for x across the weight
// loads, so more warps fit on an SM. One row a warp, lane l taking the row's 32-value blocks l,
// l + 32, ..., U of them loaded together. B, the weights' layout, holds a lane's U blocks:
// B::Src (the matrix, a kernel argument), B(src, row, nb) (the row), load(u, b) (block b into slot
// u), dot(u, xw, ds, acc) (acc plus the block's product with the int8 x block xw of scale ds.x and
// sum ds.y). With PackBlocks, the same sums, in the same order, as gemv_packed_kernel<T, true, 1>.
// ONE: a launch of one token (the decode step's), whose kernel holds one accumulator, not
// kGemvTokens: fewer registers, so more blocks an SM.
// R: rows a warp (launches of several tokens, gemv_i8_rows_per_warp): each activation block read
// from shared memory serves the R consecutive rows, each row's sums in the same order.
// NORM, bits (one token each): kNormOut, the add + rmsnorm store of NormEpi (4 rows a warp: 32 a
// block); kNormIn, the sums times NormIn's factor; kSiluOut, the silu_mul store of NormEpi (R rows
// a warp, the block's 64 rows in 64 / (8 R) rounds).
// NT (not ONE): the most tokens of a launch, accumulators a row (launches of 2 or 4 tokens hold
// fewer registers than kGemvTokens' worth).
constexpr int kNormOut = 1, kNormIn = 2, kSiluOut = 4;
template <class B, bool ROPE = false, bool ONE = ROPE, int R = 1, int NORM = 0, int NT = kGemvTokens>
__global__ void __launch_bounds__(32 * kPackWarps)
    gemv_i8_smem_kernel(typename B::Src src, int rows, int cols, const int8_t* xq, const float2* xds,
                        float* __restrict__ y, int64_t ldy, int nt, RopeArgs rope, NormEpi epi, NormIn nin) {
  constexpr bool OUT = NORM & kNormOut, IN = NORM & kNormIn, SILU = NORM & kSiluOut;
  static_assert(!ROPE || R == 1, "the RoPE store takes one row a warp");
  static_assert(!OUT || (ONE && !ROPE && !IN && !SILU && R * kPackWarps == 32), "NormEpi: a block's rows are one group");
  static_assert(!IN || (ONE && (R == 1 || SILU)), "NormIn: one token");
  static_assert(!SILU || (ONE && !ROPE && 64 % (R * kPackWarps) == 0), "silu store: a block's rows are one group");
  constexpr int kRounds = SILU ? 64 / (R * kPackWarps) : 1;
  pdl_trigger();
  extern __shared__ uint4 sx[];
  const int nb = cols / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int v = (blockIdx.x * kPackWarps + warp) * R;
  const int r0 = ROPE ? rope_row(rope, v) : v;
  // SILU: the weight row of warp-row r of round k (k R 8 + warp R + r of the block's 64: gate rows,
  // then up rows).
  auto silu_row = [&](int k, int r) {
    const int i = (k * kPackWarps + warp) * R + r;
    return int(blockIdx.x) * 32 + (i < 32 ? i : epi.ff + i - 32);
  };
  B w[R];  // a warp past the last row loads it and writes nothing
#pragma unroll
  for (int r = 0; r < R; ++r) w[r] = B(src, size_t(SILU ? silu_row(0, r) : min(r0 + r, rows - 1)), nb);
  auto load = [&](int b0) {
#pragma unroll
    for (int u = 0; u < B::kU; ++u) {
      const int b = b0 + 32 * u;
      if (b < nb)
#pragma unroll
        for (int r = 0; r < R; ++r) w[r].load(u, b);
    }
  };
  // The first weights are in flight before the wait for x's producer and x's staging.
  load(lane);
  if constexpr (ROPE) rope_prepare(rope, v);
  if constexpr (SILU && requires { B::prefetch_row(src, size_t(0), nb, lane); }) {
    if (epi.prefetch)
      for (int k = 1; k < kRounds; ++k)
#pragma unroll
        for (int r = 0; r < R; ++r) B::prefetch_row(src, size_t(silu_row(k, r)), nb, lane);
  }
  const int grow = int(blockIdx.x) * 32 + lane;  // OUT, SILU: warp 0's lane's value of the group
  float gain = 0.0f, x_old = 0.0f;
  if constexpr (OUT)
    if (warp == 0) gain = epi.w[grow];  // a weight: before the wait
  pdl_wait();
  if constexpr (OUT)
    if (warp == 0) x_old = epi.x[grow];  // in flight during the dot products
  __shared__ float norm_r;
  if constexpr (IN) {
    if (warp == 0) {
      float t = 0.0f;
      for (int i = lane; i < nin.groups; i += 32) t += nin.ss[i];
      t = warp_sum(t);
      if (lane == 0) norm_r = float(1.0 / sqrt(double(t) / nin.dim + double(nin.eps)));
    }
  }
  const float2* sds = stage_x_i8(sx, xq, xds, nt, cols);  // its barrier publishes norm_r
  constexpr int kT = ONE ? 1 : NT;
  if (ONE) nt = 1;
  float acc[R][kT];
  __shared__ float sums[SILU ? 64 : 32];  // OUT, SILU: the block's row sums
#pragma unroll 1
  for (int k = 0; k < kRounds; ++k) {
    if (k > 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) w[r] = B(src, size_t(silu_row(k, r)), nb);
      load(lane);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < kT; ++t) acc[r][t] = 0.0f;
    for (int b0 = lane; b0 < nb; b0 += 32 * B::kU) {
      if (b0 != lane) load(b0);
#pragma unroll
      for (int u = 0; u < B::kU; ++u) {
        const int b = b0 + 32 * u;
        if (b >= nb) break;
#pragma unroll
        for (int t = 0; t < kT; ++t) {
          if (t >= nt) break;
          const uint4* xp = sx + (t * cols + b * 32) / 16;
          const uint4 xa = xp[0], xb = xp[1];
          const int xw[8] = {int(xa.x), int(xa.y), int(xa.z), int(xa.w), int(xb.x), int(xb.y), int(xb.z), int(xb.w)};
          const float2 ds = sds[t * nb + b];
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][t] = w[r].dot(u, xw, ds, acc[r][t]);
        }
      }
    }
    if constexpr (IN)
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r][0] *= norm_r;
    if constexpr (SILU)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float sv = warp_sum(acc[r][0]);
        if (lane == 0) sums[(k * kPackWarps + warp) * R + r] = sv;
      }
  }
  if constexpr (SILU) {  // silu_quant_kernel's arithmetic on the block's 32 gate and up sums
    __syncthreads();
    if (warp == 0) {
      const float a = sums[lane], u = sums[32 + lane];
      warp_round_int8(a / (1.0f + expf(-a)) * u, epi.q + grow, epi.ds + blockIdx.x);
    }
  } else if constexpr (ROPE) {  // one token; v and rows a multiple of kPackWarps (checked on the host)
    rope_store_rows(acc[0][0], v, r0, rope, y);
  } else if constexpr (OUT) {  // rows a multiple of 32 (checked on the host)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sv = warp_sum(acc[r][0]);
      if (lane == 0) sums[warp * R + r] = sv;
    }
    __syncthreads();
    if (warp == 0) {
      const float xn = x_old + sums[lane];  // the add of the norm kernel
      epi.x[grow] = xn;
      warp_round_int8(xn * gain, epi.q + grow, epi.ds + blockIdx.x);
      const float sq = warp_sum(xn * xn);
      if (lane == 0) epi.ss[blockIdx.x] = sq;
    }
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r0 + r < rows) store_row_sums(acc[r], nt, y, ldy, r0 + r, lane);
  }
}

// Lane `lane` of a warp asks L2 for its share of the 128-byte lines of bytes [p, p + n).
__device__ __forceinline__ void prefetch_span(const void* p, int n, int lane) {
  for (int o = lane * 128; o < n; o += 32 * 128) prefetch_l2_line(static_cast<const uint8_t*>(p) + o);
}

// gemv_i8_smem_kernel's blocks of Q4_0 or Q8_0 in the Pack<T> layout (quants at q, fp16 scales at s).
struct PackSrc {
  const uint8_t* q;
  const __half* s;
};
template <GgmlType T, int U>
struct PackBlocks {
  using P = Pack<T>;
  using Src = PackSrc;
  static constexpr int kU = U;
  const uint4* qrow;
  const __half* srow;
  uint4 q[U][P::kWords];
  float d[U];
  PackBlocks() = default;
  __device__ __forceinline__ PackBlocks(const Src& src, size_t row, int nb)
      : qrow(reinterpret_cast<const uint4*>(src.q + row * size_t(nb) * P::kQBytes)), srow(src.s + row * size_t(nb)) {}
  // Lane `lane` of a warp asks L2 for its share of a row's lines.
  __device__ __forceinline__ static void prefetch_row(const Src& src, size_t row, int nb, int lane) {
    prefetch_span(src.q + row * size_t(nb) * P::kQBytes, nb * P::kQBytes, lane);
    prefetch_span(src.s + row * size_t(nb), nb * 2, lane);
  }
  __device__ __forceinline__ void load(int u, int b) {
#pragma unroll
    for (int k = 0; k < P::kWords; ++k) q[u][k] = __ldcs(&qrow[size_t(b) * P::kWords + k]);
    d[u] = __half2float(srow[b]);
  }
  __device__ __forceinline__ float dot(int u, const int (&xw)[8], float2 ds, float acc) const {
    int dot = 0;
    if constexpr (T == GgmlType::Q4_0) {
      const uint32_t w[4] = {q[u][0].x, q[u][0].y, q[u][0].z, q[u][0].w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        dot = __dp4a(int(w[i] & 0x0F0F0F0Fu), xw[i], dot);
        dot = __dp4a(int((w[i] >> 4) & 0x0F0F0F0Fu), xw[4 + i], dot);
      }
      return fmaf(d[u] * ds.x, float(dot - 8 * int(ds.y)), acc);
    } else {
      const uint32_t w[8] = {q[u][0].x, q[u][0].y, q[u][0].z, q[u][0].w, q[u][1].x, q[u][1].y, q[u][1].z, q[u][1].w};
#pragma unroll
      for (int i = 0; i < 8; ++i) dot = __dp4a(int(w[i]), xw[i], dot);
      return fmaf(d[u] * ds.x, float(dot), acc);
    }
  }
};

// PENSIEVE_CUDA_PACK_SMEM=0: the int8 GEMV reads x from global memory; PENSIEVE_CUDA_PACK_UNROLL:
// blocks a lane loads at once in the shared-memory one (2, 4 or 8; default 4).
static bool pack_smem() {
  static const bool on = env_int("PENSIEVE_CUDA_PACK_SMEM", 1) != 0;
  return on;
}
static int pack_unroll() {
  static const int u = env_pick("PENSIEVE_CUDA_PACK_UNROLL", 4, 2, 8, 4);
  return u;
}
constexpr size_t kSmemXMax = 48 * 1024;

// Whether a launch of nt tokens on `rows` rows can take the RoPE + KV store of `rope`.
static bool rope_fits(const RopeArgs* rope, int nt, int rows) {
  return rope && rope->on && nt == 1 && rows % kPackWarps == 0 && rope->head_dim % kPackWarps == 0;
}

// PENSIEVE_CUDA_GEMV_ONE=0: one-token launches take the kGemvTokens-token int8 GEMV kernels too.
static bool gemv_one_on() {
  static const bool on = env_int("PENSIEVE_CUDA_GEMV_ONE", 1) != 0;
  return on;
}
// The one-token gemv_i8_smem_kernel instantiation for policy B, with or without the RoPE + KV
// store (NORM as the kernel's).
template <class B, int NORM = 0>
static auto one_token_kernel(bool rope) {
  return rope ? gemv_i8_smem_kernel<B, true, true, 1, NORM> : gemv_i8_smem_kernel<B, false, true, 1, NORM>;
}
// The gemv_i8_smem_kernel instantiation for policy B: with the RoPE + KV store, for one token (the
// repacked K-quants: 88-115 registers a thread for 8 tokens, 60-72 for one; on the H100 a Q4_K_M
// decode token's graph took 1,556 against 1,784 us, the Q6_K output GEMV 30.9 against 38.6), or for
// up to kGemvTokens.
template <class B>
static auto i8_kernel(bool rope, int nt) {
  return rope || (nt == 1 && gemv_one_on()) ? one_token_kernel<B>(rope) : gemv_i8_smem_kernel<B, false, false>;
}

// Rows a warp of the int8 GEMVs for launches of 2 to kGemvTokens tokens (PENSIEVE_CUDA_GEMV_RPW:
// 1, 2 or 4; on the H100 a Phi-3-mini Q4_0 step of 8 tokens took 4,465 / 3,900 / 4,430 us).
static int gemv_rows_per_warp() {
  static const int r = env_pick("PENSIEVE_CUDA_GEMV_RPW", 2, 1, 4, 2);
  return r;
}
// Launches gemv_i8_smem_kernel with several rows a warp for a launch of several tokens (false:
// one row a warp serves it).
template <class B>
static bool launch_i8_rows(const typename B::Src& src, const DeviceWeight& w, const int8_t* xq, const float2* xds,
                           float* y, int64_t ldy, int nt, size_t smem, cudaStream_t stream) {
  const int R = gemv_rows_per_warp();
  if (nt < 2 || R == 1) return false;
  const dim3 grid(unsigned((w.rows + kPackWarps * R - 1) / (kPackWarps * R))), block(32 * kPackWarps);
  // Accumulators for 2, 4 or kGemvTokens tokens (PENSIEVE_CUDA_GEMV_NT=0: kGemvTokens always).
  static const bool fit = env_int("PENSIEVE_CUDA_GEMV_NT", 1) != 0;
  const int nt_max = !fit || nt > 4 ? kGemvTokens : nt > 2 ? 4 : 2;
  const auto kernel = R == 4 ? (nt_max == 2   ? gemv_i8_smem_kernel<B, false, false, 4, 0, 2>
                                : nt_max == 4 ? gemv_i8_smem_kernel<B, false, false, 4, 0, 4>
                                              : gemv_i8_smem_kernel<B, false, false, 4>)
                             : (nt_max == 2   ? gemv_i8_smem_kernel<B, false, false, 2, 0, 2>
                                : nt_max == 4 ? gemv_i8_smem_kernel<B, false, false, 2, 0, 4>
                                              : gemv_i8_smem_kernel<B, false, false, 2>);
  launch_pdl(kernel, grid, block, smem, stream, src, w.rows, w.cols, xq, xds, y, ldy, nt, RopeArgs{}, NormEpi{},
             NormIn{});
  return true;
}

// Whether a GEMV of `rows` rows can take the store of e (e.on()).
static bool epi_fits(const NormEpi& e, int rows) {
  return e.x ? rows % 32 == 0 : e.ff % 32 == 0 && rows == 2 * e.ff;
}
// A one-token gemv_i8_smem_kernel on B with the store of epi (on(), epi_fits): the add + rmsnorm's
// (32 rows a block) or the silu_mul's (64), with or without nin's factor (not with the add +
// rmsnorm).
template <class B>
static void launch_epi(const typename B::Src& src, const DeviceWeight& w, const int8_t* xq, const float2* xds,
                       float* y, int64_t ldy, size_t smem, cudaStream_t stream, const NormEpi& epi, const NormIn* nin) {
  const bool ni = nin && nin->ss;
  const dim3 block(32 * kPackWarps);
  if (epi.x) {
    if (ni) throw Error("CUDA GEMV: the add + rmsnorm store with a norm factor");
    launch_pdl(gemv_i8_smem_kernel<B, false, true, 4, kNormOut>, dim3(unsigned(w.rows / 32)), block, smem, stream, src,
               w.rows, w.cols, xq, xds, y, ldy, 1, RopeArgs{}, epi, NormIn{});
    return;
  }
  // 2 rows a warp, in four rounds whose later three are asked into L2 before the wait (NormEpi::
  // prefetch), as measured on the H100 (Phi-3-mini, graph a token; silu_quant_kernel: Q4_0 1,290,
  // Q4_K_M 1,432-1,436, Q8_0 1,754 us): 2 rows without the prefetch 1,240 / 1,400 / 1,706; with it
  // 1,225 / 1,375-1,378 / 1,663; 4 rows (two rounds) 1,302 / 1,455 / 1,675 and with the prefetch
  // 1,235 on Q4_0; 1 row (eight rounds, prefetched) 1,286-1,293 / 1,526-1,530 / 1,860.
  const auto kernel = ni ? gemv_i8_smem_kernel<B, false, true, 2, kSiluOut | kNormIn>
                         : gemv_i8_smem_kernel<B, false, true, 2, kSiluOut>;
  launch_pdl(kernel, dim3(unsigned(epi.ff / 32)), block, smem, stream, src, w.rows, w.cols, xq, xds, y, ldy, 1,
             RopeArgs{}, epi, ni ? *nin : NormIn{});
}

// Whether a one-token int8 GEMV on w can take NormEpi (producer) or NormIn: whether gemv() runs
// it through gemv_i8_smem_kernel (launch_i8_smem or launch_repack_i8).
static bool norm_fits(const DeviceWeight& w, bool producer) {
  const size_t smem = size_t(w.cols) + size_t(w.cols / 32) * sizeof(float2);
  if (smem > kSmemXMax || w.cols % 32 != 0 || (producer && w.rows % 32 != 0)) return false;
  if (w.repack) return w.cols % QK_K == 0;
  return w.scales && (w.type == GgmlType::Q4_0 || w.type == GgmlType::Q8_0) && pack_smem() && pack_rows() == 1 &&
         pack_unroll() == 4;
}

// Blocks a lane loads at once in a one-token int8 GEMV on packed T with nb blocks a row, instead of
// 4 (PENSIEVE_CUDA_GEMV_TUNE=0: always 4), as measured on the H100 (Phi-3-mini, graph a token):
// - Q4_0 rows longer than one round of 4 (4,096 columns): 8, so that the 8192-column down rows
//   wait on memory once, not twice (1,400 -> 1,372 us; 8 on every row: 1,461; Q8_0's down rows
//   with 8: 1,956 -> 1,979; Q4_K_M's Q4_K / Q6_K down rows with twice theirs: -0.3% / +2%);
// - Q8_0 rows of 65-96 blocks (3072 columns): 3, one round with no idle slot (1,958 -> 1,922 us;
//   on Q4_0 rows 1,377 -> 1,395).
static int one_token_unroll(GgmlType t, int nt, bool rope, int nb) {
  static const bool on = env_int("PENSIEVE_CUDA_GEMV_TUNE", 1) != 0;
  if (!on || nt != 1) return 4;
  if (t == GgmlType::Q4_0 && !rope && nb > 32 * 4) return 8;
  if (t == GgmlType::Q8_0 && nb > 32 * 2 && nb <= 32 * 3) return 3;
  return 4;
}

// The add + rmsnorm store on Q4_0 rows the one-token GEMV loads 8 blocks a lane of (the 8192-column
// down rows) also loads 8, one round (PENSIEVE_CUDA_EPI_U8=0: 4, two rounds). On the H100, graph a
// Q4_0 token: 1,233-1,238 us -> 1,242-1,247 alone, but 1,225 -> 1,196-1,200 with the silu store's
// prefetch.
static bool epi_u8() {
  static const bool on = env_int("PENSIEVE_CUDA_EPI_U8", 1) != 0;
  return on;
}

// epi / nin (norm_fits): the store of NormEpi, or the sums times NormIn's factor.
template <GgmlType T>
static bool launch_i8_smem(const DeviceWeight& w, const int8_t* xq, const float2* xds, float* y, int64_t ldy,
                           int nt, cudaStream_t stream, const RopeArgs* rope = nullptr, const NormEpi* epi = nullptr,
                           const NormIn* nin = nullptr) {
  const size_t smem = size_t(nt) * size_t(w.cols) + size_t(nt) * size_t(w.cols / 32) * sizeof(float2);
  if (!pack_smem() || pack_rows() != 1 || smem > kSmemXMax) return false;
  const bool ro = rope && rope->on, ep = epi && epi->on(), ni = nin && nin->ss;
  if (ro && !rope_fits(rope, nt, w.rows)) return false;
  const int U = pack_unroll();
  if ((ep || ni) && (nt != 1 || U != 4 || (ep && (ro || !epi_fits(*epi, w.rows))))) return false;
  const PackSrc src{w.data, reinterpret_cast<const __half*>(w.scales)};
  if (!ro && U == 4 && launch_i8_rows<PackBlocks<T, 4>>(src, w, xq, xds, y, ldy, nt, smem, stream)) return true;
  if (ep) {
    if constexpr (T == GgmlType::Q4_0)  // (8 blocks a lane: Q4_0 only, one_token_unroll)
      if (epi->x && epi_u8() && one_token_unroll(T, 1, false, w.cols / 32) == 8) {
        launch_epi<PackBlocks<T, 8>>(src, w, xq, xds, y, ldy, smem, stream, *epi, nin);
        return true;
      }
    launch_epi<PackBlocks<T, 4>>(src, w, xq, xds, y, ldy, smem, stream, *epi, nin);
    return true;
  }
  const int u1 = U == 4 ? one_token_unroll(T, nt, ro, w.cols / 32) : U;
  // With U = 4 (always with ni), u1 is 8 only for one token without the RoPE store, 3 only for one
  // token; otherwise u1 is U.
  const auto kernel = ni && u1 == 8       ? gemv_i8_smem_kernel<PackBlocks<T, 8>, false, true, 1, kNormIn>
                      : ni && u1 == 3     ? one_token_kernel<PackBlocks<T, 3>, kNormIn>(ro)
                      : ni                ? one_token_kernel<PackBlocks<T, 4>, kNormIn>(ro)
                      : u1 == 8 && U == 4 ? gemv_i8_smem_kernel<PackBlocks<T, 8>, false, true>
                      : u1 == 3           ? one_token_kernel<PackBlocks<T, 3>>(ro)
                      : ro || U == 4      ? i8_kernel<PackBlocks<T, 4>>(ro, nt)
                      : U == 2            ? gemv_i8_smem_kernel<PackBlocks<T, 2>>
                                          : gemv_i8_smem_kernel<PackBlocks<T, 8>>;
  launch_pdl(kernel, dim3(unsigned((w.rows + kPackWarps - 1) / kPackWarps)), dim3(32 * kPackWarps), smem, stream, src,
             w.rows, w.cols, xq, xds, y, ldy, nt, ro ? *rope : RopeArgs{}, NormEpi{}, ni ? *nin : NormIn{});
  return true;
}

// Q4_K and Q5_K with int8 activations, in the file layout (144- and 176-byte super-blocks, both
// 16-byte aligned): 8 lanes a super-block, lane k taking quant bytes 16 k .. 16 k + 15 — elements
// 16 (k % 2) .. + 15 of sub-blocks 2 (k / 2) (low nibbles) and 2 (k / 2) + 1 (high nibbles) — the
// block's 16-byte header (d, dmin, 6-bit scales and mins) and, for Q5_K, the 16 high-bit bytes of
// those elements. A sub-block contributes d sc dx sum(q qx) - dmin m dx sum(qx), the second term
// added once, by the lane of its first half. Activations staged in shared memory as in
// gemv_i8_smem_kernel; cols % 256 == 0.
template <GgmlType T, int U, bool ROPE = false>
__global__ void __launch_bounds__(32 * kPackWarps)
    gemv_k_i8_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int rows, int cols,
                       const int8_t* xq, const float2* xds, float* __restrict__ y, int64_t ldy, int nt,
                       RopeArgs rope) {
  pdl_trigger();
  extern __shared__ uint4 sx[];
  const int nb = cols / 32, nsb = cols / QK_K;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int v = blockIdx.x * kPackWarps + warp;
  const int r = ROPE ? rope_row(rope, v) : v;
  const uint8_t* row = W + size_t(min(r, rows - 1)) * row_bytes;
  constexpr bool kFive = T == GgmlType::Q5_K;
  constexpr size_t kBlock = kFive ? sizeof(block_q5_K) : sizeof(block_q4_K);
  const int k = lane % 8, c = k / 2, hf = k % 2;
  uint4 hd[U], qv[U], hv[U];
  auto load = [&](int s0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int sb = s0 + 4 * u;
      if (sb < nsb) {
        const uint4* blk = reinterpret_cast<const uint4*>(row + size_t(sb) * kBlock);
        hd[u] = __ldcs(blk);
        if constexpr (kFive) {
          hv[u] = __ldcs(blk + 1 + hf);  // qh bytes 16 hf .. 16 hf + 15
          qv[u] = __ldcs(blk + 3 + k);
        } else {
          qv[u] = __ldcs(blk + 1 + k);
        }
      }
    }
  };
  load(lane / 8);
  if constexpr (ROPE) rope_prepare(rope, v);
  pdl_wait();
  const float2* sds = stage_x_i8(sx, xq, xds, nt, cols);
  float acc[kGemvTokens];
#pragma unroll
  for (int t = 0; t < kGemvTokens; ++t) acc[t] = 0.0f;
  for (int s0 = lane / 8; s0 < nsb; s0 += 4 * U) {
    if (s0 != lane / 8) load(s0);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int sb = s0 + 4 * u;
      if (sb >= nsb) break;
      const uint8_t* h = reinterpret_cast<const uint8_t*>(&hd[u]);
      const float d = __half2float(__ushort_as_half(uint16_t(h[0] | (h[1] << 8))));
      const float dmin = __half2float(__ushort_as_half(uint16_t(h[2] | (h[3] << 8))));
      int sc0, m0, sc1, m1;
      k4_scale_min(h + 4, 2 * c, &sc0, &m0);
      k4_scale_min(h + 4, 2 * c + 1, &sc1, &m1);
      const uint32_t w[4] = {qv[u].x, qv[u].y, qv[u].z, qv[u].w};
      const int b0 = sb * 8 + 2 * c;  // the x block of the low nibbles; b0 + 1: the high ones
#pragma unroll
      for (int t = 0; t < kGemvTokens; ++t) {
        if (t >= nt) break;
        const uint4 xl = sx[(t * cols + b0 * 32 + 16 * hf) / 16];
        const uint4 xh = sx[(t * cols + (b0 + 1) * 32 + 16 * hf) / 16];
        const float2 dl = sds[t * nb + b0], dh = sds[t * nb + b0 + 1];
        const int xlw[4] = {int(xl.x), int(xl.y), int(xl.z), int(xl.w)};
        const int xhw[4] = {int(xh.x), int(xh.y), int(xh.z), int(xh.w)};
        int dot0 = 0, dot1 = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint32_t lo = w[i] & 0x0F0F0F0Fu, hi = (w[i] >> 4) & 0x0F0F0F0Fu;
          if constexpr (kFive) {
            const uint32_t hb[4] = {hv[u].x, hv[u].y, hv[u].z, hv[u].w};
            lo |= ((hb[i] >> (2 * c)) & 0x01010101u) << 4;
            hi |= ((hb[i] >> (2 * c + 1)) & 0x01010101u) << 4;
          }
          dot0 = __dp4a(int(lo), xlw[i], dot0);
          dot1 = __dp4a(int(hi), xhw[i], dot1);
        }
        float v = d * float(sc0) * dl.x * float(dot0) + d * float(sc1) * dh.x * float(dot1);
        if (hf == 0) v -= dmin * float(m0) * dl.x * dl.y + dmin * float(m1) * dh.x * dh.y;
        acc[t] += v;
      }
    }
  }
  if constexpr (ROPE) {  // one token; v and rows a multiple of 4 (checked on the host)
    rope_store_rows(acc[0], v, r, rope, y);
    return;
  }
  if (r < rows) store_row_sums(acc, nt, y, ldy, r, lane);
}

// ---------------------------------------------------------------------------------------------
// Q6_K for the int8 GEMV: a second copy of each Q6_K matrix, repacked at load so that every load
// is aligned (the file's 210-byte super-blocks are only 2-byte aligned). Per 32-element block i of
// the matrix (row-major): 16 bytes of low nibbles at Q + 16 i (byte j: element j's low 4 bits, and
// element j + 16's in its high nibble, as packed Q4_0), 8 bytes of high bits at H + 8 i (word h,
// elements 16 h .. 16 h + 15: element 16 h + 4 k + m's 2 bits at bits 8 m + 2 k), the two int8
// scales of its 16-element halves at SC + 2 i, and the super-block's fp16 d at D + 2 (i / 8).
// Together 26.25 bytes a block, as many as the file's.
struct Q6Pack {
  const uint8_t* q;
  const uint2* h;
  const uint16_t* sc;
  const __half* d;
};

// File-layout Q6_K (rows of nsb super-blocks, row_bytes apart) to Q6Pack; one thread per block.
__global__ void pack_q6_kernel(const uint8_t* __restrict__ raw, size_t row_bytes, int nb, int64_t n_blocks,
                               uint8_t* __restrict__ Q, uint2* __restrict__ H, uint16_t* __restrict__ SC,
                               __half* __restrict__ D) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_blocks) return;
  const int64_t r = i / nb;
  const int b = int(i % nb);
  const block_q6_K* blk = reinterpret_cast<const block_q6_K*>(raw + size_t(r) * row_bytes) + b / 8;
  const int e0 = 32 * (b % 8);
  int q[32];
#pragma unroll
  for (int e = 0; e < 32; ++e) {
    const int E = e0 + e, h = E / 128, k = (E % 128) / 32, l = E % 32;
    const int lo = (blk->ql[64 * h + 32 * (k & 1) + l] >> (k < 2 ? 0 : 4)) & 0xF;
    const int hi = (blk->qh[32 * h + l] >> (2 * k)) & 3;
    q[e] = lo | (hi << 4);
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) Q[i * 16 + j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
  uint32_t hw[2] = {0, 0};
#pragma unroll
  for (int e = 0; e < 32; ++e) {
    const int hh = e / 16, k = (e % 16) / 4, m = e % 4;
    hw[hh] |= uint32_t(q[e] >> 4) << (8 * m + 2 * k);
  }
  H[i] = make_uint2(hw[0], hw[1]);
  SC[i] = uint16_t(uint8_t(blk->scales[e0 / 16]) | (uint16_t(uint8_t(blk->scales[e0 / 16 + 1])) << 8));
  if (b % 8 == 0) D[i / 8] = __ushort_as_half(blk->d);
}

// gemv_i8_smem_kernel's blocks of a Q6Pack. A block adds
// d dx (sc0 sum_{e<16} (q - 32) qx + sc1 sum_{e>=16} (q - 32) qx), the sums exact in int32.
template <int U>
struct Q6Blocks {
  using Src = Q6Pack;
  static constexpr int kU = U;
  const uint4* qrow;
  const uint2* hrow;
  const uint16_t* srow;
  const __half* drow;
  uint4 q[U];
  uint2 hb[U];
  uint32_t sc[U];
  float d[U];
  Q6Blocks() = default;
  __device__ __forceinline__ Q6Blocks(const Q6Pack& P, size_t row, int nb)
      : qrow(reinterpret_cast<const uint4*>(P.q) + row * size_t(nb)), hrow(P.h + row * size_t(nb)),
        srow(P.sc + row * size_t(nb)), drow(P.d + row * size_t(nb) / 8) {}
  __device__ __forceinline__ static void prefetch_row(const Q6Pack& P, size_t row, int nb, int lane) {
    prefetch_span(P.q + row * size_t(nb) * 16, nb * 16, lane);
    prefetch_span(P.h + row * size_t(nb), nb * 8, lane);
    prefetch_span(P.sc + row * size_t(nb), nb * 2, lane);
    prefetch_span(P.d + row * size_t(nb) / 8, nb / 8 * 2, lane);
  }
  __device__ __forceinline__ void load(int u, int b) {
    q[u] = __ldcs(&qrow[b]);
    hb[u] = __ldcs(&hrow[b]);
    sc[u] = __ldcs(&srow[b]);
    d[u] = __half2float(drow[b / 8]);
  }
  __device__ __forceinline__ float dot(int u, const int (&xw)[8], float2 ds, float acc) const {
    const uint32_t w[4] = {q[u].x, q[u].y, q[u].z, q[u].w};
    uint32_t lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo[i] = (w[i] & 0x0F0F0F0Fu) | (((hb[u].x >> (2 * i)) & 0x03030303u) << 4);
      hi[i] = ((w[i] >> 4) & 0x0F0F0F0Fu) | (((hb[u].y >> (2 * i)) & 0x03030303u) << 4);
    }
    const int sc0 = int(int8_t(sc[u] & 0xFF)), sc1 = int(int8_t(sc[u] >> 8));
    int dot0 = 0, dot1 = 0, s0 = 0, s1 = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      dot0 = __dp4a(int(lo[i]), xw[i], dot0);
      dot1 = __dp4a(int(hi[i]), xw[4 + i], dot1);
      s0 = __dp4a(0x01010101, xw[i], s0);
      s1 = __dp4a(0x01010101, xw[4 + i], s1);
    }
    const int isum = sc0 * (dot0 - 32 * s0) + sc1 * (dot1 - 32 * s1);
    return fmaf(d[u] * ds.x, float(isum), acc);
  }
};

// Where the parts of a Q6Pack copy start in one allocation of q6_pack_bytes(rows * cols / 32).
static size_t q6_align(size_t n) { return (n + 255) & ~size_t(255); }
static size_t q6_pack_bytes(int64_t n_blocks) {
  const size_t nb = size_t(n_blocks);
  return q6_align(nb * 16) + q6_align(nb * 8) + q6_align(nb * 2) + q6_align(nb / 8 * 2);
}
static Q6Pack q6_parts(const uint8_t* base, int64_t n_blocks) {
  const size_t nb = size_t(n_blocks);
  Q6Pack P;
  P.q = base;
  P.h = reinterpret_cast<const uint2*>(base + q6_align(nb * 16));
  P.sc = reinterpret_cast<const uint16_t*>(base + q6_align(nb * 16) + q6_align(nb * 8));
  P.d = reinterpret_cast<const __half*>(base + q6_align(nb * 16) + q6_align(nb * 8) + q6_align(nb * 2));
  return P;
}
static void pack_q6(const DeviceWeight& w, uint8_t* out, cudaStream_t stream) {
  const int nb = w.cols / 32;
  const int64_t n = int64_t(w.rows) * nb;
  const Q6Pack P = q6_parts(out, n);
  pack_q6_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(
      w.data, w.row_bytes, nb, n, out, const_cast<uint2*>(P.h), const_cast<uint16_t*>(P.sc), const_cast<__half*>(P.d));
  check_launch("Q6_K packing");
}

// ---------------------------------------------------------------------------------------------
// Q4_K and Q5_K for the int8 GEMV: a second copy repacked at load, as Q6_K's, so that a lane reads
// whole 32-element sub-blocks with aligned loads and no 6-bit scale unpacking. Per sub-block i of
// the matrix (row-major): 16 bytes of low nibbles at Q + 16 i (byte j: element j in its low nibble,
// element j + 16 in its high one, as packed Q4_0), the 6-bit scale and min at SM + 2 i (sc | m << 8),
// for Q5_K the 32 fifth bits at H + 4 i (element 4 k + m's at bit 8 m + k, element 16 + 4 k + m's
// at bit 8 m + 4 + k, so that a shift and a mask put them beside four nibbles), and the
// super-block's fp16 d and dmin at D + 4 (i / 8). 18.5 (Q4_K) and 22.5 (Q5_K) bytes a sub-block
// against the file's 18 and 22.
struct KPack {
  const uint8_t* q;
  const uint32_t* h;  // Q5_K only
  const uint16_t* sm;
  const __half2* d;
};
static size_t kpack_bytes(int64_t n_blocks, bool five) {
  const size_t nb = size_t(n_blocks);
  return q6_align(nb * 16) + (five ? q6_align(nb * 4) : 0) + q6_align(nb * 2) + q6_align(nb / 8 * 4);
}
static KPack kpack_parts(const uint8_t* base, int64_t n_blocks, bool five) {
  const size_t nb = size_t(n_blocks), hb = five ? q6_align(nb * 4) : 0;
  KPack P;
  P.q = base;
  P.h = five ? reinterpret_cast<const uint32_t*>(base + q6_align(nb * 16)) : nullptr;
  P.sm = reinterpret_cast<const uint16_t*>(base + q6_align(nb * 16) + hb);
  P.d = reinterpret_cast<const __half2*>(base + q6_align(nb * 16) + hb + q6_align(nb * 2));
  return P;
}

// File-layout Q4_K / Q5_K (rows of nsb super-blocks, row_bytes apart) to KPack; one thread per
// sub-block.
template <bool kFive>
__global__ void pack_k_kernel(const uint8_t* __restrict__ raw, size_t row_bytes, int nb, int64_t n_blocks,
                              uint8_t* __restrict__ Q, uint32_t* __restrict__ H, uint16_t* __restrict__ SM,
                              __half2* __restrict__ D) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_blocks) return;
  const int64_t r = i / nb;
  const int b = int(i % nb), j = b % 8;
  const uint8_t* blk = raw + size_t(r) * row_bytes + size_t(b / 8) * (kFive ? sizeof(block_q5_K) : sizeof(block_q4_K));
  const uint8_t* qh = blk + 4 + K_SCALE_SIZE;
  const uint8_t* qs = (kFive ? qh + QK_K / 8 : qh) + (j / 2) * 32;
  int q[32];
#pragma unroll
  for (int l = 0; l < 32; ++l) {
    q[l] = (qs[l] >> (4 * (j % 2))) & 0xF;
    if constexpr (kFive) q[l] |= ((qh[l] >> j) & 1) << 4;
  }
#pragma unroll
  for (int l = 0; l < 16; ++l) Q[i * 16 + l] = uint8_t((q[l] & 0xF) | ((q[l + 16] & 0xF) << 4));
  if constexpr (kFive) {
    uint32_t hw = 0;
#pragma unroll
    for (int e = 0; e < 32; ++e) hw |= uint32_t(q[e] >> 4) << (8 * (e % 4) + (e % 16) / 4 + 4 * (e / 16));
    H[i] = hw;
  }
  int sc, mn;
  k4_scale_min(blk + 4, j, &sc, &mn);
  SM[i] = uint16_t(sc | (mn << 8));
  if (j == 0) D[i / 8] = __halves2half2(__ushort_as_half(ld16(blk)), __ushort_as_half(ld16(blk + 2)));
}

// gemv_i8_smem_kernel's blocks of a KPack: a sub-block adds dx (d sc sum(q qx) - dmin m sum(qx)),
// the sums exact in int32 (sum(qx) is the activations' block sum, ds.y).
template <bool kFive, int U>
struct KBlocks {
  using Src = KPack;
  static constexpr int kU = U;
  const uint4* qrow;
  const uint32_t* hrow;
  const uint16_t* srow;
  const __half2* drow;
  uint4 q[U];
  uint32_t hb[U];
  uint32_t sm[U];
  float2 d[U];
  KBlocks() = default;
  __device__ __forceinline__ KBlocks(const KPack& P, size_t row, int nb)
      : qrow(reinterpret_cast<const uint4*>(P.q) + row * size_t(nb)), hrow(kFive ? P.h + row * size_t(nb) : nullptr),
        srow(P.sm + row * size_t(nb)), drow(P.d + row * size_t(nb) / 8) {}
  __device__ __forceinline__ static void prefetch_row(const KPack& P, size_t row, int nb, int lane) {
    prefetch_span(P.q + row * size_t(nb) * 16, nb * 16, lane);
    if (kFive) prefetch_span(P.h + row * size_t(nb), nb * 4, lane);
    prefetch_span(P.sm + row * size_t(nb), nb * 2, lane);
    prefetch_span(P.d + row * size_t(nb) / 8, nb / 8 * 4, lane);
  }
  __device__ __forceinline__ void load(int u, int b) {
    q[u] = __ldcs(&qrow[b]);
    if constexpr (kFive) hb[u] = __ldcs(&hrow[b]);
    sm[u] = __ldcs(&srow[b]);
    d[u] = __half22float2(drow[b / 8]);
  }
  __device__ __forceinline__ float dot(int u, const int (&xw)[8], float2 ds, float acc) const {
    const uint32_t w[4] = {q[u].x, q[u].y, q[u].z, q[u].w};
    int dot = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t lo = w[i] & 0x0F0F0F0Fu, hi = (w[i] >> 4) & 0x0F0F0F0Fu;
      if constexpr (kFive) {
        lo |= ((hb[u] >> i) & 0x01010101u) << 4;
        hi |= ((hb[u] >> (4 + i)) & 0x01010101u) << 4;
      }
      dot = __dp4a(int(lo), xw[i], dot);
      dot = __dp4a(int(hi), xw[4 + i], dot);
    }
    const float sc = float(sm[u] & 0xFF), mn = float(sm[u] >> 8);
    return fmaf(ds.x, d[u].x * sc * float(dot) - d[u].y * mn * ds.y, acc);
  }
};

// The int8 GEMV of a repacked copy (Q6Pack, KPack); with `rope` on, also its RoPE + KV store
// (false where they cannot, or where the weight has no repacked copy).
static bool launch_repack_i8(const DeviceWeight& w, const int8_t* xq, const float2* xds, float* y, int64_t ldy,
                             int nt, cudaStream_t stream, const RopeArgs* rope = nullptr, const NormEpi* epi = nullptr,
                             const NormIn* nin = nullptr) {
  const size_t smem = size_t(nt) * size_t(w.cols) + size_t(nt) * size_t(w.cols / 32) * sizeof(float2);
  if (smem > kSmemXMax || w.cols % QK_K != 0 || !w.repack) return false;
  const bool ro = rope && rope->on, ep = epi && epi->on(), ni = nin && nin->ss;
  if (ro && !rope_fits(rope, nt, w.rows)) return false;
  if ((ep || ni) && (nt != 1 || (ep && (ro || !epi_fits(*epi, w.rows))))) return false;
  const dim3 grid(unsigned((w.rows + kPackWarps - 1) / kPackWarps)), block(32 * kPackWarps);
  const int64_t nb = int64_t(w.rows) * (w.cols / 32);
  const RopeArgs& ra = ro ? *rope : RopeArgs{};
  auto go = [&]<class B>(const typename B::Src& src) {
    if (!ro && launch_i8_rows<B>(src, w, xq, xds, y, ldy, nt, smem, stream)) return;
    if (ep) {
      launch_epi<B>(src, w, xq, xds, y, ldy, smem, stream, *epi, nin);
      return;
    }
    const auto kernel = ni ? one_token_kernel<B, kNormIn>(ro) : i8_kernel<B>(ro, nt);
    launch_pdl(kernel, grid, block, smem, stream, src, w.rows, w.cols, xq, xds, y, ldy, nt, ra, NormEpi{},
               ni ? *nin : NormIn{});
  };
  // Q4_K and Q5_K: two sub-blocks a lane at once (PENSIEVE_CUDA_KPACK_UNROLL=4: four; on the H100 a
  // Q4_K_M token's graph took 1,487-1,491 us with two against 1,527-1,531 with four, 1,613 with
  // one and 1,748 with eight). Q6_K keeps four (its 8192-column down GEMV was slower with two).
  static const int uk = env_pick("PENSIEVE_CUDA_KPACK_UNROLL", 2, 2, 4, 2);
  auto kquant = [&]<int U>() {
    if (w.type == GgmlType::Q5_K) go.template operator()<KBlocks<true, U>>(kpack_parts(w.repack, nb, true));
    else go.template operator()<KBlocks<false, U>>(kpack_parts(w.repack, nb, false));
  };
  if (w.type == GgmlType::Q6_K) go.template operator()<Q6Blocks<4>>(q6_parts(w.repack, nb));
  else if (uk == 4) kquant.template operator()<4>();
  else kquant.template operator()<2>();
  return true;
}

static void pack_k(const DeviceWeight& w, uint8_t* out) {
  const int nb = w.cols / 32;
  const int64_t n = int64_t(w.rows) * nb;
  const bool five = w.type == GgmlType::Q5_K;
  const KPack P = kpack_parts(out, n, five);
  auto* H = const_cast<uint32_t*>(P.h);
  auto* SM = const_cast<uint16_t*>(P.sm);
  auto* D = const_cast<__half2*>(P.d);
  const unsigned grid = unsigned((n + 255) / 256);
  if (five) pack_k_kernel<true><<<grid, 256>>>(w.data, w.row_bytes, nb, n, out, H, SM, D);
  else pack_k_kernel<false><<<grid, 256>>>(w.data, w.row_bytes, nb, n, out, H, SM, D);
  check_launch("Q4_K/Q5_K packing");
}

template <GgmlType T>
static void launch_k_i8_t(const DeviceWeight& w, const int8_t* xq, const float2* xds, float* y, int64_t ldy, int nt,
                          cudaStream_t stream, const RopeArgs* rope, size_t smem) {
  const bool ro = rope && rope->on;
  const unsigned grid = unsigned((w.rows + kPackWarps - 1) / kPackWarps);
  const RopeArgs none;
  launch_pdl(ro ? gemv_k_i8_kernel<T, 4, true> : gemv_k_i8_kernel<T, 4, false>, dim3(grid), dim3(32 * kPackWarps),
             smem, stream, w.data, w.row_bytes, w.rows, w.cols, xq, xds, y, ldy, nt, ro ? *rope : none);
}

// The file-layout K-quant int8 GEMV (Q4_K, Q5_K without a repacked copy); with `rope` on, also its
// RoPE + KV store (false where they cannot).
static bool launch_k_i8(const DeviceWeight& w, const int8_t* xq, const float2* xds, float* y, int64_t ldy, int nt,
                        cudaStream_t stream, const RopeArgs* rope = nullptr) {
  const size_t smem = size_t(nt) * size_t(w.cols) + size_t(nt) * size_t(w.cols / 32) * sizeof(float2);
  if (smem > kSmemXMax || w.cols % QK_K != 0) return false;
  if (rope && rope->on && !rope_fits(rope, nt, w.rows)) return false;
  if (w.type == GgmlType::Q5_K) launch_k_i8_t<GgmlType::Q5_K>(w, xq, xds, y, ldy, nt, stream, rope, smem);
  else launch_k_i8_t<GgmlType::Q4_K>(w, xq, xds, y, ldy, nt, stream, rope, smem);
  return true;
}

// File-layout Q4_0 / Q8_0 rows (raw, row_bytes apart) to the packed layout; one thread per block.
template <GgmlType T>
__global__ void pack_kernel(const uint8_t* __restrict__ raw, int64_t n_blocks, uint8_t* __restrict__ Q,
                            __half* __restrict__ S) {
  constexpr int kBlock = T == GgmlType::Q4_0 ? int(sizeof(block_q4_0)) : int(sizeof(block_q8_0));
  constexpr int kQ = Pack<T>::kQBytes;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_blocks) return;
  const uint8_t* b = raw + i * kBlock;
  S[i] = __ushort_as_half(uint16_t(b[0] | (b[1] << 8)));
#pragma unroll
  for (int j = 0; j < kQ; ++j) Q[i * kQ + j] = b[2 + j];
}

// A packed Q4_0 / Q8_0 block (quants q, scale d) as 32 float32 values, with the file layout's
// arithmetic (dequant32): d (q - 8), d q.
template <GgmlType T>
__device__ __forceinline__ void dequant_packed32(const uint8_t* q, float d, float* v) {
  if constexpr (T == GgmlType::Q4_0) {
    dequant32_nibbles<false>(q, d, 0.0f, v);
  } else {
#pragma unroll
    for (int j = 0; j < 32; ++j) v[j] = d * float(int8_t(q[j]));
  }
}

// Packed W to fp16, one thread per block.
template <GgmlType T>
__global__ void dequant_packed_f16_kernel(const uint8_t* __restrict__ Q, const __half* __restrict__ S,
                                          int64_t n_blocks, __half* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_blocks) return;
  float v[32];
  dequant_packed32<T>(Q + i * Pack<T>::kQBytes, __half2float(S[i]), v);
  __half* o = out + i * 32;
#pragma unroll
  for (int j = 0; j < 32; ++j) o[j] = __float2half_rn(v[j]);
}

static bool packs(GgmlType t) { return t == GgmlType::Q4_0 || t == GgmlType::Q8_0; }

}  // namespace pensieve::cuda
