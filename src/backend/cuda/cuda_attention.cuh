// Attention kernels of the CUDA backend for passes of many tokens (included by cuda_backend.cu,
// after attention_kernel, the one-token-a-block reference these replace where they apply).
//
// A pass's tokens are split by the host into
//  - tiles: up to kTileQ consecutive tokens of one sequence at consecutive positions (a prompt's
//    chunk); attention_tile_kernel gives each (tile, head) one block that walks the keys in tiles of
//    kTileK positions staged in shared memory, each thread holding a 4 x 4 block of scores and a
//    4-query slice of the output, with an online softmax per query;
//  - lone tokens (a decode step's token of each sequence): attention_split_kernel gives each
//    (token, head) one block whose warps take chunks of 32 keys, one key a lane for the scores,
//    then the 32 values a key at a time, and merge at the end.
// Both are float32 throughout, like attention_kernel. A query's result depends only on its own
// query, its keys and the absolute key-tile (or key-chunk) boundaries, never on the other tokens of
// its tile or pass, so that a sequence batched with others gets bit for bit what it gets alone.
#pragma once

namespace pensieve::cuda {

constexpr int kTileQ = 32, kTileK = 64, kTileThreads = 128, kTilePStride = kTileK + 1;

// Pass tokens t0 .. t0 + n - 1: one sequence, positions slots[t0].pos + 0 .. n - 1.
struct AttnTile {
  int t0, n;
};

// Shared memory of attention_tile_kernel for head_dim hd (hd % 16 == 0): Q and K rows padded to
// hd + 1 floats (conflict-free column reads), V rows of hd, and the probabilities.
inline size_t tile_smem_bytes(int hd) {
  return sizeof(float) * (size_t(kTileQ + kTileK) * size_t(hd + 1) + size_t(kTileK) * size_t(hd) +
                          size_t(kTileQ) * kTilePStride);
}

__device__ __forceinline__ const uint8_t* kv_row(const SlotMeta& s, const int32_t* __restrict__ tables, int layer,
                                                 int p) {
  const int block = tables[s.table + p / s.block_size], off = p % s.block_size;
  return reinterpret_cast<const uint8_t*>(s.kv_base) + size_t(block) * s.block_bytes +
         (size_t(layer * 2) * s.block_size + off) * s.row_bytes;
}

// Rounds the rows of `o` (n rows of hd floats, `ld` apart, in shared memory) to int8 per 32-value
// block as quantize_x_kernel does, for the GEMV that reads the attention output. Row r is token
// t0 + r; one warp per (row, block).
__device__ __forceinline__ void tile_round_int8(const float* o, int ld, int n, int t0, int h, int hd, int q_dim,
                                                int8_t* __restrict__ xq, float2* __restrict__ xds) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nb = hd / 32;
  for (int item = warp; item < n * nb; item += blockDim.x / 32) {
    const int r = item / nb, b = item % nb;
    const float val = o[r * ld + 32 * b + lane];
    float amax = fabsf(val);
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
    const float dq = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const int q = __float2int_rn(val * id);
    const size_t c = size_t(t0 + r) * q_dim + size_t(h) * hd + 32 * b + lane;
    xq[c] = int8_t(q);
    int qs = q;
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) qs += __shfl_xor_sync(0xffffffffu, qs, m);
    if (lane == 0) xds[c / 32] = make_float2(dq, float(qs));
  }
}

