// Q4_0, Q4_1, Q8_0 and Q4_A against 8-bit activations, eight blocks of 32 (256 weights) at a time: the kernel
// body, included into an anonymous namespace by matmul_group8_avx2.cpp (AVX2) and
// matmul_group8_vnni.cpp (AVX-512 VNNI), each of which first defines `Dot`:
//   Dot::pair(lo, xlo, hi, xhi): 8 int32 lanes, lane j = sum of the unsigned x signed byte products
//     in bytes 4j..4j+3 of both (lo, xlo) and (hi, xhi);
//   Dot::s8(w, x): the same for one signed pair (Q8_0);
//   Dot::kRows: weight rows worked on together (1 or 2), in decode and in prefill.
//
// The activations of each token are first rearranged into Group8 records, so that per group every
// load is one full vector: for the nibble types, pair k (k = 0..3) holds blocks k and k + 4 side by
// side, matching what one 32-byte load of their two 16-byte nibble runs gives, so the low nibbles
// (elements 0..15 of both blocks) and the high nibbles (16..31) each meet one activation vector.
// The integer dot products of the four pairs are folded by three horizontal adds into one vector
// holding the eight block sums in block order, so one conversion and one multiply-add by the eight
// scales (weight x activation) serve eight blocks. The eight f16 weight scales of a group are
// gathered by blends: in blocks of S bytes starting with their scale, scale k lies in word k of the
// 16 bytes at (S - 2) * k. Blocks that do not fill a group of eight (rows of 32 * (8g + j)) take
// the per-block path at the end of the row.
//
// Q4_A (64 weights per block, one scale and offset each) is the same arithmetic on four of its
// blocks per group: one 32-byte load of block j is its two 32-wide sub-blocks 2j and 2j + 1 side by
// side, so its Group8 records pair activation blocks (2k, 2k + 1) instead of (k, k + 4); the three
// horizontal adds then leave the sums in the order 0 2 4 6 1 3 5 7, in which build_groups stores the
// activation scales, and the weight scales are the four block scales twice over.
//
// Decode (1 to 3 tokens) streams each weight row once per token straight from the file layout;
// prefill unpacks a row once (levels and float scales in L1) and runs it against 4 tokens at a time.
// Both do the same arithmetic in the same order for each token (the integer block sums, one
// multiply-add per group, the correction, then the tail blocks one by one), so a token's result is
// the same whatever else shares the call: batched decoding relies on it.
// No includes here: the including file provides them.

constexpr int kGroup = 8;

// One token's activations for 8 blocks. Nibble types: qs[k][0] = elements 0..15 of blocks k and
// k + 4, qs[k][1] = elements 16..31 of the same. Q8_0: qs[k][h] = block 2k + h, whole.
struct alignas(32) Group8 {
  int8_t qs[4][2][32];
  float d[kGroup];
  float ds[kGroup];  // d * sum(qs) of each block
};
static_assert(sizeof(Group8) == 320);

template <class B>
constexpr bool kNibbles = !std::is_same_v<B, block_q8_0>;
template <class B>
constexpr bool kWide = std::is_same_v<B, block_q4_a>;  // 64 weights per block
template <class B>
constexpr int kBlocksPerGroup = kWide<B> ? kGroup / 2 : kGroup;

// The 32-wide activation block whose sum lands in lane j of fold_pairs.
template <class B>
constexpr int lane_block(int j) {
  if constexpr (kWide<B>) return j < 4 ? 2 * j : 2 * (j - 4) + 1;
  else return j;
}

