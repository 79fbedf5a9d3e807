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

// The key row of kv head kvh at position p of slot s's sequence (kv_key's layout; hdb bytes a head
// row); its value row is block_size * row_bytes further on.
__device__ __forceinline__ const uint8_t* kv_head_row(const SlotMeta& s, const int32_t* __restrict__ tables, int layer,
                                                      int p, int kvh, int hdb) {
  return kv_key(s, tables[s.table + p / s.block_size], layer, p % s.block_size, kvh, hdb);
}

// The four int8 values of word w as exact floats, without the int-to-float unit (a quarter of the
// float rate): byte b + 128 placed in the mantissa of 2^23 (one byte permute), minus 2^23 + 128.
__device__ __forceinline__ void i8x4_to_float(uint32_t w, float* f) {
  const uint32_t u = w ^ 0x80808080u;
#pragma unroll
  for (int k = 0; k < 4; ++k) f[k] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7540u + k)) - 8388736.0f;
}

// The scale of that key row in a Q8 cache (its value's: block_size * row_bytes further on).
__device__ __forceinline__ const float* kv_head_scale(const SlotMeta& s, const int32_t* __restrict__ tables, int layer,
                                                      int p, int kvh, int hd, int n_kv_heads) {
  return kv_q8_scale(s, tables[s.table + p / s.block_size], layer, p % s.block_size, kvh, hd, n_kv_heads);
}

// Rounds the rows of `o` (n rows of hd floats, `ld` apart, in shared memory) to int8 per 32-value
// block as quantize_x_kernel does, for the GEMV that reads the attention output. Row r is token
// t0 + r; one warp per (row, block).
__device__ __forceinline__ void tile_round_int8(const float* o, int ld, int n, int t0, int h, int hd, int q_dim,
                                                int8_t* __restrict__ xq, float2* __restrict__ xds) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nb = hd / 32;
  for (int item = warp; item < n * nb; item += blockDim.x / 32) {
    const int r = item / nb, b = item % nb;
    const size_t c = size_t(t0 + r) * q_dim + size_t(h) * hd + 32 * b + lane;
    warp_round_int8(o[r * ld + 32 * b + lane], xq + c, xds + c / 32);
  }
}