// Head blockIdx.y of tile blockIdx.x; DJ = head_dim / 16. Thread (ty, tx) = (tid / 16, tid % 16)
// scores queries 4 ty .. 4 ty + 3 against keys tx + 16 j of a key tile and accumulates output dims
// tx + 16 j of the same queries.
template <int DJ>
__global__ void __launch_bounds__(kTileThreads)
    attention_tile_kernel(const float* __restrict__ qkv, const SlotMeta* __restrict__ slots,
                          const int32_t* __restrict__ tables, const AttnTile* __restrict__ tiles, int layer, int n_heads,
                          int n_kv_heads, int window, float scale, float* __restrict__ out, int8_t* __restrict__ xq,
                          float2* __restrict__ xds) {
  pdl_trigger();
  pdl_wait();
  constexpr int HD = 16 * DJ, HP = HD + 1;
  extern __shared__ float smem[];
  float* sQ = smem;
  float* sK = sQ + kTileQ * HP;
  float* sV = sK + kTileK * HP;
  float* sP = sV + kTileK * HD;
  const AttnTile tile = tiles[blockIdx.x];
  const int h = blockIdx.y, tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const SlotMeta s = slots[tile.t0];
  const int pos0 = s.pos, pos_last = s.pos + tile.n - 1;
  const int q_dim = n_heads * HD, kv_dim = n_kv_heads * HD, ld = q_dim + 2 * kv_dim;
  const size_t koff = size_t(h / (n_heads / n_kv_heads)) * HD;
  for (int i = tid; i < kTileQ * HD; i += kTileThreads) {
    const int r = i / HD, d = i % HD;
    sQ[r * HP + d] = r < tile.n ? qkv[size_t(tile.t0 + r) * ld + size_t(h) * HD + d] : 0.0f;
  }
  float o[4][DJ], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < DJ; ++j) o[i][j] = 0.0f;
  }
  const int first = window > 0 ? max(0, pos0 - window + 1) : 0;
  for (int kt = first / kTileK * kTileK; kt <= pos_last; kt += kTileK) {
    __syncthreads();  // the previous key tile is no longer read
    for (int i = tid; i < kTileK * (HD / 2); i += kTileThreads) {
      const int r = i / (HD / 2), d = 2 * (i % (HD / 2)), p = kt + r;
      float2 k = make_float2(0.0f, 0.0f), v = k;
      if (p <= pos_last) {
        const uint8_t* krow = kv_row(s, tables, layer, p);
        const uint8_t* vrow = krow + size_t(s.block_size) * s.row_bytes;
        if (s.f32) {
          k = *reinterpret_cast<const float2*>(reinterpret_cast<const float*>(krow) + koff + d);
          v = *reinterpret_cast<const float2*>(reinterpret_cast<const float*>(vrow) + koff + d);
        } else {
          k = __half22float2(*reinterpret_cast<const __half2*>(reinterpret_cast<const __half*>(krow) + koff + d));
          v = __half22float2(*reinterpret_cast<const __half2*>(reinterpret_cast<const __half*>(vrow) + koff + d));
        }
      }
      sK[r * HP + d] = k.x;
      sK[r * HP + d + 1] = k.y;
      sV[r * HD + d] = v.x;
      sV[r * HD + d + 1] = v.y;
    }
    __syncthreads();
    float sc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) sc[i][j] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < HD; ++d) {
      float qv[4], kv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = sQ[(4 * ty + i) * HP + d];
#pragma unroll
      for (int j = 0; j < 4; ++j) kv[j] = sK[(tx + 16 * j) * HP + d];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) sc[i][j] = fmaf(qv[i], kv[j], sc[i][j]);
    }
    float corr[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int qi = 4 * ty + i, pq = pos0 + qi;
      const int lo = window > 0 ? max(0, pq - window + 1) : 0;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int p = kt + tx + 16 * j;
        const bool ok = qi < tile.n && p >= lo && p <= pq;
        sc[i][j] = ok ? sc[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, sc[i][j]);
      }
#pragma unroll
      for (int k = 8; k > 0; k >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, k));
      corr[i] = 1.0f;
      float sum = 0.0f;
      if (mx == -INFINITY) {  // no key of this tile for this query: its state stays as it is
#pragma unroll
        for (int j = 0; j < 4; ++j) sc[i][j] = 0.0f;
      } else {
        const float m_new = fmaxf(m[i], mx);
        corr[i] = expf(m[i] - m_new);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          sc[i][j] = sc[i][j] == -INFINITY ? 0.0f : expf(sc[i][j] - m_new);
          sum += sc[i][j];
        }
        m[i] = m_new;
      }
#pragma unroll
      for (int k = 8; k > 0; k >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, k);
      l[i] = l[i] * corr[i] + sum;
#pragma unroll
      for (int j = 0; j < 4; ++j) sP[qi * kTilePStride + tx + 16 * j] = sc[i][j];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < DJ; ++j) o[i][j] *= corr[i];
    const int nk = min(kTileK, pos_last - kt + 1);
    for (int k = 0; k < nk; ++k) {
      float pv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = sP[(4 * ty + i) * kTilePStride + k];
#pragma unroll
      for (int j = 0; j < DJ; ++j) {
        const float v = sV[k * HD + tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) o[i][j] = fmaf(pv[i], v, o[i][j]);
      }
    }
  }
  // Normalise; the rows go through shared memory (sQ) so that the stores and the int8 rounding
  // run along rows.
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
#pragma unroll
    for (int j = 0; j < DJ; ++j) sQ[(4 * ty + i) * HP + tx + 16 * j] = o[i][j] * inv;
  }
  __syncthreads();
  for (int i = tid; i < tile.n * HD; i += kTileThreads) {
    const int r = i / HD, d = i % HD;
    out[size_t(tile.t0 + r) * q_dim + size_t(h) * HD + d] = sQ[r * HP + d];
  }
  if (xq) tile_round_int8(sQ, HP, tile.n, tile.t0, h, HD, q_dim, xq, xds);
}

constexpr int kSplitWarps = 4;

// Token tokens[blockIdx.x], head blockIdx.y: warp w takes the 32-key chunks w, w + kSplitWarps, ...
// of the token's window (chunks counted from position 0). Lane j scores key j of a chunk over the
// whole head (16-byte loads of its row); the warp then adds the chunk's 32 values into its
// accumulators, 8 keys' loads at a time, lanes over the head's dims (D = ceil(head_dim / 32)).
// head_dim % 8 == 0, KV rows 16-byte aligned.
template <int D>
__global__ void __launch_bounds__(32 * kSplitWarps)
    attention_split_kernel(const float* __restrict__ qkv, const SlotMeta* __restrict__ slots,
                           const int32_t* __restrict__ tables, const int32_t* __restrict__ tokens, int layer,
                           int n_heads, int n_kv_heads, int head_dim, int window, float scale, float* __restrict__ out,
                           int8_t* __restrict__ xq, float2* __restrict__ xds) {
  pdl_trigger();
  pdl_wait();
  const int t = tokens[blockIdx.x], h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SlotMeta s = slots[t];
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  const float* q = qkv + size_t(t) * (q_dim + 2 * kv_dim) + size_t(h) * head_dim;
  const size_t koff = size_t(h / (n_heads / n_kv_heads)) * head_dim;
  __shared__ __align__(16) float sq[32 * D];
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) sq[d] = q[d];
  __syncthreads();
  float acc[D];