template <class B>
void build_groups(const block_q8_x* x, int64_t n_groups, Group8* out) {
  for (int64_t g = 0; g < n_groups; ++g, x += kGroup) {
    Group8& o = out[g];
    for (int k = 0; k < 4; ++k) {
      if constexpr (kNibbles<B>) {
        const int ka = kWide<B> ? 2 * k : k, kb = kWide<B> ? 2 * k + 1 : k + 4;
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[ka].qs));
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[kb].qs));
        _mm256_store_si256(reinterpret_cast<__m256i*>(o.qs[k][0]), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_store_si256(reinterpret_cast<__m256i*>(o.qs[k][1]), _mm256_permute2x128_si256(a, b, 0x31));
      } else {
        std::memcpy(o.qs[k][0], x[2 * k].qs, QK);
        std::memcpy(o.qs[k][1], x[2 * k + 1].qs, QK);
      }
    }
    for (int j = 0; j < kGroup; ++j) o.d[j] = x[lane_block<B>(j)].d, o.ds[j] = x[lane_block<B>(j)].ds;
  }
}

// The f16 field at byte `off` of the blocks of one group, as 8 floats in lane order: 8 blocks in
// block order, or for Q4_A its 4 blocks twice over.
template <class B>
inline __m256 gather_f16(const B* blk, size_t off) {
  constexpr size_t step = sizeof(B) - 2;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(blk) + off;
  auto at = [&](int k) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + step * size_t(k))); };
  __m128i v = at(0);
  v = _mm_blend_epi16(v, at(1), 0x02);
  v = _mm_blend_epi16(v, at(2), 0x04);
  v = _mm_blend_epi16(v, at(3), 0x08);
  if constexpr (kWide<B>) {
    const __m128 f = _mm_cvtph_ps(v);
    return _mm256_set_m128(f, f);
  }
  v = _mm_blend_epi16(v, at(4), 0x10);
  v = _mm_blend_epi16(v, at(5), 0x20);
  v = _mm_blend_epi16(v, at(6), 0x40);
  v = _mm_blend_epi16(v, at(7), 0x80);
  return _mm256_cvtph_ps(v);
}

inline __m256i load(const void* p) { return _mm256_load_si256(static_cast<const __m256i*>(p)); }

// The nibbles of pair k of a group: blocks k and k + 4 (16 bytes each), or Q4_A block k whole.
template <class B>
inline __m256i nibble_pair(const B* w, int k) {
  if constexpr (kWide<B>) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[k].qs));
  else return _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(w[k + 4].qs),
                                  reinterpret_cast<const __m128i*>(w[k].qs));
}

// Lanes 0..3 of p are one block's partial sums, lanes 4..7 another's (pair k = blocks k, k + 4):
// three horizontal adds leave the 8 block sums in block order.
inline __m256 fold_pairs(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
  return _mm256_cvtepi32_ps(_mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3)));
}

// The 8 integer block sums of one weight group (straight from the blocks) against one token.
template <class B>
inline __m256 group_dots(const B* w, const Group8& x) {
  if constexpr (kNibbles<B>) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i p[4];
    for (int k = 0; k < 4; ++k) {
      const __m256i v = nibble_pair(w, k);
      const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      p[k] = Dot::pair(lo, load(x.qs[k][0]), hi, load(x.qs[k][1]));
    }
    return fold_pairs(p[0], p[1], p[2], p[3]);
  } else {
    __m256i p[8];
    for (int j = 0; j < 8; ++j)
      p[j] = Dot::s8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j].qs)), load(x.qs[j / 2][j % 2]));
    return _mm256_cvtepi32_ps(fold8(p));
  }
}

// The correction of each block beside d_w * d_x * dot: -8 d_w for Q4_0 (levels carry +8), m for
// Q4_1 and Q4_A, nothing for Q8_0; multiplied by the activation's d * sum(q).
template <class B>
constexpr bool kCorr = !std::is_same_v<B, block_q8_0>;

template <class B>
inline __m256 group_corr(const B* w, __m256 d) {
  if constexpr (std::is_same_v<B, block_q4_1> || kWide<B>) return gather_f16(w, offsetof(B, m));
  else return _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
}