// Head blockIdx.y of half blockIdx.x % 2 of tile blockIdx.x / 2; DJ = head_dim / 16. Thread (ty, tx) = (tid / 16, tid % 16)
// scores queries 4 ty .. 4 ty + 3 against keys tx + 16 j of a key tile and accumulates output dims
// tx + 16 j of the same queries.
template <int DJ>
__global__ void __launch_bounds__(kTileThreads)
    attention_tile_kernel(const float* qkv, const SlotMeta* __restrict__ slots,
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
  // The plan's tiles hold up to 2 kTileQ tokens: block 2 i + k takes tile i's k-th half.
  const AttnTile big = tiles[blockIdx.x / 2];
  const AttnTile tile{big.t0 + kTileQ * int(blockIdx.x % 2), min(kTileQ, big.n - kTileQ * int(blockIdx.x % 2))};
  if (tile.n <= 0) return;
  const int h = blockIdx.y, tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const SlotMeta s = slots[tile.t0];
  const int pos0 = s.pos, pos_last = s.pos + tile.n - 1;
  const int q_dim = n_heads * HD, kv_dim = n_kv_heads * HD, ld = q_dim + 2 * kv_dim;
  const int kvh = h / (n_heads / n_kv_heads);
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
        const uint8_t* krow = kv_head_row(s, tables, layer, p, kvh, HD * (s.q8 ? 1 : s.f32 ? 4 : 2));
        const uint8_t* vrow = krow + size_t(s.block_size) * s.row_bytes;
        if (s.q8) {
          const float* sk = kv_head_scale(s, tables, layer, p, kvh, HD, n_kv_heads);
          const float dk = sk[0], dv = sk[s.block_size * s.row_bytes / 4];
          const char2 kq = *reinterpret_cast<const char2*>(krow + d), vq = *reinterpret_cast<const char2*>(vrow + d);
          k = make_float2(dk * float(kq.x), dk * float(kq.y));
          v = make_float2(dv * float(vq.x), dv * float(vq.y));
        } else if (s.f32) {
          k = *reinterpret_cast<const float2*>(reinterpret_cast<const float*>(krow) + d);
          v = *reinterpret_cast<const float2*>(reinterpret_cast<const float*>(vrow) + d);
        } else {
          k = __half22float2(*reinterpret_cast<const __half2*>(reinterpret_cast<const __half*>(krow) + d));
          v = __half22float2(*reinterpret_cast<const __half2*>(reinterpret_cast<const __half*>(vrow) + d));
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

// ---------------------------------------------------------------------------------------------
// The same tiles on tensor cores, for fp16 KV caches (the serving path): each of 4 warps takes 16
// of a tile's kTileQ * 2 = 64 queries; scores S = Q K^T and the output P V run as
// mma.m16n8k16 with fp16 operands and float32 accumulation (q and the probabilities rounded to
// fp16, the keys and values already fp16), the online softmax in float32 on the accumulator
// fragments. Keys staged as rows (the B operand of Q K^T), values transposed (that of P V), both
// padded by 8 halves so that each fragment load of a warp hits 32 different banks.
constexpr int kMmaQ = 64, kMmaPad = 8;

inline size_t mma_smem_bytes(int hd) {
  return sizeof(__half) * (size_t(kMmaQ + kTileK) * size_t(hd + kMmaPad) + size_t(hd) * (kTileK + kMmaPad));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Head blockIdx.y of tile blockIdx.x (tiles of up to kMmaQ tokens); HD % 16 == 0, KV rows fp16 and
// 16-byte aligned.
// Q8: the tiles of Q8 caches, whose rows are widened to fp16 (value x scale) as they are loaded;
// a launch skips the other kind's tiles.
template <int HD, bool Q8>
__global__ void __launch_bounds__(kTileThreads)
    attention_mma_kernel(const float* qkv, const SlotMeta* __restrict__ slots,
                         const int32_t* __restrict__ tables, const AttnTile* __restrict__ tiles, int layer, int n_heads,
                         int n_kv_heads, int window, float scale, float* __restrict__ out, int8_t* __restrict__ xq,
                         float2* __restrict__ xds) {
  pdl_trigger();
  pdl_wait();
  constexpr int HS = HD + kMmaPad, VS = kTileK + kMmaPad, NKS = HD / 16, NDT = HD / 8;
  extern __shared__ __align__(16) __half hsm[];
  __half* sQ = hsm;               // [kMmaQ][HS]
  __half* sK = sQ + kMmaQ * HS;   // [kTileK][HS]
  __half* sVt = sK + kTileK * HS;  // [HD][VS]
  const AttnTile tile = tiles[blockIdx.x];
  const int h = blockIdx.y, tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const SlotMeta s = slots[tile.t0];
  if (bool(s.q8) != Q8) return;
  const int pos0 = s.pos, pos_last = s.pos + tile.n - 1;
  const int q_dim = n_heads * HD, kv_dim = n_kv_heads * HD, ld = q_dim + 2 * kv_dim;
  const int kvh = h / (n_heads / n_kv_heads);
  for (int i = tid; i < kMmaQ * (HD / 2); i += kTileThreads) {
    const int r = i / (HD / 2), d = 2 * (i % (HD / 2));
    float2 v = make_float2(0.0f, 0.0f);
    if (r < tile.n) v = *reinterpret_cast<const float2*>(qkv + size_t(tile.t0 + r) * ld + size_t(h) * HD + d);
    *reinterpret_cast<__half2*>(sQ + r * HS + d) = __floats2half2_rn(v.x, v.y);
  }
  __syncthreads();
  // This warp's 16 queries as A fragments, for every 16-dim step.
  uint32_t qa[NKS][4];
  const int r0 = 16 * warp + g;
#pragma unroll
  for (int ks = 0; ks < NKS; ++ks) {
    qa[ks][0] = *reinterpret_cast<const uint32_t*>(sQ + r0 * HS + 16 * ks + 2 * t4);
    qa[ks][1] = *reinterpret_cast<const uint32_t*>(sQ + (r0 + 8) * HS + 16 * ks + 2 * t4);
    qa[ks][2] = *reinterpret_cast<const uint32_t*>(sQ + r0 * HS + 16 * ks + 8 + 2 * t4);
    qa[ks][3] = *reinterpret_cast<const uint32_t*>(sQ + (r0 + 8) * HS + 16 * ks + 8 + 2 * t4);
  }
  // Rows r0 and r0 + 8 of the tile: their positions and windows.
  int pq[2], lo[2];
  bool valid[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int qi = r0 + 8 * e;
    valid[e] = qi < tile.n;
    pq[e] = pos0 + qi;
    lo[e] = window > 0 ? max(0, pq[e] - window + 1) : 0;
  }
  float o[NDT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < NDT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  const int first = window > 0 ? max(0, pos0 - window + 1) : 0;
  // Key tiles go through registers: tile kt + kTileK is loaded while tile kt is multiplied. Thread
  // i takes key i % 64 and 16-byte pieces i / 64, i / 64 + 2, ... of its row (the transposed V
  // stores of a warp then fall on consecutive halves).
  constexpr int NPC = HD / 8 / 2;  // pieces a thread loads per key tile, of K and of V each
  static_assert(kTileThreads == 2 * kTileK, "two threads a key");
  uint4 kreg[NPC], vreg[NPC];
  const int kr = tid % kTileK, kp0 = tid / kTileK;
  auto load_tile = [&](int kt) {
    const int p = kt + kr;
    const bool in = p <= pos_last;
    const uint8_t* krow = in ? kv_head_row(s, tables, layer, p, kvh, HD * (Q8 ? 1 : 2)) : nullptr;
    const uint8_t* vrow = in ? krow + size_t(s.block_size) * s.row_bytes : nullptr;
    float dk = 0.0f, dv = 0.0f;
    if (Q8 && in) {
      const float* sk = kv_head_scale(s, tables, layer, p, kvh, HD, n_kv_heads);
      dk = sk[0];
      dv = sk[s.block_size * s.row_bytes / 4];
    }
    // 8 int8 values times their row's scale, as 8 halves.
    auto widen = [](uint2 q, float d) {
      float f[8];
      i8x4_to_float(q.x, f);
      i8x4_to_float(q.y, f + 4);
      uint4 r;
      __half2* h2 = reinterpret_cast<__half2*>(&r);
#pragma unroll
      for (int e = 0; e < 4; ++e) h2[e] = __floats2half2_rn(d * f[2 * e], d * f[2 * e + 1]);
      return r;
    };
#pragma unroll
    for (int c = 0; c < NPC; ++c) {
      const int d = 8 * (kp0 + 2 * c);
      kreg[c] = vreg[c] = make_uint4(0, 0, 0, 0);
      if (in) {
        if constexpr (Q8) {
          kreg[c] = widen(*reinterpret_cast<const uint2*>(krow + d), dk);
          vreg[c] = widen(*reinterpret_cast<const uint2*>(vrow + d), dv);
        } else {
          kreg[c] = *reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(krow) + d);
          vreg[c] = *reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(vrow) + d);
        }
      }
    }
  };
  int kt = first / kTileK * kTileK;
  if (kt <= pos_last) load_tile(kt);
  for (; kt <= pos_last; kt += kTileK) {
    __syncthreads();  // the previous key tile is no longer read
#pragma unroll
    for (int c = 0; c < NPC; ++c) {
      const int d = 8 * (kp0 + 2 * c);
      *reinterpret_cast<uint4*>(sK + kr * HS + d) = kreg[c];
      const __half* vh = reinterpret_cast<const __half*>(&vreg[c]);
#pragma unroll
      for (int e = 0; e < 8; ++e) sVt[(d + e) * VS + kr] = vh[e];
    }
    __syncthreads();
    if (kt + kTileK <= pos_last) load_tile(kt + kTileK);
    // S = Q K^T for this warp's 16 queries x 64 keys: 8 n-tiles of 8 keys.
    float sc[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
      const __half* krow = sK + (8 * n + g) * HS + 2 * t4;
#pragma unroll
      for (int ks = 0; ks < NKS; ++ks) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + 16 * ks);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + 16 * ks + 8);
        mma16816(sc[n], qa[ks], b0, b1);
      }
    }
    // Online softmax per row (e = 0: row r0, e = 1: row r0 + 8); a row's 64 scores lie in the
    // 4 lanes of a quad, 16 each.
    float corr[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int p = kt + 8 * n + 2 * t4 + c;
          const bool ok = valid[e] && p >= lo[e] && p <= pq[e];
          float& v = sc[n][2 * e + c];
          v = ok ? v * scale : -INFINITY;
          mx = fmaxf(mx, v);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      corr[e] = 1.0f;
      float sum = 0.0f;
      if (mx == -INFINITY) {
#pragma unroll
        for (int n = 0; n < 8; ++n) sc[n][2 * e] = sc[n][2 * e + 1] = 0.0f;
      } else {
        const float m_new = fmaxf(m[e], mx);
        corr[e] = expf(m[e] - m_new);
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float& v = sc[n][2 * e + c];
            v = v == -INFINITY ? 0.0f : expf(v - m_new);
            sum += v;
          }
        m[e] = m_new;
      }
      l[e] = l[e] * corr[e] + sum;  // this lane's part of the row sum; the quad adds at the end
    }