#pragma unroll
  for (int i = 0; i < D; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int start = window > 0 ? max(0, s.pos - window + 1) : 0;
  for (int c0 = (start / 32 + warp) * 32; c0 <= s.pos; c0 += 32 * kSplitWarps) {
    const int p = c0 + lane;
    const bool ok = p >= start && p <= s.pos;
    const uint8_t* krow = ok ? kv_row(s, tables, layer, p) : nullptr;
    float score = -INFINITY;
    if (ok) {
      float part = 0.0f;
      if (s.f32) {
        const float4* k4 = reinterpret_cast<const float4*>(reinterpret_cast<const float*>(krow) + koff);
#pragma unroll 4
        for (int d = 0; d < head_dim / 4; ++d) {
          const float4 k = k4[d];
          part = fmaf(sq[4 * d], k.x, part);
          part = fmaf(sq[4 * d + 1], k.y, part);
          part = fmaf(sq[4 * d + 2], k.z, part);
          part = fmaf(sq[4 * d + 3], k.w, part);
        }
      } else {
        const uint4* k8 = reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(krow) + koff);
#pragma unroll 4
        for (int d = 0; d < head_dim / 8; ++d) {
          const uint4 u = k8[d];
          const __half2* hp = reinterpret_cast<const __half2*>(&u);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 k = __half22float2(hp[e]);
            part = fmaf(sq[8 * d + 2 * e], k.x, part);
            part = fmaf(sq[8 * d + 2 * e + 1], k.y, part);
          }
        }
      }
      score = part * scale;
    }
    float mx = score;
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, k));
    const float m_new = fmaxf(m, mx);  // finite: every chunk visited holds a key of the window
    const float corr = expf(m - m_new);
    const float e = ok ? expf(score - m_new) : 0.0f;
    l = l * corr + warp_sum(e);
    m = m_new;
#pragma unroll
    for (int i = 0; i < D; ++i) acc[i] *= corr;
    const unsigned long long vrow_mine =
        ok ? reinterpret_cast<unsigned long long>(krow + size_t(s.block_size) * s.row_bytes) : 0ull;
    const int n_here = min(32, s.pos - c0 + 1);
    for (int j0 = 0; j0 < n_here; j0 += 8) {
      float pj[8], vv[8][D];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int j = j0 + u;
        pj[u] = __shfl_sync(0xffffffffu, e, j & 31);
        const unsigned long long vr = __shfl_sync(0xffffffffu, vrow_mine, j & 31);
        const bool use = j < n_here && vr != 0ull;
        if (!use) pj[u] = 0.0f;
#pragma unroll
        for (int i = 0; i < D; ++i) {
          const int d = lane + 32 * i;
          vv[u][i] = 0.0f;
          if (use && d < head_dim) {
            const uint8_t* vrow = reinterpret_cast<const uint8_t*>(vr);
            vv[u][i] = s.f32 ? reinterpret_cast<const float*>(vrow)[koff + d]
                             : __half2float(reinterpret_cast<const __half*>(vrow)[koff + d]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < 8; ++u)
#pragma unroll
        for (int i = 0; i < D; ++i) acc[i] = fmaf(pj[u], vv[u][i], acc[i]);
    }
  }
  __shared__ float sm[kSplitWarps], sl[kSplitWarps], sacc[kSplitWarps][32 * D];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < D; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) sacc[warp][d] = acc[i];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kSplitWarps; ++w) M = fmaxf(M, sm[w]);
  float L = 0.0f;
  for (int w = 0; w < kSplitWarps; ++w)
    if (sl[w] > 0.0f) L += sl[w] * expf(sm[w] - M);
  float* o = out + size_t(t) * q_dim + size_t(h) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kSplitWarps; ++w)
      if (sl[w] > 0.0f) sum += sacc[w][d] * expf(sm[w] - M);
    const float val = sum / L;
    o[d] = val;
    if (xq) {
      float amax = fabsf(val);
#pragma unroll
      for (int k = 16; k > 0; k >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, k));
      const float dq = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
      const int qv = __float2int_rn(val * id);
      const size_t c = size_t(t) * q_dim + size_t(h) * head_dim + d;
      xq[c] = int8_t(qv);
      int qs = qv;
#pragma unroll
      for (int k = 16; k > 0; k >>= 1) qs += __shfl_xor_sync(0xffffffffu, qs, k);
      if (lane == 0) xds[c / 32] = make_float2(dq, float(qs));
    }
  }
}

}  // namespace pensieve::cuda