// The per-block path for the blocks after the last whole group: one block against one token.
template <class B>
inline float tail_block(const B& w, const block_q8_x& x) {
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
  const float d = f16_to_f32(w.d);
  if constexpr (kNibbles<B>) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs));
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
    const float dot = float(hsum_i32(dot_u8s8(q, xq)));
    const float c = std::is_same_v<B, block_q4_1> ? f16_to_f32(reinterpret_cast<const block_q4_1&>(w).m) : -8.0f * d;
    return d * x.d * dot + c * x.ds;
  } else {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs));
    return d * x.d * float(hsum_i32(dot_s8s8(q, xq)));
  }
}

// Sub-block b (32 wide) of a Q4_A row against one token, else block b.
template <class B>
inline float tail(const B* row, int64_t b, const block_q8_x& x) {
  if constexpr (kWide<B>) {
    const block_q4_a& w = row[b / 2];
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs + 16 * (b % 2)));
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
    const float dot = float(hsum_i32(dot_u8s8(q, xq)));
    return f16_to_f32(w.d) * x.d * dot + f16_to_f32(w.m) * x.ds;
  } else {
    return tail_block(row[b], x);
  }
}

// R weight rows (nb blocks each) against one token's groups (and its raw blocks for the tail).
template <class B, int R>
void rows_dot(const B* const* rows, int64_t nb, const Group8* xg, const block_q8_x* xr, float* y) {
  const int64_t ng = nb / kGroup;
  const B* w[R];
  __m256 acc[R], corr[R];
  for (int r = 0; r < R; ++r) w[r] = rows[r], acc[r] = _mm256_setzero_ps(), corr[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < ng; ++g) {
    const Group8& x = xg[g];
    for (int r = 0; r < R; ++r) {
      const __m256 d = gather_f16(w[r], 0);
      acc[r] = _mm256_fmadd_ps(group_dots(w[r], x), _mm256_mul_ps(d, _mm256_load_ps(x.d)), acc[r]);
      if constexpr (kCorr<B>) corr[r] = _mm256_fmadd_ps(group_corr(w[r], d), _mm256_load_ps(x.ds), corr[r]);
      w[r] += kBlocksPerGroup<B>;
    }
  }
  for (int r = 0; r < R; ++r) {
    y[r] = hsum(_mm256_add_ps(acc[r], corr[r]));
    for (int64_t b = ng * kGroup; b < nb; ++b) y[r] += tail(rows[r], b, xr[b]);
  }
}

// Decode streams weight rows from memory, left to the hardware prefetchers. With Dot::kRows = 2
// each thread reads two far-apart rows together (rows r and r + h, h = half its range): two
// sequential streams per core keep more reads in flight and share the activation loads. Measured
// on phi3-mini Q4_0, 2 threads, each alternative interleaved token by token with the other (the
// VM's bandwidth drifts too much for run-after-run comparisons): with AVX-512's 32 registers, +3%
// while the memory was slow (~30 GB/s) and +4-6% while it was fast (~50 GB/s); with AVX2's 16,
// +3% slow but -11% fast, where the arithmetic is the limit and the second row's accumulators
// spill, so the AVX2 build reads one row at a time. Software prefetch 256-1024 bytes ahead gained
// nothing (0 to -3%, Q8_0 too).
template <class B>
void run_decode(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / QK, ng = nb / kGroup;
  thread_local std::vector<Group8> xg;
  auto row = [&](int64_t r) { return reinterpret_cast<const B*>(a.w + size_t(r) * a.w_stride); };
  const int64_t h = Dot::kRows == 2 ? (r1 - r0) / 2 : 0;
  // Every token's groups first, then each row against every token while it is in L1: a few
  // sequences decoding together read the weights from memory once.
  xg.resize(size_t(ng) * size_t(a.n_tok));
  auto xr = [&](int t) { return reinterpret_cast<const block_q8_x*>(a.act + size_t(t) * a.act_stride); };
  for (int t = 0; t < a.n_tok; ++t) build_groups<B>(xr(t), ng, xg.data() + size_t(t) * size_t(ng));
  for (int64_t r = r0; r < r0 + h; ++r) {
    const B* w[2] = {row(r), row(r + h)};
    for (int t = 0; t < a.n_tok; ++t) {
      float out[2];
      rows_dot<B, 2>(w, nb, xg.data() + size_t(t) * size_t(ng), xr(t), out);
      a.y[t * a.ldy + r] = out[0], a.y[t * a.ldy + r + h] = out[1];
    }
  }
  for (int64_t r = r0 + 2 * h; r < r1; ++r) {
    const B* w[1] = {row(r)};
    for (int t = 0; t < a.n_tok; ++t) rows_dot<B, 1>(w, nb, xg.data() + size_t(t) * size_t(ng), xr(t), a.y + t * a.ldy + r);
  }
}