#pragma unroll
    for (int n = 0; n < NDT; ++n) {
      o[n][0] *= corr[0];
      o[n][1] *= corr[0];
      o[n][2] *= corr[1];
      o[n][3] *= corr[1];
    }
    // O += P V: P from the score fragments (fp16), V^T rows from shared memory.
#pragma unroll
    for (int kk = 0; kk < kTileK / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack_half2(sc[2 * kk][0], sc[2 * kk][1]);
      pa[1] = pack_half2(sc[2 * kk][2], sc[2 * kk][3]);
      pa[2] = pack_half2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
      pa[3] = pack_half2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
      for (int n = 0; n < NDT; ++n) {
        const __half* vrow = sVt + (8 * n + g) * VS + 16 * kk + 2 * t4;
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(vrow);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(vrow + 8);
        mma16816(o[n], pa, b0, b1);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 1);
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 2);
  }
  // Row r0 + 8 e holds dims 8 n + 2 t4 (+1) in o[n][2 e], o[n][2 e + 1]; a 32-value block of a
  // row lies in the 4 lanes of a quad (n-tiles 4 b .. 4 b + 3).
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int qi = r0 + 8 * e;
    const float inv = l[e] > 0.0f ? 1.0f / l[e] : 0.0f;
    const size_t row = size_t(tile.t0 + qi) * q_dim + size_t(h) * HD;
#pragma unroll
    for (int n = 0; n < NDT; ++n) {
      o[n][2 * e] *= inv;
      o[n][2 * e + 1] *= inv;
      if (valid[e]) *reinterpret_cast<float2*>(out + row + 8 * n + 2 * t4) = make_float2(o[n][2 * e], o[n][2 * e + 1]);
    }
    if (xq && HD % 32 == 0) {
#pragma unroll
      for (int b = 0; b < HD / 32; ++b) {
        float amax = 0.0f;
#pragma unroll
        for (int n = 4 * b; n < 4 * b + 4; ++n) amax = fmaxf(amax, fmaxf(fabsf(o[n][2 * e]), fabsf(o[n][2 * e + 1])));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        const float dq = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int qs = 0;
#pragma unroll
        for (int n = 4 * b; n < 4 * b + 4; ++n) {
          const int q0 = __float2int_rn(o[n][2 * e] * id), q1 = __float2int_rn(o[n][2 * e + 1] * id);
          qs += q0 + q1;
          if (valid[e]) {
            xq[row + 8 * n + 2 * t4] = int8_t(q0);
            xq[row + 8 * n + 2 * t4 + 1] = int8_t(q1);
          }
        }
        qs += __shfl_xor_sync(0xffffffffu, qs, 1);
        qs += __shfl_xor_sync(0xffffffffu, qs, 2);
        if (valid[e] && t4 == 0) xds[(row + 32 * b) / 32] = make_float2(dq, float(qs));
      }
    }
  }
}

constexpr int kSplitWarps = 4;
// Decode steps of at most this many tokens prefetch their first keys and values before the wait
// (a 64-token step's ~100 MB would compete with the GEMM still running).
constexpr int kSplitEarly = 4;

// Flash decoding: a lone token's window is split over split_blocks() blocks a head (blockIdx.z),
// one for each `chunks` 32-key chunks, at most kMaxSplit, so that one token's attention over a long
// context fills the GPU; the count depends on the token's own position only (a token gets the same
// bits alone or batched). Worker w = z * kSplitWarps + warp of n = blocks * kSplitWarps takes chunks
// w, w + n, ...; each block leaves its warps' merged maximum, sum and unnormalised output in the
// pass's workspace, and the last of the token's blocks to finish merges them in block order.
constexpr int kMaxSplit = 16;
__host__ __device__ inline int split_blocks(int pos, int window, int chunks) {
  const int start = window > 0 ? (pos - window + 1 > 0 ? pos - window + 1 : 0) : 0;
  const int n = pos / 32 - start / 32 + 1;
  const int b = chunks > 0 ? (n + chunks - 1) / chunks : 1;
  return b < kMaxSplit ? b : kMaxSplit;
}
// Floats of one block's partial result: its maximum, its sum and hd unnormalised outputs.
__host__ __device__ constexpr int split_part_floats(int hd) { return hd + 2; }