// Prefill: a row unpacked once per token chunk; lv[k] = the low and high nibble vectors of pair k
// (Q8_0: blocks 2k and 2k + 1 as they are).
struct alignas(32) UnpackedGroup {
  __m256i lv[4][2];
  __m256 d, c;  // weight scale and correction coefficient per block
};

template <class B>
void unpack_row(const B* w, int64_t ng, std::vector<UnpackedGroup>& u) {
  u.resize(size_t(ng));
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int64_t g = 0; g < ng; ++g, w += kBlocksPerGroup<B>) {
    for (int k = 0; k < 4; ++k) {
      if constexpr (kNibbles<B>) {
        const __m256i v = nibble_pair(w, k);
        u[size_t(g)].lv[k][0] = _mm256_and_si256(v, m4);
        u[size_t(g)].lv[k][1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      } else {
        u[size_t(g)].lv[k][0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[2 * k].qs));
        u[size_t(g)].lv[k][1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[2 * k + 1].qs));
      }
    }
    u[size_t(g)].d = gather_f16(w, 0);
    if constexpr (kCorr<B>) u[size_t(g)].c = group_corr(w, u[size_t(g)].d);
  }
}

// NR unpacked rows against NT tokens' groups (token t at xg + t * ng): out[r * NT + t]. Two rows
// per pass read each activation vector from L2 once for both (from L1 for the second), which the
// 64-token activation chunk (~250 KB) otherwise makes the limit; but their 8 accumulators only fit
// the 32 vector registers of AVX-512 (Dot::kRows = 2: o_proj 138 -> 154 GMAC/s, 2 threads), not
// the 16 of AVX2 (Dot::kRows = 1; two rows there measured 138 -> 114).
template <class B, int NR, int NT>
void rows_tokens(const UnpackedGroup* const* u, const Group8* xg, int64_t ng, float* out) {
  __m256 acc[NR][NT];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t g = 0; g < ng; ++g) {
    for (int t = 0; t < NT; ++t) {
      const Group8& x = xg[t * ng + g];
      const __m256 dx = _mm256_load_ps(x.d);
      for (int r = 0; r < NR; ++r) {
        const UnpackedGroup& w = u[r][g];
        __m256 s;
        if constexpr (kNibbles<B>) {
          const __m256i p0 = Dot::pair(w.lv[0][0], load(x.qs[0][0]), w.lv[0][1], load(x.qs[0][1]));
          const __m256i p1 = Dot::pair(w.lv[1][0], load(x.qs[1][0]), w.lv[1][1], load(x.qs[1][1]));
          const __m256i p2 = Dot::pair(w.lv[2][0], load(x.qs[2][0]), w.lv[2][1], load(x.qs[2][1]));
          const __m256i p3 = Dot::pair(w.lv[3][0], load(x.qs[3][0]), w.lv[3][1], load(x.qs[3][1]));
          s = fold_pairs(p0, p1, p2, p3);
        } else {
          __m256i p[8];
          for (int j = 0; j < 8; ++j) p[j] = Dot::s8(w.lv[j / 2][j % 2], load(x.qs[j / 2][j % 2]));
          s = _mm256_cvtepi32_ps(fold8(p));
        }
        acc[r][t] = _mm256_fmadd_ps(s, _mm256_mul_ps(w.d, dx), acc[r][t]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) {
      __m256 corr = _mm256_setzero_ps();
      if constexpr (kCorr<B>)
        for (int64_t g = 0; g < ng; ++g) corr = _mm256_fmadd_ps(u[r][g].c, _mm256_load_ps(xg[t * ng + g].ds), corr);
      out[r * NT + t] = hsum(_mm256_add_ps(acc[r][t], corr));
    }
}

template <class B>
void run_prefill(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / QK, ng = nb / kGroup;
  thread_local std::vector<Group8> xg;
  thread_local std::vector<UnpackedGroup> u0, u1;
  auto row = [&](int64_t r) { return reinterpret_cast<const B*>(a.w + size_t(r) * a.w_stride); };
  // Rows [r, r + NR) against every token of the chunk starting at tc (n tokens).
  auto pass = [&](auto nr, int64_t r, int tc, int n) {
    constexpr int NR = decltype(nr)::value;
    const UnpackedGroup* u[2] = {u0.data(), u1.data()};
    float out[NR * 4];
    auto store = [&](int nt, int t) {
      for (int i = 0; i < NR; ++i)
        for (int j = 0; j < nt; ++j) a.y[(tc + t + j) * a.ldy + r + i] = out[i * nt + j];
    };
    int t = 0;
    for (; t + 4 <= n; t += 4) {
      rows_tokens<B, NR, 4>(u, xg.data() + size_t(t) * size_t(ng), ng, out);
      store(4, t);
    }
    for (; t < n; ++t) {
      rows_tokens<B, NR, 1>(u, xg.data() + size_t(t) * size_t(ng), ng, out);
      store(1, t);
    }
    if (nb % kGroup != 0)
      for (int i = 0; i < NR; ++i)
        for (int j = 0; j < n; ++j) {
          const auto* xr = reinterpret_cast<const block_q8_x*>(a.act + size_t(tc + j) * a.act_stride);
          float& y = a.y[(tc + j) * a.ldy + r + i];
          for (int64_t b = ng * kGroup; b < nb; ++b) y += tail(row(r + i), b, xr[b]);
        }
  };
  for (int tc = 0; tc < a.n_tok; tc += kTokenChunk) {
    const int n = std::min(a.n_tok - tc, kTokenChunk);
    xg.resize(size_t(ng) * size_t(n));
    for (int t = 0; t < n; ++t)
      build_groups<B>(reinterpret_cast<const block_q8_x*>(a.act + size_t(tc + t) * a.act_stride), ng,
                      xg.data() + size_t(t) * size_t(ng));
    int64_t r = r0;
    if constexpr (Dot::kRows == 2)
      for (; r + 2 <= r1; r += 2) {
        unpack_row(row(r), ng, u0);
        unpack_row(row(r + 1), ng, u1);
        pass(std::integral_constant<int, 2>{}, r, tc, n);
      }
    for (; r < r1; ++r) {
      unpack_row(row(r), ng, u0);
      pass(std::integral_constant<int, 1>{}, r, tc, n);
    }
  }
}

bool group8(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const bool prefill = a.n_tok >= 4;
  switch (a.type) {
    case GgmlType::Q4_0: prefill ? run_prefill<block_q4_0>(a, r0, r1) : run_decode<block_q4_0>(a, r0, r1); return true;
    case GgmlType::Q4_1: prefill ? run_prefill<block_q4_1>(a, r0, r1) : run_decode<block_q4_1>(a, r0, r1); return true;
    case GgmlType::Q8_0: prefill ? run_prefill<block_q8_0>(a, r0, r1) : run_decode<block_q8_0>(a, r0, r1); return true;
    case GgmlType::Q4_A: prefill ? run_prefill<block_q4_a>(a, r0, r1) : run_decode<block_q4_a>(a, r0, r1); return true;
    default: return false;
  }
}