// Token tokens[blockIdx.x], head blockIdx.y: warp w takes the 32-key chunks w, w + kSplitWarps, ...
// of the token's window (chunks counted from position 0). Lane j scores key j of a chunk over the
// whole head (16-byte loads of its row); then the warp adds the chunk's values with 16-byte loads:
// lane l takes dims 8 (l % G) .. + 7 of keys l / G, l / G + P, ... (G = HD / 8 groups, P = 32 / G
// keys a step), and the P partial sums of a dim group are added at the end. HD % 16 == 0, KV rows
// 16-byte aligned. KV: the cache kind this launch serves (0 fp16, 1 float32, 2 Q8: 8-byte loads of
// values, each key's score and value weight times its row's scale); other tokens' blocks return.
// STORE (Q8, a one-token pass whose qkv GEMV did the RoPE and left the KV store): the token's own
// key and value rows are rounded here from its qkv row, read from shared memory, and written to the
// cache by the first head of each kv group. (Kept out of the other instantiations: the choice
// between shared and global rows in the loop made them ~1% slower.)
// EAGER (fp16, decode steps of at most kSplitEarly tokens): each chunk's keys and values are asked
// for together, and the warp's copy of q with the first chunk's, so that the wait is followed by
// one round trip to L2 instead of three (q, then keys, then values); the same bits.
template <int HD, int KV, int MINB, bool STORE = false, bool EAGER = false>
__global__ void __launch_bounds__(32 * kSplitWarps, MINB)
    attention_split_kernel(const float* qkv, const SlotMeta* __restrict__ slots,
                           const int32_t* __restrict__ tables, const int32_t* __restrict__ tokens, int layer,
                           int n_heads, int n_kv_heads, int window, float scale, float* __restrict__ out,
                           int8_t* __restrict__ xq, float2* __restrict__ xds, __half* __restrict__ xh, int early,
                           int split_chunks, int* __restrict__ counters, float* __restrict__ parts,
                           const float* __restrict__ inv_short, const float* __restrict__ inv_long, float mscale,
                           int n_rot, int style_half) {
  pdl_trigger();
  constexpr bool F32 = KV == 1, Q8 = KV == 2;
  constexpr int G = HD / 8, P = 32 / G, EB = F32 ? 4 : Q8 ? 1 : 2;  // EB: bytes an element
  const int t = tokens[blockIdx.x], h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, grp = lane % G, kk = lane / G;
  const SlotMeta s = slots[t];  // the pass's metadata: uploaded before its first kernel
  const int kvh = h / (n_heads / n_kv_heads);
  const int start = window > 0 ? max(0, s.pos - window + 1) : 0;
  const int kind = s.f32 ? 1 : s.q8 ? 2 : 0;
  const int nb = split_blocks(s.pos, window, split_chunks), z = blockIdx.z;
  if (z >= nb) return;  // a shorter window than the pass's longest
  const int worker = z * kSplitWarps + warp, stride = 32 * kSplitWarps * nb;
  if (early == 2 && kind == KV) {
    // Every KV block of the warp's chunks (keys, values, Q8 scales), asked of L2 at once: a lane a
    // block, a bulk prefetch of its head's rows.
    const size_t vo = size_t(s.block_size) * s.row_bytes;
    for (int c0 = (start / 32 + worker) * 32; c0 <= s.pos; c0 += stride) {
      const int b0 = max(c0, start) / s.block_size, b1 = min(c0 + 31, s.pos) / s.block_size;
      for (int b = b0 + lane; b <= b1; b += 32) {
        const int blk = tables[s.table + b];
        const uint8_t* k = kv_key(s, blk, layer, 0, kvh, HD * EB);
        const uint32_t bytes = uint32_t(s.block_size * HD * EB);
        prefetch_l2_bulk(k, bytes);
        prefetch_l2_bulk(k + vo, bytes);
        if constexpr (Q8) {
          const float* d = kv_q8_scale(s, blk, layer, 0, kvh, HD, n_kv_heads);
          prefetch_l2_line(d);
          prefetch_l2_line(reinterpret_cast<const uint8_t*>(d) + vo);
        }
      }
    }
  } else if (early && kind == KV) {
    // The keys and values of the warp's first chunk, asked of L2 before the wait for the qkv
    // kernel: earlier passes wrote them (all but the token's own row), so the DRAM round trip
    // overlaps that kernel's tail.
    const int p = (start / 32 + worker) * 32 + lane;
    if (p >= start && p <= s.pos) {
      const uint8_t* k = kv_head_row(s, tables, layer, p, kvh, HD * EB);
      const uint8_t* v = k + size_t(s.block_size) * s.row_bytes;
      prefetch_l2_line(k);
      prefetch_l2_line(k + HD * EB - 1);
      prefetch_l2_line(v);
      prefetch_l2_line(v + HD * EB - 1);
    }
  }
  static_assert(!EAGER || KV == 0, "EAGER: fp16 caches");
  static_assert(!STORE || KV != 1, "STORE: fp16 or Q8 caches");
  // STORE with n_rot > 0: the token's RoPE is this kernel's too (its factors depend on no kernel
  // before).
  __shared__ float rcs[STORE ? 64 : 1], rsn[STORE ? 64 : 1];
  const int half = n_rot / 2;
  if (STORE && n_rot > 0) {
    const float* inv = s.long_rope ? inv_long : inv_short;
    for (int k = threadIdx.x; k < half; k += blockDim.x) rope_cos_sin(s.pos, inv[k], mscale, &rcs[k], &rsn[k]);
    __syncthreads();
  }
  pdl_wait();
  if (kind != KV) return;  // another launch's token (a pass mixing kinds of caches)
  const int q_dim = n_heads * HD, kv_dim = n_kv_heads * HD;
  const float* q = qkv + size_t(t) * (q_dim + 2 * kv_dim) + size_t(h) * HD;
  __shared__ __align__(16) float sq_block[EAGER ? 1 : HD], sq_warp[EAGER ? kSplitWarps : 1][HD];
  float* const sq = EAGER ? sq_warp[warp] : sq_block;
  __shared__ __align__(16) uint8_t own[2][STORE ? HD * EB : 16];
  __shared__ float own_d[2];
  __shared__ float own_f[STORE ? 2 : 1][STORE ? HD : 1];
  // STORE: the block whose chunks hold the token's own position rounds, reads and stores its rows.
  const bool mine = STORE && z == (s.pos / 32 - start / 32) % (kSplitWarps * nb) / kSplitWarps;
  // Q8: q as two int8 parts for the keys' dot products on dp4a, q ~ dq (hi + lo / 256) (within
  // max|q| / 65,000; the float products took 16 instructions a 4-byte word of keys, dp4a takes 2).
  __shared__ __align__(16) int8_t sqh[Q8 ? HD : 16], sql[Q8 ? HD : 16];
  __shared__ float sdq;
  if (!EAGER)
    for (int d = threadIdx.x; d < HD; d += blockDim.x) sq[d] = q[d];
  if (mine && warp < 2) {
    // The token's own key (rotated) and value rows, rounded as the cache holds them.
    const float* src = q - size_t(h) * HD + q_dim + (warp ? kv_dim : 0) + size_t(kvh) * HD;
    float* f = own_f[STORE ? warp : 0];
    for (int d = lane; d < HD; d += 32) f[d] = src[d];
    __syncwarp();
    if (warp == 0)
      for (int k = lane; k < half; k += 32) rope_rotate(f, k, half, style_half, rcs[k], rsn[k]);
    __syncwarp();
    if constexpr (Q8) {
      warp_round_q8(f, HD, reinterpret_cast<int8_t*>(own[warp]), &own_d[warp]);
    } else {
      for (int d = lane; d < HD; d += 32) reinterpret_cast<__half*>(own[warp])[d] = __float2half_rn(f[d]);
    }
  }
  if (STORE && n_rot > 0 && !EAGER) {  // q rotated in place
    __syncthreads();
    for (int k = threadIdx.x; k < half; k += blockDim.x) rope_rotate(sq, k, half, style_half, rcs[k], rsn[k]);
  }
  if constexpr (Q8) {
    __syncthreads();
    if (warp == kSplitWarps - 1) {
      constexpr int V = (HD + 31) / 32;
      float v[V], amax = 0.0f;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int d = lane + 32 * i;
        v[i] = d < HD ? sq[d] : 0.0f;
        amax = fmaxf(amax, fabsf(v[i]));
      }
#pragma unroll
      for (int k = 16; k > 0; k >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, k));
      const float dq = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int d = lane + 32 * i;
        const float hi = rintf(v[i] * id);
        const float lo = fminf(fmaxf(rintf((v[i] - hi * dq) * id * 256.0f), -127.0f), 127.0f);
        if (d < HD) {
          sqh[d] = int8_t(hi);
          sql[d] = int8_t(lo);
        }
      }
      if (lane == 0) sdq = dq;
    }
  }
  __syncthreads();
  if (mine && h % (n_heads / n_kv_heads) == 0 && warp < 2) {
    const size_t vo = size_t(s.block_size) * s.row_bytes;
    uint8_t* row = kv_key(s, s.block, layer, s.off, kvh, HD * EB) + (warp ? vo : 0);
    for (int d = lane; d < HD * EB / 4; d += 32)
      reinterpret_cast<uint32_t*>(row)[d] = reinterpret_cast<const uint32_t*>(own[warp])[d];
    if (Q8 && lane == 0)
      *reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(kv_q8_scale(s, s.block, layer, s.off, kvh, HD, n_kv_heads)) +
                                (warp ? vo : 0)) = own_d[warp];
  }
  const int own_pos = mine ? s.pos : -1;  // the position read from shared memory
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  // Keys kk, kk + P, ... of a chunk go to lane kk's value sums; every lane runs every step (the
  // shuffles), lanes past G P and keys outside the window add nothing.
  constexpr int STEPS = (32 + P - 1) / P;
  // The value row of lane j's key (0: outside the window) and lane kk's part of the one at `row`.
  auto vrow_of = [&](bool ok, const uint8_t* krow, int p) {
    return !ok                     ? 0ull
           : STORE && p == own_pos ? reinterpret_cast<unsigned long long>(own[1])
                                   : reinterpret_cast<unsigned long long>(krow + size_t(s.block_size) * s.row_bytes);
  };
  auto load_value = [&](unsigned long long row, uint4 (&v)[F32 ? 2 : 1]) {
    const uint8_t* vrow = reinterpret_cast<const uint8_t*>(row);
    if constexpr (Q8) {
      const uint2 v8 = *reinterpret_cast<const uint2*>(vrow + 8 * grp);
      v[0] = make_uint4(v8.x, v8.y, 0, 0);
    } else if constexpr (F32) {
      const uint4* v4 = reinterpret_cast<const uint4*>(reinterpret_cast<const float*>(vrow) + 8 * grp);
      v[0] = v4[0];
      v[F32 ? 1 : 0] = v4[1];
    } else {
      v[0] = *reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(vrow) + 8 * grp);
    }
  };
  bool first = true;
  for (int c0 = (start / 32 + worker) * 32; c0 <= s.pos; c0 += stride) {
    const int p = c0 + lane;
    const bool ok = p >= start && p <= s.pos;
    const uint8_t* krow = !ok                    ? nullptr
                          : STORE && p == own_pos ? reinterpret_cast<const uint8_t*>(own[0])
                                                  : kv_head_row(s, tables, layer, p, kvh, HD * EB);
    uint4 kh[KV == 0 ? HD / 8 : 1];  // fp16 keys (EAGER: loaded here with the values)
    uint4 vr[STEPS][F32 ? 2 : 1];
    bool use[STEPS];
    if constexpr (EAGER) {
      if (ok)
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) kh[d] = reinterpret_cast<const uint4*>(krow)[d];
      const unsigned long long vrow_mine = vrow_of(ok, krow, p);
#pragma unroll
      for (int st = 0; st < STEPS; ++st) {
        const int j = st * P + kk;
        const unsigned long long row = __shfl_sync(0xffffffffu, vrow_mine, j & 31);
        use[st] = kk < P && j < 32 && row != 0ull;
        vr[st][0] = make_uint4(0, 0, 0, 0);
        if (use[st]) load_value(row, vr[st]);
      }
      if (first) {  // the warp's copy of q (rotated here where the kernel does the RoPE)
        for (int d = lane; d < HD; d += 32) sq[d] = q[d];
        __syncwarp();
        if (STORE && n_rot > 0) {
          for (int k = lane; k < half; k += 32) rope_rotate(sq, k, half, style_half, rcs[k], rsn[k]);
          __syncwarp();
        }
        first = false;
      }
    }
    float score = -INFINITY, dv = 0.0f;  // dv: Q8, the scale of key p's value row
    if (ok) {
      float part = 0.0f, dk = 1.0f;
      if constexpr (Q8) {
        if (STORE && p == own_pos) {
          dk = own_d[0];
          dv = own_d[1];
        } else {
          const float* sk = kv_head_scale(s, tables, layer, p, kvh, HD, n_kv_heads);
          dk = sk[0];
          dv = sk[s.block_size * s.row_bytes / 4];
        }
        const uint4* k16 = reinterpret_cast<const uint4*>(krow);
        uint4 kr[HD / 16];
#pragma unroll
        for (int d = 0; d < HD / 16; ++d) kr[d] = k16[d];
        int ih = 0, il = 0;
#pragma unroll
        for (int d = 0; d < HD / 16; ++d) {
          const int4 a = reinterpret_cast<const int4*>(sqh)[d], b = reinterpret_cast<const int4*>(sql)[d];
          ih = __dp4a(int(kr[d].x), a.x, ih);
          ih = __dp4a(int(kr[d].y), a.y, ih);
          ih = __dp4a(int(kr[d].z), a.z, ih);
          ih = __dp4a(int(kr[d].w), a.w, ih);
          il = __dp4a(int(kr[d].x), b.x, il);
          il = __dp4a(int(kr[d].y), b.y, il);
          il = __dp4a(int(kr[d].z), b.z, il);
          il = __dp4a(int(kr[d].w), b.w, il);
        }
        part = (float(ih) + float(il) * (1.0f / 256.0f)) * sdq;
      } else if constexpr (F32) {
        const float4* k4 = reinterpret_cast<const float4*>(reinterpret_cast<const float*>(krow));
        float4 kr[HD / 4];
#pragma unroll
        for (int d = 0; d < HD / 4; ++d) kr[d] = k4[d];
#pragma unroll
        for (int d = 0; d < HD / 4; ++d) {
          part = fmaf(sq[4 * d], kr[d].x, part);
          part = fmaf(sq[4 * d + 1], kr[d].y, part);
          part = fmaf(sq[4 * d + 2], kr[d].z, part);
          part = fmaf(sq[4 * d + 3], kr[d].w, part);
        }
      } else {
        if constexpr (!EAGER)
#pragma unroll
          for (int d = 0; d < HD / 8; ++d) kh[d] = reinterpret_cast<const uint4*>(krow)[d];
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
          const __half2* hp = reinterpret_cast<const __half2*>(&kh[d]);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 k = __half22float2(hp[e]);
            part = fmaf(sq[8 * d + 2 * e], k.x, part);
            part = fmaf(sq[8 * d + 2 * e + 1], k.y, part);
          }
        }
      }
      score = part * dk * scale;
    }
    float mx = score;
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, k));
    const float m_new = fmaxf(m, mx);  // finite: every chunk visited holds a key of the window
    const float corr = expf(m - m_new);
    const float e = ok ? expf(score - m_new) : 0.0f;
    const float ew = Q8 ? e * dv : e;  // the weight of the key's value row
    l = l * corr + warp_sum(e);
    m = m_new;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] *= corr;
    float pj[STEPS];
    const unsigned long long vrow_mine = EAGER ? 0ull : vrow_of(ok, krow, p);
#pragma unroll
    for (int st = 0; st < STEPS; ++st) {
      const int j = st * P + kk;
      pj[st] = __shfl_sync(0xffffffffu, ew, j & 31);
      if constexpr (EAGER) {
        if (!use[st]) pj[st] = 0.0f;
        continue;
      }
      const unsigned long long row = __shfl_sync(0xffffffffu, vrow_mine, j & 31);
      const bool u = kk < P && j < 32 && row != 0ull;
      if (!u) pj[st] = 0.0f;
#pragma unroll
      for (int c = 0; c < (F32 ? 2 : 1); ++c) vr[st][c] = make_uint4(0, 0, 0, 0);
      if (u) load_value(row, vr[st]);
    }
#pragma unroll
    for (int st = 0; st < STEPS; ++st) {
      float v[8];
      if constexpr (Q8) {
        i8x4_to_float(vr[st][0].x, v);
        i8x4_to_float(vr[st][0].y, v + 4);
      } else if constexpr (F32) {
        const float* f0 = reinterpret_cast<const float*>(&vr[st][0]);
        const float* f1 = reinterpret_cast<const float*>(&vr[st][F32 ? 1 : 0]);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          v[i] = f0[i];
          v[4 + i] = f1[i];
        }
      } else {
        const __half2* hp = reinterpret_cast<const __half2*>(&vr[st][0]);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = __half22float2(hp[i]);
          v[2 * i] = f.x;
          v[2 * i + 1] = f.y;
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = fmaf(pj[st], v[i], acc[i]);
    }
  }
  // The P partial sums of each dim group, in lane order, into the lanes of the first.
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    float sum = acc[i];
#pragma unroll
    for (int k = 1; k < P; ++k) sum += __shfl_sync(0xffffffffu, acc[i], (lane + k * G) & 31);
    acc[i] = sum;
  }
  __shared__ float sm[kSplitWarps], sl[kSplitWarps], sacc[kSplitWarps][HD];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
  if (lane < G) {
#pragma unroll
    for (int i = 0; i < 8; ++i) sacc[warp][8 * lane + i] = acc[i];
  }
  __syncthreads();
  const size_t c0 = size_t(t) * q_dim + size_t(h) * HD;
  if (nb == 1) {
    merge_warp_parts(sm, sl, &sacc[0][0], HD, HD, out + c0, HD % 32 == 0 ? xq : nullptr, xds, c0, xh);
    return;
  }
  // Split: this block's partial (its warps merged as merge_warp_parts does, unnormalised), then the
  // token's last block to finish merges the blocks' in order.
  constexpr int PF = split_part_floats(HD);
  float* mine_parts = parts + (size_t(blockIdx.x) * n_heads + h) * kMaxSplit * PF;
  float M = -INFINITY, L = 0.0f;
  for (int w = 0; w < kSplitWarps; ++w) M = fmaxf(M, sm[w]);
  for (int w = 0; w < kSplitWarps; ++w)
    if (sl[w] > 0.0f) L += sl[w] * expf(sm[w] - M);
  float* part = mine_parts + z * PF;
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kSplitWarps; ++w)
      if (sl[w] > 0.0f) sum += sacc[w][d] * expf(sm[w] - M);
    part[2 + d] = sum;
  }
  if (threadIdx.x == 0) part[0] = M, part[1] = L;
  __threadfence();
  __syncthreads();
  __shared__ int last;
  int* counter = counters + size_t(blockIdx.x) * n_heads + h;
  if (threadIdx.x == 0) last = atomicAdd(counter, 1) == nb - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  float Mz = -INFINITY, Lz = 0.0f;
  for (int b = 0; b < nb; ++b) Mz = fmaxf(Mz, __ldcg(mine_parts + b * PF));
  for (int b = 0; b < nb; ++b) {
    const float lb = __ldcg(mine_parts + b * PF + 1);
    if (lb > 0.0f) Lz += lb * expf(__ldcg(mine_parts + b * PF) - Mz);
  }
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float sum = 0.0f;
    for (int b = 0; b < nb; ++b)
      if (__ldcg(mine_parts + b * PF + 1) > 0.0f)
        sum += __ldcg(mine_parts + b * PF + 2 + d) * expf(__ldcg(mine_parts + b * PF) - Mz);
    store_attn_out(sum / Lz, d, out + c0, HD % 32 == 0 ? xq : nullptr, xds, c0, xh);
  }
  if (threadIdx.x == 0) *counter = 0;  // for the next layer (the same workspace)
}

}  // namespace pensieve::cuda
